/* The fast PNG paths: a decoder for the common case (8-bit RGB/RGBA,
 * non-interlaced, no tRNS) built on libdeflate's inflate with SIMD unfiltering,
 * and the encoder (per-row adaptive filter choice as libpng/Pillow do it, then
 * libdeflate). Everything else is decoded by stb_image (codec.c). The row filter
 * kernels are exposed for the unit tests (scalar vs SIMD). Thread-safe. */
#ifndef SCENECOMP_IMAGE_PNG_H
#define SCENECOMP_IMAGE_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"
#include "image/simd.h"

/* Decodes data if it is in the fast subset. Returns 0 (out filled), 1 when the
 * file is not in the subset or the fast path found a problem (caller falls back
 * to stb_image, which gives the authoritative answer), -1 out of memory.
 * The caller has already checked the header's pixel count. */
int sc_png_decode_fast(const uint8_t *data, size_t len, sc_image_t *out);

/* Encodes img (3 or 4 channels) as PNG. level 0: our LZ77 + Huffman
 * deflate (deflate.h), in four bands taken by two threads for images over 1 MiB;
 * level 1..12: libdeflate at that level (single thread; kept for comparison
 * and as the reference). *out is malloc'd. Returns 0 or -1. */
int sc_png_encode(const sc_image_t *img, int level, uint8_t **out, size_t *out_len);
/* The same with the band count chosen: threads 1 = one band, one thread
 * (level 0 only; libdeflate levels are always single-threaded). */
int sc_png_encode_threads(const sc_image_t *img, int level, int threads, uint8_t **out,
                          size_t *out_len);

/* Undoes one row's filter: dst = unfilter(src) given the previous unfiltered
 * row (or NULL for the first row); n bytes, bpp 3 or 4 (other bpp: scalar).
 * dst may overlap src if dst <= src. Returns -1 on an unknown filter type. */
int sc_png_unfilter_row(int type, uint8_t *dst, const uint8_t *src, const uint8_t *prev, size_t n,
                        int bpp, sc_simd_level_t lvl);

/* Chooses the filter for one row (minimum sum of |signed byte|, ties to the
 * lower type) and writes type byte + filtered bytes to out (n + 1 bytes).
 * cur and prev point at rows that have bpp readable zero bytes before them
 * (prev may be an all-zero row). Returns the chosen type. */
int sc_png_filter_row(const uint8_t *cur, const uint8_t *prev, size_t n, int bpp, uint8_t *out,
                      uint8_t *scratch, sc_simd_level_t lvl);

/* PNG's byte layout, shared with icc.c (which reads and writes iCCP chunks):
 * the signature, big-endian 32-bit fields, and a chunk's framing. */
extern const uint8_t sc_png_sig[8];
uint32_t sc_png_be32(const uint8_t *p);
void sc_png_put_be32(uint8_t *p, uint32_t v);
/* Writes a chunk's length and 4-byte type at p; returns where its data goes. */
uint8_t *sc_png_put_chunk_header(uint8_t *p, uint32_t len, const char *type);
/* Appends the CRC of type+data (the 4 bytes before data and len bytes of it);
 * returns the end of the chunk. */
uint8_t *sc_png_put_chunk_crc(uint8_t *data, uint32_t len);

#endif
