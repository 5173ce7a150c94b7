/* POST /api/scenes: generate a scene with SCENE_MODEL_ID on Replicate. The JSON
 * body is parsed with cJSON; the job runs with the connection suspended; the
 * output is decoded (untrusted), saved as OUTPUT_DIR/scenes/<id>.png and served
 * by GET /api/scenes/<id>.png.
 *
 * Scenes are paid predictions with no local fallback, so they have their own
 * caps (SCENE_MAX_CONCURRENT, SCENE_MAX_PER_HOUR, SCENE_DAILY_LIMIT) enforced by
 * the scene limiter: over a cap the answer is 429 rate_limited with Retry-After.
 * A slot is taken before the prediction is submitted and belongs to the
 * Replicate job from then on: its upstream_over gives it back once the
 * prediction no longer runs upstream, whatever happens to the client, or it is
 * given back at once when the job is never queued. As for Kontext (API.md,
 * Hardening rules): the start is on disk before the create leaves, the job
 * watches the client's socket and cancels the prediction of a client that
 * went away, and a client already gone at admission takes no slot (nor an
 * Idempotency-Key). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "compose/compose.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/ids.h"
#include "core/log.h"
#include "http/conn.h"
#include "limits/limiter.h"
#include "metrics/metrics.h"
#include "records/idempotency.h"
#include "replicate/inputs.h"

/* flux-schnell's accepted aspect ratios. */
static const char *const k_aspects[] = {"1:1", "16:9", "21:9", "3:2",  "2:3", "4:5",
                                        "5:4", "3:4",  "4:3",  "9:16", "9:21"};

static bool aspect_ok(const char *s)
{
    for (size_t i = 0; i < sizeof k_aspects / sizeof k_aspects[0]; i++)
        if (strcmp(s, k_aspects[i]) == 0)
            return true;
    return false;
}

/* The Replicate job's upstream_over (I/O thread): the prediction no longer runs
 * upstream, so its slot is free again. From the job, not the request: MHD never
 * calls the handler again for a client that went away. */
static void release_scene_slot(void *ud)
{
    sc_limits_token_t *slot = ud; /* the job's own copy of the token */
    sc_limiter_release_on(sc_limiter_scene(), slot);
    free(slot);
}

static void scene_record_end(sc_http_conn_t *c, const char *body, const char *code,
                             const char *why);

static void on_scene_done(sc_rep_result_t *res, void *ud)
{
    sc_http_conn_t *c = ud;
    if (res && res->status == SC_REP_CLIENT_GONE) {
        /* Counted here: MHD may close a reset connection without calling the
         * handler again, so scene_done may never run for it. */
        sc_metrics_scene(sc_clock_wall(), false, sc_clock_mono() - c->t_scene);
        sc_log_warn("[Scene] client went away after %.1fs id=%s prediction=%s: request dropped, "
                    "prediction cancelled upstream%s",
                    sc_clock_mono() - c->t_scene, c->id,
                    res->prediction_id[0] ? res->prediction_id : "-",
                    res->prediction_id[0] ? "" : " once its create answers");
        /* Ended here for the same reason: an Idempotency-Key repeat must not
         * see "processing" forever. */
        scene_record_end(c, NULL, "client_gone", "the client went away while the scene ran");
    }
    sc_http__resume_from_callback(c, res);
}

/* 429 rate_limited with Retry-After (whole seconds); 503 service_unavailable
 * when the limits store does not answer (a scene has no fallback, and no cap
 * may be exceeded, so nothing is started). */
