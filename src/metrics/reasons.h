/* Fallback reasons: why a request routed to Kontext finished with PIL. The
 * closed set, its names (as shown in JSON answers, logs, fallback_reasons and
 * /metrics), and the mappings from limiter refusals and Replicate outcomes all
 * live here, so a new reason is a one-place change (the enum, the table in
 * reasons.c, and a mapping if one produces it). Plain C, no state; any thread. */
#ifndef SCENECOMP_METRICS_REASONS_H
#define SCENECOMP_METRICS_REASONS_H

#include "limits/store.h"
#include "replicate/client.h"

/* The order is the order of fallback_reasons in JSON and /metrics; append. */
typedef enum {
    SC_FB_TIMEOUT = 0,
    SC_FB_API_ERROR,
    SC_FB_INVALID_OUTPUT,
    SC_FB_CONCURRENCY_LIMIT,
    SC_FB_HOURLY_LIMIT,
    SC_FB_DAILY_LIMIT,
    SC_FB_NO_TOKEN,
    SC_FB_CIRCUIT_OPEN,        /* the breaker is open: no prediction created */
    SC_FB_BUDGET_PACING,       /* pacing holds back a start */
    SC_FB_LIMITER_UNAVAILABLE, /* the limits store does not answer */
    SC_FB_INTERRUPTED,         /* a restart ended the request before a prediction id */
    SC_FB__COUNT
} sc_fallback_reason_t;

/* "timeout", "api_error", "invalid_output", "concurrency_limit", "hourly_limit",
 * "daily_limit", "no_token", "circuit_open", "budget_pacing",
 * "limiter_unavailable", "interrupted"; "unknown" outside the enum. Static storage. */
const char *sc_fallback_reason_name(sc_fallback_reason_t r);

/* The reason with that name, or -1 when name is NULL or unknown. */
int sc_fallback_reason_parse(const char *name);

/* The reason for a limiter refusal. SC_LIMIT_OK is not a refusal; callers
 * never pass it (it maps to concurrency_limit). */
sc_fallback_reason_t sc_fallback_reason_for_limit(sc_limit_result_t r);

/* The reason for a finished prediction that did not succeed. SC_REP_OK is not
 * a failure; callers never pass it (it maps to api_error, as does an output we
 * could not use for another reason than its bytes). */
sc_fallback_reason_t sc_fallback_reason_for_replicate(sc_rep_status_t s);

#endif
