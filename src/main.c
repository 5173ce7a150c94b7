/* scenecomp: the command line.
 *
 *   scenecomp serve                       the HTTP service (config: env, then .env)
 *   scenecomp composite --scene S --product P -o OUT [--x --y --scale --format
 *                       --quality --mask --shadow]
 *   scenecomp check-policy FILE           validate a policy file (exit 0 ok, 1 error)
 *   scenecomp check-policy FILE --replay LOG   ... and replay decisions.jsonl through it
 *   scenecomp check-alerts FILE           validate an alert rules file
 *   scenecomp policy push|pull|history    the fleet's policy in Redis (policysrc/cli.h)
 *   scenecomp --version | --help
 *
 * Exit codes: 0 success, 1 failure (bad file, start-up error), 2 bad usage. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "alerts/alerts.h"
#include "compose/compose.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/durable.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/watch.h"
#include "http/fleet.h"
#include "http/records.h"
#include "http/server.h"
#include "image/codec.h"
#include "image/icc.h"
#include "image/pcache.h"
#include "limits/limiter.h"
#include "limits/store_redis.h"
#include "lua/policy.h"
#include "lua/replay.h"
#include "metrics/metrics.h"
#include "policysrc/cli.h"
#include "policysrc/source.h"
#include "replicate/client.h"

/* How long a graceful stop lets in-flight Kontext predictions finish before
 * the Replicate client cancels them (their requests then fall back to PIL). */
#define SHUTDOWN_GRACE_SECONDS 10.0
/* How long it waits for the last answers to be written. */
#define SHUTDOWN_DRAIN_SECONDS 5.0
/* Temp files of atomic writes older than this are what a crash left; younger
 * ones may belong to another instance sharing the directory. */
#define STALE_TEMP_SECONDS 60.0
/* In LOGS_DIR: the ids of predictions created and not over yet. */
#define PREDICTION_JOURNAL "replicate_predictions.journal"

static void usage(FILE *f)
{
    fprintf(f, "usage: scenecomp <command> [options]\n"
               "\n"
               "commands:\n"
               "  serve                      run the HTTP service (config from env and .env)\n"
               "  composite --scene FILE --product FILE -o OUT [--x 0.5] [--y 0.6]\n"
               "            [--scale 0.4] [--format png|jpeg] [--quality 1-100]\n"
               "            [--mask MASK.png] [--shadow keep|remove]\n"
               "                             composite locally (PIL method) and write OUT\n"
               "  check-policy FILE          validate a policy file (exit 0 ok, 1 with the error)\n"
               "  check-policy FILE --replay LOGS_DIR/decisions.jsonl\n"
               "                             ... and show how it would route the logged requests\n"
               "  check-alerts FILE          validate an alert rules file\n"
               "  policy push FILE           validate FILE and make it the fleet's policy (Redis)\n"
               "  policy push --version N    roll back: push version N again as a new version\n"
               "  policy pull [--version N]  print the fleet's current (or version N's) policy\n"
               "  policy history             list the versions with time and sha256\n"
               "  --version                  print the version\n"
               "  --help                     print this help\n");
}

/* ==== composite ==== */

/* icc (if given) receives the file's ICC profile (image/icc.h), or NULL. */
static int read_image(const char *what, const char *path, long long max_pixels, sc_image_t *img,
                      uint8_t **icc, size_t *icc_len)
{
    char *data = NULL;
    size_t len = 0;
    int rc = sc_fs_read_file(path, (size_t)1 << 30, &data, &len);
    if (rc != 0) {
        fprintf(stderr, "scenecomp: cannot read %s '%s': %s\n", what, path,
                rc == -2 ? "file too large" : strerror(errno));
        return -1;
    }
    const char *err = NULL;
    sc_codec_status_t st = sc_codec_decode((const uint8_t *)data, len, max_pixels, img, &err);
    if (icc && st == SC_CODEC_OK && sc_icc_extract((const uint8_t *)data, len, icc, icc_len) < 0) {
        fprintf(stderr, "scenecomp: out of memory reading the %s's colour profile\n", what);
        free(data);
        return -1; /* the caller frees img */
    }
    free(data);
    if (st == SC_CODEC_TOO_LARGE) {
        fprintf(stderr, "scenecomp: %s '%s' has more than %lld pixels\n", what, path, max_pixels);
        return -1;
    }
    if (st != SC_CODEC_OK) {
        fprintf(stderr, "scenecomp: %s '%s' is not a valid PNG or JPEG image%s%s\n", what, path,
                err ? ": " : "", err ? err : "");
        return -1;
    }
    return 0;
}

