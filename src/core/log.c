#include "core/log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/fsutil.h"

#define MAX_SECRETS 4

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *g_file;
static sc_log_level_t g_min = SC_LOG_INFO;
static char *g_secrets[MAX_SECRETS];
static int g_nsecrets;

int sc_log_open(const char *logs_dir)
{
    char path[PATH_MAX];
    if (sc_fs_mkdirs(logs_dir) != 0)
        return -1;
    if (snprintf(path, sizeof path, "%s/backend.log", logs_dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    FILE *f = fopen(path, "ae");
    if (!f)
        return -1;
    pthread_mutex_lock(&g_mu);
    if (g_file)
        fclose(g_file);
    g_file = f;
    pthread_mutex_unlock(&g_mu);
    return 0;
}

void sc_log_set_level(sc_log_level_t min)
{
    pthread_mutex_lock(&g_mu);
    g_min = min;
    pthread_mutex_unlock(&g_mu);
}

sc_log_level_t sc_log_level_parse(const char *s)
{
    if (!s)
        return SC_LOG_INFO;
    if (strcmp(s, "debug") == 0)
        return SC_LOG_DEBUG;
    if (strcmp(s, "warning") == 0 || strcmp(s, "warn") == 0)
        return SC_LOG_WARN;
    if (strcmp(s, "error") == 0)
        return SC_LOG_ERROR;
    return SC_LOG_INFO;
}

void sc_log_add_secret(const char *secret)
{
    if (!secret || !*secret)
        return;
    pthread_mutex_lock(&g_mu);
    if (g_nsecrets < MAX_SECRETS)
        g_secrets[g_nsecrets++] = strdup(secret);
    pthread_mutex_unlock(&g_mu);
}

/* Replaces each registered secret in line (in place; the result never grows
 * beyond cap because "[REDACTED]" is only used when it fits). Called under g_mu. */
static void redact(char *line, size_t cap)
{
    static const char mark[] = "[REDACTED]";
    for (int i = 0; i < g_nsecrets; i++) {
        const char *s = g_secrets[i];
        size_t sl = s ? strlen(s) : 0;
        if (sl == 0)
            continue;
        char *p;
        while ((p = strstr(line, s)) != NULL) {
            size_t tail = strlen(p + sl);
            size_t ml = sizeof mark - 1;
            if ((size_t)(p - line) + ml + tail + 1 > cap)
                ml = 0; /* no room: drop the secret rather than keep it */
            memmove(p + ml, p + sl, tail + 1);
            memcpy(p, mark, ml);
        }
    }
}

void sc_log(sc_log_level_t level, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    if (level < g_min)
        return;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* one log record is one line: control characters become spaces */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    char ts[32];
    sc_clock_rfc3339(sc_clock_wall(), ts);
    pthread_mutex_lock(&g_mu);
    redact(msg, sizeof msg);
    fprintf(stderr, "%s %s %s\n", ts, names[level & 3], msg);
    if (g_file) {
        fprintf(g_file, "%s %s %s\n", ts, names[level & 3], msg);
        fflush(g_file);
    }
    pthread_mutex_unlock(&g_mu);
}

void sc_log_close(void)
{
    pthread_mutex_lock(&g_mu);
    if (g_file)
        fclose(g_file);
    g_file = NULL;
    for (int i = 0; i < g_nsecrets; i++)
        free(g_secrets[i]);
    g_nsecrets = 0;
    pthread_mutex_unlock(&g_mu);
}
