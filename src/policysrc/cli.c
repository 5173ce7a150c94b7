/* `scenecomp policy ...` (see cli.h). */
#include "policysrc/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/fsutil.h"
#include "lua/policy.h"
#include "policysrc/client.h"

#define CLI_BUDGET 5.0 /* seconds per Redis command: an operator waits, not a request */
#define POLICY_FILE_MAX ((size_t)1 << 20)

static int usage(void)
{
    fprintf(stderr, "usage: scenecomp policy push FILE\n"
                    "       scenecomp policy push --version N\n"
                    "       scenecomp policy pull [--version N]\n"
                    "       scenecomp policy history\n"
                    "(REDIS_URL and REDIS_KEY_PREFIX from the environment or .env)\n");
    return 2;
}

static int parse_n(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s || v <= 0)
        return -1;
    *out = v;
    return 0;
}

static sc_polc_t *connect_cfg(const sc_config_t *cfg)
{
    char err[1024];
    sc_redis_target_t t;
    if (sc_redis_url_parse(cfg->redis_url, &t, err, sizeof err) != 0) {
        fprintf(stderr, "scenecomp policy: %s\n", err);
        return NULL;
    }
    sc_polc_t *p = sc_polc_open(&t, cfg->redis_key_prefix, CLI_BUDGET, err, sizeof err);
    if (!p)
        fprintf(stderr, "scenecomp policy: %s (check REDIS_URL)\n", err);
    return p;
}

static void print_time(double t, char out[32])
{
    if (t > 0)
        sc_clock_rfc3339(t, out);
    else
        snprintf(out, 32, "-");
}

