/* The Redis limits store: every instance sharing one Redis (and key prefix)
 * shares the caps, today's count and the idempotency keys.
 *
 * Keys (P = REDIS_KEY_PREFIX, R = the resource, e.g. "kontext" or "scene"):
 *   P limits:R:slots      ZSET slot token -> lease expiry (wall seconds)
 *   P limits:R:starts     ZSET slot token -> start time (the sliding hour)
 *   P limits:R:day:<date> prediction starts that UTC day (kept 400 days)
 *   P idem:<key>          "<fingerprint>\n<record id>", expires with its TTL
 *   P fleet:instances     HASH instance id -> heartbeat JSON
 *
 * One admission is one EVALSHA (daily, hourly, concurrency checked and the
 * start recorded atomically). A slot is a lease: a background thread renews
 * the leases of this instance's running predictions every 5 s for 20 s, so the
 * slots of an instance that dies are free again within 20-25 s. The same
 * thread reconnects with backoff, replays the releases Redis missed, heartbeats into the fleet hash
 * and keeps the views that count/fleet_json/daily_starts answer from (refreshed every second), so
 * admin endpoints never wait on Redis. take and idem_* wait at most the request budget (~50 ms);
 * release never waits: its ZREM is queued to the thread, which sends it at once (any thread,
 * including the curl I/O thread, may release). */
#ifndef SCENECOMP_LIMITS_STORE_REDIS_H
#define SCENECOMP_LIMITS_STORE_REDIS_H

#include "limits/store.h"

typedef struct sc_limits_redis_opts {
    const char *url;         /* REDIS_URL */
    const char *prefix;      /* REDIS_KEY_PREFIX */
    const char *instance_id; /* INSTANCE_ID (already defaulted) */
    const char *version;     /* the service version, for the fleet view */
    /* The paid resource these limits count ("kontext" when NULL); one store
     * per resource, all sharing the prefix. */
    const char *resource;
    /* Heartbeat into the fleet view and keep it (one store per process does:
     * the Kontext one). */
    bool heartbeat;
    /* The policy version this instance serves, for the fleet view; may be NULL. */
    long long (*policy_version)(void);
    double request_budget; /* seconds; 0 = SC_REDIS_REQUEST_BUDGET */
    double lease_ttl;      /* seconds; 0 = 20 */
    double renew_every;    /* seconds; 0 = 5 */
} sc_limits_redis_opts_t;

/* Creates the store and starts its background thread. Redis need not be up:
 * the store then starts unavailable and connects when it can. Returns NULL
 * with a message in err on a malformed URL or out of memory. */
sc_limits_store_t *sc_limits_redis_new(const sc_limits_redis_opts_t *o, char *err, size_t errlen);

/* Test hook: runs one round of the background work now (renew, heartbeat,
 * refresh the views, probe). */
void sc_limits_redis__tick(sc_limits_store_t *s);
/* Sends the queued releases now (release itself never waits on Redis: its
 * ZREM goes through the store's thread within a millisecond or so). Used by
 * the thread, destroy and tests that need a freed slot at once. */
void sc_limits_redis__drain(sc_limits_store_t *s);

#endif
