/* The connection edge: what libmicrohttpd 0.9.75 does not enforce by itself.
 *
 * - A header deadline: a client must send its request headers within
 *   HEADER_TIMEOUT_SECONDS of connecting (or of the request line of a later
 *   keep-alive request). MHD's own timeout is an idle timeout, which a client
 *   trickling a byte now and then never reaches.
 * - Half-closed uploads: with epoll, MHD 0.9.75 sometimes misses a FIN that
 *   arrives mid-body (the socket sits in CLOSE-WAIT until the 60 s idle
 *   timeout, holding the buffered body). A peer that shut down its side, with
 *   nothing left unread and no progress over two sweeps, can never complete its
 *   request.
 * Both are enforced by a watchdog thread that shutdown()s the socket: MHD then
 * sees the error on its own thread and ends the request the usual way (request
 * completed callback, buffers freed). The watchdog never closes a descriptor:
 * MHD reports NOTIFY_CLOSED (which unlinks the entry, under g_mu) before it
 * closes the socket, so the descriptor is never a reused one.
 *
 * - The upload budget: bytes of request bodies buffered at once, bounded by
 *   MAX_BUFFERED_UPLOAD_BYTES. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/clock.h"
#include "core/log.h"
#include "http/conn.h"

#define SWEEP_MS 250

typedef struct sc_http_edge {
    int fd;
    atomic_int phase;
    atomic_llong deadline_ms; /* monotonic ms; meaningful in SC_EDGE_HEADERS */
    atomic_llong progress;    /* body bytes received so far */
    long long seen_progress;  /* watchdog only */
    int quiet_sweeps;         /* watchdog only: sweeps seen half-closed without progress */
    bool cut;                 /* watchdog only: already shut down */
    char peer[64];
    struct sockaddr_storage addr; /* for MAX_CONNECTIONS_PER_IP */
    bool has_addr;
    struct sc_http_edge *prev, *next;
} sc_http_edge_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv;
static sc_http_edge_t *g_head;
static bool g_running, g_stop;
static pthread_t g_thread;
static double g_header_timeout;
static long long g_budget_max;
static atomic_llong g_budget_used;

static long long now_ms(void)
{
    return (long long)(sc_clock_mono() * 1000.0);
}

/* ==== Upload budget ==== */

bool sc_http__budget_take(long long n)
{
    if (n <= 0)
        return true;
    long long cur = atomic_load(&g_budget_used);
    do {
        if (cur + n > g_budget_max)
            return false;
    } while (!atomic_compare_exchange_weak(&g_budget_used, &cur, cur + n));
    return true;
}

void sc_http__budget_give(long long n)
{
    if (n > 0)
        atomic_fetch_sub(&g_budget_used, n);
}

long long sc_http__budget_used(void)
{
    return atomic_load(&g_budget_used);
}

/* ==== Per-connection tracking ==== */

void sc_http__format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
    snprintf(out, cap, "?");
    if (!sa)
        return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)cap);
}

void sc_http__edge_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        sc_http_edge_t *e = calloc(1, sizeof *e);
        if (!e)
            return; /* untracked: MHD's idle timeout still applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        e->fd = ci ? ci->connect_fd : -1;
        atomic_init(&e->phase, SC_EDGE_HEADERS);
        atomic_init(&e->deadline_ms, now_ms() + (long long)(g_header_timeout * 1000.0));
        atomic_init(&e->progress, 0);
        const union MHD_ConnectionInfo *ai =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        sc_http__format_addr(ai ? ai->client_addr : NULL, e->peer, sizeof e->peer);
        if (ai && ai->client_addr) {
            size_t alen = ai->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                 : sizeof(struct sockaddr_in);
            memcpy(&e->addr, ai->client_addr, alen);
            e->has_addr = true;
            sc_http__ip_add((struct sockaddr *)&e->addr);
        }
        pthread_mutex_lock(&g_mu);
        e->next = g_head;
        if (g_head)
            g_head->prev = e;
        g_head = e;
        pthread_mutex_unlock(&g_mu);
        *socket_context = e;
        return;
    }
    sc_http_edge_t *e = *socket_context;
    if (!e)
        return;
    pthread_mutex_lock(&g_mu);
    if (e->prev)
        e->prev->next = e->next;
    else
        g_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    pthread_mutex_unlock(&g_mu);
    *socket_context = NULL;
    if (e->has_addr)
        sc_http__ip_release((struct sockaddr *)&e->addr);
    free(e);
}

sc_http_edge_t *sc_http__edge_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void *sc_http__edge_uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)uri;
    /* A new request line on a keep-alive connection: its headers get their own
     * deadline (the first request's runs from the accept). */
    sc_http_edge_t *e = sc_http__edge_of(conn);
    if (e && atomic_load(&e->phase) == SC_EDGE_IDLE) {
        atomic_store(&e->deadline_ms, now_ms() + (long long)(g_header_timeout * 1000.0));
        atomic_store(&e->phase, SC_EDGE_HEADERS);
    }
    return NULL; /* the request's con_cls starts NULL, as the handler expects */
}

