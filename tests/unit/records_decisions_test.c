/* Decision log: line format, rotation at a small size, newest-N across the
 * rotated files and across read-chunk boundaries, torn and oversized lines,
 * concurrent appends. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/buf.h"
#include "records/decisions.h"
#include "test.h"

static char g_dir[256];

static void fresh_dir(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
    mkdir(out, 0755);
}

static void entry_for(int i, char id[33], sc_decision_entry_t *e, sc_record_decision_t *d)
{
    snprintf(id, 33, "%032x", i);
    memset(e, 0, sizeof *e);
    memset(d, 0, sizeof *d);
    d->policy_version = 3;
    snprintf(d->rule, sizeof d->rule, "%s", i % 2 ? "percent_bucket" : "outside_rollout");
    snprintf(d->phase, sizeof d->phase, "limited");
    d->bucket = i % 100;
    d->percent = 25;
    e->ts = 1764547200 + i;
    e->id = id;
    e->user_id = "user-1";
    e->scene_w = 1920;
    e->scene_h = 1080;
    e->product_w = 512;
    e->product_h = 512;
    e->product_alpha = true;
    e->requested_method = i % 2 ? "kontext" : "pil";
    e->method = "pil";
    e->fallback_reason = i % 2 ? "timeout" : NULL;
    e->decision = d;
}

/* Collects ids of the lines passed, in order. */
typedef struct ids {
    int n;
    int v[4096];
    int bad;
} ids_t;

static int collect(const char *line, size_t len, void *ud)
{
    ids_t *c = ud;
    cJSON *o = cJSON_ParseWithLength(line, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    if (!cJSON_IsString(id) || c->n >= 4096)
        c->bad++;
    else
        c->v[c->n++] = (int)strtol(id->valuestring, NULL, 16);
    cJSON_Delete(o);
    return 0;
}

static void test_line_format(void)
{
    char dir[300], id[33];
    fresh_dir("format", dir, sizeof dir);
    sc_decisions_t *d = sc_decisions_open(dir, 0);
    CHECK(d != NULL);
    if (!d)
        return;
    sc_decision_entry_t e;
    sc_record_decision_t dec;
    entry_for(1, id, &e, &dec);
    /* A prompt longer than the cap, with a 2-byte character across the cut. */
    char prompt[SC_DECISIONS_PROMPT_MAX + 100];
    memset(prompt, 'a', sizeof prompt);
    prompt[SC_DECISIONS_PROMPT_MAX - 1] = (char)0xC3; /* é = C3 A9 */
    prompt[SC_DECISIONS_PROMPT_MAX] = (char)0xA9;
    prompt[sizeof prompt - 1] = '\0';
    e.prompt = prompt;
    CHECK(sc_decisions_append(d, &e) == 0);
    entry_for(2, id, &e, &dec);
    e.user_id = NULL;
    e.decision = NULL;
    CHECK(sc_decisions_append(d, &e) == 0);

    sc_buf_t b = SC_BUF_INIT;
    CHECK(sc_decisions_newest_json(d, 10, &b) == 0);
    cJSON *o = cJSON_Parse(b.data);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "decisions");
    CHECK_EQ_INT(cJSON_GetArraySize(arr), 2);
    const cJSON *newest = cJSON_GetArrayItem(arr, 0), *older = cJSON_GetArrayItem(arr, 1);
    CHECK_STR(cJSON_GetObjectItem(newest, "id")->valuestring, "00000000000000000000000000000002");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(newest, "user_id")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(newest, "fallback_reason")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(newest, "decision"), "rule")));
    CHECK_STR(cJSON_GetObjectItem(newest, "ts")->valuestring, "2025-12-01T00:00:02.000Z");
    const cJSON *p = cJSON_GetObjectItem(older, "prompt");
    CHECK(cJSON_IsString(p) && strlen(p->valuestring) == SC_DECISIONS_PROMPT_MAX - 1);
    CHECK_STR(cJSON_GetObjectItem(older, "fallback_reason")->valuestring, "timeout");
    const cJSON *dd = cJSON_GetObjectItem(older, "decision");
    CHECK_STR(cJSON_GetObjectItem(dd, "rule")->valuestring, "percent_bucket");
    CHECK_EQ_INT(cJSON_GetObjectItem(dd, "bucket")->valueint, 1);
    CHECK_EQ_INT(cJSON_GetObjectItem(dd, "policy_version")->valueint, 3);
    const cJSON *prod = cJSON_GetObjectItem(older, "product");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(prod, "has_alpha")));
    CHECK_EQ_INT(cJSON_GetObjectItem(prod, "width")->valueint, 512);
    cJSON_Delete(o);
    sc_buf_free(&b);

    /* A torn last line (crash mid-write by an older binary) is left out of the
     * JSON, and the next append still lands on a line of its own... */
    char path[400];
    snprintf(path, sizeof path, "%s/decisions.jsonl", dir);
    FILE *f = fopen(path, "a");
    fputs("{\"ts\":\"2025-12-01T00:00:03.000Z\",\"id\":\"0000", f);
    fclose(f);
    sc_decisions_close(d);
    d = sc_decisions_open(dir, 0);
    CHECK(sc_decisions_newest_json(d, 1, &b) == 0);
    CHECK(strstr(b.data, "00000000000000000000000000000002") != NULL);
    sc_buf_free(&b);
    entry_for(4, id, &e, &dec);
    CHECK(sc_decisions_append(d, &e) == 0);
    ids_t c = {0};
    CHECK_EQ_INT(sc_decisions_newest(d, 3, collect, &c), 3);
    CHECK_EQ_INT(c.bad, 1); /* the torn line, passed as it is */
    CHECK_EQ_INT(c.n, 2);
    CHECK_EQ_INT(c.v[0], 4);
    CHECK_EQ_INT(c.v[1], 2);
    sc_decisions_close(d);
}

