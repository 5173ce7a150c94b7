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
    /* Bytes received but not yet consumed: at most a header block, or a
     * boundary's length of content that might start a delimiter. */
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

/* Consumes what it can of buf; returns with the unconsumed rest at the front. */
static void process(sc_multipart_t *m)
{
    size_t pos = 0;
    for (;;) {
        const char *p = m->buf + pos;
        size_t avail = m->len - pos;
        if (m->state == MP_PREAMBLE || m->state == MP_BODY) {
            const char *hit = avail >= m->dlen ? memmem(p, avail, m->delim, m->dlen) : NULL;
            size_t take = hit ? (size_t)(hit - p) : (avail >= m->dlen ? avail - (m->dlen - 1) : 0);
            if (m->state == MP_BODY && take > 0 && emit(m, p, take, false) != 0)
                return;
            pos += take;
            if (!hit)
                break;
            pos += m->dlen;
            m->state = MP_AFTER_DELIM;
            m->padding = 0;
        } else if (m->state == MP_AFTER_DELIM) {
            while (avail > 0 && (*p == ' ' || *p == '\t')) {
                p++;
                pos++;
                avail--;
                if (++m->padding > MAX_PADDING) {
                    m->state = MP_ERROR;
                    return;
                }
            }
            if (avail < 2)
                break;
            if (p[0] == '-' && p[1] == '-') {
                m->state = MP_END;
            } else if (p[0] == '\r' && p[1] == '\n') {
                m->state = MP_HEADERS;
                pos += 2;
            } else {
                m->state = MP_ERROR;
                return;
            }
        } else if (m->state == MP_HEADERS) {
            size_t hlen;
            if (avail >= 2 && p[0] == '\r' && p[1] == '\n') {
                hlen = 0; /* a part without headers */
                pos += 2;
            } else {
                const char *hit = avail >= 4 ? memmem(p, avail, "\r\n\r\n", 4) : NULL;
                if (!hit) {
                    /* Its end is at least avail - 1 away: already too long? */
                    if (avail > SC_MULTIPART_MAX_HEADERS + 1)
                        m->state = MP_ERROR;
                    break;
                }
                hlen = (size_t)(hit - p) + 2;
                if (hlen > SC_MULTIPART_MAX_HEADERS) {
                    m->state = MP_ERROR;
                    return;
                }
                pos += hlen + 2;
            }
            parse_headers(m, p, hlen);
            m->state = MP_BODY;
            if (emit(m, NULL, 0, true) != 0)
                return;
        } else {
            pos = m->len; /* MP_END: the epilogue is ignored */
            break;
        }
    }
    if (m->state == MP_ERROR)
        return;
    memmove(m->buf, m->buf + pos, m->len - pos);
    m->len -= pos;
}

int sc_multipart_feed(sc_multipart_t *m, const char *data, size_t len)
{
    if (m->state == MP_ERROR)
        return -1;
    if (m->state == MP_END || len == 0)
        return 0;
    if (buf_append(m, data, len) != 0) {
        m->state = MP_ERROR;
        return -1;
    }
    process(m);
    return m->state == MP_ERROR ? -1 : 0;
}

int sc_multipart_finish(const sc_multipart_t *m)
{
    return m->state == MP_END ? 0 : -1;
}
