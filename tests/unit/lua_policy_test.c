/* Policy: precedence env < keys < phase, default routing (users, percent,
 * no user id), route errors -> pil, refused files keep the old generation,
 * reload and per-thread swap, generation consistency under concurrent reloads,
 * on_kontext_error, status JSON, the shipped lua/policy.lua. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "lua/policy.h"
#include "metrics/metrics.h"
#include "test.h"

static char g_dir[] = "/tmp/sc_policy_test_XXXXXX";
static char g_path[256];
static char err[2048];

static void write_policy(const char *src)
{
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", g_path);
    FILE *f = fopen(tmp, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(src, f);
    fclose(f);
    CHECK(rename(tmp, g_path) == 0);
}

static void base_config(sc_config_t *c)
{
    sc_config_defaults(c);
    snprintf(c->policy_file, sizeof c->policy_file, "%s", g_path);
}

/* An independent FNV-1a bucket (salt ":" key). */
static int ref_bucket(const char *key, const char *salt)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s:%s", salt, key);
    unsigned h = 0x811c9dc5u;
    for (const unsigned char *p = (const unsigned char *)buf; *p; p++)
        h = (h ^ *p) * 0x01000193u;
    return (int)(h % 100);
}

static sc_route_t route_user(const char *user, sc_policy_effective_t *eff)
{
    sc_policy_req_t req = {user, "a prompt", 1024, 768, false, 512, 512, true};
    return sc_policy_route(&req, eff);
}

static int init_with(const char *src, const sc_config_t *c)
{
    write_policy(src);
    int rc = sc_policy_init(c, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "init failed: %s\n", err);
    return rc;
}

static long long route_errors(void)
{
    sc_limits_caps_t caps = {1, 1, 1};
    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(sc_clock_wall(), &caps, &s);
    return s.route_errors;
}

static void test_precedence(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    base_config(&c);
    c.max_concurrent_kontext = 7;
    c.max_kontext_per_hour = 70;
    c.kontext_daily_limit = 700;
    c.kontext_timeout_seconds = 33;
    CHECK(init_with("return { max_concurrent = 3, max_per_hour = 30, model_id = 'm/key',\n"
                    "  phase = 'p', phases = { p = { max_per_hour = 9, method = 'kontext' },\n"
                    "                          q = { daily_limit = 1 } } }",
                    &c) == 0);
    sc_policy_current(&eff);
    CHECK_EQ_INT(eff.version, 1);
    CHECK_EQ_INT(eff.max_concurrent, 3); /* key over env */
    CHECK_EQ_INT(eff.max_per_hour, 9);   /* phase over key */
    CHECK_EQ_INT(eff.daily_limit, 700);  /* env (only the unselected phase sets it) */
    CHECK(eff.timeout_seconds == 33);    /* env */
    CHECK_STR(eff.model_id, "m/key");    /* key */
    CHECK_STR(eff.method, "kontext");    /* phase over env */
    CHECK(!eff.use_kontext);             /* env */
    CHECK_STR(eff.phase, "p");
    /* route returns the same effective config */
    sc_policy_effective_t eff2;
    CHECK_EQ_INT(route_user("x", &eff2), SC_ROUTE_PIL); /* use_kontext false */
    CHECK_EQ_INT(eff2.max_per_hour, 9);
    CHECK_EQ_INT(eff2.version, 1);
    sc_policy_shutdown();

    /* an empty table is the env exactly */
    c.use_kontext = true;
    snprintf(c.method, sizeof c.method, "kontext");
    CHECK(init_with("return {}", &c) == 0);
    sc_policy_current(&eff);
    CHECK(eff.use_kontext);
    CHECK_EQ_INT(eff.max_concurrent, 7);
    CHECK_STR(eff.model_id, c.kontext_model_id);
    CHECK_STR(eff.phase, "");
    CHECK_EQ_INT(route_user("anyone", &eff), SC_ROUTE_KONTEXT);
    CHECK_EQ_INT(route_user(NULL, &eff), SC_ROUTE_KONTEXT);
    sc_policy_shutdown();
}

/* Routes 10,000 user ids; returns how many went to Kontext, checking each
 * decision against the independently computed rule. */
