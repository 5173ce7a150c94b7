/* Metrics counters: the shared state, the events that change it and the
 * snapshot that reads it. An event takes the mutex for a handful of additions
 * and marks the state dirty for the writer (persist.c). Snapshots copy under
 * the lock and compute rates, averages and the p95 afterwards.
 *
 * Daily rows live in a ring indexed by UTC day number modulo DAY_SLOTS, so the
 * last DAY_SLOTS (>= 400) days are kept with no allocation on the hot path. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "metrics/metrics_internal.h"
#include "replicate/breaker.h"

pthread_mutex_t sc_metrics__mu = PTHREAD_MUTEX_INITIALIZER;
metrics_state_t sc_metrics__st;
const sc_config_t *sc_metrics__cfg;
sc_limits_store_t *sc_metrics__store;
sc_limits_store_t *sc_metrics__scene_store;

/* ==== State helpers (caller holds sc_metrics__mu unless the state is private) ==== */

long sc_metrics__day_of(double now)
{
    return sc_clock_utc_day((time_t)floor(now));
}

static int slot_of(long day)
{
    long s = day % DAY_SLOTS;
    return (int)(s < 0 ? s + DAY_SLOTS : s);
}

metrics_day_t *sc_metrics__day_row(metrics_state_t *st, long day)
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

const metrics_day_t *sc_metrics__day_peek(const metrics_state_t *st, long day)
{
    const metrics_day_t *r = &st->days[slot_of(day)];
    return (r->used && r->day == day) ? r : NULL;
}

void sc_metrics__state_zero(metrics_state_t *st, double since)
{
    memset(st, 0, sizeof *st);
    st->since = since;
}

static double clean_seconds(double s)
{
    return (isfinite(s) && s > 0) ? s : 0.0;
}

/* ==== Events ==== */

void sc_metrics_request(double now, bool routed_kontext)
{
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__st.requests++;
    if (routed_kontext)
        sc_metrics__st.routed_kontext++;
    metrics_day_t *r = sc_metrics__day_row(&sc_metrics__st, sc_metrics__day_of(now));
    if (r)
        r->total++;
    sc_metrics__touch();
    pthread_mutex_unlock(&sc_metrics__mu);
}

void sc_metrics_kontext_started(double now)
{
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__st.k_started++;
    metrics_day_t *r = sc_metrics__day_row(&sc_metrics__st, sc_metrics__day_of(now));
    if (r)
        r->kontext++;
    sc_metrics__touch();
    pthread_mutex_unlock(&sc_metrics__mu);
}

void sc_metrics_kontext_finished(double now, sc_kontext_outcome_t o, double seconds)
{
    (void)now;
    seconds = clean_seconds(seconds);
    pthread_mutex_lock(&sc_metrics__mu);
    switch (o) {
    case SC_KONTEXT_SUCCESS:
        sc_metrics__st.k_successes++;
        sc_metrics__st.k_sum += seconds;
        sc_metrics__st.recent[(sc_metrics__st.recent_head + sc_metrics__st.recent_len) % RECENT_N] =
            seconds;
        if (sc_metrics__st.recent_len < RECENT_N)
            sc_metrics__st.recent_len++;
        else
            sc_metrics__st.recent_head = (sc_metrics__st.recent_head + 1) % RECENT_N;
        break;
    case SC_KONTEXT_TIMEOUT:
        sc_metrics__st.k_timeouts++;
        sc_metrics__st.k_failures++; /* failures include timeouts (contract) */
        break;
    case SC_KONTEXT_FAILURE:
    default:
        sc_metrics__st.k_failures++;
        break;
    }
    sc_metrics__touch();
    pthread_mutex_unlock(&sc_metrics__mu);
}

void sc_metrics_fallback(double now, sc_fallback_reason_t reason)
{
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__st.fallbacks++;
    if ((int)reason >= 0 && reason < SC_FB__COUNT)
        sc_metrics__st.reasons[reason]++;
    metrics_day_t *r = sc_metrics__day_row(&sc_metrics__st, sc_metrics__day_of(now));
    if (r)
        r->fallbacks++;
    sc_metrics__touch();
    pthread_mutex_unlock(&sc_metrics__mu);
}

void sc_metrics_pil(double now, bool ok, double seconds)
{
    seconds = clean_seconds(seconds);
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__st.p_attempts++;
    if (ok) {
        sc_metrics__st.p_successes++;
        sc_metrics__st.p_sum += seconds;
    } else {
        sc_metrics__st.p_failures++;
    }
    metrics_day_t *r = sc_metrics__day_row(&sc_metrics__st, sc_metrics__day_of(now));
    if (r)
        r->pil++;
    sc_metrics__touch();
    pthread_mutex_unlock(&sc_metrics__mu);
}

void sc_metrics_scene(double now, bool ok, double seconds)
{
    (void)seconds;
    pthread_mutex_lock(&sc_metrics__mu);
    if (ok)
        sc_metrics__st.scenes_ok++;
    else
        sc_metrics__st.scenes_failed++;
    metrics_day_t *r = sc_metrics__day_row(&sc_metrics__st, sc_metrics__day_of(now));
    if (r)
        r->scenes++;
    sc_metrics__touch();
    pthread_mutex_unlock(&sc_metrics__mu);
}

void sc_metrics_route_error(double now)
{
    (void)now;
    pthread_mutex_lock(&sc_metrics__mu);
    sc_metrics__st.route_errors++;
    sc_metrics__touch();
    pthread_mutex_unlock(&sc_metrics__mu);
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
    sc_limits_counts_t counts = {0, 0, -1}, scounts = {0, 0, 0};
    sc_limits_store_t *store, *scene_store;
    const sc_config_t *cfg;
    double kprice, sprice;

    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&sc_metrics__mu);
    store = sc_metrics__store;
    scene_store = sc_metrics__scene_store;
    cfg = sc_metrics__cfg;
    pthread_mutex_unlock(&sc_metrics__mu);
    if (store) /* outside sc_metrics__mu: the store has its own lock */
        (void)store->count(store, now, &counts);
    if (scene_store)
        (void)scene_store->count(scene_store, now, &scounts);

    pthread_mutex_lock(&sc_metrics__mu);
    const metrics_state_t *st = &sc_metrics__st;
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
    const metrics_day_t *today = sc_metrics__day_peek(st, sc_metrics__day_of(now));
    scenes_today = today ? today->scenes : 0;
    kontext_today_row = today ? today->kontext : 0;
    long long scenes_total = st->scenes_ok + st->scenes_failed;
    pthread_mutex_unlock(&sc_metrics__mu);

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
    out->scene_in_flight = scounts.in_flight;
    out->scene_last_hour = scounts.last_hour;
    out->scene_today = scounts.today;
    if (cfg) {
        out->scene_max_concurrent = cfg->scene_max_concurrent;
        out->scene_max_per_hour = cfg->scene_max_per_hour;
        out->scene_daily_limit = cfg->scene_daily_limit;
    }
    prices(cfg, &kprice, &sprice);
    out->cost_today_usd = (double)out->today_generations * kprice + (double)scenes_today * sprice;
    out->cost_total_usd = (double)out->k_attempts * kprice + (double)scenes_total * sprice;
    /* issue 11 */
    sc_breaker_snapshot_t bs;
    sc_breaker_snapshot(sc_breaker_global(), now, &bs);
    out->breaker_state = (int)bs.state;
    out->breaker_since = bs.since;
    out->breaker_failure_rate = bs.failure_rate;
    out->breaker_calls = bs.calls;
}