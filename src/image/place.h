/* The PIL method end to end on decoded images: key out an opaque product's
 * uniform background, resize the product (Lanczos-3) to scale * scene width with
 * its aspect kept, and alpha-composite it "over" the scene with its centre at
 * (x * W, y * H), clipped at the scene edges. Thread-safe; uses all SIMD the CPU has. */
#ifndef SCENECOMP_IMAGE_PLACE_H
#define SCENECOMP_IMAGE_PLACE_H

#include "image/image.h"
#include "image/key.h"

typedef struct sc_place_params {
    double x;     /* centre, fraction of scene width, [0,1] */
    double y;     /* centre, fraction of scene height, [0,1] */
    double scale; /* product width / scene width, (0,4] */
} sc_place_params_t;

/* Where the product lands: top-left corner (may be negative) and resized size. */
typedef struct sc_place_geometry {
    int left, top;
    int width, height;
} sc_place_geometry_t;

/* What happened to the product's alpha. */
typedef enum {
    SC_KEYING_NONE = 0,    /* the product has transparency of its own: used as is */
    SC_KEYING_KEYED = 1,   /* opaque, backdrop keyed out (key.h) */
    SC_KEYING_SKIPPED = 2, /* opaque, no usable backdrop: pasted as a rectangle */
    SC_KEYING_MASK = 3,    /* the caller's mask is the alpha */
} sc_keying_t;

/* "none" | "keyed" | "skipped" | "mask" */
const char *sc_keying_name(sc_keying_t k);

/* Options of the product's half. */
typedef struct sc_place_opts {
    const sc_image_t *mask; /* if set: the product's alpha (sizes must match), no keying */
    sc_key_shadow_t shadow; /* keying of a soft shadow */
    /* if set: SHA-256 of the product's file, and the keyed + resized layer
     * comes from / goes to the product cache (pcache.h) */
    const uint8_t *product_sha;
} sc_place_opts_t;

/* Computes the contract's placement: width = max(1, round(scale*W)),
 * height = max(1, round(width * ph / pw)), left = round(x*W - width/2.0),
 * top = round(y*H - height/2.0). */
void sc_place_geometry(int scene_w, int scene_h, int prod_w, int prod_h, const sc_place_params_t *p,
                       sc_place_geometry_t *g);

/* The message of sc_place_check for a placement over the resize's working
 * limits (front ends answer it as "image too large", not as a failure). */
#define SC_PLACE_TOO_LARGE_MSG                                                                     \
    "the product cannot be placed at this scale: its size or aspect ratio is too extreme to "      \
    "resize within the working limits"

/* Validates p and checks, from the sizes alone (so before decoding), that
 * placing a prod_w x prod_h product on the scene stays within the resize's
 * working limits (sc_resize_region_cost): a 12,000,000 x 1 strip shrunk to a
 * few hundred pixels would need gigabytes of filter taps. Returns 0, or -1
 * with *err set (SC_PLACE_TOO_LARGE_MSG for the limits). */
int sc_place_check(int scene_w, int scene_h, int prod_w, int prod_h, const sc_place_params_t *p,
                   const char **err);

/* Composites product onto scene in place (scene keeps its size and channels).
 * product is not modified. Returns 0, or -1 with *err set (out of memory,
 * bad parameters). */
int sc_place_composite(sc_image_t *scene, const sc_image_t *product, const sc_place_params_t *p,
                       const char **err);
/* The same with options; *keying (if given) receives what was done. */
int sc_place_composite_opts(sc_image_t *scene, const sc_image_t *product,
                            const sc_place_params_t *p, const sc_place_opts_t *opts,
                            sc_keying_t *keying, const char **err);

/* The two halves of sc_place_composite, so that the product's half (key +
 * resize, the expensive part) can run while the scene is still decoding: only
 * the scene's size is needed for it. */
typedef struct sc_place_layer {
    sc_image_t img; /* the visible window of the resized product (RGB or RGBA) */
    int x0, y0;     /* its top-left corner in the scene */
    sc_keying_t keying;
} sc_place_layer_t;

/* Validates p, keys and resizes the product for a scene_w x scene_h scene.
 * An empty layer (img.pixels NULL) means nothing is visible. Returns 0 or -1
 * with *err set. Free with sc_place_layer_free. */
int sc_place_prepare(const sc_image_t *product, int scene_w, int scene_h,
                     const sc_place_params_t *p, sc_place_layer_t *layer, const char **err);
/* The same with options (NULL: defaults); layer->keying says what was done
 * (also when nothing is visible). A mask of another size is refused (-1,
 * *err = SC_PLACE_MASK_SIZE_MSG). */
#define SC_PLACE_MASK_SIZE_MSG "the mask must have the product's size"
/* A product given by its header only (pixels NULL: its size and channels from
 * sc_codec_probe) is placed from the product cache when its layer is cached;
 * otherwise the placement fails with *err = SC_PLACE_NEED_PIXELS, nothing
 * done (compare with strcmp: literals are not merged across files), and the
 * caller decodes the product and calls again (issue 12: a cache
 * hit does not decode the product). */
#define SC_PLACE_NEED_PIXELS "the product must be decoded"
int sc_place_prepare_opts(const sc_image_t *product, int scene_w, int scene_h,
                          const sc_place_params_t *p, const sc_place_opts_t *opts,
                          sc_place_layer_t *layer, const char **err);
/* Composites a prepared layer onto the scene it was prepared for (same size). */
void sc_place_apply(sc_image_t *scene, const sc_place_layer_t *layer);
void sc_place_layer_free(sc_place_layer_t *layer);

#endif
