/* The policy key layout and operations (policysrc/client.h) on a real
 * redis-server: push numbers versions 1, 2, ... and notifies subscribers;
 * get/current/history read them back (binary-safe sources); two racing
 * pushers never share a version; an unknown version is 1; a dead server
 * is an error, never a hang. */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "policysrc/client.h"
#include "redis_server.h"
#include "test.h"

static test_redis_t g_redis;
static sc_redis_target_t g_target;

static sc_polc_t *open_one(const char *prefix)
{
    char err[256];
    sc_polc_t *p = sc_polc_open(&g_target, prefix, 2.0, err, sizeof err);
    if (!p)
        fprintf(stderr, "open: %s\n", err);
    return p;
}

static void test_checksum(void)
{
    char sum[SC_POLC_CHECKSUM_LEN + 1];
    sc_polc_checksum("abc", 3, sum); /* FIPS 180-2 test vector */
    CHECK_STR(sum, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_push_get_history(void)
{
    char err[256];
    sc_polc_t *p = open_one("u1:"), *sub = open_one("u1:");
    CHECK(p && sub);
    if (!p || !sub)
        goto out;
    long long cur = -1, v = 0;
    CHECK_EQ_INT(sc_polc_current(p, 2.0, &cur, err, sizeof err), 0);
    CHECK_EQ_INT(cur, 0); /* nothing yet */
    CHECK_EQ_INT(sc_polc_subscribe(sub, 2.0, err, sizeof err), 0);

    static const char a[] = "return {}\n-- \x01\x02 nul:\0 end";
    CHECK_EQ_INT(sc_polc_push(p, a, sizeof a - 1, 0, 2.0, &v, err, sizeof err), 0);
    CHECK_EQ_INT(v, 1);
    CHECK_EQ_INT(sc_polc_push(p, "b", 1, 1, 2.0, &v, err, sizeof err), 0);
    CHECK_EQ_INT(v, 2);
    CHECK_EQ_INT(sc_polc_current(p, 2.0, &cur, err, sizeof err), 0);
    CHECK_EQ_INT(cur, 2);

    sc_polc_version_t got;
    CHECK_EQ_INT(sc_polc_get(p, 1, true, 2.0, &got, err, sizeof err), 0);
    CHECK_EQ_INT(got.len, sizeof a - 1);
    CHECK(got.source && memcmp(got.source, a, sizeof a - 1) == 0);
    char sum[SC_POLC_CHECKSUM_LEN + 1];
    sc_polc_checksum(a, sizeof a - 1, sum);
    CHECK_STR(got.checksum, sum);
    CHECK_EQ_INT(got.rollback_of, 0);
    CHECK(got.time > 1.7e9);
    sc_polc_version_free(&got);
    CHECK_EQ_INT(sc_polc_get(p, 2, false, 2.0, &got, err, sizeof err), 0);
    CHECK_EQ_INT(got.rollback_of, 1);
    CHECK(got.source == NULL);
    CHECK_EQ_INT(sc_polc_get(p, 3, true, 2.0, &got, err, sizeof err), 1);

    sc_polc_version_t *vs = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sc_polc_history(p, 2.0, &vs, &n, err, sizeof err), 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_EQ_INT(vs[0].version, 1);
        CHECK_EQ_INT(vs[1].version, 2);
        CHECK_EQ_INT(vs[1].rollback_of, 1);
    }
    free(vs);

    /* both pushes were published */
    int seen = 0;
    for (int i = 0; i < 50 && seen < 2; i++) {
        struct pollfd f = {sc_polc_fd(sub), POLLIN, 0};
        if (poll(&f, 1, 100) > 0) {
            int k = sc_polc_messages(sub);
            CHECK(k >= 0);
            seen += k > 0 ? k : 0;
        }
    }
    CHECK_EQ_INT(seen, 2);
    /* another prefix sees none of it */
    sc_polc_t *other = open_one("u2:");
    CHECK(other != NULL);
    if (other) {
        CHECK_EQ_INT(sc_polc_current(other, 2.0, &cur, err, sizeof err), 0);
        CHECK_EQ_INT(cur, 0);
        sc_polc_close(other);
    }
out:
    sc_polc_close(p);
    sc_polc_close(sub);
}

static void *pusher(void *arg)
{
    long long *got = arg;
    char err[256];
    sc_polc_t *p = open_one("race:");
    for (int i = 0; p && i < 50; i++)
        if (sc_polc_push(p, "x", 1, 0, 2.0, &got[i], err, sizeof err) != 0)
            got[i] = -1;
    sc_polc_close(p);
    return NULL;
}

static void test_race(void)
{
    long long a[50] = {0}, b[50] = {0};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, pusher, a);
    pthread_create(&t2, NULL, pusher, b);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    char seen[101] = {0};
    int dup = 0, bad = 0;
    for (int i = 0; i < 50; i++) {
        long long v[2] = {a[i], b[i]};
        for (int k = 0; k < 2; k++) {
            if (v[k] < 1 || v[k] > 100)
                bad++;
            else if (seen[v[k]]++)
                dup++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(dup, 0); /* 100 pushes, versions 1..100, each once */
}

static void test_dead_server(void)
{
    char err[256];
    sc_polc_t *p = open_one("dead:");
    CHECK(p != NULL);
    test_redis_stop(&g_redis);
    long long cur = 0;
    if (p) {
        CHECK_EQ_INT(sc_polc_current(p, 1.0, &cur, err, sizeof err), -1);
        CHECK(sc_polc_broken(p));
        sc_polc_close(p);
    }
    CHECK(sc_polc_open(&g_target, "dead:", 1.0, err, sizeof err) == NULL);
    CHECK(strstr(err, "cannot connect to Redis") != NULL);
}

int main(void)
{
    char dir[] = "/tmp/sc_policysrc_log_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_EQ_INT(sc_log_open(dir), 0);
    test_checksum();
    if (test_redis_start(&g_redis) != 0) {
        fprintf(stderr, "cannot start redis-server: the policy client tests need it\n");
        test_redis_cleanup(&g_redis);
        return 1;
    }
    char err[256];
    CHECK_EQ_INT(sc_redis_url_parse(g_redis.url, &g_target, err, sizeof err), 0);
    test_push_get_history();
    test_race();
    test_dead_server();
    test_redis_cleanup(&g_redis);
    sc_log_close();
    return test_report("policysrc_client_test");
}
