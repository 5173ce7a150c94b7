/* Model inputs for Replicate: images become data URIs (scene JPEG q90, product PNG
 * to keep its alpha), downscaled with Lanczos when the long side exceeds
 * SC_INPUTS_MAX_SIDE, and the JSON is assembled with cJSON. Runs on request
 * threads; no shared state. */
#include "replicate/inputs.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "image/codec.h"
#include "image/format.h"
#include "image/resize.h"
#include "replicate/base64.h"
#include "replicate/files.h"

#define SC_INPUTS_SCENE_JPEG_QUALITY 90

static const char k_default_prompt[] =
    "Place the product from the second image naturally into the scene of the first image, "
    "keeping the scene unchanged";

/* Encodes img (downscaled first when needed) as a data URI, or as the URL of
 * an uploaded file when that data URI would exceed 256 KB (files.h); png
 * selects PNG over JPEG. Returns a malloc'd string, or NULL with *rc -1 (out
 * of memory / encode failure) or -2 (the upload failed: an api_error). */
static char *image_data_uri(const sc_image_t *img, bool png, double upload_timeout, int *rc_out)
{
    sc_image_t small = SC_IMAGE_INIT;
    const sc_image_t *src = img;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    char *uri = NULL;
    *rc_out = -1;
    if (!img || !img->pixels || img->width < 1 || img->height < 1)
        return NULL;
    int w = img->width, h = img->height;
    int longest = w > h ? w : h;
    if (longest > SC_INPUTS_MAX_SIDE) {
        /* keep the aspect ratio, rounding the short side, at least 1 px */
        if (w >= h) {
            h = (int)(((long long)h * SC_INPUTS_MAX_SIDE + w / 2) / w);
            w = SC_INPUTS_MAX_SIDE;
        } else {
            w = (int)(((long long)w * SC_INPUTS_MAX_SIDE + h / 2) / h);
            h = SC_INPUTS_MAX_SIDE;
        }
        if (w < 1)
            w = 1;
        if (h < 1)
            h = 1;
        if (sc_resize_lanczos(img, w, h, &small) != 0)
            goto cleanup;
        src = &small;
    }
    int rc = png ? sc_codec_encode_png(src, &enc, &enc_len)
                 : sc_codec_encode_jpeg(src, SC_INPUTS_SCENE_JPEG_QUALITY, &enc, &enc_len);
    if (rc != 0)
        goto cleanup;
    char err[256];
    rc = sc_files_input(enc, enc_len, png ? "image/png" : "image/jpeg", upload_timeout, &uri, err,
                        sizeof err);
    if (rc != 0) {
        sc_log_warn("replicate: input image (%zu bytes) not usable: %s", enc_len, err);
        *rc_out = rc;
        goto cleanup;
    }
    *rc_out = 0;
cleanup:
    free(enc);
    sc_image_free(&small);
    return uri;
}

/* Serialises obj (consumed) into *json. Returns 0 or -1. */
static int finish_json(cJSON *obj, char **json)
{
    *json = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return *json ? 0 : -1;
}

int sc_inputs_kontext(const sc_image_t *scene, const sc_image_t *product, const char *prompt,
                      char **json)
{
    return sc_inputs_kontext_ex(scene, product, prompt, SC_INPUTS_UPLOAD_TIMEOUT, json);
}

/* The input object from the two image strings (consumed). */
static int kontext_json(char *scene_uri, char *product_uri, const char *prompt,
                        const char *output_format, char **json)
{
    int rc = -1;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "prompt", prompt && *prompt ? prompt : k_default_prompt))
        goto cleanup;
    /* cJSON_CreateStringReference would avoid a copy, but the object must own
     * its strings once we free the URIs below; one transient copy is fine */
    if (!cJSON_AddStringToObject(o, "input_image_1", scene_uri))
        goto cleanup;
    free(scene_uri);
    scene_uri = NULL;
    if (!cJSON_AddStringToObject(o, "input_image_2", product_uri))
        goto cleanup;
    free(product_uri);
    product_uri = NULL;
    if (!cJSON_AddStringToObject(o, "aspect_ratio", "match_input_image") ||
        !cJSON_AddStringToObject(o, "output_format", output_format ? output_format : "png") ||
        !cJSON_AddNumberToObject(o, "safety_tolerance", 2))
        goto cleanup;
    rc = finish_json(o, json);
    o = NULL;
