/* The process-wide Kontext limiter: the configured store plus the `[Rate Limiter]`
 * log lines. Callers pass the effective caps of the policy generation their
 * request uses, so a reload changes limits without restart. Thread-safe. */
#ifndef SCENECOMP_LIMITS_LIMITER_H
#define SCENECOMP_LIMITS_LIMITER_H

#include "limits/store.h"

/* Installs the store (takes ownership). Call once at start-up before serving. */
void sc_limiter_init(sc_limits_store_t *store);
sc_limits_store_t *sc_limiter_store(void);
/* take + a `[Rate Limiter] ... refused` log line when refused. */
sc_limit_result_t sc_limiter_take(double now, const sc_limits_caps_t *caps);
void sc_limiter_release(void);
void sc_limiter_counts(double now, sc_limits_counts_t *out);
void sc_limiter_shutdown(void);

#endif
