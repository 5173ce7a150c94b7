/* Alerts: the pending -> firing -> resolved state machine driven with an
 * explicit clock and snapshots, health derivation, JSON views, failing and
 * looping rules, reload refusal and swap, validation errors, the embedded
 * default. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "alerts/alerts.h"
#include "alerts/alerts_internal.h"
#include "alerts/rules.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "test.h"

static char tmpdir[256];
static char rules_path[512];

/* Rules over fields the test controls. `boom` raises and `spin` loops forever
 * when today_generations == 777 (never on the validation samples), to show
 * that the rules after them still run. */
static const char *RULES_V1 =
    "return {\n"
    "  { name = 'fb', severity = 'warning', for_seconds = 10,\n"
    "    when = function(m) return m.fallback_rate ~= nil and m.fallback_rate > 0.10 end,\n"
    "    summary = function(m) return string.format('fallback rate %.0f%% over %d requests',\n"
    "      m.fallback_rate * 100, m.total_requests) end,\n"
    "    value = function(m) return m.fallback_rate end },\n"
    "  { name = 'sr', severity = 'critical', for_seconds = 0,\n"
    "    when = function(m) return m.kontext_success_rate ~= nil and m.kontext_success_rate < 0.9 "
    "end },\n"
    "  { name = 'boom', severity = 'warning', for_seconds = 0,\n"
    "    when = function(m) if m.today_generations == 777 then error('kaboom') end return false "
    "end },\n"
    "  { name = 'spin', severity = 'critical', for_seconds = 0,\n"
    "    when = function(m) if m.today_generations == 777 then while true do end end return "
    "false end },\n"
    "  { name = 'after', severity = 'warning', for_seconds = 0,\n"
    "    when = function(m) return m.today_generations == 777 end },\n"
    "}\n";

static void write_rules(const char *src)
{
    CHECK(sc_fs_write_atomic(rules_path, src, strlen(src)) == 0);
}

static void quiet(sc_metrics_snapshot_t *s)
{
    sc_alert_rules_sample(s, false); /* no traffic, every rate NaN */
}

static cJSON *alerts_doc(int health)
{
    sc_buf_t b = SC_BUF_INIT;
    CHECK((health ? sc_alerts_health_json(&b) : sc_alerts_json(&b)) == 0);
    cJSON *j = cJSON_Parse(b.data ? b.data : "");
    CHECK(j != NULL);
    sc_buf_free(&b);
    return j;
}

static const char *health_status(void)
{
    static char st[32];
    cJSON *j = alerts_doc(1);
    cJSON *s = cJSON_GetObjectItem(j, "status");
    snprintf(st, sizeof st, "%s", cJSON_IsString(s) ? s->valuestring : "?");
    cJSON_Delete(j);
    return st;
}

/* The entry named name in {"alerts": [...]}, or NULL. */
static const cJSON *find_alert(const cJSON *doc, const char *name)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(doc, "alerts"))
    {
        const cJSON *n = cJSON_GetObjectItem(a, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return a;
    }
    return NULL;
}

static char *read_log(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s/backend.log", tmpdir);
    char *s = NULL;
    size_t n = 0;
    if (sc_fs_read_file(p, 1 << 22, &s, &n) != 0)
        return strdup("");
    return s;
}

static int log_has(const char *needle)
{
    char *s = read_log();
    int r = strstr(s, needle) != NULL;
    free(s);
    return r;
}

static void init_alerts(void)
{
    sc_config_t cfg;
    char err[1024] = "";
    sc_config_defaults(&cfg);
    snprintf(cfg.alerts_file, sizeof cfg.alerts_file, "%s", rules_path);
    cfg.alert_interval_seconds = 3600;
    int rc = sc_alerts__init(&cfg, false, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "init: %s\n", err);
    CHECK_EQ_INT(rc, 0);
}

