/* Codec tests: header limits, PNG round trips through our encoder and two
 * independent decoders (our fast path and stb_image), stb-written PNGs through
 * the fast path, JPEG via libjpeg-turbo, and the row filter kernels at every
 * SIMD level against the scalar reference. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <turbojpeg.h>

#include "image/codec.h"
#include "image/png.h"
#include "image/stb_glue.h"
#include "test.h"

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* a PNG that is only a signature + IHDR (+ a fake IDAT) */
static size_t png_header(uint8_t *b, uint32_t w, uint32_t h, int ct)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(b, sig, 8);
    put_be32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put_be32(b + 16, w);
    put_be32(b + 20, h);
    b[24] = 8;
    b[25] = (uint8_t)ct;
    b[26] = b[27] = b[28] = 0;
    memset(b + 29, 0, 4);
    put_be32(b + 33, 4);
    memcpy(b + 37, "IDAT", 4);
    memset(b + 41, 0xAB, 8);
    put_be32(b + 49, 0);
    memcpy(b + 53, "IEND", 4);
    memset(b + 57, 0, 4);
    return 61;
}

static void test_limits(void)
{
    uint8_t b[64];
    size_t n = png_header(b, 100000, 100000, 6);
    sc_image_info_t info;
    sc_image_t img;
    const char *err = NULL;
    CHECK_EQ_INT(sc_codec_probe(b, n, 40000000, &info), SC_CODEC_TOO_LARGE);
    CHECK_EQ_INT(info.width, 100000);
    CHECK_EQ_INT(info.channels, 4);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(sc_codec_decode(b, n, 40000000, &img, &err), SC_CODEC_TOO_LARGE);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(ms < 1000.0); /* refused from the header, never decoded */
    CHECK(img.pixels == NULL);
    CHECK(err != NULL);
    /* exactly at the limit passes the header check (then fails as corrupt) */
    n = png_header(b, 1000, 40, 2);
    CHECK_EQ_INT(sc_codec_probe(b, n, 40000, &info), SC_CODEC_OK);
    CHECK_EQ_INT(sc_codec_probe(b, n, 39999, &info), SC_CODEC_TOO_LARGE);
    CHECK_EQ_INT(sc_codec_decode(b, n, 40000, &img, &err), SC_CODEC_INVALID);

    /* JPEG SOF0 of 60000 x 60000 after an APP0 segment */
    uint8_t j[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF,
                   0xC0, 0x00, 0x11, 0x08, 0xEA, 0x60, 0xEA, 0x60, 0x03,
                   1,    0x22, 0,    2,    0x11, 1,    3,    0x11, 1};
    CHECK_EQ_INT(sc_codec_probe(j, sizeof(j), 40000000, &info), SC_CODEC_TOO_LARGE);
    CHECK_EQ_INT(info.format, SC_FMT_JPEG);
    CHECK_EQ_INT(info.height, 60000);
    CHECK_EQ_INT(sc_codec_decode(j, sizeof(j), 40000000, &img, &err), SC_CODEC_TOO_LARGE);
    CHECK_EQ_INT(sc_codec_probe(j, sizeof(j), 0, &info), SC_CODEC_OK);

    /* a chunk claiming more bytes than the file has is refused before any
     * decoder sizes a buffer from it (found by the fuzzer: stb would
     * allocate 2 GiB) */
    n = png_header(b, 8, 5, 6);
    put_be32(b + 33, 0x7ffffff0u);
    CHECK_EQ_INT(sc_codec_decode(b, n, 0, &img, &err), SC_CODEC_INVALID);
    CHECK(img.pixels == NULL);

    /* a 30000 x 30000 header over 8 bytes of IDAT cannot be complete (deflate
     * expands at most ~1032:1): refused without allocating the frame */
    n = png_header(b, 30000, 30000, 2);
    CHECK_EQ_INT(sc_codec_decode(b, n, 0, &img, &err), SC_CODEC_INVALID);
    CHECK(img.pixels == NULL);

    /* a first IDAT of length 0 (stb would compute NULL + 0) */
    static const char *crash = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAFCAYAAAB4ka1VAAAADFBMVEV4nGNgGAL/"
                               "AAClAAFNMdgAAAAAAElEQVQAAAD0"
                               "AAAAAElFTkSuQmCC";
    uint8_t raw[128];
    size_t rn = 0;
    unsigned acc = 0;
    int bitsn = 0;
    for (const char *c = crash; *c; c++) { /* base64 */
        const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        acc = (acc << 6) | (unsigned)(strchr(tab, *c) - tab);
        bitsn += 6;
        if (bitsn >= 8) {
            bitsn -= 8;
            raw[rn++] = (uint8_t)(acc >> bitsn);
        }
    }
    CHECK_EQ_INT(sc_codec_decode(raw, rn, 0, &img, &err), SC_CODEC_INVALID);

    /* not images */
    CHECK_EQ_INT(sc_codec_probe((const uint8_t *)"hello world", 11, 0, &info), SC_CODEC_INVALID);
    CHECK_EQ_INT(sc_codec_probe(b, 10, 0, &info), SC_CODEC_INVALID);
    CHECK_EQ_INT(sc_codec_decode((const uint8_t *)"", 0, 0, &img, &err), SC_CODEC_INVALID);
    CHECK_EQ_INT(sc_codec_decode(NULL, 0, 0, &img, &err), SC_CODEC_INVALID);
    n = png_header(b, 0, 10, 2);
    CHECK_EQ_INT(sc_codec_probe(b, n, 0, &info), SC_CODEC_INVALID);
    n = png_header(b, 10, 10, 5); /* colour type 5 does not exist */
    CHECK_EQ_INT(sc_codec_probe(b, n, 0, &info), SC_CODEC_INVALID);
}

