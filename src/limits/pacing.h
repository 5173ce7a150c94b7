/* Budget pacing (API.md "Outage protection"): spreads Kontext starts over the
 * UTC day instead of spending the daily limit by mid-morning. A pure function
 * of its arguments (the clock is a parameter), beside the limiter that owns the
 * day counter; the daily limit itself is enforced by the limiter as before. */
#ifndef SCENECOMP_LIMITS_PACING_H
#define SCENECOMP_LIMITS_PACING_H

#include <stdbool.h>

/* max(1, ceil(daily_limit / 20)); 1 for a limit <= 0. */
long long sc_pacing_burst(long long daily_limit);

/* How many starts today the pace allows at wall time now (UTC seconds since
 * the epoch): daily_limit * (seconds since 00:00 UTC / 86400) + burst. */
double sc_pacing_allowance(long long daily_limit, double now);

/* true while today_generations < sc_pacing_allowance(daily_limit, now). */
bool sc_pacing_admit(long long today_generations, long long daily_limit, double now);

#endif
