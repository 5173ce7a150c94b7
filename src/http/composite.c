/* POST /api/composite: multipart upload -> validation -> decode -> policy ->
 * PIL, or Kontext (limiter, Replicate job with the connection suspended) with
 * automatic fallback to PIL -> save -> JSON or image answer.
 *
 * Multipart: http/multipart.c parses the stream; every field is
 * buffered (files up to MAX_UPLOAD_BYTES, which bounds the whole body, text
 * fields up to SC_HTTP_MAX_TEXT_FIELD). Unknown fields are ignored. A repeated
 * field: the last occurrence wins. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "compose/compose.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "http/conn.h"
#include "http/multipart.h"
#include "image/resize.h"
#include "limits/limiter.h"
#include "limits/pacing.h"
#include "metrics/metrics.h"
#include "replicate/breaker.h"
#include "replicate/inputs.h"

/* ==== Upload ==== */

static void refuse(sc_http_conn_t *c, int status, const char *code, const char *msg)
{
    if (c->refused)
        return;
    c->refused = true;
    c->refused_status = status;
    c->refused_code = code;
    snprintf(c->refused_msg, sizeof c->refused_msg, "%s", msg);
}

static sc_http_field_t *field_for(sc_http_conn_t *c, const char *key, bool *is_file)
{
    static const struct {
        const char *name;
        size_t off;
        bool file;
    } fields[] = {
        {"scene", offsetof(sc_http_conn_t, f_scene), true},
        {"product", offsetof(sc_http_conn_t, f_product), true},
        {"prompt", offsetof(sc_http_conn_t, f_prompt), false},
        {"user_id", offsetof(sc_http_conn_t, f_user_id), false},
        {"x", offsetof(sc_http_conn_t, f_x), false},
        {"y", offsetof(sc_http_conn_t, f_y), false},
        {"scale", offsetof(sc_http_conn_t, f_scale), false},
        {"format", offsetof(sc_http_conn_t, f_format), false},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (strcmp(key, fields[i].name) == 0) {
            *is_file = fields[i].file;
            return (sc_http_field_t *)((char *)c + fields[i].off);
        }
    }
    return NULL;
}

static int on_field(void *cls, const char *key, const char *data, size_t size, bool first)
{
    sc_http_conn_t *c = cls;
    if (c->refused)
        return 0;
    bool is_file = false;
    sc_http_field_t *f = field_for(c, key, &is_file);
    if (!f)
        return 0; /* unknown fields are ignored */
    if (first) {
        sc_buf_reset(&f->data); /* a repeated field: the last one wins */
        f->present = true;
    }
    if (!is_file && f->data.len + size > SC_HTTP_MAX_TEXT_FIELD) {
        char msg[128];
        snprintf(msg, sizeof msg, "field '%s' is longer than %d bytes", key,
                 SC_HTTP_MAX_TEXT_FIELD);
        refuse(c, 400, "invalid_parameter", msg);
        return 0;
    }
    if (size > 0 && sc_buf_append(&f->data, data, size) != 0) {
        refuse(c, 500, "internal_error", "out of memory while reading the upload");
        return -1;
    }
    return 0;
}

enum MHD_Result sc_http__composite_begin(sc_http_conn_t *c)
{
    const char *ct =
        MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "multipart/form-data", strlen("multipart/form-data")) != 0) {
        c->stage = SC_STAGE_DONE;
        return sc_http__send_error(c->mhd, 415, "unsupported_media_type",
                                   "content type must be multipart/form-data, got '%s'",
                                   ct ? ct : "(none)");
    }
    char boundary[SC_MULTIPART_MAX_BOUNDARY + 1];
    if (sc_multipart_boundary(ct, boundary, sizeof boundary) == 0)
        c->mp = sc_multipart_new(boundary, on_field, c);
    if (!c->mp) {
        c->stage = SC_STAGE_DONE;
        return sc_http__send_error(c->mhd, 400, "bad_request",
                                   "malformed multipart/form-data content type (no boundary?)");
    }
    return MHD_YES;
}

