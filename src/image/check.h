/* A cheap structural check of a whole PNG or JPEG file, without decoding a
 * pixel (issue 11): the request path refuses a truncated or corrupt upload
 * with 400 invalid_image before any prediction is paid for, and serves a
 * Kontext output as it is only when it passes. PNG: every chunk's length and
 * CRC-32 through IEND. JPEG: the marker segments, the entropy-coded data of
 * every scan skipped up to its next marker, through EOI. Bytes after the end
 * (IEND / EOI) are allowed, as every decoder does. What it cannot see (a
 * well-framed deflate stream or scan that decodes to garbage) is left to the
 * decoder. Thread-safe, no allocation. */
#ifndef SCENECOMP_IMAGE_CHECK_H
#define SCENECOMP_IMAGE_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image/codec.h"

/* What the walk saw besides the header (codec.h's sc_codec_probe). */
typedef struct sc_check_info {
    sc_image_format_t format;
    bool alpha; /* the decoded image has alpha (PNG colour type 4/6, or a tRNS chunk) */
} sc_check_info_t;

/* Returns SC_CODEC_OK (out filled when given) or SC_CODEC_INVALID. */
sc_codec_status_t sc_check_image(const uint8_t *data, size_t len, sc_check_info_t *out);

#endif
