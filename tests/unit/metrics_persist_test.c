/* The metrics file: round trip across a restart (counters, daily rows, the
 * limiter's hour window and day count, so a limit holds after a restart), the
 * debounced writer, reset, and every way a file can be unusable (moved aside,
 * the service starts with zero counters). Uses real wall time: the file is
 * written with the writer's clock. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/durable.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "limits_tokens.h"
#include "metrics/metrics.h"
#include "metrics_files.h"
#include "test.h"

static char g_dir[64];
static char g_file[256];
static sc_config_t g_cfg;
static sc_limits_caps_t g_caps = {10, 3, 100};

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static char *slurp(const char *p)
{
    char *t = NULL;
    size_t len;
    if (sc_fs_read_file(p, 1 << 24, &t, &len) != 0)
        return NULL;
    return t;
}

static int spit(const char *p, const char *text)
{
    return sc_fs_write_atomic(p, text, strlen(text));
}

static sc_metrics_snapshot_t snap(double now)
{
    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(now, &g_caps, &s);
    return s;
}

static int all_zero(const sc_metrics_snapshot_t *s)
{
    long long sum = s->k_attempts + s->k_successes + s->k_failures + s->p_attempts +
                    s->total_requests + s->fallbacks + s->today_generations + s->last_hour +
                    s->scenes_ok + s->route_errors;
    return sum == 0 && isnan(s->k_avg_seconds);
}

/* A valid file with a known content, written through the module itself. */
static char *make_valid_file(double now)
{
    unlink(g_file);
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    sc_metrics_request(now, true);
    CHECK_EQ_INT(sc_test_take(st, now, &g_caps), SC_LIMIT_OK);
    sc_metrics_kontext_started(now);
    sc_metrics_kontext_finished(now, SC_KONTEXT_SUCCESS, 7);
    sc_test_release(st);
    CHECK_EQ_INT(sc_metrics_flush(), 0);
    sc_metrics_shutdown();
    st->destroy(st);
    return slurp(g_file);
}

