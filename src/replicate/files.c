/* Files API inputs (see files.h). The cache is a small array under one mutex;
 * an entry is either ready (url, reuse_until) or being uploaded by one job on
 * the client's I/O thread, with the callers that want the same bytes queued on
 * it (waiters): the job's end answers them all. */
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
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/oneshot.h"
#include "replicate/base64.h"
#include "replicate/client.h"

typedef struct files_waiter {
    struct files_waiter *next;
    sc_files_done_fn done;
    void *ud;
    bool joined; /* came while another caller's upload ran: a cache hit if it works */
} files_waiter_t;

typedef struct files_entry {
    uint8_t hash[SHA256_DIGEST_LENGTH];
    char *url;          /* NULL while uploading */
    double reuse_until; /* wall time */
    double added;       /* wall time, for eviction */
    bool uploading;
    files_waiter_t *waiters; /* while uploading */
} files_entry_t;

static struct {
    pthread_mutex_t mu;
    files_entry_t ent[SC_FILES_CACHE_MAX];
    int n;
    long uploads, hits;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

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

/* ==== Upload (a job on the client's I/O thread) ==== */

typedef struct upload_ctx {
    uint8_t hash[SHA256_DIGEST_LENGTH];
    bool cached;         /* an entry holds the waiters, else own does */
    files_waiter_t *own; /* the one waiter of an upload the full cache could not hold */
    size_t len;
} upload_ctx_t;

/* The file object's urls.get and when to stop reusing it. Returns 0, or -2
 * with err. */
static int read_file_object(const sc_rep_result_t *res, char **url, double *reuse_until, char *err,
                            size_t errlen)
{
    if (!res) {
        snprintf(err, errlen, "file upload failed (out of memory)");
        return -2;
    }
    if (res->status != SC_REP_OK) {
        snprintf(err, errlen, "%s", res->message[0] ? res->message : "file upload failed");
        return -2;
    }
    cJSON *obj = cJSON_ParseWithLength((const char *)res->output, res->output_len);
    const cJSON *urls = cJSON_GetObjectItemCaseSensitive(obj, "urls");
    const char *get = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(urls, "get"));
    const char *exp = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "expires_at"));
    const char *created = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "created_at"));
    int rc = -2;
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
    rc = *url ? 0 : -2;
    if (rc != 0)
        snprintf(err, errlen, "out of memory");
cleanup:
    cJSON_Delete(obj);
    return rc;
}

/* Answers every waiter (outside the lock: a done may start the next step). */
static void answer(files_waiter_t *w, int rc, const char *url, const char *err)
{
    while (w) {
        files_waiter_t *next = w->next;
        w->done(rc, rc == 0 ? url : NULL, rc == 0 ? NULL : err, w->ud);
        free(w);
        w = next;
    }
}