enum MHD_Result sc_http__composite_data(sc_http_conn_t *c, const char *data, size_t size)
{
    long long limit = c->cfg->max_upload_bytes;
    if (c->body_bytes > limit) {
        /* A chunked upload went over the limit (an announced one was refused
         * before its first byte). MHD 0.9.75 cannot queue an answer in the
         * middle of a body, so: stop buffering at once, drop what arrives for a
         * little while so a client slightly over the limit still reads a 413,
         * and cut the connection when it keeps sending. */
        if (!c->refused || c->refused_status != 413) {
            sc_buf_free(&c->f_scene.data);
            sc_buf_free(&c->f_product.data);
            c->refused = false;
            char msg[160];
            snprintf(msg, sizeof msg, "request body is over the limit of %lld bytes", limit);
            refuse(c, 413, "payload_too_large", msg);
        }
        if (c->body_bytes - limit > SC_HTTP_DRAIN_BYTES) {
            sc_log_warn(
                "http: upload over MAX_UPLOAD_BYTES (%lld) still streaming; connection closed",
                limit);
            return MHD_NO;
        }
        return MHD_YES;
    }
    if (c->refused)
        return MHD_YES;
    if (sc_multipart_feed(c->mp, data, size) != 0)
        refuse(c, 400, "bad_request", "malformed multipart/form-data body");
    return MHD_YES;
}

/* ==== Answers ==== */

/* Which answer the client wants: an image type in Accept (the first of
 * application/json, a type in the format table (image/format.h) or image/(any)
 * listed wins). *fmt is set for a listed format, left alone for image/(any). */
static bool accept_image(struct MHD_Connection *conn, sc_image_format_t *fmt)
{
    const char *acc = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    if (!acc)
        return false;
    const char *p = acc;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        size_t n = strcspn(p, ",;");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == 16 && strncasecmp(p, "application/json", n) == 0)
            return false;
        const sc_format_t *f = sc_format_by_mime(p, n);
        if (f) {
            *fmt = f->id;
            return true;
        }
        if (n == 7 && strncasecmp(p, "image/*", n) == 0)
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

typedef struct answer {
    const char *method; /* "pil" | "kontext" */
    bool requested_kontext;
    bool fallback;
    const char *fallback_reason; /* NULL when none */
    int width, height;
} answer_t;

/* Sends the composite: the image itself (takes ownership of bytes) or the JSON. */
static enum MHD_Result send_answer(sc_http_conn_t *c, const answer_t *a, uint8_t *bytes, size_t len)
{
    double secs = sc_clock_mono() - c->t_start;
    /* The policy generation whose decision and effective config served this
     * request (one generation per request: ops and tests can check that). */
    char version[24];
    snprintf(version, sizeof version, "%lld", c->eff.version);
    if (c->want_image) {
        struct MHD_Response *r = MHD_create_response_from_buffer(len, bytes, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(bytes);
            return sc_http__send_oom(c->mhd);
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, sc_format_mime(c->format));
        MHD_add_response_header(r, "X-Composite-Id", c->id);
        MHD_add_response_header(r, "X-Composite-Method", a->method);
        MHD_add_response_header(r, "X-Composite-Fallback", a->fallback ? "true" : "false");
        if (a->fallback_reason)
            MHD_add_response_header(r, "X-Composite-Fallback-Reason", a->fallback_reason);
        MHD_add_response_header(r, "X-Policy-Version", version);
        return sc_http__deliver(c->mhd, 200, r);
    }
    free(bytes);
    sc_buf_t b = SC_BUF_INIT;
    int rc = sc_buf_printf(&b,
                           "{\"id\": \"%s\", \"method\": \"%s\", \"requested_method\": \"%s\", "
                           "\"fallback\": %s, \"fallback_reason\": ",
                           c->id, a->method, a->requested_kontext ? "kontext" : "pil",
                           a->fallback ? "true" : "false");
    rc |= sc_buf_json_str(&b, a->fallback_reason);
    rc |= sc_buf_puts(&b, ", \"duration_seconds\": ");
    rc |= sc_buf_json_num(&b, round(secs * 1000.0) / 1000.0);
    rc |= sc_buf_printf(&b,
                        ", \"width\": %d, \"height\": %d, \"format\": \"%s\", "
                        "\"image_url\": \"/api/composites/%s.%s\"}",
                        a->width, a->height, sc_format_name(c->format), c->id,
                        sc_format_ext(c->format));
    if (rc != 0 || sc_buf_puts(&b, "\n") != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(c->mhd);
    }
    size_t blen = 0;
    char *body = sc_buf_steal(&b, &blen);
    struct MHD_Response *r = MHD_create_response_from_buffer(blen, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return sc_http__send_oom(c->mhd);
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, "X-Policy-Version", version);
    return sc_http__deliver(c->mhd, 200, r);
}