static void test_round_trip(void)
{
    double now = sc_clock_wall();
    double old_day = now - 400 * 86400.0;
    unlink(g_file);

    sc_limits_store_t *a = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, a), 0);
    sc_metrics_request(old_day, false); /* a row 400 days back must be kept */
    sc_metrics_pil(old_day, true, 0.3);
    for (int i = 0; i < 4; i++)
        sc_metrics_request(now, true);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(sc_test_take(a, now, &g_caps), SC_LIMIT_OK);
        sc_metrics_kontext_started(now);
    }
    CHECK_EQ_INT(sc_test_take(a, now, &g_caps), SC_LIMIT_HOURLY);
    sc_metrics_fallback(now, SC_FB_HOURLY_LIMIT);
    sc_metrics_kontext_finished(now, SC_KONTEXT_SUCCESS, 12.5);
    sc_metrics_kontext_finished(now, SC_KONTEXT_SUCCESS, 30.125);
    sc_metrics_kontext_finished(now, SC_KONTEXT_TIMEOUT, 60);
    sc_metrics_fallback(now, SC_FB_TIMEOUT);
    for (int i = 0; i < 3; i++)
        sc_test_release(a);
    sc_metrics_pil(now, true, 0.25);
    sc_metrics_pil(now, false, 0.5);
    sc_metrics_scene(now, true, 3);
    sc_metrics_route_error(now);
    sc_metrics_snapshot_t before = snap(now);
    CHECK_EQ_INT(sc_metrics_flush(), 0);

    /* the file holds the row from 400 days ago and the hour window */
    char *text = slurp(g_file);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    CHECK(j != NULL);
    char old_date[11];
    sc_clock_utc_date((time_t)old_day, old_date);
    int found = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItem(j, "daily"))
    {
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(row, "date")), old_date) == 0)
            found = cJSON_GetObjectItem(row, "pil")->valueint == 1;
    }
    CHECK(found);
    /* three starts in one second: one [second, 3] pair */
    const cJSON *win = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "limiter"), "hour_window");
    CHECK_EQ_INT(cJSON_GetArraySize(win), 1);
    CHECK_EQ_INT(cJSON_GetArrayItem(cJSON_GetArrayItem(win, 0), 1)->valuedouble, 3);
    cJSON_Delete(j);
    free(text);

    sc_metrics_shutdown();
    a->destroy(a);

    /* restart */
    sc_limits_store_t *b = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, b), 0);
    CHECK_EQ_INT(corrupt_files_in(g_dir, NULL, 0), 0);
    sc_metrics_snapshot_t after = snap(now);
    CHECK_EQ_INT(after.k_attempts, 3);
    CHECK_EQ_INT(after.k_attempts, before.k_attempts);
    CHECK_EQ_INT(after.k_successes, 2);
    CHECK_EQ_INT(after.k_failures, 1);
    CHECK_EQ_INT(after.k_timeouts, 1);
    CHECK(fabs(after.k_avg_seconds - (12.5 + 30.125) / 2) < 1e-9);
    CHECK(fabs(after.k_p95_seconds - 30.125) < 1e-9);
    CHECK_EQ_INT(after.p_attempts, 3);
    CHECK_EQ_INT(after.p_successes, 2);
    CHECK(fabs(after.p_avg_seconds - before.p_avg_seconds) < 1e-9);
    CHECK_EQ_INT(after.total_requests, 5);
    CHECK_EQ_INT(after.routed_kontext, 4);
    CHECK_EQ_INT(after.fallbacks, 2);
    CHECK_EQ_INT(after.fallback_reasons[SC_FB_HOURLY_LIMIT], 1);
    CHECK_EQ_INT(after.fallback_reasons[SC_FB_TIMEOUT], 1);
    CHECK_EQ_INT(after.scenes_ok, 1);
    CHECK_EQ_INT(after.route_errors, 1);
    CHECK(fabs(after.since - before.since) < 1e-3);
    /* the limits hold across the restart */
    CHECK_EQ_INT(after.today_generations, 3);
    CHECK_EQ_INT(after.last_hour, 3);
    CHECK_EQ_INT(after.in_flight, 0);
    CHECK_EQ_INT(sc_test_take(b, now + 1, &g_caps), SC_LIMIT_HOURLY);
    sc_limits_caps_t daily3 = {10, 100, 3};
    CHECK_EQ_INT(sc_test_take(b, now + 1, &daily3), SC_LIMIT_DAILY);
    /* daily rows came back too */
    sc_buf_t out = SC_BUF_INIT;
    CHECK_EQ_INT(sc_metrics_daily_json(now, 1, 100, &out), 0);
    CHECK(strstr(out.data, "\"kontext\":3,\"pil\":2,\"fallbacks\":2,\"total\":4") != NULL);
    sc_buf_free(&out);
    sc_metrics_shutdown();
    b->destroy(b);
}

/* No write while nothing changes; a change reaches the file without a flush. */
static void test_writer(void)
{
    double now = sc_clock_wall();
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    CHECK_EQ_INT(sc_metrics_flush(), 0);
    unlink(g_file);
    usleep(1500 * 1000);
    CHECK(!exists(g_file)); /* nothing changed: nothing written */

    long long before = snap(now).total_requests;
    sc_metrics_request(now, false);
    int seen = 0;
    for (int i = 0; i < 200 && !seen; i++) { /* generous: 10 s on a busy machine */
        usleep(50 * 1000);
        char *t = slurp(g_file);
        if (t) {
            cJSON *j = cJSON_Parse(t);
            const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "counters"), "requests");
            seen = cJSON_IsNumber(c) && (long long)c->valuedouble == before + 1;
            cJSON_Delete(j);
            free(t);
        }
    }
    CHECK(seen);
    sc_metrics_shutdown();
    st->destroy(st);
}

