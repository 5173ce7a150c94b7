/* Separable Lanczos-3 resampling (Pillow's LANCZOS support and weights), in
 * premultiplied alpha for RGBA so transparent pixels do not bleed colour, with
 * correct rounding back to 8 bits. SIMD where the CPU has it. Thread-safe. */
#ifndef SCENECOMP_IMAGE_RESIZE_H
#define SCENECOMP_IMAGE_RESIZE_H

#include "image/image.h"
#include "image/simd.h"

/* Resizes src to dst_w x dst_h into *dst (allocated here, same channels as src;
 * caller frees with sc_image_free). Returns 0 or -1 (bad size / out of memory). */
int sc_resize_lanczos(const sc_image_t *src, int dst_w, int dst_h, sc_image_t *dst);

/* Computes only the window [rx, rx+rw) x [ry, ry+rh) of the dst_w x dst_h
 * resize (so a product scaled far past the scene edge costs only what is
 * visible). *dst is rw x rh. lvl selects the kernels (sc_simd_level() for the
 * best; the tests compare every level). Returns 0 or -1. */
int sc_resize_lanczos_region(const sc_image_t *src, int dst_w, int dst_h, int rx, int ry, int rw,
                             int rh, sc_image_t *dst, sc_simd_level_t lvl);

/* Working limits of one resize: taps per axis (the coefficient tables) and
 * bytes allocated in all. */
#define SC_RESIZE_MAX_TAPS ((size_t)1 << 26)
#define SC_RESIZE_MAX_BYTES ((size_t)1 << 30)

/* Whether sc_resize_lanczos_region(src in_w x in_h with channels, dst_w, dst_h,
 * rx, ry, rw, rh) stays within the working limits, from sizes alone (before
 * any decode). *bytes (if given) gets what it would allocate. Returns 0 when
 * it fits, -1 when not (or for bad sizes). rx does not change the cost. */
int sc_resize_region_cost(int in_w, int in_h, int dst_w, int dst_h, int ry, int rw, int rh,
                          int channels, double *bytes);

#endif
