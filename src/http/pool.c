/* The compute pool: a few threads (one per core) that run the CPU-heavy part
 * of composite requests (decode, policy, composite, encode, save).
 *
 * Why not on the MHD workers: MHD pins a connection to the worker that accepted
 * it and accepts connections in bursts, so a handful of keep-alive clients can
 * all land on one worker and leave the other cores idle. A suspended connection
 * whose work sits in this shared queue is picked up by whichever core is free.
 * FIFO, unbounded (each entry is a suspended connection, and those are bounded
 * by MHD's connection limit). */
#include <pthread.h>
#include <stdlib.h>

#include "core/log.h"
#include "http/conn.h"

typedef struct job {
    struct job *next;
    void (*fn)(void *);
    void *arg;
} job_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    bool stopping;
    int nthreads;
    pthread_t *threads;
} g_pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *pool_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-compute"); /* top -H, perf */
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g_pool.mu);
        while (!g_pool.head && !g_pool.stopping)
            pthread_cond_wait(&g_pool.cv, &g_pool.mu);
        job_t *j = g_pool.head;
        if (!j) { /* stopping and drained */
            pthread_mutex_unlock(&g_pool.mu);
            return NULL;
        }
        g_pool.head = j->next;
        if (!g_pool.head)
            g_pool.tail = NULL;
        pthread_mutex_unlock(&g_pool.mu);
        j->fn(j->arg);
        free(j);
    }
}

int sc_http__pool_start(int nthreads)
{
    g_pool.stopping = false;
    g_pool.threads = calloc((size_t)nthreads, sizeof *g_pool.threads);
    if (!g_pool.threads)
        return -1;
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&g_pool.threads[i], NULL, pool_main, NULL) != 0) {
            sc_log_error("http: cannot start compute thread %d", i);
            g_pool.nthreads = i;
            sc_http__pool_stop();
            return -1;
        }
        g_pool.nthreads = i + 1;
    }
    return 0;
}

int sc_http__pool_submit(void (*fn)(void *), void *arg)
{
    job_t *j = malloc(sizeof *j);
    if (!j)
        return -1;
    j->next = NULL;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&g_pool.mu);
    if (g_pool.stopping || g_pool.nthreads == 0) {
        pthread_mutex_unlock(&g_pool.mu);
        free(j);
        return -1;
    }
    if (g_pool.tail)
        g_pool.tail->next = j;
    else
        g_pool.head = j;
    g_pool.tail = j;
    pthread_cond_signal(&g_pool.cv);
    pthread_mutex_unlock(&g_pool.mu);
    return 0;
}

void sc_http__pool_stop(void)
{
    pthread_mutex_lock(&g_pool.mu);
    g_pool.stopping = true;
    pthread_cond_broadcast(&g_pool.cv);
    pthread_mutex_unlock(&g_pool.mu);
    for (int i = 0; i < g_pool.nthreads; i++)
        pthread_join(g_pool.threads[i], NULL);
    free(g_pool.threads);
    g_pool.threads = NULL;
    g_pool.nthreads = 0;
}
