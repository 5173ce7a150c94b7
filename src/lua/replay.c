/* Policy replay over decision-log lines (see replay.h). */
#include "lua/replay.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

void sc_policy_replay_init(sc_policy_replay_result_t *r)
{
    memset(r, 0, sizeof *r);
}

static const char *route_name(sc_route_t m)
{
    return m == SC_ROUTE_KONTEXT ? "kontext" : "pil";
}

/* Reads {width, height, has_alpha} of o[key]. Returns 0, or -1 when it is
 * missing or not of those types. */
static int get_image(const cJSON *o, const char *key, int *w, int *h, bool *alpha)
{
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(o, key);
    const cJSON *jw = cJSON_GetObjectItemCaseSensitive(img, "width");
    const cJSON *jh = cJSON_GetObjectItemCaseSensitive(img, "height");
    const cJSON *ja = cJSON_GetObjectItemCaseSensitive(img, "has_alpha");
    if (!cJSON_IsNumber(jw) || !cJSON_IsNumber(jh) || !cJSON_IsBool(ja) ||
        !(jw->valuedouble >= 0 && jw->valuedouble <= 1e6) ||
        !(jh->valuedouble >= 0 && jh->valuedouble <= 1e6))
        return -1;
    *w = (int)jw->valuedouble;
    *h = (int)jh->valuedouble;
    *alpha = cJSON_IsTrue(ja);
    return 0;
}

/* A string member, or NULL when missing/null/not a string. */
static const char *get_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Copies s into dst with control bytes replaced by '?' (examples are printed
 * to terminals). */
static void copy_printable(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "");
    for (char *p = dst; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

int sc_policy_replay_line(const char *line, size_t len, sc_policy_replay_route_fn route, void *ud,
                          sc_policy_replay_result_t *r)
{
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len == 0)
        return 1; /* blank lines are not counted */
    cJSON *o = cJSON_ParseWithLength(line, len);
    sc_policy_req_t req;
    memset(&req, 0, sizeof req);
    const char *before = o ? get_str(o, "requested_method") : NULL;
    if (!cJSON_IsObject(o) || !before ||
        (strcmp(before, "kontext") != 0 && strcmp(before, "pil") != 0) ||
        get_image(o, "scene", &req.scene_w, &req.scene_h, &req.scene_alpha) != 0 ||
        get_image(o, "product", &req.product_w, &req.product_h, &req.product_alpha) != 0) {
        r->skipped++;
        cJSON_Delete(o);
        return 1;
    }
    req.user_id = get_str(o, "user_id");
    req.prompt = get_str(o, "prompt");
    sc_route_t was = before[0] == 'k' ? SC_ROUTE_KONTEXT : SC_ROUTE_PIL;
    sc_route_t now = route(ud, &req);
    r->replayed++;
    if (now != was) {
        r->changed++;
        if (was == SC_ROUTE_KONTEXT)
            r->kontext_to_pil++;
        else
            r->pil_to_kontext++;
        if (r->nexamples < SC_POLICY_REPLAY_EXAMPLES) {
            sc_policy_replay_example_t *e = &r->examples[r->nexamples++];
            const char *id = get_str(o, "id"), *ts = get_str(o, "ts");
            copy_printable(e->id, sizeof e->id, id);
            copy_printable(e->ts, sizeof e->ts, ts);
            copy_printable(e->user_id, sizeof e->user_id, req.user_id);
            e->before = was;
            e->after = now;
        }
    }
    cJSON_Delete(o);
    return 0;
}

int sc_policy_replay_file(const char *path, sc_policy_replay_route_fn route, void *ud,
                          sc_policy_replay_result_t *r, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0)
        sc_policy_replay_line(line, (size_t)n, route, ud, r);
    int rc = 0;
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

sc_route_t sc_policy_replay_route_current(void *ud, const sc_policy_req_t *req)
{
    sc_policy_effective_t eff;
    (void)ud;
    return sc_policy_route(req, &eff);
}

int sc_policy_replay_result_json(const sc_policy_replay_result_t *r, sc_buf_t *out)
{
    int rc =
        sc_buf_printf(out,
                      "{\"valid\":true,\"replayed\":%lld,\"changed\":%lld,"
                      "\"kontext_to_pil\":%lld,\"pil_to_kontext\":%lld,\"skipped\":%lld,"
                      "\"examples\":[",
                      r->replayed, r->changed, r->kontext_to_pil, r->pil_to_kontext, r->skipped);
    for (int i = 0; i < r->nexamples; i++) {
        const sc_policy_replay_example_t *e = &r->examples[i];
        rc |= sc_buf_puts(out, i ? ",{\"id\":" : "{\"id\":");
        rc |= sc_buf_json_str(out, e->id[0] ? e->id : NULL);
        rc |= sc_buf_puts(out, ",\"ts\":");
        rc |= sc_buf_json_str(out, e->ts[0] ? e->ts : NULL);
        rc |= sc_buf_puts(out, ",\"user_id\":");
        rc |= sc_buf_json_str(out, e->user_id[0] ? e->user_id : NULL);
        rc |= sc_buf_printf(out, ",\"before\":\"%s\",\"after\":\"%s\"}", route_name(e->before),
                            route_name(e->after));
    }
    rc |= sc_buf_puts(out, "]}");
    return rc ? -1 : 0;
}

void sc_policy_replay_print(const sc_policy_replay_result_t *r, void *file)
{
    FILE *f = file;
    fprintf(f, "replayed %lld, changed %lld (kontext->pil %lld, pil->kontext %lld)\n", r->replayed,
            r->changed, r->kontext_to_pil, r->pil_to_kontext);
    if (r->skipped)
        fprintf(f, "skipped %lld lines that are not decisions\n", r->skipped);
    for (int i = 0; i < r->nexamples; i++) {
        const sc_policy_replay_example_t *e = &r->examples[i];
        fprintf(f, "  %s %s user=%s: %s -> %s\n", e->ts[0] ? e->ts : "-", e->id[0] ? e->id : "-",
                e->user_id[0] ? e->user_id : "-", route_name(e->before), route_name(e->after));
    }
}
