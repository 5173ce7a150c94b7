/* The HTTP service: a libmicrohttpd daemon with a worker thread pool (CPU work
 * such as decoding and compositing runs on the workers, so all cores are used),
 * suspend/resume for Kontext and scene requests (no worker ever waits on the
 * network), and the routes of the contract (/health, /api/composite,
 * /api/composites/{id}, /api/scenes, /api/admin/..., /metrics).
 *
 * It does not load config, policy, metrics or the Replicate client: main.c
 * initialises those first and the server only uses them.
 *
 * Threads: sc_http_start/sc_http_stop from the main thread only. */
#ifndef SCENECOMP_HTTP_SERVER_H
#define SCENECOMP_HTTP_SERVER_H

#include <stddef.h>

#include "core/config.h"

/* Binds cfg->host:cfg->port and starts serving. cfg must outlive the server.
 * Returns 0, or -1 with the reason in err. */
int sc_http_start(const sc_config_t *cfg, char *err, size_t errlen);

/* The port actually bound (useful with PORT=0). 0 when not running. */
int sc_http_port(void);

/* Graceful stop, step 1: stop accepting new connections. Requests already
 * received keep running. */
void sc_http_quiesce(void);

/* Number of connections suspended while a Replicate job runs for them, plus
 * the async composites still running without a connection. */
int sc_http_suspended(void);

/* Number of open connections (0 when not running). */
int sc_http_connections(void);

/* Graceful stop, last step: closes every connection and joins the workers.
 * Call only once no connection is suspended any more (after the Replicate client
 * has completed every job), because libmicrohttpd cannot close suspended ones. */
void sc_http_stop(void);

#endif