static int percent_run(double percent, const char *users_in)
{
    sc_policy_effective_t eff;
    char id[32];
    int n = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "user-%d", i);
        sc_route_t r = route_user(id, &eff);
        bool expect =
            ref_bucket(id, "kontext") < percent || (users_in && strcmp(id, users_in) == 0);
        CHECK_EQ_INT(r, expect ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL);
        n += r == SC_ROUTE_KONTEXT;
    }
    return n;
}

static void test_default_routing(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    base_config(&c);
    c.use_kontext = true;
    snprintf(c.method, sizeof c.method, "kontext");

    /* method pil: never kontext, whatever the phase */
    CHECK(init_with("return { method = 'pil' }", &c) == 0);
    CHECK_EQ_INT(route_user("a", &eff), SC_ROUTE_PIL);
    sc_policy_shutdown();
    CHECK(
        init_with("return { use_kontext = false, phase = 'f', phases = { f = { percent = 100 } } }",
                  &c) == 0);
    CHECK_EQ_INT(route_user("a", &eff), SC_ROUTE_PIL);
    sc_policy_shutdown();

    /* phase with neither users nor percent: everyone */
    CHECK(init_with("return { phase = 'x', phases = { x = { max_concurrent = 2 } } }", &c) == 0);
    CHECK_EQ_INT(route_user("a", &eff), SC_ROUTE_KONTEXT);
    CHECK_EQ_INT(route_user(NULL, &eff), SC_ROUTE_KONTEXT);
    sc_policy_shutdown();

    /* users only */
    CHECK(
        init_with("return { phase = 'i', phases = { i = { users = { 'ops-1', 'qa-2', 'zed' } } } }",
                  &c) == 0);
    CHECK_EQ_INT(route_user("ops-1", &eff), SC_ROUTE_KONTEXT);
    CHECK_EQ_INT(route_user("qa-2", &eff), SC_ROUTE_KONTEXT);
    CHECK_EQ_INT(route_user("zed", &eff), SC_ROUTE_KONTEXT);
    CHECK_EQ_INT(route_user("ops-2", &eff), SC_ROUTE_PIL);
    CHECK_EQ_INT(route_user("", &eff), SC_ROUTE_PIL);
    CHECK_EQ_INT(route_user(NULL, &eff), SC_ROUTE_PIL);
    sc_policy_shutdown();

    /* percent 30 (+ one listed user): ~30% within +-2%, each decision by the rule */
    const char *src =
        "return { phase = 'l', phases = { l = { percent = 30, users = { 'user-77777' } } } }";
    CHECK(init_with(src, &c) == 0);
    int n1 = percent_run(30, "user-77777");
    CHECK(n1 >= 2800 && n1 <= 3200);
    CHECK_EQ_INT(route_user(NULL, &eff), SC_ROUTE_PIL); /* no user id: in no percentage < 100 */
    CHECK_EQ_INT(route_user("user-77777", &eff), SC_ROUTE_KONTEXT);
    sc_policy_shutdown();
    /* the same answers after a re-init */
    CHECK(init_with(src, &c) == 0);
    CHECK_EQ_INT(percent_run(30, "user-77777"), n1);
    sc_policy_shutdown();
    /* raising the percentage only adds users */
    CHECK(init_with("return { phase = 'l', phases = { l = { percent = 55 } } }", &c) == 0);
    int n2 = percent_run(55, NULL);
    CHECK(n2 >= 5300 && n2 <= 5700);
    CHECK(n2 > n1);
    sc_policy_shutdown();
    /* 100%: everyone, also without a user id; 0%: no one */
    CHECK(init_with("return { phase = 'f', phases = { f = { percent = 100 } } }", &c) == 0);
    CHECK_EQ_INT(percent_run(100, NULL), 10000);
    CHECK_EQ_INT(route_user(NULL, &eff), SC_ROUTE_KONTEXT);
    sc_policy_shutdown();
    CHECK(init_with("return { phase = 'z', phases = { z = { percent = 0 } } }", &c) == 0);
    CHECK_EQ_INT(percent_run(0, NULL), 0);
    sc_policy_shutdown();
}

