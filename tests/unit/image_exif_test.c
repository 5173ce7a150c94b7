/* EXIF orientation (issue 12): all 8 orientations of a JPEG (hand-built APP1
 * "Exif" segment, both byte orders, the tag after another entry) and of a PNG
 * (eXIf chunk) decode upright: pixel for pixel the plain file's pixels moved
 * by the forward mapping written here independently of exif.c; the probe
 * reports the upright size. Malformed tags count as 1. */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "image/exif.h"
#include "png_build.h"
#include "test.h"

#define W 48
#define H 32

/* 16x16 blocks of distinct colours: JPEG keeps them (one colour per MCU). */
static void blocks(sc_image_t *img)
{
    CHECK_EQ_INT(sc_image_alloc(img, W, H, 3), 0);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int b = (y / 16) * 3 + x / 16;
            uint8_t *p = img->pixels + (y * W + x) * 3;
            p[0] = (uint8_t)(40 * b), p[1] = (uint8_t)(255 - 30 * b),
            p[2] = (uint8_t)(b & 1 ? 220 : 20);
        }
}

/* Where source pixel (sx, sy) of a w x h image lands in the upright image. */
static void forward(int o, int w, int h, int sx, int sy, int *dx, int *dy)
{
    switch (o) {
    case 1:
        *dx = sx, *dy = sy;
        break;
    case 2: /* mirrored */
        *dx = w - 1 - sx, *dy = sy;
        break;
    case 3: /* upside down */
        *dx = w - 1 - sx, *dy = h - 1 - sy;
        break;
    case 4: /* flipped */
        *dx = sx, *dy = h - 1 - sy;
        break;
    case 5: /* transposed */
        *dx = sy, *dy = sx;
        break;
    case 6: /* stored rotated left: turn right */
        *dx = h - 1 - sy, *dy = sx;
        break;
    case 7: /* transverse */
        *dx = h - 1 - sy, *dy = w - 1 - sx;
        break;
    default: /* 8, stored rotated right: turn left */
        *dx = sy, *dy = w - 1 - sx;
        break;
    }
}

static size_t put16(uint8_t *t, size_t n, int big, unsigned v)
{
    t[n] = (uint8_t)(big ? v >> 8 : v);
    t[n + 1] = (uint8_t)(big ? v : v >> 8);
    return n + 2;
}

static size_t put32(uint8_t *t, size_t n, int big, unsigned long v)
{
    for (int i = 0; i < 4; i++)
        t[n + (size_t)i] = (uint8_t)(v >> (big ? 24 - 8 * i : 8 * i));
    return n + 4;
}

/* A TIFF block: IFD0 with a Make entry (pointing at its text) then the
 * orientation entry (type, count, value given). Returns its length (44). */
static size_t tiff(uint8_t *t, int big, unsigned type, unsigned count, unsigned value)
{
    size_t n = 0;
    t[n++] = big ? 'M' : 'I';
    t[n++] = big ? 'M' : 'I';
    n = put16(t, n, big, 42);
    n = put32(t, n, big, 8);
    n = put16(t, n, big, 2);
    n = put16(t, n, big, 0x010F); /* Make, ASCII, 6 bytes at offset 38 */
    n = put16(t, n, big, 2);
    n = put32(t, n, big, 6);
    n = put32(t, n, big, 8 + 2 + 24 + 4);
    n = put16(t, n, big, 0x0112);
    n = put16(t, n, big, type);
    n = put32(t, n, big, count);
    n = put16(t, n, big, value);
    n = put16(t, n, big, 0);
    n = put32(t, n, big, 0); /* no IFD1 */
    memcpy(t + n, "Phone", 6);
    return n + 6;
}

