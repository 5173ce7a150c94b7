/* Metrics persistence and lifecycle: LOGS_DIR/composite_metrics.json (counters,
 * daily rows and the limiter's state), the writer thread, init, shutdown and
 * reset. On the first change after a save the writer is woken; it waits a
 * short debounce, copies the state under the mutex and writes the file outside
 * it, so request threads never touch the disk. A file we cannot use is moved
 * aside and the service starts from zero. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/durable.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "metrics/metrics_internal.h"

#define DEBOUNCE_SECONDS 0.5 /* a change reaches the file within ~0.5 s + write time */
#define RETRY_SECONDS 5.0    /* after a failed write */
#define FILE_MAX_BYTES (64u << 20)
#define FILE_NAME "composite_metrics.json"
#define FILE_VERSION 1
#define MAX_COUNT 9007199254740992.0 /* 2^53: exact in a JSON double */
/* Fallback reasons every file has held since version 1 (timeout .. no_token). */
#define FILE_V1_REASONS SC_FB_CIRCUIT_OPEN

/* g_io_mu orders whole saves so an older copy never overwrites a newer one;
 * the writer flags are guarded by sc_metrics__mu. Lock order: g_io_mu, then
 * g_flush_mu (the group-committed flushes and the write-ahead reservation,
 * below), then sc_metrics__mu. */
static pthread_mutex_t g_io_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_flush_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond;
static pthread_t g_thread;
static int g_running; /* writer thread started */
static int g_stop;
static int g_dirty;
static int g_write_failing;
static char g_path[PATH_MAX];

/* Marks the state changed and wakes the writer on the first change since the
 * last save (one futex wake per save, not per event). Caller holds sc_metrics__mu. */
void sc_metrics__touch(void)
{
    if (!g_dirty) {
        g_dirty = 1;
        if (g_running)
            pthread_cond_signal(&g_cond);
    }
}

/* ==== The metrics file ==== */

/* Builds the file's JSON from a private copy of the state plus the limiters'
 * exports (each may be NULL: no such store, or it persists itself). Takes
 * ownership of both exports. Caller frees the result. */
static char *state_to_json(const metrics_state_t *st, cJSON *limiter, cJSON *scene_limiter,
                           double now)
{
    char when[32];
    char *text = NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *c, *reasons, *recent, *daily;

    if (!root)
        goto done;
    sc_clock_rfc3339(now, when);
    if (!cJSON_AddNumberToObject(root, "version", FILE_VERSION) ||
        !cJSON_AddStringToObject(root, "saved_at", when) ||
        !cJSON_AddNumberToObject(root, "since", st->since))
        goto done;
    if (!(c = cJSON_AddObjectToObject(root, "counters")))
        goto done;
#define NUM(k, v)                                                                                  \
    if (!cJSON_AddNumberToObject(c, k, (double)(v)))                                               \
    goto done
    NUM("requests", st->requests);
    NUM("routed_kontext", st->routed_kontext);
    NUM("kontext_started", st->k_started);
    NUM("kontext_successes", st->k_successes);
    NUM("kontext_failures", st->k_failures);
    NUM("kontext_timeouts", st->k_timeouts);
    NUM("kontext_success_seconds", st->k_sum);
    NUM("pil_attempts", st->p_attempts);
    NUM("pil_successes", st->p_successes);
    NUM("pil_failures", st->p_failures);
    NUM("pil_success_seconds", st->p_sum);
    NUM("fallbacks", st->fallbacks);
    NUM("scenes_ok", st->scenes_ok);
    NUM("scenes_failed", st->scenes_failed);
    NUM("route_errors", st->route_errors);
#undef NUM
    if (!(reasons = cJSON_AddObjectToObject(root, "fallback_reasons")))
        goto done;
    for (int i = 0; i < SC_FB__COUNT; i++)
        if (!cJSON_AddNumberToObject(reasons, sc_fallback_reason_name((sc_fallback_reason_t)i),
                                     (double)st->reasons[i]))
            goto done;
    if (!(recent = cJSON_AddArrayToObject(root, "kontext_recent_seconds")))
        goto done;
    for (int i = 0; i < st->recent_len; i++) {
        cJSON *v = cJSON_CreateNumber(st->recent[(st->recent_head + i) % RECENT_N]);
        if (!v)
            goto done;
        cJSON_AddItemToArray(recent, v);
    }
    if (!(daily = cJSON_AddArrayToObject(root, "daily")))
        goto done;
    /* oldest first; only days that saw something */
    long today = sc_metrics__day_of(now);
    for (long d = today - (DAY_SLOTS - 1); d <= today; d++) {
        const metrics_day_t *r = sc_metrics__day_peek(st, d);
        if (!r || (r->kontext | r->pil | r->fallbacks | r->total | r->scenes) == 0)
            continue;
        char date[11];
        cJSON *row = cJSON_CreateObject();
        if (!row)
            goto done;
        cJSON_AddItemToArray(daily, row);
        sc_clock_utc_date((time_t)d * 86400, date);
        if (!cJSON_AddStringToObject(row, "date", date) ||
            !cJSON_AddNumberToObject(row, "kontext", (double)r->kontext) ||
            !cJSON_AddNumberToObject(row, "pil", (double)r->pil) ||
            !cJSON_AddNumberToObject(row, "fallbacks", (double)r->fallbacks) ||
            !cJSON_AddNumberToObject(row, "total", (double)r->total) ||
            !cJSON_AddNumberToObject(row, "scenes", (double)r->scenes))
            goto done;
    }
    if (limiter) {
        cJSON_AddItemToObject(root, "limiter", limiter);
        limiter = NULL; /* owned by root now */
    }
    if (scene_limiter) {
        cJSON_AddItemToObject(root, "scene_limiter", scene_limiter);
        scene_limiter = NULL;
    }
    text = cJSON_Print(root);
done:
    cJSON_Delete(limiter);
    cJSON_Delete(scene_limiter);
    cJSON_Delete(root);
    return text;
}

