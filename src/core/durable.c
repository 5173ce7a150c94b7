/* Group commit (see core/durable.h). One committer thread; the queue is a
 * FIFO list under mu. A batch: coalesce writes to one path -> produce ->
 * write temps -> fsync each file -> rename in order -> fsync each distinct
 * directory once -> done callbacks. Deferred writes wait in a list of the
 * committer's own until they are due or a newer write of their path comes. */
#include "core/durable.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/log.h"

#define DURABLE_DEFAULT_BATCH 256
/* No linger before a round (PostgreSQL's commit_delay, default 0, is the same
 * choice): writes that arrive while a round's fsyncs run form the next batch
 * anyway. A 4 ms linger under load was tried: in a burst of 1,000 Kontext
 * composites it saved directory fsyncs but no CPU and no latency, and with
 * arrivals spread over 4 s it added ~30 ms to the median answer (every
 * request waits for two rounds: its start count, then its record). */

typedef struct entry {
    struct entry *next;
    char *path;
    char *data;
    size_t len;
    sc_durable_produce_fn produce;
    sc_durable_done_fn done;
    void *ud;
    double due; /* a deferred write: committed at this sc_clock_mono() at the latest */
    bool deferred;
    /* committer only */
    bool go;              /* split_due: committed in this round */
    bool superseded;      /* split_due: a newer waiting write of its path replaces it */
    struct entry *winner; /* a later write of the same path in the batch: this one is
                             not written, it completes with the winner */
    char *tmp;            /* the temp file's name, made when the write is committed: a
                             deferred write waits without it */
    int fd;
    int err;
    bool renamed;
    size_t dir; /* index in the batch's directory table */
} entry_t;

struct sc_durable {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    entry_t *head, *tail;
    bool stopping;
    pthread_t thread;
    int max_batch;
    int (*fsync_hook)(int fd, const char *path, bool is_dir, void *ud);
    void *hook_ud;
    sc_durable_stats_t st; /* under mu */
};

static _Atomic(sc_durable_t *) g_global;

sc_durable_t *sc_durable_global(void)
{
    return atomic_load(&g_global);
}

void sc_durable_set_global(sc_durable_t *d)
{
    atomic_store(&g_global, d);
}

static int do_fsync(sc_durable_t *d, int fd, const char *path, bool is_dir)
{
    if (d->fsync_hook)
        return d->fsync_hook(fd, path, is_dir, d->hook_ud);
    return fsync(fd);
}

/* The directory part of path ("." when none) into out. */
static void dir_of(const char *path, char *out, size_t n)
{
    snprintf(out, n, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash)
        *(slash == out ? slash + 1 : slash) = '\0';
    else
        snprintf(out, n, ".");
}

static void entry_free(entry_t *e)
{
    free(e->tmp);
    free(e->path);
    free(e->data);
    free(e);
}

/* Creates the missing directory dir (and its parents), then syncs dir's
 * parent so the new entry survives a crash like the file's own rename. Only
 * after an ENOENT: the directories exist from start-up, so the common save
 * costs no mkdir. 0 or -1 with errno. */
static int make_dir(sc_durable_t *d, const char *dir)
{
    if (sc_fs_mkdirs(dir) != 0)
        return -1;
    char parent[PATH_MAX];
    dir_of(dir, parent, sizeof parent);
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0)
        return -1;
    int rc = do_fsync(d, pfd, parent, true);
    int e = errno;
    close(pfd);
    errno = e;
    return rc;
}

