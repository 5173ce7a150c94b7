/* A streaming multipart/form-data parser (RFC 7578 / RFC 2046), pure: no
 * HTTP library, no I/O. The body arrives in chunks of any size (split
 * anywhere, even inside a boundary); each part's content is handed to a
 * callback as it is recognised, never buffered whole. Only a part's header
 * block (bounded) and a boundary's length of bytes are held.
 *
 * For each part the callback first runs once with first=true and len=0 (the
 * part begins: name is its form field name, "" when it has none), then with
 * first=false for each run of its content. Nested multipart/mixed parts are
 * passed through as opaque content. Not thread-safe; one parser per body. */
#ifndef SCENECOMP_HTTP_MULTIPART_H
#define SCENECOMP_HTTP_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

/* Longest boundary accepted (RFC 2046 allows 70; some clients use more). */
#define SC_MULTIPART_MAX_BOUNDARY 200
/* Longest header block of one part. */
#define SC_MULTIPART_MAX_HEADERS (16 * 1024)
/* Longest field name kept; a longer one is reported as "" (unknown). */
#define SC_MULTIPART_MAX_NAME 255

typedef struct sc_multipart sc_multipart_t;

/* Returns 0 to go on; anything else stops the parser (feed returns -1). */
typedef int (*sc_multipart_cb)(void *ud, const char *name, const char *data, size_t len,
                               bool first);

/* Copies the boundary parameter of a multipart Content-Type value
 * ("multipart/form-data; boundary=xyz", quoted or not) into out. Returns 0,
 * or -1 when the type is not multipart/form-data or has no usable boundary. */
int sc_multipart_boundary(const char *content_type, char *out, size_t cap);

/* A parser for a body with this boundary. NULL when out of memory or the
 * boundary is empty or longer than SC_MULTIPART_MAX_BOUNDARY. */
sc_multipart_t *sc_multipart_new(const char *boundary, sc_multipart_cb cb, void *ud);

/* Feeds the next len bytes. Returns 0, or -1 when the body is malformed, out of
 * memory, or the callback stopped it; after -1 every later feed returns -1 and
 * ignores its bytes. */
int sc_multipart_feed(sc_multipart_t *m, const char *data, size_t len);

/* After the last byte: 0 when the closing boundary was seen and no error
 * happened, else -1 (truncated or malformed). */
int sc_multipart_finish(const sc_multipart_t *m);

void sc_multipart_free(sc_multipart_t *m);

#endif
