/* `scenecomp policy push|pull|history`: the fleet's policy in Redis, from the
 * command line (REDIS_URL and REDIS_KEY_PREFIX from the environment and .env,
 * like serve).
 *
 *   policy push FILE           validate FILE like check-policy, store it as the
 *                              next version, notify the fleet
 *   policy push --version N    push version N's source again as a new version
 *                              (rollback), validated again
 *   policy pull [--version N]  print the current (or version N's) source
 *   policy history             list versions: number, time, sha256, rollbacks
 *
 * Exit codes: 0 done, 1 failure (invalid file, unknown version, Redis
 * unreachable; nothing stored), 2 bad usage. Messages go to stderr. */
#ifndef SCENECOMP_POLICYSRC_CLI_H
#define SCENECOMP_POLICYSRC_CLI_H

/* argv[0] is "scenecomp", argv[1] "policy". */
int sc_policysrc_cli(int argc, char **argv);

#endif