/* Opens and fills e's temp file; sets e->err on failure. */
static void write_temp(sc_durable_t *d, entry_t *e)
{
    size_t cap = strlen(e->path) + sizeof SC_FS_TEMP_INFIX + 8;
    if (!(e->tmp = malloc(cap))) {
        e->err = ENOMEM;
        return;
    }
    e->fd = sc_fs_open_temp(e->path, O_WRONLY, 0644, e->tmp, cap);
    if (e->fd < 0 && errno == ENOENT) {
        char dir[PATH_MAX];
        dir_of(e->path, dir, sizeof dir);
        if (make_dir(d, dir) == 0)
            e->fd = sc_fs_open_temp(e->path, O_WRONLY, 0644, e->tmp, cap);
    }
    if (e->fd < 0) {
        e->err = errno;
        return;
    }
    if (sc_fs_write_all(e->fd, e->data ? e->data : "", e->len) != 0)
        e->err = errno;
}

/* ==== Writes by path ==== */

/* An open-addressing table of entries by path, for one round of the
 * committer: at most n entries, so it is never full. */
typedef struct path_table {
    entry_t **slot;
    size_t mask;
} path_table_t;

static int table_init(path_table_t *t, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    t->slot = calloc(cap, sizeof *t->slot);
    t->mask = cap - 1;
    return t->slot ? 0 : -1;
}

/* The slot of path: the entry stored for it, or an empty slot to store one. */
static entry_t **table_slot(path_table_t *t, const char *path)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = path; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    size_t i = (size_t)h & t->mask;
    while (t->slot[i] && strcmp(t->slot[i]->path, path) != 0)
        i = (i + 1) & t->mask;
    return &t->slot[i];
}

/* Marks every write that a later write of the same path in this batch
 * replaces: only the newest bytes of a path are written (the states in
 * between were never promised durable, and a reader could see them only for
 * a moment). Produced writes are never coalesced: their producer takes part
 * in a protocol (a snapshot covers its waiters) and runs for each one. n is
 * the batch's size; without memory nothing is coalesced. Returns how many. */
static long long coalesce(entry_t *batch, size_t n)
{
    path_table_t t;
    if (table_init(&t, n) != 0)
        return 0;
    for (entry_t *e = batch; e; e = e->next) /* each path's last data write */
        if (!e->produce)
            *table_slot(&t, e->path) = e;
    long long coalesced = 0;
    for (entry_t *e = batch; e; e = e->next) {
        entry_t *last = e->produce ? e : *table_slot(&t, e->path);
        if (last != e) {
            e->winner = last;
            coalesced++;
        }
    }
    free(t.slot);
    return coalesced;
}

/* Splits cand (the deferred writes, then the ones just taken from the queue:
 * queue order) into the writes committed now, returned, and the deferred ones
 * that still wait (*wait, order kept). A deferred write goes now when it is
 * due, when all is set (stop), or when a newer write of its path goes now:
 * deciding from the newest back, an older write of a path never stays behind
 * a newer one, so writes of one path still land in queue order. A waiting
 * deferred write with no done to call and a newer write of its path that
 * waits too is superseded: it goes to *dropped, never written (the newer one
 * carries its path, on its own delay). Without memory everything goes now. */
static entry_t *split_due(entry_t *cand, double now, bool all, entry_t **wait, entry_t **dropped)
{
    size_t n = 0;
    for (entry_t *e = cand; e; e = e->next)
        n++;
    entry_t **v = malloc(n * sizeof *v);
    path_table_t t = {NULL, 0}, newest = {NULL, 0};
    *wait = *dropped = NULL;
    if (!v || table_init(&t, n) != 0 || table_init(&newest, n) != 0) {
        free(t.slot);
        free(v);
        return cand;
    }
    n = 0;
    for (entry_t *e = cand; e; e = e->next)
        v[n++] = e;
    for (size_t i = n; i-- > 0;) {
        entry_t **slot = table_slot(&t, v[i]->path), **seen = table_slot(&newest, v[i]->path);
        v[i]->go = all || !v[i]->deferred || v[i]->due <= now || *slot;
        if (v[i]->go && !*slot)
            *slot = v[i];
        v[i]->superseded = !v[i]->go && !v[i]->done && *seen;
        if (!*seen)
            *seen = v[i];
    }
    entry_t *go = NULL, **go_tail = &go, **wait_tail = wait;
    for (size_t i = 0; i < n; i++) {
        v[i]->next = NULL;
        if (v[i]->superseded) {
            v[i]->next = *dropped;
            *dropped = v[i];
        } else if (v[i]->go) {
            *go_tail = v[i];
            go_tail = &v[i]->next;
        } else {
            *wait_tail = v[i];
            wait_tail = &v[i]->next;
        }
    }
    free(newest.slot);
    free(t.slot);
    free(v);
    return go;
}

