/* Replicate predictions client: one I/O thread drives every job through libcurl's
 * multi interface (curl docs/examples/10-at-a-time.c pattern, CURLOPT_PRIVATE =
 * the job). A job is a small state machine:
 *
 *   CREATE --2xx, not terminal--> POLL (every poll_ms) --succeeded--> DOWNLOAD --> done
 *      \--succeeded--> DOWNLOAD        \--deadline--> CANCEL (POST urls.cancel) --> done
 *
 * Nothing here blocks: waits (poll interval, backoff, Retry-After) are per-job
 * wake-up times folded into the epoll_wait timeout. The loop is libcurl's
 * event-driven API (curl_multi_socket_action, docs/examples/ephiperfifo.c): one
 * epoll set holds curl's sockets, an eventfd for wake-ups and a second epoll
 * set with the watched client sockets, so one answer costs O(1), not a poll()
 * over every connection of a 1,000-prediction burst. Only the I/O thread
 * touches jobs once they are queued; other threads only append to the incoming
 * list under g.mu and wake the loop (loop_wake).
 *
 * Retry policy (documented in docs/replicate-client.md):
 *   - create: 429 retried (Retry-After header seconds or HTTP date, else body
 *     retry_after, else 0.5 s * 2^n with jitter) while the wait ends before the
 *     deadline, else SC_REP_API_ERROR; connect failures (nothing reached the
 *     server) retried up to 3 times; a 5xx retried ONCE (a prediction might
 *     exist; Cancel-After bounds an orphan), then SC_REP_API_ERROR; any other
 *     transport error after the request may have been sent is not retried.
 *   - poll and download GETs: 429, 5xx and transport errors retried with backoff
 *     up to 5 consecutive failures while the deadline allows.
 *   - 4xx other than 429: SC_REP_API_ERROR at once with the problem detail. */
#include "replicate/client.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "image/codec.h"
#include "replicate/base64.h"

#define REP_DEFAULT_POLL_MS 500
#define REP_MARGIN_S 5              /* curl timeout beyond Prefer: wait */
#define REP_CANCEL_AFTER_EXTRA_S 10 /* Cancel-After beyond our own deadline */
#define REP_CANCEL_TIMEOUT_MS 5000  /* best-effort cancel after the deadline */
#define REP_SHUTDOWN_CANCEL_TIMEOUT_MS 2000
#define REP_MAX_OUTPUT_BYTES (64u << 20) /* downloaded image cap */
#define REP_MAX_API_BYTES (96u << 20)    /* JSON bodies (a data: output is inline) */
#define REP_MAX_GET_FAILS 5              /* consecutive 5xx/transport errors on GETs */
#define REP_MAX_CONNECT_RETRIES 3
#define REP_MAX_429_RETRIES 8
#define REP_MAX_SIDE 16384                   /* "sane" output image side */
#define REP_JOURNAL_COMPACT_BYTES (1u << 20) /* rewrite the journal past this size */
#define REP_JOURNAL_MAX_BYTES (64u << 20)    /* a larger journal is not ours */

typedef enum {
    PH_CREATE = 0,
    PH_POLL,
    PH_DOWNLOAD,
    PH_CANCEL,
    PH_DONE,
    PH_UPLOAD, /* issue 11: POST /files (multipart), then done */
} rep_phase_t;

static const char *const k_phase_names[] = {"create", "poll", "download",
                                            "cancel", "done", "upload"};

typedef struct rep_job {
    struct rep_job *next;
    char *model;
    char *body; /* {"input": ...}; kept until the create got a 2xx (retries resend it) */
    size_t body_len;
    double t0, deadline;
    sc_rep_done_fn done;
    void *ud;
    rep_phase_t phase;
    bool no_token;
    bool bad_model; /* not "owner/name": never put into a URL */
    /* the transfer in flight (easy != NULL) or the time to start the next one */
    CURL *easy;
    struct curl_slist *hdrs;
    sc_buf_t resp;
    size_t resp_cap;
    bool resp_too_big;
    double retry_after_hdr; /* seconds from a Retry-After header, < 0 = none */
    double started;         /* mono time the transfer started (for the debug log) */
    double wake_at;         /* > 0: start the phase's request at this mono time */
    int fails;              /* consecutive retryable failures in this phase */
    int create_5xx, connect_retries, retries_429;
    char *get_url, *cancel_url, *out_url;
    sc_rep_result_t *res;
    /* issue 11: a Files API upload job (sc_replicate_upload) */
    bool is_upload;
    uint8_t *up_data; /* owned bytes, or NULL when they are read from up_fd */
    int up_fd;        /* upload jobs: owned descriptor, the bytes at offset 0 (-1: up_data) */
    size_t up_len;
    size_t up_pos; /* curl's read position in the bytes */
    char *up_name, *up_type;
    curl_mime *mime;    /* of the transfer in flight */
    int watch_fd;       /* client socket to watch, -1 = none (or not any more) */
    bool watching;      /* watch_fd is in g.watch_ep (I/O thread only) */
    bool client_gone;   /* the client left while the create waited: cancel on its answer */
    bool orphan;        /* only cancels a prediction a dead process left running */
    bool journaled;     /* "+id" is in the journal: write "-id" when over */
    bool cancel_unsure; /* the cancel got no answer: the prediction may still run */
    void (*upstream_over)(void *ud);
    void *upstream_ud;
    void (*on_created)(const char *prediction_id, void *ud);
    void *created_ud;
    sc_durable_ticket_t *gate; /* the create waits until it is durable (NULL: open) */
} rep_job_t;

static struct {
    pthread_mutex_t mu;
    bool running;  /* init done, thread alive */
    bool stopping; /* shutdown requested; submit refuses */
    const sc_config_t *cfg;
    CURLM *multi;
    pthread_t thread;
    rep_job_t *in_head, *in_tail; /* submitted, not yet seen by the I/O thread */
    /* I/O thread only */
    rep_job_t *active;
    int poll_ms;
    uint64_t rng;
    int ep;          /* epoll: curl's sockets (data.fd), wake_fd, watch_ep */
    int wake_fd;     /* eventfd: submit, gate tickets, shutdown */
    int watch_ep;    /* epoll: watched client sockets (data.ptr = the job) */
    double timer_at; /* curl's timer (CURLMOPT_TIMERFUNCTION), 0 = none */
    double sweep_at; /* the earliest job wake-up or deadline the last sweep saw */
    bool dirty;      /* a job may have changed state: sweep now */
    /* The journal: published once by sc_replicate_journal_open (before any
     * job that uses it), then written by the I/O thread only. */
    atomic_int jfd;
    char jpath[SC_CFG_PATH + 64];
    size_t jbytes; /* written since the last compaction */
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .jfd = -1, .ep = -1, .wake_fd = -1, .watch_ep = -1};

/* ==== Small helpers ==== */

const char *sc_replicate_status_name(sc_rep_status_t s)
{
    switch (s) {
    case SC_REP_OK:
        return "ok";
    case SC_REP_TIMEOUT:
        return "timeout";
    case SC_REP_API_ERROR:
        return "api_error";
    case SC_REP_INVALID_OUTPUT:
        return "invalid_output";
    case SC_REP_NO_TOKEN:
        return "no_token";
    case SC_REP_CLIENT_GONE:
        return "client_gone";
    }
    return "unknown";
}

void sc_replicate_result_free(sc_rep_result_t *res)
{
    if (!res)
        return;
    free(res->output);
    free(res);
}

/* Uniform in [0, 1); I/O thread only (xorshift64*). */
static double rng_unit(void)
{
    g.rng ^= g.rng >> 12;
    g.rng ^= g.rng << 25;
    g.rng ^= g.rng >> 27;
    return (double)((g.rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* 0.5 s * 2^n, +-20 % jitter, capped at 8 s. */
static double backoff_seconds(int n)
{
    double d = 0.5 * pow(2.0, n < 5 ? n : 5);
    if (d > 8.0)
        d = 8.0;
    return d * (0.8 + 0.4 * rng_unit());
}

static bool has_prefix_ci(const char *s, const char *p)
{
    return strncasecmp(s, p, strlen(p)) == 0;
}

/* Replaces every occurrence of the token in s (in place), so an upstream body
 * that echoes it can never carry it into a result or a log line. */
static void scrub_token(char *s)
{
    const char *tok = g.cfg ? g.cfg->replicate_api_token : "";
    size_t tl = strlen(tok);
    if (tl == 0)
        return;
    char *p;
    while ((p = strstr(s, tok)) != NULL)
        memmove(p, p + tl, strlen(p + tl) + 1);
}

/* Copies a human-readable reason out of an error body: problem+json title and
 * detail, else the <title> of an HTML page, else the start of the text. */
static void body_reason(const char *body, size_t len, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!body || len == 0) {
        snprintf(out, outlen, "(empty body)");
        return;
    }
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (j && cJSON_IsObject(j)) {
        const char *title = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "title"));
        const char *detail = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "detail"));
        if (!detail)
            detail = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "error"));
        if (title && detail)
            snprintf(out, outlen, "%s: %s", title, detail);
        else if (title || detail)
            snprintf(out, outlen, "%s", title ? title : detail);
        cJSON_Delete(j);
        if (out[0])
            goto tidy;
    } else {
        cJSON_Delete(j);
    }
    const char *t = NULL;
    for (size_t i = 0; i + 7 <= len; i++)
        if (strncasecmp(body + i, "<title>", 7) == 0) {
            t = body + i + 7;
            break;
        }
    size_t n = 0;
    if (t) {
        const char *end = t;
        while ((size_t)(end - body) < len && *end != '<')
            end++;
        n = (size_t)(end - t);
    } else {
        t = body;
        n = len;
    }
    if (n > 200)
        n = 200;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, t, n);
    out[n] = '\0';
