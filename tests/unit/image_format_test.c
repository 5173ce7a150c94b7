/* The output format table: every row is found by its name, extension and MIME
 * type; nothing outside the table is found or encoded (an unknown format used
 * to become "png" through two-way ternaries); JPEG uses quality 90. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compose/compose.h"
#include "image/format.h"
#include "test.h"

static void test_lookups(void)
{
    const sc_image_format_t ids[] = {SC_FMT_PNG, SC_FMT_JPEG};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const sc_format_t *f = sc_format_get(ids[i]);
        CHECK(f != NULL && f->id == ids[i] && f->encode != NULL);
        if (!f)
            continue;
        CHECK(sc_format_by_name(f->name) == f);
        CHECK(sc_format_by_ext(f->ext) == f);
        CHECK(sc_format_by_mime(f->mime, strlen(f->mime)) == f);
        CHECK_STR(sc_format_name(ids[i]), f->name);
        CHECK_STR(sc_format_ext(ids[i]), f->ext);
        CHECK_STR(sc_format_mime(ids[i]), f->mime);
    }
    CHECK_STR(sc_format_ext(SC_FMT_JPEG), "jpg");
    CHECK_STR(sc_format_mime(SC_FMT_JPEG), "image/jpeg");
    CHECK(sc_format_by_name("jpg") == sc_format_get(SC_FMT_JPEG));
    CHECK(sc_format_by_ext("JPEG") == sc_format_get(SC_FMT_JPEG));
    CHECK(sc_format_by_mime("IMAGE/JPG", 9) == sc_format_get(SC_FMT_JPEG));
    CHECK(sc_format_by_mime("image/pngx", 9) == sc_format_get(SC_FMT_PNG)); /* n bytes only */

    /* nothing else, in particular no fallback to png */
    CHECK(sc_format_get(SC_FMT_UNKNOWN) == NULL);
    CHECK(sc_format_get((sc_image_format_t)42) == NULL);
    CHECK(sc_format_name(SC_FMT_UNKNOWN) == NULL);
    CHECK(sc_format_ext(SC_FMT_UNKNOWN) == NULL);
    CHECK(sc_format_mime(SC_FMT_UNKNOWN) == NULL);
    CHECK(sc_format_by_name("gif") == NULL);
    CHECK(sc_format_by_name("PNG") == NULL); /* the API's names are exact */
    CHECK(sc_format_by_name("") == NULL);
    CHECK(sc_format_by_name(NULL) == NULL);
    CHECK(sc_format_by_ext("webp") == NULL);
    CHECK(sc_format_by_mime("image/gif", 9) == NULL);
    CHECK(sc_format_by_mime("image/*", 7) == NULL);
}

static void test_encode(void)
{
    sc_image_t img;
    CHECK_EQ_INT(sc_image_alloc(&img, 64, 48, 3), 0);
    for (size_t i = 0; i < 64 * 48 * 3; i++)
        img.pixels[i] = (uint8_t)(i * 37 ^ (i >> 5));
    uint8_t *a = NULL, *b = NULL, *c = NULL;
    size_t la = 0, lb = 0, lc = 0;

    /* default JPEG quality is 90: byte-identical to an explicit q90 encode */
    CHECK_EQ_INT(sc_format_get(SC_FMT_JPEG)->quality, 90);
    CHECK_EQ_INT(sc_format_encode(SC_FMT_JPEG, &img, 0, &a, &la), 0);
    CHECK_EQ_INT(sc_codec_encode_jpeg(&img, 90, &b, &lb), 0);
    CHECK_EQ_INT(sc_codec_encode_jpeg(&img, 92, &c, &lc), 0);
    CHECK(la == lb && a && b && memcmp(a, b, la) == 0);
    CHECK(la != lc || memcmp(a, c, la) != 0);
    free(a), free(b), free(c);

    CHECK_EQ_INT(sc_format_encode(SC_FMT_PNG, &img, 0, &a, &la), 0);
    CHECK(a && la > 8 && a[1] == 'P' && a[2] == 'N' && a[3] == 'G');
    free(a);

    a = (uint8_t *)&img; /* must be reset to NULL on failure */
    CHECK_EQ_INT(sc_format_encode(SC_FMT_UNKNOWN, &img, 0, &a, &la), -1);
    CHECK(a == NULL && la == 0);
    CHECK_EQ_INT(sc_format_encode(SC_FMT_JPEG, &img, 101, &a, &la), -1);

    /* the compose layer refuses an unknown format too: no encode, no file */
    sc_image_t prod;
    CHECK_EQ_INT(sc_image_alloc(&prod, 8, 8, 4), 0);
    memset(prod.pixels, 200, 8 * 8 * 4);
    sc_place_params_t p = {0.5, 0.5, 0.2};
    const char *err = NULL;
    CHECK_EQ_INT(sc_compose_pil(&img, &prod, &p, SC_FMT_UNKNOWN, &a, &la, &err), -1);
    CHECK(a == NULL && err != NULL);
    errno = 0;
    CHECK_EQ_INT(sc_compose_save("/proc/sc-none", "0123456789abcdef0123456789abcdef",
                                 SC_FMT_UNKNOWN, "x", 1),
                 -1);
    CHECK_EQ_INT(errno, EINVAL);
    sc_image_free(&prod);
    sc_image_free(&img);
}

int main(void)
{
    test_lookups();
    test_encode();
    return test_report("image_format_test");
}
