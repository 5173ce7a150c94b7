#include "core/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/fsutil.h"

/* The .env pairs, kept so that sc_config_lookup answers like sc_config_load read.
 * Written once at start-up (main thread), read-only afterwards. */
#define DOTENV_MAX 256
static struct {
    char *name;
    char *value;
} g_dotenv[DOTENV_MAX];
static int g_dotenv_n;

static void dotenv_clear(void)
{
    for (int i = 0; i < g_dotenv_n; i++) {
        free(g_dotenv[i].name);
        free(g_dotenv[i].value);
    }
    g_dotenv_n = 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = '\0';
    return s;
}

/* Parses KEY=VALUE lines; `export ` prefixes, comments, blank lines and quoted
 * values ("..." or '...') are accepted like docker/compose and python-dotenv do.
 * An unquoted value ends at ` #` (an inline comment). */
static int dotenv_load(const char *path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = sc_fs_read_file(path, 1 << 20, &text, &len);
    if (rc == -1 && errno == ENOENT)
        return 0;
    if (rc != 0) {
        snprintf(err, errlen, "cannot read %s: %s", path,
                 rc == -2 ? "file too large" : strerror(errno));
        return -1;
    }
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        if (strncmp(s, "export ", 7) == 0)
            s = trim(s + 7);
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s: line %d: expected NAME=VALUE", path, lineno);
            free(text);
            return -1;
        }
        *eq = '\0';
        char *name = trim(s);
        char *val = trim(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = '\0';
            val++;
        } else {
            char *hash = strstr(val, " #");
            if (hash) {
                *hash = '\0';
                val = trim(val);
            }
        }
        if (g_dotenv_n == DOTENV_MAX) {
            snprintf(err, errlen, "%s: more than %d variables", path, DOTENV_MAX);
            free(text);
            return -1;
        }
        g_dotenv[g_dotenv_n].name = strdup(name);
        g_dotenv[g_dotenv_n].value = strdup(val);
        if (!g_dotenv[g_dotenv_n].name || !g_dotenv[g_dotenv_n].value) {
            snprintf(err, errlen, "out of memory reading %s", path);
            free(text);
            return -1;
        }
        g_dotenv_n++;
    }
    free(text);
    return 0;
}

const char *sc_config_lookup(const char *name)
{
    const char *v = getenv(name);
    if (v)
        return v;
    for (int i = g_dotenv_n - 1; i >= 0; i--)
        if (strcmp(g_dotenv[i].name, name) == 0)
            return g_dotenv[i].value;
    return NULL;
}

void sc_config_defaults(sc_config_t *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8000;
    c->use_kontext = false;
    snprintf(c->method, sizeof c->method, "pil");
    snprintf(c->kontext_model_id, sizeof c->kontext_model_id,
             "flux-kontext-apps/multi-image-kontext-pro");
    c->kontext_timeout_seconds = 60;
    c->max_concurrent_kontext = 5;
    c->max_kontext_per_hour = 50;
    c->kontext_daily_limit = 500;
    snprintf(c->scene_model_id, sizeof c->scene_model_id, "black-forest-labs/flux-schnell");
    c->scene_timeout_seconds = 60;
    c->scene_max_concurrent = 5;
    c->scene_max_per_hour = 100;
    c->scene_daily_limit = 1000;
    snprintf(c->replicate_api_base, sizeof c->replicate_api_base, "https://api.replicate.com/v1");
    snprintf(c->logs_dir, sizeof c->logs_dir, "logs");
    snprintf(c->output_dir, sizeof c->output_dir, "output");
    snprintf(c->policy_file, sizeof c->policy_file, "lua/policy.lua");
    snprintf(c->alerts_file, sizeof c->alerts_file, "lua/alerts.lua");
    c->max_upload_bytes = 26214400;
    c->product_cache_bytes = (long long)256 << 20;
    c->upload_spool_bytes = 16384;
    c->max_image_pixels = 40000000;
    c->alert_interval_seconds = 5;
    c->kontext_price_usd = 0.08;
    c->scene_price_usd = 0.003;
    c->http_threads = 0;
    c->max_buffered_upload_bytes = 536870912;
    c->max_connections_per_ip = 0;
    c->header_timeout_seconds = 30;
    snprintf(c->log_level, sizeof c->log_level, "info");
    /* ---- Fleet (issue 9) ---- */
    snprintf(c->limits_store, sizeof c->limits_store, "memory");
    snprintf(c->redis_url, sizeof c->redis_url, "redis://127.0.0.1:6379/0");
    snprintf(c->redis_key_prefix, sizeof c->redis_key_prefix, "scenecomp:");
    snprintf(c->policy_source, sizeof c->policy_source, "file");
    /* Outage protection (issue 11) */
    c->breaker_enabled = true;
    c->kontext_budget_pacing = false;
}

