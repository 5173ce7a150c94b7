/* core/durable: group commit (batches, one directory fsync per batch, every
 * caller completed once, errors to their own callers, drain on stop, tickets,
 * writes of one path coalesced, a missing directory created). */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/durable.h"
#include "core/fsutil.h"
#include "test.h"

#define N_WRITERS 64

/* The fsync hook: counts, can block the committer at its first fsync until
 * released, and can fail the fsync of paths containing fail_substr. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool block;   /* the next fsync blocks */
    bool blocked; /* the committer sits in the hook */
    atomic_int files, dirs;
    const char *fail_substr;
    bool fail_dirs_once;
} h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int hook(int fd, const char *path, bool is_dir, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&h.mu);
    if (h.block) {
        h.blocked = true;
        pthread_cond_broadcast(&h.cv);
        while (h.block)
            pthread_cond_wait(&h.cv, &h.mu);
        h.blocked = false;
    }
    bool fail = (h.fail_substr && strstr(path, h.fail_substr)) || (is_dir && h.fail_dirs_once);
    if (is_dir)
        h.fail_dirs_once = false;
    pthread_mutex_unlock(&h.mu);
    atomic_fetch_add(is_dir ? &h.dirs : &h.files, 1);
    if (fail) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static void hook_reset(void)
{
    h.block = h.blocked = false;
    atomic_store(&h.files, 0);
    atomic_store(&h.dirs, 0);
    h.fail_substr = NULL;
    h.fail_dirs_once = false;
}

static void block_committer(void)
{
    pthread_mutex_lock(&h.mu);
    h.block = true;
    pthread_mutex_unlock(&h.mu);
}

static void wait_blocked(void)
{
    pthread_mutex_lock(&h.mu);
    while (!h.blocked)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
}

static void release_committer(void)
{
    pthread_mutex_lock(&h.mu);
    h.block = false;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
}

/* Per-caller completion record. */
typedef struct {
    atomic_int calls;
    atomic_int err;
} done_t;

static void on_done(int err, void *ud)
{
    done_t *d = ud;
    atomic_store(&d->err, err);
    atomic_fetch_add(&d->calls, 1);
}

static char g_dir[64];

static void path_of(int i, char *out, size_t n)
{
    snprintf(out, n, "%s/f%02d", g_dir, i);
}

static bool file_is(const char *path, const char *want)
{
    char *txt = NULL;
    size_t len = 0;
    if (sc_fs_read_file(path, 1024, &txt, &len) != 0)
        return false;
    bool ok = len == strlen(want) && memcmp(txt, want, len) == 0;
    free(txt);
    return ok;
}

typedef struct {
    sc_durable_t *d;
    int i;
    done_t *done;
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    char path[128], text[32];
    path_of(w->i, path, sizeof path);
    snprintf(text, sizeof text, "writer %d", w->i);
    sc_durable_ticket_t *t = sc_durable_ticket_new(NULL);
    sc_durable_ticket_ref(t);
    if (sc_durable_write(w->d, path, text, strlen(text), sc_durable_ticket_done, t) == 0) {
        atomic_store(&w->done->err, sc_durable_ticket_wait(t) == 0 ? 0 : errno);
        atomic_fetch_add(&w->done->calls, 1);
    }
    sc_durable_ticket_unref(t);
    return NULL;
}

/* 64 concurrent callers, the committer held at its first fsync so the rest
 * queue up: far fewer directory fsyncs than writes, each caller done once. */
static void test_batches(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    CHECK(d != NULL);
    block_committer();
    writer_t w[N_WRITERS];
    done_t done[N_WRITERS];
    pthread_t th[N_WRITERS];
    memset(done, 0, sizeof done);
    w[0] = (writer_t){d, 0, &done[0]};
    pthread_create(&th[0], NULL, writer_main, &w[0]);
    wait_blocked(); /* the first write's batch is in its fsync */
    for (int i = 1; i < N_WRITERS; i++) {
        w[i] = (writer_t){d, i, &done[i]};
        pthread_create(&th[i], NULL, writer_main, &w[i]);
    }
    usleep(100 * 1000); /* let them queue */
    release_committer();
    for (int i = 0; i < N_WRITERS; i++)
        pthread_join(th[i], NULL);
    int ok = 0, once = 0, content = 0;
    for (int i = 0; i < N_WRITERS; i++) {
        ok += atomic_load(&done[i].err) == 0;
        once += atomic_load(&done[i].calls) == 1;
        char path[128], text[32];
        path_of(i, path, sizeof path);
        snprintf(text, sizeof text, "writer %d", i);
        content += file_is(path, text);
    }
    CHECK_EQ_INT(ok, N_WRITERS);
    CHECK_EQ_INT(once, N_WRITERS);
    CHECK_EQ_INT(content, N_WRITERS);
    sc_durable_stats_t st;
    sc_durable_stats(d, &st);
    CHECK_EQ_INT(st.writes, N_WRITERS);
    CHECK_EQ_INT(atomic_load(&h.files), N_WRITERS); /* every file is synced */
    /* one directory: one fsync per batch, and the 63 queued ones made few batches */
    CHECK_EQ_INT(atomic_load(&h.dirs), st.batches);
    CHECK(st.batches <= 4);
    CHECK_EQ_INT(st.dir_fsyncs, st.batches);
    sc_durable_stop(d);
}

