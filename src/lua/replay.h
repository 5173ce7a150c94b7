/* Policy replay (API.md "Decision log and policy preview"): runs the requests
 * of logged decisions (decisions.jsonl lines) through a routing function and
 * counts what would change.
 *
 * The routing function is the caller's: `scenecomp check-policy NEW
 * --replay FILE` publishes NEW as the only generation of its process and
 * passes sc_policy_replay_route_current, i.e. sc_policy_route, the code `serve`
 * runs (the default routing or the file's `route`); nothing is routed by a
 * second implementation here. A line's "before" is its logged
 * requested_method (what route() decided then, before any fallback).
 *
 * Lines that are not decisions (not JSON, no requested_method, sizes not
 * numbers) are counted as skipped, never fatal. Not thread-safe per result;
 * no Lua of its own. */
#ifndef SCENECOMP_LUA_REPLAY_H
#define SCENECOMP_LUA_REPLAY_H

#include <stddef.h>

#include "core/buf.h"
#include "lua/policy.h"

#define SC_POLICY_REPLAY_EXAMPLES 10

typedef sc_route_t (*sc_policy_replay_route_fn)(void *ud, const sc_policy_req_t *req);

typedef struct sc_policy_replay_example {
    char id[64];
    char ts[40];
    char user_id[128]; /* "" = none */
    sc_route_t before, after;
} sc_policy_replay_example_t;

typedef struct sc_policy_replay_result {
    long long replayed, changed, kontext_to_pil, pil_to_kontext, skipped;
    int nexamples; /* the first changed ones, up to SC_POLICY_REPLAY_EXAMPLES */
    sc_policy_replay_example_t examples[SC_POLICY_REPLAY_EXAMPLES];
} sc_policy_replay_result_t;

void sc_policy_replay_init(sc_policy_replay_result_t *r);

/* Replays one line (len bytes, no newline needed). Returns 0 when replayed,
 * 1 when skipped (not a decision line). */
int sc_policy_replay_line(const char *line, size_t len, sc_policy_replay_route_fn route, void *ud,
                          sc_policy_replay_result_t *r);

/* Replays every line of the file at path, oldest first. Returns 0, or -1
 * with err when the file cannot be read. */
int sc_policy_replay_file(const char *path, sc_policy_replay_route_fn route, void *ud,
                          sc_policy_replay_result_t *r, char *err, size_t errlen);

/* sc_policy_route on the calling thread (ud unused): the live routing of the
 * published generation. */
sc_route_t sc_policy_replay_route_current(void *ud, const sc_policy_req_t *req);

/* Appends {"valid":true,"replayed","changed","kontext_to_pil","pil_to_kontext",
 * "skipped","examples":[{"id","ts","user_id","before","after"}]}: the body of
 * POST /api/admin/policy/preview. Returns 0 or -1 (OOM). */
int sc_policy_replay_result_json(const sc_policy_replay_result_t *r, sc_buf_t *out);

/* Prints "replayed N, changed M (kontext->pil A, pil->kontext B)" and one line
 * per example to f (the check-policy --replay output). */
void sc_policy_replay_print(const sc_policy_replay_result_t *r, void *file);

#endif
