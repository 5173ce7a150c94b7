/* The compose layer: the PIL-style composite as one call, shared by the HTTP
 * handler, the CLI and the bench: place the product on the scene, encode in the
 * requested format (image/format.h), and save the result atomically as
 * OUTPUT_DIR/<id>.<ext>. Also the strict parsing of the request parameters
 * (x, y, scale) so both front ends refuse the same inputs with the same
 * messages. Uses image/ and core/ only (no Lua, no HTTP). Thread-safe (no
 * shared state). */
#ifndef SCENECOMP_COMPOSE_COMPOSE_H
#define SCENECOMP_COMPOSE_COMPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/durable.h"
#include "image/codec.h"
#include "image/format.h"
#include "image/image.h"
#include "image/place.h"

/* Parses a placement number strictly: the whole string must be a finite
 * decimal number (no trailing text, no "nan"/"inf", no hex). Returns 0 or -1. */
int sc_compose_parse_number(const char *s, double *out);

/* Checks x, y in [0,1] and scale in (0,4]. Returns 0, or -1 with a message
 * naming the culprit in err. */
int sc_compose_check_params(const sc_place_params_t *p, char *err, size_t errlen);

/* Why sc_compose_decode refused its inputs. */
typedef struct sc_compose_refusal {
    const char *field;        /* "scene" | "product" */
    sc_codec_status_t status; /* SC_CODEC_INVALID: not an image (400 invalid_image);
                                 SC_CODEC_TOO_LARGE: over max_pixels, or its placement's
                                 work would not fit (413 image_too_large);
                                 SC_CODEC_NOMEM: out of memory (503) */
    char message[256];        /* for the client, names the field */
} sc_compose_refusal_t;

/* What sc_compose_probe learnt from the headers and the structural check. */
typedef struct sc_compose_probe {
    sc_image_info_t scene, product;  /* sizes as displayed, format, EXIF orientation */
    bool scene_alpha, product_alpha; /* the decoded image would have alpha */
} sc_compose_probe_t;

/* Everything sc_compose_decode decides before it decodes a pixel (issue 11:
 * the server routes from this and decodes only when PIL runs): both headers
 * (MAX_IMAGE_PIXELS, a too large product refused without looking further),
 * the placement's working limits from the header sizes, then a structural
 * check of both whole files (image/check.h), so a truncated upload is refused
 * before any prediction is paid for. Returns 0 with *out filled, or -1 with
 * *why filled. */
int sc_compose_probe(const uint8_t *scene, size_t scene_len, const uint8_t *product,
                     size_t product_len, long long max_pixels, const sc_place_params_t *p,
                     sc_compose_probe_t *out, sc_compose_refusal_t *why);

/* The server's steps from uploaded bytes to decoded images, shared with the
 * bench so it measures exactly them: both headers first (a too large product
 * is refused without decoding the scene), then the placement's working limits
 * from the header sizes (sc_place_check: an extreme aspect ratio is a 413, not
 * an out-of-memory 500 later), the structural check (sc_compose_probe), then
 * both decodes (EXIF orientation applied).
 * p must have passed sc_compose_check_params. Returns 0 with both images
 * filled (caller frees), or -1 with both empty and *why filled. */
int sc_compose_decode(const uint8_t *scene, size_t scene_len, const uint8_t *product,
                      size_t product_len, long long max_pixels, const sc_place_params_t *p,
                      sc_image_t *scene_out, sc_image_t *product_out, sc_compose_refusal_t *why);

/* Composites product onto scene IN PLACE (scene becomes the result) and encodes
 * it as fmt with the format's default quality. Returns 0, or -1 with a static
 * message in *err (also for SC_FMT_UNKNOWN). */
int sc_compose_pil(sc_image_t *scene, const sc_image_t *product, const sc_place_params_t *p,
                   sc_image_format_t fmt, uint8_t **out, size_t *out_len, const char **err);

/* Options of sc_compose_pil_opts. */
typedef struct sc_compose_opts {
    int quality;           /* 0: the format's default; JPEG 1..100 */
    sc_place_opts_t place; /* user mask, shadow handling (place.h) */
    const uint8_t *icc;    /* the scene's ICC profile, kept in the output (icc.h) */
    size_t icc_len;
} sc_compose_opts_t;

/* Parses the `quality` request field: an integer 1..100. Returns 0 or -1. */
int sc_compose_parse_quality(const char *s, int *out);

/* sc_compose_pil with options (NULL: defaults); *keying (if given) receives
 * what was done to the product's alpha (sc_keying_t). */
int sc_compose_pil_opts(sc_image_t *scene, const sc_image_t *product, const sc_place_params_t *p,
                        sc_image_format_t fmt, const sc_compose_opts_t *opts, uint8_t **out,
                        size_t *out_len, sc_keying_t *keying, const char **err);

/* Writes data atomically to <dir>/<id>.<ext of fmt>, creating dir if needed.
 * Returns 0 or -1 with errno set (EINVAL for a bad id or SC_FMT_UNKNOWN). */
int sc_compose_save(const char *dir, const char *id, sc_image_format_t fmt, const void *data,
                    size_t len);
/* As sc_compose_save through the group committer d (core/durable.h): queued,
 * done(err, ud) once durable or failed. Returns 0 (done will be called) or -1
 * (nothing queued, errno set). */
int sc_compose_save_queued(sc_durable_t *d, const char *dir, const char *id, sc_image_format_t fmt,
                           const void *data, size_t len, sc_durable_done_fn done, void *ud);

#endif
