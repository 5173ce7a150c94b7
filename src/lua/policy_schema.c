/* The schema of a policy file (see policy_schema.h): the key table, the
 * validation generated from it (running inside sc_lua_call; every refusal
 * raises with the culprit key named), ctx.config and the effective-config
 * JSON. */
#include "lua/policy_schema.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

/* K_SWITCH: a feature with settings, written `false` (off), `true` (on) or a
 * table of some of its sub keys (on; the sub keys not given keep their value
 * so far). Its field is the on/off bool; each sub key lands in its own field. */
enum key_kind {
    K_BOOL,
    K_METHOD,
    K_STRING,
    K_SECONDS,
    K_FRACTION,
    K_COUNT,
    K_PHASE,
    K_PHASES,
    K_FUNC,
    K_SWITCH,
};

#define NO_FIELD ((size_t)-1)
#define FIELD(f) offsetof(sc_policy_effective_t, f), sizeof(((sc_policy_effective_t *)0)->f)

/* The policy table's keys, in the order of ctx.config and the status JSON.
 * field/size: where the value lands in sc_policy_effective_t (NO_FIELD: not
 * stored there; "phase" is stored by the phase selection, after every phase
 * has been checked). */
struct key_spec {
    const char *name;
    enum key_kind kind;
    bool in_phase; /* may be overridden by phases[phase] */
    size_t field, size;
    int lo, hi;                 /* K_COUNT: the allowed range */
    const struct key_spec *sub; /* K_SWITCH: the keys of its table form */
};

#define COUNT(f, lo, hi) FIELD(f), lo, hi, NULL

/* `breaker` (issue 11); the defaults are set with the env ones (policy.c). */
static const struct key_spec k_breaker_keys[] = {
    {"failure_rate", K_FRACTION, false, FIELD(breaker_failure_rate), 0, 0, NULL},
    {"min_calls", K_COUNT, false, COUNT(breaker_min_calls, 1, 1000000)},
    {"window_seconds", K_SECONDS, false, FIELD(breaker_window_seconds), 0, 0, NULL},
    {"open_seconds", K_SECONDS, false, FIELD(breaker_open_seconds), 0, 0, NULL},
    {"half_open_calls", K_COUNT, false, COUNT(breaker_half_open_calls, 1, 1000000)},
    {NULL, K_BOOL, false, NO_FIELD, 0, 0, 0, NULL},
};

static const struct key_spec k_keys[] = {
    {"use_kontext", K_BOOL, true, FIELD(use_kontext), 0, 0, NULL},
    {"method", K_METHOD, true, FIELD(method), 0, 0, NULL},
    {"model_id", K_STRING, true, FIELD(model_id), 0, 0, NULL},
    {"timeout_seconds", K_SECONDS, true, FIELD(timeout_seconds), 0, 0, NULL},
    {"max_concurrent", K_COUNT, true, COUNT(max_concurrent, 0, 1000000000)},
    {"max_per_hour", K_COUNT, true, COUNT(max_per_hour, 0, 1000000000)},
    {"daily_limit", K_COUNT, true, COUNT(daily_limit, 0, 1000000000)},
    {"phase", K_PHASE, false, FIELD(phase), 0, 0, NULL},
    {"phases", K_PHASES, false, NO_FIELD, 0, 0, 0, NULL},
    {"route", K_FUNC, false, NO_FIELD, 0, 0, 0, NULL},
    {"on_kontext_error", K_FUNC, false, NO_FIELD, 0, 0, 0, NULL},
    {"breaker", K_SWITCH, true, FIELD(breaker_enabled), 0, 0, k_breaker_keys},
    {"pacing", K_BOOL, true, FIELD(pacing), 0, 0, NULL},
    {NULL, K_BOOL, false, NO_FIELD, 0, 0, 0, NULL},
};

/* Keys of a phase table besides the overridable ones above. */
static const char *const k_phase_own_keys[] = {"users", "percent", NULL};

/* The field of spec in eff. */
static void *field_of(sc_policy_effective_t *eff, const struct key_spec *spec)
{
    return (char *)eff + spec->field;
}

static const void *cfield_of(const sc_policy_effective_t *eff, const struct key_spec *spec)
{
    return (const char *)eff + spec->field;
}

/* "a, b, c": the keys of keys (with in_phase only: those a phase may
 * override), after the names of own (may be NULL), for messages. */
