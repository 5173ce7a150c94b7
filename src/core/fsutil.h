/* Filesystem helpers: atomic replace (temp file, fsync, rename, fsync dir),
 * removal of the temp files a crash left, recursive mkdir, bounded whole-file
 * read. Thread-safe (no shared state). */
#ifndef SCENECOMP_CORE_FSUTIL_H
#define SCENECOMP_CORE_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>

/* sc_fs_write_atomic writes "<path>.tmp.<8 hex digits>" and renames it to path. */
#define SC_FS_TEMP_INFIX ".tmp."

/* Creates "<base>.tmp.<8 hex digits>" exclusively (O_CREAT | O_EXCL |
 * O_CLOEXEC | flags, mode) and writes its name to tmp (cap bytes): the one
 * temp-file name sc_fs_remove_stale_temps sweeps. Returns the descriptor, or
 * -1 with errno (ENAMETOOLONG when the name does not fit; EEXIST on the rare
 * name collision). */
int sc_fs_open_temp(const char *base, int flags, unsigned mode, char *tmp, size_t cap);

/* Writes all len bytes to fd, retrying on EINTR and short writes. 0, or -1 with errno. */
int sc_fs_write_all(int fd, const void *data, size_t len);

/* Writes data to path atomically: readers see the old or the new file, never a
 * partial one, also after a crash. Returns 0, or -1 with errno set. */
int sc_fs_write_atomic(const char *path, const void *data, size_t len);
/* Removes from dir (not below it) the regular files named like
 * sc_fs_write_atomic's temp files whose last change is at least min_age_seconds
 * old: what a kill -9 left. Nothing else is touched. Returns how many were
 * removed (0 when dir does not exist), or -1 with errno when it cannot be read. */
int sc_fs_remove_stale_temps(const char *dir, double min_age_seconds);
/* mkdir -p with mode 0755. Returns 0 (also when it exists) or -1 with errno. */
int sc_fs_mkdirs(const char *path);
/* Reads a whole file of at most max bytes into a malloc'd NUL-terminated buffer
 * (caller frees *out). Returns 0, -1 with errno, or -2 when the file is larger than max. */
int sc_fs_read_file(const char *path, size_t max, char **out, size_t *len);

#endif