static long long reservation_locked(double now, bool grow, long long *upto);

/* The file's text from a copy of the state (caller holds g_io_mu; clears
 * g_dirty, which save_done sets again on failure). grow: the save may make a
 * new write-ahead reservation (a start gate's save); *upto (may be NULL) gets
 * the starts it covers. NULL when out of memory or before init. */
static char *snapshot_locked(double now, bool grow, long long *upto)
{
    metrics_state_t *copy = malloc(sizeof *copy);
    sc_limits_store_t *store, *scene_store;
    cJSON *limiter = NULL, *scene_limiter = NULL;
    char *text = NULL;
    long long covered;
    if (!copy || !g_path[0])
        goto done;
    /* Decided before the export reads the store: the starts made in between
     * are exported too, so the file covers at least `covered`. */
    pthread_mutex_lock(&g_flush_mu);
    long long reserved = reservation_locked(now, grow, &covered);
    pthread_mutex_unlock(&g_flush_mu);
    if (upto)
        *upto = covered;
    pthread_mutex_lock(&sc_metrics__mu);
    *copy = sc_metrics__st;
    store = sc_metrics__store;
    scene_store = sc_metrics__scene_store;
    g_dirty = 0;
    pthread_mutex_unlock(&sc_metrics__mu);
    if (store && store->export_state) {
        limiter = store->export_state(store, now, reserved);
        if (!limiter)
            goto done;
    }
    if (scene_store && scene_store->export_state) {
        scene_limiter = scene_store->export_state(scene_store, now, 0);
        if (!scene_limiter)
            goto done;
    }
    text = state_to_json(copy, limiter, scene_limiter, now); /* takes both */
    limiter = scene_limiter = NULL;
done:
    cJSON_Delete(limiter);
    cJSON_Delete(scene_limiter);
    free(copy);
    return text;
}

/* After a save (g_io_mu held): the failure flags; a failed save stays dirty
 * so the writer retries. */
static void save_done(int err)
{
    if (err) {
        if (!g_write_failing)
            sc_log_warn("[Metrics] cannot write %s: %s (will retry)", g_path, strerror(err));
        g_write_failing = 1;
        pthread_mutex_lock(&sc_metrics__mu);
        g_dirty = 1;
        pthread_mutex_unlock(&sc_metrics__mu);
        return;
    }
    if (g_write_failing)
        sc_log_info("[Metrics] %s written again", g_path);
    g_write_failing = 0;
}

/* Writes the file from a copy of the state. Holds g_io_mu for the whole save
 * so saves land in order; sc_metrics__mu only for the copy. Returns 0 or -1. */