/* Reset is written at once, limiter state included. */
static void test_reset_persists(void)
{
    double now = sc_clock_wall();
    free(make_valid_file(now));
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    CHECK_EQ_INT(snap(now).k_attempts, 1);
    CHECK_EQ_INT(snap(now).today_generations, 1);
    sc_metrics_reset(now);
    char *t = slurp(g_file);
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    CHECK(j != NULL);
    cJSON *c = cJSON_GetObjectItem(j, "counters");
    CHECK_EQ_INT(cJSON_GetObjectItem(c, "requests")->valuedouble, 0);
    CHECK_EQ_INT(cJSON_GetObjectItem(c, "kontext_started")->valuedouble, 0);
    cJSON *lim = cJSON_GetObjectItem(j, "limiter");
    CHECK_EQ_INT(cJSON_GetObjectItem(lim, "day_count")->valuedouble, 0);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(lim, "hour_window")), 0);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "kontext_recent_seconds")), 0);
    cJSON_Delete(j);
    free(t);
    sc_metrics_shutdown();
    st->destroy(st);
}

/* Starts with the given file content; expects it moved aside (content kept),
 * zero counters and a fresh file after shutdown. */
static void expect_moved_aside(const char *label, const char *content)
{
    double now = sc_clock_wall();
    remove_corrupt_files_in(g_dir);
    CHECK_EQ_INT(spit(g_file, content), 0);
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    char aside[512] = "";
    int n = corrupt_files_in(g_dir, aside, sizeof aside);
    if (n != 1 || exists(g_file))
        fprintf(stderr, "not moved aside: %s\n", label);
    CHECK_EQ_INT(n, 1);
    CHECK(!exists(g_file));
    char *kept = slurp(aside);
    CHECK(kept && strcmp(kept, content) == 0);
    free(kept);
    sc_metrics_snapshot_t s = snap(now);
    CHECK(all_zero(&s));
    sc_limits_counts_t c;
    st->count(st, now, &c);
    CHECK_EQ_INT(c.today + c.last_hour, 0); /* the limiter was not half-imported */
    sc_metrics_shutdown();
    st->destroy(st);
    CHECK(exists(g_file)); /* shutdown wrote a fresh, valid file */
    char *fresh = slurp(g_file);
    cJSON *j = fresh ? cJSON_Parse(fresh) : NULL;
    CHECK(cJSON_IsObject(j));
    cJSON_Delete(j);
    free(fresh);
}

/* Replaces key (a top-level or "a.b" path) in the valid file with value. */
static char *mutate(const char *valid, const char *key, const char *value)
{
    cJSON *j = cJSON_Parse(valid);
    cJSON *parent = j;
    char k[64];
    snprintf(k, sizeof k, "%s", key);
    char *dot = strchr(k, '.');
    if (dot) {
        *dot = '\0';
        parent = cJSON_GetObjectItem(j, k);
        memmove(k, dot + 1, strlen(dot + 1) + 1);
    }
    if (value)
        cJSON_ReplaceItemInObject(parent, k, cJSON_Parse(value));
    else
        cJSON_DeleteItemFromObject(parent, k);
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    return out;
}

