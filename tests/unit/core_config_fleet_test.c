/* The fleet variables of the configuration: defaults, accepted values, and a
 * malformed value refused with a message naming the variable. */
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "test.h"

static int load(sc_config_t *c, char *err, size_t n)
{
    return sc_config_load(c, NULL, err, n);
}

static void refused(const char *name, const char *value, const char *word)
{
    sc_config_t c;
    char err[256] = "";
    setenv(name, value, 1);
    CHECK_EQ_INT(load(&c, err, sizeof err), -1);
    CHECK(strstr(err, word) != NULL);
    unsetenv(name);
}

int main(void)
{
    const char *vars[] = {"LIMITS_STORE", "REDIS_URL", "REDIS_KEY_PREFIX", "INSTANCE_ID",
                          "POLICY_SOURCE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    sc_config_t c;
    char err[256] = "";
    CHECK_EQ_INT(load(&c, err, sizeof err), 0);
    CHECK_STR(c.limits_store, "memory");
    CHECK_STR(c.redis_url, "redis://127.0.0.1:6379/0");
    CHECK_STR(c.redis_key_prefix, "scenecomp:");
    CHECK_STR(c.instance_id, "");
    CHECK_STR(c.policy_source, "file");

    setenv("LIMITS_STORE", "redis", 1);
    setenv("REDIS_URL", "unix:///run/redis/redis.sock", 1);
    setenv("REDIS_KEY_PREFIX", "sc:prod:", 1);
    setenv("INSTANCE_ID", "web-1:8001", 1);
    CHECK_EQ_INT(load(&c, err, sizeof err), 0);
    CHECK_STR(c.limits_store, "redis");
    CHECK_STR(c.redis_url, "unix:///run/redis/redis.sock");
    CHECK_STR(c.redis_key_prefix, "sc:prod:");
    CHECK_STR(c.instance_id, "web-1:8001");
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);

    refused("LIMITS_STORE", "etcd", "LIMITS_STORE");
    refused("LIMITS_STORE", "", "LIMITS_STORE");
    refused("POLICY_SOURCE", "consul", "POLICY_SOURCE");
    refused("REDIS_URL", "http://127.0.0.1:6379", "REDIS_URL");
    refused("INSTANCE_ID", "has space", "INSTANCE_ID");
    refused("INSTANCE_ID", "q\"uote", "INSTANCE_ID");
    return test_report("core_config_fleet_test");
}
