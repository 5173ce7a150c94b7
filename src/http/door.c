/* The front door: accepts connections and reads (with MSG_PEEK, so nothing is
 * consumed) each one's first request head before libmicrohttpd sees it.
 *
 * Why: libmicrohttpd 0.9.75 answers some malformed requests itself, before the
 * access handler runs, and those answers are broken: a malformed or huge
 * Content-Length gets its status line and headers written twice (the second
 * copy inside the body), 431 and 505 get HTML bodies. The door answers those
 * with one well-formed JSON response and closes; a sound request head is
 * handed to MHD with MHD_add_connection, its bytes still unread in the kernel.
 * It also enforces HEADER_TIMEOUT_SECONDS on the first request (408).
 *
 * Later requests on a keep-alive connection go to MHD directly; the access
 * handler checks their framing (server.c) and the watchdog their header
 * deadline (edge.c), but a malformed Content-Length on them still meets MHD's
 * own answer (docs/operations.md).
 *
 * One thread, one epoll set: the listening socket, an eventfd for stop and
 * quiesce, and the waiting connections (edge-triggered: a peek leaves the
 * bytes unread, so only new bytes wake it). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>

#include "core/clock.h"
#include "core/log.h"
#include "http/conn.h"

/* The largest request head accepted, in bytes and in header lines (Node's
 * 16 KiB, Apache's LimitRequestFields 100). libmicrohttpd keeps the head in its
 * 32 KiB connection memory (server.c) with a record per header: measured, it
 * serves 16 KiB heads of up to 250 lines and refuses with its own HTML 431
 * (or drops the connection) well before 32 KiB or at 500 short lines, so the
 * door answers those in JSON first. Well under a socket's default receive
 * buffer, so a head this long always fits in what one peek can see. */
#define DOOR_MAX_HEAD (16 * 1024)
#define DOOR_MAX_HEADER_LINES 100
#define DOOR_MAX_WAITING 4096
#define DOOR_LINGER_SECONDS 2.0
#define DOOR_TICK_MS 250

typedef enum { W_READING, W_LINGER } wait_state_t;

typedef struct waiting {
    int fd;
    wait_state_t state;
    double deadline; /* monotonic: head deadline, or end of the lingering close */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct waiting *prev, *next;
} waiting_t;

/* ==== Connections per client address (MAX_CONNECTIONS_PER_IP) ====
 *
 * Counted from the accept to the close, whether the connection waits here or
 * is MHD's: the door takes a count at the accept and gives it back when it
 * closes or hands over the connection; edge.c takes one at MHD's "started" and
 * gives it back at "closed". */

#define IP_BUCKETS 4096

typedef struct ip_count {
    unsigned char key[17]; /* family byte + address */
    int count;
    struct ip_count *next;
} ip_count_t;

static pthread_mutex_t g_ip_mu = PTHREAD_MUTEX_INITIALIZER;
static ip_count_t *g_ip[IP_BUCKETS];
static int g_ip_limit; /* 0 = no limit, nothing counted */

static bool ip_key(const struct sockaddr *sa, unsigned char key[17])
{
    memset(key, 0, 17);
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *a =
            (const unsigned char *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) { /* dual-stack: an IPv4 peer */
            key[0] = 4;
            memcpy(key + 1, a + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, a, 16);
        }
        return true;
    }
    return false;
}

/* Adds one connection for sa; when enforce, refuses (false) at the limit. */
static bool ip_add(const struct sockaddr *sa, bool enforce)
{
    unsigned char key[17];
    if (g_ip_limit <= 0 || !sa || !ip_key(sa, key))
        return true;
    unsigned h = 2166136261u;
    for (int i = 0; i < 17; i++)
        h = (h ^ key[i]) * 16777619u;
    bool ok = true;
    pthread_mutex_lock(&g_ip_mu);
    ip_count_t **slot = &g_ip[h % IP_BUCKETS], *n = *slot;
    while (n && memcmp(n->key, key, 17) != 0)
        n = n->next;
    if (n && enforce && n->count >= g_ip_limit) {
        ok = false;
    } else if (n) {
        n->count++;
    } else if ((n = calloc(1, sizeof *n)) != NULL) {
        memcpy(n->key, key, 17);
        n->count = 1;
        n->next = *slot;
        *slot = n;
    } /* out of memory: not counted, not refused */
    pthread_mutex_unlock(&g_ip_mu);
    return ok;
}

