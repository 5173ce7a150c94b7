/* libFuzzer target for the EXIF orientation reader (build: CC=clang
 * BUILD_DIR=build-fuzz ./scripts/build.sh -DSC_FUZZ=ON; run:
 * build-fuzz/exif_fuzz -max_total_time=60). The input is read as a whole
 * file, as a bare TIFF block, and wrapped into a JPEG APP1 "Exif" segment and
 * a PNG eXIf chunk, so the TIFF parser is reached through both containers.
 * Every answer must be 1..8, the wrapped ones equal to the bare one, and the
 * orientation applied to a small image must give the right size. */
#include <stdlib.h>
#include <string.h>

#include "image/exif.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int o)
{
    if (o < 1 || o > 8)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(sc_exif_orientation(data, size));
    int bare = sc_exif_orientation_tiff(data, size);
    check(bare);
    if (size > 65535 - 8)
        return 0;

    /* SOI, APP1 Exif, EOI */
    size_t jl = 2 + 4 + 6 + size + 2;
    uint8_t *j = malloc(jl);
    if (!j)
        return 0;
    j[0] = 0xFF, j[1] = 0xD8, j[2] = 0xFF, j[3] = 0xE1;
    j[4] = (uint8_t)((size + 8) >> 8), j[5] = (uint8_t)(size + 8);
    memcpy(j + 6, "Exif\0\0", 6);
    if (size)
        memcpy(j + 12, data, size);
    j[jl - 2] = 0xFF, j[jl - 1] = 0xD9;
    if (sc_exif_orientation(j, jl) != bare)
        abort();
    free(j);

    /* signature, eXIf, IEND (CRCs are not checked by the reader) */
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t pl = 8 + 12 + size + 12;
    uint8_t *p = calloc(1, pl);
    if (!p)
        return 0;
    memcpy(p, sig, 8);
    p[8] = (uint8_t)(size >> 24), p[9] = (uint8_t)(size >> 16), p[10] = (uint8_t)(size >> 8),
    p[11] = (uint8_t)size;
    memcpy(p + 12, "eXIf", 4);
    if (size)
        memcpy(p + 16, data, size);
    memcpy(p + 16 + size + 4 + 4, "IEND", 4);
    if (sc_exif_orientation(p, pl) != bare)
        abort();
    free(p);

    sc_image_t img;
    if (sc_image_alloc(&img, 3, 2, 3) != 0)
        return 0;
    memset(img.pixels, 7, 18);
    if (sc_exif_apply(&img, bare) == 0 &&
        (img.width != (sc_exif_swaps(bare) ? 2 : 3) || img.height != (sc_exif_swaps(bare) ? 3 : 2)))
        abort();
    sc_image_free(&img);
    return 0;
}
