/* The closed set of output image formats, in one table: the API name (and an
 * accepted alias), the saved file's extension, the MIME type (and an alias
 * accepted in Accept), the default encoder quality and the encoder. Adding a
 * format is one row here. Lookups of anything not in the table return NULL,
 * and encoding SC_FMT_UNKNOWN fails, so an unknown format can never turn into
 * another one. Thread-safe (constant data). */
#ifndef SCENECOMP_IMAGE_FORMAT_H
#define SCENECOMP_IMAGE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

typedef enum { SC_FMT_UNKNOWN = 0, SC_FMT_PNG, SC_FMT_JPEG } sc_image_format_t;

typedef struct sc_format {
    sc_image_format_t id;
    const char *name;       /* the request's and the answer's "format" value */
    const char *alias;      /* another accepted name, or NULL */
    const char *ext;        /* saved files are <id>.<ext> */
    const char *mime;       /* Content-Type of the image */
    const char *mime_alias; /* another type accepted in Accept, or NULL */
    int quality;            /* default encoder quality (1..100), 0 when the encoder has none */
    /* Encodes img (3 or 4 channels); *out is malloc'd. Returns 0 or -1. */
    int (*encode)(const sc_image_t *img, int quality, uint8_t **out, size_t *out_len);
} sc_format_t;

/* The row of id, or NULL for SC_FMT_UNKNOWN and anything out of range. */
const sc_format_t *sc_format_get(sc_image_format_t id);
/* By name or alias, exact ("png", "jpeg", "jpg"); NULL otherwise (also for NULL). */
const sc_format_t *sc_format_by_name(const char *s);
/* By a file name's extension (no dot), case-insensitive: ext, name or alias
 * ("PNG", "jpg", "jpeg"). NULL otherwise. */
const sc_format_t *sc_format_by_ext(const char *ext);
/* By a media type of n bytes (mime or mime_alias), case-insensitive. */
const sc_format_t *sc_format_by_mime(const char *s, size_t n);
/* The row's name / ext / MIME, or NULL for an unknown id. */
const char *sc_format_name(sc_image_format_t id);
const char *sc_format_ext(sc_image_format_t id);
const char *sc_format_mime(sc_image_format_t id);
/* Encodes img as id with quality (0 = the table's default). Returns 0, or -1
 * (unknown id, bad quality, encoder failure) with *out NULL. */
int sc_format_encode(sc_image_format_t id, const sc_image_t *img, int quality, uint8_t **out,
                     size_t *out_len);

#endif
