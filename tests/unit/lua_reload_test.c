/* Policy reload through the file watcher, registered as main does
 * (core/watch.h + sc_policy_watch_reload): a file replaced by rename,
 * rewritten in place, touched without change, a refused file then fixed, and
 * SIGHUP (sc_watch_request from a real signal handler). Bounds are generous
 * (the contract says 2 s). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/watch.h"
#include "lua/policy.h"
#include "test.h"

static char g_dir[] = "/tmp/sc_reload_test_XXXXXX";
static char g_path[256];
static char err[2048];

static void write_replace(const char *src)
{
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s/.policy.lua.swp", g_dir);
    FILE *f = fopen(tmp, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(src, f);
    CHECK(fclose(f) == 0);
    CHECK(rename(tmp, g_path) == 0);
}

static void write_in_place(const char *src)
{
    FILE *f = fopen(g_path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(src, f);
    CHECK(fclose(f) == 0);
}

/* Waits until the version reaches v; returns the seconds it took, or -1. */
static double wait_version(long long v, double limit)
{
    double t0 = sc_clock_mono();
    while (sc_clock_mono() - t0 < limit) {
        if (sc_policy_version() >= v)
            return sc_clock_mono() - t0;
        usleep(20000);
    }
    return -1;
}

static void on_hup(int sig)
{
    (void)sig;
    sc_watch_request();
}

static int has_error(void)
{
    sc_buf_t b = SC_BUF_INIT;
    sc_policy_status_json(&b);
    int r = strstr(b.data, "\"last_error\":null") == NULL;
    sc_buf_free(&b);
    return r;
}

int main(void)
{
    sc_config_t c;
    sc_policy_effective_t eff;
    if (!mkdtemp(g_dir))
        return 1;
    snprintf(g_path, sizeof g_path, "%s/policy.lua", g_dir);
    sc_config_defaults(&c);
    snprintf(c.policy_file, sizeof c.policy_file, "%s", g_path);
    snprintf(c.alerts_file, sizeof c.alerts_file, "%s/alerts.lua", g_dir);
    write_replace("return { max_concurrent = 1 }");
    CHECK(sc_policy_init(&c, err, sizeof err) == 0);
    CHECK(sc_watch_add(c.policy_file, sc_policy_watch_reload, NULL) == 0);
    CHECK(sc_watch_start() == 0);

    write_replace("return { max_concurrent = 2 }"); /* editors: write temp, rename */
    double t = wait_version(2, 5);
    printf("rename picked up after %.2f s\n", t);
    CHECK(t >= 0 && t < 5);
    sc_policy_current(&eff);
    CHECK_EQ_INT(eff.max_concurrent, 2);

    write_in_place("return { max_concurrent = 3 }");
    t = wait_version(3, 5);
    printf("in-place write picked up after %.2f s\n", t);
    CHECK(t >= 0 && t < 5);

    /* touched, same content: no new generation */
    write_in_place("return { max_concurrent = 3 }");
    usleep(1500000);
    CHECK_EQ_INT(sc_policy_version(), 3);

    /* SIGHUP always reloads */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    raise(SIGHUP);
    t = wait_version(4, 5);
    printf("SIGHUP served after %.2f s\n", t);
    CHECK(t >= 0 && t < 5);

    /* a bad file is refused: same version, last_error set */
    write_replace("return { max_concurrent = 'many' }");
    usleep(1500000);
    CHECK_EQ_INT(sc_policy_version(), 4);
    CHECK(has_error());
    sc_policy_current(&eff);
    CHECK_EQ_INT(eff.max_concurrent, 3);

    /* reverting to the content in force reloads it and clears last_error */
    write_replace("return { max_concurrent = 3 }");
    t = wait_version(5, 5);
    CHECK(t >= 0);
    CHECK(!has_error());

    sc_watch_stop();
    sc_watch_request(); /* after stop: harmless */
    sc_policy_shutdown();
    unlink(g_path);
    rmdir(g_dir);
    return test_report("lua_reload_test");
}
