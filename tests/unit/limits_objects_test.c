/* Limiter objects: the Kontext and Scene limiters are independent (separate
 * stores, separate caps, their own names in the `[Rate Limiter]` lines), a
 * limiter without a store refuses, and Retry-After is worked out per refusal:
 * 1 s for concurrency, until the start that must leave the sliding hour does
 * so, until the next UTC midnight. */
#include <stdlib.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/log.h"
#include "limits/limiter.h"
#include "test.h"

#define T0 1772323200.0 /* 2026-03-01T00:00:00Z */

static char *read_log(const char *dir)
{
    char path[512], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/backend.log", dir);
    if (sc_fs_read_file(path, 1 << 20, &text, &len) != 0)
        return NULL;
    return text;
}

static void test_independent(void)
{
    sc_limiter_t *k = sc_limiter_kontext(), *s = sc_limiter_scene();
    CHECK(k != s);
    sc_limiter_install(k, sc_limits_memory_new());
    sc_limiter_install(s, sc_limits_memory_new());
    CHECK(sc_limiter_store() == sc_limiter_store_of(k));
    CHECK(sc_limiter_store_of(s) != sc_limiter_store_of(k));

    sc_limits_caps_t one = {1, 10, 10};
    sc_limits_token_t ts, ts2, tk;
    CHECK_EQ_INT(sc_limiter_take_on(s, T0 + 1, &one, &ts), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_limiter_take_on(s, T0 + 2, &one, &ts2), SC_LIMIT_CONCURRENCY);
    /* the scene's slot does not count against Kontext */
    CHECK_EQ_INT(sc_limiter_take(T0 + 3, &one, &tk), SC_LIMIT_OK);
    sc_limits_counts_t c;
    sc_limiter_counts_on(s, T0 + 4, &c);
    CHECK_EQ_INT(c.in_flight, 1);
    CHECK_EQ_INT(c.today, 1);
    sc_limits_token_t tk_copy = tk;
    sc_limiter_release_on(s, &tk_copy); /* Kontext's token frees nothing in the scene store */
    sc_limiter_counts_on(s, T0 + 4, &c);
    CHECK_EQ_INT(c.in_flight, 1);
    sc_limiter_release_on(s, &ts);
    sc_limiter_counts_on(s, T0 + 4, &c);
    CHECK_EQ_INT(c.in_flight, 0);
    sc_limiter_counts(T0 + 4, &c);
    CHECK_EQ_INT(c.in_flight, 1);
    sc_limiter_release(&tk);
    CHECK_STR(tk.s, "");
    sc_limiter_counts(T0 + 4, &c);
    CHECK_EQ_INT(c.in_flight, 0);
    CHECK(sc_limiter_available_on(s));

    sc_limiter_install(s, NULL);
    CHECK(sc_limiter_store_of(s) == NULL);
    CHECK_EQ_INT(sc_limiter_take_on(s, T0 + 5, &one, &ts), SC_LIMIT_CONCURRENCY); /* fail closed */
    sc_limiter_release_on(s, &ts);                                                /* harmless */
    sc_limiter_shutdown();
    CHECK(sc_limiter_store_of(k) == NULL);
}

static void test_new_and_free(void)
{
    sc_limiter_t *l = sc_limiter_new("Test");
    CHECK(l != NULL);
    if (!l)
        return;
    sc_limits_caps_t caps = {1, 1, 1};
    sc_limits_token_t t;
    CHECK_EQ_INT(sc_limiter_take_on(l, T0, &caps, &t), SC_LIMIT_CONCURRENCY);
    sc_limiter_install(l, sc_limits_memory_new());
    CHECK_EQ_INT(sc_limiter_take_on(l, T0, &caps, &t), SC_LIMIT_OK);
    sc_limiter_free(l); /* destroys the store too (ASan sees a leak otherwise) */
}

static void test_retry_after(void)
{
    sc_limiter_t *l = sc_limiter_new("Scene");
    CHECK(l != NULL);
    if (!l)
        return;
    sc_limiter_install(l, sc_limits_memory_new());
    sc_limits_caps_t caps = {10, 3, 100};
    sc_limits_token_t t;
    /* starts at T0+100.5, +200, +300: the hour cap of 3 is full */
    CHECK_EQ_INT(sc_limiter_take_on(l, T0 + 100.5, &caps, &t), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_limiter_take_on(l, T0 + 200, &caps, &t), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_limiter_take_on(l, T0 + 300, &caps, &t), SC_LIMIT_OK);
    double now = T0 + 1000;
    CHECK_EQ_INT(sc_limiter_take_on(l, now, &caps, &t), SC_LIMIT_HOURLY);
    /* the oldest (rounded up to T0+101) leaves at T0+3701 */
    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_HOURLY, now, &caps), 2701);
    /* a cap lowered to 2 needs two starts to leave: the second at T0+3800 */
    sc_limits_caps_t two = {10, 2, 100};
    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_HOURLY, now, &two), 2800);
    /* never below 1 s */
    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_HOURLY, T0 + 3700.9, &caps), 1);
    /* no start can ever pass a cap of 0: an hour */
    sc_limits_caps_t zero = {10, 0, 100};
    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_HOURLY, now, &zero), 3600);

    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_CONCURRENCY, now, &caps), 1);
    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_UNAVAILABLE, now, &caps), 1);
    /* daily: until the next UTC midnight */
    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_DAILY, T0 + 86400 - 60, &caps), 60);
    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_DAILY, T0 + 0.25, &caps), 86400);
    CHECK_EQ_INT(sc_limiter_retry_after(l, SC_LIMIT_DAILY, T0 + 43200.5, &caps), 43200);
    sc_limiter_free(l);

    /* without a store the hour cannot be read: a minute */
    sc_limiter_t *bare = sc_limiter_new("Bare");
    CHECK(bare != NULL);
    if (bare)
        CHECK_EQ_INT(sc_limiter_retry_after(bare, SC_LIMIT_HOURLY, now, &caps), 60);
    sc_limiter_free(bare);
}

int main(void)
{
    char dir[] = "/tmp/sc_limits_objects_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_EQ_INT(sc_log_open(dir), 0);
    sc_log_set_level(SC_LOG_DEBUG);

    test_independent();
    test_new_and_free();
    test_retry_after();

    sc_log_close();
    char *log = read_log(dir);
    CHECK(log != NULL);
    if (log) {
        CHECK(strstr(log, "[Rate Limiter] Scene refused: concurrency_limit (1/1 in flight)"));
        CHECK(strstr(log, "[Rate Limiter] Scene refused: hourly_limit (3/3 in the last hour)"));
        CHECK(strstr(log, "[Rate Limiter] Scene admitted (in flight 1/1"));
        CHECK(strstr(log, "[Rate Limiter] Kontext admitted (in flight 1/1"));
        CHECK(strstr(log, "[Rate Limiter] Scene refused: concurrency_limit (no limiter store"));
        free(log);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/backend.log", dir);
    unlink(path);
    rmdir(dir);
    return test_report("limits_objects_test");
}
