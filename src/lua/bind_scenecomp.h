/* Internal to src/lua: the per-state host data shared by the sandbox (sandbox.c)
 * and the `scenecomp` Lua module binding (bind_scenecomp.c).
 *
 * Every sandboxed lua_State carries one sc_lua__info_t as the user data of its
 * allocator (lua_getallocf), so the allocator, the deadline hook and the
 * bindings all reach it without a registry lookup or a C global. It is freed
 * by the allocator itself when the state's last block goes away (lua_close),
 * so callers only ever call lua_close. Only the thread owning the state
 * touches it. */
#ifndef SCENECOMP_LUA_BIND_SCENECOMP_H
#define SCENECOMP_LUA_BIND_SCENECOMP_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "limits/store.h"

/* Per-state memory cap: bounds string.rep-style bombs in policy and alert code. */
#define SC_LUA_MEMORY_LIMIT ((size_t)64 << 20)

typedef struct sc_lua__info {
    size_t used;     /* bytes currently allocated by this state */
    size_t limit;    /* allocation beyond this fails (Lua raises "not enough memory") */
    double deadline; /* monotonic seconds; 0 = no call in progress */
    double budget;   /* budget of the current call, for the timeout message */
    bool expired;    /* the deadline passed: the hook raises at every instruction */
    bool *freed;     /* set when the allocator frees this struct (creation only) */
    char tag[16];    /* log prefix of scenecomp.log/print: "[Lua]", "[Policy]" ... */
    bool caps_set;   /* caps below are valid (else scenecomp.metrics uses the policy's) */
    sc_limits_caps_t caps;
    void *owner; /* opaque pointer for the module owning the state (policy generation) */
} sc_lua__info_t;

/* The info block of a sandboxed state. Never NULL for states made by sc_lua_new_state. */
sc_lua__info_t *sc_lua__info(lua_State *L);

/* For C loops the count hook cannot interrupt (bounded.c): raises
 * "timeout: <what> (Lua code ran longer than N ms)" when the deadline of the
 * current sc_lua_call has passed, and from then on the hook raises at every
 * instruction. Returns when no call is in progress or time is left.
 * SC_MAY_RAISE. */
void sc_lua__check_deadline(lua_State *L, const char *what);

/* Pushes the `scenecomp` module table (stack: -> +1). SC_MAY_RAISE (memory). */
int sc_lua__open_scenecomp(lua_State *L);

/* Lua: bucket = scenecomp.bucket(key, salt) -- shared with ctx.bucket. */
int sc_lua__bucket_l(lua_State *L);

/* Lua: m = scenecomp.metrics() -- shared with the lazy ctx.metrics. */
int sc_lua__metrics_l(lua_State *L);

#endif