static void test_unusable_files(void)
{
    double now = sc_clock_wall();
    char *valid = make_valid_file(now);
    CHECK(valid != NULL);
    if (!valid)
        return;

    expect_moved_aside("garbage", "{not json");
    expect_moved_aside("empty", "");
    expect_moved_aside("array", "[]");
    expect_moved_aside("empty object", "{}");
    expect_moved_aside("null", "null");
    expect_moved_aside("binary", "\x01\x02\xff\xfe");
    /* truncated at several points */
    size_t len = strlen(valid);
    size_t cuts[] = {1, len / 4, len / 2, len - 2};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char *t = strndup(valid, cuts[i]);
        expect_moved_aside("truncated", t);
        free(t);
    }
    /* valid JSON, wrong shape */
    struct {
        const char *key, *value;
    } bad[] = {
        {"version", "2"},
        {"version", NULL},
        {"since", "\"yesterday\""},
        {"counters", "[]"},
        {"counters", NULL},
        {"counters.requests", "-1"},
        {"counters.requests", "1.5"},
        {"counters.requests", "\"7\""},
        {"counters.kontext_started", NULL},
        {"counters.kontext_success_seconds", "-3"},
        {"fallback_reasons", "{}"},
        {"fallback_reasons.timeout", "null"},
        {"fallback_reasons.no_token", NULL},
        {"fallback_reasons.circuit_open", "-1"},
        {"fallback_reasons.interrupted", "\"2\""},
        {"kontext_recent_seconds", "{}"},
        {"kontext_recent_seconds", "[1, -2]"},
        {"daily", "{}"},
        {"daily", "[{\"date\": \"2026-02-31\", \"kontext\": 1, \"pil\": 0, \"fallbacks\": 0, "
                  "\"total\": 1, \"scenes\": 0}]"},
        {"daily", "[{\"date\": \"2026-02-01\", \"kontext\": 1}]"},
        {"daily", "[7]"},
        {"limiter", NULL},
        {"limiter", "[]"},
        {"limiter.day_count", "-4"},
        {"limiter.hour_window", "[\"now\"]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *t = mutate(valid, bad[i].key, bad[i].value);
        CHECK(t != NULL);
        if (t)
            expect_moved_aside(bad[i].key, t);
        free(t);
    }

    /* extra keys are fine (forward compatible), the file is used */
    cJSON *j = cJSON_Parse(valid);
    char *extra;
    cJSON_AddNumberToObject(j, "future_field", 1);
    extra = cJSON_Print(j);
    cJSON_Delete(j);
    remove_corrupt_files_in(g_dir);
    spit(g_file, extra);
    free(extra);
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    CHECK_EQ_INT(corrupt_files_in(g_dir, NULL, 0), 0);
    CHECK_EQ_INT(snap(now).k_attempts, 1);
    CHECK_EQ_INT(snap(now).today_generations, 1);
    sc_metrics_shutdown();
    st->destroy(st);

    /* two bad files in the same second are both kept */
    remove_corrupt_files_in(g_dir);
    for (int i = 0; i < 2; i++) {
        spit(g_file, "{bad");
        st = sc_limits_memory_new();
        CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
        sc_metrics_shutdown();
        st->destroy(st);
        unlink(g_file);
    }
    CHECK(corrupt_files_in(g_dir, NULL, 0) == 2);
    remove_corrupt_files_in(g_dir);
    free(valid);
}

/* A file written before circuit_open, budget_pacing, limiter_unavailable and
 * interrupted existed lacks them: it is used (they count from 0), not moved aside. */
static void test_file_without_new_reasons(void)
{
    double now = sc_clock_wall();
    char *valid = make_valid_file(now);
    CHECK(valid != NULL);
    if (!valid)
        return;
    cJSON *j = cJSON_Parse(valid);
    cJSON *reasons = cJSON_GetObjectItem(j, "fallback_reasons");
    const char *added[] = {"circuit_open", "budget_pacing", "limiter_unavailable", "interrupted"};
    for (size_t i = 0; i < sizeof added / sizeof added[0]; i++) {
        CHECK(cJSON_GetObjectItem(reasons, added[i]) != NULL); /* the writer writes them */
        cJSON_DeleteItemFromObject(reasons, added[i]);
    }
    cJSON_ReplaceItemInObject(reasons, "timeout", cJSON_CreateNumber(4));
    char *old = cJSON_Print(j);
    cJSON_Delete(j);
    remove_corrupt_files_in(g_dir);
    spit(g_file, old);
    free(old);
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    CHECK_EQ_INT(corrupt_files_in(g_dir, NULL, 0), 0);
    sc_metrics_snapshot_t s = snap(now);
    CHECK_EQ_INT(s.k_attempts, 1);
    CHECK_EQ_INT(s.fallback_reasons[SC_FB_TIMEOUT], 4);
    CHECK_EQ_INT(s.fallback_reasons[SC_FB_CIRCUIT_OPEN], 0);
    CHECK_EQ_INT(s.fallback_reasons[SC_FB_INTERRUPTED], 0);
    sc_metrics_shutdown();
    st->destroy(st);
    free(valid);
}

/* The scene limiter's hour window and day count ride in the same file
 * ("scene_limiter"): they survive a restart, reset zeroes them, a file without
 * them (older) starts them fresh, and a bad one sets the whole file aside
 * without leaving the Kontext state half-imported. */
