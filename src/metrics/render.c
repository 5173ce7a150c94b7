/* Metrics output: the JSON of /api/admin/metrics/composite and
 * /api/admin/metrics/daily-generations, and the Prometheus text of /metrics.
 * Reads the counters through a snapshot (or briefly under the mutex) and
 * formats outside any lock. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "image/codec.h"
#include "image/pcache.h"
#include "metrics/metrics_internal.h"
#include "replicate/breaker.h"

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
        rc |=
            sc_buf_printf(out, "%s\"%s\":%lld", i ? "," : "",
                          sc_fallback_reason_name((sc_fallback_reason_t)i), s->fallback_reasons[i]);
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
                        "},\"scenes\":{\"successes\":%lld,\"failures\":%lld,"
                        "\"in_flight\":%d,\"max_concurrent\":%d,\"last_hour\":%d,"
                        "\"max_per_hour\":%d,\"today\":%lld,\"daily_limit\":%d},"
                        "\"route_errors\":%lld,\"since\":\"%s\"",
                        s->scenes_ok, s->scenes_failed, s->scene_in_flight, s->scene_max_concurrent,
                        s->scene_last_hour, s->scene_max_per_hour, s->scene_today,
                        s->scene_daily_limit, s->route_errors, since);
    /* issue 11 */
    char bsince[32];
    sc_clock_rfc3339(s->breaker_since, bsince);
    rc |= sc_buf_printf(out, ",\"breaker\":{\"state\":\"%s\",\"since\":\"%s\",\"failure_rate\":",
                        sc_breaker_state_name((sc_breaker_state_t)s->breaker_state), bsince);
    rc |= sc_buf_json_num(out, s->breaker_failure_rate);
    rc |= sc_buf_printf(out, ",\"calls\":%d}}", s->breaker_calls);
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
    long today = sc_metrics__day_of(now);
    size_t mark = out->len;
    int rc = 0;

    pthread_mutex_lock(&sc_metrics__mu);
    store = sc_metrics__store;
    for (int i = 0; i < days; i++) {
        long d = today - (days - 1) + i;
        const metrics_day_t *r = sc_metrics__day_peek(&sc_metrics__st, d);
        if (r)
            rows[i] = *r;
        else
            memset(&rows[i], 0, sizeof rows[i]);
        rows[i].day = d;
    }
    pthread_mutex_unlock(&sc_metrics__mu);
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
    pthread_mutex_lock(&sc_metrics__mu);
    ksum = sc_metrics__st.k_sum;
    psum = sc_metrics__st.p_sum;
    pthread_mutex_unlock(&sc_metrics__mu);

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
        rc |=
            sc_buf_printf(out, "scenecomp_fallbacks_total{reason=\"%s\"} %lld\n",
                          sc_fallback_reason_name((sc_fallback_reason_t)i), s.fallback_reasons[i]);
    rc |= prom_head(out, "scenecomp_scenes_total", "counter", "Scene generations by outcome.");
    rc |= sc_buf_printf(out,
                        "scenecomp_scenes_total{outcome=\"success\"} %lld\n"
                        "scenecomp_scenes_total{outcome=\"failure\"} %lld\n",
                        s.scenes_ok, s.scenes_failed);
    rc |= prom_metric(out, "scenecomp_scene_in_flight", "gauge", "Scene predictions in flight.",
                      (double)s.scene_in_flight);
    rc |= prom_metric(out, "scenecomp_scene_last_hour", "gauge",
                      "Scene predictions started in the last 3600 seconds.",
                      (double)s.scene_last_hour);
    rc |= prom_metric(out, "scenecomp_scene_today", "gauge",
                      "Scene predictions started today (UTC), as SCENE_DAILY_LIMIT counts them.",
                      (double)s.scene_today);
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
    rc |= prom_metric(out, "scenecomp_breaker_state", "gauge", /* issue 11 */
                      "Kontext circuit breaker: 0 closed, 1 open, 2 half-open.",
                      (double)s.breaker_state);
    rc |= prom_metric(out, "scenecomp_metrics_since_timestamp_seconds", "gauge",
                      "Wall time the counters start from (first start or last reset).",
                      (double)s.since);
    /* the product cache keeps its own counters (process lifetime, not persisted) */
    sc_pcache_stats_t pc;
    sc_pcache_stats(&pc);
    rc |= prom_metric(out, "scenecomp_product_cache_hits_total", "counter",
                      "PIL composites whose keyed + resized product came from the cache.",
                      (double)pc.hits);
    rc |= prom_metric(out, "scenecomp_product_cache_misses_total", "counter",
                      "Product cache lookups that missed (cache on, no mask).", (double)pc.misses);
    rc |= prom_metric(out, "scenecomp_product_cache_bytes", "gauge",
                      "Bytes held by the product cache (bound: PRODUCT_CACHE_BYTES).",
                      (double)pc.bytes);
    rc |= prom_metric(out, "scenecomp_image_decodes_total", "counter",
                      "Images decoded to pixels (uploads for PIL, masks, Kontext outputs).",
                      (double)sc_codec_decodes());
    if (rc != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return -1;
    }
    return 0;
}