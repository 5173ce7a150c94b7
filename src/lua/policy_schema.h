/* Internal to src/lua: the schema of a policy file, as one table of keys
 * (policy_schema.c). Each key names its type, whether a phase may override it
 * and the field of sc_policy_effective_t it lands in (offsetof); validation,
 * the allowed-key lists of its error messages, ctx.config and the effective
 * config of /api/admin/policy are all generated from that table, so a new key
 * is one line there (plus its field). A key with settings (`breaker`) is one
 * row whose table form has its own rows: `false`, `true` or a partial table.
 *
 * Pure functions of their arguments; any thread. */
#ifndef SCENECOMP_LUA_POLICY_SCHEMA_H
#define SCENECOMP_LUA_POLICY_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "core/buf.h"
#include "lua/policy.h"

/* What validation finds in a policy table. */
typedef struct sc_policy__spec {
    sc_policy_effective_t eff;    /* env defaults < table keys < phases[phase] */
    bool has_route, has_on_error; /* the table defines these functions */
    bool has_users, has_percent;  /* of the selected phase */
    double percent;
    size_t nusers; /* user ids of the selected phase */
} sc_policy__spec_t;

/* Lua C function, to be called through sc_lua_call:
 *   stack: policy table, lightuserdata(sc_policy__spec_t *) -> users | nil
 * Validates every key of the table and every phase, and fills the spec (its
 * eff must hold the env defaults already). The selected phase's users come
 * back as a userdata blob of NUL-terminated ids in list order (nusers of
 * them), or nil when the phase has no `users`. Raises with a message naming
 * the culprit key (and the allowed keys, for an unknown one). */
int sc_policy__validate_l(lua_State *L);

/* Pushes ctx.config: every key with a field, plus percent and users of the
 * selected phase (users_blob as returned by validation, copied out of Lua).
 * Stack: -> +1. SC_MAY_RAISE (memory). */
void sc_policy__push_config(lua_State *L, const sc_policy__spec_t *spec, const char *users_blob);

/* Appends the effective config as JSON ({"use_kontext":...,"route":"custom"|
 * "default","on_kontext_error":...}). Returns 0 or -1 (out of memory). */
int sc_policy__render_effective(sc_buf_t *out, const sc_policy__spec_t *spec,
                                const char *users_blob);

#endif