void sc_http__ip_add(const struct sockaddr *sa)
{
    (void)ip_add(sa, false);
}

void sc_http__ip_release(const struct sockaddr *sa)
{
    unsigned char key[17];
    if (g_ip_limit <= 0 || !sa || !ip_key(sa, key))
        return;
    unsigned h = 2166136261u;
    for (int i = 0; i < 17; i++)
        h = (h ^ key[i]) * 16777619u;
    pthread_mutex_lock(&g_ip_mu);
    for (ip_count_t **pp = &g_ip[h % IP_BUCKETS]; *pp; pp = &(*pp)->next) {
        ip_count_t *n = *pp;
        if (memcmp(n->key, key, 17) != 0)
            continue;
        if (--n->count <= 0) {
            *pp = n->next;
            free(n);
        }
        break;
    }
    pthread_mutex_unlock(&g_ip_mu);
}

/* ==== The door ==== */

static struct {
    int listen_fd, epfd, evfd;
    struct MHD_Daemon *mhd;
    double header_timeout;
    pthread_t thread;
    bool running;
    atomic_bool stop, quiesce, quiesced;
    atomic_int n_waiting;
    waiting_t *head;
    char *peek; /* DOOR_MAX_HEAD + 1 bytes */
} g = {.listen_fd = -1, .epfd = -1, .evfd = -1};

/* The listening socket's epoll tag (waiting connections are tagged by pointer). */
static char k_listen_tag, k_event_tag;

static void unlink_waiting(waiting_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        g.head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    atomic_fetch_sub(&g.n_waiting, 1);
}

static void drop(waiting_t *w)
{
    epoll_ctl(g.epfd, EPOLL_CTL_DEL, w->fd, NULL);
    close(w->fd);
    sc_http__ip_release((struct sockaddr *)&w->addr);
    unlink_waiting(w);
    free(w);
}

/* Answers with one JSON error and closes gracefully: our side is shut down at
 * once, and what the client still sends is read and dropped for a moment, so
 * that closing with unread bytes does not reset the answer away. */
static void refuse(waiting_t *w, int status, const char *reason, const char *code, const char *msg)
{
    char body[512], resp[1024], date[64] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int blen = snprintf(body, sizeof body, "{\"error\": {\"code\": \"%s\", \"message\": \"%s\"}}\n",
                        code, msg);
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     status, reason, date, blen, body);
    if (n > 0 && (size_t)n < sizeof resp)
        (void)send(w->fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(w->fd, SHUT_WR);
    w->state = W_LINGER;
    w->deadline = sc_clock_mono() + DOOR_LINGER_SECONDS;
}

static bool is_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Checks one complete request head (request line + headers, without the
 * final empty line). Returns true when MHD may have it; else answered. */
