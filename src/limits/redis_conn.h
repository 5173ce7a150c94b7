/* A small client for one Redis server on top of hiredis (synchronous API): URL
 * parsing, a pool of connections, commands bounded by a deadline, server-side
 * scripts run by EVALSHA (loaded with SCRIPT LOAD, reloaded on NOSCRIPT), and
 * the availability state every user of that Redis shares: one failure marks
 * the server down (logged once as "<tag> unavailable"), after which no caller
 * touches the network until sc_redis_probe, called by a background thread with
 * backoff, reconnects (logged "<tag> available again").
 *
 * Used by the Redis limits store; written so that other Redis users (the
 * policy source) can share it. Does not know any key layout. Thread-safe: any
 * thread may acquire a connection; one connection is used by one thread at a
 * time. */
#ifndef SCENECOMP_LIMITS_REDIS_CONN_H
#define SCENECOMP_LIMITS_REDIS_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

/* The default bound for a request thread waiting on Redis, in seconds. */
#define SC_REDIS_REQUEST_BUDGET 0.05

typedef struct sc_redis_target {
    char host[256];
    int port;
    char unix_path[512]; /* non-empty: connect to this socket instead */
    char password[256];  /* "" = no AUTH */
    int db;
} sc_redis_target_t;

/* Parses redis://[[user]:password@]host[:port][/db] or unix:///path[?db=N].
 * Returns 0, or -1 with a message in err. */
int sc_redis_url_parse(const char *url, sc_redis_target_t *t, char *err, size_t errlen);

typedef struct sc_redis sc_redis_t;

/* A server-side script; sha is filled on first use. Define one static
 * instance per script: {"source", ""}. */
typedef struct sc_redis_script {
    const char *source;
    char sha[41];
} sc_redis_script_t;

/* tag names the server in the two log lines ("[Limits] store"). Starts "up":
 * the first failure logs. Returns NULL on out of memory. */
sc_redis_t *sc_redis_new(const sc_redis_target_t *t, const char *tag);
/* Frees every pooled connection. No connection may be borrowed. */
void sc_redis_free(sc_redis_t *r);

/* Borrows a connection, connecting within budget seconds if the pool is
 * empty. NULL when the server is marked down or cannot be reached in time
 * (then marked down). Give it back with sc_redis_give. */
redisContext *sc_redis_take(sc_redis_t *r, double budget);
/* Returns a borrowed connection to the pool, or frees it when it broke
 * (its err is set). */
void sc_redis_give(sc_redis_t *r, redisContext *c);

/* Runs one command (argv strings, binary-safe lengths optional: NULL = strlen)
 * with the socket timeout set to what is left until the monotonic deadline.
 * Returns the reply (caller frees with freeReplyObject), or NULL on I/O
 * failure or timeout (the connection is then broken and the server marked
 * down). An error reply is returned as such (not a failure of the server). */
redisReply *sc_redis_cmd(sc_redis_t *r, redisContext *c, double deadline, int argc,
                         const char **argv, const size_t *lens);
/* EVALSHA of script with nkeys keys then args in argv; on NOSCRIPT loads it
 * and retries once, within the same deadline. Same contract as sc_redis_cmd. */
redisReply *sc_redis_eval(sc_redis_t *r, redisContext *c, double deadline,
                          sc_redis_script_t *script, int nkeys, int argc, const char **argv);

bool sc_redis_up(sc_redis_t *r);
/* Marks the server down (logs "<tag> unavailable" on the transition). */
void sc_redis_mark_down(sc_redis_t *r, const char *why);
/* Background thread: when the server is down and the backoff (0.25 s doubling
 * to 5 s) has passed, tries to connect and PING; on success marks it up (logs
 * "<tag> available again"). Returns true when the server is up. */
bool sc_redis_probe(sc_redis_t *r);

#endif
