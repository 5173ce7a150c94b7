/* The PIL-style composite as one call, shared by the HTTP handler and the CLI:
 * place the product on the scene, encode in the requested format, and save the
 * result atomically as OUTPUT_DIR/<id>.png|.jpg. Also the strict parsing of the
 * request parameters (x, y, scale, format) so both front ends refuse the same
 * inputs with the same messages. Thread-safe (no shared state). */
#ifndef SCENECOMP_HTTP_COMPOSE_H
#define SCENECOMP_HTTP_COMPOSE_H

#include <stddef.h>
#include <stdint.h>

#include "image/codec.h"
#include "image/image.h"
#include "image/place.h"

#define SC_COMPOSE_JPEG_QUALITY 92

/* Parses a placement number strictly: the whole string must be a finite
 * decimal number (no trailing text, no "nan"/"inf", no hex). Returns 0 or -1. */
int sc_compose_parse_number(const char *s, double *out);

/* Checks x, y in [0,1] and scale in (0,4]. Returns 0, or -1 with a message
 * naming the culprit in err. */
int sc_compose_check_params(const sc_place_params_t *p, char *err, size_t errlen);

/* "png" -> SC_FMT_PNG, "jpeg" or "jpg" -> SC_FMT_JPEG, else SC_FMT_UNKNOWN. */
sc_image_format_t sc_compose_parse_format(const char *s);
const char *sc_compose_format_name(sc_image_format_t f); /* "png" | "jpeg" */
const char *sc_compose_format_ext(sc_image_format_t f);  /* "png" | "jpg" */
const char *sc_compose_format_mime(sc_image_format_t f); /* "image/png" | "image/jpeg" */

/* Encodes img as fmt. *out is malloc'd (caller frees). Returns 0 or -1. */
int sc_compose_encode(const sc_image_t *img, sc_image_format_t fmt, uint8_t **out, size_t *out_len);

/* Composites product onto scene IN PLACE (scene becomes the result) and encodes
 * it. Returns 0, or -1 with a static message in *err. */
int sc_compose_pil(sc_image_t *scene, const sc_image_t *product, const sc_place_params_t *p,
                   sc_image_format_t fmt, uint8_t **out, size_t *out_len, const char **err);

/* Writes data atomically to <dir>/<id>.<ext of fmt>, creating dir if needed.
 * Returns 0 or -1 with errno set. */
int sc_compose_save(const char *dir, const char *id, sc_image_format_t fmt, const void *data,
                    size_t len);

#endif
