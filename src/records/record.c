/* Records of composites: JSON, atomic files, the start-up scan (see record.h). */
#include "records/record.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/log.h"

static const char *const k_status[] = {"processing", "succeeded", "failed"};

void sc_record_init(sc_record_t *r)
{
    memset(r, 0, sizeof *r);
    r->status = SC_RECORD_PROCESSING;
    r->created_at = -1;
    r->completed_at = -1;
    r->decision.policy_version = -1;
    r->decision.bucket = -1;
    r->decision.percent = NAN;
    double *d[] = {&r->durations.total,   &r->durations.queue,     &r->durations.decode,
                   &r->durations.kontext, &r->durations.composite, &r->durations.encode,
                   &r->durations.save,    &r->estimated_cost_usd};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        *d[i] = NAN;
}

const char *sc_record_status_name(sc_record_status_t s)
{
    return (unsigned)s < 3 ? k_status[s] : "processing";
}

int sc_record_status_parse(const char *s)
{
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, k_status[i]) == 0)
            return i;
    return -1;
}

/* ==== Encoding ==== */

/* cJSON helpers: add s, or null when s is "". Each returns false on OOM. */
static bool add_str(cJSON *o, const char *k, const char *s)
{
    return (s && s[0] ? cJSON_AddStringToObject(o, k, s) : cJSON_AddNullToObject(o, k)) != NULL;
}

static bool add_num(cJSON *o, const char *k, double v)
{
    return (isfinite(v) ? cJSON_AddNumberToObject(o, k, v) : cJSON_AddNullToObject(o, k)) != NULL;
}

static bool add_time(cJSON *o, const char *k, double t)
{
    char buf[32] = "";
    if (t >= 0)
        sc_clock_rfc3339(t, buf);
    return add_str(o, k, buf);
}

int sc_record_to_json(const sc_record_t *r, bool for_file, sc_buf_t *out)
{
    int rc = -1;
    char *text = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -1;
    bool ok = add_str(o, "id", r->id) &&
              cJSON_AddStringToObject(o, "status", sc_record_status_name(r->status)) &&
              add_time(o, "created_at", r->created_at) &&
              add_time(o, "completed_at", r->completed_at) && add_str(o, "method", r->method) &&
              add_str(o, "requested_method", r->requested_method) &&
              cJSON_AddBoolToObject(o, "fallback", r->fallback) &&
              add_str(o, "fallback_reason", r->fallback_reason) && add_str(o, "keying", r->keying);
    cJSON *d = ok ? cJSON_AddObjectToObject(o, "decision") : NULL;
    ok = d &&
         add_num(d, "policy_version",
                 r->decision.policy_version >= 0 ? (double)r->decision.policy_version : NAN) &&
         add_str(d, "phase", r->decision.phase) && add_str(d, "rule", r->decision.rule) &&
         add_num(d, "bucket", r->decision.bucket >= 0 ? r->decision.bucket : NAN) &&
         add_num(d, "percent", r->decision.percent) &&
         add_str(o, "prediction_id", r->prediction_id);
    cJSON *du = ok ? cJSON_AddObjectToObject(o, "durations") : NULL;
    ok = du && add_num(du, "total", r->durations.total) &&
         add_num(du, "queue", r->durations.queue) && add_num(du, "decode", r->durations.decode) &&
         add_num(du, "kontext", r->durations.kontext) &&
         add_num(du, "composite", r->durations.composite) &&
         add_num(du, "encode", r->durations.encode) && add_num(du, "save", r->durations.save) &&
         add_num(o, "estimated_cost_usd", r->estimated_cost_usd) &&
         add_num(o, "width", r->width > 0 ? r->width : NAN) &&
         add_num(o, "height", r->height > 0 ? r->height : NAN) && add_str(o, "format", r->format) &&
         add_str(o, "image_url", r->image_url);
    if (ok && r->error_code[0]) {
        cJSON *e = cJSON_AddObjectToObject(o, "error");
        ok = e && add_str(e, "code", r->error_code) && add_str(e, "message", r->error_message);
    } else if (ok) {
        ok = cJSON_AddNullToObject(o, "error") != NULL;
    }
    if (ok && for_file)
        ok = add_str(o, "webhook_url", r->webhook_url) &&
             cJSON_AddBoolToObject(o, "respond_async", r->respond_async);
    if (!ok || !(text = cJSON_PrintUnformatted(o)))
        goto cleanup;
    rc = sc_buf_puts(out, text);
cleanup:
    cJSON_free(text);
    cJSON_Delete(o);
    return rc;
}

