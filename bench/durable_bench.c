/* Atomic writes per second: sc_fs_write_atomic from one thread vs 64
 * concurrent callers through the group committer (core/durable.h).
 * Usage: durable_bench DIR [N] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/durable.h"
#include "core/fsutil.h"

#define CALLERS 64

static const char *g_dir;
static int g_per;
static sc_durable_t *g_d;

static void *caller(void *arg)
{
    long id = (long)arg;
    char path[512], text[64];
    for (int i = 0; i < g_per; i++) {
        snprintf(path, sizeof path, "%s/b%ld_%d.json", g_dir, id, i);
        int n = snprintf(text, sizeof text, "{\"caller\": %ld, \"i\": %d}\n", id, i);
        if (sc_durable_write_wait(g_d, path, text, (size_t)n) != 0)
            perror("write");
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: durable_bench DIR [N]\n");
        return 2;
    }
    g_dir = argv[1];
    int n = argc > 2 ? atoi(argv[2]) : 640;
    char path[512];
    double t0 = sc_clock_mono();
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/s%d.json", g_dir, i);
        if (sc_fs_write_atomic(path, "{\"x\": 1}\n", 9) != 0)
            perror("write");
    }
    double single = sc_clock_mono() - t0;
    printf("tool=durable_bench mode=sync_1_thread writes=%d seconds=%.3f writes_per_s=%.0f\n", n,
           single, n / single);

    g_d = sc_durable_start(NULL);
    g_per = n / CALLERS > 0 ? n / CALLERS : 1;
    pthread_t th[CALLERS];
    t0 = sc_clock_mono();
    for (long i = 0; i < CALLERS; i++)
        pthread_create(&th[i], NULL, caller, (void *)i);
    for (int i = 0; i < CALLERS; i++)
        pthread_join(th[i], NULL);
    double batched = sc_clock_mono() - t0;
    sc_durable_stats_t st;
    sc_durable_stats(g_d, &st);
    sc_durable_stop(g_d);
    printf("tool=durable_bench mode=batched_%d_callers writes=%lld seconds=%.3f writes_per_s=%.0f "
           "batches=%lld dir_fsyncs=%lld\n",
           CALLERS, st.writes, batched, st.writes / batched, st.batches, st.dir_fsyncs);
    return 0;
}
