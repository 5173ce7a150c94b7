/* Large model inputs through Replicate's Files API (API.md "Outage protection",
 * "Large inputs"): an encoded image whose data URI would exceed 256 KB is
 * uploaded (POST /files via the client's I/O thread, sc_replicate_upload) and
 * passed by its `urls.get`. Uploads are cached by the SHA-256 of the bytes
 * until shortly before the file's `expires_at`, so a product used in many
 * scenes is uploaded once; concurrent requests for the same bytes wait for the
 * one upload in flight. Thread-safe. sc_files_input blocks while an upload
 * runs, so it never runs on the I/O thread; the request path uses the two
 * steps below, which do not block. */
#ifndef SCENECOMP_REPLICATE_FILES_H
#define SCENECOMP_REPLICATE_FILES_H

#include <stddef.h>
#include <stdint.h>

/* The longest data URI sent inline (Replicate's guidance: 256 KB). */
#define SC_FILES_DATA_URI_MAX (256 * 1024)
#define SC_FILES_CACHE_MAX 1024 /* entries; expired ones go first, then the oldest */

#define SC_FILES_HASH_LEN 32 /* SHA-256 */

/* Step 1, on the caller's thread: the input string when no upload is needed:
 * a data URI when it is at most SC_FILES_DATA_URI_MAX bytes, else the cached
 * urls.get of these bytes. Returns 0 with *out (malloc'd), 1 when the bytes
 * must be uploaded (hash set for sc_files_upload_start, *out NULL), -1 out of
 * memory. */
int sc_files_resolve(const uint8_t *bytes, size_t len, const char *mime,
                     uint8_t hash[SC_FILES_HASH_LEN], char **out);

/* rc 0: url is the input string (borrowed for the call); rc -1 (out of
 * memory) or -2 (the upload failed or timed out: an api_error): err says why. */
typedef void (*sc_files_done_fn)(int rc, const char *url, const char *err, void *ud);

/* Step 2: the upload of the bytes with this hash, or the wait for the one in
 * flight for the same hash; nobody blocks. The bytes come from one source the
 * call takes over (closed / freed whatever happens): offset 0 of the file fd
 * (read while the request is sent), or the malloc'd buffer data (fd -1).
 * done is called exactly once: from the client's I/O thread when the upload
 * ends, or before this call returns (the bytes were uploaded meanwhile, or
 * nothing could be queued). */
void sc_files_upload_start(const uint8_t hash[SC_FILES_HASH_LEN], const char *mime, int fd,
                           uint8_t *data, size_t len, double timeout_s, sc_files_done_fn done,
                           void *ud);

/* Both steps, blocking (tests, and callers off the request path): the input string for the encoded
 * image bytes of type mime ("image/png" or "image/jpeg"): a data URI when it is at most
 * SC_FILES_DATA_URI_MAX bytes, else the urls.get of the uploaded file. *out is malloc'd. Returns 0,
 * -1 (out of memory; err set) or -2 (the upload failed or timed out within timeout_s: an api_error
 * for the caller; err says why). */
int sc_files_input(const uint8_t *bytes, size_t len, const char *mime, double timeout_s, char **out,
                   char *err, size_t errlen);

/* Counters since start (or sc_files_reset): uploads that succeeded, inputs
 * served from the cache. */
void sc_files_stats(long *uploads, long *cache_hits);
/* Empties the cache and zeroes the counters (tests). */
void sc_files_reset(void);

/* Parses an RFC 3339 UTC time (2024-08-23T12:26:51.079Z, or with a +hh:mm /
 * -hh:mm offset) into seconds since the epoch. Returns 0 or -1. */
int sc_files_parse_time(const char *s, double *out);

#endif
