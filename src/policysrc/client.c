/* The policy in Redis: key layout and operations (see client.h). */
#include "policysrc/client.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <openssl/sha.h>

#include "core/clock.h"

struct sc_polc {
    redisContext *c;
    bool subscribed;
    char prefix[160];
};

/* KEYS[1] current, KEYS[2] versions; ARGV: version key prefix, source,
 * checksum, rollback_of ("" = none), channel. Redis's clock stamps the push,
 * so every CLI host writes the same kind of time. */
static const char k_push_script[] =
    "local n = redis.call('INCR', KEYS[1])\n"
    "local t = redis.call('TIME')\n"
    "redis.call('HSET', ARGV[1] .. n, 'source', ARGV[2], 'checksum', ARGV[3],\n"
    "  'time', t[1] .. '.' .. string.format('%06d', tonumber(t[2])), 'rollback_of', ARGV[4])\n"
    "redis.call('RPUSH', KEYS[2], n)\n"
    "redis.call('PUBLISH', ARGV[5], n)\n"
    "return n\n";

static struct timeval tv_of(double secs)
{
    if (!(secs > 0.001))
        secs = 0.001;
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - floor(secs)) * 1e6)};
    return tv;
}

static void key(const sc_polc_t *p, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%spolicy:%s", p->prefix, name);
}

/* One command within budget. NULL with err on I/O failure or timeout (the
 * connection is then broken); an error reply is turned into NULL + err too. */
