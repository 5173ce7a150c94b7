/* Alert rules (ALERTS_FILE, or the embedded lua/alerts.lua when the file does not
 * exist): a thread with its own sandboxed lua_State evaluates every rule every
 * ALERT_EVAL_INTERVAL_SECONDS over the metrics snapshot; per rule the state goes
 * inactive -> pending -> firing (after for_seconds) -> resolved (inactive).
 * Changes are logged with `[Alert]` and, when ALERT_WEBHOOK_URL is set, queued to
 * a sender thread that POSTs an Alertmanager-compatible payload with retries
 * (never blocking evaluation). Reload validates in a fresh state; a failing file
 * keeps the old rules. Thread-safe. */
#ifndef SCENECOMP_ALERTS_ALERTS_H
#define SCENECOMP_ALERTS_ALERTS_H

#include <stdbool.h>

#include "core/buf.h"
#include "core/config.h"

/* Loads the rules and starts the evaluation (and webhook) threads. Returns 0 or
 * -1 with "file:line: message" in err (start-up stops). */
int sc_alerts_init(const sc_config_t *cfg, char *err, size_t errlen);
void sc_alerts_shutdown(void);

/* Reloads ALERTS_FILE (validate in a fresh state, then swap at the next
 * evaluation). Returns 0 or -1 with err; `[Policy]`-style log lines use `[Alert]`. */
int sc_alerts_reload(const char *trigger, char *err, size_t errlen);
/* Reload function for the file watcher (core/watch.h, sc_watch_fn; main
 * registers it for ALERTS_FILE): sc_alerts_reload, whose refusal is logged
 * with `[Alert]` and kept as the last error. forced and ud are unused (a
 * reload of unchanged rules is harmless: states of kept names persist). */
void sc_alerts_watch_reload(const char *trigger, bool forced, void *ud);
/* Offline validation of an alert file. */
int sc_alerts_check_file(const char *path, char *err, size_t errlen);

/* Appends {"alerts": [{"name","severity","state","since","summary","value"}]}
 * (pending and firing only). */
int sc_alerts_json(sc_buf_t *out);
/* Appends {"status": "healthy"|"degraded"|"unhealthy", "alerts": [...firing...]}. */
int sc_alerts_health_json(sc_buf_t *out);
/* Runs one evaluation now (tests, and after a reset). */
void sc_alerts_evaluate_now(void);
const char *sc_alerts_last_error(void); /* NULL when the last reload succeeded */

#endif
