/* Limiters: a store installed at start-up plus the log lines ops grep for. The
 * store pointer is written once before serving and read by every request
 * thread afterwards; it is atomic so a late install (tests) is still
 * well-defined. Without a store every take is refused (fail closed: a missing
 * limiter must never mean unlimited spending). */
#include "limits/limiter.h"

#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include "core/log.h"

#define HOUR_SECONDS 3600.0
#define DAY_SECONDS 86400.0

struct sc_limiter {
    const char *name; /* the resource in log lines: "Kontext", "Scene" */
    _Atomic(sc_limits_store_t *) store;
    int is_static; /* a process-wide limiter: never freed */
};

static sc_limiter_t g_kontext = {"Kontext", NULL, 1};
static sc_limiter_t g_scene = {"Scene", NULL, 1};

sc_limiter_t *sc_limiter_kontext(void)
{
    return &g_kontext;
}

sc_limiter_t *sc_limiter_scene(void)
{
    return &g_scene;
}

sc_limiter_t *sc_limiter_new(const char *name)
{
    sc_limiter_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->name = name;
    atomic_init(&l->store, NULL);
    return l;
}

void sc_limiter_install(sc_limiter_t *l, sc_limits_store_t *store)
{
    sc_limits_store_t *old = atomic_exchange(&l->store, store);
    if (old && old != store)
        old->destroy(old);
}

void sc_limiter_free(sc_limiter_t *l)
{
    if (!l)
        return;
    sc_limiter_install(l, NULL);
    if (!l->is_static)
        free(l);
}

sc_limits_store_t *sc_limiter_store_of(sc_limiter_t *l)
{
    return atomic_load(&l->store);
}

/* Logs the refusal with the numbers the store's decision saw. */
static void log_refusal(const char *name, const sc_limits_counts_t *c, const sc_limits_caps_t *caps,
                        sc_limit_result_t r)
{
    switch (r) {
    case SC_LIMIT_DAILY:
        sc_log_warn("[Rate Limiter] %s refused: daily_limit (%lld/%d today, UTC)", name, c->today,
                    caps->daily_limit);
        break;
    case SC_LIMIT_HOURLY:
        sc_log_warn("[Rate Limiter] %s refused: hourly_limit (%d/%d in the last hour)", name,
                    c->last_hour, caps->max_per_hour);
        break;
    case SC_LIMIT_CONCURRENCY:
        sc_log_warn("[Rate Limiter] %s refused: concurrency_limit (%d/%d in flight)", name,
                    c->in_flight, caps->max_concurrent);
        break;
    case SC_LIMIT_UNAVAILABLE:
        sc_log_warn("[Rate Limiter] %s refused: limiter_unavailable (limits store not answering)",
                    name);
        break;
    case SC_LIMIT_OK:
        break;
    }
}

sc_limit_result_t sc_limiter_take_on(sc_limiter_t *l, double now, const sc_limits_caps_t *caps,
                                     sc_limits_token_t *tok)
{
    sc_limits_store_t *s = atomic_load(&l->store);
    tok->s[0] = '\0';
    if (!s) {
        sc_log_error("[Rate Limiter] %s refused: concurrency_limit (no limiter store installed)",
                     l->name);
        return SC_LIMIT_CONCURRENCY;
    }
    sc_limits_counts_t c = {0, 0, 0};
    sc_limit_result_t r = s->take(s, now, caps, tok, &c);
    if (r != SC_LIMIT_OK) {
        tok->s[0] = '\0';
        log_refusal(l->name, &c, caps, r);
        return r;
    }
    sc_log_debug("[Rate Limiter] %s admitted (in flight %d/%d, last hour %d/%d, today %lld/%d)",
                 l->name, c.in_flight, caps->max_concurrent, c.last_hour, caps->max_per_hour,
                 c.today, caps->daily_limit);
    return r;
}

void sc_limiter_release_on(sc_limiter_t *l, sc_limits_token_t *tok)
{
    sc_limits_store_t *s = atomic_load(&l->store);
    if (s && tok->s[0])
        s->release(s, tok);
    tok->s[0] = '\0';
}

int sc_limiter_counts_on(sc_limiter_t *l, double now, sc_limits_counts_t *out)
{
    sc_limits_store_t *s = atomic_load(&l->store);
    out->in_flight = 0;
    out->last_hour = 0;
    out->today = 0;
    return s ? s->count(s, now, out) : 0;
}

