/* The Replicate client against the local fake (tests/fake/fake_replicate.py),
 * one fault mode at a time: each must end in the right sc_rep_status_t, with the
 * fake's own counters (creates, cancels, in-flight maximum, recorded headers)
 * confirming what went over the wire. Runs from the repo root (ctest sets it). */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/durable.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "fake_replicate.h"
#include "image/codec.h"
#include "replicate/base64.h"
#include "replicate/client.h"
#include "test.h"

#define TOKEN "r8_unitTestSecretToken_9f8e7d"
#define KONTEXT "flux-kontext-apps/multi-image-kontext-pro"
#define SCHNELL "black-forest-labs/flux-schnell"

static sc_config_t g_cfg;

static void configure(const char *json)
{
    CHECK_EQ_INT(test_fake_configure(json), 0);
}

/* ==== Running jobs ==== */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
    sc_rep_result_t *results[64];
    int n;
} waiter_t;

static waiter_t g_w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}, 0};

static void on_done(sc_rep_result_t *res, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&g_w.mu);
    if (g_w.n < 64)
        g_w.results[g_w.n++] = res;
    else
        sc_replicate_result_free(res);
    g_w.pending--;
    pthread_cond_broadcast(&g_w.cv);
    pthread_mutex_unlock(&g_w.mu);
}

static int g_count_ok;

/* Counts results without keeping them (for runs larger than the result array). */
static void on_done_count(sc_rep_result_t *res, void *ud)
{
    (void)ud;
    pthread_mutex_lock(&g_w.mu);
    g_count_ok += res && res->status == SC_REP_OK;
    g_w.pending--;
    pthread_cond_broadcast(&g_w.cv);
    pthread_mutex_unlock(&g_w.mu);
    sc_replicate_result_free(res);
}

static void wait_all(void)
{
    pthread_mutex_lock(&g_w.mu);
    while (g_w.pending > 0)
        pthread_cond_wait(&g_w.cv, &g_w.mu);
    pthread_mutex_unlock(&g_w.mu);
}

static void clear_results(void)
{
    for (int i = 0; i < g_w.n; i++)
        sc_replicate_result_free(g_w.results[i]);
    g_w.n = 0;
}

/* A small real PNG as a data URI, so the fake sizes its output like the scene. */
static char *png_data_uri(int w, int h)
{
    sc_image_t img;
    if (sc_image_alloc(&img, w, h, 3) != 0)
        return NULL;
    for (int i = 0; i < w * h * 3; i++)
        img.pixels[i] = (uint8_t)(i * 7);
    uint8_t *png;
    size_t len;
    int rc = sc_codec_encode_png(&img, &png, &len);
    sc_image_free(&img);
    if (rc != 0)
        return NULL;
    char *s = malloc(32 + sc_base64_encoded_len(len));
    strcpy(s, "data:image/png;base64,");
    sc_base64_encode(png, len, s + strlen(s));
    free(png);
    return s;
}

static char *kontext_input(int w, int h)
{
    char *uri = png_data_uri(w, h);
    sc_buf_t b = SC_BUF_INIT;
    sc_buf_printf(&b,
                  "{\"prompt\":\"put it on the table\",\"input_image_1\":\"%s\","
                  "\"input_image_2\":\"%s\",\"aspect_ratio\":\"match_input_image\","
                  "\"output_format\":\"png\",\"safety_tolerance\":2}",
                  uri, uri);
    free(uri);
    return sc_buf_steal(&b, NULL);
}

/* Runs one job to completion and returns its result (owned by g_w). */
static sc_rep_result_t *run_one(const char *model, char *input, double timeout)
{
    clear_results();
    pthread_mutex_lock(&g_w.mu);
    g_w.pending = 1;
    pthread_mutex_unlock(&g_w.mu);
    if (sc_replicate_submit(model, input, timeout, on_done, NULL) != 0) {
        g_w.pending = 0;
        return NULL;
    }
    wait_all();
    return g_w.n == 1 ? g_w.results[0] : NULL;
}

static bool contains(const char *s, const char *needle)
{
    return s && strstr(s, needle) != NULL;
}

/* ==== Cases ==== */

