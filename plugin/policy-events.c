/* authbrake-policy's Dovecot events (see policy-events.h). They are sent
   with e_debug(): Dovecot passes an event to its stats service when a
   metric's filter asks for it, and logs it only when debug logging is on
   for it. The names and fields are the metrics' interface: README
   ("Operations") and authbrake-policy(8) list them. */
#include "lib.h"
#include "lib-event.h"

#include "ab-observer.h"
#include "policy-events.h"

static struct event_category event_category_authbrake = {
	.name = "authbrake",
};

/* the round trips under way, one per memcached server (a batch goes to
   every server at once); an event is created when its round trip begins,
   so its duration is the round trip */
#define POLICY_STORE_SERVERS_MAX 64
static struct event *store_request_events[POLICY_STORE_SERVERS_MAX];

static struct event *policy_event_create(const char *name)
{
	struct event *event = event_create(NULL);

	event_add_category(event, &event_category_authbrake);
	event_set_name(event, name);
	return event;
}

static void store_request_begin(void *ctx ATTR_UNUSED, unsigned int idx)
{
	if (idx >= N_ELEMENTS(store_request_events))
		return;
	/* one whose end never came */
	event_unref(&store_request_events[idx]);
	store_request_events[idx] = policy_event_create("authbrake_store_request");
}

static void store_request_end(void *ctx ATTR_UNUSED, unsigned int idx,
			      const char *server, const char *op,
			      const char *result)
{
	struct event *event;

	if (idx >= N_ELEMENTS(store_request_events) ||
	    store_request_events[idx] == NULL)
		return;
	event = store_request_events[idx];
	event_add_str(event, "server", server);
	event_add_str(event, "op", op);
	event_add_str(event, "result", result);
	e_debug(event, "memcached %s %s: %s", server, op, result);
	event_unref(&store_request_events[idx]);
}

static void breaker_open(void *ctx ATTR_UNUSED, const char *server)
{
	struct event *event = policy_event_create("authbrake_breaker_open");

	event_add_str(event, "server", server);
	e_debug(event, "memcached %s: circuit breaker open", server);
	event_unref(&event);
}

static void block_set(void *ctx ATTR_UNUSED, enum ab_observed_block kind,
		      unsigned int duration_s)
{
	static const char *const kinds[] = {
		[AB_OBSERVED_ADDRESS] = "address",
		[AB_OBSERVED_SUBNET] = "subnet",
		[AB_OBSERVED_ACCOUNT] = "account",
	};
	struct event *event = policy_event_create("authbrake_block");

	event_add_str(event, "kind", kinds[kind]);
	event_add_int(event, "duration_s", duration_s);
	e_debug(event, "%s blocked for %us", kinds[kind], duration_s);
	event_unref(&event);
}

static const struct ab_observer policy_observer = {
	.store_request_begin = store_request_begin,
	.store_request_end = store_request_end,
	.breaker_open = breaker_open,
	.block_set = block_set,
};

void policy_events_init(struct ab_tracker *tracker)
{
	ab_tracker_set_observer(tracker, &policy_observer, NULL);
}

void policy_events_deinit(void)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(store_request_events); i++)
		event_unref(&store_request_events[i]);
}

struct event *policy_decision_event_begin(void)
{
	return policy_event_create("authbrake_decision");
}

void policy_decision_event_send(struct event **_event,
				const struct ab_attempt *attempt,
				const struct ab_decision *decision)
{
	static const char *const verdicts[] = {
		[AB_ALLOW] = "allow", [AB_TARPIT] = "tarpit", [AB_REJECT] = "reject",
	};
	struct event *event = *_event;

	/* no account or address: those are the log's business, and a
	   label per address would be a metric per attacker */
	event_add_str(event, "verdict", verdicts[decision->verdict]);
	event_add_str(event, "reason", ab_reason_info(decision->why)->label);
	event_add_str(event, "protocol", attempt->protocol);
	event_add_str(event, "store_failed", decision->store_failed ? "yes" : "no");
	event_add_str(event, "campaign", decision->campaign ? "on" : "off");
	if (decision->verdict == AB_TARPIT)
		event_add_int(event, "delay_s", decision->delay_s);
	e_debug(event, "decision=%s reason=\"%s\"", verdicts[decision->verdict],
		decision->reason);
	event_unref(_event);
}

void policy_report_event_send(const struct ab_attempt *attempt,
			      const char *outcome, bool stored)
{
	struct event *event = policy_event_create("authbrake_report");

	event_add_str(event, "outcome", outcome);
	event_add_str(event, "protocol", attempt->protocol);
	event_add_str(event, "store_failed", stored ? "no" : "yes");
	e_debug(event, "report outcome=%s", outcome);
	event_unref(&event);
}
