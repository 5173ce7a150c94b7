/* Resize tests: flat stays flat, premultiplied alpha (no colour bleeding),
 * agreement with an independent floating-point Lanczos-3, windows equal to
 * crops of the full resize, and every SIMD level byte-identical to scalar. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "image/resize.h"
#include "test.h"

static uint32_t rng_state = 777;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static void fill(sc_image_t *img, int w, int h, int ch, int mode)
{
    CHECK_EQ_INT(sc_image_alloc(img, w, h, ch), 0);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                uint8_t v;
                if (mode == 0)
                    v = (uint8_t)rnd();
                else if (mode == 1)
                    v = (uint8_t)(40 + x * 3 + y * 2 + c * 10);
                else
                    v = (uint8_t)(c == 3 ? 200 : 60 + c * 50);
                img->pixels[((size_t)y * w + x) * ch + c] = v;
            }
}

static void test_flat(void)
{
    const int dims[][4] = {
        {50, 40, 17, 9}, {10, 10, 33, 21}, {7, 3, 7, 3}, {1, 1, 5, 4}, {300, 2, 31, 1}};
    for (size_t d = 0; d < 5; d++)
        for (int ch = 3; ch <= 4; ch++) {
            sc_image_t src, dst;
            fill(&src, dims[d][0], dims[d][1], ch, 2);
            CHECK_EQ_INT(sc_resize_lanczos(&src, dims[d][2], dims[d][3], &dst), 0);
            CHECK_EQ_INT(dst.channels, ch);
            CHECK(dst.width == dims[d][2] && dst.height == dims[d][3]);
            int ok = 1;
            for (int i = 0; i < dst.width * dst.height; i++)
                for (int c = 0; c < ch; c++)
                    if (abs(dst.pixels[i * ch + c] - src.pixels[c]) > (ch == 4 && c < 3 ? 1 : 0))
                        ok = 0;
            CHECK(ok);
            sc_image_free(&src);
            sc_image_free(&dst);
        }
}

static void test_premultiplied(void)
{
    /* left half transparent red, right half opaque blue: red must not bleed */
    sc_image_t src, dst;
    CHECK_EQ_INT(sc_image_alloc(&src, 40, 20, 4), 0);
    for (int y = 0; y < 20; y++)
        for (int x = 0; x < 40; x++) {
            uint8_t *p = src.pixels + (y * 40 + x) * 4;
            if (x < 20) {
                p[0] = 255, p[1] = 0, p[2] = 0, p[3] = 0;
            } else {
                p[0] = 0, p[1] = 0, p[2] = 255, p[3] = 255;
            }
        }
    CHECK_EQ_INT(sc_resize_lanczos(&src, 13, 7, &dst), 0);
    int ok = 1, partial = 0;
    for (int i = 0; i < 13 * 7; i++) {
        uint8_t *p = dst.pixels + i * 4;
        if (p[3] > 0 && p[0] != 0)
            ok = 0;
        if (p[3] > 0 && p[3] < 255)
            partial++;
        if (p[3] == 0 && (p[0] | p[1] | p[2]))
            ok = 0; /* fully transparent is (0,0,0,0) */
    }
    CHECK(ok);
    CHECK(partial > 0);
    sc_image_free(&src);
    sc_image_free(&dst);
}

static double lanczos(double x)
{
    if (x == 0)
        return 1;
    if (fabs(x) >= 3)
        return 0;
    return 3 * sin(M_PI * x) * sin(M_PI * x / 3) / (M_PI * M_PI * x * x);
}

/* independent separable Lanczos-3 in double precision (opaque RGB) */
static void ref_weights(int in, int out, int o, int *lo, int *hi, double *w)
{
    double scale = (double)in / out, fs = scale > 1 ? scale : 1, sup = 3 * fs;
    double c = (o + 0.5) * scale;
    *lo = (int)floor(c - sup + 0.5);
    if (*lo < 0)
        *lo = 0;
    *hi = (int)floor(c + sup + 0.5);
    if (*hi > in)
        *hi = in;
    double s = 0;
    for (int i = *lo; i < *hi; i++)
        s += w[i - *lo] = lanczos((i - c + 0.5) / fs);
    for (int i = *lo; i < *hi; i++)
        w[i - *lo] /= s;
}

