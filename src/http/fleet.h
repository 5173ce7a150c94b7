/* This instance in a fleet: its id, the GET /api/admin/fleet answer, the
 * limits-store part of /api/admin/metrics/health and the instance label of
 * /metrics. Never touches Redis: the store answers from its own views.
 * sc_http_fleet_set_instance is called once by main before serving; the rest
 * from any thread. */
#ifndef SCENECOMP_HTTP_FLEET_H
#define SCENECOMP_HTTP_FLEET_H

#include <microhttpd.h>

#include "core/buf.h"

/* Records this instance's id (copied) and start time. */
void sc_http_fleet_set_instance(const char *id, double started_at);
/* The id given above ("" before). */
const char *sc_http_fleet_instance(void);

/* GET /api/admin/fleet: {"instances":[{"id","started_at","last_seen",
 * "policy_version","in_flight","version"}, ...]}; with the memory store, this
 * instance alone. */
enum MHD_Result sc_http__fleet(struct MHD_Connection *conn);

/* The health JSON of the alerts; while the limits store is unavailable a
 * "healthy" status becomes "degraded" and "limits_store": "unavailable" is
 * added (otherwise the answer is the alerts' one, unchanged).
 * Returns 0 or -1 (out of memory). */
int sc_http_fleet_health_json(sc_buf_t *out);

/* Copies the Prometheus text in (len bytes) to out with instance="<id>" added
 * to every sample (comments untouched). Returns 0 or -1 (out of memory). */
int sc_http_fleet_label(const char *in, size_t len, const char *instance, sc_buf_t *out);

#endif
