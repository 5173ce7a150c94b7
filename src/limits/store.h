/* The limiter's counter store: a concurrency gate of leased slots, a sliding
 * 60-minute window of prediction start times, a per-UTC-day counter and
 * idempotency keys, behind a small vtable. Two stores exist: the in-process one
 * (sc_limits_memory_new, the default: one mutex, O(1) amortised take) and the
 * Redis one (limits/store_redis.h: every instance sharing one Redis shares the
 * limits). What is fleet-wide (caps, today's count, idempotency keys) is decided
 * here; per-instance stats live in metrics.
 *
 * Every operation is non-blocking: take never waits for a slot, and the Redis
 * store bounds every request-path call to ~50 ms (past it: SC_LIMIT_UNAVAILABLE).
 * Plain C: no Lua, no logging. Thread-safe. */
#ifndef SCENECOMP_LIMITS_STORE_H
#define SCENECOMP_LIMITS_STORE_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "core/buf.h"

typedef enum {
    SC_LIMIT_OK = 0,
    SC_LIMIT_CONCURRENCY,
    SC_LIMIT_HOURLY,
    SC_LIMIT_DAILY,
    SC_LIMIT_UNAVAILABLE, /* the store cannot answer (Redis down/slow): nothing was taken */
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

/* A concurrency slot: 32 hex characters, unique across the fleet. Release
 * frees exactly the slot with that token (a double or stale release frees
 * nothing else). */
#define SC_LIMITS_TOKEN_LEN 33
typedef struct sc_limits_token {
    char s[SC_LIMITS_TOKEN_LEN];
} sc_limits_token_t;

/* Idempotency keys: 1..SC_IDEM_KEY_MAX bytes of printable ASCII (0x20-0x7e,
 * no leading or trailing space: records/idempotency's rule);
 * fingerprint and record id at most SC_IDEM_VALUE_MAX bytes without '\n'. */
#define SC_IDEM_KEY_MAX 255
#define SC_IDEM_VALUE_MAX 128
#define SC_IDEM_TTL_SECONDS 86400

typedef enum {
    SC_IDEM_CLAIMED = 0,  /* the key is new: the caller owns it now */
    SC_IDEM_EXISTING,     /* already claimed: fingerprint and record id filled in */
    SC_IDEM_UNAVAILABLE,  /* the store cannot answer (nothing claimed) */
    SC_IDEM_INVALID = -1, /* bad key/fingerprint/record id (nothing claimed) */
} sc_idem_result_t;

typedef struct sc_idem_existing {
    char fingerprint[SC_IDEM_VALUE_MAX + 1];
    char record_id[SC_IDEM_VALUE_MAX + 1];
} sc_idem_existing_t;

typedef struct sc_limits_store sc_limits_store_t;
struct sc_limits_store {
    /* Atomically checks all three caps at wall time now and, if all pass,
     * takes a leased concurrency slot (its token in *tok) and records a start.
     * Checks in the order daily, hourly, concurrency and reports the first that
     * refuses. seen (may be NULL) gets the counts the decision saw, the new
     * start included when admitted. Never waits for a slot. */
    sc_limit_result_t (*take)(sc_limits_store_t *s, double now, const sc_limits_caps_t *caps,
                              sc_limits_token_t *tok, sc_limits_counts_t *seen);
    /* Frees the slot tok (the start stays counted). Unknown tokens are ignored.
     * Never fails from the caller's view: a slot the store cannot free now
     * expires with its lease. */
    void (*release)(sc_limits_store_t *s, const sc_limits_token_t *tok);
    /* The counts at now. Returns 0, or -1 when the store cannot answer (out
     * zeroed). The Redis store answers from a view refreshed every second. */
    int (*count)(sc_limits_store_t *s, double now, sc_limits_counts_t *out);
    /* Claims key for record_id with fingerprint (e.g. a hash of the request)
     * for ttl seconds, atomically: exactly one of several racing claimers gets
     * SC_IDEM_CLAIMED; the others get SC_IDEM_EXISTING with what the winner
     * stored (out may be NULL). */
    sc_idem_result_t (*idem_claim)(sc_limits_store_t *s, double now, const char *key,
                                   const char *fingerprint, const char *record_id, int ttl_seconds,
                                   sc_idem_existing_t *out);
    /* Drops a claim (e.g. the request failed before it made a record). 0 or -1. */
    int (*idem_forget)(sc_limits_store_t *s, const char *key);
    /* false while the store cannot answer (Redis unreachable). */
    bool (*available)(sc_limits_store_t *s);
    /* Persistence: the hour window and day counter as JSON (caller owns the
     * result); import replaces them. NULL for stores that persist themselves.
     * reserved: starts not made yet that the export already counts, as starts
     * in the second after now (they may come up to a second later: restored,
     * they must not leave the hour early), the metrics file's write-ahead
     * reservation (metrics.h); 0 for the state as it is. */
    cJSON *(*export_state)(sc_limits_store_t *s, double now, long long reserved);
    int (*import_state)(sc_limits_store_t *s, const cJSON *state, double now);
    /* Zeroes the hour window and day counter (admin reset); in-flight slots stay. */
    void (*reset)(sc_limits_store_t *s);
    /* Appends {"instances":[...]} (the fleet view), or NULL for a store
     * without a fleet (the caller describes the single instance). 0 or -1. */
    int (*fleet_json)(sc_limits_store_t *s, double now, sc_buf_t *out);
    /* Starts per-UTC-day of the fleet for `days` days ending with the day of
     * now (oldest first) into out[days]; NULL when the store keeps no history.
     * Returns 0 or -1 (store unavailable). */
    int (*daily_starts)(sc_limits_store_t *s, double now, int days, long long *out);
    void (*destroy)(sc_limits_store_t *s);
};

/* The in-process store. Returns NULL on out of memory. */
sc_limits_store_t *sc_limits_memory_new(void);

/* "ok","concurrency_limit","hourly_limit","daily_limit","limiter_unavailable" */
const char *sc_limit_result_name(sc_limit_result_t r);

/* Fills tok with a fresh random token. */
void sc_limits_token_new(sc_limits_token_t *tok);

/* 0 when key, fingerprint and record_id are acceptable idempotency values. */
int sc_limits_idem_check(const char *key, const char *fingerprint, const char *record_id);

#endif