int sc_metrics__save_now(double now)
{
    pthread_mutex_lock(&g_io_mu);
    if (!g_path[0]) {
        pthread_mutex_unlock(&g_io_mu);
        return -1;
    }
    char *text = snapshot_locked(now, false, NULL);
    int err = !text ? ENOMEM : sc_fs_write_atomic(g_path, text, strlen(text)) != 0 ? errno : 0;
    save_done(err);
    pthread_mutex_unlock(&g_io_mu);
    free(text);
    return err ? -1 : 0;
}

int sc_metrics_flush(void)
{
    return sc_metrics__save_now(sc_clock_wall());
}

/* ==== Group-committed flushes (issue 11) ====
 * Callers of sc_metrics_flush_ticket wait in g_waiters; at most one produced
 * write is queued in the committer. When its batch starts, produce takes the
 * waiters (their counts were made before they registered, so the snapshot
 * taken next covers them) and g_io_mu, which save_done releases on the same
 * (committer) thread after the commit: no older copy can land after it. */

typedef struct waiter {
    struct waiter *next;
    sc_durable_ticket_t *t;
    long long seq; /* a start gate's start (LLONG_MAX: a plain flush) */
} waiter_t;

typedef struct flush_job {
    waiter_t *covered;
    long long upto; /* the starts its save covers, reservation included */
    double at;      /* when its snapshot was taken */
    bool io_locked;
} flush_job_t;

static waiter_t *g_waiters;
static bool g_flush_queued;

/* ---- The write-ahead reservation (issue 11) ----
 * A Kontext start's create may leave once a save that counts it is durable
 * (sc_metrics_start_gate). Each such save also counts, as starts in the
 * second after it, a reservation: the starts of the last second minus one,
 * at most RESERVE_MAX. The starts it covers then open at once, with no save
 * of their own, for up to a second and within the same UTC day. Every later
 * save keeps counting what was reserved and not yet started, and the last
 * save at shutdown is exact. After a crash the restarted process counts at
 * most the reservation more than really started: the limits err on the safe
 * side. A lone start reserves nothing, so a quiet service's file stays exact.
 * All under g_flush_mu. */
#define RESERVE_MAX 64
#define RESERVE_SECONDS 1.0

static long long g_seq;                   /* starts gated so far */
static long long g_promised;              /* the most starts a save has covered */
static long long g_durable;               /* the same for the newest durable save ... */
static double g_durable_at;               /* ... and when its snapshot was taken */
static long g_rate_sec;                   /* the whole second of g_rate_now */
static long long g_rate_now, g_rate_prev; /* starts in it and in the one before */
static bool g_exact;                      /* shutdown: no start can come any more */

static void rate_roll(double now)
{
    long sec = (long)floor(now);
    if (sec != g_rate_sec) {
        g_rate_prev = sec == g_rate_sec + 1 ? g_rate_now : 0;
        g_rate_now = 0;
        g_rate_sec = sec;
    }
}

/* The starts a save at now must count beyond those made (caller holds
 * g_flush_mu and g_io_mu, so saves decide in the order they land): what
 * earlier saves covered, and with grow a new reservation. *upto gets the
 * starts the save covers. */
static long long reservation_locked(double now, bool grow, long long *upto)
{
    long long want = g_seq;
    if (!g_exact) {
        if (grow) {
            rate_roll(now);
            long long r = (g_rate_now > g_rate_prev ? g_rate_now : g_rate_prev) - 1;
            want += r < 0 ? 0 : r > RESERVE_MAX ? RESERVE_MAX : r;
        }
        if (g_promised > want)
            want = g_promised;
        g_promised = want;
    }
    *upto = want;
    return want - g_seq;
}

static void complete_waiters(waiter_t *w, int err)
{
    while (w) {
        waiter_t *next = w->next;
        sc_durable_ticket_complete(w->t, err);
        sc_durable_ticket_unref(w->t);
        free(w);
        w = next;
    }
}

static int flush_produce(void *ud, char **data, size_t *len)
{
    flush_job_t *fj = ud;
    pthread_mutex_lock(&g_io_mu);
    fj->io_locked = true;
    pthread_mutex_lock(&g_flush_mu);
    fj->covered = g_waiters;
    g_waiters = NULL;
    g_flush_queued = false;
    pthread_mutex_unlock(&g_flush_mu);
    fj->at = sc_clock_wall();
    *data = snapshot_locked(fj->at, true, &fj->upto);
    if (!*data)
        return ENOMEM;
    *len = strlen(*data);
    return 0;
}

