/* Model inputs for Replicate: images become data URIs (scene JPEG q90, product PNG
 * to keep its alpha), downscaled with Lanczos when the long side exceeds
 * SC_INPUTS_MAX_SIDE. The Kontext JSON is written directly (its image strings
 * are hundreds of KB, copied once); the scene JSON is assembled with cJSON.
 * Runs on request threads; no shared state. */
#include "replicate/inputs.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/oneshot.h"
#include "image/codec.h"
#include "image/format.h"
#include "image/resize.h"
#include "replicate/base64.h"
#include "replicate/files.h"

#define SC_INPUTS_SCENE_JPEG_QUALITY 90

static const char k_default_prompt[] =
    "Place the product from the second image naturally into the scene of the first image, "
    "keeping the scene unchanged";

/* Encodes img for the model (downscaled first when needed): PNG when png, else
 * JPEG q90. Returns 0 with *enc (malloc'd), or -1. */
static int model_encode(const sc_image_t *img, bool png, uint8_t **enc, size_t *enc_len)
{
    sc_image_t small = SC_IMAGE_INIT;
    const sc_image_t *src = img;
    int rc = -1;
    *enc = NULL;
    if (!img || !img->pixels || img->width < 1 || img->height < 1)
        return -1;
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
    rc = png ? sc_codec_encode_png(src, enc, enc_len)
             : sc_codec_encode_jpeg(src, SC_INPUTS_SCENE_JPEG_QUALITY, enc, enc_len);
cleanup:
    sc_image_free(&small);
    return rc == 0 ? 0 : -1;
}

/* The Kontext input, written in one buffer sized first: the image strings
 * (data URIs of up to ~350 KB) are scanned once and copied once, instead of
 * into a cJSON object and again by its printer. Same keys, order and escaping as
 * cJSON_PrintUnformatted gave, except \b and \f (\u0008 and \u000c here). */
int sc_inputs_kontext_json(const char *scene_uri, const char *product_uri, const char *prompt,
                           const char *output_format, char **json)
{
    static const char *const keys[] = {
        "{\"prompt\":",
        ",\"input_image_1\":",
        ",\"input_image_2\":",
        ",\"aspect_ratio\":\"match_input_image\",\"output_format\":",
        ",\"safety_tolerance\":2}",
    };
    const char *vals[4] = {prompt && *prompt ? prompt : k_default_prompt, scene_uri, product_uri,
                           output_format ? output_format : "png"};
    size_t vlen[4], elen[4], klen[5], total = 1; /* the NUL */
    *json = NULL;
    if (!scene_uri || !product_uri)
        return -1;
    for (int i = 0; i < 5; i++) {
        klen[i] = strlen(keys[i]);
        total += klen[i];
        if (i < 4) {
            vlen[i] = strlen(vals[i]);
            elen[i] = sc_buf_json_str_len(vals[i], vlen[i]);
            total += elen[i];
        }
    }
    char *out = malloc(total), *p = out;
    if (!out)
        return -1;
    for (int i = 0; i < 5; i++) {
        memcpy(p, keys[i], klen[i]);
        p += klen[i];
        if (i < 4)
            p = sc_buf_json_str_write(p, vals[i], vlen[i], elen[i]);
    }
    *p = '\0';
    *json = out;
    return 0;
}

int sc_inputs_passes(const sc_inputs_file_t *f)
{
    int longest = f->width > f->height ? f->width : f->height;
    return (f->format == SC_FMT_PNG || f->format == SC_FMT_JPEG) &&
           (f->orientation == 1 || f->orientation == 0) && longest >= 1 &&
           longest <= SC_INPUTS_PASS_MAX_SIDE;
}

/* ==== Kontext inputs in two steps (no request thread waits on an upload) ==== */

struct sc_inputs_job {
    char *uri[2]; /* scene, product: the input strings known so far */
    struct {
        bool pending;
        uint8_t hash[SC_FILES_HASH_LEN];
        const char *mime;
        int fd;        /* owned: the upload's bytes at offset 0, or -1 */
        uint8_t *data; /* owned: the bytes when there is no file */
        size_t len;
    } up[2];
    char *prompt;
    char output_format[8];
    /* while running: the uploads not answered yet, plus one for the starter */
    atomic_int left;
    atomic_int failed; /* the first failure's rc (0: none) */
    char err[256];     /* written by the first failure only */
    sc_inputs_ready_fn ready;
    void *ud;
};

/* Input i of the job from encoded bytes: a string now, or an upload to run.
 * enc: bytes is our own encoding (malloc'd, taken over), else NULL and bytes
 * are the caller's, also readable at offset 0 of fd when fd >= 0. */
