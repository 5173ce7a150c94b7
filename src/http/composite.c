/* POST /api/composite: multipart upload -> validation -> decode -> policy ->
 * PIL, or Kontext (limiter, Replicate job with the connection suspended) with
 * automatic fallback to PIL -> save -> JSON or image answer.
 *
 * Multipart: http/multipart.c parses the stream; every field is
 * buffered (files up to MAX_UPLOAD_BYTES, which bounds the whole body, text
 * fields up to SC_HTTP_MAX_TEXT_FIELD). Unknown fields are ignored. A repeated
 * field: the last occurrence wins. A file field over UPLOAD_SPOOL_BYTES moves
 * to a spool file (core/spool.h) while it streams in; its bytes are mapped
 * only while a pool job reads them (uploads_hold / uploads_release). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "compose/compose.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/ids.h"
#include "core/log.h"
#include "http/conn.h"
#include "http/multipart.h"
#include "image/check.h"
#include "image/icc.h"
#include "image/pcache.h"
#include "image/resize.h"
#include "limits/limiter.h"
#include "limits/pacing.h"
#include "metrics/metrics.h"
#include "records/idempotency.h"
#include "replicate/breaker.h"
#include "replicate/inputs.h"
#include "webhooks/webhook.h"

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

/* ==== Spooled uploads (issue 11, memory) ==== */

/* The bytes of a file field: its heap buffer, or its spool's mapping. A
 * spooled field reads as NULL while not held, so every reader runs between
 * uploads_hold and uploads_release. */
static const uint8_t *field_bytes(const sc_http_field_t *f)
{
    return f->spool ? sc_spool_data(f->spool) : (const uint8_t *)f->data.data;
}

static size_t field_len(const sc_http_field_t *f)
{
    return f->spool ? sc_spool_size(f->spool) : f->data.len;
}

/* Drops a file field's bytes, wherever they are (closing a spool removes
 * its file). */
static void file_drop(sc_http_field_t *f)
{
    sc_buf_free(&f->data);
    sc_spool_free(f->spool);
    f->spool = NULL;
}

/* Appends to a field that passed UPLOAD_SPOOL_BYTES: the first time, moves
 * what the heap buffered to a new spool file in OUTPUT_DIR. Returns 0, or -1
 * with the field dropped (no file left) and the request refused with a 503:
 * a full disk fails this upload, never the process. */
static int spool_append(sc_http_conn_t *c, sc_http_field_t *f, const char *key, const char *data,
                        size_t size)
{
    if (!f->spool) {
        f->spool = sc_spool_new(c->cfg->output_dir);
        if (!f->spool || sc_spool_append(f->spool, f->data.data, f->data.len) != 0)
            goto fail;
        sc_buf_free(&f->data);
    }
    if (sc_spool_append(f->spool, data, size) == 0)
        return 0;
fail:;
    int e = errno;
    file_drop(f);
    sc_log_error("http: cannot spool field '%s' in OUTPUT_DIR '%s': %s", key, c->cfg->output_dir,
                 strerror(e));
    char msg[192];
    snprintf(msg, sizeof msg, "cannot store the upload of field '%s': %s", key, strerror(e));
    refuse(c, 503, "service_unavailable", msg);
    return -1;
}

/* Makes the spooled uploads (scene, product, mask) readable for the rest of
 * this pool job; heap ones need nothing. Held at most once: a second call is
 * a no-op, so the job reads each spool file once whichever way it goes
 * (route, then PIL or the Kontext input). Returns 0, or -1 with errno and
 * nothing held. */
static int uploads_hold(sc_http_conn_t *c)
{
    if (c->uploads_held)
        return 0;
    sc_http_field_t *fs[3] = {&c->f_scene, &c->f_product, &c->f_mask};
    for (int i = 0; i < 3; i++) {
        if (fs[i]->spool && sc_spool_map(fs[i]->spool) != 0) {
            int e = errno;
            while (i-- > 0)
                if (fs[i]->spool)
                    sc_spool_unmap(fs[i]->spool);
            errno = e;
            return -1;
        }
    }
    c->uploads_held = true;
    return 0;
}

/* Ends the hold: the bytes are needed no more (PIL is done, or the Kontext
 * input is built and the request will wait holding files, not pages). */
static void uploads_release(sc_http_conn_t *c)
{
    if (!c->uploads_held)
        return;
    sc_http_field_t *fs[3] = {&c->f_scene, &c->f_product, &c->f_mask};
    for (int i = 0; i < 3; i++)
        if (fs[i]->spool)
            sc_spool_unmap(fs[i]->spool);
    c->uploads_held = false;
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
        {"mask", offsetof(sc_http_conn_t, f_mask), true},
        {"quality", offsetof(sc_http_conn_t, f_quality), false},
        {"shadow", offsetof(sc_http_conn_t, f_shadow), false},
        {"webhook", offsetof(sc_http_conn_t, f_webhook), false},
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
        sc_spool_free(f->spool);
        f->spool = NULL;
        f->present = true;
    }
    if (!is_file && f->data.len + size > SC_HTTP_MAX_TEXT_FIELD) {
        char msg[128];
        snprintf(msg, sizeof msg, "field '%s' is longer than %d bytes", key,
                 SC_HTTP_MAX_TEXT_FIELD);
        refuse(c, 400, "invalid_parameter", msg);
        return 0;
    }
    long long spool_at = c->cfg->upload_spool_bytes;
    if (is_file && size > 0 && spool_at > 0 &&
        (f->spool || (long long)(f->data.len + size) > spool_at))
        return spool_append(c, f, key, data, size);
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
            file_drop(&c->f_scene);
            file_drop(&c->f_product);
            file_drop(&c->f_mask);
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
    const char *keying; /* PIL: sc_keying_name (image/place.h); NULL for Kontext */
} answer_t;

/* ==== Keying inputs (issue 12) ==== */

/* The scene's colour profile (kept for the encode), from the encoded upload
 * (no decode: issue 11). Returns 0, or -1 out of memory. */
static int scene_profile(sc_http_conn_t *c)
{
    size_t icc_len = 0;
    if (sc_icc_extract(field_bytes(&c->f_scene), field_len(&c->f_scene), &c->scene_icc, &icc_len) <
        0)
        return -1;
    c->copts.icc = c->scene_icc;
    c->copts.icc_len = icc_len;
    return 0;
}