static void test_success(void)
{
    configure("{\"mode\":\"ok\",\"delay_ms\":300}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(40, 30), 20);
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK_STR(sc_replicate_status_name(r->status), "ok");
    CHECK_EQ_INT(strlen(r->prediction_id), 26);
    CHECK_EQ_INT(r->attempts, 1);
    CHECK(!r->cancel_sent);
    sc_image_info_t info;
    CHECK_EQ_INT(sc_codec_probe(r->output, r->output_len, 0, &info), SC_CODEC_OK);
    CHECK_EQ_INT(info.format, SC_FMT_PNG);
    CHECK_EQ_INT(info.width, 40); /* the fake sizes its output like input_image_1 */
    CHECK_EQ_INT(info.height, 30);
    CHECK_EQ_INT(test_fake_stat_int("creates"), 1);
    CHECK_EQ_INT(test_fake_stat_int("downloads"), 1);
    CHECK_EQ_INT(test_fake_stat_int("cancels"), 0);
}

/* Longer than Prefer: wait can hold: the client must poll GET urls.get. */
static void test_success_by_polling(void)
{
    configure("{\"mode\":\"ok\",\"delay_ms\":2600}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 3.5);
    CHECK(r && r->status == SC_REP_OK);
    CHECK(test_fake_stat_int("gets") >= 1);
}

static void test_scene_array_output(void)
{
    configure("{\"mode\":\"ok\",\"delay_ms\":100,\"default_width\":72,\"default_height\":40}");
    char *in = strdup("{\"prompt\":\"a lighthouse\",\"aspect_ratio\":\"16:9\",\"num_outputs\":2,"
                      "\"output_format\":\"png\",\"go_fast\":true}");
    sc_rep_result_t *r = run_one(SCHNELL, in, 20);
    CHECK(r && r->status == SC_REP_OK);
    sc_image_info_t info;
    CHECK(r && sc_codec_probe(r->output, r->output_len, 0, &info) == SC_CODEC_OK &&
          info.width == 72 && info.height == 40);
}

static void test_slow_times_out_and_cancels(void)
{
    configure("{\"mode\":\"slow\"}");
    double t0 = sc_clock_mono();
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 2.5);
    double took = sc_clock_mono() - t0;
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK_STR(sc_replicate_status_name(r->status), "timeout");
    CHECK(r->cancel_sent);
    CHECK_EQ_INT(strlen(r->prediction_id), 26);
    CHECK(took >= 2.4 && took < 15.0); /* generous: the deadline, not a hang */
    CHECK_EQ_INT(test_fake_stat_int("cancels"), 1);
    CHECK_EQ_INT(test_fake_stat_int("inflight"), 0); /* the fake saw the cancel: canceled */
    cJSON *s = test_fake_control("GET", "/_control/stats", NULL);
    cJSON *p = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(s, "predictions"),
                                                r->prediction_id);
    CHECK_STR(cJSON_GetStringValue(p), "canceled");
    /* Cancel-After was sent as a backstop, >= 5 s, in Replicate's syntax */
    bool cancel_after_ok = false, prefer_ok = false;
    cJSON *req;
    cJSON_ArrayForEach(req, cJSON_GetObjectItemCaseSensitive(s, "requests"))
    {
        cJSON *h = cJSON_GetObjectItemCaseSensitive(req, "headers");
        const char *ca = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(h, "Cancel-After"));
        const char *pw = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(h, "Prefer"));
        int secs = 0;
        if (ca && sscanf(ca, "%ds", &secs) == 1 && secs >= 5)
            cancel_after_ok = true;
        int n = 0;
        if (pw && sscanf(pw, "wait=%d", &n) == 1 && n >= 1 && n <= 60)
            prefer_ok = true;
    }
    CHECK(cancel_after_ok);
    CHECK(prefer_ok);
    cJSON_Delete(s);
}

/* A deadline too short for a sync wait: async create (no Prefer), poll, and
 * the cancel still goes out because the id is known. */
static void test_short_deadline_still_cancels(void)
{
    configure("{\"mode\":\"slow\"}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 1.2);
    CHECK(r && r->status == SC_REP_TIMEOUT);
    CHECK(r && r->cancel_sent);
    CHECK_EQ_INT(test_fake_stat_int("cancels"), 1);
    cJSON *s = test_fake_control("GET", "/_control/stats", NULL);
    cJSON *req = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(s, "requests"), 0);
    cJSON *h = cJSON_GetObjectItemCaseSensitive(req, "headers");
    CHECK(cJSON_GetObjectItemCaseSensitive(h, "Prefer") == NULL);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(h, "Cancel-After")), "12s");
    cJSON_Delete(s);
}

