/* authbrake-policy's metrics, the Dovecot way: each decision, outcome,
   memcached round trip, breaker trip and block set is a named Dovecot
   event; Dovecot's stats service counts those its metric { } blocks
   select (conf.d/95-authbrake.conf) and exports them in OpenMetrics. */
#ifndef POLICY_EVENTS_H
#define POLICY_EVENTS_H

#include "ab-tracker.h"

/* Watch the tracker (memcached round trips, breaker trips, blocks). */
void policy_events_init(struct ab_tracker *tracker);
void policy_events_deinit(void);

/* Started before the tracker is asked, so the event's duration is the
   decision's latency; policy_decision_event_send() sends and frees it. */
struct event *policy_decision_event_begin(void);
void policy_decision_event_send(struct event **event,
				const struct ab_attempt *attempt,
				const struct ab_decision *decision);
/* An outcome reported: "success", "failure" or "policy_reject". */
void policy_report_event_send(const struct ab_attempt *attempt,
			      const char *outcome, bool stored);

#endif