static void test_state_machine(void)
{
    sc_metrics_snapshot_t s;
    write_rules(RULES_V1);
    init_alerts();
    CHECK_EQ_INT(sc_alerts__rule_count(), 5);

    quiet(&s);
    sc_alerts__evaluate_with(1000, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_INACTIVE);
    CHECK_STR(health_status(), "healthy");
    cJSON *j = alerts_doc(0);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "alerts")), 0);
    cJSON_Delete(j);

    /* condition true: pending, not yet in health */
    s.total_requests = 50;
    s.fallbacks = 17;
    s.fallback_rate = 17.0 / 50.0;
    sc_alerts__evaluate_with(1001, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_PENDING);
    CHECK_STR(health_status(), "healthy");
    j = alerts_doc(0);
    const cJSON *a = find_alert(j, "fb");
    CHECK(a != NULL);
    if (a) {
        CHECK_STR(cJSON_GetObjectItem(a, "state")->valuestring, "pending");
        CHECK_STR(cJSON_GetObjectItem(a, "severity")->valuestring, "warning");
        CHECK_STR(cJSON_GetObjectItem(a, "since")->valuestring, "1970-01-01T00:16:41.000Z");
        CHECK_STR(cJSON_GetObjectItem(a, "summary")->valuestring,
                  "fallback rate 34% over 50 requests");
        CHECK(fabs(cJSON_GetObjectItem(a, "value")->valuedouble - 0.34) < 1e-9);
    }
    cJSON_Delete(j);

    /* 4 s < for_seconds: still pending */
    sc_alerts__evaluate_with(1005, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_PENDING);
    /* 10 s: firing, health degraded */
    sc_alerts__evaluate_with(1011, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_FIRING);
    CHECK_STR(health_status(), "degraded");
    CHECK(log_has("[Alert] fb pending (warning): fallback rate 34% over 50 requests"));
    CHECK(log_has("[Alert] fb firing (warning): fallback rate 34% over 50 requests"));
    j = alerts_doc(1);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "alerts")), 1);
    a = find_alert(j, "fb");
    CHECK(a != NULL && strcmp(cJSON_GetObjectItem(a, "state")->valuestring, "firing") == 0);
    CHECK(a != NULL &&
          strcmp(cJSON_GetObjectItem(a, "since")->valuestring, "1970-01-01T00:16:51.000Z") == 0);
    cJSON_Delete(j);

    /* a critical rule with for_seconds = 0 fires at once: unhealthy */
    s.k_attempts = 40;
    s.k_successes = 20;
    s.kontext_success_rate = 0.5;
    sc_alerts__evaluate_with(1012, &s);
    CHECK_EQ_INT(sc_alerts__state("sr"), SC_ALERT_FIRING);
    CHECK_STR(health_status(), "unhealthy");
    j = alerts_doc(1);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "alerts")), 2);
    a = find_alert(j, "sr");
    /* no summary function: the name; no value function: null */
    CHECK(a && strcmp(cJSON_GetObjectItem(a, "summary")->valuestring, "sr") == 0);
    CHECK(a && cJSON_IsNull(cJSON_GetObjectItem(a, "value")));
    cJSON_Delete(j);

    /* all quiet: both resolve */
    quiet(&s);
    sc_alerts__evaluate_with(1020, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_INACTIVE);
    CHECK_EQ_INT(sc_alerts__state("sr"), SC_ALERT_INACTIVE);
    CHECK_STR(health_status(), "healthy");
    CHECK(log_has("[Alert] fb resolved (warning)"));
    CHECK(log_has("[Alert] sr resolved (critical)"));

    /* pending that turns false goes back to inactive; the hold timer restarts */
    s.total_requests = 50;
    s.fallback_rate = 0.5;
    sc_alerts__evaluate_with(1030, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_PENDING);
    s.fallback_rate = 0.05;
    sc_alerts__evaluate_with(1031, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_INACTIVE);
    s.fallback_rate = 0.5;
    sc_alerts__evaluate_with(1032, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_PENDING);
    sc_alerts__evaluate_with(1041, &s); /* 9 s after the restart, 11 s after the first */
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_PENDING);
    sc_alerts__evaluate_with(1042, &s);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_FIRING);

    /* a raising rule and an endless loop are "not firing"; the rule after them runs */
    s.today_generations = 777;
    sc_alerts__evaluate_with(1050, &s);
    CHECK_EQ_INT(sc_alerts__state("boom"), SC_ALERT_INACTIVE);
    CHECK_EQ_INT(sc_alerts__state("spin"), SC_ALERT_INACTIVE);
    CHECK_EQ_INT(sc_alerts__state("after"), SC_ALERT_FIRING);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_FIRING);
    CHECK(log_has("[Alert] rule boom failed, treated as not firing"));
    CHECK(log_has("kaboom"));
    CHECK(log_has("[Alert] rule spin failed, treated as not firing"));
    /* and again: the loop keeps being cut, the state stays sane */
    sc_alerts__evaluate_with(1051, &s);
    CHECK_EQ_INT(sc_alerts__state("after"), SC_ALERT_FIRING);
    CHECK_EQ_INT(sc_alerts__state("spin"), SC_ALERT_INACTIVE);
    CHECK_STR(health_status(), "degraded");
}