/* Same line length for every i (the rotation test counts bytes). */
static void uniform_entry(int i, char id[33], sc_decision_entry_t *e, sc_record_decision_t *d)
{
    entry_for(i, id, e, d);
    d->bucket = 50;
    snprintf(d->rule, sizeof d->rule, "percent_bucket");
    e->requested_method = "kontext";
    e->fallback_reason = "timeout";
}

static void test_rotation(void)
{
    char dir[300], id[33], path[400];
    fresh_dir("rotation", dir, sizeof dir);
    sc_decision_entry_t e;
    sc_record_decision_t dec;
    uniform_entry(0, id, &e, &dec);
    sc_buf_t one = SC_BUF_INIT;
    sc_decisions_entry_json(&e, &one);
    size_t line = one.len + 1;
    sc_buf_free(&one);
    /* Room for 5 lines per file. */
    sc_decisions_t *d = sc_decisions_open(dir, line * 5 + line / 2);
    CHECK(d != NULL);
    if (!d)
        return;
    for (int i = 0; i < 23; i++) {
        uniform_entry(i, id, &e, &dec);
        CHECK(sc_decisions_append(d, &e) == 0);
    }
    /* 23 lines: current holds 20..22, .1 holds 15..19, .2 holds 10..14; 0..9 dropped. */
    struct stat st;
    const char *names[] = {"decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"};
    size_t expect[] = {3, 5, 5};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        CHECK(stat(path, &st) == 0);
        CHECK_EQ_INT(st.st_size, (long long)(expect[i] * line));
        CHECK(st.st_size <= (off_t)(line * 5 + line / 2));
    }
    snprintf(path, sizeof path, "%s/decisions.jsonl.3", dir);
    CHECK(stat(path, &st) != 0);

    ids_t c = {0};
    CHECK_EQ_INT(sc_decisions_newest(d, 9, collect, &c), 9); /* crosses into .1 */
    CHECK_EQ_INT(c.n, 9);
    for (int i = 0; i < c.n; i++)
        CHECK_EQ_INT(c.v[i], 22 - i);
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(sc_decisions_newest(d, 1000, collect, &c), 13); /* everything kept */
    for (int i = 0; i < c.n; i++)
        CHECK_EQ_INT(c.v[i], 22 - i);
    CHECK_EQ_INT(c.bad, 0);
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(sc_decisions_newest(d, 0, collect, &c), 0);

    /* Reopening continues the current file's size (no early or late rotation). */
    sc_decisions_close(d);
    d = sc_decisions_open(dir, line * 5 + line / 2);
    for (int i = 23; i < 25; i++) {
        uniform_entry(i, id, &e, &dec);
        CHECK(sc_decisions_append(d, &e) == 0);
    }
    snprintf(path, sizeof path, "%s/decisions.jsonl", dir);
    CHECK(stat(path, &st) == 0 && st.st_size == (off_t)(5 * line));
    uniform_entry(25, id, &e, &dec);
    CHECK(sc_decisions_append(d, &e) == 0);
    CHECK(stat(path, &st) == 0 && st.st_size == (off_t)line);
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(sc_decisions_newest(d, 7, collect, &c), 7);
    for (int i = 0; i < c.n; i++)
        CHECK_EQ_INT(c.v[i], 25 - i);
    sc_decisions_close(d);
}