/* The product cache's key, computed only when PIL runs (a Kontext request
 * never reads the cache): the SHA-256 of the product's bytes, followed by the
 * scene's profile when the product has its own (then PIL converts it into the
 * scene's space), so it names the product's pixels exactly. Without a key the
 * product is decoded (a miss), so a failure here costs time, not
 * correctness. */
static void pcache_key(sc_http_conn_t *c)
{
    if (c->copts.place.product_sha || !sc_pcache_enabled())
        return;
    uint8_t *picc = NULL;
    size_t picc_len = 0;
    int has =
        sc_icc_extract(field_bytes(&c->f_product), field_len(&c->f_product), &picc, &picc_len);
    free(picc);
    if (has >= 0 && sc_pcache_hash2(field_bytes(&c->f_product), field_len(&c->f_product),
                                    has == 1 ? c->copts.icc : NULL, has == 1 ? c->copts.icc_len : 0,
                                    c->product_sha) == 0)
        c->copts.place.product_sha = c->product_sha;
}

/* Decodes the product for PIL and converts it into the scene's colour space
 * when its own profile differs. */
static sc_codec_status_t product_decode(sc_http_conn_t *c)
{
    sc_image_free(&c->product);
    sc_codec_status_t st = sc_codec_decode(field_bytes(&c->f_product), field_len(&c->f_product),
                                           c->cfg->max_image_pixels, &c->product, NULL);
    if (st != SC_CODEC_OK)
        return st;
    uint8_t *picc = NULL;
    size_t picc_len = 0;
    int conv = 1;
    if (sc_icc_extract(field_bytes(&c->f_product), field_len(&c->f_product), &picc, &picc_len) == 1)
        conv = sc_icc_convert(&c->product, picc, picc_len, c->copts.icc, c->copts.icc_len);
    free(picc);
    return conv < 0 ? SC_CODEC_NOMEM : SC_CODEC_OK;
}

/* Checks the `mask` upload from its header and structure: 0, or an error
 * answered (returns via *r). */
static int mask_probe(sc_http_conn_t *c, enum MHD_Result *r)
{
    sc_image_info_t mi;
    const uint8_t *d = field_bytes(&c->f_mask);
    size_t n = field_len(&c->f_mask);
    sc_codec_status_t st = sc_codec_probe(d, n, c->cfg->max_image_pixels, &mi);
    if (st == SC_CODEC_OK && sc_check_image(d, n, NULL) != SC_CODEC_OK)
        st = SC_CODEC_INVALID;
    if (st == SC_CODEC_TOO_LARGE) {
        *r =
            sc_http__send_error(c->mhd, 413, "image_too_large",
                                "field 'mask' has more than %lld pixels", c->cfg->max_image_pixels);
        return -1;
    }
    if (st != SC_CODEC_OK) {
        *r = sc_http__send_error(c->mhd, 400, "invalid_image",
                                 "field 'mask' is not a valid PNG or JPEG image");
        return -1;
    }
    const sc_image_info_t *pi = &c->probe.product;
    if (mi.width != pi->width || mi.height != pi->height) {
        *r = sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                 "field 'mask' (%dx%d) must have the product's size (%dx%d)",
                                 mi.width, mi.height, pi->width, pi->height);
        return -1;
    }
    return 0;
}

/* Decodes the `mask` upload into c->mask (the encoded field is kept: an async
 * composite saves it with its inputs) and points the placement at it. */
static sc_codec_status_t mask_decode(sc_http_conn_t *c)
{
    const char *merr = NULL;
    sc_codec_status_t st = sc_codec_decode(field_bytes(&c->f_mask), field_len(&c->f_mask),
                                           c->cfg->max_image_pixels, &c->mask, &merr);
    if (st == SC_CODEC_OK && c->mask.width == c->probe.product.width &&
        c->mask.height == c->probe.product.height)
        c->copts.place.mask = &c->mask;
    return st;
}

/* The images PIL needs, from the kept uploads: the scene, the mask, and the
 * product as its header only (image/place.h SC_PLACE_NEED_PIXELS: decoded
 * only when its placed layer is not in the product cache, issue 12). 0, or
 * -1 with *st and *what (the field) set. */
static int pil_inputs(sc_http_conn_t *c, sc_codec_status_t *st, const char **what)
{
    *what = "scene";
    if (!c->scene.pixels) {
        *st = sc_codec_decode(field_bytes(&c->f_scene), field_len(&c->f_scene),
                              c->cfg->max_image_pixels, &c->scene, NULL);
        if (*st != SC_CODEC_OK)
            return -1;
    }
    *what = "mask";
    if (c->f_mask.present && !c->mask.pixels) {
        *st = mask_decode(c);
        if (*st != SC_CODEC_OK)
            return -1;
    }
    if (!c->product.pixels) {
        pcache_key(c);
        c->product.width = c->probe.product.width;
        c->product.height = c->probe.product.height;
        c->product.channels = c->probe.product_alpha ? 4 : 3;
    }
    *st = SC_CODEC_OK;
    return 0;
}

/* ==== The record (API.md "Asynchronous composites, records, webhooks") ==== */

/* OUTPUT_DIR/<id>.inputs/: the uploads and fields of an async composite, kept
 * while it is processing so a restart can finish it by PIL (reason
 * `interrupted`); removed when the record is final. */
static void inputs_path(const sc_http_conn_t *c, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s.inputs%s%s", c->cfg->output_dir, c->id, name ? "/" : "",
             name ? name : "");
}

