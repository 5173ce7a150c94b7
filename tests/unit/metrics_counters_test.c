/* Metrics counters, rates, p95, daily rows, JSON and Prometheus output. The
 * expected figures are worked out by hand from a known mix of events; every
 * time is passed explicitly. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "limits_tokens.h"
#include "metrics/metrics.h"
#include "test.h"

#define DAY0 1772323200.0 /* 2026-03-01T00:00:00Z */
#define NOON (DAY0 + 12 * 3600)

static sc_limits_store_t *g_store;
static sc_limits_caps_t g_caps = {5, 50, 500};

#define CHECK_NEAR(a, b) CHECK(fabs((double)(a) - (double)(b)) < 1e-9)

static cJSON *snapshot_json(double now)
{
    sc_metrics_snapshot_t s;
    sc_buf_t b = SC_BUF_INIT;
    sc_metrics_snapshot(now, &g_caps, &s);
    CHECK_EQ_INT(sc_metrics_snapshot_json(&s, &b), 0);
    cJSON *j = cJSON_Parse(b.data);
    CHECK(j != NULL);
    sc_buf_free(&b);
    return j;
}

static const cJSON *path(const cJSON *j, const char *a, const char *b, const char *c)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, a);
    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    if (c)
        v = cJSON_GetObjectItemCaseSensitive(v, c);
    return v;
}

