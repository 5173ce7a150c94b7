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
#include "lua/policy_schema.h"
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
    sc_policy__spec_t spec;           /* effective config and what the file defines */
    char *users_blob;     /* NUL-separated user ids of the selected phase, in list order */
    const char **users;   /* sorted pointers into users_blob */
    char *effective_json; /* {...} for sc_policy_status_json */
} policy_gen_t;

typedef struct policy_tls {
    policy_gen_t *gen; /* reference held */
    lua_State *L;      /* built lazily for gen (only when it has Lua callbacks) */
    bool broken;       /* building L failed for gen: route to pil until the next gen */
    double last_log;   /* rate limit of route-error log lines (mono) */
    long suppressed;
    bool dry; /* a preview state: route errors are neither counted nor logged */
} policy_tls_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;        /* g_cur swap, g_last_error */
static pthread_mutex_t g_reload_mu = PTHREAD_MUTEX_INITIALIZER; /* one reload at a time */
static _Atomic(policy_gen_t *) g_cur;
static atomic_llong g_version;
static long long g_next_version; /* under g_reload_mu */
static sc_config_t g_cfg;        /* written by init only, before threads route */
static char g_last_error[1024];  /* "" = none; under g_mu */
/* POLICY_SOURCE=redis: sc_policy_reload asks this instead of reading POLICY_FILE. */
static _Atomic(sc_policy_reload_fn) g_reloader;

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
    return user_id && g->spec.nusers &&
           bsearch(&user_id, g->users, g->spec.nusers, sizeof *g->users, cmp_str) != NULL;
}

/* The contract's default routing (API.md "Lua policy"), implemented once;
 * rule (may be NULL) gets the rule that decided. */
static sc_route_t gen_default_route_why(const policy_gen_t *g, const char *user_id,
                                        const char **rule)
{
    const char *dummy;
    if (!rule)
        rule = &dummy;
    if (!g->spec.eff.use_kontext || strcmp(g->spec.eff.method, "kontext") != 0) {
        *rule = "disabled";
        return SC_ROUTE_PIL;
    }
    if (!g->spec.eff.phase[0] || (!g->spec.has_users && !g->spec.has_percent)) {
        *rule = "no_phase";
        return SC_ROUTE_KONTEXT;
    }
    if (gen_has_user(g, user_id)) {
        *rule = "user_list";
        return SC_ROUTE_KONTEXT;
    }
    if (g->spec.has_percent) {
        if (g->spec.percent >= 100) {
            *rule = "percent_full";
            return SC_ROUTE_KONTEXT;
        }
        if (user_id && sc_lua_bucket(user_id, strlen(user_id), "kontext", 7) < g->spec.percent) {
            *rule = "percent_bucket";
            return SC_ROUTE_KONTEXT;
        }
    }
    *rule = "outside_rollout";
    return SC_ROUTE_PIL;
}

