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
#include "core/spool.h"
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

/* `,"key":v`, v as sc_buf_json_num writes it (null for NaN). */
static int json_key_num(sc_buf_t *b, const char *key, double v)
{
    int rc = sc_buf_printf(b, ",\"%s\":", key);
    return rc | sc_buf_json_num(b, v);
}

/* The end of a writer: on a failed write (rc != 0) the buffer is cut back to
 * mark, as it was, and the answer is -1. */
static int finish(sc_buf_t *out, size_t mark, int rc)
{
    if (rc == 0)
        return 0;
    out->len = mark;
    if (out->data)
        out->data[mark] = '\0';
    return -1;
}

int sc_metrics_snapshot_json(const sc_metrics_snapshot_t *s, sc_buf_t *out)
{
    char since[32];
    size_t mark = out->len;
    int rc = 0;

    sc_clock_rfc3339(s->since, since);
    rc |= sc_buf_printf(out,
                        "{\"stats\":{\"kontext\":{\"attempts\":%lld,\"successes\":%lld,"
                        "\"failures\":%lld,\"timeouts\":%lld",
                        s->k_attempts, s->k_successes, s->k_failures, s->k_timeouts);
    rc |= json_key_num(out, "success_rate", s->k_success_rate);
    rc |= json_key_num(out, "avg_time_seconds", s->k_avg_seconds);
    rc |= json_key_num(out, "p95_time_seconds", s->k_p95_seconds);
    rc |= sc_buf_printf(out, "},\"pil\":{\"attempts\":%lld,\"successes\":%lld,\"failures\":%lld",
                        s->p_attempts, s->p_successes, s->p_failures);
    rc |= json_key_num(out, "success_rate", s->p_success_rate);
    rc |= json_key_num(out, "avg_time_seconds", s->p_avg_seconds);
    rc |=
        sc_buf_printf(out, "}},\"total_requests\":%lld,\"routed_kontext\":%lld,\"fallbacks\":%lld",
                      s->total_requests, s->routed_kontext, s->fallbacks);
    rc |= json_key_num(out, "fallback_rate", s->fallback_rate);
    rc |= sc_buf_puts(out, ",\"fallback_reasons\":{");
    for (int i = 0; i < SC_FB__COUNT; i++)
        rc |=
            sc_buf_printf(out, "%s\"%s\":%lld", i ? "," : "",
                          sc_fallback_reason_name((sc_fallback_reason_t)i), s->fallback_reasons[i]);
    rc |= sc_buf_puts(out, "}");
    rc |= json_key_num(out, "kontext_success_rate", s->kontext_success_rate);
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
    rc |= sc_buf_printf(out, ",\"breaker\":{\"state\":\"%s\",\"since\":\"%s\"",
                        sc_breaker_state_name((sc_breaker_state_t)s->breaker_state), bsince);
    rc |= json_key_num(out, "failure_rate", s->breaker_failure_rate);
    rc |= sc_buf_printf(out, ",\"calls\":%d}}", s->breaker_calls);
    return finish(out, mark, rc);
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
    return finish(out, mark, rc);
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

/* Metrics with a single unlabelled sample each: HELP, TYPE, `name value`. */
typedef struct prom_row {
    const char *name, *type, *help;
    double v;
} prom_row_t;

static int prom_metrics(sc_buf_t *b, const prom_row_t *rows, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        rc |= prom_head(b, rows[i].name, rows[i].type, rows[i].help);
        rc |= sc_buf_printf(b, "%s ", rows[i].name);
        rc |= prom_num(b, rows[i].v);
        rc |= sc_buf_puts(b, "\n");
    }
    return rc;
}

/* A counter with one sample per value of one label: `name{label="value"} n`. */
static int prom_labelled(sc_buf_t *b, const char *name, const char *help, const char *label,
                         const char *const values[], const long long counts[], int n)
{
    int rc = prom_head(b, name, "counter", help);
    for (int i = 0; i < n; i++)
        rc |= sc_buf_printf(b, "%s{%s=\"%s\"} %lld\n", name, label, values[i], counts[i]);
    return rc;
}

