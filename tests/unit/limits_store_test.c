/* The in-process limiter store: check order, the exact sliding hour, the UTC
 * day roll-over, export/import, reset and exactness under concurrent takes.
 * Every time is passed explicitly. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "limits/store.h"
#include "limits_tokens.h"
#include "test.h"

/* 2026-03-01T00:00:00Z */
#define T_DAY 1772323200.0

static sc_limits_counts_t counts(sc_limits_store_t *s, double now)
{
    sc_limits_counts_t c = {-1, -1, -1};
    s->count(s, now, &c);
    return c;
}

static void test_names(void)
{
    CHECK_STR(sc_limit_result_name(SC_LIMIT_OK), "ok");
    CHECK_STR(sc_limit_result_name(SC_LIMIT_CONCURRENCY), "concurrency_limit");
    CHECK_STR(sc_limit_result_name(SC_LIMIT_HOURLY), "hourly_limit");
    CHECK_STR(sc_limit_result_name(SC_LIMIT_DAILY), "daily_limit");
}

static void test_concurrency_gate(void)
{
    sc_limits_store_t *s = sc_limits_memory_new();
    sc_limits_caps_t caps = {2, 100, 100};
    double t = T_DAY + 3600;
    CHECK_EQ_INT(sc_test_take(s, t, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, t, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, t, &caps), SC_LIMIT_CONCURRENCY);
    CHECK_EQ_INT(counts(s, t).in_flight, 2);
    CHECK_EQ_INT(counts(s, t).last_hour, 2); /* a refusal records no start */
    sc_test_release(s);
    CHECK_EQ_INT(counts(s, t).in_flight, 1);
    CHECK_EQ_INT(counts(s, t).last_hour, 2); /* the start stays counted */
    CHECK_EQ_INT(sc_test_take(s, t, &caps), SC_LIMIT_OK);
    sc_test_release(s);
    sc_test_release(s);
    sc_test_release(s); /* unmatched: must not go below zero */
    CHECK_EQ_INT(counts(s, t).in_flight, 0);
    caps.max_concurrent = 1;
    CHECK_EQ_INT(sc_test_take(s, t, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, t, &caps), SC_LIMIT_CONCURRENCY);
    s->destroy(s);
}

/* daily is reported before hourly, hourly before concurrency */
static void test_check_order(void)
{
    sc_limits_store_t *s = sc_limits_memory_new();
    sc_limits_caps_t caps = {10, 10, 10};
    double t = T_DAY + 7200;
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sc_test_take(s, t, &caps), SC_LIMIT_OK);
    sc_limits_caps_t all = {3, 3, 3};
    CHECK_EQ_INT(sc_test_take(s, t, &all), SC_LIMIT_DAILY);
    sc_limits_caps_t hour_conc = {3, 3, 10};
    CHECK_EQ_INT(sc_test_take(s, t, &hour_conc), SC_LIMIT_HOURLY);
    sc_limits_caps_t conc = {3, 10, 10};
    CHECK_EQ_INT(sc_test_take(s, t, &conc), SC_LIMIT_CONCURRENCY);
    sc_limits_caps_t zero = {0, 0, 0}; /* a cap of 0 refuses everything */
    CHECK_EQ_INT(sc_test_take(s, t, &zero), SC_LIMIT_DAILY);
    sc_limits_caps_t zero_conc = {0, 10, 10};
    CHECK_EQ_INT(sc_test_take(s, t, &zero_conc), SC_LIMIT_CONCURRENCY);
    CHECK_EQ_INT(counts(s, t).today, 3);
    s->destroy(s);
}

