/* The two-thread pipeline gives exactly the sequential result (decode both,
 * sc_place_composite) and reports which input failed. */
#include <stdlib.h>
#include <string.h>

#include "image/pipeline.h"
#include "test.h"

static uint8_t *encode(int w, int h, int ch, int seed, size_t *len)
{
    sc_image_t img;
    CHECK_EQ_INT(sc_image_alloc(&img, w, h, ch), 0);
    for (int i = 0; i < w * h; i++)
        for (int c = 0; c < ch; c++)
            img.pixels[i * ch + c] =
                (uint8_t)(c == 3 ? (i % 7 == 0 ? 0 : i * seed) : i * (c + seed));
    uint8_t *png = NULL;
    CHECK_EQ_INT(sc_codec_encode_png(&img, &png, len), 0);
    sc_image_free(&img);
    return png;
}

int main(void)
{
    size_t sl, pl;
    uint8_t *scene = encode(300, 200, 3, 3, &sl), *prod = encode(90, 120, 4, 5, &pl);
    sc_pipeline_in_t in = {scene, sl, prod, pl, 1000000, {0.3, 0.7, 0.35}};
    sc_image_t out, a, b;
    int which = -1;
    const char *err = NULL;
    CHECK_EQ_INT(sc_pipeline_composite(&in, &out, &which, &err), SC_CODEC_OK);
    CHECK_EQ_INT(sc_codec_decode(scene, sl, 0, &a, NULL), SC_CODEC_OK);
    CHECK_EQ_INT(sc_codec_decode(prod, pl, 0, &b, NULL), SC_CODEC_OK);
    CHECK_EQ_INT(sc_place_composite(&a, &b, &in.params, &err), 0);
    CHECK(out.width == 300 && out.height == 200 && out.channels == 3);
    CHECK(memcmp(out.pixels, a.pixels, 300 * 200 * 3) == 0);
    sc_image_free(&out);

    /* failures name their input */
    sc_pipeline_in_t bad = in;
    bad.scene_len = 20;
    CHECK_EQ_INT(sc_pipeline_composite(&bad, &out, &which, &err), SC_CODEC_INVALID);
    CHECK_EQ_INT(which, 0);
    CHECK(out.pixels == NULL && err != NULL);
    bad = in;
    bad.product_len = 60;
    CHECK_EQ_INT(sc_pipeline_composite(&bad, &out, &which, &err), SC_CODEC_INVALID);
    CHECK_EQ_INT(which, 1);
    bad = in;
    bad.max_pixels = 300 * 200 - 1;
    CHECK_EQ_INT(sc_pipeline_composite(&bad, &out, &which, &err), SC_CODEC_TOO_LARGE);
    CHECK_EQ_INT(which, 0);
    bad.max_pixels = 20000; /* the 90x120 image as scene fits, the 300x200 product does not */
    bad.scene = prod, bad.scene_len = pl, bad.product = scene, bad.product_len = sl;
    CHECK_EQ_INT(sc_pipeline_composite(&bad, &out, &which, &err), SC_CODEC_TOO_LARGE);
    CHECK_EQ_INT(which, 1);
    bad = in;
    bad.params.scale = 5;
    CHECK_EQ_INT(sc_pipeline_composite(&bad, &out, &which, &err), SC_CODEC_INVALID);
    CHECK_EQ_INT(which, 2);
    CHECK(out.pixels == NULL);

    sc_image_free(&a);
    sc_image_free(&b);
    free(scene);
    free(prod);
    return test_report("image_pipeline_test");
}
