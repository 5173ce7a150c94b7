/* Internal to src/http: the per-connection context, the response helpers and
 * the route handlers, shared by server.c (dispatch, lifecycle), composite.c,
 * scenes.c, admin.c and files.c. Not used outside src/http.
 *
 * Lifecycle of a context (why the refcount): it is created at the first call of
 * the access handler and referenced once by the request; a Replicate job takes a
 * second reference, dropped by its done callback on the curl I/O thread after it
 * resumed the connection. MHD's "request completed" notification drops the
 * request's reference. Whichever drop comes last frees it, so the callback never
 * touches freed memory, also when the client went away while suspended.
 *
 * Where the work runs: upload parsing on the MHD worker that owns the
 * connection; the CPU-heavy rest of a composite on the compute pool (pool.c),
 * with the connection suspended. A pool job does not queue its answer (MHD only
 * allows that inside the access handler): sc_http__deliver stashes it in the
 * context, the job resumes the connection, and the handler queues it. */
#ifndef SCENECOMP_HTTP_CONN_H
#define SCENECOMP_HTTP_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <microhttpd.h>

#include "compose/compose.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/durable.h"
#include "core/spool.h"
#include "image/codec.h"
#include "image/image.h"
#include "image/place.h"
#include "limits/store.h"
#include "lua/policy.h"
#include "records/record.h"
#include "replicate/breaker.h"
#include "replicate/client.h"

/* Bounds for the small multipart text fields and JSON bodies. */
#define SC_HTTP_MAX_TEXT_FIELD (64 * 1024)
#define SC_HTTP_MAX_JSON_BODY (64 * 1024)
/* POST /api/admin/policy/preview: a policy file (the sandbox loads at most 1 MiB). */
#define SC_HTTP_MAX_POLICY_BODY (1024 * 1024)
/* Bytes past MAX_UPLOAD_BYTES a chunked upload may still send (dropped, not
 * buffered) before the connection is cut instead of answered with a 413. */
#define SC_HTTP_DRAIN_BYTES (1024 * 1024)

typedef enum {
    SC_HTTP_ROUTE_NONE = 0,
    SC_HTTP_ROUTE_COMPOSITE,  /* POST /api/composite */
    SC_HTTP_ROUTE_SCENES,     /* POST /api/scenes */
    SC_HTTP_ROUTE_ADMIN_POST, /* POST /api/admin/... with a body we ignore */
    SC_HTTP_ROUTE_PREVIEW     /* POST /api/admin/policy/preview (body = a policy file) */
} sc_http_route_t;

typedef enum {
    SC_STAGE_UPLOAD = 0, /* receiving the body */
    SC_STAGE_JOB,        /* suspended, a compute-pool job runs */
    SC_STAGE_WAITING,    /* suspended, a Replicate job runs */
    SC_STAGE_DONE        /* a response was queued */
} sc_http_stage_t;

/* Where a connection stands, for the edge watchdog (edge.c). */
typedef enum {
    SC_EDGE_HEADERS = 0, /* waiting for the request headers (deadline applies) */
    SC_EDGE_BODY,        /* reading a request body */
    SC_EDGE_BUSY,        /* the request is being handled or answered */
    SC_EDGE_IDLE         /* keep-alive, between requests */
} sc_edge_phase_t;

typedef struct sc_http_edge sc_http_edge_t;

/* One text or file field of the multipart form. A file field whose size
 * passes UPLOAD_SPOOL_BYTES while it streams in moves to spool (issue 11,
 * memory): data is then empty and the bytes are read from the spool while a
 * pool job works on them (composite.c uploads_hold / uploads_release), so a
 * request waiting on Kontext holds a file descriptor instead of heap. */
typedef struct sc_http_field {
    sc_buf_t data;
    sc_spool_t *spool; /* NULL unless spooled */
    bool present;
} sc_http_field_t;

