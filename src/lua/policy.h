/* The live routing policy (POLICY_FILE): generations, per-thread states, reload.
 *
 * A generation = {number, source text, effective config}. Reload loads the file
 * into a fresh sandboxed lua_State, validates it (types, known keys, phase exists,
 * route/on_kontext_error callable on a sample request), then publishes it; a
 * failing file leaves the previous generation in force and records last_error.
 * Each thread that calls sc_policy_route owns one lua_State (thread-local) and
 * swaps it to the newest generation at its next call, so a request sees one
 * generation from its decision to its end (its `eff` copy), never a mix.
 * When POLICY_FILE does not exist the embedded default lua/policy.lua is used.
 *
 * Threads: route/on_kontext_error from any worker thread; reload from any thread
 * (serialised inside); SIGHUP only sets a flag (sc_policy_request_reload). */
#ifndef SCENECOMP_LUA_POLICY_H
#define SCENECOMP_LUA_POLICY_H

#include <stdbool.h>

#include "core/buf.h"
#include "core/config.h"

typedef struct sc_policy_req {
    const char *user_id; /* may be NULL */
    const char *prompt;  /* may be NULL */
    int scene_w, scene_h;
    bool scene_alpha;
    int product_w, product_h;
    bool product_alpha;
} sc_policy_req_t;

/* The effective config of one generation: env defaults < table keys < phases[phase]. */
typedef struct sc_policy_effective {
    long long version;
    bool use_kontext;
    char method[16];
    char model_id[SC_CFG_STR];
    double timeout_seconds;
    int max_concurrent, max_per_hour, daily_limit;
    char phase[64]; /* "" = none */
    /* Outage protection (issue 11): `breaker = {...} | false` and `pacing`,
     * env BREAKER_ENABLED / KONTEXT_BUDGET_PACING, the other defaults those of
     * sc_breaker_params_default. */
    bool breaker_enabled;
    double breaker_failure_rate;
    int breaker_min_calls;
    double breaker_window_seconds, breaker_open_seconds;
    int breaker_half_open_calls;
    bool pacing;
} sc_policy_effective_t;

typedef enum { SC_ROUTE_PIL = 0, SC_ROUTE_KONTEXT = 1 } sc_route_t;

/* Loads POLICY_FILE (or the embedded default when the file does not exist) as
 * generation 1 (0 with POLICY_SOURCE=redis, whose versions come from Redis). Returns 0, or -1 with
 * "file:line: message" in err (start-up stops). */
int sc_policy_init(const sc_config_t *cfg, char *err, size_t errlen);
void sc_policy_shutdown(void);

/* Decides the method for req with this thread's state (swapped to the newest
 * generation first) and copies that generation's effective config into eff.
 * A route error/invalid answer gives SC_ROUTE_PIL, is logged with `[Policy]`
 * and counted (sc_metrics_route_error). Never fails. */
sc_route_t sc_policy_route(const sc_policy_req_t *req, sc_policy_effective_t *eff);

/* Why a request was routed as it was (a record's `decision`, API.md). */
typedef struct sc_policy_explain {
    /* "disabled" (use_kontext false or method pil), "no_phase" (no phase, or a
     * phase with neither users nor percent: everyone gets Kontext), "user_list",
     * "percent_bucket", "percent_full", "outside_rollout", "route_function",
     * "route_error" (static strings). */
    const char *rule;
    int bucket;     /* the user's rollout bucket 0..99, -1 without user_id */
    double percent; /* the phase's percent, NaN when it has none */
} sc_policy_explain_t;

/* sc_policy_route that also says why (why may be NULL). The same code path:
 * sc_policy_route is this with why NULL. */
sc_route_t sc_policy_route_explain(const sc_policy_req_t *req, sc_policy_effective_t *eff,
                                   sc_policy_explain_t *why);

/* Asks on_kontext_error(err, req, ctx) of generation eff->version if still
 * current (else the newest). Returns true for "fail", false for "fallback"
 * (also on error or when the policy has no such function). */