/* ==== PIL ==== */

/* Composites with PIL and answers. fallback_reason is NULL for a request routed
 * to PIL, else the reason it fell back (already counted and logged). */
static enum MHD_Result run_pil(sc_http_conn_t *c, bool requested_kontext,
                               const char *fallback_reason)
{
    double t0 = sc_clock_mono();
    uint8_t *out = NULL;
    size_t len = 0;
    const char *err = NULL;
    int w = c->scene.width, h = c->scene.height;
    if (sc_compose_pil(&c->scene, &c->product, &c->params, c->format, &out, &len, &err) != 0) {
        sc_metrics_pil(sc_clock_wall(), false, sc_clock_mono() - t0);
        sc_log_error("PIL composite failed id=%s: %s", c->id, err ? err : "unknown error");
        return sc_http__send_error(c->mhd, 500, "internal_error", "composite failed: %s",
                                   err ? err : "unknown error");
    }
    if (sc_compose_save(c->cfg->output_dir, c->id, c->format, out, len) != 0) {
        free(out);
        sc_metrics_pil(sc_clock_wall(), false, sc_clock_mono() - t0);
        sc_log_error("cannot save composite %s in %s", c->id, c->cfg->output_dir);
        return sc_http__send_error(c->mhd, 500, "internal_error", "cannot save the composite");
    }
    double secs = sc_clock_mono() - t0;
    sc_metrics_pil(sc_clock_wall(), true, secs);
    sc_log_info("Using PIL composite method id=%s duration=%.3fs%s%s", c->id, secs,
                fallback_reason ? " fallback_reason=" : "", fallback_reason ? fallback_reason : "");
    answer_t a = {"pil", requested_kontext, fallback_reason != NULL, fallback_reason, w, h};
    return send_answer(c, &a, out, len);
}

/* A Kontext request that ends with PIL: count, log the two phrases ops grep,
 * composite. */
static enum MHD_Result fall_back(sc_http_conn_t *c, sc_fallback_reason_t r, const char *detail)
{
    const char *name = sc_fallback_reason_name(r);
    sc_metrics_fallback(sc_clock_wall(), r);
    sc_log_warn("[Kontext Composite] Kontext failed: %s%s%s%s id=%s", name, detail ? " (" : "",
                detail ? detail : "", detail ? ")" : "", c->id);
    sc_log_warn("[Kontext Composite] falling back to PIL id=%s reason=%s", c->id, name);
    return run_pil(c, true, name);
}

/* ==== Kontext ==== */

/* ---- Outage protection (issue 11): pacing and the circuit breaker ---- */

static void breaker_params_of(const sc_policy_effective_t *e, sc_breaker_params_t *p)
{
    *p = (sc_breaker_params_t){e->breaker_enabled,      e->breaker_failure_rate,
                               e->breaker_min_calls,    e->breaker_window_seconds,
                               e->breaker_open_seconds, e->breaker_half_open_calls};
}

/* Before the limiter: pacing, then the breaker. Returns SC_FB__COUNT when the
 * start may go on (c->breaker_ticket then holds the breaker's ticket), else the
 * fallback reason. */
static sc_fallback_reason_t outage_gate(sc_http_conn_t *c, double now)
{
    if (c->eff.pacing) {
        sc_limits_counts_t counts = {0, 0, 0};
        sc_limiter_counts(now, &counts);
        if (!sc_pacing_admit(counts.today, c->eff.daily_limit, now))
            return SC_FB_BUDGET_PACING;
    }
    sc_breaker_params_t bp;
    breaker_params_of(&c->eff, &bp);
    if (!sc_breaker_admit(sc_breaker_global(), &bp, now, &c->breaker_ticket))
        return SC_FB_CIRCUIT_OPEN;
    return SC_FB__COUNT;
}

