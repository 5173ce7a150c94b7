/* The process-wide limiter: fails closed without a store, forwards to the
 * installed one, and writes the `[Rate Limiter]` lines ops grep for. */
#include <stdlib.h>
#include <string.h>
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

int main(void)
{
    char dir[] = "/tmp/sc_limiter_test_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_EQ_INT(sc_log_open(dir), 0);
    sc_log_set_level(SC_LOG_DEBUG);

    /* no store installed: refuse (never unlimited), counts are zero */
    sc_limits_caps_t caps = {2, 3, 100};
    CHECK(sc_limiter_store() == NULL);
    sc_limits_token_t t1, t2, t3, t4;
    CHECK_EQ_INT(sc_limiter_take(T0, &caps, &t1), SC_LIMIT_CONCURRENCY);
    CHECK_STR(t1.s, "");
    sc_limiter_release(&t1); /* harmless */
    sc_limits_counts_t c = {-1, -1, -1};
    sc_limiter_counts(T0, &c);
    CHECK_EQ_INT(c.in_flight, 0);
    CHECK_EQ_INT(c.last_hour, 0);
    CHECK_EQ_INT(c.today, 0);

    CHECK_EQ_INT(sc_limiter_idem_claim(T0, "k", "f", "r", 60, NULL), SC_IDEM_UNAVAILABLE);
    CHECK_EQ_INT(sc_limiter_idem_forget("k"), -1);

    sc_limits_store_t *s = sc_limits_memory_new();
    sc_limiter_init(s);
    sc_idem_existing_t ex;
    CHECK_EQ_INT(sc_limiter_idem_claim(T0, "k", "f", "r1", 60, NULL), SC_IDEM_CLAIMED);
    CHECK_EQ_INT(sc_limiter_idem_claim(T0, "k", "g", "r2", 60, &ex), SC_IDEM_EXISTING);
    CHECK_STR(ex.record_id, "r1");
    CHECK_EQ_INT(sc_limiter_idem_forget("k"), 0);
    CHECK_EQ_INT(sc_limiter_idem_claim(T0, "k", "g", "r2", 60, NULL), SC_IDEM_CLAIMED);
    CHECK(sc_limiter_store() == s);
    CHECK_EQ_INT(sc_limiter_take(T0 + 10, &caps, &t1), SC_LIMIT_OK);
    CHECK_EQ_INT(sc_limiter_take(T0 + 11, &caps, &t2), SC_LIMIT_OK);
    CHECK(strlen(t1.s) == 32 && strcmp(t1.s, t2.s) != 0);
    CHECK_EQ_INT(sc_limiter_take(T0 + 12, &caps, &t3), SC_LIMIT_CONCURRENCY);
    sc_limiter_release(&t1);
    CHECK_STR(t1.s, ""); /* emptied: a second release is a no-op */
    sc_limiter_release(&t1);
    CHECK_EQ_INT(sc_limiter_take(T0 + 13, &caps, &t3), SC_LIMIT_OK);
    sc_limiter_release(&t3);
    CHECK_EQ_INT(sc_limiter_take(T0 + 14, &caps, &t4), SC_LIMIT_HOURLY);
    sc_limits_caps_t daily = {5, 50, 3};
    CHECK_EQ_INT(sc_limiter_take(T0 + 15, &daily, &t4), SC_LIMIT_DAILY);
    CHECK(sc_limiter_available());
    sc_limiter_counts(T0 + 16, &c);
    CHECK_EQ_INT(c.in_flight, 1);
    CHECK_EQ_INT(c.last_hour, 3);
    CHECK_EQ_INT(c.today, 3);

    /* replacing the store destroys the old one (ASan would see a leak otherwise) */
    sc_limiter_release(&t2);
    sc_limiter_init(sc_limits_memory_new());
    sc_limiter_counts(T0 + 16, &c);
    CHECK_EQ_INT(c.today, 0);
    sc_limiter_shutdown();
    CHECK(sc_limiter_store() == NULL);

    sc_log_close();
    char *log = read_log(dir);
    CHECK(log != NULL);
    if (log) {
        CHECK(strstr(log, "[Rate Limiter] Kontext refused: concurrency_limit (2/2 in flight)"));
        CHECK(strstr(log, "[Rate Limiter] Kontext refused: hourly_limit (3/3 in the last hour)"));
        CHECK(strstr(log, "[Rate Limiter] Kontext refused: daily_limit (3/3 today, UTC)"));
        CHECK(strstr(
            log, "[Rate Limiter] Kontext admitted (in flight 1/2, last hour 1/3, today 1/100)"));
        CHECK(strstr(log, "no limiter store installed"));
        free(log);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/backend.log", dir);
    unlink(path);
    rmdir(dir);
    return test_report("limits_limiter_test");
}
