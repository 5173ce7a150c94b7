/* core/spool.h: bytes appended in many chunks read back unchanged, as a heap
 * copy up to SC_SPOOL_READ_MAX and a mapping above (nested maps share one),
 * an empty spool maps, a disk error (RLIMIT_FSIZE in a child: EFBIG) is
 * reported and counted, no file is ever left in the directory (O_TMPFILE and
 * the named fallback), the descriptor is closed on free, and the gauges
 * follow. The .c is included to reach open_named. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../src/core/spool.c"
#include "test.h"

/* Entries of dir other than . and .., or -1. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
}

/* total bytes in chunks; heap: read into the heap (else mapped) */
static void test_chunks(const char *dir, size_t total, bool heap)
{
    uint8_t *want = malloc(total);
    CHECK(want != NULL);
    if (!want)
        return;
    fill(want, total, 7);
    sc_spool_stats_t before, during, after;
    sc_spool_stats(&before);
    int entries = count_entries(dir);
    sc_spool_t *s = sc_spool_new(dir);
    CHECK(s != NULL);
    if (!s) {
        free(want);
        return;
    }
    size_t off = 0;
    int chunks = 0;
    while (off < total) { /* chunk sizes 1..4099 (x16 when large), as a socket hands them */
        size_t n = (1 + (size_t)(chunks * 37 % 4099)) * (total > 1000000 ? 16 : 1);
        if (n > total - off)
            n = total - off;
        CHECK_EQ_INT(sc_spool_append(s, want + off, n), 0);
        off += n;
        chunks++;
    }
    CHECK(chunks > 100);
    CHECK_EQ_INT(sc_spool_size(s), total);
    CHECK_EQ_INT(count_entries(dir), entries); /* anonymous: no name while open */
    CHECK(sc_spool_data(s) == NULL);
    CHECK_EQ_INT(sc_spool_map(s), 0);
    const uint8_t *p = sc_spool_data(s);
    CHECK(p != NULL && memcmp(p, want, total) == 0);
    CHECK(s->heap == heap);
    CHECK_EQ_INT(sc_spool_map(s), 0); /* nested: the same mapping */
    CHECK(sc_spool_data(s) == p);
    CHECK_EQ_INT(sc_spool_append(s, "x", 1), -1); /* never behind a mapping's back */
    CHECK_EQ_INT(errno, EBUSY);
    sc_spool_unmap(s);
    CHECK(sc_spool_data(s) == p); /* still mapped once */
    sc_spool_unmap(s);
    CHECK(sc_spool_data(s) == NULL);
    sc_spool_unmap(s); /* no-op */
    sc_spool_stats(&during);
    CHECK_EQ_INT(during.spooled_total, before.spooled_total + 1);
    CHECK_EQ_INT(during.files, before.files + 1);
    CHECK_EQ_INT(during.bytes, before.bytes + (long long)total);
    int fd = sc_spool_fd(s);
    CHECK(fcntl(fd, F_GETFD) >= 0);
    CHECK_EQ_INT(sc_spool_map(s), 0); /* free unmaps what is still mapped */
    sc_spool_free(s);
    errno = 0;
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF); /* closed on free */
    sc_spool_stats(&after);
    CHECK_EQ_INT(after.files, before.files);
    CHECK_EQ_INT(after.bytes, before.bytes);
    CHECK_EQ_INT(after.errors_total, before.errors_total);
    CHECK_EQ_INT(count_entries(dir), entries);
    sc_spool_free(NULL);
    free(want);
}

static void test_empty(const char *dir)
{
    sc_spool_t *s = sc_spool_new(dir);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_EQ_INT(sc_spool_size(s), 0);
    CHECK_EQ_INT(sc_spool_append(s, "", 0), 0);
    CHECK_EQ_INT(sc_spool_map(s), 0);
    CHECK(sc_spool_data(s) != NULL);
    sc_spool_unmap(s);
    CHECK(sc_spool_data(s) == NULL);
    sc_spool_free(s);
}

/* The fallback for filesystems without O_TMPFILE: named, then unlinked at
 * once. */
static void test_named(const char *dir)
{
    int entries = count_entries(dir);
    int fd = open_named(dir);
    CHECK(fd >= 0);
    CHECK_EQ_INT(count_entries(dir), entries);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_nlink == 0 && (st.st_mode & 0777) == 0600);
    CHECK_EQ_INT(write(fd, "abc", 3), 3);
    close(fd);
    CHECK_EQ_INT(count_entries(dir), entries);
}

/* A directory that does not exist: NULL with errno, counted. */
static void test_bad_dir(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/missing", dir);
    sc_spool_stats_t before, after;
    sc_spool_stats(&before);
    errno = 0;
    CHECK(sc_spool_new(path) == NULL);
    CHECK_EQ_INT(errno, ENOENT);
    sc_spool_stats(&after);
    CHECK_EQ_INT(after.errors_total, before.errors_total + 1);
    CHECK_EQ_INT(after.files, before.files);
}

/* A disk error: RLIMIT_FSIZE below the data (SIGXFSZ ignored, as serve does)
 * makes write fail with EFBIG. In a child, so the limit stays there. The exit
 * code says which step went wrong (0 = all as expected). */
static int efbig_child(const char *dir)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {8192, 8192};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 10;
    sc_spool_t *s = sc_spool_new(dir);
    if (!s)
        return 11;
    static uint8_t buf[6000];
    fill(buf, sizeof buf, 3);
    if (sc_spool_append(s, buf, sizeof buf) != 0) /* 6000 <= 8192 */
        return 12;
    errno = 0;
    if (sc_spool_append(s, buf, sizeof buf) != -1) /* 12000 > 8192 */
        return 13;
    if (errno != EFBIG)
        return 14;
    if (sc_spool_append(s, buf, 1) != -1) /* stays failed */
        return 15;
    sc_spool_stats_t st;
    sc_spool_stats(&st);
    if (st.errors_total < 1 || st.files != 1)
        return 16;
    sc_spool_free(s);
    sc_spool_stats(&st);
    if (st.files != 0 || st.bytes != 0)
        return 17;
    return 0;
}

static void test_disk_error(const char *dir)
{
    int entries = count_entries(dir);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(efbig_child(dir));
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
    CHECK_EQ_INT(count_entries(dir), entries);
}

int main(void)
{
    char dir[] = "/tmp/sc_spool_test.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    CHECK_EQ_INT(count_entries(dir), 0);
    test_chunks(dir, 300 * 1024 + 17, true);
    test_chunks(dir, SC_SPOOL_READ_MAX, true);
    test_chunks(dir, SC_SPOOL_READ_MAX + 4097, false);
    test_empty(dir);
    test_named(dir);
    test_bad_dir(dir);
    test_disk_error(dir);
    CHECK_EQ_INT(count_entries(dir), 0); /* nothing left behind */
    sc_spool_stats_t st;
    sc_spool_stats(&st);
    CHECK_EQ_INT(st.files, 0);
    CHECK_EQ_INT(st.bytes, 0);
    rmdir(dir);
    return test_report("core_spool_test");
}
