/* Records, idempotency keys, the decision log and the policy preview over
 * HTTP (see http/records.h and http/conn.h). */
#include "http/records.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compose/compose.h"
#include "core/clock.h"
#include "core/durable.h"
#include "core/fsutil.h"
#include "core/ids.h"
#include "core/log.h"
#include "http/conn.h"
#include "limits/limiter.h"
#include "lua/replay.h"
#include "metrics/metrics.h"
#include "records/decisions.h"
#include "records/idempotency.h"
#include "webhooks/delivery.h"

static const sc_config_t *g_cfg;
static sc_decisions_t *g_decisions;
static sc_webhooks_t *g_webhooks;

int sc_http_records_start(const sc_config_t *cfg, char *err, size_t errlen)
{
    g_cfg = cfg;
    g_decisions = sc_decisions_open(cfg->logs_dir, 0);
    if (!g_decisions) {
        snprintf(err, errlen, "cannot open %s/%s", cfg->logs_dir, SC_DECISIONS_FILE);
        return -1;
    }
    if (cfg->webhook_secret[0]) {
        sc_webhooks_opts_t o = {.logs_dir = cfg->logs_dir,
                                .secret = cfg->webhook_secret,
                                .allowed_hosts = cfg->webhook_allowed_hosts};
        /* Tests shorten the retry schedule (SC_WEBHOOK_SCHEDULE="0.2,0.2"). */
        double sched[SC_WEBHOOKS_SCHEDULE_MAX];
        const char *ts = getenv("SC_WEBHOOK_SCHEDULE");
        if (ts && *ts) {
            size_t n = 0;
            char *end = NULL;
            for (const char *p = ts; *p && n < SC_WEBHOOKS_SCHEDULE_MAX; p = end + (*end == ',')) {
                sched[n++] = strtod(p, &end);
                if (end == p)
                    break;
            }
            o.schedule = sched;
            o.nschedule = n;
        }
        g_webhooks = sc_webhooks_start(&o, err, errlen);
        if (!g_webhooks) {
            sc_decisions_close(g_decisions);
            g_decisions = NULL;
            return -1;
        }
    }
    return 0;
}

void sc_http_records_stop(void)
{
    if (g_webhooks)
        sc_webhooks_stop(g_webhooks);
    g_webhooks = NULL;
    sc_decisions_close(g_decisions);
    g_decisions = NULL;
}

/* ==== Records a dead process left processing ==== */

typedef struct ids {
    char **v;
    size_t n, cap;
} ids_t;

static int collect_prediction(const sc_record_t *r, void *ud)
{
    ids_t *ids = ud;
    if (!r->prediction_id[0] || !r->respond_async)
        return 0; /* a sync composite's prediction is cancelled (its client is gone) */
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 16;
        char **v = realloc(ids->v, cap * sizeof *v);
        if (!v)
            return 1;
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n] = strdup(r->prediction_id);
    if (!ids->v[ids->n])
        return 1;
    ids->n++;
    return 0;
}

int sc_http_records_adoptable(const sc_config_t *cfg, char ***ids, size_t *n)
{
    ids_t l = {0};
    int rc = sc_record_scan_processing(cfg->output_dir, collect_prediction, &l);
    *ids = l.v;
    *n = l.n;
    return rc < 0 ? -1 : 0;
}

