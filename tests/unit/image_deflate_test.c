/* The Huffman + run-length deflate encoder: streams built from 1..3 segments
 * (sync-flushed, last final) must inflate with libdeflate (an independent
 * decoder) to exactly the input, across random data, long runs, single-symbol
 * blocks, skewed (Fibonacci) statistics that force the 15-bit length limit,
 * empty segments and multi-block inputs; plus PNGs large enough for the
 * two-thread path, read back by stb_image. */
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>

#include "image/codec.h"
#include "image/deflate.h"
#include "image/stb_glue.h"
#include "test.h"

static uint32_t rng_state = 99;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

/* compress data as nseg segments and check it inflates back */
static void roundtrip(const uint8_t *data, size_t len, int nseg)
{
    size_t cap = 2 + 4;
    size_t cuts[4] = {0, 0, 0, len};
    for (int i = 1; i < nseg; i++)
        cuts[i] = len ? rnd() % (len + 1) : 0;
    cuts[nseg] = len;
    for (int i = 1; i < nseg; i++) /* sort the cut points */
        for (int j = i + 1; j < nseg; j++)
            if (cuts[j] < cuts[i]) {
                size_t t = cuts[i];
                cuts[i] = cuts[j];
                cuts[j] = t;
            }
    for (int i = 0; i < nseg; i++)
        cap += sc_deflate_bound(cuts[i + 1] - cuts[i]);
    uint8_t *z = malloc(cap), *back = malloc(len + 1);
    z[0] = 0x78, z[1] = 0x01;
    size_t zl = 2;
    for (int i = 0; i < nseg; i++) {
        size_t n = sc_deflate_segment(data + cuts[i], cuts[i + 1] - cuts[i], i == nseg - 1, z + zl);
        CHECK(n > 0);
        zl += n;
    }
    put_be32(z + zl, libdeflate_adler32(1, data, len));
    zl += 4;
    /* the run search at every SIMD level yields the same stream */
    if (nseg == 1) {
        uint8_t *zs = malloc(sc_deflate_bound(len));
        size_t ns = sc_deflate_segment_lvl(data, len, 1, zs, SC_SIMD_SCALAR);
        CHECK_EQ_INT(ns, zl - 6);
        CHECK(memcmp(zs, z + 2, ns) == 0);
        free(zs);
    }
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    size_t got = 0;
    enum libdeflate_result r = libdeflate_zlib_decompress(d, z, zl, back, len + 1, &got);
    CHECK_EQ_INT(r, LIBDEFLATE_SUCCESS);
    CHECK_EQ_INT(got, len);
    CHECK(len == 0 || memcmp(back, data, len) == 0);
    libdeflate_free_decompressor(d);
    free(z);
    free(back);
}

static void test_streams(void)
{
    size_t big = 300000;
    uint8_t *buf = malloc(big);
    for (int nseg = 1; nseg <= 3; nseg++) {
        /* random */
        for (size_t i = 0; i < big; i++)
            buf[i] = (uint8_t)rnd();
        roundtrip(buf, big, nseg);
        /* all zero (one symbol + max-length runs) */
        memset(buf, 0, big);
        roundtrip(buf, big, nseg);
        /* runs of every length 1..600 of alternating values */
        size_t p = 0;
        for (int l = 1; l <= 600 && p < big; l++)
            for (int k = 0; k < l && p < big; k++)
                buf[p++] = (uint8_t)(l & 1 ? 7 : 200);
        roundtrip(buf, p, nseg);
        /* skewed: symbol i appears fib(i) times -> tree deeper than 15 */
        uint32_t f0 = 1, f1 = 1;
        p = 0;
        for (int s = 0; s < 26 && p < big; s++) {
            for (uint32_t k = 0; k < f0 && p < big; k++)
                buf[p++] = (uint8_t)(s * 9);
            uint32_t t = f0 + f1;
            f0 = f1;
            f1 = t;
        }
        for (size_t i = 0; i < p; i++) { /* shuffle so runs do not swallow it */
            size_t j = rnd() % p;
            uint8_t t = buf[i];
            buf[i] = buf[j];
            buf[j] = t;
        }
        roundtrip(buf, p, nseg);
        /* runs everywhere: short and long, at block and SIMD-chunk edges */
        for (size_t i = 0; i < big; i++)
            buf[i] = (uint8_t)(rnd() % 3 == 0 ? rnd() % 4 : buf[i ? i - 1 : 0]);
        roundtrip(buf, big, nseg);
        /* tiny inputs */
        for (size_t n = 0; n < 6; n++) {
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)(i < 2 ? 5 : rnd());
            roundtrip(buf, n, nseg);
        }
    }
    free(buf);
}

static void test_big_png(void)
{
    /* > 1 MiB of pixels: encoded in two bands on two threads */
    for (int ch = 3; ch <= 4; ch++) {
        sc_image_t img;
        CHECK_EQ_INT(sc_image_alloc(&img, 701, 613, ch), 0);
        for (size_t i = 0; i < (size_t)701 * 613 * ch; i++)
            img.pixels[i] = (uint8_t)((i / 7) % 13 == 0 ? rnd() : (i / (size_t)ch) % 251);
        uint8_t *png;
        size_t len;
        CHECK_EQ_INT(sc_codec_encode_png(&img, &png, &len), 0);
        int w, h, comp;
        const char *err;
        uint8_t *p = sc_stb_load(png, len, &w, &h, &comp, &err);
        CHECK(p && w == 701 && h == 613 && comp == ch);
        CHECK(p && memcmp(p, img.pixels, (size_t)701 * 613 * ch) == 0);
        sc_stb_free(p);
        sc_image_t dec;
        CHECK_EQ_INT(sc_codec_decode(png, len, 0, &dec, NULL), SC_CODEC_OK);
        CHECK(memcmp(dec.pixels, img.pixels, (size_t)701 * 613 * ch) == 0);
        sc_image_free(&dec);
        free(png);
        sc_image_free(&img);
    }
}

int main(void)
{
    test_streams();
    test_big_png();
    return test_report("image_deflate_test");
}
