/* Composite metrics. All counters live in one struct behind one mutex: an event
 * takes the lock for a handful of additions (no allocation, no I/O, no Lua) and,
 * on the first change after a save, wakes the writer thread. The writer waits a
 * short debounce, copies the struct under the lock and writes the file outside
 * it, so request threads never touch the disk. Snapshots copy under the lock and
 * compute rates, averages and the p95 afterwards.
 *
 * Daily rows live in a ring indexed by UTC day number modulo DAY_SLOTS, so the
 * last DAY_SLOTS (>= 400) days are kept with no allocation on the hot path. */
#include "metrics/metrics.h"

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
#include "core/fsutil.h"
#include "core/log.h"

#define RECENT_N 1024        /* successful Kontext durations kept for the p95 */
#define DAY_SLOTS 512        /* daily rows kept (>= 400 days) */
#define DEBOUNCE_SECONDS 0.5 /* a change reaches the file within ~0.5 s + write time */
#define RETRY_SECONDS 5.0    /* after a failed write */
#define FILE_MAX_BYTES (64u << 20)
#define FILE_NAME "composite_metrics.json"
#define FILE_VERSION 1
#define MAX_COUNT 9007199254740992.0 /* 2^53: exact in a JSON double */

typedef struct metrics_day {
    long day; /* UTC day index (days since the epoch) */
    int used;
    long long kontext, pil, fallbacks, total, scenes;
} metrics_day_t;

typedef struct metrics_state {
    long long requests, routed_kontext;
    long long k_started, k_successes, k_failures, k_timeouts;
    double k_sum; /* seconds over successes */
    long long p_attempts, p_successes, p_failures;
    double p_sum; /* seconds over successes */
    long long fallbacks, reasons[SC_FB__COUNT];
    long long scenes_ok, scenes_failed, route_errors;
    double since;
    double recent[RECENT_N]; /* ring of recent successful Kontext durations */
    int recent_head, recent_len;
    metrics_day_t days[DAY_SLOTS];
} metrics_state_t;

/* g_mu guards g_st and the writer flags; g_io_mu orders whole saves so an older
 * copy never overwrites a newer one. Lock order: g_io_mu, then g_mu; the store's
 * own lock is never taken while g_mu is held. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_io_mu = PTHREAD_MUTEX_INITIALIZER;
static metrics_state_t g_st;
static pthread_cond_t g_cond;
static pthread_t g_thread;
static int g_running; /* writer thread started */
static int g_stop;
static int g_dirty;
static int g_write_failing;
static const sc_config_t *g_cfg;
static sc_limits_store_t *g_store;
static char g_path[PATH_MAX];

static const char *const reason_names[SC_FB__COUNT] = {
    "timeout",      "api_error",   "invalid_output", "concurrency_limit",
    "hourly_limit", "daily_limit", "no_token",       "limiter_unavailable",
};

const char *sc_fallback_reason_name(sc_fallback_reason_t r)
{
    if ((int)r < 0 || r >= SC_FB__COUNT)
        return "unknown";
    return reason_names[r];
}

int sc_fallback_reason_parse(const char *name)
{
    for (int i = 0; name && i < SC_FB__COUNT; i++)
        if (strcmp(name, reason_names[i]) == 0)
            return i;
    return -1;
}

sc_fallback_reason_t sc_metrics_reason_for_limit(sc_limit_result_t r)
{
    switch (r) {
    case SC_LIMIT_HOURLY:
        return SC_FB_HOURLY_LIMIT;
    case SC_LIMIT_DAILY:
        return SC_FB_DAILY_LIMIT;
    case SC_LIMIT_UNAVAILABLE:
        return SC_FB_LIMITER_UNAVAILABLE;
    case SC_LIMIT_OK:
    case SC_LIMIT_CONCURRENCY:
        break;
    }
    return SC_FB_CONCURRENCY_LIMIT;
}

/* ==== State helpers (caller holds g_mu unless the state is private) ==== */

static long day_of(double now)
{
    return sc_clock_utc_day((time_t)floor(now));
}

