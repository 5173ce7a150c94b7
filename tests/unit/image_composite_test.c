/* Compositing tests: the over formula checked exhaustively against its
 * definition, every SIMD level byte-identical to scalar (random pixels, all
 * alpha values, odd widths, unaligned rows), the RGBA-scene over, placement
 * geometry and clipping, and background keying. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image/composite.h"
#include "image/key.h"
#include "image/place.h"
#include "image/resize.h"
#include "test.h"

static uint32_t rng_state = 4242;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static void test_formula(void)
{
    /* all alphas, a grid of colours: out = floor((p*a + s*(255-a) + 127) / 255) */
    int bad = 0;
    for (int a = 0; a < 256; a++)
        for (int p = 0; p < 256; p += 5)
            for (int s = 0; s < 256; s += 3) {
                uint8_t sc[3] = {(uint8_t)s, (uint8_t)s, (uint8_t)(255 - s)};
                uint8_t pr[4] = {(uint8_t)p, (uint8_t)(255 - p), (uint8_t)p, (uint8_t)a};
                sc_over_rgba_on_rgb(sc, pr, 1, SC_SIMD_SCALAR);
                int e0 = (p * a + s * (255 - a) + 127) / 255;
                int e1 = ((255 - p) * a + s * (255 - a) + 127) / 255;
                int e2 = (p * a + (255 - s) * (255 - a) + 127) / 255;
                if (sc[0] != e0 || sc[1] != e1 || sc[2] != e2)
                    bad++;
            }
    CHECK_EQ_INT(bad, 0);
    /* opaque replaces, transparent keeps, 50 % is the rounded mean */
    uint8_t s1[3] = {10, 20, 30}, p1[4] = {200, 100, 0, 255};
    sc_over_rgba_on_rgb(s1, p1, 1, SC_SIMD_SCALAR);
    CHECK(s1[0] == 200 && s1[1] == 100 && s1[2] == 0);
    uint8_t s2[3] = {10, 20, 30}, p2[4] = {200, 100, 0, 0};
    sc_over_rgba_on_rgb(s2, p2, 1, SC_SIMD_SCALAR);
    CHECK(s2[0] == 10 && s2[1] == 20 && s2[2] == 30);
    uint8_t s3[3] = {100, 0, 255}, p3[4] = {200, 255, 0, 128};
    sc_over_rgba_on_rgb(s3, p3, 1, SC_SIMD_SCALAR);
    CHECK(s3[0] == 150 && s3[1] == 128 && s3[2] == 127);
}

static void test_simd_equal(void)
{
    sc_simd_level_t top = sc_simd_cpu_level();
    for (int iter = 0; iter < 400; iter++) {
        size_t n = rnd() % 75, off_s = rnd() % 5, off_p = rnd() % 7;
        uint8_t scene[3 * 80 + 8], prod[4 * 80 + 8], ref[3 * 80 + 8], out[3 * 80 + 8];
        int mode = iter % 4; /* random alpha / runs of 0 / runs of 255 / mixed runs */
        for (size_t i = 0; i < sizeof(scene); i++)
            scene[i] = (uint8_t)rnd();
        for (size_t i = 0; i < sizeof(prod); i++)
            prod[i] = (uint8_t)rnd();
        for (size_t i = 0; i < n; i++) {
            uint8_t *a = prod + off_p + i * 4 + 3;
            if (mode == 1)
                *a = (i / 8) % 2 ? 0 : *a;
            else if (mode == 2)
                *a = (i / 16) % 2 ? 255 : *a;
            else if (mode == 3)
                *a = (i / 16) % 3 == 0 ? 0 : (i / 16) % 3 == 1 ? 255 : (uint8_t)(i * 11);
        }
        memcpy(ref, scene, sizeof(scene));
        sc_over_rgba_on_rgb(ref + off_s, prod + off_p, n, SC_SIMD_SCALAR);
        for (int l = SC_SIMD_AVX2; l <= (int)top; l++) {
            memcpy(out, scene, sizeof(scene));
            sc_over_rgba_on_rgb(out + off_s, prod + off_p, n, l);
            CHECK(memcmp(out, ref, sizeof(out)) == 0); /* also: nothing past n touched */
        }
    }
    /* every alpha value in one long row */
    uint8_t scene[3 * 256], prod[4 * 256], ref[3 * 256];
    for (int i = 0; i < 256; i++) {
        prod[i * 4] = (uint8_t)rnd(), prod[i * 4 + 1] = (uint8_t)rnd(),
                 prod[i * 4 + 2] = (uint8_t)rnd();
        prod[i * 4 + 3] = (uint8_t)i;
    }
    for (int i = 0; i < 3 * 256; i++)
        scene[i] = (uint8_t)rnd();
    memcpy(ref, scene, sizeof(ref));
    sc_over_rgba_on_rgb(ref, prod, 256, SC_SIMD_SCALAR);
    for (int l = SC_SIMD_AVX2; l <= (int)top; l++) {
        uint8_t out[3 * 256];
        memcpy(out, scene, sizeof(out));
        sc_over_rgba_on_rgb(out, prod, 256, l);
        CHECK(memcmp(out, ref, sizeof(out)) == 0);
    }
}