static void commit(sc_durable_t *d, entry_t *batch)
{
    size_t n = 0;
    for (entry_t *e = batch; e; e = e->next)
        n++;
    char(*dirs)[PATH_MAX] = malloc(n * sizeof *dirs);
    int *dir_err = calloc(n, sizeof *dir_err);
    size_t ndirs = 0;
    long long file_fsyncs = 0, errors = 0;
    long long coalesced = n > 1 ? coalesce(batch, n) : 0;

    /* 1. bytes and temp files */
    for (entry_t *e = batch; e; e = e->next) {
        e->fd = -1;
        if (e->winner)
            continue;
        if (e->produce) {
            e->err = e->produce(e->ud, &e->data, &e->len);
            if (e->err)
                continue;
        }
        write_temp(d, e);
    }
    /* 2. each file to disk (its data before its name) */
    for (entry_t *e = batch; e; e = e->next) {
        if (e->fd < 0)
            continue;
        if (!e->err) {
            file_fsyncs++;
            if (do_fsync(d, e->fd, e->path, false) != 0)
                e->err = errno ? errno : EIO;
        }
        if (close(e->fd) != 0 && !e->err)
            e->err = errno;
        e->fd = -1;
        if (e->err)
            unlink(e->tmp);
    }
    /* 3. renames in queue order, so the last write of a path wins */
    for (entry_t *e = batch; e; e = e->next) {
        if (e->err || e->winner)
            continue;
        if (rename(e->tmp, e->path) != 0) {
            e->err = errno;
            unlink(e->tmp);
            continue;
        }
        e->renamed = true;
        char dir[PATH_MAX];
        dir_of(e->path, dir, sizeof dir);
        size_t k = 0;
        while (dirs && k < ndirs && strcmp(dirs[k], dir) != 0)
            k++;
        if (dirs && k == ndirs)
            memcpy(dirs[ndirs++], dir, sizeof dir);
        e->dir = k;
    }
    /* 4. each directory once: the renames survive a crash */
    for (size_t k = 0; k < ndirs; k++) {
        int dfd = open(dirs[k], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            dir_err[k] = errno;
            continue;
        }
        if (do_fsync(d, dfd, dirs[k], true) != 0)
            dir_err[k] = errno ? errno : EIO;
        close(dfd);
    }
    for (entry_t *e = batch; e; e = e->next) {
        if (e->renamed && !dirs)
            e->err = ENOMEM; /* no table: the directories could not be synced */
        else if (e->renamed && dir_err[e->dir])
            e->err = dir_err[e->dir];
    }
    for (entry_t *e = batch; e; e = e->next) {
        if (e->winner)
            e->err = e->winner->err; /* durable when, and only when, its winner is */
        if (e->err)
            errors++;
    }
    pthread_mutex_lock(&d->mu);
    d->st.batches++;
    d->st.writes += (long long)n;
    d->st.dir_fsyncs += (long long)ndirs;
    d->st.file_fsyncs += file_fsyncs;
    d->st.coalesced += coalesced;
    d->st.errors += errors;
    pthread_mutex_unlock(&d->mu);
    free(dirs);
    free(dir_err);
    /* 5. the callers, outside the lock (a callback may queue more) */
    while (batch) {
        entry_t *e = batch;
        batch = e->next;
        if (e->done)
            e->done(e->err, e->ud);
        else if (e->err)
            sc_log_error("durable: cannot write %s: %s", e->path, strerror(e->err));
        entry_free(e);
    }
}

