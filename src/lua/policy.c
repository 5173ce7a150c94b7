/* The live routing policy: generations, per-thread states, validation, reload
 * (see policy.h).
 *
 * Ownership: a generation (policy_gen_t) is immutable once published and
 * reference-counted: g_cur holds one reference, every thread whose state was
 * built for it holds one. Publishing swaps g_cur under g_mu; threads take their
 * reference under g_mu too, so a generation is never freed while a thread can
 * still reach it. Threads notice a new generation by comparing their pointer
 * with g_cur (one atomic load per request) and rebuild their lua_State at that
 * moment; a thread's state is closed by a pthread key destructor when the
 * thread exits. Reloads are serialised by g_reload_mu. No Lua call ever runs
 * with g_mu held (rule 8). */
#include "lua/policy.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "lua/bind_scenecomp.h"
#include "lua/policy_internal.h"
#include "lua/sandbox.h"
#include "metrics/metrics.h"

extern const char sc_embedded_policy[];
extern const size_t sc_embedded_policy_len;

#define POLICY_MAX_BYTES ((size_t)1 << 20)
#define POLICY_LOAD_BUDGET 1.0 /* seconds for running the chunk itself */

/* Registry keys (addresses only) of a policy state. */
static const char k_policy = 'P'; /* the table the chunk returned */
static const char k_config = 'C'; /* ctx.config, built once per state */
static const char k_ctx_mt = 'M'; /* metatable of ctx (lazy ctx.metrics) */

typedef struct policy_gen {
    atomic_int refs;
    long long version;
    double loaded_at;
    char *source;
    size_t len;
    char origin[SC_CFG_PATH];         /* file path, or "embedded" */
    char chunkname[SC_CFG_PATH + 16]; /* "@path" or "=embedded policy" */
    sc_policy_effective_t eff;
    bool has_route, has_on_error;
    bool has_users, has_percent; /* of the selected phase */
    double percent;
    char *users_blob;   /* NUL-separated user ids of the selected phase */
    const char **users; /* sorted pointers into users_blob */
    size_t nusers;
    char *effective_json; /* {...} for sc_policy_status_json */
} policy_gen_t;

typedef struct policy_tls {
    policy_gen_t *gen; /* reference held */
    lua_State *L;      /* built lazily for gen (only when it has Lua callbacks) */
    bool broken;       /* building L failed for gen: route to pil until the next gen */
    double last_log;   /* rate limit of route-error log lines (mono) */
    long suppressed;
} policy_tls_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;        /* g_cur swap, g_last_error */
static pthread_mutex_t g_reload_mu = PTHREAD_MUTEX_INITIALIZER; /* one reload at a time */
static _Atomic(policy_gen_t *) g_cur;
static atomic_llong g_version;
static long long g_next_version; /* under g_reload_mu */
static sc_config_t g_cfg;        /* written by init only, before threads route */
static char g_last_error[1024];  /* "" = none; under g_mu */

static pthread_key_t g_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static _Thread_local policy_tls_t *t_tls;

/* ==== Generations ==== */