/* Must run after test_state_machine (rules V1 loaded, fb and after firing). */
static void test_reload(void)
{
    char err[1024] = "";
    sc_metrics_snapshot_t s;

    CHECK(sc_alerts_last_error() == NULL);
    /* a syntax error: refused with file:line, old rules kept */
    write_rules(
        "return {\n  { name = 'x', severity = 'warning',\n  for_seconds = 1 when = 1 },\n}\n");
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), -1);
    char want[600];
    snprintf(want, sizeof want, "%s:3:", rules_path);
    CHECK(strstr(err, want) != NULL);
    CHECK(sc_alerts_last_error() != NULL && strstr(sc_alerts_last_error(), want) != NULL);
    CHECK(log_has("[Alert] reload (test) refused, keeping the current 5 rule(s)"));
    quiet(&s);
    s.total_requests = 50;
    s.fallback_rate = 0.5;
    sc_alerts__evaluate_with(1100, &s);
    CHECK_EQ_INT(sc_alerts__rule_count(), 5);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_FIRING);
    CHECK_EQ_INT(sc_alerts__state("after"), SC_ALERT_INACTIVE); /* resolved */

    /* a missing file on reload is refused too */
    char saved[600];
    snprintf(saved, sizeof saved, "%s.bak", rules_path);
    CHECK(rename(rules_path, saved) == 0);
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), -1);
    CHECK(strstr(err, "no such file") != NULL);
    CHECK(rename(saved, rules_path) == 0);

    /* sr firing, then a new file that keeps fb (with a new hold), drops sr, adds n */
    s.kontext_success_rate = 0.2;
    sc_alerts__evaluate_with(1101, &s);
    CHECK_EQ_INT(sc_alerts__state("sr"), SC_ALERT_FIRING);
    write_rules("return {\n"
                "  { name = 'n', severity = 'critical', for_seconds = 5,\n"
                "    when = function(m) return (m.total_requests or 0) > 10 end },\n"
                "  { name = 'fb', severity = 'critical', for_seconds = 100,\n"
                "    when = function(m) return m.fallback_rate ~= nil and m.fallback_rate > 0.1 "
                "end },\n"
                "}\n");
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), 0);
    CHECK(sc_alerts_last_error() == NULL);
    CHECK_EQ_INT(sc_alerts__rule_count(), 5); /* swapped at the next evaluation */
    sc_alerts__evaluate_with(1102, &s);
    CHECK_EQ_INT(sc_alerts__rule_count(), 2);
    CHECK_EQ_INT(sc_alerts__state("sr"), -1);
    CHECK_EQ_INT(sc_alerts__state("fb"), SC_ALERT_FIRING); /* state kept across the swap */
    CHECK_EQ_INT(sc_alerts__state("n"), SC_ALERT_PENDING);
    CHECK(log_has("[Alert] sr resolved (critical): sr (rule removed)"));
    cJSON *j = alerts_doc(1);
    const cJSON *a = find_alert(j, "fb");
    CHECK(a && strcmp(cJSON_GetObjectItem(a, "severity")->valuestring, "critical") == 0);
    /* still the moment it started firing in the first file */
    CHECK(a &&
          strcmp(cJSON_GetObjectItem(a, "since")->valuestring, "1970-01-01T00:17:22.000Z") == 0);
    cJSON_Delete(j);
    CHECK_STR(health_status(), "unhealthy");
    sc_alerts__evaluate_with(1107, &s);
    CHECK_EQ_INT(sc_alerts__state("n"), SC_ALERT_FIRING);
    sc_alerts_shutdown();
    CHECK_EQ_INT(sc_alerts__rule_count(), 0);
}