static void key_list(char *out, size_t n, const char *const *own, const struct key_spec *keys,
                     bool in_phase_only)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; own && own[i]; i++)
        o += (size_t)snprintf(out + o, o < n ? n - o : 0, "%s%s", o ? ", " : "", own[i]);
    for (int i = 0; keys[i].name; i++) {
        if (in_phase_only && !keys[i].in_phase)
            continue;
        o += (size_t)snprintf(out + o, o < n ? n - o : 0, "%s%s", o ? ", " : "", keys[i].name);
    }
}

/* "a, b, c": the keys allowed at the top level, or in a phase (for messages). */
static void allowed_keys(char *out, size_t n, bool phase)
{
    key_list(out, n, phase ? k_phase_own_keys : NULL, k_keys, phase);
}

static const struct key_spec *find_in(const struct key_spec *keys, const char *name)
{
    for (int i = 0; keys[i].name; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static const struct key_spec *find_key(const char *name)
{
    return find_in(k_keys, name);
}

/* Raises "<where><label> must be <what> (got <type>)". Always raises. */
static int bad_type(lua_State *L, const char *where, const char *label, const char *what, int idx)
{
    return luaL_error(L, "%s%s must be %s (got %s)", where, label, what, luaL_typename(L, idx));
}

static void check_value(lua_State *L, int idx, const struct key_spec *spec,
                        const struct key_spec *parent, const char *where,
                        sc_policy_effective_t *eff);

/* The table form of the K_SWITCH spec at idx: every key must be one of
 * spec->sub; each is checked (and stored when eff is not NULL). SC_MAY_RAISE. */
static void check_switch_table(lua_State *L, int idx, const struct key_spec *spec,
                               const char *where, sc_policy_effective_t *eff)
{
    lua_pushnil(L);            /* nil */
    while (lua_next(L, idx)) { /* key, value */
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s%s keys must be strings (got %s)", where, spec->name,
                       luaL_typename(L, -2));
        const char *k = lua_tostring(L, -2);
        const struct key_spec *sub = find_in(spec->sub, k);
        if (!sub) {
            char allowed[256];
            key_list(allowed, sizeof allowed, NULL, spec->sub, false);
            luaL_error(L, "%s%s: unknown key '%s' (allowed: %s)", where, spec->name, k, allowed);
        }
        check_value(L, -1, sub, spec, where, eff);
        lua_pop(L, 1); /* key */
    }
}

/* Checks the value at idx for spec (a key of parent's table form, or of the
 * policy/phase table when parent is NULL) and, when eff is not NULL, stores it
 * there. where is "" or "phases.<name>: ". SC_MAY_RAISE. */
static void check_value(lua_State *L, int idx, const struct key_spec *spec,
                        const struct key_spec *parent, const char *where,
                        sc_policy_effective_t *eff)
{
    char label[96]; /* "key 'max_concurrent'" or "breaker.min_calls" */
    if (parent)
        snprintf(label, sizeof label, "%s.%s", parent->name, spec->name);
    else
        snprintf(label, sizeof label, "key '%s'", spec->name);
    idx = lua_absindex(L, idx);
    switch (spec->kind) {
    case K_BOOL:
        if (!lua_isboolean(L, idx))
            bad_type(L, where, label, "a boolean", idx);
        if (eff)
            *(bool *)field_of(eff, spec) = lua_toboolean(L, idx);
        break;
    case K_METHOD: {
        if (lua_type(L, idx) != LUA_TSTRING)
            bad_type(L, where, label, "\"pil\" or \"kontext\"", idx);
        const char *m = lua_tostring(L, idx);
        if (strcmp(m, "pil") != 0 && strcmp(m, "kontext") != 0)
            luaL_error(L, "%s%s must be \"pil\" or \"kontext\" (got \"%s\")", where, label, m);
        if (eff)
            snprintf(field_of(eff, spec), spec->size, "%s", m);
        break;
    }
    case K_STRING: {
        size_t n;
        if (lua_type(L, idx) != LUA_TSTRING)
            bad_type(L, where, label, "a non-empty string", idx);
        const char *s = lua_tolstring(L, idx, &n);
        if (n == 0 || n >= spec->size || strlen(s) != n)
            luaL_error(L, "%s%s must be a non-empty string shorter than %d bytes", where, label,
                       (int)spec->size);
        if (eff)
            snprintf(field_of(eff, spec), spec->size, "%s", s);
        break;
    }
    case K_SECONDS: {
        if (lua_type(L, idx) != LUA_TNUMBER)
            bad_type(L, where, label, "a number of seconds", idx);
        double v = lua_tonumber(L, idx);
        if (!(v > 0 && v <= 86400))
            luaL_error(L, "%s%s must be a number of seconds in (0, 86400] (got %f)", where, label,
                       v);
        if (eff)
            *(double *)field_of(eff, spec) = v;
        break;
    }
    case K_FRACTION: {
        if (lua_type(L, idx) != LUA_TNUMBER)
            bad_type(L, where, label, "a number in (0, 1]", idx);
        double v = lua_tonumber(L, idx);
        if (!(v > 0 && v <= 1))
            luaL_error(L, "%s%s must be a number in (0, 1] (got %f)", where, label, v);
        if (eff)
            *(double *)field_of(eff, spec) = v;
        break;
    }
    case K_COUNT: {
        int isint = 0;
        if (lua_type(L, idx) != LUA_TNUMBER)
            luaL_error(L, "%s%s must be an integer in %d..%d (got %s)", where, label, spec->lo,
                       spec->hi, luaL_typename(L, idx));
        lua_Integer v = lua_tointegerx(L, idx, &isint);
        if (!isint || v < spec->lo || v > spec->hi)
            luaL_error(L, "%s%s must be an integer in %d..%d (got %s)", where, label, spec->lo,
                       spec->hi, lua_tostring(L, idx));
        if (eff)
            *(int *)field_of(eff, spec) = (int)v;
        break;
    }
    case K_PHASE:
        if (lua_type(L, idx) != LUA_TSTRING)
            bad_type(L, where, label, "a string naming one of phases (or nil)", idx);
        break;
    case K_PHASES:
        if (!lua_istable(L, idx))
            bad_type(L, where, label, "a table of phase tables", idx);
        break;
    case K_FUNC:
        if (!lua_isfunction(L, idx))
            bad_type(L, where, label, "a function", idx);
        break;
    case K_SWITCH:
        if (lua_isboolean(L, idx)) {
            if (eff)
                *(bool *)field_of(eff, spec) = lua_toboolean(L, idx);
            break;
        }
        if (!lua_istable(L, idx)) {
            char what[256], keys[200];
            key_list(keys, sizeof keys, NULL, spec->sub, false);
            snprintf(what, sizeof what, "false or a table {%s}", keys);
            bad_type(L, where, label, what, idx);
        }
        if (eff)
            *(bool *)field_of(eff, spec) = true;
        check_switch_table(L, idx, spec, where, eff);
        break;
    }
}

/* Validates phases[name] (the table at idx). When eff is not NULL (the selected
 * phase) its overrides are applied and its users are returned as a userdata
 * blob (stack: -> +1, blob or nil) with *nusers, *has_users, *percent set.
 * SC_MAY_RAISE. */
static void check_phase(lua_State *L, int idx, const char *name, sc_policy_effective_t *eff,
                        size_t *nusers, bool *has_users, double *percent)
{
    char where[128];
    snprintf(where, sizeof where, "phases.%s: ", name);
    idx = lua_absindex(L, idx);
    if (!lua_istable(L, idx))
        luaL_error(L, "phases.%s must be a table (got %s)", name, luaL_typename(L, idx));
    int users_idx = 0;
    lua_pushnil(L);            /* nil */
    while (lua_next(L, idx)) { /* key, value */
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%skeys must be strings (got %s)", where, luaL_typename(L, -2));
        const char *k = lua_tostring(L, -2);
        if (strcmp(k, "users") == 0) {
            if (!lua_istable(L, -1))
                bad_type(L, where, "key 'users'", "a list of user id strings", -1);
            users_idx = 1;
        } else if (strcmp(k, "percent") == 0) {
            if (lua_type(L, -1) != LUA_TNUMBER)
                bad_type(L, where, "key 'percent'", "a number in 0..100", -1);
            double p = lua_tonumber(L, -1);
            if (!(p >= 0 && p <= 100))
                luaL_error(L, "%skey 'percent' must be a number in 0..100 (got %f)", where, p);
            if (percent)
                *percent = p;
        } else {
            const struct key_spec *spec = find_key(k);
            if (!spec || !spec->in_phase) {
                char allowed[512];
                allowed_keys(allowed, sizeof allowed, true);
                luaL_error(L, "%sunknown key '%s' (allowed: %s)", where, k, allowed);
            }
            check_value(L, -1, spec, NULL, where, eff);
        }
        lua_pop(L, 1); /* key */
    }
    if (has_users)
        *has_users = users_idx != 0;
    if (!users_idx) {
        lua_pushnil(L); /* no blob */
        return;
    }
    /* users: a proper list of strings; sized first, then copied into a
     * GC-owned userdata so nothing C-owned is held across a raise. */
    lua_getfield(L, idx, "users"); /* users */
    int u = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, u);
    size_t bytes = 0, count = 0;
    lua_pushnil(L);
    while (lua_next(L, u)) { /* users, key, value */
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_tointeger(L, -2) > n)
            luaL_error(L, "%skey 'users' must be a list of user id strings (found key %s)", where,
                       luaL_tolstring(L, -2, NULL));
        size_t len;
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%susers[%d] must be a string (got %s)", where, (int)lua_tointeger(L, -2),
                       luaL_typename(L, -1));
        const char *s = lua_tolstring(L, -1, &len);
        if (len == 0 || strlen(s) != len)
            luaL_error(L, "%susers[%d] must be a non-empty string without NUL bytes", where,
                       (int)lua_tointeger(L, -2));
        bytes += len + 1;
        count++;
        lua_pop(L, 1); /* users, key */
    }
    if (nusers)
        *nusers = count;
    char *blob = lua_newuserdatauv(L, bytes ? bytes : 1, 0); /* users, blob */
    size_t off = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        lua_rawgeti(L, u, i); /* users, blob, s */
        const char *s = lua_tolstring(L, -1, &len);
        memcpy(blob + off, s, len + 1);
        off += len + 1;
        lua_pop(L, 1); /* users, blob */
    }
    lua_remove(L, u); /* blob */
}