/* ==== Decoding ==== */

/* Parses "YYYY-MM-DDTHH:MM:SS[.fff]Z" (what sc_clock_rfc3339 writes). */
static int parse_time(const char *s, double *out)
{
    struct tm tm;
    int ms = 0, n = 0;
    memset(&tm, 0, sizeof tm);
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &n) != 6)
        return -1;
    const char *p = s + n;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        for (; digits > 0 && digits < 3; digits++)
            ms *= 10;
    }
    if (strcmp(p, "Z") != 0 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (double)t + ms / 1000.0;
    return 0;
}

typedef struct dec {
    char *err;
    size_t errlen;
} dec_t;

static int dec_fail(dec_t *d, const char *key, const char *what)
{
    snprintf(d->err, d->errlen, "record key '%s' must be %s", key, what);
    return -1;
}

/* Copies the string at o[key] into dst (cap bytes); null/missing leaves "". */
static int get_str(dec_t *d, const cJSON *o, const char *key, char *dst, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap)
        return dec_fail(d, key, "a string (or null) of bounded length");
    memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int get_num(dec_t *d, const cJSON *o, const char *key, double *dst)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return dec_fail(d, key, "a number (or null)");
    *dst = v->valuedouble;
    return 0;
}

/* An integer in [lo, hi] into *dst; null/missing leaves *dst. */
static int get_int(dec_t *d, const cJSON *o, const char *key, long long lo, long long hi,
                   long long *dst)
{
    double v = NAN;
    if (get_num(d, o, key, &v) != 0)
        return -1;
    if (isnan(v))
        return 0;
    if (v != floor(v) || v < (double)lo || v > (double)hi)
        return dec_fail(d, key, "an integer in range (or null)");
    *dst = (long long)v;
    return 0;
}

static int get_time(dec_t *d, const cJSON *o, const char *key, double *dst)
{
    char buf[40] = "";
    if (get_str(d, o, key, buf, sizeof buf) != 0)
        return -1;
    if (buf[0] && parse_time(buf, dst) != 0)
        return dec_fail(d, key, "an RFC 3339 UTC time (or null)");
    return 0;
}

static const cJSON *get_obj(dec_t *d, const cJSON *o, const char *key, int *rc)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return NULL;
    if (!cJSON_IsObject(v))
        *rc = dec_fail(d, key, "an object (or null)");
    return cJSON_IsObject(v) ? v : NULL;
}