static enum MHD_Result send_rate_limited(struct MHD_Connection *conn, sc_limit_result_t lr,
                                         int retry_after, const sc_limits_caps_t *caps)
{
    char msg[160];
    unsigned status = 429;
    const char *code = "rate_limited";
    switch (lr) {
    case SC_LIMIT_UNAVAILABLE:
        status = 503;
        code = "service_unavailable";
        snprintf(msg, sizeof msg, "the limits store does not answer; nothing was started");
        break;
    case SC_LIMIT_DAILY:
        snprintf(msg, sizeof msg, "scene daily limit reached (%d per UTC day)", caps->daily_limit);
        break;
    case SC_LIMIT_HOURLY:
        snprintf(msg, sizeof msg, "scene hourly limit reached (%d in any 60 minutes)",
                 caps->max_per_hour);
        break;
    case SC_LIMIT_CONCURRENCY:
    case SC_LIMIT_OK:
        snprintf(msg, sizeof msg, "too many scenes in progress (at most %d at once)",
                 caps->max_concurrent);
        break;
    }
    return sc_http__send_retry(conn, status, code, retry_after, msg);
}

/* ==== Idempotency-Key (API.md): the scene's small record ====
 *
 * A scene has no composite record; for Idempotency-Key requests its state is
 * kept in OUTPUT_DIR/scenes/<id>.json: {"id", "status": "processing"} before
 * the prediction is submitted, then the answer's fields with "status"
 * "succeeded" (or "failed" and "error"). A repeat answers that file: 200 once
 * final, 202 while processing, with Idempotent-Replayed: true. */

static void scene_record_path(const sc_http_conn_t *c, const char *id, char *out, size_t n)
{
    snprintf(out, n, "%s/scenes/%s.json", c->cfg->output_dir, id);
}

static int scene_record_write(const sc_http_conn_t *c, const char *json)
{
    char path[SC_CFG_PATH + 64];
    snprintf(path, sizeof path, "%s/scenes", c->cfg->output_dir);
    if (sc_fs_mkdirs(path) != 0)
        return -1;
    scene_record_path(c, c->id, path, sizeof path);
    return sc_fs_write_atomic(path, json, strlen(json));
}

static enum MHD_Result scene_replay(sc_http_conn_t *c, const char *id)
{
    char path[SC_CFG_PATH + 64];
    scene_record_path(c, id, path, sizeof path);
    char *txt = NULL;
    size_t len = 0;
    for (int i = 0; i < 100 && sc_fs_read_file(path, 64 * 1024, &txt, &len) != 0; i++)
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL); /* the winner writes it */
    if (!txt)
        return sc_http__send_error(c->mhd, 409, "idempotency_in_progress",
                                   "the first request with this Idempotency-Key is still "
                                   "starting; retry in a moment");
    cJSON *o = cJSON_ParseWithLength(txt, len);
    const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "status"));
    unsigned status = st && strcmp(st, "processing") == 0 ? 202 : 200;
    cJSON_Delete(o);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, txt, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(txt);
        return sc_http__send_oom(c->mhd);
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, "Idempotent-Replayed", "true");
    return sc_http__deliver(c->mhd, status, r);
}

/* The final state of an Idempotency-Key scene (body: the answer's JSON object
 * text, or NULL for a failure with error code and message why). */
static void scene_record_end(sc_http_conn_t *c, const char *body, const char *code, const char *why)
{
    if (!c->idem_fp[0])
        return;
    sc_buf_t b = SC_BUF_INIT;
    int rc;
    if (body) {
        /* {"id", ...} -> {"status": "succeeded", "id", ...} */
        rc = sc_buf_puts(&b, "{\"status\": \"succeeded\", ");
        rc |= sc_buf_puts(&b, body + 1);
    } else {
        rc = sc_buf_printf(&b, "{\"id\": \"%s\", \"status\": \"failed\", \"error\": ", c->id);
        rc |= sc_buf_printf(&b, "{\"code\": \"%s\", \"message\": ", code);
        rc |= sc_buf_json_str(&b, why);
        rc |= sc_buf_puts(&b, "}}\n");
    }
    if (rc != 0 || scene_record_write(c, b.data) != 0)
        sc_log_error("[Scene] cannot write the record of %s", c->id);
    sc_buf_free(&b);
}