bool sc_limiter_available_on(sc_limiter_t *l)
{
    sc_limits_store_t *s = atomic_load(&l->store);
    return !s || s->available(s);
}

/* ==== Retry-After ==== */

/* Seconds until enough starts leave the sliding hour for the count to drop
 * under cap, read from the store's export (oldest first, [second, starts]
 * pairs or bare times, as store.h documents). -1 when it cannot tell. */
static double hour_wait(sc_limits_store_t *s, double now, int cap)
{
    if (!s || !s->export_state || cap <= 0)
        return -1;
    cJSON *st = s->export_state(s, now, 0);
    const cJSON *win = cJSON_GetObjectItemCaseSensitive(st, "hour_window");
    const cJSON *it;
    if (!cJSON_IsArray(win)) { /* out of memory, or a store with another shape */
        cJSON_Delete(st);
        return -1;
    }
    double total = 0, need, wait = -1;
    cJSON_ArrayForEach(it, win)
    {
        const cJSON *k = cJSON_IsArray(it) ? cJSON_GetArrayItem(it, 1) : NULL;
        total += k ? k->valuedouble : 1;
    }
    need = total - cap + 1; /* starts that must leave; none: there is room already */
    if (need <= 0)
        wait = 0;
    double seen = 0;
    cJSON_ArrayForEach(it, win)
    {
        const cJSON *t = cJSON_IsArray(it) ? cJSON_GetArrayItem(it, 0) : it;
        const cJSON *k = cJSON_IsArray(it) ? cJSON_GetArrayItem(it, 1) : NULL;
        seen += k ? k->valuedouble : 1;
        if (need > 0 && seen >= need && cJSON_IsNumber(t)) {
            wait = t->valuedouble + HOUR_SECONDS - now;
            break;
        }
    }
    cJSON_Delete(st);
    return wait;
}

int sc_limiter_retry_after(sc_limiter_t *l, sc_limit_result_t r, double now,
                           const sc_limits_caps_t *caps)
{
    double wait = 1;
    switch (r) {
    case SC_LIMIT_DAILY:
        wait = (floor(now / DAY_SECONDS) + 1) * DAY_SECONDS - now;
        break;
    case SC_LIMIT_HOURLY:
        wait = hour_wait(atomic_load(&l->store), now, caps->max_per_hour);
        if (wait < 0)
            wait = caps->max_per_hour <= 0 ? HOUR_SECONDS : 60;
        break;
    case SC_LIMIT_CONCURRENCY:
    case SC_LIMIT_UNAVAILABLE:
    case SC_LIMIT_OK:
        wait = 1;
        break;
    }
    if (!(wait >= 1))
        return 1;
    if (wait > DAY_SECONDS)
        return (int)DAY_SECONDS;
    return (int)ceil(wait);
}

/* ==== The default (Kontext) limiter ==== */

void sc_limiter_init(sc_limits_store_t *store)
{
    sc_limiter_install(&g_kontext, store);
}

sc_limits_store_t *sc_limiter_store(void)
{
    return sc_limiter_store_of(&g_kontext);
}

sc_limit_result_t sc_limiter_take(double now, const sc_limits_caps_t *caps, sc_limits_token_t *tok)
{
    return sc_limiter_take_on(&g_kontext, now, caps, tok);
}

void sc_limiter_release(sc_limits_token_t *tok)
{
    sc_limiter_release_on(&g_kontext, tok);
}

int sc_limiter_counts(double now, sc_limits_counts_t *out)
{
    return sc_limiter_counts_on(&g_kontext, now, out);
}

bool sc_limiter_available(void)
{
    return sc_limiter_available_on(&g_kontext);
}

sc_idem_result_t sc_limiter_idem_claim(double now, const char *key, const char *fingerprint,
                                       const char *record_id, int ttl_seconds,
                                       sc_idem_existing_t *out)
{
    sc_limits_store_t *s = atomic_load(&g_kontext.store);
    if (!s)
        return SC_IDEM_UNAVAILABLE;
    return s->idem_claim(s, now, key, fingerprint, record_id, ttl_seconds, out);
}

int sc_limiter_idem_forget(const char *key)
{
    sc_limits_store_t *s = atomic_load(&g_kontext.store);
    return s ? s->idem_forget(s, key) : -1;
}

void sc_limiter_shutdown(void)
{
    sc_limiter_install(&g_kontext, NULL);
}