static void random_image(sc_image_t *img, int w, int h, int ch, int smooth)
{
    CHECK_EQ_INT(sc_image_alloc(img, w, h, ch), 0);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < ch; c++) {
                uint8_t v =
                    smooth ? (uint8_t)((x * 3 + y * 2 + c * 40) + (rnd() % 5)) : (uint8_t)rnd();
                img->pixels[((size_t)y * w + x) * ch + c] = v;
            }
}

static void test_png_roundtrip(void)
{
    const int sizes[][2] = {{1, 1}, {2, 3}, {17, 5}, {33, 9}, {64, 64}, {101, 37}, {257, 3}};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
        for (int ch = 3; ch <= 4; ch++)
            for (int smooth = 0; smooth < 2; smooth++) {
                sc_image_t img, dec;
                random_image(&img, sizes[s][0], sizes[s][1], ch, smooth);
                uint8_t *png = NULL;
                size_t len = 0;
                CHECK_EQ_INT(sc_codec_encode_png(&img, &png, &len), 0);
                const char *err = NULL;
                CHECK_EQ_INT(sc_codec_decode(png, len, 0, &dec, &err), SC_CODEC_OK);
                size_t bytes = (size_t)img.width * img.height * ch;
                CHECK(dec.channels == ch && dec.width == img.width && dec.height == img.height);
                CHECK(dec.pixels && memcmp(dec.pixels, img.pixels, bytes) == 0);
                sc_image_free(&dec);
                /* an independent decoder agrees */
                int w, h, comp;
                uint8_t *p = sc_stb_load(png, len, &w, &h, &comp, &err);
                CHECK(p != NULL && comp == ch && w == img.width && h == img.height);
                CHECK(p && memcmp(p, img.pixels, bytes) == 0);
                sc_stb_free(p);
                /* stb's writer (its own filter choice) through our fast decoder */
                size_t slen = 0;
                uint8_t *spng = sc_stb_write_png(img.pixels, img.width, img.height, ch, &slen);
                CHECK(spng != NULL);
                CHECK_EQ_INT(sc_codec_decode(spng, slen, 0, &dec, &err), SC_CODEC_OK);
                CHECK(dec.pixels && memcmp(dec.pixels, img.pixels, bytes) == 0);
                sc_image_free(&dec);
                /* truncated files never decode to garbage silently */
                CHECK(sc_codec_decode(png, len / 2, 0, &dec, &err) != SC_CODEC_OK ||
                      dec.pixels != NULL);
                sc_image_free(&dec);
                free(spng);
                free(png);
                sc_image_free(&img);
            }
    /* the size limit also applies to real files */
    sc_image_t img, dec;
    random_image(&img, 50, 40, 3, 1);
    uint8_t *png;
    size_t len;
    CHECK_EQ_INT(sc_codec_encode_png(&img, &png, &len), 0);
    CHECK_EQ_INT(sc_codec_decode(png, len, 1999, &dec, NULL), SC_CODEC_TOO_LARGE);
    CHECK_EQ_INT(sc_codec_decode(png, len, 2000, &dec, NULL), SC_CODEC_OK);
    sc_image_free(&dec);
    free(png);
    sc_image_free(&img);
    sc_image_t bad = SC_IMAGE_INIT;
    CHECK_EQ_INT(sc_codec_encode_png(&bad, &png, &len), -1);
}

