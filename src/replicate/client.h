/* Replicate predictions client on libcurl's multi interface, driven by ONE I/O
 * thread. A submitted job runs: create (POST /models/{owner}/{name}/predictions,
 * `Prefer: wait=N`, `Cancel-After` as a backstop) -> poll `urls.get` until a
 * terminal status -> download the output (https: or data: URI) -> done callback.
 * 429 (Retry-After, body retry_after, else backoff) and 5xx/transport errors on
 * GETs are retried while the deadline allows; when the deadline passes the
 * prediction is cancelled upstream (POST urls.cancel) and the job ends as
 * SC_REP_TIMEOUT. The token goes only in the Authorization header and is never
 * copied into a message. The I/O thread never touches Lua.
 *
 * A job may watch its client's socket (sc_replicate_submit_ex): when the peer
 * closes it (FIN or RST) the job ends at once as SC_REP_CLIENT_GONE and its
 * prediction is cancelled upstream, as soon as its id is known (a create still in
 * its `Prefer: wait` is left to answer first, then cancelled).
 *
 * With a journal (sc_replicate_journal_open), the id of every created prediction
 * is appended to it until the prediction is over; at the next start the ids a
 * dead process left open are cancelled upstream.
 *
 * Threads: sc_replicate_submit may be called from any thread; callbacks run on
 * the I/O thread and must be short (e.g. store the result, resume a connection). */
#ifndef SCENECOMP_REPLICATE_CLIENT_H
#define SCENECOMP_REPLICATE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/durable.h"

typedef enum {
    SC_REP_OK = 0,
    SC_REP_TIMEOUT,   /* deadline passed anywhere (create, poll, download) */
    SC_REP_API_ERROR, /* failed/canceled/aborted prediction, HTTP error after retries, bad JSON */
    SC_REP_INVALID_OUTPUT, /* output missing, not an image, or of insane size */
    SC_REP_NO_TOKEN,       /* REPLICATE_API_TOKEN unset */
    SC_REP_CLIENT_GONE,    /* the watched client socket closed; nobody wants the result */
} sc_rep_status_t;

typedef struct sc_rep_result {
    sc_rep_status_t status;
    char message[512];      /* upstream reason, e.g. "prediction failed: ... (E005)" */
    char prediction_id[64]; /* "" if none was created */
    uint8_t *output;        /* downloaded bytes of the first output (owned) */
    size_t output_len;
    int http_status;  /* last HTTP status seen from the API (0 = none) */
    int attempts;     /* HTTP requests made for the create (retries included) */
    bool cancel_sent; /* POST .../cancel was sent */
    bool gate_closed; /* the job's gate failed: nothing was sent (SC_REP_API_ERROR) */
    double seconds;   /* submit to done */
} sc_rep_result_t;

/* Called exactly once per accepted job, on the I/O thread. Takes ownership of
 * res: free it with sc_rep_result_free (any thread). */
typedef void (*sc_rep_done_fn)(sc_rep_result_t *res, void *ud);

/* Starts the I/O thread. cfg must outlive the client. Returns 0 or -1. */
int sc_replicate_init(const sc_config_t *cfg);

/* Queues a prediction of model ("owner/name") with input_json (a JSON object
 * text for "input"; ownership is taken, freed by the client). The job's deadline
 * is now + timeout_seconds. Returns 0 (done will be called) or -1 (not queued:
 * out of memory or client stopped; done will NOT be called; input_json freed).
 * With no token configured, the job completes at once as SC_REP_NO_TOKEN. */
int sc_replicate_submit(const char *model, char *input_json, double timeout_seconds,
                        sc_rep_done_fn done, void *ud);