static void gen_unref(policy_gen_t *g)
{
    if (!g || atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(g->source);
    free(g->users_blob);
    free(g->users);
    free(g->effective_json);
    free(g);
}

static void eff_from_config(const sc_config_t *cfg, sc_policy_effective_t *eff)
{
    memset(eff, 0, sizeof *eff);
    eff->use_kontext = cfg->use_kontext;
    snprintf(eff->method, sizeof eff->method, "%s", cfg->method);
    snprintf(eff->model_id, sizeof eff->model_id, "%s", cfg->kontext_model_id);
    eff->timeout_seconds = cfg->kontext_timeout_seconds;
    eff->max_concurrent = cfg->max_concurrent_kontext;
    eff->max_per_hour = cfg->max_kontext_per_hour;
    eff->daily_limit = cfg->kontext_daily_limit;
    /* Outage protection (issue 11); defaults as sc_breaker_params_default */
    eff->breaker_enabled = cfg->breaker_enabled;
    eff->breaker_failure_rate = 0.5;
    eff->breaker_min_calls = 10;
    eff->breaker_window_seconds = 60;
    eff->breaker_open_seconds = 30;
    eff->breaker_half_open_calls = 1;
    eff->pacing = cfg->kontext_budget_pacing;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool gen_has_user(const policy_gen_t *g, const char *user_id)
{
    return user_id && g->nusers &&
           bsearch(&user_id, g->users, g->nusers, sizeof *g->users, cmp_str) != NULL;
}

/* The contract's default routing (API.md "Lua policy"), implemented once. */
static sc_route_t gen_default_route(const policy_gen_t *g, const char *user_id)
{
    if (!g->eff.use_kontext || strcmp(g->eff.method, "kontext") != 0)
        return SC_ROUTE_PIL;
    if (!g->eff.phase[0] || (!g->has_users && !g->has_percent))
        return SC_ROUTE_KONTEXT;
    if (gen_has_user(g, user_id))
        return SC_ROUTE_KONTEXT;
    if (g->has_percent) {
        if (g->percent >= 100)
            return SC_ROUTE_KONTEXT;
        if (user_id && sc_lua_bucket(user_id, strlen(user_id), "kontext", 7) < g->percent)
            return SC_ROUTE_KONTEXT;
    }
    return SC_ROUTE_PIL;
}

/* ==== Validation (runs inside sc_lua_call; raises with the culprit named) ==== */

enum key_kind {
    K_BOOL,
    K_METHOD,
    K_STRING,
    K_SECONDS,
    K_COUNT,
    K_PHASE,
    K_PHASES,
    K_FUNC,
    K_BREAKER, /* issue 11 */
    K_PACING,  /* issue 11 */
};

static const struct key_spec {
    const char *name;
    enum key_kind kind;
    bool in_phase; /* may be overridden by phases[phase] */
} k_keys[] = {
    {"use_kontext", K_BOOL, true},       {"method", K_METHOD, true},
    {"model_id", K_STRING, true},        {"timeout_seconds", K_SECONDS, true},
    {"max_concurrent", K_COUNT, true},   {"max_per_hour", K_COUNT, true},
    {"daily_limit", K_COUNT, true},      {"phase", K_PHASE, false},
    {"phases", K_PHASES, false},         {"route", K_FUNC, false},
    {"on_kontext_error", K_FUNC, false}, {"breaker", K_BREAKER, true},
    {"pacing", K_PACING, true},          {NULL, K_BOOL, false},
};

static const struct key_spec *find_key(const char *name)
{
    for (int i = 0; k_keys[i].name; i++)
        if (strcmp(k_keys[i].name, name) == 0)
            return &k_keys[i];
    return NULL;
}

/* Raises "<where>key 'k' must be <what> (got <type>)". Always raises. */
static int bad_type(lua_State *L, const char *where, const char *key, const char *what, int idx)
{
    return luaL_error(L, "%skey '%s' must be %s (got %s)", where, key, what, luaL_typename(L, idx));
}

/* ==== Outage protection keys (issue 11) ==== */

/* `breaker = false | true | {failure_rate, min_calls, window_seconds,
 * open_seconds, half_open_calls}` at idx; a table's absent keys keep the values
 * so far (env/defaults < top level < phase). Stores into eff when not NULL.
 * SC_MAY_RAISE. */
static void check_breaker(lua_State *L, int idx, const char *where, sc_policy_effective_t *eff)
{
    sc_policy_effective_t tmp;
    memset(&tmp, 0, sizeof tmp);
    sc_policy_effective_t *e = eff ? eff : &tmp;
    if (lua_isboolean(L, idx)) {
        e->breaker_enabled = lua_toboolean(L, idx);
        return;
    }
    if (!lua_istable(L, idx))
        bad_type(L, where, "breaker",
                 "false or a table {failure_rate, min_calls, "
                 "window_seconds, open_seconds, half_open_calls}",
                 idx);
    e->breaker_enabled = true;
    lua_pushnil(L);
    while (lua_next(L, idx)) { /* key, value */
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        int t = lua_type(L, -1);
        double v = lua_tonumber(L, -1);
        int isint = 0;
        lua_Integer iv = lua_tointegerx(L, -1, &isint);
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%sbreaker keys must be strings (got %s)", where, luaL_typename(L, -2));
        else if (strcmp(k, "failure_rate") == 0) {
            if (t != LUA_TNUMBER || !(v > 0 && v <= 1))
                luaL_error(L, "%sbreaker.failure_rate must be a number in (0, 1]", where);
            e->breaker_failure_rate = v;
        } else if (strcmp(k, "window_seconds") == 0 || strcmp(k, "open_seconds") == 0) {
            if (t != LUA_TNUMBER || !(v > 0 && v <= 86400))
                luaL_error(L, "%sbreaker.%s must be a number of seconds in (0, 86400]", where, k);
            *(k[0] == 'w' ? &e->breaker_window_seconds : &e->breaker_open_seconds) = v;
        } else if (strcmp(k, "min_calls") == 0 || strcmp(k, "half_open_calls") == 0) {
            if (t != LUA_TNUMBER || !isint || iv < 1 || iv > 1000000)
                luaL_error(L, "%sbreaker.%s must be an integer in 1..1000000", where, k);
            *(k[0] == 'm' ? &e->breaker_min_calls : &e->breaker_half_open_calls) = (int)iv;
        } else {
            luaL_error(L,
                       "%sbreaker: unknown key '%s' (allowed: failure_rate, min_calls, "
                       "window_seconds, open_seconds, half_open_calls)",
                       where, k);
        }
        lua_pop(L, 1); /* key */
    }
}

/* Checks the value at idx for spec and, when eff is not NULL, stores it there.
 * where is "" or "phases.<name>: ". SC_MAY_RAISE. */
static void check_value(lua_State *L, int idx, const struct key_spec *spec, const char *where,
                        sc_policy_effective_t *eff)
{
    idx = lua_absindex(L, idx);
    switch (spec->kind) {
    case K_BOOL:
        if (!lua_isboolean(L, idx))
            bad_type(L, where, spec->name, "a boolean", idx);
        if (eff)
            eff->use_kontext = lua_toboolean(L, idx);
        break;
    case K_METHOD: {
        if (lua_type(L, idx) != LUA_TSTRING)
            bad_type(L, where, spec->name, "\"pil\" or \"kontext\"", idx);
        const char *m = lua_tostring(L, idx);
        if (strcmp(m, "pil") != 0 && strcmp(m, "kontext") != 0)
            luaL_error(L, "%skey 'method' must be \"pil\" or \"kontext\" (got \"%s\")", where, m);
        if (eff)
            snprintf(eff->method, sizeof eff->method, "%s", m);
        break;
    }
    case K_STRING: {
        size_t n;
        if (lua_type(L, idx) != LUA_TSTRING)
            bad_type(L, where, spec->name, "a non-empty string", idx);
        const char *s = lua_tolstring(L, idx, &n);
        if (n == 0 || n >= sizeof eff->model_id || strlen(s) != n)
            luaL_error(L, "%skey '%s' must be a non-empty string shorter than %d bytes", where,
                       spec->name, (int)sizeof eff->model_id);
        if (eff)
            snprintf(eff->model_id, sizeof eff->model_id, "%s", s);
        break;
    }
    case K_SECONDS: {
        if (lua_type(L, idx) != LUA_TNUMBER)
            bad_type(L, where, spec->name, "a number of seconds", idx);
        double v = lua_tonumber(L, idx);
        if (!(v > 0 && v <= 86400))
            luaL_error(L, "%skey '%s' must be a number of seconds in (0, 86400] (got %f)", where,
                       spec->name, v);
        if (eff)
            eff->timeout_seconds = v;
        break;
    }
    case K_COUNT: {
        int isint = 0;
        if (lua_type(L, idx) != LUA_TNUMBER)
            bad_type(L, where, spec->name, "an integer >= 0", idx);
        lua_Integer v = lua_tointegerx(L, idx, &isint);
        if (!isint || v < 0 || v > 1000000000)
            luaL_error(L, "%skey '%s' must be an integer in 0..1000000000 (got %s)", where,
                       spec->name, lua_tostring(L, idx));
        if (eff) {
            int *dst = strcmp(spec->name, "max_concurrent") == 0 ? &eff->max_concurrent
                       : strcmp(spec->name, "max_per_hour") == 0 ? &eff->max_per_hour
                                                                 : &eff->daily_limit;
            *dst = (int)v;
        }
        break;
    }
    case K_PHASE:
        if (lua_type(L, idx) != LUA_TSTRING)
            bad_type(L, where, spec->name, "a string naming one of phases (or nil)", idx);
        break;
    case K_PHASES:
        if (!lua_istable(L, idx))
            bad_type(L, where, spec->name, "a table of phase tables", idx);
        break;
    case K_FUNC:
        if (!lua_isfunction(L, idx))
            bad_type(L, where, spec->name, "a function", idx);
        break;
    case K_BREAKER: /* issue 11 */
        check_breaker(L, idx, where, eff);
        break;
    case K_PACING: /* issue 11 */
        if (!lua_isboolean(L, idx))
            bad_type(L, where, spec->name, "a boolean", idx);
        if (eff)
            eff->pacing = lua_toboolean(L, idx);
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
                bad_type(L, where, "users", "a list of user id strings", -1);
            users_idx = 1;
        } else if (strcmp(k, "percent") == 0) {
            if (lua_type(L, -1) != LUA_TNUMBER)
                bad_type(L, where, "percent", "a number in 0..100", -1);
            double p = lua_tonumber(L, -1);
            if (!(p >= 0 && p <= 100))
                luaL_error(L, "%skey 'percent' must be a number in 0..100 (got %f)", where, p);
            if (percent)
                *percent = p;
        } else {
            const struct key_spec *spec = find_key(k);
            if (!spec || !spec->in_phase)
                luaL_error(L,
                           "%sunknown key '%s' (allowed: users, percent, use_kontext, method, "
                           "model_id, timeout_seconds, max_concurrent, max_per_hour, "
                           "daily_limit, breaker, pacing)",
                           where, k);
            check_value(L, -1, spec, where, eff);
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

/* Lua C function, called through sc_lua_call:
 *   stack: policy table, lightuserdata(policy_gen_t *) -> users blob | nil
 * Validates every key of the table and every phase, then fills the
 * generation's effective config (env defaults already there < table keys <
 * phases[phase]) and the selected phase's routing data. Raises with a message
 * naming the culprit key. */
static int policy_validate_l(lua_State *L)
{
    policy_gen_t *g = lua_touserdata(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushnil(L);          /* t, nil */
    while (lua_next(L, 1)) { /* t, key, value */
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "policy table keys must be strings (got %s key %s)", luaL_typename(L, -2),
                       luaL_tolstring(L, -2, NULL));
        const char *k = lua_tostring(L, -2);
        const struct key_spec *spec = find_key(k);
        if (!spec)
            luaL_error(L,
                       "unknown key '%s' (allowed: use_kontext, method, model_id, "
                       "timeout_seconds, max_concurrent, max_per_hour, daily_limit, phase, "
                       "phases, route, on_kontext_error, breaker, pacing)",
                       k);
        check_value(L, -1, spec, "", &g->eff);
        lua_pop(L, 1); /* t, key */
    }
    g->has_route = lua_getfield(L, 1, "route") != LUA_TNIL;
    g->has_on_error = lua_getfield(L, 1, "on_kontext_error") != LUA_TNIL;
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
    if (strlen(name) >= sizeof g->eff.phase)
        luaL_error(L, "phase name '%s' is too long", name);
    if (!phases || lua_getfield(L, phases, name) == LUA_TNIL)
        luaL_error(L, "phase '%s' is not defined in phases", name);
    snprintf(g->eff.phase, sizeof g->eff.phase, "%s", name);
    g->percent = 0;
    check_phase(L, -1, name, &g->eff, &g->nusers, &g->has_users, &g->percent); /* ..., blob|nil */
    g->has_percent = false;
    lua_getfield(L, -2, "percent");
    g->has_percent = !lua_isnil(L, -1);
    lua_pop(L, 1); /* ..., blob|nil */
    return 1;
}

/* ==== Per-state setup and the calls into route / on_kontext_error ==== */

/* ctx.__index: builds ctx.metrics on first access (a snapshot costs a lock and
 * some work, and most route functions never look at it). */
static int ctx_index_l(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "metrics") != 0)
        return 0;
    lua_settop(L, 2);
    sc_lua__metrics_l(L); /* ctx, key, m */
    lua_pushvalue(L, 2);  /* ctx, key, m, key */
    lua_pushvalue(L, 3);  /* ctx, key, m, key, m */
    lua_rawset(L, 1);     /* ctx, key, m */
    return 1;
}

/* Lua: answer = ctx.default_route(req)
 * The host's default routing ("kontext" | "pil") for req.user_id under this
 * generation's effective config and phase. Raises when req is not a table. */
static int ctx_default_route_l(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const policy_gen_t *g = sc_lua_owner(L);
    lua_getfield(L, 1, "user_id"); /* req, user_id */
    const char *user = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    sc_route_t r = g ? gen_default_route(g, user) : SC_ROUTE_PIL;
    lua_pushstring(L, r == SC_ROUTE_KONTEXT ? "kontext" : "pil");
    return 1;
}

/* Lua C function, through sc_lua_call: stack: policy table -> (nothing).
 * Stores the policy table, ctx.config and the ctx metatable in the registry of
 * a state whose owner is its generation. */
static int policy_state_setup_l(lua_State *L)
{
    const policy_gen_t *g = sc_lua_owner(L);
    const sc_policy_effective_t *e = &g->eff;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushvalue(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_policy);

    lua_createtable(L, 0, 10); /* t, config */
    lua_pushboolean(L, e->use_kontext);
    lua_setfield(L, -2, "use_kontext");
    lua_pushstring(L, e->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, e->model_id);
    lua_setfield(L, -2, "model_id");
    lua_pushnumber(L, e->timeout_seconds);
    lua_setfield(L, -2, "timeout_seconds");
    lua_pushinteger(L, e->max_concurrent);
    lua_setfield(L, -2, "max_concurrent");
    lua_pushinteger(L, e->max_per_hour);
    lua_setfield(L, -2, "max_per_hour");
    lua_pushinteger(L, e->daily_limit);
    lua_setfield(L, -2, "daily_limit");
    if (e->phase[0]) {
        lua_pushstring(L, e->phase);
        lua_setfield(L, -2, "phase");
    }
    if (g->has_percent) {
        lua_pushnumber(L, g->percent);
        lua_setfield(L, -2, "percent");
    }
    if (g->has_users) {
        /* in list order, as the file wrote them */
        lua_createtable(L, (int)g->nusers, 0); /* t, config, users */
        const char *p = g->users_blob;
        for (size_t i = 0; i < g->nusers; i++) {
            lua_pushstring(L, p);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
            p += strlen(p) + 1;
        }
        lua_setfield(L, -2, "users"); /* t, config */
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_config); /* t */

    lua_createtable(L, 0, 2); /* t, mt */
    lua_pushcfunction(L, ctx_index_l);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_ctx_mt); /* t */
    return 0;
}

/* Pushes req as the documented table (stack: -> +1). SC_MAY_RAISE (memory). */
static void push_req(lua_State *L, const sc_policy_req_t *r)
{
    lua_createtable(L, 0, 4); /* req */
    if (r->user_id) {
        lua_pushstring(L, r->user_id);
        lua_setfield(L, -2, "user_id");
    }
    if (r->prompt) {
        lua_pushstring(L, r->prompt);
        lua_setfield(L, -2, "prompt");
    }
    for (int i = 0; i < 2; i++) {
        lua_createtable(L, 0, 3); /* req, image */
        lua_pushinteger(L, i ? r->product_w : r->scene_w);
        lua_setfield(L, -2, "width");
        lua_pushinteger(L, i ? r->product_h : r->scene_h);
        lua_setfield(L, -2, "height");
        lua_pushboolean(L, i ? r->product_alpha : r->scene_alpha);
        lua_setfield(L, -2, "has_alpha");
        lua_setfield(L, -2, i ? "product" : "scene"); /* req */
    }
}

/* Pushes a fresh ctx (stack: -> +1). SC_MAY_RAISE (memory). */
static void push_ctx(lua_State *L)
{
    const policy_gen_t *g = sc_lua_owner(L);
    lua_createtable(L, 0, 4);                     /* ctx */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_config); /* ctx, config */
    lua_setfield(L, -2, "config");
    if (g->eff.phase[0]) {
        lua_pushstring(L, g->eff.phase);
        lua_setfield(L, -2, "phase");
    }
    lua_pushcfunction(L, sc_lua__bucket_l);
    lua_setfield(L, -2, "bucket");
    lua_pushcfunction(L, ctx_default_route_l);
    lua_setfield(L, -2, "default_route");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_ctx_mt); /* ctx, mt */
    lua_setmetatable(L, -2);                      /* ctx */
}