static void test_scene_store(void)
{
    double now = sc_clock_wall();
    sc_limits_caps_t caps = {5, 10, 10};
    unlink(g_file);
    sc_limits_store_t *k = sc_limits_memory_new(), *sc = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init_with_scenes(&g_cfg, k, sc), 0);
    sc_limits_token_t ktok, stok[3];
    CHECK_EQ_INT(k->take(k, now, &caps, &ktok, NULL), SC_LIMIT_OK);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sc->take(sc, now, &caps, &stok[i], NULL), SC_LIMIT_OK);
    sc->release(sc, &stok[2]);
    sc_metrics_scene(now, true, 1); /* a change, so the writer has work */
    sc_metrics_snapshot_t s = snap(now);
    CHECK_EQ_INT(s.scene_in_flight, 2);
    CHECK_EQ_INT(s.scene_last_hour, 3);
    CHECK_EQ_INT(s.scene_today, 3);
    CHECK_EQ_INT(s.today_generations, 1); /* Kontext's own count is separate */
    CHECK_EQ_INT(s.scene_max_concurrent, g_cfg.scene_max_concurrent);
    sc_metrics_shutdown();
    k->destroy(k);
    sc->destroy(sc);
    char *valid = slurp(g_file);
    CHECK(valid != NULL);
    if (!valid)
        return;

    /* restart: the counts are back, the slots are not (nothing runs) */
    k = sc_limits_memory_new();
    sc = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init_with_scenes(&g_cfg, k, sc), 0);
    CHECK_EQ_INT(corrupt_files_in(g_dir, NULL, 0), 0);
    s = snap(now);
    CHECK_EQ_INT(s.scene_in_flight, 0);
    CHECK_EQ_INT(s.scene_last_hour, 3);
    CHECK_EQ_INT(s.scene_today, 3);
    sc_limits_caps_t daily3 = {5, 10, 3};
    CHECK_EQ_INT(sc_test_take(sc, now + 1, &daily3), SC_LIMIT_DAILY);
    sc_metrics_reset(now);
    s = snap(now);
    CHECK_EQ_INT(s.scene_last_hour + s.scene_today, 0);
    sc_metrics_shutdown();
    k->destroy(k);
    sc->destroy(sc);

    /* an older file has no scene_limiter: used, scenes start fresh */
    char *old = mutate(valid, "scene_limiter", NULL);
    spit(g_file, old);
    free(old);
    k = sc_limits_memory_new();
    sc = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init_with_scenes(&g_cfg, k, sc), 0);
    CHECK_EQ_INT(corrupt_files_in(g_dir, NULL, 0), 0);
    s = snap(now);
    CHECK_EQ_INT(s.today_generations, 1);
    CHECK_EQ_INT(s.scene_today, 0);
    sc_metrics_shutdown();
    k->destroy(k);
    sc->destroy(sc);

    /* a bad one: moved aside, neither limiter keeps anything from it */
    const char *bad[] = {"[]", "{\"hour_window\": 3}",
                         "{\"hour_window\": [], \"date\": "
                         "\"2026-13-01\", \"day_count\": 1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *t = mutate(valid, "scene_limiter", bad[i]);
        remove_corrupt_files_in(g_dir);
        spit(g_file, t);
        k = sc_limits_memory_new();
        sc = sc_limits_memory_new();
        CHECK_EQ_INT(sc_metrics_init_with_scenes(&g_cfg, k, sc), 0);
        CHECK_EQ_INT(corrupt_files_in(g_dir, NULL, 0), 1);
        s = snap(now);
        CHECK(all_zero(&s));
        CHECK_EQ_INT(s.scene_today + s.scene_last_hour, 0);
        sc_metrics_shutdown();
        k->destroy(k);
        sc->destroy(sc);
        free(t);
    }
    remove_corrupt_files_in(g_dir);
    free(valid);
}

