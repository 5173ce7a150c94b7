/* Watches POLICY_FILE and ALERTS_FILE (inotify on their directories, with a 1 s
 * mtime poll as the fallback) and reloads the one that changed within 2 s; also
 * performs reloads requested by SIGHUP (sc_reload_request is async-signal-safe).
 * One background thread. */
#ifndef SCENECOMP_LUA_RELOAD_H
#define SCENECOMP_LUA_RELOAD_H

#include "core/config.h"

int sc_reload_start(const sc_config_t *cfg);
/* Async-signal-safe: asks the watcher thread to reload both files. */
void sc_reload_request(void);
void sc_reload_stop(void);

#endif
