/* The in-memory image used everywhere: 8-bit interleaved RGB or RGBA, straight
 * (non-premultiplied) alpha, rows packed (stride = width * channels).
 * Pure data + allocation helpers; no I/O. Thread-safe (no shared state). */
#ifndef SCENECOMP_IMAGE_IMAGE_H
#define SCENECOMP_IMAGE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sc_image {
    int width;
    int height;
    int channels;    /* 3 (RGB) or 4 (RGBA) */
    uint8_t *pixels; /* owned; width * height * channels bytes */
} sc_image_t;

#define SC_IMAGE_INIT                                                                              \
    {                                                                                              \
        0, 0, 0, NULL                                                                              \
    }

/* Allocates an uninitialised image. Returns 0, or -1 on overflow/out of memory
 * (img left empty). */
int sc_image_alloc(sc_image_t *img, int width, int height, int channels);
void sc_image_free(sc_image_t *img);
/* True when the image has an alpha channel with at least one pixel below 255. */
bool sc_image_has_transparency(const sc_image_t *img);

#endif
