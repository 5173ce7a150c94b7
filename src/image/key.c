/* Background keying (key.h). */
#include "image/key.h"

#include <stdlib.h>
#include <string.h>

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

int sc_key_background(const sc_image_t *src, sc_image_t *out, uint8_t bg_out[3])
{
    sc_image_t res = SC_IMAGE_INIT;
    uint32_t *stack = NULL;
    uint8_t *seen = NULL;
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
#define PX(x, y) (px + ((size_t)(y) * (size_t)w + (size_t)(x)) * (size_t)ch)

    /* border colour: per-channel median of the outer ring */
    unsigned hist[3][256];
    memset(hist, 0, sizeof(hist));
    size_t count = 0;
    for (int pass = 0; pass < 2; pass++) {
        uint8_t bgc[3] = {0, 0, 0};
        if (pass == 1)
            for (int c = 0; c < 3; c++)
                bgc[c] = (uint8_t)median(hist[c], count);
        size_t close = 0;
        for (int y = 0; y < h; y++) {
            int step = (y == 0 || y == h - 1) ? 1 : (w > 1 ? w - 1 : 1);
            for (int x = 0; x < w; x += step) {
                const uint8_t *p = PX(x, y);
                if (pass == 0) {
                    for (int c = 0; c < 3; c++)
                        hist[c][p[c]]++;
                    count++;
                } else if (dist(p, bgc) <= SC_KEY_UNIFORM_DIST) {
                    close++;
                }
            }
        }
        if (pass == 1) {
            if (close * 100 < count * SC_KEY_UNIFORM_PCT)
                return 0;
            if (bg_out)
                memcpy(bg_out, bgc, 3);
            if (sc_image_alloc(&res, w, h, 4) != 0)
                goto cleanup;
            stack = malloc(n * sizeof(uint32_t));
            seen = malloc(n); /* distance map; 255 once a pixel is taken */
            if (!stack || !seen)
                goto cleanup;
            /* colour, alpha 255 until the fill says otherwise, and each pixel's
             * distance to the background, computed once */
            uint8_t lut[256];
            for (int d = 0; d < 256; d++)
                lut[d] = ramp(d);
            for (size_t i = 0; i < n; i++) {
                const uint8_t *q = px + i * (size_t)ch;
                uint8_t *o = res.pixels + i * 4;
                o[0] = q[0], o[1] = q[1], o[2] = q[2], o[3] = 255;
                seen[i] = (uint8_t)dist(q, bgc);
            }
            uint8_t *alpha = res.pixels + 3;
            size_t sp = 0;
#define TAKE(j)                                                                                    \
    do {                                                                                           \
        if (seen[j] < SC_KEY_HI) {                                                                 \
            alpha[(size_t)(j)*4] = lut[seen[j]];                                                   \
            seen[j] = 255;                                                                         \
            stack[sp++] = (uint32_t)(j);                                                           \
        }                                                                                          \
    } while (0)
            /* seed: border pixels close to the background */
            for (int y = 0; y < h; y++) {
                int step = (y == 0 || y == h - 1) ? 1 : (w > 1 ? w - 1 : 1);
                for (int x = 0; x < w; x += step) {
                    size_t i = (size_t)y * (size_t)w + (size_t)x;
                    TAKE(i);
                }
            }
            /* 4-connected flood fill; each pixel is pushed at most once */
            while (sp > 0) {
                uint32_t i = stack[--sp];
                uint32_t x = i % (uint32_t)w;
                if (x > 0)
                    TAKE(i - 1);
                if (x + 1 < (uint32_t)w)
                    TAKE(i + 1);
                if (i >= (uint32_t)w)
                    TAKE(i - (uint32_t)w);
                if ((size_t)i + (size_t)w < n)
                    TAKE(i + (uint32_t)w);
            }
#undef TAKE
        }
    }
#undef PX
    *out = res;
    res.pixels = NULL;
    rc = 1;
cleanup:
    sc_image_free(&res);
    free(stack);
    free(seen);
    return rc;
}