static void flush_done(int err, void *ud)
{
    flush_job_t *fj = ud;
    waiter_t *opened = NULL;
    if (fj->io_locked) {
        save_done(err);
        pthread_mutex_lock(&g_flush_mu);
        if (!err && fj->upto >= g_durable) {
            g_durable = fj->upto;
            g_durable_at = fj->at;
            /* the gates that came after its snapshot and are within it */
            for (waiter_t **p = &g_waiters; *p;) {
                waiter_t *w = *p;
                if (w->seq <= g_durable) {
                    *p = w->next;
                    w->next = opened;
                    opened = w;
                } else {
                    p = &w->next;
                }
            }
        }
        pthread_mutex_unlock(&g_flush_mu);
        pthread_mutex_unlock(&g_io_mu);
    }
    complete_waiters(fj->covered, err);
    complete_waiters(opened, 0);
    free(fj);
}

/* Queues t (a start gate's seq, or LLONG_MAX) for the next save. */
static int wait_for_save(sc_durable_ticket_t *t, long long seq)
{
    sc_durable_t *d = sc_durable_global();
    waiter_t *w = malloc(sizeof *w);
    if (!w)
        return -1;
    sc_durable_ticket_ref(t);
    w->t = t;
    w->seq = seq;
    pthread_mutex_lock(&g_flush_mu);
    w->next = g_waiters;
    g_waiters = w;
    bool queue = !g_flush_queued;
    g_flush_queued = true;
    pthread_mutex_unlock(&g_flush_mu);
    if (!queue)
        return 0; /* the queued write's snapshot is taken later: it covers this count */
    flush_job_t *fj = calloc(1, sizeof *fj);
    if (fj && sc_durable_write_produced(d, g_path, flush_produce, flush_done, fj) == 0)
        return 0;
    free(fj);
    /* Not queued (out of memory, stopping): write here, complete everyone waiting. */
    pthread_mutex_lock(&g_flush_mu);
    waiter_t *all = g_waiters;
    g_waiters = NULL;
    g_flush_queued = false;
    pthread_mutex_unlock(&g_flush_mu);
    int rc = sc_metrics_flush();
    complete_waiters(all, rc == 0 ? 0 : EIO);
    return 0;
}

int sc_metrics_flush_ticket(sc_durable_ticket_t *t)
{
    if (!sc_durable_global() || !g_path[0])
        return -1;
    return wait_for_save(t, LLONG_MAX);
}

int sc_metrics_start_gate(sc_durable_ticket_t *t)
{
    if (!sc_durable_global() || !g_path[0])
        return -1;
    double now = sc_clock_wall();
    pthread_mutex_lock(&g_flush_mu);
    long long seq = ++g_seq;
    rate_roll(now);
    g_rate_now++;
    bool open = seq <= g_durable && now - g_durable_at < RESERVE_SECONDS &&
                sc_metrics__day_of(now) == sc_metrics__day_of(g_durable_at);
    pthread_mutex_unlock(&g_flush_mu);
    if (!open)
        return wait_for_save(t, seq);
    sc_durable_ticket_complete(t, 0);
    return 0;
}

/* Reads a non-negative integer count (at most 2^53). Returns 0 or -1. */
static int get_count(const cJSON *obj, const char *key, long long *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > MAX_COUNT || d != floor(d))
        return -1;
    *out = (long long)d;
    return 0;
}

static int get_seconds(const cJSON *obj, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0)
        return -1;
    *out = v->valuedouble;
    return 0;
}

/* Parses the file into st (zeroed first). Every field our writer emits is
 * required with the right type and range; returns 0 or -1 with a short reason. */