tidy:
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            *p = ' ';
    for (size_t l = strlen(out); l > 0 && out[l - 1] == ' '; l--)
        out[l - 1] = '\0';
    scrub_token(out);
}

/* ==== Job completion ==== */

/* Sets the job's outcome and marks it done; the sweep calls the callback. */
static void job_finish(rep_job_t *j, sc_rep_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void job_finish(rep_job_t *j, sc_rep_status_t st, const char *fmt, ...)
{
    j->res->status = st;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->res->message, sizeof j->res->message, fmt, ap);
        va_end(ap);
        scrub_token(j->res->message);
    }
    j->phase = PH_DONE;
    j->wake_at = 0;
}

/* ==== The loop's wake-ups and watched client sockets ==== */

/* Any thread, with g.mu held (g.wake_fd lives as long as g.running). */
static void loop_wake(void)
{
    uint64_t one = 1;
    if (g.wake_fd >= 0)
        (void)!write(g.wake_fd, &one, sizeof one);
}

/* Watch the job's client socket for its peer leaving. */
static void watch_start(rep_job_t *j)
{
    if (j->watch_fd < 0 || j->watching)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = j};
    if (epoll_ctl(g.watch_ep, EPOLL_CTL_ADD, j->watch_fd, &ev) == 0)
        j->watching = true;
    else
        j->watch_fd = -1; /* not watchable: the job runs to its end unwatched */
}

/* Stop watching. Always before the job's done callback: after it the
 * connection may close and its fd number go to another client. */
static void watch_stop(rep_job_t *j)
{
    if (j->watching)
        (void)epoll_ctl(g.watch_ep, EPOLL_CTL_DEL, j->watch_fd, NULL);
    j->watching = false;
    j->watch_fd = -1;
}

static void job_free(rep_job_t *j)
{
    watch_stop(j);
    if (j->easy) {
        curl_multi_remove_handle(g.multi, j->easy);
        curl_easy_cleanup(j->easy);
    }
    curl_slist_free_all(j->hdrs);
    sc_buf_free(&j->resp);
    free(j->model);
    free(j->body);
    free(j->get_url);
    free(j->cancel_url);
    free(j->out_url);
    sc_replicate_result_free(j->res);
    curl_mime_free(j->mime);
    free(j->up_data);
    if (j->is_upload && j->up_fd >= 0) /* calloc'd jobs of other kinds hold 0 here */
        close(j->up_fd);
    free(j->up_name);
    free(j->up_type);
    sc_durable_ticket_unref(j->gate);
    free(j);
}

/* ==== The prediction journal (I/O thread) ==== */

/* Rewrites the journal with the ids still open (the active jobs'), so it never
 * grows without bound under constant load. Best effort. */
static void journal_compact(void)
{
    sc_buf_t b = SC_BUF_INIT;
    int rc = 0;
    for (rep_job_t *j = g.active; j; j = j->next)
        if (j->journaled)
            rc |= sc_buf_printf(&b, "+%s\n", j->res ? j->res->prediction_id : "");
    if (rc != 0 || sc_fs_write_atomic(g.jpath, b.data ? b.data : "", b.len) != 0) {
        sc_buf_free(&b);
        return;
    }
    int fd = open(g.jpath, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
        close(atomic_exchange(&g.jfd, fd));
        g.jbytes = b.len;
    }
    sc_buf_free(&b);
}

/* Appends "+id" (created) or "-id" (over). A plain write: the line is in the
 * page cache when it returns, which is what surviving a kill -9 needs. */
static void journal_line(char op, const char *id)
{
    int fd = atomic_load(&g.jfd);
    if (fd < 0 || !id[0])
        return;
    char line[80];
    int n = snprintf(line, sizeof line, "%c%s\n", op, id);
    if (n <= 0 || n >= (int)sizeof line)
        return;
    if (write(fd, line, (size_t)n) != n)
        sc_log_warn("replicate: cannot write the prediction journal %s: %s", g.jpath,
                    strerror(errno));
    g.jbytes += (size_t)n;
    if (op == '-' && g.jbytes > REP_JOURNAL_COMPACT_BYTES)
        journal_compact();
}

/* ==== Transfers ==== */

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    rep_job_t *j = ud;
    size_t n = size * nmemb;
    if (j->resp.len + n > j->resp_cap) {
        j->resp_too_big = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (sc_buf_append(&j->resp, ptr, n) != 0)
        return 0;
    return n;
}

/* Picks Retry-After out of the response headers: delay-seconds or an HTTP date. */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    rep_job_t *j = ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof name - 1 && n < 200 && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        char v[200];
        memcpy(v, ptr + sizeof name - 1, n - (sizeof name - 1));
        v[n - (sizeof name - 1)] = '\0';
        char *s = v;
        while (*s == ' ' || *s == '\t')
            s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
            *--e = '\0';
        char *end;
        double secs = strtod(s, &end);
        if (end != s && *end == '\0' && secs >= 0) {
            j->retry_after_hdr = secs;
        } else {
            time_t t = curl_getdate(s, NULL);
            if (t > 0) {
                double d = (double)t - sc_clock_wall();
                j->retry_after_hdr = d > 0 ? d : 0;
            }
        }
    }
    return n;
}

/* curl_mime_data_cb: the upload's bytes, streamed from its descriptor (a
 * spooled upload: nothing copied into memory) or from its own buffer. */
static size_t upload_read(char *buf, size_t size, size_t nitems, void *arg)
{
    rep_job_t *j = arg;
    size_t want = size * nitems, left = j->up_len - j->up_pos;
    if (want > left)
        want = left;
    if (want == 0)
        return 0;
    if (j->up_fd < 0) {
        memcpy(buf, j->up_data + j->up_pos, want);
    } else {
        ssize_t n;
        do
            n = pread(j->up_fd, buf, want, (off_t)j->up_pos);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            return CURL_READFUNC_ABORT; /* the file is shorter than it said: fail the upload */
        want = (size_t)n;
    }
    j->up_pos += want;
    return want;
}

static int upload_seek(void *arg, curl_off_t offset, int origin)
{
    rep_job_t *j = arg;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > j->up_len)
        return CURL_SEEKFUNC_CANTSEEK;
    j->up_pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

/* Starts one HTTP request for j. api: adds the Authorization/JSON headers (never
 * sent to output hosts). extra_hdr: up to two more header lines (may be NULL).
 * Returns 0, or -1 when the handle could not be set up (j is then finished). */
