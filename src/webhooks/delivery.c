/* Webhook deliveries: persisted queue + sender thread (see delivery.h).
 *
 * Ownership: w->items holds owned item pointers; only the sender removes
 * items, so the item it is delivering (w->busy) stays valid while it runs the
 * POST without the lock. Enqueue appends under the lock and rewrites the
 * queue file before returning. */
#include "webhooks/delivery.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "webhooks/webhook.h"

static const double k_default_schedule[] = {5, 15, 30, 60, 120};

typedef struct item {
    char id[128];
    char *url;
    char *body;
    size_t len;
    int tries;      /* made so far */
    double next_at; /* wall seconds */
} item_t;

struct sc_webhooks {
    pthread_mutex_t mu;
    pthread_cond_t cond; /* queue changed, stop, or idle */
    pthread_t thread;
    bool started, curl_inited;
    atomic_bool stop;
    item_t **items;
    size_t n, cap;
    item_t *busy; /* being delivered (still in items) */
    char path[PATH_MAX];
    char *secret, *allowed;
    double schedule[SC_WEBHOOKS_SCHEDULE_MAX];
    size_t nschedule;
    double timeout;
    sc_webhooks_stats_t stats;
};

static void item_free(item_t *it)
{
    if (!it)
        return;
    free(it->url);
    free(it->body);
    free(it);
}

static item_t *item_new(const char *id, const char *url, const char *body, size_t len)
{
    item_t *it = calloc(1, sizeof *it);
    if (!it)
        return NULL;
    snprintf(it->id, sizeof it->id, "%s", id);
    it->url = strdup(url);
    it->body = malloc(len + 1);
    if (!it->url || !it->body) {
        item_free(it);
        return NULL;
    }
    memcpy(it->body, body, len);
    it->body[len] = '\0';
    it->len = len;
    return it;
}

static int push_item(sc_webhooks_t *w, item_t *it)
{
    if (w->n == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 16;
        item_t **ni = realloc(w->items, ncap * sizeof *ni);
        if (!ni)
            return -1;
        w->items = ni;
        w->cap = ncap;
    }
    w->items[w->n++] = it;
    return 0;
}

static void remove_item(sc_webhooks_t *w, item_t *it)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->items[i] != it)
            continue;
        memmove(&w->items[i], &w->items[i + 1], (w->n - i - 1) * sizeof *w->items);
        w->n--;
        break;
    }
    item_free(it);
}

/* ==== The queue file ==== */

/* Rewrites the queue file from w->items. Under w->mu. Returns 0 or -1 (errno). */
static int persist(sc_webhooks_t *w)
{
    cJSON *root = cJSON_CreateObject(), *arr = NULL;
    char *text = NULL;
    int rc = -1;
    if (!root || !cJSON_AddNumberToObject(root, "version", 1) ||
        !(arr = cJSON_AddArrayToObject(root, "items")))
        goto out;
    for (size_t i = 0; i < w->n; i++) {
        const item_t *it = w->items[i];
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o) || !cJSON_AddStringToObject(o, "id", it->id) ||
            !cJSON_AddStringToObject(o, "url", it->url) ||
            !cJSON_AddStringToObject(o, "body", it->body) ||
            !cJSON_AddNumberToObject(o, "tries", it->tries) ||
            !cJSON_AddNumberToObject(o, "next_at", it->next_at))
            goto out;
    }
    if (!(text = cJSON_PrintUnformatted(root)))
        goto out;
    rc = sc_fs_write_atomic(w->path, text, strlen(text));
out:
    if (rc != 0 && errno == 0)
        errno = ENOMEM;
    cJSON_free(text);
    cJSON_Delete(root);
    return rc;
}

/* Loads the queue file into w->items (before the sender starts). A corrupt
 * file is moved aside; a missing one is an empty queue. */
