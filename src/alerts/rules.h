/* Alert rule sets: one alert file loaded into its own sandboxed Lua state,
 * validated, and its rules called over a metrics snapshot.
 *
 * A rule set is opaque: it owns its Lua state, and the rules' functions are
 * kept as references in that state (released with it by sc_alert_rules_free).
 * Every call into Lua goes through sc_lua_call (deadline, traceback). It does
 * not keep alert states (pending/firing): that is alerts.c's job.
 *
 * Threads: a rule set belongs to the thread that uses it; loading and freeing
 * touch no shared state, so any thread may validate a file in its own set. */
#ifndef SCENECOMP_ALERTS_RULES_H
#define SCENECOMP_ALERTS_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/metrics.h"

#define SC_ALERT_NAME_MAX 128
#define SC_ALERT_SUMMARY_MAX 512
/* An alert file larger than this is refused (it is a few rules, not data). */
#define SC_ALERT_FILE_MAX (1024 * 1024)

typedef struct sc_alert_ruleset sc_alert_ruleset_t; /* opaque */

/* What the state machine needs to know about one rule. */
typedef struct sc_alert_rule_info {
    const char *name;   /* borrowed: valid while the set lives */
    bool critical;      /* severity "critical" (else "warning") */
    double for_seconds; /* >= 0 */
} sc_alert_rule_info_t;

/* Loads source (text only) as chunkname (e.g. "@lua/alerts.lua") into a fresh
 * sandboxed state and validates it: the chunk returns a list; each rule is a
 * table with a unique string `name`, `severity` "warning"|"critical", a number
 * `for_seconds` >= 0, a function `when`, optional functions `summary` and
 * `value`, and no other key; when() (and summary()/value()) must not raise on
 * the sample snapshots (one fresh, with every rate nil; one busy).
 * Returns 0 with a new set in *out (caller frees with sc_alert_rules_free), or
 * -1 with "file:line: message" (or "file: rule N 'name': message") in err. */
int sc_alert_rules_load(const char *source, size_t len, const char *chunkname,
                        sc_alert_ruleset_t **out, char *err, size_t errlen);
void sc_alert_rules_free(sc_alert_ruleset_t *rs);

/* Number of rules in the set (0 for NULL). */
size_t sc_alert_rules_count(const sc_alert_ruleset_t *rs);
/* Name, severity and hold of rule i (< count). */
sc_alert_rule_info_t sc_alert_rules_info(const sc_alert_ruleset_t *rs, size_t i);

/* Reads path (at most SC_ALERT_FILE_MAX bytes) into a malloc'd buffer (caller
 * frees). Returns 0, -1 with err set, or -2 when the file does not exist. */
int sc_alert_rules_read_file(const char *path, char **src, size_t *len, char *err, size_t errlen);

/* Evaluates rule i over m: *fires = truthiness of when(m). When it fires,
 * summary (summary(m) as a string, else the rule name; a failing summary()
 * gives "<name> (summary error: ...)") and *value (value(m) when it is a
 * number, else NaN) are filled too. Returns 0, or -1 with err set when when()
 * raised or ran out of its budget (*fires is then false). Never raises. */
int sc_alert_rules_eval(sc_alert_ruleset_t *rs, size_t i, const sc_metrics_snapshot_t *m,
                        bool *fires, char *summary, size_t sumlen, double *value, char *err,
                        size_t errlen);

/* Fills s with a fresh-start (busy = false: no traffic, every rate NaN) or a
 * busy sample snapshot, used to exercise rules during validation. */
void sc_alert_rules_sample(sc_metrics_snapshot_t *s, bool busy);

#endif
