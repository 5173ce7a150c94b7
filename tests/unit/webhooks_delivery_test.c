/* Webhook deliveries against a local HTTP server (a thread of this test):
 * retries after 5xx and after no answer, giving up, the connect-time address
 * check, the persisted queue surviving a restart, bad input. Every "eventually"
 * wait has a generous deadline; nothing asserts on timing. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "test.h"
#include "webhooks/delivery.h"

#define SECRET "test-secret-1"
#define MAXREQ 16

/* ==== A one-connection-at-a-time HTTP server ==== */

typedef struct server {
    int fd, port;
    pthread_t th;
    atomic_bool stop;
    int script[MAXREQ]; /* status per request; 0 = read the request, never answer */
    int nscript;        /* requests past the script get 200 */
    pthread_mutex_t mu;
    int nreq;
    char id[MAXREQ][64], ts[MAXREQ][32], sig[MAXREQ][128];
    char body[MAXREQ][4096];
} server_t;

static void header_value(const char *hdrs, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    size_t n = strlen(name);
    for (const char *p = hdrs; (p = strstr(p, "\r\n")) != NULL; p += 2) {
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ')
                v++;
            size_t len = strcspn(v, "\r");
            snprintf(out, cap, "%.*s", (int)(len < cap ? len : cap - 1), v);
            return;
        }
    }
}