cleanup:
    cJSON_Delete(o);
    free(scene_uri);
    free(product_uri);
    return rc;
}

int sc_inputs_kontext_ex(const sc_image_t *scene, const sc_image_t *product, const char *prompt,
                         double upload_timeout, char **json)
{
    char *scene_uri = NULL, *product_uri = NULL;
    int urc = -1;
    *json = NULL;
    scene_uri = image_data_uri(scene, false, upload_timeout, &urc);
    if (scene_uri)
        product_uri = image_data_uri(product, true, upload_timeout, &urc);
    if (!scene_uri || !product_uri) {
        free(scene_uri);
        free(product_uri);
        return urc == -2 ? -2 : -1;
    }
    return kontext_json(scene_uri, product_uri, prompt, "png", json);
}

int sc_inputs_passes(const sc_inputs_file_t *f)
{
    int longest = f->width > f->height ? f->width : f->height;
    return (f->format == SC_FMT_PNG || f->format == SC_FMT_JPEG) &&
           (f->orientation == 1 || f->orientation == 0) && longest >= 1 &&
           longest <= SC_INPUTS_PASS_MAX_SIDE;
}

/* The input string of one upload (the rule in inputs.h); NULL with *rc. */
static char *file_uri(const sc_inputs_file_t *f, bool png, long long max_pixels,
                      double upload_timeout, int *rc)
{
    *rc = -1;
    if (!f->bytes || f->len == 0)
        return NULL;
    if (sc_inputs_passes(f)) {
        char *uri = NULL, err[256];
        int r = sc_files_input(f->bytes, f->len, sc_format_mime(f->format), upload_timeout, &uri,
                               err, sizeof err);
        if (r != 0) {
            sc_log_warn("replicate: input image (%zu bytes) not usable: %s", f->len, err);
            *rc = r;
        } else {
            *rc = 0;
        }
        return uri;
    }
    sc_image_t img = SC_IMAGE_INIT;
    if (sc_codec_decode(f->bytes, f->len, max_pixels, &img, NULL) != SC_CODEC_OK)
        return NULL;
    char *uri = image_data_uri(&img, png, upload_timeout, rc);
    sc_image_free(&img);
    return uri;
}

int sc_inputs_kontext_files(const sc_inputs_file_t *scene, const sc_inputs_file_t *product,
                            const char *prompt, const char *output_format, long long max_pixels,
                            double upload_timeout, char **json)
{
    int urc = -1;
    *json = NULL;
    char *scene_uri = file_uri(scene, false, max_pixels, upload_timeout, &urc);
    char *product_uri =
        scene_uri ? file_uri(product, true, max_pixels, upload_timeout, &urc) : NULL;
    if (!scene_uri || !product_uri) {
        free(scene_uri);
        free(product_uri);
        return urc == -2 ? -2 : -1;
    }
    return kontext_json(scene_uri, product_uri, prompt, output_format, json);
}

int sc_inputs_scene(const char *prompt, const char *aspect_ratio, int has_seed, long long seed,
                    char **json)
{
    *json = NULL;
    if (!prompt)
        return -1;
    char seed_text[32]; /* raw text: a double would round seeds above 2^53 */
    snprintf(seed_text, sizeof seed_text, "%lld", seed);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "prompt", prompt) ||
        !cJSON_AddStringToObject(o, "aspect_ratio",
                                 aspect_ratio && *aspect_ratio ? aspect_ratio : "1:1") ||
        !cJSON_AddNumberToObject(o, "num_outputs", 1) ||
        !cJSON_AddStringToObject(o, "output_format", "png") ||
        (has_seed && !cJSON_AddRawToObject(o, "seed", seed_text)) ||
        !cJSON_AddBoolToObject(o, "go_fast", true)) {
        cJSON_Delete(o);
        return -1;
    }
    return finish_json(o, json);
}