/* Offline validation: each broken file is refused with a message naming the problem. */
static void test_check_file(void)
{
    static const struct {
        const char *src;
        const char *want;
    } cases[] = {
        {"return 42", "must return a list of rules"},
        {"return { a = 1 }", "must return a list of rules"},
        {"return { 'x' }", "rule 1 must be a table"},
        {"return {{ severity = 'warning', for_seconds = 0, when = function() end }}",
         "field 'name' must be a string"},
        {"return {{ name = 'bad name', severity = 'warning', for_seconds = 0, when = function() "
         "end }}",
         "field 'name' must be"},
        {"return {{ name = 'a', severity = 'info', for_seconds = 0, when = function() end }}",
         "field 'severity' must be"},
        {"return {{ name = 'a', severity = 'warning', for_seconds = -1, when = function() end }}",
         "field 'for_seconds' must be a number >= 0"},
        {"return {{ name = 'a', severity = 'warning', when = function() end }}",
         "field 'for_seconds' must be a number >= 0"},
        {"return {{ name = 'a', severity = 'warning', for_seconds = 0 }}",
         "field 'when' must be a function"},
        {"return {{ name = 'a', severity = 'warning', for_seconds = 0, when = function() end,\n"
         " summary = 'text' }}",
         "field 'summary' must be a function"},
        {"return {{ name = 'a', severity = 'warning', for_seconds = 0,\n"
         " when = function() end, for_second = 5 }}",
         "unknown key 'for_second'"},
        {"return {\n"
         " { name = 'a', severity = 'warning', for_seconds = 0, when = function() end },\n"
         " { name = 'a', severity = 'warning', for_seconds = 0, when = function() end } }",
         ":3: rule 2 'a': duplicate name"},
        /* indexing a nil rate on the fresh-start sample */
        {"return {{ name = 'a', severity = 'warning', for_seconds = 0,\n"
         " when = function(m) return m.fallback_rate > 0.1 end }}",
         ":2: attempt to compare"},
        {"return {{ name = 'a', severity = 'warning', for_seconds = 0, when = function() end,\n"
         " summary = function(m) return {} end }}",
         "summary() on a busy sample returned a table"},
        {"return {{ name = 'a', severity = 'warning', for_seconds = 0,\n"
         " when = function() while true do end end }}",
         "timeout"},
        {"while true do end", "timeout"},
        {"x = ", "unexpected symbol"},
    };
    char err[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_rules(cases[i].src);
        err[0] = '\0';
        CHECK_EQ_INT(sc_alerts_check_file(rules_path, err, sizeof err), -1);
        if (!strstr(err, cases[i].want))
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, err, cases[i].want);
        CHECK(strstr(err, cases[i].want) != NULL);
        CHECK(strncmp(err, rules_path, strlen(rules_path)) == 0 || strstr(err, "rule '") ||
              strstr(err, "timeout"));
    }
    write_rules(RULES_V1);
    CHECK_EQ_INT(sc_alerts_check_file(rules_path, err, sizeof err), 0);
    CHECK_EQ_INT(sc_alerts_check_file("lua/alerts.lua", err, sizeof err), 0);
    /* the examples, one of which builds on shipped_alerts() */
    CHECK_EQ_INT(sc_alerts_check_file("examples/alerts/cost_budget.lua", err, sizeof err), 0);
    err[0] = '\0';
    CHECK_EQ_INT(sc_alerts_check_file("examples/alerts/shipped_plus_budget.lua", err, sizeof err),
                 0);
    if (err[0])
        fprintf(stderr, "shipped_plus_budget: %s\n", err);
    write_rules("return {}");
    CHECK_EQ_INT(sc_alerts_check_file(rules_path, err, sizeof err), 0); /* no rules is fine */
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope.lua", tmpdir);
    CHECK_EQ_INT(sc_alerts_check_file(missing, err, sizeof err), -1);
}