/* A file's fsync failing reaches its caller only; a directory fsync failing
 * reaches every caller of that batch and none of the next. */
static void test_errors(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    done_t a[4];
    memset(a, 0, sizeof a);
    char path[128];
    block_committer();
    path_of(40, path, sizeof path);
    CHECK(sc_durable_write(d, path, "x", 1, on_done, &a[0]) == 0);
    wait_blocked();
    h.fail_substr = "bad";
    char bad[160];
    snprintf(bad, sizeof bad, "%s/bad", g_dir);
    CHECK(sc_durable_write(d, bad, "b", 1, on_done, &a[1]) == 0);
    path_of(41, path, sizeof path);
    CHECK(sc_durable_write(d, path, "good", 4, on_done, &a[2]) == 0);
    release_committer();
    sc_durable_stop(d); /* drains */
    CHECK_EQ_INT(atomic_load(&a[0].err), 0);
    CHECK_EQ_INT(atomic_load(&a[1].err), EIO);
    CHECK_EQ_INT(atomic_load(&a[2].err), 0);
    CHECK(access(bad, F_OK) != 0); /* never renamed into place */
    CHECK(file_is(path, "good"));
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(atomic_load(&a[i].calls), 1);
}

/* The directory fsync failure, deterministic: the failing batch is formed
 * while the committer is blocked, and the flag is set before release. */
static void test_dir_error(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    done_t b[4];
    memset(b, 0, sizeof b);
    char path[128];
    block_committer();
    path_of(50, path, sizeof path);
    CHECK(sc_durable_write(d, path, "1", 1, on_done, &b[0]) == 0);
    wait_blocked(); /* batch 1 in its file fsync; its dir fsync comes after the release */
    path_of(51, path, sizeof path);
    CHECK(sc_durable_write(d, path, "2", 1, on_done, &b[1]) == 0);
    path_of(52, path, sizeof path);
    CHECK(sc_durable_write(d, path, "3", 1, on_done, &b[2]) == 0);
    pthread_mutex_lock(&h.mu);
    h.fail_dirs_once = true; /* batch 1's directory fsync fails */
    h.block = false;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    sc_durable_stop(d);
    CHECK_EQ_INT(atomic_load(&b[0].err), EIO);
    CHECK_EQ_INT(atomic_load(&b[1].err), 0); /* the next batch is not touched */
    CHECK_EQ_INT(atomic_load(&b[2].err), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(atomic_load(&b[i].calls), 1);
}

typedef struct {
    sc_durable_t *d;
} stopper_t;

static void *stopper_main(void *arg)
{
    sc_durable_stop(((stopper_t *)arg)->d);
    return NULL;
}

/* Stop while writes are queued: all of them are committed and completed. */
static void test_drain(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook, .max_batch = 3};
    sc_durable_t *d = sc_durable_start(&o);
    done_t a[10];
    memset(a, 0, sizeof a);
    char path[128];
    block_committer();
    for (int i = 0; i < 10; i++) {
        path_of(60 + i, path, sizeof path);
        CHECK(sc_durable_write(d, path, "d", 1, on_done, &a[i]) == 0);
    }
    wait_blocked();
    stopper_t s = {d};
    pthread_t th;
    pthread_create(&th, NULL, stopper_main, &s);
    usleep(50 * 1000);
    release_committer();
    pthread_join(th, NULL);
    int once = 0, files = 0;
    for (int i = 0; i < 10; i++) {
        once += atomic_load(&a[i].calls) == 1 && atomic_load(&a[i].err) == 0;
        path_of(60 + i, path, sizeof path);
        files += file_is(path, "d");
    }
    CHECK_EQ_INT(once, 10);
    CHECK_EQ_INT(files, 10);
    CHECK(atomic_load(&h.dirs) >= 4); /* max_batch 3: 10 writes are 4 batches at least */
}

