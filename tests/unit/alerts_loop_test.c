/* Alerts with the evaluation thread over the real metrics module: the shipped
 * rules (embedded default, holds overridden to 0 through the environment) turn
 * /api/admin/metrics/health degraded after a fallback storm and unhealthy when
 * the Kontext success rate collapses; a reload while the loop runs is applied
 * by the loop itself; shutdown joins cleanly. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "alerts/alerts.h"
#include "alerts/alerts_internal.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "metrics/metrics.h"
#include "test.h"

static char *health(void)
{
    sc_buf_t b = SC_BUF_INIT;
    CHECK(sc_alerts_health_json(&b) == 0);
    cJSON *j = cJSON_Parse(b.data ? b.data : "");
    sc_buf_free(&b);
    const cJSON *s = cJSON_GetObjectItem(j, "status");
    char *r = strdup(cJSON_IsString(s) ? s->valuestring : "?");
    cJSON_Delete(j);
    return r;
}

static int health_is(const char *want)
{
    char *h = health();
    int ok = strcmp(h, want) == 0;
    free(h);
    return ok;
}

/* Waits (generously: the machine is shared) until health is want. */
static int wait_health(const char *want)
{
    for (int k = 0; k < 400; k++) {
        if (health_is(want))
            return 1;
        usleep(25 * 1000);
    }
    return health_is(want);
}

static int alert_names(char *out, size_t outlen)
{
    sc_buf_t b = SC_BUF_INIT;
    CHECK(sc_alerts_json(&b) == 0);
    cJSON *j = cJSON_Parse(b.data ? b.data : "");
    sc_buf_free(&b);
    int n = 0;
    out[0] = '\0';
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(j, "alerts"))
    {
        const cJSON *nm = cJSON_GetObjectItem(a, "name");
        if (cJSON_IsString(nm)) {
            size_t l = strlen(out);
            snprintf(out + l, outlen - l, "%s%s", n ? "," : "", nm->valuestring);
            n++;
        }
    }
    cJSON_Delete(j);
    return n;
}

int main(void)
{
    char dir[] = "/tmp/sc-alerts-loop-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    setenv("ALERT_FOR_SECONDS_OVERRIDE", "0", 1);
    sc_config_t cfg;
    char err[1024] = "";
    CHECK(sc_config_load(&cfg, NULL, err, sizeof err) == 0);
    snprintf(cfg.alerts_file, sizeof cfg.alerts_file, "%s/alerts.lua", dir); /* absent */
    cfg.alert_interval_seconds = 0.05;

    CHECK_EQ_INT(sc_alerts_init(&cfg, err, sizeof err), 0);
    CHECK_EQ_INT(sc_alerts__rule_count(), 5);
    sc_alerts_evaluate_now();
    CHECK(health_is("healthy")); /* no traffic: every rate nil, nothing fires */

    /* a handful of failures is below the minimum volume: still healthy */
    double now = sc_clock_wall();
    for (int k = 0; k < 5; k++) {
        sc_metrics_request(now, true);
        sc_metrics_kontext_started(now);
        sc_metrics_kontext_finished(now, SC_KONTEXT_FAILURE, 1.0);
        sc_metrics_fallback(now, SC_FB_API_ERROR);
        sc_metrics_pil(now, true, 0.1);
    }
    sc_alerts_evaluate_now();
    CHECK(health_is("healthy"));
    char names[512];
    CHECK_EQ_INT(alert_names(names, sizeof names), 0);

    /* fallback storm: 30 routed requests, 25 of them refused by the hourly
     * limit (so no predictions fail) -> fallback rate high -> degraded */
    for (int k = 0; k < 25; k++) {
        sc_metrics_request(now, true);
        sc_metrics_fallback(now, SC_FB_HOURLY_LIMIT);
    }
    CHECK(wait_health("degraded"));
    CHECK_EQ_INT(alert_names(names, sizeof names), 1);
    CHECK_STR(names, "high_fallback_rate");

    /* predictions fail: 25 attempts, 5 successes -> success rate 20% -> unhealthy */
    for (int k = 0; k < 20; k++) {
        sc_metrics_request(now, true);
        sc_metrics_kontext_started(now);
        if (k < 5)
            sc_metrics_kontext_finished(now, SC_KONTEXT_SUCCESS, 10.0);
        else
            sc_metrics_kontext_finished(now, SC_KONTEXT_FAILURE, 2.0);
    }
    CHECK(wait_health("unhealthy"));
    CHECK_EQ_INT(alert_names(names, sizeof names), 2);

    /* reload while the loop runs: a file with one rule that never fires */
    const char *src = "return {{ name = 'never', severity = 'critical', for_seconds = 0,\n"
                      "  when = function(m) return false end }}\n";
    CHECK(sc_fs_write_atomic(cfg.alerts_file, src, strlen(src)) == 0);
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), 0);
    sc_alerts_evaluate_now();
    CHECK_EQ_INT(sc_alerts__rule_count(), 1);
    CHECK(wait_health("healthy")); /* the removed rules resolved */
    CHECK_EQ_INT(alert_names(names, sizeof names), 0);

    sc_alerts_shutdown();
    unlink(cfg.alerts_file);
    rmdir(dir);
    return test_report("alerts_loop_test");
}
