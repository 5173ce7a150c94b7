/* Service configuration: the contract's environment variables, read from the
 * process environment and then from `.env` in the working directory (the real
 * environment wins). Every value is validated; a malformed number or boolean is
 * an error naming the variable, never a silent 0. Loaded once at start-up by the
 * main thread; afterwards the struct is read-only and may be shared by all threads. */
#ifndef SCENECOMP_CORE_CONFIG_H
#define SCENECOMP_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define SC_CFG_STR 512
#define SC_CFG_PATH 1024

typedef struct sc_config {
    char host[SC_CFG_STR];                /* HOST, 127.0.0.1 */
    int port;                             /* PORT, 8000 (0 = any free port) */
    bool use_kontext;                     /* USE_KONTEXT_COMPOSITE, false */
    char method[16];                      /* COMPOSITE_METHOD, "pil" | "kontext" */
    char kontext_model_id[SC_CFG_STR];    /* KONTEXT_MODEL_ID */
    double kontext_timeout_seconds;       /* KONTEXT_TIMEOUT_SECONDS, 60 */
    int max_concurrent_kontext;           /* MAX_CONCURRENT_KONTEXT, 5 */
    int max_kontext_per_hour;             /* MAX_KONTEXT_PER_HOUR, 50 */
    int kontext_daily_limit;              /* KONTEXT_DAILY_GENERATION_LIMIT, 500 */
    char scene_model_id[SC_CFG_STR];      /* SCENE_MODEL_ID */
    double scene_timeout_seconds;         /* SCENE_TIMEOUT_SECONDS, 60 */
    char replicate_api_token[SC_CFG_STR]; /* REPLICATE_API_TOKEN, "" = none */
    char replicate_api_base[SC_CFG_STR];  /* REPLICATE_API_BASE */
    char logs_dir[SC_CFG_PATH];           /* LOGS_DIR, "logs" */
    char output_dir[SC_CFG_PATH];         /* OUTPUT_DIR, "output" */
    char policy_file[SC_CFG_PATH];        /* POLICY_FILE, "lua/policy.lua" */
    char alerts_file[SC_CFG_PATH];        /* ALERTS_FILE, "lua/alerts.lua" */
    char admin_token[SC_CFG_STR];         /* ADMIN_TOKEN, "" = loopback-only admin */
    long long max_upload_bytes;           /* MAX_UPLOAD_BYTES, 26214400 */
    long long max_image_pixels;           /* MAX_IMAGE_PIXELS, 40000000 */
    long long product_cache_bytes;        /* PRODUCT_CACHE_BYTES, 256 MiB, 0 = off */
    long long upload_spool_bytes;         /* UPLOAD_SPOOL_BYTES, 16384, 0 = never spool */
    char alert_webhook_url[SC_CFG_PATH];  /* ALERT_WEBHOOK_URL, "" = none */
    double alert_interval_seconds;        /* ALERT_EVAL_INTERVAL_SECONDS, 5 */
    double kontext_price_usd;             /* KONTEXT_PRICE_USD, 0.08 per prediction */
    double scene_price_usd;               /* SCENE_PRICE_USD, 0.003 per image */
    int http_threads;                     /* HTTP_THREADS, 0 = 2 x cores (min 4) */
    long long max_buffered_upload_bytes;  /* MAX_BUFFERED_UPLOAD_BYTES, 536870912 */
    int max_connections_per_ip;           /* MAX_CONNECTIONS_PER_IP, 0 = no limit */
    double header_timeout_seconds;        /* HEADER_TIMEOUT_SECONDS, 30 (0 = none) */
    char log_level[16];                   /* LOG_LEVEL, "info" */

    /* Caps on scene predictions (paid, no local fallback: over a cap, 429). */
    int scene_max_concurrent; /* SCENE_MAX_CONCURRENT, 5 */
    int scene_max_per_hour;   /* SCENE_MAX_PER_HOUR, 100 (sliding 60 minutes) */
    int scene_daily_limit;    /* SCENE_DAILY_LIMIT, 1000 (per UTC day) */

    /* Webhooks (issue 10, src/webhooks) */
    char webhook_secret[SC_CFG_STR];         /* WEBHOOK_SECRET, "" = `webhook` field refused */
    char webhook_allowed_hosts[SC_CFG_PATH]; /* WEBHOOK_ALLOWED_HOSTS, comma list, "*" = all */

    /* ---- Fleet (issue 9): one contiguous block ---- */
    char limits_store[16];        /* LIMITS_STORE, "memory" | "redis" */
    char redis_url[SC_CFG_STR];   /* REDIS_URL, redis://127.0.0.1:6379/0 */
    char redis_key_prefix[128];   /* REDIS_KEY_PREFIX, "scenecomp:" */
    char instance_id[SC_CFG_STR]; /* INSTANCE_ID, "" = <hostname>:<port> at start */
    char policy_source[16];       /* POLICY_SOURCE, "file" | "redis" */

    /* Outage protection (issue 11): env defaults of the policy keys breaker, pacing */
    bool breaker_enabled;       /* BREAKER_ENABLED, true */
    bool kontext_budget_pacing; /* KONTEXT_BUDGET_PACING, false */
} sc_config_t;

/* Fills c with defaults, then the .env file at dotenv_path (may be NULL or
 * missing), then the real environment. Returns 0, or -1 with a message naming
 * the variable in err. */
int sc_config_load(sc_config_t *c, const char *dotenv_path, char *err, size_t errlen);

/* Fills c with the contract's defaults only (no env, no file). */
void sc_config_defaults(sc_config_t *c);

/* Looks up one variable the way sc_config_load does (env, then the .env file
 * read by the last sc_config_load). Returns NULL when unset. Thread-safe after
 * sc_config_load returned. Used by the Lua `scenecomp.env` lookup. */
const char *sc_config_lookup(const char *name);

#endif
