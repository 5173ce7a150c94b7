/* Background keying for opaque products (a JPEG product shot on a plain
 * backdrop). Steps, each answering one failure mode of issue 12:
 *  - backdrop colour: the per-channel median of the image border; keying is
 *    skipped (0 returned) unless at least SC_KEY_UNIFORM_PCT % of the border is
 *    close to it, so a product touching the frame on part of the border is
 *    still keyed (only backdrop-coloured border pixels seed the fill);
 *  - backdrop region: a 4-connected fill from those border pixels through
 *    pixels within SC_KEY_LO of the backdrop. It does not pass through the soft
 *    edge, so white or near-white product parts behind an edge stay opaque;
 *  - soft shadow: the fill also enters pixels that are a darker shade of the
 *    backdrop (same chroma) when the shade changes gently from pixel to pixel
 *    (a product's edge is a jump); those become black with alpha = the
 *    darkening, i.e. a multiply-like shadow that can only darken the scene
 *    (SC_KEY_SHADOW_KEEP, the default), or are removed (SC_KEY_SHADOW_REMOVE);
 *  - holes: enclosed regions within SC_KEY_HOLE_DIST of the backdrop and at
 *    least SC_KEY_HOLE_MIN_AREA pixels (and 1/SC_KEY_HOLE_MIN_FRAC of the image)
 *    are backdrop too (a mug handle); smaller near-backdrop regions are
 *    highlights and stay opaque;
 *  - edges: within SC_KEY_BAND pixels of the backdrop, alpha is estimated from
 *    the nearest interior colour F (C = aF + (1-a)B projected on F - B) and the
 *    colour is decontaminated, F' = (C - (1-a)B) / a clamped, so no light halo
 *    remains. Where F is too close to B (white on white) alpha falls back to a
 *    ramp of the distance.
 * Thread-safe. */
#ifndef SCENECOMP_IMAGE_KEY_H
#define SCENECOMP_IMAGE_KEY_H

#include <stdint.h>

#include "image/image.h"

/* Chebyshev distance to the backdrop: <= LO is backdrop; the fallback alpha
 * ramp runs from LO (transparent) to HI (opaque). */
#define SC_KEY_LO 14
#define SC_KEY_HI 40
/* The border is usable when this share (percent) of its pixels lies within
 * SC_KEY_UNIFORM_DIST of the median colour. */
#define SC_KEY_UNIFORM_PCT 50
#define SC_KEY_UNIFORM_DIST 24
#define SC_KEY_HOLE_DIST 8
#define SC_KEY_HOLE_MIN_AREA 256
#define SC_KEY_HOLE_MIN_FRAC 400
#define SC_KEY_BAND 3

typedef enum {
    SC_KEY_SHADOW_KEEP = 0,  /* extracted as semi-transparent black (multiply-like) */
    SC_KEY_SHADOW_REMOVE = 1 /* made fully transparent */
} sc_key_shadow_t;

typedef struct sc_key_opts {
    sc_key_shadow_t shadow;
} sc_key_opts_t;

/* Returns 1 and fills *out (RGBA, caller frees) when src (3 or 4 channels;
 * alpha, if any, is ignored) has a usable border and was keyed; 0 when the
 * border is not usable (keying skipped, out left empty); -1 on out of memory
 * or bad input. bg (if given) receives the backdrop colour when 1 is
 * returned. opts NULL: defaults (shadow kept). */
int sc_key_background_opts(const sc_image_t *src, const sc_key_opts_t *opts, sc_image_t *out,
                           uint8_t bg[3]);
/* The same with the default options. */
int sc_key_background(const sc_image_t *src, sc_image_t *out, uint8_t bg[3]);

/* Applies a user mask (1 channel, or the alpha of 2/4 channels; 3 channels:
 * the first) as src's alpha: out is RGBA. Sizes must match. Returns 0, or -1
 * (size mismatch, bad input, out of memory). */
int sc_key_apply_mask(const sc_image_t *src, const sc_image_t *mask, sc_image_t *out);

#endif