/* Matches --name VALUE or --name=VALUE; advances *i past what it used. */
static bool opt_value(int argc, char **argv, int *i, const char *name, const char **out)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return false;
    if (a[n] == '=') {
        *out = a + n + 1;
        return true;
    }
    if (a[n] != '\0')
        return false;
    if (*i + 1 >= argc) {
        *out = NULL;
        return true;
    }
    *out = argv[++*i];
    return true;
}

static int cmd_composite(int argc, char **argv)
{
    const char *scene = NULL, *product = NULL, *out = NULL, *format = NULL;
    const char *sx = NULL, *sy = NULL, *sscale = NULL, *mask = NULL, *shadow = NULL,
               *quality = NULL;
    for (int i = 2; i < argc; i++) {
        const char *v = NULL;
        const char **slot = NULL;
        const char *name = argv[i];
        if (opt_value(argc, argv, &i, "--scene", &v))
            slot = &scene;
        else if (opt_value(argc, argv, &i, "--product", &v))
            slot = &product;
        else if (opt_value(argc, argv, &i, "--output", &v) || opt_value(argc, argv, &i, "-o", &v))
            slot = &out;
        else if (opt_value(argc, argv, &i, "--x", &v))
            slot = &sx;
        else if (opt_value(argc, argv, &i, "--y", &v))
            slot = &sy;
        else if (opt_value(argc, argv, &i, "--scale", &v))
            slot = &sscale;
        else if (opt_value(argc, argv, &i, "--format", &v))
            slot = &format;
        else if (opt_value(argc, argv, &i, "--mask", &v))
            slot = &mask;
        else if (opt_value(argc, argv, &i, "--shadow", &v))
            slot = &shadow;
        else if (opt_value(argc, argv, &i, "--quality", &v))
            slot = &quality;
        if (!slot) {
            fprintf(stderr, "scenecomp composite: unknown option '%s'\n", name);
            usage(stderr);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "scenecomp composite: option '%s' needs a value\n", name);
            return 2;
        }
        *slot = v;
    }
    if (!scene || !product || !out) {
        fprintf(stderr, "scenecomp composite: --scene, --product and -o are required\n");
        usage(stderr);
        return 2;
    }
    sc_place_params_t p = {0.5, 0.6, 0.4};
    if ((sx && sc_compose_parse_number(sx, &p.x) != 0) ||
        (sy && sc_compose_parse_number(sy, &p.y) != 0) ||
        (sscale && sc_compose_parse_number(sscale, &p.scale) != 0)) {
        fprintf(stderr, "scenecomp composite: --x, --y and --scale take numbers\n");
        return 2;
    }
    char perr[160];
    if (sc_compose_check_params(&p, perr, sizeof perr) != 0) {
        fprintf(stderr, "scenecomp composite: %s\n", perr);
        return 2;
    }
    /* --format, else the output's extension (.png, .jpg, .jpeg); anything else
     * is refused rather than written as some default format. */
    const char *dot = strrchr(out, '.');
    const sc_format_t *ofmt =
        format ? sc_format_by_name(format) : sc_format_by_ext(dot ? dot + 1 : NULL);
    if (!ofmt) {
        if (format)
            fprintf(stderr, "scenecomp composite: --format must be png or jpeg\n");
        else
            fprintf(stderr,
                    "scenecomp composite: cannot tell the output format from '%s': name it "
                    ".png or .jpg, or pass --format png|jpeg\n",
                    out);
        return 2;
    }
    sc_image_format_t fmt = ofmt->id;
    sc_compose_opts_t copts = {0, {NULL, SC_KEY_SHADOW_KEEP, NULL}, NULL, 0};
    if (quality && sc_compose_parse_quality(quality, &copts.quality) != 0) {
        fprintf(stderr, "scenecomp composite: --quality must be an integer from 1 to 100\n");
        return 2;
    }
    if (shadow && strcmp(shadow, "keep") != 0 && strcmp(shadow, "remove") != 0) {
        fprintf(stderr, "scenecomp composite: --shadow must be keep or remove\n");
        return 2;
    }
    if (shadow && strcmp(shadow, "remove") == 0)
        copts.place.shadow = SC_KEY_SHADOW_REMOVE;

    sc_config_t cfg;
    sc_config_defaults(&cfg);
    sc_image_t s = SC_IMAGE_INIT, pr = SC_IMAGE_INIT, mk = SC_IMAGE_INIT;
    uint8_t *bytes = NULL, *icc = NULL, *picc = NULL;
    size_t picc_len = 0;
    size_t len = 0;
    int rc = 1;
    if (read_image("scene", scene, cfg.max_image_pixels, &s, &icc, &copts.icc_len) != 0 ||
        read_image("product", product, cfg.max_image_pixels, &pr, &picc, &picc_len) != 0 ||
        (mask && read_image("mask", mask, cfg.max_image_pixels, &mk, NULL, NULL) != 0))
        goto cleanup;
    copts.icc = icc;
    /* a product with another profile than the scene's: into the scene's space */
    if (picc && sc_icc_convert(&pr, picc, picc_len, icc, copts.icc_len) < 0) {
        fprintf(stderr, "scenecomp: out of memory converting the product's colour profile\n");
        goto cleanup;
    }
    if (mask)
        copts.place.mask = &mk;
    double t0 = sc_clock_mono();
    const char *err = NULL;
    sc_keying_t keying = SC_KEYING_NONE;
    if (sc_compose_pil_opts(&s, &pr, &p, fmt, &copts, &bytes, &len, &keying, &err) != 0) {
        fprintf(stderr, "scenecomp: composite failed: %s\n", err ? err : "unknown error");
        goto cleanup;
    }
    if (sc_fs_write_atomic(out, bytes, len) != 0) {
        fprintf(stderr, "scenecomp: cannot write '%s': %s\n", out, strerror(errno));
        goto cleanup;
    }
    printf("wrote %s (%dx%d %s, keying %s, %.3f s)\n", out, s.width, s.height, ofmt->name,
           sc_keying_name(keying), sc_clock_mono() - t0);
    if (keying == SC_KEYING_SKIPPED)
        fprintf(stderr, "scenecomp: keying skipped: the product's border is not a plain backdrop; "
                        "pasted as a rectangle\n");
    rc = 0;