/* The breaker's view of a finished prediction: timeout, api_error and
 * invalid_output are failures, a success is a success, anything else (no
 * token, SC_REP_CLIENT_GONE, ...) is no outcome. Any thread. */
static void breaker_finish(sc_http_conn_t *c, sc_rep_status_t st)
{
    double now = sc_clock_wall();
    switch (st) {
    case SC_REP_OK:
        sc_breaker_record(sc_breaker_global(), &c->breaker_ticket, SC_BREAKER_SUCCESS, now);
        break;
    case SC_REP_TIMEOUT:
    case SC_REP_API_ERROR:
    case SC_REP_INVALID_OUTPUT:
        sc_breaker_record(sc_breaker_global(), &c->breaker_ticket, SC_BREAKER_FAILURE, now);
        break;
    default:
        sc_breaker_release(sc_breaker_global(), &c->breaker_ticket, now);
        break;
    }
}

/* The Replicate job's upstream_over: the prediction no longer runs upstream,
 * so its slot goes back. It comes from the job, not from the request, because
 * MHD never calls the handler again for a client that went away (issue 8). */
static void release_slot(void *ud)
{
    sc_limits_token_t *slot = ud; /* the job's own copy of the token */
    sc_limiter_release(slot);
    free(slot);
}

static void on_kontext_done(sc_rep_result_t *res, void *ud)
{
    sc_http_conn_t *c = ud;
    if (res && res->status == SC_REP_CLIENT_GONE) {
        /* Not an outcome: the ticket goes back now (a half-open trial frees
         * its slot), since MHD may never run kontext_done for this request. */
        breaker_finish(c, SC_REP_CLIENT_GONE);
        sc_log_warn("[Kontext Composite] client went away after %.1fs id=%s prediction=%s: "
                    "request dropped, prediction cancelled upstream%s",
                    sc_clock_mono() - c->t_kontext, c->id,
                    res->prediction_id[0] ? res->prediction_id : "-",
                    res->prediction_id[0] ? "" : " once its create answers");
    }
    sc_http__resume_from_callback(c, res);
}

static enum MHD_Result start_kontext(sc_http_conn_t *c)
{
    if (c->cfg->replicate_api_token[0] == '\0')
        return fall_back(c, SC_FB_NO_TOKEN, "REPLICATE_API_TOKEN is not set");
    int fd = sc_http__client_fd(c);
    if (sc_http__client_left(fd)) {
        /* Nothing is answered (the pool job stashes no response), so the
         * connection is closed and the context freed. */
        sc_log_info("[Kontext Composite] client went away before Kontext started id=%s: "
                    "request dropped",
                    c->id);
        return MHD_NO;
    }

    sc_fallback_reason_t gate = outage_gate(c, sc_clock_wall()); /* issue 11 */
    if (gate != SC_FB__COUNT)
        return fall_back(c, gate,
                         gate == SC_FB_CIRCUIT_OPEN ? "circuit breaker open, no prediction created"
                                                    : "budget pacing holds back this start");

    sc_limits_caps_t caps = {c->eff.max_concurrent, c->eff.max_per_hour, c->eff.daily_limit};
    sc_limit_result_t lr = sc_limiter_take(sc_clock_wall(), &caps, &c->limiter_slot);
    if (lr != SC_LIMIT_OK) {
        sc_breaker_release(sc_breaker_global(), &c->breaker_ticket, sc_clock_wall());
        return fall_back(c, sc_fallback_reason_for_limit(lr),
                         lr == SC_LIMIT_UNAVAILABLE ? "the limits store does not answer"
                                                    : "refused by the rate limiter");
    }
    c->limiter_held = true;
    sc_metrics_kontext_started(sc_clock_wall());
    /* Write-ahead: the start is counted (take) and must be on disk before the
     * create can leave, or a crash right after the create loses it and a crash
     * loop spends past the daily limit. The metrics file carries the limiter
     * state; a synchronous flush costs a small write and two fsyncs per
     * prediction (docs/operations.md). If it cannot be written, nothing is sent. */
    if (sc_metrics_flush() != 0) {
        sc_limiter_release(&c->limiter_slot);
        c->limiter_held = false;
        sc_breaker_release(sc_breaker_global(), &c->breaker_ticket, sc_clock_wall());
        sc_metrics_kontext_finished(sc_clock_wall(), SC_KONTEXT_FAILURE, 0.0);
        return fall_back(c, SC_FB_API_ERROR, "cannot persist the start count in LOGS_DIR");
    }

