/* Policy keys of issue 11 (`breaker`, `pacing`): env defaults < top level <
 * phase, partial breaker tables, `false`/`true`, validation messages, and the
 * effective JSON of /api/admin/policy. Kept apart from lua_policy_test.c so the
 * key-table refactor (policy_schema.c) can port it as it is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "lua/policy.h"
#include "test.h"

static char g_dir[] = "/tmp/sc_policy_outage_XXXXXX";
static char g_path[256];
static char err[2048];

static void write_policy(const char *src)
{
    FILE *f = fopen(g_path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(src, f);
    fclose(f);
}

static int init_with(const char *src, const sc_config_t *c)
{
    write_policy(src);
    int rc = sc_policy_init(c, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "init failed: %s\n", err);
    return rc;
}

static void config(sc_config_t *c)
{
    sc_config_defaults(c);
    snprintf(c->policy_file, sizeof c->policy_file, "%s", g_path);
}

static void test_env_defaults(void)
{
    sc_config_t c;
    sc_policy_effective_t e;
    config(&c);
    CHECK(c.breaker_enabled);
    CHECK(!c.kontext_budget_pacing);
    CHECK(init_with("return {}", &c) == 0);
    sc_policy_current(&e);
    CHECK(e.breaker_enabled);
    CHECK(e.breaker_failure_rate == 0.5);
    CHECK_EQ_INT(e.breaker_min_calls, 10);
    CHECK(e.breaker_window_seconds == 60);
    CHECK(e.breaker_open_seconds == 30);
    CHECK_EQ_INT(e.breaker_half_open_calls, 1);
    CHECK(!e.pacing);
    sc_policy_shutdown();

    c.breaker_enabled = false;
    c.kontext_budget_pacing = true;
    CHECK(init_with("return {}", &c) == 0);
    sc_policy_current(&e);
    CHECK(!e.breaker_enabled);
    CHECK(e.pacing);
    sc_policy_shutdown();
}

static void test_precedence(void)
{
    sc_config_t c;
    sc_policy_effective_t e;
    config(&c);
    c.breaker_enabled = false;
    CHECK(init_with("return { breaker = { min_calls = 4, open_seconds = 5 }, pacing = true,\n"
                    "  phase = 'p', phases = {\n"
                    "    p = { breaker = { open_seconds = 2.5, half_open_calls = 3 } },\n"
                    "    q = { breaker = false, pacing = false } } }",
                    &c) == 0);
    sc_policy_current(&e);
    CHECK(e.breaker_enabled);             /* a table turns it on over the env */
    CHECK_EQ_INT(e.breaker_min_calls, 4); /* top level */
    CHECK(e.breaker_open_seconds == 2.5); /* phase over top level */
    CHECK_EQ_INT(e.breaker_half_open_calls, 3);
    CHECK(e.breaker_failure_rate == 0.5); /* default */
    CHECK(e.pacing);                      /* the unselected phase q changes nothing */
    sc_buf_t b = SC_BUF_INIT;
    CHECK(sc_policy_status_json(&b) == 0);
    CHECK(b.data && strstr(b.data, "\"breaker\":{\"failure_rate\":0.5,\"min_calls\":4,"
                                   "\"window_seconds\":60,\"open_seconds\":2.5,"
                                   "\"half_open_calls\":3},\"pacing\":true") != NULL);
    sc_buf_free(&b);
    sc_policy_shutdown();

    CHECK(init_with("return { breaker = { min_calls = 4 }, phase = 'q',\n"
                    "  phases = { q = { breaker = false, pacing = false } } }",
                    &c) == 0);
    sc_policy_current(&e);
    CHECK(!e.breaker_enabled);
    CHECK(!e.pacing);
    CHECK(sc_policy_status_json(&b) == 0);
    CHECK(b.data && strstr(b.data, "\"breaker\":false,\"pacing\":false") != NULL);
    sc_buf_free(&b);
    sc_policy_shutdown();

    c.breaker_enabled = false;
    CHECK(init_with("return { breaker = true }", &c) == 0);
    sc_policy_current(&e);
    CHECK(e.breaker_enabled);
    CHECK_EQ_INT(e.breaker_min_calls, 10);
    sc_policy_shutdown();
}

static sc_route_t route_user(const char *user)
{
    sc_policy_effective_t e;
    sc_policy_req_t req = {user, "a prompt", 64, 48, false, 16, 8, true};
    return sc_policy_route(&req, &e);
}

/* ctx.config is generated from the same key table: breaker is false or the
 * five values in force, pacing a boolean. */
