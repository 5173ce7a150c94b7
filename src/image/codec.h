/* Decoding (PNG, JPEG via stb_image) and encoding (PNG via stb_image_write with a
 * fast deflate, JPEG via libjpeg-turbo). The pixel limit is checked from the
 * header before any pixel buffer exists. Thread-safe. */
#ifndef SCENECOMP_IMAGE_CODEC_H
#define SCENECOMP_IMAGE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "image/format.h"
#include "image/image.h"

typedef enum {
    SC_CODEC_OK = 0,
    SC_CODEC_INVALID = -1,   /* not a PNG/JPEG, or corrupt */
    SC_CODEC_TOO_LARGE = -2, /* width*height over the caller's max_pixels */
    SC_CODEC_NOMEM = -3,
} sc_codec_status_t;

typedef struct sc_image_info {
    int width, height; /* as displayed: swapped when the EXIF orientation is 5..8 */
    int channels;      /* channels in the file: 1..4 */
    sc_image_format_t format;
    int orientation; /* EXIF Orientation 1..8 (1 when absent), see exif.h */
} sc_image_info_t;

/* Reads only the headers (and the EXIF orientation). Returns SC_CODEC_OK,
 * SC_CODEC_INVALID or SC_CODEC_TOO_LARGE (when max_pixels > 0 and
 * width*height > max_pixels). */
sc_codec_status_t sc_codec_probe(const uint8_t *data, size_t len, long long max_pixels,
                                 sc_image_info_t *info);

/* Decodes to RGB (files without alpha) or RGBA (files with an alpha channel or
 * grey+alpha), upright: the EXIF orientation of a JPEG (APP1) or PNG (eXIf) is
 * applied, so the size is the probe's. Checks max_pixels from the header
 * first. On failure out is empty and *err (if given) points to a static
 * message. */
sc_codec_status_t sc_codec_decode(const uint8_t *data, size_t len, long long max_pixels,
                                  sc_image_t *out, const char **err);

/* Successful sc_codec_decode calls since the process started (the metric
 * scenecomp_image_decodes_total: the request path decodes only for PIL and a
 * product cache hit decodes no product, issue 11/12). */
long long sc_codec_decodes(void);

/* Encodes PNG (zlib level-6 equivalent, adaptive row filter). *out is malloc'd
 * (caller frees). Returns 0 or -1. */
int sc_codec_encode_png(const sc_image_t *img, uint8_t **out, size_t *out_len);
/* Encodes baseline JPEG, 4:2:0, quality 1..100; alpha is dropped. Returns 0 or -1. */
int sc_codec_encode_jpeg(const sc_image_t *img, int quality, uint8_t **out, size_t *out_len);

#endif