    /* The job gets its own copy of the token: c may be gone by the time the
     * prediction ends upstream (release_slot frees it). */
    sc_limits_token_t *slot = malloc(sizeof *slot);
    char *json = NULL;
    const char *prompt = c->f_prompt.present ? c->f_prompt.data.data : NULL;
    /* issue 11: large images go through the Files API (an upload failure is an api_error) */
    int irc =
        slot ? sc_inputs_kontext_ex(&c->scene, &c->product, prompt, c->eff.timeout_seconds, &json)
             : -1;
    if (irc != 0) {
        free(slot);
        sc_limiter_release(&c->limiter_slot);
        c->limiter_held = false;
        if (irc == -2)
            breaker_finish(c, SC_REP_API_ERROR);
        else
            sc_breaker_release(sc_breaker_global(), &c->breaker_ticket, sc_clock_wall());
        sc_metrics_kontext_finished(sc_clock_wall(), SC_KONTEXT_FAILURE, 0.0);
        return fall_back(c, SC_FB_API_ERROR,
                         irc == -2 ? "input upload to the Files API failed"
                                   : "cannot build the model input");
    }
    c->t_kontext = sc_clock_mono();
    sc_log_info("[Kontext Composite] submitting id=%s model=%s timeout=%.0fs", c->id,
                c->eff.model_id, c->eff.timeout_seconds);
    /* The suspension of this pool job passes to the Replicate job; from the
     * successful submit on, c belongs to the done callback and the slot to the
     * job (upstream_over). The job watches the client's socket: MHD does not
     * while the connection is suspended. */
    *slot = c->limiter_slot;
    c->limiter_slot.s[0] = '\0';
    c->limiter_held = false;
    sc_rep_opts_t opts = {.client_fd = fd, .upstream_over = release_slot, .upstream_ud = slot};
    sc_http__hand_off(c);
    if (sc_replicate_submit_ex(c->eff.model_id, json, c->eff.timeout_seconds, &opts,
                               on_kontext_done, c) != 0) {
        /* Not queued, so no callback will come (upstream_over neither): give
         * the slot back and resume ourselves with a failure. */
        release_slot(slot);
        sc_rep_result_t *res = calloc(1, sizeof *res);
        if (res) {
            res->status = SC_REP_API_ERROR;
            snprintf(res->message, sizeof res->message, "cannot queue the prediction");
        }
        sc_http__resume_from_callback(c, res);
    }
    return MHD_YES;
}

/* The Kontext output as the final image: decoded, at the scene's size, encoded.
 * Returns 0, or -1 with a message (the output counts as invalid). */
static int kontext_output(sc_http_conn_t *c, const sc_rep_result_t *res, uint8_t **out, size_t *len,
                          const char **err)
{
    sc_image_t img = SC_IMAGE_INIT, sized = SC_IMAGE_INIT;
    int rc = -1;
    if (sc_codec_decode(res->output, res->output_len, c->cfg->max_image_pixels, &img, err) !=
        SC_CODEC_OK) {
        goto cleanup;
    }
    const sc_image_t *final = &img;
    if (img.width != c->scene.width || img.height != c->scene.height) {
        if (sc_resize_lanczos(&img, c->scene.width, c->scene.height, &sized) != 0) {
            *err = "cannot resize the output to the scene size";
            goto cleanup;
        }
        final = &sized;
    }
    if (sc_format_encode(c->format, final, 0, out, len) != 0) {
        *err = "cannot encode the output";
        goto cleanup;
    }
    rc = 0;
cleanup:
    sc_image_free(&sized);
    sc_image_free(&img);
    return rc;
}

