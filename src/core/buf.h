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
/* Appends s as a JSON string literal (with quotes); NULL appends `null`. */
int sc_buf_json_str(sc_buf_t *b, const char *s);
/* Appends a JSON number, or `null` when v is NaN/inf. */
int sc_buf_json_num(sc_buf_t *b, double v);
void sc_buf_reset(sc_buf_t *b);
/* Transfers ownership of the data to the caller (caller frees) and empties b. */
char *sc_buf_steal(sc_buf_t *b, size_t *len);
void sc_buf_free(sc_buf_t *b);

#endif