static int inputs_save(sc_http_conn_t *c)
{
    char path[SC_CFG_PATH + 96];
    inputs_path(c, NULL, path, sizeof path);
    if (sc_fs_mkdirs(path) != 0)
        return -1;
    const struct {
        const char *name;
        const sc_http_field_t *f;
    } parts[] = {{"scene", &c->f_scene}, {"product", &c->f_product}, {"mask", &c->f_mask}};
    for (size_t i = 0; i < 3; i++) {
        if (!parts[i].f->present)
            continue; /* only the mask is optional */
        inputs_path(c, parts[i].name, path, sizeof path);
        const uint8_t *bytes = field_bytes(parts[i].f);
        if (sc_fs_write_atomic(path, bytes ? (const void *)bytes : "", field_len(parts[i].f)) != 0)
            return -1;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -1;
    cJSON_AddNumberToObject(o, "x", c->params.x);
    cJSON_AddNumberToObject(o, "y", c->params.y);
    cJSON_AddNumberToObject(o, "scale", c->params.scale);
    cJSON_AddStringToObject(o, "format", sc_format_name(c->format));
    cJSON_AddNumberToObject(o, "quality", c->copts.quality);
    cJSON_AddStringToObject(o, "shadow",
                            c->copts.place.shadow == SC_KEY_SHADOW_REMOVE ? "remove" : "keep");
    if (c->preq.prompt)
        cJSON_AddStringToObject(o, "prompt", c->preq.prompt);
    if (c->preq.user_id)
        cJSON_AddStringToObject(o, "user_id", c->preq.user_id);
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    inputs_path(c, "params.json", path, sizeof path);
    int rc = txt ? sc_fs_write_atomic(path, txt, strlen(txt)) : -1;
    cJSON_free(txt);
    return rc;
}

static void inputs_remove(const sc_http_conn_t *c)
{
    static const char *const names[] = {"scene", "product", "mask", "params.json"};
    char path[SC_CFG_PATH + 96];
    for (size_t i = 0; i < 4; i++) {
        inputs_path(c, names[i], path, sizeof path);
        (void)unlink(path);
    }
    inputs_path(c, NULL, path, sizeof path);
    (void)rmdir(path);
}

/* Completes the record (records.c) and drops the kept inputs. */
static void record_end(sc_http_conn_t *c)
{
    if (c->rec && isnan(c->rec->estimated_cost_usd)) /* null while unknown; final now */
        c->rec->estimated_cost_usd = c->rec->prediction_id[0] ? c->cfg->kontext_price_usd : 0.0;
    sc_http__record_end(c);
    if (c->async)
        inputs_remove(c);
}

/* Ends the record as succeeded with answer a. */
static void record_succeeded(sc_http_conn_t *c, const answer_t *a)
{
    sc_record_t *r = c->rec;
    if (!r)
        return;
    r->status = SC_RECORD_SUCCEEDED;
    snprintf(r->method, sizeof r->method, "%s", a->method);
    r->fallback = a->fallback;
    snprintf(r->fallback_reason, sizeof r->fallback_reason, "%s",
             a->fallback_reason ? a->fallback_reason : "");
    r->width = a->width;
    r->height = a->height;
    snprintf(r->keying, sizeof r->keying, "%s", a->keying ? a->keying : "");
    snprintf(r->image_url, sizeof r->image_url, "/api/composites/%s.%s", c->id,
             sc_format_ext(c->format));
    record_end(c);
}

/* Ends the record as failed (nothing is answered). */
static void record_failed(sc_http_conn_t *c, const char *code, const char *msg)
{
    sc_record_t *r = c->rec;
    if (!r)
        return;
    r->status = SC_RECORD_FAILED;
    snprintf(r->error_code, sizeof r->error_code, "%s", code);
    snprintf(r->error_message, sizeof r->error_message, "%s", msg);
    record_end(c);
}

/* Ends the record as failed and answers the error. */
static enum MHD_Result fail(sc_http_conn_t *c, unsigned status, const char *code, const char *fmt,
                            ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result fail(sc_http_conn_t *c, unsigned status, const char *code, const char *fmt,
                            ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    record_failed(c, code, msg);
    if (c->detached)
        return MHD_YES;
    return sc_http__send_error(c->mhd, status, code, "%s", msg);
}

/* Sends the composite: the image itself (takes ownership of bytes) or the JSON. */
static enum MHD_Result send_answer(sc_http_conn_t *c, const answer_t *a, uint8_t *bytes, size_t len)
{
    record_succeeded(c, a);
    if (c->detached) {
        free(bytes); /* the client had its 202; the record says the rest */
        return MHD_YES;
    }
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
        if (a->keying)
            MHD_add_response_header(r, "X-Composite-Keying", a->keying);
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
    if (a->keying)
        MHD_add_response_header(r, "X-Composite-Keying", a->keying);
    return sc_http__deliver(c->mhd, 200, r);
}

/* ==== PIL ==== */

/* Composites with PIL and answers. fallback_reason is NULL for a request routed
 * to PIL, else the reason it fell back (already counted and logged). The
 * uploads are mapped (run_pil). */
static enum MHD_Result pil_compose(sc_http_conn_t *c, bool requested_kontext,
                                   const char *fallback_reason)
{
    double t0 = sc_clock_mono();
    uint8_t *out = NULL;
    size_t len = 0;
    const char *err = NULL;
    int w = c->probe.scene.width, h = c->probe.scene.height;
    if (w == 0) {
        /* A composite resumed after a restart without its inputs (a sync one). */
        record_failed(c, "interrupted", "the service restarted and the inputs were not kept");
        return MHD_YES;
    }
    if (c->rec) {
        snprintf(c->rec->method, sizeof c->rec->method, "pil");
        snprintf(c->rec->fallback_reason, sizeof c->rec->fallback_reason, "%s",
                 fallback_reason ? fallback_reason : "");
        c->rec->fallback = fallback_reason != NULL;
    }
    sc_keying_t keying = SC_KEYING_NONE;
    sc_codec_status_t dst = SC_CODEC_OK;
    const char *what = NULL;
    double t_dec = sc_clock_mono();
    int prc = pil_inputs(c, &dst, &what);
    double dec_s = sc_clock_mono() - t_dec;
    if (prc == 0) {
        prc = sc_compose_pil_opts(&c->scene, &c->product, &c->params, c->format, &c->copts, &out,
                                  &len, &keying, &err);
        if (prc != 0 && err && strcmp(err, SC_PLACE_NEED_PIXELS) == 0) {
            what = "product"; /* not in the product cache: decode it now */
            t_dec = sc_clock_mono();
            dst = product_decode(c);
            dec_s += sc_clock_mono() - t_dec;
            prc = dst == SC_CODEC_OK
                      ? sc_compose_pil_opts(&c->scene, &c->product, &c->params, c->format,
                                            &c->copts, &out, &len, &keying, &err)
                      : -1;
        }
    }
    if (dst != SC_CODEC_OK) {
        /* The structural check passed but the pixels do not decode. */
        sc_metrics_pil(sc_clock_wall(), false, sc_clock_mono() - t0);
        sc_log_error("PIL composite id=%s: field '%s' does not decode", c->id, what);
        if (dst == SC_CODEC_NOMEM)
            return fail(c, 503, "service_unavailable", "out of memory decoding field '%s'", what);
        return fail(c, 400, "invalid_image", "field '%s' is not a valid PNG or JPEG image", what);
    }
    if (c->rec)
        c->rec->durations.decode += dec_s; /* the decode runs with PIL now */
    if (prc != 0) {
        sc_metrics_pil(sc_clock_wall(), false, sc_clock_mono() - t0);
        sc_log_error("PIL composite failed id=%s: %s", c->id, err ? err : "unknown error");
        return fail(c, 500, "internal_error", "composite failed: %s", err ? err : "unknown error");
    }
    double t_save = sc_clock_mono();
    if (c->rec)
        c->rec->durations.composite = t_save - t0 - dec_s; /* the encode included */
    if (sc_http__output_save(c, out, len) != 0) {
        free(out);
        sc_metrics_pil(sc_clock_wall(), false, sc_clock_mono() - t0);
        sc_log_error("cannot save composite %s in %s", c->id, c->cfg->output_dir);
        return fail(c, 500, "internal_error", "cannot save the composite");
    }
    if (c->rec)
        c->rec->durations.save = sc_clock_mono() - t_save;
    double secs = sc_clock_mono() - t0;
    sc_metrics_pil(sc_clock_wall(), true, secs);
    sc_log_info("Using PIL composite method id=%s duration=%.3fs keying=%s%s%s", c->id, secs,
                sc_keying_name(keying), fallback_reason ? " fallback_reason=" : "",
                fallback_reason ? fallback_reason : "");
    if (keying == SC_KEYING_SKIPPED)
        sc_log_warn("keying skipped id=%s: the product has no plain backdrop border; pasted "
                    "as a rectangle",
                    c->id);
    answer_t a = {"pil", requested_kontext,     fallback_reason != NULL, fallback_reason, w,
                  h,     sc_keying_name(keying)};
    return send_answer(c, &a, out, len);
}

/* pil_compose with the uploads held for its decodes; the bytes are released
 * after it (PIL is the end of every path that reads them). */
static enum MHD_Result run_pil(sc_http_conn_t *c, bool requested_kontext,
                               const char *fallback_reason)
{
    if (uploads_hold(c) != 0) {
        int e = errno;
        sc_metrics_pil(sc_clock_wall(), false, 0.0);
        sc_log_error("PIL composite id=%s: cannot read the spooled upload: %s", c->id, strerror(e));
        return fail(c, 503, "service_unavailable", "cannot read the spooled upload: %s",
                    strerror(e));
    }
    enum MHD_Result r = pil_compose(c, requested_kontext, fallback_reason);
    uploads_release(c);
    return r;
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

/* The metrics of a finished prediction; an adopted one (resumed after a
 * restart) was never started by this process, so it is not counted. */
static void kontext_finished(const sc_http_conn_t *c, sc_kontext_outcome_t o, double secs)
{
    if (!c->resumed)
        sc_metrics_kontext_finished(sc_clock_wall(), o, secs);
}

/* The Replicate job's on_created (I/O thread): an async composite's
 * prediction id is made durable at once, so a restart polls this prediction
 * instead of paying for another (API.md: a restart never pays twice); a sync
 * one's is an interim state, deferred (sc_http__record_save_interim). */
static void prediction_created(const char *prediction_id, void *ud)
{
    sc_http_conn_t *c = ud;
    if (!c->rec)
        return;
    snprintf(c->rec->prediction_id, sizeof c->rec->prediction_id, "%s", prediction_id);
    c->rec->estimated_cost_usd = c->cfg->kontext_price_usd;
    sc_http__record_save_interim(c); /* issue 11: never an fsync on the I/O thread */
}

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

static void kontext_done_job(sc_http_conn_t *c);

static void on_kontext_done(sc_rep_result_t *res, void *ud)
{
    sc_http_conn_t *c = ud;
    if (c->detached) {
        /* Nobody waits on the connection: the pool finishes the work
         * (kontext_done hands the breaker ticket back). */
        c->result = res;
        sc_http__run_detached(c, kontext_done_job);
        return;
    }
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

/* Ends a Kontext start that never reached Replicate (an input upload failed,
 * or the job could not be queued) the way a failed prediction ends: the
 * handler's kontext_done falls back and counts it. */
static void kontext_start_failed(sc_http_conn_t *c, sc_rep_status_t st, const char *why)
{
    free(c->k_slot);
    c->k_slot = NULL;
    sc_durable_ticket_unref(c->k_wal);
    c->k_wal = NULL;
    sc_rep_result_t *res = calloc(1, sizeof *res);
    if (res) {
        res->status = st;
        snprintf(res->message, sizeof res->message, "%s", why);
    }
    if (c->detached) { /* no connection to resume: finish on the pool */
        c->result = res;
        sc_http__run_detached(c, kontext_done_job);
    } else {
        sc_http__resume_from_callback(c, res);
    }
}

/* Submits the prediction (json consumed). The limiter slot passes to the job
 * (upstream_over), which also watches the client's socket fd: MHD does not
 * while the connection is suspended. Any thread. */
static void kontext_submit(sc_http_conn_t *c, char *json, int fd)
{
    sc_log_info("[Kontext Composite] submitting id=%s model=%s timeout=%.0fs", c->id,
                c->eff.model_id, c->eff.timeout_seconds);
    sc_limits_token_t *slot = c->k_slot;
    sc_durable_ticket_t *wal = c->k_wal;
    c->k_slot = NULL;
    c->k_wal = NULL;
    *slot = c->limiter_slot;
    c->limiter_slot.s[0] = '\0';
    c->limiter_held = false;
    sc_rep_opts_t opts = {.client_fd = fd,
                          .upstream_over = release_slot,
                          .upstream_ud = slot,
                          .on_created = prediction_created,
                          .created_ud = c,
                          .gate = wal};
    int src = sc_replicate_submit_ex(c->eff.model_id, json, c->eff.timeout_seconds, &opts,
                                     on_kontext_done, c);
    sc_durable_ticket_unref(wal); /* the job holds its own */
    if (src != 0) {
        /* Not queued, so no callback will come (upstream_over neither): the
         * slot goes back to c for kontext_done to release. */
        c->limiter_slot = *slot;
        c->limiter_held = true;
        free(slot);
        kontext_start_failed(c, SC_REP_API_ERROR, "cannot queue the prediction");
    }
}

/* sc_inputs_job_run's answer: on the I/O thread (or the pool thread that
 * started the uploads, when they were done meanwhile). */
static void kontext_inputs_ready(int rc, char *json, const char *err, void *ud)
{
    sc_http_conn_t *c = ud;
    if (rc == 0) {
        kontext_submit(c, json, c->k_fd);
        return;
    }
    char why[300];
    snprintf(why, sizeof why, "%s: %s",
             rc == -2 ? "input upload to the Files API failed" : "cannot build the model input",
             err ? err : "unknown error");
    kontext_start_failed(c, SC_REP_API_ERROR, why);
}

/* Called by process with the uploads held; releases them on every path. */
static enum MHD_Result start_kontext(sc_http_conn_t *c)
{
    if (c->cfg->replicate_api_token[0] == '\0')
        return fall_back(c, SC_FB_NO_TOKEN, "REPLICATE_API_TOKEN is not set");
    int fd = c->detached ? -1 : sc_http__client_fd(c); /* an async client is not watched */
    if (sc_http__client_left(fd)) {
        /* Nothing is answered (the pool job stashes no response), so the
         * connection is closed and the context freed. */
        sc_log_info("[Kontext Composite] client went away before Kontext started id=%s: "
                    "request dropped",
                    c->id);
        record_failed(c, "client_gone", "the client went away before Kontext started");
        uploads_release(c);
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
     * state. Group commit (issue 11): the Replicate job is queued at once
     * but sends its create only once a save covering this count is durable
     * (opts.gate); if it fails, nothing is sent (kontext_done falls back).
     * Without a committer: a synchronous flush (docs/operations.md). */
    sc_durable_ticket_t *wal = sc_http__count_gate(); /* issue 11: the job waits, not we */
    if (!wal && sc_metrics_flush() != 0) {
        sc_limiter_release(&c->limiter_slot);
        c->limiter_held = false;
        sc_breaker_release(sc_breaker_global(), &c->breaker_ticket, sc_clock_wall());
        kontext_finished(c, SC_KONTEXT_FAILURE, 0.0);
        return fall_back(c, SC_FB_API_ERROR, "cannot persist the start count in LOGS_DIR");
    }

    /* The job gets its own copy of the token: c may be gone by the time the
     * prediction ends upstream (release_slot frees it). */
    sc_limits_token_t *slot = malloc(sizeof *slot);
    char *json = NULL;
    const char *prompt = c->f_prompt.present ? c->f_prompt.data.data : NULL;
    /* issue 11: the uploads as they came when they can (replicate/inputs.h);
     * large ones go through the Files API (an upload failure is an api_error).
     * Kontext answers in the client's format, so its output can be served as
     * it is (kontext_output). */
    sc_inputs_file_t in[2];
    const sc_http_field_t *fs[2] = {&c->f_scene, &c->f_product};
    const sc_image_info_t *is[2] = {&c->probe.scene, &c->probe.product};
    /* The uploads are held (process) only until the inputs are prepared:
     * an upload they need reads the spool file itself, and the wait that
     * follows holds the spool files, not their bytes. */
    for (int i = 0; i < 2; i++)
        in[i] = (sc_inputs_file_t){.bytes = field_bytes(fs[i]),
                                   .len = field_len(fs[i]),
                                   .format = is[i]->format,
                                   .width = is[i]->width,
                                   .height = is[i]->height,
                                   .orientation = is[i]->orientation,
                                   .fd = fs[i]->spool ? sc_spool_fd(fs[i]->spool) : -1};
    sc_inputs_job_t *ij = NULL;
    int irc = slot ? sc_inputs_kontext_prepare(&in[0], &in[1], prompt,
                                               c->format == SC_FMT_JPEG ? "jpg" : "png",
                                               c->cfg->max_image_pixels, &ij)
                   : -1;
    uploads_release(c);
    if (irc == 0 && !sc_inputs_job_pending(ij)) {
        irc = sc_inputs_job_json(ij, &json); /* frees ij */
        ij = NULL;
    }
    if (irc != 0) {
        free(slot);
        sc_durable_ticket_unref(wal);
        sc_limiter_release(&c->limiter_slot);
        c->limiter_held = false;
        sc_breaker_release(sc_breaker_global(), &c->breaker_ticket, sc_clock_wall());
        kontext_finished(c, SC_KONTEXT_FAILURE, 0.0);
        return fall_back(c, SC_FB_API_ERROR, "cannot build the model input");
    }
    c->t_kontext = sc_clock_mono();
    c->k_slot = slot;
    c->k_wal = wal;
    c->k_fd = fd;
    /* The suspension of this pool job passes to what comes next: the
     * Replicate job, or first the Files API uploads whose end submits it
     * (kontext_inputs_ready, on the I/O thread). From here on c belongs to
     * that chain, and may be gone once it is started. */
    sc_http__hand_off(c);
    if (ij)
        sc_inputs_job_run(ij, c->eff.timeout_seconds, kontext_inputs_ready, c);
    else
        kontext_submit(c, json, fd);
    return MHD_YES;
}

/* The Kontext output as the final image. Served as it came when its header
 * says the requested format at the scene's size and it passes the structural
 * check (issue 11: *out then takes res->output); otherwise decoded, resized
 * to the scene's size and encoded. Returns 0, or -1 with a message (the
 * output counts as invalid). */
static int kontext_output(sc_http_conn_t *c, sc_rep_result_t *res, uint8_t **out, size_t *len,
                          const char **err)
{
    sc_image_t img = SC_IMAGE_INIT, sized = SC_IMAGE_INIT;
    int rc = -1;
    int sw = c->probe.scene.width, sh = c->probe.scene.height;
    sc_image_info_t oi;
    if (sc_codec_probe(res->output, res->output_len, c->cfg->max_image_pixels, &oi) ==
            SC_CODEC_OK &&
        oi.format == c->format && oi.width == sw && oi.height == sh && oi.orientation == 1 &&
        sc_check_image(res->output, res->output_len, NULL) == SC_CODEC_OK) {
        *out = res->output;
        *len = res->output_len;
        res->output = NULL;
        res->output_len = 0;
        return 0;
    }
    if (sc_codec_probe(res->output, res->output_len, c->cfg->max_image_pixels, &oi) !=
            SC_CODEC_OK ||
        sc_check_image(res->output, res->output_len, NULL) != SC_CODEC_OK) {
        *err = "output is not a valid PNG or JPEG image";
        goto cleanup;
    }
    if (sc_codec_decode(res->output, res->output_len, c->cfg->max_image_pixels, &img, err) !=
        SC_CODEC_OK) {
        goto cleanup;
    }
    const sc_image_t *final = &img;
    if (sw > 0 && (img.width != sw || img.height != sh)) {
        if (sc_resize_lanczos(&img, sw, sh, &sized) != 0) {
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
    if (c->rec) {
        c->rec->durations.kontext = secs;
        if (res && res->prediction_id[0]) {
            snprintf(c->rec->prediction_id, sizeof c->rec->prediction_id, "%s", res->prediction_id);
            c->rec->estimated_cost_usd = c->cfg->kontext_price_usd;
        }
    }
    if (res && res->gate_closed) { /* the write-ahead failed: nothing was sent */
        sc_breaker_release(sc_breaker_global(), &c->breaker_ticket, sc_clock_wall());
        kontext_finished(c, SC_KONTEXT_FAILURE, 0.0);
        return fall_back(c, SC_FB_API_ERROR, "cannot persist the start count in LOGS_DIR");
    }
    if (st == SC_REP_CLIENT_GONE) {
        breaker_finish(c, st); /* no outcome; already given back by the callback */
        record_failed(c, "client_gone", "the client went away while Kontext ran");
        return MHD_NO; /* nobody to answer (logged by the callback): the connection closes */
    }
    const char *msg = res && res->message[0] ? res->message : NULL;
    const char *err = NULL;

    if (st == SC_REP_OK) {
        uint8_t *out = NULL;
        size_t len = 0;
        double t_enc = sc_clock_mono();
        int orc = kontext_output(c, res, &out, &len, &err);
        breaker_finish(c, orc == 0 ? SC_REP_OK : SC_REP_INVALID_OUTPUT); /* issue 11 */
        if (orc == 0) {
            double t_save = sc_clock_mono();
            if (c->rec)
                c->rec->durations.encode = t_save - t_enc;
            if (sc_http__output_save(c, out, len) != 0) {
                free(out);
                kontext_finished(c, SC_KONTEXT_FAILURE, secs);
                sc_log_error("cannot save composite %s in %s", c->id, c->cfg->output_dir);
                return fail(c, 500, "internal_error", "cannot save the composite");
            }
            if (c->rec)
                c->rec->durations.save = sc_clock_mono() - t_save;
            kontext_finished(c, SC_KONTEXT_SUCCESS, secs);
            sc_log_info("[Kontext Composite] Composite saved id=%s seconds=%.2f prediction=%s",
                        c->id, secs, res->prediction_id);
            answer_t a = {"kontext", true, false, NULL, c->probe.scene.width, c->probe.scene.height,
                          NULL};
            return send_answer(c, &a, out, len);
        }
        st = SC_REP_INVALID_OUTPUT;
        msg = err ? err : "output does not decode as an image";
    }

    breaker_finish(c, st); /* issue 11 (no-op when already recorded above) */
    sc_fallback_reason_t reason = sc_fallback_reason_for_replicate(st);
    const char *reason_name = sc_fallback_reason_name(reason);
    kontext_finished(c, st == SC_REP_TIMEOUT ? SC_KONTEXT_TIMEOUT : SC_KONTEXT_FAILURE, secs);
    if (st == SC_REP_TIMEOUT) {
        sc_log_warn("[Kontext Composite] Kontext timeout after %.1fs id=%s prediction=%s "
                    "(cancelled upstream)",
                    secs, c->id, res && res->prediction_id[0] ? res->prediction_id : "-");
    }
    if (sc_policy_on_kontext_error(&c->eff, reason_name, msg ? msg : reason_name, &c->preq)) {
        sc_log_warn("[Kontext Composite] Kontext failed: %s (%s) id=%s; policy says fail",
                    reason_name, msg ? msg : "-", c->id);
        if (c->rec)
            snprintf(c->rec->method, sizeof c->rec->method, "kontext");
        return fail(c, 502, "upstream_error", "%s", msg ? msg : reason_name);
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

/* Whether a Prefer header asks for respond-async (RFC 7240: a comma list of
 * preferences, each possibly with parameters). */
static bool prefers_async(struct MHD_Connection *conn)
{
    const char *p = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Prefer");
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",;= \t");
        if (n == 13 && strncasecmp(p, "respond-async", 13) == 0)
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

/* The request's fingerprint for its Idempotency-Key: every form field we read,
 * by name (records/idempotency.h). 0 or -1 (out of memory). */
static int fingerprint(sc_http_conn_t *c, char out[SC_IDEMPOTENCY_FP_LEN + 1])
{
    const struct {
        const char *name;
        const sc_http_field_t *f;
    } parts[] = {{"scene", &c->f_scene},
                 {"product", &c->f_product},
                 {"prompt", &c->f_prompt},
                 {"user_id", &c->f_user_id},
                 {"x", &c->f_x},
                 {"y", &c->f_y},
                 {"scale", &c->f_scale},
                 {"format", &c->f_format},
                 {"webhook", &c->f_webhook},
                 {"mask", &c->f_mask},
                 {"quality", &c->f_quality},
                 {"shadow", &c->f_shadow}};
    sc_idempotency_fp_t *fp = sc_idempotency_fp_new("POST /api/composite");
    int rc = fp ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < sizeof parts / sizeof parts[0]; i++)
        if (parts[i].f->present)
            rc = sc_idempotency_fp_add(fp, parts[i].name, field_bytes(parts[i].f),
                                       field_len(parts[i].f));
    if (rc == 0)
        rc = sc_idempotency_fp_final(fp, out);
    sc_idempotency_fp_free(fp);
    return rc;
}

/* What route() sees of the request: the text fields and the uploads' header
 * facts (no decode before routing). */
static void policy_request(sc_http_conn_t *c)
{
    c->preq = (sc_policy_req_t){
        .user_id = c->f_user_id.present ? c->f_user_id.data.data : NULL,
        .prompt = c->f_prompt.present ? c->f_prompt.data.data : NULL,
        .scene_w = c->probe.scene.width,
        .scene_h = c->probe.scene.height,
        .scene_alpha = c->probe.scene_alpha,
        .product_w = c->probe.product.width,
        .product_h = c->probe.product.height,
        .product_alpha = c->probe.product_alpha,
    };
}

/* Everything after the upload up to the route: checks, probe, record. Sets
 * *go (with *route) when the request goes on to PIL or Kontext; otherwise
 * it was answered. Reads the uploads: runs with them mapped. */
static enum MHD_Result admit(sc_http_conn_t *c, sc_route_t *route_out, bool *go)
{
    c->t_job = sc_clock_mono();
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
    /* PIL options: quality (JPEG), shadow, mask (decoded after the images) */
    c->copts = (sc_compose_opts_t){0, {NULL, SC_KEY_SHADOW_KEEP, NULL}, NULL, 0};
    if (c->f_quality.present &&
        sc_compose_parse_quality(c->f_quality.data.data ? c->f_quality.data.data : "",
                                 &c->copts.quality) != 0)
        return sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                   "field 'quality' must be an integer from 1 to 100");
    if (c->f_shadow.present) {
        const char *v = c->f_shadow.data.data ? c->f_shadow.data.data : "";
        if (strcmp(v, "keep") != 0 && strcmp(v, "remove") != 0)
            return sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                       "field 'shadow' must be 'keep' or 'remove'");
        c->copts.place.shadow = v[0] == 'r' ? SC_KEY_SHADOW_REMOVE : SC_KEY_SHADOW_KEEP;
    }

    /* webhook: needs WEBHOOK_SECRET and an address we may call (SSRF rules). */
    const char *webhook =
        c->f_webhook.present && c->f_webhook.data.len ? c->f_webhook.data.data : NULL;
    if (webhook) {
        char werr[512];
        if (sc_webhooks_accept(webhook, c->cfg->webhook_secret, c->cfg->webhook_allowed_hosts, werr,
                               sizeof werr) != 0)
            return sc_http__send_error(c->mhd, 400, "invalid_parameter", "%s", werr);
    }
    /* Idempotency-Key: checked and fingerprinted now (the uploads are freed
     * after the decode), claimed once the request is known to be valid. */
    const char *key = MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, "Idempotency-Key");
    char fp[SC_IDEMPOTENCY_FP_LEN + 1] = "";
    if (key) {
        if (!sc_idempotency_key_valid(key, strlen(key)))
            return sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                       "Idempotency-Key must be 1-255 printable ASCII characters");
        if (fingerprint(c, fp) != 0)
            return sc_http__send_oom(c->mhd);
    }
    c->async = prefers_async(c->mhd);

    /* Headers, the placement's working limits and the structural check
     * (compose.h); no pixel is decoded before routing (issue 11): PIL decodes
     * what it needs, Kontext gets the uploads as they came. */
    double t_decode = sc_clock_mono();
    sc_compose_refusal_t why;
    if (sc_compose_probe(field_bytes(&c->f_scene), field_len(&c->f_scene),
                         field_bytes(&c->f_product), field_len(&c->f_product),
                         c->cfg->max_image_pixels, &c->params, &c->probe, &why) != 0)
        return image_error(c, &why);
    t_decode = sc_clock_mono() - t_decode;
    if (scene_profile(c) != 0)
        return sc_http__send_error(c->mhd, 503, "service_unavailable",
                                   "out of memory reading the colour profiles");
    enum MHD_Result mr = MHD_YES;
    if (c->f_mask.present && mask_probe(c, &mr) != 0)
        return mr;

    sc_id_new(c->id);
    if (key) {
        char old_fp[SC_IDEMPOTENCY_FP_LEN + 1] = "", old_id[SC_ID_LEN + 1] = "";
        switch (sc_http__idem_claim(sc_clock_wall(), key, fp, c->id, SC_HTTP_IDEM_TTL, old_fp,
                                    old_id)) {
        case SC_HTTP_IDEM_CLAIMED:
            break;
        case SC_HTTP_IDEM_EXISTING:
            if (strcmp(old_fp, fp) != 0)
                return sc_http__send_error(c->mhd, 422, "idempotency_conflict",
                                           "this Idempotency-Key was used with another request");
            sc_log_info("idempotent repeat key -> id=%s: answering its record", old_id);
            return sc_http__idem_replay(c->mhd, c->cfg, old_id);
        case SC_HTTP_IDEM_INVALID:
            return sc_http__send_error(c->mhd, 400, "invalid_parameter",
                                       "Idempotency-Key is not accepted by the limits store");
        case SC_HTTP_IDEM_UNAVAILABLE:
            /* Never run a request whose key cannot be held: that is how a
             * second prediction would be paid. */
            return sc_http__send_busy(c->mhd, 1, "cannot record the Idempotency-Key now; retry");
        }
    }
    policy_request(c);
    /* Empty strings are absent values for the policy (curl -F user_id= ...). */
    if (c->preq.user_id && !c->preq.user_id[0])
        c->preq.user_id = NULL;
    if (c->preq.prompt && !c->preq.prompt[0])
        c->preq.prompt = NULL;
    sc_route_t route = sc_policy_route_explain(&c->preq, &c->eff, &c->why);
    sc_metrics_request(sc_clock_wall(), route == SC_ROUTE_KONTEXT);

    /* The record, saved "processing" before any work that can be paid. */
    c->rec = malloc(sizeof *c->rec);
    if (!c->rec) {
        if (key)
            sc_http__idem_forget(key);
        return sc_http__send_oom(c->mhd);
    }
    sc_record_t *rec = c->rec;
    sc_record_init(rec);
    snprintf(rec->id, sizeof rec->id, "%s", c->id);
    rec->created_at = sc_clock_wall();
    snprintf(rec->requested_method, sizeof rec->requested_method, "%s",
             route == SC_ROUTE_KONTEXT ? "kontext" : "pil");
    rec->decision.policy_version = c->eff.version;
    snprintf(rec->decision.phase, sizeof rec->decision.phase, "%s", c->eff.phase);
    snprintf(rec->decision.rule, sizeof rec->decision.rule, "%s", c->why.rule);
    rec->decision.bucket = c->why.bucket;
    rec->decision.percent = c->why.percent;
    rec->durations.queue = c->t_job - c->t_start;
    rec->durations.decode = t_decode;
    snprintf(rec->format, sizeof rec->format, "%s", sc_format_name(c->format));
    snprintf(rec->webhook_url, sizeof rec->webhook_url, "%s", webhook ? webhook : "");
    rec->respond_async = c->async;
    if ((c->async && inputs_save(c) != 0) || sc_http__record_save_start(c, key != NULL) != 0) {
        /* An async client can only learn the outcome from the record. */
        inputs_remove(c);
        free(c->rec);
        c->rec = NULL;
        if (key)
            sc_http__idem_forget(key);
        return sc_http__send_error(c->mhd, 500, "internal_error", "cannot save the record");
    }
    if (c->async) {
        (void)sc_http__send_record(c->mhd, rec, 202, false);
        sc_http__detach(c);
    }
    *route_out = route;
    *go = true;
    return MHD_YES;
}

/* Pool job: everything after the upload. The spooled uploads are read once
 * (uploads_hold) for the check, the probe, the route and the work; PIL
 * releases them when done, Kontext once its input is built, so a request
 * waiting on Kontext holds its spool files but none of their bytes (issue 11). */
static enum MHD_Result process(sc_http_conn_t *c)
{
    if (uploads_hold(c) != 0)
        return sc_http__send_error(c->mhd, 503, "service_unavailable",
                                   "cannot read the spooled upload: %s", strerror(errno));
    sc_route_t route = SC_ROUTE_PIL;
    bool go = false;
    enum MHD_Result r = admit(c, &route, &go);
    if (!go) {
        uploads_release(c);
        return r;
    }
    if (route == SC_ROUTE_KONTEXT)
        return start_kontext(c); /* releases them before c passes on */
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

static void kontext_done_job(sc_http_conn_t *c)
{
    (void)kontext_done(c);
}

/* ==== Resuming after a restart ==== */

/* Reads the kept inputs of c->id into c (the uploads and their probe, params, format,
 * policy request). Returns 0, or -1 when there are none or they are refused. */
static int inputs_load(sc_http_conn_t *c)
{
    char path[SC_CFG_PATH + 96];
    char *txt = NULL;
    size_t len = 0;
    inputs_path(c, "params.json", path, sizeof path);
    if (sc_fs_read_file(path, SC_HTTP_MAX_JSON_BODY * 4, &txt, &len) != 0)
        return -1;
    cJSON *o = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    c->params.x = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "x"));
    c->params.y = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "y"));
    c->params.scale = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "scale"));
    const sc_format_t *f =
        sc_format_by_name(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "format")));
    c->format = f ? f->id : SC_FMT_PNG;
    c->copts = (sc_compose_opts_t){0, {NULL, SC_KEY_SHADOW_KEEP, NULL}, NULL, 0};
    double q = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "quality"));
    c->copts.quality = q >= 1 && q <= 100 ? (int)q : 0;
    const char *sh = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "shadow"));
    if (sh && strcmp(sh, "remove") == 0)
        c->copts.place.shadow = SC_KEY_SHADOW_REMOVE;
    const char *strs[2] = {"prompt", "user_id"};
    sc_http_field_t *dst[2] = {&c->f_prompt, &c->f_user_id};
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, strs[i]));
        if (v && (sc_buf_append(&dst[i]->data, v, strlen(v) + 1) != 0))
            rc = -1;
        dst[i]->present = v != NULL;
    }
    cJSON_Delete(o);
    char err[128];
    if (rc != 0 || sc_compose_check_params(&c->params, err, sizeof err) != 0)
        return -1;
    const char *names[2] = {"scene", "product"};
    sc_http_field_t *files[2] = {&c->f_scene, &c->f_product};
    for (int i = 0; i < 2; i++) {
        inputs_path(c, names[i], path, sizeof path);
        char *data = NULL;
        size_t n = 0;
        if (sc_fs_read_file(path, (size_t)c->cfg->max_upload_bytes, &data, &n) != 0)
            return -1;
        int arc = sc_buf_append(&files[i]->data, data, n);
        free(data);
        if (arc != 0)
            return -1;
    }
    sc_compose_refusal_t why;
    if (sc_compose_probe(field_bytes(&c->f_scene), field_len(&c->f_scene),
                         field_bytes(&c->f_product), field_len(&c->f_product),
                         c->cfg->max_image_pixels, &c->params, &c->probe, &why) != 0)
        return -1;
    if (scene_profile(c) != 0)
        return -1;
    /* the mask, when the request had one */
    inputs_path(c, "mask", path, sizeof path);
    char *mdata = NULL;
    size_t mlen = 0;
    if (sc_fs_read_file(path, (size_t)c->cfg->max_upload_bytes, &mdata, &mlen) == 0) {
        int arc = sc_buf_append(&c->f_mask.data, mdata, mlen);
        free(mdata);
        c->f_mask.present = true;
        if (arc != 0 || mask_decode(c) != SC_CODEC_OK || !c->copts.place.mask)
            return -1;
    }
    policy_request(c);
    return 0;
}

