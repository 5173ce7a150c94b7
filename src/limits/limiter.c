/* The process-wide limiter: the store installed at start-up plus the log lines
 * ops grep for. The store pointer is written once before serving and read by
 * every request thread afterwards; it is atomic so a late install (tests) is
 * still well-defined. Without a store every take is refused (fail closed: a
 * missing limiter must never mean unlimited spending). */
#include "limits/limiter.h"

#include <stdatomic.h>
#include <stddef.h>

#include "core/log.h"

static _Atomic(sc_limits_store_t *) g_store;

void sc_limiter_init(sc_limits_store_t *store)
{
    sc_limits_store_t *old = atomic_exchange(&g_store, store);
    if (old && old != store)
        old->destroy(old);
}

sc_limits_store_t *sc_limiter_store(void)
{
    return atomic_load(&g_store);
}

/* Logs the refusal with the numbers that caused it. The counts are read after
 * the take, so under heavy concurrency they may differ by a request or two from
 * the ones take saw; the reason itself is exact. */
static void log_refusal(sc_limits_store_t *s, double now, const sc_limits_caps_t *caps,
                        sc_limit_result_t r)
{
    sc_limits_counts_t c = {0, 0, 0};
    s->count(s, now, &c);
    switch (r) {
    case SC_LIMIT_DAILY:
        sc_log_warn("[Rate Limiter] Kontext refused: daily_limit (%lld/%d today, UTC)", c.today,
                    caps->daily_limit);
        break;
    case SC_LIMIT_HOURLY:
        sc_log_warn("[Rate Limiter] Kontext refused: hourly_limit (%d/%d in the last hour)",
                    c.last_hour, caps->max_per_hour);
        break;
    case SC_LIMIT_CONCURRENCY:
        sc_log_warn("[Rate Limiter] Kontext refused: concurrency_limit (%d/%d in flight)",
                    c.in_flight, caps->max_concurrent);
        break;
    case SC_LIMIT_OK:
        break;
    }
}

sc_limit_result_t sc_limiter_take(double now, const sc_limits_caps_t *caps)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    if (!s) {
        sc_log_error(
            "[Rate Limiter] Kontext refused: concurrency_limit (no limiter store installed)");
        return SC_LIMIT_CONCURRENCY;
    }
    sc_limit_result_t r = s->take(s, now, caps);
    if (r != SC_LIMIT_OK) {
        log_refusal(s, now, caps, r);
        return r;
    }
    sc_limits_counts_t c = {0, 0, 0};
    s->count(s, now, &c);
    sc_log_debug(
        "[Rate Limiter] Kontext admitted (in flight %d/%d, last hour %d/%d, today %lld/%d)",
        c.in_flight, caps->max_concurrent, c.last_hour, caps->max_per_hour, c.today,
        caps->daily_limit);
    return r;
}

void sc_limiter_release(void)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    if (s)
        s->release(s);
}

void sc_limiter_counts(double now, sc_limits_counts_t *out)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    out->in_flight = 0;
    out->last_hour = 0;
    out->today = 0;
    if (s)
        s->count(s, now, out);
}

void sc_limiter_shutdown(void)
{
    sc_limits_store_t *s = atomic_exchange(&g_store, (sc_limits_store_t *)NULL);
    if (s)
        s->destroy(s);
}
