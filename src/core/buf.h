/* Growable byte buffer used for HTTP bodies, JSON output and file contents.
 * Not thread-safe; a buffer belongs to one thread at a time.
 * All functions return 0 on success, -1 on out-of-memory (the buffer is left intact). */
#ifndef SCENECOMP_CORE_BUF_H
#define SCENECOMP_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct sc_buf {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
} sc_buf_t;

#define SC_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

int sc_buf_reserve(sc_buf_t *b, size_t extra);
int sc_buf_append(sc_buf_t *b, const void *data, size_t len);
int sc_buf_puts(sc_buf_t *b, const char *s);
int sc_buf_printf(sc_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sc_buf_vprintf(sc_buf_t *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal (with quotes); NULL appends `null`. Escapes '"', '\\'
 * and the bytes below 0x20 (\n \r \t, else \u00xx); every other byte, UTF-8 or not, goes as
 * it is (as cJSON does). */
int sc_buf_json_str(sc_buf_t *b, const char *s);
/* The same literal for the n bytes at s, for a writer that sizes its output once:
 * sc_buf_json_str_len is its length len (quotes included); sc_buf_json_str_write, given
 * that len, writes exactly len bytes at dst (no NUL) and returns the end. Runs without an
 * escape are copied whole; when len is n + 2 (nothing to escape: a data URI, a URL) the
 * bytes are copied without a second scan. */
size_t sc_buf_json_str_len(const char *s, size_t n);
char *sc_buf_json_str_write(char *dst, const char *s, size_t n, size_t len);
/* Appends a JSON number, or `null` when v is NaN/inf. */
int sc_buf_json_num(sc_buf_t *b, double v);
void sc_buf_reset(sc_buf_t *b);
/* Transfers ownership of the data to the caller (caller frees) and empties b. */
char *sc_buf_steal(sc_buf_t *b, size_t *len);
void sc_buf_free(sc_buf_t *b);

#endif
