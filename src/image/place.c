/* The PIL method end to end on decoded images (place.h): key, resize only the
 * visible window of the product, composite with the row kernels. */
#include "image/place.h"

#include <math.h>
#include <string.h>

#include "image/composite.h"
#include "image/key.h"
#include "image/pcache.h"
#include "image/resize.h"

/* Resized products are clamped to this size per axis before clipping, so the
 * geometry stays in int range whatever the aspect ratio. */
#define SC_PLACE_MAX_DIM (1 << 28)

static long long clamp_dim(double v)
{
    if (!(v >= 1.0))
        return 1;
    if (v > SC_PLACE_MAX_DIM)
        return SC_PLACE_MAX_DIM;
    return (long long)v;
}

void sc_place_geometry(int scene_w, int scene_h, int prod_w, int prod_h, const sc_place_params_t *p,
                       sc_place_geometry_t *g)
{
    long long w = clamp_dim(round(p->scale * scene_w));
    long long h = clamp_dim(round((double)w * prod_h / (prod_w > 0 ? prod_w : 1)));
    g->width = (int)w;
    g->height = (int)h;
    g->left = (int)round(p->x * scene_w - w / 2.0);
    g->top = (int)round(p->y * scene_h - h / 2.0);
}

/* The visible window [x0, x1) x [y0, y1) of the placed product in the scene.
 * Returns 0 when nothing is visible. */
static int visible_window(int scene_w, int scene_h, const sc_place_geometry_t *g, long long *x0,
                          long long *y0, long long *x1, long long *y1)
{
    *x0 = g->left < 0 ? 0 : g->left;
    *y0 = g->top < 0 ? 0 : g->top;
    *x1 = (long long)g->left + g->width;
    *y1 = (long long)g->top + g->height;
    if (*x1 > scene_w)
        *x1 = scene_w;
    if (*y1 > scene_h)
        *y1 = scene_h;
    return *x1 > *x0 && *y1 > *y0;
}

static const char *params_error(const sc_place_params_t *p)
{
    if (!(p->x >= 0.0 && p->x <= 1.0) || !(p->y >= 0.0 && p->y <= 1.0))
        return "x and y must lie in [0, 1]";
    if (!(p->scale > 0.0 && p->scale <= 4.0))
        return "scale must lie in (0, 4]";
    return NULL;
}

int sc_place_check(int scene_w, int scene_h, int prod_w, int prod_h, const sc_place_params_t *p,
                   const char **err)
{
    const char *e = NULL;
    if (scene_w <= 0 || scene_h <= 0 || prod_w <= 0 || prod_h <= 0 || !p)
        e = "bad image";
    else
        e = params_error(p);
    if (!e) {
        sc_place_geometry_t g;
        long long x0, y0, x1, y1;
        sc_place_geometry(scene_w, scene_h, prod_w, prod_h, p, &g);
        /* 4 channels: the worst case (a keyed product is RGBA) */
        if (visible_window(scene_w, scene_h, &g, &x0, &y0, &x1, &y1) &&
            sc_resize_region_cost(prod_w, prod_h, g.width, g.height, (int)(y0 - g.top),
                                  (int)(x1 - x0), (int)(y1 - y0), 4, NULL) != 0)
            e = SC_PLACE_TOO_LARGE_MSG;
    }
    if (err)
        *err = e;
    return e ? -1 : 0;
}

const char *sc_keying_name(sc_keying_t k)
{
    switch (k) {
    case SC_KEYING_KEYED:
        return "keyed";
    case SC_KEYING_SKIPPED:
        return "skipped";
    case SC_KEYING_MASK:
        return "mask";
    default:
        return "none";
    }
}

int sc_place_prepare(const sc_image_t *product, int scene_w, int scene_h,
                     const sc_place_params_t *p, sc_place_layer_t *layer, const char **err)
{
    return sc_place_prepare_opts(product, scene_w, scene_h, p, NULL, layer, err);
}

