/* The Redis limits store (see store_redis.h for the key layout and threads). */
#include "limits/store_redis.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "limits/redis_conn.h"

#define DAY_KEY_TTL "34560000" /* 400 days: daily-generations shows up to 365 */
#define HISTORY_DAYS 365
#define FLEET_SEEN_SECONDS 30.0
#define FLEET_FORGET_SECONDS 86400.0

/* ==== Scripts ==== */

/* KEYS: slots, starts, day. ARGV: now, lease expiry, token, max_concurrent,
 * max_per_hour, daily_limit, day key ttl.
 * Returns {code, in_flight, last_hour, today}; code 0 ok, 1 concurrency,
 * 2 hourly, 3 daily. A start at t counts while now - t < 3600; a lease counts
 * while its expiry is in the future. */
static sc_redis_script_t take_script = {
    "local now = tonumber(ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 3600)\n"
    "local day = tonumber(redis.call('GET', KEYS[3]) or '0')\n"
    "local hour = redis.call('ZCARD', KEYS[2])\n"
    "local flight = redis.call('ZCARD', KEYS[1])\n"
    "if day >= tonumber(ARGV[6]) then return {3, flight, hour, day} end\n"
    "if hour >= tonumber(ARGV[5]) then return {2, flight, hour, day} end\n"
    "if flight >= tonumber(ARGV[4]) then return {1, flight, hour, day} end\n"
    "redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])\n"
    "redis.call('ZADD', KEYS[2], now, ARGV[3])\n"
    "day = redis.call('INCR', KEYS[3])\n"
    "redis.call('EXPIRE', KEYS[3], ARGV[7])\n"
    "return {0, flight + 1, hour + 1, day}\n",
    ""};

/* KEYS: idem key. ARGV: value, ttl. Returns {1} (claimed) or {0, value}. */
static sc_redis_script_t idem_script = {"local v = redis.call('GET', KEYS[1])\n"
                                        "if v then return {0, v} end\n"
                                        "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
                                        "return {1}\n",
                                        ""};

/* ==== State ==== */

typedef struct limits_redis {
    sc_limits_store_t base; /* first */
    sc_redis_t *r;
    char prefix[128];
    char k_slots[192], k_starts[192], k_fleet[192];
    char k_day[176]; /* "P limits:R:day:" (the date is appended) */
    bool heartbeat;
    char instance_id[512];
    char version[32];
    long long (*policy_version)(void);
    double budget, lease_ttl, renew_every;
    double started_at;

    /* One tick at a time (the thread's and sc_limits_redis__tick's callers):
     * two interleaved refreshes could store the older reply over the newer
     * view. Taken before flush_mu and mu. */
    pthread_mutex_t tick_mu;
    pthread_mutex_t flush_mu; /* one flusher of unsent at a time (taken before mu) */
    pthread_mutex_t mu;       /* guards everything below */
    sc_limits_token_t *held;  /* this instance's slots, renewed by the thread */
    size_t nheld, held_cap;
    /* Releases Redis did not hear (down or slow): the thread sends them when
     * it answers again, so the slots come back at once, not at lease expiry. */
    sc_limits_token_t *unsent;
    size_t nunsent, unsent_cap;
    sc_limits_counts_t view; /* fleet counts, refreshed every second */
    bool view_valid;
    long long days[HISTORY_DAYS]; /* fleet starts per day, days[HISTORY_DAYS-1] = view_day */
    long view_day;
    long days_day; /* the day days[HISTORY_DAYS-1] belongs to */
    bool days_valid;
    char *fleet; /* {"instances":[...]} */

    double refused_at; /* monotonic time of the last error reply (OOM, READONLY, ...) */

    pthread_t thread;
    bool thread_up;
    bool stop;
    pthread_cond_t cv;
    double last_renew, last_days;
} limits_redis_t;

static void day_key(const limits_redis_t *m, long day, char *out, size_t n)
{
    char date[11];
    sc_clock_utc_date((time_t)day * 86400, date);
    snprintf(out, n, "%s%s", m->k_day, date);
}

