/* Fallback reasons: why a request routed to Kontext finished with PIL. The
 * closed set, its names (as shown in JSON, logs and /metrics) and the mappings
 * from limiter refusals and Replicate outcomes, in one place. Plain C, no state;
 * any thread. */
#ifndef SCENECOMP_METRICS_REASONS_H
#define SCENECOMP_METRICS_REASONS_H

#include "limits/store.h"

typedef enum {
    SC_FB_TIMEOUT = 0,
    SC_FB_API_ERROR,
    SC_FB_INVALID_OUTPUT,
    SC_FB_CONCURRENCY_LIMIT,
    SC_FB_HOURLY_LIMIT,
    SC_FB_DAILY_LIMIT,
    SC_FB_NO_TOKEN,
    SC_FB__COUNT
} sc_fallback_reason_t;

/* "timeout", "api_error", "invalid_output", "concurrency_limit", "hourly_limit",
 * "daily_limit", "no_token"; "unknown" outside the enum. Static storage. */
const char *sc_fallback_reason_name(sc_fallback_reason_t r);

/* The reason with that name, or -1 when name is NULL or unknown. */
int sc_fallback_reason_parse(const char *name);
/* The fallback reason for a limiter refusal (SC_LIMIT_OK maps to concurrency_limit,
 * a value callers never pass). */
sc_fallback_reason_t sc_metrics_reason_for_limit(sc_limit_result_t r);

#endif