static void test_failed_prediction(void)
{
    configure("{\"mode\":\"failed\",\"delay_ms\":200}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR);
    CHECK(r && contains(r->message, "prediction failed: "));
    CHECK(r && contains(r->message, "(E005)"));
    CHECK(r && r->output == NULL);
}

static void test_http500_create(void)
{
    configure("{\"mode\":\"http500\",\"http500_target\":\"create\"}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR);
    CHECK(r && r->http_status == 500);
    CHECK(r && r->attempts == 2); /* documented: one retry of a 5xx create */
    CHECK(r && contains(r->message, "Internal server error"));
    CHECK_EQ_INT(test_fake_stat_int("create_requests"), 2);
    CHECK_EQ_INT(test_fake_stat_int("creates"), 0);

    /* an HTML 500 page is reported by its <title> */
    configure("{\"mode\":\"http500\",\"http500_target\":\"create\",\"http500_html\":true}");
    r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR);
    CHECK(r && contains(r->message, "HTTP 500: 500 Internal Server Error"));

    /* a single 500 is absorbed by the retry */
    configure("{\"mode\":\"http500\",\"http500_target\":\"create\",\"http500_count\":1}");
    r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_OK);
    CHECK(r && r->attempts == 2);
}

static void test_http500_get_retried(void)
{
    /* async answer so the client has to poll; the first two GETs fail with 500
     * and are retried */
    configure("{\"mode\":\"http500\",\"http500_target\":\"get\",\"http500_count\":2,"
              "\"delay_ms\":300,\"honor_prefer\":false}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_OK);
    CHECK_EQ_INT(test_fake_stat_int("http500_sent"), 2);
    CHECK(test_fake_stat_int("gets") >= 3);

    configure("{\"mode\":\"http500\",\"http500_target\":\"download\",\"http500_count\":1}");
    r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_OK);
    CHECK_EQ_INT(test_fake_stat_int("downloads"), 2);
}

static void test_rate429(void)
{
    configure("{\"mode\":\"rate429\",\"rate429_count\":1,\"retry_after\":1}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_OK);
    CHECK(r && r->attempts == 2);
    CHECK(r && r->seconds >= 0.9); /* waited for Retry-After: 1 */
    CHECK(test_fake_stat_int("create_requests") >= 2);
    CHECK_EQ_INT(test_fake_stat_int("creates"), 1);

    /* no header: body retry_after is honoured as well */
    configure("{\"mode\":\"rate429\",\"rate429_count\":2,\"retry_after\":1,"
              "\"retry_after_header\":false}");
    r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_OK);
    CHECK(r && r->attempts == 3 && r->seconds >= 1.8);

    /* a Retry-After beyond the deadline fails at once as an API error */
    configure("{\"mode\":\"rate429\",\"rate429_count\":-1,\"retry_after\":30}");
    r = run_one(KONTEXT, kontext_input(16, 16), 5);
    CHECK(r && r->status == SC_REP_API_ERROR && r->http_status == 429);
    CHECK(r && r->seconds < 4.0);
    CHECK(r && contains(r->message, "throttled"));
}

static void test_malformed_json(void)
{
    configure("{\"mode\":\"malformed_json\",\"malformed_target\":\"create\"}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR);
    CHECK(r && contains(r->message, "malformed JSON"));

    configure("{\"mode\":\"malformed_json\",\"malformed_target\":\"get\","
              "\"honor_prefer\":false}");
    r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR);
}

static void test_non_image_output(void)
{
    configure("{\"mode\":\"non_image_output\"}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_INVALID_OUTPUT);
    CHECK(r && r->output == NULL);
}

/* Outputs that must never be taken as an image. */
static void test_bad_output_values(void)
{
    /* a PNG header claiming 60000 x 60000 pixels (valid CRC), as a data URI */
    static const uint8_t huge_png[] = {
        0x89, 'P',  'N',  'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I',  'H',  'D',  'R', 0,
        0,    0xea, 0x60, 0,   0,    0xea, 0x60, 8,    2, 0, 0, 0,  0x0f, 0xb0, 0xe2, 0x15};
    char huge_uri[128] = "data:image/png;base64,";
    sc_base64_encode(huge_png, sizeof huge_png, huge_uri + strlen(huge_uri));
    char cfg[512];
    const char *values[] = {"null",
                            "[]",
                            "{\"a\":1}",
                            "\"ftp://127.0.0.1/x.png\"",
                            "\"data:image/png,not-base64\"",
                            "\"data:image/png;base64,@@@@\"",
                            "\"\"",
                            NULL};
    for (int i = 0; values[i]; i++) {
        snprintf(cfg, sizeof cfg, "{\"mode\":\"ok\",\"output_override\":%s}", values[i]);
        configure(cfg);
        sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
        CHECK(r && r->status == SC_REP_INVALID_OUTPUT);
        if (r && r->status != SC_REP_INVALID_OUTPUT)
            fprintf(stderr, "  output %s gave %s\n", values[i], r->message);
    }
    snprintf(cfg, sizeof cfg, "{\"mode\":\"ok\",\"output_override\":[\"%s\"]}", huge_uri);
    configure(cfg);
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_INVALID_OUTPUT && contains(r->message, "too large"));
    CHECK_EQ_INT(test_fake_stat_int("downloads"), 0);

    /* an output URL that 404s (expired delivery file) is an API error */
    snprintf(cfg, sizeof cfg, "{\"mode\":\"ok\",\"output_override\":\"%s/delivery/nope/x.png\"}",
             test_fake_root);
    configure(cfg);
    r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR && contains(r->message, "HTTP 404"));
}