static long day_of(double now)
{
    return sc_clock_utc_day((time_t)floor(now));
}

static long long reply_int(const redisReply *r)
{
    if (!r)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* ==== Request path ==== */

static sc_limit_result_t rs_take(sc_limits_store_t *s, double now, const sc_limits_caps_t *caps,
                                 sc_limits_token_t *tok, sc_limits_counts_t *seen)
{
    limits_redis_t *m = (limits_redis_t *)s;
    double deadline = sc_clock_mono() + m->budget;
    tok->s[0] = '\0';
    sc_limits_token_t t;
    sc_limits_token_new(&t);
    redisContext *c = sc_redis_take(m->r, m->budget);
    if (!c)
        return SC_LIMIT_UNAVAILABLE;
    char a_now[32], a_exp[32], a_mc[16], a_mh[16], a_dl[16], k_day[192];
    snprintf(a_now, sizeof a_now, "%.6f", now);
    snprintf(a_exp, sizeof a_exp, "%.6f", now + m->lease_ttl);
    snprintf(a_mc, sizeof a_mc, "%d", caps->max_concurrent);
    snprintf(a_mh, sizeof a_mh, "%d", caps->max_per_hour);
    snprintf(a_dl, sizeof a_dl, "%d", caps->daily_limit);
    day_key(m, day_of(now), k_day, sizeof k_day);
    const char *argv[] = {m->k_slots, m->k_starts, k_day, a_now, a_exp,
                          t.s,        a_mc,        a_mh,  a_dl,  DAY_KEY_TTL};
    redisReply *rep = sc_redis_eval(m->r, c, deadline, &take_script, 3, 10, argv);
    sc_redis_give(m->r, c);
    if (!rep)
        return SC_LIMIT_UNAVAILABLE;
    sc_limit_result_t res = SC_LIMIT_UNAVAILABLE;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 4) {
        long long code = reply_int(rep->element[0]);
        if (seen) {
            seen->in_flight = (int)reply_int(rep->element[1]);
            seen->last_hour = (int)reply_int(rep->element[2]);
            seen->today = reply_int(rep->element[3]);
        }
        res = code == 0   ? SC_LIMIT_OK
              : code == 1 ? SC_LIMIT_CONCURRENCY
              : code == 2 ? SC_LIMIT_HOURLY
                          : SC_LIMIT_DAILY;
    } else {
        /* Redis answers but refuses (maxmemory, a read-only replica, ...):
         * the connection is fine, so no reconnect, but health shows it. */
        pthread_mutex_lock(&m->mu);
        bool first = sc_clock_mono() - m->refused_at > 5.0;
        m->refused_at = sc_clock_mono();
        pthread_mutex_unlock(&m->mu);
        if (first)
            sc_log_error("[Limits] store refused the admission script: %s",
                         rep->type == REDIS_REPLY_ERROR ? rep->str : "wrong shape");
    }
    freeReplyObject(rep);
    if (res == SC_LIMIT_OK) {
        /* Remember the slot so the thread renews it. */
        bool kept = false;
        pthread_mutex_lock(&m->mu);
        if (m->nheld == m->held_cap) {
            size_t ncap = m->held_cap ? m->held_cap * 2 : 16;
            sc_limits_token_t *n = realloc(m->held, ncap * sizeof *n);
            if (n) {
                m->held = n;
                m->held_cap = ncap;
            }
        }
        if (m->nheld < m->held_cap) {
            m->held[m->nheld++] = t;
            kept = true;
        }
        pthread_mutex_unlock(&m->mu);
        if (!kept) /* out of memory: refuse; the unrenewed lease expires by itself */
            return SC_LIMIT_CONCURRENCY;
        *tok = t;
    }
    return res;
}