static void resume_pil_job(sc_http_conn_t *c)
{
    if (c->probe.scene.width)
        sc_log_warn("[Kontext Composite] resuming id=%s after a restart: compositing by PIL "
                    "(reason interrupted)",
                    c->id);
    else
        sc_log_warn("[Kontext Composite] id=%s was cut by a restart and its inputs were not kept "
                    "(not async): failed (interrupted)",
                    c->id);
    (void)run_pil(c, strcmp(c->rec->requested_method, "kontext") == 0, "interrupted");
}

int sc_http__composite_resume(const sc_config_t *cfg, const sc_record_t *rec)
{
    sc_http_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->rec = malloc(sizeof *c->rec);
    if (!c->rec) {
        free(c);
        return -1;
    }
    atomic_init(&c->refs, 1); /* the work's reference */
    *c->rec = *rec;
    c->cfg = cfg;
    sc_http__detached_new(c);
    c->resumed = true;
    c->t_start = sc_clock_mono();
    snprintf(c->id, sizeof c->id, "%s", rec->id);
    sc_policy_current(&c->eff);
    c->async = inputs_load(c) == 0 || rec->respond_async;
    if (!c->probe.scene.width) {
        const sc_format_t *f = sc_format_by_name(rec->format);
        c->format = f ? f->id : SC_FMT_PNG;
    }
    /* Only an async composite's prediction is adopted (its client waits for
     * the record); a sync one's client is gone, so the prediction journal
     * cancels it and the record ends here. */
    if (!rec->prediction_id[0] || !rec->respond_async) {
        sc_http__run_detached(c, resume_pil_job);
        return 0;
    }
    /* Poll the prediction the dead process paid for; never create it again.
     * What is left of its deadline, but at least a few seconds to look. */
    double left = rec->created_at + c->eff.timeout_seconds - sc_clock_wall();
    if (left < 5)
        left = 5;
    sc_log_warn("[Kontext Composite] resuming id=%s after a restart: polling prediction %s", c->id,
                rec->prediction_id);
    c->t_kontext = sc_clock_mono();
    if (sc_replicate_adopt(rec->prediction_id, left, NULL, on_kontext_done, c) != 0) {
        sc_rep_result_t *res = calloc(1, sizeof *res);
        if (res) {
            res->status = SC_REP_API_ERROR;
            snprintf(res->prediction_id, sizeof res->prediction_id, "%.63s", rec->prediction_id);
            snprintf(res->message, sizeof res->message, "cannot poll the prediction");
        }
        c->result = res;
        sc_http__run_detached(c, kontext_done_job);
    }
    return 0;
}
