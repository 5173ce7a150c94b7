/* Alert rule sets: loading, validation and the calls into the rules' functions.
 * Every call into Lua goes through sc_lua_call (the sandbox's one door, with a
 * deadline); table walking and registry refs run inside a lua_pcall of a C
 * function so an allocation failure cannot escape as a panic. */
#include "alerts/rules.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "core/fsutil.h"
#include "lua/sandbox.h"

/* Budget for running the file's top level (it only builds a table). */
#define RULES_CHUNK_BUDGET_SECONDS 1.0

static const char *const rules_known_keys[] = {"name", "severity", "for_seconds",
                                               "when", "summary", "value", NULL};

/* ==== Small helpers ==== */

/* The file name as Lua shows it in messages ("@lua/alerts.lua" -> "lua/alerts.lua"). */
static const char *rules_display_name(const char *chunkname)
{
    if (chunkname[0] == '@' || chunkname[0] == '=')
        return chunkname + 1;
    return chunkname;
}

static bool rules_name_ok(const char *s, size_t len)
{
    if (len == 0 || len >= SC_ALERT_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool other = (c >= '0' && c <= '9') || c == '.' || c == ':' || c == '-';
        if (!alpha && !(i > 0 && other))
            return false;
    }
    return true;
}

/* ==== Validation (runs inside lua_pcall) ==== */

typedef struct rules_ctx {
    const char *file;       /* display name for messages */
    sc_alert_rule_t *rules; /* owned by the caller of the pcall (freed on failure) */
    size_t n;
} rules_ctx_t;

/* "file:line:" prefix for rule i (the line of its first function), or "file:". */
static void rules_where(lua_State *L, int rule, const char *file, char *out, size_t outlen)
{
    static const char *const fns[] = {"when", "summary", "value"};
    for (size_t k = 0; k < sizeof fns / sizeof fns[0]; k++) {
        lua_pushstring(L, fns[k]); /* rule key */
        lua_rawget(L, rule);       /* rule field */
        if (lua_type(L, -1) == LUA_TFUNCTION) {
            lua_Debug ar;
            lua_getinfo(L, ">S", &ar); /* pops the function */
            if (ar.linedefined > 0) {
                snprintf(out, outlen, "%s:%d:", file, ar.linedefined);
                return;
            }
            continue;
        }
        lua_pop(L, 1); /* rule */
    }
    snprintf(out, outlen, "%s:", file);
}

/* Raises "file:line: rule N 'name': <msg>". SC_MAY_RAISE (always). */
static int rules_fail(lua_State *L, int rule, size_t i, const char *name, const char *file,
                      const char *msg)
{
    char where[600];
    rules_where(L, rule, file, where, sizeof where);
    if (name)
        return luaL_error(L, "%s rule %d '%s': %s", where, (int)i, name, msg);
    return luaL_error(L, "%s rule %d: %s", where, (int)i, msg);
}

/* Checks rule i (at stack index rule) and fills r; keeps its functions as
 * registry refs. SC_MAY_RAISE (validation errors and OOM). */
