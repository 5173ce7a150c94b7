/* The `scenecomp` Lua module: the host functions policy and alert code may call.
 * Thin binding (STYLE rule 3): arguments are checked first, then the C core is
 * called, then results are pushed; no C resource is held across a raise.
 * All functions are allowed in every context (policy load, route,
 * on_kontext_error, alert rules); none of them blocks. */
#include <math.h>
#include <string.h>

#include <lauxlib.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "lua/bind_scenecomp.h"
#include "lua/policy.h"
#include "lua/sandbox.h"
#include "replicate/breaker.h"

/* The variables policy and alert code may read, and nothing else: a policy
 * could log or encode whatever it can read, so secrets and values that can
 * carry credentials (tokens, WEBHOOK_SECRET, REDIS_URL, ALERT_WEBHOOK_URL,
 * REPLICATE_API_BASE: URLs may hold user:password@) are never listed.
 * Three groups: the contract's settings (API.md "Configuration" tables), the
 * settings the shipped lua/ files and examples/ document (docs/policy.md,
 * docs/alerts.md), and any name starting with SC_LUA_ENV_PREFIX, the
 * operator's own policy settings. */
#define SC_LUA_ENV_PREFIX "SCENECOMP_POLICY_"
static const char *const env_allowed[] = {
    /* API.md Configuration */
    "HOST", "PORT", "USE_KONTEXT_COMPOSITE", "COMPOSITE_METHOD", "KONTEXT_MODEL_ID",
    "KONTEXT_TIMEOUT_SECONDS", "MAX_CONCURRENT_KONTEXT", "MAX_KONTEXT_PER_HOUR",
    "KONTEXT_DAILY_GENERATION_LIMIT", "SCENE_MODEL_ID", "LOGS_DIR", "OUTPUT_DIR", "POLICY_FILE",
    "ALERTS_FILE", "MAX_UPLOAD_BYTES", "MAX_IMAGE_PIXELS",
    /* API.md Many instances, Outage protection, Hardening rules */
    "LIMITS_STORE", "REDIS_KEY_PREFIX", "INSTANCE_ID", "POLICY_SOURCE", "BREAKER_ENABLED",
    "KONTEXT_BUDGET_PACING", "MAX_BUFFERED_UPLOAD_BYTES", "SCENE_MAX_CONCURRENT",
    "SCENE_MAX_PER_HOUR", "SCENE_DAILY_LIMIT",
    /* settings of the shipped lua/policy.lua, lua/alerts.lua and examples/alerts */
    "ROLLOUT_PHASE", "KONTEXT_INTERNAL_USERS", "ALERT_MIN_VOLUME", "ALERT_FOR_SECONDS_OVERRIDE",
    "ALERT_DAILY_BUDGET_USD", "ALERT_HOURLY_HEADROOM", NULL};

bool sc_lua_env_allowed(const char *name)
{
    if (strncmp(name, SC_LUA_ENV_PREFIX, sizeof SC_LUA_ENV_PREFIX - 1) == 0)
        return name[sizeof SC_LUA_ENV_PREFIX - 1] != '\0';
    for (int i = 0; env_allowed[i]; i++)
        if (strcmp(name, env_allowed[i]) == 0)
            return true;
    return false;
}

/* Lua: value = scenecomp.env(name)
 * Returns the variable as the service reads it (environment, then .env) when
 * name is allow-listed (sc_lua_env_allowed), else nil; nil when unset too.
 * Raises when name is not a string. */
static int scenecomp_env(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    const char *v = strlen(name) == len && sc_lua_env_allowed(name) ? sc_config_lookup(name) : NULL;
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    return 1;
}

/* Lua: scenecomp.log(level, msg)
 * level: "debug" | "info" | "warn" | "warning" | "error". Writes one log line
 * prefixed with the state's tag ("[Policy]", "[Lua]", ...). Raises on an
 * unknown level or a non-string message. */
static int scenecomp_log(lua_State *L)
{
    static const char *const names[] = {"debug", "info", "warn", "warning", "error", NULL};
    static const sc_log_level_t levels[] = {SC_LOG_DEBUG, SC_LOG_INFO, SC_LOG_WARN, SC_LOG_WARN,
                                            SC_LOG_ERROR};
    int lv = luaL_checkoption(L, 1, NULL, names);
    const char *msg = luaL_checkstring(L, 2);
    sc_log(levels[lv], "%s %s", sc_lua__info(L)->tag, msg);
    return 0;
}

/* Lua: t = scenecomp.now()  -- wall-clock seconds since the epoch (UTC), with fractions. */
static int scenecomp_now(lua_State *L)
{
    lua_pushnumber(L, sc_clock_wall());
    return 1;
}

/* Lua: b = scenecomp.bucket(key, salt)  (also ctx.bucket)
 * Returns an integer 0..99: FNV-1a 32-bit of salt .. ":" .. key, mod 100. Stable
 * across instances and restarts. Raises when key or salt is not a string/number. */
