/* Builds the model inputs (the JSON text of "input") for the two models. Runs on
 * the request thread (CPU work: downscale + re-encode + base64), never on the I/O
 * thread. Images are sent as data URIs (or Files API URLs above 256 KB); anything over
 * SC_INPUTS_MAX_SIDE pixels on its long side is downscaled first, scenes go as JPEG q90, products
 * as PNG (to keep alpha), so an upload stays well under Replicate's data-URI guidance. */
#ifndef SCENECOMP_REPLICATE_INPUTS_H
#define SCENECOMP_REPLICATE_INPUTS_H

#include <stddef.h>
#include <stdint.h>

#include "image/format.h"
#include "image/image.h"

#define SC_INPUTS_MAX_SIDE 1024

/* Kontext (multi-image-kontext-pro): input_image_1 = scene, input_image_2 =
 * product, prompt (a default placement prompt when NULL/empty),
 * aspect_ratio "match_input_image", output_format "png". *json is malloc'd
 * (caller frees). Returns 0, -1 (out of memory / encode failure) or -2 (as
 * sc_inputs_kontext_ex: an upload failed). sc_inputs_kontext,
 * sc_inputs_kontext_ex and sc_inputs_kontext_files block while an upload runs
 * (they are the two steps below plus a wait): for tests and callers off the
 * request path, never on the client's I/O thread. */
int sc_inputs_kontext(const sc_image_t *scene, const sc_image_t *product, const char *prompt,
                      char **json);

/* issue 11: as sc_inputs_kontext; an image whose data URI would exceed 256 KB
 * goes through the Files API (replicate/files.h) within upload_timeout seconds
 * and is passed by its urls.get. Returns 0, -1 (out of memory / encode
 * failure) or -2 (an upload failed: an api_error). sc_inputs_kontext uses
 * SC_INPUTS_UPLOAD_TIMEOUT. */
#define SC_INPUTS_UPLOAD_TIMEOUT 60.0
int sc_inputs_kontext_ex(const sc_image_t *scene, const sc_image_t *product, const char *prompt,
                         double upload_timeout, char **json);

/* issue 11: the Kontext inputs from the uploaded files themselves. An upload
 * goes as it came (its bytes in a data URI, or through the Files API above
 * 256 KB, which caches by SHA-256 so a product used in many scenes is
 * uploaded once) when it is a PNG or JPEG with EXIF orientation 1 (or none)
 * and its long side is at most SC_INPUTS_PASS_MAX_SIDE. Otherwise it is
 * decoded (orientation applied, max_pixels checked), downscaled when its long
 * side exceeds SC_INPUTS_MAX_SIDE and re-encoded as sc_inputs_kontext does
 * (scene JPEG q90, product PNG). output_format is Kontext's "jpg" or "png"
 * (NULL: "png"). Returns 0, -1 (out of memory / decode or encode failure) or
 * -2 (an upload failed: an api_error). */
#define SC_INPUTS_PASS_MAX_SIDE 2048

typedef struct sc_inputs_file {
    const uint8_t *bytes;
    size_t len;
    sc_image_format_t format; /* from sc_codec_probe */
    int width, height;        /* as displayed */
    int orientation;          /* EXIF 1..8 */
    int fd; /* the same bytes at offset 0 of this file (a spooled upload), or -1 */
} sc_inputs_file_t;

/* 1 when f goes to Kontext as it is (the rule above), else 0. */
int sc_inputs_passes(const sc_inputs_file_t *f);

int sc_inputs_kontext_files(const sc_inputs_file_t *scene, const sc_inputs_file_t *product,
                            const char *prompt, const char *output_format, long long max_pixels,
                            double upload_timeout, char **json);

/* The Kontext input JSON from its two image strings (borrowed): {"prompt",
 * "input_image_1", "input_image_2", "aspect_ratio": "match_input_image",
 * "output_format" (NULL: "png"), "safety_tolerance": 2} in that order; prompt
 * NULL/empty is the default one. Strings are escaped as sc_buf_json_str does
 * (core/buf.h: bytes >= 0x80 go as they are, invalid UTF-8 included, as with
 * cJSON). *json is malloc'd. Returns 0, or -1 (out of memory, or an image
 * string is NULL). */
int sc_inputs_kontext_json(const char *scene_uri, const char *product_uri, const char *prompt,
                           const char *output_format, char **json);

/* issue 11: the same inputs in two steps, so a request thread never waits on
 * a Files API upload (it would hold a compute thread for a round trip).
 * sc_inputs_kontext_prepare (the upload bytes readable): every input that
 * needs no upload gets its string; one that does is hashed and its bytes are
 * kept as a duplicate of f->fd (so the caller may unmap and close its own) or
 * a copy. Returns 0 with *job, or -1 (out of memory / decode or encode). */
typedef struct sc_inputs_job sc_inputs_job_t;
int sc_inputs_kontext_prepare(const sc_inputs_file_t *scene, const sc_inputs_file_t *product,
                              const char *prompt, const char *output_format, long long max_pixels,
                              sc_inputs_job_t **job);
/* 1 while the job still needs an upload, else 0. */
int sc_inputs_job_pending(const sc_inputs_job_t *job);
/* Without pending uploads: the JSON (*json malloc'd). Returns 0 or -1; frees job. */
int sc_inputs_job_json(sc_inputs_job_t *job, char **json);
/* rc 0: json (malloc'd, the callee's now); rc -1 / -2 as sc_inputs_kontext_files, err why. */
typedef void (*sc_inputs_ready_fn)(int rc, char *json, const char *err, void *ud);
/* Runs the pending uploads (replicate/files.h: on the client's I/O thread,
 * joined with any upload in flight of the same bytes) and frees job. ready is
 * called exactly once, from the I/O thread or before this returns. */
void sc_inputs_job_run(sc_inputs_job_t *job, double upload_timeout, sc_inputs_ready_fn ready,
                       void *ud);
/* Frees a job that will not run. NULL-safe. */
void sc_inputs_job_free(sc_inputs_job_t *job);

/* Scene generation (flux-schnell): prompt, aspect_ratio, optional seed
 * (has_seed), num_outputs 1, output_format "png" (our decoders do not read
 * WebP). Returns 0 or -1. */
int sc_inputs_scene(const char *prompt, const char *aspect_ratio, int has_seed, long long seed,
                    char **json);

#endif
