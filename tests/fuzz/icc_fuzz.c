/* libFuzzer target for the ICC profile reader (build: CC=clang
 * BUILD_DIR=build-fuzz ./scripts/build.sh -DSC_FUZZ=ON; run:
 * build-fuzz/icc_fuzz -max_total_time=60). The input is read as a whole file
 * (JPEG APP2 segments, PNG iCCP), then used as a profile: embedded into a PNG
 * and a JPEG, it must be read back byte for byte, and lcms2 must either use it
 * or refuse it on a small image without crashing. */
#include <stdlib.h>
#include <string.h>

#include "image/format.h"
#include "image/icc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *icc = NULL, *out = NULL, *back = NULL;
    size_t icc_len = 0, out_len = 0, back_len = 0;
    int rc = sc_icc_extract(data, size, &icc, &icc_len);
    if (rc == 1 && (icc_len == 0 || icc_len > SC_ICC_MAX_BYTES))
        abort();
    free(icc);
    if (size == 0 || size > 200000)
        return 0;
    sc_image_t img;
    if (sc_image_alloc(&img, 4, 3, 4) != 0)
        return 0;
    memset(img.pixels, 0x80, 4 * 3 * 4);
    for (int f = 0; f < 2; f++) {
        sc_image_format_t fmt = f ? SC_FMT_JPEG : SC_FMT_PNG;
        if (sc_format_encode_icc(fmt, &img, 0, data, size, &out, &out_len) != 0)
            continue;
        if (sc_icc_extract(out, out_len, &back, &back_len) != 1 || back_len != size ||
            memcmp(back, data, size) != 0)
            abort();
        free(back);
        free(out);
    }
    if (sc_icc_convert(&img, data, size, NULL, 0) == 0 && img.pixels[3] != 0x80)
        abort(); /* alpha must survive a conversion */
    sc_image_free(&img);
    return 0;
}
