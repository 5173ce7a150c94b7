/* Limiters: a limits store plus the `[Rate Limiter]` log lines, one per paid
 * resource. Two process-wide limiters exist: Kontext (the default, reached by
 * the sc_limiter_* calls without a limiter argument) and Scene (sc_limiter_scene()),
 * each over its own store instance, so that a fleet sharing one store shares
 * both sets of caps. Callers pass the effective caps on every take, so a
 * reload changes limits without restart. A limiter without a store refuses
 * every take (fail closed: a missing limiter never means unlimited spending).
 * A take that succeeds hands back a slot token; release gives back exactly that
 * slot (and empties the token, so a second release is a no-op). Thread-safe;
 * never blocks past the store's bound (~50 ms for Redis). */
#ifndef SCENECOMP_LIMITS_LIMITER_H
#define SCENECOMP_LIMITS_LIMITER_H

#include "limits/store.h"

/* ==== The default (Kontext) limiter ==== */

/* Installs the store (takes ownership; a previous store is destroyed). Call
 * once at start-up before serving. */
void sc_limiter_init(sc_limits_store_t *store);
sc_limits_store_t *sc_limiter_store(void);
/* take + a `[Rate Limiter] ... refused` log line when refused. On SC_LIMIT_OK
 * *tok holds the slot to give back with sc_limiter_release; otherwise it is
 * empty. SC_LIMIT_UNAVAILABLE: the store cannot answer (nothing taken). */
sc_limit_result_t sc_limiter_take(double now, const sc_limits_caps_t *caps, sc_limits_token_t *tok);
/* Frees the slot tok and empties it; an empty token is a no-op. */
void sc_limiter_release(sc_limits_token_t *tok);
/* The store's counts; 0, or -1 when the store cannot answer. */
int sc_limiter_counts(double now, sc_limits_counts_t *out);
/* false while the store cannot answer (health shows degraded). */
bool sc_limiter_available(void);
/* Idempotency keys in the Kontext limiter's store (fleet-wide with Redis):
 * see sc_limits_store.idem_claim. SC_IDEM_UNAVAILABLE without a store. */
sc_idem_result_t sc_limiter_idem_claim(double now, const char *key, const char *fingerprint,
                                       const char *record_id, int ttl_seconds,
                                       sc_idem_existing_t *out);
int sc_limiter_idem_forget(const char *key);
void sc_limiter_shutdown(void);

/* ==== Limiter objects ==== */

typedef struct sc_limiter sc_limiter_t;

/* The process-wide limiters (static storage, never NULL). */
sc_limiter_t *sc_limiter_kontext(void);
sc_limiter_t *sc_limiter_scene(void);

/* A new limiter without a store; name (static storage, e.g. "Scene") names the
 * resource in log lines. NULL on out of memory. Free with sc_limiter_free. */
sc_limiter_t *sc_limiter_new(const char *name);
/* Destroys l's store and l itself (a process-wide limiter only loses its store). */
void sc_limiter_free(sc_limiter_t *l);

/* As the calls above, on limiter l. install takes ownership of store (NULL
 * uninstalls); the previous store is destroyed. */
void sc_limiter_install(sc_limiter_t *l, sc_limits_store_t *store);
sc_limits_store_t *sc_limiter_store_of(sc_limiter_t *l);
sc_limit_result_t sc_limiter_take_on(sc_limiter_t *l, double now, const sc_limits_caps_t *caps,
                                     sc_limits_token_t *tok);
void sc_limiter_release_on(sc_limiter_t *l, sc_limits_token_t *tok);
int sc_limiter_counts_on(sc_limiter_t *l, double now, sc_limits_counts_t *out);
bool sc_limiter_available_on(sc_limiter_t *l);

/* Whole seconds (>= 1) after which a take refused with r at now could pass,
 * for a Retry-After header: 1 for concurrency (slots free as predictions end,
 * which we cannot predict), until the start that must leave the sliding hour
 * for the count to drop under caps->max_per_hour does so (from the store's
 * exported window; 60 when the store exports none), until the next UTC
 * midnight for the daily limit; 1 for limiter_unavailable. */
int sc_limiter_retry_after(sc_limiter_t *l, sc_limit_result_t r, double now,
                           const sc_limits_caps_t *caps);

#endif
