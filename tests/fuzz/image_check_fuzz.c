/* libFuzzer target for the structural check of uploads (image/check.h; build:
 * CC=clang BUILD_DIR=build-fuzz ./scripts/build.sh -DSC_FUZZ=ON; run:
 * build-fuzz/image_check_fuzz -max_total_time=60). The check walks untrusted
 * uploads before anything is paid for, so it must never read out of bounds
 * (ASan), and its answer must agree with the header probe: a file it passes
 * is a PNG or JPEG whose signature the probe recognises as the same format.
 * It must also be a pure function of the bytes (two calls, same answer), and
 * a passing PNG cut before its IEND chunk must fail. */
#include <stdlib.h>
#include <string.h>

#include "image/check.h"
#include "image/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sc_check_info_t a = {0}, b = {0};
    sc_codec_status_t s1 = sc_check_image(data, size, &a);
    sc_codec_status_t s2 = sc_check_image(data, size, &b);
    if (s1 != SC_CODEC_OK && s1 != SC_CODEC_INVALID)
        abort();
    if (s1 != s2 || (s1 == SC_CODEC_OK && (a.format != b.format || a.alpha != b.alpha)))
        abort();
    if (sc_check_image(data, size, NULL) != s1)
        abort();
    if (s1 != SC_CODEC_OK)
        return 0;
    if (a.format != SC_FMT_PNG && a.format != SC_FMT_JPEG)
        abort();
    if (a.format == SC_FMT_PNG && (size < 8 || memcmp(data, "\x89PNG\r\n\x1a\n", 8) != 0))
        abort();
    if (a.format == SC_FMT_JPEG && (size < 2 || data[0] != 0xFF || data[1] != 0xD8))
        abort();
    sc_image_info_t info;
    if (sc_codec_probe(data, size, 0, &info) == SC_CODEC_OK && info.format != a.format)
        abort();

    /* A PNG that passes is a chunk chain from byte 8 to IEND: walked here by
     * the lengths, the file cut anywhere inside that chain must be refused. */
    if (a.format == SC_FMT_PNG) {
        size_t off = 8, end = 0;
        while (off + 12 <= size) {
            size_t n = (size_t)data[off] << 24 | (size_t)data[off + 1] << 16 |
                       (size_t)data[off + 2] << 8 | data[off + 3];
            if (n > size - off - 12)
                abort(); /* passed, yet a chunk runs past the end */
            if (memcmp(data + off + 4, "IEND", 4) == 0) {
                end = off + 12 + n;
                break;
            }
            off += 12 + n;
        }
        if (end == 0)
            abort();                                         /* passed without an IEND */
        size_t cut = 8 + (size_t)data[size - 1] % (end - 8); /* 8 .. end-1 */
        uint8_t *p = malloc(cut);
        if (!p)
            return 0;
        memcpy(p, data, cut);
        sc_codec_status_t s3 = sc_check_image(p, cut, NULL);
        free(p);
        if (s3 != SC_CODEC_INVALID)
            abort();
    }
    return 0;
}