static int state_from_json(const cJSON *root, metrics_state_t *st, const char **why)
{
    const cJSON *v, *c, *reasons, *recent, *daily, *it;

    sc_metrics__state_zero(st, 0);
    *why = "not a JSON object";
    if (!cJSON_IsObject(root))
        return -1;
    *why = "unsupported or missing version";
    v = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!cJSON_IsNumber(v) || v->valuedouble != FILE_VERSION)
        return -1;
    *why = "bad since";
    v = cJSON_GetObjectItemCaseSensitive(root, "since");
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return -1;
    st->since = v->valuedouble;

    *why = "bad counters";
    c = cJSON_GetObjectItemCaseSensitive(root, "counters");
    if (!cJSON_IsObject(c) || get_count(c, "requests", &st->requests) ||
        get_count(c, "routed_kontext", &st->routed_kontext) ||
        get_count(c, "kontext_started", &st->k_started) ||
        get_count(c, "kontext_successes", &st->k_successes) ||
        get_count(c, "kontext_failures", &st->k_failures) ||
        get_count(c, "kontext_timeouts", &st->k_timeouts) ||
        get_seconds(c, "kontext_success_seconds", &st->k_sum) ||
        get_count(c, "pil_attempts", &st->p_attempts) ||
        get_count(c, "pil_successes", &st->p_successes) ||
        get_count(c, "pil_failures", &st->p_failures) ||
        get_seconds(c, "pil_success_seconds", &st->p_sum) ||
        get_count(c, "fallbacks", &st->fallbacks) || get_count(c, "scenes_ok", &st->scenes_ok) ||
        get_count(c, "scenes_failed", &st->scenes_failed) ||
        get_count(c, "route_errors", &st->route_errors))
        return -1;

    *why = "bad fallback_reasons";
    reasons = cJSON_GetObjectItemCaseSensitive(root, "fallback_reasons");
    if (!cJSON_IsObject(reasons))
        return -1;
    /* Reasons added after the first file format may be missing from an older
     * file (they were 0 then); one that is present must be a valid count. */
    for (int i = 0; i < SC_FB__COUNT; i++) {
        const char *name = sc_fallback_reason_name((sc_fallback_reason_t)i);
        if (i >= FILE_V1_REASONS && !cJSON_GetObjectItemCaseSensitive(reasons, name))
            continue;
        if (get_count(reasons, name, &st->reasons[i]))
            return -1;
    }

    *why = "bad kontext_recent_seconds";
    recent = cJSON_GetObjectItemCaseSensitive(root, "kontext_recent_seconds");
    if (!cJSON_IsArray(recent))
        return -1;
    int n = cJSON_GetArraySize(recent), i = 0;
    cJSON_ArrayForEach(it, recent)
    {
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < 0)
            return -1;
        if (i++ < n - RECENT_N) /* keep the newest RECENT_N */
            continue;
        st->recent[st->recent_len++] = it->valuedouble;
    }

    *why = "bad daily rows";
    daily = cJSON_GetObjectItemCaseSensitive(root, "daily");
    if (!cJSON_IsArray(daily))
        return -1;
    cJSON_ArrayForEach(it, daily)
    {
        const cJSON *date = cJSON_GetObjectItemCaseSensitive(it, "date");
        metrics_day_t row = {0};
        if (!cJSON_IsObject(it) || !cJSON_IsString(date) ||
            sc_clock_parse_utc_date(date->valuestring, &row.day) ||
            get_count(it, "kontext", &row.kontext) || get_count(it, "pil", &row.pil) ||
            get_count(it, "fallbacks", &row.fallbacks) || get_count(it, "total", &row.total) ||
            get_count(it, "scenes", &row.scenes))
            return -1;
        metrics_day_t *slot = sc_metrics__day_row(st, row.day); /* an older duplicate slot loses */
        if (slot)
            *slot = (metrics_day_t){row.day,       1,         row.kontext, row.pil,
                                    row.fallbacks, row.total, row.scenes};
    }
    return 0;
}

/* Moves a file we cannot use out of the way, keeping it for a post-mortem
 * (never over an earlier corrupt file of the same second). */
static void move_aside(const char *why)
{
    char dst[PATH_MAX + 64];
    long long ts = (long long)time(NULL);
    snprintf(dst, sizeof dst, "%s.corrupt-%lld", g_path, ts);
    for (int i = 1; i < 1000 && access(dst, F_OK) == 0; i++)
        snprintf(dst, sizeof dst, "%s.corrupt-%lld-%d", g_path, ts, i);
    if (rename(g_path, dst) == 0)
        sc_log_warn("[Metrics] %s is unusable (%s): moved to %s, starting with zero counters",
                    g_path, why, dst);
    else
        sc_log_error("[Metrics] %s is unusable (%s) and cannot be moved aside: %s; starting with "
                     "zero counters, it will be overwritten",
                     g_path, why, strerror(errno));
}