static bool check_head(waiting_t *w, const char *h, size_t len)
{
    const char *eol = memchr(h, '\r', len);
    size_t l0 = eol ? (size_t)(eol - h) : len;
    /* The version: the last word of the request line. */
    const char *sp = NULL;
    for (size_t i = l0; i > 0; i--)
        if (h[i - 1] == ' ') {
            sp = h + i;
            break;
        }
    size_t vlen = sp ? (size_t)(h + l0 - sp) : 0;
    if (!sp || vlen < 6 || strncmp(sp, "HTTP/", 5) != 0) {
        refuse(w, 400, "Bad Request", "bad_request", "malformed request line");
        return false;
    }
    if (strncmp(sp, "HTTP/1.", 7) != 0) {
        refuse(w, 505, "HTTP Version Not Supported", "http_version_not_supported",
               "only HTTP/1.0 and HTTP/1.1 are supported");
        return false;
    }
    int n_cl = 0, n_te = 0, n_lines = 0;
    const char *cl = NULL;
    size_t cl_len = 0;
    const char *p = eol ? eol + 2 : h + len;
    while (p < h + len) {
        if (++n_lines > DOOR_MAX_HEADER_LINES) {
            char msg[64];
            snprintf(msg, sizeof msg, "the request head has more than %d header lines",
                     DOOR_MAX_HEADER_LINES);
            refuse(w, 431, "Request Header Fields Too Large", "headers_too_large", msg);
            return false;
        }
        const char *e = memchr(p, '\r', (size_t)(h + len - p));
        size_t ll = e ? (size_t)(e - p) : (size_t)(h + len - p);
        const char *colon = memchr(p, ':', ll);
        if (colon) {
            size_t nl = (size_t)(colon - p);
            const char *v = colon + 1;
            size_t vl = ll - nl - 1;
            while (vl > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vl--;
            }
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (nl == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
                if (!is_digits(v, vl)) {
                    refuse(w, 400, "Bad Request", "bad_request", "malformed Content-Length");
                    return false;
                }
                if (n_cl++ > 0 && (vl != cl_len || memcmp(v, cl, vl) != 0)) {
                    refuse(w, 400, "Bad Request", "bad_request",
                           "two different Content-Length values");
                    return false;
                }
                cl = v;
                cl_len = vl;
            } else if (nl == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
                n_te++;
            }
        }
        p += ll + 2;
    }
    if (n_cl > 0 && n_te > 0) {
        refuse(w, 400, "Bad Request", "bad_request",
               "Content-Length together with Transfer-Encoding");
        return false;
    }
    /* Leading zeros aside, more than 18 digits is over anything we accept
     * (and over what MHD parses): 413, not MHD's doubled answer. */
    while (cl_len > 1 && *cl == '0') {
        cl++;
        cl_len--;
    }
    if (n_cl > 0 && cl_len > 18) {
        refuse(w, 413, "Content Too Large", "payload_too_large",
               "Content-Length is over the upload limit");
        return false;
    }
    return true;
}

/* New bytes (or a close) on a waiting connection. */
static void on_readable(waiting_t *w)
{
    if (w->state == W_LINGER) {
        char sink[4096];
        ssize_t n;
        while ((n = recv(w->fd, sink, sizeof sink, MSG_DONTWAIT)) > 0)
            ;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            drop(w);
        return;
    }
    ssize_t n = recv(w->fd, g.peek, DOOR_MAX_HEAD, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        drop(w); /* gone before sending a request */
        return;
    }
    if (n < 0)
        return;
    /* Empty lines before a request line are allowed (RFC 9112 2.2). */
    size_t skip = 0;
    while (skip + 1 < (size_t)n && g.peek[skip] == '\r' && g.peek[skip + 1] == '\n')
        skip += 2;
    char *head = g.peek + skip;
    size_t avail = (size_t)n - skip;
    char *end = avail >= 4 ? memmem(head, avail, "\r\n\r\n", 4) : NULL;
    if (!end) {
        if ((size_t)n >= DOOR_MAX_HEAD) {
            char msg[64];
            snprintf(msg, sizeof msg, "the request head is over %d bytes", DOOR_MAX_HEAD);
            refuse(w, 431, "Request Header Fields Too Large", "headers_too_large", msg);
        }
        return; /* wait for more */
    }
    if (!check_head(w, head, (size_t)(end - head)))
        return;
    /* Sound: MHD takes it from here (and closes it itself on failure). */
    epoll_ctl(g.epfd, EPOLL_CTL_DEL, w->fd, NULL);
    int fd = w->fd;
    struct sockaddr_storage addr = w->addr;
    socklen_t addrlen = w->addrlen;
    unlink_waiting(w);
    free(w);
    sc_http__ip_release((struct sockaddr *)&addr); /* edge.c counts it from here */
    if (MHD_add_connection(g.mhd, fd, (struct sockaddr *)&addr, addrlen) != MHD_YES)
        sc_log_debug("http: connection refused by libmicrohttpd (connection limits)");
}

static void on_accept(void)
{
    for (;;) {
        struct sockaddr_storage addr;
        socklen_t addrlen = sizeof addr;
        int fd =
            accept4(g.listen_fd, (struct sockaddr *)&addr, &addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a transient error: the next event retries */
        if (!ip_add((struct sockaddr *)&addr, true)) {
            close(fd); /* over MAX_CONNECTIONS_PER_IP: closed without an answer */
            continue;
        }
        waiting_t *w = atomic_load(&g.n_waiting) < DOOR_MAX_WAITING ? calloc(1, sizeof *w) : NULL;
        if (!w) {
            close(fd);
            sc_http__ip_release((struct sockaddr *)&addr);
            continue;
        }
        w->fd = fd;
        w->state = W_READING;
        w->deadline =
            g.header_timeout > 0 ? sc_clock_mono() + g.header_timeout : 1e300; /* no deadline */
        w->addr = addr;
        w->addrlen = addrlen;
        w->next = g.head;
        if (g.head)
            g.head->prev = w;
        g.head = w;
        atomic_fetch_add(&g.n_waiting, 1);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = w};
        if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
            drop(w);
    }
}

