/* Robustness of the metrics file loader: a few hundred random and garbled
 * files (byte flips, truncations, insertions, swapped tokens, hostile numbers,
 * deep nesting, random bytes) go through sc_metrics_init. For each one the
 * service must start, and either
 *   - accept it: the file is strict JSON and the counters shown are the ones it
 *     holds (checked against an independent cJSON read), or
 *   - move it aside unchanged and start from zero (limiter included).
 * Nothing may crash or leak (run under ASan+UBSan). The PRNG is seeded
 * (SC_FUZZ_SEED / SC_FUZZ_CASES override), but the base file carries the
 * current time, so a failing input is printed rather than re-derived. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "limits_tokens.h"
#include "metrics/metrics.h"
#include "metrics_files.h"
#include "test.h"

static char g_dir[64];
static char g_file[256];
static sc_config_t g_cfg;
static uint64_t g_rng;

static uint64_t rnd(void)
{
    /* xorshift64* */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ULL;
}

static size_t rnd_below(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

/* ==== Inputs ==== */

typedef struct {
    char *data;
    size_t len;
} blob_t;

static blob_t blob_dup(const char *s, size_t len)
{
    blob_t b = {malloc(len + 1), len};
    memcpy(b.data, s, len);
    b.data[len] = '\0';
    return b;
}

static const char *hostile_values[] = {
    "-1",
    "1.5",
    "1e309",
    "-1e309",
    "9007199254740993",
    "1e15",
    "0.0000001",
    "\"x\"",
    "null",
    "true",
    "[]",
    "{}",
    "[1,2,3]",
    "\"2026-02-31\"",
    "\"9999-12-31\"",
    "\"1970-01-01\"",
    "-0",
    "1E400",
    "\"\\u0000\"",
    "NaN",
    "Infinity",
    "0x10",
    "01",
    "[[[[[]]]]]",
};

/* One mutation of a valid file. */
static blob_t mutate(const char *valid, size_t vlen)
{
    blob_t b = blob_dup(valid, vlen);
    size_t k = rnd_below(10);
    switch (k) {
    case 0: /* flip bytes */
        for (size_t i = 0, n = 1 + rnd_below(4); i < n && b.len; i++)
            b.data[rnd_below(b.len)] ^= (char)(1u << rnd_below(8));
        break;
    case 1: /* truncate */
        b.len = rnd_below(b.len);
        b.data[b.len] = '\0';
        break;
    case 2: { /* insert random bytes */
        size_t at = rnd_below(b.len + 1), n = 1 + rnd_below(8);
        char *d = malloc(b.len + n + 1);
        memcpy(d, b.data, at);
        for (size_t i = 0; i < n; i++)
            d[at + i] = (char)rnd();
        memcpy(d + at + n, b.data + at, b.len - at + 1);
        free(b.data);
        b.data = d;
        b.len += n;
        break;
    }
    case 3: { /* delete a range */
        size_t at = rnd_below(b.len), n = 1 + rnd_below(40);
        if (at + n > b.len)
            n = b.len - at;
        memmove(b.data + at, b.data + at + n, b.len - at - n + 1);
        b.len -= n;
        break;
    }
    case 4:
    case 5:
    case 6: { /* replace one number/string value with a hostile one, structurally */
        cJSON *j = cJSON_Parse(valid);
        cJSON *obj = j;
        const char *sections[] = {"counters", "fallback_reasons", "limiter", "daily", NULL};
        const char *sec = sections[rnd_below(5)];
        if (sec)
            obj = cJSON_GetObjectItem(j, sec);
        if (cJSON_IsArray(obj)) /* daily: pick a row */
            obj = cJSON_GetArrayItem(obj, (int)rnd_below((size_t)cJSON_GetArraySize(obj)));
        int n = cJSON_GetArraySize(obj);
        cJSON *victim = n > 0 ? cJSON_GetArrayItem(obj, (int)rnd_below((size_t)n)) : NULL;
        const char *v = hostile_values[rnd_below(sizeof hostile_values / sizeof *hostile_values)];
        cJSON *repl = cJSON_Parse(v);
        if (victim && repl && victim->string) {
            cJSON_ReplaceItemInObject(obj, victim->string, repl);
            repl = NULL;
        } else if (victim && repl && cJSON_IsArray(obj)) {
            cJSON_ReplaceItemInArray(obj, 0, repl);
            repl = NULL;
        }
        cJSON_Delete(repl);
        char *t = j ? cJSON_Print(j) : NULL;
        if (!t || rnd_below(4) == 0) {
            /* raw text edit: the hostile literal spliced in (may be invalid JSON) */
            free(t);
            const char *colon = memchr(valid, ':', vlen);
            size_t at = colon ? (size_t)(colon - valid) + 1 : 0;
            size_t vl = strlen(v), n2 = b.len + vl + 1;
            t = malloc(n2);
            memcpy(t, valid, at);
            memcpy(t + at, v, vl);
            memcpy(t + at + vl, valid + at, vlen - at + 1);
        }
        cJSON_Delete(j);
        free(b.data);
        b.data = t;
        b.len = strlen(t);
        break;
    }
    case 7: { /* delete one key somewhere */
        cJSON *j = cJSON_Parse(valid);
        const char *sections[] = {"counters", "fallback_reasons", "limiter", NULL};
        const char *sec = sections[rnd_below(4)];
        cJSON *obj = sec ? cJSON_GetObjectItem(j, sec) : j;
        int n = cJSON_GetArraySize(obj);
        if (n > 0)
            cJSON_DeleteItemFromArray(obj, (int)rnd_below((size_t)n));
        char *t = cJSON_Print(j);
        cJSON_Delete(j);
        free(b.data);
        b.data = t;
        b.len = strlen(t);
        break;
    }
    case 8: { /* random bytes */
        free(b.data);
        b.len = rnd_below(300);
        b.data = malloc(b.len + 1);
        for (size_t i = 0; i < b.len; i++)
            b.data[i] = (char)rnd();
        b.data[b.len] = '\0';
        break;
    }
    default: { /* trailing garbage after a valid document */
        const char *tails[] = {"x", "}", "{}", "\0\0", " \n", "garbage\n"};
        size_t ti = rnd_below(6);
        size_t tl = ti == 3 ? 2 : strlen(tails[ti]);
        char *d = malloc(b.len + tl + 1);
        memcpy(d, b.data, b.len);
        memcpy(d + b.len, tails[ti], tl);
        d[b.len + tl] = '\0';
        free(b.data);
        b.data = d;
        b.len += tl;
        break;
    }
    }
    return b;
}

/* ==== Oracle ==== */

/* Counters of a file as a strict parser reads them, or -1 when not strict JSON. */
static long long strict_requests(const blob_t *b)
{
    if (strlen(b->data) != b->len)
        return -1; /* embedded NUL */
    const char *end;
    cJSON *j = cJSON_ParseWithOpts(b->data, &end, 1);
    if (!j)
        return -1;
    const cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "counters"), "requests");
    long long v = cJSON_IsNumber(r) ? (long long)r->valuedouble : -2;
    cJSON_Delete(j);
    return v;
}

