/* Records: JSON round trip, public vs file view, bad input, atomic save, load
 * by id, the start-up scan of "processing" records. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/fsutil.h"
#include "records/record.h"
#include "test.h"

static char g_dir[256];

static void full_record(sc_record_t *r)
{
    sc_record_init(r);
    snprintf(r->id, sizeof r->id, "0123456789abcdef0123456789abcdef");
    r->status = SC_RECORD_SUCCEEDED;
    r->created_at = 1764547200.125; /* 2025-12-01T00:00:00.125Z */
    r->completed_at = 1764547212.5;
    snprintf(r->method, sizeof r->method, "pil");
    snprintf(r->requested_method, sizeof r->requested_method, "kontext");
    r->fallback = true;
    snprintf(r->fallback_reason, sizeof r->fallback_reason, "timeout");
    snprintf(r->keying, sizeof r->keying, "skipped");
    r->decision.policy_version = 7;
    snprintf(r->decision.phase, sizeof r->decision.phase, "limited");
    snprintf(r->decision.rule, sizeof r->decision.rule, "percent_bucket");
    r->decision.bucket = 12;
    r->decision.percent = 25;
    snprintf(r->prediction_id, sizeof r->prediction_id, "q6ck0kj5x9rm80cky7c9v0hwq4");
    r->durations.total = 12.375;
    r->durations.queue = 0.5;
    r->durations.decode = 0.25;
    r->durations.kontext = 11;
    r->durations.composite = 0.125;
    r->durations.encode = 0.25;
    r->durations.save = 0.25;
    r->estimated_cost_usd = 0.08;
    r->width = 1920;
    r->height = 1080;
    snprintf(r->format, sizeof r->format, "png");
    snprintf(r->image_url, sizeof r->image_url, "/api/composites/%s.png", r->id);
    snprintf(r->webhook_url, sizeof r->webhook_url, "https://hooks.example.com/x?token=abc");
    r->respond_async = true;
}

static bool same_num(double a, double b)
{
    return (isnan(a) && isnan(b)) || fabs(a - b) < 1e-9;
}

static bool same_record(const sc_record_t *a, const sc_record_t *b)
{
    return strcmp(a->id, b->id) == 0 && a->status == b->status &&
           same_num(a->created_at, b->created_at) && same_num(a->completed_at, b->completed_at) &&
           strcmp(a->method, b->method) == 0 &&
           strcmp(a->requested_method, b->requested_method) == 0 && a->fallback == b->fallback &&
           strcmp(a->fallback_reason, b->fallback_reason) == 0 &&
           strcmp(a->keying, b->keying) == 0 &&
           a->decision.policy_version == b->decision.policy_version &&
           strcmp(a->decision.phase, b->decision.phase) == 0 &&
           strcmp(a->decision.rule, b->decision.rule) == 0 &&
           a->decision.bucket == b->decision.bucket &&
           same_num(a->decision.percent, b->decision.percent) &&
           strcmp(a->prediction_id, b->prediction_id) == 0 &&
           same_num(a->durations.total, b->durations.total) &&
           same_num(a->durations.queue, b->durations.queue) &&
           same_num(a->durations.decode, b->durations.decode) &&
           same_num(a->durations.kontext, b->durations.kontext) &&
           same_num(a->durations.composite, b->durations.composite) &&
           same_num(a->durations.encode, b->durations.encode) &&
           same_num(a->durations.save, b->durations.save) &&
           same_num(a->estimated_cost_usd, b->estimated_cost_usd) && a->width == b->width &&
           a->height == b->height && strcmp(a->format, b->format) == 0 &&
           strcmp(a->image_url, b->image_url) == 0 && strcmp(a->error_code, b->error_code) == 0 &&
           strcmp(a->error_message, b->error_message) == 0 &&
           strcmp(a->webhook_url, b->webhook_url) == 0 && a->respond_async == b->respond_async;
}

