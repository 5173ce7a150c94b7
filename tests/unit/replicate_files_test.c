/* Files API inputs (src/replicate/files.c) through the real client against the
 * local fake (tests/fake/fake_replicate.py): small inputs stay data URIs, large
 * ones are uploaded once (also under concurrency) and reused until shortly
 * before expires_at, failures and hangs end as -2 (api_error). Runs from the
 * repo root (ctest sets it). */
#include <cjson/cJSON.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "fake_replicate.h"
#include "image/codec.h"
#include "replicate/base64.h"
#include "replicate/client.h"
#include "replicate/files.h"
#include "replicate/inputs.h"
#include "test.h"

#define TOKEN "r8_unitTestFilesToken_41c2"

static sc_config_t g_cfg;

static void configure(const char *json)
{
    CHECK_EQ_INT(test_fake_configure(json), 0);
    sc_files_reset();
}

/* POSTs to /v1/files the fake saw. */
static int file_posts(void)
{
    cJSON *s = test_fake_control("GET", "/_control/stats", NULL);
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(s, "requests"))
    {
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "path"));
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r, "method"));
        n += p && m && strcmp(p, "/v1/files") == 0 && strcmp(m, "POST") == 0;
    }
    cJSON_Delete(s);
    return n;
}

/* The one stored file's field (string), copied into out; "" when not exactly one. */
static void only_file(const char *field, char *out, size_t outlen)
{
    out[0] = '\0';
    cJSON *s = test_fake_control("GET", "/_control/stats", NULL);
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(s, "files");
    if (cJSON_GetArraySize(files) == 1) {
        const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(files->child, field));
        snprintf(out, outlen, "%s", v ? v : "");
    }
    cJSON_Delete(s);
}

static uint8_t *random_bytes(size_t n, unsigned seed)
{
    uint8_t *b = malloc(n);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (uint8_t)x;
    }
    return b;
}

/* ==== Tests ==== */

static void test_parse_time(void)
{
    double t = 0;
    CHECK_EQ_INT(sc_files_parse_time("2024-08-23T12:26:51.079Z", &t), 0);
    CHECK(t > 1724416011.078 && t < 1724416011.080);
    CHECK_EQ_INT(sc_files_parse_time("2024-08-23T14:26:51Z", &t), 0);
    CHECK(t == 1724423211.0);
    CHECK_EQ_INT(sc_files_parse_time("2024-08-23T14:26:51.000+02:00", &t), 0);
    CHECK(t == 1724416011.0);
    CHECK_EQ_INT(sc_files_parse_time("2024-08-23T12:26:51.123456789Z", &t), 0);
    CHECK_EQ_INT(sc_files_parse_time("2024-08-23 12:26:51Z", &t), -1);
    CHECK_EQ_INT(sc_files_parse_time("2024-08-23T12:26:51", &t), -1);
    CHECK_EQ_INT(sc_files_parse_time("2024-13-23T12:26:51Z", &t), -1);
    CHECK_EQ_INT(sc_files_parse_time("", &t), -1);
    CHECK_EQ_INT(sc_files_parse_time(NULL, &t), -1);
}

static void test_small_stays_data_uri(void)
{
    configure("{}");
    /* base64 of 196,000 bytes + prefix is just under 256 KB */
    size_t n = 196000;
    uint8_t *b = random_bytes(n, 1);
    char *out = NULL, err[256] = "";
    CHECK_EQ_INT(sc_files_input(b, n, "image/png", 10, &out, err, sizeof err), 0);
    CHECK(out && strncmp(out, "data:image/png;base64,", 22) == 0);
    CHECK(out && strlen(out) <= SC_FILES_DATA_URI_MAX);
    CHECK_EQ_INT(file_posts(), 0);
    free(out);
    free(b);
}

