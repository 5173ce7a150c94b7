/* The PIL method from encoded bytes, using both cores: the product is decoded,
 * keyed and resized on a second thread while the scene decodes (its size comes
 * from its header), then the layer is composited. Thread-safe. */
#ifndef SCENECOMP_IMAGE_PIPELINE_H
#define SCENECOMP_IMAGE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "image/codec.h"
#include "image/place.h"

typedef struct sc_pipeline_in {
    const uint8_t *scene;
    size_t scene_len;
    const uint8_t *product;
    size_t product_len;
    long long max_pixels; /* per image; 0 = no limit */
    sc_place_params_t params;
} sc_pipeline_in_t;

/* Decodes both images and composites the product onto the scene, which is
 * left in *out (caller frees). Returns SC_CODEC_OK, or the first failure:
 * SC_CODEC_INVALID / SC_CODEC_TOO_LARGE / SC_CODEC_NOMEM with *which = 0
 * (scene) or 1 (product), or SC_CODEC_INVALID with *which = 2 for bad
 * placement parameters. *err is a static message. */
sc_codec_status_t sc_pipeline_composite(const sc_pipeline_in_t *in, sc_image_t *out, int *which,
                                        const char **err);

#endif
