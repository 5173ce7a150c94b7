/* The admin endpoints (/api/admin/...) and /metrics, behind one access rule:
 * with ADMIN_TOKEN set, `Authorization: Bearer <token>` is required (401
 * otherwise, also from loopback); without it only loopback peers are answered
 * (403 for others). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "alerts/alerts.h"
#include "compose/compose.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/conn.h"
#include "http/fleet.h"
#include "lua/policy.h"
#include "metrics/metrics.h"

/* ==== Access ==== */

static bool const_time_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char d = (unsigned char)(alen != blen);
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static bool peer_is_loopback(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return false;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

bool sc_http__admin_allowed(struct MHD_Connection *conn, const sc_config_t *cfg,
                            enum MHD_Result *queued)
{
    if (cfg->admin_token[0]) {
        const char *auth =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
            const char *tok = auth + 7;
            while (*tok == ' ')
                tok++;
            if (const_time_eq(tok, strlen(tok), cfg->admin_token, strlen(cfg->admin_token)))
                return true;
        }
        struct MHD_Response *r = NULL;
        static const char body[] = "{\"error\": {\"code\": \"unauthorized\", \"message\": "
                                   "\"missing or wrong admin token\"}}\n";
        r = MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
        if (!r) {
            *queued = MHD_NO;
            return false;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"scenecomp-admin\"");
        *queued = sc_http__deliver(conn, 401, r);
        return false;
    }
    if (peer_is_loopback(conn))
        return true;
    *queued = sc_http__send_error(
        conn, 403, "forbidden",
        "admin endpoints answer loopback peers only when ADMIN_TOKEN is not set");
    return false;
}

/* ==== Endpoints ==== */

static void effective_caps(sc_limits_caps_t *caps)
{
    sc_policy_effective_t eff;
    sc_policy_current(&eff);
    *caps = (sc_limits_caps_t){eff.max_concurrent, eff.max_per_hour, eff.daily_limit};
}