static void rules_check_one(lua_State *L, int rule, size_t i, rules_ctx_t *c, sc_alert_rule_t *r)
{
    char msg[256];
    rule = lua_absindex(L, rule);

    /* name first, so that later messages can show it */
    lua_pushliteral(L, "name"); /* rule "name" */
    lua_rawget(L, rule);        /* rule name */
    size_t nlen = 0;
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &nlen) : NULL;
    if (!name) {
        rules_fail(L, rule, i, NULL, c->file, "field 'name' must be a string");
        return;
    }
    if (!rules_name_ok(name, nlen)) {
        rules_fail(L, rule, i, NULL, c->file,
                   "field 'name' must be 1-127 characters of letters, digits, '_', '.', ':' or "
                   "'-', starting with a letter or '_'");
        return;
    }
    memcpy(r->name, name, nlen + 1);
    lua_pop(L, 1); /* rule */
    for (size_t k = 0; k + 1 < i; k++) {
        if (strcmp(c->rules[k].name, r->name) == 0) {
            rules_fail(L, rule, i, r->name, c->file, "duplicate name");
            return;
        }
    }

    /* no unknown keys: a typo ("for_second") must not silently drop a setting */
    lua_pushnil(L); /* rule nil */
    while (lua_next(L, rule) != 0) { /* rule key value */
        bool known = false;
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *key = lua_tostring(L, -2);
            for (size_t k = 0; rules_known_keys[k]; k++)
                known = known || strcmp(key, rules_known_keys[k]) == 0;
            if (!known) {
                snprintf(msg, sizeof msg,
                         "unknown key '%.64s' (allowed: name, severity, for_seconds, when, "
                         "summary, value)",
                         key);
                rules_fail(L, rule, i, r->name, c->file, msg);
                return;
            }
        } else {
            snprintf(msg, sizeof msg, "unexpected %s key (rules are tables with named fields)",
                     luaL_typename(L, -2));
            rules_fail(L, rule, i, r->name, c->file, msg);
            return;
        }
        lua_pop(L, 1); /* rule key */
    }

    lua_pushliteral(L, "severity"); /* rule "severity" */
    lua_rawget(L, rule);            /* rule severity */
    const char *sev = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!sev || (strcmp(sev, "warning") != 0 && strcmp(sev, "critical") != 0)) {
        rules_fail(L, rule, i, r->name, c->file,
                   "field 'severity' must be \"warning\" or \"critical\"");
        return;
    }
    r->critical = strcmp(sev, "critical") == 0;
    lua_pop(L, 1); /* rule */

    lua_pushliteral(L, "for_seconds"); /* rule "for_seconds" */
    lua_rawget(L, rule);               /* rule for_seconds */
    if (lua_type(L, -1) != LUA_TNUMBER) {
        rules_fail(L, rule, i, r->name, c->file, "field 'for_seconds' must be a number >= 0");
        return;
    }
    r->for_seconds = lua_tonumber(L, -1);
    if (!(r->for_seconds >= 0) || !isfinite(r->for_seconds)) {
        rules_fail(L, rule, i, r->name, c->file, "field 'for_seconds' must be a number >= 0");
        return;
    }
    lua_pop(L, 1); /* rule */

    static const char *const fns[] = {"when", "summary", "value"};
    int *refs[] = {&r->ref_when, &r->ref_summary, &r->ref_value};
    for (size_t k = 0; k < 3; k++) {
        lua_pushstring(L, fns[k]); /* rule key */
        lua_rawget(L, rule);       /* rule fn */
        int t = lua_type(L, -1);
        if (t == LUA_TFUNCTION) {
            /* unref'd by lua_close in sc_alert_rules_free (the state dies with the set) */
            *refs[k] = luaL_ref(L, LUA_REGISTRYINDEX); /* rule */
            continue;
        }
        if (t != LUA_TNIL || k == 0) {
            snprintf(msg, sizeof msg, "field '%s' must be a function%s", fns[k],
                     k == 0 ? "" : " (or absent)");
            rules_fail(L, rule, i, r->name, c->file, msg);
            return;
        }
        lua_pop(L, 1); /* rule */
    }
}

/* Protected: stack [ctx*, list] -> walks the list into ctx->rules. */
static int rules_check_k(lua_State *L)
{
    rules_ctx_t *c = lua_touserdata(L, 1);
    if (lua_type(L, 2) != LUA_TTABLE)
        return luaL_error(L, "%s: the file must return a list of rules (got %s)", c->file,
                          luaL_typename(L, 2));
    lua_Unsigned n = lua_rawlen(L, 2);
    lua_pushnil(L);                 /* ctx list nil */
    while (lua_next(L, 2) != 0) {   /* ctx list key value */
        if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 ||
            (lua_Unsigned)lua_tointeger(L, -2) > n)
            return luaL_error(L, "%s: the file must return a list of rules (found a %s key)",
                              c->file, luaL_typename(L, -2));
        lua_pop(L, 1); /* ctx list key */
    }
    if (n > 1000)
        return luaL_error(L, "%s: too many rules (%d, at most 1000)", c->file, (int)n);
    c->rules = calloc(n ? n : 1, sizeof *c->rules);
    if (!c->rules)
        return luaL_error(L, "%s: out of memory", c->file);
    for (lua_Unsigned i = 1; i <= n; i++) {
        sc_alert_rule_t *r = &c->rules[i - 1];
        r->ref_when = r->ref_summary = r->ref_value = LUA_NOREF;
        lua_rawgeti(L, 2, (lua_Integer)i); /* ctx list rule */
        if (lua_type(L, -1) != LUA_TTABLE)
            return luaL_error(L, "%s: rule %d must be a table (got %s)", c->file, (int)i,
                              luaL_typename(L, -1));
        rules_check_one(L, -1, (size_t)i, c, r);
        c->n = (size_t)i;
        lua_pop(L, 1); /* ctx list */
    }
    return 0;
}

/* ==== Calls ==== */