static void rs_release(sc_limits_store_t *s, const sc_limits_token_t *tok)
{
    limits_redis_t *m = (limits_redis_t *)s;
    if (!tok || !tok->s[0])
        return;
    bool found = false;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nheld; i++) {
        if (strcmp(m->held[i].s, tok->s) == 0) {
            m->held[i] = m->held[--m->nheld];
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (!found)
        return;
    /* Never waits on Redis (release is called from the curl I/O thread
     * too): the ZREM is queued for the store's thread, woken at once. If
     * Redis does not hear it, it is sent again on recovery (and the lease
     * expires by itself meanwhile). */
    pthread_mutex_lock(&m->mu);
    if (m->nunsent == m->unsent_cap && m->unsent_cap < 65536) {
        size_t ncap = m->unsent_cap ? m->unsent_cap * 2 : 16;
        sc_limits_token_t *n = realloc(m->unsent, ncap * sizeof *n);
        if (n) {
            m->unsent = n;
            m->unsent_cap = ncap;
        }
    }
    if (m->nunsent < m->unsent_cap)
        m->unsent[m->nunsent++] = *tok;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* Sends the queued releases (one ZREM with every token). Flushers are
 * serialised by flush_mu, so each queued token is sent and dropped once. */
static void flush_unsent(limits_redis_t *m, redisContext *c)
{
    pthread_mutex_lock(&m->flush_mu);
    pthread_mutex_lock(&m->mu);
    size_t n = m->nunsent;
    sc_limits_token_t *copy = n ? malloc(n * sizeof *copy) : NULL;
    if (copy)
        memcpy(copy, m->unsent, n * sizeof *copy);
    pthread_mutex_unlock(&m->mu);
    if (!copy) {
        pthread_mutex_unlock(&m->flush_mu);
        return;
    }
    const char **argv = malloc((n + 2) * sizeof *argv);
    if (argv) {
        argv[0] = "ZREM";
        argv[1] = m->k_slots;
        for (size_t i = 0; i < n; i++)
            argv[2 + i] = copy[i].s;
        redisSetTimeout(c, (struct timeval){1, 0});
        redisReply *rep = redisCommandArgv(c, (int)(n + 2), argv, NULL);
        bool ok = rep && !c->err && rep->type == REDIS_REPLY_INTEGER;
        if (rep)
            freeReplyObject(rep);
        if (ok) {
            /* Drop what was sent; releases added meanwhile stay queued. */
            pthread_mutex_lock(&m->mu);
            memmove(m->unsent, m->unsent + n, (m->nunsent - n) * sizeof *m->unsent);
            m->nunsent -= n;
            pthread_mutex_unlock(&m->mu);
        } else if (c->err) {
            sc_redis_mark_down(m->r, "release replay failed");
        }
        free(argv);
    }
    free(copy);
    pthread_mutex_unlock(&m->flush_mu);
}

void sc_limits_redis__drain(sc_limits_store_t *s)
{
    limits_redis_t *m = (limits_redis_t *)s;
    redisContext *c = sc_redis_take(m->r, 1.0);
    if (!c)
        return;
    flush_unsent(m, c);
    sc_redis_give(m->r, c);
}

static int rs_count(sc_limits_store_t *s, double now, sc_limits_counts_t *out)
{
    limits_redis_t *m = (limits_redis_t *)s;
    pthread_mutex_lock(&m->mu);
    *out = m->view;
    bool ok = m->view_valid && sc_redis_up(m->r);
    if (m->view_valid && day_of(now) > m->view_day)
        out->today = 0; /* the view is from yesterday (UTC) */
    pthread_mutex_unlock(&m->mu);
    return ok ? 0 : -1;
}

static sc_idem_result_t rs_idem_claim(sc_limits_store_t *s, double now, const char *key,
                                      const char *fingerprint, const char *record_id,
                                      int ttl_seconds, sc_idem_existing_t *out)
{
    limits_redis_t *m = (limits_redis_t *)s;
    (void)now;
    if (sc_limits_idem_check(key, fingerprint, record_id) != 0 || !fingerprint || !record_id ||
        ttl_seconds <= 0)
        return SC_IDEM_INVALID;
    char k[400], val[2 * SC_IDEM_VALUE_MAX + 2], ttl[16];
    snprintf(k, sizeof k, "%sidem:%s", m->prefix, key);
    snprintf(val, sizeof val, "%s\n%s", fingerprint, record_id);
    snprintf(ttl, sizeof ttl, "%d", ttl_seconds);
    double deadline = sc_clock_mono() + m->budget;
    redisContext *c = sc_redis_take(m->r, m->budget);
    if (!c)
        return SC_IDEM_UNAVAILABLE;
    const char *argv[] = {k, val, ttl};
    redisReply *rep = sc_redis_eval(m->r, c, deadline, &idem_script, 1, 3, argv);
    sc_redis_give(m->r, c);
    if (!rep)
        return SC_IDEM_UNAVAILABLE;
    sc_idem_result_t res = SC_IDEM_UNAVAILABLE;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 1) {
        if (reply_int(rep->element[0]) == 1) {
            res = SC_IDEM_CLAIMED;
        } else if (rep->elements == 2 && rep->element[1]->type == REDIS_REPLY_STRING) {
            res = SC_IDEM_EXISTING;
            if (out) {
                const char *v = rep->element[1]->str;
                const char *nl = strchr(v, '\n');
                size_t fl = nl ? (size_t)(nl - v) : strlen(v);
                snprintf(out->fingerprint, sizeof out->fingerprint, "%.*s", (int)fl, v);
                snprintf(out->record_id, sizeof out->record_id, "%s", nl ? nl + 1 : "");
            }
        }
    }
    freeReplyObject(rep);
    return res;
}

static int rs_idem_forget(sc_limits_store_t *s, const char *key)
{
    limits_redis_t *m = (limits_redis_t *)s;
    if (sc_limits_idem_check(key, NULL, NULL) != 0)
        return -1;
    char k[400];
    snprintf(k, sizeof k, "%sidem:%s", m->prefix, key);
    double deadline = sc_clock_mono() + m->budget;
    redisContext *c = sc_redis_take(m->r, m->budget);
    if (!c)
        return -1;
    const char *argv[] = {"DEL", k};
    redisReply *rep = sc_redis_cmd(m->r, c, deadline, 2, argv, NULL);
    sc_redis_give(m->r, c);
    if (!rep)
        return -1;
    freeReplyObject(rep);
    return 0;
}

/* Down, or refusing admissions within the last 5 s. */
static bool rs_available(sc_limits_store_t *s)
{
    limits_redis_t *m = (limits_redis_t *)s;
    pthread_mutex_lock(&m->mu);
    bool refusing = m->refused_at > 0 && sc_clock_mono() - m->refused_at < 5.0;
    pthread_mutex_unlock(&m->mu);
    return !refusing && sc_redis_up(m->r);
}

static void rs_reset(sc_limits_store_t *s)
{
    limits_redis_t *m = (limits_redis_t *)s;
    double now = sc_clock_wall();
    char k_day[192];
    day_key(m, day_of(now), k_day, sizeof k_day);
    double deadline = sc_clock_mono() + m->budget;
    redisContext *c = sc_redis_take(m->r, m->budget);
    if (!c) {
        sc_log_warn("[Limits] reset: the store does not answer; the fleet counters stay");
        return;
    }
    const char *argv[] = {"DEL", m->k_starts, k_day};
    redisReply *rep = sc_redis_cmd(m->r, c, deadline, 3, argv, NULL);
    sc_redis_give(m->r, c);
    if (rep)
        freeReplyObject(rep);
    pthread_mutex_lock(&m->mu);
    m->view.last_hour = 0;
    m->view.today = 0;
    pthread_mutex_unlock(&m->mu);
}

static int rs_fleet_json(sc_limits_store_t *s, double now, sc_buf_t *out)
{
    limits_redis_t *m = (limits_redis_t *)s;
    (void)now;
    pthread_mutex_lock(&m->mu);
    int rc = sc_buf_puts(out, m->fleet ? m->fleet : "{\"instances\":[]}");
    pthread_mutex_unlock(&m->mu);
    return rc;
}

static int rs_daily_starts(sc_limits_store_t *s, double now, int days, long long *out)
{
    limits_redis_t *m = (limits_redis_t *)s;
    if (days < 1 || days > HISTORY_DAYS)
        return -1;
    long today = day_of(now);
    pthread_mutex_lock(&m->mu);
    bool ok = m->days_valid;
    for (int i = 0; ok && i < days; i++) {
        long d = today - (days - 1) + i;
        long idx = (HISTORY_DAYS - 1) - (m->days_day - d);
        out[i] = (idx >= 0 && idx < HISTORY_DAYS) ? m->days[idx] : 0;
    }
    /* Today's row is the headline count, fresher than the history view. */
    if (ok && m->view_valid && m->view_day == today)
        out[days - 1] = m->view.today;
    pthread_mutex_unlock(&m->mu);
    return ok ? 0 : -1;
}

/* ==== Background thread ==== */

/* Appends commands, then reads every reply: one round trip. Returns the
 * replies (caller frees each and the array), or NULL on failure (marks down). */
static redisReply **pipeline(limits_redis_t *m, redisContext *c, double budget, int n,
                             const int *argcs, const char ***argvs)
{
    redisReply **reps = calloc((size_t)n, sizeof *reps);
    if (!reps)
        return NULL;
    struct timeval tv = {(time_t)budget, (suseconds_t)((budget - floor(budget)) * 1e6)};
    redisSetTimeout(c, tv);
    for (int i = 0; i < n; i++)
        redisAppendCommandArgv(c, argcs[i], argvs[i], NULL);
    for (int i = 0; i < n; i++) {
        void *rep = NULL;
        if (redisGetReply(c, &rep) != REDIS_OK || !rep) {
            for (int j = 0; j < i; j++)
                freeReplyObject(reps[j]);
            free(reps);
            sc_redis_mark_down(m->r, c->errstr[0] ? c->errstr : "no answer");
            return NULL;
        }
        reps[i] = rep;
    }
    return reps;
}

static void free_replies(redisReply **reps, int n)
{
    if (!reps)
        return;
    for (int i = 0; i < n; i++)
        freeReplyObject(reps[i]);
    free(reps);
}

/* Re-asserts this instance's leases: ZADD without XX, so a lease lost while
 * Redis was away (restart without persistence, expiry during an outage)
 * comes back and its running prediction keeps counting against the cap. */
static void renew(limits_redis_t *m, redisContext *c, double now)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->nheld;
    sc_limits_token_t *copy = n ? malloc(n * sizeof *copy) : NULL;
    if (copy)
        memcpy(copy, m->held, n * sizeof *copy);
    pthread_mutex_unlock(&m->mu);
    if (!copy)
        return;
    char exp[32];
    snprintf(exp, sizeof exp, "%.6f", now + m->lease_ttl);
    const char **argv = malloc(n * 2 * sizeof *argv + 2 * sizeof *argv);
    if (argv) {
        int argc = 0;
        argv[argc++] = "ZADD";
        argv[argc++] = m->k_slots;
        int err = 0;
        /* One ZADD with every pair: one command, one round trip. */
        for (size_t i = 0; i < n; i++) {
            argv[argc++] = exp;
            argv[argc++] = copy[i].s;
        }
        redisSetTimeout(c, (struct timeval){1, 0});
        redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
        if (!rep || c->err)
            err = 1;
        if (rep)
            freeReplyObject(rep);
        if (err)
            sc_redis_mark_down(m->r, "lease renewal failed");
        free(argv);
    }
    free(copy);
}