static void test_against_float(void)
{
    sc_image_t src, dst;
    fill(&src, 120, 90, 3, 1);
    for (int y = 0; y < 90; y++) /* add texture */
        for (int x = 0; x < 120; x++) {
            uint8_t *p = src.pixels + (y * 120 + x) * 3;
            p[0] = (uint8_t)(128 + 100 * sin(x * 0.3) * cos(y * 0.2));
            p[1] = (uint8_t)(30 + x + y);
            p[2] = (uint8_t)(200 - x);
        }
    const int outs[][2] = {{77, 51}, {200, 150}, {31, 90}};
    for (int k = 0; k < 3; k++) {
        int ow = outs[k][0], oh = outs[k][1];
        CHECK_EQ_INT(sc_resize_lanczos(&src, ow, oh, &dst), 0);
        double *mid = malloc(sizeof(double) * ow * 90 * 3), wx[64], wy[64];
        for (int y = 0; y < 90; y++)
            for (int x = 0; x < ow; x++) {
                int lo, hi;
                ref_weights(120, ow, x, &lo, &hi, wx);
                for (int c = 0; c < 3; c++) {
                    double s = 0;
                    for (int i = lo; i < hi; i++)
                        s += wx[i - lo] * src.pixels[(y * 120 + i) * 3 + c];
                    mid[(y * ow + x) * 3 + c] = s;
                }
            }
        int maxd = 0;
        for (int y = 0; y < oh; y++) {
            int lo, hi;
            ref_weights(90, oh, y, &lo, &hi, wy);
            for (int x = 0; x < ow; x++)
                for (int c = 0; c < 3; c++) {
                    double s = 0;
                    for (int i = lo; i < hi; i++)
                        s += wy[i - lo] * mid[(i * ow + x) * 3 + c];
                    int v = (int)lrint(s < 0 ? 0 : s > 255 ? 255 : s);
                    int d = abs(v - dst.pixels[(y * ow + x) * 3 + c]);
                    if (d > maxd)
                        maxd = d;
                }
        }
        if (maxd > 2)
            fprintf(stderr, "float ref: %dx%d maxd %d\n", ow, oh, maxd);
        CHECK(maxd <= 2); /* 8-bit intermediate + 14-bit weights */
        free(mid);
        sc_image_free(&dst);
    }
    sc_image_free(&src);
}

static void test_simd_and_windows(void)
{
    sc_simd_level_t top = sc_simd_cpu_level();
    const int cases[][4] = {{1000, 1000, 768, 768}, {37, 29, 13, 11},  {13, 11, 37, 29},
                            {5, 97, 3, 200},        {333, 1, 100, 1},  {2, 2, 1, 1},
                            {64, 48, 64, 48},       {101, 67, 250, 33}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
        for (int ch = 3; ch <= 4; ch++) {
            sc_image_t src, ref, out;
            fill(&src, cases[k][0], cases[k][1], ch, 0);
            if (ch == 4) /* every alpha value, lots of 0 and 255 */
                for (int i = 0; i < src.width * src.height; i++) {
                    int r = (int)(rnd() % 4);
                    src.pixels[i * 4 + 3] = r == 0 ? 0 : r == 1 ? 255 : (uint8_t)(i % 256);
                }
            int dw = cases[k][2], dh = cases[k][3];
            CHECK_EQ_INT(sc_resize_lanczos_region(&src, dw, dh, 0, 0, dw, dh, &ref, SC_SIMD_SCALAR),
                         0);
            for (int l = SC_SIMD_AVX2; l <= (int)top; l++) {
                CHECK_EQ_INT(sc_resize_lanczos_region(&src, dw, dh, 0, 0, dw, dh, &out, l), 0);
                CHECK(memcmp(out.pixels, ref.pixels, (size_t)dw * dh * ch) == 0);
                sc_image_free(&out);
            }
            /* a window equals the crop of the full result, at every level */
            int rx = dw / 3, ry = dh / 4, rw = dw - rx - (dw > 2 ? 1 : 0), rh = dh - ry;
            for (int l = 0; l <= (int)top; l++) {
                CHECK_EQ_INT(sc_resize_lanczos_region(&src, dw, dh, rx, ry, rw, rh, &out, l), 0);
                int ok = out.width == rw && out.height == rh;
                for (int y = 0; ok && y < rh; y++)
                    ok = memcmp(out.pixels + (size_t)y * rw * ch,
                                ref.pixels + ((size_t)(y + ry) * dw + rx) * ch,
                                (size_t)rw * ch) == 0;
                CHECK(ok);
                sc_image_free(&out);
            }
            sc_image_free(&ref);
            sc_image_free(&src);
        }
}

static void test_errors(void)
{
    sc_image_t src, dst;
    fill(&src, 10, 10, 3, 1);
    CHECK_EQ_INT(sc_resize_lanczos(&src, 0, 5, &dst), -1);
    CHECK(dst.pixels == NULL);
    CHECK_EQ_INT(sc_resize_lanczos(&src, 5, -1, &dst), -1);
    CHECK_EQ_INT(sc_resize_lanczos_region(&src, 10, 10, 5, 5, 6, 1, &dst, SC_SIMD_SCALAR), -1);
    CHECK_EQ_INT(sc_resize_lanczos_region(&src, 10, 10, -1, 0, 1, 1, &dst, SC_SIMD_SCALAR), -1);
    sc_image_t empty = SC_IMAGE_INIT;
    CHECK_EQ_INT(sc_resize_lanczos(&empty, 5, 5, &dst), -1);
    /* an absurd downscale is refused rather than allocating huge tap tables */
    CHECK_EQ_INT(sc_resize_lanczos_region(&src, 10, 10, 0, 0, 10, 10, &dst, SC_SIMD_SCALAR), 0);
    sc_image_free(&dst);
    sc_image_free(&src);
}

int main(void)
{
    test_flat();
    test_premultiplied();
    test_against_float();
    test_simd_and_windows();
    test_errors();
    return test_report("image_resize_test");
}
