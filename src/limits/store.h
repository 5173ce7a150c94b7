/* The limiter's counter store: a concurrency gate, a sliding 60-minute window of
 * prediction start times and a per-UTC-day counter, behind a small vtable so a
 * shared store (e.g. Redis, for several instances behind one load balancer) can
 * back the same limits later without touching callers. The in-process store
 * (sc_limits_memory_new) is the embedded default: one mutex, O(1) amortised take.
 * Plain C: no Lua, no logging. Thread-safe. */
#ifndef SCENECOMP_LIMITS_STORE_H
#define SCENECOMP_LIMITS_STORE_H

#include <cjson/cJSON.h>

typedef enum {
    SC_LIMIT_OK = 0,
    SC_LIMIT_CONCURRENCY,
    SC_LIMIT_HOURLY,
    SC_LIMIT_DAILY,
} sc_limit_result_t;

typedef struct sc_limits_caps {
    int max_concurrent; /* in flight at once */
    int max_per_hour;   /* started in any sliding 3600 s */
    int daily_limit;    /* started per UTC day */
} sc_limits_caps_t;

typedef struct sc_limits_counts {
    int in_flight;
    int last_hour;
    long long today;
} sc_limits_counts_t;

typedef struct sc_limits_store sc_limits_store_t;
struct sc_limits_store {
    /* Atomically checks all three caps at wall time now and, if all pass, takes a
     * concurrency slot and records a start. Checks in the order daily, hourly,
     * concurrency and reports the first that refuses. */
    sc_limit_result_t (*take)(sc_limits_store_t *s, double now, const sc_limits_caps_t *caps);
    /* Gives back a concurrency slot taken by take (the start stays counted). */
    void (*release)(sc_limits_store_t *s);
    void (*count)(sc_limits_store_t *s, double now, sc_limits_counts_t *out);
    /* Persistence: the hour window and day counter as JSON (caller owns the
     * result); import replaces them. May be NULL for stores that persist themselves. */
    cJSON *(*export_state)(sc_limits_store_t *s, double now);
    int (*import_state)(sc_limits_store_t *s, const cJSON *state, double now);
    /* Zeroes the hour window and day counter (admin reset); in-flight slots stay. */
    void (*reset)(sc_limits_store_t *s);
    void (*destroy)(sc_limits_store_t *s);
};

/* The in-process store. Returns NULL on out of memory. */
sc_limits_store_t *sc_limits_memory_new(void);

const char *sc_limit_result_name(
    sc_limit_result_t r); /* "ok","concurrency_limit","hourly_limit","daily_limit" */

#endif
