/* The policy in Redis (POLICY_SOURCE=redis): its key layout and the few
 * operations on it, shared by the instances (policysrc/source.h) and the
 * `scenecomp policy` commands (policysrc/cli.h).
 *
 * Keys, all under REDIS_KEY_PREFIX (P):
 *   P policy:current      the version in force (a number; absent = no policy yet)
 *   P policy:versions     list of every version number, oldest first
 *   P policy:v:<N>        hash: source, checksum (sha256 hex of source),
 *                         time (unix seconds of the push, Redis's clock),
 *                         rollback_of (the version it copies, or "")
 *   P policy:changed      pub/sub channel; the message is the new version
 * A push is one server-side script (INCR current, HSET, RPUSH, PUBLISH), so a
 * version is never visible half-written and two pushes never share a number.
 * Versions are never changed once written.
 *
 * One sc_polc_t is one connection, used by one thread at a time. Every call
 * waits at most its budget; after a failure the connection is broken
 * (sc_polc_broken) and must be closed. */
#ifndef SCENECOMP_POLICYSRC_CLIENT_H
#define SCENECOMP_POLICYSRC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "limits/redis_conn.h"

#define SC_POLC_CHECKSUM_LEN 64 /* hex sha256 */

typedef struct sc_polc sc_polc_t;

typedef struct sc_polc_version {
    long long version;
    double time; /* unix seconds of the push */
    char checksum[SC_POLC_CHECKSUM_LEN + 1];
    long long rollback_of; /* 0 = an ordinary push */
    char *source;          /* malloc'd, NUL-terminated; NULL unless asked for */
    size_t len;
} sc_polc_version_t;

/* Connects to t (AUTH, SELECT) within budget seconds. prefix is
 * REDIS_KEY_PREFIX. NULL with err on failure. */
sc_polc_t *sc_polc_open(const sc_redis_target_t *t, const char *prefix, double budget, char *err,
                        size_t errlen);
void sc_polc_close(sc_polc_t *p);
bool sc_polc_broken(const sc_polc_t *p);

/* The version in force: *out = N, or 0 when Redis holds no policy yet.
 * Returns 0, or -1 with err (connection broken). */
int sc_polc_current(sc_polc_t *p, double budget, long long *out, char *err, size_t errlen);

/* Version v's metadata, and its source when with_source. Returns 0, 1 when
 * Redis has no such version, or -1 with err. Free with sc_polc_version_free. */
int sc_polc_get(sc_polc_t *p, long long v, bool with_source, double budget, sc_polc_version_t *out,
                char *err, size_t errlen);
void sc_polc_version_free(sc_polc_version_t *v);

/* Stores src as the next version and notifies the fleet (one script).
 * rollback_of: the version it copies, 0 for none. *version = the new number.
 * Returns 0, or -1 with err. Validation is the caller's. */
int sc_polc_push(sc_polc_t *p, const char *src, size_t len, long long rollback_of, double budget,
                 long long *version, char *err, size_t errlen);

/* Every version, oldest first, without sources: *out (malloc'd), *n.
 * Returns 0, or -1 with err. */
int sc_polc_history(sc_polc_t *p, double budget, sc_polc_version_t **out, size_t *n, char *err,
                    size_t errlen);

/* Turns p into a subscriber of the policy channel (confirmed within budget).
 * Afterwards only sc_polc_fd and sc_polc_messages may be used on it.
 * Returns 0, or -1 with err. */
int sc_polc_subscribe(sc_polc_t *p, double budget, char *err, size_t errlen);
int sc_polc_fd(const sc_polc_t *p);
/* After poll() said the fd is readable: reads what arrived. Returns the number
 * of notifications read (0 or more), or -1 when the connection is lost. */
int sc_polc_messages(sc_polc_t *p);

/* Hex sha256 of src. */
void sc_polc_checksum(const char *src, size_t len, char out[SC_POLC_CHECKSUM_LEN + 1]);

#endif