static void test_large_uploaded_once(void)
{
    configure("{}");
    size_t n = 300000;
    uint8_t *b = random_bytes(n, 2);
    char *out = NULL, *again = NULL, err[256] = "";
    CHECK_EQ_INT(sc_files_input(b, n, "image/png", 10, &out, err, sizeof err), 0);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/v1/files/", test_fake_root);
    CHECK(out && strncmp(out, prefix, strlen(prefix)) == 0);
    CHECK_EQ_INT(test_fake_stat_int("file_uploads"), 1);
    /* the bytes arrived intact: the fake's SHA-256 of the part equals ours */
    uint8_t h[SHA256_DIGEST_LENGTH];
    SHA256(b, n, h);
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    char got[128];
    only_file("sha256", got, sizeof got);
    CHECK_STR(got, hex);
    only_file("name", got, sizeof got);
    CHECK(strncmp(got, "input-", 6) == 0 && strstr(got, ".png") != NULL);
    /* the same bytes again: the cached URL, no second upload */
    CHECK_EQ_INT(sc_files_input(b, n, "image/png", 10, &again, err, sizeof err), 0);
    CHECK(out && again && strcmp(out, again) == 0);
    CHECK_EQ_INT(file_posts(), 1);
    long uploads = 0, hits = 0;
    sc_files_stats(&uploads, &hits);
    CHECK_EQ_INT(uploads, 1);
    CHECK_EQ_INT(hits, 1);
    /* other bytes: another file */
    b[0] ^= 1;
    free(again);
    again = NULL;
    CHECK_EQ_INT(sc_files_input(b, n, "image/jpeg", 10, &again, err, sizeof err), 0);
    CHECK(out && again && strcmp(out, again) != 0);
    CHECK_EQ_INT(file_posts(), 2);
    free(out);
    free(again);
    free(b);
}

typedef struct {
    const uint8_t *b;
    size_t n;
    char *out;
    int rc;
} job_t;

static void *one(void *arg)
{
    job_t *j = arg;
    char err[256];
    j->rc = sc_files_input(j->b, j->n, "image/png", 20, &j->out, err, sizeof err);
    return NULL;
}