static void test_rgba_scene(void)
{
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        uint8_t d[4], p[4];
        for (int c = 0; c < 4; c++)
            d[c] = (uint8_t)rnd(), p[c] = (uint8_t)rnd();
        if (i % 5 == 0)
            p[3] = 0;
        double ap = p[3] / 255.0, as = d[3] / 255.0, ao = ap + as * (1 - ap);
        double e[4]; /* exact values; the kernel must round to within 0.5 */
        for (int c = 0; c < 3; c++)
            e[c] = p[3] ? (p[c] * ap + d[c] * as * (1 - ap)) / ao : d[c];
        e[3] = p[3] ? ao * 255 : d[3];
        sc_over_rgba_on_rgba(d, p, 1);
        for (int c = 0; c < 4; c++)
            if (fabs(d[c] - e[c]) > 0.5 + 1e-9)
                bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_geometry(void)
{
    sc_place_geometry_t g;
    sc_place_params_t p = {0.5, 0.6, 0.4};
    sc_place_geometry(1920, 1080, 1000, 1000, &p, &g);
    CHECK(g.width == 768 && g.height == 768 && g.left == 576 && g.top == 264);
    sc_place_params_t q = {0.0, 1.0, 0.1};
    sc_place_geometry(1001, 500, 300, 150, &q, &g);
    CHECK_EQ_INT(g.width, 100);
    CHECK_EQ_INT(g.height, 50);
    CHECK_EQ_INT(g.left, -50);
    CHECK_EQ_INT(g.top, 475);
    sc_place_params_t r = {0.5, 0.5, 0.0001};
    sc_place_geometry(100, 100, 10, 1000, &r, &g);
    CHECK(g.width == 1 && g.height == 100);
}

static void fill_scene(sc_image_t *s, int w, int h, int ch)
{
    CHECK_EQ_INT(sc_image_alloc(s, w, h, ch), 0);
    for (size_t i = 0; i < (size_t)w * h * ch; i++)
        s->pixels[i] = (uint8_t)(i * 13 % 251);
}

static void test_place(void)
{
    /* product with soft alpha, partly outside the scene's left/bottom edges */
    sc_image_t scene, expect, prod, small;
    fill_scene(&scene, 120, 80, 3);
    fill_scene(&expect, 120, 80, 3);
    CHECK_EQ_INT(sc_image_alloc(&prod, 50, 30, 4), 0);
    for (int i = 0; i < 50 * 30; i++) {
        prod.pixels[i * 4] = (uint8_t)(i % 256), prod.pixels[i * 4 + 1] = 9,
                        prod.pixels[i * 4 + 2] = 200;
        prod.pixels[i * 4 + 3] = (uint8_t)(i % 3 == 0 ? 0 : i % 3 == 1 ? 255 : i * 7);
    }
    sc_place_params_t p = {0.05, 0.95, 0.5};
    sc_place_geometry_t g;
    sc_place_geometry(120, 80, 50, 30, &p, &g);
    CHECK(g.left < 0 && g.top + g.height > 80);
    const char *err = NULL;
    CHECK_EQ_INT(sc_place_composite(&scene, &prod, &p, &err), 0);
    /* expected: full resize, composite the visible part pixel by pixel (scalar) */
    CHECK_EQ_INT(sc_resize_lanczos_region(&prod, g.width, g.height, 0, 0, g.width, g.height, &small,
                                          SC_SIMD_SCALAR),
                 0);
    for (int y = 0; y < g.height; y++)
        for (int x = 0; x < g.width; x++) {
            int sx = g.left + x, sy = g.top + y;
            if (sx < 0 || sy < 0 || sx >= 120 || sy >= 80)
                continue;
            sc_over_rgba_on_rgb(expect.pixels + (sy * 120 + sx) * 3,
                                small.pixels + (y * g.width + x) * 4, 1, SC_SIMD_SCALAR);
        }
    CHECK(memcmp(scene.pixels, expect.pixels, 120 * 80 * 3) == 0);
    sc_image_free(&small);

    /* entirely outside: untouched */
    sc_image_t before;
    fill_scene(&before, 120, 80, 3);
    memcpy(before.pixels, scene.pixels, 120 * 80 * 3);
    sc_place_params_t out = {0.0, 0.0, 0.01};
    /* 1x1 product centred on the corner: round(-0.5) puts it at (-1, -1) */
    sc_place_geometry(120, 80, 50, 30, &out, &g);
    CHECK(g.left + g.width <= 0 && g.top + g.height <= 0);
    CHECK_EQ_INT(sc_place_composite(&scene, &prod, &out, &err), 0);
    CHECK(memcmp(before.pixels, scene.pixels, 120 * 80 * 3) == 0);
    /* bad parameters */
    sc_place_params_t bad1 = {1.5, 0.5, 0.5}, bad2 = {0.5, 0.5, 0.0}, bad3 = {0.5, NAN, 0.5},
                      bad4 = {0.5, 0.5, 4.5};
    CHECK_EQ_INT(sc_place_composite(&scene, &prod, &bad1, &err), -1);
    CHECK(err != NULL);
    CHECK_EQ_INT(sc_place_composite(&scene, &prod, &bad2, &err), -1);
    CHECK_EQ_INT(sc_place_composite(&scene, &prod, &bad3, &err), -1);
    CHECK_EQ_INT(sc_place_composite(&scene, &prod, &bad4, &err), -1);
    CHECK(memcmp(before.pixels, scene.pixels, 120 * 80 * 3) == 0);

    /* RGBA scene keeps its channels; an opaque product pixel makes it opaque */
    sc_image_t rs;
    fill_scene(&rs, 40, 40, 4);
    sc_image_t op;
    CHECK_EQ_INT(sc_image_alloc(&op, 10, 10, 3), 0);
    for (int i = 0; i < 300; i++)
        op.pixels[i] = (uint8_t)(rnd() % 256); /* noisy border: not keyed */
    sc_place_params_t c = {0.5, 0.5, 0.25};
    CHECK_EQ_INT(sc_place_composite(&rs, &op, &c, &err), 0);
    CHECK_EQ_INT(rs.channels, 4);
    CHECK_EQ_INT(rs.pixels[(20 * 40 + 20) * 4 + 3], 255);
    sc_image_free(&rs);
    sc_image_free(&op);
    sc_image_free(&before);
    sc_image_free(&prod);
    sc_image_free(&scene);
    sc_image_free(&expect);
}

/* an opaque product shot: noisy backdrop (246,245,242), a dark body with a
 * near-backdrop highlight inside it */
static void make_shot(sc_image_t *img, int w, int h)
{
    CHECK_EQ_INT(sc_image_alloc(img, w, h, 3), 0);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->pixels + (y * w + x) * 3;
            int body = x >= w / 4 && x < 3 * w / 4 && y >= h / 5 && y < 4 * h / 5;
            int hl = body && x >= w / 2 - 2 && x < w / 2 + 2 && y >= h / 5 + 5 && y < 4 * h / 5 - 5;
            int n = (int)(rnd() % 5) - 2;
            if (hl) {
                p[0] = 240, p[1] = 248, p[2] = 240;
            } else if (body) {
                p[0] = 30, p[1] = 110, p[2] = 70;
            } else {
                p[0] = (uint8_t)(246 + n), p[1] = (uint8_t)(245 + n), p[2] = (uint8_t)(242 + n);
            }
        }
}