static int job_request(rep_job_t *j, const char *method, const char *url, bool api,
                       const char *body, size_t body_len, long timeout_ms, const char *hdr1,
                       const char *hdr2, size_t cap)
{
    CURL *e = curl_easy_init();
    if (!e)
        goto fail;
    sc_buf_reset(&j->resp);
    j->resp_cap = cap;
    j->resp_too_big = false;
    j->retry_after_hdr = -1;
    curl_slist_free_all(j->hdrs);
    j->hdrs = NULL;
    if (api) {
        char auth[SC_CFG_STR + 32];
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", g.cfg->replicate_api_token);
        struct curl_slist *h = curl_slist_append(NULL, auth);
        memset(auth, 0, sizeof auth);
        if (!h)
            goto fail;
        j->hdrs = h;
        if (!curl_slist_append(h, "Accept: application/json"))
            goto fail;
        if (strcmp(method, "POST") == 0 && !j->is_upload &&
            !curl_slist_append(h, "Content-Type: application/json"))
            goto fail;
        /* large JSON bodies: do not stall a second waiting for 100-continue */
        if (!curl_slist_append(h, "Expect:"))
            goto fail;
        if (hdr1 && !curl_slist_append(h, hdr1))
            goto fail;
        if (hdr2 && !curl_slist_append(h, hdr2))
            goto fail;
    }
    if (timeout_ms < 1)
        timeout_ms = 1;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, j);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "scenecomp/" SC_VERSION);
    /* wait to multiplex only where h2 can come (ALPN, https): on http:// it queues every
     * request behind the first answer, i.e. a whole Prefer: wait */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncmp(url, "https:", 6) == 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* curl's smallest upload buffer (64 KB by default): a burst of 1,000 Files API
     * uploads holds one each */
    curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 16384L);
    if (j->hdrs)
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, j->hdrs);
    if (strcmp(method, "POST") == 0 && j->is_upload && j->phase == PH_UPLOAD) {
        /* issue 11: multipart/form-data, part `content` with the bytes */
        curl_mime_free(j->mime);
        j->up_pos = 0; /* a retry sends the bytes again from the start */
        j->mime = curl_mime_init(e);
        curl_mimepart *part = j->mime ? curl_mime_addpart(j->mime) : NULL;
        if (!part || curl_mime_name(part, "content") != CURLE_OK ||
            curl_mime_data_cb(part, (curl_off_t)j->up_len, upload_read, upload_seek, NULL, j) !=
                CURLE_OK ||
            curl_mime_filename(part, j->up_name) != CURLE_OK ||
            curl_mime_type(part, j->up_type) != CURLE_OK)
            goto fail;
        curl_easy_setopt(e, CURLOPT_MIMEPOST, j->mime);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    } else if (!api) {
        /* output download: follow the CDN's redirects, never to another scheme */
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, 3L);
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)cap);
    }
    if (curl_multi_add_handle(g.multi, e) != CURLM_OK)
        goto fail;
    j->easy = e;
    j->started = sc_clock_mono();
    j->wake_at = 0;
    return 0;
fail:
    if (e)
        curl_easy_cleanup(e);
    curl_slist_free_all(j->hdrs);
    j->hdrs = NULL;
    if (j->phase == PH_CANCEL)
        j->phase = PH_DONE; /* keep the status already decided */
    else
        job_finish(j, SC_REP_API_ERROR, "could not start HTTP request (out of memory)");
    return -1;
}

static double remaining(const rep_job_t *j)
{
    return j->deadline - sc_clock_mono();
}

/* Caps a per-request timeout by the job's deadline. */
static long capped_ms(const rep_job_t *j, double secs)
{
    double r = remaining(j);
    if (secs > r)
        secs = r;
    return (long)ceil(secs * 1000.0);
}

static void start_create(rep_job_t *j)
{
    char url[SC_CFG_STR + 300];
    snprintf(url, sizeof url, "%s/models/%s/predictions", g.cfg->replicate_api_base, j->model);
    /* wait=N must answer before our deadline so that we learn the id and can
     * cancel: one second of slack, clamped to Replicate's 1..60. With less than
     * two seconds left there is no room for a sync wait: create asynchronously
     * (no Prefer header) and poll, so a short deadline still gets its cancel. */
    double r = remaining(j);
    long n = (long)floor(r - 1.0);
    if (n > 60)
        n = 60;
    long ca = (long)ceil(r) + REP_CANCEL_AFTER_EXTRA_S;
    if (ca < 5)
        ca = 5;
    char prefer[48], cancel_after[48];
    snprintf(prefer, sizeof prefer, "Prefer: wait=%ld", n);
    snprintf(cancel_after, sizeof cancel_after, "Cancel-After: %lds", ca);
    j->phase = PH_CREATE;
    j->res->attempts++;
    job_request(j, "POST", url, true, j->body, j->body_len,
                capped_ms(j, (double)(n >= 1 ? n : 0) + REP_MARGIN_S), cancel_after,
                n >= 1 ? prefer : NULL, REP_MAX_API_BYTES);
}

static void start_poll(rep_job_t *j)
{
    j->phase = PH_POLL;
    job_request(j, "GET", j->get_url, true, NULL, 0, capped_ms(j, 30.0), NULL, NULL,
                REP_MAX_API_BYTES);
}

static void start_download(rep_job_t *j)
{
    j->phase = PH_DOWNLOAD;
    job_request(j, "GET", j->out_url, false, NULL, 0, capped_ms(j, 120.0), NULL, NULL,
                REP_MAX_OUTPUT_BYTES);
}

static void start_upload(rep_job_t *j); /* issue 11, below */
static void on_upload_done(rep_job_t *j, CURLcode code, long http);

/* The deadline passed (or the client is stopping): the outcome is decided now;
 * if a prediction exists it is cancelled upstream before the callback runs, so
 * a caller's concurrency slot is released only once Replicate was told. */
static void job_abort(rep_job_t *j, sc_rep_status_t st, const char *why, long cancel_timeout_ms)
{
    if (j->easy) {
        curl_multi_remove_handle(g.multi, j->easy);
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
    }
    rep_phase_t was = j->phase;
    job_finish(j, st, "%s (%.1fs, during %s)", why, sc_clock_mono() - j->t0, k_phase_names[was]);
    if (j->cancel_url && (was == PH_CREATE || was == PH_POLL)) {
        j->phase = PH_CANCEL;
        j->res->cancel_sent = true;
        j->cancel_unsure = true; /* until the cancel is answered */
        job_request(j, "POST", j->cancel_url, true, "", 0, cancel_timeout_ms, NULL, NULL, 1u << 20);
    }
}

static void job_timeout(rep_job_t *j)
{
    job_abort(j, SC_REP_TIMEOUT, "deadline passed", REP_CANCEL_TIMEOUT_MS);
}

/* Schedules the current phase's request again after delay seconds; false when
 * that would start after the deadline. */
static bool schedule_retry(rep_job_t *j, double delay)
{
    double at = sc_clock_mono() + delay;
    if (at >= j->deadline)
        return false;
    j->wake_at = at;
    return true;
}

static void start_phase(rep_job_t *j)
{
    switch (j->phase) {
    case PH_CREATE:
        start_create(j);
        break;
    case PH_POLL:
        start_poll(j);
        break;
    case PH_DOWNLOAD:
        start_download(j);
        break;
    case PH_UPLOAD:
        start_upload(j);
        break;
    default:
        break;
    }
}

/* ==== Responses ==== */

/* Validates the downloaded/decoded bytes and finishes the job. Takes data. */
static void finish_output(rep_job_t *j, uint8_t *data, size_t len)
{
    sc_image_info_t info;
    long long maxpx = g.cfg->max_image_pixels > 0 ? g.cfg->max_image_pixels : 40000000LL;
    sc_codec_status_t st = sc_codec_probe(data, len, maxpx, &info);
    if (st == SC_CODEC_TOO_LARGE ||
        (st == SC_CODEC_OK && (info.width > REP_MAX_SIDE || info.height > REP_MAX_SIDE))) {
        free(data);
        job_finish(j, SC_REP_INVALID_OUTPUT, "output image too large");
        return;
    }
    if (st != SC_CODEC_OK || info.width < 1 || info.height < 1) {
        free(data);
        job_finish(j, SC_REP_INVALID_OUTPUT, "output is not a PNG or JPEG image (%zu bytes)", len);
        return;
    }
    j->res->output = data;
    j->res->output_len = len;
    job_finish(j, SC_REP_OK, NULL);
}

/* Starts on the first output value: a data: URI is decoded here, an http(s) URL
 * downloaded (no Authorization: output hosts do not need the token). */
static void handle_output_value(rep_job_t *j, const char *v)
{
    if (!v || !*v) {
        job_finish(j, SC_REP_INVALID_OUTPUT, "prediction succeeded without an output");
        return;
    }
    if (has_prefix_ci(v, "data:")) {
        const char *comma = strchr(v, ',');
        const char *b64 = comma ? strstr(v, ";base64,") : NULL;
        if (!comma || !b64 || b64 + 7 != comma) {
            job_finish(j, SC_REP_INVALID_OUTPUT, "data: output is not base64");
            return;
        }
        size_t n = strlen(comma + 1);
        if (n / 4 * 3 > REP_MAX_OUTPUT_BYTES) {
            job_finish(j, SC_REP_INVALID_OUTPUT, "output larger than 64 MiB");
            return;
        }
        uint8_t *data;
        size_t len;
        if (sc_base64_decode(comma + 1, n, &data, &len) != 0) {
            job_finish(j, SC_REP_INVALID_OUTPUT, "data: output is not valid base64");
            return;
        }
        finish_output(j, data, len);
        return;
    }
    if (has_prefix_ci(v, "https://") || has_prefix_ci(v, "http://")) {
        free(j->out_url);
        j->out_url = strdup(v);
        if (!j->out_url) {
            job_finish(j, SC_REP_API_ERROR, "out of memory");
            return;
        }
        j->fails = 0;
        start_download(j);
        return;
    }
    job_finish(j, SC_REP_INVALID_OUTPUT, "output URL has an unsupported scheme");
}