/* A broken file at start stops start-up; a missing one means the embedded default. */
static void test_init_default_and_broken(void)
{
    sc_config_t cfg;
    char err[1024] = "";
    sc_config_defaults(&cfg);
    snprintf(cfg.alerts_file, sizeof cfg.alerts_file, "%s/does-not-exist.lua", tmpdir);
    CHECK_EQ_INT(sc_alerts__init(&cfg, false, err, sizeof err), 0);
    CHECK_EQ_INT(sc_alerts__rule_count(), 5);
    CHECK_EQ_INT(sc_alerts__state("high_fallback_rate"), SC_ALERT_INACTIVE);
    CHECK_EQ_INT(sc_alerts__state("daily_generation_limit"), SC_ALERT_INACTIVE);
    CHECK_EQ_INT(sc_alerts__state("low_kontext_success_rate"), SC_ALERT_INACTIVE);
    CHECK_EQ_INT(sc_alerts__state("high_avg_generation_time"), SC_ALERT_INACTIVE);
    CHECK(log_has("using the embedded default rules (5)"));
    /* a second init is refused */
    CHECK_EQ_INT(sc_alerts__init(&cfg, false, err, sizeof err), -1);

    /* the shipped low_kontext_success_rate is critical with a 120 s hold */
    sc_metrics_snapshot_t s;
    sc_alert_rules_sample(&s, false);
    s.k_attempts = 40;
    s.k_successes = 20;
    s.kontext_success_rate = 0.5;
    sc_alerts__evaluate_with(5000, &s);
    CHECK_EQ_INT(sc_alerts__state("low_kontext_success_rate"), SC_ALERT_PENDING);
    sc_alerts__evaluate_with(5119, &s);
    CHECK_EQ_INT(sc_alerts__state("low_kontext_success_rate"), SC_ALERT_PENDING);
    sc_alerts__evaluate_with(5120, &s);
    CHECK_EQ_INT(sc_alerts__state("low_kontext_success_rate"), SC_ALERT_FIRING);
    CHECK_STR(health_status(), "unhealthy");

    /* still no file: a reload keeps the built-in rules and is not an error */
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), 0);
    CHECK(sc_alerts_last_error() == NULL);
    sc_alerts__evaluate_with(5121, &s);
    CHECK_EQ_INT(sc_alerts__rule_count(), 5);
    CHECK_EQ_INT(sc_alerts__state("low_kontext_success_rate"), SC_ALERT_FIRING);
    /* the file appears: it replaces the default; the kept name keeps its state */
    const char *one = "return {{ name = 'low_kontext_success_rate', severity = 'critical',\n"
                      "  for_seconds = 0, when = function(m) return true end }}\n";
    CHECK(sc_fs_write_atomic(cfg.alerts_file, one, strlen(one)) == 0);
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), 0);
    sc_alerts__evaluate_with(5122, &s);
    CHECK_EQ_INT(sc_alerts__rule_count(), 1);
    CHECK_EQ_INT(sc_alerts__state("low_kontext_success_rate"), SC_ALERT_FIRING);
    /* and vanishes again: now that is refused, the file's rules stay */
    CHECK(unlink(cfg.alerts_file) == 0);
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), -1);
    CHECK(sc_alerts_last_error() != NULL);
    sc_alerts__evaluate_with(5123, &s);
    CHECK_EQ_INT(sc_alerts__rule_count(), 1);
    sc_alerts_shutdown();

    write_rules("return {{ name = 'a' }}");
    snprintf(cfg.alerts_file, sizeof cfg.alerts_file, "%s", rules_path);
    CHECK_EQ_INT(sc_alerts__init(&cfg, false, err, sizeof err), -1);
    CHECK(strstr(err, "field 'severity'") != NULL);
    CHECK_EQ_INT(sc_alerts__rule_count(), 0);

    /* before init, the views are empty and healthy */
    CHECK_STR(health_status(), "healthy");
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), -1);
}