cleanup:
    free(bytes);
    sc_image_free(&s);
    sc_image_free(&pr);
    sc_image_free(&mk);
    free(icc);
    free(picc);
    return rc;
}

/* ==== check-policy / check-alerts ==== */

/* check-policy FILE --replay LOG: FILE (already validated) becomes this
 * process's only policy generation, and every logged request is routed by
 * sc_policy_route, the code serve runs. */
static int cmd_replay(sc_config_t *cfg, const char *file, const char *log)
{
    char err[2048] = "";
    sc_policy_replay_result_t r;
    snprintf(cfg->policy_file, sizeof cfg->policy_file, "%s", file);
    sc_log_set_level(SC_LOG_WARN); /* route errors still show */
    if (sc_policy_init(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n%s: test failed\n", err, file);
        return 1;
    }
    sc_policy_replay_init(&r);
    int rc = sc_policy_replay_file(log, sc_policy_replay_route_current, NULL, &r, err, sizeof err);
    sc_policy_shutdown();
    if (rc != 0) {
        fprintf(stderr, "scenecomp check-policy: cannot replay %s\n", err);
        return 1;
    }
    printf("%s: ok\n", file);
    sc_policy_replay_print(&r, stdout);
    return 0;
}

static int cmd_check(int argc, char **argv, bool policy)
{
    const char *replay = NULL;
    if (policy && argc == 5 && strcmp(argv[3], "--replay") == 0) {
        replay = argv[4];
    } else if (argc != 3) {
        fprintf(stderr, "usage: scenecomp %s FILE%s\n", argv[1],
                policy ? " [--replay LOGS_DIR/decisions.jsonl]" : "");
        return 2;
    }
    char err[2048] = "";
    int rc;
    sc_config_t cfg;
    if (policy) {
        if (sc_config_load(&cfg, ".env", err, sizeof err) != 0) {
            fprintf(stderr, "scenecomp: configuration error: %s\n", err);
            return 1;
        }
        rc = sc_policy_check_file(&cfg, argv[2], err, sizeof err);
    } else {
        rc = sc_alerts_check_file(argv[2], err, sizeof err);
    }
    if (rc != 0) {
        fprintf(stderr, "%s\n", err[0] ? err : "invalid file");
        fprintf(stderr, "%s: test failed\n", argv[2]);
        return 1;
    }
    if (replay)
        return cmd_replay(&cfg, argv[2], replay);
    printf("%s: ok\n", argv[2]);
    return 0;
}

/* ==== serve ==== */

/* Start-up: removes the temp files a kill -9 left in dir (see fsutil.h). */
static void remove_stale_temps(const char *dir)
{
    int n = sc_fs_remove_stale_temps(dir, STALE_TEMP_SECONDS);
    if (n > 0)
        sc_log_info("removed %d temp file(s) left by an earlier crash in %s", n, dir);
    else if (n < 0)
        sc_log_warn("cannot look for stale temp files in %s: %s", dir, strerror(errno));
}

/* Waits up to seconds for pred() to be true; returns early (false) on a
 * second SIGINT/SIGTERM so an impatient operator can cut the grace short. */
static bool wait_until(bool (*pred)(void), double seconds, const sigset_t *sigs)
{
    double end = sc_clock_mono() + seconds;
    while (!pred()) {
        if (sc_clock_mono() >= end)
            return false;
        struct timespec ts = {0, 50 * 1000 * 1000};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM)
            return false;
        if (sig == SIGHUP)
            sc_watch_request();
    }
    return true;
}