/* Pool job: admission (checked only for a valid request, so a refused or
 * malformed one never holds a slot), then the prediction. c->body holds the
 * model input built by sc_http__scenes_finish. */
static void scene_start(sc_http_conn_t *c)
{
    int fd = sc_http__client_fd(c);
    if (sc_http__client_left(fd)) {
        /* Nothing is stashed, so the connection is closed and c freed. */
        sc_log_info("[Scene] client went away before the scene started: request dropped");
        return;
    }
    sc_id_new(c->id);
    const char *key = c->idem_fp[0]
                          ? MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, "Idempotency-Key")
                          : NULL;
    if (key) {
        char old_fp[SC_IDEMPOTENCY_FP_LEN + 1] = "", old_id[SC_ID_LEN + 1] = "";
        switch (sc_http__idem_claim(sc_clock_wall(), key, c->idem_fp, c->id, SC_HTTP_IDEM_TTL,
                                    old_fp, old_id)) {
        case SC_HTTP_IDEM_CLAIMED:
            break;
        case SC_HTTP_IDEM_EXISTING:
            if (strcmp(old_fp, c->idem_fp) != 0) {
                (void)sc_http__send_error(c->mhd, 422, "idempotency_conflict",
                                          "this Idempotency-Key was used with another request");
                return;
            }
            (void)scene_replay(c, old_id);
            return;
        case SC_HTTP_IDEM_INVALID:
            (void)sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                      "Idempotency-Key is not accepted by the limits store");
            return;
        case SC_HTTP_IDEM_UNAVAILABLE:
            (void)sc_http__send_busy(c->mhd, 1, "cannot record the Idempotency-Key now; retry");
            return;
        }
    }
    sc_limits_caps_t caps = {c->cfg->scene_max_concurrent, c->cfg->scene_max_per_hour,
                             c->cfg->scene_daily_limit};
    double now = sc_clock_wall();
    sc_limit_result_t lr = sc_limiter_take_on(sc_limiter_scene(), now, &caps, &c->scene_slot);
    if (lr != SC_LIMIT_OK) {
        if (key) /* nothing started: a retry with this key may run */
            sc_http__idem_forget(key);
        int wait = sc_limiter_retry_after(sc_limiter_scene(), lr, now, &caps);
        (void)send_rate_limited(c->mhd, lr, wait, &caps);
        return;
    }
    /* The job gets its own copy of the token: c may be gone by the time the
     * prediction ends upstream (release_scene_slot frees it). */
    sc_limits_token_t *slot = malloc(sizeof *slot);
    if (!slot) {
        sc_limiter_release_on(sc_limiter_scene(), &c->scene_slot);
        if (key)
            sc_http__idem_forget(key);
        (void)sc_http__send_oom(c->mhd);
        return;
    }
    *slot = c->scene_slot;
    c->scene_slot.s[0] = '\0';
    /* Write-ahead: the start (counted by the take) must be on disk before the
     * create can leave, or a crash right after it loses the count and a crash
     * loop spends past SCENE_DAILY_LIMIT. If it cannot be written, nothing is
     * sent (a scene has no fallback: the answer is 503) and the key is free. */
    if (sc_metrics_flush() != 0) {
        release_scene_slot(slot);
        if (key)
            sc_http__idem_forget(key);
        sc_log_error("[Scene] cannot persist the start count in LOGS_DIR: scene not started");
        (void)sc_http__send_error(c->mhd, 503, "service_unavailable",
                                  "cannot persist the scene start count; nothing was sent");
        return;
    }
    if (key) {
        char rec[96];
        snprintf(rec, sizeof rec, "{\"id\": \"%s\", \"status\": \"processing\"}\n", c->id);
        if (scene_record_write(c, rec) != 0) {
            release_scene_slot(slot);
            sc_http__idem_forget(key);
            (void)sc_http__send_error(c->mhd, 500, "internal_error", "cannot save the record");
            return;
        }
    }
    size_t len = 0;
    char *json = sc_buf_steal(&c->body, &len);
    c->t_scene = sc_clock_mono();
    sc_log_info("[Scene] generating id=%s model=%s", c->id, c->cfg->scene_model_id);
    /* The suspension passes to the Replicate job; from a successful submit on,
     * c belongs to the done callback and the slot to the job (upstream_over).
     * The job watches the client's socket: MHD does not while suspended. */
    sc_rep_opts_t opts = {
        .client_fd = fd, .upstream_over = release_scene_slot, .upstream_ud = slot};
    sc_http__hand_off(c);
    if (sc_replicate_submit_ex(c->cfg->scene_model_id, json, c->cfg->scene_timeout_seconds, &opts,
                               on_scene_done, c) != 0) {
        /* Not queued, so no callback will come (upstream_over neither): give
         * the slot back here. */
        release_scene_slot(slot);
        sc_rep_result_t *res = calloc(1, sizeof *res);
        if (res) {
            res->status = SC_REP_API_ERROR;
            snprintf(res->message, sizeof res->message, "cannot queue the prediction");
        }
        sc_http__resume_from_callback(c, res);
    }
}

