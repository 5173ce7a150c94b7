/* Large model inputs through Replicate's Files API (API.md "Outage protection",
 * "Large inputs"): an encoded image whose data URI would exceed 256 KB is
 * uploaded (POST /files via the client's I/O thread, sc_replicate_upload) and
 * passed by its `urls.get`. Uploads are cached by the SHA-256 of the bytes
 * until shortly before the file's `expires_at`, so a product used in many
 * scenes is uploaded once; concurrent requests for the same bytes wait for the
 * one upload in flight. Thread-safe. Runs on request threads, never on the
 * I/O thread (it blocks while an upload runs). */
#ifndef SCENECOMP_REPLICATE_FILES_H
#define SCENECOMP_REPLICATE_FILES_H

#include <stddef.h>
#include <stdint.h>

/* The longest data URI sent inline (Replicate's guidance: 256 KB). */
#define SC_FILES_DATA_URI_MAX (256 * 1024)
#define SC_FILES_CACHE_MAX 1024 /* entries; expired ones go first, then the oldest */

/* The input string for the encoded image bytes of type mime ("image/png" or
 * "image/jpeg"): a data URI when it is at most SC_FILES_DATA_URI_MAX bytes,
 * else the urls.get of the uploaded file. *out is malloc'd. Returns 0, -1 (out
 * of memory; err set) or -2 (the upload failed or timed out within timeout_s:
 * an api_error for the caller; err says why). */
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