static double num(const cJSON *j, const char *a, const char *b, const char *c)
{
    const cJSON *v = path(j, a, b, c);
    CHECK(cJSON_IsNumber(v));
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void test_names(void)
{
    CHECK_STR(sc_fallback_reason_name(SC_FB_TIMEOUT), "timeout");
    CHECK_STR(sc_fallback_reason_name(SC_FB_NO_TOKEN), "no_token");
    CHECK_STR(sc_fallback_reason_name(SC_FB__COUNT), "unknown");
    CHECK_EQ_INT(sc_fallback_reason_parse("hourly_limit"), SC_FB_HOURLY_LIMIT);
    CHECK_EQ_INT(sc_fallback_reason_parse("api_error"), SC_FB_API_ERROR);
    CHECK_EQ_INT(sc_fallback_reason_parse("nope"), -1);
    CHECK_EQ_INT(sc_fallback_reason_parse(NULL), -1);
    CHECK_EQ_INT(sc_fallback_reason_for_limit(SC_LIMIT_DAILY), SC_FB_DAILY_LIMIT);
    CHECK_EQ_INT(sc_fallback_reason_for_limit(SC_LIMIT_HOURLY), SC_FB_HOURLY_LIMIT);
    CHECK_EQ_INT(sc_fallback_reason_for_limit(SC_LIMIT_CONCURRENCY), SC_FB_CONCURRENCY_LIMIT);
    CHECK_EQ_INT(sc_fallback_reason_for_replicate(SC_REP_TIMEOUT), SC_FB_TIMEOUT);
    CHECK_EQ_INT(sc_fallback_reason_for_replicate(SC_REP_API_ERROR), SC_FB_API_ERROR);
    CHECK_EQ_INT(sc_fallback_reason_for_replicate(SC_REP_INVALID_OUTPUT), SC_FB_INVALID_OUTPUT);
    CHECK_EQ_INT(sc_fallback_reason_for_replicate(SC_REP_NO_TOKEN), SC_FB_NO_TOKEN);
    /* the contract's later reasons are part of the set */
    CHECK_STR(sc_fallback_reason_name(SC_FB_CIRCUIT_OPEN), "circuit_open");
    CHECK_STR(sc_fallback_reason_name(SC_FB_BUDGET_PACING), "budget_pacing");
    CHECK_STR(sc_fallback_reason_name(SC_FB_LIMITER_UNAVAILABLE), "limiter_unavailable");
    CHECK_STR(sc_fallback_reason_name(SC_FB_INTERRUPTED), "interrupted");
    CHECK_EQ_INT(SC_FB__COUNT, 11);
    for (int i = 0; i < SC_FB__COUNT; i++)
        CHECK_EQ_INT(sc_fallback_reason_parse(sc_fallback_reason_name(i)), i);
}

/* Nothing happened yet: counts are 0 and every rate/time is NaN / null. */
static void test_empty(void)
{
    sc_metrics_reset(NOON);
    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(NOON, &g_caps, &s);
    CHECK_EQ_INT(s.k_attempts, 0);
    CHECK_EQ_INT(s.total_requests, 0);
    CHECK(isnan(s.k_success_rate));
    CHECK(isnan(s.k_avg_seconds));
    CHECK(isnan(s.k_p95_seconds));
    CHECK(isnan(s.p_success_rate));
    CHECK(isnan(s.p_avg_seconds));
    CHECK(isnan(s.fallback_rate));
    CHECK(isnan(s.kontext_success_rate));
    CHECK_NEAR(s.since, NOON);

    cJSON *j = snapshot_json(NOON);
    CHECK(cJSON_IsNull(path(j, "stats", "kontext", "success_rate")));
    CHECK(cJSON_IsNull(path(j, "stats", "kontext", "avg_time_seconds")));
    CHECK(cJSON_IsNull(path(j, "stats", "kontext", "p95_time_seconds")));
    CHECK(cJSON_IsNull(path(j, "stats", "pil", "success_rate")));
    CHECK(cJSON_IsNull(path(j, "stats", "pil", "avg_time_seconds")));
    CHECK(cJSON_IsNull(path(j, "fallback_rate", NULL, NULL)));
    CHECK(cJSON_IsNull(path(j, "kontext_success_rate", NULL, NULL)));
    CHECK_EQ_INT(num(j, "stats", "kontext", "attempts"), 0);
    CHECK_EQ_INT(cJSON_GetArraySize(path(j, "fallback_reasons", NULL, NULL)), SC_FB__COUNT);
    for (int i = 0; i < SC_FB__COUNT; i++)
        CHECK_EQ_INT(num(j, "fallback_reasons", sc_fallback_reason_name(i), NULL), 0);
    CHECK(cJSON_IsNumber(path(j, "fallback_reasons", "limiter_unavailable", NULL)));
    CHECK_EQ_INT(num(j, "estimated_cost_usd", "today", NULL), 0);
    CHECK_STR(cJSON_GetStringValue(path(j, "since", NULL, NULL)), "2026-03-01T12:00:00.000Z");
    cJSON_Delete(j);
}

/* 10 requests: 6 routed to Kontext (5 admitted, 1 refused for concurrency),
 * 4 to PIL. Of the 5 predictions: 3 succeed (10, 20, 30 s), 1 fails
 * (api_error), 1 times out. The 3 fallbacks and the 4 direct PIL requests are
 * 7 PIL composites: 6 succeed (0.5 s each), 1 fails. 3 scenes (2 ok). */
static void test_known_mix(void)
{
    sc_metrics_reset(NOON);
    double t = NOON;
    for (int i = 0; i < 6; i++)
        sc_metrics_request(t, true);
    for (int i = 0; i < 4; i++)
        sc_metrics_request(t, false);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(sc_test_take(g_store, t, &g_caps), SC_LIMIT_OK);
        sc_metrics_kontext_started(t);
    }
    CHECK_EQ_INT(sc_test_take(g_store, t, &g_caps), SC_LIMIT_CONCURRENCY);
    sc_metrics_fallback(t, sc_fallback_reason_for_limit(SC_LIMIT_CONCURRENCY));
    sc_metrics_kontext_finished(t, SC_KONTEXT_SUCCESS, 30);
    sc_metrics_kontext_finished(t, SC_KONTEXT_SUCCESS, 10);
    sc_metrics_kontext_finished(t, SC_KONTEXT_SUCCESS, 20);
    sc_metrics_kontext_finished(t, SC_KONTEXT_FAILURE, 3);
    sc_metrics_fallback(t, SC_FB_API_ERROR);
    sc_metrics_kontext_finished(t, SC_KONTEXT_TIMEOUT, 60);
    sc_metrics_fallback(t, SC_FB_TIMEOUT);
    for (int i = 0; i < 5; i++)
        sc_test_release(g_store);
    for (int i = 0; i < 6; i++)
        sc_metrics_pil(t, true, 0.5);
    sc_metrics_pil(t, false, 0.1);
    sc_metrics_scene(t, true, 2);
    sc_metrics_scene(t, true, 2);
    sc_metrics_scene(t, false, 1);
    sc_metrics_route_error(t);

    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(t + 1, &g_caps, &s);
    CHECK_EQ_INT(s.k_attempts, 5);
    CHECK_EQ_INT(s.k_successes, 3);
    CHECK_EQ_INT(s.k_failures, 2); /* includes the timeout */
    CHECK_EQ_INT(s.k_timeouts, 1);
    CHECK_NEAR(s.k_success_rate, 0.6);
    CHECK_NEAR(s.k_avg_seconds, 20.0);
    CHECK_NEAR(s.k_p95_seconds, 30.0);
    CHECK_EQ_INT(s.p_attempts, 7);
    CHECK_EQ_INT(s.p_successes, 6);
    CHECK_EQ_INT(s.p_failures, 1);
    CHECK_NEAR(s.p_success_rate, 6.0 / 7.0);
    CHECK_NEAR(s.p_avg_seconds, 0.5);
    CHECK_EQ_INT(s.total_requests, 10);
    CHECK_EQ_INT(s.routed_kontext, 6);
    CHECK_EQ_INT(s.fallbacks, 3);
    CHECK_NEAR(s.fallback_rate, 0.5);
    CHECK_EQ_INT(s.fallback_reasons[SC_FB_TIMEOUT], 1);
    CHECK_EQ_INT(s.fallback_reasons[SC_FB_API_ERROR], 1);
    CHECK_EQ_INT(s.fallback_reasons[SC_FB_CONCURRENCY_LIMIT], 1);
    CHECK_EQ_INT(s.fallback_reasons[SC_FB_HOURLY_LIMIT], 0);
    CHECK_EQ_INT(s.fallback_reasons[SC_FB_NO_TOKEN], 0);
    CHECK_NEAR(s.kontext_success_rate, 0.6);
    CHECK_EQ_INT(s.today_generations, 5);
    CHECK_EQ_INT(s.daily_limit, 500);
    CHECK_EQ_INT(s.in_flight, 0);
    CHECK_EQ_INT(s.max_concurrent, 5);
    CHECK_EQ_INT(s.last_hour, 5);
    CHECK_EQ_INT(s.max_per_hour, 50);
    CHECK_EQ_INT(s.scenes_ok, 2);
    CHECK_EQ_INT(s.scenes_failed, 1);
    CHECK_EQ_INT(s.route_errors, 1);
    /* prices set in main: 0.05 per Kontext start, 0.01 per scene call */
    CHECK_NEAR(s.cost_today_usd, 5 * 0.05 + 3 * 0.01);
    CHECK_NEAR(s.cost_total_usd, 5 * 0.05 + 3 * 0.01);

    /* the same through JSON */
    cJSON *j = snapshot_json(t + 1);
    CHECK_EQ_INT(num(j, "stats", "kontext", "attempts"), 5);
    CHECK_EQ_INT(num(j, "stats", "kontext", "failures"), 2);
    CHECK_EQ_INT(num(j, "stats", "kontext", "timeouts"), 1);
    CHECK_NEAR(num(j, "stats", "kontext", "success_rate"), 0.6);
    CHECK_NEAR(num(j, "stats", "kontext", "avg_time_seconds"), 20);
    CHECK_NEAR(num(j, "stats", "kontext", "p95_time_seconds"), 30);
    CHECK_EQ_INT(num(j, "stats", "pil", "attempts"), 7);
    CHECK(fabs(num(j, "stats", "pil", "success_rate") - 6.0 / 7.0) < 1e-5);
    CHECK_EQ_INT(num(j, "total_requests", NULL, NULL), 10);
    CHECK_EQ_INT(num(j, "fallbacks", NULL, NULL), 3);
    CHECK_NEAR(num(j, "fallback_rate", NULL, NULL), 0.5);
    CHECK_EQ_INT(num(j, "fallback_reasons", "concurrency_limit", NULL), 1);
    CHECK_EQ_INT(num(j, "fallback_reasons", "daily_limit", NULL), 0);
    CHECK_NEAR(num(j, "kontext_success_rate", NULL, NULL), 0.6);
    CHECK_EQ_INT(num(j, "today_generations", NULL, NULL), 5);
    CHECK_EQ_INT(num(j, "daily_limit", NULL, NULL), 500);
    CHECK_EQ_INT(num(j, "rate_limiter", "in_flight", NULL), 0);
    CHECK_EQ_INT(num(j, "rate_limiter", "max_concurrent", NULL), 5);
    CHECK_EQ_INT(num(j, "rate_limiter", "last_hour", NULL), 5);
    CHECK_EQ_INT(num(j, "rate_limiter", "max_per_hour", NULL), 50);
    CHECK_NEAR(num(j, "estimated_cost_usd", "today", NULL), 0.28);
    CHECK_NEAR(num(j, "estimated_cost_usd", "total", NULL), 0.28);
    cJSON_Delete(j);

    /* the next UTC day: today's figures restart, totals stay */
    double tomorrow = DAY0 + 86400 + 60;
    sc_metrics_snapshot(tomorrow, &g_caps, &s);
    CHECK_EQ_INT(s.today_generations, 0);
    CHECK_NEAR(s.cost_today_usd, 0);
    CHECK_NEAR(s.cost_total_usd, 0.28);
    CHECK_EQ_INT(s.k_attempts, 5);

    /* caps NULL: the configured env caps */
    sc_metrics_snapshot(t + 1, NULL, &s);
    CHECK_EQ_INT(s.daily_limit, 500);
    CHECK_EQ_INT(s.max_concurrent, 5);
    CHECK_EQ_INT(s.max_per_hour, 50);
}