/* Protected: pushes the metrics table of the snapshot at light userdata 1. */
static int rules_push_metrics_k(lua_State *L)
{
    const sc_metrics_snapshot_t *m = lua_touserdata(L, 1);
    sc_lua_push_metrics(L, m); /* m* mtable */
    return 1;
}

/* Calls the function at registry ref with a fresh metrics table (so a rule that
 * scribbles on m cannot affect the next one). Stack: +1 (the result) on
 * success, unchanged on failure (-1 with err). */
static int rules_call(lua_State *L, int ref, const sc_metrics_snapshot_t *m, char *err,
                      size_t errlen)
{
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);        /* fn */
    lua_pushcfunction(L, rules_push_metrics_k);    /* fn k */
    lua_pushlightuserdata(L, (void *)m);           /* fn k m* */
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {         /* fn mtable | fn errobj */
        snprintf(err, errlen, "cannot build the metrics table: %s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
        lua_settop(L, top);
        return -1;
    }
    if (sc_lua_call(L, 1, 1, SC_LUA_CALL_BUDGET_SECONDS, err, errlen) != 0) { /* result | - */
        lua_settop(L, top);
        return -1;
    }
    return 0;
}

/* Copies a string result at the top, replacing control characters (the
 * summary goes into single log lines). */
static void rules_copy_text(lua_State *L, char *out, size_t outlen)
{
    size_t len = 0;
    const char *s = lua_tolstring(L, -1, &len);
    size_t n = len < outlen - 1 ? len : outlen - 1;
    for (size_t k = 0; k < n; k++)
        out[k] = (unsigned char)s[k] < 0x20 || s[k] == 0x7f ? ' ' : s[k];
    out[n] = '\0';
}

int sc_alert_rules_eval(sc_alert_ruleset_t *rs, size_t i, const sc_metrics_snapshot_t *m,
                        bool *fires, char *summary, size_t sumlen, double *value, char *err,
                        size_t errlen)
{
    lua_State *L = rs->L;
    const sc_alert_rule_t *r = &rs->rules[i];
    int top = lua_gettop(L);
    char e2[512];

    *fires = false;
    *value = NAN;
    if (sumlen)
        snprintf(summary, sumlen, "%s", r->name);
    if (rules_call(L, r->ref_when, m, err, errlen) != 0)
        return -1;
    *fires = lua_toboolean(L, -1);
    lua_settop(L, top);
    if (!*fires)
        return 0;

    if (r->ref_summary != LUA_NOREF) {
        if (rules_call(L, r->ref_summary, m, e2, sizeof e2) != 0) {
            snprintf(summary, sumlen, "%s (summary error: %s)", r->name, e2);
        } else {
            int t = lua_type(L, -1);
            if (t == LUA_TSTRING || t == LUA_TNUMBER)
                rules_copy_text(L, summary, sumlen);
            lua_settop(L, top);
        }
    }
    if (r->ref_value != LUA_NOREF && rules_call(L, r->ref_value, m, e2, sizeof e2) == 0) {
        if (lua_type(L, -1) == LUA_TNUMBER)
            *value = lua_tonumber(L, -1);
        lua_settop(L, top);
    }
    return 0;
}

/* ==== Loading ==== */

void sc_alert_rules_sample(sc_metrics_snapshot_t *s, bool busy)
{
    memset(s, 0, sizeof *s);
    s->daily_limit = 500;
    s->max_concurrent = 5;
    s->max_per_hour = 50;
    if (!busy) {
        s->k_success_rate = s->k_avg_seconds = s->k_p95_seconds = NAN;
        s->p_success_rate = s->p_avg_seconds = NAN;
        s->fallback_rate = s->kontext_success_rate = NAN;
        return;
    }
    s->k_attempts = 120;
    s->k_successes = 100;
    s->k_failures = 20;
    s->k_timeouts = 5;
    s->k_success_rate = s->kontext_success_rate = 100.0 / 120.0;
    s->k_avg_seconds = 31.5;
    s->k_p95_seconds = 58.0;
    s->total_requests = 200;
    s->routed_kontext = 130;
    s->fallbacks = 30;
    s->fallback_reasons[SC_FB_TIMEOUT] = 5;
    s->fallback_reasons[SC_FB_API_ERROR] = 15;
    s->fallback_reasons[SC_FB_HOURLY_LIMIT] = 10;
    s->fallback_rate = 30.0 / 130.0;
    s->p_attempts = 100;
    s->p_successes = 100;
    s->p_success_rate = 1.0;
    s->p_avg_seconds = 0.2;
    s->today_generations = 120;
    s->in_flight = 2;
    s->last_hour = 40;
    s->cost_today_usd = 9.6;
    s->cost_total_usd = 42.0;
    s->scenes_ok = 3;
    s->since = 1.7e9;
}