/* Lua C function, through sc_lua_call:
 *   stack: lightuserdata(sc_policy_req_t *) -> route's answer
 * Calls policy.route(req, ctx) inside the caller's deadline. */
static int policy_route_l(lua_State *L)
{
    const sc_policy_req_t *req = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_policy); /* policy */
    lua_getfield(L, 1, "route");                  /* policy, route */
    if (!lua_isfunction(L, 2))
        return luaL_error(L, "policy.route is not a function in this state");
    push_req(L, req);  /* policy, route, req */
    push_ctx(L);       /* policy, route, req, ctx */
    lua_call(L, 2, 1); /* policy, answer */
    return 1;
}

typedef struct kerr_args {
    const sc_policy_req_t *req;
    const char *reason, *message;
} kerr_args_t;

/* Lua C function, through sc_lua_call:
 *   stack: lightuserdata(kerr_args_t *) -> on_kontext_error's answer */
static int policy_on_error_l(lua_State *L)
{
    const kerr_args_t *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &k_policy); /* policy */
    lua_getfield(L, 1, "on_kontext_error");       /* policy, fn */
    if (!lua_isfunction(L, 2))
        return luaL_error(L, "policy.on_kontext_error is not a function in this state");
    lua_createtable(L, 0, 2); /* policy, fn, err */
    lua_pushstring(L, a->reason ? a->reason : "api_error");
    lua_setfield(L, -2, "reason");
    lua_pushstring(L, a->message ? a->message : "");
    lua_setfield(L, -2, "message");
    push_req(L, a->req); /* policy, fn, err, req */
    push_ctx(L);         /* policy, fn, err, req, ctx */
    lua_call(L, 3, 1);   /* policy, answer */
    return 1;
}