void sc_http_records_free_ids(char **ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

static int resume_one(const sc_record_t *r, void *ud)
{
    int *count = ud;
    if (sc_http__composite_resume(g_cfg, r) == 0)
        (*count)++;
    return 0;
}

int sc_http_records_resume(void)
{
    int count = 0;
    if (sc_record_scan_processing(g_cfg->output_dir, resume_one, &count) < 0)
        sc_log_warn("cannot scan %s for records left processing", g_cfg->output_dir);
    if (count > 0)
        sc_log_warn("resuming %d composite(s) left processing by a previous process", count);
    return count;
}

/* ==== A composite's record ==== */

int sc_http__record_save(const sc_http_conn_t *c)
{
    if (sc_record_save(c->cfg->output_dir, c->rec) != 0) {
        sc_log_error("cannot save the record of %s in %s", c->rec->id, c->cfg->output_dir);
        return -1;
    }
    return 0;
}

void sc_http__record_save_bg(const sc_http_conn_t *c)
{
    sc_durable_t *d = sc_durable_global();
    if (!d || sc_record_save_queued(d, c->cfg->output_dir, c->rec, NULL, NULL) != 0)
        (void)sc_http__record_save(c); /* no committer (or out of memory): as before */
}

void sc_http__record_save_interim(const sc_http_conn_t *c)
{
    sc_durable_t *d = sc_durable_global();
    if (!c->async && d &&
        sc_record_save_deferred(d, c->cfg->output_dir, c->rec, SC_HTTP_INTERIM_DELAY_S) == 0)
        return;
    sc_http__record_save_bg(c);
}

int sc_http__record_save_start(const sc_http_conn_t *c, bool keyed)
{
    if (c->async)
        return sc_http__record_save(c);
    if (keyed)
        sc_http__record_save_bg(c);
    else
        sc_http__record_save_interim(c);
    return 0;
}

int sc_http__output_save(sc_http_conn_t *c, const void *data, size_t len)
{
    sc_durable_t *d = sc_durable_global();
    if (!d)
        return sc_compose_save(c->cfg->output_dir, c->id, c->format, data, len);
    bool tracked = sc_http__durable_track(c);
    if (sc_compose_save_queued(d, c->cfg->output_dir, c->id, c->format, data, len,
                               tracked ? sc_http__durable_done : NULL, tracked ? c : NULL) == 0)
        return 0;
    if (tracked)
        atomic_fetch_sub(&c->dur_hold, 1); /* not queued: no callback will drop it */
    return -1;
}

sc_durable_ticket_t *sc_http__count_gate(void)
{
    sc_durable_ticket_t *t = sc_durable_ticket_new(sc_replicate_wake);
    if (t && sc_metrics_start_gate(t) == 0)
        return t;
    sc_durable_ticket_unref(t);
    return NULL;
}

/* The final record: the sync answer waits for it (tracked) like the output. */
static void record_save_final(sc_http_conn_t *c)
{
    sc_durable_t *d = sc_durable_global();
    bool tracked = d && sc_http__durable_track(c);
    if (d && sc_record_save_queued(d, c->cfg->output_dir, c->rec,
                                   tracked ? sc_http__durable_done : NULL, tracked ? c : NULL) == 0)
        return;
    if (tracked)
        atomic_fetch_sub(&c->dur_hold, 1);
    /* Out of memory (the committer refuses only at stop, after every request):
     * written here; a deferred interim state could still land over it. */
    (void)sc_http__record_save(c);
}

void sc_http__record_end(sc_http_conn_t *c)
{
    sc_record_t *r = c->rec;
    if (!r)
        return;
    r->completed_at = sc_clock_wall();
    r->durations.total = sc_clock_mono() - c->t_start;
    record_save_final(c);

    if (g_decisions) {
        sc_decision_entry_t e = {
            .ts = r->created_at,
            .id = r->id,
            .user_id = c->preq.user_id,
            .prompt = c->preq.prompt,
            .scene_w = c->preq.scene_w,
            .scene_h = c->preq.scene_h,
            .scene_alpha = c->preq.scene_alpha,
            .product_w = c->preq.product_w,
            .product_h = c->preq.product_h,
            .product_alpha = c->preq.product_alpha,
            .requested_method = r->requested_method,
            .method = r->method[0] ? r->method : NULL,
            .fallback_reason = r->fallback_reason[0] ? r->fallback_reason : NULL,
            .decision = &r->decision,
        };
        if (sc_decisions_append(g_decisions, &e) != 0)
            sc_log_warn("cannot append the decision of %s to %s/%s", r->id, c->cfg->logs_dir,
                        SC_DECISIONS_FILE);
    }
    if (r->webhook_url[0] && g_webhooks) {
        sc_buf_t b = SC_BUF_INIT;
        char err[256] = "";
        if (sc_record_to_json(r, false, &b) != 0 ||
            sc_webhooks_enqueue(g_webhooks, r->id, r->webhook_url, b.data, b.len, err,
                                sizeof err) != 0)
            sc_log_error("[Webhook] cannot queue the delivery of %s: %s", r->id,
                         err[0] ? err : "out of memory");
        sc_buf_free(&b);
    }
}

enum MHD_Result sc_http__send_record(struct MHD_Connection *conn, const sc_record_t *r,
                                     unsigned status, bool replayed)
{
    sc_buf_t b = SC_BUF_INIT;
    if (sc_record_to_json(r, false, &b) != 0 || sc_buf_puts(&b, "\n") != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    size_t len = 0;
    char *body = sc_buf_steal(&b, &len);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return sc_http__send_oom(conn);
    }
    char loc[64];
    snprintf(loc, sizeof loc, "/api/composites/%s", r->id);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (status == 202)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, loc);
    if (replayed)
        MHD_add_response_header(resp, "Idempotent-Replayed", "true");
    return sc_http__deliver(conn, status, resp);
}