static void test_route_function(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    base_config(&c);
    CHECK(init_with("local seen = 0\n"
                    "return {\n"
                    "  max_concurrent = 4, phase = 'p', phases = { p = { percent = 10 } },\n"
                    "  route = function(req, ctx)\n"
                    "    local u = req.user_id\n"
                    "    if u == 'bad' then error('boom for ' .. u) end\n"
                    "    if u == 'loop' then while true do end end\n"
                    "    if u == 'num' then return 42 end\n"
                    "    if u == 'word' then return 'maybe' end\n"
                    "    if u == 'global' then leak = 1 end\n"
                    "    if u == 'ctx' then\n"
                    "      assert(ctx.config.max_concurrent == 4 and ctx.config.percent == 10)\n"
                    "      assert(ctx.phase == 'p' and ctx.config.phase == 'p')\n"
                    "      assert(ctx.bucket('alice', 'kontext') == 14)\n"
                    "      assert(ctx.metrics.stats.kontext.attempts >= 0)\n"
                    "      assert(rawget(ctx, 'metrics') ~= nil)\n"
                    "      assert(req.scene.width == 1024 and req.scene.height == 768)\n"
                    "      assert(req.scene.has_alpha == false and req.product.has_alpha == true)\n"
                    "      assert(req.product.width == 512 and req.prompt == 'a prompt')\n"
                    "      assert(ctx.default_route(req) == 'pil')\n"
                    "      return 'kontext'\n"
                    "    end\n"
                    "    if u == nil then return 'pil' end\n"
                    "    return 'kontext'\n"
                    "  end,\n"
                    "}\n",
                    &c) == 0);
    long long e0 = route_errors();
    CHECK_EQ_INT(route_user("good", &eff), SC_ROUTE_KONTEXT); /* replaces default routing */
    CHECK_EQ_INT(route_user(NULL, &eff), SC_ROUTE_PIL);
    CHECK_EQ_INT(route_user("ctx", &eff), SC_ROUTE_KONTEXT);
    CHECK_EQ_INT(route_errors() - e0, 0);
    CHECK_EQ_INT(route_user("bad", &eff), SC_ROUTE_PIL);
    CHECK_EQ_INT(route_user("num", &eff), SC_ROUTE_PIL);
    CHECK_EQ_INT(route_user("word", &eff), SC_ROUTE_PIL);
    CHECK_EQ_INT(route_user("global", &eff), SC_ROUTE_PIL);
    double t0 = sc_clock_mono();
    CHECK_EQ_INT(route_user("loop", &eff), SC_ROUTE_PIL); /* stopped by the hook */
    CHECK(sc_clock_mono() - t0 < 10);
    CHECK_EQ_INT(route_errors() - e0, 5);
    /* the state still works after all that */
    CHECK_EQ_INT(route_user("good", &eff), SC_ROUTE_KONTEXT);
    CHECK_EQ_INT(eff.max_concurrent, 4);
    sc_policy_shutdown();
}

static void test_on_kontext_error(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    base_config(&c);
    CHECK(init_with("return { on_kontext_error = function(err, req, ctx)\n"
                    "  assert(type(err.message) == 'string' and ctx.config and req.scene)\n"
                    "  if err.reason == 'timeout' and req.user_id == 'vip' then return 'fail' end\n"
                    "  if err.reason == 'api_error' then return 'nonsense' end\n"
                    "  if err.reason == 'invalid_output' then error('oops') end\n"
                    "  return 'fallback' end }",
                    &c) == 0);
    sc_policy_req_t vip = {"vip", NULL, 10, 10, false, 5, 5, true};
    sc_policy_req_t other = {"other", NULL, 10, 10, false, 5, 5, true};
    sc_policy_route(&vip, &eff);
    CHECK(sc_policy_on_kontext_error(&eff, "timeout", "deadline passed", &vip));
    CHECK(!sc_policy_on_kontext_error(&eff, "timeout", "deadline passed", &other));
    CHECK(!sc_policy_on_kontext_error(&eff, "api_error", "500", &vip));    /* bad answer */
    CHECK(!sc_policy_on_kontext_error(&eff, "invalid_output", "x", &vip)); /* error */
    sc_policy_shutdown();
    /* no function: always fallback */
    CHECK(init_with("return {}", &c) == 0);
    sc_policy_route(&vip, &eff);
    CHECK(!sc_policy_on_kontext_error(&eff, "timeout", "x", &vip));
    sc_policy_shutdown();
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "lua_policy_test: hung (a Lua budget did not hold)\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(1);
}