/* Pool job: the end of a Kontext job (result in c->result). */
static enum MHD_Result kontext_done(sc_http_conn_t *c)
{
    if (c->limiter_held) {
        sc_limiter_release(&c->limiter_slot);
        c->limiter_held = false;
    }
    sc_rep_result_t *res = c->result;
    double secs = sc_clock_mono() - c->t_kontext;
    sc_rep_status_t st = res ? res->status : SC_REP_API_ERROR;
    if (st == SC_REP_CLIENT_GONE) {
        breaker_finish(c, st); /* no outcome; already given back by the callback */
        return MHD_NO; /* nobody to answer (logged by the callback): the connection closes */
    }
    const char *msg = res && res->message[0] ? res->message : NULL;
    const char *err = NULL;

    if (st == SC_REP_OK) {
        uint8_t *out = NULL;
        size_t len = 0;
        int orc = kontext_output(c, res, &out, &len, &err);
        breaker_finish(c, orc == 0 ? SC_REP_OK : SC_REP_INVALID_OUTPUT); /* issue 11 */
        if (orc == 0) {
            if (sc_compose_save(c->cfg->output_dir, c->id, c->format, out, len) != 0) {
                free(out);
                sc_metrics_kontext_finished(sc_clock_wall(), SC_KONTEXT_FAILURE, secs);
                sc_log_error("cannot save composite %s in %s", c->id, c->cfg->output_dir);
                return sc_http__send_error(c->mhd, 500, "internal_error",
                                           "cannot save the composite");
            }
            sc_metrics_kontext_finished(sc_clock_wall(), SC_KONTEXT_SUCCESS, secs);
            sc_log_info("[Kontext Composite] Composite saved id=%s seconds=%.2f prediction=%s",
                        c->id, secs, res->prediction_id);
            answer_t a = {"kontext", true, false, NULL, c->scene.width, c->scene.height};
            return send_answer(c, &a, out, len);
        }
        st = SC_REP_INVALID_OUTPUT;
        msg = err ? err : "output does not decode as an image";
    }

    breaker_finish(c, st); /* issue 11 (no-op when already recorded above) */
    sc_fallback_reason_t reason = sc_fallback_reason_for_replicate(st);
    const char *reason_name = sc_fallback_reason_name(reason);
    sc_metrics_kontext_finished(
        sc_clock_wall(), st == SC_REP_TIMEOUT ? SC_KONTEXT_TIMEOUT : SC_KONTEXT_FAILURE, secs);
    if (st == SC_REP_TIMEOUT) {
        sc_log_warn("[Kontext Composite] Kontext timeout after %.1fs id=%s prediction=%s "
                    "(cancelled upstream)",
                    secs, c->id, res && res->prediction_id[0] ? res->prediction_id : "-");
    }
    if (sc_policy_on_kontext_error(&c->eff, reason_name, msg ? msg : reason_name, &c->preq)) {
        sc_log_warn("[Kontext Composite] Kontext failed: %s (%s) id=%s; policy says fail",
                    reason_name, msg ? msg : "-", c->id);
        return sc_http__send_error(c->mhd, 502, "upstream_error", "%s", msg ? msg : reason_name);
    }
    return fall_back(c, reason, msg);
}

/* ==== The request ==== */

/* Answers a refusal of the uploaded images (sc_compose_decode). */
static enum MHD_Result image_error(sc_http_conn_t *c, const sc_compose_refusal_t *why)
{
    if (why->status == SC_CODEC_TOO_LARGE)
        return sc_http__send_error(c->mhd, 413, "image_too_large", "%s", why->message);
    if (why->status == SC_CODEC_NOMEM)
        return sc_http__send_error(c->mhd, 503, "service_unavailable", "%s", why->message);
    return sc_http__send_error(c->mhd, 400, "invalid_image", "%s", why->message);
}

static enum MHD_Result param_number(sc_http_conn_t *c, const sc_http_field_t *f, const char *name,
                                    double *out, bool *bad)
{
    if (!f->present)
        return MHD_YES;
    if (sc_compose_parse_number(f->data.data ? f->data.data : "", out) != 0) {
        *bad = true;
        return sc_http__send_error(c->mhd, 400, "invalid_parameter", "field '%s' must be a number",
                                   name);
    }
    return MHD_YES;
}

