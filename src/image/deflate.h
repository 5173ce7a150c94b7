/* A fast deflate encoder for PNG image data: dynamic-Huffman blocks of
 * literals plus distance-1 runs (what zlib calls Z_RLE). On filtered photo
 * rows LZ matching finds little that the row filter has not already removed,
 * so this gets within a few percent of zlib level 6 at a small fraction of its
 * time, and because no block refers back beyond its segment, independent
 * segments can be compressed on different threads and joined with an empty
 * stored block (a sync flush) into one valid stream. Thread-safe. */
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
/* The same with the run search at a given SIMD level (the output is identical
 * at every level; the tests check it). */
size_t sc_deflate_segment_lvl(const uint8_t *data, size_t len, int final, uint8_t *out,
                              sc_simd_level_t lvl);

#endif