/* The probe of issue 8: a backtracking pattern over a 400-character prompt ran
 * 43 s inside one string.match, where the count hook cannot fire. Now route
 * and on_kontext_error are cut off at their budget (a route error: pil), and
 * a file doing it at load is refused within its load budget. */
static void test_pattern_budget(void)
{
    static const char evil[] = "'^(.-)%s*(.-)%s*(.-)%s*(.-)x$'";
    char src[1024], prompt[401];
    sc_config_t c;
    sc_policy_effective_t eff;
    base_config(&c);
    for (int i = 0; i < 400; i++)
        prompt[i] = i % 5 == 4 ? ' ' : 'w';
    prompt[400] = '\0';
    /* the sample prompt of validation is short, so the file loads */
    snprintf(src, sizeof src,
             "return {\n"
             "  route = function(req)\n"
             "    if req.prompt and req.prompt:match(%s) then return 'kontext' end\n"
             "    return 'kontext'\n"
             "  end,\n"
             "  on_kontext_error = function(err)\n"
             "    if string.find(err.message, %s) then return 'fail' end\n"
             "    return 'fail'\n"
             "  end,\n"
             "}\n",
             evil, evil);
    signal(SIGALRM, on_alarm);
    alarm(120);
    CHECK(init_with(src, &c) == 0);
    sc_policy_req_t req = {"u", prompt, 1024, 768, false, 512, 512, true};
    long long e0 = route_errors();
    double t0 = sc_clock_mono();
    CHECK_EQ_INT(sc_policy_route(&req, &eff), SC_ROUTE_PIL); /* a route error: pil */
    double dt = sc_clock_mono() - t0;
    CHECK_EQ_INT(route_errors() - e0, 1);
    /* budget 0.25 s; 10 s leaves room for a loaded machine (unbounded: minutes) */
    CHECK(dt < 10);
    t0 = sc_clock_mono();
    CHECK(!sc_policy_on_kontext_error(&eff, "api_error", prompt, &req)); /* error: fallback */
    CHECK(sc_clock_mono() - t0 < 10);
    /* short inputs still work */
    req.prompt = "short";
    CHECK_EQ_INT(sc_policy_route(&req, &eff), SC_ROUTE_KONTEXT);
    CHECK(sc_policy_on_kontext_error(&eff, "api_error", "short", &req));
    sc_policy_shutdown();

    /* at load (check-policy and reload): refused within the 1 s load budget */
    snprintf(src, sizeof src,
             "local p = (('w'):rep(4) .. ' '):rep(80)\n"
             "local a = p:match(%s)\n"
             "return {}\n",
             evil);
    write_policy(src);
    t0 = sc_clock_mono();
    CHECK(sc_policy_check_file(&c, g_path, err, sizeof err) == -1);
    dt = sc_clock_mono() - t0;
    if (!strstr(err, "pattern budget exceeded"))
        fprintf(stderr, "check-policy: %s\n", err);
    CHECK(strstr(err, "pattern budget exceeded") != NULL);
    CHECK(strstr(err, ":2:") != NULL); /* the line of the match */
    CHECK(dt < 10);
    alarm(0);
}

/* The load-from-buffer entry point (fuzzing): not NUL-terminated, binary
 * bytes, the same checks as a file, nothing published. */
static void test_check_buffer(void)
{
    sc_config_t c;
    base_config(&c);
    long long v0 = sc_policy_version();
    const char good[] = "return { max_concurrent = 3 }XXXX";
    CHECK(sc_policy_check_buffer(&c, good, sizeof good - 5, "buf.lua", err, sizeof err) == 0);
    CHECK(sc_policy_check_buffer(&c, good, sizeof good - 1, "buf.lua", err, sizeof err) == -1);
    CHECK(strncmp(err, "buf.lua:", 8) == 0);
    const char nul[] = "return {\0}";
    CHECK(sc_policy_check_buffer(&c, nul, sizeof nul - 1, "nul.lua", err, sizeof err) == -1);
    CHECK(strstr(err, "nul.lua") != NULL);
    const char bin[] = "\x1bLua\x54\x00";
    CHECK(sc_policy_check_buffer(&c, bin, sizeof bin - 1, "bin.lua", err, sizeof err) == -1);
    CHECK(sc_policy_check_buffer(&c, "", 0, "empty.lua", err, sizeof err) == -1);
    CHECK(strstr(err, "must return a table") != NULL);
    CHECK_EQ_INT(sc_policy_version(), v0); /* nothing published */
}

