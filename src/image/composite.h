/* Row kernels for straight-alpha "over" (used by place.c). Exposed so the unit
 * tests can compare every SIMD level against the scalar reference. Thread-safe. */
#ifndef SCENECOMP_IMAGE_COMPOSITE_H
#define SCENECOMP_IMAGE_COMPOSITE_H

#include <stddef.h>
#include <stdint.h>

#include "image/simd.h"

/* n RGBA product pixels over n RGB scene pixels, in place:
 * out = (p*a + s*(255-a)) / 255 rounded to nearest (a = 255 copies p, a = 0
 * keeps s). Rows may be unaligned; lvl above the CPU's is lowered. */
void sc_over_rgba_on_rgb(uint8_t *scene, const uint8_t *prod, size_t n, sc_simd_level_t lvl);

/* n RGBA product pixels over n RGBA scene pixels (full straight-alpha over,
 * rounded): A = ap*255 + as*(255-ap); out_a = round(A/255);
 * out_c = round((p*ap*255 + s*as*(255-ap)) / A). Scalar. */
void sc_over_rgba_on_rgba(uint8_t *scene, const uint8_t *prod, size_t n);

#endif
