/* Admission cost: one take + one release of a concurrency slot, memory store
 * against the Redis store (one EVALSHA + one ZREM over loopback; the ZREM,
 * which the store normally sends from its own thread, is sent inline here so
 * both round trips are timed), single thread, N pairs timed one by one;
 * prints p50/p99 in microseconds.
 *
 *   limits_bench memory [N]
 *   limits_bench redis redis://127.0.0.1:6379/0 [N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "limits/store.h"
#include "limits/store_redis.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "redis") == 0 && argc < 3)) {
        fprintf(stderr, "usage: limits_bench memory [N] | limits_bench redis URL [N]\n");
        return 2;
    }
    bool redis = strcmp(argv[1], "redis") == 0;
    int n = atoi(argc > (redis ? 3 : 2) ? argv[redis ? 3 : 2] : (redis ? "5000" : "200000"));
    if (n < 100)
        n = 100;
    char err[256] = "";
    sc_limits_store_t *s = NULL;
    if (redis) {
        sc_limits_redis_opts_t o = {.url = argv[2],
                                    .prefix = "bench:",
                                    .instance_id = "bench",
                                    .version = SC_VERSION,
                                    .request_budget = 1.0};
        s = sc_limits_redis_new(&o, err, sizeof err);
    } else {
        s = sc_limits_memory_new();
    }
    if (!s) {
        fprintf(stderr, "limits_bench: %s\n", err);
        return 1;
    }
    /* Caps far away: every take is admitted (the cost of the full path). */
    sc_limits_caps_t caps = {1000000, 100000000, 100000000};
    double *us = malloc((size_t)n * sizeof *us);
    int refused = 0;
    for (int i = 0; i < n / 10; i++) { /* warm-up: connection, script load */
        sc_limits_token_t t;
        if (s->take(s, sc_clock_wall(), &caps, &t, NULL) == SC_LIMIT_OK)
            s->release(s, &t);
        if (redis)
            sc_limits_redis__drain(s);
    }
    for (int i = 0; i < n; i++) {
        sc_limits_token_t t;
        double t0 = sc_clock_mono();
        sc_limit_result_t r = s->take(s, sc_clock_wall(), &caps, &t, NULL);
        if (r == SC_LIMIT_OK) {
            s->release(s, &t);
            if (redis)
                sc_limits_redis__drain(s);
        } else {
            refused++;
        }
        us[i] = (sc_clock_mono() - t0) * 1e6;
    }
    qsort(us, (size_t)n, sizeof *us, cmp);
    printf("tool=scenecomp stage=admission_%s p50_us=%.2f p99_us=%.2f n=%d refused=%d\n",
           redis ? "redis" : "memory", us[n / 2], us[(size_t)((double)n * 0.99)], n, refused);
    free(us);
    s->reset(s);
    s->destroy(s);
    return refused ? 1 : 0;
}
