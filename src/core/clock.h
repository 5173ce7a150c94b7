/* Time helpers. Wall time (UTC, seconds since the epoch) is used for anything
 * persisted or shown; monotonic time for durations and deadlines. Thread-safe. */
#ifndef SCENECOMP_CORE_CLOCK_H
#define SCENECOMP_CORE_CLOCK_H

#include <time.h>

double sc_clock_wall(void);
double sc_clock_mono(void);
/* Writes the UTC date of t as YYYY-MM-DD (11 bytes with NUL). */
void sc_clock_utc_date(time_t t, char out[11]);
/* Writes t (wall seconds) as RFC 3339 UTC with milliseconds, e.g.
 * 2026-11-28T10:39:03.123Z (25 bytes with NUL). */
void sc_clock_rfc3339(double t, char out[32]);
/* Days since the epoch of the UTC date of t. */
long sc_clock_utc_day(time_t t);

#endif
