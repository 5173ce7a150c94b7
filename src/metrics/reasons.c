/* The fallback reasons' table and mappings (see reasons.h). The mappings are
 * switches without a default, so -Wswitch (an error under -Werror) names any
 * limiter result or Replicate status added later without a reason. */
#include "metrics/reasons.h"

#include <string.h>

static const char *const k_names[] = {
    [SC_FB_TIMEOUT] = "timeout",
    [SC_FB_API_ERROR] = "api_error",
    [SC_FB_INVALID_OUTPUT] = "invalid_output",
    [SC_FB_CONCURRENCY_LIMIT] = "concurrency_limit",
    [SC_FB_HOURLY_LIMIT] = "hourly_limit",
    [SC_FB_DAILY_LIMIT] = "daily_limit",
    [SC_FB_NO_TOKEN] = "no_token",
    [SC_FB_CIRCUIT_OPEN] = "circuit_open",
    [SC_FB_BUDGET_PACING] = "budget_pacing",
    [SC_FB_LIMITER_UNAVAILABLE] = "limiter_unavailable",
    [SC_FB_INTERRUPTED] = "interrupted",
};
_Static_assert(sizeof k_names / sizeof k_names[0] == SC_FB__COUNT,
               "every fallback reason needs a name");

const char *sc_fallback_reason_name(sc_fallback_reason_t r)
{
    if ((int)r < 0 || r >= SC_FB__COUNT || !k_names[r])
        return "unknown";
    return k_names[r];
}

int sc_fallback_reason_parse(const char *name)
{
    for (int i = 0; name && i < SC_FB__COUNT; i++)
        if (k_names[i] && strcmp(name, k_names[i]) == 0)
            return i;
    return -1;
}

sc_fallback_reason_t sc_fallback_reason_for_limit(sc_limit_result_t r)
{
    switch (r) {
    case SC_LIMIT_HOURLY:
        return SC_FB_HOURLY_LIMIT;
    case SC_LIMIT_DAILY:
        return SC_FB_DAILY_LIMIT;
    case SC_LIMIT_UNAVAILABLE:
        return SC_FB_LIMITER_UNAVAILABLE;
    case SC_LIMIT_OK:
    case SC_LIMIT_CONCURRENCY:
        return SC_FB_CONCURRENCY_LIMIT;
    }
    return SC_FB_CONCURRENCY_LIMIT; /* not an enum value: refuse conservatively */
}

sc_fallback_reason_t sc_fallback_reason_for_replicate(sc_rep_status_t s)
{
    switch (s) {
    case SC_REP_TIMEOUT:
        return SC_FB_TIMEOUT;
    case SC_REP_INVALID_OUTPUT:
        return SC_FB_INVALID_OUTPUT;
    case SC_REP_NO_TOKEN:
        return SC_FB_NO_TOKEN;
    case SC_REP_OK:
    case SC_REP_API_ERROR:
    case SC_REP_CLIENT_GONE: /* never reaches here: a gone client's request is dropped */
        return SC_FB_API_ERROR;
    }
    return SC_FB_API_ERROR;
}
