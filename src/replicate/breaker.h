/* Circuit breaker for Kontext predictions (API.md "Outage protection"), per
 * instance. Plain C, no Lua; thread-safe (one mutex); every call takes `now`
 * (seconds, any clock that only moves forward: the service passes wall time so
 * `since` can be shown; tests pass a fake clock).
 *
 *   closed --(>= min_calls finished in window_seconds, failed share >= failure_rate)--> open
 *   open --(open_seconds later, at the next admit or snapshot)--> half_open
 *   half_open: at most half_open_calls trials at once; a trial success -> closed,
 *              a trial failure -> open again.
 *
 * A caller asks sc_breaker_admit before creating a prediction. When admitted it
 * gets a ticket and must hand it back exactly once: sc_breaker_record with the
 * outcome when the prediction finished, or sc_breaker_release when it ends
 * without an outcome (a limiter refusal, a client that went away). Outcomes of
 * tickets admitted before the last state change are ignored, so a slow failure
 * from the outage cannot re-open a breaker that has just closed. */
#ifndef SCENECOMP_REPLICATE_BREAKER_H
#define SCENECOMP_REPLICATE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    SC_BREAKER_CLOSED = 0, /* values are scenecomp_breaker_state */
    SC_BREAKER_OPEN = 1,
    SC_BREAKER_HALF_OPEN = 2,
} sc_breaker_state_t;

typedef struct sc_breaker_params {
    bool enabled;          /* false: admit everything, record nothing */
    double failure_rate;   /* (0, 1] */
    int min_calls;         /* >= 1 */
    double window_seconds; /* > 0 */
    double open_seconds;   /* > 0 */
    int half_open_calls;   /* >= 1 */
} sc_breaker_params_t;

typedef struct sc_breaker_ticket {
    uint64_t epoch; /* the state epoch it was admitted in; 0 = no ticket */
    bool trial;     /* a half-open trial (holds one of half_open_calls) */
} sc_breaker_ticket_t;

typedef enum { SC_BREAKER_SUCCESS = 0, SC_BREAKER_FAILURE } sc_breaker_outcome_t;

typedef struct sc_breaker_snapshot {
    sc_breaker_state_t state;
    double since;        /* now of the last state change (creation time at first) */
    double failure_rate; /* failed share over the window; NaN without calls */
    int calls;           /* finished predictions in the window */
    int trials;          /* half-open trials in flight */
    bool enabled;
} sc_breaker_snapshot_t;

typedef struct sc_breaker sc_breaker_t;

/* failure_rate 0.5, min_calls 10, window 60 s, open 30 s, half_open_calls 1. */
void sc_breaker_params_default(sc_breaker_params_t *p, bool enabled);

/* A closed breaker with default params; since = now. NULL on out of memory. */
sc_breaker_t *sc_breaker_new(double now);
void sc_breaker_free(sc_breaker_t *b);

/* The process-wide breaker used by the HTTP layer (created on first use). */
sc_breaker_t *sc_breaker_global(void);

/* Admits a prediction or refuses it (false: the breaker is open, or half-open
 * with every trial slot taken). p (may be NULL: keep the current params) is the
 * request's effective config and replaces the breaker's params; disabling
 * resets the breaker to closed. *ticket is always written (epoch 0 when
 * refused or disabled). Logs `[Breaker] half-open` when open_seconds ran out. */
bool sc_breaker_admit(sc_breaker_t *b, const sc_breaker_params_t *p, double now,
                      sc_breaker_ticket_t *ticket);

/* The prediction of ticket finished with outcome. Logs `[Breaker] open` or
 * `[Breaker] closed` on a state change. Clears the ticket; a cleared ticket is
 * ignored, so a second call is harmless. */
void sc_breaker_record(sc_breaker_t *b, sc_breaker_ticket_t *ticket, sc_breaker_outcome_t outcome,
                       double now);

/* The ticket ends without an outcome (its trial slot, if any, is freed). */
void sc_breaker_release(sc_breaker_t *b, sc_breaker_ticket_t *ticket, double now);

/* State at now (an expired open period shows as half_open). */
void sc_breaker_snapshot(sc_breaker_t *b, double now, sc_breaker_snapshot_t *out);

/* "closed" | "open" | "half_open" */
const char *sc_breaker_state_name(sc_breaker_state_t s);

#endif
