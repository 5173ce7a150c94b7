/* The file watcher (see watch.h): one thread calling registered reload
 * functions when their files change, and all of them on request.
 *
 * Requests from signal handlers arrive through a pipe (write(2) is
 * async-signal-safe); a flag covers the time before the thread starts. */
#include "core/watch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"

#define POLL_INTERVAL_MS 1000
#define DEBOUNCE_MS 150
#define WATCH_PATH_MAX 4096

typedef struct watched {
    char path[WATCH_PATH_MAX];
    char dir[WATCH_PATH_MAX];
    const char *base; /* points into path */
    sc_watch_fn fn;
    void *ud;
    int wd;         /* inotify watch of dir, -1 when none */
    struct stat st; /* last seen; st_ino == 0 when missing */
    bool dirty;
} watched_t;

static struct {
    pthread_t thread;
    bool running;
    int inotify_fd;
    int pipe_rd, pipe_wr;
    atomic_bool stop;
    watched_t files[SC_WATCH_MAX];
    int n;
} g_w = {.inotify_fd = -1, .pipe_rd = -1, .pipe_wr = -1};

static atomic_int g_pipe_wr = -1; /* read by the signal handler */
static atomic_bool g_requested;   /* a request not yet served */

static void split_path(watched_t *w)
{
    const char *slash = strrchr(w->path, '/');
    if (!slash) {
        snprintf(w->dir, sizeof w->dir, ".");
        w->base = w->path;
    } else {
        /* "/x" watches "/", "a/b/x" watches "a/b" */
        size_t dirlen = slash == w->path ? 1 : (size_t)(slash - w->path);
        memcpy(w->dir, w->path, dirlen); /* dirlen < strlen(path) < sizeof dir */
        w->dir[dirlen] = '\0';
        w->base = slash + 1;
    }
}

static void stat_file(const watched_t *w, struct stat *st)
{
    if (stat(w->path, st) != 0)
        memset(st, 0, sizeof *st);
}

static bool stat_changed(const struct stat *a, const struct stat *b)
{
    return a->st_ino != b->st_ino || a->st_dev != b->st_dev || a->st_size != b->st_size ||
           a->st_mtim.tv_sec != b->st_mtim.tv_sec || a->st_mtim.tv_nsec != b->st_mtim.tv_nsec;
}

/* Drains inotify events; marks the files whose names were touched. */
static void read_events(void)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(g_w.inotify_fd, buf, sizeof buf);
        if (n <= 0)
            return;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            for (int i = 0; i < g_w.n; i++) {
                if (ev->wd == g_w.files[i].wd && ev->len &&
                    strcmp(ev->name, g_w.files[i].base) == 0)
                    g_w.files[i].dirty = true;
            }
            p += sizeof *ev + ev->len;
        }
    }
}

static void *watch_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sc-watch"); /* top -H, perf */
    (void)arg;
    double next_poll = sc_clock_mono() + POLL_INTERVAL_MS / 1000.0;
    while (!atomic_load(&g_w.stop)) {
        struct pollfd fds[2] = {{g_w.pipe_rd, POLLIN, 0}, {g_w.inotify_fd, POLLIN, 0}};
        int wait_ms = (int)((next_poll - sc_clock_mono()) * 1000);
        if (wait_ms < 0)
            wait_ms = 0;
        int n = poll(fds, g_w.inotify_fd >= 0 ? 2 : 1, wait_ms);
        if (n < 0 && errno != EINTR) {
            sc_log_error("file watcher: poll failed: %s", strerror(errno));
            break;
        }
        if (atomic_load(&g_w.stop))
            break;
        if (n > 0 && (fds[0].revents & POLLIN)) {
            char c[64];
            while (read(g_w.pipe_rd, c, sizeof c) > 0) {
            }
        }
        if (atomic_exchange(&g_requested, false)) {
            for (int i = 0; i < g_w.n; i++) {
                g_w.files[i].fn("SIGHUP", true, g_w.files[i].ud);
                stat_file(&g_w.files[i], &g_w.files[i].st);
                g_w.files[i].dirty = false;
            }
            continue;
        }
        bool events = false;
        if (n > 0 && g_w.inotify_fd >= 0 && (fds[1].revents & POLLIN)) {
            read_events();
            /* Quiet period: keep draining until no event for DEBOUNCE_MS. */
            struct pollfd q = {g_w.inotify_fd, POLLIN, 0};
            while (poll(&q, 1, DEBOUNCE_MS) > 0 && !atomic_load(&g_w.stop))
                read_events();
            events = true;
        }
        bool polled = sc_clock_mono() >= next_poll;
        if (polled)
            next_poll = sc_clock_mono() + POLL_INTERVAL_MS / 1000.0;
        for (int i = 0; i < g_w.n && (events || polled); i++) {
            watched_t *w = &g_w.files[i];
            struct stat st;
            stat_file(w, &st);
            bool changed = stat_changed(&st, &w->st);
            if (!w->dirty && !changed)
                continue;
            w->dirty = false;
            w->st = st;
            if (st.st_ino == 0)
                continue; /* removed (maybe mid-rename): keep what is in force */
            w->fn("file change", false, w->ud);
        }
    }
    return NULL;
}

