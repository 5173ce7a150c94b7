/* ICC carry-over (image/icc.h): embed then extract gives the same bytes for PNG
 * (iCCP) and JPEG (APP2, one and several segments); the files still decode;
 * malformed profiles are dropped, not errors. */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "image/format.h"
#include "image/icc.h"
#include "test.h"

#include <lcms2.h>

static void make(sc_image_t *img)
{
    CHECK_EQ_INT(sc_image_alloc(img, 40, 30, 3), 0);
    for (int i = 0; i < 40 * 30 * 3; i++)
        img->pixels[i] = (uint8_t)(i * 5);
}

static void roundtrip(sc_image_format_t fmt, size_t icc_len)
{
    sc_image_t img, back = SC_IMAGE_INIT;
    make(&img);
    uint8_t *icc = malloc(icc_len), *out = NULL, *got = NULL;
    size_t out_len = 0, got_len = 0;
    for (size_t i = 0; i < icc_len; i++)
        icc[i] = (uint8_t)(i * 31 + 7);
    CHECK_EQ_INT(sc_format_encode_icc(fmt, &img, 0, icc, icc_len, &out, &out_len), 0);
    CHECK_EQ_INT(sc_icc_extract(out, out_len, &got, &got_len), 1);
    CHECK(got_len == icc_len && memcmp(got, icc, icc_len) == 0);
    CHECK_EQ_INT(sc_codec_decode(out, out_len, 0, &back, NULL), SC_CODEC_OK);
    CHECK(back.width == 40 && back.height == 30);
    free(got);
    /* without a profile: none found */
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    CHECK_EQ_INT(sc_format_encode_icc(fmt, &img, 0, NULL, 0, &plain, &plain_len), 0);
    CHECK_EQ_INT(sc_icc_extract(plain, plain_len, &got, &got_len), 0);
    CHECK(got == NULL);
    free(plain);
    sc_image_free(&back);
    sc_image_free(&img);
    free(out);
    free(icc);
}

static void test_malformed(void)
{
    sc_image_t img;
    make(&img);
    uint8_t icc[300], *out = NULL, *got = NULL;
    size_t out_len = 0, got_len = 0;
    memset(icc, 9, sizeof icc);
    CHECK_EQ_INT(sc_format_encode_icc(SC_FMT_JPEG, &img, 0, icc, sizeof icc, &out, &out_len), 0);
    /* find our APP2 and break its sequence number: 0 is invalid */
    uint8_t *p = NULL;
    for (size_t i = 2; i + 16 < out_len; i++)
        if (out[i] == 0xFF && out[i + 1] == 0xE2 && memcmp(out + i + 4, "ICC_PROFILE", 12) == 0) {
            p = out + i;
            break;
        }
    CHECK(p != NULL);
    if (p) {
        p[4 + 12] = 0;
        CHECK_EQ_INT(sc_icc_extract(out, out_len, &got, &got_len), 0);
        p[4 + 12] = 1;
        p[4 + 13] = 2; /* says 2 segments, only 1 present */
        CHECK_EQ_INT(sc_icc_extract(out, out_len, &got, &got_len), 0);
        p[2] = 0xFF; /* segment length past the end */
        p[3] = 0xFF;
        CHECK_EQ_INT(sc_icc_extract(out, 200, &got, &got_len), 0);
    }
    free(out);
    /* PNG: a corrupt zlib stream in iCCP */
    CHECK_EQ_INT(sc_format_encode_icc(SC_FMT_PNG, &img, 0, icc, sizeof icc, &out, &out_len), 0);
    out[33 + 8 + 13 + 2] ^= 0xFF;
    CHECK_EQ_INT(sc_icc_extract(out, out_len, &got, &got_len), 0);
    free(out);
    CHECK_EQ_INT(sc_icc_extract((const uint8_t *)"nope", 4, &got, &got_len), 0);
    sc_image_free(&img);
}

/* A profile with sRGB's primaries and a linear (gamma 1.0) curve, into memory. */
static uint8_t *linear_profile(size_t *len)
{
    cmsCIExyY white = {0.3127, 0.3290, 1.0};
    cmsCIExyYTRIPLE prim = {{0.64, 0.33, 1.0}, {0.30, 0.60, 1.0}, {0.15, 0.06, 1.0}};
    cmsToneCurve *g = cmsBuildGamma(NULL, 1.0);
    cmsToneCurve *curves[3] = {g, g, g};
    cmsHPROFILE p = cmsCreateRGBProfile(&white, &prim, curves);
    cmsUInt32Number n = 0;
    uint8_t *buf = NULL;
    if (p && cmsSaveProfileToMem(p, NULL, &n) && (buf = malloc(n)) != NULL &&
        !cmsSaveProfileToMem(p, buf, &n)) {
        free(buf);
        buf = NULL;
    }
    *len = n;
    if (p)
        cmsCloseProfile(p);
    cmsFreeToneCurve(g);
    return buf;
}

static void test_convert(void)
{
    size_t lin_len = 0;
    uint8_t *lin = linear_profile(&lin_len);
    CHECK(lin != NULL);
    if (!lin)
        return;
    sc_image_t img;
    CHECK_EQ_INT(sc_image_alloc(&img, 2, 1, 4), 0);
    uint8_t px[8] = {128, 128, 128, 200, 0, 0, 0, 7};
    memcpy(img.pixels, px, 8);
    /* linear 0.5 is sRGB ~188; alpha is kept */
    CHECK_EQ_INT(sc_icc_convert(&img, lin, lin_len, NULL, 0), 0);
    CHECK(img.pixels[0] >= 185 && img.pixels[0] <= 191 && img.pixels[1] == img.pixels[0]);
    CHECK_EQ_INT(img.pixels[3], 200);
    CHECK_EQ_INT(img.pixels[4], 0);
    CHECK_EQ_INT(img.pixels[7], 7);
    /* the same profile on both sides, no profile, garbage: nothing done */
    memcpy(img.pixels, px, 8);
    CHECK_EQ_INT(sc_icc_convert(&img, lin, lin_len, lin, lin_len), 1);
    CHECK_EQ_INT(sc_icc_convert(&img, NULL, 0, lin, lin_len), 1);
    uint8_t junk[200];
    memset(junk, 0x5a, sizeof junk);
    CHECK_EQ_INT(sc_icc_convert(&img, junk, sizeof junk, NULL, 0), 1);
    CHECK(memcmp(img.pixels, px, 8) == 0);
    sc_image_free(&img);
    free(lin);
}

int main(void)
{
    test_convert();
    roundtrip(SC_FMT_PNG, 3000);
    roundtrip(SC_FMT_JPEG, 3000);
    roundtrip(SC_FMT_JPEG, 150000); /* three APP2 segments */
    roundtrip(SC_FMT_PNG, 150000);
    test_malformed();
    return test_report("image_icc_test");
}