/* The JSON of one heartbeat. */
static int heartbeat_json(limits_redis_t *m, double now, sc_buf_t *b)
{
    pthread_mutex_lock(&m->mu);
    size_t in_flight = m->nheld;
    pthread_mutex_unlock(&m->mu);
    long long pv = m->policy_version ? m->policy_version() : 0;
    char started[32], seen[32];
    sc_clock_rfc3339(m->started_at, started);
    sc_clock_rfc3339(now, seen);
    int rc = sc_buf_puts(b, "{\"id\":");
    rc |= sc_buf_json_str(b, m->instance_id);
    rc |= sc_buf_printf(b,
                        ",\"started_at\":\"%s\",\"last_seen\":\"%s\",\"last_seen_unix\":%.3f,"
                        "\"policy_version\":%lld,\"in_flight\":%zu,\"version\":",
                        started, seen, now, pv, in_flight);
    rc |= sc_buf_json_str(b, m->version);
    rc |= sc_buf_puts(b, "}");
    return rc;
}

/* Builds {"instances":[...]} from the fleet hash (the values are our own
 * heartbeat JSON; entries not seen for FLEET_SEEN_SECONDS are left out, and
 * forgotten after a day). */
static void fleet_refresh(limits_redis_t *m, redisContext *c, double now)
{
    redisSetTimeout(c, (struct timeval){1, 0});
    const char *argv[] = {"HGETALL", m->k_fleet};
    redisReply *rep = redisCommandArgv(c, 2, argv, NULL);
    if (!rep || c->err) {
        if (rep)
            freeReplyObject(rep);
        sc_redis_mark_down(m->r, "fleet view failed");
        return;
    }
    sc_buf_t b = SC_BUF_INIT;
    int rc = sc_buf_puts(&b, "{\"instances\":[");
    int shown = 0;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
        const redisReply *f = rep->element[i], *v = rep->element[i + 1];
        if (v->type != REDIS_REPLY_STRING || f->type != REDIS_REPLY_STRING)
            continue;
        cJSON *j = cJSON_Parse(v->str);
        const cJSON *ls = cJSON_GetObjectItemCaseSensitive(j, "last_seen_unix");
        double last = cJSON_IsNumber(ls) ? ls->valuedouble : 0;
        cJSON_Delete(j);
        if (now - last > FLEET_FORGET_SECONDS) {
            const char *d[] = {"HDEL", m->k_fleet, f->str};
            redisReply *dr = redisCommandArgv(c, 3, d, NULL);
            if (dr)
                freeReplyObject(dr);
            continue;
        }
        if (now - last > FLEET_SEEN_SECONDS)
            continue;
        rc |= sc_buf_puts(&b, shown++ ? "," : "");
        rc |= sc_buf_puts(&b, v->str);
    }
    rc |= sc_buf_puts(&b, "]}");
    freeReplyObject(rep);
    if (rc != 0) {
        sc_buf_free(&b);
        return;
    }
    char *s = sc_buf_steal(&b, NULL);
    pthread_mutex_lock(&m->mu);
    free(m->fleet);
    m->fleet = s;
    pthread_mutex_unlock(&m->mu);
}