int sc_place_prepare_opts(const sc_image_t *product, int scene_w, int scene_h,
                          const sc_place_params_t *p, const sc_place_opts_t *opts,
                          sc_place_layer_t *layer, const char **err)
{
    sc_image_t keyed = SC_IMAGE_INIT;
    const char *e = NULL;
    int rc = -1;
    if (layer) {
        memset(layer, 0, sizeof(*layer));
    }
    if (!layer || scene_w <= 0 || scene_h <= 0 || !product ||
        (product->channels != 3 && product->channels != 4) || product->width <= 0 ||
        product->height <= 0 || !p) {
        e = "bad image";
        goto done;
    }
    /* parameters and the resize's working limits before any work */
    if (sc_place_check(scene_w, scene_h, product->width, product->height, p, &e) != 0)
        goto done;
    sc_place_geometry_t g;
    sc_place_geometry(scene_w, scene_h, product->width, product->height, p, &g);
    long long x0, y0, x1, y1;
    if (opts && opts->mask &&
        (opts->mask->width != product->width || opts->mask->height != product->height)) {
        e = SC_PLACE_MASK_SIZE_MSG;
        goto done;
    }
    int visible = visible_window(scene_w, scene_h, &g, &x0, &y0, &x1, &y1);
    /* the product cache (pcache.h): keyed and resized once per product, region
     * and keying options; masked requests are not cached */
    sc_pcache_key_t ck;
    int cacheable = visible && opts && opts->product_sha && !opts->mask && sc_pcache_enabled();
    if (cacheable) {
        memset(&ck, 0, sizeof ck);
        memcpy(ck.sha, opts->product_sha, 32);
        ck.width = g.width;
        ck.height = g.height;
        ck.rx = (int)(x0 - g.left);
        ck.ry = (int)(y0 - g.top);
        ck.rw = (int)(x1 - x0);
        ck.rh = (int)(y1 - y0);
        ck.shadow = (int)opts->shadow;
        if (!product->pixels && !sc_pcache_has(&ck)) {
            e = SC_PLACE_NEED_PIXELS;
            goto done;
        }
        int kk = 0, hit = sc_pcache_get(&ck, &layer->img, &kk);
        if (hit < 0) {
            e = "out of memory";
            goto done;
        }
        if (hit == 1) {
            layer->keying = (sc_keying_t)kk;
            layer->x0 = (int)x0;
            layer->y0 = (int)y0;
            rc = 0;
            goto done;
        }
    }
    if (!product->pixels) { /* header only: not cacheable, or evicted since */
        e = SC_PLACE_NEED_PIXELS;
        goto done;
    }
    const sc_image_t *prod = product;
    if (opts && opts->mask) {
        if (sc_key_apply_mask(product, opts->mask, &keyed) != 0) {
            e = "out of memory";
            goto done;
        }
        prod = &keyed;
        layer->keying = SC_KEYING_MASK;
    } else if (!sc_image_has_transparency(product)) {
        sc_key_opts_t ko = {opts ? opts->shadow : SC_KEY_SHADOW_KEEP};
        int k = sc_key_background_opts(product, &ko, &keyed, NULL);
        if (k < 0) {
            e = "out of memory";
            goto done;
        }
        if (k == 1)
            prod = &keyed;
        layer->keying = k == 1 ? SC_KEYING_KEYED : SC_KEYING_SKIPPED;
    }
    if (!visible) { /* nothing to draw */
        rc = 0;
        goto done;
    }
    if (sc_resize_lanczos_region(prod, g.width, g.height, (int)(x0 - g.left), (int)(y0 - g.top),
                                 (int)(x1 - x0), (int)(y1 - y0), &layer->img,
                                 sc_simd_level()) != 0) {
        e = "out of memory resizing the product";
        goto done;
    }
    layer->x0 = (int)x0;
    layer->y0 = (int)y0;
    if (cacheable)
        sc_pcache_put(&ck, &layer->img, (int)layer->keying);
    rc = 0;
done:
    sc_image_free(&keyed);
    if (err)
        *err = e;
    return rc;
}

void sc_place_apply(sc_image_t *scene, const sc_place_layer_t *layer)
{
    const sc_image_t *small = &layer->img;
    if (!small->pixels || !scene->pixels || layer->x0 < 0 || layer->y0 < 0 ||
        small->width > scene->width - layer->x0 || small->height > scene->height - layer->y0)
        return;
    sc_simd_level_t lvl = sc_simd_level();
    size_t sch = (size_t)scene->channels, rw = (size_t)small->width;
    for (int y = 0; y < small->height; y++) {
        uint8_t *d = scene->pixels +
                     ((size_t)(y + layer->y0) * (size_t)scene->width + (size_t)layer->x0) * sch;
        const uint8_t *s = small->pixels + (size_t)y * rw * (size_t)small->channels;
        if (small->channels == 4) {
            if (sch == 3)
                sc_over_rgba_on_rgb(d, s, rw, lvl);
            else
                sc_over_rgba_on_rgba(d, s, rw);
        } else if (sch == 3) {
            memcpy(d, s, rw * 3);
        } else {
            for (size_t i = 0; i < rw; i++) {
                memcpy(d + i * 4, s + i * 3, 3);
                d[i * 4 + 3] = 255;
            }
        }
    }
}

void sc_place_layer_free(sc_place_layer_t *layer)
{
    if (layer)
        sc_image_free(&layer->img);
}

int sc_place_composite(sc_image_t *scene, const sc_image_t *product, const sc_place_params_t *p,
                       const char **err)
{
    return sc_place_composite_opts(scene, product, p, NULL, NULL, err);
}

int sc_place_composite_opts(sc_image_t *scene, const sc_image_t *product,
                            const sc_place_params_t *p, const sc_place_opts_t *opts,
                            sc_keying_t *keying, const char **err)
{
    sc_place_layer_t layer;
    if (!scene || !scene->pixels || (scene->channels != 3 && scene->channels != 4)) {
        if (err)
            *err = "bad image";
        return -1;
    }
    if (sc_place_prepare_opts(product, scene->width, scene->height, p, opts, &layer, err) != 0)
        return -1;
    if (keying)
        *keying = layer.keying;
    sc_place_apply(scene, &layer);
    sc_place_layer_free(&layer);
    return 0;
}
