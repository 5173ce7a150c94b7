#include "core/buf.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

/* 1 when c goes into a JSON string as it is. */
static int json_plain(unsigned char c)
{
    return c >= 0x20 && c != '"' && c != '\\';
}

/* The length of the run of plain bytes that starts s, 16 (SSE2) or 8 bytes a
 * step, as a base64 data URI is one run of a few hundred KB. SWAR: a word holds
 * a byte to escape when one is below 0x20 or equal to '"' or '\\' (a zero byte
 * after the xor); these tests are exact for "any byte" ("haszero"/"hasless"). */
static size_t json_plain_run(const unsigned char *s, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\');
    const __m128i ctl = _mm_set1_epi8(0x1f);
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i esc = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, slash)),
                                   _mm_cmpeq_epi8(_mm_min_epu8(x, ctl), x)); /* x <= 0x1f */
        if (_mm_movemask_epi8(esc))
            break;
    }
#endif
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    const uint64_t quotes = ones * '"', slashes = ones * '\\';
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        uint64_t q = x ^ quotes, bs = x ^ slashes;
        if ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & highs)
            break;
    }
    while (i < n && json_plain(s[i]))
        i++;
    return i;
}

size_t sc_buf_json_str_len(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t len = 2, i = 0;
    while (i < n) {
        size_t run = json_plain_run(p + i, n - i);
        len += run;
        i += run;
        if (i < n) {
            unsigned char c = p[i++];
            len += c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' ? 2 : 6;
        }
    }
    return len;
}

char *sc_buf_json_str_write(char *dst, const char *s, size_t n, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    *dst++ = '"';
    if (len == n + 2) { /* nothing to escape: no second scan */
        memcpy(dst, s, n);
        dst[n] = '"';
        return dst + n + 1;
    }
    while (i < n) {
        size_t run = json_plain_run(p + i, n - i);
        memcpy(dst, p + i, run);
        dst += run;
        i += run;
        if (i == n)
            break;
        unsigned char c = p[i++];
        *dst++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *dst++ = (char)c;
            break;
        case '\n':
            *dst++ = 'n';
            break;
        case '\r':
            *dst++ = 'r';
            break;
        case '\t':
            *dst++ = 't';
            break;
        default: /* another control byte */
            memcpy(dst, "u00", 3);
            dst[3] = hex[c >> 4];
            dst[4] = hex[c & 15];
            dst += 5;
        }
    }
    *dst++ = '"';
    return dst;
}

int sc_buf_json_str(sc_buf_t *b, const char *s)
{
    if (!s)
        return sc_buf_puts(b, "null");
    size_t n = strlen(s), len = sc_buf_json_str_len(s, n);
    if (sc_buf_reserve(b, len) != 0)
        return -1;
    sc_buf_json_str_write(b->data + b->len, s, n, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
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