/* A start at t counts while now - t < 3600, exactly. */
static void test_sliding_window(void)
{
    sc_limits_store_t *s = sc_limits_memory_new();
    sc_limits_caps_t caps = {100, 3, 1000};
    double t0 = T_DAY + 5 * 3600 + 0.25;
    CHECK_EQ_INT(sc_test_take(s, t0, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, t0 + 10, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, t0 + 20, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, t0 + 30, &caps), SC_LIMIT_HOURLY);
    CHECK_EQ_INT(sc_test_take(s, t0 + 3599.5, &caps), SC_LIMIT_HOURLY);
    CHECK_EQ_INT(counts(s, t0 + 3599.5).last_hour, 3);
    CHECK_EQ_INT(counts(s, t0 + 3600).last_hour, 2);
    CHECK_EQ_INT(sc_test_take(s, t0 + 3600, &caps), SC_LIMIT_OK); /* the first start expired */
    CHECK_EQ_INT(sc_test_take(s, t0 + 3605, &caps), SC_LIMIT_HOURLY);
    CHECK_EQ_INT(counts(s, t0 + 3610).last_hour, 2);
    CHECK_EQ_INT(counts(s, t0 + 3620).last_hour, 1);
    CHECK_EQ_INT(counts(s, t0 + 7200).last_hour, 0);
    CHECK_EQ_INT(counts(s, t0 + 7200).today, 4); /* the day counter is not a window */
    /* a clock stepping back never lets a start expire early */
    CHECK_EQ_INT(sc_test_take(s, t0 + 8000, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, t0 + 7000, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(counts(s, t0 + 8000 + 3599).last_hour, 2);
    CHECK_EQ_INT(counts(s, t0 + 8000 + 3600).last_hour, 0);
    s->destroy(s);
}

/* A window far larger than the ring's first allocation stays exact. */
static void test_window_growth(void)
{
    sc_limits_store_t *s = sc_limits_memory_new();
    sc_limits_caps_t caps = {1 << 20, 5000, 1 << 20};
    double t0 = T_DAY + 10 * 3600;
    int ok = 0;
    for (int i = 0; i < 6000; i++) {
        if (sc_test_take(s, t0 + i * 0.5, &caps) == SC_LIMIT_OK)
            ok++;
        sc_test_release(s);
    }
    CHECK_EQ_INT(ok, 5000);
    /* starts were at t0 + i/2 for i < 5000: at t0 + 3600 + 100 those with
     * i/2 <= 100 have expired (201 of them) */
    CHECK_EQ_INT(counts(s, t0 + 3700).last_hour, 5000 - 201);
    s->destroy(s);
}

static void test_day_rollover(void)
{
    sc_limits_store_t *s = sc_limits_memory_new();
    sc_limits_caps_t caps = {100, 100, 2};
    double before = T_DAY + 86400 - 1; /* 23:59:59 of 2026-03-01 */
    CHECK_EQ_INT(sc_test_take(s, before, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, before + 0.5, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_test_take(s, before + 0.9, &caps), SC_LIMIT_DAILY);
    CHECK_EQ_INT(counts(s, before + 0.99).today, 2);
    double midnight = T_DAY + 86400;
    CHECK_EQ_INT(counts(s, midnight).today, 0);
    CHECK_EQ_INT(counts(s, midnight).last_hour, 2); /* the hour window spans midnight */
    CHECK_EQ_INT(sc_test_take(s, midnight, &caps), SC_LIMIT_OK);
    CHECK_EQ_INT(counts(s, midnight + 1).today, 1);
    /* the clock stepping back across midnight keeps the newer day's count */
    CHECK_EQ_INT(counts(s, before).today, 1);
    s->destroy(s);
}

static void test_export_import(void)
{
    sc_limits_store_t *a = sc_limits_memory_new();
    sc_limits_store_t *b = sc_limits_memory_new();
    sc_limits_caps_t caps = {100, 100, 100};
    double t0 = T_DAY + 12 * 3600;
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(sc_test_take(a, t0 + i * 1000, &caps), SC_LIMIT_OK);
    double now = t0 + 4000.5; /* starts at t0 and t0+... : t0 has expired */
    cJSON *st = a->export_state(a, now, 0);
    CHECK(st != NULL);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(st, "date")), "2026-03-01");
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(st, "hour_window")), 4);
    CHECK_EQ_INT(b->import_state(b, st, now), 0);
    CHECK_EQ_INT(counts(b, now).last_hour, 4);
    CHECK_EQ_INT(counts(b, now).today, 5);
    CHECK_EQ_INT(counts(b, now).in_flight, 0); /* slots are not persisted */
    /* a reservation is exported as starts in the next second, counted by an import */
    cJSON *rs = a->export_state(a, now, 7);
    CHECK(rs != NULL);
    cJSON *last = cJSON_GetArrayItem(cJSON_GetObjectItem(rs, "hour_window"), 4);
    CHECK(last && cJSON_GetArrayItem(last, 0)->valuedouble == ceil(now) + 1 &&
          cJSON_GetArrayItem(last, 1)->valuedouble == 7);
    CHECK_EQ_INT(cJSON_GetObjectItem(rs, "day_count")->valuedouble, 12);
    sc_limits_store_t *r = sc_limits_memory_new();
    CHECK_EQ_INT(r->import_state(r, rs, now), 0);
    CHECK_EQ_INT(counts(r, now).last_hour, 11);
    CHECK_EQ_INT(counts(r, now).today, 12);
    CHECK_EQ_INT(counts(a, now).today, 5); /* the store itself counts only real starts */
    cJSON_Delete(rs);
    r->destroy(r);
    /* the restored window still limits */
    sc_limits_caps_t four = {100, 4, 100};
    CHECK_EQ_INT(sc_test_take(b, now, &four), SC_LIMIT_HOURLY);
    CHECK_EQ_INT(counts(b, t0 + 1000 + 3600).last_hour, 3);

    /* a day counter of another day is not carried over; expired starts drop;
     * a start in the future counts as now */
    cJSON *mod = cJSON_Duplicate(st, 1);
    cJSON_ReplaceItemInObject(mod, "date", cJSON_CreateString("2026-02-28"));
    cJSON_AddItemToArray(cJSON_GetObjectItem(mod, "hour_window"), cJSON_CreateNumber(now + 1e6));
    cJSON_InsertItemInArray(cJSON_GetObjectItem(mod, "hour_window"), 0,
                            cJSON_CreateNumber(now - 3600.5));
    CHECK_EQ_INT(b->import_state(b, mod, now), 0);
    CHECK_EQ_INT(counts(b, now).today, 0);
    CHECK_EQ_INT(counts(b, now).last_hour, 5);
    CHECK_EQ_INT(counts(b, now + 3599).last_hour, 2);
    CHECK_EQ_INT(counts(b, now + 3599.6).last_hour, 1); /* the future one, clamped to now */
    CHECK_EQ_INT(counts(b, now + 3600).last_hour, 0);
    cJSON_Delete(mod);

    /* wrong shapes are refused and change nothing */
    CHECK_EQ_INT(b->import_state(b, st, now), 0);
    const char *bad[] = {
        "[]",
        "{}",
        "{\"hour_window\":[],\"date\":\"2026-03-01\"}",
        "{\"hour_window\":{},\"date\":\"2026-03-01\",\"day_count\":1}",
        "{\"hour_window\":[1,\"x\"],\"date\":\"2026-03-01\",\"day_count\":1}",
        "{\"hour_window\":[],\"date\":\"2026-3-1\",\"day_count\":1}",
        "{\"hour_window\":[],\"date\":\"2026-03-01x\",\"day_count\":1}",
        "{\"hour_window\":[],\"date\":\"2026-13-01\",\"day_count\":1}",
        "{\"hour_window\":[],\"date\":7,\"day_count\":1}",
        "{\"hour_window\":[],\"date\":\"2026-03-01\",\"day_count\":-1}",
        "{\"hour_window\":[],\"date\":\"2026-03-01\",\"day_count\":1.5}",
        "{\"hour_window\":[],\"date\":\"2026-03-01\",\"day_count\":\"3\"}",
        "{\"hour_window\":[],\"date\":\"2026-03-01\",\"day_count\":1e300}",
        "{\"hour_window\":[[1772366400,0]],\"date\":\"2026-03-01\",\"day_count\":1}",
        "{\"hour_window\":[[1772366400,1.5]],\"date\":\"2026-03-01\",\"day_count\":1}",
        "{\"hour_window\":[[1772366400]],\"date\":\"2026-03-01\",\"day_count\":1}",
        "{\"hour_window\":[[1772366400,1,1]],\"date\":\"2026-03-01\",\"day_count\":1}",
        "{\"hour_window\":[[\"x\",1]],\"date\":\"2026-03-01\",\"day_count\":1}",
        "{\"hour_window\":[[1772366400,1e12]],\"date\":\"2026-03-01\",\"day_count\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *j = cJSON_Parse(bad[i]);
        CHECK(j != NULL);
        CHECK_EQ_INT(b->import_state(b, j, now), -1);
        cJSON_Delete(j);
    }
    CHECK_EQ_INT(counts(b, now).last_hour, 4);
    CHECK_EQ_INT(counts(b, now).today, 5);

    cJSON_Delete(st);
    a->destroy(a);
    b->destroy(b);
}