static int get_str(const char *name, char *dst, size_t cap, char *err, size_t errlen)
{
    const char *v = sc_config_lookup(name);
    if (!v)
        return 0;
    if (strlen(v) >= cap) {
        snprintf(err, errlen, "%s is too long (max %zu bytes)", name, cap - 1);
        return -1;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int get_ll(const char *name, long long *dst, long long lo, long long hi, char *err,
                  size_t errlen)
{
    const char *v = sc_config_lookup(name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    while (*end == ' ')
        end++;
    if (errno || end == v || *end != '\0' || x < lo || x > hi) {
        snprintf(err, errlen, "%s must be an integer between %lld and %lld (got '%.64s')", name, lo,
                 hi, v);
        return -1;
    }
    *dst = x;
    return 0;
}

static int get_int(const char *name, int *dst, int lo, int hi, char *err, size_t errlen)
{
    long long x = *dst;
    if (get_ll(name, &x, lo, hi, err, errlen) != 0)
        return -1;
    *dst = (int)x;
    return 0;
}

static int get_double(const char *name, double *dst, double lo, double hi, char *err, size_t errlen)
{
    const char *v = sc_config_lookup(name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    while (*end == ' ')
        end++;
    if (errno || end == v || *end != '\0' || !isfinite(x) || x < lo || x > hi) {
        snprintf(err, errlen, "%s must be a number between %g and %g (got '%.64s')", name, lo, hi,
                 v);
        return -1;
    }
    *dst = x;
    return 0;
}

static int get_bool(const char *name, bool *dst, char *err, size_t errlen)
{
    const char *v = sc_config_lookup(name);
    if (!v)
        return 0;
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *dst = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *dst = false;
            return 0;
        }
    }
    snprintf(err, errlen, "%s must be a boolean (true/false, 1/0, yes/no, on/off; got '%.64s')",
             name, v);
    return -1;
}

/* ---- Fleet (issue 9): LIMITS_STORE, REDIS_URL, REDIS_KEY_PREFIX, INSTANCE_ID,
 * POLICY_SOURCE. The URL's shape is checked by the Redis module when it connects
 * (serve refuses to start on a malformed one). */
static int load_fleet(sc_config_t *c, char *err, size_t errlen)
{
#define S(n, f) get_str(n, c->f, sizeof c->f, err, errlen)
    if (S("LIMITS_STORE", limits_store) || S("REDIS_URL", redis_url) ||
        S("REDIS_KEY_PREFIX", redis_key_prefix) || S("INSTANCE_ID", instance_id) ||
        S("POLICY_SOURCE", policy_source))
        return -1;
#undef S
    if (strcmp(c->limits_store, "memory") != 0 && strcmp(c->limits_store, "redis") != 0) {
        snprintf(err, errlen, "LIMITS_STORE must be 'memory' or 'redis' (got '%.64s')",
                 c->limits_store);
        return -1;
    }
    if (strcmp(c->policy_source, "file") != 0 && strcmp(c->policy_source, "redis") != 0) {
        snprintf(err, errlen, "POLICY_SOURCE must be 'file' or 'redis' (got '%.64s')",
                 c->policy_source);
        return -1;
    }
    if (strncmp(c->redis_url, "redis://", 8) != 0 && strncmp(c->redis_url, "unix://", 7) != 0) {
        snprintf(err, errlen, "REDIS_URL must start with redis:// or unix:// (got '%.64s')",
                 c->redis_url);
        return -1;
    }
    for (const char *p = c->instance_id; *p; p++) {
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e || *p == '"' || *p == '\\') {
            snprintf(err, errlen, "INSTANCE_ID must be printable ASCII without spaces or quotes");
            return -1;
        }
    }
    return 0;
}

int sc_config_load(sc_config_t *c, const char *dotenv_path, char *err, size_t errlen)
{
    sc_config_defaults(c);
    dotenv_clear();
    if (dotenv_path && dotenv_load(dotenv_path, err, errlen) != 0)
        return -1;
#define S(n, f) get_str(n, c->f, sizeof c->f, err, errlen)
    if (S("HOST", host) || get_int("PORT", &c->port, 0, 65535, err, errlen) ||
        get_bool("USE_KONTEXT_COMPOSITE", &c->use_kontext, err, errlen) ||
        S("COMPOSITE_METHOD", method) || S("KONTEXT_MODEL_ID", kontext_model_id) ||
        get_double("KONTEXT_TIMEOUT_SECONDS", &c->kontext_timeout_seconds, 0.1, 3600, err,
                   errlen) ||
        get_int("MAX_CONCURRENT_KONTEXT", &c->max_concurrent_kontext, 0, 100000, err, errlen) ||
        get_int("MAX_KONTEXT_PER_HOUR", &c->max_kontext_per_hour, 0, 100000000, err, errlen) ||
        get_int("KONTEXT_DAILY_GENERATION_LIMIT", &c->kontext_daily_limit, 0, 100000000, err,
                errlen) ||
        S("SCENE_MODEL_ID", scene_model_id) ||
        get_double("SCENE_TIMEOUT_SECONDS", &c->scene_timeout_seconds, 0.1, 3600, err, errlen) ||
        S("REPLICATE_API_TOKEN", replicate_api_token) ||
        S("REPLICATE_API_BASE", replicate_api_base) || S("LOGS_DIR", logs_dir) ||
        S("OUTPUT_DIR", output_dir) || S("POLICY_FILE", policy_file) ||
        S("ALERTS_FILE", alerts_file) || S("ADMIN_TOKEN", admin_token) ||
        get_ll("MAX_UPLOAD_BYTES", &c->max_upload_bytes, 1024, (long long)1 << 40, err, errlen) ||
        get_ll("MAX_IMAGE_PIXELS", &c->max_image_pixels, 1, (long long)1 << 40, err, errlen) ||
        S("ALERT_WEBHOOK_URL", alert_webhook_url) ||
        get_double("ALERT_EVAL_INTERVAL_SECONDS", &c->alert_interval_seconds, 0.05, 3600, err,
                   errlen) ||
        get_double("KONTEXT_PRICE_USD", &c->kontext_price_usd, 0, 1000, err, errlen) ||
        get_double("SCENE_PRICE_USD", &c->scene_price_usd, 0, 1000, err, errlen) ||
        get_int("HTTP_THREADS", &c->http_threads, 0, 256, err, errlen) ||
        get_ll("MAX_BUFFERED_UPLOAD_BYTES", &c->max_buffered_upload_bytes, 1024, (long long)1 << 44,
               err, errlen) ||
        get_int("MAX_CONNECTIONS_PER_IP", &c->max_connections_per_ip, 0, 100000, err, errlen) ||
        get_double("HEADER_TIMEOUT_SECONDS", &c->header_timeout_seconds, 0, 3600, err, errlen) ||
        S("LOG_LEVEL", log_level))
        return -1;
    /* The product cache (image/pcache.h): bytes of cached layers, 0 = off */
    if (get_ll("PRODUCT_CACHE_BYTES", &c->product_cache_bytes, 0, (long long)1 << 40, err, errlen))
        return -1;
    /* Uploaded files over this many bytes wait in a spool file (core/spool.h), 0 = off */
    if (get_ll("UPLOAD_SPOOL_BYTES", &c->upload_spool_bytes, 0, (long long)1 << 40, err, errlen))
        return -1;
    /* Webhooks (issue 10) */
    if (S("WEBHOOK_SECRET", webhook_secret) || S("WEBHOOK_ALLOWED_HOSTS", webhook_allowed_hosts))
        return -1;
#undef S
    /* Scene caps (same ranges as the Kontext ones). */
    if (get_int("SCENE_MAX_CONCURRENT", &c->scene_max_concurrent, 0, 100000, err, errlen) ||
        get_int("SCENE_MAX_PER_HOUR", &c->scene_max_per_hour, 0, 100000000, err, errlen) ||
        get_int("SCENE_DAILY_LIMIT", &c->scene_daily_limit, 0, 100000000, err, errlen))
        return -1;
    /* Outage protection (issue 11) */
    if (get_bool("BREAKER_ENABLED", &c->breaker_enabled, err, errlen) ||
        get_bool("KONTEXT_BUDGET_PACING", &c->kontext_budget_pacing, err, errlen))
        return -1;
    if (strcmp(c->method, "pil") != 0 && strcmp(c->method, "kontext") != 0) {
        snprintf(err, errlen, "COMPOSITE_METHOD must be 'pil' or 'kontext' (got '%.64s')",
                 c->method);
        return -1;
    }
    if (strcmp(c->log_level, "debug") && strcmp(c->log_level, "info") &&
        strcmp(c->log_level, "warning") && strcmp(c->log_level, "error")) {
        snprintf(err, errlen, "LOG_LEVEL must be debug, info, warning or error (got '%.64s')",
                 c->log_level);
        return -1;
    }
    size_t bl = strlen(c->replicate_api_base);
    while (bl > 0 && c->replicate_api_base[bl - 1] == '/')
        c->replicate_api_base[--bl] = '\0';
    if (strncmp(c->replicate_api_base, "http://", 7) != 0 &&
        strncmp(c->replicate_api_base, "https://", 8) != 0) {
        snprintf(err, errlen, "REPLICATE_API_BASE must start with http:// or https://");
        return -1;
    }
    return load_fleet(c, err, errlen);
}