/* The earliest due time of the deferred writes w (non-empty). */
static double earliest_due(const entry_t *w)
{
    double due = w->due;
    for (; w; w = w->next)
        if (w->due < due)
            due = w->due;
    return due;
}

/* Waits (mu held) until the queue has writes, stop is asked, or the first of
 * the deferred writes in wait is due. */
static void wait_for_work(sc_durable_t *d, const entry_t *wait)
{
    while (!d->head && !d->stopping) {
        if (!wait) {
            pthread_cond_wait(&d->cv, &d->mu);
            continue;
        }
        double due = earliest_due(wait);
        if (due <= sc_clock_mono())
            return;
        struct timespec ts;
        ts.tv_sec = (time_t)due;
        ts.tv_nsec = (long)((due - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&d->cv, &d->mu, &ts); /* the cv runs on CLOCK_MONOTONIC */
    }
}

static void *committer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-durable"); /* top -H, perf */
    sc_durable_t *d = arg;
    entry_t *wait = NULL; /* deferred writes not yet due, queue order */
    for (;;) {
        pthread_mutex_lock(&d->mu);
        wait_for_work(d, wait);
        bool stopping = d->stopping;
        if (!d->head && !wait && stopping) { /* stopping and drained */
            pthread_mutex_unlock(&d->mu);
            break;
        }
        entry_t *taken = d->head, *last = taken;
        for (int i = 1; last && i < d->max_batch && last->next; i++)
            last = last->next;
        if (last) {
            d->head = last->next;
            if (!d->head)
                d->tail = NULL;
            last->next = NULL;
        }
        pthread_mutex_unlock(&d->mu);
        /* the deferred writes are older than anything just taken */
        entry_t **end = &wait;
        while (*end)
            end = &(*end)->next;
        *end = taken;
        entry_t *dropped;
        entry_t *batch = split_due(wait, sc_clock_mono(), stopping, &wait, &dropped);
        if (dropped) {
            long long k = 0;
            while (dropped) {
                entry_t *next = dropped->next;
                entry_free(dropped);
                dropped = next;
                k++;
            }
            pthread_mutex_lock(&d->mu);
            d->st.writes += k;
            d->st.coalesced += k;
            pthread_mutex_unlock(&d->mu);
        }
        if (batch)
            commit(d, batch);
    }
    return NULL;
}

sc_durable_t *sc_durable_start(const sc_durable_opts_t *opts)
{
    sc_durable_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadlines are sc_clock_mono() */
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    d->max_batch = opts && opts->max_batch > 0 ? opts->max_batch : DURABLE_DEFAULT_BATCH;
    d->fsync_hook = opts ? opts->fsync_hook : NULL;
    d->hook_ud = opts ? opts->hook_ud : NULL;
    if (pthread_create(&d->thread, NULL, committer_main, d) != 0) {
        pthread_cond_destroy(&d->cv);
        pthread_mutex_destroy(&d->mu);
        free(d);
        return NULL;
    }
    return d;
}