enum MHD_Result sc_http__scenes_finish(sc_http_conn_t *c)
{
    cJSON *root = cJSON_ParseWithLength(c->body.data ? c->body.data : "", c->body.len);
    enum MHD_Result r;
    const char *key = MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, "Idempotency-Key");
    if (key && !sc_idempotency_key_valid(key, strlen(key))) {
        r = sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                "Idempotency-Key must be 1-255 printable ASCII characters");
        goto done;
    }
    if (!root || !cJSON_IsObject(root)) {
        r = sc_http__send_error(c->mhd, 400, "bad_request", "body must be a JSON object");
        goto done;
    }
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    const cJSON *aspect = cJSON_GetObjectItemCaseSensitive(root, "aspect_ratio");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "seed");
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user_id");
    if (!cJSON_IsString(prompt) || !prompt->valuestring[0]) {
        r = sc_http__send_error(c->mhd, 400, "bad_request",
                                "field 'prompt' is required (a non-empty string)");
        goto done;
    }
    const char *ar = "16:9";
    if (aspect && !cJSON_IsNull(aspect)) {
        if (!cJSON_IsString(aspect) || !aspect_ok(aspect->valuestring)) {
            r = sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                    "field 'aspect_ratio' must be one of 1:1, 16:9, 21:9, 3:2, "
                                    "2:3, 4:5, 5:4, 3:4, 4:3, 9:16, 9:21");
            goto done;
        }
        ar = aspect->valuestring;
    }
    int has_seed = 0;
    long long seed_v = 0;
    if (seed && !cJSON_IsNull(seed)) {
        double d = cJSON_IsNumber(seed) ? seed->valuedouble : NAN;
        if (!(d >= 0 && d <= 4294967295.0) || floor(d) != d) {
            r = sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                    "field 'seed' must be an integer between 0 and 4294967295");
            goto done;
        }
        has_seed = 1;
        seed_v = (long long)d;
    }
    if (user && !cJSON_IsNull(user) && !cJSON_IsString(user)) {
        r = sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                "field 'user_id' must be a string");
        goto done;
    }
    if (c->cfg->replicate_api_token[0] == '\0') {
        r = sc_http__send_error(c->mhd, 503, "service_unavailable",
                                "scene generation needs REPLICATE_API_TOKEN");
        goto done;
    }
    if (key &&
        sc_idempotency_fp_json("POST /api/scenes", c->body.data, c->body.len, c->idem_fp) != 0) {
        r = sc_http__send_oom(c->mhd);
        goto done;
    }
    char *json = NULL;
    if (sc_inputs_scene(prompt->valuestring, ar, has_seed, seed_v, &json) != 0) {
        r = sc_http__send_oom(c->mhd);
        goto done;
    }
    /* The model input replaces the body (c owns and frees it on every path);
     * admission and submit run on the compute pool, where a limits store may
     * take a round trip without holding an HTTP thread. */
    sc_buf_free(&c->body);
    int rc = sc_buf_puts(&c->body, json);
    free(json);
    if (rc != 0) {
        r = sc_http__send_oom(c->mhd);
        goto done;
    }
    cJSON_Delete(root);
    return sc_http__offload(c, scene_start); /* c->body is the job's now */