typedef struct sc_http_conn {
    atomic_int refs;
    struct MHD_Connection *mhd;
    const sc_config_t *cfg;
    sc_http_route_t route;
    sc_http_stage_t stage;
    double t_start; /* monotonic, body complete */
    long long body_bytes;
    long long budget_held; /* bytes of MAX_BUFFERED_UPLOAD_BYTES this request holds */
    bool budget_announced; /* Content-Length was taken whole at the start */
    sc_http_edge_t *edge;  /* the connection's watchdog entry (may be NULL) */
    bool refused;          /* an error was already decided while uploading */
    int refused_status;
    const char *refused_code;
    char refused_msg[256];

    /* POST /api/composite upload */
    struct sc_multipart *mp;
    sc_http_field_t f_scene, f_product, f_prompt, f_user_id, f_x, f_y, f_scale, f_format;
    sc_http_field_t f_mask, f_quality, f_shadow; /* PIL options (issue 12) */
    sc_http_field_t f_webhook;
    bool uploads_held; /* the spooled file fields are readable (composite.c) */

    /* POST /api/scenes and other bodies */
    sc_buf_t body;

    /* Kept across the suspension of a Kontext / scene request. The uploads
     * stay encoded (f_scene, f_product, f_mask) with their header facts in
     * probe; they are decoded only when PIL runs (issue 11). */
    sc_compose_probe_t probe;
    sc_image_t scene, product; /* decoded for PIL (product: header only on a cache hit) */
    sc_image_t mask;           /* the `mask` upload, decoded for PIL (empty when absent) */
    sc_compose_opts_t copts;   /* quality, mask, shadow for the PIL path */
    uint8_t product_sha[32];   /* the product cache's key (image/pcache.h) */
    uint8_t *scene_icc;        /* the scene's ICC profile (image/icc.h), NULL if none */
    sc_place_params_t params;
    sc_image_format_t format;
    bool want_image; /* Accept: image/... */
    sc_policy_req_t preq;
    sc_policy_effective_t eff;
    char id[33];
    double t_kontext; /* monotonic, submit */
    /* A Kontext start between its inputs and its submit (issue 11: the Files
     * API uploads run first): the limiter token's copy for the job, the
     * write-ahead gate, and the client socket the job will watch. */
    sc_limits_token_t *k_slot;
    sc_durable_ticket_t *k_wal;
    int k_fd;
    bool limiter_held;
    sc_limits_token_t limiter_slot; /* the slot held while limiter_held */
    sc_rep_result_t *result;        /* set by the done callback before resuming */
    struct MHD_Response *pending;   /* answer stashed by a pool job */
    unsigned pending_status;
    void (*job)(struct sc_http_conn *c); /* what the pool runs next */
    /* scenes */
    double t_scene;

    /* Records (records.c): the composite's record from its routing on (NULL
     * before), the decision's explanation, stage timings (seconds). */
    sc_record_t *rec;
    sc_policy_explain_t why;
    double t_job; /* monotonic, the pool job started */
    /* Prefer: respond-async: answered 202 and detached (sc_http__detach) */
    bool async;
    bool detached;
    bool resumed;     /* a record left processing by a dead process (composite resume) */
    char idem_fp[65]; /* POST /api/scenes: the fingerprint of an Idempotency-Key request */
    sc_limits_token_t scene_slot; /* from the take until the job owns its copy */
    /* issue 11: the circuit breaker's ticket of a Kontext start, handed back
     * when the prediction ends (record) or without an outcome (release) */
    sc_breaker_ticket_t breaker_ticket;
    /* issue 11: a sync answer waits for its output and final record to be
     * durable without holding a compute thread. dur_hold counts the running
     * job (1) plus its queued writes; the last to finish resumes the
     * connection. dur_err: a write failed (errno): the answer becomes a 500. */
    atomic_int dur_hold;
    atomic_int dur_err;
} sc_http_conn_t;

void sc_http__conn_ref(sc_http_conn_t *c);
void sc_http__conn_unref(sc_http_conn_t *c);

/* Suspends c's connection (MHD thread, inside the handler); the suspension
 * holds a reference, given back by the one sc_http__resume that ends it (any
 * thread). */
void sc_http__suspend(sc_http_conn_t *c);
void sc_http__resume(sc_http_conn_t *c);
/* The Replicate done callback's resume: stores res (owned by c from now on), resumes. */
void sc_http__resume_from_callback(sc_http_conn_t *c, sc_rep_result_t *res);

/* Suspends c and runs job on the compute pool (inline when the pool refuses).
 * The job answers through the sc_http__send helpers; then the connection is
 * resumed and the stashed answer queued. Call inside the access handler. */
