/* Redis connections, deadlines, scripts and the shared up/down state (see
 * redis_conn.h). hiredis' synchronous API bounds each read and write by the
 * socket timeout, which we set before every command to what is left of the
 * caller's budget, so a stalled server costs a request at most its budget. */
#include "limits/redis_conn.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "core/clock.h"
#include "core/log.h"

#define POOL_MAX 64
#define BACKOFF_MIN 0.25
#define BACKOFF_MAX 5.0
/* The background probe is not a request thread: it may wait a little longer. */
#define PROBE_BUDGET 1.0

struct sc_redis {
    sc_redis_target_t t;
    char tag[64];
    pthread_mutex_t mu;
    redisContext *pool[POOL_MAX];
    int npool;
    bool up;
    double next_probe; /* monotonic */
    double backoff;
};

/* ==== URL ==== */

static int parse_int(const char *s, size_t n, int lo, int hi, int *out)
{
    if (n == 0 || n > 9)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int sc_redis_url_parse(const char *url, sc_redis_target_t *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    t->port = 6379;
    if (strncmp(url, "unix://", 7) == 0) {
        const char *p = url + 7;
        const char *q = strchr(p, '?');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || p[0] != '/' || n >= sizeof t->unix_path) {
            snprintf(err, errlen, "REDIS_URL: unix:// needs an absolute socket path");
            return -1;
        }
        memcpy(t->unix_path, p, n);
        if (q && (strncmp(q, "?db=", 4) != 0 || parse_int(q + 4, strlen(q + 4), 0, 1000, &t->db))) {
            snprintf(err, errlen, "REDIS_URL: the only unix:// option is ?db=N");
            return -1;
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "REDIS_URL must start with redis:// or unix://");
        return -1;
    }
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        /* [user]:password@ : the user part is accepted and ignored (AUTH with
         * the password only, as Redis before ACLs). */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t n = colon ? (size_t)(at - colon - 1) : (size_t)(at - p);
        const char *pw = colon ? colon + 1 : p;
        if (n >= sizeof t->password) {
            snprintf(err, errlen, "REDIS_URL: password too long");
            return -1;
        }
        memcpy(t->password, pw, n);
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    size_t hostport = slash ? (size_t)(slash - p) : strlen(p);
    const char *colon = memchr(p, ':', hostport);
    size_t hn = colon ? (size_t)(colon - p) : hostport;
    if (hn == 0 || hn >= sizeof t->host) {
        snprintf(err, errlen, "REDIS_URL: missing or too long host");
        return -1;
    }
    memcpy(t->host, p, hn);
    if (colon && parse_int(colon + 1, hostport - hn - 1, 1, 65535, &t->port) != 0) {
        snprintf(err, errlen, "REDIS_URL: port must be 1..65535");
        return -1;
    }
    if (slash && slash[1] && parse_int(slash + 1, strlen(slash + 1), 0, 1000, &t->db) != 0) {
        snprintf(err, errlen, "REDIS_URL: database must be a number (redis://host:port/0)");
        return -1;
    }
    return 0;
}

/* ==== State ==== */

sc_redis_t *sc_redis_new(const sc_redis_target_t *t, const char *tag)
{
    sc_redis_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->t = *t;
    snprintf(r->tag, sizeof r->tag, "%s", tag);
    r->up = true;
    r->backoff = BACKOFF_MIN;
    return r;
}

void sc_redis_free(sc_redis_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->npool; i++)
        redisFree(r->pool[i]);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

bool sc_redis_up(sc_redis_t *r)
{
    pthread_mutex_lock(&r->mu);
    bool up = r->up;
    pthread_mutex_unlock(&r->mu);
    return up;
}

