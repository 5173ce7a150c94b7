/* Webhook deliveries: a persisted queue and one sender thread.
 *
 * sc_webhooks_enqueue stores {id, url, body} in LOGS_DIR/webhooks_queue.json
 * (written atomically before it returns) and wakes the sender. The sender
 * POSTs each due item with fresh webhook-timestamp and webhook-signature
 * headers and the same webhook-id on every try (receivers deduplicate by it).
 * A 2xx answer ends the item; any other answer, or none within the timeout,
 * schedules the next try after schedule[k] seconds (default 5, 15, 30, 60,
 * 120: six tries over 230 s); after the last try the item is dropped with a
 * `[Webhook]` error line. A connection to a forbidden address (webhook.h) is
 * refused by the sender itself and ends the item at once. Items survive a
 * restart: a new sender loads the queue file and continues where the old one
 * stopped (an item whose try was cut by a crash is tried again, so a receiver
 * may see one delivery twice, never none). Each try is logged with
 * `[Webhook]` and the URL's host only (a URL can carry a token).
 *
 * Threads: enqueue/stats/wait_idle from any thread (they take the queue mutex
 * and, for enqueue, write the queue file; never the network). The network
 * runs on the sender thread with no lock held. start/stop from one owner
 * thread. */
#ifndef SCENECOMP_WEBHOOKS_DELIVERY_H
#define SCENECOMP_WEBHOOKS_DELIVERY_H

#include <stddef.h>

#define SC_WEBHOOKS_QUEUE_FILE "webhooks_queue.json"
#define SC_WEBHOOKS_QUEUE_MAX 1000
#define SC_WEBHOOKS_BODY_MAX (64 * 1024) /* a record is smaller (SC_RECORD_MAX_BYTES) */
#define SC_WEBHOOKS_SCHEDULE_MAX 16

typedef struct sc_webhooks sc_webhooks_t;

typedef struct sc_webhooks_opts {
    const char *logs_dir;      /* holds the queue file */
    const char *secret;        /* WEBHOOK_SECRET (required, non-empty) */
    const char *allowed_hosts; /* WEBHOOK_ALLOWED_HOSTS, may be NULL */
    /* Pauses before tries 2, 3, ...: nschedule + 1 tries in all. NULL/0 = the
     * default above. Tests pass short ones. */
    const double *schedule;
    size_t nschedule;
    double timeout_seconds; /* one try, connect to last byte; 0 = 10 */
} sc_webhooks_opts_t;

typedef struct sc_webhooks_stats {
    long long queued;    /* items in the queue now */
    long long attempts;  /* tries made by this sender */
    long long delivered; /* items answered 2xx */
    long long failed;    /* items given up (tries exhausted or address refused) */
} sc_webhooks_stats_t;

/* Loads the queue file (a corrupt one is moved aside as .corrupt with a
 * warning) and starts the sender. Registers the secret for log redaction.
 * Returns NULL with err (no secret, unusable LOGS_DIR, no thread). */
sc_webhooks_t *sc_webhooks_start(const sc_webhooks_opts_t *o, char *err, size_t errlen);

/* Queues body (copied; a JSON document) for url under webhook-id id. The URL
 * is checked again (sc_webhooks_parse_url; the address is checked at connect
 * time). Returns 0 once the item is in the queue file, or -1 with err (bad
 * URL, body too large, queue full, file not writable). */
int sc_webhooks_enqueue(sc_webhooks_t *w, const char *id, const char *url, const char *body,
                        size_t len, char *err, size_t errlen);

/* Stops the sender: a try in progress is cut short; queued items stay in the
 * queue file for the next start. Frees w. */
void sc_webhooks_stop(sc_webhooks_t *w);

/* The default pauses between tries (*n of them; n + 1 tries in all). */
const double *sc_webhooks_default_schedule(size_t *n);

void sc_webhooks_get_stats(sc_webhooks_t *w, sc_webhooks_stats_t *out);

/* Waits until the queue is empty and no try is in progress, or timeout_seconds
 * passed. Returns 0 when idle, -1 on timeout (tests, shutdown). */
int sc_webhooks_wait_idle(sc_webhooks_t *w, double timeout_seconds);

#endif
