#include "core/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/ids.h"

int sc_fs_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int sc_fs_open_temp(const char *base, int flags, unsigned mode, char *tmp, size_t cap)
{
    char rnd[SC_ID_LEN + 1];
    sc_id_new(rnd);
    /* The name is SC_FS_TEMP_INFIX + 8 hex digits: sc_fs_remove_stale_temps
     * removes exactly that pattern. */
    if (snprintf(tmp, cap, "%s" SC_FS_TEMP_INFIX "%.8s", base, rnd) >= (int)cap) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return open(tmp, O_CREAT | O_EXCL | O_CLOEXEC | flags, (mode_t)mode);
}

int sc_fs_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    int fd = sc_fs_open_temp(path, O_WRONLY, 0644, tmp, sizeof tmp);
    if (fd < 0)
        return -1;
    if (sc_fs_write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    /* fsync the directory so the rename itself survives a crash. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        strcpy(dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int sc_fs_mkdirs(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int sc_fs_read_file(const char *path, size_t max, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    if ((unsigned long long)st.st_size > max) {
        close(fd);
        return -2;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        if (n + 1 == cap) {
            if (cap > max) { /* file grew past max while reading */
                free(buf);
                close(fd);
                return -2;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                close(fd);
                errno = ENOMEM;
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            free(buf);
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* Whether name is "<something>.tmp.<8 lowercase hex digits>", the names
 * sc_fs_write_atomic gives its temp files. */
static bool is_our_temp(const char *name)
{
    size_t n = strlen(name), infix = strlen(SC_FS_TEMP_INFIX);
    if (n < infix + 8 + 1)
        return false;
    const char *tail = name + n - 8;
    if (strncmp(tail - infix, SC_FS_TEMP_INFIX, infix) != 0)
        return false;
    for (int i = 0; i < 8; i++)
        if (!((tail[i] >= '0' && tail[i] <= '9') || (tail[i] >= 'a' && tail[i] <= 'f')))
            return false;
    return true;
}

int sc_fs_remove_stale_temps(const char *dir, double min_age_seconds)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    int removed = 0;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!is_our_temp(e->d_name))
            continue;
        struct stat st;
        /* lstat: a symlink or a directory with such a name is not one of ours */
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (difftime(now, st.st_mtime) < min_age_seconds)
            continue; /* may be a write in progress (another instance sharing the dir) */
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}
