/* Internal hooks of the alerts module for its unit tests: start without the
 * evaluation thread and drive evaluations with an explicit clock and snapshot,
 * so pending -> firing -> resolved can be stepped through without sleeping.
 * Not for other modules. */
#ifndef SCENECOMP_ALERTS_ALERTS_INTERNAL_H
#define SCENECOMP_ALERTS_ALERTS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "metrics/metrics.h"

typedef enum { SC_ALERT_INACTIVE = 0, SC_ALERT_PENDING, SC_ALERT_FIRING } sc_alert_state_t;

/* sc_alerts_init, optionally without the evaluation thread (then evaluations
 * run only on the caller's thread via sc_alerts__evaluate_* or
 * sc_alerts_evaluate_now). */
int sc_alerts__init(const sc_config_t *cfg, bool start_thread, char *err, size_t errlen);
/* One evaluation at wall time now over the live metrics snapshot. */
void sc_alerts__evaluate_at(double now);
/* One evaluation at wall time now over the given snapshot. */
void sc_alerts__evaluate_with(double now, const sc_metrics_snapshot_t *m);
/* State of the named rule, or -1 when no such rule is loaded. */
int sc_alerts__state(const char *name);
size_t sc_alerts__rule_count(void);

#endif
