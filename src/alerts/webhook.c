/* Alert webhook sink: bounded queue + one sender thread with libcurl easy.
 * The evaluation loop only ever takes the queue mutex for a pointer swap; the
 * network happens on the sender thread with no lock held. */
#include "alerts/webhook.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "core/clock.h"
#include "core/log.h"

#define WEBHOOK_CONNECT_TIMEOUT_MS 2000L
#define WEBHOOK_TIMEOUT_MS 5000L

static struct {
    pthread_mutex_t mu;  /* guards everything below */
    pthread_cond_t cond; /* queue changed, stop requested, or sender went idle */
    bool running, stop;
    pthread_t thread;
    char url[1024];
    char *queue[SC_WEBHOOK_QUEUE_MAX]; /* ring of owned payloads */
    size_t head, count;
    bool busy; /* a payload is being delivered */
    double backoff;
    sc_webhook_stats_t stats;
} wh = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .backoff = 0.5};

/* ==== Payload ==== */

bool sc_webhook_url_ok(const char *url)
{
    const char *rest = NULL;
    if (strncasecmp(url, "http://", 7) == 0)
        rest = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        rest = url + 8;
    if (!rest || !*rest || *rest == '/' || *rest == '?' || *rest == '#')
        return false;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* Alertmanager's fingerprint is a hash of the label set; ours is FNV-1a 64 of
 * the alert name (the only label that varies). */
static uint64_t webhook_fingerprint(const char *name)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

static int webhook_labels(sc_buf_t *o, const sc_webhook_alert_t *a)
{
    return sc_buf_puts(o, "{\"alertname\":") || sc_buf_json_str(o, a->name) ||
           sc_buf_puts(o, ",\"severity\":") ||
           sc_buf_json_str(o, a->critical ? "critical" : "warning") ||
           sc_buf_puts(o, ",\"service\":\"scenecomp\"}");
}

static int webhook_annotations(sc_buf_t *o, const sc_webhook_alert_t *a)
{
    if (sc_buf_puts(o, "{\"summary\":") || sc_buf_json_str(o, a->summary ? a->summary : ""))
        return -1;
    if (!isnan(a->value)) {
        /* annotations are strings in Alertmanager's model */
        char v[64];
        snprintf(v, sizeof v, "%.6g", a->value);
        if (sc_buf_puts(o, ",\"value\":") || sc_buf_json_str(o, v))
            return -1;
    }
    return sc_buf_puts(o, "}");
}

int sc_webhook_payload(const sc_webhook_alert_t *a, sc_buf_t *o)
{
    char starts[32], ends[32], group[256];
    const char *status = a->firing ? "firing" : "resolved";
    sc_clock_rfc3339(a->starts_at, starts);
    if (a->firing)
        snprintf(ends, sizeof ends, "0001-01-01T00:00:00Z"); /* Alertmanager's "not ended" */
    else
        sc_clock_rfc3339(a->ends_at, ends);
    snprintf(group, sizeof group, "{}:{alertname=\"%.128s\"}", a->name);

    if (sc_buf_puts(o, "{\"version\":\"4\",\"status\":") || sc_buf_json_str(o, status) ||
        sc_buf_puts(o, ",\"receiver\":\"scenecomp\",\"groupKey\":") || sc_buf_json_str(o, group) ||
        sc_buf_puts(o, ",\"truncatedAlerts\":0,\"alerts\":[") || sc_buf_puts(o, "{\"status\":") ||
        sc_buf_json_str(o, status) || sc_buf_puts(o, ",\"labels\":") || webhook_labels(o, a) ||
        sc_buf_puts(o, ",\"annotations\":") || webhook_annotations(o, a) ||
        sc_buf_puts(o, ",\"startsAt\":") || sc_buf_json_str(o, starts) ||
        sc_buf_puts(o, ",\"endsAt\":") || sc_buf_json_str(o, ends) ||
        sc_buf_printf(o, ",\"generatorURL\":\"\",\"fingerprint\":\"%016llx\"}]",
                      (unsigned long long)webhook_fingerprint(a->name)) ||
        sc_buf_puts(o, ",\"groupLabels\":{\"alertname\":") || sc_buf_json_str(o, a->name) ||
        sc_buf_puts(o, "},\"commonLabels\":") || webhook_labels(o, a) ||
        sc_buf_puts(o, ",\"commonAnnotations\":") || webhook_annotations(o, a) ||
        sc_buf_puts(o, ",\"externalURL\":\"\"}"))
        return -1;
    return 0;
}

/* ==== Sender ==== */

static size_t webhook_discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* One POST. Returns the HTTP status (2xx = delivered), or 0 with err on a
 * transport error. */
static long webhook_post(CURL *c, const char *url, const char *body, char *err, size_t errlen)
{
    struct curl_slist *h = NULL, *h2 = NULL;
    long status = 0;
    char ebuf[CURL_ERROR_SIZE] = "";

    h = curl_slist_append(NULL, "Content-Type: application/json");
    h2 = h ? curl_slist_append(h, "Expect:") : NULL; /* no 100-continue round trip */
    if (!h2) {
        snprintf(err, errlen, "out of memory");
        goto cleanup;
    }
    h = h2;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, WEBHOOK_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, WEBHOOK_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_USERAGENT, "scenecomp-alerts/" SC_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, webhook_discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s", ebuf[0] ? ebuf : curl_easy_strerror(rc));
        goto cleanup;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    snprintf(err, errlen, "HTTP %ld", status);

cleanup:
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(h);
    return status;
}

/* Sleeps up to seconds unless stop is requested. Call with wh.mu held.
 * Returns true when stopping. */
static bool webhook_pause_locked(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + seconds;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    while (!wh.stop) {
        if (pthread_cond_timedwait(&wh.cond, &wh.mu, &ts) != 0)
            break;
    }
    return wh.stop;
}

static void *webhook_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-alert-hook"); /* top -H, perf */
    (void)arg;
    CURL *c = curl_easy_init();
    char err[CURL_ERROR_SIZE + 64];

    pthread_mutex_lock(&wh.mu);
    for (;;) {
        while (!wh.stop && wh.count == 0)
            pthread_cond_wait(&wh.cond, &wh.mu);
        if (wh.stop)
            break;
        char *body = wh.queue[wh.head];
        wh.queue[wh.head] = NULL;
        wh.head = (wh.head + 1) % SC_WEBHOOK_QUEUE_MAX;
        wh.count--;
        wh.busy = true;
        double pause = wh.backoff;
        bool delivered = false;
        for (int t = 1; t <= SC_WEBHOOK_TRIES && !wh.stop; t++) {
            wh.stats.attempts++;
            pthread_mutex_unlock(&wh.mu);
            long status = c ? webhook_post(c, wh.url, body, err, sizeof err) : 0;
            if (!c)
                snprintf(err, sizeof err, "cannot create a curl handle");
            delivered = status >= 200 && status < 300;
            if (!delivered)
                sc_log_warn("[Alert] webhook delivery failed (try %d/%d): %s", t, SC_WEBHOOK_TRIES,
                            err);
            pthread_mutex_lock(&wh.mu);
            if (delivered || t == SC_WEBHOOK_TRIES)
                break;
            if (webhook_pause_locked(pause))
                break;
            pause *= 2;
        }
        if (delivered)
            wh.stats.delivered++;
        else
            wh.stats.failed++;
        if (!delivered && !wh.stop)
            sc_log_error("[Alert] webhook gave up after %d tries; notification lost",
                         SC_WEBHOOK_TRIES);
        free(body);
        wh.busy = false;
        pthread_cond_broadcast(&wh.cond);
    }
    pthread_mutex_unlock(&wh.mu);
    if (c)
        curl_easy_cleanup(c);
    return NULL;
}

