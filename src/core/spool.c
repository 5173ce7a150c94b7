#include "core/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/fsutil.h"

struct sc_spool {
    int fd;
    size_t size;    /* bytes appended */
    void *map;      /* the bytes while maps > 0 (k_empty for size 0) */
    int maps;       /* nested sc_spool_map calls */
    bool heap;      /* map is a heap copy (read), not a mapping */
    bool write_err; /* an append failed: size may not match the file */
};

/* What an empty spool maps to: mmap refuses a zero length. */
static const uint8_t k_empty[1];

static atomic_llong g_spooled_total;
static atomic_llong g_files;
static atomic_llong g_bytes;
static atomic_llong g_errors_total;

/* ==== Creation ==== */

/* The anonymous file: never has a name, so there is nothing to clean up. -1
 * with errno when the kernel or the filesystem lacks O_TMPFILE (EOPNOTSUPP,
 * EISDIR on kernels before 3.11, EINVAL on some filesystems) or on a real
 * error. */
static int open_tmpfile(const char *dir)
{
    return open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

/* The fallback: a name sc_fs_remove_stale_temps knows (".tmp." + 8 hex), made
 * exclusively and unlinked at once, so only a crash between the two calls can
 * leave it (and the next start sweeps it). */
static int open_named(const char *dir)
{
    char base[PATH_MAX], path[PATH_MAX];
    if (snprintf(base, sizeof base, "%s/upload", dir) >= (int)sizeof base) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (int attempt = 0; attempt < 8; attempt++) {
        int fd = sc_fs_open_temp(base, O_RDWR, 0600, path, sizeof path);
        if (fd < 0) {
            if (errno == EEXIST)
                continue;
            return -1;
        }
        if (unlink(path) != 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        return fd;
    }
    errno = EEXIST;
    return -1;
}

sc_spool_t *sc_spool_new(const char *dir)
{
    sc_spool_t *s = calloc(1, sizeof *s);
    if (!s)
        goto fail;
    s->fd = open_tmpfile(dir);
    if (s->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL))
        s->fd = open_named(dir);
    if (s->fd < 0)
        goto fail;
    atomic_fetch_add(&g_spooled_total, 1);
    atomic_fetch_add(&g_files, 1);
    return s;
fail:;
    int e = errno;
    free(s);
    atomic_fetch_add(&g_errors_total, 1);
    errno = e;
    return NULL;
}

/* ==== Bytes ==== */

int sc_spool_append(sc_spool_t *s, const void *data, size_t len)
{
    if (s->maps > 0) { /* a mapping would not see the new bytes: a caller bug */
        errno = EBUSY;
        return -1;
    }
    if (s->write_err) {
        errno = EIO;
        return -1;
    }
    /* sc_fs_write_all retries EINTR and short writes; a write that can put no
     * byte at all (disk full, RLIMIT_FSIZE) fails with ENOSPC / EFBIG. */
    if (sc_fs_write_all(s->fd, data, len) != 0) {
        int e = errno;
        s->write_err = true;
        atomic_fetch_add(&g_errors_total, 1);
        errno = e;
        return -1;
    }
    s->size += len;
    atomic_fetch_add(&g_bytes, (long long)len);
    return 0;
}

size_t sc_spool_size(const sc_spool_t *s)
{
    return s->size;
}

/* The bytes into a heap buffer: one copy, where a mapping costs a page fault
 * per few pages and, at munmap, a TLB flush on every CPU the process runs on
 * (most of a spooled request's reading time in a Kontext burst). Returns
 * 0 or -1 with errno. */
static int read_all(sc_spool_t *s)
{
    uint8_t *b = malloc(s->size);
    if (!b)
        return -1;
    size_t got = 0;
    while (got < s->size) {
        ssize_t n = pread(s->fd, b + got, s->size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO; /* shorter than appended: not ours */
            free(b);
            errno = e;
            return -1;
        }
        got += (size_t)n;
    }
    s->map = b;
    s->heap = true;
    return 0;
}

int sc_spool_map(sc_spool_t *s)
{
    if (s->maps == 0) {
        if (s->size == 0) {
            s->map = (void *)k_empty;
        } else if (s->size <= SC_SPOOL_READ_MAX) {
            if (read_all(s) != 0)
                return -1;
        } else {
            void *p = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
            if (p == MAP_FAILED)
                return -1;
            s->map = p;
        }
    }
    s->maps++;
    return 0;
}

const uint8_t *sc_spool_data(const sc_spool_t *s)
{
    return s->maps > 0 ? s->map : NULL;
}

void sc_spool_unmap(sc_spool_t *s)
{
    if (s->maps == 0)
        return;
    if (--s->maps > 0)
        return;
    if (s->heap)
        free(s->map);
    else if (s->map != (void *)k_empty)
        (void)munmap(s->map, s->size);
    s->map = NULL;
    s->heap = false;
}

int sc_spool_fd(const sc_spool_t *s)
{
    return s->fd;
}

void sc_spool_free(sc_spool_t *s)
{
    if (!s)
        return;
    if (s->maps > 0) {
        s->maps = 1;
        sc_spool_unmap(s);
    }
    (void)close(s->fd);
    atomic_fetch_sub(&g_files, 1);
    atomic_fetch_sub(&g_bytes, (long long)s->size);
    free(s);
}

void sc_spool_stats(sc_spool_stats_t *out)
{
    out->spooled_total = atomic_load(&g_spooled_total);
    out->files = atomic_load(&g_files);
    out->bytes = atomic_load(&g_bytes);
    out->errors_total = atomic_load(&g_errors_total);
}