/* shipped_alerts() gives alert files fresh copies of the shipped five. */
static void test_shipped_alerts(void)
{
    write_rules("local a, b = shipped_alerts(), shipped_alerts()\n"
                "assert(#a == 5 and a ~= b and a[1] ~= b[1] and a[1].when == b[1].when)\n"
                "for _, r in ipairs(a) do r.for_seconds = 0 end\n"
                "assert(b[1].for_seconds > 0, 'copies are independent')\n"
                "a[#a + 1] = { name = 'extra', severity = 'warning', for_seconds = 0,\n"
                "  when = function(m) return m.total_requests > 1000 end }\n"
                "return a\n");
    init_alerts();
    CHECK_EQ_INT(sc_alerts__rule_count(), 6);
    sc_metrics_snapshot_t s;
    sc_alert_rules_sample(&s, false);
    s.total_requests = 2000;
    s.routed_kontext = 100;
    s.fallbacks = 50;
    s.fallback_rate = 0.5;
    sc_alerts__evaluate_with(7000, &s);
    CHECK_EQ_INT(sc_alerts__state("high_fallback_rate"), SC_ALERT_FIRING);
    CHECK_EQ_INT(sc_alerts__state("extra"), SC_ALERT_FIRING);
    CHECK_EQ_INT(sc_alerts__state("low_kontext_success_rate"), SC_ALERT_INACTIVE);
    CHECK(log_has("[Alert] high_fallback_rate firing (warning): fallback rate 50% over 100 "
                  "Kontext-routed requests (alert above 10%)"));
    sc_alerts_shutdown();
}

/* issue 11: the breaker's state reaches the rules as m.breaker, and the shipped
 * circuit_breaker_open fires after its minute. */
static void test_breaker_rule(void)
{
    write_rules("return shipped_alerts()\n");
    init_alerts();
    sc_metrics_snapshot_t s;
    sc_alert_rules_sample(&s, false);
    quiet(&s);
    s.breaker_state = 1; /* open */
    s.breaker_calls = 12;
    s.breaker_failure_rate = 1.0;
    sc_alerts__evaluate_with(9000, &s);
    CHECK_EQ_INT(sc_alerts__state("circuit_breaker_open"), SC_ALERT_PENDING);
    s.breaker_state = 2; /* half-open: still not closed */
    sc_alerts__evaluate_with(9059, &s);
    CHECK_EQ_INT(sc_alerts__state("circuit_breaker_open"), SC_ALERT_PENDING);
    sc_alerts__evaluate_with(9060, &s);
    CHECK_EQ_INT(sc_alerts__state("circuit_breaker_open"), SC_ALERT_FIRING);
    CHECK(log_has("[Alert] circuit_breaker_open firing (critical): Kontext circuit breaker "
                  "half_open"));
    s.breaker_state = 0;
    sc_alerts__evaluate_with(9061, &s);
    CHECK(sc_alerts__state("circuit_breaker_open") != SC_ALERT_FIRING);
    sc_alerts_shutdown();
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "alerts_state_test: hung (a rule's budget did not hold)\n";
    ssize_t r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(1);
}