static void test_hang(void)
{
    configure("{\"mode\":\"hang\",\"hang_target\":\"create\"}");
    double t0 = sc_clock_mono();
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 2.0);
    CHECK(r && r->status == SC_REP_TIMEOUT);
    CHECK(r && !r->cancel_sent); /* no id was ever returned */
    CHECK(sc_clock_mono() - t0 < 12.0);

    /* a hung poll: the id is known, so the timeout cancels upstream */
    configure("{\"mode\":\"hang\",\"hang_target\":\"get\",\"honor_prefer\":false}");
    r = run_one(KONTEXT, kontext_input(16, 16), 2.0);
    CHECK(r && r->status == SC_REP_TIMEOUT && r->cancel_sent);
    CHECK_EQ_INT(test_fake_stat_int("cancels"), 1);

    /* a hung download also ends at the deadline */
    configure("{\"mode\":\"hang\",\"hang_target\":\"download\"}");
    r = run_one(KONTEXT, kontext_input(16, 16), 2.0);
    CHECK(r && r->status == SC_REP_TIMEOUT);
}

static void test_unknown_model_and_4xx(void)
{
    configure("{\"mode\":\"unknown_model\"}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR && r->http_status == 404);
    CHECK(r && contains(r->message, "could not be found"));
    CHECK(r && r->attempts == 1);

    configure("{\"mode\":\"ok\"}");
    r = run_one("someone/not-official", kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR && r->http_status == 404);

    /* a model id that is not owner/name never reaches a URL */
    int before = test_fake_stat_int("create_requests");
    static const char *bad[] = {"../../etc", "owner/name/extra", "owner",
                                "/name",     "owner/",           "own er/name",
                                "./x",       "owner/..",         "owner/name?x=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = run_one(bad[i], kontext_input(16, 16), 20);
        CHECK(r && r->status == SC_REP_API_ERROR && contains(r->message, "invalid model id"));
    }
    CHECK_EQ_INT(test_fake_stat_int("create_requests"), before);

    /* 422: the fake validates the input like Replicate */
    r = run_one(KONTEXT, strdup("{\"input_image_1\":\"data:image/png;base64,AA==\"}"), 20);
    CHECK(r && r->status == SC_REP_API_ERROR && r->http_status == 422);
    CHECK(r && contains(r->message, "Input validation failed"));
    CHECK(r && contains(r->message, "prompt is required"));
    CHECK(r && r->attempts == 1);
}

static void test_data_uri_and_quirk(void)
{
    configure("{\"mode\":\"data_uri_output\"}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(24, 20), 20);
    CHECK(r && r->status == SC_REP_OK);
    sc_image_info_t info;
    CHECK(r && sc_codec_probe(r->output, r->output_len, 0, &info) == SC_CODEC_OK &&
          info.width == 24 && info.height == 20);
    CHECK_EQ_INT(test_fake_stat_int("downloads"), 0);

    configure("{\"mode\":\"processing_with_output\",\"delay_ms\":600}");
    r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_OK);
}

static void test_concurrent(int n)
{
    configure("{\"mode\":\"ok\",\"delay_ms\":700}");
    clear_results();
    pthread_mutex_lock(&g_w.mu);
    g_w.pending = n;
    pthread_mutex_unlock(&g_w.mu);
    char *in = kontext_input(16, 16);
    for (int i = 0; i < n; i++)
        if (sc_replicate_submit(KONTEXT, strdup(in), 30, on_done, NULL) != 0)
            on_done(NULL, NULL);
    free(in);
    wait_all();
    int ok = 0;
    for (int i = 0; i < g_w.n; i++)
        ok += g_w.results[i] && g_w.results[i]->status == SC_REP_OK;
    CHECK_EQ_INT(ok, n);
    CHECK_EQ_INT(test_fake_stat_int("creates"), n);
    int mx = test_fake_stat_int("max_inflight");
    CHECK(mx >= 2 && mx <= n); /* really concurrent, never more than submitted */
    clear_results();
}

static long proc_status(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':')
            v = atol(line + kl + 1);
    if (f)
        fclose(f);
    return v;
}