/* Nearest-rank p95 of a known sample, and a bounded ring of 1024. */
static void test_p95(void)
{
    sc_metrics_reset(NOON);
    int order[100];
    for (int i = 0; i < 100; i++)
        order[i] = i + 1;
    srand(7);
    for (int i = 99; i > 0; i--) { /* shuffle: order must not matter */
        int k = rand() % (i + 1), tmp = order[i];
        order[i] = order[k];
        order[k] = tmp;
    }
    for (int i = 0; i < 100; i++)
        sc_metrics_kontext_finished(NOON, SC_KONTEXT_SUCCESS, order[i]);
    sc_metrics_kontext_finished(NOON, SC_KONTEXT_FAILURE, 500); /* not a success: ignored */
    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(NOON, &g_caps, &s);
    CHECK_NEAR(s.k_p95_seconds, 95);
    CHECK_NEAR(s.k_avg_seconds, 50.5);
    CHECK(isnan(s.k_success_rate)); /* successes without starts: no denominator */

    sc_metrics_reset(NOON);
    sc_metrics_kontext_finished(NOON, SC_KONTEXT_SUCCESS, 4.25);
    sc_metrics_snapshot(NOON, &g_caps, &s);
    CHECK_NEAR(s.k_p95_seconds, 4.25);

    /* 2000 successes 1..2000: the ring keeps 977..2000; rank ceil(0.95*1024) = 973 */
    sc_metrics_reset(NOON);
    for (int i = 1; i <= 2000; i++)
        sc_metrics_kontext_finished(NOON, SC_KONTEXT_SUCCESS, i);
    sc_metrics_snapshot(NOON, &g_caps, &s);
    CHECK_NEAR(s.k_p95_seconds, 977 + 972);
    CHECK_NEAR(s.k_avg_seconds, 1000.5); /* the average is over every success */

    /* bad durations count as 0 and never poison the sums */
    sc_metrics_reset(NOON);
    sc_metrics_kontext_finished(NOON, SC_KONTEXT_SUCCESS, NAN);
    sc_metrics_kontext_finished(NOON, SC_KONTEXT_SUCCESS, -5);
    sc_metrics_kontext_finished(NOON, SC_KONTEXT_SUCCESS, 6);
    sc_metrics_pil(NOON, true, INFINITY);
    sc_metrics_snapshot(NOON, &g_caps, &s);
    CHECK_NEAR(s.k_avg_seconds, 2);
    CHECK_NEAR(s.k_p95_seconds, 6);
    CHECK_NEAR(s.p_avg_seconds, 0);
}