int sc_policy__validate_l(lua_State *L)
{
    sc_policy__spec_t *out = lua_touserdata(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushnil(L);          /* t, nil */
    while (lua_next(L, 1)) { /* t, key, value */
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "policy table keys must be strings (got %s key %s)", luaL_typename(L, -2),
                       luaL_tolstring(L, -2, NULL));
        const char *k = lua_tostring(L, -2);
        const struct key_spec *spec = find_key(k);
        if (!spec) {
            char allowed[512];
            allowed_keys(allowed, sizeof allowed, false);
            luaL_error(L, "unknown key '%s' (allowed: %s)", k, allowed);
        }
        check_value(L, -1, spec, NULL, "", &out->eff);
        lua_pop(L, 1); /* t, key */
    }
    out->has_route = lua_getfield(L, 1, "route") != LUA_TNIL;
    out->has_on_error = lua_getfield(L, 1, "on_kontext_error") != LUA_TNIL;
    lua_settop(L, 1);

    int phases = 0;
    if (lua_getfield(L, 1, "phases") == LUA_TTABLE) { /* t, phases */
        phases = 2;
        lua_pushnil(L);
        while (lua_next(L, phases)) { /* t, phases, name, phase */
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "phases keys must be phase names (got %s)", luaL_typename(L, -2));
            check_phase(L, -1, lua_tostring(L, -2), NULL, NULL, NULL, NULL); /* ..., nil|blob */
            lua_pop(L, 2);                                                   /* t, phases, name */
        }
    }
    if (lua_getfield(L, 1, "phase") == LUA_TNIL) { /* t, [phases,] phase */
        lua_pushnil(L);
        return 1;
    }
    const char *name = lua_tostring(L, -1);
    if (strlen(name) >= sizeof out->eff.phase)
        luaL_error(L, "phase name '%s' is too long", name);
    if (!phases || lua_getfield(L, phases, name) == LUA_TNIL)
        luaL_error(L, "phase '%s' is not defined in phases", name);
    snprintf(out->eff.phase, sizeof out->eff.phase, "%s", name);
    out->percent = 0;
    check_phase(L, -1, name, &out->eff, &out->nusers, &out->has_users,
                &out->percent); /* ..., blob|nil */
    out->has_percent = false;
    lua_getfield(L, -2, "percent");
    out->has_percent = !lua_isnil(L, -1);
    lua_pop(L, 1); /* ..., blob|nil */
    return 1;
}