static void test_grey_fallback(void)
{
    /* grey and grey+alpha PNGs go through stb and come out as RGB / RGBA */
    uint8_t g[6 * 4 * 2];
    for (size_t i = 0; i < sizeof(g); i++)
        g[i] = (uint8_t)(i * 7);
    for (int comp = 1; comp <= 2; comp++) {
        size_t len;
        uint8_t *png = sc_stb_write_png(g, 6, 4, comp, &len);
        sc_image_t dec;
        CHECK_EQ_INT(sc_codec_decode(png, len, 0, &dec, NULL), SC_CODEC_OK);
        CHECK_EQ_INT(dec.channels, comp == 1 ? 3 : 4);
        int ok = 1;
        for (int i = 0; i < 24; i++) {
            const uint8_t *p = dec.pixels + i * dec.channels;
            if (p[0] != g[i * comp] || p[1] != g[i * comp] || p[2] != g[i * comp])
                ok = 0;
            if (comp == 2 && p[3] != g[i * 2 + 1])
                ok = 0;
        }
        CHECK(ok);
        sc_image_free(&dec);
        free(png);
    }
}

static void test_jpeg(void)
{
    for (int ch = 3; ch <= 4; ch++) {
        sc_image_t img, dec;
        random_image(&img, 97, 61, ch, 1);
        uint8_t *jpg = NULL;
        size_t len = 0;
        CHECK_EQ_INT(sc_codec_encode_jpeg(&img, 90, &jpg, &len), 0);
        CHECK(len > 100 && jpg[0] == 0xFF && jpg[1] == 0xD8);
        sc_image_info_t info;
        CHECK_EQ_INT(sc_codec_probe(jpg, len, 0, &info), SC_CODEC_OK);
        CHECK(info.format == SC_FMT_JPEG && info.width == 97 && info.height == 61);
        CHECK_EQ_INT(sc_codec_decode(jpg, len, 0, &dec, NULL), SC_CODEC_OK);
        CHECK_EQ_INT(dec.channels, 3);
        double err = 0;
        for (int i = 0; i < 97 * 61; i++)
            for (int c = 0; c < 3; c++)
                err += abs(dec.pixels[i * 3 + c] - img.pixels[i * ch + c]);
        err /= 97.0 * 61 * 3;
        CHECK(err < 6.0); /* q90 on a smooth image */
        /* stb decodes the same file to nearly the same pixels */
        int w, h, comp;
        const char *e;
        uint8_t *p = sc_stb_load(jpg, len, &w, &h, &comp, &e);
        CHECK(p && w == 97 && h == 61);
        int maxd = 0;
        for (int i = 0; p && i < 97 * 61 * 3; i++)
            if (abs(p[i] - dec.pixels[i]) > maxd)
                maxd = abs(p[i] - dec.pixels[i]);
        CHECK(maxd <= 12);
        sc_stb_free(p);
        sc_image_free(&dec);
        /* a truncated JPEG is refused, not padded with grey */
        CHECK_EQ_INT(sc_codec_decode(jpg, len / 3, 0, &dec, NULL), SC_CODEC_INVALID);
        CHECK(dec.pixels == NULL);
        sc_image_free(&img);
        free(jpg);
        CHECK_EQ_INT(sc_codec_encode_jpeg(&dec, 90, &jpg, &len), -1);
    }
    sc_image_t img;
    random_image(&img, 8, 8, 3, 1);
    uint8_t *jpg;
    size_t len;
    CHECK_EQ_INT(sc_codec_encode_jpeg(&img, 0, &jpg, &len), -1);
    CHECK_EQ_INT(sc_codec_encode_jpeg(&img, 101, &jpg, &len), -1);
    sc_image_free(&img);
}

