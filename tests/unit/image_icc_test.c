/* ICC carry-over (image/icc.h): embed then extract gives the same bytes for PNG
 * (iCCP) and JPEG (APP2, one and several segments); the files still decode;
 * malformed profiles are dropped, not errors. */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "image/format.h"
#include "image/icc.h"
#include "test.h"

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

int main(void)
{
    roundtrip(SC_FMT_PNG, 3000);
    roundtrip(SC_FMT_JPEG, 3000);
    roundtrip(SC_FMT_JPEG, 150000); /* three APP2 segments */
    roundtrip(SC_FMT_PNG, 150000);
    test_malformed();
    return test_report("image_icc_test");
}
