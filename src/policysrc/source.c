/* POLICY_SOURCE=redis on an instance (see source.h).
 *
 * Threads: the follower thread owns the subscriber connection. The command
 * connection is shared by the follower and an admin reload (an HTTP thread)
 * under g.mu, which is never held while a policy loads (Lua, up to 1 s). */
#include "policysrc/source.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "lua/policy.h"
#include "policysrc/client.h"

#define POLL_SECONDS 1.0 /* the safety net: policy:current read this often */
#define REDIS_BUDGET 1.0 /* per command; no request thread waits on it */
#define BACKOFF_MIN 0.25 /* reconnect backoff, doubling */
#define BACKOFF_MAX 5.0

static struct {
    bool running;
    sc_redis_target_t target;
    char prefix[160];
    char where[600]; /* host:port/db or unix:path, for messages: never the password */
    pthread_t thread;
    int pipe[2]; /* wakes the thread: 'q' stop, 'p' poke */

    pthread_mutex_t mu; /* the fields below */
    sc_polc_t *cmd;
    double cmd_retry_at; /* mono; no reconnect before */
    double cmd_backoff;
    bool down;         /* "unavailable" logged, "available again" owed */
    long long applied; /* the Redis version in force, 0 = none yet */
    long long refused; /* the newest version refused, not tried again */
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .pipe = {-1, -1}};

/* ==== The command connection (caller holds g.mu) ==== */

static void cmd_lost(const char *why)
{
    sc_polc_close(g.cmd);
    g.cmd = NULL;
    g.cmd_backoff = g.cmd_backoff > 0 ? g.cmd_backoff * 2 : BACKOFF_MIN;
    if (g.cmd_backoff > BACKOFF_MAX)
        g.cmd_backoff = BACKOFF_MAX;
    g.cmd_retry_at = sc_clock_mono() + g.cmd_backoff;
    if (!g.down)
        sc_log_error("[Policy] redis unavailable (%s); keeping version %lld, retrying with "
                     "backoff",
                     why, sc_policy_version());
    g.down = true;
}

/* A usable connection, or NULL (err set) while Redis cannot be reached. now
 * skips the backoff (admin reload, SIGHUP). */
static sc_polc_t *cmd_conn(bool now, char *err, size_t errlen)
{
    if (g.cmd && !sc_polc_broken(g.cmd))
        return g.cmd;
    if (g.cmd)
        cmd_lost("connection lost");
    if (!now && sc_clock_mono() < g.cmd_retry_at) {
        snprintf(err, errlen, "Redis at %s unreachable; retrying", g.where);
        return NULL;
    }
    g.cmd = sc_polc_open(&g.target, g.prefix, REDIS_BUDGET, err, errlen);
    if (!g.cmd) {
        cmd_lost(err);
        return NULL;
    }
    g.cmd_backoff = 0;
    if (g.down)
        sc_log_info("[Policy] redis available again");
    g.down = false;
    return g.cmd;
}

/* ==== Fetching ==== */

/* Loads the version Redis says is current, unless it is already in force or
 * was refused (forced: retry a refused one). Returns 0 (in force, or nothing
 * in Redis yet), or -1 with err (Redis unreachable, or the version refused). */
static int fetch(bool forced, const char *trigger, char *err, size_t errlen)
{
    long long n = 0;
    sc_polc_version_t v;
    memset(&v, 0, sizeof v);
    pthread_mutex_lock(&g.mu);
    sc_polc_t *p = cmd_conn(forced, err, errlen);
    if (!p) {
        pthread_mutex_unlock(&g.mu);
        return -1;
    }
    if (sc_polc_current(p, REDIS_BUDGET, &n, err, errlen) != 0) {
        if (sc_polc_broken(p))
            cmd_lost(err);
        pthread_mutex_unlock(&g.mu);
        return -1;
    }
    if (n == 0 || n == g.applied || (!forced && n == g.refused)) {
        bool was_refused = n != 0 && n == g.refused;
        pthread_mutex_unlock(&g.mu);
        if (was_refused) {
            snprintf(err, errlen, "redis version %lld was refused; see last_error", n);
            return -1;
        }
        return 0;
    }
    int grc = sc_polc_get(p, n, true, REDIS_BUDGET, &v, err, errlen);
    if (grc < 0 && sc_polc_broken(p)) {
        cmd_lost(err);
        pthread_mutex_unlock(&g.mu);
        return -1;
    }
    pthread_mutex_unlock(&g.mu);

    char origin[64], sum[SC_POLC_CHECKSUM_LEN + 1];
    snprintf(origin, sizeof origin, "redis v%lld", n);
    int rc = -1;
    if (grc != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s: %s", origin,
                 grc == 1 ? "policy:current names a version that is not stored" : err);
        snprintf(err, errlen, "%s", msg);
        sc_policy_refuse(trigger, err);
        goto done;
    }
    sc_polc_checksum(v.source, v.len, sum);
    if (strcmp(sum, v.checksum) != 0) {
        snprintf(err, errlen, "%s: checksum mismatch (stored %.12s..., source %.12s...)", origin,
                 v.checksum, sum);
        sc_policy_refuse(trigger, err);
        goto done;
    }
    rc = sc_policy_apply_source(v.source, v.len, "redis", origin, n, trigger, err, errlen);
done:
    sc_polc_version_free(&v);
    pthread_mutex_lock(&g.mu);
    if (rc == 0) {
        g.applied = n;
        g.refused = 0;
    } else {
        g.refused = n;
    }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