done:
    cJSON_Delete(root);
    sc_buf_free(&c->body);
    return r;
}

static enum MHD_Result scene_done(sc_http_conn_t *c)
{
    sc_rep_result_t *res = c->result;
    double secs = sc_clock_mono() - c->t_scene;
    const char *why = !res              ? "cannot queue the prediction"
                      : res->message[0] ? res->message
                                        : sc_replicate_status_name(res->status);
    if (res && res->status == SC_REP_CLIENT_GONE)
        return MHD_NO; /* nobody to answer (counted and logged by the callback) */
    if (!res || res->status != SC_REP_OK) {
        sc_metrics_scene(sc_clock_wall(), false, secs);
        sc_log_warn("[Scene] generation failed id=%s: %s", c->id, why);
        scene_record_end(c, NULL, "upstream_error", why);
        return sc_http__send_error(c->mhd, 502, "upstream_error", "%s", why);
    }
    sc_image_t img = SC_IMAGE_INIT;
    const char *err = NULL;
    uint8_t *png = NULL;
    size_t len = 0;
    enum MHD_Result r;
    if (sc_codec_decode(res->output, res->output_len, c->cfg->max_image_pixels, &img, &err) !=
        SC_CODEC_OK) {
        sc_metrics_scene(sc_clock_wall(), false, secs);
        sc_log_warn("[Scene] generation failed id=%s: output is not an image (%s)", c->id,
                    err ? err : "-");
        scene_record_end(c, NULL, "upstream_error", "model output is not a PNG or JPEG image");
        r = sc_http__send_error(c->mhd, 502, "upstream_error",
                                "model output is not a PNG or JPEG image");
        goto cleanup;
    }
    char dir[SC_CFG_PATH + 16];
    snprintf(dir, sizeof dir, "%s/scenes", c->cfg->output_dir);
    if (sc_codec_encode_png(&img, &png, &len) != 0 ||
        sc_compose_save(dir, c->id, SC_FMT_PNG, png, len) != 0) {
        sc_metrics_scene(sc_clock_wall(), false, secs);
        sc_log_error("[Scene] cannot save scene %s", c->id);
        scene_record_end(c, NULL, "internal_error", "cannot save the scene");
        r = sc_http__send_error(c->mhd, 500, "internal_error", "cannot save the scene");
        goto cleanup;
    }
    secs = sc_clock_mono() - c->t_scene;
    sc_metrics_scene(sc_clock_wall(), true, secs);
    sc_log_info("[Scene] saved id=%s seconds=%.2f", c->id, secs);
    sc_buf_t b = SC_BUF_INIT;
    int rc = sc_buf_printf(&b,
                           "{\"id\": \"%s\", \"image_url\": \"/api/scenes/%s.png\", "
                           "\"width\": %d, \"height\": %d, \"duration_seconds\": ",
                           c->id, c->id, img.width, img.height);
    rc |= sc_buf_json_num(&b, round(secs * 1000.0) / 1000.0);
    rc |= sc_buf_puts(&b, "}");
    if (rc != 0) {
        sc_buf_free(&b);
        r = sc_http__send_oom(c->mhd);
        goto cleanup;
    }
    scene_record_end(c, b.data, NULL, NULL);
    r = sc_http__send_json(c->mhd, 200, &b);
cleanup:
    free(png);
    sc_image_free(&img);
    return r;
}

void sc_http__scenes_done(sc_http_conn_t *c)
{
    (void)scene_done(c);
}