/* Returns the string at the top if it is one of a or b (no coercion), else NULL. */
static const char *answer_of(lua_State *L, const char *a, const char *b)
{
    if (lua_type(L, -1) != LUA_TSTRING)
        return NULL;
    const char *s = lua_tostring(L, -1);
    return strcmp(s, a) == 0 ? a : strcmp(s, b) == 0 ? b : NULL;
}

static void describe_answer(lua_State *L, char *out, size_t n)
{
    if (lua_type(L, -1) == LUA_TSTRING)
        snprintf(out, n, "\"%.60s\"", lua_tostring(L, -1));
    else
        snprintf(out, n, "a %s value", luaL_typename(L, -1));
}

/* Builds a state running g's chunk, with the registry entries the calls need.
 * Returns NULL with err on failure. The state's owner is g (borrowed: the
 * caller keeps a reference for the state's lifetime). */
static lua_State *state_open(policy_gen_t *g, char *err, size_t errlen)
{
    lua_State *L = sc_lua_new_state(err, errlen);
    if (!L)
        return NULL;
    sc_lua_set_log_tag(L, "[Policy]");
    sc_lua_set_owner(L, g);
    sc_limits_caps_t caps = {g->eff.max_concurrent, g->eff.max_per_hour, g->eff.daily_limit};
    sc_lua_set_caps(L, &caps);
    if (sc_lua_run_chunk(L, g->source, g->len, g->chunkname, POLICY_LOAD_BUDGET, err, errlen) != 0)
        goto fail; /* */
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s: the file must return a table (got %s)", g->origin,
                 luaL_typename(L, -1));
        goto fail;
    }
    lua_pushcfunction(L, policy_state_setup_l); /* t, setup */
    lua_insert(L, -2);                          /* setup, t */
    if (sc_lua_call(L, 1, 0, POLICY_LOAD_BUDGET, err, errlen) != 0)
        goto fail;
    return L;