typedef struct sc_rep_opts {
    /* >= 0: the client's socket. Its peer closing ends the job as
     * SC_REP_CLIENT_GONE: done is called at once, the job goes on alone just
     * long enough to cancel the prediction. The fd must stay open until done. */
    int client_fd;
    /* When not NULL: called exactly once per accepted job, on the I/O thread,
     * once the prediction no longer runs upstream (terminal, cancel answered, or
     * never created). Before done for a job that ends normally; after it for a
     * client that went away while its create was waiting. Where a caller gives
     * back a concurrency slot. */
    void (*upstream_over)(void *ud);
    void *upstream_ud;
    /* When not NULL: called once on the I/O thread as soon as the create
     * answered with the prediction's id (before any poll), so a caller can make
     * the id durable (a record resumed after a crash polls it instead of
     * creating again). Must be short. */
    void (*on_created)(const char *prediction_id, void *ud);
    void *created_ud;
    /* When not NULL (issue 11, write-ahead): the create is not sent before
     * this ticket is durable; the job is queued at once and its deadline runs.
     * A failed ticket ends the job as SC_REP_API_ERROR with gate_closed set
     * and nothing sent. The job takes its own reference. Whoever completes the
     * ticket must wake the client: create it with sc_replicate_wake. */
    sc_durable_ticket_t *gate;
} sc_rep_opts_t;

/* Wakes the I/O thread (a gate opened). Any thread; no-op when stopped. */
void sc_replicate_wake(void);

/* sc_replicate_submit with options (opts may be NULL). On -1 neither callback
 * is called. */
int sc_replicate_submit_ex(const char *model, char *input_json, double timeout_seconds,
                           const sc_rep_opts_t *opts, sc_rep_done_fn done, void *ud);

/* Opens (creates) the prediction journal at path, after sc_replicate_init:
 * every id still open in it (left by a process that died) gets a cancel
 * request, in the background. Returns the number of such ids, or -1 when the
 * file cannot be read or written (the client then runs without a journal). */
int sc_replicate_journal_open(const char *path);

/* As sc_replicate_journal_open, except that the ids in keep_ids (nkeep of
 * them) are not cancelled: they stay in the journal for sc_replicate_adopt. */
int sc_replicate_journal_open_keep(const char *path, const char *const *keep_ids, size_t nkeep);
/* Adopts a prediction created by an earlier process (its id from a durable
 * record): polls it (never creates it again) until it is over or the deadline
 * (now + timeout_seconds) passes, then cancels it upstream as a submitted job
 * would; done and opts as sc_replicate_submit_ex (client_fd usually -1).
 * Returns 0 (done will be called) or -1 (bad id, out of memory, stopped). */
int sc_replicate_adopt(const char *prediction_id, double timeout_seconds, const sc_rep_opts_t *opts,
                       sc_rep_done_fn done, void *ud);
void sc_replicate_result_free(sc_rep_result_t *res);
const char *sc_replicate_status_name(sc_rep_status_t s); /* "ok","timeout","api_error",... */

/* issue 11: uploads data to the Files API (POST {base}/files, multipart part
 * `content` named filename with content_type) within timeout_seconds. done is
 * called once on the I/O thread: SC_REP_OK with the file object's JSON text in
 * res->output (output_len bytes, not NUL-terminated), else SC_REP_API_ERROR /
 * SC_REP_TIMEOUT / SC_REP_NO_TOKEN with a message. data is copied. Returns 0,
 * or -1 (not queued, done will not be called). */
int sc_replicate_upload(const char *filename, const char *content_type, const uint8_t *data,
                        size_t len, double timeout_seconds, sc_rep_done_fn done, void *ud);
/* As sc_replicate_upload, reading the len bytes from exactly one source it takes
 * over (closed / freed when the job ends, and on -1): offset 0 of the file fd
 * (read with pread while the request is sent, so a spooled upload is never
 * copied into memory), or the malloc'd buffer data (fd -1). */
int sc_replicate_upload_src(const char *filename, const char *content_type, int fd, uint8_t *data,
                            size_t len, double timeout_seconds, sc_rep_done_fn done, void *ud);

/* Stops the I/O thread: pending jobs complete with SC_REP_TIMEOUT after their
 * upstream predictions are cancelled (best effort). */
void sc_replicate_shutdown(void);

#endif
