/* A fast deflate encoder for PNG image data: LZ77 with short hash chains
 * (about zlib level 5) and dynamic-Huffman blocks, stepping over long stretches
 * without matches (sensor noise) so they cost little. Because no match refers
 * back beyond its segment, independent segments can be compressed on different
 * threads and joined with an empty stored block (a sync flush) into one valid
 * stream. Thread-safe. */
#ifndef SCENECOMP_IMAGE_DEFLATE_H
#define SCENECOMP_IMAGE_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "image/simd.h"

/* Upper bound of the bytes sc_deflate_segment writes for len input bytes. */
size_t sc_deflate_bound(size_t len);

/* Compresses data[0..len) as raw deflate blocks into out (capacity from
 * sc_deflate_bound). final: the last block is marked final and the stream is
 * padded to a byte; otherwise the segment ends with a sync flush (empty
 * stored block), so another segment can follow byte-aligned. Returns the
 * byte count. len may be 0. */
size_t sc_deflate_segment(const uint8_t *data, size_t len, int final, uint8_t *out);
/* The same with the match-length compare at a given SIMD level (8 bytes at a
 * time or bytewise; the output is identical at every level, the tests check it). */
size_t sc_deflate_segment_lvl(const uint8_t *data, size_t len, int final, uint8_t *out,
                              sc_simd_level_t lvl);

#endif