static bool none_suspended(void)
{
    return sc_http_suspended() == 0;
}

static bool no_connections(void)
{
    return sc_http_connections() == 0;
}

/* INSTANCE_ID, or <hostname>:<port> (<hostname>:pid<N> with PORT=0, whose
 * port is only known after binding). */
static void instance_id(const sc_config_t *cfg, char *out, size_t n)
{
    if (cfg->instance_id[0]) {
        snprintf(out, n, "%s", cfg->instance_id);
        return;
    }
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    if (cfg->port)
        snprintf(out, n, "%s:%d", host, cfg->port);
    else
        snprintf(out, n, "%s:pid%ld", host, (long)getpid());
}

/* The limits store LIMITS_STORE names (issue 9: memory | redis) for one paid
 * resource ("kontext", "scene"); the store with heartbeat feeds the fleet view
 * (exactly one per process). */
static sc_limits_store_t *make_store(const sc_config_t *cfg, const char *resource, bool heartbeat,
                                     char *err, size_t errlen)
{
    char id[512];
    instance_id(cfg, id, sizeof id);
    if (heartbeat)
        sc_http_fleet_set_instance(id, sc_clock_wall());
    if (strcmp(cfg->limits_store, "redis") != 0) {
        sc_limits_store_t *s = sc_limits_memory_new();
        if (!s)
            snprintf(err, errlen, "out of memory");
        return s;
    }
    sc_limits_redis_opts_t o = {
        .url = cfg->redis_url,
        .prefix = cfg->redis_key_prefix,
        .instance_id = id,
        .version = SC_VERSION,
        .policy_version = sc_policy_version,
        .resource = resource,
        .heartbeat = heartbeat,
    };
    /* Test knob (like SC_REPLICATE_POLL_MS): a longer request budget, so a
     * loaded test machine does not turn slow answers into outages. */
    const char *bm = getenv("SC_REDIS_BUDGET_MS");
    if (bm && *bm) {
        char *end;
        long v = strtol(bm, &end, 10);
        if (*end == '\0' && v >= 1 && v <= 10000)
            o.request_budget = (double)v / 1000.0;
    }
    sc_log_info("[Limits] %s store: redis (%s), instance %s", resource, cfg->redis_key_prefix, id);
    return sc_limits_redis_new(&o, err, errlen);
}