/* sc_policy_reload with POLICY_SOURCE=redis (POST /api/admin/reload). */
static int reload_from_redis(const char *trigger, long long *version, char *err, size_t errlen)
{
    int rc = fetch(true, trigger, err, errlen);
    if (version)
        *version = sc_policy_version();
    return rc;
}

/* ==== The follower thread ==== */

static void *follow(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-policy-src"); /* top -H, perf */
    (void)arg;
    char err[1024];
    sc_polc_t *sub = NULL;
    double sub_retry_at = 0, sub_backoff = 0, next_poll = sc_clock_mono() + POLL_SECONDS;
    bool sub_lost_logged = false;
    for (;;) {
        double now = sc_clock_mono();
        if (!sub && now >= sub_retry_at) {
            sub = sc_polc_open(&g.target, g.prefix, REDIS_BUDGET, err, sizeof err);
            if (sub && sc_polc_subscribe(sub, REDIS_BUDGET, err, sizeof err) != 0) {
                sc_polc_close(sub);
                sub = NULL;
            }
            if (sub) {
                sub_backoff = 0;
                if (sub_lost_logged)
                    sc_log_info("[Policy] redis notifications back");
                sub_lost_logged = false;
                next_poll = now; /* a push may have gone by unheard */
            } else {
                sub_backoff = sub_backoff > 0 ? sub_backoff * 2 : BACKOFF_MIN;
                if (sub_backoff > BACKOFF_MAX)
                    sub_backoff = BACKOFF_MAX;
                sub_retry_at = now + sub_backoff;
            }
        }
        struct pollfd fds[2] = {{g.pipe[0], POLLIN, 0}, {sub ? sc_polc_fd(sub) : -1, POLLIN, 0}};
        double wait = next_poll - sc_clock_mono();
        if (!sub && sub_retry_at - sc_clock_mono() < wait)
            wait = sub_retry_at - sc_clock_mono();
        int ms = wait > 0 ? (int)(wait * 1000) + 1 : 0;
        int pr = poll(fds, 2, ms);
        bool check = false, forced = false;
        if (pr > 0 && (fds[0].revents & POLLIN)) {
            char c[16];
            ssize_t k = read(g.pipe[0], c, sizeof c);
            for (ssize_t i = 0; i < k; i++) {
                if (c[i] == 'q')
                    goto out;
                check = forced = true;
            }
        }
        if (pr > 0 && sub && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            int n = sc_polc_messages(sub);
            if (n < 0) {
                sc_polc_close(sub);
                sub = NULL;
                if (!sub_lost_logged)
                    sc_log_warn("[Policy] redis notifications lost; polling every %.0f s until "
                                "they are back",
                                POLL_SECONDS);
                sub_lost_logged = true;
                sub_backoff = BACKOFF_MIN;
                sub_retry_at = sc_clock_mono() + sub_backoff;
            } else if (n > 0) {
                check = true;
            }
        }
        if (sc_clock_mono() >= next_poll) {
            check = true;
            next_poll = sc_clock_mono() + POLL_SECONDS;
        }
        if (check) /* a refusal is logged and recorded by fetch */
            (void)fetch(forced, forced ? "SIGHUP" : "redis", err, sizeof err);
    }
out:
    sc_polc_close(sub);
    return NULL;
}

/* ==== Public ==== */

int sc_policysrc_start(const sc_config_t *cfg, char *err, size_t errlen)
{
    char msg[1024];
    if (g.running)
        return 0;
    if (sc_redis_url_parse(cfg->redis_url, &g.target, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "%s", msg);
        return -1;
    }
    snprintf(g.prefix, sizeof g.prefix, "%s", cfg->redis_key_prefix);
    if (g.target.unix_path[0])
        snprintf(g.where, sizeof g.where, "unix:%s", g.target.unix_path);
    else
        snprintf(g.where, sizeof g.where, "%s:%d/%d", g.target.host, g.target.port, g.target.db);
    g.applied = g.refused = 0;
    g.cmd_backoff = 0;
    g.cmd_retry_at = 0;
    g.down = false;
    if (pipe2(g.pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    /* Before serving: an instance joining a fleet serves the fleet's policy
     * from its first request. */
    if (fetch(false, "start", msg, sizeof msg) == 0 && sc_policy_version() == 0)
        sc_log_info("[Policy] no policy in Redis yet (%spolicy:current): serving the local policy "
                    "as version 0 until the first `scenecomp policy push`",
                    g.prefix);
    sc_policy_set_reloader(reload_from_redis);
    if (pthread_create(&g.thread, NULL, follow, NULL) != 0) {
        sc_policy_set_reloader(NULL);
        snprintf(err, errlen, "cannot start the policy follower thread");
        close(g.pipe[0]);
        close(g.pipe[1]);
        g.pipe[0] = g.pipe[1] = -1;
        return -1;
    }
    g.running = true;
    sc_log_info("[Policy] source: redis (%s, %spolicy:*), version %lld in force", g.where, g.prefix,
                sc_policy_version());
    return 0;
}

void sc_policysrc_poke(void)
{
    if (g.running && write(g.pipe[1], "p", 1) < 0)
        sc_log_warn("[Policy] cannot wake the redis follower: %s", strerror(errno));
}

void sc_policysrc_stop(void)
{
    if (!g.running)
        return;
    sc_policy_set_reloader(NULL);
    while (write(g.pipe[1], "q", 1) < 0 && errno == EINTR)
        ;
    pthread_join(g.thread, NULL);
    g.running = false;
    close(g.pipe[0]);
    close(g.pipe[1]);
    g.pipe[0] = g.pipe[1] = -1;
    pthread_mutex_lock(&g.mu);
    sc_polc_close(g.cmd);
    g.cmd = NULL;
    pthread_mutex_unlock(&g.mu);
}