int sc_record_from_json(const char *json, size_t len, sc_record_t *r, char *err, size_t errlen)
{
    dec_t d = {err, errlen};
    int rc = 0;
    sc_record_init(r);
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!o || !cJSON_IsObject(o)) {
        snprintf(err, errlen, "record is not a JSON object");
        cJSON_Delete(o);
        return -1;
    }
    char status[16] = "";
    long long v;
    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(o, "fallback");
    if (get_str(&d, o, "id", r->id, sizeof r->id) ||
        get_str(&d, o, "status", status, sizeof status) ||
        get_time(&d, o, "created_at", &r->created_at) ||
        get_time(&d, o, "completed_at", &r->completed_at) ||
        get_str(&d, o, "method", r->method, sizeof r->method) ||
        get_str(&d, o, "requested_method", r->requested_method, sizeof r->requested_method) ||
        get_str(&d, o, "fallback_reason", r->fallback_reason, sizeof r->fallback_reason) ||
        get_str(&d, o, "keying", r->keying, sizeof r->keying) ||
        get_str(&d, o, "prediction_id", r->prediction_id, sizeof r->prediction_id) ||
        get_num(&d, o, "estimated_cost_usd", &r->estimated_cost_usd) ||
        get_str(&d, o, "format", r->format, sizeof r->format) ||
        get_str(&d, o, "image_url", r->image_url, sizeof r->image_url) ||
        get_str(&d, o, "webhook_url", r->webhook_url, sizeof r->webhook_url))
        goto fail;
    if (!sc_id_valid(r->id, strlen(r->id))) {
        snprintf(err, errlen, "record key 'id' must be 32 lowercase hex characters");
        goto fail;
    }
    int st = sc_record_status_parse(status);
    if (st < 0) {
        snprintf(err, errlen, "record key 'status' must be processing, succeeded or failed");
        goto fail;
    }
    r->status = (sc_record_status_t)st;
    if (fb && !cJSON_IsNull(fb) && !cJSON_IsBool(fb)) {
        dec_fail(&d, "fallback", "a boolean");
        goto fail;
    }
    r->fallback = cJSON_IsTrue(fb);
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(o, "respond_async");
    if (ra && !cJSON_IsNull(ra) && !cJSON_IsBool(ra)) {
        dec_fail(&d, "respond_async", "a boolean");
        goto fail;
    }
    r->respond_async = cJSON_IsTrue(ra);
    v = 0;
    if (get_int(&d, o, "width", 1, 1000000, &v))
        goto fail;
    r->width = (int)v;
    v = 0;
    if (get_int(&d, o, "height", 1, 1000000, &v))
        goto fail;
    r->height = (int)v;

    const cJSON *dec = get_obj(&d, o, "decision", &rc);
    if (rc)
        goto fail;
    if (dec) {
        v = -1;
        if (get_int(&d, dec, "policy_version", 0, LLONG_MAX / 2, &v))
            goto fail;
        r->decision.policy_version = v;
        v = -1;
        if (get_int(&d, dec, "bucket", 0, 99, &v))
            goto fail;
        r->decision.bucket = (int)v;
        if (get_str(&d, dec, "phase", r->decision.phase, sizeof r->decision.phase) ||
            get_str(&d, dec, "rule", r->decision.rule, sizeof r->decision.rule) ||
            get_num(&d, dec, "percent", &r->decision.percent))
            goto fail;
    }
    const cJSON *du = get_obj(&d, o, "durations", &rc);
    if (rc)
        goto fail;
    if (du && (get_num(&d, du, "total", &r->durations.total) ||
               get_num(&d, du, "queue", &r->durations.queue) ||
               get_num(&d, du, "decode", &r->durations.decode) ||
               get_num(&d, du, "kontext", &r->durations.kontext) ||
               get_num(&d, du, "composite", &r->durations.composite) ||
               get_num(&d, du, "encode", &r->durations.encode) ||
               get_num(&d, du, "save", &r->durations.save)))
        goto fail;
    const cJSON *e = get_obj(&d, o, "error", &rc);
    if (rc)
        goto fail;
    if (e && (get_str(&d, e, "code", r->error_code, sizeof r->error_code) ||
              get_str(&d, e, "message", r->error_message, sizeof r->error_message)))
        goto fail;
    cJSON_Delete(o);
    return 0;
fail:
    cJSON_Delete(o);
    return -1;
}

/* ==== Files ==== */

