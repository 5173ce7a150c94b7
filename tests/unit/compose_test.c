/* The compose layer's decode step and the placement's working limits
 * (issue 8): a 12,000,000 x 1 product used to pass every check and fail with
 * "out of memory resizing the product" (a 500); it is refused from its header
 * as too large now, and sizes that pass the check do composite. */
#include <stdlib.h>
#include <string.h>

#include "compose/compose.h"
#include "image/resize.h"
#include "test.h"

static uint8_t *solid_png(int w, int h, size_t *len)
{
    sc_image_t img;
    uint8_t *png = NULL;
    if (sc_image_alloc(&img, w, h, 3) != 0)
        return NULL;
    for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++)
        img.pixels[i] = (uint8_t)(i % 3 == 0 ? 200 : 40);
    if (sc_codec_encode_png(&img, &png, len) != 0)
        png = NULL;
    sc_image_free(&img);
    return png;
}

static void test_place_check(void)
{
    const sc_place_params_t p = {0.5, 0.6, 0.4};
    const char *err = NULL;
    CHECK_EQ_INT(sc_place_check(1000, 800, 12000000, 1, &p, &err), -1);
    CHECK_STR(err, SC_PLACE_TOO_LARGE_MSG);
    CHECK_EQ_INT(sc_place_check(1000, 800, 1, 12000000, &p, &err), 0); /* tall: cheap */
    CHECK_EQ_INT(sc_place_check(1000, 800, 4000, 3000, &p, &err), 0);
    CHECK(err == NULL);
    CHECK_EQ_INT(sc_place_check(1000, 800, 20000, 2, &p, &err), 0);
    /* the scene side: a 12,000,000 x 1 scene with a product as wide as it */
    const sc_place_params_t wide = {0.5, 0.5, 1.0};
    CHECK_EQ_INT(sc_place_check(12000000, 1, 500, 500, &wide, &err), -1);
    /* parameters are still checked */
    const sc_place_params_t bad = {0.5, 0.6, 5.0};
    CHECK_EQ_INT(sc_place_check(1000, 800, 40, 20, &bad, &err), -1);
    CHECK_STR(err, "scale must lie in (0, 4]");
    /* a placement entirely outside the scene costs nothing */
    const sc_place_params_t off = {0.0, 0.0, 0.0001};
    CHECK_EQ_INT(sc_place_check(1000, 800, 12000000, 1, &off, &err), 0);

    /* the cost follows the resize's own limits */
    double bytes = 0;
    CHECK_EQ_INT(sc_resize_region_cost(1000, 1000, 500, 500, 0, 500, 500, 4, &bytes), 0);
    CHECK(bytes > 500.0 * 500 * 4 && bytes < 16e6);
    CHECK_EQ_INT(sc_resize_region_cost(12000000, 1, 400, 1, 0, 400, 1, 4, &bytes), -1);
}

static void test_decode(void)
{
    const sc_place_params_t p = {0.5, 0.6, 0.4};
    size_t sl = 0, pl = 0, wl = 0;
    uint8_t *scene = solid_png(1000, 800, &sl), *prod = solid_png(60, 40, &pl);
    uint8_t *strip = solid_png(12000000, 1, &wl);
    CHECK(scene && prod && strip);
    sc_image_t s, pr;
    sc_compose_refusal_t why;
    CHECK_EQ_INT(sc_compose_decode(scene, sl, prod, pl, 40000000, &p, &s, &pr, &why), 0);
    CHECK(s.width == 1000 && pr.width == 60);

    /* the same decoded strip fails the resize itself, with the check's message
     * instead of "out of memory" */
    sc_image_t big;
    CHECK_EQ_INT(sc_codec_decode(strip, wl, 40000000, &big, NULL), SC_CODEC_OK);
    const char *err = NULL;
    uint8_t *out = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sc_compose_pil(&s, &big, &p, SC_FMT_PNG, &out, &len, &err), -1);
    CHECK_STR(err, SC_PLACE_TOO_LARGE_MSG);
    CHECK(out == NULL);
    sc_image_free(&big);
    sc_image_free(&s);
    sc_image_free(&pr);

    /* refused from the headers, before any decode */
    CHECK_EQ_INT(sc_compose_decode(scene, sl, strip, wl, 40000000, &p, &s, &pr, &why), -1);
    CHECK_EQ_INT(why.status, SC_CODEC_TOO_LARGE);
    CHECK_STR(why.field, "product");
    CHECK(strstr(why.message, "12000000x1") != NULL);
    CHECK(s.pixels == NULL && pr.pixels == NULL);

    /* the other refusals keep their messages and name their field */
    CHECK_EQ_INT(sc_compose_decode(scene, 30, prod, pl, 40000000, &p, &s, &pr, &why), -1);
    CHECK_EQ_INT(why.status, SC_CODEC_INVALID);
    CHECK_STR(why.message, "field 'scene' is not a valid PNG or JPEG image");
    CHECK_EQ_INT(sc_compose_decode(scene, sl, prod, pl, 100000, &p, &s, &pr, &why), -1);
    CHECK_EQ_INT(why.status, SC_CODEC_TOO_LARGE);
    CHECK_STR(why.message, "field 'scene' has more than 100000 pixels");
    CHECK_EQ_INT(sc_compose_decode(prod, pl, scene, sl, 100000, &p, &s, &pr, &why), -1);
    CHECK_STR(why.field, "product");
    CHECK(s.pixels == NULL && pr.pixels == NULL);
    free(scene);
    free(prod);
    free(strip);
}

/* Random geometries: whenever the check passes, the composite succeeds. */
static void test_check_matches_work(void)
{
    uint32_t r = 7;
    int ok = 1, refused = 0;
    for (int i = 0; i < 40; i++) {
        r = r * 1664525u + 1013904223u;
        int sw = 1 + (int)(r >> 8) % 600, sh = 1 + (int)(r >> 16) % 400;
        r = r * 1664525u + 1013904223u;
        /* every 8th a strip as long as the limits allow to reach */
        int strip = i % 8 == 0;
        int pw = strip ? 8000000 + (int)(r >> 9) % 6000000 : 1 + (int)(r >> 10) % 300;
        int ph = strip ? 1 : 1 + (int)(r >> 12) % 200;
        sc_place_params_t p = {(r % 101) / 100.0, ((r >> 7) % 101) / 100.0,
                               0.001 + ((r >> 3) % 4000) / 1000.0};
        const char *err = NULL;
        int chk = sc_place_check(sw, sh, pw, ph, &p, &err);
        sc_image_t s, pr;
        if (sc_image_alloc(&s, sw, sh, 3) != 0 || sc_image_alloc(&pr, pw, ph, 4) != 0)
            break;
        memset(s.pixels, 10, (size_t)sw * sh * 3);
        memset(pr.pixels, 200, (size_t)pw * ph * 4);
        int rc = sc_place_composite(&s, &pr, &p, &err);
        if (chk == 0 && rc != 0)
            ok = 0;
        if (chk != 0) {
            refused++;
            if (rc == 0 || strcmp(err, SC_PLACE_TOO_LARGE_MSG) != 0)
                ok = 0;
        }
        sc_image_free(&s);
        sc_image_free(&pr);
    }
    CHECK(ok);
    CHECK(refused > 0); /* the sample does reach the limit */
}

int main(void)
{
    test_place_check();
    test_decode();
    test_check_matches_work();
    return test_report("compose_test");
}