/* CMYK JPEGs go to stb_image (TurboJPEG cannot output RGB for them); a DHT
 * with more than 256 symbols, which overflows stb 2.27's tables, is refused
 * first. */
static void test_cmyk_jpeg(void)
{
    enum { W = 24, H = 16 };
    uint8_t cmyk[W * H * 4];
    for (int i = 0; i < W * H; i++) {
        cmyk[i * 4] = 10, cmyk[i * 4 + 1] = 200, cmyk[i * 4 + 2] = 30, cmyk[i * 4 + 3] = 0;
    }
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long len = 0;
    CHECK_EQ_INT(tjCompress2(tj, cmyk, W, W * 4, H, TJPF_CMYK, &jpg, &len, TJSAMP_444, 95, 0), 0);
    tjDestroy(tj);
    sc_image_t dec;
    CHECK_EQ_INT(sc_codec_decode(jpg, len, 0, &dec, NULL), SC_CODEC_OK);
    CHECK(dec.channels == 3 && dec.width == W && dec.height == H);
    sc_image_free(&dec);
    /* find the first DHT and make its counts claim 16 * 255 symbols */
    int patched = 0;
    for (unsigned long i = 2; i + 21 < len && !patched; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC4) {
            memset(jpg + i + 5, 0xFF, 16);
            patched = 1;
        }
    CHECK(patched);
    CHECK_EQ_INT(sc_codec_decode(jpg, len, 0, &dec, NULL), SC_CODEC_INVALID);
    CHECK(dec.pixels == NULL);
    tjFree(jpg);
}

/* Large images are encoded in two bands on two threads and joined with a
 * restart marker: the result must decode (libjpeg-turbo and stb) to exactly
 * the pixels of a one-piece encode with the same settings. */
static void test_jpeg_two_bands(void)
{
    const int dims[][3] = {{700, 450, 3}, {701, 451, 4}, {1920, 1080, 3}};
    for (int k = 0; k < 3; k++) {
        int w = dims[k][0], h = dims[k][1], ch = dims[k][2];
        sc_image_t img, a, b;
        random_image(&img, w, h, ch, 1);
        uint8_t *jpg;
        size_t len;
        CHECK_EQ_INT(sc_codec_encode_jpeg(&img, 90, &jpg, &len), 0);
        tjhandle tj = tjInitCompress();
        unsigned char *one = NULL;
        unsigned long one_len = 0;
        CHECK_EQ_INT(tjCompress2(tj, img.pixels, w, w * ch, h, ch == 4 ? TJPF_RGBX : TJPF_RGB, &one,
                                 &one_len, TJSAMP_420, 90, 0),
                     0);
        tjDestroy(tj);
        int has_dri = 0;
        for (size_t i = 0; i + 1 < len && !has_dri; i++)
            has_dri = jpg[i] == 0xFF && jpg[i + 1] == 0xDD;
        CHECK(has_dri);
        if (!(len >= one_len && len <= one_len + 64))
            fprintf(stderr, "joined %zu one %lu\n", len, one_len);
        CHECK(len >= one_len && len <= one_len + 64); /* DRI, RST0, DC restart */
        CHECK_EQ_INT(sc_codec_decode(jpg, len, 0, &a, NULL), SC_CODEC_OK);
        CHECK_EQ_INT(sc_codec_decode(one, one_len, 0, &b, NULL), SC_CODEC_OK);
        CHECK(a.width == w && a.height == h && b.width == w);
        CHECK(a.pixels && b.pixels && memcmp(a.pixels, b.pixels, (size_t)w * h * 3) == 0);
        int sw, sh, comp;
        const char *e;
        uint8_t *p = sc_stb_load(jpg, len, &sw, &sh, &comp, &e);
        uint8_t *q = sc_stb_load(one, one_len, &sw, &sh, &comp, &e);
        CHECK(p && q && memcmp(p, q, (size_t)w * h * 3) == 0);
        sc_stb_free(p);
        sc_stb_free(q);
        tjFree(one);
        free(jpg);
        sc_image_free(&a);
        sc_image_free(&b);
        sc_image_free(&img);
    }
}