static void test_round_trip(void)
{
    sc_record_t a, b;
    char err[256];
    full_record(&a);
    sc_buf_t j = SC_BUF_INIT;
    CHECK(sc_record_to_json(&a, true, &j) == 0);
    CHECK(sc_record_from_json(j.data, j.len, &b, err, sizeof err) == 0);
    CHECK(same_record(&a, &b));
    CHECK(strstr(j.data, "\"created_at\":\"2025-12-01T00:00:00.125Z\"") != NULL);
    CHECK(strstr(j.data, "\"decision\":{\"policy_version\":7,\"phase\":\"limited\","
                         "\"rule\":\"percent_bucket\",\"bucket\":12,\"percent\":25}") != NULL);
    sc_buf_free(&j);

    /* The public view never carries the webhook URL (it may hold a token). */
    CHECK(sc_record_to_json(&a, false, &j) == 0);
    CHECK(strstr(j.data, "webhook") == NULL);
    CHECK(strstr(j.data, "token=abc") == NULL);
    CHECK(strstr(j.data, "respond_async") == NULL);
    sc_buf_free(&j);

    /* A fresh record: every unknown key is present and null. */
    sc_record_init(&a);
    snprintf(a.id, sizeof a.id, "fedcba9876543210fedcba9876543210");
    a.status = SC_RECORD_FAILED;
    snprintf(a.error_code, sizeof a.error_code, "api_error");
    snprintf(a.error_message, sizeof a.error_message, "prediction failed: \"nsfw\"\n");
    CHECK(sc_record_to_json(&a, false, &j) == 0);
    const char *nulls[] = {"\"completed_at\":null",
                           "\"method\":null",
                           "\"fallback_reason\":null",
                           "\"policy_version\":null",
                           "\"rule\":null",
                           "\"bucket\":null",
                           "\"percent\":null",
                           "\"prediction_id\":null",
                           "\"total\":null",
                           "\"save\":null",
                           "\"estimated_cost_usd\":null",
                           "\"width\":null",
                           "\"image_url\":null",
                           "\"fallback\":false",
                           "\"status\":\"failed\""};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
        if (!strstr(j.data, nulls[i]))
            fprintf(stderr, "missing %s in %s\n", nulls[i], j.data);
        CHECK(strstr(j.data, nulls[i]) != NULL);
    }
    CHECK(sc_record_from_json(j.data, j.len, &b, err, sizeof err) == 0);
    CHECK(same_record(&a, &b));
    CHECK(isnan(b.durations.kontext) && b.width == 0 && b.decision.bucket == -1);
    sc_buf_free(&j);
}

static void test_bad_json(void)
{
    sc_record_t r;
    char err[256];
    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"", "not a JSON object"},
        {"[]", "not a JSON object"},
        {"{\"id\":\"../../etc/passwd\",\"status\":\"processing\"}", "'id'"},
        {"{\"status\":\"processing\"}", "'id'"},
        {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"done\"}", "'status'"},
        {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\",\"width\":\"x\"}",
         "'width'"},
        {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\",\"width\":1.5}",
         "'width'"},
        {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\",\"decision\":"
         "{\"bucket\":100}}",
         "'bucket'"},
        {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\",\"decision\":3}",
         "'decision'"},
        {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\",\"created_at\":"
         "\"yesterday\"}",
         "'created_at'"},
        {"{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"failed\",\"fallback\":1}",
         "'fallback'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = sc_record_from_json(bad[i].json, strlen(bad[i].json), &r, err, sizeof err);
        CHECK(rc == -1);
        if (!strstr(err, bad[i].needle))
            fprintf(stderr, "case %zu: error '%s' lacks %s\n", i, err, bad[i].needle);
        CHECK(strstr(err, bad[i].needle) != NULL);
    }
    /* A prediction id longer than the field is refused, not truncated. */
    sc_buf_t b = SC_BUF_INIT;
    sc_buf_puts(&b, "{\"id\":\"0123456789abcdef0123456789abcdef\",\"status\":\"processing\","
                    "\"prediction_id\":\"");
    for (int i = 0; i < 200; i++)
        sc_buf_puts(&b, "a");
    sc_buf_puts(&b, "\"}");
    CHECK(sc_record_from_json(b.data, b.len, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "prediction_id") != NULL);
    sc_buf_free(&b);
}

/* Every truncation and many single-byte mutations of a valid record either
 * parse or are refused with a message: no crash, no leak (ASan build). */
static void test_mutations(void)
{
    sc_record_t a, b;
    char err[256];
    full_record(&a);
    sc_buf_t j = SC_BUF_INIT;
    CHECK(sc_record_to_json(&a, true, &j) == 0);
    int refused = 0;
    for (size_t cut = 0; cut < j.len; cut++) {
        err[0] = '\0';
        if (sc_record_from_json(j.data, cut, &b, err, sizeof err) != 0) {
            refused++;
            CHECK(err[0] != '\0');
        }
    }
    CHECK(refused == (int)j.len); /* a cut JSON object never parses */
    static const char subst[] = "\"{}[],:0-9en\\\x01\xff";
    unsigned seed = 12345;
    for (int k = 0; k < 5000; k++) {
        seed = seed * 1103515245u + 12345u;
        size_t pos = (seed >> 8) % j.len;
        char saved = j.data[pos];
        j.data[pos] = subst[(seed >> 20) % (sizeof subst - 1)];
        err[0] = '\0';
        if (sc_record_from_json(j.data, j.len, &b, err, sizeof err) != 0)
            CHECK(err[0] != '\0');
        j.data[pos] = saved;
    }
    sc_buf_free(&j);
}

static int count_cb(const sc_record_t *r, void *ud)
{
    char *ids = ud;
    strcat(ids, r->id);
    strcat(ids, ";");
    return 0;
}

