#include "http/multipart.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Whitespace allowed after a boundary before its CRLF (RFC 2046 transport
 * padding); more than this is not a boundary line any more. */
#define MAX_PADDING 256

typedef enum { MP_PREAMBLE, MP_AFTER_DELIM, MP_HEADERS, MP_BODY, MP_END, MP_ERROR } mp_state_t;

struct sc_multipart {
    mp_state_t state;
    sc_multipart_cb cb;
    void *ud;
    char delim[SC_MULTIPART_MAX_BOUNDARY + 5]; /* "\r\n--" boundary */
    size_t dlen;
    size_t padding; /* whitespace skipped after the current boundary */
    char name[SC_MULTIPART_MAX_NAME + 1];
    /* The tail of the last chunk that parsing could not get past (at most a
     * header block, or fewer than a delimiter's length of bytes that might
     * start one), then while completing it the few bytes of the next chunk
     * that settle it. Everything else is parsed in the caller's memory. */
    char *buf;
    size_t len, cap;
};

int sc_multipart_boundary(const char *ct, char *out, size_t cap)
{
    static const char type[] = "multipart/form-data";
    if (!ct || strncasecmp(ct, type, sizeof type - 1) != 0)
        return -1;
    const char *p = ct + sizeof type - 1;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ';')
            p++;
        const char *key = p;
        while (*p && *p != '=' && *p != ';')
            p++;
        size_t klen = (size_t)(p - key);
        while (klen > 0 && (key[klen - 1] == ' ' || key[klen - 1] == '\t'))
            klen--;
        if (*p != '=')
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        char val[SC_MULTIPART_MAX_BOUNDARY + 1];
        size_t n = 0;
        bool too_long = false;
        if (*p == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (n < SC_MULTIPART_MAX_BOUNDARY)
                    val[n++] = *p;
                else
                    too_long = true;
            }
            if (*p == '"')
                p++;
        } else {
            for (; *p && *p != ';' && *p != ' ' && *p != '\t'; p++) {
                if (n < SC_MULTIPART_MAX_BOUNDARY)
                    val[n++] = *p;
                else
                    too_long = true;
            }
        }
        val[n] = '\0';
        if (klen == 8 && strncasecmp(key, "boundary", 8) == 0) {
            if (n == 0 || too_long || n + 1 > cap)
                return -1;
            memcpy(out, val, n + 1);
            return 0;
        }
    }
    return -1;
}

static int buf_append(sc_multipart_t *m, const char *data, size_t len)
{
    if (m->len + len > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->len + len)
            cap *= 2;
        char *nb = realloc(m->buf, cap);
        if (!nb)
            return -1;
        m->buf = nb;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, data, len);
    m->len += len;
    return 0;
}

