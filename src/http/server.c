/* The libmicrohttpd daemon, the router and the connection lifecycle.
 *
 * Threading: MHD runs a pool of worker threads, each with its own epoll set;
 * every handler below runs on one of them. A connection waiting for Replicate is
 * suspended (MHD_suspend_connection) and resumed from the curl I/O thread, so no
 * worker ever blocks on the network. */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/durable.h"
#include "core/log.h"
#include "http/conn.h"
#include "http/dashboard.h"
#include "http/multipart.h"
#include "lua/policy.h"

#define SC_HTTP_CONNECTION_LIMIT 4096 /* above MAX_CONCURRENT_KONTEXT: each holds a connection */
#define SC_HTTP_IDLE_TIMEOUT 60
/* Each connection's libmicrohttpd memory (its read buffer, request headers,
 * response head). Up to 32 KiB libmicrohttpd takes it with malloc; above, with
 * mmap, and the munmap at every connection's end flushes the TLB of every CPU
 * the process runs on: at 128 KiB that was a third of the connection
 * threads' CPU in a Kontext burst (MHD-worker 2.2-2.3 -> 1.5-1.7 ms per
 * request at 32 KiB). The front door (door.c) keeps request heads within what
 * this holds. */
#define SC_HTTP_MEMORY_LIMIT (32 * 1024)
#define SC_HTTP_BUSY_RETRY_AFTER "1" /* seconds, on a 503 server_busy */

static struct MHD_Daemon *g_daemon;
static const sc_config_t *g_cfg;
static int g_port;
static double g_started; /* monotonic */
static atomic_int g_suspended;
static atomic_int g_detached; /* detached work (async composites) still running */
/* Marks a request without a body whose routing waits for the second call. */
static const char k_deferred = 0;

/* ==== Context lifecycle ==== */

static void field_free(sc_http_field_t *f)
{
    sc_buf_free(&f->data);
    sc_spool_free(f->spool); /* closing it removes the file */
    f->spool = NULL;
    f->present = false;
}

/* Frees the buffered body (fields of a multipart upload, or a JSON body). */
static void drop_upload(sc_http_conn_t *c)
{
    field_free(&c->f_scene);
    field_free(&c->f_product);
    field_free(&c->f_prompt);
    field_free(&c->f_user_id);
    field_free(&c->f_x);
    field_free(&c->f_y);
    field_free(&c->f_scale);
    field_free(&c->f_format);
    field_free(&c->f_mask);
    field_free(&c->f_quality);
    field_free(&c->f_shadow);
    field_free(&c->f_webhook);
    sc_buf_free(&c->body);
}

/* Gives back the request's share of MAX_BUFFERED_UPLOAD_BYTES (once). */
static void budget_release(sc_http_conn_t *c)
{
    sc_http__budget_give(c->budget_held);
    c->budget_held = 0;
}

static void conn_free(sc_http_conn_t *c)
{
    budget_release(c);
    sc_multipart_free(c->mp);
    drop_upload(c);
    sc_image_free(&c->mask);
    free(c->scene_icc);
    free(c->rec);
    sc_image_free(&c->scene);
    sc_image_free(&c->product);
    if (c->result)
        sc_replicate_result_free(c->result);
    if (c->pending)
        MHD_destroy_response(c->pending);
    /* issue 11: a Kontext request that ends without an outcome (the client went
     * away) gives its breaker ticket back; a no-op once an outcome was recorded */
    sc_breaker_release(sc_breaker_global(), &c->breaker_ticket, 0);
    free(c);
}

