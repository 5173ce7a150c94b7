/* Background keying (key.h). */
#include "image/key.h"

#include <stdlib.h>
#include <string.h>

/* per-pixel labels */
enum { L_PRODUCT = 0, L_BACK = 1, L_SHADOW = 2, L_BAND = 3, L_CAND = 4, L_BAND0 = 5 };

/* The largest change of shade (on the 0..255 scale of the backdrop's
 * brightness) between neighbouring shadow pixels: a soft shadow changes by a
 * few levels per pixel (compared on the 3x3 mean), a product's edge or
 * outline by tens. */
#define SHADOW_STEP 8
/* The largest chroma residual |C - s B| of a shadow pixel. */
#define SHADOW_CHROMA 10
/* The darkest shadow extracted (s * 255); darker is product. */
#define SHADOW_MIN_S 90
#define EXTRA_BAND 3

static int dist(const uint8_t *p, const uint8_t bg[3])
{
    int d = abs(p[0] - bg[0]), e = abs(p[1] - bg[1]), f = abs(p[2] - bg[2]);
    if (e > d)
        d = e;
    return f > d ? f : d;
}

static uint8_t ramp(int d)
{
    if (d <= SC_KEY_LO)
        return 0;
    if (d >= SC_KEY_HI)
        return 255;
    return (uint8_t)(((d - SC_KEY_LO) * 255 + (SC_KEY_HI - SC_KEY_LO) / 2) /
                     (SC_KEY_HI - SC_KEY_LO));
}

static int median(const unsigned hist[256], size_t count)
{
    size_t seen = 0;
    for (int v = 0; v < 256; v++) {
        seen += hist[v];
        if (seen * 2 > count)
            return v;
    }
    return 255;
}

/* Shade of the backdrop: s (0..255, 255 = the backdrop itself) when p is a
 * darker version of bg with the same chroma, else -1. */
static int shade(const uint8_t *p, const uint8_t bg[3])
{
    int bb = bg[0] * bg[0] + bg[1] * bg[1] + bg[2] * bg[2];
    if (bb == 0)
        return -1;
    int pb = p[0] * bg[0] + p[1] * bg[1] + p[2] * bg[2];
    int s = (pb * 255 + bb / 2) / bb;
    if (s > 255)
        s = 255;
    for (int c = 0; c < 3; c++)
        if (abs(p[c] * 255 - s * bg[c]) > SHADOW_CHROMA * 255)
            return -1;
    return s;
}

static int border_step(int y, int w, int h)
{
    return (y == 0 || y == h - 1) ? 1 : (w > 1 ? w - 1 : 1);
}

/* The 4-neighbours of pixel i in a w-wide image of n pixels; returns how many. */
static inline int neighbours(uint32_t i, uint32_t w, size_t n, uint32_t nb[4])
{
    uint32_t x = i % w;
    int k = 0;
    if (x > 0)
        nb[k++] = i - 1;
    if (x + 1 < w)
        nb[k++] = i + 1;
    if (i >= w)
        nb[k++] = i - w;
    if ((size_t)i + w < n)
        nb[k++] = i + w;
    return k;
}

/* Breadth-first fill of the product-labelled pixels 4-connected to
 * queue[qh..qt): a pixel within maxd of the backdrop takes label; with shadow
 * set, one that is a shade of the backdrop (raw and its 3x3 mean sh pale
 * enough) changing gently from its neighbour takes L_SHADOW. Both go on the
 * queue; returns its new end. */
static inline size_t flood(uint8_t *lab, const uint8_t *dmap, const uint8_t *raw, const uint8_t *sh,
                           uint32_t *queue, size_t qh, size_t qt, uint32_t w, size_t n, int maxd,
                           uint8_t label, int shadow)
{
    while (qh < qt) {
        uint32_t i = queue[qh++];
        uint32_t nb[4];
        int k = neighbours(i, w, n, nb);
        for (int t = 0; t < k; t++) {
            uint32_t j = nb[t];
            if (lab[j] != L_PRODUCT)
                continue;
            if (dmap[j] <= maxd) {
                lab[j] = label;
                queue[qt++] = j;
            } else if (shadow && raw[j] >= SHADOW_MIN_S && sh[j] >= SHADOW_MIN_S &&
                       abs((int)sh[j] - (int)sh[i]) <= SHADOW_STEP) {
                lab[j] = L_SHADOW;
                queue[qt++] = j;
            }
        }
    }
    return qt;
}

