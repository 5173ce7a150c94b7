/* Composite metrics: counters, Kontext/PIL durations (average, p95), fallbacks by
 * reason, daily rows, estimated cost; JSON snapshots for the admin endpoints,
 * Prometheus text, and persistence to LOGS_DIR/composite_metrics.json (written
 * atomically by a background thread at most ~1 s after a change; the file also
 * carries the limiters' hour windows and day counters, Kontext's and the scenes',
 * so limits survive restarts).
 * A corrupt file is moved aside (composite_metrics.json.corrupt-<ts>) with a
 * warning and the service starts fresh. Thread-safe; no Lua. */
#ifndef SCENECOMP_METRICS_METRICS_H
#define SCENECOMP_METRICS_METRICS_H

#include <stdbool.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/durable.h"
#include "limits/store.h"
#include "metrics/reasons.h"

typedef enum {
    SC_KONTEXT_SUCCESS = 0,
    SC_KONTEXT_FAILURE,
    SC_KONTEXT_TIMEOUT
} sc_kontext_outcome_t;

/* Loads the file (imports the limiter state into store), starts the writer
 * thread. cfg and store must outlive metrics. Returns 0 or -1 (cannot create
 * LOGS_DIR). */
int sc_metrics_init(const sc_config_t *cfg, sc_limits_store_t *store);
/* As sc_metrics_init, and the scene limiter's store (may be NULL) is persisted
 * (key "scene_limiter"), reset and shown the same way. */
int sc_metrics_init_with_scenes(const sc_config_t *cfg, sc_limits_store_t *store,
                                sc_limits_store_t *scene_store);
/* Flushes synchronously and stops the writer thread. */
void sc_metrics_shutdown(void);

/* Events. `now` is wall time (used for the UTC day). */
void sc_metrics_request(double now, bool routed_kontext); /* one composite request decided */
void sc_metrics_kontext_started(double now);              /* admitted by the limiter */
void sc_metrics_kontext_finished(double now, sc_kontext_outcome_t o, double seconds);
void sc_metrics_fallback(double now, sc_fallback_reason_t r);
void sc_metrics_pil(double now, bool ok, double seconds);
void sc_metrics_scene(double now, bool ok, double seconds);
void sc_metrics_route_error(double now);

/* Everything /api/admin/metrics/composite shows. Rates and times whose
 * denominator is 0 are NaN (JSON null, Lua nil). */
typedef struct sc_metrics_snapshot {
    long long k_attempts, k_successes, k_failures, k_timeouts;
    double k_success_rate, k_avg_seconds, k_p95_seconds;
    long long p_attempts, p_successes, p_failures;
    double p_success_rate, p_avg_seconds;
    long long total_requests, routed_kontext, fallbacks;
    double fallback_rate;
    long long fallback_reasons[SC_FB__COUNT];
    double kontext_success_rate;
    long long today_generations;
    int daily_limit;
    int in_flight, max_concurrent, last_hour, max_per_hour;
    double cost_today_usd, cost_total_usd;
    long long scenes_ok, scenes_failed, route_errors;
    /* The scene limiter (zero without one) and SCENE_* caps (zero before init). */
    int scene_in_flight, scene_last_hour;
    long long scene_today;
    int scene_max_concurrent, scene_max_per_hour, scene_daily_limit;
    double since; /* wall time of the first record or last reset */
    /* issue 11: the process-wide circuit breaker (sc_breaker_global) at now */
    int breaker_state;           /* sc_breaker_state_t: 0 closed, 1 open, 2 half_open */
    double breaker_since;        /* wall time of its last state change */
    double breaker_failure_rate; /* failed share in its window, NaN without calls */
    int breaker_calls;           /* finished predictions in its window */
} sc_metrics_snapshot_t;

/* caps: the effective limits to show (policy may override env). */
void sc_metrics_snapshot(double now, const sc_limits_caps_t *caps, sc_metrics_snapshot_t *out);
/* Appends the JSON of /api/admin/metrics/composite. Returns 0 or -1 (OOM). */
int sc_metrics_snapshot_json(const sc_metrics_snapshot_t *s, sc_buf_t *out);
/* Appends {"days", "limit", "today_generations", "daily": [...]}; days in 1..365.
 * Returns 0, or -1 (nothing appended) on out of memory or days out of range. */
int sc_metrics_daily_json(double now, int days, int limit, sc_buf_t *out);
/* Appends Prometheus text exposition (format 0.0.4). */
int sc_metrics_prometheus(double now, const sc_limits_caps_t *caps, sc_buf_t *out);
/* Zeroes every counter, the daily rows, the hour window and day counter, and persists at once. */
void sc_metrics_reset(double now);
/* Writes the file now (used by tests and shutdown). Returns 0 or -1. */
int sc_metrics_flush(void);
/* Group commit (issue 11): t completes (0 durable, else failed) once a save
 * that covers every count made before this call is on disk, written by the
 * process's committer (sc_durable_global) in a batch shared with the other
 * waiters; the caller does not wait. Returns 0 (t will complete), or -1 when
 * there is no committer or metrics are not initialised (then sc_metrics_flush). */
int sc_metrics_flush_ticket(sc_durable_ticket_t *t);
/* The write-ahead gate of one Kontext start, counted (limiter take) before
 * this call: t completes once a durable save covers it, at once when the
 * newest save's reservation does (persist.c: each such save also counts up
 * to 64 starts to come, the starts of the last second, so that a burst
 * shares a few saves; a crash over-counts at most that many). Returns 0
 * (t will complete), or -1 as sc_metrics_flush_ticket. */
int sc_metrics_start_gate(sc_durable_ticket_t *t);

#endif
