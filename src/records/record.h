/* The record of one composite (API.md "Asynchronous composites, records,
 * webhooks"): what was asked, how it was decided, what it cost, where it went.
 *
 * A record is a plain struct; this module turns it into the contract's JSON
 * and back (cJSON), saves it atomically as OUTPUT_DIR/<id>.json (beside the
 * image) and loads it by id, checking the id before it reaches a path. At
 * start-up, sc_record_scan_processing lists the records a crash left
 * "processing", so the caller can resume them (poll a known prediction, or
 * finish by PIL with reason `interrupted`). It does not decide anything, talk
 * to Replicate or deliver webhooks.
 *
 * Threads: every function is thread-safe (no shared state); two writers of one
 * id race like two renames (last one wins, each file whole). */
#ifndef SCENECOMP_RECORDS_RECORD_H
#define SCENECOMP_RECORDS_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/durable.h"
#include "core/ids.h"

/* A stored record file is never larger than this (its strings are bounded). */
#define SC_RECORD_MAX_BYTES (64 * 1024)

typedef enum {
    SC_RECORD_PROCESSING = 0,
    SC_RECORD_SUCCEEDED,
    SC_RECORD_FAILED,
} sc_record_status_t;

/* What route() saw and decided. Unknown members: policy_version < 0, "" for
 * strings, bucket < 0, percent NaN; they are written as null. */
typedef struct sc_record_decision {
    long long policy_version;
    char phase[64];
    char rule[24]; /* disabled | no_phase | user_list | percent_bucket | percent_full |
                      outside_rollout | route_function | route_error */
    int bucket;    /* 0..99 */
    double percent;
} sc_record_decision_t;

/* Seconds per stage; NaN = not measured (null). */
typedef struct sc_record_durations {
    double total, queue, decode, kontext, composite, encode, save;
} sc_record_durations_t;

/* Unknown values: "" strings, NaN numbers, 0 width/height, created_at/completed_at
 * < 0; all are written as null. */
typedef struct sc_record {
    char id[SC_ID_LEN + 1];
    sc_record_status_t status;
    double created_at, completed_at; /* wall seconds; RFC 3339 UTC in JSON */
    char method[16], requested_method[16];
    bool fallback;
    char fallback_reason[32];
    char keying[16]; /* issue 12: the PIL path's sc_keying_name; "" (null) for Kontext */
    sc_record_decision_t decision;
    char prediction_id[128];
    sc_record_durations_t durations;
    double estimated_cost_usd;
    int width, height;
    char format[8];      /* png | jpeg */
    char image_url[128]; /* /api/composites/<id>.png|jpg */
    char error_code[32], error_message[512];
    /* Stored in the file only (never in the public JSON): where the finished
     * record is POSTed, so a restart still delivers it; whether the first
     * answer was a 202 (Prefer: respond-async), so an Idempotency-Key replay
     * answers with the same status. */
    char webhook_url[2048];
    bool respond_async;
} sc_record_t;

/* Fills r with "unknown" everywhere (see above), status processing. */
void sc_record_init(sc_record_t *r);

/* "processing" | "succeeded" | "failed"; sc_record_status_parse returns -1 for
 * anything else. */
const char *sc_record_status_name(sc_record_status_t s);
int sc_record_status_parse(const char *s);

/* Appends r as JSON to out. With for_file, private fields (webhook_url) are
 * included (webhook_url, respond_async); the public view (GET /api/composites/<id>, webhook bodies)
 * never has them. Returns 0 or -1 (out of memory; out may hold a partial value). */
int sc_record_to_json(const sc_record_t *r, bool for_file, sc_buf_t *out);

/* Parses JSON text (len bytes) into r. Keys that are missing or null leave
 * the "unknown" value; a wrong type or a bad id/status is an error. Returns 0,
 * or -1 with a message in err. */
int sc_record_from_json(const char *json, size_t len, sc_record_t *r, char *err, size_t errlen);

/* Writes OUTPUT_DIR/<id>.json atomically (temp file, fsync, rename): readers
 * and a crash see the old record or the new one, never a part. Returns 0, or
 * -1 with errno set (EINVAL for a bad id). */
int sc_record_save(const char *output_dir, const sc_record_t *r);
/* As sc_record_save through the group committer d (core/durable.h): the JSON
 * is made now, the write queued; done (may be NULL) once durable or failed.
 * Returns 0 (queued) or -1 with errno (nothing queued, done not called). */
int sc_record_save_queued(sc_durable_t *d, const char *output_dir, const sc_record_t *r,
                          sc_durable_done_fn done, void *ud);
/* As sc_record_save_queued for an interim state that nobody waits for
 * (sc_durable_write_deferred): a newer save of the record within delay
 * seconds replaces it unwritten; otherwise it is written after delay. A
 * failure is logged. Returns 0 (queued) or -1 with errno. */
int sc_record_save_deferred(sc_durable_t *d, const char *output_dir, const sc_record_t *r,
                            double delay);

typedef enum {
    SC_RECORD_OK = 0,
    SC_RECORD_NOT_FOUND = -1, /* no such record (also: id malformed, see below) */
    SC_RECORD_BAD_ID = -2,    /* id is not 32 lowercase hex: never touches the filesystem */
    SC_RECORD_CORRUPT = -3,   /* the file is not a valid record (message in err) */
    SC_RECORD_IO = -4,        /* read error (errno set, message in err) */
} sc_record_load_result_t;

/* Loads the record with this id (id_len bytes, not necessarily NUL-terminated)
 * from OUTPUT_DIR. HTTP maps BAD_ID and NOT_FOUND to 404. */
sc_record_load_result_t sc_record_load(const char *output_dir, const char *id, size_t id_len,
                                       sc_record_t *r, char *err, size_t errlen);

/* Calls fn(r, ud) for every record in OUTPUT_DIR whose status is "processing"
 * (only files named <32 hex>.json; temp files of an interrupted save are not
 * records). A corrupt record is logged with a warning and skipped. fn returning
 * non-zero stops the scan. Returns the number of records passed to fn, or -1
 * with errno when the directory cannot be read (a missing one is 0). */
int sc_record_scan_processing(const char *output_dir, int (*fn)(const sc_record_t *r, void *ud),
                              void *ud);

#endif