static int g_accepted, g_rejected;

static void run_case(const blob_t *b, const char *label)
{
    double now = sc_clock_wall();
    remove_corrupt_files_in(g_dir);
    CHECK_EQ_INT(sc_fs_write_atomic(g_file, b->data, b->len), 0);
    sc_limits_store_t *st = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0); /* the service always starts */
    sc_metrics_snapshot_t s;
    sc_limits_caps_t caps = {5, 50, 500};
    sc_metrics_snapshot(now, &caps, &s);
    char aside[512] = "";
    int moved = corrupt_files_in(g_dir, aside, sizeof aside);
    struct stat sb;
    int present = stat(g_file, &sb) == 0;
    CHECK(moved + present == 1);
    if (moved) {
        g_rejected++;
        char *kept = NULL;
        size_t klen = 0;
        CHECK_EQ_INT(sc_fs_read_file(aside, 1 << 24, &kept, &klen), 0);
        CHECK(klen == b->len && kept && memcmp(kept, b->data, klen) == 0);
        free(kept);
        long long sum = s.k_attempts + s.k_successes + s.k_failures + s.p_attempts +
                        s.total_requests + s.fallbacks + s.today_generations + s.last_hour;
        CHECK_EQ_INT(sum, 0);
        CHECK(isnan(s.k_p95_seconds));
    } else {
        g_accepted++;
        long long want = strict_requests(b);
        if (want != s.total_requests)
            fprintf(stderr, "accepted %s but requests %lld != %lld:\n%s\n", label, s.total_requests,
                    want, b->data);
        CHECK_EQ_INT(s.total_requests, want);
        CHECK(s.k_attempts >= 0 && s.k_failures >= 0 && s.today_generations >= 0);
        CHECK(s.last_hour >= 0 && s.in_flight == 0);
        CHECK(isnan(s.k_avg_seconds) || (s.k_avg_seconds >= 0 && isfinite(s.k_avg_seconds)));
        CHECK(isnan(s.k_p95_seconds) || s.k_p95_seconds >= 0);
    }
    /* output never breaks on whatever was loaded */
    sc_buf_t out = SC_BUF_INIT;
    CHECK_EQ_INT(sc_metrics_snapshot_json(&s, &out), 0);
    cJSON *j = cJSON_Parse(out.data);
    CHECK(j != NULL);
    cJSON_Delete(j);
    sc_buf_reset(&out);
    CHECK_EQ_INT(sc_metrics_daily_json(now, 30, 500, &out), 0);
    sc_buf_reset(&out);
    CHECK_EQ_INT(sc_metrics_prometheus(now, &caps, &out), 0);
    sc_buf_free(&out);
    sc_metrics_shutdown();
    st->destroy(st);
}

