/* Palette PNGs whose indices run past their PLTE (issue 8): stb_image leaves
 * the rest of its palette uninitialised (stack memory reached the output and
 * the uploader). The decoder pads the palette with opaque black, as Pillow
 * does, so the output is deterministic. The stack is filled with a pattern
 * before each decode so that, without the padding, the stale bytes show up
 * as non-black pixels instead of happening to be zero. */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"
#include "png_build.h"
#include "test.h"

#define W 32
#define H 8

static __attribute__((noinline)) void dirty_stack(uint8_t v)
{
    volatile uint8_t junk[1 << 16];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)(v + i);
}

/* W x H, 8-bit indices 0..255 (index = (y * W + x) % 256), PLTE of 2 entries
 * (red, green), optionally a tRNS of 1 entry (alpha 100 for index 0). */
static png_build_t short_palette_png(int trns, int depth)
{
    png_build_t b;
    pb_start(&b, W, H, depth, 3);
    const uint8_t plte[6] = {255, 0, 0, 0, 255, 0};
    pb_chunk(&b, "PLTE", plte, sizeof plte);
    if (trns) {
        const uint8_t t[1] = {100};
        pb_chunk(&b, "tRNS", t, 1);
    }
    int per_byte = 8 / depth, maxi = (1 << depth) - 1;
    size_t stride = (size_t)(W * depth + 7) / 8;
    uint8_t rows[H * (1 + W)];
    memset(rows, 0, sizeof rows);
    for (int y = 0; y < H; y++) {
        uint8_t *r = rows + (size_t)y * (1 + stride) + 1;
        for (int x = 0; x < W; x++) {
            int idx = (y * W + x) % 256 & maxi;
            int shift = 8 - depth * (x % per_byte + 1);
            r[x / per_byte] |= (uint8_t)(idx << shift);
        }
    }
    pb_finish(&b, rows, (size_t)H * (1 + stride));
    return b;
}

static void check_one(int trns, int depth)
{
    png_build_t png = short_palette_png(trns, depth);
    sc_image_t a, b;
    const char *err = NULL;
    dirty_stack(0x5A);
    CHECK_EQ_INT(sc_codec_decode(png.data, png.len, 0, &a, &err), SC_CODEC_OK);
    dirty_stack(0xC3);
    CHECK_EQ_INT(sc_codec_decode(png.data, png.len, 0, &b, &err), SC_CODEC_OK);
    if (!a.pixels || !b.pixels) {
        free(png.data);
        return;
    }
    int ch = trns ? 4 : 3, maxi = (1 << depth) - 1;
    CHECK_EQ_INT(a.channels, ch);
    CHECK(a.width == W && a.height == H);
    CHECK(memcmp(a.pixels, b.pixels, (size_t)W * H * (size_t)ch) == 0); /* deterministic */
    int bad = 0, black = 0;
    for (int i = 0; i < W * H; i++) {
        const uint8_t *p = a.pixels + (size_t)i * (size_t)ch;
        int idx = i % 256 & maxi;
        uint8_t want[4] = {0, 0, 0, 255};
        if (idx == 0)
            want[0] = 255, want[3] = trns ? 100 : 255;
        else if (idx == 1)
            want[1] = 255;
        else
            black++;
        if (memcmp(p, want, (size_t)ch) != 0)
            bad++;
    }
    CHECK(black > 0); /* the file does use indices past the palette */
    CHECK_EQ_INT(bad, 0);
    sc_image_free(&a);
    sc_image_free(&b);
    free(png.data);
}

int main(void)
{
    for (int trns = 0; trns <= 1; trns++) {
        check_one(trns, 8);
        check_one(trns, 4);
        check_one(trns, 2);
    }
    return test_report("image_palette_test");
}