enum MHD_Result sc_http__offload(sc_http_conn_t *c, void (*job)(sc_http_conn_t *c));
/* Called by a pool job just before it hands its suspended connection to a
 * Replicate job: the pool will not resume it, the done callback will. The job
 * must not touch c once the submit succeeded. */
void sc_http__hand_off(sc_http_conn_t *c);

/* Pool job only, its answer stashed: gives the connection back to MHD with
 * that answer now and keeps c for the work that goes on (API.md
 * `Prefer: respond-async`). Afterwards c->mhd must not be used; answers the
 * job still sends are dropped. */
void sc_http__detach(sc_http_conn_t *c);
/* Marks a context made without a connection (a record resumed at start) as
 * detached work (counted by sc_http_suspended until it ends). */
void sc_http__detached_new(sc_http_conn_t *c);
/* Runs job on the compute pool for a detached c (its work's reference passes
 * to the job; a detached Replicate callback uses it instead of resuming). */
void sc_http__run_detached(sc_http_conn_t *c, void (*job)(sc_http_conn_t *c));

/* issue 11, group commit (core/durable.h). Inside c's own pool job for a
 * connection (not detached): the answer the job stashes is sent only once
 * every write tracked here is durable; the job's thread does not wait (the
 * connection stays suspended, the committer resumes it). Returns true when
 * the write may be tracked (then sc_http__durable_done(err, c) must be its
 * done callback), false when the caller writes untracked (detached work,
 * another thread, no committer). */
bool sc_http__durable_track(sc_http_conn_t *c);
void sc_http__durable_done(int err, void *c);
/* The write-ahead gate of a Kontext start (records.c): a ticket that
 * completes once a metrics save covering the start just counted is durable
 * (sc_metrics_start_gate: often at once, within a burst's reservation), for
 * the Replicate job's opts.gate; NULL when there is no committer (the caller
 * then flushes synchronously). */
sc_durable_ticket_t *sc_http__count_gate(void);

/* Compute pool (pool.c): nthreads threads running queued fn(arg), FIFO. */
int sc_http__pool_start(int nthreads);
/* Returns 0, or -1 (out of memory, or stopping) when fn will not run. */
int sc_http__pool_submit(void (*fn)(void *), void *arg);
/* Runs what is queued, then joins the threads. */
void sc_http__pool_stop(void);

/* ==== The connection edge (edge.c) ==== */

/* Starts / stops the watchdog (header deadline, half-closed uploads). */
int sc_http__edge_start(const sc_config_t *cfg);
void sc_http__edge_stop(void);
/* MHD_OPTION_NOTIFY_CONNECTION and MHD_OPTION_URI_LOG_CALLBACK callbacks. */
void sc_http__edge_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code);
void *sc_http__edge_uri_log(void *cls, const char *uri, struct MHD_Connection *conn);
/* The watchdog entry of conn (NULL when untracked); set its phase, count body
 * bytes (progress tells a slow upload from a dead one). NULL-safe. */
sc_http_edge_t *sc_http__edge_of(struct MHD_Connection *conn);
void sc_http__edge_set(sc_http_edge_t *e, sc_edge_phase_t phase);
void sc_http__edge_progress(sc_http_edge_t *e, size_t n);

/* A peer address as text ("?" when unknown). */
/* The client's socket of a connection, or -1. */
int sc_http__client_fd(sc_http_conn_t *c);
/* Whether the client closed its socket (FIN or RST) while its connection was
 * suspended, where MHD does not look. Bytes waiting mean it is still there. */
bool sc_http__client_left(int fd);
void sc_http__format_addr(const struct sockaddr *sa, char *out, size_t cap);

/* ==== The front door (door.c) ==== */

/* Takes listen_fd (listening, non-blocking) and hands each connection whose
 * first request head is sound to mhd; answers the others itself (one JSON
 * error, then close). header_timeout 0 = no deadline; per_ip_limit 0 = none.
 * Returns 0 or -1. */
int sc_http__door_start(int listen_fd, struct MHD_Daemon *mhd, double header_timeout,
                        int per_ip_limit);
/* MAX_CONNECTIONS_PER_IP accounting of a connection MHD owns (edge.c, at
 * MHD's started / closed notifications). No-ops without a limit. */
