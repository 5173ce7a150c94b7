/* The ops dashboard: GET /dashboard (one HTML page) and its static files under
 * /dashboard/assets/ (app.js, style.css, favicon.svg and Debian's Chart.js),
 * all embedded into the binary at build time (cmake/embed_web.cmake), so the
 * page works offline and needs nothing installed next to the binary.
 *
 * Access: with ADMIN_TOKEN set the page and its assets are public (they hold no
 * data; the page asks for the token and sends it as the Bearer header of its
 * /api/admin/... calls). Without ADMIN_TOKEN the admin rule applies: loopback
 * peers only (403 otherwise).
 *
 * Threads: sc_http_dashboard runs on any MHD worker; it only reads constant data. */
#ifndef SCENECOMP_HTTP_DASHBOARD_H
#define SCENECOMP_HTTP_DASHBOARD_H

#include <stddef.h>

#include <microhttpd.h>

#include "core/config.h"

/* One embedded file; the table is generated (build dir, embedded_web.c). */
typedef struct {
    const char *name;          /* URL name under /dashboard/assets/, or "index.html" */
    const unsigned char *data; /* len bytes, NUL-terminated */
    size_t len;
    const char *etag; /* quoted, from the file's SHA-256 */
} sc_dashboard_asset_t;

extern const sc_dashboard_asset_t sc_dashboard_assets[];
extern const size_t sc_dashboard_asset_count;

/* Answers a request whose url is "/dashboard" or starts with "/dashboard/":
 * the page, an asset (200, or 304 on a matching If-None-Match), 404 for an
 * unknown name, 405 for a method other than GET/HEAD, or the admin rule's 403. */
enum MHD_Result sc_http_dashboard(struct MHD_Connection *conn, const sc_config_t *cfg,
                                  const char *method, const char *url);

#endif
