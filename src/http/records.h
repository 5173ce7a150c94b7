/* Records, the decision log and webhooks as the HTTP layer uses them (API.md
 * "Asynchronous composites, records, webhooks", "Decision log and policy
 * preview"): the process-wide decision log and webhook sender, started and
 * stopped by `serve`. The handlers themselves are internal (http/conn.h).
 *
 * Threads: start/stop from the main thread, before/after serving. */
#ifndef SCENECOMP_HTTP_RECORDS_H
#define SCENECOMP_HTTP_RECORDS_H

#include <stddef.h>

#include "core/config.h"

/* Opens LOGS_DIR/decisions.jsonl and, with WEBHOOK_SECRET set, starts the
 * webhook sender (its persisted queue resumes). Returns 0, or -1 with err. */
int sc_http_records_start(const sc_config_t *cfg, char *err, size_t errlen);
void sc_http_records_stop(void);

/* The prediction ids of the async records left "processing" in OUTPUT_DIR (for
 * sc_replicate_journal_open_keep: adopted, not cancelled). Free with
 * sc_http_records_free_ids. Returns 0 or -1 (directory unreadable). */
int sc_http_records_adoptable(const sc_config_t *cfg, char ***ids, size_t *n);
void sc_http_records_free_ids(char **ids, size_t n);
/* Finishes every record left "processing" (after sc_http_start: the work runs
 * on the compute pool): polls its prediction, or composites by PIL with
 * reason `interrupted`. Returns how many were resumed. */
int sc_http_records_resume(void);

#endif
