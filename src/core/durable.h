/* Group commit of atomic file replacements (issue 11): callers queue writes and
 * go on; ONE committer thread takes everything queued as a batch, writes each
 * to a temp file, fsyncs each file, renames them in queue order, fsyncs each
 * distinct directory ONCE, then completes every caller of the batch. A burst
 * of N writes costs about N file fsyncs plus one directory fsync per batch,
 * and no caller's thread waits in fsync.
 *
 * Guarantees: a write is durable (as sc_fs_write_atomic's) when its done is
 * called with 0. Writes to one path land in queue order (the last one queued
 * wins). Several writes of one path in one batch are coalesced: only the
 * newest bytes are written, and the older writes complete with it, once it is
 * durable (what they promised: their path holds their bytes or newer ones);
 * produced writes are never coalesced. A failure reaches only the callers of
 * the entries it concerns: a file's own write/fsync/rename (and the writes
 * coalesced into it), or the fsync of its directory. done is called exactly
 * once per accepted write, on the committer thread, never with the queue's
 * lock held (it may queue more writes). A deferred write (an interim state)
 * may wait a while for a newer write of its path to replace it; other writes
 * never wait for it. Stop drains the queue, deferred writes included. A missing
 * directory is created (and its parent synced) when a temp file cannot be
 * opened in it: callers need no mkdir before each write.
 *
 * Tickets: a waitable/pollable completion for callers that need one (a
 * Replicate job's gate, a thread that may block). */
#ifndef SCENECOMP_CORE_DURABLE_H
#define SCENECOMP_CORE_DURABLE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sc_durable sc_durable_t;

/* Called once per accepted write: err 0 (durable) or an errno value. */
typedef void (*sc_durable_done_fn)(int err, void *ud);

/* Produces the bytes of a write on the committer thread, as late as possible
 * (a snapshot taken then covers everything counted before it). Sets *data
 * (malloc'd, taken) and *len; returns 0 or an errno value. */
typedef int (*sc_durable_produce_fn)(void *ud, char **data, size_t *len);

typedef struct sc_durable_opts {
    /* Most writes in one batch (0 = 256). */
    int max_batch;
    /* Tests: replaces fsync(fd) of a file (is_dir false) or a directory; 0 or
     * -1 with errno. May block (a blocked committer) or count. */
    int (*fsync_hook)(int fd, const char *path, bool is_dir, void *ud);
    void *hook_ud;
} sc_durable_opts_t;

/* Starts a committer thread (opts may be NULL). NULL when out of memory. */
sc_durable_t *sc_durable_start(const sc_durable_opts_t *opts);
/* Refuses new writes, commits everything queued (done is called for each),
 * joins the thread and frees d. NULL-safe. */
void sc_durable_stop(sc_durable_t *d);

/* Queues an atomic replacement of path by len bytes of data (copied). done
 * may be NULL (fire and forget: a failure is logged). Returns 0 (done will be
 * called) or -1 (not queued: out of memory, stopped; done will not be called). */
int sc_durable_write(sc_durable_t *d, const char *path, const void *data, size_t len,
                     sc_durable_done_fn done, void *ud);
/* As sc_durable_write, taking ownership of data (malloc'd; freed also on -1). */
int sc_durable_write_take(sc_durable_t *d, const char *path, void *data, size_t len,
                          sc_durable_done_fn done, void *ud);
/* As sc_durable_write_take, for an interim state nobody waits for: the write
 * may wait up to delay seconds for a newer write of path, which then replaces
 * it (it is coalesced: not written, done called once the newer one is
 * durable). Without one it is committed once delay has passed, or at stop.
 * Other writes never wait for it. delay <= 0 is sc_durable_write_take. */
int sc_durable_write_deferred(sc_durable_t *d, const char *path, void *data, size_t len,
                              double delay, sc_durable_done_fn done, void *ud);
/* As sc_durable_write with the bytes made by produce(ud) when the batch
 * starts. done(err, ud) is called even when produce fails. */
int sc_durable_write_produced(sc_durable_t *d, const char *path, sc_durable_produce_fn produce,
                              sc_durable_done_fn done, void *ud);
/* Queues the write and waits until it is durable: for threads that may block
 * (never the compute pool). With d NULL, sc_fs_write_atomic. 0 or -1 + errno. */
int sc_durable_write_wait(sc_durable_t *d, const char *path, const void *data, size_t len);

/* Statistics since start: batches committed, writes accepted, directory and
 * file fsyncs, writes coalesced into a newer one (not written), failures. */
typedef struct sc_durable_stats {
    long long batches, writes, dir_fsyncs, file_fsyncs, coalesced, errors;
} sc_durable_stats_t;
void sc_durable_stats(sc_durable_t *d, sc_durable_stats_t *out);

/* The process's committer (set by main; NULL when none: callers then write
 * synchronously). */
sc_durable_t *sc_durable_global(void);
void sc_durable_set_global(sc_durable_t *d);

/* ==== Tickets ==== */

typedef struct sc_durable_ticket sc_durable_ticket_t;

/* A pending ticket with one reference. wake (may be NULL) is called, on the
 * completing thread, right after it completes: where a poller is woken. */
sc_durable_ticket_t *sc_durable_ticket_new(void (*wake)(void));
void sc_durable_ticket_ref(sc_durable_ticket_t *t);
void sc_durable_ticket_unref(sc_durable_ticket_t *t); /* NULL-safe */
/* 0 pending, 1 durable, -1 failed. Any thread, never blocks. */
int sc_durable_ticket_state(sc_durable_ticket_t *t);
/* Completes t (the first call wins): err 0 durable, else failed. */
void sc_durable_ticket_complete(sc_durable_ticket_t *t, int err);
/* Blocks until t completes: 0, or -1 with errno. */
int sc_durable_ticket_wait(sc_durable_ticket_t *t);
/* An sc_durable_done_fn whose ud is a ticket reference: completes and unrefs it. */
void sc_durable_ticket_done(int err, void *ud);

#endif
