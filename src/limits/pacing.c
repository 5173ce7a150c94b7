/* Budget pacing (see pacing.h). */
#include "limits/pacing.h"

#include <math.h>

long long sc_pacing_burst(long long daily_limit)
{
    if (daily_limit <= 0)
        return 1;
    long long b = (daily_limit + 19) / 20; /* ceil without floating point */
    return b > 1 ? b : 1;
}

double sc_pacing_allowance(long long daily_limit, double now)
{
    double sod = fmod(now, 86400.0); /* seconds since 00:00 UTC (no leap seconds in unix time) */
    if (sod < 0)
        sod += 86400.0;
    double limit = daily_limit > 0 ? (double)daily_limit : 0.0;
    return limit * (sod / 86400.0) + (double)sc_pacing_burst(daily_limit);
}

bool sc_pacing_admit(long long today_generations, long long daily_limit, double now)
{
    return (double)today_generations < sc_pacing_allowance(daily_limit, now);
}