void sc_http__conn_ref(sc_http_conn_t *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void sc_http__conn_unref(sc_http_conn_t *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        conn_free(c);
}

void sc_http__suspend(sc_http_conn_t *c)
{
    sc_http__conn_ref(c);
    atomic_fetch_add(&g_suspended, 1);
    MHD_suspend_connection(c->mhd);
}

void sc_http__resume(sc_http_conn_t *c)
{
    /* After MHD_resume_connection the handler may run (and the request end) at
     * once on the MHD thread, so only our own reference is touched after it. */
    atomic_fetch_sub(&g_suspended, 1);
    MHD_resume_connection(c->mhd);
    sc_http__conn_unref(c);
}

void sc_http__resume_from_callback(sc_http_conn_t *c, sc_rep_result_t *res)
{
    /* Runs on the curl I/O thread (or on the job's thread when a submit
     * failed). The result is stored before the resume so the handler sees it. */
    c->result = res;
    sc_http__resume(c);
}

/* ==== Compute pool jobs ==== */

/* The connection whose job runs on this thread (NULL outside jobs), and
 * whether that job handed its connection over to a Replicate job. */
static _Thread_local sc_http_conn_t *tl_job;
static _Thread_local bool tl_handed_off;

struct MHD_Response *sc_http__error_response(const char *code, const char *msg)
{
    sc_buf_t b = SC_BUF_INIT;
    int rc = sc_buf_puts(&b, "{\"error\": {\"code\": ");
    rc |= sc_buf_json_str(&b, code);
    rc |= sc_buf_puts(&b, ", \"message\": ");
    rc |= sc_buf_json_str(&b, msg);
    rc |= sc_buf_puts(&b, "}}\n");
    if (rc != 0) {
        sc_buf_free(&b);
        return NULL;
    }
    size_t len = 0;
    char *data = sc_buf_steal(&b, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

/* Drops one hold on a job's connection (the job's own, or a tracked write's);
 * the last resumes it with the stashed answer, or with a 500 when a tracked
 * write failed: the answer must not point at a file a crash could lose. */
static void durable_release(sc_http_conn_t *c)
{
    if (atomic_fetch_sub(&c->dur_hold, 1) != 1)
        return;
    int err = atomic_load(&c->dur_err);
    if (err && c->pending) {
        MHD_destroy_response(c->pending);
        c->pending = NULL;
        char msg[160];
        snprintf(msg, sizeof msg, "cannot save the composite (%s)", strerror(err));
        c->pending = sc_http__error_response("internal_error", msg);
        c->pending_status = 500;
    }
    if (err && c->rec && c->rec->status == SC_RECORD_SUCCEEDED) {
        /* its queued "succeeded" landed, the image did not: the record says so
         * (written here, on the committer, after every tracked write) */
        c->rec->status = SC_RECORD_FAILED;
        c->rec->image_url[0] = '\0';
        snprintf(c->rec->error_code, sizeof c->rec->error_code, "internal_error");
        snprintf(c->rec->error_message, sizeof c->rec->error_message, "cannot save the composite");
        if (sc_record_save(c->cfg->output_dir, c->rec) != 0)
            sc_log_error("cannot save the record of %s", c->rec->id);
    }
    sc_http__resume(c);
}

static void job_trampoline(void *arg)
{
    sc_http_conn_t *c = arg;
    /* Re-entrant: a job may run another inline (sc_http__run_detached when
     * the pool refuses); the outer job's state is restored afterwards. */
    sc_http_conn_t *outer_job = tl_job;
    bool outer_handed = tl_handed_off;
    tl_job = c;
    tl_handed_off = false;
    atomic_store(&c->dur_hold, 1); /* this job; its tracked writes add theirs */
    c->job(c);
    bool handed = tl_handed_off;
    tl_job = outer_job;
    tl_handed_off = outer_handed;
    /* Handed off: the done callback resumes, and c may already be gone. A
     * detached job holds the work's reference instead of a suspension. */
    if (handed)
        return;
    if (c->detached) {
        atomic_fetch_sub(&g_detached, 1); /* this detached work is over */
        sc_http__conn_unref(c);
    } else
        durable_release(c);
}

bool sc_http__durable_track(sc_http_conn_t *c)
{
    if (tl_job != c || c->detached || tl_handed_off || !sc_durable_global())
        return false;
    atomic_fetch_add(&c->dur_hold, 1);
    return true;
}

void sc_http__durable_done(int err, void *ud)
{
    sc_http_conn_t *c = ud;
    if (err) {
        int none = 0;
        atomic_compare_exchange_strong(&c->dur_err, &none, err);
    }
    durable_release(c);
}

void sc_http__detach(sc_http_conn_t *c)
{
    /* The answer is stashed; the connection goes back to MHD with it and the
     * work keeps c alive with a reference of its own. From here on nothing
     * touches c->mhd (the request may be gone at once). */
    sc_http__conn_ref(c);
    c->detached = true;
    atomic_fetch_add(&g_detached, 1);
    sc_http__resume(c);
}

void sc_http__detached_new(sc_http_conn_t *c)
{
    c->detached = true;
    atomic_fetch_add(&g_detached, 1);
}

void sc_http__run_detached(sc_http_conn_t *c, void (*job)(sc_http_conn_t *c))
{
    c->job = job;
    if (sc_http__pool_submit(job_trampoline, c) != 0)
        job_trampoline(c);
}

void sc_http__hand_off(sc_http_conn_t *c)
{
    if (!c->detached)                /* a detached c's stage belongs to the MHD thread */
        c->stage = SC_STAGE_WAITING; /* read by the handler after the callback's resume */
    tl_handed_off = true;
}

enum MHD_Result sc_http__offload(sc_http_conn_t *c, void (*job)(sc_http_conn_t *c))
{
    c->job = job;
    c->stage = SC_STAGE_JOB;
    sc_http__suspend(c);
    if (sc_http__pool_submit(job_trampoline, c) != 0)
        job_trampoline(c); /* the pool is stopping or out of memory: run it here */
    return MHD_YES;
}

enum MHD_Result sc_http__deliver(struct MHD_Connection *conn, unsigned status,
                                 struct MHD_Response *r)
{
    sc_http_conn_t *c = tl_job;
    if (c && c->detached) {
        MHD_destroy_response(r); /* the client already has its (202) answer */
        return MHD_YES;
    }
    if (c && c->mhd == conn) {
        if (c->pending)
            MHD_destroy_response(c->pending); /* a second answer replaces the first */
        c->pending = r;
        c->pending_status = status;
        return MHD_YES;
    }
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    sc_http__edge_set(sc_http__edge_of(conn), SC_EDGE_IDLE);
    sc_http_conn_t *c = *con_cls;
    if (!c || c == (void *)&k_deferred)
        return;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        sc_log_debug("http: request ended early (code %d)", (int)toe);
    *con_cls = NULL;
    /* A request that ended (also by an abort) frees its buffered body now, even
     * when a Replicate job still holds a reference to the context. */
    if (c->stage == SC_STAGE_UPLOAD)
        drop_upload(c);
    budget_release(c);
    sc_http__conn_unref(c);
}

/* ==== Responses ==== */

/* An error answer after which the connection is closed (framing we cannot
 * trust, or a refused body we will not read); retry_after may be NULL. */
static enum MHD_Result send_error_close(struct MHD_Connection *conn, unsigned status,
                                        const char *code, const char *retry_after, const char *msg)
{
    struct MHD_Response *r = sc_http__error_response(code, msg);
    if (!r)
        return sc_http__send_oom(conn);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (retry_after)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    return sc_http__deliver(conn, status, r);
}

enum MHD_Result sc_http__send(struct MHD_Connection *conn, unsigned status, const char *ctype,
                              char *body, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body ? body : (void *)"", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (ctype)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return sc_http__deliver(conn, status, r);
}

enum MHD_Result sc_http__send_json(struct MHD_Connection *conn, unsigned status, sc_buf_t *body)
{
    if (sc_buf_puts(body, "\n") != 0) {
        sc_buf_free(body);
        return sc_http__send_oom(conn);
    }
    size_t len = 0;
    char *data = sc_buf_steal(body, &len);
    return sc_http__send(conn, status, "application/json", data, len);
}

enum MHD_Result sc_http__send_error(struct MHD_Connection *conn, unsigned status, const char *code,
                                    const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct MHD_Response *r = sc_http__error_response(code, msg);
    if (!r)
        return sc_http__send_oom(conn);
    return sc_http__deliver(conn, status, r);
}

enum MHD_Result sc_http__send_oom(struct MHD_Connection *conn)
{
    static const char body[] =
        "{\"error\": {\"code\": \"internal_error\", \"message\": \"out of memory\"}}\n";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return sc_http__deliver(conn, 500, r);
}

enum MHD_Result sc_http__send_405(struct MHD_Connection *conn, const char *allow)
{
    sc_buf_t b = SC_BUF_INIT;
    if (sc_buf_printf(&b,
                      "{\"error\": {\"code\": \"method_not_allowed\", \"message\": "
                      "\"method not allowed; allowed: %s\"}}\n",
                      allow) != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    size_t len = 0;
    char *data = sc_buf_steal(&b, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    return sc_http__deliver(conn, 405, r);
}

/* ==== Simple routes ==== */

static enum MHD_Result handle_health(struct MHD_Connection *conn)
{
    sc_buf_t b = SC_BUF_INIT;
    int rc = sc_buf_printf(&b,
                           "{\"status\": \"ok\", \"version\": \"%s\", \"policy_version\": %lld, "
                           "\"uptime_seconds\": ",
                           SC_VERSION, sc_policy_version());
    rc |= sc_buf_json_num(&b, sc_clock_mono() - g_started);
    rc |= sc_buf_puts(&b, "}");
    if (rc != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    return sc_http__send_json(conn, 200, &b);
}

static bool is_get(const char *method)
{
    return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* First call for a body-carrying POST: allocate the context that collects it. */
static enum MHD_Result begin_body(struct MHD_Connection *conn, sc_http_route_t route,
                                  void **con_cls)
{
    sc_http_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return sc_http__send_oom(conn);
    atomic_init(&c->refs, 1);
    c->mhd = conn;
    c->cfg = g_cfg;
    c->route = route;
    c->stage = SC_STAGE_UPLOAD;
    c->edge = sc_http__edge_of(conn);
    *con_cls = c;

    /* Refuse an announced oversize body before reading a byte of it. */
    long long limit = route == SC_HTTP_ROUTE_COMPOSITE ? g_cfg->max_upload_bytes
                      : route == SC_HTTP_ROUTE_PREVIEW ? SC_HTTP_MAX_POLICY_BODY
                                                       : SC_HTTP_MAX_JSON_BODY;
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end = NULL;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end != cl && *end == '\0' && n > (unsigned long long)limit) {
            c->stage = SC_STAGE_DONE;
            return sc_http__send_error(conn, 413, "payload_too_large",
                                       "request body of %llu bytes is over the limit of %lld bytes",
                                       n, limit);
        }
        /* An announced body takes its whole share of the upload budget now;
         * a chunked one takes it as it arrives (on_request). */
        if (end != cl && *end == '\0') {
            c->budget_announced = true;
            if (!sc_http__budget_take((long long)n)) {
                c->stage = SC_STAGE_DONE;
                sc_log_warn("http: upload of %llu bytes refused: MAX_BUFFERED_UPLOAD_BYTES "
                            "(%lld) in use by other uploads",
                            n, g_cfg->max_buffered_upload_bytes);
                return send_error_close(conn, 503, "server_busy", SC_HTTP_BUSY_RETRY_AFTER,
                                        "too many uploads in progress; retry shortly");
            }
            c->budget_held = (long long)n;
        }
    }
    if (route == SC_HTTP_ROUTE_COMPOSITE)
        return sc_http__composite_begin(c);
    return MHD_YES;
}

/* Body bytes for JSON routes, bounded. */
static enum MHD_Result body_data(sc_http_conn_t *c, const char *data, size_t size)
{
    if (c->refused)
        return MHD_YES;
    size_t limit =
        c->route == SC_HTTP_ROUTE_PREVIEW ? SC_HTTP_MAX_POLICY_BODY : SC_HTTP_MAX_JSON_BODY;
    if (c->body.len + size > limit) {
        c->refused = true;
        c->refused_status = 413;
        c->refused_code = "payload_too_large";
        snprintf(c->refused_msg, sizeof c->refused_msg,
                 "request body is over the limit of %zu bytes", limit);
        sc_buf_free(&c->body);
        return MHD_YES;
    }
    if (sc_buf_append(&c->body, data, size) != 0) {
        c->refused = true;
        c->refused_status = 500;
        c->refused_code = "internal_error";
        snprintf(c->refused_msg, sizeof c->refused_msg, "out of memory");
    }
    return MHD_YES;
}

static bool has_body(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    return te || (cl && strcmp(cl, "0") != 0);
}

/* Framing headers of the request, collected by framing_scan. */
typedef struct framing {
    int n_cl, n_te;
    const char *cl;  /* the first Content-Length */
    bool cl_differs; /* a later Content-Length differs from the first */
    bool cl_bad;     /* a Content-Length that is not a plain decimal number */
    bool te_bad;     /* a Transfer-Encoding other than "chunked" */
} framing_t;

static enum MHD_Result framing_scan(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    framing_t *f = cls;
    if (!key || !value)
        return MHD_YES;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->n_cl++ == 0)
            f->cl = value;
        else if (strcmp(value, f->cl) != 0)
            f->cl_differs = true;
        if (!value[0] || strspn(value, "0123456789") != strlen(value))
            f->cl_bad = true;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->n_te++;
        if (strcasecmp(value, "chunked") != 0)
            f->te_bad = true;
    }
    return MHD_YES;
}

/* Refuses ambiguous framing (request smuggling): the body's end must be clear
 * to every hop, or bytes of it would be read as a next request. Returns NULL
 * when the framing is sound, else the reason. */
static const char *framing_error(struct MHD_Connection *conn)
{
    framing_t f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, framing_scan, &f);
    if (f.n_te > 0 && f.n_cl > 0)
        return "Content-Length together with Transfer-Encoding";
    if (f.cl_differs)
        return "two different Content-Length values";
    if (f.cl_bad)
        return "malformed Content-Length";
    if (f.n_te > 1 || f.te_bad)
        return "unsupported Transfer-Encoding (only a single 'chunked' is accepted)";
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    if (*con_cls == NULL) {
        /* The very first call of a request: its headers are complete. */
        const char *bad = framing_error(conn);
        sc_http__edge_set(sc_http__edge_of(conn), has_body(conn) ? SC_EDGE_BODY : SC_EDGE_BUSY);
        if (bad) {
            /* Answered in the first call: MHD reads nothing more of this
             * connection and closes it after the answer. */
            sc_http__edge_set(sc_http__edge_of(conn), SC_EDGE_BUSY);
            sc_log_info("http: refused a request with ambiguous framing: %s", bad);
            return send_error_close(conn, 400, "bad_request", NULL, bad);
        }
    }
    if (*con_cls == NULL && !has_body(conn)) {
        /* Answering in the very first call makes MHD 0.9.75 discard the rest of
         * the request and close the connection (no keep-alive); so a request
         * without a body is answered at the second call. */
        *con_cls = (void *)&k_deferred;
        return MHD_YES;
    }
    if (*con_cls == (void *)&k_deferred)
        *con_cls = NULL; /* route it now, as a first call */
    sc_http_conn_t *c = *con_cls;

    if (c) {
        if (c->stage == SC_STAGE_DONE) {
            *upload_size = 0; /* a response is queued; drop what still arrives */
            return MHD_YES;
        }
        if (c->stage == SC_STAGE_JOB) {
            /* Resumed by a finished pool job: queue what it stashed. */
            struct MHD_Response *r = c->pending;
            c->pending = NULL;
            c->stage = SC_STAGE_DONE;
            if (!r)
                return MHD_NO; /* the job could not even build an answer */
            enum MHD_Result ret = MHD_queue_response(conn, c->pending_status, r);
            MHD_destroy_response(r);
            return ret;
        }
        if (c->stage == SC_STAGE_WAITING) {
            /* Resumed by a Replicate callback: the output is decoded, encoded
             * and saved on the compute pool. */
            if (c->route == SC_HTTP_ROUTE_COMPOSITE)
                return sc_http__offload(c, sc_http__composite_kontext_done);
            return sc_http__offload(c, sc_http__scenes_done);
        }
        if (*upload_size > 0) {
            size_t n = *upload_size;
            *upload_size = 0;
            c->body_bytes += (long long)n;
            sc_http__edge_progress(c->edge, n);
            if (!c->budget_announced && !c->refused) {
                /* A chunked body takes its budget as it arrives; over it, the
                 * body is dropped and the answer (at its end) is a 503. */
                if (sc_http__budget_take((long long)n)) {
                    c->budget_held += (long long)n;
                } else {
                    drop_upload(c);
                    budget_release(c);
                    c->refused = true;
                    c->refused_status = 503;
                    c->refused_code = "server_busy";
                    snprintf(c->refused_msg, sizeof c->refused_msg,
                             "too many uploads in progress; retry shortly");
                }
            }
            if (c->route == SC_HTTP_ROUTE_COMPOSITE)
                return sc_http__composite_data(c, upload_data, n);
            /* Small JSON bodies: a chunked stream that goes on past the limit
             * is cut rather than read forever. */
            long long lim =
                c->route == SC_HTTP_ROUTE_PREVIEW ? SC_HTTP_MAX_POLICY_BODY : SC_HTTP_MAX_JSON_BODY;
            if (c->body_bytes > lim + SC_HTTP_DRAIN_BYTES)
                return MHD_NO;
            if (c->route == SC_HTTP_ROUTE_ADMIN_POST)
                return MHD_YES; /* the admin POSTs take no body; it is dropped */
            return body_data(c, upload_data, n);
        }
        /* The body is complete. The stage is set before dispatching: a handler
         * that suspends sets its own first, and once a job runs, c->stage is
         * the job's (a read here after the hand-over was a data race). */
        c->t_start = sc_clock_mono();
        c->stage = SC_STAGE_DONE;
        sc_http__edge_set(c->edge, SC_EDGE_BUSY);
        enum MHD_Result r;
        if (c->refused && c->refused_status == 503) {
            r = send_error_close(conn, 503, c->refused_code, SC_HTTP_BUSY_RETRY_AFTER,
                                 c->refused_msg);
        } else if (c->refused) {
            r = sc_http__send_error(conn, (unsigned)c->refused_status, c->refused_code, "%s",
                                    c->refused_msg);
        } else if (c->route == SC_HTTP_ROUTE_COMPOSITE) {
            r = sc_http__composite_finish(c);
        } else if (c->route == SC_HTTP_ROUTE_SCENES) {
            r = sc_http__scenes_finish(c);
        } else if (c->route == SC_HTTP_ROUTE_PREVIEW) {
            r = sc_http__preview_finish(c);
        } else {
            r = sc_http__admin(conn, g_cfg, method, url);
        }
        return r;
    }

    /* ==== First call: route ==== */
    if (strcmp(url, "/health") == 0) {
        if (!is_get(method))
            return sc_http__send_405(conn, "GET, HEAD");
        return handle_health(conn);
    }
    if (strcmp(url, "/api/composite") == 0) {
        if (strcmp(method, "POST") != 0)
            return sc_http__send_405(conn, "POST");
        return begin_body(conn, SC_HTTP_ROUTE_COMPOSITE, con_cls);
    }
    if (strcmp(url, "/api/scenes") == 0) {
        if (strcmp(method, "POST") != 0)
            return sc_http__send_405(conn, "POST");
        return begin_body(conn, SC_HTTP_ROUTE_SCENES, con_cls);
    }
    if (starts_with(url, "/api/composites/") || starts_with(url, "/api/scenes/")) {
        if (!is_get(method))
            return sc_http__send_405(conn, "GET, HEAD");
        sc_http_conn_t tmp = {.mhd = conn, .cfg = g_cfg};
        if (starts_with(url, "/api/composites/") && !strchr(url + strlen("/api/composites/"), '.'))
            return sc_http__serve_record(conn, g_cfg, url + strlen("/api/composites/"));
        if (starts_with(url, "/api/composites/"))
            return sc_http__serve_output(&tmp, NULL, url + strlen("/api/composites/"));
        return sc_http__serve_output(&tmp, "scenes", url + strlen("/api/scenes/"));
    }
    if (starts_with(url, "/api/admin/") || strcmp(url, "/metrics") == 0) {
        /* POSTs with a body are answered once the (ignored) body is read, so
         * that the reply is not mistaken for an early refusal. */
        if (strcmp(method, "POST") == 0) {
            const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_TRANSFER_ENCODING);
            if ((cl && strcmp(cl, "0") != 0) || te)
                return begin_body(conn,
                                  strcmp(url, "/api/admin/policy/preview") == 0
                                      ? SC_HTTP_ROUTE_PREVIEW
                                      : SC_HTTP_ROUTE_ADMIN_POST,
                                  con_cls);
        }
        return sc_http__admin(conn, g_cfg, method, url);
    }
    if (strcmp(url, "/dashboard") == 0 || starts_with(url, "/dashboard/"))
        return sc_http_dashboard(conn, g_cfg, method, url);
    return sc_http__send_error(conn, 404, "not_found", "no route for %s %s", method, url);
}

/* ==== Daemon ==== */

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    sc_log_debug("http: %s", line);
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sslen,
                   char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host[0] ? host : NULL, portstr, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve HOST '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* The listening socket (non-blocking). HOST=:: means every address: IPv4 too
 * (v4-mapped), not IPv6 only. Returns the descriptor or -1 (errno set). */
static int open_listener(const struct sockaddr_storage *ss, socklen_t sslen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)(const void *)ss;
        int *v6only = IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr) ? &zero : &one;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only, sizeof *v6only);
    }
    if (bind(fd, (const struct sockaddr *)ss, sslen) != 0 || listen(fd, 256) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)ss;
        return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    return false;
}