int sc_watch_add(const char *path, sc_watch_fn fn, void *ud)
{
    if (g_w.running || g_w.n >= SC_WATCH_MAX || !fn || strlen(path) >= WATCH_PATH_MAX)
        return -1;
    watched_t *w = &g_w.files[g_w.n];
    memset(w, 0, sizeof *w);
    snprintf(w->path, sizeof w->path, "%s", path);
    split_path(w);
    w->fn = fn;
    w->ud = ud;
    w->wd = -1;
    g_w.n++;
    return 0;
}

int sc_watch_start(void)
{
    int p[2];
    if (g_w.running)
        return 0;
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
        sc_log_error("file watcher: pipe: %s", strerror(errno));
        return -1;
    }
    g_w.pipe_rd = p[0];
    g_w.pipe_wr = p[1];
    atomic_store(&g_w.stop, false);
    g_w.inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (g_w.inotify_fd < 0)
        sc_log_warn("file watcher: inotify unavailable (%s); polling files every second",
                    strerror(errno));
    for (int i = 0; i < g_w.n; i++) {
        watched_t *w = &g_w.files[i];
        w->wd = -1;
        w->dirty = false;
        stat_file(w, &w->st);
        if (g_w.inotify_fd >= 0) {
            /* two files in one directory share one watch descriptor */
            w->wd = inotify_add_watch(g_w.inotify_fd, w->dir,
                                      IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE |
                                          IN_MODIFY | IN_ATTRIB);
            if (w->wd < 0)
                sc_log_warn("file watcher: cannot watch %s (%s); polling %s every second", w->dir,
                            strerror(errno), w->path);
        }
    }
    if (pthread_create(&g_w.thread, NULL, watch_main, NULL) != 0) {
        sc_log_error("file watcher: cannot start the thread");
        goto fail;
    }
    g_w.running = true;
    atomic_store(&g_pipe_wr, g_w.pipe_wr);
    if (atomic_load(&g_requested))
        sc_watch_request();
    return 0;
fail:
    if (g_w.inotify_fd >= 0)
        close(g_w.inotify_fd);
    close(g_w.pipe_rd);
    close(g_w.pipe_wr);
    g_w.inotify_fd = g_w.pipe_rd = g_w.pipe_wr = -1;
    return -1;
}

void sc_watch_request(void)
{
    int saved = errno; /* async-signal-safe: only atomics and write(2) */
    atomic_store(&g_requested, true);
    int fd = atomic_load(&g_pipe_wr);
    if (fd >= 0) {
        char c = 'r';
        ssize_t r = write(fd, &c, 1); /* a full pipe already holds a wake-up */
        (void)r;
    }
    errno = saved;
}

void sc_watch_stop(void)
{
    if (g_w.running) {
        atomic_store(&g_pipe_wr, -1);
        atomic_store(&g_w.stop, true);
        char c = 's';
        ssize_t r = write(g_w.pipe_wr, &c, 1);
        (void)r;
        pthread_join(g_w.thread, NULL);
        g_w.running = false;
        if (g_w.inotify_fd >= 0)
            close(g_w.inotify_fd);
        close(g_w.pipe_rd);
        close(g_w.pipe_wr);
        g_w.inotify_fd = g_w.pipe_rd = g_w.pipe_wr = -1;
    }
    g_w.n = 0;
    atomic_store(&g_requested, false);
}