/* The backdrop colour, or 0 when the border is not usable. */
static int find_backdrop(const uint8_t *px, int w, int h, int ch, uint8_t bgc[3])
{
    unsigned hist[3][256];
    memset(hist, 0, sizeof(hist));
    size_t count = 0, close = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x += border_step(y, w, h)) {
            const uint8_t *p = px + ((size_t)y * (size_t)w + (size_t)x) * (size_t)ch;
            for (int c = 0; c < 3; c++)
                hist[c][p[c]]++;
            count++;
        }
    for (int c = 0; c < 3; c++)
        bgc[c] = (uint8_t)median(hist[c], count);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x += border_step(y, w, h))
            if (dist(px + ((size_t)y * (size_t)w + (size_t)x) * (size_t)ch, bgc) <=
                SC_KEY_UNIFORM_DIST)
                close++;
    return close * 100 >= count * SC_KEY_UNIFORM_PCT;
}

int sc_key_background(const sc_image_t *src, sc_image_t *out, uint8_t bg[3])
{
    return sc_key_background_opts(src, NULL, out, bg);
}

int sc_key_background_opts(const sc_image_t *src, const sc_key_opts_t *opts, sc_image_t *out,
                           uint8_t bg_out[3])
{
    sc_image_t res = SC_IMAGE_INIT;
    uint32_t *queue = NULL;
    uint8_t *lab = NULL, *raw = NULL, *sh = NULL, *dmap = NULL;
    int rc = -1;
    if (out)
        *out = res;
    if (!src || !out || !src->pixels || src->width <= 0 || src->height <= 0 ||
        (src->channels != 3 && src->channels != 4))
        return -1;
    int w = src->width, h = src->height, ch = src->channels;
    size_t n = (size_t)w * (size_t)h;
    if (n > UINT32_MAX)
        return -1;
    const uint8_t *px = src->pixels;
    uint8_t bg[3];
    if (!find_backdrop(px, w, h, ch, bg))
        return 0;
    if (bg_out)
        memcpy(bg_out, bg, 3);
    if (sc_image_alloc(&res, w, h, 4) != 0)
        goto cleanup;
    queue = malloc(n * sizeof(uint32_t));
    lab = calloc(n, 1);
    raw = malloc(n);  /* shade of the backdrop, 0..255 (255: the backdrop; 0: not a shade) */
    sh = malloc(n);   /* raw, 3x3 mean: sensor noise would hide a shadow's gentle slope */
    dmap = malloc(n); /* Chebyshev distance to the backdrop */
    if (!queue || !lab || !raw || !sh || !dmap)
        goto cleanup;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *q = px + i * (size_t)ch;
        dmap[i] = (uint8_t)dist(q, bg);
        int s = shade(q, bg);
        raw[i] = (uint8_t)(s < 0 ? 0 : s);
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sum = 0, cnt = 0;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int yy = y + dy, xx = x + dx;
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w)
                        continue;
                    sum += raw[(size_t)yy * (size_t)w + (size_t)xx];
                    cnt++;
                }
            sh[(size_t)y * (size_t)w + (size_t)x] = (uint8_t)((sum + cnt / 2) / cnt);
        }

    /* 1. the backdrop (and its soft shadow), filled from the border */
    size_t qt = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x += border_step(y, w, h)) {
            size_t i = (size_t)y * (size_t)w + (size_t)x;
            if (dmap[i] <= SC_KEY_LO && lab[i] == L_PRODUCT) {
                lab[i] = L_BACK;
                queue[qt++] = (uint32_t)i;
            }
        }
    flood(lab, dmap, raw, sh, queue, 0, qt, (uint32_t)w, n, SC_KEY_LO, L_BACK, 1);

    /* 2. holes: enclosed near-backdrop regions large enough not to be a highlight */
    size_t min_area = n / SC_KEY_HOLE_MIN_FRAC;
    if (min_area < SC_KEY_HOLE_MIN_AREA)
        min_area = SC_KEY_HOLE_MIN_AREA;
    for (size_t s0 = 0; s0 < n; s0++) {
        if (lab[s0] != L_PRODUCT || dmap[s0] > SC_KEY_HOLE_DIST)
            continue;
        qt = 0;
        lab[s0] = L_CAND;
        queue[qt++] = (uint32_t)s0;
        qt = flood(lab, dmap, raw, sh, queue, 0, qt, (uint32_t)w, n, SC_KEY_HOLE_DIST, L_CAND, 0);
        /* L_CAND marks a small component for good: a highlight (relabelled
         * product below) */
        if (qt < min_area) {
            continue; /* stays L_CAND */
        }
        /* a hole: backdrop, grown through pixels within LO like the outer fill
         * (the component itself only took the stricter HOLE_DIST) */
        for (size_t q = 0; q < qt; q++)
            lab[queue[q]] = L_BACK;
        flood(lab, dmap, raw, sh, queue, 0, qt, (uint32_t)w, n, SC_KEY_LO, L_BACK, 0);
    }
    for (size_t i = 0; i < n; i++)
        if (lab[i] == L_CAND)
            lab[i] = L_PRODUCT;

    /* 3. the edge band: product pixels within SC_KEY_BAND steps of backdrop or
     * shadow, then up to EXTRA_BAND more steps through still pale pixels
     * (d < HI: backdrop mixed in, as in the wedge where a handle meets a body) */
    for (int pass = 0; pass < SC_KEY_BAND + EXTRA_BAND; pass++) {
        qt = 0;
        for (size_t i = 0; i < n; i++) {
            if (lab[i] != L_PRODUCT || (pass >= SC_KEY_BAND && dmap[i] >= SC_KEY_HI))
                continue;
            int near = 0;
            uint32_t nb[4];
            int k = neighbours((uint32_t)i, (uint32_t)w, n, nb);
            for (int t = 0; t < k && !near; t++) {
                uint8_t l = lab[nb[t]];
                near = pass == 0 ? (l == L_BACK || l == L_SHADOW) : (l == L_BAND || l == L_BAND0);
            }
            if (near)
                queue[qt++] = (uint32_t)i;
        }
        for (size_t q = 0; q < qt; q++)
            lab[queue[q]] = pass == 0 ? L_BAND0 : L_BAND;
    }

    /* 4. output */
    int remove_shadow = opts && opts->shadow == SC_KEY_SHADOW_REMOVE;
    const int R = SC_KEY_BAND + EXTRA_BAND + 1;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *c = px + i * (size_t)ch;
        uint8_t *o = res.pixels + i * 4;
        switch (lab[i]) {
        case L_BACK:
            memset(o, 0, 4);
            break;
        case L_SHADOW: {
            /* black at the darkening: scene * s, never lighter */
            int a = 255 - sh[i];
            o[0] = o[1] = o[2] = 0;
            o[3] = remove_shadow ? 0 : (uint8_t)a;
            break;
        }
        case L_BAND0:
        case L_BAND: {
            /* the nearest interior colour F within R pixels */
            int x = (int)(i % (size_t)w), y = (int)(i / (size_t)w), best = -1;
            const uint8_t *f = NULL;
            for (int dy = -R; dy <= R; dy++) {
                int yy = y + dy;
                if (yy < 0 || yy >= h)
                    continue;
                for (int dx = -R; dx <= R; dx++) {
                    int xx = x + dx;
                    if (xx < 0 || xx >= w)
                        continue;
                    size_t j = (size_t)yy * (size_t)w + (size_t)xx;
                    int d2 = dx * dx + dy * dy;
                    if (lab[j] == L_PRODUCT && (best < 0 || d2 < best)) {
                        best = d2;
                        f = px + j * (size_t)ch;
                    }
                }
            }
            int fb[3], cb[3], ff = 0, cf = 0;
            for (int k = 0; k < 3; k++) {
                cb[k] = c[k] - bg[k];
                fb[k] = f ? f[k] - bg[k] : 0;
                ff += fb[k] * fb[k];
                cf += cb[k] * fb[k];
            }
            int a255;
            if (f && ff >= SC_KEY_HI * SC_KEY_HI) {
                a255 = (int)(((long long)cf * 255 + ff / 2) / ff);
                a255 = a255 < 0 ? 0 : a255 > 255 ? 255 : a255;
            } else if (lab[i] == L_BAND0) { /* white on white: no reliable F, ramp of */
                a255 = ramp(dmap[i]);       /* the distance next to the backdrop */
            } else {
                a255 = 255; /* inside a pale product's outline: product */
            }
            if (a255 == 0) {
                memset(o, 0, 4);
                break;
            }
            for (int k = 0; k < 3; k++) {
                /* F' = (C - (1 - a) B) / a, clamped */
                int v = (c[k] * 255 - (255 - a255) * bg[k] + a255 / 2) / a255;
                o[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
            o[3] = (uint8_t)a255;
            break;
        }
        default:
            o[0] = c[0], o[1] = c[1], o[2] = c[2], o[3] = 255;
        }
    }
    *out = res;
    res.pixels = NULL;
    rc = 1;
cleanup:
    sc_image_free(&res);
    free(queue);
    free(lab);
    free(raw);
    free(sh);
    free(dmap);
    return rc;
}

int sc_key_apply_mask(const sc_image_t *src, const sc_image_t *mask, sc_image_t *out)
{
    sc_image_t res = SC_IMAGE_INIT;
    if (out)
        *out = res;
    if (!src || !mask || !out || !src->pixels || !mask->pixels || src->width != mask->width ||
        src->height != mask->height || src->channels < 3 || src->channels > 4 ||
        mask->channels < 1 || mask->channels > 4)
        return -1;
    if (sc_image_alloc(&res, src->width, src->height, 4) != 0)
        return -1;
    size_t n = (size_t)src->width * (size_t)src->height;
    int mc = mask->channels, ai = (mc == 2 || mc == 4) ? mc - 1 : 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *c = src->pixels + i * (size_t)src->channels;
        uint8_t *o = res.pixels + i * 4;
        o[0] = c[0], o[1] = c[1], o[2] = c[2];
        o[3] = mask->pixels[i * (size_t)mc + (size_t)ai];
    }
    *out = res;
    return 0;
}
