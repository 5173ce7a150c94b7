/* Alert webhook sink: alert state changes (firing, resolved) become
 * Alertmanager webhook-receiver payloads (version "4") that one sender thread
 * POSTs to ALERT_WEBHOOK_URL with libcurl (short timeouts, a few tries with
 * backoff). The queue is bounded: when full the oldest payload is dropped with
 * a warning, so a dead receiver can never block or grow the evaluation loop.
 * Only http:// and https:// URLs are accepted (also after redirects: none are
 * followed). Does not decide what fires; alerts.c does.
 *
 * Threads: sc_webhook_enqueue from any thread (never blocks on the network);
 * start/stop from the thread that owns the alerts module. */
#ifndef SCENECOMP_ALERTS_WEBHOOK_H
#define SCENECOMP_ALERTS_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

#define SC_WEBHOOK_QUEUE_MAX 64
#define SC_WEBHOOK_TRIES 3

typedef struct sc_webhook_alert {
    const char *name;
    bool critical;    /* severity label "critical" (else "warning") */
    bool firing;      /* false = resolved */
    double starts_at; /* wall time the alert started firing */
    double ends_at;   /* wall time it resolved (ignored while firing) */
    const char *summary;
    double value; /* NaN = none (then no "value" annotation) */
} sc_webhook_alert_t;

typedef struct sc_webhook_stats {
    long long queued, delivered, failed, dropped, attempts;
} sc_webhook_stats_t;

/* True when url is an http:// or https:// URL with a host. */
bool sc_webhook_url_ok(const char *url);

/* Appends the Alertmanager webhook JSON for one alert to out. Returns 0 or -1 (OOM). */
int sc_webhook_payload(const sc_webhook_alert_t *a, sc_buf_t *out);

/* Starts the sender thread for url. Returns 0, or -1 with err (bad URL, no thread). */
int sc_webhook_start(const char *url, char *err, size_t errlen);
/* Queues the payload of a (copied). No-op when the sender is not running. */
void sc_webhook_enqueue(const sc_webhook_alert_t *a);
/* Stops the sender (an attempt in progress ends within its timeout); payloads
 * still queued are dropped with a log line. */
void sc_webhook_stop(void);

void sc_webhook_stats(sc_webhook_stats_t *out);
/* Waits until the queue is empty and no POST is in progress, or timeout_seconds
 * passed. Returns 0 when idle, -1 on timeout (tests and shutdown). */
int sc_webhook_wait_idle(double timeout_seconds);
/* Tests: the pause before the second try (doubled for each further try); default 0.5 s. */
void sc_webhook__set_backoff(double first_seconds);

#endif