/* Without ADMIN_TOKEN the admin routes answer every loopback peer, and a
 * reverse proxy on this host is one: it would open them to whoever reaches
 * the proxy. */
static void warn_open_admin(const sc_config_t *cfg, const struct sockaddr_storage *ss)
{
    if (cfg->admin_token[0])
        return;
    if (!is_loopback(ss)) {
        sc_log_warn("ADMIN_TOKEN is not set and HOST=%s is not a loopback address: the admin "
                    "routes (/api/admin/..., /metrics) answer every loopback peer, including a "
                    "reverse proxy on this host; set ADMIN_TOKEN",
                    cfg->host);
    } else {
        sc_log_info("ADMIN_TOKEN is not set: the admin routes answer every loopback peer; if a "
                    "reverse proxy on this host forwards to scenecomp, set ADMIN_TOKEN");
    }
}

static unsigned pool_size(const sc_config_t *cfg)
{
    if (cfg->http_threads > 0)
        return (unsigned)cfg->http_threads;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    long n = 2 * cores;
    return (unsigned)(n < 4 ? 4 : n);
}

int sc_http_start(const sc_config_t *cfg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    if (resolve(cfg->host, cfg->port, &ss, &sslen, err, errlen) != 0)
        return -1;
    g_cfg = cfg;
    g_started = sc_clock_mono();
    atomic_init(&g_suspended, 0);

    /* The front door (door.c) owns the listening socket; MHD gets connections
     * from it. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
    int lfd = open_listener(&ss, sslen);
    if (lfd < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d (%s)", cfg->host, cfg->port, strerror(errno));
        return -1;
    }
    unsigned threads = pool_size(cfg);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int compute = cores < 1 ? 1 : (int)cores;
    if (sc_http__pool_start(compute) != 0) {
        close(lfd);
        snprintf(err, errlen, "cannot start the compute threads");
        return -1;
    }
    if (sc_http__edge_start(cfg) != 0) {
        close(lfd);
        sc_http__pool_stop();
        snprintf(err, errlen, "cannot start the connection watchdog");
        return -1;
    }
    g_daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)SC_HTTP_CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)SC_HTTP_IDLE_TIMEOUT, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)SC_HTTP_MEMORY_LIMIT, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, sc_http__edge_notify, NULL, MHD_OPTION_URI_LOG_CALLBACK,
        sc_http__edge_uri_log, NULL, MHD_OPTION_END);
    if (!g_daemon || sc_http__door_start(lfd, g_daemon, cfg->header_timeout_seconds,
                                         cfg->max_connections_per_ip) != 0) {
        if (g_daemon)
            MHD_stop_daemon(g_daemon);
        g_daemon = NULL;
        close(lfd);
        sc_http__edge_stop();
        sc_http__pool_stop();
        snprintf(err, errlen, "cannot start the HTTP daemon");
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    g_port = cfg->port;
    if (getsockname(lfd, (struct sockaddr *)&bound, &blen) == 0)
        g_port =
            ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)(void *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)(void *)&bound)->sin_port);
    sc_log_info("scenecomp %s listening on http://%s:%d (%u connection threads, %d compute "
                "threads)",
                SC_VERSION, cfg->host, g_port, threads, compute);
    warn_open_admin(cfg, &ss);
    return 0;
}

int sc_http_port(void)
{
    return g_daemon ? g_port : 0;
}

void sc_http_quiesce(void)
{
    if (!g_daemon)
        return;
    sc_http__door_quiesce();
}

int sc_http_suspended(void)
{
    return atomic_load(&g_suspended) + atomic_load(&g_detached);
}

int sc_http_connections(void)
{
    if (!g_daemon)
        return 0;
    const union MHD_DaemonInfo *di =
        MHD_get_daemon_info(g_daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return (di ? (int)di->num_connections : 0) + sc_http__door_waiting();
}

void sc_http_stop(void)
{
    if (!g_daemon)
        return;
    sc_http__door_stop(); /* no connection is handed to MHD after this */
    MHD_stop_daemon(g_daemon);
    g_daemon = NULL;
    sc_http__edge_stop();
    sc_http__pool_stop();
    g_port = 0;
}