static void load(sc_webhooks_t *w)
{
    char *text = NULL, aside[PATH_MAX + 16];
    size_t len = 0;
    int rc = sc_fs_read_file(w->path, (size_t)SC_WEBHOOKS_QUEUE_MAX * (SC_WEBHOOKS_BODY_MAX + 4096),
                             &text, &len);
    if (rc != 0) {
        if (!(rc == -1 && errno == ENOENT))
            sc_log_warn("[Webhook] cannot read the queue %s (%s); starting with an empty queue",
                        w->path, rc == -2 ? "too large" : strerror(errno));
        return;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "items");
    if (!cJSON_IsArray(arr)) {
        snprintf(aside, sizeof aside, "%s.corrupt", w->path);
        rename(w->path, aside);
        sc_log_warn("[Webhook] queue file %s is corrupt; moved aside to %s", w->path, aside);
        cJSON_Delete(root);
        return;
    }
    size_t skipped = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, arr)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        const cJSON *url = cJSON_GetObjectItemCaseSensitive(o, "url");
        const cJSON *body = cJSON_GetObjectItemCaseSensitive(o, "body");
        const cJSON *tries = cJSON_GetObjectItemCaseSensitive(o, "tries");
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(o, "next_at");
        item_t *it = NULL;
        if (!cJSON_IsString(id) || strlen(id->valuestring) >= sizeof it->id ||
            !cJSON_IsString(url) || !cJSON_IsString(body) || !cJSON_IsNumber(tries) ||
            !cJSON_IsNumber(next) || !isfinite(next->valuedouble) || tries->valuedouble < 0 ||
            w->n >= SC_WEBHOOKS_QUEUE_MAX ||
            !(it = item_new(id->valuestring, url->valuestring, body->valuestring,
                            strlen(body->valuestring)))) {
            skipped++;
            continue;
        }
        it->tries = tries->valuedouble > 1000 ? 1000 : (int)tries->valuedouble;
        it->next_at = next->valuedouble;
        if (push_item(w, it) != 0) {
            item_free(it);
            skipped++;
        }
    }
    cJSON_Delete(root);
    if (w->n || skipped)
        sc_log_info("[Webhook] resuming %zu pending deliveries from %s%s", w->n, w->path,
                    skipped ? " (some malformed entries skipped)" : "");
}

/* ==== One try ==== */

typedef struct conn_ctx {
    bool allow_any; /* host allow-listed: no address check */
    bool refused;
    char why[160];
    const atomic_bool *stop;
} conn_ctx_t;

/* CURLOPT_OPENSOCKETFUNCTION: the address actually connected to is checked
 * here, after DNS, so a name that resolved to a public address at accept time
 * and to a private one now is still refused. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    conn_ctx_t *c = clientp;
    (void)purpose;
    const char *why = c->allow_any ? NULL : sc_webhooks_addr_forbidden(&a->addr);
    if (why) {
        c->refused = true;
        snprintf(c->why, sizeof c->why, "connection to a %s address refused", why);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static int on_progress(void *clientp, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    const conn_ctx_t *c = clientp;
    (void)dt, (void)dn, (void)ut, (void)un;
    return atomic_load(c->stop) ? 1 : 0;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p, (void)ud;
    return size * n;
}

typedef enum { TRY_OK, TRY_RETRY, TRY_REFUSED } try_result_t;

/* POSTs it once. Runs on the sender thread without the lock. */
static try_result_t try_once(sc_webhooks_t *w, const item_t *it, const char *host, char *why,
                             size_t whylen)
{
    char sig[SC_WEBHOOKS_SIG_LEN], h_id[192], h_ts[64], h_sig[96];
    long long ts = (long long)sc_clock_wall();
    if (sc_webhooks_sign(w->secret, it->id, ts, it->body, it->len, sig) != 0) {
        snprintf(why, whylen, "cannot sign the payload");
        return TRY_RETRY;
    }
    snprintf(h_id, sizeof h_id, "webhook-id: %s", it->id);
    snprintf(h_ts, sizeof h_ts, "webhook-timestamp: %lld", ts);
    snprintf(h_sig, sizeof h_sig, "webhook-signature: %s", sig);
    conn_ctx_t c = {sc_webhooks_host_allowed(host, w->allowed), false, "", &w->stop};
    struct curl_slist *hdrs = NULL, *t;
    const char *lines[] = {"Content-Type: application/json", "Expect:", h_id, h_ts, h_sig};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (!(t = curl_slist_append(hdrs, lines[i]))) {
            curl_slist_free_all(hdrs);
            snprintf(why, whylen, "out of memory");
            return TRY_RETRY;
        }
        hdrs = t;
    }
    CURL *e = curl_easy_init();
    if (!e) {
        curl_slist_free_all(hdrs);
        snprintf(why, whylen, "out of memory");
        return TRY_RETRY;
    }
    long ms = (long)(w->timeout * 1000);
    curl_easy_setopt(e, CURLOPT_URL, it->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* the checked address is the one we connect to */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms < 5000 ? ms : 5000L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, it->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)it->len);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "scenecomp/" SC_VERSION " webhook");
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, &c);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, &c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    CURLcode cc = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hdrs);
    if (c.refused) {
        snprintf(why, whylen, "%s", c.why);
        return TRY_REFUSED;
    }
    if (cc != CURLE_OK) {
        snprintf(why, whylen, "%s", curl_easy_strerror(cc));
        return TRY_RETRY;
    }
    if (status < 200 || status > 299) {
        snprintf(why, whylen, "HTTP %ld", status);
        return TRY_RETRY;
    }
    snprintf(why, whylen, "HTTP %ld", status);
    return TRY_OK;
}