static int record_path(const char *output_dir, const char *id, char *path, size_t cap)
{
    int n = snprintf(path, cap, "%s/%s.json", output_dir, id);
    if (n < 0 || (size_t)n >= cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* The record's file path and its JSON text (b): what both saves need first.
 * No mkdir here: OUTPUT_DIR exists from start-up, and a save that finds it
 * gone creates it (sc_record_save below, the committer for queued saves).
 * 0, or -1 with errno set and b empty. */
static int record_prepare(const char *output_dir, const sc_record_t *r, char *path, size_t n,
                          sc_buf_t *b)
{
    if (!sc_id_valid(r->id, strlen(r->id))) {
        errno = EINVAL;
        return -1;
    }
    if (record_path(output_dir, r->id, path, n) != 0)
        return -1;
    if (sc_record_to_json(r, true, b) != 0 || sc_buf_puts(b, "\n") != 0) {
        sc_buf_free(b);
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

int sc_record_save(const char *output_dir, const sc_record_t *r)
{
    char path[PATH_MAX];
    sc_buf_t b = SC_BUF_INIT;
    if (record_prepare(output_dir, r, path, sizeof path, &b) != 0)
        return -1;
    int rc = sc_fs_write_atomic(path, b.data, b.len);
    if (rc != 0 && errno == ENOENT && sc_fs_mkdirs(output_dir) == 0)
        rc = sc_fs_write_atomic(path, b.data, b.len); /* OUTPUT_DIR was removed */
    int e = errno;
    sc_buf_free(&b);
    errno = e;
    return rc;
}

/* Both queued saves: delay 0 commits with the next batch. */
static int save_queued(sc_durable_t *d, const char *output_dir, const sc_record_t *r, double delay,
                       sc_durable_done_fn done, void *ud)
{
    char path[PATH_MAX];
    sc_buf_t b = SC_BUF_INIT;
    if (!d) {
        errno = EINVAL;
        return -1;
    }
    if (record_prepare(output_dir, r, path, sizeof path, &b) != 0)
        return -1;
    size_t len = 0;
    char *text = sc_buf_steal(&b, &len);
    if (sc_durable_write_deferred(d, path, text, len, delay, done, ud) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return 0;
}

int sc_record_save_queued(sc_durable_t *d, const char *output_dir, const sc_record_t *r,
                          sc_durable_done_fn done, void *ud)
{
    return save_queued(d, output_dir, r, 0, done, ud);
}

int sc_record_save_deferred(sc_durable_t *d, const char *output_dir, const sc_record_t *r,
                            double delay)
{
    return save_queued(d, output_dir, r, delay, NULL, NULL);
}

sc_record_load_result_t sc_record_load(const char *output_dir, const char *id, size_t id_len,
                                       sc_record_t *r, char *err, size_t errlen)
{
    char path[PATH_MAX], idz[SC_ID_LEN + 1];
    if (!id || !sc_id_valid(id, id_len)) {
        snprintf(err, errlen, "malformed record id");
        return SC_RECORD_BAD_ID;
    }
    memcpy(idz, id, SC_ID_LEN);
    idz[SC_ID_LEN] = '\0';
    if (record_path(output_dir, idz, path, sizeof path) != 0) {
        snprintf(err, errlen, "output directory path too long");
        return SC_RECORD_IO;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = sc_fs_read_file(path, SC_RECORD_MAX_BYTES, &text, &len);
    if (rc == -1 && errno == ENOENT) {
        snprintf(err, errlen, "no record with id %s", idz);
        return SC_RECORD_NOT_FOUND;
    }
    if (rc == -2) {
        snprintf(err, errlen, "%s: larger than %d bytes", path, SC_RECORD_MAX_BYTES);
        return SC_RECORD_CORRUPT;
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return SC_RECORD_IO;
    }
    char msg[256];
    rc = sc_record_from_json(text, len, r, msg, sizeof msg);
    free(text);
    if (rc != 0) {
        snprintf(err, errlen, "%s: %s", path, msg);
        return SC_RECORD_CORRUPT;
    }
    if (strcmp(r->id, idz) != 0) {
        snprintf(err, errlen, "%s: holds the record of another id (%s)", path, r->id);
        return SC_RECORD_CORRUPT;
    }
    return SC_RECORD_OK;
}

/* True for exactly "<32 hex>.json". */
static bool is_record_name(const char *name)
{
    return strlen(name) == SC_ID_LEN + 5 && strcmp(name + SC_ID_LEN, ".json") == 0 &&
           sc_id_valid(name, SC_ID_LEN);
}

int sc_record_scan_processing(const char *output_dir, int (*fn)(const sc_record_t *r, void *ud),
                              void *ud)
{
    DIR *dir = opendir(output_dir);
    if (!dir)
        return errno == ENOENT ? 0 : -1;
    int count = 0;
    char err[512];
    sc_record_t *r = malloc(sizeof *r);
    if (!r) {
        closedir(dir);
        errno = ENOMEM;
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (!is_record_name(de->d_name))
            continue;
        sc_record_load_result_t lr =
            sc_record_load(output_dir, de->d_name, SC_ID_LEN, r, err, sizeof err);
        if (lr != SC_RECORD_OK) {
            if (lr != SC_RECORD_NOT_FOUND) /* removed meanwhile: not a problem */
                sc_log_warn("[Records] skipping unreadable record: %s", err);
            continue;
        }
        if (r->status != SC_RECORD_PROCESSING)
            continue;
        count++;
        if (fn(r, ud) != 0)
            break;
    }
    free(r);
    closedir(dir);
    return count;
}
