/* The file watcher on its own (core/watch.h): registered functions are called
 * for their own file only (two files sharing a directory, one elsewhere), with
 * forced = false on a change and forced = true for every file on a request; a
 * deleted file is not reported, a recreated one is; nothing after stop; the
 * registration limit. Bounds are generous (the contract says 2 s). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/watch.h"
#include "test.h"

typedef struct seen {
    atomic_int changes; /* forced == false */
    atomic_int forced;  /* forced == true, trigger "SIGHUP" */
    atomic_int bad_trigger;
} seen_t;

static seen_t g_seen[3];

static void on_reload(const char *trigger, bool forced, void *ud)
{
    seen_t *s = ud;
    if (forced) {
        atomic_fetch_add(&s->forced, 1);
        if (strcmp(trigger, "SIGHUP") != 0)
            atomic_fetch_add(&s->bad_trigger, 1);
    } else {
        atomic_fetch_add(&s->changes, 1);
        if (strcmp(trigger, "file change") != 0)
            atomic_fetch_add(&s->bad_trigger, 1);
    }
}

/* Waits until *counter >= want; returns whether it got there within limit s. */
static bool wait_count(atomic_int *counter, int want, double limit)
{
    double t0 = sc_clock_mono();
    while (sc_clock_mono() - t0 < limit) {
        if (atomic_load(counter) >= want)
            return true;
        usleep(20000);
    }
    return false;
}

static void write_file(const char *path, const char *text)
{
    CHECK(sc_fs_write_atomic(path, text, strlen(text)) == 0);
}

int main(void)
{
    char dir1[] = "/tmp/sc_watch_test_XXXXXX", dir2[] = "/tmp/sc_watch_test_XXXXXX";
    char a[256], b[256], c[256];
    if (!mkdtemp(dir1) || !mkdtemp(dir2))
        return 1;
    snprintf(a, sizeof a, "%s/a.lua", dir1);
    snprintf(b, sizeof b, "%s/b.lua", dir1); /* same directory as a */
    snprintf(c, sizeof c, "%s/c.lua", dir2);
    write_file(a, "a1");
    write_file(b, "b1");
    write_file(c, "c1");

    CHECK(sc_watch_add(a, on_reload, &g_seen[0]) == 0);
    CHECK(sc_watch_add(b, on_reload, &g_seen[1]) == 0);
    CHECK(sc_watch_add(c, on_reload, &g_seen[2]) == 0);
    CHECK(sc_watch_start() == 0);
    CHECK(sc_watch_add(a, on_reload, &g_seen[0]) == -1); /* not while running */

    /* a change reaches its own function only */
    write_file(a, "a2");
    CHECK(wait_count(&g_seen[0].changes, 1, 5));
    write_file(c, "c2");
    CHECK(wait_count(&g_seen[2].changes, 1, 5));
    usleep(1500000); /* one poll period: nothing else shows up */
    CHECK_EQ_INT(atomic_load(&g_seen[0].changes), 1);
    CHECK_EQ_INT(atomic_load(&g_seen[1].changes), 0);
    CHECK_EQ_INT(atomic_load(&g_seen[2].changes), 1);

    /* a request calls every function, forced */
    sc_watch_request();
    for (int i = 0; i < 3; i++)
        CHECK(wait_count(&g_seen[i].forced, 1, 5));

    /* a deleted file is not reported; its return is */
    CHECK(unlink(b) == 0);
    usleep(1500000);
    CHECK_EQ_INT(atomic_load(&g_seen[1].changes), 0);
    write_file(b, "b2");
    CHECK(wait_count(&g_seen[1].changes, 1, 5));

    sc_watch_stop();
    int before = atomic_load(&g_seen[0].changes);
    write_file(a, "a3");
    usleep(1500000);
    CHECK_EQ_INT(atomic_load(&g_seen[0].changes), before); /* nothing after stop */
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(atomic_load(&g_seen[i].bad_trigger), 0);

    /* stop forgot the registrations: SC_WATCH_MAX fit again, one more does not */
    for (int i = 0; i < SC_WATCH_MAX; i++)
        CHECK(sc_watch_add(a, on_reload, &g_seen[0]) == 0);
    CHECK(sc_watch_add(a, on_reload, &g_seen[0]) == -1);
    sc_watch_stop();

    unlink(a);
    unlink(b);
    unlink(c);
    rmdir(dir1);
    rmdir(dir2);
    return test_report("core_watch_test");
}
