/* Circuit breaker: transitions at a fake clock, stale tickets, disabling, and
 * the half-open trial cap under real concurrency. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>

#include "replicate/breaker.h"
#include "test.h"

static sc_breaker_params_t params(double rate, int min_calls, double window, double open,
                                  int half_open)
{
    sc_breaker_params_t p = {true, rate, min_calls, window, open, half_open};
    return p;
}

/* Admits and records one outcome at t. */
static void call(sc_breaker_t *b, const sc_breaker_params_t *p, double t, sc_breaker_outcome_t o)
{
    sc_breaker_ticket_t tk;
    CHECK(sc_breaker_admit(b, p, t, &tk));
    sc_breaker_record(b, &tk, o, t);
}

static sc_breaker_state_t state_at(sc_breaker_t *b, double t)
{
    sc_breaker_snapshot_t s;
    sc_breaker_snapshot(b, t, &s);
    return s.state;
}

static void test_defaults(void)
{
    sc_breaker_params_t p;
    sc_breaker_params_default(&p, true);
    CHECK(p.enabled);
    CHECK(p.failure_rate == 0.5);
    CHECK_EQ_INT(p.min_calls, 10);
    CHECK(p.window_seconds == 60);
    CHECK(p.open_seconds == 30);
    CHECK_EQ_INT(p.half_open_calls, 1);
    CHECK_STR(sc_breaker_state_name(SC_BREAKER_HALF_OPEN), "half_open");
}

static void test_opens_at_min_calls_and_rate(void)
{
    sc_breaker_t *b = sc_breaker_new(1000);
    sc_breaker_params_t p = params(0.5, 4, 10, 5, 1);
    /* 3 failures: below min_calls, stays closed */
    for (int i = 0; i < 3; i++)
        call(b, &p, 1000 + i, SC_BREAKER_FAILURE);
    CHECK_EQ_INT(state_at(b, 1003), SC_BREAKER_CLOSED);
    sc_breaker_snapshot_t s;
    sc_breaker_snapshot(b, 1003, &s);
    CHECK_EQ_INT(s.calls, 3);
    CHECK(s.failure_rate == 1.0);
    /* a success makes 4 calls, 3 failed = 75 % >= 50 %: opens */
    call(b, &p, 1003.5, SC_BREAKER_SUCCESS);
    CHECK_EQ_INT(state_at(b, 1003.5), SC_BREAKER_OPEN);
    sc_breaker_snapshot(b, 1003.5, &s);
    CHECK(s.since == 1003.5);
    /* open: every admit refused, no ticket */
    sc_breaker_ticket_t tk;
    CHECK(!sc_breaker_admit(b, &p, 1008.4, &tk));
    CHECK_EQ_INT(tk.epoch, 0);
    sc_breaker_free(b);
}

static void test_rate_exactly_at_threshold_and_below(void)
{
    sc_breaker_t *b = sc_breaker_new(0);
    sc_breaker_params_t p = params(0.5, 4, 10, 5, 1);
    call(b, &p, 1, SC_BREAKER_FAILURE);
    call(b, &p, 1, SC_BREAKER_SUCCESS);
    call(b, &p, 1, SC_BREAKER_SUCCESS);
    call(b, &p, 1, SC_BREAKER_SUCCESS); /* 1/4 = 25 % */
    CHECK_EQ_INT(state_at(b, 1), SC_BREAKER_CLOSED);
    call(b, &p, 2, SC_BREAKER_FAILURE); /* 2/5 = 40 % */
    CHECK_EQ_INT(state_at(b, 2), SC_BREAKER_CLOSED);
    call(b, &p, 2, SC_BREAKER_FAILURE); /* 3/6 = 50 %: >= rate */
    CHECK_EQ_INT(state_at(b, 2), SC_BREAKER_OPEN);
    sc_breaker_free(b);
}

static void test_window_slides(void)
{
    sc_breaker_t *b = sc_breaker_new(0);
    sc_breaker_params_t p = params(0.5, 3, 10, 5, 1);
    call(b, &p, 0, SC_BREAKER_FAILURE);
    call(b, &p, 1, SC_BREAKER_FAILURE);
    /* 11 s later the first two left the window: one failure of one call < min_calls */
    call(b, &p, 11.5, SC_BREAKER_FAILURE);
    CHECK_EQ_INT(state_at(b, 11.5), SC_BREAKER_CLOSED);
    sc_breaker_snapshot_t s;
    sc_breaker_snapshot(b, 11.5, &s);
    CHECK_EQ_INT(s.calls, 1);
    sc_breaker_snapshot(b, 30, &s);
    CHECK_EQ_INT(s.calls, 0);
    CHECK(isnan(s.failure_rate));
    sc_breaker_free(b);
}