static const cJSON *daily_row(const cJSON *j, int i)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "daily"), i);
}

static void check_row(const cJSON *row, const char *date, int k, int p, int f, int t)
{
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(row, "date")), date);
    CHECK_EQ_INT(num(row, "kontext", NULL, NULL), k);
    CHECK_EQ_INT(num(row, "pil", NULL, NULL), p);
    CHECK_EQ_INT(num(row, "fallbacks", NULL, NULL), f);
    CHECK_EQ_INT(num(row, "total", NULL, NULL), t);
}

static void test_daily(void)
{
    sc_metrics_reset(NOON);
    double d = DAY0 + 3 * 86400; /* 2026-03-04 */
    /* 2026-03-02: one PIL request */
    sc_metrics_request(d - 2 * 86400 + 100, false);
    sc_metrics_pil(d - 2 * 86400 + 100, true, 0.2);
    /* 23:59:59.9 on 2026-03-03: a Kontext start that fell back */
    double late = d - 0.1;
    sc_metrics_request(late, true);
    CHECK_EQ_INT(sc_test_take(g_store, late, &g_caps), SC_LIMIT_OK);
    sc_metrics_kontext_started(late);
    sc_metrics_kontext_finished(late, SC_KONTEXT_TIMEOUT, 60);
    sc_metrics_fallback(late, SC_FB_TIMEOUT);
    sc_metrics_pil(late, true, 0.2);
    sc_test_release(g_store);
    /* 00:00:00 on 2026-03-04: two Kontext starts, one request each */
    for (int i = 0; i < 2; i++) {
        sc_metrics_request(d, true);
        CHECK_EQ_INT(sc_test_take(g_store, d, &g_caps), SC_LIMIT_OK);
        sc_metrics_kontext_started(d);
        sc_test_release(g_store);
    }

    sc_buf_t b = SC_BUF_INIT;
    CHECK_EQ_INT(sc_metrics_daily_json(d + 3600, 5, 500, &b), 0);
    cJSON *j = cJSON_Parse(b.data);
    CHECK(j != NULL);
    CHECK_EQ_INT(num(j, "days", NULL, NULL), 5);
    CHECK_EQ_INT(num(j, "limit", NULL, NULL), 500);
    CHECK_EQ_INT(num(j, "today_generations", NULL, NULL), 2);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "daily")), 5);
    check_row(daily_row(j, 0), "2026-02-28", 0, 0, 0, 0);
    check_row(daily_row(j, 1), "2026-03-01", 0, 0, 0, 0);
    check_row(daily_row(j, 2), "2026-03-02", 0, 1, 0, 1);
    check_row(daily_row(j, 3), "2026-03-03", 1, 1, 1, 1);
    check_row(daily_row(j, 4), "2026-03-04", 2, 0, 0, 2);
    cJSON_Delete(j);

    /* one day: just today; a later "now" with nothing new shows zero rows */
    sc_buf_reset(&b);
    CHECK_EQ_INT(sc_metrics_daily_json(d + 3600, 1, 7, &b), 0);
    j = cJSON_Parse(b.data);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "daily")), 1);
    check_row(daily_row(j, 0), "2026-03-04", 2, 0, 0, 2);
    cJSON_Delete(j);
    sc_buf_reset(&b);
    CHECK_EQ_INT(sc_metrics_daily_json(d + 86400 + 5, 2, 7, &b), 0);
    j = cJSON_Parse(b.data);
    CHECK_EQ_INT(num(j, "today_generations", NULL, NULL), 0);
    check_row(daily_row(j, 0), "2026-03-04", 2, 0, 0, 2);
    check_row(daily_row(j, 1), "2026-03-05", 0, 0, 0, 0);
    cJSON_Delete(j);

    /* 365 rows ending today, the first 364 days back */
    sc_buf_reset(&b);
    CHECK_EQ_INT(sc_metrics_daily_json(d, 365, 500, &b), 0);
    j = cJSON_Parse(b.data);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "daily")), 365);
    char first[11];
    sc_clock_utc_date((time_t)(d - 364 * 86400.0), first);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(daily_row(j, 0), "date")), first);
    check_row(daily_row(j, 364), "2026-03-04", 2, 0, 0, 2);
    cJSON_Delete(j);

    /* out of range: -1 and nothing appended */
    sc_buf_reset(&b);
    sc_buf_puts(&b, "x");
    CHECK_EQ_INT(sc_metrics_daily_json(d, 0, 500, &b), -1);
    CHECK_EQ_INT(sc_metrics_daily_json(d, 366, 500, &b), -1);
    CHECK_EQ_INT(sc_metrics_daily_json(d, -3, 500, &b), -1);
    CHECK_STR(b.data, "x");
    sc_buf_free(&b);
}