static void status(sc_buf_t *b)
{
    sc_buf_reset(b);
    CHECK(sc_policy_status_json(b) == 0);
}

static void test_refused(void)
{
    static const struct {
        const char *src, *expect1, *expect2;
    } bad[] = {
        {"return { max_concurrent = 5,\n  method = 'kontext'\n  x }", ":3:", NULL},
        {"local x = 1\nerror('load failed here')\nreturn {}", ":2: load failed here", NULL},
        {"return { max_concurrent = '5' }", "max_concurrent", "integer"},
        {"return { max_concurrent = 2.5 }", "max_concurrent", "integer"},
        {"return { use_kontext = 'yes' }", "use_kontext", "boolean"},
        {"return { timeout_seconds = -1 }", "timeout_seconds", "seconds"},
        {"return { method = 'magic' }", "method", "\"pil\" or \"kontext\""},
        {"return { frobnicate = true }", "unknown key 'frobnicate'", NULL},
        /* the allowed-key lists are generated from the schema's key table */
        {"return { frobnicate = true }", "unknown key 'frobnicate'",
         "(allowed: use_kontext, method, model_id, timeout_seconds, max_concurrent, "
         "max_per_hour, daily_limit, phase, phases, route, on_kontext_error, breaker, pacing)"},
        {"return { phases = { p = { route = 1 } } }", "phases.p: unknown key 'route'",
         "(allowed: users, percent, use_kontext, method, model_id, timeout_seconds, "
         "max_concurrent, max_per_hour, daily_limit, breaker, pacing)"},
        {"return { model_id = string.rep('m', 5000) }", "model_id", "shorter than"},
        {"return { phase = 'nope', phases = { yes = {} } }", "phase 'nope'", "not defined"},
        {"return { phase = 'nope' }", "phase 'nope'", "not defined"},
        {"return { phases = { p = { percent = 101 } } }", "phases.p", "percent"},
        {"return { phases = { p = { users = { 'a', 5 } } } }", "phases.p", "users[2]"},
        {"return { phases = { p = { colour = 'red' } } }", "phases.p", "unknown key 'colour'"},
        {"return { route = 'kontext' }", "route", "function"},
        {"return { route = function() return 'maybe' end }", "route returned", "maybe"},
        {"return { route = function(req) return req.user_id:upper() and 'pil' end }",
         "without user_id", NULL},
        {"return { on_kontext_error = function() return 'retry' end }", "on_kontext_error",
         "retry"},
        {"return 42", "must return a table", "number"},
        {"return { 'x' }", "keys must be strings", NULL},
        {"while true do end", "timeout", NULL},
        {"local s = string.rep('x', 1e9) return {}", "memory", NULL},
        {"os.execute('true') return {}", "execute", NULL},
        {"undeclared = 1 return {}", "undeclared global", NULL},
    };
    sc_config_t c;
    sc_policy_effective_t eff;
    sc_buf_t b = SC_BUF_INIT;
    base_config(&c);
    c.use_kontext = true;
    snprintf(c.method, sizeof c.method, "kontext");
    CHECK(init_with("return { max_concurrent = 11, route = function() return 'kontext' end }",
                    &c) == 0);
    status(&b);
    CHECK(strstr(b.data, "\"last_error\":null") != NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long long v = -1;
        write_policy(bad[i].src);
        CHECK(sc_policy_reload("test", &v, err, sizeof err) == -1);
        if (!strstr(err, bad[i].expect1) || (bad[i].expect2 && !strstr(err, bad[i].expect2)))
            fprintf(stderr, "case %zu: unexpected error: %s\n", i, err);
        CHECK(strstr(err, bad[i].expect1) != NULL);
        CHECK(!bad[i].expect2 || strstr(err, bad[i].expect2) != NULL);
        CHECK(strstr(err, g_path) != NULL); /* names the file */
        /* the old generation stays in force */
        CHECK_EQ_INT(sc_policy_version(), 1);
        CHECK_EQ_INT(route_user("u", &eff), SC_ROUTE_KONTEXT);
        CHECK_EQ_INT(eff.max_concurrent, 11);
        status(&b);
        CHECK(strstr(b.data, "\"version\":1,") != NULL);
        CHECK(strstr(b.data, "\"last_error\":\"") != NULL);
        /* the same checks offline */
        CHECK(sc_policy_check_file(&c, g_path, err, sizeof err) == -1);
        CHECK(strstr(err, bad[i].expect1) != NULL);
    }
    /* a good file: published, last_error cleared */
    long long v = 0;
    write_policy("return { max_concurrent = 12, phase = 'a', phases = { a = { percent = 50, users "
                 "= {'u1'} } } }");
    CHECK(sc_policy_check_file(&c, g_path, err, sizeof err) == 0);
    CHECK(sc_policy_reload("test", &v, err, sizeof err) == 0);
    CHECK_EQ_INT(v, 2);
    CHECK_EQ_INT(sc_policy_version(), 2);
    route_user("u", &eff);
    CHECK_EQ_INT(eff.version, 2);
    CHECK_EQ_INT(eff.max_concurrent, 12);
    status(&b);
    CHECK(strstr(b.data, "\"version\":2,") != NULL);
    CHECK(strstr(b.data, "\"last_error\":null") != NULL);
    CHECK(strstr(b.data, "\"phase\":\"a\"") != NULL);
    CHECK(strstr(b.data, "\"percent\":50") != NULL);
    CHECK(strstr(b.data, "\"users\":[\"u1\"]") != NULL);
    CHECK(strstr(b.data, "\"max_concurrent\":12") != NULL);
    CHECK(strstr(b.data, "\"source\":\"") != NULL);
    CHECK(strstr(b.data, "\"loaded_at\":\"") != NULL);
    /* a missing file is refused too */
    unlink(g_path);
    CHECK(sc_policy_reload("test", &v, err, sizeof err) == -1);
    CHECK(strstr(err, "not found") != NULL);
    CHECK_EQ_INT(sc_policy_version(), 2);
    CHECK(sc_policy_check_file(&c, g_path, err, sizeof err) == -1);
    sc_policy_shutdown();
    sc_buf_free(&b);
}

