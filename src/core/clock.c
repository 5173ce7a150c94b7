#include "core/clock.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

double sc_clock_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double sc_clock_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void sc_clock_utc_date(time_t t, char out[11])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    memcpy(out, tmp, 10);
    out[10] = '\0';
}

void sc_clock_rfc3339(double t, char out[32])
{
    time_t s = (time_t)floor(t);
    int ms = (int)((t - (double)s) * 1000.0);
    if (ms > 999)
        ms = 999;
    struct tm tm;
    gmtime_r(&s, &tm);
    char tmp[96];
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    snprintf(out, 32, "%.31s", tmp);
}

long sc_clock_utc_day(time_t t)
{
    return (long)(t >= 0 ? t / 86400 : (t - 86399) / 86400);
}

int sc_clock_parse_utc_date(const char *s, long *day)
{
    int y, mo, d;
    char tail;
    if (!s || strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &mo, &d, &tail) != 3)
        return -1;
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31)
        return -1;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    char back[11];
    sc_clock_utc_date(t, back);
    if (strcmp(back, s) != 0) /* timegm normalised it: 2026-02-31 is not a date */
        return -1;
    *day = sc_clock_utc_day(t);
    return 0;
}
