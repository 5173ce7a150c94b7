/* libFuzzer target for the multipart/form-data parser (build: CC=clang
 * BUILD_DIR=build-fuzz ./scripts/build.sh -DSC_FUZZ=ON; run:
 * build-fuzz/multipart_fuzz -max_total_time=60).
 *
 * Input: byte 0 picks a split step, byte 1 a boundary length (1..8, the
 * boundary is the next bytes, NUL-free), the rest is the body. Properties:
 * no crash or leak; feeding the body whole, in steps, or one byte at a time
 * gives the same parts, the same verdict; a part's content never contains the
 * delimiter; the Content-Type parser accepts what it returns. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "http/multipart.h"

typedef struct {
    sc_buf_t log;
    sc_buf_t part; /* content of the current part */
    const char *delim;
    size_t dlen;
} collect_t;

static void end_part(collect_t *c)
{
    if (c->part.len >= c->dlen && memmem(c->part.data, c->part.len, c->delim, c->dlen))
        __builtin_trap(); /* a delimiter leaked into content */
    sc_buf_reset(&c->part);
}

static int collect(void *ud, const char *name, const char *data, size_t len, bool first)
{
    collect_t *c = ud;
    if (first) {
        end_part(c);
        if (len != 0 || strlen(name) > SC_MULTIPART_MAX_NAME)
            __builtin_trap();
        sc_buf_printf(&c->log, "\n[%zu:%s]", strlen(name), name);
        return 0;
    }
    if (len == 0)
        __builtin_trap();
    sc_buf_append(&c->log, data, len);
    sc_buf_append(&c->part, data, len);
    return 0;
}

static int run(const char *boundary, const uint8_t *body, size_t len, size_t step, sc_buf_t *out)
{
    char delim[SC_MULTIPART_MAX_BOUNDARY + 8];
    int dlen = snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    collect_t c = {SC_BUF_INIT, SC_BUF_INIT, delim, (size_t)dlen};
    sc_multipart_t *m = sc_multipart_new(boundary, collect, &c);
    if (!m)
        __builtin_trap();
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += step)
        rc = sc_multipart_feed(m, (const char *)body + off, len - off < step ? len - off : step);
    if (rc == 0)
        rc = sc_multipart_finish(m);
    sc_multipart_free(m);
    if (rc == 0)
        end_part(&c);
    sc_buf_free(&c.part);
    *out = c.log;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t step = (size_t)data[0] % 64 + 1;
    size_t blen = (size_t)data[1] % 8 + 1;
    if (size < 2 + blen)
        return 0;
    char boundary[16];
    for (size_t i = 0; i < blen; i++) {
        boundary[i] = (char)data[2 + i];
        if (boundary[i] == '\0')
            return 0;
    }
    boundary[blen] = '\0';
    const uint8_t *body = data + 2 + blen;
    size_t len = size - 2 - blen;

    sc_buf_t whole, stepped, bytewise;
    int r1 = run(boundary, body, len, len ? len : 1, &whole);
    int r2 = run(boundary, body, len, step, &stepped);
    int r3 = run(boundary, body, len, 1, &bytewise);
    /* Same verdict; and for a complete body, the same parts. (A malformed one
     * may be noticed after a different amount of content was delivered.) */
    if (r1 != r2 || r1 != r3)
        __builtin_trap();
    /* (memcmp only over bytes: an empty buffer's data may be NULL) */
    if (r1 == 0 && (whole.len != stepped.len || whole.len != bytewise.len ||
                    (whole.len > 0 && (memcmp(whole.data, stepped.data, whole.len) != 0 ||
                                       memcmp(whole.data, bytewise.data, whole.len) != 0))))
        __builtin_trap();
    sc_buf_free(&whole);
    sc_buf_free(&stepped);
    sc_buf_free(&bytewise);

    /* The Content-Type parser on the raw bytes, as a header value. */
    char *ct = malloc(len + 1);
    if (!ct)
        return 0;
    memcpy(ct, body, len);
    ct[len] = '\0';
    char b[SC_MULTIPART_MAX_BOUNDARY + 1];
    if (sc_multipart_boundary(ct, b, sizeof b) == 0) {
        sc_multipart_t *m = sc_multipart_new(b, collect, NULL);
        if (!m)
            __builtin_trap(); /* what the header parser returns must be usable */
        sc_multipart_free(m);
    }
    free(ct);
    return 0;
}