static int slot_of(long day)
{
    long s = day % DAY_SLOTS;
    return (int)(s < 0 ? s + DAY_SLOTS : s);
}

/* The row for day, recycling the slot of a day DAY_SLOTS older. NULL when the
 * slot already holds a newer day (an event dated more than DAY_SLOTS days back). */
static metrics_day_t *day_row(metrics_state_t *st, long day)
{
    metrics_day_t *r = &st->days[slot_of(day)];
    if (r->used && r->day == day)
        return r;
    if (r->used && r->day > day)
        return NULL;
    memset(r, 0, sizeof *r);
    r->used = 1;
    r->day = day;
    return r;
}

static const metrics_day_t *day_peek(const metrics_state_t *st, long day)
{
    const metrics_day_t *r = &st->days[slot_of(day)];
    return (r->used && r->day == day) ? r : NULL;
}

static void state_zero(metrics_state_t *st, double since)
{
    memset(st, 0, sizeof *st);
    st->since = since;
}

/* Marks the state changed and wakes the writer on the first change since the
 * last save (one futex wake per save, not per event). Caller holds g_mu. */
static void touch(void)
{
    if (!g_dirty) {
        g_dirty = 1;
        if (g_running)
            pthread_cond_signal(&g_cond);
    }
}

static double clean_seconds(double s)
{
    return (isfinite(s) && s > 0) ? s : 0.0;
}

/* ==== Events ==== */

void sc_metrics_request(double now, bool routed_kontext)
{
    pthread_mutex_lock(&g_mu);
    g_st.requests++;
    if (routed_kontext)
        g_st.routed_kontext++;
    metrics_day_t *r = day_row(&g_st, day_of(now));
    if (r)
        r->total++;
    touch();
    pthread_mutex_unlock(&g_mu);
}

void sc_metrics_kontext_started(double now)
{
    pthread_mutex_lock(&g_mu);
    g_st.k_started++;
    metrics_day_t *r = day_row(&g_st, day_of(now));
    if (r)
        r->kontext++;
    touch();
    pthread_mutex_unlock(&g_mu);
}

void sc_metrics_kontext_finished(double now, sc_kontext_outcome_t o, double seconds)
{
    (void)now;
    seconds = clean_seconds(seconds);
    pthread_mutex_lock(&g_mu);
    switch (o) {
    case SC_KONTEXT_SUCCESS:
        g_st.k_successes++;
        g_st.k_sum += seconds;
        g_st.recent[(g_st.recent_head + g_st.recent_len) % RECENT_N] = seconds;
        if (g_st.recent_len < RECENT_N)
            g_st.recent_len++;
        else
            g_st.recent_head = (g_st.recent_head + 1) % RECENT_N;
        break;
    case SC_KONTEXT_TIMEOUT:
        g_st.k_timeouts++;
        g_st.k_failures++; /* failures include timeouts (contract) */
        break;
    case SC_KONTEXT_FAILURE:
    default:
        g_st.k_failures++;
        break;
    }
    touch();
    pthread_mutex_unlock(&g_mu);
}

void sc_metrics_fallback(double now, sc_fallback_reason_t reason)
{
    pthread_mutex_lock(&g_mu);
    g_st.fallbacks++;
    if ((int)reason >= 0 && reason < SC_FB__COUNT)
        g_st.reasons[reason]++;
    metrics_day_t *r = day_row(&g_st, day_of(now));
    if (r)
        r->fallbacks++;
    touch();
    pthread_mutex_unlock(&g_mu);
}

void sc_metrics_pil(double now, bool ok, double seconds)
{
    seconds = clean_seconds(seconds);
    pthread_mutex_lock(&g_mu);
    g_st.p_attempts++;
    if (ok) {
        g_st.p_successes++;
        g_st.p_sum += seconds;
    } else {
        g_st.p_failures++;
    }
    metrics_day_t *r = day_row(&g_st, day_of(now));
    if (r)
        r->pil++;
    touch();
    pthread_mutex_unlock(&g_mu);
}