fail:
    lua_close(L);
    return NULL;
}

/* ==== Loading a generation (validation included) ==== */

/* Runs route (with and without a user id) and on_kontext_error on sample
 * requests in L, as reload validation. Returns 0 or -1 with err. */
static int validate_callbacks(lua_State *L, const policy_gen_t *g, char *err, size_t errlen)
{
    char msg[512], got[96];
    static const sc_policy_req_t samples[2] = {
        {"sample-user", "a product on a kitchen table", 1024, 768, false, 512, 512, true},
        {NULL, NULL, 1920, 1080, false, 800, 600, false},
    };
    int top = lua_gettop(L);
    for (int i = 0; g->has_route && i < 2; i++) {
        lua_pushcfunction(L, policy_route_l);
        lua_pushlightuserdata(L, (void *)&samples[i]);
        if (sc_lua_call(L, 1, 1, SC_LUA_CALL_BUDGET_SECONDS, msg, sizeof msg) != 0) {
            snprintf(err, errlen, "%s (route failed on a sample request%s)", msg,
                     i ? " without user_id" : "");
            return -1;
        }
        if (!answer_of(L, "kontext", "pil")) {
            describe_answer(L, got, sizeof got);
            snprintf(err, errlen,
                     "%s: route returned %s on a sample request; expected \"kontext\" or \"pil\"",
                     g->origin, got);
            lua_settop(L, top);
            return -1;
        }
        lua_settop(L, top);
    }
    if (g->has_on_error) {
        kerr_args_t a = {&samples[0], "timeout", "sample error (validation)"};
        lua_pushcfunction(L, policy_on_error_l);
        lua_pushlightuserdata(L, &a);
        if (sc_lua_call(L, 1, 1, SC_LUA_CALL_BUDGET_SECONDS, msg, sizeof msg) != 0) {
            snprintf(err, errlen, "%s (on_kontext_error failed on a sample error)", msg);
            return -1;
        }
        if (!answer_of(L, "fallback", "fail")) {
            describe_answer(L, got, sizeof got);
            snprintf(err, errlen,
                     "%s: on_kontext_error returned %s on a sample error; expected \"fallback\" or "
                     "\"fail\"",
                     g->origin, got);
            lua_settop(L, top);
            return -1;
        }
        lua_settop(L, top);
    }
    return 0;
}

static int render_effective(policy_gen_t *g)
{
    const sc_policy_effective_t *e = &g->eff;
    sc_buf_t b = SC_BUF_INIT;
    int rc =
        sc_buf_printf(&b, "{\"use_kontext\":%s,\"method\":", e->use_kontext ? "true" : "false");
    rc |= sc_buf_json_str(&b, e->method);
    rc |= sc_buf_puts(&b, ",\"model_id\":");
    rc |= sc_buf_json_str(&b, e->model_id);
    rc |= sc_buf_puts(&b, ",\"timeout_seconds\":");
    rc |= sc_buf_json_num(&b, e->timeout_seconds);
    rc |= sc_buf_printf(&b,
                        ",\"max_concurrent\":%d,\"max_per_hour\":%d,\"daily_limit\":%d,\"phase\":",
                        e->max_concurrent, e->max_per_hour, e->daily_limit);
    rc |= sc_buf_json_str(&b, e->phase[0] ? e->phase : NULL);
    /* issue 11 */
    if (e->breaker_enabled) {
        rc |= sc_buf_puts(&b, ",\"breaker\":{\"failure_rate\":");
        rc |= sc_buf_json_num(&b, e->breaker_failure_rate);
        rc |= sc_buf_printf(&b, ",\"min_calls\":%d,\"window_seconds\":", e->breaker_min_calls);
        rc |= sc_buf_json_num(&b, e->breaker_window_seconds);
        rc |= sc_buf_puts(&b, ",\"open_seconds\":");
        rc |= sc_buf_json_num(&b, e->breaker_open_seconds);
        rc |= sc_buf_printf(&b, ",\"half_open_calls\":%d}", e->breaker_half_open_calls);
    } else {
        rc |= sc_buf_puts(&b, ",\"breaker\":false");
    }
    rc |= sc_buf_printf(&b, ",\"pacing\":%s", e->pacing ? "true" : "false");
    if (g->has_percent) {
        rc |= sc_buf_puts(&b, ",\"percent\":");
        rc |= sc_buf_json_num(&b, g->percent);
    }
    if (g->has_users) {
        rc |= sc_buf_puts(&b, ",\"users\":[");
        const char *p = g->users_blob;
        for (size_t i = 0; i < g->nusers; i++) {
            rc |= sc_buf_puts(&b, i ? "," : "");
            rc |= sc_buf_json_str(&b, p);
            p += strlen(p) + 1;
        }
        rc |= sc_buf_puts(&b, "]");
    }
    rc |=
        sc_buf_printf(&b, ",\"route\":\"%s\",\"on_kontext_error\":\"%s\"}",
                      g->has_route ? "custom" : "default", g->has_on_error ? "custom" : "default");
    if (rc) {
        sc_buf_free(&b);
        return -1;
    }
    g->effective_json = sc_buf_steal(&b, NULL);
    return 0;
}