/* Loads g_path into the globals and the store. A missing file is a fresh
 * start; anything unreadable as our format is moved aside. */
static void load_file(double now)
{
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    metrics_state_t *st = NULL;
    const char *why = "out of memory";

    int r = sc_fs_read_file(g_path, FILE_MAX_BYTES, &text, &len);
    if (r == -1 && errno == ENOENT) {
        sc_log_info("[Metrics] no %s yet: starting with zero counters", g_path);
        goto done;
    }
    if (r == -1) {
        sc_log_warn("[Metrics] cannot read %s: %s; starting with zero counters", g_path,
                    strerror(errno));
        goto done;
    }
    if (r == -2) {
        move_aside("larger than 64 MiB");
        goto done;
    }
    st = malloc(sizeof *st);
    if (!st) {
        sc_log_error("[Metrics] out of memory loading %s; starting with zero counters", g_path);
        goto done;
    }
    /* NUL bytes never occur in our JSON; a file of zeros is what some
     * filesystems leave after a crash, so say so. */
    if (memchr(text, '\0', len)) {
        move_aside("contains NUL bytes");
        goto done;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    while (root && end < text + len && *end && strchr(" \t\r\n", *end))
        end++;
    if (!root || end != text + len) { /* trailing bytes are corruption too */
        move_aside("not valid JSON");
        goto done;
    }
    if (state_from_json(root, st, &why) != 0) {
        move_aside(why);
        goto done;
    }
    if (sc_metrics__store && sc_metrics__store->import_state) {
        const cJSON *lim = cJSON_GetObjectItemCaseSensitive(root, "limiter");
        if (!cJSON_IsObject(lim) ||
            sc_metrics__store->import_state(sc_metrics__store, lim, now) != 0) {
            move_aside("bad limiter state");
            goto done;
        }
    }
    /* The scene limiter's state is optional: files written before scenes had
     * caps lack it (a fresh window then). One that is present must import, or
     * the whole file is set aside, the Kontext state just imported included. */
    sc_limits_store_t *ss = sc_metrics__scene_store;
    const cJSON *slim = cJSON_GetObjectItemCaseSensitive(root, "scene_limiter");
    if (ss && ss->import_state && slim &&
        (!cJSON_IsObject(slim) || ss->import_state(ss, slim, now) != 0)) {
        if (sc_metrics__store)
            sc_metrics__store->reset(sc_metrics__store);
        move_aside("bad scene_limiter state");
        goto done;
    }
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__st = *st;
    pthread_mutex_unlock(&sc_metrics__mu);
    sc_log_info("[Metrics] loaded %s", g_path);
done:
    cJSON_Delete(root);
    free(st);
    free(text);
}

/* ==== Writer thread and lifecycle ==== */

static void deadline_in(struct timespec *ts, double seconds)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    double ns = (double)ts->tv_nsec + seconds * 1e9;
    ts->tv_sec += (time_t)(ns / 1e9);
    ts->tv_nsec = (long)fmod(ns, 1e9);
}

/* Sleeps until a change, then waits DEBOUNCE_SECONDS so a burst of events
 * becomes one write, then saves. Stops on g_stop (shutdown saves itself). */
static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-metrics"); /* top -H, perf */
    (void)arg;
    struct timespec ts;
    pthread_mutex_lock(&sc_metrics__mu);
    while (!g_stop) {
        if (!g_dirty) {
            pthread_cond_wait(&g_cond, &sc_metrics__mu);
            continue;
        }
        deadline_in(&ts, DEBOUNCE_SECONDS);
        while (!g_stop && pthread_cond_timedwait(&g_cond, &sc_metrics__mu, &ts) != ETIMEDOUT)
            ;
        if (g_stop)
            break;
        pthread_mutex_unlock(&sc_metrics__mu);
        int rc = sc_metrics__save_now(sc_clock_wall());
        pthread_mutex_lock(&sc_metrics__mu);
        if (rc != 0) {
            deadline_in(&ts, RETRY_SECONDS);
            while (!g_stop && pthread_cond_timedwait(&g_cond, &sc_metrics__mu, &ts) != ETIMEDOUT)
                ;
        }
    }
    pthread_mutex_unlock(&sc_metrics__mu);
    return NULL;
}