/* Every line is a comment (# HELP / # TYPE) or `name{labels} value`, each
 * sample's family was typed before it, and the value parses. */
static int prom_valid(const char *text)
{
    char typed[64][96];
    int ntyped = 0;
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        if (!eol)
            return 0; /* the format ends every line with \n */
        char line[512];
        size_t n = (size_t)(eol - p);
        if (n == 0 || n >= sizeof line)
            return 0;
        memcpy(line, p, n);
        line[n] = '\0';
        p = eol + 1;
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[96], type[32];
            if (sscanf(line + 7, "%95s %31s", name, type) != 2 || ntyped >= 64)
                return 0;
            if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "summary"))
                return 0;
            strcpy(typed[ntyped++], name);
            continue;
        }
        char *sp = strrchr(line, ' ');
        if (!sp)
            return 0;
        char *end;
        strtod(sp + 1, &end);
        if (*end != '\0' || end == sp + 1)
            return 0;
        size_t nl = strcspn(line, "{ ");
        int known = 0;
        for (int i = 0; i < ntyped; i++) {
            size_t tl = strlen(typed[i]);
            if (nl >= tl && strncmp(line, typed[i], tl) == 0 &&
                (nl == tl || strcmp(line + tl, "_sum") == 0 || strcmp(line + tl, "_count") == 0 ||
                 strncmp(line + tl, "_sum ", 5) == 0 || strncmp(line + tl, "_count ", 7) == 0))
                known = 1;
        }
        if (!known)
            return 0;
    }
    return 1;
}