/* jpg with an APP1 Exif segment holding tiff inserted after SOI. */
static uint8_t *with_app1(const uint8_t *jpg, size_t len, const uint8_t *t, size_t tl, size_t *out)
{
    size_t seg = 2 + 6 + tl;
    uint8_t *o = malloc(len + 2 + seg);
    memcpy(o, jpg, 2);
    o[2] = 0xFF, o[3] = 0xE1, o[4] = (uint8_t)(seg >> 8), o[5] = (uint8_t)seg;
    memcpy(o + 6, "Exif\0\0", 6);
    memcpy(o + 12, t, tl);
    memcpy(o + 12 + tl, jpg + 2, len - 2);
    *out = len + 2 + seg;
    return o;
}

/* got must be ref moved by orientation o. */
static int moved_ok(const sc_image_t *ref, const sc_image_t *got, int o)
{
    int sw = sc_exif_swaps(o);
    if (got->width != (sw ? ref->height : ref->width) ||
        got->height != (sw ? ref->width : ref->height) || got->channels != ref->channels)
        return 0;
    size_t c = (size_t)ref->channels;
    for (int sy = 0; sy < ref->height; sy++)
        for (int sx = 0; sx < ref->width; sx++) {
            int dx, dy;
            forward(o, ref->width, ref->height, sx, sy, &dx, &dy);
            if (memcmp(got->pixels + ((size_t)dy * (size_t)got->width + (size_t)dx) * c,
                       ref->pixels + ((size_t)sy * (size_t)ref->width + (size_t)sx) * c, c) != 0)
                return 0;
        }
    return 1;
}

static void test_jpeg(void)
{
    sc_image_t src, ref;
    blocks(&src);
    uint8_t *jpg = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sc_codec_encode_jpeg(&src, 95, &jpg, &len), 0);
    CHECK_EQ_INT(sc_codec_decode(jpg, len, 0, &ref, NULL), SC_CODEC_OK);
    CHECK_EQ_INT(sc_exif_orientation(jpg, len), 1);
    uint8_t t[128];
    for (int o = 1; o <= 8; o++) {
        for (int big = 0; big <= 1; big++) {
            size_t tl = tiff(t, big, 3, 1, (unsigned)o), fl = 0;
            uint8_t *f = with_app1(jpg, len, t, tl, &fl);
            CHECK_EQ_INT(sc_exif_orientation(f, fl), o);
            sc_image_info_t info;
            CHECK_EQ_INT(sc_codec_probe(f, fl, 0, &info), SC_CODEC_OK);
            CHECK_EQ_INT(info.orientation, o);
            CHECK_EQ_INT(info.width, o >= 5 ? H : W);
            CHECK_EQ_INT(info.height, o >= 5 ? W : H);
            sc_image_t got;
            CHECK_EQ_INT(sc_codec_decode(f, fl, 0, &got, NULL), SC_CODEC_OK);
            CHECK(moved_ok(&ref, &got, o));
            sc_image_free(&got);
            free(f);
        }
    }
    /* the corners, spelled out for the rotations phones write */
    size_t tl = tiff(t, 0, 3, 1, 6), fl = 0;
    uint8_t *f = with_app1(jpg, len, t, tl, &fl);
    sc_image_t got;
    CHECK_EQ_INT(sc_codec_decode(f, fl, 0, &got, NULL), SC_CODEC_OK);
    CHECK(got.width == H && memcmp(got.pixels + (H - 1) * 3, ref.pixels, 3) == 0);
    sc_image_free(&got);
    free(f);
    tl = tiff(t, 1, 3, 1, 8);
    f = with_app1(jpg, len, t, tl, &fl);
    CHECK_EQ_INT(sc_codec_decode(f, fl, 0, &got, NULL), SC_CODEC_OK);
    CHECK(got.height == W && memcmp(got.pixels + (size_t)(W - 1) * H * 3, ref.pixels, 3) == 0);
    sc_image_free(&got);
    free(f);

    /* malformed tags are 1: value out of range, wrong type, wrong count */
    const unsigned bad[][3] = {{3, 1, 0}, {3, 1, 9}, {4, 1, 6}, {3, 2, 6}, {1, 1, 6}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tl = tiff(t, (int)(i & 1), bad[i][0], bad[i][1], bad[i][2]);
        f = with_app1(jpg, len, t, tl, &fl);
        CHECK_EQ_INT(sc_exif_orientation(f, fl), 1);
        CHECK_EQ_INT(sc_codec_decode(f, fl, 0, &got, NULL), SC_CODEC_OK);
        CHECK(moved_ok(&ref, &got, 1));
        sc_image_free(&got);
        free(f);
    }
    /* a TIFF cut anywhere (the segment length shrinks with it) is 1 or the tag */
    tl = tiff(t, 0, 3, 1, 6);
    for (size_t cut = 0; cut < tl; cut++) {
        f = with_app1(jpg, len, t, cut, &fl);
        int o = sc_exif_orientation(f, fl);
        CHECK(o == 1 || (o == 6 && cut >= 8 + 2 + 24));
        free(f);
    }
    free(jpg);
    sc_image_free(&ref);
    sc_image_free(&src);
}