int sc_metrics_init(const sc_config_t *cfg, sc_limits_store_t *store)
{
    return sc_metrics_init_with_scenes(cfg, store, NULL);
}

int sc_metrics_init_with_scenes(const sc_config_t *cfg, sc_limits_store_t *store,
                                sc_limits_store_t *scene_store)
{
    pthread_condattr_t attr;
    double now = sc_clock_wall();

    if (g_running) {
        sc_log_error("[Metrics] sc_metrics_init called twice");
        return -1;
    }
    if (sc_fs_mkdirs(cfg->logs_dir) != 0) {
        sc_log_error("[Metrics] cannot create LOGS_DIR %s: %s", cfg->logs_dir, strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&g_io_mu);
    int plen = snprintf(g_path, sizeof g_path, "%s/%s", cfg->logs_dir, FILE_NAME);
    if (plen >= (int)sizeof g_path)
        g_path[0] = '\0';
    pthread_mutex_unlock(&g_io_mu);
    if (plen >= (int)sizeof g_path) {
        sc_log_error("[Metrics] LOGS_DIR path too long");
        return -1;
    }
    pthread_mutex_lock(&g_flush_mu);
    g_seq = g_promised = g_durable = 0;
    g_durable_at = 0;
    g_rate_sec = 0;
    g_rate_now = g_rate_prev = 0;
    g_exact = false;
    pthread_mutex_unlock(&g_flush_mu);
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__state_zero(&sc_metrics__st, now);
    sc_metrics__cfg = cfg;
    sc_metrics__store = store;
    sc_metrics__scene_store = scene_store;
    g_dirty = 0;
    g_stop = 0;
    g_write_failing = 0;
    pthread_mutex_unlock(&sc_metrics__mu);
    load_file(now);

    if (pthread_condattr_init(&attr) != 0)
        goto fail;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int crc = pthread_cond_init(&g_cond, &attr);
    pthread_condattr_destroy(&attr);
    if (crc != 0)
        goto fail;
    if (pthread_create(&g_thread, NULL, writer_main, NULL) != 0) {
        pthread_cond_destroy(&g_cond);
        goto fail;
    }
    pthread_mutex_lock(&sc_metrics__mu);
    g_running = 1;
    if (g_dirty) /* an event raced with init: let the writer see it */
        pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&sc_metrics__mu);
    return 0;
fail:
    sc_log_error("[Metrics] cannot start the metrics writer thread");
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__cfg = NULL;
    sc_metrics__store = NULL;
    sc_metrics__scene_store = NULL;
    pthread_mutex_unlock(&sc_metrics__mu);
    pthread_mutex_lock(&g_io_mu);
    g_path[0] = '\0';
    pthread_mutex_unlock(&g_io_mu);
    return -1;
}

void sc_metrics_shutdown(void)
{
    pthread_mutex_lock(&sc_metrics__mu);
    int running = g_running;
    g_stop = 1;
    if (running)
        pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&sc_metrics__mu);
    if (!running)
        return;
    pthread_join(g_thread, NULL);
    pthread_mutex_lock(&g_flush_mu);
    g_exact = true; /* every start is over: the last file counts only real ones */
    pthread_mutex_unlock(&g_flush_mu);
    sc_metrics__save_now(sc_clock_wall());
    pthread_mutex_lock(&sc_metrics__mu);
    g_running = 0;
    sc_metrics__cfg = NULL;
    sc_metrics__store = NULL;
    sc_metrics__scene_store = NULL;
    pthread_mutex_unlock(&sc_metrics__mu);
    pthread_cond_destroy(&g_cond);
    pthread_mutex_lock(&g_io_mu);
    g_path[0] = '\0';
    pthread_mutex_unlock(&g_io_mu);
}

void sc_metrics_reset(double now)
{
    sc_limits_store_t *store, *scene_store;
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__state_zero(&sc_metrics__st, now);
    store = sc_metrics__store;
    scene_store = sc_metrics__scene_store;
    sc_metrics__touch();
    pthread_mutex_unlock(&sc_metrics__mu);
    if (store)
        store->reset(store);
    if (scene_store)
        scene_store->reset(scene_store);
    sc_metrics__save_now(now); /* a no-op before init */
    sc_log_info("[Metrics] counters reset");
}