static void test_prometheus(void)
{
    sc_metrics_reset(NOON);
    sc_buf_t b = SC_BUF_INIT;
    CHECK_EQ_INT(sc_metrics_prometheus(NOON, &g_caps, &b), 0);
    CHECK(prom_valid(b.data));
    CHECK(strstr(b.data, "scenecomp_kontext_duration_seconds{quantile=\"0.95\"} NaN\n"));
    CHECK(strstr(b.data, "scenecomp_kontext_success_ratio NaN\n"));

    test_known_mix();
    sc_buf_reset(&b);
    CHECK_EQ_INT(sc_metrics_prometheus(NOON + 1, &g_caps, &b), 0);
    CHECK(prom_valid(b.data));
    const char *want[] = {
        "# TYPE scenecomp_composite_requests_total counter\n",
        "scenecomp_composite_requests_total 10\n",
        "scenecomp_composite_routed_kontext_total 6\n",
        "scenecomp_kontext_started_total 5\n",
        "scenecomp_kontext_predictions_total{outcome=\"success\"} 3\n",
        "scenecomp_kontext_predictions_total{outcome=\"failure\"} 1\n",
        "scenecomp_kontext_predictions_total{outcome=\"timeout\"} 1\n",
        "# TYPE scenecomp_kontext_duration_seconds summary\n",
        "scenecomp_kontext_duration_seconds{quantile=\"0.95\"} 30\n",
        "scenecomp_kontext_duration_seconds_sum 60\n",
        "scenecomp_kontext_duration_seconds_count 3\n",
        "scenecomp_pil_composites_total{outcome=\"success\"} 6\n",
        "scenecomp_pil_composites_total{outcome=\"failure\"} 1\n",
        "scenecomp_fallbacks_total{reason=\"timeout\"} 1\n",
        "scenecomp_fallbacks_total{reason=\"no_token\"} 0\n",
        "scenecomp_fallbacks_total{reason=\"circuit_open\"} 0\n",
        "scenecomp_fallbacks_total{reason=\"budget_pacing\"} 0\n",
        "scenecomp_fallbacks_total{reason=\"limiter_unavailable\"} 0\n",
        "scenecomp_fallbacks_total{reason=\"interrupted\"} 0\n",
        "scenecomp_kontext_in_flight 0\n",
        "scenecomp_kontext_last_hour 5\n",
        "scenecomp_today_generations 5\n",
        "scenecomp_daily_limit 500\n",
        "scenecomp_fallback_ratio 0.5\n",
        "scenecomp_estimated_cost_usd_total 0.28\n",
        "scenecomp_route_errors_total 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(b.data, want[i]))
            fprintf(stderr, "missing: %s", want[i]);
        CHECK(strstr(b.data, want[i]) != NULL);
    }
    /* prom_valid itself rejects what it should */
    CHECK(!prom_valid("scenecomp_x 1\n"));
    CHECK(!prom_valid("# TYPE scenecomp_x gauge\nscenecomp_x abc\n"));
    CHECK(!prom_valid("# TYPE scenecomp_x gauge\nscenecomp_x 1"));
    sc_buf_free(&b);
}

