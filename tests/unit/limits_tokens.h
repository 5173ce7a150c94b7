/* Test helper for the token-based limits store interface: takes remember their
 * slot tokens on a per-thread stack, and a release gives back the latest one
 * (with none held, it releases an empty token, which must be a no-op). Keeps
 * the count-oriented tests readable. */
#ifndef SCENECOMP_TESTS_LIMITS_TOKENS_H
#define SCENECOMP_TESTS_LIMITS_TOKENS_H

#include "limits/store.h"

#define SC_TEST_HELD_MAX 4096
static _Thread_local sc_limits_token_t sc_test_held[SC_TEST_HELD_MAX];
static _Thread_local int sc_test_nheld;

static inline sc_limit_result_t sc_test_take(sc_limits_store_t *s, double now,
                                             const sc_limits_caps_t *caps)
{
    sc_limits_token_t t;
    sc_limit_result_t r = s->take(s, now, caps, &t, NULL);
    if (r == SC_LIMIT_OK && sc_test_nheld < SC_TEST_HELD_MAX)
        sc_test_held[sc_test_nheld++] = t;
    return r;
}

static inline void sc_test_release(sc_limits_store_t *s)
{
    sc_limits_token_t none = {{0}};
    s->release(s, sc_test_nheld > 0 ? &sc_test_held[--sc_test_nheld] : &none);
}

#endif
