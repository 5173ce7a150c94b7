/* Alerts webhook: the Alertmanager payload shape, delivery to a tiny local
 * HTTP receiver (127.0.0.1, a free port), retries with backoff, giving up, the
 * bounded queue dropping the oldest, and alert state changes end to end. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "alerts/alerts.h"
#include "alerts/alerts_internal.h"
#include "alerts/rules.h"
#include "alerts/webhook.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "test.h"

/* ==== A tiny HTTP receiver ==== */

#define RX_MAX 128

typedef struct receiver {
    int fd, port;
    pthread_t th;
    pthread_mutex_t mu;
    int script[16]; /* status to answer for the k-th request; 200 after the script */
    int nscript;
    char *bodies[RX_MAX];
    char request_line[RX_MAX][64];
    int content_json[RX_MAX];
    int n;
    int stop;
} receiver_t;

static int rx_read_request(int c, char **body_out, char *line, size_t linelen, int *json)
{
    char buf[65536];
    size_t got = 0;
    char *end = NULL;
    while (!end) {
        if (got == sizeof buf - 1)
            return -1;
        ssize_t r = recv(c, buf + got, sizeof buf - 1 - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
        buf[got] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t hlen = (size_t)(end - buf) + 4;
    long clen = 0;
    *json = 0;
    for (char *p = buf; p < end; p = strstr(p, "\r\n") + 2) {
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            clen = strtol(p + 15, NULL, 10);
        if (strncasecmp(p, "Content-Type: application/json", 30) == 0)
            *json = 1;
    }
    snprintf(line, linelen, "%.*s", (int)(strstr(buf, "\r\n") - buf), buf);
    if (clen < 0 || hlen + (size_t)clen >= sizeof buf)
        return -1;
    while (got < hlen + (size_t)clen) {
        ssize_t r = recv(c, buf + got, hlen + (size_t)clen - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    *body_out = strndup(buf + hlen, (size_t)clen);
    return 0;
}

static void *rx_main(void *arg)
{
    receiver_t *rx = arg;
    for (;;) {
        pthread_mutex_lock(&rx->mu);
        int stop = rx->stop;
        pthread_mutex_unlock(&rx->mu);
        if (stop)
            break;
        struct pollfd p = {rx->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(rx->fd, NULL, NULL);
        if (c < 0)
            continue;
        char *body = NULL, line[64];
        int json = 0;
        int status = 400;
        if (rx_read_request(c, &body, line, sizeof line, &json) == 0) {
            pthread_mutex_lock(&rx->mu);
            int k = rx->n;
            status = k < rx->nscript ? rx->script[k] : 200;
            if (k < RX_MAX) {
                rx->bodies[k] = body;
                snprintf(rx->request_line[k], sizeof rx->request_line[k], "%s", line);
                rx->content_json[k] = json;
                rx->n++;
                body = NULL;
            }
            pthread_mutex_unlock(&rx->mu);
        }
        free(body);
        char resp[128];
        int len =
            snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", status);
        if (send(c, resp, (size_t)len, MSG_NOSIGNAL) < 0)
            perror("receiver send");
        close(c);
    }
    return NULL;
}

static int rx_start(receiver_t *rx, const int *script, int nscript)
{
    memset(rx, 0, sizeof *rx);
    pthread_mutex_init(&rx->mu, NULL);
    for (int k = 0; k < nscript; k++)
        rx->script[k] = script[k];
    rx->nscript = nscript;
    rx->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t al = sizeof a;
    if (rx->fd < 0 || bind(rx->fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(rx->fd, 16) != 0 || getsockname(rx->fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    rx->port = ntohs(a.sin_port);
    return pthread_create(&rx->th, NULL, rx_main, rx);
}

static int rx_count(receiver_t *rx)
{
    pthread_mutex_lock(&rx->mu);
    int n = rx->n;
    pthread_mutex_unlock(&rx->mu);
    return n;
}

static void rx_stop(receiver_t *rx)
{
    pthread_mutex_lock(&rx->mu);
    rx->stop = 1;
    pthread_mutex_unlock(&rx->mu);
    pthread_join(rx->th, NULL);
    close(rx->fd);
    for (int k = 0; k < rx->n && k < RX_MAX; k++)
        free(rx->bodies[k]);
    pthread_mutex_destroy(&rx->mu);
}

/* ==== Helpers ==== */

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Checks one Alertmanager webhook payload; returns its first alert. */
static const cJSON *check_shape(const cJSON *j, const char *status, const char *name,
                                const char *severity, const char *summary)
{
    CHECK(j != NULL);
    if (!j)
        return NULL;
    CHECK_STR(jstr(j, "version"), "4");
    CHECK_STR(jstr(j, "status"), status);
    CHECK_STR(jstr(j, "receiver"), "scenecomp");
    CHECK_STR(jstr(j, "externalURL"), "");
    char gk[256];
    snprintf(gk, sizeof gk, "{}:{alertname=\"%s\"}", name);
    CHECK_STR(jstr(j, "groupKey"), gk);
    const cJSON *t = cJSON_GetObjectItem(j, "truncatedAlerts");
    CHECK(cJSON_IsNumber(t) && t->valueint == 0);
    const cJSON *cl = cJSON_GetObjectItem(j, "commonLabels");
    CHECK_STR(jstr(cl, "alertname"), name);
    CHECK_STR(jstr(cl, "severity"), severity);
    CHECK_STR(jstr(cl, "service"), "scenecomp");
    CHECK_STR(jstr(cJSON_GetObjectItem(j, "commonAnnotations"), "summary"), summary);
    CHECK_STR(jstr(cJSON_GetObjectItem(j, "groupLabels"), "alertname"), name);
    const cJSON *alerts = cJSON_GetObjectItem(j, "alerts");
    CHECK(cJSON_IsArray(alerts) && cJSON_GetArraySize(alerts) == 1);
    const cJSON *a = cJSON_GetArrayItem(alerts, 0);
    CHECK(a != NULL);
    if (!a)
        return NULL;
    CHECK_STR(jstr(a, "status"), status);
    const cJSON *l = cJSON_GetObjectItem(a, "labels");
    CHECK_STR(jstr(l, "alertname"), name);
    CHECK_STR(jstr(l, "severity"), severity);
    CHECK_STR(jstr(l, "service"), "scenecomp");
    CHECK_STR(jstr(cJSON_GetObjectItem(a, "annotations"), "summary"), summary);
    CHECK_STR(jstr(a, "generatorURL"), "");
    CHECK(jstr(a, "startsAt") && strlen(jstr(a, "startsAt")) == 24);
    CHECK(jstr(a, "endsAt") != NULL);
    CHECK(jstr(a, "fingerprint") && strlen(jstr(a, "fingerprint")) == 16);
    return a;
}

/* ==== Tests ==== */

static void test_url_ok(void)
{
    CHECK(sc_webhook_url_ok("http://127.0.0.1:9093/api/v1/alerts"));
    CHECK(sc_webhook_url_ok("HTTPS://hooks.example.com/x?y=1"));
    CHECK(!sc_webhook_url_ok("ftp://example.com/"));
    CHECK(!sc_webhook_url_ok("file:///etc/passwd"));
    CHECK(!sc_webhook_url_ok("http://"));
    CHECK(!sc_webhook_url_ok("http:///path"));
    CHECK(!sc_webhook_url_ok("example.com/hook"));
    CHECK(!sc_webhook_url_ok("http://exa mple.com/"));
    CHECK(!sc_webhook_url_ok(""));
    char err[256];
    CHECK_EQ_INT(sc_webhook_start("gopher://x", err, sizeof err), -1);
    CHECK(strstr(err, "http") != NULL);
}

static void test_payload(void)
{
    sc_webhook_alert_t a = {"high_fallback_rate",
                            false,
                            true,
                            1000.5,
                            0,
                            "fallback rate 34% over \"50\" requests",
                            0.34};
    sc_buf_t b = SC_BUF_INIT;
    CHECK(sc_webhook_payload(&a, &b) == 0);
    cJSON *j = cJSON_Parse(b.data);
    const cJSON *x = check_shape(j, "firing", "high_fallback_rate", "warning",
                                 "fallback rate 34% over \"50\" requests");
    CHECK_STR(jstr(x, "startsAt"), "1970-01-01T00:16:40.500Z");
    CHECK_STR(jstr(x, "endsAt"), "0001-01-01T00:00:00Z");
    CHECK_STR(jstr(cJSON_GetObjectItem(x, "annotations"), "value"), "0.34");
    cJSON_Delete(j);
    sc_buf_free(&b);

    sc_webhook_alert_t r = {"low_kontext_success_rate", true, false, 1000, 1060, "down", NAN};
    CHECK(sc_webhook_payload(&r, &b) == 0);
    j = cJSON_Parse(b.data);
    x = check_shape(j, "resolved", "low_kontext_success_rate", "critical", "down");
    CHECK_STR(jstr(x, "startsAt"), "1970-01-01T00:16:40.000Z");
    CHECK_STR(jstr(x, "endsAt"), "1970-01-01T00:17:40.000Z");
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(x, "annotations"), "value") == NULL);
    cJSON_Delete(j);
    sc_buf_free(&b);
}

static void test_retries(void)
{
    receiver_t rx;
    const int script[] = {500, 500, 200};
    CHECK(rx_start(&rx, script, 3) == 0);
    char url[128], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", rx.port);
    sc_webhook__set_backoff(0.01);
    CHECK_EQ_INT(sc_webhook_start(url, err, sizeof err), 0);
    CHECK_EQ_INT(sc_webhook_start(url, err, sizeof err), -1); /* already running */
    sc_webhook_alert_t a = {"r1", false, true, 2000, 0, "s1", NAN};
    sc_webhook_enqueue(&a);
    CHECK_EQ_INT(sc_webhook_wait_idle(30), 0);
    sc_webhook_stats_t st;
    sc_webhook_stats(&st);
    CHECK_EQ_INT(st.queued, 1);
    CHECK_EQ_INT(st.attempts, 3);
    CHECK_EQ_INT(st.delivered, 1);
    CHECK_EQ_INT(st.failed, 0);
    CHECK_EQ_INT(rx_count(&rx), 3);
    for (int k = 0; k < rx_count(&rx); k++) {
        CHECK_STR(rx.request_line[k], "POST /hook HTTP/1.1");
        CHECK(rx.content_json[k]);
        cJSON *j = cJSON_Parse(rx.bodies[k]);
        check_shape(j, "firing", "r1", "warning", "s1");
        cJSON_Delete(j);
    }

    /* a receiver that always fails: 3 tries, then given up */
    pthread_mutex_lock(&rx.mu);
    rx.nscript = 16;
    for (int k = 0; k < 16; k++)
        rx.script[k] = 503;
    pthread_mutex_unlock(&rx.mu);
    sc_webhook_alert_t b = {"r2", true, false, 2000, 2100, "s2", NAN};
    sc_webhook_enqueue(&b);
    CHECK_EQ_INT(sc_webhook_wait_idle(30), 0);
    sc_webhook_stats(&st);
    CHECK_EQ_INT(st.attempts, 6);
    CHECK_EQ_INT(st.delivered, 1);
    CHECK_EQ_INT(st.failed, 1);
    CHECK_EQ_INT(rx_count(&rx), 6);
    sc_webhook_stop();
    /* after stop, enqueue is a no-op */
    sc_webhook_enqueue(&a);
    sc_webhook_stats(&st);
    CHECK_EQ_INT(st.queued, 2);
    rx_stop(&rx);
}

/* Nothing listens on the port: every try fails fast, the queue fills and the
 * oldest notifications are dropped; enqueue never blocks. */
static void test_queue_drops_oldest(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    close(fd); /* the port is now (almost certainly) closed */
    char url[128], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(a.sin_port));
    sc_webhook__set_backoff(0.05);
    CHECK_EQ_INT(sc_webhook_start(url, err, sizeof err), 0);
    sc_webhook_alert_t x = {"q", false, true, 1, 0, "s", NAN};
    double t0 = sc_clock_mono();
    for (int k = 0; k < SC_WEBHOOK_QUEUE_MAX + 40; k++)
        sc_webhook_enqueue(&x);
    double spent = sc_clock_mono() - t0;
    sc_webhook_stats_t st;
    sc_webhook_stats(&st);
    CHECK_EQ_INT(st.queued, SC_WEBHOOK_QUEUE_MAX + 40);
    CHECK(st.dropped >= 1);
    CHECK_EQ_INT(st.delivered, 0);
    CHECK(spent < 5.0); /* generous: enqueue does no network I/O */
    sc_webhook_stop();
}

static void test_alert_changes_posted(void)
{
    char dir[] = "/tmp/sc-alerts-wh-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/alerts.lua", dir);
    const char *src = "return {{ name = 'storm', severity = 'critical', for_seconds = 0,\n"
                      "  when = function(m) return (m.fallbacks or 0) >= 3 end,\n"
                      "  summary = function(m) return m.fallbacks .. ' fallbacks' end,\n"
                      "  value = function(m) return m.fallbacks end }}\n";
    CHECK(sc_fs_write_atomic(path, src, strlen(src)) == 0);

    receiver_t rx;
    CHECK(rx_start(&rx, NULL, 0) == 0);
    sc_config_t cfg;
    char err[1024] = "";
    sc_config_defaults(&cfg);
    snprintf(cfg.alerts_file, sizeof cfg.alerts_file, "%s", path);

    snprintf(cfg.alert_webhook_url, sizeof cfg.alert_webhook_url, "ftp://127.0.0.1/");
    CHECK_EQ_INT(sc_alerts__init(&cfg, false, err, sizeof err), -1);
    CHECK(strstr(err, "ALERT_WEBHOOK_URL") != NULL);

    snprintf(cfg.alert_webhook_url, sizeof cfg.alert_webhook_url, "http://127.0.0.1:%d/am",
             rx.port);
    CHECK_EQ_INT(sc_alerts__init(&cfg, false, err, sizeof err), 0);
    sc_metrics_snapshot_t s;
    sc_alert_rules_sample(&s, false);
    sc_alerts__evaluate_with(3000, &s); /* quiet: nothing sent */
    s.fallbacks = 4;
    sc_alerts__evaluate_with(3001, &s); /* firing */
    sc_alerts__evaluate_with(3002, &s); /* still firing: nothing new */
    s.fallbacks = 0;
    sc_alerts__evaluate_with(3010, &s); /* resolved */
    CHECK_EQ_INT(sc_webhook_wait_idle(30), 0);
    CHECK_EQ_INT(rx_count(&rx), 2);
    if (rx_count(&rx) == 2) {
        cJSON *f = cJSON_Parse(rx.bodies[0]);
        const cJSON *fa = check_shape(f, "firing", "storm", "critical", "4 fallbacks");
        CHECK_STR(jstr(fa, "startsAt"), "1970-01-01T00:50:01.000Z");
        CHECK_STR(jstr(cJSON_GetObjectItem(fa, "annotations"), "value"), "4");
        cJSON *r = cJSON_Parse(rx.bodies[1]);
        const cJSON *ra = check_shape(r, "resolved", "storm", "critical", "4 fallbacks");
        CHECK_STR(jstr(ra, "startsAt"), "1970-01-01T00:50:01.000Z");
        CHECK_STR(jstr(ra, "endsAt"), "1970-01-01T00:50:10.000Z");
        cJSON_Delete(f);
        cJSON_Delete(r);
    }
    sc_alerts_shutdown();
    rx_stop(&rx);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    /* the receiver is local: make sure no proxy from the environment is involved */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("ALL_PROXY");
    unsetenv("all_proxy");
    test_url_ok();
    test_payload();
    test_retries();
    test_queue_drops_oldest();
    test_alert_changes_posted();
    return test_report("alerts_webhook_test");
}