/* Every request waiting on Kontext holds its socket and up to two spooled
 * uploads (core/spool.h): a thousand in flight need some three thousand
 * descriptors, past the usual soft limit of 1024. The hard limit is what the
 * operator allows, so take all of it. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        sc_log_warn("cannot raise the open-file limit from %llu: %s", (unsigned long long)was,
                    strerror(errno));
    else
        sc_log_info("open-file limit raised from %llu to %llu", (unsigned long long)was,
                    (unsigned long long)rl.rlim_cur);
}

static int cmd_serve(void)
{
    /* Each composite allocates and frees ~15 MB of image buffers. glibc would
     * hand blocks that big back to the kernel (mmap threshold) and fault them in
     * zeroed again on the next request: 30-40 % of a composite's time in the
     * kernel (docs/performance.md). Keep them in the heap instead. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20); /* glibc's maximum on 64-bit */
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    sc_config_t *cfg = calloc(1, sizeof *cfg); /* outlives every module; freed at exit */
    char err[2048] = "";
    if (!cfg)
        return 1;
    if (sc_config_load(cfg, ".env", err, sizeof err) != 0) {
        fprintf(stderr, "scenecomp: configuration error: %s\n", err);
        free(cfg);
        return 1;
    }
    if (sc_log_open(cfg->logs_dir) != 0) {
        fprintf(stderr, "scenecomp: cannot open the log in LOGS_DIR '%s': %s\n", cfg->logs_dir,
                strerror(errno));
        free(cfg);
        return 1;
    }
    sc_log_set_level(sc_log_level_parse(cfg->log_level));
    sc_log_add_secret(cfg->replicate_api_token);
    sc_log_add_secret(cfg->admin_token);

    /* Signals go to the main thread only (sigtimedwait below): block them before
     * any module starts a thread, so every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A write past RLIMIT_FSIZE fails with EFBIG (a spooled upload answers
     * 503) instead of killing the process. */
    signal(SIGXFSZ, SIG_IGN);
    raise_nofile();

    int rc = 1;
    sc_durable_t *durable = NULL;
    bool limiter_up = false, metrics_up = false, policy_up = false, alerts_up = false,
         rep_up = false, reload_up = false, records_up = false, policysrc_up = false;
    /* POLICY_SOURCE=redis: the policy follows Redis, not POLICY_FILE's watcher. */
    bool redis_policy = strcmp(cfg->policy_source, "redis") == 0;
    if (sc_fs_mkdirs(cfg->output_dir) != 0) {
        sc_log_error("cannot create OUTPUT_DIR '%s': %s", cfg->output_dir, strerror(errno));
        goto out;
    }
    char path[sizeof cfg->logs_dir + sizeof cfg->output_dir + 64];
    remove_stale_temps(cfg->output_dir);
    snprintf(path, sizeof path, "%s/scenes", cfg->output_dir);
    remove_stale_temps(path);
    remove_stale_temps(cfg->logs_dir);
    sc_limits_store_t *store = make_store(cfg, "kontext", true, err, sizeof err);
    if (!store) {
        sc_log_error("cannot create the limits store: %s", err);
        goto out;
    }
    sc_limiter_init(store);
    limiter_up = true;
    /* Scenes are paid too: their own caps, over their own store instance
     * (with LIMITS_STORE=redis, fleet-wide like the Kontext caps). */
    sc_limits_store_t *scene_store = make_store(cfg, "scene", false, err, sizeof err);
    if (!scene_store) {
        sc_log_error("cannot create the scene limits store: %s", err);
        goto out;
    }
    sc_limiter_install(sc_limiter_scene(), scene_store);
    /* The group committer (issue 11): records, the metrics write-ahead and
     * outputs are made durable in batches off the compute threads. */
    durable = sc_durable_start(NULL);
    if (!durable) {
        sc_log_error("cannot start the durable-write committer");
        goto out;
    }
    sc_durable_set_global(durable);
    if (sc_metrics_init_with_scenes(cfg, sc_limiter_store(),
                                    sc_limiter_store_of(sc_limiter_scene())) != 0) {
        sc_log_error("cannot start metrics in LOGS_DIR '%s'", cfg->logs_dir);
        goto out;
    }
    metrics_up = true;
    if (sc_policy_init(cfg, err, sizeof err) != 0) {
        sc_log_error("[Policy] cannot load the policy: %s", err);
        goto out;
    }
    policy_up = true;
    if (redis_policy) {
        if (sc_policysrc_start(cfg, err, sizeof err) != 0) {
            sc_log_error("[Policy] cannot follow the policy in Redis: %s", err);
            goto out;
        }
        policysrc_up = true;
    }
    if (sc_alerts_init(cfg, err, sizeof err) != 0) {
        sc_log_error("[Alert] cannot load the alert rules: %s", err);
        goto out;
    }
    alerts_up = true;
    if (sc_replicate_init(cfg) != 0) {
        sc_log_error("cannot start the Replicate client");
        goto out;
    }
    rep_up = true;
    /* Before serving: cancels what a dead process left running upstream. */
    snprintf(path, sizeof path, "%s/" PREDICTION_JOURNAL, cfg->logs_dir);
    /* ...except the predictions of records left processing: those are
     * adopted (polled) below, so a restart never pays twice. */
    char **adopt = NULL;
    size_t nadopt = 0;
    if (sc_http_records_adoptable(cfg, &adopt, &nadopt) != 0)
        sc_log_warn("cannot scan OUTPUT_DIR for records left processing");
    int jrc = sc_replicate_journal_open_keep(path, (const char *const *)adopt, nadopt);
    sc_http_records_free_ids(adopt, nadopt);
    if (jrc < 0)
        sc_log_warn("cannot use the prediction journal %s: predictions left by a crash will "
                    "not be cancelled at the next start (Cancel-After still ends them)",
                    path);
    /* the watcher knows files and functions, not policies and alerts */
    if ((!redis_policy && sc_watch_add(cfg->policy_file, sc_policy_watch_reload, NULL) != 0) ||
        sc_watch_add(cfg->alerts_file, sc_alerts_watch_reload, NULL) != 0 ||
        sc_watch_start() != 0) {
        sc_log_error("cannot start the policy and alert file watcher");
        goto out;
    }
    reload_up = true;
    sc_pcache_configure((size_t)cfg->product_cache_bytes);
    /* The decision log and the webhook sender (its queue resumes). */
    if (sc_http_records_start(cfg, err, sizeof err) != 0) {
        sc_log_error("%s", err);
        goto out;
    }
    records_up = true;
    if (sc_http_start(cfg, err, sizeof err) != 0) {
        sc_log_error("%s", err);
        goto out;
    }
    (void)sc_http_records_resume();

    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            sc_log_info("[Policy] SIGHUP: reload requested");
            sc_watch_request();
            if (redis_policy)
                sc_policysrc_poke();
            continue;
        }
        sc_log_info("shutting down (%s): no new connections, finishing requests",
                    sig == SIGINT ? "SIGINT" : "SIGTERM");
        break;
    }
    sc_http_quiesce();
    sc_watch_stop();
    reload_up = false;
    if (!wait_until(none_suspended, SHUTDOWN_GRACE_SECONDS, &sigs))
        sc_log_warn("shutdown: cancelling %d Kontext/scene job(s) still running",
                    sc_http_suspended());
    sc_replicate_shutdown(); /* completes every pending job, so every connection resumes */
    rep_up = false;
    while (sc_http_suspended() > 0) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    wait_until(no_connections, SHUTDOWN_DRAIN_SECONDS, &sigs);
    sc_http_stop();
    rc = 0;