static char *dup_http_url(const cJSON *v)
{
    const char *s = cJSON_GetStringValue(v);
    if (!s || !(has_prefix_ci(s, "https://") || has_prefix_ci(s, "http://")))
        return NULL;
    return strdup(s);
}

/* A prediction object from create or poll: remember id/urls, then act on status. */
static void handle_prediction(rep_job_t *j, cJSON *obj)
{
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "id"));
    if (id && !j->res->prediction_id[0]) {
        size_t n = strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_");
        if (n == strlen(id) && n > 0 && n < sizeof j->res->prediction_id) {
            memcpy(j->res->prediction_id, id, n + 1);
            journal_line('+', j->res->prediction_id);
            j->journaled = atomic_load(&g.jfd) >= 0;
            /* Not for a client gone while the create waited: its done already
             * ran (early result), so ud may be gone. */
            if (j->on_created && !j->client_gone)
                j->on_created(j->res->prediction_id, j->created_ud);
        }
    }
    const cJSON *urls = cJSON_GetObjectItemCaseSensitive(obj, "urls");
    if (!j->get_url) {
        j->get_url = dup_http_url(cJSON_GetObjectItemCaseSensitive(urls, "get"));
        if (!j->get_url && j->res->prediction_id[0]) {
            sc_buf_t b = SC_BUF_INIT;
            if (sc_buf_printf(&b, "%s/predictions/%s", g.cfg->replicate_api_base,
                              j->res->prediction_id) == 0)
                j->get_url = sc_buf_steal(&b, NULL);
            sc_buf_free(&b);
        }
    }
    if (!j->cancel_url) {
        j->cancel_url = dup_http_url(cJSON_GetObjectItemCaseSensitive(urls, "cancel"));
        if (!j->cancel_url && j->res->prediction_id[0]) {
            sc_buf_t b = SC_BUF_INIT;
            if (sc_buf_printf(&b, "%s/predictions/%s/cancel", g.cfg->replicate_api_base,
                              j->res->prediction_id) == 0)
                j->cancel_url = sc_buf_steal(&b, NULL);
            sc_buf_free(&b);
        }
    }
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "status"));
    if (j->client_gone) {
        /* The client left while this create waited: now that the id is known,
         * stop the prediction unless it is already over. */
        bool over = status && (strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
                               strcmp(status, "canceled") == 0 || strcmp(status, "aborted") == 0);
        if (!over && j->cancel_url)
            job_abort(j, SC_REP_CLIENT_GONE, "client disconnected", REP_CANCEL_TIMEOUT_MS);
        else
            job_finish(j, SC_REP_CLIENT_GONE, "client disconnected");
        return;
    }
    if (!status) {
        job_finish(j, SC_REP_API_ERROR, "malformed prediction: no status");
        return;
    }
    if (strcmp(status, "succeeded") == 0) {
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(obj, "output");
        if (cJSON_IsArray(out))
            out = cJSON_GetArrayItem(out, 0);
        handle_output_value(j, cJSON_GetStringValue(out));
        return;
    }
    if (strcmp(status, "failed") == 0 || strcmp(status, "canceled") == 0 ||
        strcmp(status, "aborted") == 0) {
        const char *err = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "error"));
        char reason[400];
        if (err && *err)
            snprintf(reason, sizeof reason, "%s", err);
        else
            snprintf(reason, sizeof reason, "status %s", status);
        for (char *p = reason; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
        job_finish(j, SC_REP_API_ERROR, "prediction failed: %s", reason);
        return;
    }
    /* starting / processing (or a status we do not know): keep polling. A
     * processing answer that already carries output is polled to succeeded too,
     * the safer rule of the protocol notes. */
    if (!j->get_url) {
        job_finish(j, SC_REP_API_ERROR, "prediction has no id to poll");
        return;
    }
    j->phase = PH_POLL;
    j->fails = 0;
    j->wake_at = sc_clock_mono() + g.poll_ms / 1000.0;
}

/* Delay before retrying a 429: Retry-After header, then body retry_after, then backoff. */
static double delay_429(rep_job_t *j, int n)
{
    if (j->retry_after_hdr >= 0)
        return j->retry_after_hdr;
    cJSON *b = cJSON_ParseWithLength(j->resp.data ? j->resp.data : "", j->resp.len);
    double d = -1;
    const cJSON *ra = cJSON_GetObjectItemCaseSensitive(b, "retry_after");
    if (cJSON_IsNumber(ra) && ra->valuedouble >= 0)
        d = ra->valuedouble;
    cJSON_Delete(b);
    return d >= 0 ? d : backoff_seconds(n);
}

static bool is_connect_error(CURLcode c)
{
    return c == CURLE_COULDNT_CONNECT || c == CURLE_COULDNT_RESOLVE_HOST ||
           c == CURLE_COULDNT_RESOLVE_PROXY;
}

static void on_create_done(rep_job_t *j, CURLcode code, long http)
{
    char reason[300];
    if (j->client_gone && !(code == CURLE_OK && http >= 200 && http < 300)) {
        /* No id came back, so nothing to cancel (a 5xx may have created one:
         * Cancel-After ends it); above all, never retry a create nobody wants. */
        job_finish(j, SC_REP_CLIENT_GONE, "client disconnected");
        return;
    }
    if (code != CURLE_OK) {
        if (code == CURLE_OPERATION_TIMEDOUT || remaining(j) <= 0.001) {
            job_timeout(j); /* create never answered: no id, Cancel-After is the backstop */
            return;
        }
        if (is_connect_error(code) && j->connect_retries < REP_MAX_CONNECT_RETRIES &&
            schedule_retry(j, backoff_seconds(j->connect_retries))) {
            j->connect_retries++;
            return;
        }
        job_finish(j, SC_REP_API_ERROR, "create request failed: %s", curl_easy_strerror(code));
        return;
    }
    j->res->http_status = (int)http;
    if (http >= 200 && http < 300) {
        cJSON *obj = cJSON_ParseWithLength(j->resp.data ? j->resp.data : "", j->resp.len);
        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            job_finish(j, SC_REP_API_ERROR, "malformed JSON in create response (HTTP %ld)", http);
            return;
        }
        free(j->body); /* created: the input is never sent again */
        j->body = NULL;
        handle_prediction(j, obj);
        cJSON_Delete(obj);
        return;
    }
    body_reason(j->resp.data, j->resp.len, reason, sizeof reason);
    if (http == 429) {
        double d = delay_429(j, j->retries_429);
        if (j->retries_429 < REP_MAX_429_RETRIES && schedule_retry(j, d)) {
            j->retries_429++;
            sc_log_debug("replicate: create throttled (429), retrying in %.2fs", d);
            return;
        }
        job_finish(j, SC_REP_API_ERROR, "HTTP 429 (rate limited, retry after %.0fs): %s", d,
                   reason);
        return;
    }
    if (http >= 500 && j->create_5xx < 1 && schedule_retry(j, backoff_seconds(0))) {
        j->create_5xx++;
        return;
    }
    job_finish(j, SC_REP_API_ERROR, "HTTP %ld: %s", http, reason);
}

/* A retryable failure on a GET (poll or download): back off, or give up. */
static void get_failed(rep_job_t *j, double delay, const char *what)
{
    j->fails++;
    if (j->fails > REP_MAX_GET_FAILS) {
        job_finish(j, SC_REP_API_ERROR, "%s failed after %d attempts", what, j->fails);
        return;
    }
    if (!schedule_retry(j, delay))
        job_timeout(j);
}

static void on_poll_done(rep_job_t *j, CURLcode code, long http)
{
    char reason[300];
    if (code != CURLE_OK) {
        if (remaining(j) <= 0.001) {
            job_timeout(j);
            return;
        }
        char what[160];
        snprintf(what, sizeof what, "poll (%s)", curl_easy_strerror(code));
        get_failed(j, backoff_seconds(j->fails), what);
        return;
    }
    j->res->http_status = (int)http;
    if (http == 200) {
        cJSON *obj = cJSON_ParseWithLength(j->resp.data ? j->resp.data : "", j->resp.len);
        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            job_finish(j, SC_REP_API_ERROR, "malformed JSON in prediction response");
            return;
        }
        j->fails = 0;
        handle_prediction(j, obj);
        cJSON_Delete(obj);
        return;
    }
    if (http == 429) {
        double d = delay_429(j, j->fails);
        /* waiting past the deadline just ends in the timeout path (with cancel) */
        double r = remaining(j);
        j->wake_at = sc_clock_mono() + (d < r ? d : r);
        return;
    }
    body_reason(j->resp.data, j->resp.len, reason, sizeof reason);
    if (http >= 500) {
        char what[400];
        snprintf(what, sizeof what, "poll (HTTP %ld: %s)", http, reason);
        get_failed(j, backoff_seconds(j->fails), what);
        return;
    }
    job_finish(j, SC_REP_API_ERROR, "HTTP %ld: %s", http, reason);
}