static int prepare_bytes(sc_inputs_job_t *j, int i, const uint8_t *bytes, size_t len,
                         const char *mime, uint8_t *enc, int fd)
{
    int r = sc_files_resolve(bytes, len, mime, j->up[i].hash, &j->uri[i]);
    if (r != 1) {
        free(enc);
        return r;
    }
    /* to upload: from the caller's file when the bytes are its own, else a copy */
    j->up[i].pending = true;
    j->up[i].mime = mime;
    j->up[i].len = len;
    j->up[i].fd = enc || fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (enc) {
        j->up[i].data = enc;
    } else if (j->up[i].fd < 0) {
        j->up[i].data = malloc(len);
        if (!j->up[i].data)
            return -1;
        memcpy(j->up[i].data, bytes, len);
    }
    return 0;
}

/* Input i from a decoded image: model_encode, PNG when png, else JPEG. */
static int prepare_image(sc_inputs_job_t *j, int i, const sc_image_t *img, bool png)
{
    uint8_t *enc = NULL;
    size_t len = 0;
    if (model_encode(img, png, &enc, &len) != 0)
        return -1;
    return prepare_bytes(j, i, enc, len, png ? "image/png" : "image/jpeg", enc, -1);
}

/* Input i from an uploaded file: as it came, or decoded and re-encoded (the
 * rule in inputs.h). */
static int prepare_one(sc_inputs_job_t *j, int i, const sc_inputs_file_t *f, bool png,
                       long long max_pixels)
{
    if (!f->bytes || f->len == 0)
        return -1;
    if (sc_inputs_passes(f))
        return prepare_bytes(j, i, f->bytes, f->len, sc_format_mime(f->format), NULL, f->fd);
    sc_image_t img = SC_IMAGE_INIT;
    int rc = sc_codec_decode(f->bytes, f->len, max_pixels, &img, NULL) == SC_CODEC_OK
                 ? prepare_image(j, i, &img, png)
                 : -1;
    sc_image_free(&img);
    return rc;
}

void sc_inputs_job_free(sc_inputs_job_t *j)
{
    if (!j)
        return;
    for (int i = 0; i < 2; i++) {
        free(j->uri[i]);
        if (j->up[i].fd >= 0)
            close(j->up[i].fd);
        free(j->up[i].data);
    }
    free(j->prompt);
    free(j);
}

/* An empty job (no input yet), or NULL. */
static sc_inputs_job_t *job_new(const char *prompt, const char *output_format)
{
    sc_inputs_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->up[0].fd = j->up[1].fd = -1;
    snprintf(j->output_format, sizeof j->output_format, "%s",
             output_format ? output_format : "png");
    if (prompt && !(j->prompt = strdup(prompt))) {
        sc_inputs_job_free(j);
        return NULL;
    }
    return j;
}

int sc_inputs_kontext_prepare(const sc_inputs_file_t *scene, const sc_inputs_file_t *product,
                              const char *prompt, const char *output_format, long long max_pixels,
                              sc_inputs_job_t **out)
{
    *out = NULL;
    sc_inputs_job_t *j = job_new(prompt, output_format);
    if (!j || prepare_one(j, 0, scene, false, max_pixels) ||
        prepare_one(j, 1, product, true, max_pixels)) {
        sc_inputs_job_free(j);
        return -1;
    }
    *out = j;
    return 0;
}

int sc_inputs_job_pending(const sc_inputs_job_t *j)
{
    return j->up[0].pending || j->up[1].pending;
}

int sc_inputs_job_json(sc_inputs_job_t *j, char **json)
{
    *json = NULL;
    int rc = -1;
    if (!sc_inputs_job_pending(j))
        rc = sc_inputs_kontext_json(j->uri[0], j->uri[1], j->prompt, j->output_format, json);
    sc_inputs_job_free(j);
    return rc;
}

/* One answer less; the last one builds the JSON and calls ready. */
static void job_step_done(sc_inputs_job_t *j)
{
    if (atomic_fetch_sub(&j->left, 1) != 1)
        return;
    sc_inputs_ready_fn ready = j->ready;
    void *ud = j->ud;
    int failed = atomic_load(&j->failed);
    if (failed) {
        char err[256];
        snprintf(err, sizeof err, "%s", j->err);
        sc_inputs_job_free(j);
        ready(failed, NULL, err, ud);
        return;
    }
    j->up[0].pending = j->up[1].pending = false;
    char *json = NULL;
    if (sc_inputs_job_json(j, &json) != 0)
        ready(-1, NULL, "out of memory", ud);
    else
        ready(0, json, NULL, ud);
}

