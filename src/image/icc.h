/* ICC profiles: the scene's embedded profile is carried over to the output
 * (issue 12), so a Display P3 or Adobe RGB scene is not shown as sRGB after a
 * composite. Read from a JPEG's APP2 "ICC_PROFILE" segments (joined in their
 * sequence order) or a PNG's iCCP chunk; written as iCCP (PNG) or APP2
 * segments after SOI/APP0 (JPEG). Pixels are not converted (no colour
 * management library): the product is assumed to be in the scene's space.
 * Bounds-checked; thread-safe. */
#ifndef SCENECOMP_IMAGE_ICC_H
#define SCENECOMP_IMAGE_ICC_H

#include <stddef.h>
#include <stdint.h>

/* Profiles larger than this are ignored (real ones are 0.5-600 KB). */
#define SC_ICC_MAX_BYTES ((size_t)4 << 20)

/* Finds the embedded profile of a PNG or JPEG file. Returns 1 with *out
 * (malloc'd) and *out_len, 0 when there is none or it is malformed (a broken
 * profile is dropped, not an error), -1 out of memory. */
int sc_icc_extract(const uint8_t *data, size_t len, uint8_t **out, size_t *out_len);

/* Returns in *out (malloc'd) a copy of the PNG png with an iCCP chunk holding
 * icc inserted after IHDR. Returns 0, or -1 (not a PNG from our encoder / out
 * of memory). */
int sc_icc_png_embed(const uint8_t *png, size_t len, const uint8_t *icc, size_t icc_len,
                     uint8_t **out, size_t *out_len);

/* The same for a JPEG: APP2 ICC_PROFILE segments after SOI and a JFIF APP0. */
int sc_icc_jpeg_embed(const uint8_t *jpg, size_t len, const uint8_t *icc, size_t icc_len,
                      uint8_t **out, size_t *out_len);

#endif