static int push(const sc_config_t *cfg, sc_polc_t *p, const char *file, long long from)
{
    char err[2048];
    char *src = NULL;
    size_t len = 0;
    int rc = 1;
    sc_polc_version_t old;
    memset(&old, 0, sizeof old);
    if (from > 0) {
        int g = sc_polc_get(p, from, true, CLI_BUDGET, &old, err, sizeof err);
        if (g != 0) {
            if (g == 1)
                fprintf(stderr,
                        "scenecomp policy: unknown version %lld (see `scenecomp policy "
                        "history`)\n",
                        from);
            else
                fprintf(stderr, "scenecomp policy: %s\n", err);
            goto cleanup;
        }
        char name[48];
        snprintf(name, sizeof name, "redis v%lld", from);
        if (sc_policy_check_buffer(cfg, old.source, old.len, name, err, sizeof err) != 0) {
            fprintf(stderr, "%s\nversion %lld: test failed; nothing pushed\n", err, from);
            goto cleanup;
        }
        src = old.source;
        len = old.len;
        old.source = NULL;
    } else {
        int r = sc_fs_read_file(file, POLICY_FILE_MAX, &src, &len);
        if (r != 0) {
            fprintf(stderr, "scenecomp policy: cannot read %s: %s\n", file,
                    r == -2 ? "file too large" : strerror(errno));
            goto cleanup;
        }
        /* check-policy's validation again, on the very bytes pushed (the file
         * may have changed since the first check) */
        if (sc_policy_check_buffer(cfg, src, len, file, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n%s: test failed; nothing pushed\n", err, file);
            goto cleanup;
        }
    }
    long long v = 0;
    if (sc_polc_push(p, src, len, from, CLI_BUDGET, &v, err, sizeof err) != 0) {
        fprintf(stderr,
                "scenecomp policy: %s; the push may not have been stored (check "
                "`scenecomp policy history`)\n",
                err);
        goto cleanup;
    }
    char sum[SC_POLC_CHECKSUM_LEN + 1];
    sc_polc_checksum(src, len, sum);
    if (from > 0)
        printf("pushed version %lld (a copy of version %lld, sha256 %s)\n", v, from, sum);
    else
        printf("pushed version %lld from %s (sha256 %s)\n", v, file, sum);
    rc = 0;
cleanup:
    sc_polc_version_free(&old);
    free(src);
    return rc;
}

static int pull(sc_polc_t *p, long long v)
{
    char err[1024];
    if (v == 0) {
        if (sc_polc_current(p, CLI_BUDGET, &v, err, sizeof err) != 0) {
            fprintf(stderr, "scenecomp policy: %s\n", err);
            return 1;
        }
        if (v == 0) {
            fprintf(stderr, "scenecomp policy: no policy in Redis yet (push one with "
                            "`scenecomp policy push FILE`)\n");
            return 1;
        }
    }
    sc_polc_version_t ver;
    int g = sc_polc_get(p, v, true, CLI_BUDGET, &ver, err, sizeof err);
    if (g != 0) {
        if (g == 1)
            fprintf(stderr, "scenecomp policy: unknown version %lld\n", v);
        else
            fprintf(stderr, "scenecomp policy: %s\n", err);
        return 1;
    }
    int rc = fwrite(ver.source, 1, ver.len, stdout) == ver.len ? 0 : 1;
    sc_polc_version_free(&ver);
    return rc;
}

static int history(sc_polc_t *p)
{
    char err[1024];
    long long cur = 0;
    sc_polc_version_t *vs = NULL;
    size_t n = 0;
    if (sc_polc_current(p, CLI_BUDGET, &cur, err, sizeof err) != 0 ||
        sc_polc_history(p, CLI_BUDGET, &vs, &n, err, sizeof err) != 0) {
        fprintf(stderr, "scenecomp policy: %s\n", err);
        return 1;
    }
    printf("%-8s %-24s %-64s %s\n", "version", "pushed_at", "sha256", "note");
    for (size_t i = 0; i < n; i++) {
        char at[32], note[64] = "";
        print_time(vs[i].time, at);
        if (vs[i].rollback_of > 0)
            snprintf(note, sizeof note, "rollback to %lld", vs[i].rollback_of);
        if (vs[i].version == cur)
            snprintf(note + strlen(note), sizeof note - strlen(note), "%scurrent",
                     note[0] ? ", " : "");
        printf("%-8lld %-24s %-64s %s\n", vs[i].version, at, vs[i].checksum, note);
    }
    free(vs);
    return 0;
}

int sc_policysrc_cli(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    const char *sub = argv[2];
    const char *file = NULL;
    long long version = 0;
    if (strcmp(sub, "push") == 0) {
        if (argc == 4 && strncmp(argv[3], "--", 2) != 0)
            file = argv[3];
        else if (argc == 5 && strcmp(argv[3], "--version") == 0 && parse_n(argv[4], &version) == 0)
            ;
        else
            return usage();
    } else if (strcmp(sub, "pull") == 0) {
        if (argc == 5 && strcmp(argv[3], "--version") == 0 && parse_n(argv[4], &version) == 0)
            ;
        else if (argc != 3)
            return usage();
    } else if (strcmp(sub, "history") == 0) {
        if (argc != 3)
            return usage();
    } else {
        return usage();
    }

    char err[2048];
    sc_config_t *cfg = malloc(sizeof *cfg);
    if (!cfg) {
        fprintf(stderr, "scenecomp policy: out of memory\n");
        return 1;
    }
    if (sc_config_load(cfg, ".env", err, sizeof err) != 0) {
        fprintf(stderr, "scenecomp: configuration error: %s\n", err);
        free(cfg);
        return 1;
    }
    int rc = 1;
    /* A broken file is refused before Redis is asked anything. */
    if (file && sc_policy_check_file(cfg, file, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n%s: test failed; nothing pushed\n", err, file);
        free(cfg);
        return 1;
    }
    sc_polc_t *p = connect_cfg(cfg);
    if (p) {
        if (strcmp(sub, "push") == 0)
            rc = push(cfg, p, file, version);
        else if (strcmp(sub, "pull") == 0)
            rc = pull(p, version);
        else
            rc = history(p);
        sc_polc_close(p);
    }
    free(cfg);
    return rc;
}
