/* Cost of one routing decision: sc_policy_route in a loop, as a request thread
 * calls it, with a given POLICY_FILE (or the embedded default when it does not
 * exist).
 *
 *   route_bench STAGE POLICY_FILE LOGS_DIR [--target-s S]
 *
 * Prints `tool=scenecomp stage=STAGE ns=MEDIAN min_ns=… max_ns=… n=… route=kontext|pil`.
 * The median is over batches of 1000 calls (one clock read per batch, so the
 * clock does not dominate a sub-microsecond call). The request alternates
 * between a few user ids so a bucket/hash cost is not cached by accident. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "limits/limiter.h"
#include "limits/store.h"
#include "lua/policy.h"
#include "metrics/metrics.h"

#define BATCH 1000
#define MAX_BATCHES 100000

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s STAGE POLICY_FILE LOGS_DIR [--target-s S]\n", argv[0]);
        return 2;
    }
    double target = 1.0;
    if (argc >= 6 && strcmp(argv[4], "--target-s") == 0)
        target = atof(argv[5]);
    static sc_config_t cfg;
    sc_config_defaults(&cfg);
    snprintf(cfg.policy_file, sizeof cfg.policy_file, "%s", argv[2]);
    snprintf(cfg.logs_dir, sizeof cfg.logs_dir, "%s", argv[3]);
    if (sc_log_open(cfg.logs_dir) != 0) {
        fprintf(stderr, "route_bench: cannot open the log in %s\n", cfg.logs_dir);
        return 1;
    }
    sc_log_set_level(sc_log_level_parse("error"));
    sc_limits_store_t *store = sc_limits_memory_new();
    if (!store)
        return 1;
    sc_limiter_init(store);
    if (sc_metrics_init(&cfg, sc_limiter_store()) != 0) {
        fprintf(stderr, "route_bench: metrics init failed\n");
        return 1;
    }
    char err[1024] = "";
    if (sc_policy_init(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "route_bench: policy: %s\n", err);
        return 1;
    }
    static const char *users[] = {"ops-1", "user-17", "user-4242", "customer-abc", NULL};
    sc_policy_req_t req = {.prompt = "place the product on the table",
                           .scene_w = 1920,
                           .scene_h = 1080,
                           .product_w = 1000,
                           .product_h = 1000,
                           .product_alpha = true};
    sc_policy_effective_t eff;
    int kontext = 0;
    /* warm-up: builds this thread's lua_State for the generation */
    for (int i = 0; i < 10 * BATCH; i++) {
        req.user_id = users[i % 5];
        kontext += sc_policy_route(&req, &eff) == SC_ROUTE_KONTEXT;
    }
    static double per[MAX_BATCHES];
    int n = 0;
    double t_end = sc_clock_mono() + target;
    kontext = 0;
    while (n < MAX_BATCHES && (n < 20 || sc_clock_mono() < t_end)) {
        double t0 = sc_clock_mono();
        for (int i = 0; i < BATCH; i++) {
            req.user_id = users[i % 5];
            kontext += sc_policy_route(&req, &eff) == SC_ROUTE_KONTEXT;
        }
        per[n++] = (sc_clock_mono() - t0) * 1e9 / BATCH;
    }
    qsort(per, (size_t)n, sizeof *per, cmp_d);
    printf("tool=scenecomp stage=%s ns=%.1f min_ns=%.1f max_ns=%.1f n=%d kontext_share=%.2f\n",
           argv[1], per[n / 2], per[0], per[n - 1], n * BATCH,
           (double)kontext / ((double)n * BATCH));
    sc_policy_shutdown();
    sc_metrics_shutdown();
    sc_limiter_shutdown();
    return 0;
}
