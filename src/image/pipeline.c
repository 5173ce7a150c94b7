/* Two-thread decode + composite (pipeline.h). */
#include "image/pipeline.h"

#include <pthread.h>
#include <string.h>

typedef struct {
    const sc_pipeline_in_t *in;
    int scene_w, scene_h;
    sc_codec_status_t st;
    const char *err;
    int bad_params;
    sc_place_layer_t layer;
} product_job_t;

static void *product_run(void *arg)
{
    product_job_t *j = arg;
    sc_image_t prod = SC_IMAGE_INIT;
    j->st = sc_codec_decode(j->in->product, j->in->product_len, j->in->max_pixels, &prod, &j->err);
    if (j->st != SC_CODEC_OK)
        return NULL;
    if (sc_place_prepare(&prod, j->scene_w, j->scene_h, &j->in->params, &j->layer, &j->err) != 0) {
        j->st = SC_CODEC_INVALID;
        j->bad_params = 1;
    }
    sc_image_free(&prod);
    return NULL;
}

sc_codec_status_t sc_pipeline_composite(const sc_pipeline_in_t *in, sc_image_t *out, int *which,
                                        const char **err)
{
    sc_image_info_t info;
    sc_image_t scene = SC_IMAGE_INIT;
    const char *e = NULL;
    int w = 0;
    *out = scene;
    /* the scene's header first: its size drives the product's resize */
    sc_codec_status_t st = sc_codec_probe(in->scene, in->scene_len, in->max_pixels, &info);
    if (st != SC_CODEC_OK) {
        e = st == SC_CODEC_TOO_LARGE ? "image has too many pixels" : "not a PNG or JPEG image";
        goto done;
    }
    product_job_t job;
    memset(&job, 0, sizeof(job));
    job.in = in;
    job.scene_w = info.width;
    job.scene_h = info.height;
    pthread_t th;
    int threaded = pthread_create(&th, NULL, product_run, &job) == 0;
    st = sc_codec_decode(in->scene, in->scene_len, in->max_pixels, &scene, &e);
    if (threaded)
        pthread_join(th, NULL);
    else
        product_run(&job);
    if (st == SC_CODEC_OK && job.st != SC_CODEC_OK) {
        st = job.st;
        e = job.err;
        w = job.bad_params ? 2 : 1;
    }
    if (st == SC_CODEC_OK) {
        sc_place_apply(&scene, &job.layer);
        *out = scene;
        scene.pixels = NULL;
    }
    sc_place_layer_free(&job.layer);
    sc_image_free(&scene);
done:
    if (which)
        *which = w;
    if (err)
        *err = e;
    return st;
}