static void test_tiff_bounds(void)
{
    uint8_t t[128];
    size_t tl = tiff(t, 0, 3, 1, 5);
    CHECK_EQ_INT(sc_exif_orientation_tiff(t, tl), 5);
    t[4] = 0xF0; /* IFD0 offset past the end */
    CHECK_EQ_INT(sc_exif_orientation_tiff(t, tl), 1);
    tl = tiff(t, 1, 3, 1, 7);
    t[8] = 0xFF, t[9] = 0xFF;                         /* 65535 entries announced */
    CHECK_EQ_INT(sc_exif_orientation_tiff(t, tl), 7); /* found before running out */
    tl = tiff(t, 1, 3, 1, 7);
    memset(t + 22, 0, 2); /* the orientation entry's tag erased: scan runs off the end */
    t[8] = 0xFF, t[9] = 0xFF;
    CHECK_EQ_INT(sc_exif_orientation_tiff(t, tl), 1);
    t[2] = 0; /* not 42 */
    CHECK_EQ_INT(sc_exif_orientation_tiff(t, tl), 1);
    CHECK_EQ_INT(sc_exif_orientation_tiff(t, 7), 1);
    CHECK_EQ_INT(sc_exif_orientation_tiff(NULL, 0), 1);
    CHECK_EQ_INT(sc_exif_orientation((const uint8_t *)"hello", 5), 1);
    CHECK_EQ_INT(sc_exif_apply(NULL, 6), 0);
}

static void test_png(void)
{
    /* RGBA, lossless: every orientation exact */
    sc_image_t ref;
    CHECK_EQ_INT(sc_image_alloc(&ref, 7, 5, 4), 0);
    for (int i = 0; i < 7 * 5 * 4; i++)
        ref.pixels[i] = (uint8_t)(i * 29 + 3);
    uint8_t rows[5 * (1 + 7 * 4)];
    for (int y = 0; y < 5; y++) {
        rows[y * 29] = 0;
        memcpy(rows + y * 29 + 1, ref.pixels + y * 28, 28);
    }
    uint8_t t[128];
    for (int o = 1; o <= 8; o++) {
        png_build_t b;
        pb_start(&b, 7, 5, 8, 6);
        size_t tl = tiff(t, o & 1, 3, 1, (unsigned)o);
        pb_chunk(&b, "eXIf", t, tl);
        pb_finish(&b, rows, sizeof rows);
        CHECK_EQ_INT(sc_exif_orientation(b.data, b.len), o);
        sc_image_t got;
        CHECK_EQ_INT(sc_codec_decode(b.data, b.len, 0, &got, NULL), SC_CODEC_OK);
        CHECK(moved_ok(&ref, &got, o));
        sc_image_free(&got);
        free(b.data);
    }
    sc_image_free(&ref);
}

int main(void)
{
    test_jpeg();
    test_tiff_bounds();
    test_png();
    return test_report("image_exif_test");
}
