/* Internal to src/metrics: the state shared by counters.c (events, snapshot),
 * render.c (JSON and Prometheus text) and persist.c (the file, the writer
 * thread, init and reset). Not included outside src/metrics.
 *
 * All counters live in one struct behind one mutex, sc_metrics__mu: an event
 * takes it for a handful of additions (no allocation, no I/O, no Lua). Lock
 * order: persist.c's save lock, then sc_metrics__mu; a limits store's own lock
 * is never taken while sc_metrics__mu is held. */
#ifndef SCENECOMP_METRICS_METRICS_INTERNAL_H
#define SCENECOMP_METRICS_METRICS_INTERNAL_H

#include <pthread.h>

#include "metrics/metrics.h"

#define RECENT_N 1024 /* successful Kontext durations kept for the p95 */
#define DAY_SLOTS 512 /* daily rows kept (>= 400 days) */

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

/* Guards sc_metrics__st, the pointers below and persist.c's writer flags. */
extern pthread_mutex_t sc_metrics__mu;
extern metrics_state_t sc_metrics__st;
/* Set by sc_metrics_init, cleared by sc_metrics_shutdown (under the mutex). */
extern const sc_config_t *sc_metrics__cfg;
extern sc_limits_store_t *sc_metrics__store;       /* Kontext limiter's */
extern sc_limits_store_t *sc_metrics__scene_store; /* scene limiter's, may be NULL */

/* ==== counters.c: state helpers (caller holds the mutex unless st is private) ==== */

long sc_metrics__day_of(double now);
/* The row for day, recycling the slot of a day DAY_SLOTS older. NULL when the
 * slot already holds a newer day (an event dated more than DAY_SLOTS days back). */
metrics_day_t *sc_metrics__day_row(metrics_state_t *st, long day);
/* The row for day, or NULL when none was recorded. */
const metrics_day_t *sc_metrics__day_peek(const metrics_state_t *st, long day);
void sc_metrics__state_zero(metrics_state_t *st, double since);

/* ==== persist.c ==== */

/* Marks the state changed and wakes the writer on the first change since the
 * last save. Caller holds sc_metrics__mu. */
void sc_metrics__touch(void);
/* Writes the file from a copy of the state. Returns 0, or -1 (the state stays
 * dirty, so the writer retries); a no-op returning -1 before init. */
int sc_metrics__save_now(double now);

#endif