void sc_metrics_scene(double now, bool ok, double seconds)
{
    (void)seconds;
    pthread_mutex_lock(&g_mu);
    if (ok)
        g_st.scenes_ok++;
    else
        g_st.scenes_failed++;
    metrics_day_t *r = day_row(&g_st, day_of(now));
    if (r)
        r->scenes++;
    touch();
    pthread_mutex_unlock(&g_mu);
}

void sc_metrics_route_error(double now)
{
    (void)now;
    pthread_mutex_lock(&g_mu);
    g_st.route_errors++;
    touch();
    pthread_mutex_unlock(&g_mu);
}

/* ==== Snapshot ==== */

static double ratio(long long num, long long den)
{
    return den > 0 ? (double)num / (double)den : NAN;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile: the smallest value with at least q of the sample at
 * or below it (sorted ascending). NaN for an empty sample. */
static double percentile_sorted(const double *v, int n, double q)
{
    if (n <= 0)
        return NAN;
    int rank = (int)ceil(q * n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

static sc_config_t g_defaults; /* prices before init: the contract's defaults */
static pthread_once_t g_defaults_once = PTHREAD_ONCE_INIT;

static void defaults_init(void)
{
    sc_config_defaults(&g_defaults);
}

static void prices(const sc_config_t *c, double *kontext, double *scene)
{
    if (!c) {
        pthread_once(&g_defaults_once, defaults_init);
        c = &g_defaults;
    }
    *kontext = c->kontext_price_usd;
    *scene = c->scene_price_usd;
}

void sc_metrics_snapshot(double now, const sc_limits_caps_t *caps, sc_metrics_snapshot_t *out)
{
    double recent[RECENT_N];
    int nrecent;
    long long scenes_today, kontext_today_row;
    sc_limits_counts_t counts = {0, 0, -1};
    sc_limits_store_t *store;
    const sc_config_t *cfg;
    double kprice, sprice;

    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g_mu);
    store = g_store;
    cfg = g_cfg;
    pthread_mutex_unlock(&g_mu);
    if (store) /* outside g_mu: the store has its own lock */
        (void)store->count(store, now, &counts);

    pthread_mutex_lock(&g_mu);
    const metrics_state_t *st = &g_st;
    out->k_attempts = st->k_started;
    out->k_successes = st->k_successes;
    out->k_failures = st->k_failures;
    out->k_timeouts = st->k_timeouts;
    out->k_avg_seconds = st->k_successes > 0 ? st->k_sum / (double)st->k_successes : NAN;
    out->p_attempts = st->p_attempts;
    out->p_successes = st->p_successes;
    out->p_failures = st->p_failures;
    out->p_avg_seconds = st->p_successes > 0 ? st->p_sum / (double)st->p_successes : NAN;
    out->total_requests = st->requests;
    out->routed_kontext = st->routed_kontext;
    out->fallbacks = st->fallbacks;
    memcpy(out->fallback_reasons, st->reasons, sizeof out->fallback_reasons);
    out->scenes_ok = st->scenes_ok;
    out->scenes_failed = st->scenes_failed;
    out->route_errors = st->route_errors;
    out->since = st->since;
    nrecent = st->recent_len;
    for (int i = 0; i < nrecent; i++)
        recent[i] = st->recent[(st->recent_head + i) % RECENT_N];
    const metrics_day_t *today = day_peek(st, day_of(now));
    scenes_today = today ? today->scenes : 0;
    kontext_today_row = today ? today->kontext : 0;
    long long scenes_total = st->scenes_ok + st->scenes_failed;
    pthread_mutex_unlock(&g_mu);

    qsort(recent, (size_t)nrecent, sizeof recent[0], cmp_double);
    out->k_p95_seconds = percentile_sorted(recent, nrecent, 0.95);
    out->k_success_rate = ratio(out->k_successes, out->k_attempts);
    out->kontext_success_rate = out->k_success_rate;
    out->p_success_rate = ratio(out->p_successes, out->p_attempts);
    out->fallback_rate = ratio(out->fallbacks, out->routed_kontext);
    /* The store's day counter is what the daily limit counts; without a store
     * (before init) the daily row is the best figure. */
    out->today_generations = counts.today >= 0 ? counts.today : kontext_today_row;
    out->in_flight = counts.in_flight;
    out->last_hour = counts.last_hour;
    if (caps) {
        out->daily_limit = caps->daily_limit;
        out->max_concurrent = caps->max_concurrent;
        out->max_per_hour = caps->max_per_hour;
    } else if (cfg) {
        out->daily_limit = cfg->kontext_daily_limit;
        out->max_concurrent = cfg->max_concurrent_kontext;
        out->max_per_hour = cfg->max_kontext_per_hour;
    }
    prices(cfg, &kprice, &sprice);
    out->cost_today_usd = (double)out->today_generations * kprice + (double)scenes_today * sprice;
    out->cost_total_usd = (double)out->k_attempts * kprice + (double)scenes_total * sprice;
}

/* ==== JSON and Prometheus output ==== */

/* Money with at most 6 decimals and no float noise (0.24, not 0.24000000000000002). */
static int json_money(sc_buf_t *b, double v)
{
    char tmp[64];
    if (!isfinite(v))
        return sc_buf_puts(b, "null");
    snprintf(tmp, sizeof tmp, "%.6f", v);
    char *dot = strchr(tmp, '.');
    if (dot) {
        char *end = tmp + strlen(tmp) - 1;
        while (end > dot && *end == '0')
            *end-- = '\0';
        if (end == dot)
            *end = '\0';
    }
    return sc_buf_puts(b, tmp);
}

int sc_metrics_snapshot_json(const sc_metrics_snapshot_t *s, sc_buf_t *out)
{
    char since[32];
    size_t mark = out->len;
    int rc = 0;

    sc_clock_rfc3339(s->since, since);
    rc |= sc_buf_printf(out,
                        "{\"stats\":{\"kontext\":{\"attempts\":%lld,\"successes\":%lld,"
                        "\"failures\":%lld,\"timeouts\":%lld,\"success_rate\":",
                        s->k_attempts, s->k_successes, s->k_failures, s->k_timeouts);
    rc |= sc_buf_json_num(out, s->k_success_rate);
    rc |= sc_buf_puts(out, ",\"avg_time_seconds\":");
    rc |= sc_buf_json_num(out, s->k_avg_seconds);
    rc |= sc_buf_puts(out, ",\"p95_time_seconds\":");
    rc |= sc_buf_json_num(out, s->k_p95_seconds);
    rc |= sc_buf_printf(out,
                        "},\"pil\":{\"attempts\":%lld,\"successes\":%lld,\"failures\":%lld,"
                        "\"success_rate\":",
                        s->p_attempts, s->p_successes, s->p_failures);
    rc |= sc_buf_json_num(out, s->p_success_rate);
    rc |= sc_buf_puts(out, ",\"avg_time_seconds\":");
    rc |= sc_buf_json_num(out, s->p_avg_seconds);
    rc |= sc_buf_printf(out,
                        "}},\"total_requests\":%lld,\"routed_kontext\":%lld,\"fallbacks\":%lld,"
                        "\"fallback_rate\":",
                        s->total_requests, s->routed_kontext, s->fallbacks);
    rc |= sc_buf_json_num(out, s->fallback_rate);
    rc |= sc_buf_puts(out, ",\"fallback_reasons\":{");
    for (int i = 0; i < SC_FB__COUNT; i++)
        rc |= sc_buf_printf(out, "%s\"%s\":%lld", i ? "," : "", reason_names[i],
                            s->fallback_reasons[i]);
    rc |= sc_buf_puts(out, "},\"kontext_success_rate\":");
    rc |= sc_buf_json_num(out, s->kontext_success_rate);
    rc |= sc_buf_printf(out,
                        ",\"today_generations\":%lld,\"daily_limit\":%d,\"rate_limiter\":{"
                        "\"in_flight\":%d,\"max_concurrent\":%d,\"last_hour\":%d,"
                        "\"max_per_hour\":%d},\"estimated_cost_usd\":{\"today\":",
                        s->today_generations, s->daily_limit, s->in_flight, s->max_concurrent,
                        s->last_hour, s->max_per_hour);
    rc |= json_money(out, s->cost_today_usd);
    rc |= sc_buf_puts(out, ",\"total\":");
    rc |= json_money(out, s->cost_total_usd);
    rc |= sc_buf_printf(out,
                        "},\"scenes\":{\"successes\":%lld,\"failures\":%lld},"
                        "\"route_errors\":%lld,\"since\":\"%s\"}",
                        s->scenes_ok, s->scenes_failed, s->route_errors, since);
    if (rc != 0) {
        out->len = mark; /* leave the buffer as it was */
        if (out->data)
            out->data[mark] = '\0';
        return -1;
    }
    return 0;
}

int sc_metrics_daily_json(double now, int days, int limit, sc_buf_t *out)
{
    if (days < 1 || days > 365)
        return -1;
    metrics_day_t rows[365];
    sc_limits_counts_t counts = {0, 0, -1};
    sc_limits_store_t *store;
    long today = day_of(now);
    size_t mark = out->len;
    int rc = 0;

    pthread_mutex_lock(&g_mu);
    store = g_store;
    for (int i = 0; i < days; i++) {
        long d = today - (days - 1) + i;
        const metrics_day_t *r = day_peek(&g_st, d);
        if (r)
            rows[i] = *r;
        else
            memset(&rows[i], 0, sizeof rows[i]);
        rows[i].day = d;
    }
    pthread_mutex_unlock(&g_mu);
    if (store)
        (void)store->count(store, now, &counts);
    /* Today's Kontext figure is the limiter's own count, so the row, the
     * headline and the daily limit never disagree. */
    if (counts.today >= 0)
        rows[days - 1].kontext = counts.today;
    /* A shared store (Redis) knows the fleet's starts per day. */
    long long fleet[365];
    if (store && store->daily_starts && store->daily_starts(store, now, days, fleet) == 0)
        for (int i = 0; i < days; i++)
            rows[i].kontext = fleet[i];

    rc |= sc_buf_printf(out, "{\"days\":%d,\"limit\":%d,\"today_generations\":%lld,\"daily\":[",
                        days, limit, rows[days - 1].kontext);
    for (int i = 0; i < days; i++) {
        char date[11];
        sc_clock_utc_date((time_t)rows[i].day * 86400, date);
        rc |= sc_buf_printf(out,
                            "%s{\"date\":\"%s\",\"kontext\":%lld,\"pil\":%lld,\"fallbacks\":%lld,"
                            "\"total\":%lld}",
                            i ? "," : "", date, rows[i].kontext, rows[i].pil, rows[i].fallbacks,
                            rows[i].total);
    }
    rc |= sc_buf_puts(out, "]}");
    if (rc != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return -1;
    }
    return 0;
}

/* Prometheus sample value: Go's float syntax, NaN for "no data". */
static int prom_num(sc_buf_t *b, double v)
{
    if (isnan(v))
        return sc_buf_puts(b, "NaN");
    if (isinf(v))
        return sc_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    return sc_buf_printf(b, "%.15g", v);
}

static int prom_head(sc_buf_t *b, const char *name, const char *type, const char *help)
{
    return sc_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One metric with a single unlabelled sample: HELP, TYPE, `name value`. */
static int prom_metric(sc_buf_t *b, const char *name, const char *type, const char *help, double v)
{
    int rc = prom_head(b, name, type, help);
    rc |= sc_buf_printf(b, "%s ", name);
    rc |= prom_num(b, v);
    return rc | sc_buf_puts(b, "\n");
}

int sc_metrics_prometheus(double now, const sc_limits_caps_t *caps, sc_buf_t *out)
{
    sc_metrics_snapshot_t s;
    double ksum, psum;
    size_t mark = out->len;
    int rc = 0;

    sc_metrics_snapshot(now, caps, &s);
    pthread_mutex_lock(&g_mu);
    ksum = g_st.k_sum;
    psum = g_st.p_sum;
    pthread_mutex_unlock(&g_mu);

    rc |= prom_metric(out, "scenecomp_composite_requests_total", "counter",
                      "Composite requests decided (any method).", (double)s.total_requests);
    rc |= prom_metric(out, "scenecomp_composite_routed_kontext_total", "counter",
                      "Composite requests the policy routed to Kontext.", (double)s.routed_kontext);
    rc |=
        prom_metric(out, "scenecomp_kontext_started_total", "counter",
                    "Kontext predictions started (admitted by the limiter).", (double)s.k_attempts);
    rc |= prom_head(out, "scenecomp_kontext_predictions_total", "counter",
                    "Finished Kontext predictions by outcome (failure excludes timeout).");
    rc |= sc_buf_printf(out,
                        "scenecomp_kontext_predictions_total{outcome=\"success\"} %lld\n"
                        "scenecomp_kontext_predictions_total{outcome=\"failure\"} %lld\n"
                        "scenecomp_kontext_predictions_total{outcome=\"timeout\"} %lld\n",
                        s.k_successes, s.k_failures - s.k_timeouts, s.k_timeouts);
    rc |= prom_head(out, "scenecomp_kontext_duration_seconds", "summary",
                    "Duration of successful Kontext composites (p95 over the last 1024).");
    rc |= sc_buf_puts(out, "scenecomp_kontext_duration_seconds{quantile=\"0.95\"} ");
    rc |= prom_num(out, s.k_p95_seconds);
    rc |= sc_buf_puts(out, "\nscenecomp_kontext_duration_seconds_sum ");
    rc |= prom_num(out, ksum);
    rc |= sc_buf_printf(out, "\nscenecomp_kontext_duration_seconds_count %lld\n", s.k_successes);
    rc |= prom_head(out, "scenecomp_pil_composites_total", "counter",
                    "PIL composites by outcome (fallbacks included).");
    rc |= sc_buf_printf(out,
                        "scenecomp_pil_composites_total{outcome=\"success\"} %lld\n"
                        "scenecomp_pil_composites_total{outcome=\"failure\"} %lld\n",
                        s.p_successes, s.p_failures);
    rc |= prom_head(out, "scenecomp_pil_duration_seconds", "summary",
                    "Duration of successful PIL composites.");
    rc |= sc_buf_puts(out, "scenecomp_pil_duration_seconds_sum ");
    rc |= prom_num(out, psum);
    rc |= sc_buf_printf(out, "\nscenecomp_pil_duration_seconds_count %lld\n", s.p_successes);
    rc |= prom_head(out, "scenecomp_fallbacks_total", "counter",
                    "Requests routed to Kontext that finished with PIL, by reason.");
    for (int i = 0; i < SC_FB__COUNT; i++)
        rc |= sc_buf_printf(out, "scenecomp_fallbacks_total{reason=\"%s\"} %lld\n", reason_names[i],
                            s.fallback_reasons[i]);
    rc |= prom_head(out, "scenecomp_scenes_total", "counter", "Scene generations by outcome.");
    rc |= sc_buf_printf(out,
                        "scenecomp_scenes_total{outcome=\"success\"} %lld\n"
                        "scenecomp_scenes_total{outcome=\"failure\"} %lld\n",
                        s.scenes_ok, s.scenes_failed);
    rc |= prom_metric(out, "scenecomp_route_errors_total", "counter",
                      "Runtime errors in the policy route function (request sent to PIL).",
                      (double)s.route_errors);
    rc |= prom_metric(out, "scenecomp_kontext_in_flight", "gauge", "Kontext predictions in flight.",
                      (double)s.in_flight);
    rc |= prom_metric(out, "scenecomp_kontext_max_concurrent", "gauge",
                      "Effective MAX_CONCURRENT_KONTEXT.", (double)s.max_concurrent);
    rc |= prom_metric(out, "scenecomp_kontext_last_hour", "gauge",
                      "Kontext predictions started in the last 3600 seconds.", (double)s.last_hour);
    rc |= prom_metric(out, "scenecomp_kontext_max_per_hour", "gauge",
                      "Effective MAX_KONTEXT_PER_HOUR.", (double)s.max_per_hour);
    rc |= prom_metric(out, "scenecomp_today_generations", "gauge",
                      "Kontext predictions started today (UTC), as the daily limit counts them.",
                      (double)s.today_generations);
    rc |= prom_metric(out, "scenecomp_daily_limit", "gauge",
                      "Effective KONTEXT_DAILY_GENERATION_LIMIT.", (double)s.daily_limit);
    rc |= prom_metric(out, "scenecomp_kontext_success_ratio", "gauge",
                      "Kontext successes / predictions started (NaN before the first start).",
                      (double)s.kontext_success_rate);
    rc |= prom_metric(out, "scenecomp_fallback_ratio", "gauge",
                      "Fallbacks / requests routed to Kontext (NaN before the first one).",
                      (double)s.fallback_rate);
    rc |= prom_metric(out, "scenecomp_estimated_cost_usd_total", "counter",
                      "Estimated Replicate spend since the last reset (upper bound).",
                      (double)s.cost_total_usd);
    rc |= prom_metric(out, "scenecomp_estimated_cost_usd_today", "gauge",
                      "Estimated Replicate spend today (UTC, upper bound).",
                      (double)s.cost_today_usd);
    rc |= prom_metric(out, "scenecomp_metrics_since_timestamp_seconds", "gauge",
                      "Wall time the counters start from (first start or last reset).",
                      (double)s.since);
    if (rc != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return -1;
    }
    return 0;
}

/* ==== The metrics file ==== */

/* Builds the file's JSON from a private copy of the state plus the limiter's
 * export (may be NULL when the store persists itself). Caller frees. */
static char *state_to_json(const metrics_state_t *st, cJSON *limiter, double now)
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
        if (!cJSON_AddNumberToObject(reasons, reason_names[i], (double)st->reasons[i]))
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
    long today = day_of(now);
    for (long d = today - (DAY_SLOTS - 1); d <= today; d++) {
        const metrics_day_t *r = day_peek(st, d);
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
    text = cJSON_Print(root);
done:
    cJSON_Delete(limiter);
    cJSON_Delete(root);
    return text;
}

/* Writes the file from a copy of the state. Holds g_io_mu for the whole save
 * so saves land in order; g_mu only for the copy. On failure the state stays
 * dirty so the writer retries. Returns 0 or -1. */
static int save_now(double now)
{
    metrics_state_t *copy = malloc(sizeof *copy);
    sc_limits_store_t *store;
    cJSON *limiter = NULL;
    char *text = NULL;
    int rc = -1;

    pthread_mutex_lock(&g_io_mu);
    if (!copy || !g_path[0])
        goto done;
    pthread_mutex_lock(&g_mu);
    *copy = g_st;
    store = g_store;
    g_dirty = 0;
    pthread_mutex_unlock(&g_mu);
    if (store && store->export_state) {
        limiter = store->export_state(store, now);
        if (!limiter)
            goto fail_dirty;
    }
    text = state_to_json(copy, limiter, now); /* takes limiter */
    if (!text)
        goto fail_dirty;
    if (sc_fs_write_atomic(g_path, text, strlen(text)) != 0) {
        if (!g_write_failing)
            sc_log_warn("[Metrics] cannot write %s: %s (will retry)", g_path, strerror(errno));
        g_write_failing = 1;
        goto fail_dirty;
    }
    if (g_write_failing)
        sc_log_info("[Metrics] %s written again", g_path);
    g_write_failing = 0;
    rc = 0;
    goto done;
fail_dirty:
    pthread_mutex_lock(&g_mu);
    g_dirty = 1;
    pthread_mutex_unlock(&g_mu);
done:
    pthread_mutex_unlock(&g_io_mu);
    free(text);
    free(copy);
    return rc;
}

int sc_metrics_flush(void)
{
    return save_now(sc_clock_wall());
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

    state_zero(st, 0);
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
    /* A reason newer than the file (limiter_unavailable on) counts 0. */
    for (int i = 0; i < SC_FB__COUNT; i++)
        if ((i < SC_FB_LIMITER_UNAVAILABLE ||
             cJSON_GetObjectItemCaseSensitive(reasons, reason_names[i])) &&
            get_count(reasons, reason_names[i], &st->reasons[i]))
            return -1;

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
        metrics_day_t *slot = day_row(st, row.day); /* an older duplicate slot loses */
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
    if (g_store && g_store->import_state) {
        const cJSON *lim = cJSON_GetObjectItemCaseSensitive(root, "limiter");
        if (!cJSON_IsObject(lim) || g_store->import_state(g_store, lim, now) != 0) {
            move_aside("bad limiter state");
            goto done;
        }
    }
    pthread_mutex_lock(&g_mu);
    g_st = *st;
    pthread_mutex_unlock(&g_mu);
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
    (void)arg;
    struct timespec ts;
    pthread_mutex_lock(&g_mu);
    while (!g_stop) {
        if (!g_dirty) {
            pthread_cond_wait(&g_cond, &g_mu);
            continue;
        }
        deadline_in(&ts, DEBOUNCE_SECONDS);
        while (!g_stop && pthread_cond_timedwait(&g_cond, &g_mu, &ts) != ETIMEDOUT)
            ;
        if (g_stop)
            break;
        pthread_mutex_unlock(&g_mu);
        int rc = save_now(sc_clock_wall());
        pthread_mutex_lock(&g_mu);
        if (rc != 0) {
            deadline_in(&ts, RETRY_SECONDS);
            while (!g_stop && pthread_cond_timedwait(&g_cond, &g_mu, &ts) != ETIMEDOUT)
                ;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

int sc_metrics_init(const sc_config_t *cfg, sc_limits_store_t *store)
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
    pthread_mutex_lock(&g_mu);
    state_zero(&g_st, now);
    g_cfg = cfg;
    g_store = store;
    g_dirty = 0;
    g_stop = 0;
    g_write_failing = 0;
    pthread_mutex_unlock(&g_mu);
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
    pthread_mutex_lock(&g_mu);
    g_running = 1;
    if (g_dirty) /* an event raced with init: let the writer see it */
        pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_mu);
    return 0;
fail:
    sc_log_error("[Metrics] cannot start the metrics writer thread");
    pthread_mutex_lock(&g_mu);
    g_cfg = NULL;
    g_store = NULL;
    pthread_mutex_unlock(&g_mu);
    pthread_mutex_lock(&g_io_mu);
    g_path[0] = '\0';
    pthread_mutex_unlock(&g_io_mu);
    return -1;
}

void sc_metrics_shutdown(void)
{
    pthread_mutex_lock(&g_mu);
    int running = g_running;
    g_stop = 1;
    if (running)
        pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_mu);
    if (!running)
        return;
    pthread_join(g_thread, NULL);
    save_now(sc_clock_wall());
    pthread_mutex_lock(&g_mu);
    g_running = 0;
    g_cfg = NULL;
    g_store = NULL;
    pthread_mutex_unlock(&g_mu);
    pthread_cond_destroy(&g_cond);
    pthread_mutex_lock(&g_io_mu);
    g_path[0] = '\0';
    pthread_mutex_unlock(&g_io_mu);
}

void sc_metrics_reset(double now)
{
    sc_limits_store_t *store;
    pthread_mutex_lock(&g_mu);
    state_zero(&g_st, now);
    store = g_store;
    touch();
    pthread_mutex_unlock(&g_mu);
    if (store)
        store->reset(store);
    save_now(now); /* a no-op before init */
    sc_log_info("[Metrics] counters reset");
}
