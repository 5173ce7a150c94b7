#include "core/buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sc_buf_reserve(sc_buf_t *b, size_t extra)
{
    if (extra > (size_t)-1 / 2 - b->len)
        return -1;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int sc_buf_append(sc_buf_t *b, const void *data, size_t len)
{
    if (sc_buf_reserve(b, len) != 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int sc_buf_puts(sc_buf_t *b, const char *s)
{
    return sc_buf_append(b, s, strlen(s));
}

int sc_buf_vprintf(sc_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || sc_buf_reserve(b, (size_t)n) != 0)
        return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int sc_buf_printf(sc_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sc_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int sc_buf_json_str(sc_buf_t *b, const char *s)
{
    if (!s)
        return sc_buf_puts(b, "null");
    if (sc_buf_reserve(b, strlen(s) + 2) != 0)
        return -1;
    int rc = sc_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p && rc == 0; p++) {
        switch (*p) {
        case '"':
            rc = sc_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            rc = sc_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            rc = sc_buf_append(b, "\\n", 2);
            break;
        case '\r':
            rc = sc_buf_append(b, "\\r", 2);
            break;
        case '\t':
            rc = sc_buf_append(b, "\\t", 2);
            break;
        default:
            if (*p < 0x20)
                rc = sc_buf_printf(b, "\\u%04x", *p);
            else
                rc = sc_buf_append(b, p, 1);
        }
    }
    return rc ? rc : sc_buf_append(b, "\"", 1);
}

int sc_buf_json_num(sc_buf_t *b, double v)
{
    if (!isfinite(v))
        return sc_buf_puts(b, "null");
    if (v == (double)(long long)v && fabs(v) < 1e15)
        return sc_buf_printf(b, "%lld", (long long)v);
    return sc_buf_printf(b, "%.6g", v);
}

void sc_buf_reset(sc_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

char *sc_buf_steal(sc_buf_t *b, size_t *len)
{
    char *d = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void sc_buf_free(sc_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