int sc_lua__bucket_l(lua_State *L)
{
    size_t kl, sl;
    const char *key = luaL_checklstring(L, 1, &kl);
    const char *salt = luaL_checklstring(L, 2, &sl);
    lua_pushinteger(L, sc_lua_bucket(key, kl, salt, sl));
    return 1;
}

/* Lua: m = scenecomp.metrics()
 * Returns a fresh table with the fields of /api/admin/metrics/composite (a rate
 * or time without data is nil). Never raises except on out of memory. */
int sc_lua__metrics_l(lua_State *L)
{
    sc_lua__info_t *info = sc_lua__info(L);
    sc_limits_caps_t caps = info->caps;
    if (!info->caps_set) {
        sc_policy_effective_t eff;
        sc_policy_current(&eff);
        caps.max_concurrent = eff.max_concurrent;
        caps.max_per_hour = eff.max_per_hour;
        caps.daily_limit = eff.daily_limit;
    }
    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(sc_clock_wall(), &caps, &s);
    sc_lua_push_metrics(L, &s);
    return 1;
}

static const luaL_Reg scenecomp_funcs[] = {
    {"env", scenecomp_env},       {"log", scenecomp_log},         {"now", scenecomp_now},
    {"bucket", sc_lua__bucket_l}, {"metrics", sc_lua__metrics_l}, {NULL, NULL},
};

int sc_lua__open_scenecomp(lua_State *L)
{
    luaL_newlib(L, scenecomp_funcs); /* scenecomp */
    return 1;
}

/* ==== Metrics snapshot -> Lua table ==== */

static void set_num(lua_State *L, const char *k, double v) /* stack: t -> t */
{
    if (isfinite(v))
        lua_pushnumber(L, v);
    else
        lua_pushnil(L); /* NaN = no data: the field is absent (nil) */
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, long long v) /* stack: t -> t */
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

/* SC_MAY_RAISE (memory). Stack: -> +1. */
void sc_lua_push_metrics(lua_State *L, const sc_metrics_snapshot_t *s)
{
    lua_createtable(L, 0, 16); /* m */

    lua_createtable(L, 0, 2); /* m, stats */
    lua_createtable(L, 0, 7); /* m, stats, kontext */
    set_int(L, "attempts", s->k_attempts);
    set_int(L, "successes", s->k_successes);
    set_int(L, "failures", s->k_failures);
    set_int(L, "timeouts", s->k_timeouts);
    set_num(L, "success_rate", s->k_success_rate);
    set_num(L, "avg_time_seconds", s->k_avg_seconds);
    set_num(L, "p95_time_seconds", s->k_p95_seconds);
    lua_setfield(L, -2, "kontext"); /* m, stats */
    lua_createtable(L, 0, 5);       /* m, stats, pil */
    set_int(L, "attempts", s->p_attempts);
    set_int(L, "successes", s->p_successes);
    set_int(L, "failures", s->p_failures);
    set_num(L, "success_rate", s->p_success_rate);
    set_num(L, "avg_time_seconds", s->p_avg_seconds);
    lua_setfield(L, -2, "pil");   /* m, stats */
    lua_setfield(L, -2, "stats"); /* m */

    set_int(L, "total_requests", s->total_requests);
    set_int(L, "routed_kontext", s->routed_kontext);
    set_int(L, "fallbacks", s->fallbacks);
    set_num(L, "fallback_rate", s->fallback_rate);
    lua_createtable(L, 0, SC_FB__COUNT); /* m, reasons */
    for (int r = 0; r < SC_FB__COUNT; r++)
        set_int(L, sc_fallback_reason_name((sc_fallback_reason_t)r), s->fallback_reasons[r]);
    lua_setfield(L, -2, "fallback_reasons"); /* m */
    set_num(L, "kontext_success_rate", s->kontext_success_rate);
    set_int(L, "today_generations", s->today_generations);
    set_int(L, "daily_limit", s->daily_limit);

    lua_createtable(L, 0, 4); /* m, rate_limiter */
    set_int(L, "in_flight", s->in_flight);
    set_int(L, "max_concurrent", s->max_concurrent);
    set_int(L, "last_hour", s->last_hour);
    set_int(L, "max_per_hour", s->max_per_hour);
    lua_setfield(L, -2, "rate_limiter"); /* m */

    lua_createtable(L, 0, 2); /* m, cost */
    set_num(L, "today", s->cost_today_usd);
    set_num(L, "total", s->cost_total_usd);
    lua_setfield(L, -2, "estimated_cost_usd"); /* m */

    set_int(L, "route_errors", s->route_errors);
    set_num(L, "since", s->since);

    /* issue 11: m.breaker = {state = "closed"|"open"|"half_open", since, failure_rate, calls} */
    lua_createtable(L, 0, 4); /* m, breaker */
    lua_pushstring(L, sc_breaker_state_name((sc_breaker_state_t)s->breaker_state));
    lua_setfield(L, -2, "state");
    set_num(L, "since", s->breaker_since);
    set_num(L, "failure_rate", s->breaker_failure_rate);
    set_int(L, "calls", s->breaker_calls);
    lua_setfield(L, -2, "breaker"); /* m */
}