typedef struct job_part {
    sc_inputs_job_t *j;
    int i;
} job_part_t;

static void on_part_uploaded(int rc, const char *url, const char *err, void *ud)
{
    job_part_t *p = ud;
    sc_inputs_job_t *j = p->j;
    int i = p->i;
    free(p);
    if (rc == 0 && !(j->uri[i] = strdup(url))) {
        rc = -1;
        err = "out of memory";
    }
    if (rc != 0) {
        int none = 0;
        if (atomic_compare_exchange_strong(&j->failed, &none, rc)) {
            snprintf(j->err, sizeof j->err, "%s", err ? err : "file upload failed");
            sc_log_warn("replicate: input image (%zu bytes) not usable: %s", j->up[i].len, j->err);
        }
    }
    job_step_done(j);
}

void sc_inputs_job_run(sc_inputs_job_t *j, double upload_timeout, sc_inputs_ready_fn ready,
                       void *ud)
{
    j->ready = ready;
    j->ud = ud;
    atomic_store(&j->left, 1); /* the starter's own, dropped last */
    atomic_store(&j->failed, 0);
    for (int i = 0; i < 2; i++) {
        if (!j->up[i].pending)
            continue;
        job_part_t *p = malloc(sizeof *p);
        if (!p) {
            int none = 0;
            if (atomic_compare_exchange_strong(&j->failed, &none, -1))
                snprintf(j->err, sizeof j->err, "out of memory");
            break;
        }
        *p = (job_part_t){j, i};
        atomic_fetch_add(&j->left, 1);
        int fd = j->up[i].fd;
        uint8_t *data = j->up[i].data;
        j->up[i].fd = -1; /* the upload owns its source now */
        j->up[i].data = NULL;
        sc_files_upload_start(j->up[i].hash, j->up[i].mime, fd, data, j->up[i].len, upload_timeout,
                              on_part_uploaded, p);
    }
    job_step_done(j);
}

/* ==== Blocking forms (tests, callers off the request path) ==== */

/* The blocking caller's wait for ready; lives on its stack. */
typedef struct job_wait {
    sc_oneshot_t done;
    int rc;
    char *json;
} job_wait_t;

/* ready of a blocking run: on the I/O thread, or before sc_inputs_job_run
 * returns. */
static void on_job_ready(int rc, char *json, const char *err, void *ud)
{
    job_wait_t *w = ud;
    (void)err; /* on_part_uploaded logged it */
    w->rc = rc;
    w->json = json;
    sc_oneshot_signal(&w->done);
}

/* Runs j (consumed) and waits for its JSON. Never on the I/O thread (it
 * answers the uploads); every upload ends within upload_timeout, so the wait
 * is bounded. Returns 0, -1 or -2 as sc_inputs_job_run's ready. */
static int job_wait(sc_inputs_job_t *j, double upload_timeout, char **json)
{
    job_wait_t w = {.rc = -1};
    sc_oneshot_init(&w.done);
    sc_inputs_job_run(j, upload_timeout, on_job_ready, &w);
    sc_oneshot_wait(&w.done);
    if (w.rc != 0) {
        free(w.json);
        return w.rc == -2 ? -2 : -1;
    }
    *json = w.json;
    return 0;
}

int sc_inputs_kontext(const sc_image_t *scene, const sc_image_t *product, const char *prompt,
                      char **json)
{
    return sc_inputs_kontext_ex(scene, product, prompt, SC_INPUTS_UPLOAD_TIMEOUT, json);
}

int sc_inputs_kontext_ex(const sc_image_t *scene, const sc_image_t *product, const char *prompt,
                         double upload_timeout, char **json)
{
    *json = NULL;
    sc_inputs_job_t *j = job_new(prompt, "png");
    if (!j || prepare_image(j, 0, scene, false) || prepare_image(j, 1, product, true)) {
        sc_inputs_job_free(j);
        return -1;
    }
    return job_wait(j, upload_timeout, json);
}

int sc_inputs_kontext_files(const sc_inputs_file_t *scene, const sc_inputs_file_t *product,
                            const char *prompt, const char *output_format, long long max_pixels,
                            double upload_timeout, char **json)
{
    sc_inputs_job_t *j = NULL;
    *json = NULL;
    if (sc_inputs_kontext_prepare(scene, product, prompt, output_format, max_pixels, &j) != 0)
        return -1;
    return job_wait(j, upload_timeout, json);
}

/* Serialises obj (consumed) into *json. Returns 0 or -1. */
static int finish_json(cJSON *obj, char **json)
{
    *json = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return *json ? 0 : -1;
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