/* Export groups starts by whole second (rounded up): a busy hour stays a
 * short file, and a restored start never expires early. */
static void test_export_compact(void)
{
    sc_limits_store_t *a = sc_limits_memory_new();
    sc_limits_store_t *b = sc_limits_memory_new();
    sc_limits_caps_t caps = {1 << 20, 1 << 20, 1 << 20};
    double t0 = T_DAY + 15 * 3600; /* a whole second */
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ_INT(sc_test_take(a, t0 + 0.2 + (i % 2) * 0.5, &caps), SC_LIMIT_OK); /* .2 and .7 */
        sc_test_release(a);
    }
    for (int i = 0; i < 10; i++)
        CHECK_EQ_INT(sc_test_take(a, t0 + 1.0, &caps), SC_LIMIT_OK);
    double now = t0 + 60;
    cJSON *st = a->export_state(a, now, 0);
    cJSON *win = cJSON_GetObjectItem(st, "hour_window");
    CHECK_EQ_INT(cJSON_GetArraySize(win), 1); /* every start in (t0, t0+1] */
    cJSON *pair = cJSON_GetArrayItem(win, 0);
    CHECK_EQ_INT(cJSON_GetArrayItem(pair, 0)->valuedouble, t0 + 1);
    CHECK_EQ_INT(cJSON_GetArrayItem(pair, 1)->valuedouble, 1010);
    CHECK_EQ_INT(b->import_state(b, st, now), 0);
    CHECK_EQ_INT(counts(b, now).last_hour, 1010);
    CHECK_EQ_INT(counts(b, now).today, 1010);
    /* originals expire at t0+3600.2 / .7 / t0+3601; the restored ones at t0+3601 */
    CHECK_EQ_INT(counts(a, t0 + 3600.8).last_hour, 10);
    CHECK_EQ_INT(counts(b, t0 + 3600.8).last_hour, 1010);
    CHECK_EQ_INT(counts(b, t0 + 3601).last_hour, 0);
    cJSON_Delete(st);
    a->destroy(a);
    b->destroy(b);
}