static void on_uploaded(sc_rep_result_t *res, void *ud)
{
    upload_ctx_t *u = ud;
    char *url = NULL, err[640] = "";
    double reuse_until = 0;
    int rc = read_file_object(res, &url, &reuse_until, err, sizeof err);
    sc_replicate_result_free(res);
    files_waiter_t *ws = u->own;
    pthread_mutex_lock(&g.mu);
    if (u->cached) {
        /* e may have moved (remove_at swaps the last entry in), so look it up again */
        files_entry_t *mine = NULL;
        for (int i = 0; i < g.n && !mine; i++)
            if (g.ent[i].uploading && memcmp(g.ent[i].hash, u->hash, sizeof u->hash) == 0)
                mine = &g.ent[i];
        if (mine) {
            ws = mine->waiters;
            mine->waiters = NULL;
            mine->uploading = false;
            if (rc == 0 && (mine->url = strdup(url)) != NULL)
                mine->reuse_until = reuse_until;
            else
                remove_at(mine);
        }
    }
    if (rc == 0) {
        g.uploads++;
        for (files_waiter_t *w = ws; w; w = w->next)
            g.hits += w->joined;
    }
    pthread_mutex_unlock(&g.mu);
    if (rc == 0)
        sc_log_info("replicate: uploaded an input of %zu bytes to the Files API (%s)", u->len, url);
    answer(ws, rc, url, err);
    free(url);
    free(u);
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

int sc_files_resolve(const uint8_t *bytes, size_t len, const char *mime,
                     uint8_t hash[SC_FILES_HASH_LEN], char **out)
{
    *out = NULL;
    size_t uri_len = strlen("data:;base64,") + strlen(mime) + sc_base64_encoded_len(len);
    if (uri_len <= SC_FILES_DATA_URI_MAX) {
        *out = data_uri(bytes, len, mime);
        return *out ? 0 : -1;
    }
    SHA256(bytes, len, hash);
    pthread_mutex_lock(&g.mu);
    files_entry_t *e = find(hash);
    if (e && !e->uploading && e->reuse_until > sc_clock_wall()) {
        *out = strdup(e->url);
        g.hits += *out != NULL;
    }
    pthread_mutex_unlock(&g.mu);
    return *out ? 0 : 1;
}

void sc_files_upload_start(const uint8_t hash[SC_FILES_HASH_LEN], const char *mime, int fd,
                           uint8_t *data, size_t len, double timeout_s, sc_files_done_fn done,
                           void *ud)
{
    files_waiter_t *w = calloc(1, sizeof *w);
    upload_ctx_t *u = NULL;
    char *hit = NULL;
    if (!w)
        goto fail;
    w->done = done;
    w->ud = ud;
    pthread_mutex_lock(&g.mu);
    double now = sc_clock_wall();
    files_entry_t *e = find(hash);
    if (e && e->uploading) { /* someone uploads these bytes right now: wait for it */
        w->joined = true;
        w->next = e->waiters;
        e->waiters = w;
        pthread_mutex_unlock(&g.mu);
        goto drop_source;
    }
    if (e && e->reuse_until > now) { /* uploaded meanwhile */
        hit = strdup(e->url);
        g.hits += hit != NULL;
        pthread_mutex_unlock(&g.mu);
        free(w);
        w = NULL;
        if (hit)
            done(0, hit, NULL, ud);
        else
            done(-1, NULL, "out of memory", ud);
        free(hit);
        goto drop_source;
    }
    if (e)
        remove_at(e); /* expired */
    u = calloc(1, sizeof *u);
    e = u ? take_slot(now) : NULL;
    if (e) {
        *e = (files_entry_t){.uploading = true, .added = now, .waiters = w};
        memcpy(e->hash, hash, sizeof e->hash);
    }
    pthread_mutex_unlock(&g.mu);
    if (!u)
        goto fail;
    memcpy(u->hash, hash, sizeof u->hash);
    u->cached = e != NULL;
    u->own = e ? NULL : w; /* every slot is an upload in flight: this one goes uncached */
    u->len = len;
    w = NULL;
    char name[48];
    snprintf(name, sizeof name, "input-%02x%02x%02x%02x%02x%02x%02x%02x.%s", hash[0], hash[1],
             hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
             strcmp(mime, "image/png") == 0 ? "png" : "jpg");
    if (sc_replicate_upload_src(name, mime, fd, data, len, timeout_s, on_uploaded, u) != 0) {
        /* the source is closed / freed by the refused call */
        sc_rep_result_t *res = calloc(1, sizeof *res);
        if (res) {
            res->status = SC_REP_API_ERROR;
            snprintf(res->message, sizeof res->message, "file upload could not be queued");
        }
        on_uploaded(res, u); /* answers the waiters that joined meanwhile too */
    }
    return;
fail:
    free(w);
    done(-1, NULL, "out of memory", ud);
drop_source:
    if (fd >= 0)
        close(fd);
    free(data);
}

/* sc_files_input's wait for its upload's answer. */
typedef struct input_wait {
    sc_oneshot_t done;
    int rc;
    char *url;
    char err[640];
} input_wait_t;

static void on_input_done(int rc, const char *url, const char *err, void *ud)
{
    input_wait_t *w = ud;
    w->rc = rc;
    w->url = url ? strdup(url) : NULL;
    if (rc == 0 && !w->url)
        w->rc = -1;
    snprintf(w->err, sizeof w->err, "%s", err ? err : (w->rc ? "out of memory" : ""));
    sc_oneshot_signal(&w->done);
}

int sc_files_input(const uint8_t *bytes, size_t len, const char *mime, double timeout_s, char **out,
                   char *err, size_t errlen)
{
    uint8_t hash[SC_FILES_HASH_LEN];
    int r = sc_files_resolve(bytes, len, mime, hash, out);
    if (r <= 0) {
        if (r < 0)
            snprintf(err, errlen, "out of memory");
        return r;
    }
    uint8_t *copy = malloc(len);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(copy, bytes, len);
    input_wait_t w = {.rc = -2};
    sc_oneshot_init(&w.done);
    sc_files_upload_start(hash, mime, -1, copy, len, timeout_s, on_input_done, &w);
    /* every upload job ends (its deadline is timeout_s), so this wait is bounded */
    sc_oneshot_wait(&w.done);
    if (w.rc != 0) {
        snprintf(err, errlen, "%s", w.err);
        free(w.url);
        return w.rc == -1 ? -1 : -2;
    }
    *out = w.url;
    return 0;
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
