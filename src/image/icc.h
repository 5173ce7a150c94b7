/* ICC profiles: the scene's embedded profile is carried over to the output
 * (issue 12), so a Display P3 or Adobe RGB scene is not shown as sRGB after a
 * composite. Read from a JPEG's APP2 "ICC_PROFILE" segments (joined in their
 * sequence order) or a PNG's iCCP chunk; written as iCCP (PNG) or APP2
 * segments after SOI/APP0 (JPEG). A product whose embedded profile differs
 * from the scene's is converted into the scene's space with lcms2 (into sRGB
 * when the scene has none); a product without a profile is taken as being in
 * the scene's space. Bounds-checked; thread-safe. */
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

#include "image/image.h"

/* Converts img (RGB or RGBA; alpha kept) in place from the profile src to the
 * profile dst (NULL/0: sRGB), perceptual intent. Returns 0 when converted, 1
 * when nothing was done (identical profiles, or a profile lcms2 cannot use, or
 * one that is not RGB), -1 out of memory. */
int sc_icc_convert(sc_image_t *img, const uint8_t *src, size_t src_len, const uint8_t *dst,
                   size_t dst_len);

#endif