static void test_half_open_then_closed_or_reopened(void)
{
    sc_breaker_t *b = sc_breaker_new(0);
    sc_breaker_params_t p = params(0.5, 2, 10, 5, 1);
    call(b, &p, 0, SC_BREAKER_FAILURE);
    call(b, &p, 0, SC_BREAKER_FAILURE);
    CHECK_EQ_INT(state_at(b, 0), SC_BREAKER_OPEN);
    CHECK_EQ_INT(state_at(b, 4.99), SC_BREAKER_OPEN);
    CHECK_EQ_INT(state_at(b, 5), SC_BREAKER_HALF_OPEN);
    sc_breaker_ticket_t t1, t2;
    CHECK(sc_breaker_admit(b, &p, 5.1, &t1));
    CHECK(t1.trial);
    CHECK(!sc_breaker_admit(b, &p, 5.2, &t2)); /* half_open_calls = 1 */
    /* a failure re-opens for another open_seconds */
    sc_breaker_record(b, &t1, SC_BREAKER_FAILURE, 6);
    CHECK_EQ_INT(state_at(b, 6), SC_BREAKER_OPEN);
    CHECK(!sc_breaker_admit(b, &p, 10.9, &t2));
    CHECK(sc_breaker_admit(b, &p, 11, &t1));
    CHECK(t1.trial);
    /* a success closes; the window is empty again */
    sc_breaker_record(b, &t1, SC_BREAKER_SUCCESS, 12);
    sc_breaker_snapshot_t s;
    sc_breaker_snapshot(b, 12, &s);
    CHECK_EQ_INT(s.state, SC_BREAKER_CLOSED);
    CHECK_EQ_INT(s.calls, 0);
    CHECK(s.since == 12);
    CHECK(sc_breaker_admit(b, &p, 12, &t2));
    CHECK(!t2.trial);
    sc_breaker_release(b, &t2, 12);
    sc_breaker_free(b);
}

static void test_release_frees_trial_slot(void)
{
    sc_breaker_t *b = sc_breaker_new(0);
    sc_breaker_params_t p = params(0.5, 1, 10, 1, 2);
    call(b, &p, 0, SC_BREAKER_FAILURE);
    sc_breaker_ticket_t a, c, d;
    CHECK(sc_breaker_admit(b, &p, 2, &a));
    CHECK(sc_breaker_admit(b, &p, 2, &c));
    CHECK(!sc_breaker_admit(b, &p, 2, &d));
    sc_breaker_release(b, &a, 2); /* e.g. the limiter refused: no outcome */
    CHECK_EQ_INT(a.epoch, 0);
    CHECK_EQ_INT(state_at(b, 2), SC_BREAKER_HALF_OPEN);
    CHECK(sc_breaker_admit(b, &p, 2, &d));
    sc_breaker_release(b, &a, 2); /* cleared ticket: harmless */
    CHECK(!sc_breaker_admit(b, &p, 2, &a));
    sc_breaker_record(b, &c, SC_BREAKER_SUCCESS, 3);
    CHECK_EQ_INT(state_at(b, 3), SC_BREAKER_CLOSED);
    /* d was a trial of the half-open epoch: its late failure is ignored */
    sc_breaker_record(b, &d, SC_BREAKER_FAILURE, 3);
    CHECK_EQ_INT(state_at(b, 3), SC_BREAKER_CLOSED);
    sc_breaker_snapshot_t s;
    sc_breaker_snapshot(b, 3, &s);
    CHECK_EQ_INT(s.calls, 0);
    sc_breaker_free(b);
}

static void test_stale_outcomes_ignored(void)
{
    sc_breaker_t *b = sc_breaker_new(0);
    sc_breaker_params_t p = params(0.5, 2, 100, 5, 1);
    sc_breaker_ticket_t slow[3];
    for (int i = 0; i < 3; i++)
        CHECK(sc_breaker_admit(b, &p, 0, &slow[i]));
    call(b, &p, 1, SC_BREAKER_FAILURE);
    call(b, &p, 1, SC_BREAKER_FAILURE);
    CHECK_EQ_INT(state_at(b, 1), SC_BREAKER_OPEN);
    sc_breaker_ticket_t t;
    CHECK(sc_breaker_admit(b, &p, 6, &t));
    sc_breaker_record(b, &t, SC_BREAKER_SUCCESS, 6);
    CHECK_EQ_INT(state_at(b, 6), SC_BREAKER_CLOSED);
    /* the outage's slow predictions time out now: they must not re-open it */
    for (int i = 0; i < 3; i++)
        sc_breaker_record(b, &slow[i], SC_BREAKER_FAILURE, 7);
    CHECK_EQ_INT(state_at(b, 7), SC_BREAKER_CLOSED);
    sc_breaker_free(b);
}