/* Many lines (several 64 KiB read chunks) and one oversized line. */
static void test_chunks_and_giant_line(void)
{
    char dir[300], id[33], path[400];
    fresh_dir("chunks", dir, sizeof dir);
    sc_decisions_t *d = sc_decisions_open(dir, 0);
    sc_decision_entry_t e;
    sc_record_decision_t dec;
    char prompt[700];
    memset(prompt, 'p', sizeof prompt - 1);
    prompt[sizeof prompt - 1] = '\0';
    for (int i = 0; i < 1500; i++) {
        entry_for(i, id, &e, &dec);
        e.prompt = i % 3 ? prompt : "short"; /* lines of uneven length */
        CHECK(sc_decisions_append(d, &e) == 0);
        if (i == 700) {
            sc_decisions_close(d);
            /* a line over SC_DECISIONS_LINE_MAX, written by someone else */
            snprintf(path, sizeof path, "%s/decisions.jsonl", dir);
            FILE *f = fopen(path, "a");
            for (size_t k = 0; k < SC_DECISIONS_LINE_MAX + 70000; k++)
                fputc('x', f);
            fputc('\n', f);
            fclose(f);
            d = sc_decisions_open(dir, 0);
        }
    }
    static ids_t c;
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(sc_decisions_newest(d, 1500, collect, &c), 1500);
    CHECK_EQ_INT(c.bad, 0);
    bool ordered = true;
    for (int i = 0; i < c.n; i++)
        ordered &= c.v[i] == 1499 - i;
    CHECK(ordered);
    sc_decisions_close(d);
}

typedef struct thr {
    sc_decisions_t *d;
    int base;
} thr_t;

static void *appender(void *p)
{
    thr_t *t = p;
    char id[33];
    sc_decision_entry_t e;
    sc_record_decision_t dec;
    for (int i = 0; i < 400; i++) {
        entry_for(t->base + i, id, &e, &dec);
        sc_decisions_append(t->d, &e);
    }
    return NULL;
}

static void test_threads(void)
{
    char dir[300];
    fresh_dir("threads", dir, sizeof dir);
    sc_decisions_t *d = sc_decisions_open(dir, 0);
    pthread_t th[4];
    thr_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_t){d, i * 1000};
        pthread_create(&th[i], NULL, appender, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    static ids_t c;
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(sc_decisions_newest(d, 4000, collect, &c), 1600);
    CHECK_EQ_INT(c.bad, 0); /* no interleaved lines */
    int seen[4] = {0};
    for (int i = 0; i < c.n; i++)
        seen[c.v[i] / 1000]++;
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(seen[i], 400);
    sc_decisions_close(d);
}

static void test_open_errors(void)
{
    errno = 0;
    CHECK(sc_decisions_open("/proc/no/such/dir", 0) == NULL);
    CHECK(errno != 0);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/sc_decisions_test_%d", (int)getpid());
    mkdir(g_dir, 0755);
    test_line_format();
    test_rotation();
    test_chunks_and_giant_line();
    test_threads();
    test_open_errors();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    return test_report("records_decisions_test");
}