sc_multipart_t *sc_multipart_new(const char *boundary, sc_multipart_cb cb, void *ud)
{
    size_t blen = boundary ? strlen(boundary) : 0;
    if (blen == 0 || blen > SC_MULTIPART_MAX_BOUNDARY || !cb)
        return NULL;
    sc_multipart_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    memcpy(m->delim, "\r\n--", 4);
    memcpy(m->delim + 4, boundary, blen);
    m->dlen = blen + 4;
    m->cb = cb;
    m->ud = ud;
    m->state = MP_PREAMBLE;
    /* The first boundary may open the body without a CRLF before it: a
     * virtual CRLF makes it a delimiter like the others. */
    if (buf_append(m, "\r\n", 2) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void sc_multipart_free(sc_multipart_t *m)
{
    if (!m)
        return;
    free(m->buf);
    free(m);
}

/* The name parameter of a Content-Disposition value, into m->name ("" when
 * absent, too long or holding a NUL). */
static void parse_disposition(sc_multipart_t *m, const char *v, const char *end)
{
    const char *p = memchr(v, ';', (size_t)(end - v));
    while (p && p < end) {
        while (p < end && (*p == ';' || *p == ' ' || *p == '\t'))
            p++;
        const char *key = p;
        while (p < end && *p != '=' && *p != ';')
            p++;
        size_t klen = (size_t)(p - key);
        while (klen > 0 && (key[klen - 1] == ' ' || key[klen - 1] == '\t'))
            klen--;
        if (p >= end || *p != '=')
            continue;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        char val[SC_MULTIPART_MAX_NAME + 1];
        size_t n = 0;
        bool bad = false;
        if (p < end && *p == '"') {
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                if (*p == '\0' || n == SC_MULTIPART_MAX_NAME)
                    bad = true;
                else
                    val[n++] = *p;
            }
            if (p < end)
                p++; /* the closing quote */
        } else {
            for (; p < end && *p != ';' && *p != ' ' && *p != '\t'; p++) {
                if (*p == '\0' || n == SC_MULTIPART_MAX_NAME)
                    bad = true;
                else
                    val[n++] = *p;
            }
        }
        val[n] = '\0';
        if (klen == 4 && strncasecmp(key, "name", 4) == 0) {
            if (bad)
                m->name[0] = '\0';
            else
                memcpy(m->name, val, n + 1);
            return;
        }
    }
}

/* The header block buf[0, len) (lines separated by CRLF). */
static void parse_headers(sc_multipart_t *m, const char *h, size_t len)
{
    static const char cd[] = "content-disposition:";
    m->name[0] = '\0';
    const char *end = h + len;
    while (h < end) {
        const char *eol = memchr(h, '\r', (size_t)(end - h));
        if (!eol)
            eol = end;
        if ((size_t)(eol - h) >= sizeof cd - 1 && strncasecmp(h, cd, sizeof cd - 1) == 0)
            parse_disposition(m, h + sizeof cd - 1, eol);
        h = eol + 2;
    }
}

static int emit(sc_multipart_t *m, const char *data, size_t len, bool first)
{
    if (m->cb(m->ud, m->name, data, len, first) != 0) {
        m->state = MP_ERROR;
        return -1;
    }
    return 0;
}

/* The first delimiter in [p, end), or NULL. Then *keep is where the bytes
 * that might begin one at the very end start (end when none). memmem for the
 * whole delimiter, not memchr for its CR + memcmp: glibc's memmem skips ahead
 * by up to the delimiter's length (a Horspool-style search for needles under
 * 256 bytes) and measured faster on both binary and CRLF-dense content
 * (bench/multipart_bench.c). */
static const char *find_delim(const sc_multipart_t *m, const char *p, const char *end,
                              const char **keep)
{
    size_t avail = (size_t)(end - p);
    if (avail >= m->dlen) {
        const char *hit = memmem(p, avail, m->delim, m->dlen);
        if (hit)
            return hit;
        p = end - (m->dlen - 1);
    }
    /* Fewer than dlen bytes left from p: only a CR whose rest is a prefix of
     * the delimiter must wait for more. */
    for (const char *c; p < end && (c = memchr(p, '\r', (size_t)(end - p))) != NULL; p = c + 1) {
        if (memcmp(c, m->delim, (size_t)(end - c)) == 0) {
            *keep = c;
            return NULL;
        }
    }
    *keep = end;
    return NULL;
}

/* Consumes what it can of [p0, p0 + n), handing content runs to the callback
 * straight from that memory. Returns how many bytes it consumed (all of them in
 * MP_END); the rest must be presented again, followed by more. On MP_ERROR the
 * return value means nothing. */
static size_t parse(sc_multipart_t *m, const char *p0, size_t n)
{
    const char *p = p0, *end = p0 + n;
    for (;;) {
        size_t avail = (size_t)(end - p);
        if (m->state == MP_PREAMBLE || m->state == MP_BODY) {
            const char *keep = end;
            const char *hit = find_delim(m, p, end, &keep);
            const char *stop = hit ? hit : keep;
            if (m->state == MP_BODY && stop > p && emit(m, p, (size_t)(stop - p), false) != 0)
                return 0;
            if (!hit)
                return (size_t)(keep - p0);
            p = hit + m->dlen;
            m->state = MP_AFTER_DELIM;
            m->padding = 0;
        } else if (m->state == MP_AFTER_DELIM) {
            while (avail > 0 && (*p == ' ' || *p == '\t')) {
                p++;
                avail--;
                if (++m->padding > MAX_PADDING) {
                    m->state = MP_ERROR;
                    return 0;
                }
            }
            if (avail < 2)
                return (size_t)(p - p0);
            if (p[0] == '-' && p[1] == '-') {
                m->state = MP_END;
            } else if (p[0] == '\r' && p[1] == '\n') {
                m->state = MP_HEADERS;
                p += 2;
            } else {
                m->state = MP_ERROR;
                return 0;
            }
        } else if (m->state == MP_HEADERS) {
            const char *h = p;
            size_t hlen;
            if (avail >= 2 && p[0] == '\r' && p[1] == '\n') {
                hlen = 0; /* a part without headers */
                p += 2;
            } else {
                /* A block within the bound ends in its first MAX + 2 bytes:
                 * no need to look further, whatever the split. */
                size_t lim =
                    avail < SC_MULTIPART_MAX_HEADERS + 2 ? avail : SC_MULTIPART_MAX_HEADERS + 2;
                const char *hit = lim >= 4 ? memmem(p, lim, "\r\n\r\n", 4) : NULL;
                if (!hit) {
                    if (avail >= SC_MULTIPART_MAX_HEADERS + 2) {
                        m->state = MP_ERROR;
                        return 0;
                    }
                    return (size_t)(p - p0);
                }
                hlen = (size_t)(hit - p) + 2;
                p += hlen + 2;
            }
            parse_headers(m, h, hlen);
            m->state = MP_BODY;
            if (emit(m, NULL, 0, true) != 0)
                return 0;
        } else {
            return n; /* MP_END: the epilogue is ignored */
        }
    }
}

/* How many bytes of the next chunk to append to a held tail so that parsing
 * buf can get past it: a delimiter's length completes a partial delimiter
 * (or a boundary line's "--"/CRLF); a header block takes up to its end, never
 * more than the bound leaves room for. Parsing again with more is always
 * correct, this only keeps the copy small. */
static size_t tail_need(const sc_multipart_t *m, const char *data, size_t len)
{
    size_t k = m->dlen;
    if (m->state == MP_HEADERS) {
        size_t h = m->len; /* < MAX + 2, or parse would have refused it */
        size_t t = h < 3 ? h : 3, d = len < 3 ? len : 3;
        char w[6];
        memcpy(w, m->buf + h - t, t);
        memcpy(w + t, data, d);
        if (h < 2 || memmem(w, t + d, "\r\n\r\n", 4)) {
            k = 3; /* the end (or an empty block) straddles the two */
        } else {
            size_t room = SC_MULTIPART_MAX_HEADERS + 2 - h;
            k = len < room ? len : room;
            const char *e = memmem(data, k, "\r\n\r\n", 4);
            if (e)
                k = (size_t)(e - data) + 4;
        }
    }
    return k < len ? k : len;
}

int sc_multipart_feed(sc_multipart_t *m, const char *data, size_t len)
{
    if (m->state == MP_ERROR)
        return -1;
    if (m->state == MP_END || len == 0)
        return 0;
    /* A held tail: complete it with a few bytes of data and parse it from buf
     * until parsing gets past it; then the rest of data is parsed in place. */
    while (m->len > 0 && len > 0) {
        size_t held = m->len, k = tail_need(m, data, len);
        if (buf_append(m, data, k) != 0) {
            m->state = MP_ERROR;
            return -1;
        }
        size_t pos = parse(m, m->buf, m->len);
        if (m->state == MP_ERROR)
            return -1;
        if (pos >= held) { /* past the tail: what follows is still in data */
            m->len = 0;
            data += pos - held;
            len -= pos - held;
            break;
        }
        memmove(m->buf, m->buf + pos, m->len - pos);
        m->len -= pos;
        data += k;
        len -= k;
    }
    if (len == 0)
        return 0;
    size_t pos = parse(m, data, len);
    if (m->state == MP_ERROR)
        return -1;
    /* Keep only what parsing could not get past: fewer than a delimiter's
     * length of bytes, or a header block within the bound. */
    if (pos < len && buf_append(m, data + pos, len - pos) != 0) {
        m->state = MP_ERROR;
        return -1;
    }
    return 0;
}

int sc_multipart_finish(const sc_multipart_t *m)
{
    return m->state == MP_END ? 0 : -1;
}