void sc_http__edge_set(sc_http_edge_t *e, sc_edge_phase_t phase)
{
    if (e)
        atomic_store(&e->phase, (int)phase);
}

void sc_http__edge_progress(sc_http_edge_t *e, size_t n)
{
    if (e)
        atomic_fetch_add(&e->progress, (long long)n);
}

/* ==== Watchdog ==== */

/* True when the peer shut down its sending side and nothing is left unread. */
static bool peer_gone(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) != 1)
        return false;
    if (!(p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return false;
    int unread = 0;
    if (ioctl(fd, FIONREAD, &unread) != 0)
        return (p.revents & (POLLHUP | POLLERR)) != 0;
    return unread == 0;
}

static void sweep(void)
{
    long long now = now_ms();
    pthread_mutex_lock(&g_mu);
    for (sc_http_edge_t *e = g_head; e; e = e->next) {
        int phase = atomic_load(&e->phase);
        if (e->cut || e->fd < 0 || (phase != SC_EDGE_HEADERS && phase != SC_EDGE_BODY)) {
            e->quiet_sweeps = 0;
            continue;
        }
        if (phase == SC_EDGE_HEADERS && g_header_timeout > 0 &&
            now > atomic_load(&e->deadline_ms)) {
            sc_log_info("http: closing a connection from %s that did not send its request "
                        "headers within HEADER_TIMEOUT_SECONDS (%gs)",
                        e->peer, g_header_timeout);
            shutdown(e->fd, SHUT_RDWR);
            e->cut = true;
            continue;
        }
        long long progress = atomic_load(&e->progress);
        if (progress == e->seen_progress && peer_gone(e->fd)) {
            /* Two quiet sweeps: MHD had a full sweep to read what it had. */
            if (++e->quiet_sweeps >= 2) {
                sc_log_info("http: client %s closed its side mid-request; request dropped",
                            e->peer);
                shutdown(e->fd, SHUT_RDWR);
                e->cut = true;
            }
        } else {
            e->quiet_sweeps = 0;
        }
        e->seen_progress = progress;
    }
    pthread_mutex_unlock(&g_mu);
}

static void *watchdog(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-watchdog"); /* top -H, perf */
    (void)arg;
    pthread_mutex_lock(&g_mu);
    while (!g_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += SWEEP_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g_cv, &g_mu, &ts);
        if (g_stop)
            break;
        pthread_mutex_unlock(&g_mu);
        sweep();
        pthread_mutex_lock(&g_mu);
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

int sc_http__edge_start(const sc_config_t *cfg)
{
    g_header_timeout = cfg->header_timeout_seconds;
    g_budget_max = cfg->max_buffered_upload_bytes;
    atomic_store(&g_budget_used, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&g_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return -1;
    g_stop = false;
    if (pthread_create(&g_thread, NULL, watchdog, NULL) != 0) {
        pthread_cond_destroy(&g_cv);
        return -1;
    }
    g_running = true;
    return 0;
}

void sc_http__edge_stop(void)
{
    if (!g_running)
        return;
    pthread_mutex_lock(&g_mu);
    g_stop = true;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(g_thread, NULL);
    pthread_cond_destroy(&g_cv);
    g_running = false;
}

/* The client's socket, or -1. */
int sc_http__client_fd(sc_http_conn_t *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Whether the client closed its socket (FIN or RST) while its connection was
 * suspended, where MHD does not look. Bytes waiting mean it is still there. */
bool sc_http__client_left(int fd)
{
    char b;
    if (fd < 0)
        return false;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}
