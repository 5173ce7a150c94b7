/* The structural check (image/check.h): whole files from our encoders pass,
 * every truncation and a flipped byte in a PNG chunk fail, alpha comes from
 * the colour type or a tRNS chunk, bytes after the end are allowed. */
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>

#include "image/check.h"
#include "image/codec.h"
#include "test.h"

static void fill(sc_image_t *img, int w, int h, int ch)
{
    sc_image_alloc(img, w, h, ch);
    for (size_t i = 0; i < (size_t)w * h * ch; i++)
        img->pixels[i] = (uint8_t)(i * 7 + i / 13);
}

static void test_truncations(const uint8_t *d, size_t len)
{
    int bad = 0;
    for (size_t n = 0; n < len; n++)
        if (sc_check_image(d, n, NULL) != SC_CODEC_INVALID)
            bad++;
    CHECK_EQ_INT(bad, 0);
}

static void test_png(void)
{
    sc_image_t img;
    fill(&img, 61, 37, 4);
    uint8_t *png = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sc_codec_encode_png(&img, &png, &len), 0);
    sc_check_info_t ci;
    CHECK_EQ_INT(sc_check_image(png, len, &ci), SC_CODEC_OK);
    CHECK_EQ_INT(ci.format, SC_FMT_PNG);
    CHECK(ci.alpha);
    test_truncations(png, len);
    /* a flipped byte inside the IDAT data: the CRC tells */
    png[len / 2] ^= 0x40;
    CHECK_EQ_INT(sc_check_image(png, len, NULL), SC_CODEC_INVALID);
    png[len / 2] ^= 0x40;
    /* trailing bytes after IEND are allowed */
    uint8_t *more = malloc(len + 5);
    memcpy(more, png, len);
    memcpy(more + len, "junk!", 5);
    CHECK_EQ_INT(sc_check_image(more, len + 5, NULL), SC_CODEC_OK);
    free(more);
    free(png);
    sc_image_free(&img);

    /* RGB: no alpha, until a tRNS chunk is inserted after IHDR */
    fill(&img, 20, 10, 3);
    CHECK_EQ_INT(sc_codec_encode_png(&img, &png, &len), 0);
    CHECK_EQ_INT(sc_check_image(png, len, &ci), SC_CODEC_OK);
    CHECK(!ci.alpha);
    uint8_t trns[18] = {0, 0, 0, 6, 't', 'R', 'N', 'S', 0, 1, 0, 2, 0, 3};
    uint32_t crc = libdeflate_crc32(0, trns + 4, 10);
    trns[14] = (uint8_t)(crc >> 24);
    trns[15] = (uint8_t)(crc >> 16);
    trns[16] = (uint8_t)(crc >> 8);
    trns[17] = (uint8_t)crc;
    size_t at = 8 + 25; /* after the signature and IHDR */
    uint8_t *t = malloc(len + sizeof trns);
    memcpy(t, png, at);
    memcpy(t + at, trns, sizeof trns);
    memcpy(t + at + sizeof trns, png + at, len - at);
    CHECK_EQ_INT(sc_check_image(t, len + sizeof trns, &ci), SC_CODEC_OK);
    CHECK(ci.alpha);
    free(t);
    free(png);
    sc_image_free(&img);
}

static void test_jpeg(void)
{
    sc_image_t img;
    fill(&img, 64, 48, 3);
    uint8_t *jpg = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sc_codec_encode_jpeg(&img, 90, &jpg, &len), 0);
    sc_check_info_t ci;
    CHECK_EQ_INT(sc_check_image(jpg, len, &ci), SC_CODEC_OK);
    CHECK_EQ_INT(ci.format, SC_FMT_JPEG);
    CHECK(!ci.alpha);
    test_truncations(jpg, len);
    CHECK_EQ_INT(sc_check_image((const uint8_t *)"not an image", 12, NULL), SC_CODEC_INVALID);
    CHECK_EQ_INT(sc_check_image(NULL, 0, NULL), SC_CODEC_INVALID);
    free(jpg);
    sc_image_free(&img);
}

int main(void)
{
    test_png();
    test_jpeg();
    return test_report("image_check_test");
}