/* The path is a directory: nothing to load, writes fail, nothing crashes. */
static void test_unwritable(void)
{
    double now = sc_clock_wall();
    unlink(g_file);
    CHECK_EQ_INT(mkdir(g_file, 0755), 0);
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    sc_metrics_request(now, false);
    CHECK_EQ_INT(snap(now).total_requests, 1);
    CHECK_EQ_INT(sc_metrics_flush(), -1);
    sc_metrics_shutdown();
    st->destroy(st);
    CHECK_EQ_INT(rmdir(g_file), 0);

    /* LOGS_DIR that cannot be created */
    static sc_config_t bad;
    bad = g_cfg;
    char blocker[256];
    snprintf(blocker, sizeof blocker, "%s/blocker", g_dir);
    spit(blocker, "x");
    snprintf(bad.logs_dir, sizeof bad.logs_dir, "%s/sub", blocker);
    st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&bad, st), -1);
    CHECK_EQ_INT(sc_metrics_flush(), -1); /* not initialised */
    sc_metrics_shutdown();                /* harmless */
    st->destroy(st);
    unlink(blocker);
}

/* ==== Group-committed flushes (issue 11) ==== */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool block, blocked, fail;
} g_hk = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false, false};

static int hook_fsync(int fd, const char *path, bool is_dir, void *ud)
{
    (void)path, (void)is_dir, (void)ud;
    pthread_mutex_lock(&g_hk.mu);
    if (g_hk.block) {
        g_hk.blocked = true;
        pthread_cond_broadcast(&g_hk.cv);
        while (g_hk.block)
            pthread_cond_wait(&g_hk.cv, &g_hk.mu);
    }
    bool fail = g_hk.fail;
    pthread_mutex_unlock(&g_hk.mu);
    if (fail) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static long long file_started(void)
{
    char *t = slurp(g_file);
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    cJSON *c = cJSON_GetObjectItem(j, "counters");
    cJSON *v = cJSON_GetObjectItem(c, "kontext_started");
    long long n = cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
    cJSON_Delete(j);
    free(t);
    return n;
}

static long long file_day_count(void)
{
    char *t = slurp(g_file);
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "limiter"), "day_count");
    long long n = cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
    cJSON_Delete(j);
    free(t);
    return n;
}

/* The write-ahead reservation: a start gate opens only once the file on disk
 * counts its start (what a restart after a crash would count), a run of starts
 * shares a few saves, a lone start reserves nothing, and the last save at
 * shutdown is exact. */
static void test_start_gate_reservation(void)
{
    unlink(g_file);
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    sc_durable_opts_t o = {.fsync_hook = hook_fsync};
    sc_durable_t *d = sc_durable_start(&o);
    sc_durable_set_global(d);
    sc_limits_caps_t caps = {100000, 100000, 100000};

    CHECK_EQ_INT(sc_test_take(st, sc_clock_wall(), &caps), SC_LIMIT_OK);
    sc_durable_ticket_t *t = sc_durable_ticket_new(NULL);
    CHECK_EQ_INT(sc_metrics_start_gate(t), 0);
    CHECK_EQ_INT(sc_durable_ticket_wait(t), 0);
    sc_durable_ticket_unref(t);
    CHECK_EQ_INT(file_day_count(), 1); /* nothing reserved */

    enum { N = 400 };
    int at_once = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(sc_test_take(st, sc_clock_wall(), &caps), SC_LIMIT_OK);
        t = sc_durable_ticket_new(NULL);
        CHECK_EQ_INT(sc_metrics_start_gate(t), 0);
        at_once += sc_durable_ticket_state(t) == 1;
        CHECK_EQ_INT(sc_durable_ticket_wait(t), 0);
        sc_durable_ticket_unref(t);
        if (file_day_count() < 2 + i) /* an open gate the disk does not count */
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    sc_durable_stats_t ds;
    sc_durable_stats(d, &ds);
    CHECK(ds.writes >= 1 && ds.writes < N / 4); /* without the reservation: N + 1 */
    CHECK(at_once > N / 2);
    long long over = file_day_count() - (N + 1);
    CHECK(over >= 0 && over <= 64); /* what a crash now would over-count */
    sc_durable_stop(d);
    sc_metrics_shutdown();
    CHECK_EQ_INT(file_day_count(), N + 1);
    st->destroy(st);
}

/* A ticket completes only once a save covering its count is durable; the
 * callers that arrive while a save is in its fsync share the next one. */
