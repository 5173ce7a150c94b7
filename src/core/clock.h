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
/* Parses YYYY-MM-DD (a real calendar date, 1970..9999) into days since the
 * epoch. Returns 0, or -1 for anything else (e.g. 2026-02-31). */
int sc_clock_parse_utc_date(const char *s, long *day);
/* Days since the epoch of the UTC date of t. */
long sc_clock_utc_day(time_t t);

#endif