bool sc_policy_on_kontext_error(const sc_policy_effective_t *eff, const char *reason,
                                const char *message, const sc_policy_req_t *req);

/* The newest published generation's effective config, without Lua. */
void sc_policy_current(sc_policy_effective_t *eff);
long long sc_policy_version(void);

/* A policy loaded for a preview (POST /api/admin/policy/preview): validated
 * exactly as a reload would, never published; routes with the same code as
 * sc_policy_route (route errors are neither counted nor logged). One thread
 * at a time. new: NULL with "name:line: message" in err when invalid. */
typedef struct sc_policy_preview sc_policy_preview_t;
sc_policy_preview_t *sc_policy_preview_new(const char *src, size_t len, const char *name, char *err,
                                           size_t errlen);
/* An sc_policy_replay_route_fn: ud is the preview. */
sc_route_t sc_policy_preview_route(void *ud, const sc_policy_req_t *req);
void sc_policy_preview_free(sc_policy_preview_t *p);

/* Reloads POLICY_FILE now. trigger names the cause for the log ("file change",
 * "SIGHUP", "admin"). Returns 0 (published, version in *version) or -1 with the
 * error in err (old generation kept; last_error set; `[Policy]` logged).
 * While the embedded default is in force and POLICY_FILE still does not exist,
 * returns 0 with the current version (nothing to reload). */
int sc_policy_reload(const char *trigger, long long *version, char *err, size_t errlen);

/* Reload function for the file watcher (core/watch.h, sc_watch_fn; main
 * registers it for POLICY_FILE). forced (SIGHUP) reloads always; a detected
 * change reloads only when the content differs from the generation in force
 * (editors and `touch` fire events without changing anything), or when the
 * last reload was refused (so reverting a bad edit clears last_error).
 * A refusal is logged and recorded as last_error; ud is unused. */
void sc_policy_watch_reload(const char *trigger, bool forced, void *ud);

/* ==== Other policy sources (POLICY_SOURCE=redis, src/policysrc) ==== */

/* Publishes src (len bytes) as generation `version`, through the same load and
 * validation as a file reload. origin is shown as the status "source"
 * ("redis"); name in messages ("redis v7" gives "redis v7:3: ..."; a name
 * starting "redis" is not taken for a file). Returns 0, or -1 with the error
 * in err (the generation in force stays; last_error set; `[Policy]` logged). */
int sc_policy_apply_source(const char *src, size_t len, const char *origin, const char *name,
                           long long version, const char *trigger, char *err, size_t errlen);
/* Records a refusal found before loading (e.g. a checksum mismatch) as
 * last_error and logs it; the generation in force stays. */
void sc_policy_refuse(const char *trigger, const char *err);
/* From now on sc_policy_reload (admin reload) calls fn instead of reading
 * POLICY_FILE; NULL restores the file. fn has sc_policy_reload's contract. */
typedef int (*sc_policy_reload_fn)(const char *trigger, long long *version, char *err,
                                   size_t errlen);
void sc_policy_set_reloader(sc_policy_reload_fn fn);

/* Appends {"version","loaded_at","source","phase","effective":{...},"last_error"}. */
int sc_policy_status_json(sc_buf_t *out);

/* Offline validation (`scenecomp check-policy FILE`), the same checks reload runs.
 * Returns 0 or -1 with the error in err. */
int sc_policy_check_file(const sc_config_t *cfg, const char *path, char *err, size_t errlen);

/* Load from a buffer: runs src (len bytes, not necessarily NUL-terminated, may
 * hold any bytes) through everything a reload does -- load in a fresh sandboxed
 * state under the 1 s budget, validate the keys, run route/on_kontext_error on
 * the sample requests -- and discards the result; nothing is published and no
 * global state changes, so it may run on any thread, also concurrently with
 * serving. name is the file name used in messages (e.g. "policy.lua").
 * Returns 0 (the source would be accepted) or -1 with "name:line: message" in
 * err. This is the entry point of the policy-load fuzz target. */
int sc_policy_check_buffer(const sc_config_t *cfg, const char *src, size_t len, const char *name,
                           char *err, size_t errlen);

#endif
