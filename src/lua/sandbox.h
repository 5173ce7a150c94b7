/* Sandboxed Lua states for policy and alert files, and the one door into Lua.
 *
 * A state has: base (minus dofile/loadfile/load of binary chunks/collectgarbage
 * tuning), string, table, math, utf8, os.time/os.clock/os.date only, cjson (as
 * `cjson`), and the `scenecomp` module (env, log, now, bucket, metrics). No io,
 * no os.execute/remove/rename/exit/getenv, no require of native modules, no
 * debug. Assignments to undeclared globals raise. Chunks are loaded as text only.
 * Every call into Lua runs under sc_lua_call: traceback handler, an
 * instruction-count hook enforcing a deadline (so an infinite loop becomes a
 * runtime error), stack restored on every exit.
 *
 * Threads: a state belongs to the thread that uses it; these functions touch no
 * shared state except the config lookup and the metrics snapshot (both thread-safe). */
#ifndef SCENECOMP_LUA_SANDBOX_H
#define SCENECOMP_LUA_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "metrics/metrics.h"

/* Default budget for one call into policy/alert code. */
#define SC_LUA_CALL_BUDGET_SECONDS 0.25

/* Creates a sandboxed state. Returns NULL with err set on failure. Close with
 * lua_close (the state's host data is freed with its last block). */
lua_State *sc_lua_new_state(char *err, size_t errlen);

/* Log prefix used by scenecomp.log and print in this state (default "[Lua]";
 * the policy uses "[Policy]", alerts "[Alert]"). Copied (max 15 chars). */
void sc_lua_set_log_tag(lua_State *L, const char *tag);

/* Limits shown by scenecomp.metrics() in this state (rate_limiter.max_*, daily_limit).
 * NULL (the default) = the current policy generation's effective limits. */
void sc_lua_set_caps(lua_State *L, const sc_limits_caps_t *caps);

/* An opaque pointer kept for the module owning the state (the policy keeps its
 * generation there). Not freed by the sandbox. */
void sc_lua_set_owner(lua_State *L, void *owner);
void *sc_lua_owner(lua_State *L);

/* Bytes currently allocated by the state (its cap is 64 MiB). */
size_t sc_lua_memory_used(lua_State *L);

/* Pushes the sandbox env table (the _ENV of chunks) (stack: -> +1). Never raises. */
void sc_lua_push_env(lua_State *L);

/* Loads source (text only) as chunkname (e.g. "@lua/policy.lua") into the
 * sandbox and runs it under the budget; on success its first result is left on
 * the stack (top +1) and 0 returned; else -1 with "file:line: message" in err
 * and the stack unchanged. */
int sc_lua_run_chunk(lua_State *L, const char *source, size_t len, const char *chunkname,
                     double budget_seconds, char *err, size_t errlen);

/* The one door: calls the function below nargs arguments on the stack
 * (stack: fn, arg1..argn -> res1..resn on success, nothing on failure) with a
 * traceback handler and a deadline. Returns 0, or -1 with the message in err
 * ("timeout: ..." when the budget ran out). */
int sc_lua_call(lua_State *L, int nargs, int nresults, double budget_seconds, char *err,
                size_t errlen);

/* Pushes a table with the fields of /api/admin/metrics/composite (NaN -> nil). */
void sc_lua_push_metrics(lua_State *L, const sc_metrics_snapshot_t *s);

/* Whether scenecomp.env(name) may return the variable: one of the allow-listed
 * settings (docs/policy.md, "scenecomp.env") or a name starting with
 * SCENECOMP_POLICY_. Secrets and URLs never are. */
bool sc_lua_env_allowed(const char *name);

/* Stable bucket 0..99 of key under salt: FNV-1a 32-bit over salt ":" key, mod 100.
 * The same on every instance and after restarts. */
int sc_lua_bucket(const char *key, size_t keylen, const char *salt, size_t saltlen);

#endif
