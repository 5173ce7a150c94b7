/* POLICY_SOURCE=redis on an instance: the fleet's policy, followed live.
 *
 * At start the version in Redis is loaded before serving (1 s budget); when
 * Redis holds no policy yet, or cannot be reached, the local policy
 * (POLICY_FILE, else the embedded default) serves as version 0 until the first
 * version arrives. Then one thread follows Redis: a subscriber connection
 * (pub/sub on policy:changed) for a prompt reload, and a poll of
 * policy:current every second as the safety net, so every instance is on the
 * newest version within about a second of a push, also when notifications
 * are lost. A new version goes through the same load and validation as a file
 * reload (lua/policy.h); a refused one (or one whose checksum does not match
 * its source) leaves the version in force, sets last_error, and is not tried
 * again until a newer version, a SIGHUP or an admin reload. Redis down: the
 * policy in force stays, one log line, reconnects with backoff (0.25 s
 * doubling to 5 s). POST /api/admin/reload fetches from Redis at once. */
#ifndef SCENECOMP_POLICYSRC_SOURCE_H
#define SCENECOMP_POLICYSRC_SOURCE_H

#include <stddef.h>

#include "core/config.h"

/* Call after sc_policy_init. Returns 0, or -1 with err (bad REDIS_URL, out of
 * resources): start-up stops. An unreachable Redis is not an error. */
int sc_policysrc_start(const sc_config_t *cfg, char *err, size_t errlen);
/* SIGHUP: fetch now, retrying a version refused before. Async-signal-unsafe;
 * call from the main thread. */
void sc_policysrc_poke(void);
/* Stops the thread and closes the connections. Idempotent. */
void sc_policysrc_stop(void);

#endif
