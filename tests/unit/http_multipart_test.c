/* Unit tests for src/http/multipart.c: parts and names, any split of the
 * stream, boundaries inside content, malformed and truncated bodies, generated
 * bodies (binary content full of near-delimiters) against their known parts,
 * content handed from the caller's chunk rather than copied. */
#include <stdint.h>
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
    const char *lo, *hi; /* the chunk being fed */
    size_t copied;       /* content bytes handed from outside it */
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
        if (data < c->lo || data + len > c->hi)
            c->copied += len;
    }
    return c->stop_after && c->calls >= c->stop_after ? 1 : 0;
}

/* Parses body fed in pieces of step bytes (0 = whole). Returns feed/finish
 * status (0 = complete) and the log in out (caller frees). */
static int parse(const char *boundary, const char *body, size_t len, size_t step, char **out)
{
    collect_t c = {SC_BUF_INIT, 0, 0, NULL, NULL, 0};
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
        collect_t c = {SC_BUF_INIT, 0, 0, NULL, NULL, 0};
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
    collect_t c = {SC_BUF_INIT, 1, 0, NULL, NULL, 0};
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

/* Generated bodies: xorshift64, so every run sees the same ones. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t rnd(uint64_t *s, size_t n)
{
    return (size_t)(rng_next(s) % n);
}

static const char *const k_boundaries[] = {
    "b",
    "XyZ",
    "--",
    "x y",
    "=_Part_0_1234.5678",
    "----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "---------------------------9051914041544843365972754266",
    "------------------------d74496d66958873e",
};

/* Content that tempts the parser: binary bytes, CRLFs, "\r\n-", delimiter
 * prefixes of every length, the boundary without its CRLF, a delimiter with
 * one byte changed, a blank line. Regenerated until it holds no delimiter. */
static void gen_content(uint64_t *s, sc_buf_t *out, const char *delim, size_t dlen,
                        size_t max_pieces)
{
    for (;;) {
        sc_buf_reset(out);
        size_t pieces = rnd(s, max_pieces + 1);
        for (size_t i = 0; i < pieces; i++) {
            switch (rnd(s, 9)) {
            case 0:
            case 1: {
                size_t n = rnd(s, 48);
                for (size_t j = 0; j < n; j++) {
                    char c = (char)rng_next(s);
                    sc_buf_append(out, &c, 1);
                }
                break;
            }
            case 2:
                sc_buf_append(out, "\r\n", 2);
                break;
            case 3:
                sc_buf_append(out, "\r\n-", 3);
                break;
            case 4:
                sc_buf_append(out, delim, 1 + rnd(s, dlen - 1)); /* a proper prefix */
                break;
            case 5:
                sc_buf_append(out, delim + 2, dlen - 2); /* "--boundary", no CRLF */
                break;
            case 6: {
                char d[SC_MULTIPART_MAX_BOUNDARY + 8];
                memcpy(d, delim, dlen);
                size_t at = 1 + rnd(s, dlen - 1);
                d[at] = d[at] == 'q' ? 'Q' : 'q';
                sc_buf_append(out, d, dlen);
                break;
            }
            case 7:
                sc_buf_append(out, "\r\n\r\n", 4);
                break;
            default:
                sc_buf_append(out, "\r", 1);
                break;
            }
        }
        if (out->len < dlen || !memmem(out->data, out->len, delim, dlen))
            return;
    }
}

/* One generated body and, as collect() would log it, its parts. */
static void gen_body(uint64_t *s, const char *boundary, sc_buf_t *body, sc_buf_t *want)
{
    char delim[SC_MULTIPART_MAX_BOUNDARY + 8];
    size_t dlen = (size_t)snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    sc_buf_t content = SC_BUF_INIT;
    sc_buf_reset(body);
    sc_buf_reset(want);
    if (rnd(s, 3) == 0) {
        sc_buf_printf(body, "--%s", boundary); /* opens the body, no CRLF before */
    } else {
        /* A preamble (maybe empty), then a delimiter. The parser reads it
         * after a virtual CRLF, so that must not make a delimiter either. */
        for (;;) {
            gen_content(s, &content, delim, dlen, 4);
            sc_buf_reset(body);
            sc_buf_append(body, "\r\n", 2);
            sc_buf_append(body, content.data, content.len);
            if (body->len < dlen || !memmem(body->data, body->len, delim, dlen))
                break;
        }
        memmove(body->data, body->data + 2, body->len - 2);
        body->len -= 2;
        sc_buf_append(body, delim, dlen);
    }
    size_t parts = 1 + rnd(s, 5);
    for (size_t i = 0; i < parts; i++) {
        for (size_t pad = rnd(s, 4) == 0 ? rnd(s, 5) : 0; pad > 0; pad--)
            sc_buf_append(body, rnd(s, 2) ? " " : "\t", 1); /* transport padding */
        sc_buf_append(body, "\r\n", 2);
        char name[32] = "";
        switch (rnd(s, 5)) {
        case 0:
            snprintf(name, sizeof name, "f%zu", i);
            sc_buf_printf(body, "Content-Disposition: form-data; name=\"%s\"\r\n\r\n", name);
            break;
        case 1:
            snprintf(name, sizeof name, "file%zu", i);
            sc_buf_printf(body,
                          "Content-Disposition: form-data; name=%s; filename=\"x.bin\"\r\n"
                          "Content-Type: application/octet-stream\r\n\r\n",
                          name);
            break;
        case 2:
            snprintf(name, sizeof name, "t%zu", i);
            sc_buf_printf(body,
                          "content-type: text/plain\r\ncontent-disposition: form-data; "
                          "name=\"%s\"\r\n\r\n",
                          name);
            break;
        case 3:
            sc_buf_puts(body, "Content-Type: text/plain\r\n\r\n"); /* no name */
            break;
        default:
            sc_buf_puts(body, "\r\n"); /* no headers at all */
            break;
        }
        gen_content(s, &content, delim, dlen, 12);
        if (want->len)
            sc_buf_puts(want, "|");
        sc_buf_printf(want, "[%s]", name);
        sc_buf_append(want, content.data, content.len);
        sc_buf_append(body, content.data, content.len);
        sc_buf_append(body, delim, dlen);
    }
    sc_buf_puts(body, "--");
    if (rnd(s, 2)) { /* an epilogue, delimiters and all */
        sc_buf_append(body, delim, dlen);
        sc_buf_puts(body, "\r\n\r\nignored");
        sc_buf_append(body, delim, dlen);
    }
    sc_buf_free(&content);
}

/* Parses body fed as the pieces between the ascending offsets cuts[0, n)
 * (0 and len implied). Returns feed/finish status, the log in *log. */
static int parse_cuts(const char *boundary, const char *body, size_t len, const size_t *cuts,
                      size_t n, sc_buf_t *log)
{
    collect_t c = {SC_BUF_INIT, 0, 0, NULL, NULL, 0};
    sc_multipart_t *m = sc_multipart_new(boundary, collect, &c);
    CHECK(m != NULL);
    int rc = 0;
    size_t at = 0;
    for (size_t i = 0; i <= n && rc == 0; i++) {
        size_t to = i < n ? cuts[i] : len;
        rc = sc_multipart_feed(m, body + at, to - at);
        at = to;
    }
    if (rc == 0)
        rc = sc_multipart_finish(m);
    sc_multipart_free(m);
    *log = c.log;
    return rc;
}

static bool same(const sc_buf_t *a, const sc_buf_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void test_generated_bodies(void)
{
    uint64_t seed = 0x243f6a8885a308d3u;
    sc_buf_t body = SC_BUF_INIT, want = SC_BUF_INIT, got = SC_BUF_INIT;
    size_t *cuts = NULL;
    int bad = 0;
    for (int n = 0; n < 120 && bad < 5; n++) {
        const char *boundary =
            k_boundaries[(size_t)n % (sizeof k_boundaries / sizeof k_boundaries[0])];
        size_t dlen = strlen(boundary) + 4;
        gen_body(&seed, boundary, &body, &want);
        size_t len = body.len;
        size_t *nc = realloc(cuts, (len + 1) * sizeof *cuts);
        CHECK(nc != NULL);
        if (!nc)
            break;
        cuts = nc;
        /* Whole, then split in two at every offset, then in steps of 1 to
         * a delimiter's length + 1, then random pieces. */
        int trials = 0, fails = 0;
        int rc = parse_cuts(boundary, body.data, len, NULL, 0, &got);
        trials++;
        fails += rc != 0 || !same(&got, &want);
        sc_buf_free(&got);
        for (size_t cut = 0; cut <= len; cut++) {
            cuts[0] = cut;
            rc = parse_cuts(boundary, body.data, len, cuts, 1, &got);
            trials++;
            fails += rc != 0 || !same(&got, &want);
            sc_buf_free(&got);
        }
        for (size_t step = 1; step <= dlen + 1; step++) {
            size_t k = 0;
            for (size_t at = step; at < len; at += step)
                cuts[k++] = at;
            rc = parse_cuts(boundary, body.data, len, cuts, k, &got);
            trials++;
            fails += rc != 0 || !same(&got, &want);
            sc_buf_free(&got);
        }
        for (int r = 0; r < 8; r++) {
            size_t k = 0;
            for (size_t at = 1 + rnd(&seed, 2 * dlen); at < len; at += 1 + rnd(&seed, 2 * dlen))
                cuts[k++] = at;
            rc = parse_cuts(boundary, body.data, len, cuts, k, &got);
            trials++;
            fails += rc != 0 || !same(&got, &want);
            sc_buf_free(&got);
        }
        CHECK_EQ_INT(fails, 0);
        if (fails) {
            bad++;
            fprintf(stderr, "body %d (boundary '%s', %zu bytes): %d of %d feeds differ\n", n,
                    boundary, len, fails, trials);
        }
    }
    free(cuts);
    sc_buf_free(&body);
    sc_buf_free(&want);
}

/* Content comes straight from the caller's chunk: only what might have begun a
 * delimiter at a chunk's end, with the few bytes of the next chunk that settle
 * it, is handed from the parser's own copy. */
static void test_content_in_place(void)
{
    static const char head[] = "--b\r\nContent-Disposition: form-data; name=f\r\n\r\n";
    size_t n = 256 * 1024, len = sizeof head - 1 + n + 7;
    char *body = malloc(len);
    CHECK(body != NULL);
    if (!body)
        return;
    memcpy(body, head, sizeof head - 1);
    uint64_t seed = 0x13198a2e03707344u;
    for (size_t i = 0; i < n; i++)
        body[sizeof head - 1 + i] = (char)rng_next(&seed);
    /* every chunk ends in what looks like a delimiter's start */
    for (size_t at = 4096; at + 3 < sizeof head - 1 + n; at += 4096)
        memcpy(body + at - 3, "\r\n-", 3);
    memcpy(body + len - 7, "\r\n--b--", 7);
    collect_t c = {SC_BUF_INIT, 0, 0, NULL, NULL, 0};
    sc_multipart_t *m = sc_multipart_new("b", collect, &c);
    int rc = 0;
    size_t chunks = 0;
    for (size_t at = 0; at < len && rc == 0; at += 4096, chunks++) {
        size_t k = len - at < 4096 ? len - at : 4096;
        c.lo = body + at;
        c.hi = body + at + k;
        rc = sc_multipart_feed(m, body + at, k);
    }
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(sc_multipart_finish(m), 0);
    CHECK_EQ_INT(c.log.len, 3 + n);
    CHECK(c.copied <= chunks * (3 + 5)); /* the held "\r\n-" + a delimiter's length */
    sc_multipart_free(m);
    sc_buf_free(&c.log);
    free(body);
}

/* A header block of exactly the bound is taken, one byte more is refused,
 * however the body is split (also right around the block's end). */
static void test_header_bound_splits(void)
{
    for (size_t extra = 0; extra <= 1; extra++) {
        sc_buf_t body = SC_BUF_INIT;
        sc_buf_puts(&body, "--b\r\nContent-Disposition: form-data; name=f\r\nX-Pad: ");
        size_t hstart = 5, hlen = SC_MULTIPART_MAX_HEADERS + extra;
        /* the block is its lines with their CRLFs: pad so it is hlen long */
        while (body.len - hstart < hlen - 2)
            sc_buf_append(&body, "p", 1);
        sc_buf_puts(&body, "\r\n\r\nv\r\n--b--");
        int want = extra ? -1 : 0;
        char *got = NULL;
        size_t steps[] = {0, 1, 3, 5, 4096, 16383, 16384, 16385};
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            CHECK_EQ_INT(parse("b", body.data, body.len, steps[i], &got), want);
            if (!extra)
                CHECK_STR(got, "[f]v");
            free(got);
        }
        size_t end = hstart + hlen + 2; /* just past the blank line */
        for (size_t cut = end - 8; cut <= end + 4; cut++) {
            sc_buf_t log;
            CHECK_EQ_INT(parse_cuts("b", body.data, body.len, &cut, 1, &log), want);
            sc_buf_free(&log);
        }
        sc_buf_free(&body);
    }
}

/* Transport padding up to the bound, over every split. */
static void test_padding_splits(void)
{
    for (size_t pad = 255; pad <= 257; pad++) {
        sc_buf_t body = SC_BUF_INIT;
        sc_buf_puts(&body, "--b");
        for (size_t i = 0; i < pad; i++)
            sc_buf_append(&body, i % 2 ? "\t" : " ", 1);
        sc_buf_puts(&body, "\r\n\r\nv\r\n--b--");
        int want = pad <= 256 ? 0 : -1;
        for (size_t cut = 0; cut <= body.len; cut++) {
            sc_buf_t log;
            CHECK_EQ_INT(parse_cuts("b", body.data, body.len, &cut, 1, &log), want);
            sc_buf_free(&log);
        }
        char *got = NULL;
        CHECK_EQ_INT(parse("b", body.data, body.len, 1, &got), want);
        free(got);
        sc_buf_free(&body);
    }
}

int main(void)
{
    test_parts_and_splits();
    test_first_boundary_at_start_and_empty_part();
    test_malformed();
    test_boundary_param();
    test_generated_bodies();
    test_content_in_place();
    test_header_bound_splits();
    test_padding_splits();
    return test_report("http_multipart_test");
}