/* Temp files left in g_dir (a coalesced write must not leave its own). */
static int temps_left(void)
{
    DIR *dir = opendir(g_dir);
    int n = 0;
    struct dirent *de;
    while (dir && (de = readdir(dir)) != NULL)
        n += strstr(de->d_name, SC_FS_TEMP_INFIX) != NULL;
    if (dir)
        closedir(dir);
    return n;
}

/* Three writes of one path in one batch: one file is written (one fsync),
 * the newest bytes land, and every caller is completed once, after it. */
static void test_coalesce(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    done_t a[5];
    memset(a, 0, sizeof a);
    char p0[128], pa[128], pb[128];
    path_of(90, p0, sizeof p0);
    path_of(91, pa, sizeof pa);
    path_of(92, pb, sizeof pb);
    block_committer();
    CHECK(sc_durable_write(d, p0, "zero", 4, on_done, &a[0]) == 0);
    wait_blocked(); /* batch 1 = p0; the rest queue up as batch 2 */
    CHECK(sc_durable_write(d, pa, "processing", 10, on_done, &a[1]) == 0);
    CHECK(sc_durable_write(d, pb, "other", 5, on_done, &a[2]) == 0);
    CHECK(sc_durable_write(d, pa, "created", 7, NULL, NULL) == 0);
    CHECK(sc_durable_write(d, pa, "succeeded", 9, on_done, &a[3]) == 0);
    release_committer();
    sc_durable_stop(d);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(atomic_load(&a[i].calls), 1);
        CHECK_EQ_INT(atomic_load(&a[i].err), 0);
    }
    CHECK(file_is(pa, "succeeded"));
    CHECK(file_is(pb, "other"));
    CHECK(file_is(p0, "zero"));
    CHECK_EQ_INT(atomic_load(&h.files), 3); /* p0, then pa once and pb */
    CHECK_EQ_INT(atomic_load(&h.dirs), 2);  /* one per batch */
    CHECK_EQ_INT(temps_left(), 0);
}

/* The stats count coalesced writes; a coalesced write shares its winner's
 * failure; produced writes are never coalesced (each producer runs). */
static int g_produced;
/* A waiting deferred write with no done to call is dropped as soon as a newer
 * deferred write of its path waits too (a sync record's start, then its
 * prediction id): nothing is written for it, and the newer one keeps its own
 * delay. One with a done still waits for the write that replaces it. */
static void test_deferred_superseded(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    done_t a;
    memset(&a, 0, sizeof a);
    char pa[128], pb[128];
    path_of(70, pa, sizeof pa);
    path_of(71, pb, sizeof pb);
    CHECK(sc_durable_write_deferred(d, pa, strdup("start"), 5, 30.0, NULL, NULL) == 0);
    CHECK(sc_durable_write_deferred(d, pb, strdup("kept"), 4, 30.0, on_done, &a) == 0);
    usleep(20 * 1000);
    CHECK(sc_durable_write_deferred(d, pa, strdup("interim"), 7, 30.0, NULL, NULL) == 0);
    CHECK(sc_durable_write_deferred(d, pb, strdup("newer"), 5, 30.0, NULL, NULL) == 0);
    sc_durable_stats_t st = {0};
    for (int i = 0; i < 300 && st.coalesced < 1; i++) {
        usleep(10 * 1000);
        sc_durable_stats(d, &st);
    }
    CHECK_EQ_INT(st.coalesced, 1); /* "start" only: "kept" has a caller to tell */
    CHECK_EQ_INT(st.batches, 0);
    CHECK(access(pa, F_OK) != 0 && access(pb, F_OK) != 0);
    CHECK_EQ_INT(atomic_load(&a.calls), 0);
    CHECK_EQ_INT(sc_durable_write_wait(d, pa, "final", 5), 0);
    CHECK(file_is(pa, "final"));
    sc_durable_stop(d);
    CHECK(file_is(pb, "newer"));
    CHECK_EQ_INT(atomic_load(&a.calls), 1);
    CHECK_EQ_INT(atomic_load(&a.err), 0);
    CHECK_EQ_INT(atomic_load(&h.files), 2); /* "final" and "newer" */
}

static int produce(void *ud, char **data, size_t *len);

