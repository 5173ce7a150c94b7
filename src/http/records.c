/* Records, idempotency keys, the decision log and the policy preview over
 * HTTP (see http/records.h and http/conn.h). */
#include "http/records.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/ids.h"
#include "core/log.h"
#include "http/conn.h"
#include "lua/replay.h"
#include "records/decisions.h"
#include "records/idempotency.h"
#include "webhooks/delivery.h"

static const sc_config_t *g_cfg;
static sc_decisions_t *g_decisions;
static void idem_sweep(void);
static sc_webhooks_t *g_webhooks;

int sc_http_records_start(const sc_config_t *cfg, char *err, size_t errlen)
{
    g_cfg = cfg;
    idem_sweep();
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

void sc_http__record_end(sc_http_conn_t *c)
{
    sc_record_t *r = c->rec;
    if (!r)
        return;
    r->completed_at = sc_clock_wall();
    r->durations.total = sc_clock_mono() - c->t_start;
    (void)sc_http__record_save(c);

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

enum MHD_Result sc_http__send_busy(struct MHD_Connection *conn, int retry_after, const char *msg)
{
    sc_buf_t b = SC_BUF_INIT;
    int rc = sc_buf_puts(&b, "{\"error\": {\"code\": \"server_busy\", \"message\": ");
    rc |= sc_buf_json_str(&b, msg);
    rc |= sc_buf_puts(&b, "}}\n");
    if (rc != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    size_t len = 0;
    char *body = sc_buf_steal(&b, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return sc_http__send_oom(conn);
    }
    char ra[16];
    snprintf(ra, sizeof ra, "%d", retry_after);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    return sc_http__deliver(conn, 503, r);
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
 * A claim is a file OUTPUT_DIR/idempotency/<SHA-256 of the key>, holding
 * "<fingerprint> <record id> <expiry, unix seconds>\n", created with link(2)
 * from a complete temp file: link never replaces an existing name, so of
 * several racing claimers (threads, or instances sharing OUTPUT_DIR, as they
 * share the records) exactly one gets the name, and a reader never sees a part
 * of it. So keys hold across restarts and across the instances that serve the
 * same records. An expired claim is removed by the next claimer (and by the
 * sweep at start). The limits store's idem_claim (fleet-wide with Redis, from
 * the fleet work) has the same semantics and can replace this. */

static const char *g_idem_dir_name = "idempotency";

static int idem_path(const char *key, char *out, size_t n)
{
    char h[SC_IDEMPOTENCY_FP_LEN + 1];
    sc_idempotency_fp_t *fp = sc_idempotency_fp_new("Idempotency-Key");
    int rc = fp ? sc_idempotency_fp_add(fp, "key", key, strlen(key)) : -1;
    if (rc == 0)
        rc = sc_idempotency_fp_final(fp, h);
    sc_idempotency_fp_free(fp);
    if (rc != 0)
        return -1;
    snprintf(out, n, "%s/%s/%s", g_cfg->output_dir, g_idem_dir_name, h);
    return 0;
}

/* Parses a claim file. Returns 0, or -1 when it is not one. */
static int idem_parse(const char *txt, char *fp, char *id, double *expires)
{
    char f[SC_IDEMPOTENCY_FP_LEN + 2], i[SC_ID_LEN + 2];
    double e = 0;
    if (sscanf(txt, "%65s %33s %lf", f, i, &e) != 3 || strlen(f) != SC_IDEMPOTENCY_FP_LEN ||
        !sc_id_valid(i, strlen(i)))
        return -1;
    memcpy(fp, f, SC_IDEMPOTENCY_FP_LEN + 1); /* lengths checked above */
    memcpy(id, i, SC_ID_LEN + 1);
    *expires = e;
    return 0;
}

sc_http_idem_t sc_http__idem_claim(double now, const char *key, const char *fp,
                                   const char *record_id, int ttl_seconds, char *existing_fp,
                                   char *existing_id)
{
    char path[SC_CFG_PATH + 128], tmp[SC_CFG_PATH + 160], dir[SC_CFG_PATH + 32], line[160];
    char rnd[SC_ID_LEN + 1];
    snprintf(dir, sizeof dir, "%s/%s", g_cfg->output_dir, g_idem_dir_name);
    if (idem_path(key, path, sizeof path) != 0 || sc_fs_mkdirs(dir) != 0)
        return SC_HTTP_IDEM_UNAVAILABLE;
    int n = snprintf(line, sizeof line, "%s %s %.0f\n", fp, record_id, now + ttl_seconds);
    for (int attempt = 0; attempt < 3; attempt++) {
        sc_id_new(rnd);
        snprintf(tmp, sizeof tmp, "%s" SC_FS_TEMP_INFIX "%.8s", path, rnd);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
            return SC_HTTP_IDEM_UNAVAILABLE;
        bool ok = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
        int lrc = ok ? link(tmp, path) : -1;
        int e = errno;
        unlink(tmp);
        if (!ok)
            return SC_HTTP_IDEM_UNAVAILABLE;
        if (lrc == 0) {
            int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) { /* the claim survives a crash, as the record does */
                fsync(dfd);
                close(dfd);
            }
            return SC_HTTP_IDEM_CLAIMED;
        }
        if (e != EEXIST)
            return SC_HTTP_IDEM_UNAVAILABLE;
        char *txt = NULL;
        size_t len = 0;
        if (sc_fs_read_file(path, 4096, &txt, &len) != 0) {
            if (errno == ENOENT)
                continue; /* forgotten or expired meanwhile: claim again */
            return SC_HTTP_IDEM_UNAVAILABLE;
        }
        double expires = 0;
        int prc = idem_parse(txt, existing_fp, existing_id, &expires);
        free(txt);
        if (prc == 0 && expires > now)
            return SC_HTTP_IDEM_EXISTING;
        /* Expired (or not a claim): remove it and claim again. Two claimers
         * racing on an expired key may both remove; only one link wins. */
        (void)unlink(path);
    }
    return SC_HTTP_IDEM_UNAVAILABLE;
}

void sc_http__idem_forget(const char *key)
{
    char path[SC_CFG_PATH + 128];
    if (idem_path(key, path, sizeof path) == 0)
        (void)unlink(path);
}

/* Removes expired claims (and temp files older than a minute) at start. */
static void idem_sweep(void)
{
    char dir[SC_CFG_PATH + 32], path[SC_CFG_PATH + 128];
    snprintf(dir, sizeof dir, "%s/%s", g_cfg->output_dir, g_idem_dir_name);
    (void)sc_fs_remove_stale_temps(dir, 60.0);
    DIR *d = opendir(dir);
    if (!d)
        return;
    double now = sc_clock_wall();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strlen(e->d_name) != SC_IDEMPOTENCY_FP_LEN)
            continue;
        snprintf(path, sizeof path, "%s/%.64s", dir, e->d_name); /* 64 checked above */
        char *txt = NULL, fp[SC_IDEMPOTENCY_FP_LEN + 1], id[SC_ID_LEN + 1];
        size_t len = 0;
        double expires = 0;
        if (sc_fs_read_file(path, 4096, &txt, &len) != 0)
            continue;
        if (idem_parse(txt, fp, id, &expires) != 0 || expires <= now)
            (void)unlink(path);
        free(txt);
    }
    closedir(d);
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
