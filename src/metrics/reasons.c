/* The fallback reasons' table and mappings (see reasons.h). */
#include "metrics/reasons.h"

#include <string.h>

static const char *const reason_names[SC_FB__COUNT] = {
    "timeout",      "api_error",   "invalid_output", "concurrency_limit",
    "hourly_limit", "daily_limit", "no_token",
};

const char *sc_fallback_reason_name(sc_fallback_reason_t r)
{
    if ((int)r < 0 || r >= SC_FB__COUNT)
        return "unknown";
    return reason_names[r];
}

int sc_fallback_reason_parse(const char *name)
{
    for (int i = 0; name && i < SC_FB__COUNT; i++)
        if (strcmp(name, reason_names[i]) == 0)
            return i;
    return -1;
}

sc_fallback_reason_t sc_metrics_reason_for_limit(sc_limit_result_t r)
{
    switch (r) {
    case SC_LIMIT_HOURLY:
        return SC_FB_HOURLY_LIMIT;
    case SC_LIMIT_DAILY:
        return SC_FB_DAILY_LIMIT;
    case SC_LIMIT_OK:
    case SC_LIMIT_CONCURRENCY:
        break;
    }
    return SC_FB_CONCURRENCY_LIMIT;
}