int sc_webhook_start(const char *url, char *err, size_t errlen)
{
    if (!sc_webhook_url_ok(url)) {
        snprintf(err, errlen, "ALERT_WEBHOOK_URL must be an http:// or https:// URL");
        return -1;
    }
    pthread_mutex_lock(&wh.mu);
    if (wh.running) {
        pthread_mutex_unlock(&wh.mu);
        snprintf(err, errlen, "the webhook sender is already running");
        return -1;
    }
    snprintf(wh.url, sizeof wh.url, "%s", url);
    wh.stop = false;
    memset(&wh.stats, 0, sizeof wh.stats);
    if (pthread_create(&wh.thread, NULL, webhook_main, NULL) != 0) {
        pthread_mutex_unlock(&wh.mu);
        snprintf(err, errlen, "cannot start the webhook thread");
        return -1;
    }
    wh.running = true;
    pthread_mutex_unlock(&wh.mu);
    return 0;
}

void sc_webhook_enqueue(const sc_webhook_alert_t *a)
{
    sc_buf_t b = SC_BUF_INIT;
    if (sc_webhook_payload(a, &b) != 0) {
        sc_buf_free(&b);
        sc_log_error("[Alert] webhook payload for %s: out of memory", a->name);
        return;
    }
    char *body = sc_buf_steal(&b, NULL);
    char *dropped = NULL;
    long long ndropped = 0;
    pthread_mutex_lock(&wh.mu);
    if (!wh.running || wh.stop) {
        pthread_mutex_unlock(&wh.mu);
        free(body);
        return;
    }
    if (wh.count == SC_WEBHOOK_QUEUE_MAX) {
        dropped = wh.queue[wh.head];
        wh.queue[wh.head] = NULL;
        wh.head = (wh.head + 1) % SC_WEBHOOK_QUEUE_MAX;
        wh.count--;
        ndropped = ++wh.stats.dropped;
    }
    wh.queue[(wh.head + wh.count) % SC_WEBHOOK_QUEUE_MAX] = body;
    wh.count++;
    wh.stats.queued++;
    pthread_cond_broadcast(&wh.cond);
    pthread_mutex_unlock(&wh.mu);
    free(dropped);
    /* a dead receiver during a storm would otherwise log one line per change */
    if (ndropped == 1 || (ndropped > 0 && ndropped % 50 == 0))
        sc_log_warn("[Alert] webhook queue full (%d): dropped the oldest notification (%lld "
                    "dropped so far)",
                    SC_WEBHOOK_QUEUE_MAX, ndropped);
}

