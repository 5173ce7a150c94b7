/* Files API inputs (see files.h). The cache is a small array under one mutex;
 * an entry is either ready (url, reuse_until) or being uploaded by one thread
 * (the others wait on the condition variable and then look again). */
#include "replicate/files.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "replicate/base64.h"
#include "replicate/client.h"

typedef struct files_entry {
    uint8_t hash[SHA256_DIGEST_LENGTH];
    char *url;          /* NULL while uploading */
    double reuse_until; /* wall time */
    double added;       /* wall time, for eviction */
    bool uploading;
} files_entry_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    files_entry_t ent[SC_FILES_CACHE_MAX];
    int n;
    long uploads, hits;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* ==== Time ==== */

int sc_files_parse_time(const char *s, double *out)
{
    int y, mo, d, h, mi, n = 0;
    double sec;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%lf%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6)
        return -1;
    const char *z = s + n;
    long off = 0;
    if (*z == 'Z' || *z == 'z') {
        z++;
    } else if (*z == '+' || *z == '-') {
        int oh, om;
        if (sscanf(z + 1, "%2d:%2d", &oh, &om) != 2)
            return -1;
        off = (oh * 3600L + om * 60L) * (*z == '+' ? 1 : -1);
        z += 6;
    } else {
        return -1;
    }
    if (*z != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec < 0 ||
        sec >= 61)
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = (double)t + sec - (double)off;
    return 0;
}

/* ==== Cache (under g.mu) ==== */

static files_entry_t *find(const uint8_t *hash)
{
    for (int i = 0; i < g.n; i++)
        if (memcmp(g.ent[i].hash, hash, sizeof g.ent[i].hash) == 0)
            return &g.ent[i];
    return NULL;
}

static void remove_at(files_entry_t *e)
{
    free(e->url);
    *e = g.ent[--g.n];
}

/* A slot for a new entry: a free one, else an expired ready one, else the
 * oldest ready one; NULL when every slot is an upload in flight. */
static files_entry_t *take_slot(double now)
{
    if (g.n < SC_FILES_CACHE_MAX)
        return &g.ent[g.n++];
    files_entry_t *victim = NULL;
    for (int i = 0; i < g.n; i++) {
        files_entry_t *e = &g.ent[i];
        if (e->uploading)
            continue;
        if (e->reuse_until <= now) {
            victim = e;
            break;
        }
        if (!victim || e->added < victim->added)
            victim = e;
    }
    if (victim) {
        free(victim->url);
        victim->url = NULL;
    }
    return victim;
}

/* ==== Upload (blocking wrapper over the I/O thread's job) ==== */

typedef struct upload_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    sc_rep_result_t *res;
} upload_wait_t;

static void on_uploaded(sc_rep_result_t *res, void *ud)
{
    upload_wait_t *w = ud;
    pthread_mutex_lock(&w->mu);
    w->res = res;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Uploads and reads the file object. Returns 0 with *url (malloc'd) and
 * *reuse_until, -1 out of memory, -2 upload failure (err set). */
static int upload(const uint8_t *bytes, size_t len, const char *mime, const uint8_t *hash,
                  double timeout_s, char **url, double *reuse_until, char *err, size_t errlen)
{
    char name[48];
    snprintf(name, sizeof name, "input-%02x%02x%02x%02x%02x%02x%02x%02x.%s", hash[0], hash[1],
             hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
             strcmp(mime, "image/png") == 0 ? "png" : "jpg");
    upload_wait_t w = {.done = false, .res = NULL};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = -2;
    cJSON *obj = NULL;
    if (sc_replicate_upload(name, mime, bytes, len, timeout_s, on_uploaded, &w) != 0) {
        snprintf(err, errlen, "file upload could not be queued");
        goto cleanup;
    }
    /* the job always ends (its deadline is timeout_s), so this wait is bounded */
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    sc_rep_result_t *res = w.res;
    if (!res) {
        snprintf(err, errlen, "file upload failed (out of memory)");
        goto cleanup;
    }
    if (res->status != SC_REP_OK) {
        snprintf(err, errlen, "%s", res->message[0] ? res->message : "file upload failed");
        goto cleanup;
    }
    obj = cJSON_ParseWithLength((const char *)res->output, res->output_len);
    const cJSON *urls = cJSON_GetObjectItemCaseSensitive(obj, "urls");
    const char *get = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(urls, "get"));
    const char *exp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "expires_at"));
    const char *created = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "created_at"));
    if (!get || (strncmp(get, "https://", 8) != 0 && strncmp(get, "http://", 7) != 0)) {
        snprintf(err, errlen, "file upload answered without an http(s) urls.get");
        goto cleanup;
    }
    double now = sc_clock_wall(), t_exp = 0, t_created = now;
    if (!exp || sc_files_parse_time(exp, &t_exp) != 0) {
        t_exp = now; /* no (readable) expiry: use it for this request only */
    } else if (created) {
        sc_files_parse_time(created, &t_created);
    }
    /* stop reusing a little before the expiry, so a prediction that starts
     * now can still fetch it: a tenth of the lifetime, at most 5 minutes */
    double margin = (t_exp - t_created) / 10.0;
    if (margin > 300)
        margin = 300;
    if (margin < 0)
        margin = 0;
    *reuse_until = t_exp - margin;
    *url = strdup(get);
    rc = *url ? 0 : -1;
    if (rc == -1)
        snprintf(err, errlen, "out of memory");
