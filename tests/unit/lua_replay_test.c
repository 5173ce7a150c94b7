/* Replay core: line parsing, counting, the example cap, the preview JSON. The
 * routing function here is a stand-in; the real one (sc_policy_route) is
 * covered by tests/integration/test_policy_replay.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "lua/replay.h"
#include "records/decisions.h"
#include "test.h"

/* Routes users whose id starts with 'k' to kontext; records what it saw. */
typedef struct seen {
    int calls;
    sc_policy_req_t last;
    char user[64], prompt[64];
} seen_t;

static sc_route_t by_initial(void *ud, const sc_policy_req_t *req)
{
    seen_t *s = ud;
    s->calls++;
    s->last = *req;
    snprintf(s->user, sizeof s->user, "%s", req->user_id ? req->user_id : "(nil)");
    snprintf(s->prompt, sizeof s->prompt, "%s", req->prompt ? req->prompt : "(nil)");
    return req->user_id && req->user_id[0] == 'k' ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL;
}

static int replay(const char *line, seen_t *s, sc_policy_replay_result_t *r)
{
    return sc_policy_replay_line(line, strlen(line), by_initial, s, r);
}

int main(void)
{
    sc_policy_replay_result_t r;
    seen_t s = {0};
    sc_policy_replay_init(&r);
    const char *ok = "{\"ts\":\"t1\",\"id\":\"a1\",\"user_id\":\"kim\",\"prompt\":\"p\","
                     "\"scene\":{\"width\":1920,\"height\":1080,\"has_alpha\":false},"
                     "\"product\":{\"width\":300,\"height\":200,\"has_alpha\":true},"
                     "\"requested_method\":\"pil\",\"method\":\"pil\"}\n";
    CHECK_EQ_INT(replay(ok, &s, &r), 0);
    CHECK_EQ_INT(s.last.scene_w, 1920);
    CHECK_EQ_INT(s.last.scene_h, 1080);
    CHECK(!s.last.scene_alpha && s.last.product_alpha);
    CHECK_EQ_INT(s.last.product_w, 300);
    CHECK_STR(s.user, "kim");
    CHECK_STR(s.prompt, "p");
    CHECK_EQ_INT(r.pil_to_kontext, 1);

    /* null user and prompt reach the route as NULL; control bytes in an
     * example are neutralised (they are printed to terminals). */
    const char *nul = "{\"id\":\"a\\u001b2\",\"user_id\":null,\"prompt\":null,"
                      "\"scene\":{\"width\":1,\"height\":1,\"has_alpha\":false},"
                      "\"product\":{\"width\":1,\"height\":1,\"has_alpha\":false},"
                      "\"requested_method\":\"kontext\"}";
    CHECK_EQ_INT(replay(nul, &s, &r), 0);
    CHECK_STR(s.user, "(nil)");
    CHECK_STR(s.prompt, "(nil)");
    CHECK_STR(r.examples[1].id, "a?2");

    static const char *skipped[] = {
        "garbage",
        "[1,2]",
        "{\"requested_method\":\"pil\"}",
        "{\"requested_method\":\"both\",\"scene\":{\"width\":1,\"height\":1,\"has_alpha\":false},"
        "\"product\":{\"width\":1,\"height\":1,\"has_alpha\":false}}",
        "{\"requested_method\":\"pil\",\"scene\":{\"width\":\"1\",\"height\":1,\"has_alpha\":false}"
        ","
        "\"product\":{\"width\":1,\"height\":1,\"has_alpha\":false}}",
        "{\"requested_method\":\"pil\",\"scene\":{\"width\":1e300,\"height\":1,\"has_alpha\":false}"
        ","
        "\"product\":{\"width\":1,\"height\":1,\"has_alpha\":false}}",
    };
    int calls = s.calls;
    for (size_t i = 0; i < sizeof skipped / sizeof skipped[0]; i++)
        CHECK_EQ_INT(replay(skipped[i], &s, &r), 1);
    CHECK_EQ_INT(s.calls, calls); /* never routed */
    CHECK_EQ_INT(r.skipped, 6);
    CHECK_EQ_INT(replay("\n", &s, &r), 1);
    CHECK_EQ_INT(r.skipped, 6); /* blank lines are not counted */

    /* 12 more changes: examples stop at 10. */
    char line[512];
    for (int i = 0; i < 12; i++) {
        snprintf(line, sizeof line,
                 "{\"id\":\"c%d\",\"user_id\":\"u%d\",\"scene\":{\"width\":1,\"height\":1,"
                 "\"has_alpha\":false},\"product\":{\"width\":1,\"height\":1,\"has_alpha\":false},"
                 "\"requested_method\":\"kontext\"}",
                 i, i);
        replay(line, &s, &r);
    }
    CHECK_EQ_INT(r.replayed, 14);
    CHECK_EQ_INT(r.changed, 14);
    CHECK_EQ_INT(r.kontext_to_pil, 13);
    CHECK_EQ_INT(r.pil_to_kontext, 1);
    CHECK_EQ_INT(r.nexamples, 10);
    CHECK_STR(r.examples[9].id, "c7");

    sc_buf_t b = SC_BUF_INIT;
    CHECK(sc_policy_replay_result_json(&r, &b) == 0);
    cJSON *o = cJSON_Parse(b.data);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(o, "valid")));
    CHECK_EQ_INT(cJSON_GetObjectItem(o, "replayed")->valueint, 14);
    CHECK_EQ_INT(cJSON_GetObjectItem(o, "kontext_to_pil")->valueint, 13);
    const cJSON *ex = cJSON_GetObjectItem(o, "examples");
    CHECK_EQ_INT(cJSON_GetArraySize(ex), 10);
    const cJSON *e0 = cJSON_GetArrayItem(ex, 0);
    CHECK_STR(cJSON_GetObjectItem(e0, "before")->valuestring, "pil");
    CHECK_STR(cJSON_GetObjectItem(e0, "after")->valuestring, "kontext");
    CHECK_STR(cJSON_GetObjectItem(e0, "user_id")->valuestring, "kim");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(ex, 1), "user_id")));
    cJSON_Delete(o);
    sc_buf_free(&b);

    /* What the decision log writes is what the replay reads: entries written
     * by sc_decisions_append (rotated file included via newest) replay with
     * their fields intact. */
    char dir[128], path[256], id[33];
    snprintf(dir, sizeof dir, "/tmp/sc_replay_test_%d", (int)getpid());
    mkdir(dir, 0755);
    sc_decisions_t *log = sc_decisions_open(dir, 0);
    CHECK(log != NULL);
    static const char *users[] = {"kate", "bob", NULL, "kurt"};
    static const char *req[] = {"pil", "kontext", "kontext", "kontext"};
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "%032x", i + 1);
        sc_decision_entry_t e = {.ts = 1764547200 + i,
                                 .id = id,
                                 .user_id = users[i],
                                 .prompt = "p",
                                 .scene_w = 100 + i,
                                 .scene_h = 50,
                                 .product_w = 10,
                                 .product_h = 10,
                                 .product_alpha = true,
                                 .requested_method = req[i],
                                 .method = "pil"};
        CHECK(sc_decisions_append(log, &e) == 0);
    }
    sc_decisions_close(log);
    snprintf(path, sizeof path, "%s/decisions.jsonl", dir);
    sc_policy_replay_init(&r);
    memset(&s, 0, sizeof s);
    char err[256];
    CHECK(sc_policy_replay_file(path, by_initial, &s, &r, err, sizeof err) == 0);
    CHECK_EQ_INT(r.replayed, 4);
    CHECK_EQ_INT(r.skipped, 0);
    CHECK_EQ_INT(r.pil_to_kontext, 1); /* kate */
    CHECK_EQ_INT(r.kontext_to_pil, 2); /* bob, no user; kurt stays kontext */
    CHECK_EQ_INT(s.last.scene_w, 103);
    CHECK(s.last.product_alpha);
    CHECK_STR(r.examples[0].ts, "2025-12-01T00:00:00.000Z");
    CHECK_STR(r.examples[0].id, "00000000000000000000000000000001");
    CHECK(sc_policy_replay_file("/nonexistent/decisions.jsonl", by_initial, &s, &r, err,
                                sizeof err) == -1);
    CHECK(strstr(err, "/nonexistent/decisions.jsonl") != NULL);
    unlink(path);
    rmdir(dir);
    return test_report("lua_replay_test");
}
