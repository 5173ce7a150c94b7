/* Circuit breaker (see breaker.h). The sliding window is a ring of finished
 * outcomes (time, failed), pruned by age on every look; it grows as needed up to
 * BREAKER_MAX_EVENTS, past which the oldest outcome is dropped (the share stays
 * a fair estimate). State changes bump `epoch`, which voids every ticket issued
 * before them. Log lines are formatted under the mutex but written after it. */
#include "replicate/breaker.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

#define BREAKER_MAX_EVENTS 65536

typedef struct breaker_event {
    double t;
    bool failed;
} breaker_event_t;

struct sc_breaker {
    pthread_mutex_t mu;
    sc_breaker_params_t p;
    sc_breaker_state_t state;
    double since;
    uint64_t epoch; /* starts at 1: epoch 0 marks "no ticket" */
    int trials;     /* half-open trials in flight */
    breaker_event_t *ev;
    size_t cap, head, n; /* ring: oldest at head */
    int fails;           /* failed outcomes among the n */
};

typedef struct pending_log {
    char line[160];
    bool warn; /* opening is a warning, the rest is information */
} pending_log_t;

void sc_breaker_params_default(sc_breaker_params_t *p, bool enabled)
{
    *p = (sc_breaker_params_t){enabled, 0.5, 10, 60.0, 30.0, 1};
}

const char *sc_breaker_state_name(sc_breaker_state_t s)
{
    switch (s) {
    case SC_BREAKER_CLOSED:
        return "closed";
    case SC_BREAKER_OPEN:
        return "open";
    case SC_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "closed";
}

sc_breaker_t *sc_breaker_new(double now)
{
    sc_breaker_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b);
        return NULL;
    }
    sc_breaker_params_default(&b->p, true);
    b->state = SC_BREAKER_CLOSED;
    b->since = now;
    b->epoch = 1;
    return b;
}

void sc_breaker_free(sc_breaker_t *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b->ev);
    free(b);
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static sc_breaker_t *g_breaker;

static void global_init(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g_breaker = sc_breaker_new((double)ts.tv_sec + ts.tv_nsec / 1e9);
}

sc_breaker_t *sc_breaker_global(void)
{
    pthread_once(&g_once, global_init);
    return g_breaker;
}

/* ==== Window (under mu) ==== */

static void window_clear(sc_breaker_t *b)
{
    b->head = b->n = 0;
    b->fails = 0;
}

static void window_drop_oldest(sc_breaker_t *b)
{
    if (b->ev[b->head].failed)
        b->fails--;
    b->head = (b->head + 1) % b->cap;
    b->n--;
}

static void window_prune(sc_breaker_t *b, double now)
{
    double cutoff = now - b->p.window_seconds;
    while (b->n > 0 && b->ev[b->head].t <= cutoff)
        window_drop_oldest(b);
}

/* Appends an outcome; on out of memory or at the cap the oldest one makes room. */
static void window_push(sc_breaker_t *b, double now, bool failed)
{
    if (b->n == b->cap && b->cap < BREAKER_MAX_EVENTS) {
        size_t ncap = b->cap ? b->cap * 2 : 64;
        breaker_event_t *nev = malloc(ncap * sizeof *nev);
        if (nev) {
            for (size_t i = 0; i < b->n; i++)
                nev[i] = b->ev[(b->head + i) % b->cap];
            free(b->ev);
            b->ev = nev;
            b->cap = ncap;
            b->head = 0;
        }
    }
    if (b->cap == 0)
        return; /* no memory at all: the outcome is lost, the breaker stays as it is */
    if (b->n == b->cap)
        window_drop_oldest(b);
    b->ev[(b->head + b->n) % b->cap] = (breaker_event_t){now, failed};
    b->n++;
    if (failed)
        b->fails++;
}

/* ==== Transitions (under mu; the log line is written by the caller after unlock) ==== */

static void set_state(sc_breaker_t *b, sc_breaker_state_t s, double now, pending_log_t *log)
{
    b->state = s;
    b->since = now;
    b->epoch++;
    b->trials = 0;
    switch (s) {
    case SC_BREAKER_OPEN:
        log->warn = true;
        snprintf(log->line, sizeof log->line,
                 "[Breaker] open for %.0fs (%d of %zu predictions failed in the last %.0fs)",
                 b->p.open_seconds, b->fails, b->n, b->p.window_seconds);
        break;
    case SC_BREAKER_HALF_OPEN:
        snprintf(log->line, sizeof log->line, "[Breaker] half-open: up to %d trial prediction%s",
                 b->p.half_open_calls, b->p.half_open_calls == 1 ? "" : "s");
        break;
    case SC_BREAKER_CLOSED:
        window_clear(b);
        snprintf(log->line, sizeof log->line, "[Breaker] closed: a trial prediction succeeded");
        break;
    }
}