static void on_download_done(rep_job_t *j, CURLcode code, long http)
{
    if (j->resp_too_big || code == CURLE_FILESIZE_EXCEEDED) {
        job_finish(j, SC_REP_INVALID_OUTPUT, "output larger than 64 MiB");
        return;
    }
    if (code != CURLE_OK) {
        if (remaining(j) <= 0.001) {
            job_timeout(j);
            return;
        }
        char what[160];
        snprintf(what, sizeof what, "output download (%s)", curl_easy_strerror(code));
        get_failed(j, backoff_seconds(j->fails), what);
        return;
    }
    if (http == 200) {
        size_t len;
        char *data = sc_buf_steal(&j->resp, &len);
        if (!data) {
            job_finish(j, SC_REP_INVALID_OUTPUT, "output is empty");
            return;
        }
        finish_output(j, (uint8_t *)data, len);
        return;
    }
    if (http == 429 || http >= 500) {
        char what[64];
        snprintf(what, sizeof what, "output download (HTTP %ld)", http);
        get_failed(j, http == 429 ? delay_429(j, j->fails) : backoff_seconds(j->fails), what);
        return;
    }
    job_finish(j, SC_REP_API_ERROR, "output download failed: HTTP %ld", http);
}

/* One finished transfer: hand the response to the phase's handler. */
static void on_transfer_done(rep_job_t *j, CURLcode code)
{
    long http = 0;
    curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &http);
    const char *url = NULL;
    curl_easy_getinfo(j->easy, CURLINFO_EFFECTIVE_URL, &url);
    sc_log_debug("replicate: %s %s -> %s%ld (%s) %zu bytes in %.0f ms", k_phase_names[j->phase],
                 j->phase == PH_DOWNLOAD ? "(output)" : (url ? url : ""),
                 code == CURLE_OK ? "HTTP " : "", code == CURLE_OK ? http : (long)code,
                 code == CURLE_OK ? "ok" : curl_easy_strerror(code), j->resp.len,
                 (sc_clock_mono() - j->started) * 1000.0);
    curl_multi_remove_handle(g.multi, j->easy);
    curl_easy_cleanup(j->easy);
    j->easy = NULL;
    curl_slist_free_all(j->hdrs);
    j->hdrs = NULL;
    switch (j->phase) {
    case PH_CREATE:
        on_create_done(j, code, http);
        break;
    case PH_POLL:
        on_poll_done(j, code, http);
        break;
    case PH_DOWNLOAD:
        on_download_done(j, code, http);
        break;
    case PH_CANCEL:
        if (code != CURLE_OK || http < 200 || http >= 300)
            sc_log_warn("replicate: cancel of prediction %s answered %s %ld", j->res->prediction_id,
                        code == CURLE_OK ? "HTTP" : "curl error",
                        code == CURLE_OK ? http : (long)code);
        /* no answer, or a server error: it may still run; the journal keeps it */
        j->cancel_unsure = code != CURLE_OK || http >= 500;
        j->phase = PH_DONE;
        break;
    case PH_DONE:
        break;
    case PH_UPLOAD:
        on_upload_done(j, code, http);
        break;
    }
    curl_mime_free(j->mime); /* after its easy handle is gone */
    j->mime = NULL;
    sc_buf_free(&j->resp); /* consumed by the handler; idle jobs keep no buffer */
}

/* ==== The I/O thread ==== */

static void complete(rep_job_t *j)
{
    sc_rep_result_t *res = j->res;
    j->res = NULL;
    res->seconds = sc_clock_mono() - j->t0;
    if (j->orphan)
        sc_log_info("replicate: prediction %s left running by a previous process: cancel %s",
                    res->prediction_id,
                    j->cancel_unsure ? "not confirmed (kept in the journal)" : "sent");
    else if (res->status == SC_REP_OK)
        sc_log_debug("replicate: prediction %s ok in %.2fs (%zu bytes, %d create attempts)",
                     res->prediction_id, res->seconds, res->output_len, res->attempts);
    else
        sc_log_info("replicate: prediction %s %s in %.2fs: %s",
                    res->prediction_id[0] ? res->prediction_id : "(none)",
                    sc_replicate_status_name(res->status), res->seconds, res->message);
    if (j->journaled && !j->cancel_unsure)
        journal_line('-', res->prediction_id);
    if (j->upstream_over)
        j->upstream_over(j->upstream_ud);
    sc_rep_done_fn done = j->done;
    void *ud = j->ud;
    job_free(j);
    if (done)
        done(res, ud);
    else
        sc_replicate_result_free(res);
}

/* The watched client socket: true when its peer closed it (FIN: EOF; RST: an
 * error). Bytes waiting (a pipelined request) mean it is still there. */
static bool peer_gone(int fd, bool *readable)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    *readable = n > 0;
    if (n == 0)
        return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

/* The client went away: nobody wants the result. done is called now (so the
 * caller frees its request at once); the job goes on only to cancel its
 * prediction: at once when the id is known, else when the waiting create
 * answers with it. */
static void job_client_gone(rep_job_t *j)
{
    watch_stop(j);
    if (j->phase == PH_DONE || j->phase == PH_CANCEL || !j->done)
        return; /* already decided; done comes with the sweep */
    rep_phase_t was = j->phase;
    if (was == PH_CREATE && j->easy && !j->res->prediction_id[0])
        j->client_gone = true;
    else if (was == PH_CREATE && !j->easy && !j->res->prediction_id[0])
        job_finish(j, SC_REP_CLIENT_GONE,
                   "client disconnected"); /* waiting to retry: none exists */
    else
        job_abort(j, SC_REP_CLIENT_GONE, "client disconnected", REP_CANCEL_TIMEOUT_MS);
    sc_rep_result_t *early = calloc(1, sizeof *early);
    if (!early)
        return; /* done comes at the end instead */
    early->status = SC_REP_CLIENT_GONE;
    snprintf(early->message, sizeof early->message, "client disconnected during %s",
             k_phase_names[was]);
    memcpy(early->prediction_id, j->res->prediction_id, sizeof early->prediction_id);
    early->cancel_sent = j->res->cancel_sent;
    early->seconds = sc_clock_mono() - j->t0;
    sc_log_info("replicate: client of prediction %s went away during %s: %s",
                j->res->prediction_id[0] ? j->res->prediction_id : "(not created yet)",
                k_phase_names[was],
                j->client_gone ? "cancel once the create answers" : "cancelled");
    sc_rep_done_fn done = j->done;
    j->done = NULL;
    done(early, j->ud);
}

/* A gated create: sent once the gate is durable; a failed gate ends the job
 * with nothing sent (the write-ahead rule: no create before its count is on
 * disk). Pending: nothing to do, the completer wakes the loop. */
static void gate_check(rep_job_t *j)
{
    int s = sc_durable_ticket_state(j->gate);
    if (s == 0)
        return;
    sc_durable_ticket_unref(j->gate);
    j->gate = NULL;
    if (s > 0) {
        start_create(j);
        return;
    }
    j->res->gate_closed = true;
    job_finish(j, SC_REP_API_ERROR, "the create's write-ahead did not reach the disk");
}

/* CURLMOPT_SOCKETFUNCTION: mirror what curl wants to hear of a socket in g.ep.
 * socketp marks a socket already in the set (curl_multi_assign). */
static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e;
    (void)userp;
    if (what == CURL_POLL_REMOVE) {
        if (socketp)
            (void)epoll_ctl(g.ep, EPOLL_CTL_DEL, fd, NULL);
        curl_multi_assign(g.multi, fd, NULL);
        return 0;
    }
    struct epoll_event ev = {.data.fd = fd};
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev.events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(g.ep, socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0 &&
        epoll_ctl(g.ep, socketp ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0) {
        sc_log_error("replicate: cannot watch a connection: %s", strerror(errno));
        return -1; /* curl fails that transfer */
    }
    if (!socketp)
        curl_multi_assign(g.multi, fd, (void *)&g);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: -1 deletes the timer, 0 means "call me at once". */
static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    (void)userp;
    g.timer_at = timeout_ms < 0 ? 0 : sc_clock_mono() + (double)timeout_ms / 1000.0;
    return 0;
}

