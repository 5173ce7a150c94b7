/* Separable Lanczos-3 resampling (Pillow's LANCZOS support and weights), in
 * premultiplied alpha for RGBA so transparent pixels do not bleed colour, with
 * correct rounding back to 8 bits. SIMD where the CPU has it. Thread-safe. */
#ifndef SCENECOMP_IMAGE_RESIZE_H
#define SCENECOMP_IMAGE_RESIZE_H

#include "image/image.h"

/* Resizes src to dst_w x dst_h into *dst (allocated here, same channels as src;
 * caller frees with sc_image_free). Returns 0 or -1 (bad size / out of memory). */
int sc_resize_lanczos(const sc_image_t *src, int dst_w, int dst_h, sc_image_t *dst);

#endif