/* ==== Threads ==== */

#define NTHREADS 4
static atomic_int g_stop;
static atomic_long g_decisions, g_inconsistent, g_swaps;

/* Generation A (odd reload index) routes everything to pil with
 * max_concurrent 1; B routes to kontext with max_concurrent 2; version v was
 * produced by reload v-1 (init is version 1, content A). */
static const char *GEN_A = "return { max_concurrent = 1, route = function() return 'pil' end }";
static const char *GEN_B = "return { max_concurrent = 2, route = function() return 'kontext' end }";

static void *router(void *arg)
{
    (void)arg;
    sc_policy_effective_t eff;
    long long last = 0;
    char id[32];
    for (int i = 0; !atomic_load(&g_stop) || i < 50; i++) {
        snprintf(id, sizeof id, "t%d", i);
        sc_route_t r = route_user(id, &eff);
        bool is_b = eff.max_concurrent == 2;
        bool version_b = eff.version % 2 == 0; /* even versions come from GEN_B */
        if (r != (is_b ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL) || is_b != version_b ||
            eff.version < last)
            atomic_fetch_add(&g_inconsistent, 1);
        if (eff.version != last)
            atomic_fetch_add(&g_swaps, 1);
        last = eff.version;
        atomic_fetch_add(&g_decisions, 1);
    }
    return NULL;
}