void sc_redis_mark_down(sc_redis_t *r, const char *why)
{
    redisContext *drop[POOL_MAX];
    int n = 0;
    pthread_mutex_lock(&r->mu);
    bool was_up = r->up;
    if (was_up) {
        r->up = false;
        r->backoff = BACKOFF_MIN;
        r->next_probe = sc_clock_mono() + BACKOFF_MIN;
        /* Pooled connections may be half-dead too: start over. */
        n = r->npool;
        memcpy(drop, r->pool, (size_t)n * sizeof drop[0]);
        r->npool = 0;
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n; i++)
        redisFree(drop[i]);
    if (was_up)
        sc_log_error("%s unavailable (%s); nothing it limits starts until it answers again "
                     "(Kontext falls back with limiter_unavailable, scenes get 503)",
                     r->tag, why ? why : "no answer");
}

/* ==== Connections ==== */

static struct timeval tv_of(double secs)
{
    if (secs < 0.001)
        secs = 0.001;
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - floor(secs)) * 1e6)};
    return tv;
}

/* A new connection, authenticated and on the right database, within budget.
 * NULL on failure (*why set). */
static redisContext *connect_new(sc_redis_t *r, double budget, const char **why)
{
    double deadline = sc_clock_mono() + budget;
    struct timeval tv = tv_of(budget);
    redisContext *c = r->t.unix_path[0] ? redisConnectUnixWithTimeout(r->t.unix_path, tv)
                                        : redisConnectWithTimeout(r->t.host, r->t.port, tv);
    if (!c) {
        *why = "out of memory";
        return NULL;
    }
    if (c->err) {
        *why = "cannot connect";
        redisFree(c);
        return NULL;
    }
    if (r->t.password[0]) {
        const char *argv[] = {"AUTH", r->t.password};
        redisReply *rep = sc_redis_cmd(r, c, deadline, 2, argv, NULL);
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            *why = "AUTH refused";
            redisFree(c);
            return NULL;
        }
    }
    if (r->t.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->t.db);
        const char *argv[] = {"SELECT", db};
        redisReply *rep = sc_redis_cmd(r, c, deadline, 2, argv, NULL);
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
        if (!ok) {
            *why = "SELECT refused";
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

redisContext *sc_redis_take(sc_redis_t *r, double budget)
{
    redisContext *c = NULL;
    pthread_mutex_lock(&r->mu);
    bool up = r->up;
    if (up && r->npool > 0)
        c = r->pool[--r->npool];
    pthread_mutex_unlock(&r->mu);
    if (!up || c)
        return c;
    const char *why = NULL;
    c = connect_new(r, budget, &why);
    if (!c)
        sc_redis_mark_down(r, why);
    return c;
}

void sc_redis_give(sc_redis_t *r, redisContext *c)
{
    if (!c)
        return;
    if (!c->err) {
        pthread_mutex_lock(&r->mu);
        if (r->up && r->npool < POOL_MAX) {
            r->pool[r->npool++] = c;
            c = NULL;
        }
        pthread_mutex_unlock(&r->mu);
    }
    if (c)
        redisFree(c);
}

/* ==== Commands ==== */

redisReply *sc_redis_cmd(sc_redis_t *r, redisContext *c, double deadline, int argc,
                         const char **argv, const size_t *lens)
{
    double left = deadline - sc_clock_mono();
    if (left <= 0 || c->err) {
        c->err = c->err ? c->err : REDIS_ERR_IO; /* never reused */
        sc_redis_mark_down(r, "deadline passed");
        return NULL;
    }
    size_t l[32];
    if (argc > 32)
        return NULL;
    for (int i = 0; i < argc; i++)
        l[i] = lens ? lens[i] : strlen(argv[i]);
    redisSetTimeout(c, tv_of(left));
    redisReply *rep = redisCommandArgv(c, argc, argv, l);
    if (!rep || c->err) {
        if (rep)
            freeReplyObject(rep);
        if (!c->err)
            c->err = REDIS_ERR_IO;
        sc_redis_mark_down(r, c->errstr[0] ? c->errstr : "no answer in time");
        return NULL;
    }
    return rep;
}

static bool is_noscript(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR && rep->str && strncmp(rep->str, "NOSCRIPT", 8) == 0;
}

/* SCRIPT LOAD; fills script->sha. 0 or -1. */
static int script_load(sc_redis_t *r, redisContext *c, double deadline, sc_redis_script_t *script)
{
    const char *argv[] = {"SCRIPT", "LOAD", script->source};
    redisReply *rep = sc_redis_cmd(r, c, deadline, 3, argv, NULL);
    if (!rep)
        return -1;
    int rc = -1;
    if (rep->type == REDIS_REPLY_STRING && rep->len == 40) {
        pthread_mutex_lock(&r->mu); /* sha is shared by every thread using the script */
        memcpy(script->sha, rep->str, 40);
        script->sha[40] = '\0';
        pthread_mutex_unlock(&r->mu);
        rc = 0;
    } else {
        sc_log_error("%s: SCRIPT LOAD refused: %s", r->tag,
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    }
    freeReplyObject(rep);
    return rc;
}

redisReply *sc_redis_eval(sc_redis_t *r, redisContext *c, double deadline,
                          sc_redis_script_t *script, int nkeys, int argc, const char **argv)
{
    const char *v[32];
    char nk[12], sha[41];
    if (argc + 3 > 32)
        return NULL;
    pthread_mutex_lock(&r->mu);
    memcpy(sha, script->sha, sizeof sha);
    pthread_mutex_unlock(&r->mu);
    if (!sha[0]) {
        if (script_load(r, c, deadline, script) != 0)
            return NULL;
        pthread_mutex_lock(&r->mu); /* another thread may be loading it too */
        memcpy(sha, script->sha, sizeof sha);
        pthread_mutex_unlock(&r->mu);
    }
    snprintf(nk, sizeof nk, "%d", nkeys);
    v[0] = "EVALSHA";
    v[1] = sha;
    v[2] = nk;
    for (int i = 0; i < argc; i++)
        v[3 + i] = argv[i];
    redisReply *rep = sc_redis_cmd(r, c, deadline, argc + 3, v, NULL);
    if (rep && is_noscript(rep)) {
        /* The server lost its script cache (restart, SCRIPT FLUSH): load again. */
        freeReplyObject(rep);
        if (script_load(r, c, deadline, script) != 0)
            return NULL;
        rep = sc_redis_cmd(r, c, deadline, argc + 3, v, NULL);
    }
    return rep;
}

/* ==== Probe ==== */

bool sc_redis_probe(sc_redis_t *r)
{
    pthread_mutex_lock(&r->mu);
    bool up = r->up;
    bool due = !up && sc_clock_mono() >= r->next_probe;
    pthread_mutex_unlock(&r->mu);
    if (up || !due)
        return up;
    const char *why = NULL;
    redisContext *c = connect_new(r, PROBE_BUDGET, &why);
    bool ok = false;
    if (c) {
        const char *argv[] = {"PING"};
        double left = PROBE_BUDGET;
        redisSetTimeout(c, tv_of(left));
        size_t l = 4;
        redisReply *rep = redisCommandArgv(c, 1, argv, &l);
        ok = rep && !c->err && rep->type == REDIS_REPLY_STATUS;
        if (rep)
            freeReplyObject(rep);
    }
    pthread_mutex_lock(&r->mu);
    if (ok) {
        r->up = true;
        r->backoff = BACKOFF_MIN;
        if (r->npool < POOL_MAX) {
            r->pool[r->npool++] = c;
            c = NULL;
        }
    } else {
        r->backoff = r->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : r->backoff * 2;
        r->next_probe = sc_clock_mono() + r->backoff;
    }
    pthread_mutex_unlock(&r->mu);
    if (c)
        redisFree(c);
    if (ok)
        sc_log_info("%s available again", r->tag);
    return ok;
}