static void test_ctx_config(void)
{
    sc_config_t c;
    config(&c);
    CHECK(
        init_with("return { breaker = { min_calls = 4 }, pacing = true, phase = 'p',\n"
                  "  phases = { p = { breaker = { open_seconds = 2.5, half_open_calls = 3 } } },\n"
                  "  route = function(req, ctx)\n"
                  "    local b, cf = ctx.config.breaker, ctx.config\n"
                  "    if req.user_id == 'x' and type(b) == 'table' and b.failure_rate == 0.5\n"
                  "      and b.min_calls == 4 and b.window_seconds == 60\n"
                  "      and b.open_seconds == 2.5 and b.half_open_calls == 3\n"
                  "      and cf.pacing == true then return 'kontext' end\n"
                  "    return 'pil'\n"
                  "  end }",
                  &c) == 0);
    CHECK_EQ_INT(route_user("x"), SC_ROUTE_KONTEXT);
    sc_policy_shutdown();

    CHECK(init_with("return { breaker = false,\n"
                    "  route = function(req, ctx)\n"
                    "    if req.user_id == 'x' and ctx.config.breaker == false\n"
                    "      and ctx.config.pacing == false then return 'kontext' end\n"
                    "    return 'pil'\n"
                    "  end }",
                    &c) == 0);
    CHECK_EQ_INT(route_user("x"), SC_ROUTE_KONTEXT);
    sc_policy_shutdown();
}

static void refused(const char *src, const char *msg)
{
    sc_config_t c;
    config(&c);
    write_policy(src);
    err[0] = '\0';
    CHECK_EQ_INT(sc_policy_check_file(&c, g_path, err, sizeof err), -1);
    if (!strstr(err, msg))
        fprintf(stderr, "expected '%s' in: %s\n", msg, err);
    CHECK(strstr(err, msg) != NULL);
}

static void test_validation(void)
{
    refused("return { breaker = { failure_rate = 0 } }", "breaker.failure_rate must be");
    refused("return { breaker = { failure_rate = 1.01 } }", "breaker.failure_rate must be");
    refused("return { breaker = { failure_rate = '0.5' } }", "breaker.failure_rate must be");
    refused("return { breaker = { min_calls = 1.5 } }", "breaker.min_calls must be an integer");
    refused("return { breaker = { half_open_calls = 0 } }", "breaker.half_open_calls must be");
    refused("return { breaker = { window_seconds = 0 } }", "breaker.window_seconds must be");
    refused("return { breaker = { open_seconds = 86401 } }", "breaker.open_seconds must be");
    refused("return { breaker = { 1, 2 } }", "breaker keys must be strings");
    refused("return { breaker = { failure = 0.5 } }", "breaker: unknown key 'failure'");
    refused("return { breaker = 'off' }", "key 'breaker' must be false or a table");
    refused("return { pacing = 1 }", "key 'pacing' must be a boolean");
    refused("return { phase = 'a', phases = { a = { pacing = 'yes' } } }",
            "phases.a: key 'pacing' must be a boolean");
    refused("return { phases = { b = { breaker = { min_calls = -1 } } } }",
            "phases.b: breaker.min_calls");
    sc_config_t c;
    config(&c);
    write_policy("return { breaker = { failure_rate = 1, min_calls = 1, window_seconds = 0.5,\n"
                 "  open_seconds = 86400, half_open_calls = 1000000 }, pacing = false }");
    CHECK_EQ_INT(sc_policy_check_file(&c, g_path, err, sizeof err), 0);
}

static void test_env_parsing(void)
{
    sc_config_t c;
    setenv("BREAKER_ENABLED", "off", 1);
    setenv("KONTEXT_BUDGET_PACING", "yes", 1);
    CHECK_EQ_INT(sc_config_load(&c, NULL, err, sizeof err), 0);
    CHECK(!c.breaker_enabled);
    CHECK(c.kontext_budget_pacing);
    setenv("BREAKER_ENABLED", "maybe", 1);
    CHECK_EQ_INT(sc_config_load(&c, NULL, err, sizeof err), -1);
    CHECK(strstr(err, "BREAKER_ENABLED must be a boolean") != NULL);
    unsetenv("BREAKER_ENABLED");
    setenv("KONTEXT_BUDGET_PACING", "2", 1);
    CHECK_EQ_INT(sc_config_load(&c, NULL, err, sizeof err), -1);
    CHECK(strstr(err, "KONTEXT_BUDGET_PACING must be a boolean") != NULL);
    unsetenv("KONTEXT_BUDGET_PACING");
}

int main(void)
{
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(g_path, sizeof g_path, "%s/policy.lua", g_dir);
    test_env_parsing();
    test_env_defaults();
    test_precedence();
    test_ctx_config();
    test_validation();
    unlink(g_path);
    rmdir(g_dir);
    return test_report("lua_policy_outage_test");
}