enum MHD_Result sc_http__send_retry(struct MHD_Connection *conn, unsigned status, const char *code,
                                    int retry_after, const char *msg)
{
    struct MHD_Response *r = sc_http__error_response(code, msg);
    if (!r)
        return sc_http__send_oom(conn);
    char ra[16];
    snprintf(ra, sizeof ra, "%d", retry_after);
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    return sc_http__deliver(conn, status, r);
}

enum MHD_Result sc_http__send_busy(struct MHD_Connection *conn, int retry_after, const char *msg)
{
    return sc_http__send_retry(conn, 503, "server_busy", retry_after, msg);
}

enum MHD_Result sc_http__serve_record(struct MHD_Connection *conn, const sc_config_t *cfg,
                                      const char *id)
{
    sc_record_t *r = malloc(sizeof *r);
    if (!r)
        return sc_http__send_oom(conn);
    char err[256] = "";
    enum MHD_Result ret;
    switch (sc_record_load(cfg->output_dir, id, strlen(id), r, err, sizeof err)) {
    case SC_RECORD_OK:
        ret = sc_http__send_record(conn, r, 200, false);
        break;
    case SC_RECORD_NOT_FOUND:
    case SC_RECORD_BAD_ID:
        ret = sc_http__send_error(conn, 404, "not_found", "no composite with this id");
        break;
    default:
        sc_log_error("cannot read the record %s: %s", id, err);
        ret = sc_http__send_error(conn, 500, "internal_error", "cannot read the record");
        break;
    }
    free(r);
    return ret;
}

/* ==== Idempotency keys ====
 *
 * Claims live in the Kontext limiter's store (API.md: "keys live in the limits
 * store"): with LIMITS_STORE=redis one claim holds for the whole fleet sharing
 * that Redis and survives restarts; with the memory store keys are per process
 * and lost at restart. The store's claim is atomic: of several racing
 * claimers exactly one gets SC_IDEM_CLAIMED. */

