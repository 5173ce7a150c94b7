/* Internal to src/lua: what the reload watcher (reload.c) needs from the policy
 * beyond policy.h. */
#ifndef SCENECOMP_LUA_POLICY_INTERNAL_H
#define SCENECOMP_LUA_POLICY_INTERNAL_H

#include <stddef.h>

/* Reloads POLICY_FILE unless its content equals the published generation's
 * source (editors and `touch` fire events without changing anything).
 * Returns 0 (reloaded), 1 (unchanged, nothing done) or -1 (refused, as
 * sc_policy_reload). */
int sc_policy__reload_if_changed(const char *trigger, char *err, size_t errlen);

/* Copies last_error into buf; returns buf, or NULL when the last reload succeeded. */
const char *sc_policy__last_error(char *buf, size_t n);

#endif