/* Finished transfers: each job's handler moves it on. */
static void drain_curl_messages(void)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(g.multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        rep_job_t *j = (rep_job_t *)priv;
        if (j && j->easy == msg->easy_handle)
            on_transfer_done(j, msg->data.result);
        g.dirty = true;
    }
}

/* Watched client sockets that woke: gone (cancel), or a pipelined request
 * (stop watching: level-triggered, it would wake us forever). */
static void check_watched(void)
{
    struct epoll_event evs[64];
    int n;
    while ((n = epoll_wait(g.watch_ep, evs, 64, 0)) > 0) {
        for (int i = 0; i < n; i++) {
            rep_job_t *j = evs[i].data.ptr;
            bool readable = false;
            if (j->phase != PH_DONE && j->phase != PH_CANCEL && peer_gone(j->watch_fd, &readable))
                job_client_gone(j);
            else
                watch_stop(j); /* readable, or nobody left to tell */
            g.dirty = true;
        }
        if (n < 64)
            break;
    }
}

/* Timers, deadlines, gates and completions: a walk over every job. Only when
 * something happened or a wake-up time came, so a burst's socket traffic does
 * not walk 1,000 jobs per answer. Returns false once stopping and idle. */
static bool sweep(bool stopping)
{
    double now = sc_clock_mono();
    if (!g.dirty && !stopping && now < g.sweep_at)
        return true;
    g.dirty = false;
    double next = now + 1.0;
    rep_job_t **pp = &g.active;
    while (*pp) {
        rep_job_t *j = *pp;
        if (stopping && j->phase != PH_DONE && j->phase != PH_CANCEL)
            job_abort(j, SC_REP_TIMEOUT, "replicate client shut down",
                      REP_SHUTDOWN_CANCEL_TIMEOUT_MS);
        else if (j->phase != PH_DONE && j->phase != PH_CANCEL && now >= j->deadline &&
                 (!j->easy || now >= j->deadline + 0.25))
            job_timeout(j); /* curl's own timeout normally fires first */
        else if (j->gate && j->phase == PH_CREATE && !j->easy)
            gate_check(j);
        else if (j->phase != PH_DONE && !j->easy && j->wake_at > 0 && now >= j->wake_at)
            start_phase(j);
        if (j->phase == PH_DONE && !j->easy) {
            *pp = j->next;
            complete(j);
            continue;
        }
        if (!j->easy && j->wake_at > 0 && j->wake_at < next)
            next = j->wake_at;
        if (j->phase != PH_CANCEL && j->deadline < next)
            next = j->deadline;
        pp = &j->next;
    }
    g.sweep_at = next;
    return !(stopping && !g.active);
}

static void *io_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-replicate"); /* top -H, perf */
    (void)arg;
    bool stopping = false;
    int running = 0;
    for (;;) {
        /* take newly submitted jobs */
        pthread_mutex_lock(&g.mu);
        rep_job_t *in = g.in_head;
        g.in_head = g.in_tail = NULL;
        stopping = g.stopping;
        pthread_mutex_unlock(&g.mu);
        if (in)
            g.dirty = true;
        while (in) {
            rep_job_t *j = in;
            in = in->next;
            j->next = g.active;
            g.active = j;
            if (j->orphan) {
                j->cancel_unsure = true; /* until the cancel is answered */
                if (stopping)
                    j->phase = PH_DONE;
                else
                    job_request(j, "POST", j->cancel_url, true, "", 0, REP_CANCEL_TIMEOUT_MS, NULL,
                                NULL, 1u << 20);
            } else if (j->no_token)
                job_finish(j, SC_REP_NO_TOKEN, "REPLICATE_API_TOKEN is not set");
            else if (j->bad_model)
                job_finish(j, SC_REP_API_ERROR, "invalid model id (expected owner/name)");
            else if (stopping)
                job_finish(j, SC_REP_TIMEOUT, "replicate client shut down");
            else {
                watch_start(j);
                if (j->phase == PH_POLL)
                    start_poll(j); /* adopted (sc_replicate_adopt): never created again */
                else if (!j->gate)
                    (j->is_upload ? start_upload : start_create)(j);
                /* else: gated, the sweep below sends the create once it opens */
            }
        }
        if (g.timer_at > 0 && sc_clock_mono() >= g.timer_at) {
            g.timer_at = 0;
            curl_multi_socket_action(g.multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        drain_curl_messages();
        if (!sweep(stopping))
            break;
        drain_curl_messages(); /* what the sweep started may have failed at once */

        double now = sc_clock_mono();
        double until = g.sweep_at;
        if (g.dirty)
            until = now;
        if (g.timer_at > 0 && g.timer_at < until)
            until = g.timer_at;
        int wait_ms = (int)ceil((until - now) * 1000.0);
        if (wait_ms < 0)
            wait_ms = 0;
        if (wait_ms > 1000)
            wait_ms = 1000;
        struct epoll_event evs[256];
        int n = epoll_wait(g.ep, evs, 256, wait_ms);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == g.wake_fd) {
                uint64_t v;
                (void)!read(g.wake_fd, &v, sizeof v);
                g.dirty = true; /* a submit, a gate ticket or the shutdown */
            } else if (fd == g.watch_ep) {
                check_watched();
            } else {
                int ev = 0;
                if (evs[i].events & EPOLLIN)
                    ev |= CURL_CSELECT_IN;
                if (evs[i].events & EPOLLOUT)
                    ev |= CURL_CSELECT_OUT;
                if (evs[i].events & (EPOLLERR | EPOLLHUP))
                    ev |= CURL_CSELECT_ERR;
                curl_multi_socket_action(g.multi, fd, ev, &running);
            }
        }
        drain_curl_messages();
    }
    return NULL;
}

/* ==== Public API ==== */