/* dst (max + 1 bytes) = the first max bytes of src. */
static void copy_bounded(char *dst, const char *src, size_t max)
{
    size_t n = strnlen(src, max);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

sc_http_idem_t sc_http__idem_claim(double now, const char *key, const char *fp,
                                   const char *record_id, int ttl_seconds, char *existing_fp,
                                   char *existing_id)
{
    sc_idem_existing_t ex;
    memset(&ex, 0, sizeof ex);
    switch (sc_limiter_idem_claim(now, key, fp, record_id, ttl_seconds, &ex)) {
    case SC_IDEM_CLAIMED:
        return SC_HTTP_IDEM_CLAIMED;
    case SC_IDEM_EXISTING:
        /* ours are exactly these lengths; a longer one matches nothing */
        copy_bounded(existing_fp, ex.fingerprint, SC_IDEMPOTENCY_FP_LEN);
        copy_bounded(existing_id, ex.record_id, SC_ID_LEN);
        return SC_HTTP_IDEM_EXISTING;
    case SC_IDEM_UNAVAILABLE:
        return SC_HTTP_IDEM_UNAVAILABLE;
    case SC_IDEM_INVALID:
        return SC_HTTP_IDEM_INVALID;
    }
    return SC_HTTP_IDEM_UNAVAILABLE;
}

void sc_http__idem_forget(const char *key)
{
    if (sc_limiter_idem_forget(key) != 0)
        sc_log_warn("cannot forget an Idempotency-Key in the limits store: a retry with it "
                    "is answered 409 idempotency_in_progress until the key expires");
}

enum MHD_Result sc_http__idem_replay(struct MHD_Connection *conn, const sc_config_t *cfg,
                                     const char *id)
{
    /* The winner saves its record right after its claim; a repeat arriving in
     * between waits for it a little. */
    sc_record_t *r = malloc(sizeof *r);
    if (!r)
        return sc_http__send_oom(conn);
    char err[256] = "";
    sc_record_load_result_t lr = SC_RECORD_NOT_FOUND;
    for (int i = 0; i < 100; i++) {
        lr = sc_record_load(cfg->output_dir, id, strlen(id), r, err, sizeof err);
        if (lr != SC_RECORD_NOT_FOUND)
            break;
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    enum MHD_Result ret;
    if (lr == SC_RECORD_OK)
        ret = sc_http__send_record(conn, r, r->respond_async ? 202 : 200, true);
    else
        ret = sc_http__send_error(conn, 409, "idempotency_in_progress",
                                  "the first request with this Idempotency-Key is still starting; "
                                  "retry in a moment");
    free(r);
    return ret;
}

/* ==== Admin: decisions and the policy preview ==== */

enum MHD_Result sc_http__admin_decisions(struct MHD_Connection *conn)
{
    const char *s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit");
    long n = 50;
    if (s) {
        char *end = NULL;
        n = strtol(s, &end, 10);
        if (!*s || *end || n < 1 || n > 1000)
            return sc_http__send_error(conn, 400, "invalid_parameter",
                                       "limit must be an integer from 1 to 1000");
    }
    if (!g_decisions)
        return sc_http__send_error(conn, 503, "service_unavailable", "no decision log");
    sc_buf_t b = SC_BUF_INIT;
    if (sc_decisions_newest_json(g_decisions, (size_t)n, &b) != 0) {
        sc_buf_free(&b);
        return sc_http__send_error(conn, 500, "internal_error", "cannot read the decision log");
    }
    return sc_http__send_json(conn, 200, &b);
}

#define PREVIEW_LINES 10000

typedef struct lines {
    sc_buf_t text;  /* the lines, newest first, each followed by '\n' */
    size_t *starts; /* offsets into text */
    size_t n;
} lines_t;

static int collect_line(const char *line, size_t len, void *ud)
{
    lines_t *l = ud;
    l->starts[l->n] = l->text.len;
    if (sc_buf_append(&l->text, line, len) != 0 || sc_buf_append(&l->text, "\n", 1) != 0)
        return 1;
    l->n++;
    return 0;
}

static void preview_job(sc_http_conn_t *c)
{
    char err[2048] = "";
    double t0 = sc_clock_mono();
    sc_policy_preview_t *p = sc_policy_preview_new(c->body.data ? c->body.data : "", c->body.len,
                                                   "policy.lua", err, sizeof err);
    if (!p) {
        (void)sc_http__send_error(c->mhd, 422, "invalid_policy", "%s", err);
        return;
    }
    lines_t l = {SC_BUF_INIT, malloc(PREVIEW_LINES * sizeof(size_t)), 0};
    sc_policy_replay_result_t *res = malloc(sizeof *res);
    sc_buf_t out = SC_BUF_INIT;
    if (!l.starts || !res) {
        (void)sc_http__send_oom(c->mhd);
        goto cleanup;
    }
    if (g_decisions && sc_decisions_newest(g_decisions, PREVIEW_LINES, collect_line, &l) < 0) {
        (void)sc_http__send_error(c->mhd, 500, "internal_error", "cannot read the decision log");
        goto cleanup;
    }
    /* Oldest first, as check-policy --replay reads the file. */
    sc_policy_replay_init(res);
    for (size_t i = l.n; i-- > 0;) {
        size_t end = i + 1 < l.n ? l.starts[i + 1] : l.text.len;
        (void)sc_policy_replay_line(l.text.data + l.starts[i], end - l.starts[i] - 1,
                                    sc_policy_preview_route, p, res);
    }
    if (sc_policy_replay_result_json(res, &out) != 0) {
        sc_buf_free(&out);
        (void)sc_http__send_oom(c->mhd);
        goto cleanup;
    }
    sc_log_info("[Admin] policy preview: replayed %lld, changed %lld in %.3fs", res->replayed,
                res->changed, sc_clock_mono() - t0);
    (void)sc_http__send_json(c->mhd, 200, &out);
cleanup:
    sc_buf_free(&out);
    free(res);
    free(l.starts);
    sc_buf_free(&l.text);
    sc_policy_preview_free(p);
}

enum MHD_Result sc_http__preview_finish(sc_http_conn_t *c)
{
    enum MHD_Result queued = MHD_NO;
    if (!sc_http__admin_allowed(c->mhd, c->cfg, &queued))
        return queued;
    /* Loading a policy and replaying 10,000 lines takes a while: the pool runs it. */
    return sc_http__offload(c, preview_job);
}