/* The open period ends lazily, at the first look after it. */
static void maybe_half_open(sc_breaker_t *b, double now, pending_log_t *log)
{
    if (b->state == SC_BREAKER_OPEN && now >= b->since + b->p.open_seconds)
        set_state(b, SC_BREAKER_HALF_OPEN, now, log);
}

static void flush_log(const pending_log_t *log)
{
    if (log->line[0])
        sc_log(log->warn ? SC_LOG_WARN : SC_LOG_INFO, "%s", log->line);
}

/* ==== Public API ==== */

bool sc_breaker_admit(sc_breaker_t *b, const sc_breaker_params_t *p, double now,
                      sc_breaker_ticket_t *ticket)
{
    pending_log_t log = {{0}, false};
    bool ok = true;
    *ticket = (sc_breaker_ticket_t){0, false};
    if (!b)
        return true;
    pthread_mutex_lock(&b->mu);
    if (p) {
        bool was = b->p.enabled;
        b->p = *p;
        if (was && !p->enabled) {
            /* switched off: forget everything; on again starts closed and empty */
            b->state = SC_BREAKER_CLOSED;
            b->since = now;
            b->epoch++;
            b->trials = 0;
            window_clear(b);
        }
    }
    if (b->p.enabled) {
        maybe_half_open(b, now, &log);
        switch (b->state) {
        case SC_BREAKER_CLOSED:
            *ticket = (sc_breaker_ticket_t){b->epoch, false};
            break;
        case SC_BREAKER_OPEN:
            ok = false;
            break;
        case SC_BREAKER_HALF_OPEN:
            /* the count and the check are one step under the mutex: never more
             * trials than half_open_calls, however many threads ask at once */
            if (b->trials < b->p.half_open_calls) {
                b->trials++;
                *ticket = (sc_breaker_ticket_t){b->epoch, true};
            } else {
                ok = false;
            }
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
    flush_log(&log);
    return ok;
}

void sc_breaker_record(sc_breaker_t *b, sc_breaker_ticket_t *ticket, sc_breaker_outcome_t outcome,
                       double now)
{
    pending_log_t log = {{0}, false};
    if (!b || !ticket || ticket->epoch == 0)
        return;
    sc_breaker_ticket_t t = *ticket;
    *ticket = (sc_breaker_ticket_t){0, false};
    bool failed = outcome == SC_BREAKER_FAILURE;
    pthread_mutex_lock(&b->mu);
    if (b->p.enabled && t.epoch == b->epoch) {
        if (b->state == SC_BREAKER_CLOSED) {
            window_prune(b, now);
            window_push(b, now, failed);
            window_prune(b, now);
            if (b->n >= (size_t)b->p.min_calls &&
                (double)b->fails >= b->p.failure_rate * (double)b->n)
                set_state(b, SC_BREAKER_OPEN, now, &log);
        } else if (b->state == SC_BREAKER_HALF_OPEN && t.trial) {
            if (failed)
                set_state(b, SC_BREAKER_OPEN, now, &log);
            else
                set_state(b, SC_BREAKER_CLOSED, now, &log);
        }
    }
    pthread_mutex_unlock(&b->mu);
    flush_log(&log);
}

void sc_breaker_release(sc_breaker_t *b, sc_breaker_ticket_t *ticket, double now)
{
    (void)now;
    if (!b || !ticket || ticket->epoch == 0)
        return;
    sc_breaker_ticket_t t = *ticket;
    *ticket = (sc_breaker_ticket_t){0, false};
    pthread_mutex_lock(&b->mu);
    if (t.trial && t.epoch == b->epoch && b->state == SC_BREAKER_HALF_OPEN && b->trials > 0)
        b->trials--;
    pthread_mutex_unlock(&b->mu);
}

void sc_breaker_snapshot(sc_breaker_t *b, double now, sc_breaker_snapshot_t *out)
{
    pending_log_t log = {{0}, false};
    memset(out, 0, sizeof *out);
    out->failure_rate = NAN;
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    if (b->p.enabled)
        maybe_half_open(b, now, &log);
    window_prune(b, now);
    out->state = b->state;
    out->since = b->since;
    out->calls = (int)b->n;
    out->failure_rate = b->n ? (double)b->fails / (double)b->n : NAN;
    out->trials = b->trials;
    out->enabled = b->p.enabled;
    pthread_mutex_unlock(&b->mu);
    flush_log(&log);
}