/* ==== Views generated from the table ==== */

/* Pushes the value of k (a key with a field) from e, or nothing (returns
 * false) when it has none to show: a K_SWITCH is false or a table of its sub
 * keys. Stack: -> +1 | 0. SC_MAY_RAISE (memory). */
static bool push_value(lua_State *L, const sc_policy_effective_t *e, const struct key_spec *k)
{
    switch (k->kind) {
    case K_BOOL:
        lua_pushboolean(L, *(const bool *)cfield_of(e, k));
        return true;
    case K_METHOD:
    case K_STRING:
        lua_pushstring(L, cfield_of(e, k));
        return true;
    case K_PHASE: /* absent when no phase is selected */
        if (!*(const char *)cfield_of(e, k))
            return false;
        lua_pushstring(L, cfield_of(e, k));
        return true;
    case K_SECONDS:
    case K_FRACTION:
        lua_pushnumber(L, *(const double *)cfield_of(e, k));
        return true;
    case K_COUNT:
        lua_pushinteger(L, *(const int *)cfield_of(e, k));
        return true;
    case K_SWITCH:
        if (!*(const bool *)cfield_of(e, k)) {
            lua_pushboolean(L, 0);
            return true;
        }
        lua_createtable(L, 0, 5); /* t */
        for (int i = 0; k->sub[i].name; i++)
            if (push_value(L, e, &k->sub[i]))        /* t, v */
                lua_setfield(L, -2, k->sub[i].name); /* t */
        return true;
    case K_PHASES:
    case K_FUNC:
        break;
    }
    return false;
}

