/* libFuzzer target for sc_codec_decode (build: CC=clang BUILD_DIR=build-fuzz
 * ./scripts/build.sh -DSC_FUZZ=ON; run: build-fuzz/image_decode_fuzz -max_total_time=60).
 * Any input must either be refused or decode to an image whose size matches
 * its header, under the service's pixel limit; a decoded image is also
 * re-encoded as PNG and must decode back to the same pixels. */
#include <stdlib.h>
#include <string.h>

#include "image/codec.h"

#define FUZZ_MAX_PIXELS (1 << 22)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sc_image_t img;
    sc_image_info_t info;
    const char *err = NULL;
    sc_codec_status_t st = sc_codec_decode(data, size, FUZZ_MAX_PIXELS, &img, &err);
    if (st != SC_CODEC_OK) {
        if (img.pixels || !err)
            abort();
        return 0;
    }
    if (sc_codec_probe(data, size, FUZZ_MAX_PIXELS, &info) != SC_CODEC_OK ||
        info.width != img.width || info.height != img.height ||
        (img.channels != 3 && img.channels != 4))
        abort();
    uint8_t *png = NULL;
    size_t len = 0;
    if (sc_codec_encode_png(&img, &png, &len) == 0) {
        sc_image_t back;
        if (sc_codec_decode(png, len, 0, &back, &err) != SC_CODEC_OK ||
            memcmp(back.pixels, img.pixels, (size_t)img.width * img.height * img.channels) != 0)
            abort();
        sc_image_free(&back);
        free(png);
    }
    sc_image_free(&img);
    return 0;
}