/* Runs every function of every rule once on the sample snapshots; a raise (or
 * a summary/value of the wrong type) rejects the file. */
static int rules_try_samples(sc_alert_ruleset_t *rs, char *err, size_t errlen)
{
    lua_State *L = rs->L;
    int top = lua_gettop(L);
    sc_metrics_snapshot_t fresh, busy;
    char e[1024];
    sc_alert_rules_sample(&fresh, false);
    sc_alert_rules_sample(&busy, true);
    for (size_t i = 0; i < rs->n; i++) {
        const sc_alert_rule_t *r = &rs->rules[i];
        struct {
            int ref;
            const sc_metrics_snapshot_t *m;
            const char *what;
            int want; /* LUA_TNONE = any */
        } calls[] = {
            {r->ref_when, &fresh, "when() on a fresh-start sample (every rate nil)", LUA_TNONE},
            {r->ref_when, &busy, "when() on a busy sample", LUA_TNONE},
            {r->ref_summary, &busy, "summary() on a busy sample", LUA_TSTRING},
            {r->ref_value, &busy, "value() on a busy sample", LUA_TNUMBER},
        };
        for (size_t k = 0; k < sizeof calls / sizeof calls[0]; k++) {
            if (calls[k].ref == LUA_NOREF)
                continue;
            if (rules_call(L, calls[k].ref, calls[k].m, e, sizeof e) != 0) {
                snprintf(err, errlen, "%s (rule '%s', %s)", e, r->name, calls[k].what);
                return -1;
            }
            int t = lua_type(L, -1);
            lua_settop(L, top);
            if (calls[k].want != LUA_TNONE && t != calls[k].want && t != LUA_TNIL) {
                snprintf(err, errlen, "rule '%s': %s returned a %s (expected a %s or nil)",
                         r->name, calls[k].what, lua_typename(L, t),
                         lua_typename(L, calls[k].want));
                return -1;
            }
        }
    }
    return 0;
}

int sc_alert_rules_load(const char *source, size_t len, const char *chunkname,
                        sc_alert_ruleset_t **out, char *err, size_t errlen)
{
    sc_alert_ruleset_t *rs = NULL;
    rules_ctx_t ctx = {rules_display_name(chunkname), NULL, 0};
    char e[1024];

    *out = NULL;
    rs = calloc(1, sizeof *rs);
    if (!rs) {
        snprintf(err, errlen, "%s: out of memory", ctx.file);
        goto fail;
    }
    rs->L = sc_lua_new_state(e, sizeof e);
    if (!rs->L) {
        snprintf(err, errlen, "%s: cannot create a Lua state: %s", ctx.file, e);
        goto fail;
    }
    lua_State *L = rs->L;
    if (sc_lua_run_chunk(L, source, len, chunkname, RULES_CHUNK_BUDGET_SECONDS, e, sizeof e) !=
        0) {
        snprintf(err, errlen, "%s", e);
        goto fail;
    }
    /* stack: list */
    lua_pushcfunction(L, rules_check_k); /* list k */
    lua_pushlightuserdata(L, &ctx);      /* list k ctx* */
    lua_pushvalue(L, -3);                /* list k ctx* list */
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) { /* list | list errobj */
        snprintf(err, errlen, "%s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "invalid alert file");
        goto fail;
    }
    lua_settop(L, 0); /* the rules live on as registry refs */
    rs->rules = ctx.rules;
    rs->n = ctx.n;
    ctx.rules = NULL;
    if (rules_try_samples(rs, err, errlen) != 0)
        goto fail;
    *out = rs;
    return 0;

fail:
    free(ctx.rules);
    sc_alert_rules_free(rs);
    return -1;
}

void sc_alert_rules_free(sc_alert_ruleset_t *rs)
{
    if (!rs)
        return;
    if (rs->L)
        lua_close(rs->L);
    free(rs->rules);
    free(rs);
}

int sc_alert_rules_read_file(const char *path, char **src, size_t *len, char *err, size_t errlen)
{
    int rc = sc_fs_read_file(path, SC_ALERT_FILE_MAX, src, len);
    if (rc == 0)
        return 0;
    if (rc == -2) {
        snprintf(err, errlen, "%s: file larger than %d bytes", path, SC_ALERT_FILE_MAX);
        return -1;
    }
    if (errno == ENOENT) {
        snprintf(err, errlen, "%s: no such file", path);
        return -2;
    }
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    return -1;
}