/* Refreshes the fleet counts (and every 10 s the day history) and heartbeats:
 * one pipelined round trip. */
static void views_refresh(limits_redis_t *m, redisContext *c, double now)
{
    char lo_slots[40], lo_starts[40], k_day[192];
    snprintf(lo_slots, sizeof lo_slots, "(%.6f", now);
    snprintf(lo_starts, sizeof lo_starts, "(%.6f", now - 3600.0);
    long today = day_of(now);
    day_key(m, today, k_day, sizeof k_day);
    sc_buf_t hb = SC_BUF_INIT;
    if (heartbeat_json(m, now, &hb) != 0) {
        sc_buf_free(&hb);
        return;
    }
    const char *a0[] = {"ZCOUNT", m->k_slots, lo_slots, "+inf"};
    const char *a1[] = {"ZCOUNT", m->k_starts, lo_starts, "+inf"};
    const char *a2[] = {"GET", k_day};
    const char *a3[] = {"HSET", m->k_fleet, m->instance_id, hb.data};
    const int argcs[] = {4, 4, 2, 4};
    const char **argvs[] = {a0, a1, a2, a3};
    int nreps = m->heartbeat ? 4 : 3;
    redisReply **reps = pipeline(m, c, 1.0, nreps, argcs, argvs);
    sc_buf_free(&hb);
    if (!reps)
        return;
    pthread_mutex_lock(&m->mu);
    m->view.in_flight = (int)reply_int(reps[0]);
    m->view.last_hour = (int)reply_int(reps[1]);
    m->view.today = reply_int(reps[2]);
    m->view_day = today;
    m->view_valid = true;
    pthread_mutex_unlock(&m->mu);
    free_replies(reps, nreps);

    if (now - m->last_days >= 10.0 || !m->days_valid) {
        const char **argv = malloc((HISTORY_DAYS + 1) * sizeof *argv);
        char(*keys)[192] = malloc(HISTORY_DAYS * sizeof *keys);
        if (argv && keys) {
            argv[0] = "MGET";
            for (int i = 0; i < HISTORY_DAYS; i++) {
                day_key(m, today - (HISTORY_DAYS - 1) + i, keys[i], sizeof keys[i]);
                argv[i + 1] = keys[i];
            }
            redisSetTimeout(c, (struct timeval){1, 0});
            redisReply *rep = redisCommandArgv(c, HISTORY_DAYS + 1, argv, NULL);
            if (rep && !c->err && rep->type == REDIS_REPLY_ARRAY && rep->elements == HISTORY_DAYS) {
                pthread_mutex_lock(&m->mu);
                for (int i = 0; i < HISTORY_DAYS; i++)
                    m->days[i] = reply_int(rep->element[i]);
                m->days_valid = true;
                m->days_day = today;
                pthread_mutex_unlock(&m->mu);
                m->last_days = now;
            } else if (!rep || c->err) {
                sc_redis_mark_down(m->r, "history view failed");
            }
            if (rep)
                freeReplyObject(rep);
        }
        free(argv);
        free(keys);
    }
}