static void test_reset(void)
{
    sc_limits_store_t *s = sc_limits_memory_new();
    sc_limits_caps_t caps = {100, 100, 100};
    double t = T_DAY + 100;
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sc_test_take(s, t, &caps), SC_LIMIT_OK);
    sc_test_release(s);
    s->reset(s);
    sc_limits_counts_t c = counts(s, t);
    CHECK_EQ_INT(c.last_hour, 0);
    CHECK_EQ_INT(c.today, 0);
    CHECK_EQ_INT(c.in_flight, 2); /* in-flight slots survive a reset */
    s->destroy(s);
}

/* ==== Concurrency ==== */

typedef struct stress {
    sc_limits_store_t *s;
    sc_limits_caps_t caps;
    int iterations;
    int release; /* give the slot back after each admitted take */
    atomic_int active;
    atomic_int max_active;
    atomic_int max_seen_in_flight;
    atomic_int admitted;
} stress_t;

static void atomic_max(atomic_int *m, int v)
{
    int cur = atomic_load(m);
    while (v > cur && !atomic_compare_exchange_weak(m, &cur, v))
        ;
}

static void *stress_main(void *arg)
{
    stress_t *st = arg;
    for (int i = 0; i < st->iterations; i++) {
        if (sc_test_take(st->s, T_DAY + 1000, &st->caps) != SC_LIMIT_OK)
            continue;
        atomic_fetch_add(&st->admitted, 1);
        int a = atomic_fetch_add(&st->active, 1) + 1;
        atomic_max(&st->max_active, a);
        if ((i & 63) == 0) {
            sc_limits_counts_t c;
            st->s->count(st->s, T_DAY + 1000, &c);
            atomic_max(&st->max_seen_in_flight, c.in_flight);
        }
        atomic_fetch_sub(&st->active, 1);
        if (st->release)
            sc_test_release(st->s);
    }
    return NULL;
}