void sc_policy__push_config(lua_State *L, const sc_policy__spec_t *spec, const char *users_blob)
{
    const sc_policy_effective_t *e = &spec->eff;
    lua_createtable(L, 0, 12); /* config */
    for (int i = 0; k_keys[i].name; i++) {
        const struct key_spec *k = &k_keys[i];
        if (k->field == NO_FIELD)
            continue;
        if (push_value(L, e, k))          /* config, v */
            lua_setfield(L, -2, k->name); /* config */
    }
    if (spec->has_percent) {
        lua_pushnumber(L, spec->percent);
        lua_setfield(L, -2, "percent");
    }
    if (spec->has_users) {
        /* in list order, as the file wrote them */
        lua_createtable(L, (int)spec->nusers, 0); /* config, users */
        const char *p = users_blob;
        for (size_t i = 0; i < spec->nusers; i++) {
            lua_pushstring(L, p);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
            p += strlen(p) + 1;
        }
        lua_setfield(L, -2, "users"); /* config */
    }
}

/* Appends "<key>":<value> for every key of keys with a field (comma-separated,
 * starting with one unless first); a K_SWITCH is false or an object of its sub
 * keys. Returns 0 or nonzero (out of memory). */
static int render_keys(sc_buf_t *b, const sc_policy_effective_t *e, const struct key_spec *keys,
                       bool first)
{
    int rc = 0;
    for (int i = 0; keys[i].name; i++) {
        const struct key_spec *k = &keys[i];
        if (k->field == NO_FIELD)
            continue;
        rc |= sc_buf_printf(b, "%s\"%s\":", first ? "" : ",", k->name);
        first = false;
        switch (k->kind) {
        case K_BOOL:
            rc |= sc_buf_puts(b, *(const bool *)cfield_of(e, k) ? "true" : "false");
            break;
        case K_METHOD:
        case K_STRING:
            rc |= sc_buf_json_str(b, cfield_of(e, k));
            break;
        case K_PHASE: /* null when no phase is selected */
            rc |= sc_buf_json_str(b, *(const char *)cfield_of(e, k) ? cfield_of(e, k) : NULL);
            break;
        case K_SECONDS:
        case K_FRACTION:
            rc |= sc_buf_json_num(b, *(const double *)cfield_of(e, k));
            break;
        case K_COUNT:
            rc |= sc_buf_printf(b, "%d", *(const int *)cfield_of(e, k));
            break;
        case K_SWITCH:
            if (!*(const bool *)cfield_of(e, k)) {
                rc |= sc_buf_puts(b, "false");
                break;
            }
            rc |= sc_buf_puts(b, "{");
            rc |= render_keys(b, e, k->sub, true);
            rc |= sc_buf_puts(b, "}");
            break;
        case K_PHASES:
        case K_FUNC:
            break;
        }
    }
    return rc;
}

int sc_policy__render_effective(sc_buf_t *b, const sc_policy__spec_t *spec, const char *users_blob)
{
    const sc_policy_effective_t *e = &spec->eff;
    int rc = sc_buf_puts(b, "{");
    rc |= render_keys(b, e, k_keys, true);
    if (spec->has_percent) {
        rc |= sc_buf_puts(b, ",\"percent\":");
        rc |= sc_buf_json_num(b, spec->percent);
    }
    if (spec->has_users) {
        rc |= sc_buf_puts(b, ",\"users\":[");
        const char *p = users_blob;
        for (size_t i = 0; i < spec->nusers; i++) {
            rc |= sc_buf_puts(b, i ? "," : "");
            rc |= sc_buf_json_str(b, p);
            p += strlen(p) + 1;
        }
        rc |= sc_buf_puts(b, "]");
    }
    rc |= sc_buf_printf(b, ",\"route\":\"%s\",\"on_kontext_error\":\"%s\"}",
                        spec->has_route ? "custom" : "default",
                        spec->has_on_error ? "custom" : "default");
    return rc ? -1 : 0;
}
