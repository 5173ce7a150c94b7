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

/* Logs the refusal with the numbers the store's decision saw. */
static void log_refusal(const sc_limits_counts_t *c, const sc_limits_caps_t *caps,
                        sc_limit_result_t r)
{
    switch (r) {
    case SC_LIMIT_DAILY:
        sc_log_warn("[Rate Limiter] Kontext refused: daily_limit (%lld/%d today, UTC)", c->today,
                    caps->daily_limit);
        break;
    case SC_LIMIT_HOURLY:
        sc_log_warn("[Rate Limiter] Kontext refused: hourly_limit (%d/%d in the last hour)",
                    c->last_hour, caps->max_per_hour);
        break;
    case SC_LIMIT_CONCURRENCY:
        sc_log_warn("[Rate Limiter] Kontext refused: concurrency_limit (%d/%d in flight)",
                    c->in_flight, caps->max_concurrent);
        break;
    case SC_LIMIT_UNAVAILABLE:
        sc_log_warn("[Rate Limiter] Kontext refused: limiter_unavailable (limits store not "
                    "answering)");
        break;
    case SC_LIMIT_OK:
        break;
    }
}

sc_limit_result_t sc_limiter_take(double now, const sc_limits_caps_t *caps, sc_limits_token_t *tok)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    tok->s[0] = '\0';
    if (!s) {
        sc_log_error(
            "[Rate Limiter] Kontext refused: concurrency_limit (no limiter store installed)");
        return SC_LIMIT_CONCURRENCY;
    }
    sc_limits_counts_t c = {0, 0, 0};
    sc_limit_result_t r = s->take(s, now, caps, tok, &c);
    if (r != SC_LIMIT_OK) {
        tok->s[0] = '\0';
        log_refusal(&c, caps, r);
        return r;
    }
    sc_log_debug(
        "[Rate Limiter] Kontext admitted (in flight %d/%d, last hour %d/%d, today %lld/%d)",
        c.in_flight, caps->max_concurrent, c.last_hour, caps->max_per_hour, c.today,
        caps->daily_limit);
    return r;
}

void sc_limiter_release(sc_limits_token_t *tok)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    if (s && tok->s[0])
        s->release(s, tok);
    tok->s[0] = '\0';
}

int sc_limiter_counts(double now, sc_limits_counts_t *out)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    out->in_flight = 0;
    out->last_hour = 0;
    out->today = 0;
    if (!s)
        return 0;
    return s->count(s, now, out);
}

bool sc_limiter_available(void)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    return !s || s->available(s);
}

sc_idem_result_t sc_limiter_idem_claim(double now, const char *key, const char *fingerprint,
                                       const char *record_id, int ttl_seconds,
                                       sc_idem_existing_t *out)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    if (!s)
        return SC_IDEM_UNAVAILABLE;
    return s->idem_claim(s, now, key, fingerprint, record_id, ttl_seconds, out);
}

int sc_limiter_idem_forget(const char *key)
{
    sc_limits_store_t *s = atomic_load(&g_store);
    return s ? s->idem_forget(s, key) : -1;
}

void sc_limiter_shutdown(void)
{
    sc_limits_store_t *s = atomic_exchange(&g_store, (sc_limits_store_t *)NULL);
    if (s)
        s->destroy(s);
}