static void serve_one(server_t *s, int c)
{
    char buf[16384];
    size_t len = 0;
    char *end = NULL;
    while (len < sizeof buf - 1 && !(end = strstr(buf, "\r\n\r\n"))) {
        ssize_t n = recv(c, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            return;
        len += (size_t)n;
        buf[len] = '\0';
    }
    if (!end)
        return;
    char cl[32];
    *end = '\0';
    header_value(buf, "Content-Length", cl, sizeof cl);
    size_t want = (size_t)atol(cl), have = len - (size_t)(end + 4 - buf);
    char *body = end + 4;
    while (have < want && (size_t)(body - buf) + have < sizeof buf - 1) {
        ssize_t n = recv(c, body + have, sizeof buf - 1 - (size_t)(body - buf) - have, 0);
        if (n <= 0)
            return;
        have += (size_t)n;
    }
    body[have] = '\0';
    pthread_mutex_lock(&s->mu);
    int k = s->nreq < MAXREQ ? s->nreq : MAXREQ - 1;
    header_value(buf, "webhook-id", s->id[k], sizeof s->id[k]);
    header_value(buf, "webhook-timestamp", s->ts[k], sizeof s->ts[k]);
    header_value(buf, "webhook-signature", s->sig[k], sizeof s->sig[k]);
    snprintf(s->body[k], sizeof s->body[k], "%s", body);
    int status = s->nreq < s->nscript ? s->script[s->nreq] : 200;
    s->nreq++;
    pthread_mutex_unlock(&s->mu);
    if (status == 0) {
        /* no answer: hold the connection until the client gives up */
        while (!atomic_load(&s->stop) && recv(c, buf, sizeof buf, 0) > 0)
            ;
        return;
    }
    char resp[128];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", status);
    if (send(c, resp, (size_t)n, MSG_NOSIGNAL) < 0)
        return;
}

static void *server_main(void *arg)
{
    server_t *s = arg;
    while (!atomic_load(&s->stop)) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        struct timeval tv = {1, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        serve_one(s, c);
        close(c);
    }
    return NULL;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {0, 200000}; /* accept wakes up to notice stop */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int free_port(void)
{
    int fd = listen_on(0);
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    return ntohs(a.sin_port);
}

static server_t *server_start(int port, const int *script, int n)
{
    server_t *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->fd = listen_on(port);
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    getsockname(s->fd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    if (n > 0)
        memcpy(s->script, script, (size_t)n * sizeof *script);
    s->nscript = n;
    pthread_create(&s->th, NULL, server_main, s);
    return s;
}

static void server_stop(server_t *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    close(s->fd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int server_requests(server_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nreq;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ==== Helpers ==== */

static char g_dir[256];

/* Python's hmac, independent of our signing code. */
static bool python_verifies(const char *secret, const char *id, const char *ts, const char *body,
                            const char *sig)
{
    char path[300], cmd[1024], line[32] = "";
    snprintf(path, sizeof path, "%s/body.txt", g_dir);
    if (sc_fs_write_atomic(path, body, strlen(body)) != 0)
        return false;
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import hmac,hashlib,base64,sys;"
             "b=open(sys.argv[4],\"rb\").read();"
             "m=(sys.argv[2]+\".\"+sys.argv[3]+\".\").encode()+b;"
             "e=\"v1,\"+base64.b64encode(hmac.new(sys.argv[1].encode(),m,hashlib.sha256)"
             ".digest()).decode();"
             "print(\"ok\" if hmac.compare_digest(e,sys.argv[5]) else \"bad\")' "
             "'%s' '%s' '%s' '%s' '%s'",
             secret, id, ts, path, sig);
    FILE *p = popen(cmd, "r");
    if (!p)
        return false;
    if (!fgets(line, sizeof line, p))
        line[0] = '\0';
    pclose(p);
    return strncmp(line, "ok", 2) == 0;
}

static void wait_for(bool (*pred)(void *), void *ud, double seconds)
{
    double end = sc_clock_mono() + seconds;
    while (!pred(ud) && sc_clock_mono() < end)
        usleep(20000);
}

static bool has_attempt(void *ud)
{
    sc_webhooks_stats_t st;
    sc_webhooks_get_stats(ud, &st);
    return st.attempts >= 1;
}

static cJSON *read_queue(const char *dir)
{
    char path[400], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, SC_WEBHOOKS_QUEUE_FILE);
    if (sc_fs_read_file(path, 1 << 20, &text, &len) != 0)
        return NULL;
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    return o;
}

static int queue_len(const char *dir)
{
    cJSON *o = read_queue(dir);
    int n = o ? cJSON_GetArraySize(cJSON_GetObjectItem(o, "items")) : -1;
    cJSON_Delete(o);
    return n;
}

static void subdir(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
    mkdir(out, 0755);
}

static const char *k_body =
    "{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"succeeded\"}";
static const char *k_id = "0123456789abcdef0123456789abcdef";

/* ==== Tests ==== */

/* 500, 503, no answer, then 200: four tries, one delivery, same id, valid
 * signatures with a fresh timestamp each time. */
static void test_retries_then_success(void)
{
    char dir[300], url[128], err[256];
    subdir("retries", dir, sizeof dir);
    int script[] = {500, 503, 0};
    server_t *s = server_start(0, script, 3);
    double sched[] = {0.1, 0.1, 0.1, 0.1, 0.1};
    sc_webhooks_opts_t o = {dir, SECRET, "127.0.0.1", sched, 5, 1.0};
    sc_webhooks_t *w = sc_webhooks_start(&o, err, sizeof err);
    CHECK(w != NULL);
    if (!w) {
        server_stop(s);
        return;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook?token=zzz", s->port);
    CHECK(sc_webhooks_enqueue(w, k_id, url, k_body, strlen(k_body), err, sizeof err) == 0);
    CHECK(sc_webhooks_wait_idle(w, 60) == 0);
    sc_webhooks_stats_t st;
    sc_webhooks_get_stats(w, &st);
    CHECK_EQ_INT(st.delivered, 1);
    CHECK_EQ_INT(st.attempts, 4);
    CHECK_EQ_INT(st.failed, 0);
    CHECK_EQ_INT(st.queued, 0);
    CHECK_EQ_INT(server_requests(s), 4);
    for (int i = 0; i < 4 && i < server_requests(s); i++) {
        CHECK_STR(s->id[i], k_id);
        CHECK_STR(s->body[i], k_body);
        CHECK(strncmp(s->sig[i], "v1,", 3) == 0);
        CHECK(python_verifies(SECRET, s->id[i], s->ts[i], s->body[i], s->sig[i]));
        long long ts = atoll(s->ts[i]);
        CHECK(ts > 1700000000 && ts <= (long long)sc_clock_wall() + 1);
    }
    /* a tampered body does not verify (the check can fail) */
    CHECK(!python_verifies(SECRET, s->id[3], s->ts[3], "{\"status\":\"failed\"}", s->sig[3]));
    CHECK(!python_verifies("other-secret", s->id[3], s->ts[3], s->body[3], s->sig[3]));
    CHECK_EQ_INT(queue_len(dir), 0);
    sc_webhooks_stop(w);
    server_stop(s);
}

static void test_gives_up(void)
{
    char dir[300], url[128], err[256];
    subdir("giveup", dir, sizeof dir);
    int script[] = {500, 500, 500, 500, 500, 500};
    server_t *s = server_start(0, script, 6);
    double sched[] = {0.05, 0.05};
    sc_webhooks_opts_t o = {dir, SECRET, "*", sched, 2, 1.0};
    sc_webhooks_t *w = sc_webhooks_start(&o, err, sizeof err);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", s->port);
    CHECK(sc_webhooks_enqueue(w, k_id, url, k_body, strlen(k_body), err, sizeof err) == 0);
    CHECK(sc_webhooks_wait_idle(w, 60) == 0);
    sc_webhooks_stats_t st;
    sc_webhooks_get_stats(w, &st);
    CHECK_EQ_INT(st.attempts, 3);
    CHECK_EQ_INT(st.failed, 1);
    CHECK_EQ_INT(st.delivered, 0);
    CHECK_EQ_INT(server_requests(s), 3);
    CHECK_EQ_INT(queue_len(dir), 0);
    sc_webhooks_stop(w);
    server_stop(s);
}

/* Not allow-listed: the connection to 127.0.0.1 is refused by the sender
 * itself (the accept-time check is bypassed here on purpose), nothing reaches
 * the server, and the item is dropped at once (no retries). "localhost"
 * allow-listed by name does not allow 127.0.0.1 by address. */
static void test_connect_time_refusal(void)
{
    char dir[300], url[128], err[256];
    subdir("ssrf", dir, sizeof dir);
    server_t *s = server_start(0, NULL, 0);
    double sched[] = {0.05, 0.05, 0.05};
    sc_webhooks_opts_t o = {dir, SECRET, "localhost", sched, 3, 1.0};
    sc_webhooks_t *w = sc_webhooks_start(&o, err, sizeof err);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", s->port);
    CHECK(sc_webhooks_enqueue(w, k_id, url, k_body, strlen(k_body), err, sizeof err) == 0);
    snprintf(url, sizeof url, "http://[::1]:%d/hook", s->port);
    CHECK(sc_webhooks_enqueue(w, "second", url, k_body, strlen(k_body), err, sizeof err) == 0);
    CHECK(sc_webhooks_wait_idle(w, 60) == 0);
    sc_webhooks_stats_t st;
    sc_webhooks_get_stats(w, &st);
    CHECK_EQ_INT(st.failed, 2);
    CHECK_EQ_INT(st.attempts, 2);
    CHECK_EQ_INT(st.delivered, 0);
    CHECK_EQ_INT(server_requests(s), 0);

    /* ...while the allow-listed name itself is delivered to. */
    snprintf(url, sizeof url, "http://localhost:%d/hook", s->port);
    CHECK(sc_webhooks_enqueue(w, "third", url, k_body, strlen(k_body), err, sizeof err) == 0);
    CHECK(sc_webhooks_wait_idle(w, 60) == 0);
    sc_webhooks_get_stats(w, &st);
    CHECK_EQ_INT(st.delivered, 1);
    CHECK_EQ_INT(server_requests(s), 1);
    sc_webhooks_stop(w);
    server_stop(s);
}

/* The receiver is down; the first try fails; the service stops. A new sender
 * (the restarted service) finds the item in the queue file and delivers it
 * once the receiver is up. */
static void test_resume_after_restart(void)
{
    char dir[300], url[128], err[256];
    subdir("resume", dir, sizeof dir);
    int port = free_port(); /* nothing listens there yet */
    double sched[] = {0.2, 0.2, 0.2, 0.2, 0.2};
    sc_webhooks_opts_t o = {dir, SECRET, "127.0.0.1", sched, 5, 1.0};
    sc_webhooks_t *w = sc_webhooks_start(&o, err, sizeof err);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", port);
    CHECK(sc_webhooks_enqueue(w, k_id, url, k_body, strlen(k_body), err, sizeof err) == 0);
    wait_for(has_attempt, w, 30);
    sc_webhooks_stop(w);

    cJSON *q = read_queue(dir);
    const cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItem(q, "items"), 0);
    CHECK(it != NULL);
    if (it) {
        CHECK_STR(cJSON_GetObjectItem(it, "id")->valuestring, k_id);
        CHECK_STR(cJSON_GetObjectItem(it, "body")->valuestring, k_body);
        CHECK(cJSON_GetObjectItem(it, "tries")->valueint >= 1);
    }
    cJSON_Delete(q);

    server_t *s = server_start(port, NULL, 0);
    w = sc_webhooks_start(&o, err, sizeof err);
    CHECK(sc_webhooks_wait_idle(w, 60) == 0);
    sc_webhooks_stats_t st;
    sc_webhooks_get_stats(w, &st);
    CHECK_EQ_INT(st.delivered, 1);
    CHECK_EQ_INT(server_requests(s), 1);
    CHECK_STR(s->id[0], k_id);
    CHECK(python_verifies(SECRET, s->id[0], s->ts[0], s->body[0], s->sig[0]));
    CHECK_EQ_INT(queue_len(dir), 0);
    sc_webhooks_stop(w);
    server_stop(s);

    /* A queue file left by a crash (written by hand here) is resumed too. */
    s = server_start(0, NULL, 0);
    char text[1024], path[400];
    snprintf(text, sizeof text,
             "{\"version\":1,\"items\":[{\"id\":\"crash-1\",\"url\":\"http://127.0.0.1:%d/h\","
             "\"body\":\"{}\",\"tries\":2,\"next_at\":0}]}",
             s->port);
    snprintf(path, sizeof path, "%s/%s", dir, SC_WEBHOOKS_QUEUE_FILE);
    CHECK(sc_fs_write_atomic(path, text, strlen(text)) == 0);
    w = sc_webhooks_start(&o, err, sizeof err);
    CHECK(sc_webhooks_wait_idle(w, 60) == 0);
    CHECK_EQ_INT(server_requests(s), 1);
    CHECK_STR(s->id[0], "crash-1");
    sc_webhooks_stop(w);
    server_stop(s);
}

/* The contract: at least 5 tries over at least 60 s. */
static void test_default_schedule(void)
{
    size_t n = 0;
    const double *s = sc_webhooks_default_schedule(&n);
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(s[i] > 0);
        CHECK(i == 0 || s[i] >= s[i - 1]); /* backoff: never shorter */
        total += s[i];
    }
    CHECK(n + 1 >= 5);
    CHECK(total >= 60);
}

static void test_bad_input(void)
{
    char dir[300], err[256], path[400];
    subdir("bad", dir, sizeof dir);
    sc_webhooks_opts_t o = {dir, "", NULL, NULL, 0, 0};
    CHECK(sc_webhooks_start(&o, err, sizeof err) == NULL);
    CHECK(strstr(err, "WEBHOOK_SECRET") != NULL);

    /* A corrupt queue file is moved aside and the sender starts empty. */
    snprintf(path, sizeof path, "%s/%s", dir, SC_WEBHOOKS_QUEUE_FILE);
    CHECK(sc_fs_write_atomic(path, "{\"items\":", 9) == 0);
    o.secret = SECRET;
    sc_webhooks_t *w = sc_webhooks_start(&o, err, sizeof err);
    CHECK(w != NULL);
    if (!w)
        return;
    struct stat st;
    snprintf(path, sizeof path, "%s/%s.corrupt", dir, SC_WEBHOOKS_QUEUE_FILE);
    CHECK(stat(path, &st) == 0);
    sc_webhooks_stats_t s;
    sc_webhooks_get_stats(w, &s);
    CHECK_EQ_INT(s.queued, 0);

    CHECK(sc_webhooks_enqueue(w, k_id, "ftp://x/", "{}", 2, err, sizeof err) == -1);
    CHECK(sc_webhooks_enqueue(w, "", "http://x/", "{}", 2, err, sizeof err) == -1);
    char *big = malloc(SC_WEBHOOKS_BODY_MAX + 2);
    memset(big, ' ', SC_WEBHOOKS_BODY_MAX + 1);
    big[SC_WEBHOOKS_BODY_MAX + 1] = '\0';
    CHECK(sc_webhooks_enqueue(w, k_id, "http://x/", big, SC_WEBHOOKS_BODY_MAX + 1, err,
                              sizeof err) == -1);
    free(big);
    sc_webhooks_get_stats(w, &s);
    CHECK_EQ_INT(s.queued, 0);
    sc_webhooks_stop(w);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/sc_webhooks_test_%d", (int)getpid());
    mkdir(g_dir, 0755);
    test_retries_then_success();
    test_gives_up();
    test_connect_time_refusal();
    test_resume_after_restart();
    test_bad_input();
    test_default_schedule();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    return test_report("webhooks_delivery_test");
}