/* Many jobs in flight at once stay cheap: no thread per job, and a modest,
 * bounded amount of memory per job (the perf target is 1,000 in-flight
 * composites in 256 MiB for the whole service). */
static void test_many_in_flight(int n)
{
    configure("{\"mode\":\"ok\",\"delay_ms\":1500}");
    clear_results();
    char *in = kontext_input(16, 16);
    long threads0 = proc_status("Threads"), rss0 = proc_status("VmRSS");
    int done_ok = 0, max_threads = 0;
    long max_rss = 0;
    pthread_mutex_lock(&g_w.mu);
    g_w.pending = n;
    pthread_mutex_unlock(&g_w.mu);
    for (int i = 0; i < n; i++)
        if (sc_replicate_submit(KONTEXT, strdup(in), 60, on_done_count, NULL) != 0)
            on_done_count(NULL, NULL);
    free(in);
    for (;;) {
        long t = proc_status("Threads"), r = proc_status("VmRSS");
        if (t > max_threads)
            max_threads = (int)t;
        if (r > max_rss)
            max_rss = r;
        pthread_mutex_lock(&g_w.mu);
        int left = g_w.pending;
        done_ok = g_count_ok;
        pthread_mutex_unlock(&g_w.mu);
        if (left == 0)
            break;
        usleep(50 * 1000);
    }
    CHECK_EQ_INT(done_ok, n);
    CHECK(max_threads <= threads0 + 2); /* the one I/O thread, no thread per job */
    int mx = test_fake_stat_int("max_inflight");
    CHECK(mx >= 20); /* really concurrent at the fake (a Python server: modest bound) */
    double per_job_kb = (double)(max_rss - rss0) / n;
    fprintf(stderr,
            "  %d jobs: fake saw %d in flight, %ld threads max (start %ld), "
            "peak RSS +%ld KB (%.1f KB per job)\n",
            n, mx, (long)max_threads, threads0, max_rss - rss0, per_job_kb);
#if !defined(__SANITIZE_ADDRESS__)
    CHECK(per_job_kb < 128.0); /* measured ~25 KB (curl handle, connection, buffers) */
#endif
    g_count_ok = 0;
}

/* The token went only into Authorization (the fake checks every header, path
 * and body) and every API request carried it correctly. */
static void test_token_only_in_authorization(void)
{
    configure("{\"mode\":\"slow\"}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 2.2);
    CHECK(r && r->status == SC_REP_TIMEOUT);
    cJSON *s = test_fake_control("GET", "/_control/stats", NULL);
    int api = 0, good = 0, leaks = 0;
    cJSON *req;
    cJSON_ArrayForEach(req, cJSON_GetObjectItemCaseSensitive(s, "requests"))
    {
        const char *path = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "path"));
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "token_elsewhere")))
            leaks++;
        if (path && strncmp(path, "/v1/", 4) == 0) {
            api++;
            const char *a = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req, "auth"));
            good += a && strcmp(a, "bearer") == 0;
        }
    }
    CHECK(api >= 2); /* create + cancel at least */
    CHECK_EQ_INT(good, api);
    CHECK_EQ_INT(leaks, 0);
    CHECK(r && !contains(r->message, TOKEN));
    cJSON_Delete(s);

    /* a wrong token is a 401 API error */
    sc_config_t bad = g_cfg;
    snprintf(bad.replicate_api_token, sizeof bad.replicate_api_token, "r8_wrong");
    sc_replicate_shutdown();
    CHECK_EQ_INT(sc_replicate_init(&bad), 0);
    configure("{\"mode\":\"ok\"}");
    r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_API_ERROR && r->http_status == 401);
    CHECK(r && contains(r->message, "valid authentication token"));
    sc_replicate_shutdown();
    CHECK_EQ_INT(sc_replicate_init(&g_cfg), 0);
}