void sc_limits_redis__tick(sc_limits_store_t *s)
{
    limits_redis_t *m = (limits_redis_t *)s;
    pthread_mutex_lock(&m->tick_mu);
    if (!sc_redis_probe(m->r))
        goto out;
    redisContext *c = sc_redis_take(m->r, 1.0);
    if (!c)
        goto out;
    double now = sc_clock_wall();
    flush_unsent(m, c);
    if (!c->err && (now - m->last_renew >= m->renew_every || now < m->last_renew)) {
        renew(m, c, now);
        m->last_renew = now;
    }
    if (!c->err)
        views_refresh(m, c, now);
    if (!c->err && m->heartbeat)
        fleet_refresh(m, c, now);
    sc_redis_give(m->r, c);
out:
    pthread_mutex_unlock(&m->tick_mu);
}

static void *bg_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-redis-tick"); /* top -H, perf */
    limits_redis_t *m = arg;
    double next_tick = 0; /* monotonic */
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        bool pending = m->nunsent > 0;
        pthread_mutex_unlock(&m->mu);
        if (sc_clock_mono() >= next_tick) {
            sc_limits_redis__tick(&m->base);
            /* Every second while up; every 250 ms while down, so the probe's
             * own backoff decides how soon a reconnect is tried. */
            double period =
                sc_redis_up(m->r) ? (m->renew_every < 1.0 ? m->renew_every : 1.0) : 0.25;
            next_tick = sc_clock_mono() + period;
        } else if (pending && sc_redis_up(m->r)) {
            sc_limits_redis__drain(&m->base); /* a release was queued: send it now */
        }
        pthread_mutex_lock(&m->mu);
        if (m->stop)
            break;
        if (m->nunsent > 0 && sc_redis_up(m->r) && !pending)
            continue; /* queued while we worked: send without waiting */
        double wait = next_tick - sc_clock_mono();
        if (wait <= 0)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + ts.tv_nsec / 1e9 + wait;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - floor(t)) * 1e9);
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* ==== Lifecycle ==== */