static blob_t make_valid(void)
{
    double now = sc_clock_wall();
    unlink(g_file);
    sc_limits_store_t *st = sc_limits_memory_new();
    sc_limits_caps_t caps = {5, 50, 500};
    CHECK_EQ_INT(sc_metrics_init(&g_cfg, st), 0);
    for (int i = 0; i < 6; i++) {
        sc_metrics_request(now - i * 86400.0, i % 2 == 0);
        sc_metrics_pil(now - i * 86400.0, true, 0.2 + i);
    }
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(sc_test_take(st, now, &caps), SC_LIMIT_OK);
        sc_metrics_kontext_started(now);
        sc_metrics_kontext_finished(now, SC_KONTEXT_SUCCESS, 10 + i);
        sc_test_release(st);
    }
    sc_metrics_fallback(now, SC_FB_API_ERROR);
    sc_metrics_scene(now, true, 1);
    CHECK_EQ_INT(sc_metrics_flush(), 0);
    sc_metrics_shutdown();
    st->destroy(st);
    char *t = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sc_fs_read_file(g_file, 1 << 20, &t, &len), 0);
    blob_t b = {t, len};
    return b;
}

int main(void)
{
    const char *seed_env = getenv("SC_FUZZ_SEED");
    const char *cases_env = getenv("SC_FUZZ_CASES");
    g_rng = seed_env ? strtoull(seed_env, NULL, 10) : 0x5ce11ec0ffeeULL;
    if (!g_rng)
        g_rng = 1;
    int cases = cases_env ? atoi(cases_env) : 600;

    snprintf(g_dir, sizeof g_dir, "/tmp/sc_metrics_fuzz_XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL);
    snprintf(g_file, sizeof g_file, "%s/composite_metrics.json", g_dir);
    sc_config_defaults(&g_cfg);
    snprintf(g_cfg.logs_dir, sizeof g_cfg.logs_dir, "%s", g_dir);

    blob_t valid = make_valid();
    CHECK(valid.data != NULL);
    if (!valid.data)
        return test_report("metrics_fuzz_test");

    /* the unmodified file is accepted */
    run_case(&valid, "valid");
    CHECK_EQ_INT(g_accepted, 1);

    /* named hostile inputs */
    const char *named[] = {
        "",
        " ",
        "{",
        "}",
        "[",
        "\"",
        "0",
        "-",
        "nul",
        "{\"version\":1}",
        "{\"version\":1e999}",
        "{\"version\":1,\"version\":2}",
    };
    for (size_t i = 0; i < sizeof named / sizeof *named; i++) {
        blob_t b = blob_dup(named[i], strlen(named[i]));
        run_case(&b, named[i]);
        free(b.data);
    }
    {
        /* what a crash can leave behind on some filesystems: a file of zeros */
        blob_t b = {calloc(1, 4097), 4096};
        run_case(&b, "zeros");
        free(b.data);
        /* a valid document followed by NULs */
        b.data = calloc(1, valid.len + 9);
        memcpy(b.data, valid.data, valid.len);
        b.len = valid.len + 8;
        run_case(&b, "valid + NULs");
        free(b.data);
    }
    {
        /* nesting far deeper than cJSON's limit */
        size_t depth = 5000;
        blob_t b = {malloc(2 * depth + 1), 2 * depth};
        memset(b.data, '[', depth);
        memset(b.data + depth, ']', depth);
        b.data[b.len] = '\0';
        run_case(&b, "deep");
        free(b.data);
    }
    {
        /* a huge but valid-looking hour window of far-future starts (clamped to now) */
        cJSON *j = cJSON_Parse(valid.data);
        cJSON *win = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "limiter"), "hour_window");
        for (int i = 0; i < 20000; i++)
            cJSON_AddItemToArray(win, cJSON_CreateNumber(4e9 + i));
        char *t = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        blob_t b = {t, strlen(t)};
        run_case(&b, "big window");
        free(t);
    }

    for (int i = 0; i < cases; i++) {
        blob_t b = mutate(valid.data, valid.len);
        char label[32];
        snprintf(label, sizeof label, "case %d", i);
        run_case(&b, label);
        free(b.data);
    }
    printf("metrics_fuzz_test: %d accepted, %d moved aside\n", g_accepted, g_rejected);
    /* the mutations must exercise both outcomes */
    CHECK(g_rejected > cases / 4);
    CHECK(g_accepted > 1);

    free(valid.data);
    unlink(g_file);
    remove_corrupt_files_in(g_dir);
    CHECK_EQ_INT(rmdir(g_dir), 0);
    return test_report("metrics_fuzz_test");
}