static void test_no_token(void)
{
    sc_config_t none = g_cfg;
    none.replicate_api_token[0] = '\0';
    sc_replicate_shutdown();
    CHECK_EQ_INT(sc_replicate_init(&none), 0);
    configure("{\"mode\":\"ok\"}");
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_NO_TOKEN);
    CHECK_STR(r ? sc_replicate_status_name(r->status) : NULL, "no_token");
    CHECK_EQ_INT(test_fake_stat_int("create_requests"), 0);
    sc_replicate_shutdown();
    CHECK_EQ_INT(sc_replicate_init(&g_cfg), 0);
}

static void test_connection_refused(void)
{
    /* a port nobody listens on: bind, read the port, close */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    sc_config_t dead = g_cfg;
    snprintf(dead.replicate_api_base, sizeof dead.replicate_api_base, "http://127.0.0.1:%d/v1",
             ntohs(a.sin_port));
    sc_replicate_shutdown();
    CHECK_EQ_INT(sc_replicate_init(&dead), 0);
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 30);
    CHECK(r && r->status == SC_REP_API_ERROR);
    CHECK(r && r->attempts == 4); /* documented: 3 retries of a connect failure */
    CHECK(r && contains(r->message, "create request failed"));
    sc_replicate_shutdown();
    CHECK_EQ_INT(sc_replicate_init(&g_cfg), 0);
}

static void test_shutdown_completes_pending(void)
{
    configure("{\"mode\":\"slow\"}");
    clear_results();
    pthread_mutex_lock(&g_w.mu);
    g_w.pending = 3;
    pthread_mutex_unlock(&g_w.mu);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sc_replicate_submit(KONTEXT, kontext_input(16, 16), 60, on_done, NULL), 0);
    usleep(300 * 1000);
    double t0 = sc_clock_mono();
    sc_replicate_shutdown();
    CHECK(sc_clock_mono() - t0 < 10.0);
    wait_all();
    CHECK_EQ_INT(g_w.n, 3);
    for (int i = 0; i < g_w.n; i++)
        CHECK(g_w.results[i] && g_w.results[i]->status == SC_REP_TIMEOUT);
    clear_results();
    /* stopped: submit refuses and frees the input */
    CHECK_EQ_INT(sc_replicate_submit(KONTEXT, kontext_input(16, 16), 5, on_done, NULL), -1);
    CHECK_EQ_INT(sc_replicate_init(&g_cfg), 0);
}

/* ==== The client socket watch and the journal ==== */

static atomic_int g_upstream_over;

static void count_upstream_over(void *ud)
{
    (void)ud;
    atomic_fetch_add(&g_upstream_over, 1);
}

/* Submits a slow job watching one end of a socketpair, closes the other end
 * (by close: the test's FIN) after 300 ms: the job must end as client_gone long
 * before its deadline, and its prediction be cancelled (after the create's wait
 * when the create is synchronous). */
static void test_client_gone(bool sync_create)
{
    configure(sync_create ? "{\"mode\":\"slow\"}" : "{\"mode\":\"slow\",\"honor_prefer\":false}");
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    clear_results();
    atomic_store(&g_upstream_over, 0);
    pthread_mutex_lock(&g_w.mu);
    g_w.pending = 1;
    pthread_mutex_unlock(&g_w.mu);
    sc_rep_opts_t o = {.client_fd = sv[0], .upstream_over = count_upstream_over};
    /* deadline 30 s, create wait 29 s when sync: the cancel follows the create's answer,
     * so the sync case uses a 4 s deadline (wait=3) */
    CHECK_EQ_INT(sc_replicate_submit_ex(KONTEXT, kontext_input(16, 16), sync_create ? 4 : 30, &o,
                                        on_done, NULL),
                 0);
    usleep(300 * 1000);
    close(sv[1]);
    wait_all();
    /* status client_gone, not timeout: done came from the close, not the deadline */
    CHECK_EQ_INT(g_w.n, 1);
    sc_rep_result_t *r = g_w.n == 1 ? g_w.results[0] : NULL;
    CHECK(r && r->status == SC_REP_CLIENT_GONE);
    CHECK_STR(sc_replicate_status_name(SC_REP_CLIENT_GONE), "client_gone");
    /* the prediction is cancelled, then the slot is given back */
    for (int i = 0; i < 200 && atomic_load(&g_upstream_over) == 0; i++)
        usleep(50 * 1000);
    CHECK_EQ_INT(atomic_load(&g_upstream_over), 1);
    CHECK_EQ_INT(test_fake_stat_int("cancels"), 1);
    CHECK_EQ_INT(test_fake_stat_int("inflight"), 0);
    close(sv[0]);
    clear_results();
}