static void test_files(void)
{
    sc_record_t a, b;
    char err[512], path[512];
    full_record(&a);
    CHECK(sc_record_save(g_dir, &a) == 0);
    CHECK_EQ_INT(sc_record_load(g_dir, a.id, strlen(a.id), &b, err, sizeof err), SC_RECORD_OK);
    CHECK(same_record(&a, &b));

    /* Ids are checked before any path is built. */
    CHECK_EQ_INT(sc_record_load(g_dir, "../x", 4, &b, err, sizeof err), SC_RECORD_BAD_ID);
    CHECK_EQ_INT(sc_record_load(g_dir, "0123456789ABCDEF0123456789abcdef", 32, &b, err, sizeof err),
                 SC_RECORD_BAD_ID);
    CHECK_EQ_INT(sc_record_load(g_dir, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 32, &b, err, sizeof err),
                 SC_RECORD_NOT_FOUND);
    /* An id given with its ".json" tail (not NUL-terminated) reads only 32 chars. */
    char withtail[64];
    snprintf(withtail, sizeof withtail, "%s.json", a.id);
    CHECK_EQ_INT(sc_record_load(g_dir, withtail, 32, &b, err, sizeof err), SC_RECORD_OK);
    sc_record_t bad = a;
    snprintf(bad.id, sizeof bad.id, "nope");
    errno = 0;
    CHECK(sc_record_save(g_dir, &bad) == -1 && errno == EINVAL);

    /* A corrupt file is reported as such, not as missing. */
    snprintf(path, sizeof path, "%s/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.json", g_dir);
    CHECK(sc_fs_write_atomic(path, "{\"id\":", 6) == 0);
    CHECK_EQ_INT(sc_record_load(g_dir, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 32, &b, err, sizeof err),
                 SC_RECORD_CORRUPT);
    /* A file holding another id's record is corrupt too. */
    snprintf(path, sizeof path, "%s/cccccccccccccccccccccccccccccccc.json", g_dir);
    sc_buf_t j = SC_BUF_INIT;
    CHECK(sc_record_to_json(&a, true, &j) == 0);
    CHECK(sc_fs_write_atomic(path, j.data, j.len) == 0);
    sc_buf_free(&j);
    CHECK_EQ_INT(sc_record_load(g_dir, "cccccccccccccccccccccccccccccccc", 32, &b, err, sizeof err),
                 SC_RECORD_CORRUPT);

    /* Simulated crash during a save: a fully written temp file was never
     * renamed. The record on disk is the previous one, the temp file is
     * not a record, and the scan ignores it. */
    sc_record_t p;
    full_record(&p);
    snprintf(p.id, sizeof p.id, "dddddddddddddddddddddddddddddddd");
    p.status = SC_RECORD_PROCESSING;
    snprintf(p.prediction_id, sizeof p.prediction_id, "pred-1");
    CHECK(sc_record_save(g_dir, &p) == 0);
    sc_record_t newer = p;
    newer.status = SC_RECORD_SUCCEEDED;
    CHECK(sc_record_to_json(&newer, true, &j) == 0);
    snprintf(path, sizeof path, "%s/%s.json.tmp.1a2b3c4d", g_dir, p.id);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fwrite(j.data, 1, j.len / 2, f); /* cut short, as by kill -9 */
        fclose(f);
    }
    sc_buf_free(&j);
    CHECK_EQ_INT(sc_record_load(g_dir, p.id, 32, &b, err, sizeof err), SC_RECORD_OK);
    CHECK_EQ_INT(b.status, SC_RECORD_PROCESSING);
    CHECK_STR(b.prediction_id, "pred-1");

    /* A second processing record, without prediction id. */
    sc_record_t q;
    sc_record_init(&q);
    snprintf(q.id, sizeof q.id, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee");
    q.created_at = 1764547200;
    CHECK(sc_record_save(g_dir, &q) == 0);

    char ids[512] = "";
    int n = sc_record_scan_processing(g_dir, count_cb, ids);
    CHECK_EQ_INT(n, 2); /* d… and e…; a… succeeded, b…/c… corrupt, the temp file skipped */
    CHECK(strstr(ids, "dddddddddddddddddddddddddddddddd;") != NULL);
    CHECK(strstr(ids, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee;") != NULL);
    CHECK(strstr(ids, a.id) == NULL);

    /* A missing directory is simply empty. */
    snprintf(path, sizeof path, "%s/missing", g_dir);
    CHECK_EQ_INT(sc_record_scan_processing(path, count_cb, ids), 0);
    /* The save creates OUTPUT_DIR when needed. */
    CHECK(sc_record_save(path, &q) == 0);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/sc_records_test_%d", (int)getpid());
    mkdir(g_dir, 0755);
    test_round_trip();
    test_bad_json();
    test_mutations();
    test_files();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    return test_report("records_record_test");
}