/* Loads and validates source into a new, unpublished generation (refs = 1,
 * version 0). Takes nothing; copies source. Returns NULL with err. */
static policy_gen_t *gen_load(const sc_config_t *cfg, const char *source, size_t len,
                              const char *origin, char *err, size_t errlen)
{
    char msg[768];
    lua_State *L = NULL;
    policy_gen_t *g = calloc(1, sizeof *g);
    if (!g || !(g->source = malloc(len + 1))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    atomic_init(&g->refs, 1);
    memcpy(g->source, source, len);
    g->source[len] = '\0';
    g->len = len;
    g->loaded_at = sc_clock_wall();
    snprintf(g->origin, sizeof g->origin, "%s", origin);
    if (strcmp(origin, "embedded") == 0)
        snprintf(g->chunkname, sizeof g->chunkname, "=embedded lua/policy.lua");
    else
        snprintf(g->chunkname, sizeof g->chunkname, "@%s", origin);
    eff_from_config(cfg, &g->eff);

    L = sc_lua_new_state(err, errlen);
    if (!L)
        goto fail;
    sc_lua_set_log_tag(L, "[Policy]");
    sc_lua_set_owner(L, g);
    if (sc_lua_run_chunk(L, g->source, g->len, g->chunkname, POLICY_LOAD_BUDGET, err, errlen) != 0)
        goto fail;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s: the file must return a table (got %s)", origin,
                 luaL_typename(L, -1));
        goto fail;
    }
    lua_pushcfunction(L, policy_validate_l); /* t, validate */
    lua_pushvalue(L, -2);                    /* t, validate, t */
    lua_pushlightuserdata(L, g);             /* t, validate, t, g */
    if (sc_lua_call(L, 2, 1, POLICY_LOAD_BUDGET, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "%s: %s", origin, msg);
        goto fail;
    }
    /* t, blob|nil: copy the selected phase's users out of Lua (no raise here). */
    if (lua_type(L, -1) == LUA_TUSERDATA && g->nusers > 0) {
        size_t bytes = lua_rawlen(L, -1);
        g->users_blob = malloc(bytes);
        g->users = malloc(g->nusers * sizeof *g->users);
        if (!g->users_blob || !g->users) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(g->users_blob, lua_touserdata(L, -1), bytes);
        const char *p = g->users_blob;
        for (size_t i = 0; i < g->nusers; i++) {
            g->users[i] = p;
            p += strlen(p) + 1;
        }
        qsort(g->users, g->nusers, sizeof *g->users, cmp_str);
    }
    lua_pop(L, 1); /* t */
    sc_limits_caps_t caps = {g->eff.max_concurrent, g->eff.max_per_hour, g->eff.daily_limit};
    sc_lua_set_caps(L, &caps);
    lua_pushcfunction(L, policy_state_setup_l); /* t, setup */
    lua_insert(L, -2);                          /* setup, t */
    if (sc_lua_call(L, 1, 0, POLICY_LOAD_BUDGET, err, errlen) != 0)
        goto fail;
    if (validate_callbacks(L, g, err, errlen) != 0)
        goto fail;
    if (render_effective(g) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    lua_close(L);
    return g;
fail:
    /* every refusal names the file, also for "not enough memory" */
    if (g && !strstr(err, g->origin)) {
        snprintf(msg, sizeof msg, "%s", err);
        snprintf(err, errlen, "%s: %s", g->origin, msg);
    }
    if (L)
        lua_close(L);
    gen_unref(g);
    return NULL;
}

/* Reads path into a malloc'd buffer. Returns 0, 1 when the file does not
 * exist, or -1 with err. */
static int read_policy_file(const char *path, char **src, size_t *len, char *err, size_t errlen)
{
    int rc = sc_fs_read_file(path, POLICY_MAX_BYTES, src, len);
    if (rc == 0)
        return 0;
    if (rc == -2) {
        snprintf(err, errlen, "%s: file larger than %zu bytes", path, POLICY_MAX_BYTES);
        return -1;
    }
    if (errno == ENOENT)
        return 1;
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    return -1;
}

/* ==== Publishing and per-thread states ==== */

static void publish(policy_gen_t *g)
{
    pthread_mutex_lock(&g_mu);
    policy_gen_t *old = atomic_load_explicit(&g_cur, memory_order_relaxed);
    atomic_store_explicit(&g_cur, g, memory_order_release);
    atomic_store(&g_version, g ? g->version : 0);
    if (g)
        g_last_error[0] = '\0';
    pthread_mutex_unlock(&g_mu);
    gen_unref(old);
}

static void tls_destroy(void *p)
{
    policy_tls_t *t = p;
    if (!t)
        return;
    if (t->L)
        lua_close(t->L);
    gen_unref(t->gen);
    free(t);
}

static void key_init(void)
{
    if (pthread_key_create(&g_key, tls_destroy) != 0)
        abort(); /* only fails when the process is out of keys at start-up */
}

/* This thread's slot, swapped to the newest generation. NULL only when out of memory. */
static policy_tls_t *tls_sync(void)
{
    policy_tls_t *t = t_tls;
    if (!t) {
        pthread_once(&g_key_once, key_init);
        t = calloc(1, sizeof *t);
        if (!t)
            return NULL;
        t_tls = t;
        pthread_setspecific(g_key, t);
    }
    if (t->gen == atomic_load_explicit(&g_cur, memory_order_acquire))
        return t;
    pthread_mutex_lock(&g_mu);
    policy_gen_t *cur = atomic_load_explicit(&g_cur, memory_order_relaxed);
    if (cur)
        atomic_fetch_add_explicit(&cur->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&g_mu);
    if (t->L) {
        lua_close(t->L);
        t->L = NULL;
    }
    gen_unref(t->gen);
    t->gen = cur;
    t->broken = false;
    return t;
}