void sc_http__ip_add(const struct sockaddr *sa);
void sc_http__ip_release(const struct sockaddr *sa);
/* Stops accepting (closes the listening socket); waiting connections go on. */
void sc_http__door_quiesce(void);
/* Connections accepted whose first request head is not complete yet. */
int sc_http__door_waiting(void);
/* Closes everything it holds and joins its thread; before MHD_stop_daemon. */
void sc_http__door_stop(void);

/* The upload budget (MAX_BUFFERED_UPLOAD_BYTES): take n bytes of it (false,
 * taking nothing, when it would go over), give them back, bytes in use. */
bool sc_http__budget_take(long long n);
void sc_http__budget_give(long long n);
long long sc_http__budget_used(void);

/* ==== Responses (each returns the MHD_queue_response result) ==== */

/* Queues r with status on conn and releases r; inside a pool job working on
 * conn, stashes r in the job's context instead (returns MHD_YES). */
enum MHD_Result sc_http__deliver(struct MHD_Connection *conn, unsigned status,
                                 struct MHD_Response *r);

/* Takes ownership of body (malloc'd, may be NULL for an empty body). */
enum MHD_Result sc_http__send(struct MHD_Connection *conn, unsigned status, const char *ctype,
                              char *body, size_t len);
/* Sends body->data as application/json and empties body. */
enum MHD_Result sc_http__send_json(struct MHD_Connection *conn, unsigned status, sc_buf_t *body);
/* {"error": {"code", "message"}} */
enum MHD_Result sc_http__send_error(struct MHD_Connection *conn, unsigned status, const char *code,
                                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* 405 with an Allow header. */
enum MHD_Result sc_http__send_405(struct MHD_Connection *conn, const char *allow);
enum MHD_Result sc_http__send_oom(struct MHD_Connection *conn);
/* A JSON error answer ({"error": {"code", "message"}} and a newline,
 * application/json), not yet delivered, for callers that add headers or
 * stash it: the one body every error path sends. NULL out of memory. */
struct MHD_Response *sc_http__error_response(const char *code, const char *msg);

/* ==== Handlers ==== */

/* POST /api/composite: body chunks, then the final call (upload_size == 0),
 * which offloads sc_http__composite_process to the pool. */
enum MHD_Result sc_http__composite_begin(sc_http_conn_t *c);
enum MHD_Result sc_http__composite_data(sc_http_conn_t *c, const char *data, size_t size);
enum MHD_Result sc_http__composite_finish(sc_http_conn_t *c);
/* Pool jobs: the request after its upload, and the end of a Kontext job. */
void sc_http__composite_process(sc_http_conn_t *c);
void sc_http__composite_kontext_done(sc_http_conn_t *c);

enum MHD_Result sc_http__scenes_finish(sc_http_conn_t *c);
/* Pool job: the end of a scene job (result in c->result). */
void sc_http__scenes_done(sc_http_conn_t *c);

/* GET /api/composites/{name} and /api/scenes/{name}; name is the tail of the URL. */
enum MHD_Result sc_http__serve_output(sc_http_conn_t *c, const char *subdir, const char *name);

/* records.c: the composite's record. save writes c->rec (0 or -1, logged);
 * end completes it (completed_at, total), saves it, appends the decision line
 * and queues the webhook. */
int sc_http__record_save(const sc_http_conn_t *c);
/* The same through the group committer, not waited for: the start record of
 * a keyed sync composite (an async one's is written before its 202), an
 * async one's prediction id (sc_http__record_save_interim). Failures are
 * logged. */
void sc_http__record_save_bg(const sc_http_conn_t *c);
/* An interim state of the record (the prediction id, on the Replicate I/O
 * thread). An async composite's is queued at once: a restart resumes its
 * prediction from it (API.md: a restart never pays twice). A sync one's only
 * shows the story so far (a restart cancels a sync prediction through the
 * journal, whatever its record says), so it is deferred up to
 * SC_HTTP_INTERIM_DELAY_S: with Prefer: wait the create answers when the
 * prediction is over, the final record follows within moments and replaces
 * it unwritten (one file write and one replaced file less per request). */
#define SC_HTTP_INTERIM_DELAY_S 5.0
void sc_http__record_save_interim(const sc_http_conn_t *c);
/* The start record: an async composite's synchronously (its 202 follows).
 * A sync one's is queued (sc_http__record_save_bg) when keyed (an
 * Idempotency-Key repeat, maybe on another instance, answers from the record
 * while the first runs), else deferred like an interim state: its client
 * learns the id only from the answer, and a sync composite that ends within
 * SC_HTTP_INTERIM_DELAY_S (every PIL one) then writes one record, not two.
 * Returns 0 or -1. */
int sc_http__record_save_start(const sc_http_conn_t *c, bool keyed);
/* The output image: tracked (answered once durable) in c's own pool job,
 * queued untracked for detached work, written synchronously with no
 * committer. 0 or -1 (nothing written or queued). */
int sc_http__output_save(sc_http_conn_t *c, const void *data, size_t len);
void sc_http__record_end(sc_http_conn_t *c);
/* The record as the answer (202 adds Location; replayed adds
 * Idempotent-Replayed: true). */
enum MHD_Result sc_http__send_record(struct MHD_Connection *conn, const sc_record_t *r,
                                     unsigned status, bool replayed);

/* records.c: an error answer {"error": {"code", "message"}} with Retry-After,
 * and its 503 server_busy form. */
enum MHD_Result sc_http__send_retry(struct MHD_Connection *conn, unsigned status, const char *code,
                                    int retry_after, const char *msg);
enum MHD_Result sc_http__send_busy(struct MHD_Connection *conn, int retry_after, const char *msg);

/* records.c: Idempotency-Key claims (24 h) in the limits store
 * (sc_limiter_idem_claim: fleet-wide with LIMITS_STORE=redis, per process with
 * the memory store), its results one to one. existing_fp
 * (SC_IDEMPOTENCY_FP_LEN + 1) and existing_id (33) get the first claim's. */
typedef enum {
    SC_HTTP_IDEM_CLAIMED = 0,
    SC_HTTP_IDEM_EXISTING,    /* existing_fp and existing_id filled in */
    SC_HTTP_IDEM_UNAVAILABLE, /* the store cannot answer: nothing claimed */
    SC_HTTP_IDEM_INVALID      /* the store refuses key, fingerprint or id */
} sc_http_idem_t;
#define SC_HTTP_IDEM_TTL SC_IDEM_TTL_SECONDS
sc_http_idem_t sc_http__idem_claim(double now, const char *key, const char *fp,
                                   const char *record_id, int ttl_seconds, char *existing_fp,
                                   char *existing_id);
void sc_http__idem_forget(const char *key);
/* Answers a repeat: the first request's record (Idempotent-Replayed: true,
 * 202 when it was answered 202). */
enum MHD_Result sc_http__idem_replay(struct MHD_Connection *conn, const sc_config_t *cfg,
                                     const char *id);

/* composite.c: finishes a record a dead process left "processing": polls its
 * prediction (sc_replicate_adopt), or composites by PIL with reason
 * `interrupted` from the kept inputs (failed `interrupted` without them).
 * Returns 0 (the work runs detached on the pool) or -1 (out of memory). */
int sc_http__composite_resume(const sc_config_t *cfg, const sc_record_t *rec);

/* records.c: GET /api/composites/<id> (no extension): the record. */
enum MHD_Result sc_http__serve_record(struct MHD_Connection *conn, const sc_config_t *cfg,
                                      const char *id);
/* records.c: POST /api/admin/policy/preview once its body is read (auth, then
 * the replay on the compute pool). */
enum MHD_Result sc_http__preview_finish(sc_http_conn_t *c);
/* records.c: GET /api/admin/decisions (auth already checked). */
enum MHD_Result sc_http__admin_decisions(struct MHD_Connection *conn);

/* Admin: returns MHD_NO-less results; handles auth itself. method is "GET"/"POST". */
enum MHD_Result sc_http__admin(struct MHD_Connection *conn, const sc_config_t *cfg,
                               const char *method, const char *url);
/* The admin access rule; when refused an error is queued and *queued set. */
bool sc_http__admin_allowed(struct MHD_Connection *conn, const sc_config_t *cfg,
                            enum MHD_Result *queued);

#endif