static redisReply *cmd(sc_polc_t *p, double budget, int argc, const char **argv, const size_t *lens,
                       char *err, size_t errlen)
{
    size_t l[12];
    if (p->c->err || argc > 12) {
        snprintf(err, errlen, "connection to Redis lost");
        return NULL;
    }
    for (int i = 0; i < argc; i++)
        l[i] = lens && lens[i] != (size_t)-1 ? lens[i] : strlen(argv[i]);
    redisSetTimeout(p->c, tv_of(budget));
    redisReply *r = redisCommandArgv(p->c, argc, argv, l);
    if (!r || p->c->err) {
        snprintf(err, errlen, "Redis did not answer: %s",
                 p->c->errstr[0] ? p->c->errstr : "timeout");
        if (r)
            freeReplyObject(r);
        if (!p->c->err)
            p->c->err = REDIS_ERR_IO; /* never reused */
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "Redis refused %s: %.*s", argv[0], (int)r->len, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

sc_polc_t *sc_polc_open(const sc_redis_target_t *t, const char *prefix, double budget, char *err,
                        size_t errlen)
{
    sc_polc_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(p->prefix, sizeof p->prefix, "%s", prefix);
    struct timeval tv = tv_of(budget);
    p->c = t->unix_path[0] ? redisConnectUnixWithTimeout(t->unix_path, tv)
                           : redisConnectWithTimeout(t->host, t->port, tv);
    if (!p->c || p->c->err) {
        if (t->unix_path[0])
            snprintf(err, errlen, "cannot connect to Redis at unix:%s: %s", t->unix_path,
                     p->c ? p->c->errstr : "out of memory");
        else
            snprintf(err, errlen, "cannot connect to Redis at %s:%d: %s", t->host, t->port,
                     p->c ? p->c->errstr : "out of memory");
        goto fail;
    }
    char msg[256];
    if (t->password[0]) {
        const char *argv[] = {"AUTH", t->password};
        redisReply *r = cmd(p, budget, 2, argv, NULL, msg, sizeof msg);
        if (!r) {
            snprintf(err, errlen, "Redis AUTH: %s", msg);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (t->db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", t->db);
        const char *argv[] = {"SELECT", db};
        redisReply *r = cmd(p, budget, 2, argv, NULL, msg, sizeof msg);
        if (!r) {
            snprintf(err, errlen, "Redis SELECT %s: %s", db, msg);
            goto fail;
        }
        freeReplyObject(r);
    }
    return p;
fail:
    sc_polc_close(p);
    return NULL;
}

void sc_polc_close(sc_polc_t *p)
{
    if (!p)
        return;
    if (p->c)
        redisFree(p->c);
    free(p);
}

bool sc_polc_broken(const sc_polc_t *p)
{
    return !p || !p->c || p->c->err != 0;
}

/* A positive version number from a reply string; 0 when it is not one. */
static long long parse_version(const char *s, size_t n)
{
    char buf[32];
    if (!s || n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    return errno == 0 && *end == '\0' && v > 0 ? v : 0;
}

int sc_polc_current(sc_polc_t *p, double budget, long long *out, char *err, size_t errlen)
{
    char k[256];
    key(p, "current", k, sizeof k);
    const char *argv[] = {"GET", k};
    redisReply *r = cmd(p, budget, 2, argv, NULL, err, errlen);
    if (!r)
        return -1;
    int rc = 0;
    *out = 0;
    if (r->type == REDIS_REPLY_STRING) {
        *out = parse_version(r->str, r->len);
        if (*out == 0) {
            snprintf(err, errlen, "%s holds '%.*s', not a version number", k, (int)r->len, r->str);
            rc = -1;
        }
    } else if (r->type != REDIS_REPLY_NIL) {
        snprintf(err, errlen, "%s is not a string", k);
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

void sc_polc_version_free(sc_polc_version_t *v)
{
    if (!v)
        return;
    free(v->source);
    v->source = NULL;
    v->len = 0;
}

/* Fills v from an HMGET of checksum, time, rollback_of[, source]. */
static int version_from(const redisReply *r, long long n, bool with_source, sc_polc_version_t *v,
                        char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    v->version = n;
    const redisReply *e = r->element[0];
    if (e->type != REDIS_REPLY_STRING) /* no checksum: no such version */
        return 1;
    snprintf(v->checksum, sizeof v->checksum, "%.*s", (int)e->len, e->str);
    e = r->element[1];
    if (e->type == REDIS_REPLY_STRING)
        v->time = strtod(e->str, NULL);
    e = r->element[2];
    if (e->type == REDIS_REPLY_STRING)
        v->rollback_of = parse_version(e->str, e->len);
    if (!with_source)
        return 0;
    e = r->element[3];
    if (e->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "version %lld has no source", n);
        return -1;
    }
    v->source = malloc(e->len + 1);
    if (!v->source) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(v->source, e->str, e->len);
    v->source[e->len] = '\0';
    v->len = e->len;
    return 0;
}

int sc_polc_get(sc_polc_t *p, long long v, bool with_source, double budget, sc_polc_version_t *out,
                char *err, size_t errlen)
{
    char k[256], name[48];
    snprintf(name, sizeof name, "v:%lld", v);
    key(p, name, k, sizeof k);
    const char *argv[] = {"HMGET", k, "checksum", "time", "rollback_of", "source"};
    memset(out, 0, sizeof *out);
    redisReply *r = cmd(p, budget, with_source ? 6 : 5, argv, NULL, err, errlen);
    if (!r)
        return -1;
    int rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)(with_source ? 4 : 3)) {
        snprintf(err, errlen, "unexpected answer to HMGET %s", k);
        rc = -1;
    } else {
        rc = version_from(r, v, with_source, out, err, errlen);
    }
    freeReplyObject(r);
    if (rc != 0)
        sc_polc_version_free(out);
    return rc;
}

int sc_polc_push(sc_polc_t *p, const char *src, size_t len, long long rollback_of, double budget,
                 long long *version, char *err, size_t errlen)
{
    char kcur[256], kver[256], vprefix[256], chan[256], sum[SC_POLC_CHECKSUM_LEN + 1], rb[32] = "";
    key(p, "current", kcur, sizeof kcur);
    key(p, "versions", kver, sizeof kver);
    key(p, "v:", vprefix, sizeof vprefix);
    key(p, "changed", chan, sizeof chan);
    sc_polc_checksum(src, len, sum);
    if (rollback_of > 0)
        snprintf(rb, sizeof rb, "%lld", rollback_of);
    const char *argv[] = {"EVAL", k_push_script, "2", kcur, kver, vprefix, src, sum, rb, chan};
    size_t lens[] = {(size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1,
                     (size_t)-1, len,        (size_t)-1, (size_t)-1, (size_t)-1};
    redisReply *r = cmd(p, budget, 10, argv, lens, err, errlen);
    if (!r)
        return -1;
    int rc = 0;
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        *version = r->integer;
    } else {
        snprintf(err, errlen, "unexpected answer to the push script");
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

int sc_polc_history(sc_polc_t *p, double budget, sc_polc_version_t **out, size_t *n, char *err,
                    size_t errlen)
{
    char k[256];
    key(p, "versions", k, sizeof k);
    const char *argv[] = {"LRANGE", k, "0", "-1"};
    *out = NULL;
    *n = 0;
    redisReply *r = cmd(p, budget, 4, argv, NULL, err, errlen);
    if (!r)
        return -1;
    int rc = -1;
    sc_polc_version_t *vs = NULL;
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "%s is not a list", k);
        goto cleanup;
    }
    vs = calloc(r->elements ? r->elements : 1, sizeof *vs);
    if (!vs) {
        snprintf(err, errlen, "out of memory");
        goto cleanup;
    }
    size_t m = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        long long v = e->type == REDIS_REPLY_STRING ? parse_version(e->str, e->len) : 0;
        if (v == 0)
            continue;
        int g = sc_polc_get(p, v, false, budget, &vs[m], err, errlen);
        if (g < 0)
            goto cleanup;
        if (g == 0)
            m++;
    }
    *out = vs;
    *n = m;
    vs = NULL;
    rc = 0;
cleanup:
    free(vs);
    freeReplyObject(r);
    return rc;
}

int sc_polc_subscribe(sc_polc_t *p, double budget, char *err, size_t errlen)
{
    char chan[256];
    key(p, "changed", chan, sizeof chan);
    const char *argv[] = {"SUBSCRIBE", chan};
    redisReply *r = cmd(p, budget, 2, argv, NULL, err, errlen);
    if (!r)
        return -1;
    bool ok = r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
              r->element[0]->type == REDIS_REPLY_STRING &&
              strcmp(r->element[0]->str, "subscribe") == 0;
    freeReplyObject(r);
    if (!ok) {
        snprintf(err, errlen, "unexpected answer to SUBSCRIBE %s", chan);
        p->c->err = REDIS_ERR_OTHER;
        return -1;
    }
    p->subscribed = true;
    return 0;
}

int sc_polc_fd(const sc_polc_t *p)
{
    return p && p->c ? p->c->fd : -1;
}

int sc_polc_messages(sc_polc_t *p)
{
    if (sc_polc_broken(p))
        return -1;
    /* A readable socket with nothing to read is a closed one (EOF: CLIENT
     * KILL, server gone); redisBufferRead sets err then. */
    if (redisBufferRead(p->c) != REDIS_OK)
        return -1;
    int n = 0;
    for (;;) {
        void *rep = NULL;
        if (redisGetReplyFromReader(p->c, &rep) != REDIS_OK)
            return -1;
        if (!rep)
            break;
        redisReply *r = rep;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "message") == 0)
            n++;
        freeReplyObject(r);
    }
    return n;
}

void sc_polc_checksum(const char *src, size_t len, char out[SC_POLC_CHECKSUM_LEN + 1])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)src, len, md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}