/* Reset zeroes everything, including the limiter's hour and day (not in-flight). */
static void test_reset(void)
{
    test_known_mix();
    CHECK_EQ_INT(sc_test_take(g_store, NOON, &g_caps), SC_LIMIT_OK);
    sc_metrics_reset(NOON + 50);
    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(NOON + 60, &g_caps, &s);
    CHECK_EQ_INT(s.k_attempts + s.total_requests + s.fallbacks + s.p_attempts + s.scenes_ok, 0);
    CHECK_EQ_INT(s.today_generations, 0);
    CHECK_EQ_INT(s.last_hour, 0);
    CHECK_EQ_INT(s.in_flight, 1);
    CHECK_NEAR(s.since, NOON + 50);
    sc_test_release(g_store);
}

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        sc_metrics_request(NOON, (i & 1) != 0);
        sc_metrics_pil(NOON, true, 0.001);
    }
    return NULL;
}

/* Concurrent events lose nothing. */
static void test_threads(void)
{
    sc_metrics_reset(NOON);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(NOON, &g_caps, &s);
    CHECK_EQ_INT(s.total_requests, 80000);
    CHECK_EQ_INT(s.routed_kontext, 40000);
    CHECK_EQ_INT(s.p_successes, 80000);
    sc_buf_t b = SC_BUF_INIT;
    CHECK_EQ_INT(sc_metrics_daily_json(NOON, 1, 1, &b), 0);
    CHECK(strstr(b.data, "\"pil\":80000,\"fallbacks\":0,\"total\":80000") != NULL);
    sc_buf_free(&b);
}

int main(void)
{
    char dir[] = "/tmp/sc_metrics_counters_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    static sc_config_t cfg;
    sc_config_defaults(&cfg);
    snprintf(cfg.logs_dir, sizeof cfg.logs_dir, "%s", dir);
    cfg.kontext_price_usd = 0.05;
    cfg.scene_price_usd = 0.01;
    g_store = sc_limits_memory_new();
    CHECK_EQ_INT(sc_metrics_init(&cfg, g_store), 0);

    test_names();
    test_empty();
    test_known_mix();
    test_p95();
    test_prometheus();
    test_reset();
    test_threads();
    test_daily(); /* last: it moves the limiter's day forward */

    sc_metrics_shutdown();
    g_store->destroy(g_store);
    char file[2048];
    snprintf(file, sizeof file, "%s/composite_metrics.json", dir);
    unlink(file);
    rmdir(dir);
    return test_report("metrics_counters_test");
}