/* A summary: the p95 quantile when p95 is given, then _sum and _count. */
static int prom_summary(sc_buf_t *b, const char *name, const char *help, const double *p95,
                        double sum, long long count)
{
    int rc = prom_head(b, name, "summary", help);
    if (p95) {
        rc |= sc_buf_printf(b, "%s{quantile=\"0.95\"} ", name);
        rc |= prom_num(b, *p95);
        rc |= sc_buf_puts(b, "\n");
    }
    rc |= sc_buf_printf(b, "%s_sum ", name);
    rc |= prom_num(b, sum);
    return rc | sc_buf_printf(b, "\n%s_count %lld\n", name, count);
}

int sc_metrics_prometheus(double now, const sc_limits_caps_t *caps, sc_buf_t *out)
{
    static const char *const outcomes[] = {"success", "failure", "timeout"};
    sc_metrics_snapshot_t s;
    sc_pcache_stats_t pc;
    sc_spool_stats_t sp;
    double ksum, psum;
    size_t mark = out->len;
    int rc = 0;

    sc_metrics_snapshot(now, caps, &s);
    pthread_mutex_lock(&sc_metrics__mu);
    ksum = sc_metrics__st.k_sum;
    psum = sc_metrics__st.p_sum;
    pthread_mutex_unlock(&sc_metrics__mu);
    /* the product cache keeps its own counters (process lifetime, not persisted) */
    sc_pcache_stats(&pc);
    sc_spool_stats(&sp);
    const prom_row_t requests[] = {
        {"scenecomp_composite_requests_total", "counter",
         "Composite requests decided (any method).", (double)s.total_requests},
        {"scenecomp_composite_routed_kontext_total", "counter",
         "Composite requests the policy routed to Kontext.", (double)s.routed_kontext},
        {"scenecomp_kontext_started_total", "counter",
         "Kontext predictions started (admitted by the limiter).", (double)s.k_attempts},
    };
    rc |= prom_metrics(out, requests, sizeof requests / sizeof requests[0]);
    const long long kontext[] = {s.k_successes, s.k_failures - s.k_timeouts, s.k_timeouts};
    rc |= prom_labelled(out, "scenecomp_kontext_predictions_total",
                        "Finished Kontext predictions by outcome (failure excludes timeout).",
                        "outcome", outcomes, kontext, 3);
    rc |= prom_summary(out, "scenecomp_kontext_duration_seconds",
                       "Duration of successful Kontext composites (p95 over the last 1024).",
                       &s.k_p95_seconds, ksum, s.k_successes);
    const long long pil[] = {s.p_successes, s.p_failures};
    rc |= prom_labelled(out, "scenecomp_pil_composites_total",
                        "PIL composites by outcome (fallbacks included).", "outcome", outcomes, pil,
                        2);
    rc |= prom_summary(out, "scenecomp_pil_duration_seconds",
                       "Duration of successful PIL composites.", NULL, psum, s.p_successes);
    const char *reasons[SC_FB__COUNT];
    for (int i = 0; i < SC_FB__COUNT; i++)
        reasons[i] = sc_fallback_reason_name((sc_fallback_reason_t)i);
    rc |= prom_labelled(out, "scenecomp_fallbacks_total",
                        "Requests routed to Kontext that finished with PIL, by reason.", "reason",
                        reasons, s.fallback_reasons, SC_FB__COUNT);
    const long long scenes[] = {s.scenes_ok, s.scenes_failed};
    rc |= prom_labelled(out, "scenecomp_scenes_total", "Scene generations by outcome.", "outcome",
                        outcomes, scenes, 2);
    const prom_row_t rest[] = {
        {"scenecomp_scene_in_flight", "gauge", "Scene predictions in flight.",
         (double)s.scene_in_flight},
        {"scenecomp_scene_last_hour", "gauge",
         "Scene predictions started in the last 3600 seconds.", (double)s.scene_last_hour},
        {"scenecomp_scene_today", "gauge",
         "Scene predictions started today (UTC), as SCENE_DAILY_LIMIT counts them.",
         (double)s.scene_today},
        {"scenecomp_route_errors_total", "counter",
         "Runtime errors in the policy route function (request sent to PIL).",
         (double)s.route_errors},
        {"scenecomp_kontext_in_flight", "gauge", "Kontext predictions in flight.",
         (double)s.in_flight},
        {"scenecomp_kontext_max_concurrent", "gauge", "Effective MAX_CONCURRENT_KONTEXT.",
         (double)s.max_concurrent},
        {"scenecomp_kontext_last_hour", "gauge",
         "Kontext predictions started in the last 3600 seconds.", (double)s.last_hour},
        {"scenecomp_kontext_max_per_hour", "gauge", "Effective MAX_KONTEXT_PER_HOUR.",
         (double)s.max_per_hour},
        {"scenecomp_today_generations", "gauge",
         "Kontext predictions started today (UTC), as the daily limit counts them.",
         (double)s.today_generations},
        {"scenecomp_daily_limit", "gauge", "Effective KONTEXT_DAILY_GENERATION_LIMIT.",
         (double)s.daily_limit},
        {"scenecomp_kontext_success_ratio", "gauge",
         "Kontext successes / predictions started (NaN before the first start).",
         (double)s.kontext_success_rate},
        {"scenecomp_fallback_ratio", "gauge",
         "Fallbacks / requests routed to Kontext (NaN before the first one).",
         (double)s.fallback_rate},
        {"scenecomp_estimated_cost_usd_total", "counter",
         "Estimated Replicate spend since the last reset (upper bound).", (double)s.cost_total_usd},
        {"scenecomp_estimated_cost_usd_today", "gauge",
         "Estimated Replicate spend today (UTC, upper bound).", (double)s.cost_today_usd},
        {"scenecomp_breaker_state", "gauge", /* issue 11 */
         "Kontext circuit breaker: 0 closed, 1 open, 2 half-open.", (double)s.breaker_state},
        {"scenecomp_metrics_since_timestamp_seconds", "gauge",
         "Wall time the counters start from (first start or last reset).", (double)s.since},
        {"scenecomp_product_cache_hits_total", "counter",
         "PIL composites whose keyed + resized product came from the cache.", (double)pc.hits},
        {"scenecomp_product_cache_misses_total", "counter",
         "Product cache lookups that missed (cache on, no mask).", (double)pc.misses},
        {"scenecomp_product_cache_bytes", "gauge",
         "Bytes held by the product cache (bound: PRODUCT_CACHE_BYTES).", (double)pc.bytes},
        {"scenecomp_image_decodes_total", "counter",
         "Images decoded to pixels (uploads for PIL, masks, Kontext outputs).",
         (double)sc_codec_decodes()},
        /* issue 11, memory: uploads over UPLOAD_SPOOL_BYTES (core/spool.h) */
        {"scenecomp_upload_spooled_total", "counter",
         "Uploaded files moved to a spool file (over UPLOAD_SPOOL_BYTES).",
         (double)sp.spooled_total},
        {"scenecomp_upload_spool_files", "gauge", "Spool files open now (deleted, held by fd).",
         (double)sp.files},
        {"scenecomp_upload_spool_bytes", "gauge", "Bytes in the open spool files.",
         (double)sp.bytes},
        {"scenecomp_upload_spool_errors_total", "counter",
         "Spool files that could not be created or written (the upload got a 503).",
         (double)sp.errors_total},
    };
    rc |= prom_metrics(out, rest, sizeof rest / sizeof rest[0]);
    return finish(out, mark, rc);
}
