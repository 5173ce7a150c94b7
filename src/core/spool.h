/* Spooled uploads (issue 11, memory): the bytes of a large upload kept in an
 * anonymous temp file instead of the heap, so a request that waits (a Kontext
 * prediction, connection suspended) holds a file descriptor, not hundreds of
 * kilobytes of resident memory. The file is created in a given directory
 * (OUTPUT_DIR: same filesystem as the outputs, no extra path to configure) with
 * O_TMPFILE, so it never has a name; where O_TMPFILE is not supported it is
 * created as "upload.tmp.<8 hex>" and unlinked at once (a crash in between
 * leaves a name that sc_fs_remove_stale_temps sweeps). Either way nothing is
 * left in the directory once the descriptor is closed.
 *
 * The bytes are readable only while a caller reads them (sc_spool_map /
 * sc_spool_unmap, counted so nested readers share one copy): up to
 * SC_SPOOL_READ_MAX they are read into the heap (one copy is cheaper than a
 * mapping's page faults and its munmap's TLB flush on every CPU), above it
 * mapped read-only. Either way, between readers the bytes are page cache the
 * kernel may drop, not part of the process's heap.
 *
 * Not a cache and no durability: nothing is fsynced, the file dies with its
 * descriptor. A spool belongs to one thread at a time (the request's); the
 * counters (sc_spool_stats) are atomics, readable from any thread. */
#ifndef SCENECOMP_CORE_SPOOL_H
#define SCENECOMP_CORE_SPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct sc_spool sc_spool_t;

/* Creates an empty spool file in dir. Returns it (caller frees with
 * sc_spool_free), or NULL with errno set (counted as a spool error). */
sc_spool_t *sc_spool_new(const char *dir);

/* Appends len bytes (retries EINTR and short writes). Returns 0, or -1 with
 * errno (ENOSPC, EFBIG when RLIMIT_FSIZE is passed — the caller's process
 * must ignore SIGXFSZ —, EIO, ...), counted as a spool error; the size then
 * no longer says what is in the file: the caller frees the spool. Refused
 * (-1, EBUSY) while mapped. */
int sc_spool_append(sc_spool_t *s, const void *data, size_t len);

/* Bytes appended so far. */
size_t sc_spool_size(const sc_spool_t *s);

/* Larger spools are mapped rather than copied. */
#define SC_SPOOL_READ_MAX (4u * 1024 * 1024)

/* Makes the bytes readable (a heap copy up to SC_SPOOL_READ_MAX, else a
 * read-only mapping); a nested call shares them and must be matched by its
 * own sc_spool_unmap. Returns 0, or -1 with errno (the count is unchanged).
 * An empty file gives an empty, non-NULL buffer. */
int sc_spool_map(sc_spool_t *s);
/* The mapped bytes (sc_spool_size long), borrowed until the matching
 * sc_spool_unmap; NULL while not mapped. */
const uint8_t *sc_spool_data(const sc_spool_t *s);
/* Ends one sc_spool_map; the last one unmaps. No-op when not mapped. */
void sc_spool_unmap(sc_spool_t *s);

/* The descriptor (for tests and diagnostics; the spool keeps owning it). */
int sc_spool_fd(const sc_spool_t *s);

/* Unmaps, closes the file (which disappears) and frees s. NULL-safe. */
void sc_spool_free(sc_spool_t *s);

/* Process-wide counters for /metrics. */
typedef struct sc_spool_stats {
    long long spooled_total; /* spool files created */
    long long files;         /* open now */
    long long bytes;         /* bytes in the open ones */
    long long errors_total;  /* creates and appends that failed */
} sc_spool_stats_t;

void sc_spool_stats(sc_spool_stats_t *out);

#endif