static void run_stress(stress_t *st, int threads)
{
    pthread_t th[16];
    for (int i = 0; i < threads; i++)
        CHECK_EQ_INT(pthread_create(&th[i], NULL, stress_main, st), 0);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
}

static void test_stress_concurrency(void)
{
    stress_t st = {.caps = {3, 1 << 30, 1 << 30}, .iterations = 10000, .release = 1};
    st.s = sc_limits_memory_new();
    run_stress(&st, 8);
    CHECK(atomic_load(&st.max_active) <= 3);
    CHECK(atomic_load(&st.max_active) >= 1);
    CHECK(atomic_load(&st.max_seen_in_flight) <= 3);
    CHECK(atomic_load(&st.admitted) > 0);
    sc_limits_counts_t c = counts(st.s, T_DAY + 1000);
    CHECK_EQ_INT(c.in_flight, 0);
    CHECK_EQ_INT(c.last_hour, atomic_load(&st.admitted));
    CHECK_EQ_INT(c.today, atomic_load(&st.admitted));
    st.s->destroy(st.s);
}

static void test_stress_hourly_exact(void)
{
    stress_t st = {.caps = {1 << 20, 100, 1 << 20}, .iterations = 2000, .release = 1};
    st.s = sc_limits_memory_new();
    run_stress(&st, 8);
    CHECK_EQ_INT(atomic_load(&st.admitted), 100);
    CHECK_EQ_INT(counts(st.s, T_DAY + 1000).last_hour, 100);
    st.s->destroy(st.s);
}

static void test_stress_daily_exact(void)
{
    /* no release: the concurrency cap is far away, the daily one bites */
    stress_t st = {.caps = {1 << 20, 1 << 20, 77}, .iterations = 2000, .release = 0};
    st.s = sc_limits_memory_new();
    run_stress(&st, 8);
    CHECK_EQ_INT(atomic_load(&st.admitted), 77);
    CHECK_EQ_INT(counts(st.s, T_DAY + 1000).today, 77);
    CHECK_EQ_INT(counts(st.s, T_DAY + 1000).in_flight, 77);
    st.s->destroy(st.s);
}