enum MHD_Result sc_http__composite_finish(sc_http_conn_t *c)
{
    if (c->mp) {
        int complete = sc_multipart_finish(c->mp);
        sc_multipart_free(c->mp);
        c->mp = NULL;
        if (c->refused)
            return sc_http__send_error(c->mhd, (unsigned)c->refused_status, c->refused_code, "%s",
                                       c->refused_msg);
        if (complete != 0)
            return sc_http__send_error(c->mhd, 400, "bad_request",
                                       "malformed or truncated multipart/form-data body");
    }
    return sc_http__offload(c, sc_http__composite_process);
}

/* Pool job: everything after the upload. */
static enum MHD_Result process(sc_http_conn_t *c)
{
    if (!c->f_scene.present)
        return sc_http__send_error(c->mhd, 400, "bad_request", "field 'scene' is required");
    if (!c->f_product.present)
        return sc_http__send_error(c->mhd, 400, "bad_request", "field 'product' is required");

    /* Parameters first: cheap, and a bad one should not cost a decode. */
    c->params = (sc_place_params_t){0.5, 0.6, 0.4};
    bool bad = false;
    enum MHD_Result r = param_number(c, &c->f_x, "x", &c->params.x, &bad);
    if (!bad)
        r = param_number(c, &c->f_y, "y", &c->params.y, &bad);
    if (!bad)
        r = param_number(c, &c->f_scale, "scale", &c->params.scale, &bad);
    if (bad)
        return r;
    char perr[160];
    if (sc_compose_check_params(&c->params, perr, sizeof perr) != 0)
        return sc_http__send_error(c->mhd, 400, "invalid_parameter", "%s", perr);
    c->format = SC_FMT_PNG;
    sc_image_format_t accept_fmt = SC_FMT_UNKNOWN;
    c->want_image = accept_image(c->mhd, &accept_fmt);
    if (c->f_format.present) {
        const sc_format_t *f = sc_format_by_name(c->f_format.data.data);
        if (!f)
            return sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                       "field 'format' must be 'png' or 'jpeg'");
        c->format = f->id;
    } else if (accept_fmt != SC_FMT_UNKNOWN) {
        c->format = accept_fmt; /* no explicit format: Accept picks it */
    }

    /* Headers, the placement's working limits, then the decodes (compose.h). */
    sc_compose_refusal_t why;
    if (sc_compose_decode((const uint8_t *)c->f_scene.data.data, c->f_scene.data.len,
                          (const uint8_t *)c->f_product.data.data, c->f_product.data.len,
                          c->cfg->max_image_pixels, &c->params, &c->scene, &c->product, &why) != 0)
        return image_error(c, &why);
    sc_buf_free(&c->f_scene.data); /* the encoded uploads are not needed any more */
    sc_buf_free(&c->f_product.data);

    sc_id_new(c->id);
    c->preq = (sc_policy_req_t){
        .user_id = c->f_user_id.present ? c->f_user_id.data.data : NULL,
        .prompt = c->f_prompt.present ? c->f_prompt.data.data : NULL,
        .scene_w = c->scene.width,
        .scene_h = c->scene.height,
        .scene_alpha = c->scene.channels == 4,
        .product_w = c->product.width,
        .product_h = c->product.height,
        .product_alpha = c->product.channels == 4,
    };
    /* Empty strings are absent values for the policy (curl -F user_id= ...). */
    if (c->preq.user_id && !c->preq.user_id[0])
        c->preq.user_id = NULL;
    if (c->preq.prompt && !c->preq.prompt[0])
        c->preq.prompt = NULL;
    sc_route_t route = sc_policy_route(&c->preq, &c->eff);
    sc_metrics_request(sc_clock_wall(), route == SC_ROUTE_KONTEXT);
    if (route == SC_ROUTE_KONTEXT)
        return start_kontext(c);
    return run_pil(c, false, NULL);
}

void sc_http__composite_process(sc_http_conn_t *c)
{
    (void)process(c);
}

void sc_http__composite_kontext_done(sc_http_conn_t *c)
{
    (void)kontext_done(c);
}