/* The thread's state for its generation, built on first need. NULL when the
 * build failed (logged once per generation and thread). */
static lua_State *tls_state(policy_tls_t *t)
{
    char err[2048];
    if (t->L || t->broken || !t->gen)
        return t->L;
    t->L = state_open(t->gen, err, sizeof err);
    if (!t->L) {
        t->broken = true;
        sc_log_error("[Policy] cannot build the policy state of version %lld on this thread: %s",
                     t->gen->version, err);
    }
    return t->L;
}

/* Counts and logs (at most one line per second per thread) a route failure. */
static void route_error(policy_tls_t *t, const char *what, const char *msg)
{
    sc_metrics_route_error(sc_clock_wall());
    double now = sc_clock_mono();
    if (t && now - t->last_log < 1.0) {
        t->suppressed++;
        return;
    }
    long sup = t ? t->suppressed : 0;
    if (t) {
        t->last_log = now;
        t->suppressed = 0;
    }
    sc_log_warn("[Policy] %s: %s; routing this request to pil%s", what, msg,
                sup ? " (similar errors suppressed in the last second)" : "");
}

/* ==== Public API ==== */

int sc_policy_init(const sc_config_t *cfg, char *err, size_t errlen)
{
    char *src = NULL;
    size_t len = 0;
    const char *origin = cfg->policy_file;
    pthread_mutex_lock(&g_reload_mu);
    g_cfg = *cfg;
    int rc = read_policy_file(cfg->policy_file, &src, &len, err, errlen);
    if (rc < 0)
        goto fail;
    if (rc == 1) {
        sc_log_info("[Policy] %s not found, using the embedded default policy", cfg->policy_file);
        origin = "embedded";
    }
    policy_gen_t *g =
        rc == 1 ? gen_load(cfg, sc_embedded_policy, sc_embedded_policy_len, origin, err, errlen)
                : gen_load(cfg, src, len, origin, err, errlen);
    free(src);
    if (!g) {
        sc_log_error("[Policy] cannot load the policy: %s", err);
        pthread_mutex_unlock(&g_reload_mu);
        return -1;
    }
    g_next_version = 1;
    g->version = 1;
    g->eff.version = 1;
    publish(g);
    sc_log_info("[Policy] loaded %s (version 1, phase %s, use_kontext=%s, method=%s, route=%s)",
                g->origin, g->eff.phase[0] ? g->eff.phase : "none",
                g->eff.use_kontext ? "true" : "false", g->eff.method,
                g->has_route ? "custom" : "default");
    pthread_mutex_unlock(&g_reload_mu);
    return 0;
fail:
    sc_log_error("[Policy] cannot load the policy: %s", err);
    pthread_mutex_unlock(&g_reload_mu);
    return -1;
}

void sc_policy_shutdown(void)
{
    pthread_mutex_lock(&g_reload_mu);
    publish(NULL);
    pthread_mutex_unlock(&g_reload_mu);
    /* The calling thread (usually main, whose key destructor never runs). */
    if (t_tls) {
        pthread_setspecific(g_key, NULL);
        tls_destroy(t_tls);
        t_tls = NULL;
    }
}

sc_route_t sc_policy_route(const sc_policy_req_t *req, sc_policy_effective_t *eff)
{
    char msg[768], got[96];
    policy_tls_t *t = tls_sync();
    if (!t || !t->gen) {
        sc_policy_current(eff);
        return SC_ROUTE_PIL;
    }
    policy_gen_t *g = t->gen;
    *eff = g->eff;
    if (!g->has_route)
        return gen_default_route(g, req->user_id);
    lua_State *L = tls_state(t);
    if (!L) {
        route_error(t, "route unavailable", "the policy state could not be built");
        return SC_ROUTE_PIL;
    }
    int top = lua_gettop(L);
    lua_pushcfunction(L, policy_route_l);
    lua_pushlightuserdata(L, (void *)req);
    if (sc_lua_call(L, 1, 1, SC_LUA_CALL_BUDGET_SECONDS, msg, sizeof msg) != 0) {
        route_error(t, "route error", msg);
        return SC_ROUTE_PIL;
    }
    const char *a = answer_of(L, "kontext", "pil");
    if (!a) {
        describe_answer(L, got, sizeof got);
        lua_settop(L, top);
        snprintf(msg, sizeof msg, "route returned %s, expected \"kontext\" or \"pil\"", got);
        route_error(t, "invalid route answer", msg);
        return SC_ROUTE_PIL;
    }
    lua_settop(L, top);
    return a[0] == 'k' ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL;
}

bool sc_policy_on_kontext_error(const sc_policy_effective_t *eff, const char *reason,
                                const char *message, const sc_policy_req_t *req)
{
    char msg[768], got[96];
    policy_tls_t *t = t_tls;
    if (!t || !t->gen || t->gen->version != eff->version)
        t = tls_sync();
    if (!t || !t->gen || !t->gen->has_on_error)
        return false;
    lua_State *L = tls_state(t);
    if (!L)
        return false;
    kerr_args_t a = {req, reason, message};
    int top = lua_gettop(L);
    lua_pushcfunction(L, policy_on_error_l);
    lua_pushlightuserdata(L, &a);
    if (sc_lua_call(L, 1, 1, SC_LUA_CALL_BUDGET_SECONDS, msg, sizeof msg) != 0) {
        sc_log_warn("[Policy] on_kontext_error error: %s; falling back to PIL", msg);
        return false;
    }
    const char *ans = answer_of(L, "fallback", "fail");
    if (!ans) {
        describe_answer(L, got, sizeof got);
        sc_log_warn("[Policy] on_kontext_error returned %s, expected \"fallback\" or \"fail\"; "
                    "falling back to PIL",
                    got);
    }
    lua_settop(L, top);
    return ans && strcmp(ans, "fail") == 0;
}

