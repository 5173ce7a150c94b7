/* Every example under examples/policies: each loads and validates (sc_policy_check_file, the
 * same checks as reload and `scenecomp check-policy`) and routes as its
 * comments say. Runs from the source directory (ctest WORKING_DIRECTORY). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "lua/policy.h"
#include "test.h"

static char err[2048];

static int bucket(const char *key)
{
    char buf[128];
    snprintf(buf, sizeof buf, "kontext:%s", key);
    unsigned h = 0x811c9dc5u;
    for (const unsigned char *p = (const unsigned char *)buf; *p; p++)
        h = (h ^ *p) * 0x01000193u;
    return (int)(h % 100);
}

static sc_route_t route(const char *user, sc_policy_effective_t *eff)
{
    sc_policy_req_t req = {user, NULL, 800, 600, false, 200, 200, true};
    return sc_policy_route(&req, eff);
}

static int load(sc_config_t *c, const char *path)
{
    snprintf(c->policy_file, sizeof c->policy_file, "%s", path);
    CHECK(sc_policy_check_file(c, path, err, sizeof err) == 0);
    int rc = sc_policy_init(c, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s: %s\n", path, err);
    CHECK_EQ_INT(rc, 0);
    return rc;
}

int main(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    sc_config_defaults(&c);
    c.use_kontext = true; /* the env says Kontext for everyone... */
    snprintf(c.method, sizeof c.method, "kontext");

    /* ...the kill switch overrides it */
    if (load(&c, "examples/policies/kill_switch.lua") == 0) {
        CHECK_EQ_INT(route("ops-1", &eff), SC_ROUTE_PIL);
        CHECK_EQ_INT(route(NULL, &eff), SC_ROUTE_PIL);
        CHECK(!eff.use_kontext);
        CHECK_EQ_INT(eff.max_concurrent, c.max_concurrent_kontext);
        sc_policy_shutdown();
    }

    c.use_kontext = false;
    snprintf(c.method, sizeof c.method, "pil");
    if (load(&c, "examples/policies/internal_users_only.lua") == 0) {
        CHECK_EQ_INT(route("ops-2", &eff), SC_ROUTE_KONTEXT);
        CHECK_EQ_INT(route("customer-9", &eff), SC_ROUTE_PIL);
        CHECK_EQ_INT(route(NULL, &eff), SC_ROUTE_PIL);
        CHECK_EQ_INT(eff.max_concurrent, 5);
        CHECK_EQ_INT(eff.max_per_hour, 50);
        CHECK_STR(eff.phase, "internal");
        sc_policy_shutdown();
    }

    if (load(&c, "examples/policies/percent_rollout.lua") == 0) {
        char id[32];
        int n = 0, wrong = 0;
        for (int i = 0; i < 10000; i++) {
            snprintf(id, sizeof id, "customer-%d", i);
            sc_route_t r = route(id, &eff);
            n += r == SC_ROUTE_KONTEXT;
            wrong += r != (bucket(id) < 25 ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL);
        }
        CHECK_EQ_INT(wrong, 0);
        CHECK(n >= 2300 && n <= 2700);
        CHECK_EQ_INT(route("qa-1", &eff), SC_ROUTE_KONTEXT);
        CHECK_EQ_INT(eff.max_concurrent, 10);
        CHECK_STR(eff.phase, "limited");
        sc_policy_shutdown();
    }

    if (load(&c, "examples/policies/time_window.lua") == 0) {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        bool inside = tm.tm_hour >= 8 && tm.tm_hour < 18;
        sc_route_t r = route("anyone", &eff);
        time_t after = time(NULL);
        gmtime_r(&after, &tm);
        if ((tm.tm_hour >= 8 && tm.tm_hour < 18) == inside) /* not at the edge of the window */
            CHECK_EQ_INT(r, inside ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL);
        CHECK(eff.use_kontext);
        CHECK(!sc_policy_on_kontext_error(&eff, "timeout", "x",
                                          &(sc_policy_req_t){"a", NULL, 1, 1, false, 1, 1, false}));
        sc_policy_shutdown();
    }
    return test_report("lua_examples_test");
}
