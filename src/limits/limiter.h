/* The process-wide Kontext limiter: the configured store plus the `[Rate Limiter]`
 * log lines. Callers pass the effective caps of the policy generation their
 * request uses, so a reload changes limits without restart. Thread-safe; never
 * blocks past the store's bound (~50 ms for Redis). */
#ifndef SCENECOMP_LIMITS_LIMITER_H
#define SCENECOMP_LIMITS_LIMITER_H

#include "limits/store.h"

/* Installs the store (takes ownership). Call once at start-up before serving. */
void sc_limiter_init(sc_limits_store_t *store);
sc_limits_store_t *sc_limiter_store(void);
/* take + a `[Rate Limiter] ... refused` log line when refused. On SC_LIMIT_OK
 * *tok holds the slot to give back with sc_limiter_release; otherwise it is
 * empty. SC_LIMIT_UNAVAILABLE: the store cannot answer (nothing taken). */
sc_limit_result_t sc_limiter_take(double now, const sc_limits_caps_t *caps, sc_limits_token_t *tok);
/* Frees the slot tok and empties it; an empty token is a no-op, so a second
 * release of the same variable is harmless. */
void sc_limiter_release(sc_limits_token_t *tok);
/* The store's counts; 0, or -1 (zeroes) when the store cannot answer. */
int sc_limiter_counts(double now, sc_limits_counts_t *out);
/* false while the store cannot answer (health shows degraded). */
bool sc_limiter_available(void);
/* Idempotency keys in the installed store (fleet-wide with Redis): see
 * sc_limits_store.idem_claim. SC_IDEM_UNAVAILABLE without a store. */
sc_idem_result_t sc_limiter_idem_claim(double now, const char *key, const char *fingerprint,
                                       const char *record_id, int ttl_seconds,
                                       sc_idem_existing_t *out);
int sc_limiter_idem_forget(const char *key);
void sc_limiter_shutdown(void);

#endif