static void test_key(void)
{
    sc_image_t shot, keyed;
    make_shot(&shot, 60, 50);
    uint8_t bg[3];
    CHECK_EQ_INT(sc_key_background(&shot, &keyed, bg), 1);
    CHECK(abs(bg[0] - 246) <= 2 && abs(bg[1] - 245) <= 2 && abs(bg[2] - 242) <= 2);
    CHECK_EQ_INT(keyed.channels, 4);
    CHECK_EQ_INT(keyed.pixels[3], 0);                        /* corner */
    CHECK_EQ_INT(keyed.pixels[(25 * 60 + 20) * 4 + 3], 255); /* body */
    CHECK_EQ_INT(keyed.pixels[(25 * 60 + 30) * 4 + 3], 255); /* highlight inside: kept */
    CHECK(memcmp(keyed.pixels + (25 * 60 + 20) * 4, shot.pixels + (25 * 60 + 20) * 3, 3) == 0);
    sc_image_free(&keyed);

    /* soft edge: a pixel halfway between backdrop and body gets partial alpha */
    uint8_t *edge = shot.pixels + (25 * 60 + 14) * 3; /* left of the body (x = 15) */
    edge[0] = 246 - 25, edge[1] = 245 - 25, edge[2] = 242 - 25;
    CHECK_EQ_INT(sc_key_background(&shot, &keyed, NULL), 1);
    int a = keyed.pixels[(25 * 60 + 14) * 4 + 3];
    CHECK(a > 0 && a < 255);
    sc_image_free(&keyed);

    /* through place: the backdrop does not cover the scene, the body does */
    sc_image_t scene, orig;
    fill_scene(&scene, 60, 50, 3);
    fill_scene(&orig, 60, 50, 3);
    sc_place_params_t p = {0.5, 0.5, 1.0};
    const char *err;
    CHECK_EQ_INT(sc_place_composite(&scene, &shot, &p, &err), 0);
    CHECK(memcmp(scene.pixels, orig.pixels, 3 * 60) == 0); /* top row: backdrop only */
    uint8_t *body = scene.pixels + (25 * 60 + 20) * 3;
    CHECK(abs(body[0] - 30) <= 2 && abs(body[1] - 110) <= 2 && abs(body[2] - 70) <= 2);
    sc_image_free(&scene);
    sc_image_free(&orig);
    sc_image_free(&shot);

    /* non-uniform border: not keyed */
    sc_image_t noise;
    CHECK_EQ_INT(sc_image_alloc(&noise, 20, 20, 3), 0);
    for (int i = 0; i < 1200; i++)
        noise.pixels[i] = (uint8_t)rnd();
    CHECK_EQ_INT(sc_key_background(&noise, &keyed, NULL), 0);
    CHECK(keyed.pixels == NULL);
    sc_image_free(&noise);
    sc_image_t empty = SC_IMAGE_INIT;
    CHECK_EQ_INT(sc_key_background(&empty, &keyed, NULL), -1);
}

int main(void)
{
    test_formula();
    test_simd_equal();
    test_rgba_scene();
    test_geometry();
    test_place();
    test_key();
    return test_report("image_composite_test");
}
