/* Background keying for opaque products (a JPEG product shot on a plain
 * backdrop): if the image border is uniform, the background colour is the
 * border's per-channel median, and the background region is flood-filled from
 * the border through pixels close to that colour, so product pixels of a
 * similar colour inside the silhouette (a highlight) are kept. Alpha ramps
 * with the colour distance (soft edge). Thread-safe. */
#ifndef SCENECOMP_IMAGE_KEY_H
#define SCENECOMP_IMAGE_KEY_H

#include <stdint.h>

#include "image/image.h"

/* Chebyshev distance to the background: <= LO is transparent, >= HI opaque. */
#define SC_KEY_LO 10
#define SC_KEY_HI 40
/* The border is uniform when this share (percent) of its pixels lies within
 * SC_KEY_UNIFORM_DIST of the median colour. */
#define SC_KEY_UNIFORM_PCT 90
#define SC_KEY_UNIFORM_DIST 24

/* Returns 1 and fills *out (RGBA, caller frees) when src (3 or 4 channels;
 * alpha, if any, is ignored) has a uniform border and was keyed; 0 when the
 * border is not uniform (out left empty); -1 on out of memory / bad input.
 * bg (if given) receives the background colour when 1 is returned. */
int sc_key_background(const sc_image_t *src, sc_image_t *out, uint8_t bg[3]);

#endif