static void test_concurrent_reloads(void)
{
    sc_config_t c;
    base_config(&c);
    CHECK(init_with(GEN_A, &c) == 0);
    pthread_t th[NTHREADS];
    atomic_store(&g_stop, 0);
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&th[i], NULL, router, NULL) == 0);
    for (int i = 1; i <= 100; i++) {
        long long v = 0;
        write_policy(i % 2 ? GEN_B : GEN_A);
        CHECK(sc_policy_reload("test", &v, err, sizeof err) == 0);
        CHECK_EQ_INT(v, i + 1);
        usleep(2000);
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    printf("concurrent: %ld decisions, %ld swaps seen, %ld inconsistent\n",
           atomic_load(&g_decisions), atomic_load(&g_swaps), atomic_load(&g_inconsistent));
    CHECK_EQ_INT(atomic_load(&g_inconsistent), 0);
    CHECK(atomic_load(&g_decisions) >= NTHREADS * 50);
    CHECK(atomic_load(&g_swaps) > NTHREADS); /* threads did swap generations */
    /* every thread ends on the newest generation (101, content A) */
    sc_policy_effective_t eff;
    CHECK_EQ_INT(route_user("x", &eff), SC_ROUTE_PIL);
    CHECK_EQ_INT(eff.version, 101);
    sc_policy_shutdown();
}

static void *route_once(void *arg)
{
    sc_policy_effective_t *eff = arg;
    route_user("someone", eff);
    return NULL;
}

/* A thread that routed once, reloaded, routes again: it swaps at its next call. */
static void test_thread_swap(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    base_config(&c);
    CHECK(init_with(GEN_A, &c) == 0);
    pthread_t t;
    sc_policy_effective_t e1;
    CHECK(pthread_create(&t, NULL, route_once, &e1) == 0);
    pthread_join(t, NULL); /* its state is freed by the key destructor (ASan checks) */
    CHECK_EQ_INT(e1.version, 1);
    CHECK_EQ_INT(route_user("me", &eff), SC_ROUTE_PIL);
    write_policy(GEN_B);
    long long v;
    CHECK(sc_policy_reload("test", &v, err, sizeof err) == 0);
    CHECK_EQ_INT(route_user("me", &eff), SC_ROUTE_KONTEXT);
    CHECK_EQ_INT(eff.version, 2);
    sc_policy_shutdown();
    /* after shutdown: pil with the env config, never a crash */
    CHECK_EQ_INT(route_user("me", &eff), SC_ROUTE_PIL);
    CHECK_EQ_INT(eff.version, 0);
}

/* The shipped lua/policy.lua: the env behaviour exactly, the guide's phases. */
static void test_shipped(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    sc_config_defaults(&c);
    snprintf(c.policy_file, sizeof c.policy_file, "lua/policy.lua");
    unsetenv("ROLLOUT_PHASE");
    unsetenv("KONTEXT_INTERNAL_USERS");
    CHECK(sc_policy_check_file(&c, "lua/policy.lua", err, sizeof err) == 0);
    for (int k = 0; k < 4; k++) {
        c.use_kontext = k & 1;
        snprintf(c.method, sizeof c.method, "%s", k & 2 ? "kontext" : "pil");
        c.max_concurrent_kontext = 3 + k;
        CHECK(sc_policy_init(&c, err, sizeof err) == 0);
        sc_route_t expect = (k == 3) ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL;
        CHECK_EQ_INT(route_user("ops-1", &eff), expect);
        CHECK_EQ_INT(route_user("someone", &eff), expect);
        CHECK_EQ_INT(route_user(NULL, &eff), expect);
        CHECK_EQ_INT(eff.max_concurrent, 3 + k);
        CHECK_EQ_INT(eff.max_per_hour, c.max_kontext_per_hour);
        CHECK_EQ_INT(eff.daily_limit, c.kontext_daily_limit);
        CHECK_STR(eff.phase, "");
        sc_policy_shutdown();
    }
    /* ROLLOUT_PHASE selects a phase (env off: the phase turns Kontext on) */
    c.use_kontext = false;
    snprintf(c.method, sizeof c.method, "pil");
    static const struct {
        const char *phase;
        int mc, mh, dl;
    } ph[] = {{"internal", 5, 50, 500}, {"limited", 10, 100, 500}, {"full", 15, 200, 2000}};
    for (int i = 0; i < 3; i++) {
        setenv("ROLLOUT_PHASE", ph[i].phase, 1);
        setenv("KONTEXT_INTERNAL_USERS", "extra-1, extra-2", 1);
        CHECK(sc_policy_init(&c, err, sizeof err) == 0);
        sc_policy_current(&eff);
        CHECK_STR(eff.phase, ph[i].phase);
        CHECK(eff.use_kontext);
        CHECK_STR(eff.method, "kontext");
        CHECK_EQ_INT(eff.max_concurrent, ph[i].mc);
        CHECK_EQ_INT(eff.max_per_hour, ph[i].mh);
        CHECK_EQ_INT(eff.daily_limit, ph[i].dl);
        /* internal users in internal and limited */
        CHECK_EQ_INT(route_user("ops-1", &eff), SC_ROUTE_KONTEXT);
        CHECK_EQ_INT(route_user("extra-2", &eff), SC_ROUTE_KONTEXT);
        int pct = i == 0 ? 0 : i == 1 ? 25 : 100;
        int n = percent_run(pct, NULL);
        CHECK(n >= pct * 100 - 200 && n <= pct * 100 + 200);
        sc_policy_shutdown();
    }
    unsetenv("ROLLOUT_PHASE");
    unsetenv("KONTEXT_INTERNAL_USERS");
}