static void rs_destroy(sc_limits_store_t *s)
{
    limits_redis_t *m = (limits_redis_t *)s;
    if (!m)
        return;
    if (m->thread_up) {
        pthread_mutex_lock(&m->mu);
        m->stop = true;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->thread, NULL);
    }
    if (m->r)
        sc_limits_redis__drain(&m->base); /* queued releases (best effort) */
    /* Leaving the fleet: drop our heartbeat at once (best effort). */
    redisContext *c = m->r && m->heartbeat ? sc_redis_take(m->r, 0.2) : NULL;
    if (c) {
        const char *argv[] = {"HDEL", m->k_fleet, m->instance_id};
        redisReply *rep = sc_redis_cmd(m->r, c, sc_clock_mono() + 0.2, 3, argv, NULL);
        if (rep)
            freeReplyObject(rep);
        sc_redis_give(m->r, c);
    }
    sc_redis_free(m->r);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->flush_mu);
    pthread_mutex_destroy(&m->tick_mu);
    free(m->held);
    free(m->unsent);
    free(m->fleet);
    free(m);
}

sc_limits_store_t *sc_limits_redis_new(const sc_limits_redis_opts_t *o, char *err, size_t errlen)
{
    sc_redis_target_t t;
    if (sc_redis_url_parse(o->url, &t, err, errlen) != 0)
        return NULL;
    if (strlen(o->prefix) > 100 || (o->resource && strlen(o->resource) > 32)) {
        snprintf(err, errlen, "REDIS_KEY_PREFIX is longer than 100 bytes");
        return NULL;
    }
    limits_redis_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&m->mu, NULL) != 0 || pthread_mutex_init(&m->flush_mu, NULL) != 0 ||
        pthread_mutex_init(&m->tick_mu, NULL) != 0) {
        free(m);
        snprintf(err, errlen, "cannot create a mutex");
        return NULL;
    }
    pthread_cond_init(&m->cv, NULL);
    /* Kontext's store keeps the plain tag ops grep for ("[Limits] store
     * unavailable" once per outage); another resource's names itself. */
    char tag[64] = "[Limits] store";
    if (o->resource && strcmp(o->resource, "kontext") != 0)
        snprintf(tag, sizeof tag, "[Limits] %s store", o->resource);
    m->r = sc_redis_new(&t, tag);
    if (!m->r) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(m->prefix, sizeof m->prefix, "%s", o->prefix);
    const char *res = o->resource && o->resource[0] ? o->resource : "kontext";
    snprintf(m->k_slots, sizeof m->k_slots, "%slimits:%s:slots", o->prefix, res);
    snprintf(m->k_starts, sizeof m->k_starts, "%slimits:%s:starts", o->prefix, res);
    snprintf(m->k_day, sizeof m->k_day, "%slimits:%s:day:", o->prefix, res);
    m->heartbeat = o->heartbeat;
    snprintf(m->k_fleet, sizeof m->k_fleet, "%sfleet:instances", o->prefix);
    snprintf(m->instance_id, sizeof m->instance_id, "%s", o->instance_id);
    snprintf(m->version, sizeof m->version, "%s", o->version ? o->version : "");
    m->policy_version = o->policy_version;
    m->budget = o->request_budget > 0 ? o->request_budget : SC_REDIS_REQUEST_BUDGET;
    m->lease_ttl = o->lease_ttl > 0 ? o->lease_ttl : 20.0;
    m->renew_every = o->renew_every > 0 ? o->renew_every : 5.0;
    m->started_at = sc_clock_wall();
    m->base.take = rs_take;
    m->base.release = rs_release;
    m->base.count = rs_count;
    m->base.idem_claim = rs_idem_claim;
    m->base.idem_forget = rs_idem_forget;
    m->base.available = rs_available;
    m->base.export_state = NULL; /* Redis persists itself (AOF/RDB, see docs/fleet.md) */
    m->base.import_state = NULL;
    m->base.reset = rs_reset;
    m->base.fleet_json = o->heartbeat ? rs_fleet_json : NULL;
    m->base.daily_starts = rs_daily_starts;
    m->base.destroy = rs_destroy;

    /* First contact now, so the views are filled before serving (or the
     * store starts unavailable and logs it once). */
    redisContext *c = sc_redis_take(m->r, 1.0);
    sc_redis_give(m->r, c);
    sc_limits_redis__tick(&m->base);
    if (pthread_create(&m->thread, NULL, bg_main, m) != 0) {
        snprintf(err, errlen, "cannot start the Redis store thread");
        goto fail;
    }
    m->thread_up = true;
    return &m->base;
fail:
    rs_destroy(&m->base);
    return NULL;
}
