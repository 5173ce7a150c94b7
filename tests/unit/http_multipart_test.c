/* Unit tests for src/http/multipart.c: parts and names, any split of the
 * stream, boundaries inside content, malformed and truncated bodies. */
#include <stdlib.h>

#include "core/buf.h"
#include "http/multipart.h"
#include "test.h"

/* What the callback saw, as "name=content|" per part ("[name]" marks a part
 * start), so that two parses can be compared as strings. */
typedef struct {
    sc_buf_t log;
    int stop_after; /* stop at this many calls (0 = never) */
    int calls;
} collect_t;

static int collect(void *ud, const char *name, const char *data, size_t len, bool first)
{
    collect_t *c = ud;
    c->calls++;
    if (first) {
        if (c->log.len)
            sc_buf_puts(&c->log, "|");
        sc_buf_printf(&c->log, "[%s]", name);
        CHECK(len == 0);
    } else {
        CHECK(len > 0);
        sc_buf_append(&c->log, data, len);
    }
    return c->stop_after && c->calls >= c->stop_after ? 1 : 0;
}

/* Parses body fed in pieces of step bytes (0 = whole). Returns feed/finish
 * status (0 = complete) and the log in out (caller frees). */
static int parse(const char *boundary, const char *body, size_t len, size_t step, char **out)
{
    collect_t c = {SC_BUF_INIT, 0, 0};
    sc_multipart_t *m = sc_multipart_new(boundary, collect, &c);
    CHECK(m != NULL);
    int rc = 0;
    if (step == 0)
        step = len ? len : 1;
    for (size_t off = 0; off < len && rc == 0; off += step)
        rc = sc_multipart_feed(m, body + off, len - off < step ? len - off : step);
    if (rc == 0)
        rc = sc_multipart_finish(m);
    sc_multipart_free(m);
    sc_buf_puts(&c.log, "");
    size_t n = 0;
    *out = sc_buf_steal(&c.log, &n);
    return rc;
}

static const char k_body[] =
    "preamble to ignore\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"scene\"; filename=\"name=evil.png\"\r\n"
    "Content-Type: image/png\r\n"
    "\r\n"
    "PNG\r\n--XyNOT a boundary\r\n--Xy\r\n"
    "--XyZ  \r\n"
    "content-disposition: form-data; NAME=x\r\n"
    "\r\n"
    "0.25\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; filename=\"f\"; name=\"a\\\"q\"\r\n"
    "\r\n"
    "\r\n"
    "--XyZ\r\n"
    "\r\n"
    "no headers\r\n"
    "--XyZ--\r\n"
    "epilogue --XyZ\r\n";

static void test_parts_and_splits(void)
{
    const char *want = "[scene]PNG\r\n--XyNOT a boundary\r\n--Xy|[x]0.25|[a\"q]|[]no headers";
    size_t len = sizeof k_body - 1;
    for (size_t step = 0; step <= 9; step++) {
        char *got = NULL;
        CHECK_EQ_INT(parse("XyZ", k_body, len, step, &got), 0);
        CHECK_STR(got, want);
        free(got);
    }
    /* Every two-piece split gives the same parts. */
    for (size_t cut = 1; cut < len; cut++) {
        collect_t c = {SC_BUF_INIT, 0, 0};
        sc_multipart_t *m = sc_multipart_new("XyZ", collect, &c);
        int rc = sc_multipart_feed(m, k_body, cut);
        rc |= sc_multipart_feed(m, k_body + cut, len - cut);
        rc |= sc_multipart_finish(m);
        sc_multipart_free(m);
        sc_buf_puts(&c.log, "");
        if (rc != 0 || strcmp(c.log.data, want) != 0) {
            CHECK(!"split changed the parse");
            fprintf(stderr, "cut at %zu: '%s'\n", cut, c.log.data);
        }
        sc_buf_free(&c.log);
    }
}

static void test_first_boundary_at_start_and_empty_part(void)
{
    static const char body[] = "--b\r\nContent-Disposition: form-data; name=user_id\r\n\r\n"
                               "\r\n--b--";
    char *got = NULL;
    CHECK_EQ_INT(parse("b", body, sizeof body - 1, 0, &got), 0);
    CHECK_STR(got, "[user_id]"); /* present, empty */
    free(got);
}

static void test_malformed(void)
{
    char *got = NULL;
    /* truncated: no closing boundary */
    static const char trunc[] = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n12";
    CHECK(parse("b", trunc, sizeof trunc - 1, 0, &got) != 0);
    free(got);
    /* garbage right after a boundary */
    static const char garbage[] = "--b\r\n\r\nv\r\n--bX\r\n\r\n--b--";
    CHECK(parse("b", garbage, sizeof garbage - 1, 1, &got) != 0);
    free(got);
    /* no boundary at all */
    CHECK(parse("b", "just text", 9, 0, &got) != 0);
    free(got);
    /* a header block over the bound */
    size_t n = SC_MULTIPART_MAX_HEADERS + 64;
    char *big = malloc(n + 16);
    memcpy(big, "--b\r\nX: ", 8);
    memset(big + 8, 'h', n);
    CHECK(parse("b", big, n + 8, 4096, &got) != 0);
    free(got);
    free(big);
    /* the callback stops the parse; later feeds refuse too */
    collect_t c = {SC_BUF_INIT, 1, 0};
    sc_multipart_t *m = sc_multipart_new("b", collect, &c);
    static const char ok[] = "--b\r\n\r\nv\r\n--b--";
    CHECK(sc_multipart_feed(m, ok, sizeof ok - 1) != 0);
    CHECK(sc_multipart_feed(m, "x", 1) != 0);
    CHECK(sc_multipart_finish(m) != 0);
    sc_multipart_free(m);
    sc_buf_free(&c.log);
    /* bad boundaries */
    CHECK(sc_multipart_new("", collect, &c) == NULL);
    char longb[SC_MULTIPART_MAX_BOUNDARY + 2];
    memset(longb, 'a', sizeof longb - 1);
    longb[sizeof longb - 1] = '\0';
    CHECK(sc_multipart_new(longb, collect, &c) == NULL);
}

static void test_boundary_param(void)
{
    char b[SC_MULTIPART_MAX_BOUNDARY + 1];
    CHECK_EQ_INT(sc_multipart_boundary("multipart/form-data; boundary=abc", b, sizeof b), 0);
    CHECK_STR(b, "abc");
    CHECK_EQ_INT(
        sc_multipart_boundary("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b;c\"", b, sizeof b),
        0);
    CHECK_STR(b, "a b;c");
    CHECK_EQ_INT(sc_multipart_boundary("multipart/form-data", b, sizeof b), -1);
    CHECK_EQ_INT(sc_multipart_boundary("multipart/form-data; boundary=", b, sizeof b), -1);
    CHECK_EQ_INT(sc_multipart_boundary("multipart/form-data; boundary=\"\"", b, sizeof b), -1);
    CHECK_EQ_INT(sc_multipart_boundary("text/plain; boundary=abc", b, sizeof b), -1);
    CHECK_EQ_INT(sc_multipart_boundary(NULL, b, sizeof b), -1);
    char tiny[3];
    CHECK_EQ_INT(sc_multipart_boundary("multipart/form-data; boundary=abc", tiny, sizeof tiny), -1);
}

int main(void)
{
    test_parts_and_splits();
    test_first_boundary_at_start_and_empty_part();
    test_malformed();
    test_boundary_param();
    return test_report("http_multipart_test");
}