out:
    if (records_up)
        sc_http_records_stop();
    if (reload_up)
        sc_watch_stop();
    if (rep_up)
        sc_replicate_shutdown();
    if (alerts_up)
        sc_alerts_shutdown();
    if (durable) { /* the group commit's work over the run, for ops and benchmarks */
        sc_durable_stats_t st;
        sc_durable_stats(durable, &st);
        sc_log_info("durable: %lld writes (%lld coalesced into newer ones) in %lld batches, "
                    "%lld file and %lld directory fsyncs, %lld errors",
                    st.writes, st.coalesced, st.batches, st.file_fsyncs, st.dir_fsyncs, st.errors);
    }
    sc_durable_stop(durable); /* drains: every queued write is committed */
    if (policysrc_up)
        sc_policysrc_stop();
    if (policy_up)
        sc_policy_shutdown();
    if (metrics_up)
        sc_metrics_shutdown();
    if (limiter_up) {
        sc_limiter_shutdown();
        sc_limiter_install(sc_limiter_scene(), NULL);
    }
    sc_log_info(rc == 0 ? "stopped" : "start-up failed");
    sc_log_close();
    free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 || strcmp(cmd, "version") == 0) {
        printf("scenecomp %s\n", SC_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) {
        if (argc != 2) {
            fprintf(stderr, "scenecomp serve: takes no arguments (configure with env or .env)\n");
            return 2;
        }
        return cmd_serve();
    }
    if (strcmp(cmd, "composite") == 0)
        return cmd_composite(argc, argv);
    if (strcmp(cmd, "check-policy") == 0)
        return cmd_check(argc, argv, true);
    if (strcmp(cmd, "check-alerts") == 0)
        return cmd_check(argc, argv, false);
    if (strcmp(cmd, "policy") == 0)
        return sc_policysrc_cli(argc, argv);
    fprintf(stderr, "scenecomp: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