static void test_concurrent_same_bytes_one_upload(void)
{
    /* a slow-ish upload (big body through a Python server) keeps it in flight */
    configure("{}");
    size_t n = 4u << 20;
    uint8_t *b = random_bytes(n, 3);
    job_t jobs[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        jobs[i] = (job_t){b, n, NULL, -9};
        CHECK(pthread_create(&th[i], NULL, one, &jobs[i]) == 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ_INT(jobs[i].rc, 0);
        CHECK(jobs[i].out && jobs[0].out && strcmp(jobs[i].out, jobs[0].out) == 0);
    }
    for (int i = 0; i < 8; i++)
        free(jobs[i].out);
    CHECK_EQ_INT(file_posts(), 1);
    free(b);
}

static void test_expiry_uploads_again(void)
{
    configure("{\"file_lifetime_s\": 1}");
    size_t n = 300000;
    uint8_t *b = random_bytes(n, 4);
    char *a = NULL, *c = NULL, err[256] = "";
    CHECK_EQ_INT(sc_files_input(b, n, "image/png", 10, &a, err, sizeof err), 0);
    /* reused until a tenth of the lifetime before expires_at, i.e. ~0.9 s */
    usleep(1000 * 1000);
    CHECK_EQ_INT(sc_files_input(b, n, "image/png", 10, &c, err, sizeof err), 0);
    CHECK(a && c && strcmp(a, c) != 0);
    CHECK_EQ_INT(file_posts(), 2);
    free(a);
    free(c);
    free(b);
}

static void test_failures_are_api_errors(void)
{
    size_t n = 300000;
    uint8_t *b = random_bytes(n, 5);
    char *out = NULL, err[256] = "";
    configure("{\"files_mode\": \"http500\"}");
    CHECK_EQ_INT(sc_files_input(b, n, "image/png", 10, &out, err, sizeof err), -2);
    CHECK(out == NULL);
    CHECK(strstr(err, "HTTP 500") != NULL);
    CHECK_EQ_INT(file_posts(), 3); /* the first try and two retries */
    /* nothing cached: the next call tries again and, the fake healthy, succeeds */
    configure("{}");
    CHECK_EQ_INT(sc_files_input(b, n, "image/png", 10, &out, err, sizeof err), 0);
    free(out);
    out = NULL;
    /* a hanging Files API: -2 once the timeout has passed */
    configure("{\"files_mode\": \"hang\"}");
    double t0 = sc_clock_mono();
    CHECK_EQ_INT(sc_files_input(b, n, "image/png", 1.0, &out, err, sizeof err), -2);
    double secs = sc_clock_mono() - t0;
    CHECK(secs >= 0.9 && secs < 10);
    CHECK(strstr(err, "deadline") != NULL);
    CHECK(out == NULL);
    free(b);
}

/* The blocking Kontext inputs (replicate/inputs.h) are the two steps plus a
 * wait: an input too big for a data URI is uploaded and the wait is answered
 * from the I/O thread; a failed upload is -2. */
static void test_kontext_inputs_blocking(void)
{
    configure("{}");
    /* noise does not compress: a 400x400 RGB PNG is ~480 KB, over the data URI limit */
    sc_image_t big = SC_IMAGE_INIT, small = SC_IMAGE_INIT;
    CHECK_EQ_INT(sc_image_alloc(&big, 400, 400, 3), 0);
    CHECK_EQ_INT(sc_image_alloc(&small, 40, 30, 4), 0);
    uint8_t *noise = random_bytes(400 * 400 * 3, 6);
    memcpy(big.pixels, noise, 400 * 400 * 3);
    memset(small.pixels, 0x80, 40 * 30 * 4);
    free(noise);
    uint8_t *png = NULL, *tiny = NULL;
    size_t png_len = 0, tiny_len = 0;
    CHECK_EQ_INT(sc_codec_encode_png(&big, &png, &png_len), 0);
    CHECK_EQ_INT(sc_codec_encode_png(&small, &tiny, &tiny_len), 0);
    CHECK(sc_base64_encoded_len(png_len) > SC_FILES_DATA_URI_MAX);
    sc_inputs_file_t scene = {png, png_len, SC_FMT_PNG, 400, 400, 1, -1};
    sc_inputs_file_t product = {tiny, tiny_len, SC_FMT_PNG, 40, 30, 1, -1};
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/v1/files/", test_fake_root);

    char *json = NULL;
    CHECK_EQ_INT(sc_inputs_kontext_files(&scene, &product, "p", "png", 0, 10, &json), 0);
    cJSON *o = cJSON_Parse(json);
    const char *u1 = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "input_image_1"));
    const char *u2 = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "input_image_2"));
    CHECK(u1 && strncmp(u1, prefix, strlen(prefix)) == 0);
    CHECK(u2 && strncmp(u2, "data:image/png;base64,", 22) == 0);
    cJSON_Delete(o);
    free(json);
    json = NULL;
    CHECK_EQ_INT(file_posts(), 1);

    /* decoded images (sc_inputs_kontext_ex): a noise scene of 800x800 as JPEG q90 is
     * over the limit too */
    sc_image_t noisy = SC_IMAGE_INIT;
    CHECK_EQ_INT(sc_image_alloc(&noisy, 800, 800, 3), 0);
    noise = random_bytes(800 * 800 * 3, 7);
    memcpy(noisy.pixels, noise, 800 * 800 * 3);
    free(noise);
    CHECK_EQ_INT(sc_inputs_kontext_ex(&noisy, &small, NULL, 10, &json), 0);
    o = cJSON_Parse(json);
    u1 = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "input_image_1"));
    CHECK(u1 && strncmp(u1, prefix, strlen(prefix)) == 0);
    cJSON_Delete(o);
    free(json);
    json = NULL;
    CHECK_EQ_INT(file_posts(), 2);

    /* the Files API failing: -2 from both, *json NULL */
    configure("{\"files_mode\": \"http500\"}");
    CHECK_EQ_INT(sc_inputs_kontext_files(&scene, &product, "p", "png", 0, 10, &json), -2);
    CHECK(json == NULL);
    CHECK_EQ_INT(sc_inputs_kontext_ex(&noisy, &small, "p", 10, &json), -2);
    CHECK(json == NULL);
    configure("{}");
    free(png);
    free(tiny);
    sc_image_free(&big);
    sc_image_free(&small);
    sc_image_free(&noisy);
}

int main(void)
{
    char logdir[] = "/tmp/sc_files_test_XXXXXX";
    if (test_fake_setup(logdir, TOKEN, &g_cfg) != 0)
        return 1;
    CHECK_EQ_INT(sc_replicate_init(&g_cfg), 0);

    test_parse_time();
    test_small_stays_data_uri();
    test_large_uploaded_once();
    test_concurrent_same_bytes_one_upload();
    test_expiry_uploads_again();
    test_failures_are_api_errors();
    test_kontext_inputs_blocking();

    sc_replicate_shutdown();
    sc_files_reset();
    test_fake_teardown(logdir);
    return test_report("replicate_files_test");
}