static void test_coalesce_errors_produced(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    done_t a[6];
    memset(a, 0, sizeof a);
    char p0[128], bad[160], pp[128];
    path_of(93, p0, sizeof p0);
    path_of(94, pp, sizeof pp);
    snprintf(bad, sizeof bad, "%s/badc", g_dir);
    block_committer();
    CHECK(sc_durable_write(d, p0, "zero", 4, on_done, &a[0]) == 0);
    wait_blocked();
    h.fail_substr = "badc";
    CHECK(sc_durable_write(d, bad, "1", 1, on_done, &a[1]) == 0);
    CHECK(sc_durable_write(d, bad, "2", 1, on_done, &a[2]) == 0);
    g_produced = 0;
    CHECK(sc_durable_write_produced(d, pp, produce, on_done, &a[3]) == 0);
    CHECK(sc_durable_write_produced(d, pp, produce, on_done, &a[4]) == 0);
    release_committer();
    sc_durable_stats_t st;
    sc_durable_stop(d);                        /* drains; stats read before would race the commit */
    CHECK_EQ_INT(atomic_load(&a[1].err), EIO); /* the winner's failure */
    CHECK_EQ_INT(atomic_load(&a[2].err), EIO);
    CHECK(access(bad, F_OK) != 0);
    CHECK_EQ_INT(g_produced, 2);
    CHECK_EQ_INT(atomic_load(&a[3].err), 0);
    CHECK_EQ_INT(atomic_load(&a[4].err), 0);
    CHECK(file_is(pp, "produced late"));
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(atomic_load(&a[i].calls), 1);
    CHECK_EQ_INT(temps_left(), 0);
    /* the counter, on a fresh committer: two writes of one path, one coalesced */
    hook_reset();
    d = sc_durable_start(&o);
    block_committer();
    CHECK(sc_durable_write(d, p0, "a", 1, NULL, NULL) == 0);
    wait_blocked();
    CHECK(sc_durable_write(d, pp, "b", 1, NULL, NULL) == 0);
    CHECK(sc_durable_write(d, pp, "c", 1, NULL, NULL) == 0);
    release_committer();
    sc_durable_ticket_t *t = sc_durable_ticket_new(NULL);
    sc_durable_ticket_ref(t);
    CHECK(sc_durable_write(d, p0, "d", 1, sc_durable_ticket_done, t) == 0);
    CHECK_EQ_INT(sc_durable_ticket_wait(t), 0);
    sc_durable_ticket_unref(t);
    sc_durable_stats(d, &st);
    CHECK_EQ_INT(st.writes, 4);
    CHECK_EQ_INT(st.coalesced, 1);
    CHECK_EQ_INT(st.file_fsyncs, 3);
    CHECK(file_is(pp, "c"));
    sc_durable_stop(d);
}

/* A write into a directory that does not exist (any more) creates it. */
static void test_missing_dir(void)
{
    hook_reset();
    sc_durable_t *d = sc_durable_start(NULL);
    char path[192];
    snprintf(path, sizeof path, "%s/gone/deeper/f.json", g_dir);
    CHECK_EQ_INT(sc_durable_write_wait(d, path, "{}", 2), 0);
    CHECK(file_is(path, "{}"));
    sc_durable_stop(d);
}

/* A deferred write (an interim state): replaced by a newer write of its path
 * it is never written and completes with it; alone it lands once its delay
 * passed; other writes never wait for it; stop commits it. */