/* Issue 8: a rule doing a backtracking match delayed a reload by 28 s (the
 * count hook cannot fire inside string.match). Now the rule is cut off at its
 * budget, in evaluation and in a reload's validation. */
static void test_pattern_budget(void)
{
    char err[1024] = "";
    sc_metrics_snapshot_t s;
    signal(SIGALRM, on_alarm);
    alarm(120);
    /* evil only in production (today_generations == 777), not on the samples */
    write_rules("local subject = (('w'):rep(4) .. ' '):rep(80)\n"
                "return {\n"
                "  { name = 'evil', severity = 'warning', for_seconds = 0,\n"
                "    when = function(m) return m.today_generations == 777 and\n"
                "      subject:match('^(.-)%s*(.-)%s*(.-)%s*(.-)x$') ~= nil end },\n"
                "  { name = 'after', severity = 'warning', for_seconds = 0,\n"
                "    when = function(m) return m.today_generations == 777 end },\n"
                "}\n");
    init_alerts();
    quiet(&s);
    s.today_generations = 777;
    double t0 = sc_clock_mono();
    sc_alerts__evaluate_with(9000, &s);
    CHECK(sc_clock_mono() - t0 < 10); /* budget 0.25 s; unbounded: minutes */
    CHECK_EQ_INT(sc_alerts__state("evil"), SC_ALERT_INACTIVE); /* failed = not firing */
    CHECK_EQ_INT(sc_alerts__state("after"), SC_ALERT_FIRING);
    CHECK(log_has("rule evil failed, treated as not firing"));
    CHECK(log_has("pattern budget exceeded"));

    /* a reload whose rule does it on the samples is refused within its budgets */
    write_rules("return {{ name = 'evil2', severity = 'warning', for_seconds = 0,\n"
                "  when = function(m) return ((('w'):rep(4) .. ' '):rep(80)):match(\n"
                "    '^(.-)%s*(.-)%s*(.-)%s*(.-)x$') ~= nil end }}\n");
    t0 = sc_clock_mono();
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), -1);
    CHECK(sc_clock_mono() - t0 < 10);
    if (!strstr(err, "pattern budget exceeded"))
        fprintf(stderr, "reload: %s\n", err);
    CHECK(strstr(err, "pattern budget exceeded") != NULL);
    /* and a good reload right after goes through at once */
    write_rules("return {{ name = 'fine', severity = 'warning', for_seconds = 0,\n"
                "  when = function(m) return true end }}\n");
    t0 = sc_clock_mono();
    CHECK_EQ_INT(sc_alerts_reload("test", err, sizeof err), 0);
    sc_alerts__evaluate_with(9001, &s);
    CHECK(sc_clock_mono() - t0 < 10);
    CHECK_EQ_INT(sc_alerts__rule_count(), 1);
    CHECK_EQ_INT(sc_alerts__state("fine"), SC_ALERT_FIRING);
    alarm(0);
    sc_alerts_shutdown();
}

/* The same embedded bytes the binary ships equal lua/alerts.lua. */
extern const char sc_embedded_alerts[];
extern const size_t sc_embedded_alerts_len;
static void test_embedded_matches_file(void)
{
    char *s = NULL;
    size_t n = 0;
    CHECK(sc_fs_read_file("lua/alerts.lua", 1 << 20, &s, &n) == 0);
    CHECK_EQ_INT(n, sc_embedded_alerts_len);
    CHECK(s && memcmp(s, sc_embedded_alerts, n) == 0);
    free(s);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sc-alerts-test-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 2;
    snprintf(rules_path, sizeof rules_path, "%s/alerts.lua", tmpdir);
    sc_log_set_level(SC_LOG_DEBUG);
    sc_log_open(tmpdir);

    test_state_machine();
    test_reload();
    test_check_file();
    test_init_default_and_broken();
    test_shipped_alerts();
    test_breaker_rule();
    test_pattern_budget();
    test_embedded_matches_file();

    sc_log_close();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", tmpdir);
    return test_report("alerts_state_test");
}