static void test_flush_ticket(void)
{
    unlink(g_file);
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    sc_durable_ticket_t *t0 = sc_durable_ticket_new(NULL);
    CHECK_EQ_INT(sc_metrics_flush_ticket(t0), -1); /* no committer: the caller flushes */
    sc_durable_ticket_unref(t0);

    sc_durable_opts_t o = {.fsync_hook = hook_fsync};
    sc_durable_t *d = sc_durable_start(&o);
    sc_durable_set_global(d);
    double now = sc_clock_wall();
    g_hk.block = true;
    sc_metrics_kontext_started(now);
    sc_durable_ticket_t *t1 = sc_durable_ticket_new(NULL);
    CHECK_EQ_INT(sc_metrics_flush_ticket(t1), 0);
    pthread_mutex_lock(&g_hk.mu);
    while (!g_hk.blocked)
        pthread_cond_wait(&g_hk.cv, &g_hk.mu);
    pthread_mutex_unlock(&g_hk.mu);
    sc_metrics_kontext_started(now); /* counted after t1's snapshot */
    sc_durable_ticket_t *t2 = sc_durable_ticket_new(NULL), *t3 = sc_durable_ticket_new(NULL);
    CHECK_EQ_INT(sc_metrics_flush_ticket(t2), 0);
    CHECK_EQ_INT(sc_metrics_flush_ticket(t3), 0);
    usleep(50 * 1000);
    CHECK_EQ_INT(sc_durable_ticket_state(t1), 0); /* its save sits in the fsync */
    CHECK_EQ_INT(sc_durable_ticket_state(t2), 0);
    pthread_mutex_lock(&g_hk.mu);
    g_hk.block = false;
    pthread_cond_broadcast(&g_hk.cv);
    pthread_mutex_unlock(&g_hk.mu);
    CHECK_EQ_INT(sc_durable_ticket_wait(t1), 0);
    CHECK_EQ_INT(sc_durable_ticket_wait(t2), 0);
    CHECK_EQ_INT(sc_durable_ticket_wait(t3), 0);
    CHECK_EQ_INT(file_started(), 2); /* t2's save covers its count */
    sc_durable_stats_t ds;
    sc_durable_stats(d, &ds);
    CHECK_EQ_INT(ds.writes, 2); /* t2 and t3 shared one write */

    /* a failed save fails its tickets (the create must not leave) */
    g_hk.fail = true;
    sc_metrics_kontext_started(now);
    sc_durable_ticket_t *t4 = sc_durable_ticket_new(NULL);
    CHECK_EQ_INT(sc_metrics_flush_ticket(t4), 0);
    CHECK_EQ_INT(sc_durable_ticket_wait(t4), -1);
    CHECK_EQ_INT(sc_durable_ticket_state(t4), -1);
    g_hk.fail = false;
    sc_durable_ticket_unref(t1);
    sc_durable_ticket_unref(t2);
    sc_durable_ticket_unref(t3);
    sc_durable_ticket_unref(t4);
    sc_durable_stop(d);
    CHECK(sc_durable_global() == NULL);
    sc_metrics_shutdown();
    st->destroy(st);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/sc_metrics_persist_XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL);
    snprintf(g_file, sizeof g_file, "%s/composite_metrics.json", g_dir);
    sc_config_defaults(&g_cfg);
    snprintf(g_cfg.logs_dir, sizeof g_cfg.logs_dir, "%s", g_dir);
    CHECK_EQ_INT(sc_log_open(g_dir), 0);

    test_round_trip();
    test_writer();
    test_reset_persists();
    test_unusable_files();
    test_file_without_new_reasons();
    test_scene_store();
    test_unwritable();
    test_flush_ticket();
    test_start_gate_reservation();

    sc_log_close();
    char log[256];
    snprintf(log, sizeof log, "%s/backend.log", g_dir);
    char *text = slurp(log);
    CHECK(text && strstr(text, "WARN") && strstr(text, "moved to") &&
          strstr(text, "composite_metrics.json.corrupt-"));
    free(text);
    unlink(log);
    unlink(g_file);
    remove_corrupt_files_in(g_dir);
    CHECK_EQ_INT(rmdir(g_dir), 0);
    return test_report("metrics_persist_test");
}