static void test_deferred(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    done_t a[4];
    memset(a, 0, sizeof a);
    char pa[128], pb[128], pc[128];
    path_of(95, pa, sizeof pa);
    path_of(96, pb, sizeof pb);
    path_of(97, pc, sizeof pc);
    /* 1. replaced: one file written, both callers done, the newest bytes */
    double t0 = sc_clock_mono();
    CHECK(sc_durable_write_deferred(d, pa, strdup("created"), 7, 30.0, on_done, &a[0]) == 0);
    usleep(50 * 1000); /* the committer has taken it and holds it back */
    CHECK(access(pa, F_OK) != 0);
    CHECK_EQ_INT(atomic_load(&a[0].calls), 0);
    CHECK_EQ_INT(sc_durable_write_wait(d, pa, "succeeded", 9), 0);
    CHECK(sc_clock_mono() - t0 < 10.0);
    CHECK_EQ_INT(atomic_load(&a[0].calls), 1);
    CHECK_EQ_INT(atomic_load(&a[0].err), 0);
    CHECK(file_is(pa, "succeeded"));
    CHECK_EQ_INT(atomic_load(&h.files), 1);
    /* 2. alone: lands after its delay */
    CHECK(sc_durable_write_deferred(d, pb, strdup("interim"), 7, 0.3, on_done, &a[1]) == 0);
    usleep(100 * 1000);
    CHECK(access(pb, F_OK) != 0);
    for (int i = 0; i < 200 && atomic_load(&a[1].calls) == 0; i++)
        usleep(10 * 1000);
    CHECK_EQ_INT(atomic_load(&a[1].calls), 1);
    CHECK(file_is(pb, "interim"));
    /* 3. others do not wait for it; stop commits it */
    CHECK(sc_durable_write_deferred(d, pc, strdup("late"), 4, 30.0, on_done, &a[2]) == 0);
    t0 = sc_clock_mono();
    CHECK_EQ_INT(sc_durable_write_wait(d, pb, "other", 5), 0);
    CHECK(sc_clock_mono() - t0 < 10.0);
    CHECK(access(pc, F_OK) != 0);
    sc_durable_stats_t st;
    sc_durable_stats(d, &st);
    CHECK_EQ_INT(st.coalesced, 1);
    sc_durable_stop(d);
    CHECK_EQ_INT(atomic_load(&a[2].calls), 1);
    CHECK_EQ_INT(atomic_load(&a[2].err), 0);
    CHECK(file_is(pc, "late"));
    CHECK_EQ_INT(temps_left(), 0);
}

/* Writes of one path stay in queue order around a deferred one: an older
 * deferred write goes with (before) a newer write of its path, never after. */
static void test_deferred_order(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    char pa[128];
    path_of(98, pa, sizeof pa);
    CHECK(sc_durable_write_deferred(d, pa, strdup("1"), 1, 30.0, NULL, NULL) == 0);
    usleep(20 * 1000);
    CHECK(sc_durable_write_deferred(d, pa, strdup("2"), 1, 0.05, NULL, NULL) == 0);
    /* "2" is due first: "1" must go with it (replaced), not land later */
    usleep(300 * 1000);
    CHECK(file_is(pa, "2"));
    sc_durable_stop(d);
    CHECK(file_is(pa, "2"));
    CHECK_EQ_INT(atomic_load(&h.files), 1);
}

static int produce(void *ud, char **data, size_t *len)
{
    (void)ud;
    g_produced++;
    *data = strdup("produced late");
    *len = strlen(*data);
    return 0;
}

/* One path written three times in one batch: the last one wins. A produced
 * write gets its bytes on the committer. A ticket is pending until commit. */
static void test_order_produce_ticket(void)
{
    hook_reset();
    sc_durable_opts_t o = {.fsync_hook = hook};
    sc_durable_t *d = sc_durable_start(&o);
    char path[128], p2[128];
    path_of(80, path, sizeof path);
    path_of(81, p2, sizeof p2);
    block_committer();
    CHECK(sc_durable_write(d, p2, "first", 5, NULL, NULL) == 0);
    wait_blocked();
    sc_durable_ticket_t *t = sc_durable_ticket_new(NULL);
    sc_durable_ticket_ref(t);
    CHECK(sc_durable_write(d, path, "1", 1, NULL, NULL) == 0);
    CHECK(sc_durable_write(d, path, "2", 1, NULL, NULL) == 0);
    CHECK(sc_durable_write(d, path, "3", 1, sc_durable_ticket_done, t) == 0);
    CHECK(sc_durable_write_produced(d, p2, produce, NULL, NULL) == 0);
    CHECK_EQ_INT(g_produced, 0);
    CHECK_EQ_INT(sc_durable_ticket_state(t), 0);
    release_committer();
    CHECK_EQ_INT(sc_durable_ticket_wait(t), 0);
    CHECK_EQ_INT(sc_durable_ticket_state(t), 1);
    sc_durable_ticket_unref(t);
    sc_durable_stop(d);
    CHECK(file_is(path, "3"));
    CHECK(file_is(p2, "produced late"));
    CHECK_EQ_INT(g_produced, 1);
    /* the synchronous helper without a committer is sc_fs_write_atomic */
    CHECK_EQ_INT(sc_durable_write_wait(NULL, path, "4", 1), 0);
    CHECK(file_is(path, "4"));
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/sc_durable_test_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_batches();
    test_errors();
    test_dir_error();
    test_drain();
    test_order_produce_ticket();
    test_coalesce();
    test_coalesce_errors_produced();
    test_missing_dir();
    test_deferred();
    test_deferred_order();
    test_deferred_superseded();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", g_dir);
    return test_report("core_durable_test");
}