/* Bytes waiting on the watched socket (a pipelined request) are not a
 * disconnect: the job runs to its own end. */
static void test_client_pipelined_is_not_gone(void)
{
    configure("{\"mode\":\"ok\",\"delay_ms\":800,\"honor_prefer\":false}");
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    CHECK_EQ_INT((int)write(sv[1], "GET / HTTP/1.1\r\n", 16), 16);
    clear_results();
    atomic_store(&g_upstream_over, 0);
    pthread_mutex_lock(&g_w.mu);
    g_w.pending = 1;
    pthread_mutex_unlock(&g_w.mu);
    sc_rep_opts_t o = {.client_fd = sv[0], .upstream_over = count_upstream_over};
    CHECK_EQ_INT(sc_replicate_submit_ex(KONTEXT, kontext_input(16, 16), 30, &o, on_done, NULL), 0);
    wait_all();
    CHECK(g_w.n == 1 && g_w.results[0]->status == SC_REP_OK);
    CHECK_EQ_INT(atomic_load(&g_upstream_over), 1); /* before done, for a normal end */
    close(sv[0]);
    close(sv[1]);
    clear_results();
}

static int count_lines(const char *path, const char *line)
{
    char *text = NULL;
    size_t len = 0;
    if (sc_fs_read_file(path, 1 << 20, &text, &len) != 0)
        return -1;
    int n = 0;
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        n++;
    free(text);
    return n;
}

/* The journal: an id left open by a "dead process" is cancelled at open and
 * leaves the journal; a job's id goes in at create and out when it is over. */
static void test_journal(const char *logdir)
{
    configure("{\"mode\":\"ok\",\"delay_ms\":300}");
    char path[512];
    snprintf(path, sizeof path, "%s/replicate_predictions.journal", logdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs("+orphan0000000000000000001\n+done00000000000000000000x\n-done00000000000000000000x\n"
          "+bad/id\n",
          f);
    fclose(f);
    CHECK_EQ_INT(sc_replicate_journal_open(path), 1);
    CHECK_EQ_INT(sc_replicate_journal_open(path), -1); /* once per client */
    for (int i = 0; i < 100 && test_fake_stat_int("cancels") < 1; i++)
        usleep(50 * 1000);
    CHECK_EQ_INT(test_fake_stat_int("cancels"),
                 1); /* the fake answers 404: it is over either way */
    for (int i = 0; i < 100 && count_lines(path, "-orphan0000000000000000001\n") < 1; i++)
        usleep(50 * 1000);
    CHECK_EQ_INT(count_lines(path, "-orphan0000000000000000001\n"), 1);
    CHECK_EQ_INT(count_lines(path, "done00000000000000000000x"), 0); /* closed: dropped */
    CHECK_EQ_INT(count_lines(path, "bad/id"), 0);
    sc_rep_result_t *r = run_one(KONTEXT, kontext_input(16, 16), 20);
    CHECK(r && r->status == SC_REP_OK);
    if (r) {
        char line[80];
        snprintf(line, sizeof line, "+%s\n", r->prediction_id);
        CHECK_EQ_INT(count_lines(path, line), 1);
        line[0] = '-';
        CHECK_EQ_INT(count_lines(path, line), 1);
    }
    clear_results();
}

static void test_log_has_no_token(const char *logdir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/backend.log", logdir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (!f)
        return;
    sc_buf_t b = SC_BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sc_buf_append(&b, chunk, n);
    fclose(f);
    CHECK(b.len > 0);
    CHECK(contains(b.data, "replicate: create")); /* debug lines per HTTP call exist */
    CHECK(!contains(b.data, TOKEN));
    CHECK(!contains(b.data, "[REDACTED]")); /* not even attempted: no secret registered */
    CHECK(!contains(b.data, "Bearer"));
    sc_buf_free(&b);
}

/* ==== The write-ahead gate (issue 11) ==== */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool block, blocked;
} g_gate_hook = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false};

/* The committer's fsync, held while block is set. */
static int blocking_fsync(int fd, const char *path, bool is_dir, void *ud)
{
    (void)path, (void)is_dir, (void)ud;
    pthread_mutex_lock(&g_gate_hook.mu);
    g_gate_hook.blocked = g_gate_hook.block;
    pthread_cond_broadcast(&g_gate_hook.cv);
    while (g_gate_hook.block)
        pthread_cond_wait(&g_gate_hook.cv, &g_gate_hook.mu);
    pthread_mutex_unlock(&g_gate_hook.mu);
    return fsync(fd);
}