void sc_webhook_stop(void)
{
    pthread_mutex_lock(&wh.mu);
    if (!wh.running) {
        pthread_mutex_unlock(&wh.mu);
        return;
    }
    wh.stop = true;
    pthread_cond_broadcast(&wh.cond);
    pthread_mutex_unlock(&wh.mu);
    pthread_join(wh.thread, NULL);

    pthread_mutex_lock(&wh.mu);
    size_t left = wh.count;
    for (size_t k = 0; k < wh.count; k++) {
        size_t at = (wh.head + k) % SC_WEBHOOK_QUEUE_MAX;
        free(wh.queue[at]);
        wh.queue[at] = NULL;
    }
    wh.head = wh.count = 0;
    wh.running = false;
    wh.busy = false;
    pthread_mutex_unlock(&wh.mu);
    if (left)
        sc_log_warn("[Alert] webhook stopped with %zu notification(s) undelivered", left);
}

void sc_webhook_stats(sc_webhook_stats_t *out)
{
    pthread_mutex_lock(&wh.mu);
    *out = wh.stats;
    pthread_mutex_unlock(&wh.mu);
}

int sc_webhook_wait_idle(double timeout_seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + timeout_seconds;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    int rc = 0;
    pthread_mutex_lock(&wh.mu);
    while (wh.running && (wh.count > 0 || wh.busy)) {
        if (pthread_cond_timedwait(&wh.cond, &wh.mu, &ts) != 0) {
            rc = -1;
            break;
        }
    }
    pthread_mutex_unlock(&wh.mu);
    return rc;
}

void sc_webhook__set_backoff(double first_seconds)
{
    pthread_mutex_lock(&wh.mu);
    wh.backoff = first_seconds;
    pthread_mutex_unlock(&wh.mu);
}
