/* The decision log (API.md "Decision log and policy preview"): one JSON line
 * per composite in LOGS_DIR/decisions.jsonl, saying what route() saw and what
 * was decided:
 *
 *   {"ts","id","user_id","prompt","scene":{"width","height","has_alpha"},
 *    "product":{...},"requested_method","method","fallback_reason","decision":{...}}
 *
 * Never image bytes or tokens: the entry has no field that could hold them,
 * and the prompt is cut at SC_DECISIONS_PROMPT_MAX bytes (on a UTF-8 boundary).
 * The file is rotated when the next line would pass max_bytes (64 MiB by
 * default): decisions.jsonl -> .1 -> .2, the older .2 dropped. Reading the
 * newest N lines scans backwards from the end, across .1 and .2 when needed,
 * so its cost grows with N, not with the file.
 *
 * Threads: append and newest may be called from any thread (one mutex; the
 * newest-N read only holds it while opening the files, not while reading).
 * No network, no Lua. */
#ifndef SCENECOMP_RECORDS_DECISIONS_H
#define SCENECOMP_RECORDS_DECISIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "records/record.h"

#define SC_DECISIONS_FILE "decisions.jsonl"
#define SC_DECISIONS_DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define SC_DECISIONS_PROMPT_MAX 2000
/* A line longer than this (never written by us) is skipped by the readers. */
#define SC_DECISIONS_LINE_MAX ((size_t)1 << 20)

typedef struct sc_decisions sc_decisions_t;

/* One composite's decision. Strings may be NULL (written as null). */
typedef struct sc_decision_entry {
    double ts; /* wall seconds (RFC 3339 in the line) */
    const char *id;
    const char *user_id, *prompt;
    int scene_w, scene_h;
    bool scene_alpha;
    int product_w, product_h;
    bool product_alpha;
    const char *requested_method, *method, *fallback_reason;
    const sc_record_decision_t *decision; /* NULL: all its keys null */
} sc_decision_entry_t;

/* Opens (creating LOGS_DIR and the file) the log at LOGS_DIR/decisions.jsonl,
 * rotating at max_bytes (0 = SC_DECISIONS_DEFAULT_MAX_BYTES). Returns NULL
 * with errno on failure. */
sc_decisions_t *sc_decisions_open(const char *logs_dir, size_t max_bytes);
void sc_decisions_close(sc_decisions_t *d);

/* Appends e as one line (rotating first when it would not fit). Returns 0 or
 * -1 with errno (the line is lost; the caller logs it, the request goes on). */
int sc_decisions_append(sc_decisions_t *d, const sc_decision_entry_t *e);

/* Encodes e as the line's JSON (no newline) into out. Returns 0 or -1 (OOM). */
int sc_decisions_entry_json(const sc_decision_entry_t *e, sc_buf_t *out);

/* Calls fn(line, len, ud) for the newest lines, newest first, up to n lines
 * (empty lines and lines over SC_DECISIONS_LINE_MAX are skipped, other lines
 * are passed as they are: the callback checks them). line is not
 * NUL-terminated and is valid only during the call. fn returning non-zero
 * stops early without counting that line. Returns the number of lines passed,
 * or -1 with errno. */
int sc_decisions_newest(sc_decisions_t *d, size_t n,
                        int (*fn)(const char *line, size_t len, void *ud), void *ud);

/* Appends {"decisions":[...]} with the newest n valid lines (lines that are
 * not JSON objects, as a torn last line after a crash, are left out), newest
 * first: the body of GET /api/admin/decisions. Returns 0 or -1. */
int sc_decisions_newest_json(sc_decisions_t *d, size_t n, sc_buf_t *out);

#endif