static void test_disabled(void)
{
    sc_breaker_t *b = sc_breaker_new(0);
    sc_breaker_params_t p = params(0.5, 1, 10, 100, 1);
    call(b, &p, 0, SC_BREAKER_FAILURE);
    CHECK_EQ_INT(state_at(b, 0), SC_BREAKER_OPEN);
    sc_breaker_params_t off = p;
    off.enabled = false;
    sc_breaker_ticket_t t;
    CHECK(sc_breaker_admit(b, &off, 1, &t)); /* off: everything passes */
    CHECK_EQ_INT(t.epoch, 0);
    for (int i = 0; i < 5; i++)
        sc_breaker_record(b, &t, SC_BREAKER_FAILURE, 1);
    sc_breaker_snapshot_t s;
    sc_breaker_snapshot(b, 1, &s);
    CHECK_EQ_INT(s.state, SC_BREAKER_CLOSED);
    CHECK(!s.enabled);
    /* on again: starts closed and empty */
    CHECK(sc_breaker_admit(b, &p, 2, &t));
    CHECK(!t.trial);
    sc_breaker_record(b, &t, SC_BREAKER_SUCCESS, 2);
    CHECK_EQ_INT(state_at(b, 2), SC_BREAKER_CLOSED);
    CHECK(sc_breaker_admit(b, NULL, 2, &t)); /* NULL params: keep */
    sc_breaker_release(b, &t, 2);
    sc_breaker_free(b);
}

/* ==== Concurrency: never more than half_open_calls trials ==== */

#define NTHREADS 8
#define ROUNDS 300

typedef struct {
    sc_breaker_t *b;
    sc_breaker_params_t p;
    atomic_int *in_trial, *max_trial, *admitted;
    atomic_int *go;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    while (!atomic_load(w->go))
        ;
    for (int i = 0; i < ROUNDS; i++) {
        sc_breaker_ticket_t t;
        if (!sc_breaker_admit(w->b, &w->p, 100, &t))
            continue;
        atomic_fetch_add(w->admitted, 1);
        if (t.trial) {
            int n = atomic_fetch_add(w->in_trial, 1) + 1;
            int m = atomic_load(w->max_trial);
            while (n > m && !atomic_compare_exchange_weak(w->max_trial, &m, n))
                ;
            for (volatile int k = 0; k < 2000; k++)
                ;
            atomic_fetch_sub(w->in_trial, 1);
        }
        /* no outcome: the trial slot goes back, the breaker stays half-open */
        sc_breaker_release(w->b, &t, 100);
    }
    return NULL;
}

static void test_half_open_exact_under_concurrency(int half_open_calls)
{
    sc_breaker_t *b = sc_breaker_new(0);
    sc_breaker_params_t p = params(0.5, 1, 10, 5, half_open_calls);
    call(b, &p, 0, SC_BREAKER_FAILURE); /* open; half-open from t = 5 */
    atomic_int in_trial = 0, max_trial = 0, admitted = 0, go = 0;
    pthread_t th[NTHREADS];
    worker_t w = {b, p, &in_trial, &max_trial, &admitted, &go};
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, &w) == 0);
    atomic_store(&go, 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    CHECK(atomic_load(&max_trial) <= half_open_calls);
    CHECK(atomic_load(&max_trial) >= 1);
    CHECK(atomic_load(&admitted) >= 1);
    sc_breaker_snapshot_t s;
    sc_breaker_snapshot(b, 100, &s);
    CHECK_EQ_INT(s.state, SC_BREAKER_HALF_OPEN);
    CHECK_EQ_INT(s.trials, 0);
    sc_breaker_free(b);
}

/* Trials decided concurrently: with 3 slots and many racing threads, exactly
 * 3 tickets are trials until one records a result. */
typedef struct {
    sc_breaker_t *b;
    sc_breaker_params_t p;
    atomic_int *go, *trials;
} racer_t;

static void *racer(void *arg)
{
    racer_t *r = arg;
    while (!atomic_load(r->go))
        ;
    sc_breaker_ticket_t t;
    if (sc_breaker_admit(r->b, &r->p, 50, &t) && t.trial)
        atomic_fetch_add(r->trials, 1);
    return NULL;
}

static void test_trial_race(void)
{
    for (int round = 0; round < 20; round++) {
        sc_breaker_t *b = sc_breaker_new(0);
        sc_breaker_params_t p = params(0.5, 1, 10, 5, 3);
        call(b, &p, 0, SC_BREAKER_FAILURE);
        atomic_int go = 0, trials = 0;
        racer_t r = {b, p, &go, &trials};
        pthread_t th[16];
        for (int i = 0; i < 16; i++)
            CHECK(pthread_create(&th[i], NULL, racer, &r) == 0);
        atomic_store(&go, 1);
        for (int i = 0; i < 16; i++)
            pthread_join(th[i], NULL);
        CHECK_EQ_INT(atomic_load(&trials), 3);
        sc_breaker_free(b);
    }
}

int main(void)
{
    test_defaults();
    test_opens_at_min_calls_and_rate();
    test_rate_exactly_at_threshold_and_below();
    test_window_slides();
    test_half_open_then_closed_or_reopened();
    test_release_frees_trial_slot();
    test_stale_outcomes_ignored();
    test_disabled();
    test_half_open_exact_under_concurrency(1);
    test_half_open_exact_under_concurrency(3);
    test_trial_race();
    return test_report("replicate_breaker_test");
}