static void sweep(void)
{
    double now = sc_clock_mono();
    waiting_t *next;
    for (waiting_t *w = g.head; w; w = next) {
        next = w->next;
        if (now < w->deadline)
            continue;
        if (w->state == W_LINGER) {
            drop(w);
        } else {
            char peer[64] = "?";
            sc_http__format_addr((struct sockaddr *)&w->addr, peer, sizeof peer);
            sc_log_info("http: closing a connection from %s that did not send its request "
                        "headers within HEADER_TIMEOUT_SECONDS (%gs)",
                        peer, g.header_timeout);
            refuse(w, 408, "Request Timeout", "request_timeout",
                   "request headers not received in time");
        }
    }
}

static void *door_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-door"); /* top -H, perf */
    (void)arg;
    struct epoll_event evs[64];
    while (!atomic_load(&g.stop)) {
        int n = epoll_wait(g.epfd, evs, 64, DOOR_TICK_MS);
        if (atomic_load(&g.quiesce) && g.listen_fd >= 0) {
            epoll_ctl(g.epfd, EPOLL_CTL_DEL, g.listen_fd, NULL);
            close(g.listen_fd);
            g.listen_fd = -1;
            atomic_store(&g.quiesced, true);
        }
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &k_event_tag) {
                uint64_t v;
                (void)!read(g.evfd, &v, sizeof v);
            } else if (tag == &k_listen_tag) {
                if (g.listen_fd >= 0)
                    on_accept();
            } else {
                on_readable(tag);
            }
        }
        sweep();
    }
    while (g.head)
        drop(g.head);
    return NULL;
}

int sc_http__door_start(int listen_fd, struct MHD_Daemon *mhd, double header_timeout,
                        int per_ip_limit)
{
    g_ip_limit = per_ip_limit;
    g.listen_fd = listen_fd;
    g.mhd = mhd;
    g.header_timeout = header_timeout;
    atomic_store(&g.stop, false);
    atomic_store(&g.quiesce, false);
    atomic_store(&g.quiesced, false);
    atomic_store(&g.n_waiting, 0);
    g.peek = malloc(DOOR_MAX_HEAD + 1);
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    g.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = &k_listen_tag};
    struct epoll_event ee = {.events = EPOLLIN, .data.ptr = &k_event_tag};
    if (!g.peek || g.epfd < 0 || g.evfd < 0 ||
        epoll_ctl(g.epfd, EPOLL_CTL_ADD, listen_fd, &le) != 0 ||
        epoll_ctl(g.epfd, EPOLL_CTL_ADD, g.evfd, &ee) != 0 ||
        pthread_create(&g.thread, NULL, door_main, NULL) != 0) {
        free(g.peek);
        g.peek = NULL;
        if (g.epfd >= 0)
            close(g.epfd);
        if (g.evfd >= 0)
            close(g.evfd);
        g.epfd = g.evfd = -1;
        return -1;
    }
    g.running = true;
    return 0;
}

static void wake(void)
{
    uint64_t one = 1;
    (void)!write(g.evfd, &one, sizeof one);
}

void sc_http__door_quiesce(void)
{
    if (!g.running)
        return;
    atomic_store(&g.quiesce, true);
    wake();
    /* Like MHD_quiesce_daemon: once this returns, nothing new is accepted. */
    for (int i = 0; i < 2000 && !atomic_load(&g.quiesced); i++) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int sc_http__door_waiting(void)
{
    return atomic_load(&g.n_waiting);
}

void sc_http__door_stop(void)
{
    if (!g.running)
        return;
    atomic_store(&g.stop, true);
    wake();
    pthread_join(g.thread, NULL);
    if (g.listen_fd >= 0)
        close(g.listen_fd);
    close(g.epfd);
    close(g.evfd);
    free(g.peek);
    g.peek = NULL;
    g.listen_fd = g.epfd = g.evfd = -1;
    g.running = false;
}