/* Idempotency keys in the memory store: claim, existing, forget, TTL, bad values. */
static void test_idempotency(void)
{
    sc_limits_store_t *s = sc_limits_memory_new();
    sc_idem_existing_t ex;
    double t = T_DAY + 100;
    CHECK_EQ_INT(s->idem_claim(s, t, "order-17", "abc", "rec-1", 60, &ex), SC_IDEM_CLAIMED);
    memset(&ex, 0, sizeof ex);
    CHECK_EQ_INT(s->idem_claim(s, t + 1, "order-17", "zzz", "rec-2", 60, &ex), SC_IDEM_EXISTING);
    CHECK_STR(ex.fingerprint, "abc");
    CHECK_STR(ex.record_id, "rec-1");
    CHECK_EQ_INT(s->idem_claim(s, t + 1, "other", "f", "rec-3", 60, NULL), SC_IDEM_CLAIMED);
    /* expired at t + 60 exactly */
    CHECK_EQ_INT(s->idem_claim(s, t + 59.9, "order-17", "z", "r", 60, NULL), SC_IDEM_EXISTING);
    CHECK_EQ_INT(s->idem_claim(s, t + 60, "order-17", "z", "rec-4", 60, &ex), SC_IDEM_CLAIMED);
    CHECK_EQ_INT(s->idem_forget(s, "order-17"), 0);
    CHECK_EQ_INT(s->idem_claim(s, t + 61, "order-17", "z", "rec-5", 60, NULL), SC_IDEM_CLAIMED);
    CHECK_EQ_INT(s->idem_forget(s, "never-claimed"), 0);
    CHECK_EQ_INT(s->idem_claim(s, t, "", "f", "r", 60, NULL), SC_IDEM_INVALID);
    CHECK_EQ_INT(s->idem_claim(s, t, " lead", "f", "r", 60, NULL), SC_IDEM_INVALID);
    CHECK_EQ_INT(s->idem_claim(s, t, "trail ", "f", "r", 60, NULL), SC_IDEM_INVALID);
    CHECK_EQ_INT(s->idem_claim(s, t, "tab\there", "f", "r", 60, NULL), SC_IDEM_INVALID);
    CHECK_EQ_INT(s->idem_claim(s, t, "a b", "f", "r", 60, NULL), SC_IDEM_CLAIMED);
    CHECK_EQ_INT(s->idem_claim(s, t, "k", "f\n", "r", 60, NULL), SC_IDEM_INVALID);
    CHECK_EQ_INT(s->idem_claim(s, t, "k", "f", NULL, 60, NULL), SC_IDEM_INVALID);
    CHECK_EQ_INT(s->idem_claim(s, t, "k", "f", "r", 0, NULL), SC_IDEM_INVALID);
    CHECK_EQ_INT(s->idem_forget(s, ""), -1);
    CHECK(s->available(s));
    s->destroy(s); /* ASan: entries freed */
}

/* Release frees exactly the slot with that token. */
static void test_tokens(void)
{
    sc_limits_store_t *s = sc_limits_memory_new();
    sc_limits_caps_t caps = {2, 100, 100};
    sc_limits_token_t a, b, c, stale = {{0}};
    CHECK_EQ_INT(s->take(s, T_DAY, &caps, &a, NULL), SC_LIMIT_OK);
    CHECK_EQ_INT(s->take(s, T_DAY, &caps, &b, NULL), SC_LIMIT_OK);
    CHECK(strcmp(a.s, b.s) != 0);
    CHECK_EQ_INT(s->take(s, T_DAY, &caps, &c, NULL), SC_LIMIT_CONCURRENCY);
    CHECK_STR(c.s, "");
    sc_limits_token_new(&stale);
    s->release(s, &stale); /* not held: frees nothing */
    CHECK_EQ_INT(s->take(s, T_DAY, &caps, &c, NULL), SC_LIMIT_CONCURRENCY);
    s->release(s, &a);
    s->release(s, &a); /* twice: one slot */
    CHECK_EQ_INT(s->take(s, T_DAY, &caps, &c, NULL), SC_LIMIT_OK);
    CHECK_EQ_INT(s->take(s, T_DAY, &caps, &a, NULL), SC_LIMIT_CONCURRENCY);
    s->release(s, &b);
    s->release(s, &c);
    CHECK_EQ_INT(counts(s, T_DAY).in_flight, 0);
    s->destroy(s);
}

int main(void)
{
    test_idempotency();
    test_tokens();
    test_names();
    test_concurrency_gate();
    test_check_order();
    test_sliding_window();
    test_window_growth();
    test_day_rollover();
    test_export_import();
    test_export_compact();
    test_reset();
    test_stress_concurrency();
    test_stress_hourly_exact();
    test_stress_daily_exact();
    return test_report("limits_store_test");
}