/* A gated job is queued at once but sends no create while its write is held
 * in a blocked committer; once it commits, the create goes. A failed gate
 * sends nothing. */
static void test_gate(const char *dir)
{
    configure("{\"mode\":\"ok\",\"delay_ms\":50}");
    sc_durable_opts_t o = {.fsync_hook = blocking_fsync};
    sc_durable_t *d = sc_durable_start(&o);
    CHECK(d != NULL);
    g_gate_hook.block = true;
    char path[128];
    snprintf(path, sizeof path, "%s/gate_count.json", dir);
    sc_durable_ticket_t *t = sc_durable_ticket_new(sc_replicate_wake);
    sc_durable_ticket_ref(t); /* the write's */
    CHECK_EQ_INT(sc_durable_write(d, path, "{}", 2, sc_durable_ticket_done, t), 0);
    clear_results();
    g_w.pending = 1;
    sc_rep_opts_t opts = {.client_fd = -1, .gate = t};
    CHECK_EQ_INT(sc_replicate_submit_ex(KONTEXT, kontext_input(20, 20), 20, &opts, on_done, NULL),
                 0);
    sc_durable_ticket_unref(t); /* the job holds its own */
    usleep(400 * 1000);
    CHECK_EQ_INT(test_fake_stat_int("creates"), 0); /* the count is not on disk: nothing sent */
    pthread_mutex_lock(&g_w.mu);
    CHECK_EQ_INT(g_w.pending, 1);
    pthread_mutex_unlock(&g_w.mu);
    pthread_mutex_lock(&g_gate_hook.mu);
    g_gate_hook.block = false;
    pthread_cond_broadcast(&g_gate_hook.cv);
    pthread_mutex_unlock(&g_gate_hook.mu);
    wait_all();
    CHECK_EQ_INT(g_w.n, 1);
    if (g_w.n == 1) {
        CHECK_STR(sc_replicate_status_name(g_w.results[0]->status), "ok");
        CHECK(!g_w.results[0]->gate_closed);
    }
    CHECK_EQ_INT(test_fake_stat_int("creates"), 1);
    sc_durable_stop(d);

    /* a gate that fails: the job ends api_error, gate_closed, nothing sent */
    configure("{\"mode\":\"ok\"}");
    t = sc_durable_ticket_new(sc_replicate_wake);
    clear_results();
    g_w.pending = 1;
    opts.gate = t;
    CHECK_EQ_INT(sc_replicate_submit_ex(KONTEXT, kontext_input(20, 20), 20, &opts, on_done, NULL),
                 0);
    usleep(100 * 1000);
    sc_durable_ticket_complete(t, EIO);
    sc_durable_ticket_unref(t);
    wait_all();
    CHECK_EQ_INT(g_w.n, 1);
    if (g_w.n == 1) {
        CHECK_STR(sc_replicate_status_name(g_w.results[0]->status), "api_error");
        CHECK(g_w.results[0]->gate_closed);
        CHECK(!g_w.results[0]->prediction_id[0]);
    }
    CHECK_EQ_INT(test_fake_stat_int("creates"), 0);
    clear_results();
}

int main(void)
{
    char logdir[] = "/tmp/sc_rep_test_XXXXXX";
    if (test_fake_setup(logdir, TOKEN, &g_cfg) != 0)
        return 1;
    sc_log_set_level(SC_LOG_DEBUG);
    setenv("SC_REPLICATE_POLL_MS", "100", 1);
    CHECK_EQ_INT(sc_replicate_init(&g_cfg), 0);

    test_success();
    test_success_by_polling();
    test_scene_array_output();
    test_slow_times_out_and_cancels();
    test_short_deadline_still_cancels();
    test_failed_prediction();
    test_http500_create();
    test_http500_get_retried();
    test_rate429();
    test_malformed_json();
    test_non_image_output();
    test_bad_output_values();
    test_hang();
    test_unknown_model_and_4xx();
    test_data_uri_and_quirk();
    test_concurrent(50);
    test_many_in_flight(300);
    test_token_only_in_authorization();
    test_no_token();
    test_connection_refused();
    test_shutdown_completes_pending();
    test_client_gone(false);
    test_client_gone(true);
    test_client_pipelined_is_not_gone();
    test_journal(logdir);
    test_gate(logdir);
    clear_results();

    sc_replicate_shutdown();
    test_log_has_no_token(logdir);
    test_fake_teardown(logdir);
    return test_report("replicate_client_test");
}
