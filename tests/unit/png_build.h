/* Hand-built PNG files for the codec tests: chunks with real CRCs and a zlib
 * stream from libdeflate, so files our encoder never writes (palettes, tRNS,
 * eXIf) can be made in the test itself. */
#ifndef SCENECOMP_TESTS_PNG_BUILD_H
#define SCENECOMP_TESTS_PNG_BUILD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libdeflate.h>

typedef struct {
    uint8_t *data;
    size_t len, cap;
} png_build_t;

static void pb_put(png_build_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->data = realloc(b->data, b->cap);
        if (!b->data)
            abort();
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void pb_be32(png_build_t *b, uint32_t v)
{
    uint8_t q[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    pb_put(b, q, 4);
}

static void pb_chunk(png_build_t *b, const char *type, const void *body, size_t n)
{
    pb_be32(b, (uint32_t)n);
    size_t start = b->len;
    pb_put(b, type, 4);
    if (n)
        pb_put(b, body, n);
    pb_be32(b, (uint32_t)libdeflate_crc32(0, b->data + start, n + 4));
}

/* Signature + IHDR (8-bit, no interlace) for colour type ct. */
static void pb_start(png_build_t *b, uint32_t w, uint32_t h, int depth, int ct)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memset(b, 0, sizeof(*b));
    pb_put(b, sig, 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24),
                        (uint8_t)(w >> 16),
                        (uint8_t)(w >> 8),
                        (uint8_t)w,
                        (uint8_t)(h >> 24),
                        (uint8_t)(h >> 16),
                        (uint8_t)(h >> 8),
                        (uint8_t)h,
                        (uint8_t)depth,
                        (uint8_t)ct,
                        0,
                        0,
                        0};
    pb_chunk(b, "IHDR", ihdr, 13);
}

/* IDAT from raw rows (each row: filter byte 0 + row bytes), then IEND. */
static void pb_finish(png_build_t *b, const uint8_t *rows, size_t rows_len)
{
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(6);
    size_t cap = libdeflate_zlib_compress_bound(c, rows_len);
    uint8_t *z = malloc(cap);
    size_t n = libdeflate_zlib_compress(c, rows, rows_len, z, cap);
    libdeflate_free_compressor(c);
    pb_chunk(b, "IDAT", z, n);
    free(z);
    pb_chunk(b, "IEND", NULL, 0);
}

#endif