cleanup:
    cJSON_Delete(obj);
    if (w.res)
        sc_replicate_result_free(w.res);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

/* ==== Public API ==== */

static char *data_uri(const uint8_t *bytes, size_t len, const char *mime)
{
    char prefix[64];
    int pl = snprintf(prefix, sizeof prefix, "data:%s;base64,", mime);
    char *uri = malloc((size_t)pl + sc_base64_encoded_len(len) + 1);
    if (!uri)
        return NULL;
    memcpy(uri, prefix, (size_t)pl);
    sc_base64_encode(bytes, len, uri + pl);
    return uri;
}

int sc_files_input(const uint8_t *bytes, size_t len, const char *mime, double timeout_s, char **out,
                   char *err, size_t errlen)
{
    *out = NULL;
    size_t uri_len = strlen("data:;base64,") + strlen(mime) + sc_base64_encoded_len(len);
    if (uri_len <= SC_FILES_DATA_URI_MAX) {
        *out = data_uri(bytes, len, mime);
        if (!*out) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    uint8_t hash[SHA256_DIGEST_LENGTH];
    SHA256(bytes, len, hash);
    double deadline = sc_clock_mono() + timeout_s;

    pthread_mutex_lock(&g.mu);
    files_entry_t *e;
    for (;;) {
        double now = sc_clock_wall();
        e = find(hash);
        if (e && e->uploading) {
            /* someone uploads these bytes right now: wait for it, bounded by our deadline */
            double left = deadline - sc_clock_mono();
            if (left <= 0) {
                pthread_mutex_unlock(&g.mu);
                snprintf(err, errlen, "file upload: deadline passed waiting for an upload");
                return -2;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double at = (double)ts.tv_sec + ts.tv_nsec / 1e9 + (left < 1.0 ? left : 1.0);
            ts.tv_sec = (time_t)at;
            ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
            pthread_cond_timedwait(&g.cv, &g.mu, &ts);
            continue;
        }
        if (e && e->reuse_until > now) {
            *out = strdup(e->url);
            g.hits += *out != NULL;
            pthread_mutex_unlock(&g.mu);
            if (!*out) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            return 0;
        }
        if (e)
            remove_at(e); /* expired */
        e = take_slot(now);
        break;
    }
    if (e) {
        memcpy(e->hash, hash, sizeof hash);
        e->url = NULL;
        e->uploading = true;
        e->added = sc_clock_wall();
        e->reuse_until = 0;
    }
    pthread_mutex_unlock(&g.mu);

    char *url = NULL;
    double reuse_until = 0;
    double left = deadline - sc_clock_mono();
    int rc = upload(bytes, len, mime, hash, left > 0.001 ? left : 0.001, &url, &reuse_until, err,
                    errlen);

    pthread_mutex_lock(&g.mu);
    if (e) {
        /* e may have moved (remove_at swaps the last entry in), so look it up again */
        files_entry_t *mine = NULL;
        for (int i = 0; i < g.n; i++)
            if (g.ent[i].uploading && memcmp(g.ent[i].hash, hash, sizeof hash) == 0)
                mine = &g.ent[i];
        if (mine) {
            if (rc == 0 && (mine->url = strdup(url)) != NULL) {
                mine->uploading = false;
                mine->reuse_until = reuse_until;
            } else {
                mine->uploading = false;
                remove_at(mine);
            }
        }
        pthread_cond_broadcast(&g.cv);
    }
    if (rc == 0)
        g.uploads++;
    pthread_mutex_unlock(&g.mu);
    if (rc == 0) {
        sc_log_info("replicate: uploaded an input of %zu bytes to the Files API (%s)", len, url);
        *out = url;
    } else {
        free(url);
    }
    return rc;
}

void sc_files_stats(long *uploads, long *cache_hits)
{
    pthread_mutex_lock(&g.mu);
    if (uploads)
        *uploads = g.uploads;
    if (cache_hits)
        *cache_hits = g.hits;
    pthread_mutex_unlock(&g.mu);
}

void sc_files_reset(void)
{
    pthread_mutex_lock(&g.mu);
    for (int i = 0; i < g.n; i++)
        if (!g.ent[i].uploading) {
            remove_at(&g.ent[i]);
            i--;
        }
    g.uploads = g.hits = 0;
    pthread_mutex_unlock(&g.mu);
}
