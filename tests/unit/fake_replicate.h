/* Test helper for the Replicate client tests: starts the local fake
 * (tests/fake/fake_replicate.py) on a free loopback port, drives its control
 * API, and sets up/tears down what every such test needs (curl, a log dir, a
 * config pointing at the fake). Runs from the repo root (ctest sets it). The
 * fake is stopped by pid. */
#ifndef SCENECOMP_TESTS_FAKE_REPLICATE_H
#define SCENECOMP_TESTS_FAKE_REPLICATE_H

#include <cjson/cJSON.h>

#include "core/config.h"

/* The fake's base URL ("http://127.0.0.1:PORT"), set by test_fake_setup. */
extern char test_fake_root[64];

/* Ignores SIGPIPE, initialises curl, makes logdir (a mkdtemp template) and opens
 * the log there, starts the fake with token, and fills cfg with the defaults,
 * the token and the fake's /v1 base. 0, or -1 (fake stopped again) with a
 * message on stderr. */
int test_fake_setup(char *logdir, const char *token, sc_config_t *cfg);

/* Closes the log, stops the fake, removes logdir and cleans curl up. */
void test_fake_teardown(const char *logdir);

/* A control API call; the parsed JSON answer (caller deletes) or NULL. */
cJSON *test_fake_control(const char *method, const char *path, const char *body);

/* Resets the fake and applies a config (JSON); 0 when both calls answered. */
int test_fake_configure(const char *json);

/* One integer of /_control/stats, -1 when absent. */
int test_fake_stat_int(const char *key);

#endif