void sc_policy_current(sc_policy_effective_t *eff)
{
    pthread_mutex_lock(&g_mu);
    policy_gen_t *g = atomic_load_explicit(&g_cur, memory_order_relaxed);
    if (g)
        *eff = g->eff;
    else
        eff_from_config(&g_cfg, eff);
    pthread_mutex_unlock(&g_mu);
}

long long sc_policy_version(void)
{
    return atomic_load(&g_version);
}

/* Reloads from POLICY_FILE; with only_if_changed, a file identical to the
 * published source is not reloaded (returns 1). */
static int policy_reload(const char *trigger, bool only_if_changed, long long *version, char *err,
                         size_t errlen)
{
    char *src = NULL;
    size_t len = 0;
    const char *origin = g_cfg.policy_file;
    long long keep = atomic_load(&g_version);
    pthread_mutex_lock(&g_reload_mu);
    policy_gen_t *g = NULL;
    int rc = read_policy_file(g_cfg.policy_file, &src, &len, err, errlen);
    if (rc == 1) {
        /* Never had a file (embedded default in force): nothing to reload, and
         * nothing wrong either. A file that disappears is refused below. */
        pthread_mutex_lock(&g_mu);
        policy_gen_t *cur = atomic_load_explicit(&g_cur, memory_order_relaxed);
        bool embedded = cur && strcmp(cur->origin, "embedded") == 0;
        pthread_mutex_unlock(&g_mu);
        if (embedded) {
            sc_log_info("[Policy] reload (%s): %s not found, the embedded default policy "
                        "stays in force (version %lld)",
                        trigger, g_cfg.policy_file, keep);
            pthread_mutex_unlock(&g_reload_mu);
            if (version)
                *version = keep;
            return 1;
        }
        snprintf(err, errlen, "%s: file not found", g_cfg.policy_file);
        rc = -1;
    }
    if (rc == 0 && only_if_changed) {
        pthread_mutex_lock(&g_mu);
        policy_gen_t *cur = atomic_load_explicit(&g_cur, memory_order_relaxed);
        /* After a refusal, the same content as in force is still reloaded, so
         * that reverting a bad edit clears last_error. */
        bool same = cur && !g_last_error[0] && strcmp(cur->origin, origin) == 0 &&
                    cur->len == len && memcmp(cur->source, src, len) == 0;
        pthread_mutex_unlock(&g_mu);
        if (same) {
            free(src);
            pthread_mutex_unlock(&g_reload_mu);
            if (version)
                *version = keep;
            return 1;
        }
    }
    if (rc == 0)
        g = gen_load(&g_cfg, src, len, origin, err, errlen);
    free(src);
    if (!g) {
        pthread_mutex_lock(&g_mu);
        snprintf(g_last_error, sizeof g_last_error, "%s", err);
        pthread_mutex_unlock(&g_mu);
        sc_log_error("[Policy] reload refused (%s): %s; keeping version %lld", trigger, err, keep);
        pthread_mutex_unlock(&g_reload_mu);
        return -1;
    }
    g->version = ++g_next_version;
    g->eff.version = g->version;
    publish(g);
    sc_log_info("[Policy] reloaded %s (version %lld, trigger: %s, phase %s, use_kontext=%s, "
                "method=%s, route=%s)",
                g->origin, g->version, trigger, g->eff.phase[0] ? g->eff.phase : "none",
                g->eff.use_kontext ? "true" : "false", g->eff.method,
                g->has_route ? "custom" : "default");
    if (version)
        *version = g->version;
    pthread_mutex_unlock(&g_reload_mu);
    return 0;
}

int sc_policy_reload(const char *trigger, long long *version, char *err, size_t errlen)
{
    return policy_reload(trigger, false, version, err, errlen) < 0 ? -1 : 0;
}

int sc_policy__reload_if_changed(const char *trigger, char *err, size_t errlen)
{
    return policy_reload(trigger, true, NULL, err, errlen);
}

int sc_policy_status_json(sc_buf_t *out)
{
    char last[sizeof g_last_error], at[32];
    pthread_mutex_lock(&g_mu);
    policy_gen_t *g = atomic_load_explicit(&g_cur, memory_order_relaxed);
    if (g)
        atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    memcpy(last, g_last_error, sizeof last);
    pthread_mutex_unlock(&g_mu);
    int rc;
    if (!g) {
        rc = sc_buf_puts(out, "{\"version\":0,\"loaded_at\":null,\"source\":null,\"phase\":null,"
                              "\"effective\":null,\"last_error\":");
    } else {
        sc_clock_rfc3339(g->loaded_at, at);
        rc = sc_buf_printf(out, "{\"version\":%lld,\"loaded_at\":\"%s\",\"source\":", g->version,
                           at);
        rc |= sc_buf_json_str(out, g->origin);
        rc |= sc_buf_puts(out, ",\"phase\":");
        rc |= sc_buf_json_str(out, g->eff.phase[0] ? g->eff.phase : NULL);
        rc |= sc_buf_puts(out, ",\"effective\":");
        rc |= sc_buf_puts(out, g->effective_json);
        rc |= sc_buf_puts(out, ",\"last_error\":");
    }
    rc |= sc_buf_json_str(out, last[0] ? last : NULL);
    rc |= sc_buf_puts(out, "}");
    gen_unref(g);
    return rc ? -1 : 0;
}

const char *sc_policy__last_error(char *buf, size_t n)
{
    pthread_mutex_lock(&g_mu);
    snprintf(buf, n, "%s", g_last_error);
    pthread_mutex_unlock(&g_mu);
    return buf[0] ? buf : NULL;
}

int sc_policy_check_file(const sc_config_t *cfg, const char *path, char *err, size_t errlen)
{
    char *src = NULL;
    size_t len = 0;
    int rc = read_policy_file(path, &src, &len, err, errlen);
    if (rc == 1)
        snprintf(err, errlen, "%s: file not found", path);
    if (rc != 0)
        return -1;
    policy_gen_t *g = gen_load(cfg, src, len, path, err, errlen);
    free(src);
    if (!g)
        return -1;
    gen_unref(g);
    return 0;
}
