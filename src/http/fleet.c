/* Fleet views over HTTP (see fleet.h). */
#include "http/fleet.h"

#include <stdio.h>
#include <string.h>

#include "alerts/alerts.h"
#include "core/clock.h"
#include "http/conn.h"
#include "limits/limiter.h"
#include "lua/policy.h"

static char g_instance[512];
static double g_started_at;

void sc_http_fleet_set_instance(const char *id, double started_at)
{
    snprintf(g_instance, sizeof g_instance, "%s", id);
    g_started_at = started_at;
}

const char *sc_http_fleet_instance(void)
{
    return g_instance;
}

/* The memory store has no fleet: this instance is the whole of it. */
static int self_json(double now, sc_buf_t *b)
{
    sc_limits_counts_t c;
    sc_limiter_counts(now, &c);
    char started[32], seen[32];
    sc_clock_rfc3339(g_started_at, started);
    sc_clock_rfc3339(now, seen);
    int rc = sc_buf_puts(b, "{\"instances\":[{\"id\":");
    rc |= sc_buf_json_str(b, g_instance);
    rc |= sc_buf_printf(b,
                        ",\"started_at\":\"%s\",\"last_seen\":\"%s\",\"policy_version\":%lld,"
                        "\"in_flight\":%d,\"version\":\"%s\"}]}",
                        started, seen, sc_policy_version(), c.in_flight, SC_VERSION);
    return rc;
}

enum MHD_Result sc_http__fleet(struct MHD_Connection *conn)
{
    sc_limits_store_t *s = sc_limiter_store();
    double now = sc_clock_wall();
    sc_buf_t b = SC_BUF_INIT;
    int rc = (s && s->fleet_json) ? s->fleet_json(s, now, &b) : self_json(now, &b);
    if (rc != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    return sc_http__send_json(conn, 200, &b);
}

int sc_http_fleet_health_json(sc_buf_t *out)
{
    sc_buf_t a = SC_BUF_INIT;
    if (sc_alerts_health_json(&a) != 0) {
        sc_buf_free(&a);
        return -1;
    }
    bool up = sc_limiter_available();
    /* The alerts answer starts with {"status":"<s>"; keep its status unless
     * the store is down and nothing worse fires. */
    static const char healthy[] = "{\"status\":\"healthy\"";
    const char *rest = a.data;
    const char *status = NULL;
    if (!up && strncmp(a.data, healthy, sizeof healthy - 1) == 0) {
        status = "degraded";
        rest = a.data + sizeof healthy - 1;
    }
    int rc = 0;
    if (status) {
        rc |= sc_buf_printf(out, "{\"status\":\"%s\"", status);
        rc |= sc_buf_puts(out, rest);
    } else {
        rc |= sc_buf_puts(out, a.data);
    }
    sc_buf_free(&a);
    /* Insert "limits_store" before the closing brace, only while it is down:
     * a healthy answer keeps the contract's exact shape. */
    if (!up && rc == 0 && out->len > 0 && out->data[out->len - 1] == '}') {
        out->len--;
        out->data[out->len] = '\0';
        rc |= sc_buf_puts(out, ",\"limits_store\":\"unavailable\"}");
    }
    return rc ? -1 : 0;
}

int sc_http_fleet_label(const char *in, size_t len, const char *instance, sc_buf_t *out)
{
    sc_buf_t lab = SC_BUF_INIT;
    /* Label value escaping per the exposition format: \ " and newline. */
    int rc = sc_buf_puts(&lab, "instance=\"");
    for (const char *p = instance; *p; p++) {
        if (*p == '\\' || *p == '"')
            rc |= sc_buf_printf(&lab, "\\%c", *p);
        else if (*p == '\n')
            rc |= sc_buf_puts(&lab, "\\n");
        else
            rc |= sc_buf_append(&lab, p, 1);
    }
    rc |= sc_buf_puts(&lab, "\"");
    size_t i = 0;
    while (rc == 0 && i < len) {
        const char *line = in + i;
        const char *nl = memchr(line, '\n', len - i);
        size_t n = nl ? (size_t)(nl - line) : len - i;
        i += n + (nl ? 1 : 0);
        if (n == 0 || line[0] == '#') {
            rc |= sc_buf_append(out, line, n);
        } else {
            /* name[{labels}] value: add ours first inside the braces. */
            size_t name = strcspn(line, "{ ");
            if (name > n)
                name = n;
            rc |= sc_buf_append(out, line, name);
            if (name < n && line[name] == '{') {
                bool empty = name + 1 < n && line[name + 1] == '}';
                rc |= sc_buf_puts(out, "{");
                rc |= sc_buf_append(out, lab.data, lab.len);
                rc |= sc_buf_puts(out, empty ? "" : ",");
                rc |= sc_buf_append(out, line + name + 1, n - name - 1);
            } else {
                rc |= sc_buf_puts(out, "{");
                rc |= sc_buf_append(out, lab.data, lab.len);
                rc |= sc_buf_puts(out, "}");
                rc |= sc_buf_append(out, line + name, n - name);
            }
        }
        if (nl)
            rc |= sc_buf_puts(out, "\n");
    }
    sc_buf_free(&lab);
    return rc ? -1 : 0;
}