static void test_unfilter_kernels(void)
{
    sc_simd_level_t top = sc_simd_cpu_level();
    for (int bpp = 3; bpp <= 4; bpp++)
        for (int px = 1; px < 90; px += 7)
            for (int type = 0; type < 5; type++)
                for (int first = 0; first < 2; first++) {
                    size_t n = (size_t)px * bpp;
                    uint8_t src[400], prev[400], ref[400], out[400], inplace[401];
                    for (size_t i = 0; i < n; i++) {
                        src[i] = (uint8_t)rnd();
                        prev[i] = (uint8_t)rnd();
                    }
                    const uint8_t *pv = first ? NULL : prev;
                    CHECK_EQ_INT(sc_png_unfilter_row(type, ref, src, pv, n, bpp, SC_SIMD_SCALAR),
                                 0);
                    for (int l = SC_SIMD_AVX2; l <= (int)top; l++) {
                        CHECK_EQ_INT(sc_png_unfilter_row(type, out, src, pv, n, bpp, l), 0);
                        CHECK(memcmp(out, ref, n) == 0);
                        /* in place, one byte behind the input (as the decoder does) */
                        memcpy(inplace + 1, src, n);
                        sc_png_unfilter_row(type, inplace, inplace + 1, pv, n, bpp, l);
                        CHECK(memcmp(inplace, ref, n) == 0);
                    }
                    /* filtering our reference output gives back the input for this type */
                }
    uint8_t r[8] = {0};
    CHECK_EQ_INT(sc_png_unfilter_row(5, r, r, NULL, 6, 3, SC_SIMD_SCALAR), -1);
    CHECK_EQ_INT(sc_png_unfilter_row(9, r, r, NULL, 6, 3, top), -1);
}

static void test_filter_kernels(void)
{
    sc_simd_level_t top = sc_simd_cpu_level();
    for (int bpp = 3; bpp <= 4; bpp++)
        for (int px = 1; px < 120; px += 5) {
            size_t n = (size_t)px * bpp;
            uint8_t curb[512 + 16] = {0}, prevb[512 + 16] = {0};
            uint8_t *cur = curb + 16, *prev = prevb + 16;
            int kind = px % 3; /* random, smooth, flat */
            for (size_t i = 0; i < n; i++) {
                cur[i] = kind == 0 ? (uint8_t)rnd() : kind == 1 ? (uint8_t)(i / 3 + rnd() % 3) : 7;
                prev[i] = kind == 0 ? (uint8_t)rnd() : (uint8_t)(i / 3);
            }
            uint8_t ref[600], out[600], scratch[5 * (512 + 32)];
            int t = sc_png_filter_row(cur, prev, n, bpp, ref, scratch, SC_SIMD_SCALAR);
            CHECK_EQ_INT(ref[0], t);
            /* the filtered row unfilters back to cur */
            uint8_t back[512];
            sc_png_unfilter_row(t, back, ref + 1, prev, n, bpp, SC_SIMD_SCALAR);
            CHECK(memcmp(back, cur, n) == 0);
            for (int l = SC_SIMD_AVX2; l <= (int)top; l++) {
                CHECK_EQ_INT(sc_png_filter_row(cur, prev, n, bpp, out, scratch, l), t);
                CHECK(memcmp(out, ref, n + 1) == 0);
            }
        }
}

int main(void)
{
    test_limits();
    test_png_roundtrip();
    test_grey_fallback();
    test_jpeg();
    test_cmyk_jpeg();
    test_jpeg_two_bands();
    test_unfilter_kernels();
    test_filter_kernels();
    return test_report("image_codec_test");
}