/* A file that does not exist: the embedded default (the shipped policy). */
static void test_embedded(void)
{
    sc_config_t c;
    sc_buf_t b = SC_BUF_INIT;
    sc_policy_effective_t eff;
    base_config(&c);
    snprintf(c.policy_file, sizeof c.policy_file, "%s/missing/policy.lua", g_dir);
    c.use_kontext = true;
    snprintf(c.method, sizeof c.method, "kontext");
    CHECK(sc_policy_init(&c, err, sizeof err) == 0);
    CHECK_EQ_INT(route_user("u", &eff), SC_ROUTE_KONTEXT);
    status(&b);
    CHECK(strstr(b.data, "\"source\":\"embedded\"") != NULL);
    CHECK(strstr(b.data, "\"route\":\"default\"") != NULL);
    /* reload while still without a file: a no-op success */
    long long v = -1;
    CHECK(sc_policy_reload("test", &v, err, sizeof err) == 0);
    CHECK_EQ_INT(v, 1);
    CHECK_EQ_INT(sc_policy_version(), 1);
    sc_policy_shutdown();
    sc_buf_free(&b);
    /* a broken file at start is an error naming file and line */
    write_policy("return {\n  max_concurrent = ,\n}");
    base_config(&c);
    CHECK(sc_policy_init(&c, err, sizeof err) == -1);
    CHECK(strstr(err, ":2:") != NULL && strstr(err, g_path) != NULL);
}

/* route() cost with a Lua route function (the shipped policy has none: pure C). */
static void bench(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    base_config(&c);
    CHECK(init_with("return { route = function(req, ctx)\n"
                    "  if req.user_id and ctx.bucket(req.user_id, 'kontext') < 50 then return "
                    "'kontext' end\n"
                    "  return 'pil' end }",
                    &c) == 0);
    int n = 20000;
    route_user("warm", &eff);
    double t0 = sc_clock_mono();
    for (int i = 0; i < n; i++)
        route_user("bench-user", &eff);
    double lua_us = (sc_clock_mono() - t0) / n * 1e6;
    sc_policy_shutdown();
    CHECK(
        init_with("return { phase = 'l', phases = { l = { percent = 25, users = { 'a', 'b' } } } }",
                  &c) == 0);
    route_user("warm", &eff);
    t0 = sc_clock_mono();
    for (int i = 0; i < n; i++)
        route_user("bench-user", &eff);
    double c_us = (sc_clock_mono() - t0) / n * 1e6;
    sc_policy_shutdown();
    printf("route(): %.2f us/call with a Lua route function, %.3f us/call with default routing\n",
           lua_us, c_us);
    CHECK(lua_us < 1000); /* generous: noisy shared machine, sanitizers */
}

int main(void)
{
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_path, sizeof g_path, "%s/policy.lua", g_dir);
    test_precedence();
    test_default_routing();
    test_route_function();
    test_on_kontext_error();
    test_pattern_budget();
    test_check_buffer();
    test_refused();
    test_thread_swap();
    test_concurrent_reloads();
    test_shipped();
    test_embedded();
    bench();
    unlink(g_path);
    rmdir(g_dir);
    return test_report("lua_policy_test");
}
