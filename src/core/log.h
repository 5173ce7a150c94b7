/* Leveled log lines to stderr and LOGS_DIR/backend.log:
 *   2026-11-28T10:39:03.123Z INFO  Using PIL composite method id=...
 * Thread-safe (one mutex around the two writes). Registered secrets (the
 * Replicate token, the admin token) are replaced by "[REDACTED]" in every line,
 * so no caller can leak them by accident. */
#ifndef SCENECOMP_CORE_LOG_H
#define SCENECOMP_CORE_LOG_H

typedef enum { SC_LOG_DEBUG = 0, SC_LOG_INFO, SC_LOG_WARN, SC_LOG_ERROR } sc_log_level_t;

/* Opens LOGS_DIR/backend.log (creating the directory) in append mode. Before it
 * is called, lines go to stderr only. Returns 0 or -1 (errno set). */
int sc_log_open(const char *logs_dir);
void sc_log_set_level(sc_log_level_t min);
/* Parses "debug"|"info"|"warning"|"error"; returns SC_LOG_INFO for anything else. */
sc_log_level_t sc_log_level_parse(const char *s);
/* Registers a secret to redact (copied; empty strings are ignored; up to 4). */
void sc_log_add_secret(const char *secret);
void sc_log(sc_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sc_log_close(void);

#define sc_log_debug(...) sc_log(SC_LOG_DEBUG, __VA_ARGS__)
#define sc_log_info(...) sc_log(SC_LOG_INFO, __VA_ARGS__)
#define sc_log_warn(...) sc_log(SC_LOG_WARN, __VA_ARGS__)
#define sc_log_error(...) sc_log(SC_LOG_ERROR, __VA_ARGS__)

#endif
