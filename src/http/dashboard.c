/* GET /dashboard and /dashboard/assets/<name>: the embedded ops page. */
#include "http/dashboard.h"

#include <string.h>

#include "http/conn.h"

#define DASH_PREFIX "/dashboard"
#define DASH_ASSETS "/dashboard/assets/"

/* The page only talks to its own origin: a script or style from anywhere else
 * (an injected CDN tag, a stray URL) is refused by the browser. */
#define DASH_CSP                                                                                   \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "                    \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static const sc_dashboard_asset_t *find_asset(const char *name)
{
    for (size_t i = 0; i < sc_dashboard_asset_count; i++)
        if (strcmp(sc_dashboard_assets[i].name, name) == 0)
            return &sc_dashboard_assets[i];
    return NULL;
}

static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot)
        return "application/octet-stream";
    if (strcmp(dot, ".html") == 0)
        return "text/html; charset=utf-8";
    if (strcmp(dot, ".js") == 0)
        return "text/javascript; charset=utf-8";
    if (strcmp(dot, ".css") == 0)
        return "text/css; charset=utf-8";
    if (strcmp(dot, ".svg") == 0)
        return "image/svg+xml";
    return "application/octet-stream";
}

/* If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/"x" matches "x". */
static bool etag_matches(struct MHD_Connection *conn, const char *etag)
{
    const char *inm =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (!inm)
        return false;
    while (*inm == ' ')
        inm++;
    return strcmp(inm, "*") == 0 || strstr(inm, etag) != NULL;
}

static enum MHD_Result send_asset(struct MHD_Connection *conn, const sc_dashboard_asset_t *a)
{
    bool fresh = etag_matches(conn, a->etag);
    /* The data is static for the life of the process: no copy, no free. */
    struct MHD_Response *r = MHD_create_response_from_buffer(fresh ? 0 : a->len, (void *)a->data,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return sc_http__send_oom(conn);
    if (!fresh)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type(a->name));
    MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, a->etag);
    /* Revalidated on every load (a cheap 304), so an upgraded binary's page
     * is never mixed with an old cached script. */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (strcmp(a->name, "index.html") == 0) {
        MHD_add_response_header(r, "Content-Security-Policy", DASH_CSP);
        MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
        MHD_add_response_header(r, "X-Frame-Options", "DENY");
    }
    return sc_http__deliver(conn, fresh ? 304 : 200, r);
}

enum MHD_Result sc_http_dashboard(struct MHD_Connection *conn, const sc_config_t *cfg,
                                  const char *method, const char *url)
{
    /* With a token the page is public HTML that asks for it; without one the
     * admin rule (loopback peers only) applies to the page as well. */
    if (!cfg->admin_token[0]) {
        enum MHD_Result queued = MHD_NO;
        if (!sc_http__admin_allowed(conn, cfg, &queued))
            return queued;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return sc_http__send_405(conn, "GET, HEAD");

    const sc_dashboard_asset_t *a = NULL;
    if (strcmp(url, DASH_PREFIX) == 0 || strcmp(url, DASH_PREFIX "/") == 0)
        a = find_asset("index.html");
    else if (strncmp(url, DASH_ASSETS, strlen(DASH_ASSETS)) == 0 &&
             strcmp(url + strlen(DASH_ASSETS), "index.html") != 0)
        a = find_asset(url + strlen(DASH_ASSETS));
    if (!a)
        return sc_http__send_error(conn, 404, "not_found", "no route for %s %s", method, url);
    return send_asset(conn, a);
}