/* ==== The sender ==== */

static item_t *earliest(sc_webhooks_t *w)
{
    item_t *best = NULL;
    for (size_t i = 0; i < w->n; i++)
        if (!best || w->items[i]->next_at < best->next_at)
            best = w->items[i];
    return best;
}

static void wait_until_wall(sc_webhooks_t *w, double at)
{
    struct timespec ts;
    double s = floor(at);
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((at - s) * 1e9);
    pthread_cond_timedwait(&w->cond, &w->mu, &ts);
}

static void *sender(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-webhooks"); /* top -H, perf */
    sc_webhooks_t *w = arg;
    char why[256], host[256], scheme[16], err[256];
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop)) {
        item_t *it = earliest(w);
        if (!it) {
            pthread_cond_broadcast(&w->cond); /* idle */
            pthread_cond_wait(&w->cond, &w->mu);
            continue;
        }
        double now = sc_clock_wall();
        if (it->next_at > now) {
            wait_until_wall(w, it->next_at);
            continue;
        }
        w->busy = it;
        int tries = (int)w->nschedule + 1;
        pthread_mutex_unlock(&w->mu);

        try_result_t r;
        if (sc_webhooks_parse_url(it->url, scheme, sizeof scheme, host, sizeof host, err,
                                  sizeof err) != 0) {
            snprintf(why, sizeof why, "%s", err);
            snprintf(host, sizeof host, "?");
            r = TRY_REFUSED;
        } else {
            r = try_once(w, it, host, why, sizeof why);
        }

        pthread_mutex_lock(&w->mu);
        w->busy = NULL;
        if (atomic_load(&w->stop) && r == TRY_RETRY)
            break; /* cut by stop: not a try; it stays queued as it was */
        w->stats.attempts++;
        it->tries++;
        if (r == TRY_OK) {
            sc_log_info("[Webhook] delivered id=%s to %s (%s, try %d/%d)", it->id, host, why,
                        it->tries, tries);
            w->stats.delivered++;
            remove_item(w, it);
        } else if (r == TRY_REFUSED) {
            sc_log_error("[Webhook] not delivering id=%s to %s: %s", it->id, host, why);
            w->stats.failed++;
            remove_item(w, it);
        } else if (it->tries >= tries) {
            sc_log_error("[Webhook] giving up on id=%s to %s after %d tries (last: %s)", it->id,
                         host, it->tries, why);
            w->stats.failed++;
            remove_item(w, it);
        } else {
            double pause = w->schedule[it->tries - 1];
            it->next_at = sc_clock_wall() + pause;
            sc_log_warn("[Webhook] try %d/%d for id=%s to %s failed: %s; next try in %.1f s",
                        it->tries, tries, it->id, host, why, pause);
        }
        if (persist(w) != 0)
            sc_log_warn("[Webhook] cannot write the queue %s: %s", w->path, strerror(errno));
        pthread_cond_broadcast(&w->cond);
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ==== Public API ==== */

sc_webhooks_t *sc_webhooks_start(const sc_webhooks_opts_t *o, char *err, size_t errlen)
{
    if (!o->secret || !o->secret[0]) {
        snprintf(err, errlen, "WEBHOOK_SECRET is not set");
        return NULL;
    }
    if (o->nschedule > SC_WEBHOOKS_SCHEDULE_MAX) {
        snprintf(err, errlen, "at most %d retry pauses", SC_WEBHOOKS_SCHEDULE_MAX);
        return NULL;
    }
    sc_webhooks_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    atomic_init(&w->stop, false);
    w->secret = strdup(o->secret);
    w->allowed = strdup(o->allowed_hosts ? o->allowed_hosts : "");
    w->timeout = o->timeout_seconds > 0 ? o->timeout_seconds : 10;
    const double *sched = o->schedule && o->nschedule ? o->schedule : k_default_schedule;
    w->nschedule = o->schedule && o->nschedule
                       ? o->nschedule
                       : sizeof k_default_schedule / sizeof k_default_schedule[0];
    memcpy(w->schedule, sched, w->nschedule * sizeof *sched);
    int n = snprintf(w->path, sizeof w->path, "%s/%s", o->logs_dir, SC_WEBHOOKS_QUEUE_FILE);
    if (!w->secret || !w->allowed) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (n < 0 || (size_t)n >= sizeof w->path || sc_fs_mkdirs(o->logs_dir) != 0) {
        snprintf(err, errlen, "cannot use LOGS_DIR %s for the webhook queue", o->logs_dir);
        goto fail;
    }
    sc_log_add_secret(o->secret);
    curl_global_init(CURL_GLOBAL_DEFAULT); /* reference-counted; balanced in stop */
    w->curl_inited = true;
    load(w);
    if (pthread_create(&w->thread, NULL, sender, w) != 0) {
        snprintf(err, errlen, "cannot start the webhook thread");
        goto fail;
    }
    w->started = true;
    return w;
fail:
    sc_webhooks_stop(w);
    return NULL;
}

int sc_webhooks_enqueue(sc_webhooks_t *w, const char *id, const char *url, const char *body,
                        size_t len, char *err, size_t errlen)
{
    char scheme[16], host[256];
    if (!id || !id[0] || strlen(id) >= sizeof((item_t *)0)->id) {
        snprintf(err, errlen, "webhook id must be 1-127 characters");
        return -1;
    }
    if (sc_webhooks_parse_url(url, scheme, sizeof scheme, host, sizeof host, err, errlen) != 0)
        return -1;
    if (len > SC_WEBHOOKS_BODY_MAX || memchr(body, '\0', len)) {
        snprintf(err, errlen, "webhook body must be text of at most %d bytes",
                 SC_WEBHOOKS_BODY_MAX);
        return -1;
    }
    item_t *it = item_new(id, url, body, len);
    if (!it) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    it->next_at = sc_clock_wall();
    pthread_mutex_lock(&w->mu);
    int rc = -1;
    if (w->n >= SC_WEBHOOKS_QUEUE_MAX) {
        snprintf(err, errlen, "webhook queue is full (%d pending deliveries)",
                 SC_WEBHOOKS_QUEUE_MAX);
    } else if (push_item(w, it) != 0) {
        snprintf(err, errlen, "out of memory");
    } else if (persist(w) != 0) {
        snprintf(err, errlen, "cannot write the webhook queue %s: %s", w->path, strerror(errno));
        w->n--; /* it is the last one; nothing else changed meanwhile */
    } else {
        rc = 0;
        it = NULL;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->mu);
    item_free(it);
    return rc;
}

void sc_webhooks_stop(sc_webhooks_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    if (w->started)
        pthread_join(w->thread, NULL);
    for (size_t i = 0; i < w->n; i++)
        item_free(w->items[i]);
    free(w->items);
    free(w->secret);
    free(w->allowed);
    if (w->curl_inited)
        curl_global_cleanup();
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

const double *sc_webhooks_default_schedule(size_t *n)
{
    *n = sizeof k_default_schedule / sizeof k_default_schedule[0];
    return k_default_schedule;
}

void sc_webhooks_get_stats(sc_webhooks_t *w, sc_webhooks_stats_t *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    out->queued = (long long)w->n;
    pthread_mutex_unlock(&w->mu);
}

int sc_webhooks_wait_idle(sc_webhooks_t *w, double timeout_seconds)
{
    double end = sc_clock_wall() + timeout_seconds;
    pthread_mutex_lock(&w->mu);
    while (w->n > 0 || w->busy) {
        if (sc_clock_wall() >= end) {
            pthread_mutex_unlock(&w->mu);
            return -1;
        }
        double at = sc_clock_wall() + 0.05;
        wait_until_wall(w, at < end ? at : end);
    }
    pthread_mutex_unlock(&w->mu);
    return 0;
}