static void loop_fds_close(void)
{
    int *fds[] = {&g.ep, &g.wake_fd, &g.watch_ep};
    for (size_t i = 0; i < sizeof fds / sizeof *fds; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    g.timer_at = g.sweep_at = 0;
    g.dirty = false;
}

/* The loop's epoll set with the wake-up eventfd and the watch set in it. */
static int loop_fds_open(void)
{
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    g.watch_ep = epoll_create1(EPOLL_CLOEXEC);
    g.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event w = {.events = EPOLLIN, .data.fd = g.wake_fd};
    struct epoll_event c = {.events = EPOLLIN, .data.fd = g.watch_ep};
    if (g.ep < 0 || g.watch_ep < 0 || g.wake_fd < 0 ||
        epoll_ctl(g.ep, EPOLL_CTL_ADD, g.wake_fd, &w) != 0 ||
        epoll_ctl(g.ep, EPOLL_CTL_ADD, g.watch_ep, &c) != 0) {
        sc_log_error("replicate: cannot set up the I/O loop: %s", strerror(errno));
        loop_fds_close();
        return -1;
    }
    return 0;
}

int sc_replicate_init(const sc_config_t *cfg)
{
    pthread_mutex_lock(&g.mu);
    if (g.running) {
        pthread_mutex_unlock(&g.mu);
        return 0;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        goto fail_unlocked;
    g.multi = curl_multi_init();
    if (!g.multi) {
        curl_global_cleanup();
        goto fail_unlocked;
    }
    /* No per-host cap: our own limiter bounds concurrency, and long Prefer: wait
     * creates must not queue behind each other. Connections are reused. */
    curl_multi_setopt(g.multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    curl_multi_setopt(g.multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(g.multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(g.multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    if (loop_fds_open() != 0) {
        curl_multi_cleanup(g.multi);
        g.multi = NULL;
        curl_global_cleanup();
        goto fail_unlocked;
    }
    g.cfg = cfg;
    g.poll_ms = REP_DEFAULT_POLL_MS;
    const char *pm = getenv("SC_REPLICATE_POLL_MS");
    if (pm && *pm) {
        char *end;
        long v = strtol(pm, &end, 10);
        if (*end == '\0' && v >= 10 && v <= 60000)
            g.poll_ms = (int)v;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g.rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&g;
    if (g.rng == 0)
        g.rng = 0x9E3779B97F4A7C15ULL;
    g.stopping = false;
    g.active = NULL;
    if (pthread_create(&g.thread, NULL, io_main, NULL) != 0) {
        curl_multi_cleanup(g.multi);
        g.multi = NULL;
        loop_fds_close();
        curl_global_cleanup();
        goto fail_unlocked;
    }
    g.running = true;
    pthread_mutex_unlock(&g.mu);
    sc_log_debug("replicate: client started (base %s, poll %d ms)", cfg->replicate_api_base,
                 g.poll_ms);
    return 0;
fail_unlocked:
    pthread_mutex_unlock(&g.mu);
    sc_log_error("replicate: could not start the client");
    return -1;
}

/* "owner/name" with Replicate's name characters, so the id is safe in a URL path
 * (it may come from a Lua policy). */
static bool model_id_valid(const char *m)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    size_t a = strspn(m, ok);
    if (a == 0 || m[a] != '/' || m[0] == '.')
        return false;
    size_t b = strspn(m + a + 1, ok);
    return b > 0 && m[a + 1 + b] == '\0' && m[a + 1] != '.' && a + 1 + b < 256;
}

int sc_replicate_submit(const char *model, char *input_json, double timeout_seconds,
                        sc_rep_done_fn done, void *ud)
{
    return sc_replicate_submit_ex(model, input_json, timeout_seconds, NULL, done, ud);
}

int sc_replicate_submit_ex(const char *model, char *input_json, double timeout_seconds,
                           const sc_rep_opts_t *opts, sc_rep_done_fn done, void *ud)
{
    rep_job_t *j = NULL;
    if (!model || !input_json || !done)
        goto fail;
    j = calloc(1, sizeof *j);
    if (!j)
        goto fail;
    j->res = calloc(1, sizeof *j->res);
    j->model = strdup(model);
    if (!j->res || !j->model)
        goto fail;
    /* The create body {"input": <input_json>} is built in place: input_json can
     * be megabytes of data URIs and must not exist twice per job. */
    static const char pre[] = "{\"input\":";
    size_t il = strlen(input_json);
    char *body = realloc(input_json, il + sizeof pre + 1);
    if (!body)
        goto fail;
    input_json = NULL;
    memmove(body + sizeof pre - 1, body, il);
    memcpy(body, pre, sizeof pre - 1);
    body[sizeof pre - 1 + il] = '}';
    body[sizeof pre + il] = '\0';
    j->body = body;
    j->body_len = sizeof pre + il;
    j->t0 = sc_clock_mono();
    if (!(timeout_seconds > 0) || timeout_seconds > 86400)
        timeout_seconds = timeout_seconds > 0 ? 86400 : 0.001;
    j->deadline = j->t0 + timeout_seconds;
    j->done = done;
    j->ud = ud;
    j->retry_after_hdr = -1;
    j->bad_model = !model_id_valid(model);
    j->watch_fd = opts ? opts->client_fd : -1;
    j->upstream_over = opts ? opts->upstream_over : NULL;
    j->upstream_ud = opts ? opts->upstream_ud : NULL;
    j->on_created = opts ? opts->on_created : NULL;
    j->created_ud = opts ? opts->created_ud : NULL;
    j->gate = opts ? opts->gate : NULL;
    if (j->gate)
        sc_durable_ticket_ref(j->gate);

    pthread_mutex_lock(&g.mu);
    if (!g.running || g.stopping) {
        pthread_mutex_unlock(&g.mu);
        goto fail;
    }
    j->no_token = g.cfg->replicate_api_token[0] == '\0';
    if (g.in_tail)
        g.in_tail->next = j;
    else
        g.in_head = j;
    g.in_tail = j;
    loop_wake();
    pthread_mutex_unlock(&g.mu);
    return 0;
fail:
    free(input_json);
    if (j) {
        free(j->body);
        free(j->model);
        free(j->res);
        sc_durable_ticket_unref(j->gate);
        free(j);
    }
    return -1;
}

static bool id_valid(const char *id)
{
    size_t n = strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_");
    return n > 0 && n == strlen(id) && n < sizeof((sc_rep_result_t *)0)->prediction_id;
}

int sc_replicate_adopt(const char *prediction_id, double timeout_seconds, const sc_rep_opts_t *opts,
                       sc_rep_done_fn done, void *ud)
{
    if (!prediction_id || !id_valid(prediction_id) || !done)
        return -1;
    rep_job_t *j = calloc(1, sizeof *j);
    sc_buf_t get = SC_BUF_INIT, cancel = SC_BUF_INIT;
    if (!j)
        return -1;
    j->res = calloc(1, sizeof *j->res);
    j->model = strdup("adopted/prediction");
    if (!j->res || !j->model ||
        sc_buf_printf(&get, "%s/predictions/%s", g.cfg->replicate_api_base, prediction_id) != 0 ||
        sc_buf_printf(&cancel, "%s/predictions/%s/cancel", g.cfg->replicate_api_base,
                      prediction_id) != 0)
        goto fail;
    snprintf(j->res->prediction_id, sizeof j->res->prediction_id, "%s", prediction_id);
    j->get_url = sc_buf_steal(&get, NULL);
    j->cancel_url = sc_buf_steal(&cancel, NULL);
    j->t0 = sc_clock_mono();
    if (!(timeout_seconds > 0) || timeout_seconds > 86400)
        timeout_seconds = timeout_seconds > 0 ? 86400 : 0.001;
    j->deadline = j->t0 + timeout_seconds;
    j->done = done;
    j->ud = ud;
    j->retry_after_hdr = -1;
    j->phase = PH_POLL; /* never created again: only polled (and cancelled at its deadline) */
    j->watch_fd = opts ? opts->client_fd : -1;
    j->upstream_over = opts ? opts->upstream_over : NULL;
    j->upstream_ud = opts ? opts->upstream_ud : NULL;
    /* Its "+id" line was kept by sc_replicate_journal_open_keep: "-id" when over. */
    j->journaled = atomic_load(&g.jfd) >= 0;
    pthread_mutex_lock(&g.mu);
    if (!g.running || g.stopping) {
        pthread_mutex_unlock(&g.mu);
        goto fail;
    }
    j->no_token = g.cfg->replicate_api_token[0] == '\0';
    if (g.in_tail)
        g.in_tail->next = j;
    else
        g.in_head = j;
    g.in_tail = j;
    loop_wake();
    pthread_mutex_unlock(&g.mu);
    return 0;
fail:
    sc_buf_free(&get);
    sc_buf_free(&cancel);
    if (j) {
        free(j->get_url);
        free(j->cancel_url);
        free(j->model);
        free(j->res);
        free(j);
    }
    return -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The ids journal text leaves open: a "+id" line and no "-id" line (ids are
 * unique, so the order of the lines does not matter). Fills *out (pointers into
 * text, sorted); returns the count or -1 on out of memory. */
static int journal_open_ids(char *text, char ***out)
{
    size_t nadd = 0, ndel = 0, cap = 1;
    for (char *p = text; *p; p++)
        cap += *p == '\n';
    char **add = calloc(cap, sizeof *add), **del = calloc(cap, sizeof *del);
    int n = -1;
    if (!add || !del)
        goto done;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t len = strlen(line);
        if (len < 2 || len > 63 || (line[0] != '+' && line[0] != '-') ||
            strspn(line + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") !=
                len - 1)
            continue; /* a torn last line, or not ours */
        if (line[0] == '+')
            add[nadd++] = line + 1;
        else
            del[ndel++] = line + 1;
    }
    qsort(add, nadd, sizeof *add, cmp_str);
    qsort(del, ndel, sizeof *del, cmp_str);
    n = 0;
    for (size_t i = 0, k = 0; i < nadd; i++) {
        if (i > 0 && strcmp(add[i], add[i - 1]) == 0)
            continue;
        while (k < ndel && strcmp(del[k], add[i]) < 0)
            k++;
        if (k < ndel && strcmp(del[k], add[i]) == 0)
            continue;
        add[n++] = add[i];
    }
done:
    free(del);
    if (n < 0) {
        free(add);
        add = NULL;
    }
    *out = add;
    return n;
}

int sc_replicate_journal_open(const char *path)
{
    return sc_replicate_journal_open_keep(path, NULL, 0);
}

static bool in_list(const char *id, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(id, list[i]) == 0)
            return true;
    return false;
}

int sc_replicate_journal_open_keep(const char *path, const char *const *keep_ids, size_t nkeep)
{
    char *text = NULL, **ids = NULL;
    size_t len = 0;
    sc_buf_t keep = SC_BUF_INIT;
    int n = 0, rc = -1;
    pthread_mutex_lock(&g.mu);
    bool ready = g.running && !g.stopping && atomic_load(&g.jfd) < 0;
    pthread_mutex_unlock(&g.mu);
    if (!ready || snprintf(g.jpath, sizeof g.jpath, "%s", path) >= (int)sizeof g.jpath)
        return -1;
    int r = sc_fs_read_file(path, REP_JOURNAL_MAX_BYTES, &text, &len);
    if (r != 0 && !(r == -1 && errno == ENOENT)) {
        sc_log_warn("replicate: cannot read the prediction journal %s: %s", path,
                    r == -2 ? "too large" : strerror(errno));
        goto done;
    }
    if (text) {
        n = journal_open_ids(text, &ids);
        if (n < 0)
            goto done;
    }
    /* The new journal holds just the ids still open: they leave it once their
     * cancel is answered (a crash before that retries them next time). */
    for (int i = 0; i < n; i++)
        if (sc_buf_printf(&keep, "+%s\n", ids[i]) != 0)
            goto done;
    if (sc_fs_write_atomic(path, keep.data ? keep.data : "", keep.len) != 0) {
        sc_log_warn("replicate: cannot write the prediction journal %s: %s", path, strerror(errno));
        goto done;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        goto done;
    g.jbytes = keep.len;
    atomic_store(&g.jfd, fd);
    rc = n;
    if (n > 0 && g.cfg->replicate_api_token[0] == '\0') {
        sc_log_warn("replicate: %d prediction(s) left running by a previous process cannot be "
                    "cancelled: REPLICATE_API_TOKEN is not set",
                    n);
        goto done;
    }
    int ncancel = 0;
    for (int i = 0; i < n; i++)
        ncancel += !in_list(ids[i], keep_ids, nkeep);
    if (ncancel > 0)
        sc_log_warn("replicate: cancelling %d prediction(s) left running by a previous process",
                    ncancel);
    for (int i = 0; i < n; i++) {
        if (in_list(ids[i], keep_ids, nkeep))
            continue; /* adopted by its record (sc_replicate_adopt), not cancelled */
        rep_job_t *j = calloc(1, sizeof *j);
        sc_buf_t url = SC_BUF_INIT;
        if (j)
            j->res = calloc(1, sizeof *j->res);
        if (!j || !j->res ||
            sc_buf_printf(&url, "%s/predictions/%s/cancel", g.cfg->replicate_api_base, ids[i]) !=
                0) {
            sc_buf_free(&url);
            if (j)
                free(j->res);
            free(j);
            break; /* out of memory: the rest stay in the journal for the next start */
        }
        snprintf(j->res->prediction_id, sizeof j->res->prediction_id, "%s", ids[i]);
        j->cancel_url = sc_buf_steal(&url, NULL);
        j->orphan = true;
        j->journaled = true;
        j->watch_fd = -1;
        j->phase = PH_CANCEL;
        j->res->cancel_sent = true;
        j->t0 = sc_clock_mono();
        j->deadline = j->t0 + REP_CANCEL_TIMEOUT_MS / 1000.0;
        j->retry_after_hdr = -1;
        pthread_mutex_lock(&g.mu);
        if (g.in_tail)
            g.in_tail->next = j;
        else
            g.in_head = j;
        g.in_tail = j;
        loop_wake();
        pthread_mutex_unlock(&g.mu);
    }
done:
    sc_buf_free(&keep);
    free(ids);
    free(text);
    return rc;
}

void sc_replicate_wake(void)
{
    pthread_mutex_lock(&g.mu);
    if (g.running && g.multi)
        loop_wake();
    pthread_mutex_unlock(&g.mu);
}

void sc_replicate_shutdown(void)
{
    pthread_mutex_lock(&g.mu);
    if (!g.running) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    g.stopping = true;
    loop_wake();
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);
    pthread_mutex_lock(&g.mu);
    curl_multi_cleanup(g.multi);
    g.multi = NULL;
    loop_fds_close(); /* after the cleanup: it reports its sockets' removal */
    g.running = false;
    int jfd = atomic_exchange(&g.jfd, -1);
    if (jfd >= 0)
        close(jfd);
    g.cfg = NULL;
    pthread_mutex_unlock(&g.mu);
    curl_global_cleanup();
}

/* ==== Files API upload (issue 11: large inputs) ====
 * A job of its own kind on the same I/O thread: POST {base}/files as
 * multipart/form-data (part `content` with filename and type), 201 -> the file
 * object's JSON text in res->output. 429 is retried like a create (Retry-After),
 * connect errors and 5xx up to REP_MAX_UPLOAD_RETRIES times while the deadline
 * allows; anything else is SC_REP_API_ERROR with the problem detail. */

#define REP_MAX_UPLOAD_RETRIES 2
#define REP_MAX_UPLOAD_BYTES (100u << 20) /* the Files API's limit */

static void start_upload(rep_job_t *j)
{
    char url[SC_CFG_STR + 16];
    snprintf(url, sizeof url, "%s/files", g.cfg->replicate_api_base);
    j->phase = PH_UPLOAD;
    j->res->attempts++;
    job_request(j, "POST", url, true, NULL, 0, capped_ms(j, 120.0), NULL, NULL, 1u << 20);
}

static void on_upload_done(rep_job_t *j, CURLcode code, long http)
{
    char reason[300];
    if (code != CURLE_OK) {
        if (code == CURLE_OPERATION_TIMEDOUT || remaining(j) <= 0.001) {
            job_finish(j, SC_REP_TIMEOUT, "file upload: deadline passed");
            return;
        }
        if (j->fails < REP_MAX_UPLOAD_RETRIES && schedule_retry(j, backoff_seconds(j->fails))) {
            j->fails++;
            return;
        }
        job_finish(j, SC_REP_API_ERROR, "file upload failed: %s", curl_easy_strerror(code));
        return;
    }
    j->res->http_status = (int)http;
    if (http >= 200 && http < 300) {
        size_t len;
        char *data = sc_buf_steal(&j->resp, &len);
        if (!data) {
            job_finish(j, SC_REP_API_ERROR, "file upload: empty response (HTTP %ld)", http);
            return;
        }
        j->res->output = (uint8_t *)data;
        j->res->output_len = len;
        job_finish(j, SC_REP_OK, NULL);
        return;
    }
    body_reason(j->resp.data, j->resp.len, reason, sizeof reason);
    if (http == 429 && j->retries_429 < REP_MAX_429_RETRIES &&
        schedule_retry(j, delay_429(j, j->retries_429))) {
        j->retries_429++;
        return;
    }
    if (http >= 500 && j->fails < REP_MAX_UPLOAD_RETRIES &&
        schedule_retry(j, backoff_seconds(j->fails))) {
        j->fails++;
        return;
    }
    job_finish(j, SC_REP_API_ERROR, "file upload: HTTP %ld: %s", http, reason);
}

int sc_replicate_upload_src(const char *filename, const char *content_type, int fd, uint8_t *data,
                            size_t len, double timeout_seconds, sc_rep_done_fn done, void *ud)
{
    rep_job_t *j = NULL;
    if (!filename || !content_type || (fd < 0) == !data || len == 0 || len > REP_MAX_UPLOAD_BYTES ||
        !done)
        goto fail;
    j = calloc(1, sizeof *j);
    if (!j)
        goto fail;
    j->up_fd = fd;
    j->up_data = data;
    fd = -1;
    data = NULL;
    j->res = calloc(1, sizeof *j->res);
    j->up_name = strdup(filename);
    j->up_type = strdup(content_type);
    if (!j->res || !j->up_name || !j->up_type)
        goto fail;
    j->up_len = len;
    j->is_upload = true;
    j->watch_fd = -1; /* not watched: one upload serves every request of its content */
    j->t0 = sc_clock_mono();
    if (!(timeout_seconds > 0) || timeout_seconds > 86400)
        timeout_seconds = timeout_seconds > 0 ? 86400 : 0.001;
    j->deadline = j->t0 + timeout_seconds;
    j->done = done;
    j->ud = ud;
    j->retry_after_hdr = -1;
    pthread_mutex_lock(&g.mu);
    if (!g.running || g.stopping) {
        pthread_mutex_unlock(&g.mu);
        goto fail;
    }
    j->no_token = g.cfg->replicate_api_token[0] == '\0';
    if (g.in_tail)
        g.in_tail->next = j;
    else
        g.in_head = j;
    g.in_tail = j;
    loop_wake();
    pthread_mutex_unlock(&g.mu);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    free(data);
    if (j) {
        if (j->up_fd >= 0)
            close(j->up_fd);
        free(j->up_data);
        free(j->up_name);
        free(j->up_type);
        free(j->res);
        free(j);
    }
    return -1;
}

int sc_replicate_upload(const char *filename, const char *content_type, const uint8_t *data,
                        size_t len, double timeout_seconds, sc_rep_done_fn done, void *ud)
{
    uint8_t *copy = data && len ? malloc(len) : NULL;
    if (!copy)
        return -1;
    memcpy(copy, data, len);
    return sc_replicate_upload_src(filename, content_type, -1, copy, len, timeout_seconds, done,
                                   ud);
}