void sc_durable_stop(sc_durable_t *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    sc_durable_t *expected = d;
    atomic_compare_exchange_strong(&g_global, &expected, NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static int enqueue(sc_durable_t *d, entry_t *e)
{
    pthread_mutex_lock(&d->mu);
    if (d->stopping) {
        pthread_mutex_unlock(&d->mu);
        return -1;
    }
    if (d->tail)
        d->tail->next = e;
    else
        d->head = e;
    d->tail = e;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return 0;
}

static entry_t *entry_new(const char *path, sc_durable_done_fn done, void *ud)
{
    entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->path = strdup(path);
    if (!e->path) {
        free(e);
        return NULL;
    }
    e->done = done;
    e->ud = ud;
    return e;
}

int sc_durable_write_take(sc_durable_t *d, const char *path, void *data, size_t len,
                          sc_durable_done_fn done, void *ud)
{
    return sc_durable_write_deferred(d, path, data, len, 0, done, ud); /* delay 0: not deferred */
}

int sc_durable_write_deferred(sc_durable_t *d, const char *path, void *data, size_t len,
                              double delay, sc_durable_done_fn done, void *ud)
{
    entry_t *e = d && path ? entry_new(path, done, ud) : NULL;
    if (!e) {
        free(data);
        return -1;
    }
    e->data = data;
    e->len = len;
    e->deferred = delay > 0;
    e->due = sc_clock_mono() + (delay > 0 ? delay : 0);
    if (enqueue(d, e) != 0) {
        entry_free(e);
        return -1;
    }
    return 0;
}

int sc_durable_write(sc_durable_t *d, const char *path, const void *data, size_t len,
                     sc_durable_done_fn done, void *ud)
{
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    if (len)
        memcpy(copy, data, len);
    return sc_durable_write_take(d, path, copy, len, done, ud);
}

int sc_durable_write_produced(sc_durable_t *d, const char *path, sc_durable_produce_fn produce,
                              sc_durable_done_fn done, void *ud)
{
    entry_t *e = d && path && produce ? entry_new(path, done, ud) : NULL;
    if (!e)
        return -1;
    e->produce = produce;
    if (enqueue(d, e) != 0) {
        entry_free(e);
        return -1;
    }
    return 0;
}

int sc_durable_write_wait(sc_durable_t *d, const char *path, const void *data, size_t len)
{
    if (!d)
        return sc_fs_write_atomic(path, data, len);
    sc_durable_ticket_t *t = sc_durable_ticket_new(NULL);
    if (!t) {
        errno = ENOMEM;
        return -1;
    }
    sc_durable_ticket_ref(t); /* the write's */
    if (sc_durable_write(d, path, data, len, sc_durable_ticket_done, t) != 0) {
        sc_durable_ticket_unref(t);
        sc_durable_ticket_unref(t);
        errno = ECANCELED;
        return -1;
    }
    int rc = sc_durable_ticket_wait(t);
    int e = errno;
    sc_durable_ticket_unref(t);
    errno = e;
    return rc;
}

void sc_durable_stats(sc_durable_t *d, sc_durable_stats_t *out)
{
    pthread_mutex_lock(&d->mu);
    *out = d->st;
    pthread_mutex_unlock(&d->mu);
}

/* ==== Tickets ==== */

struct sc_durable_ticket {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int state; /* 0 pending, 1 durable, -1 failed */
    int err;
    atomic_int refs;
    void (*wake)(void);
};

sc_durable_ticket_t *sc_durable_ticket_new(void (*wake)(void))
{
    sc_durable_ticket_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    atomic_init(&t->state, 0);
    atomic_init(&t->refs, 1);
    t->wake = wake;
    return t;
}

void sc_durable_ticket_ref(sc_durable_ticket_t *t)
{
    atomic_fetch_add(&t->refs, 1);
}

void sc_durable_ticket_unref(sc_durable_ticket_t *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

int sc_durable_ticket_state(sc_durable_ticket_t *t)
{
    return atomic_load(&t->state);
}

void sc_durable_ticket_complete(sc_durable_ticket_t *t, int err)
{
    pthread_mutex_lock(&t->mu);
    bool first = atomic_load(&t->state) == 0;
    if (first) {
        t->err = err;
        atomic_store(&t->state, err ? -1 : 1);
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    if (first && t->wake)
        t->wake();
}

int sc_durable_ticket_wait(sc_durable_ticket_t *t)
{
    pthread_mutex_lock(&t->mu);
    while (atomic_load(&t->state) == 0)
        pthread_cond_wait(&t->cv, &t->mu);
    int err = t->err;
    pthread_mutex_unlock(&t->mu);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

void sc_durable_ticket_done(int err, void *ud)
{
    sc_durable_ticket_t *t = ud;
    sc_durable_ticket_complete(t, err);
    sc_durable_ticket_unref(t);
}