static enum MHD_Result metrics_composite(struct MHD_Connection *conn)
{
    sc_limits_caps_t caps;
    effective_caps(&caps);
    sc_metrics_snapshot_t s;
    sc_metrics_snapshot(sc_clock_wall(), &caps, &s);
    sc_buf_t b = SC_BUF_INIT;
    if (sc_metrics_snapshot_json(&s, &b) != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    return sc_http__send_json(conn, 200, &b);
}

static enum MHD_Result daily_generations(struct MHD_Connection *conn)
{
    int days = 7;
    const char *arg = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "days");
    if (arg) {
        char *end = NULL;
        long v = strtol(arg, &end, 10);
        bool digits = arg[0] >= '0' && arg[0] <= '9';
        if (!digits || end == arg || *end != '\0' || v < 1 || v > 365)
            return sc_http__send_error(conn, 400, "invalid_parameter",
                                       "query parameter 'days' must be an integer from 1 to 365");
        days = (int)v;
    }
    sc_limits_caps_t caps;
    effective_caps(&caps);
    sc_buf_t b = SC_BUF_INIT;
    if (sc_metrics_daily_json(sc_clock_wall(), days, caps.daily_limit, &b) != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    return sc_http__send_json(conn, 200, &b);
}

/* Answers 200 with the JSON fn appends (500 when it cannot). */
static enum MHD_Result send_from(struct MHD_Connection *conn, int (*fn)(sc_buf_t *out))
{
    sc_buf_t b = SC_BUF_INIT;
    if (fn(&b) != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    return sc_http__send_json(conn, 200, &b);
}

/* The alerts' health, degraded while the limits store does not answer. */
static enum MHD_Result health(struct MHD_Connection *conn)
{
    return send_from(conn, sc_http_fleet_health_json);
}

static enum MHD_Result alerts_list(struct MHD_Connection *conn)
{
    return send_from(conn, sc_alerts_json);
}

static enum MHD_Result policy_status(struct MHD_Connection *conn)
{
    return send_from(conn, sc_policy_status_json);
}

static enum MHD_Result metrics_reset(struct MHD_Connection *conn)
{
    sc_metrics_reset(sc_clock_wall());
    sc_alerts_evaluate_now();
    sc_log_info("[Admin] metrics reset");
    sc_buf_t b = SC_BUF_INIT;
    if (sc_buf_puts(&b, "{\"status\": \"reset\"}") != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    return sc_http__send_json(conn, 200, &b);
}

static enum MHD_Result reload(struct MHD_Connection *conn)
{
    char perr[1024] = "", aerr[1024] = "";
    long long version = 0;
    int prc = sc_policy_reload("admin", &version, perr, sizeof perr);
    int arc = sc_alerts_reload("admin", aerr, sizeof aerr);
    if (prc != 0 || arc != 0) {
        return sc_http__send_error(conn, 422, "reload_failed", "%s%s%s%s%s", prc ? "policy: " : "",
                                   prc ? perr : "", prc && arc ? "; " : "", arc ? "alerts: " : "",
                                   arc ? aerr : "");
    }
    sc_buf_t b = SC_BUF_INIT;
    if (sc_buf_printf(&b, "{\"status\": \"reloaded\", \"version\": %lld}", version) != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    return sc_http__send_json(conn, 200, &b);
}

static enum MHD_Result prometheus(struct MHD_Connection *conn)
{
    sc_limits_caps_t caps;
    effective_caps(&caps);
    sc_buf_t b = SC_BUF_INIT;
    if (sc_metrics_prometheus(sc_clock_wall(), &caps, &b) != 0) {
        sc_buf_free(&b);
        return sc_http__send_oom(conn);
    }
    sc_buf_t l = SC_BUF_INIT; /* every series labelled instance="<INSTANCE_ID>" */
    int lrc = sc_http_fleet_label(b.data, b.len, sc_http_fleet_instance(), &l);
    sc_buf_free(&b);
    if (lrc != 0) {
        sc_buf_free(&l);
        return sc_http__send_oom(conn);
    }
    size_t len = 0;
    char *data = sc_buf_steal(&l, &len);
    return sc_http__send(conn, 200, "text/plain; version=0.0.4; charset=utf-8", data, len);
}

static enum MHD_Result preview_no_body(struct MHD_Connection *conn)
{
    return sc_http__send_error(conn, 422, "invalid_policy", "the body must be a policy file");
}

/* ==== Routes ==== */

typedef enum { ADMIN_GET, ADMIN_POST } admin_method_t; /* GET also answers HEAD */

/* One row per endpoint: a path is listed once, with the one method it takes. */
static const struct admin_route {
    const char *path;
    admin_method_t method;
    enum MHD_Result (*handler)(struct MHD_Connection *conn);
} k_routes[] = {
    {"/api/admin/metrics/composite", ADMIN_GET, metrics_composite},
    {"/api/admin/metrics/health", ADMIN_GET, health},
    {"/api/admin/metrics/daily-generations", ADMIN_GET, daily_generations},
    {"/api/admin/metrics/reset", ADMIN_POST, metrics_reset},
    {"/api/admin/alerts", ADMIN_GET, alerts_list},
    {"/api/admin/policy", ADMIN_GET, policy_status},
    {"/api/admin/reload", ADMIN_POST, reload},
    {"/metrics", ADMIN_GET, prometheus},
    {"/api/admin/decisions", ADMIN_GET, sc_http__admin_decisions},
    /* With a body the preview is routed to sc_http__preview_finish (records.c). */
    {"/api/admin/policy/preview", ADMIN_POST, preview_no_body},
    {"/api/admin/fleet", ADMIN_GET, sc_http__fleet},
};

enum MHD_Result sc_http__admin(struct MHD_Connection *conn, const sc_config_t *cfg,
                               const char *method, const char *url)
{
    enum MHD_Result queued = MHD_NO;
    if (!sc_http__admin_allowed(conn, cfg, &queued))
        return queued;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        const struct admin_route *r = &k_routes[i];
        if (strcmp(url, r->path) != 0)
            continue;
        if (r->method == ADMIN_POST ? !post : !get)
            return sc_http__send_405(conn, r->method == ADMIN_POST ? "POST" : "GET, HEAD");
        return r->handler(conn);
    }
    return sc_http__send_error(conn, 404, "not_found", "no route for %s %s", method, url);
}