static sc_route_t gen_default_route(const policy_gen_t *g, const char *user_id)
{
    return gen_default_route_why(g, user_id, NULL);
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
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushvalue(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_policy);

    sc_policy__push_config(L, &g->spec, g->users_blob); /* t, config */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &k_config);       /* t */

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
    if (g->spec.eff.phase[0]) {
        lua_pushstring(L, g->spec.eff.phase);
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
    sc_limits_caps_t caps = {g->spec.eff.max_concurrent, g->spec.eff.max_per_hour,
                             g->spec.eff.daily_limit};
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
    for (int i = 0; g->spec.has_route && i < 2; i++) {
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
    if (g->spec.has_on_error) {
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
    sc_buf_t b = SC_BUF_INIT;
    if (sc_policy__render_effective(&b, &g->spec, g->users_blob) != 0) {
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
    else if (strncmp(origin, "redis", 5) == 0) /* not a file: messages say "redis v7:3: ..." */
        snprintf(g->chunkname, sizeof g->chunkname, "=%s", origin);
    else
        snprintf(g->chunkname, sizeof g->chunkname, "@%s", origin);
    eff_from_config(cfg, &g->spec.eff);

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
    lua_pushcfunction(L, sc_policy__validate_l); /* t, validate */
    lua_pushvalue(L, -2);                        /* t, validate, t */
    lua_pushlightuserdata(L, &g->spec);          /* t, validate, t, spec */
    if (sc_lua_call(L, 2, 1, POLICY_LOAD_BUDGET, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "%s: %s", origin, msg);
        goto fail;
    }
    /* t, blob|nil: copy the selected phase's users out of Lua (no raise here). */
    if (lua_type(L, -1) == LUA_TUSERDATA && g->spec.nusers > 0) {
        size_t bytes = lua_rawlen(L, -1);
        g->users_blob = malloc(bytes);
        g->users = malloc(g->spec.nusers * sizeof *g->users);
        if (!g->users_blob || !g->users) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(g->users_blob, lua_touserdata(L, -1), bytes);
        const char *p = g->users_blob;
        for (size_t i = 0; i < g->spec.nusers; i++) {
            g->users[i] = p;
            p += strlen(p) + 1;
        }
        qsort(g->users, g->spec.nusers, sizeof *g->users, cmp_str);
    }
    lua_pop(L, 1); /* t */
    sc_limits_caps_t caps = {g->spec.eff.max_concurrent, g->spec.eff.max_per_hour,
                             g->spec.eff.daily_limit};
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
    if (t && t->dry)
        return;
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
    /* With POLICY_SOURCE=redis, versions are Redis's; the local policy in
     * force until the first one arrives is version 0. */
    g_next_version = strcmp(cfg->policy_source, "redis") == 0 ? 0 : 1;
    g->version = g_next_version;
    g->spec.eff.version = g->version;
    publish(g);
    sc_log_info("[Policy] loaded %s (version %lld, phase %s, use_kontext=%s, method=%s, route=%s)",
                g->origin, g->version, g->spec.eff.phase[0] ? g->spec.eff.phase : "none",
                g->spec.eff.use_kontext ? "true" : "false", g->spec.eff.method,
                g->spec.has_route ? "custom" : "default");
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
    return sc_policy_route_explain(req, eff, NULL);
}

/* Routes req with t's generation and state: the one implementation behind
 * sc_policy_route, sc_policy_route_explain and the preview. */
static sc_route_t route_with(policy_tls_t *t, const sc_policy_req_t *req,
                             sc_policy_effective_t *eff, sc_policy_explain_t *why)
{
    char msg[768], got[96];
    sc_policy_explain_t dummy;
    if (!why)
        why = &dummy;
    why->rule = "route_error";
    why->bucket =
        req->user_id ? (int)sc_lua_bucket(req->user_id, strlen(req->user_id), "kontext", 7) : -1;
    why->percent = NAN;
    if (!t || !t->gen) {
        sc_policy_current(eff);
        return SC_ROUTE_PIL;
    }
    policy_gen_t *g = t->gen;
    *eff = g->spec.eff;
    if (g->spec.has_percent)
        why->percent = g->spec.percent;
    if (!g->spec.has_route)
        return gen_default_route_why(g, req->user_id, &why->rule);
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
    why->rule = "route_function";
    return a[0] == 'k' ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL;
}

sc_route_t sc_policy_route_explain(const sc_policy_req_t *req, sc_policy_effective_t *eff,
                                   sc_policy_explain_t *why)
{
    return route_with(tls_sync(), req, eff, why);
}

struct sc_policy_preview {
    policy_tls_t t; /* dry: its own generation and state, never published */
};

sc_policy_preview_t *sc_policy_preview_new(const char *src, size_t len, const char *name, char *err,
                                           size_t errlen)
{
    sc_policy_preview_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->t.gen = gen_load(&g_cfg, src, len, name, err, errlen);
    if (!p->t.gen) {
        free(p);
        return NULL;
    }
    p->t.dry = true;
    return p;
}

sc_route_t sc_policy_preview_route(void *ud, const sc_policy_req_t *req)
{
    sc_policy_effective_t eff;
    return route_with(&((sc_policy_preview_t *)ud)->t, req, &eff, NULL);
}

void sc_policy_preview_free(sc_policy_preview_t *p)
{
    if (!p)
        return;
    if (p->t.L)
        lua_close(p->t.L);
    gen_unref(p->t.gen);
    free(p);
}

bool sc_policy_on_kontext_error(const sc_policy_effective_t *eff, const char *reason,
                                const char *message, const sc_policy_req_t *req)
{
    char msg[768], got[96];
    policy_tls_t *t = t_tls;
    if (!t || !t->gen || t->gen->version != eff->version)
        t = tls_sync();
    if (!t || !t->gen || !t->gen->spec.has_on_error)
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
        *eff = g->spec.eff;
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
    g->spec.eff.version = g->version;
    publish(g);
    sc_log_info("[Policy] reloaded %s (version %lld, trigger: %s, phase %s, use_kontext=%s, "
                "method=%s, route=%s)",
                g->origin, g->version, trigger, g->spec.eff.phase[0] ? g->spec.eff.phase : "none",
                g->spec.eff.use_kontext ? "true" : "false", g->spec.eff.method,
                g->spec.has_route ? "custom" : "default");
    if (version)
        *version = g->version;
    pthread_mutex_unlock(&g_reload_mu);
    return 0;
}

int sc_policy_reload(const char *trigger, long long *version, char *err, size_t errlen)
{
    sc_policy_reload_fn fn = atomic_load(&g_reloader);
    if (fn)
        return fn(trigger, version, err, errlen);
    return policy_reload(trigger, false, version, err, errlen) < 0 ? -1 : 0;
}

void sc_policy_watch_reload(const char *trigger, bool forced, void *ud)
{
    char err[1024];
    (void)ud;
    /* a refusal is logged and recorded by policy_reload itself */
    (void)policy_reload(trigger, !forced, NULL, err, sizeof err);
}

void sc_policy_set_reloader(sc_policy_reload_fn fn)
{
    atomic_store(&g_reloader, fn);
}

int sc_policy_apply_source(const char *src, size_t len, const char *origin, const char *name,
                           long long version, const char *trigger, char *err, size_t errlen)
{
    long long keep = atomic_load(&g_version);
    pthread_mutex_lock(&g_reload_mu);
    policy_gen_t *g = gen_load(&g_cfg, src, len, name, err, errlen);
    if (g)
        snprintf(g->origin, sizeof g->origin, "%s", origin);
    if (!g) {
        pthread_mutex_lock(&g_mu);
        snprintf(g_last_error, sizeof g_last_error, "%s", err);
        pthread_mutex_unlock(&g_mu);
        sc_log_error("[Policy] reload refused (%s): %s; keeping version %lld", trigger, err, keep);
        pthread_mutex_unlock(&g_reload_mu);
        return -1;
    }
    g->version = version;
    g->spec.eff.version = version;
    if (version > g_next_version)
        g_next_version = version;
    publish(g);
    sc_log_info("[Policy] reloaded %s (version %lld, trigger: %s, phase %s, use_kontext=%s, "
                "method=%s, route=%s)",
                g->origin, g->version, trigger, g->spec.eff.phase[0] ? g->spec.eff.phase : "none",
                g->spec.eff.use_kontext ? "true" : "false", g->spec.eff.method,
                g->spec.has_route ? "custom" : "default");
    pthread_mutex_unlock(&g_reload_mu);
    return 0;
}

void sc_policy_refuse(const char *trigger, const char *err)
{
    pthread_mutex_lock(&g_mu);
    snprintf(g_last_error, sizeof g_last_error, "%s", err);
    pthread_mutex_unlock(&g_mu);
    sc_log_error("[Policy] reload refused (%s): %s; keeping version %lld", trigger, err,
                 (long long)atomic_load(&g_version));
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
        rc |= sc_buf_json_str(out, g->spec.eff.phase[0] ? g->spec.eff.phase : NULL);
        rc |= sc_buf_puts(out, ",\"effective\":");
        rc |= sc_buf_puts(out, g->effective_json);
        rc |= sc_buf_puts(out, ",\"last_error\":");
    }
    rc |= sc_buf_json_str(out, last[0] ? last : NULL);
    rc |= sc_buf_puts(out, "}");
    gen_unref(g);
    return rc ? -1 : 0;
}

int sc_policy_check_buffer(const sc_config_t *cfg, const char *src, size_t len, const char *name,
                           char *err, size_t errlen)
{
    policy_gen_t *g = gen_load(cfg, src, len, name, err, errlen);
    if (!g)
        return -1;
    gen_unref(g);
    return 0;
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
    rc = sc_policy_check_buffer(cfg, src, len, path, err, errlen);
    free(src);
    return rc;
}
