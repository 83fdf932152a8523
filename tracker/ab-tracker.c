/* The tracker: attempt → keyed-hash keys → one mget → engine → writes.
   The faces (Dovecot service, PAM module, CLI) call only this. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "ab-error.h"
#include "ab-observer.h"
#include "ab-recent.h"
#include "ab-tracker.h"

struct ab_tracker {
	const struct ab_config *cfg;
	struct ab_secret secret;
	struct ab_store *store;
	ab_log_fn *log;
	void *log_ctx;
	/* store failures are logged once per fail_log_interval */
	time_t last_fail_log;
	unsigned long long fail_suppressed;
	/* memcached's evictions, as last seen */
	bool evictions_seen;
	uint64_t evictions;
	/* metrics hook (ab-observer.h), NULL when nobody watches */
	const struct ab_observer *observer;
	void *observer_ctx;
};

typedef char ab_key[AB_KEY_LEN];

static void tracker_log(struct ab_tracker *tracker, enum ab_log_level level,
			const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void tracker_log(struct ab_tracker *tracker, enum ab_log_level level,
			const char *fmt, ...)
{
	char msg[768];
	va_list args;

	if (tracker->log == NULL)
		return;
	va_start(args, fmt);
	vsnprintf(msg, sizeof(msg), fmt, args);
	va_end(args);
	tracker->log(level, msg, tracker->log_ctx);
}

int ab_tracker_init(const struct ab_config *cfg, ab_log_fn *log, void *log_ctx,
		    struct ab_tracker **tracker_r, const char **error_r)
{
	struct ab_tracker *tracker = calloc(1, sizeof(*tracker));

	if (tracker == NULL)
		return ab_error(error_r, "out of memory");
	tracker->cfg = cfg;
	tracker->log = log;
	tracker->log_ctx = log_ctx;
	if (ab_secret_load(cfg->secret_file, &tracker->secret, error_r) < 0 ||
	    ab_store_init(cfg, log, log_ctx, &tracker->store, error_r) < 0) {
		ab_tracker_deinit(&tracker);
		return -1;
	}
	*tracker_r = tracker;
	return 0;
}

void ab_tracker_deinit(struct ab_tracker **_tracker)
{
	struct ab_tracker *tracker = *_tracker;

	if (tracker == NULL)
		return;
	*_tracker = NULL;
	ab_store_deinit(&tracker->store);
	memset(&tracker->secret, 0, sizeof(tracker->secret));
	free(tracker);
}

struct ab_store *ab_tracker_store(struct ab_tracker *tracker)
{
	return tracker->store;
}

const struct ab_config *ab_tracker_config(struct ab_tracker *tracker)
{
	return tracker->cfg;
}

int ab_attempt_init(struct ab_tracker *tracker, struct ab_attempt *attempt_r,
		    const char *login, const char *address,
		    const char *protocol, const void *pw, size_t pw_len,
		    const char **error_r)
{
	const char *error;

	memset(attempt_r, 0, sizeof(*attempt_r));
	if (login != NULL &&
	    ab_account_normalize(login, tracker->cfg->default_domain,
				 attempt_r->account, &error) < 0)
		return ab_error(error_r, "invalid login: %s", error);
	if (address != NULL && address[0] != '\0') {
		if (ab_addr_parse(address, &attempt_r->addr, &error) < 0)
			return ab_error(error_r, "invalid address: %s", error);
		attempt_r->has_addr = true;
	}
	snprintf(attempt_r->protocol, sizeof(attempt_r->protocol), "%s",
		 protocol != NULL && protocol[0] != '\0' ? protocol : "-");
	if (pw != NULL && pw_len > 0 && attempt_r->account[0] != '\0') {
		attempt_r->pw_fp = ab_pw_fingerprint(&tracker->secret,
						     attempt_r->account, pw, pw_len);
		attempt_r->has_pw = true;
	}
	return 0;
}

void ab_attempt_set_session(struct ab_attempt *attempt, const void *id,
			    size_t len)
{
	attempt->has_session = len > 0;
	if (len > 0)
		crypto_generichash(attempt->session, sizeof(attempt->session),
				   id, len, NULL, 0);
}

/* Address bytes with their family, so 1.2.3.4 and ::102:304 differ. */
static size_t addr_bytes(const struct ab_addr *addr, uint8_t buf[17])
{
	buf[0] = (uint8_t)addr->family;
	memcpy(buf + 1, addr->bytes, 16);
	return 17;
}

/* The key of a slot for this attempt, in the bucket current at `at`. */
static void slot_key(struct ab_tracker *tracker, enum ab_slot slot,
		     const struct ab_attempt *attempt, time_t at, ab_key key_r)
{
	const struct ab_slot_info *info = ab_slot_info(slot);
	struct ab_addr masked;
	uint8_t addr[17], extra[8];
	uint64_t bucket = ab_slot_bucket(slot, tracker->cfg, at);
	size_t account_len = strlen(attempt->account), extra_len = 0, i;

	if (info->bucket != AB_BUCKET_NONE) {
		for (i = 0; i < sizeof(extra); i++)
			extra[i] = (uint8_t)(bucket >> (56 - 8 * i));
		extra_len = sizeof(extra);
	}
	if (info->scope == AB_SCOPE_ADDR || info->scope == AB_SCOPE_ADDR_ACCT)
		ab_addr_origin(&attempt->addr, &masked);
	else
		ab_addr_subnet(&attempt->addr, &masked);
	(void)addr_bytes(&masked, addr);

	switch (info->scope) {
	case AB_SCOPE_ADDR:
	case AB_SCOPE_NET:
		ab_hash_key(&tracker->secret, info->kind, addr, sizeof(addr),
			    extra, extra_len, key_r);
		break;
	case AB_SCOPE_ADDR_ACCT:
	case AB_SCOPE_NET_ACCT:
		ab_hash_key(&tracker->secret, info->kind, addr, sizeof(addr),
			    attempt->account, account_len, key_r);
		break;
	case AB_SCOPE_ACCT:
		ab_hash_key(&tracker->secret, info->kind,
			    attempt->account, account_len, extra, extra_len, key_r);
		break;
	case AB_SCOPE_ACCT_NET:
		ab_hash_key(&tracker->secret, info->kind,
			    attempt->account, account_len, addr, sizeof(addr), key_r);
		break;
	case AB_SCOPE_ACCT_PW:
		extra[0] = (uint8_t)(attempt->pw_fp >> 8);
		extra[1] = (uint8_t)attempt->pw_fp;
		ab_hash_key(&tracker->secret, info->kind,
			    attempt->account, account_len, extra, 2, key_r);
		break;
	case AB_SCOPE_SESSION:
		ab_hash_key(&tracker->secret, info->kind, attempt->session,
			    sizeof(attempt->session), NULL, 0, key_r);
		break;
	}
}

/* Read every slot that applies in one mget. Returns the store's result:
   0, 1 (partial) or -1. */
static int read_snapshot(struct ab_tracker *tracker,
			 const struct ab_attempt *attempt, time_t now,
			 struct ab_snapshot *snap_r, ab_key keys[AB_SLOT_COUNT],
			 const char **error_r)
{
	const char *key_ptrs[AB_SLOT_COUNT];
	enum ab_slot slots[AB_SLOT_COUNT];
	uint64_t values[AB_SLOT_COUNT];
	bool found[AB_SLOT_COUNT];
	size_t n = 0, i;
	int ret;

	memset(snap_r, 0, sizeof(*snap_r));
	for (i = 0; i < AB_SLOT_COUNT; i++) {
		if (!ab_slot_applies((enum ab_slot)i, attempt))
			continue;
		slot_key(tracker, (enum ab_slot)i, attempt, now, keys[i]);
		key_ptrs[n] = keys[i];
		slots[n++] = (enum ab_slot)i;
	}
	if (n == 0)
		return 0;
	ret = ab_store_mget(tracker->store, key_ptrs, n, values, found, error_r);
	for (i = 0; i < n; i++) {
		snap_r->value[slots[i]] = values[i];
		snap_r->found[slots[i]] = found[i];
	}
	return ret;
}

/* Store errors are logged once per fail_log_interval, whatever call met
   them, each time with what fail_mode does while the store is away. */
static void store_failure(struct ab_tracker *tracker, time_t now,
			  const char *what, const char *error,
			  const char *consequence)
{
	if (tracker->last_fail_log != 0 &&
	    now - tracker->last_fail_log < (time_t)tracker->cfg->fail_log_interval_s) {
		tracker->fail_suppressed++;
		return;
	}
	tracker_log(tracker, AB_LOG_ERROR,
		    "%s: %s; %s%s%s (%llu more like this since the last message)",
		    what, error, consequence != NULL ? consequence : "",
		    consequence != NULL ? "; while it lasts " : "",
		    tracker->cfg->fail_mode == AB_FAIL_OPEN ?
		    "fail_mode=open: logins are let through unchecked" :
		    "fail_mode=closed: logins are rejected",
		    tracker->fail_suppressed);
	tracker->last_fail_log = now;
	tracker->fail_suppressed = 0;
}

static void fail_mode_decision(const struct ab_config *cfg, bool partly,
			       struct ab_decision *d)
{
	memset(d, 0, sizeof(*d));
	d->store_failed = true;
	if (cfg->fail_mode == AB_FAIL_OPEN) {
		d->verdict = AB_ALLOW;
		d->reason = "store unavailable, fail_mode=open";
		d->user_msg = "";
	} else {
		d->verdict = AB_REJECT;
		d->reason = partly ? "store partly unavailable, fail_mode=closed" :
			"store unavailable, fail_mode=closed";
		d->user_msg = "Login is temporarily unavailable; try again in a few minutes.";
	}
}

/* Run the engine's ops in order; after takes the values the store
   returned. marked_r[i] says whether op i's marker was added (MARK) or
   removed (UNMARK). Goes on past errors: every count that lands still
   protects. */
static int apply_ops(struct ab_tracker *tracker,
		     const struct ab_attempt *attempt, const struct ab_ops *ops,
		     ab_key keys[AB_SLOT_COUNT], time_t now,
		     struct ab_snapshot *after, bool *marked_r,
		     const char **error_r)
{
	unsigned int i;
	int ret = 0;

	for (i = 0; i < ops->count; i++) {
		const struct ab_op *op = &ops->op[i];
		ab_key other_key, other_pair_key;
		const char *key = keys[op->slot], *pair_key = keys[op->pair_slot];
		bool done = false;
		uint64_t value;
		int r = 0;

		if (op->at != 0 && op->at != now) {
			/* a place held in an earlier bucket goes back there */
			slot_key(tracker, op->slot, attempt, op->at, other_key);
			slot_key(tracker, op->pair_slot, attempt, op->at, other_pair_key);
			key = other_key;
			pair_key = other_pair_key;
		}
		switch (op->kind) {
		case AB_OP_INCR:
			r = ab_store_incr(tracker->store, key, op->value,
					  op->ttl_s, &value, error_r);
			if (r == 0) {
				after->value[op->slot] = value;
				after->found[op->slot] = true;
				after->own[op->slot] = true;
			}
			break;
		case AB_OP_DECR:
			r = ab_store_decr(tracker->store, key, op->value, error_r);
			break;
		case AB_OP_SET:
			r = ab_store_set(tracker->store, key, op->value,
					 op->ttl_s, error_r);
			if (r == 0) {
				after->value[op->slot] = op->value;
				after->found[op->slot] = true;
			}
			break;
		case AB_OP_MARK:
			r = ab_store_add(tracker->store, key, op->value,
					 op->ttl_s, &done, error_r);
			if (r < 0 || !done)
				break;
			after->value[op->slot] = op->value;
			after->found[op->slot] = true;
			r = ab_store_incr(tracker->store, pair_key, 1,
					  op->pair_ttl_s, &value, error_r);
			if (r == 0) {
				after->value[op->pair_slot] = value;
				after->found[op->pair_slot] = true;
				after->own[op->pair_slot] = true;
			}
			break;
		case AB_OP_UNMARK:
			r = ab_store_delete(tracker->store, key, &done, error_r);
			if (r == 0 && done)
				r = ab_store_decr(tracker->store, pair_key, 1,
						  error_r);
			break;
		case AB_OP_DELETE:
			r = ab_store_delete(tracker->store, key, NULL, error_r);
			break;
		}
		if (marked_r != NULL)
			marked_r[i] = done;
		if (r < 0)
			ret = -1;
	}
	return ret;
}

/* The slots whose places this attempt holds. */
static void hold_from(const struct ab_snapshot *after, time_t now,
		      struct ab_hold *hold_r)
{
	unsigned int slot;

	hold_r->at = now;
	hold_r->slots = 0;
	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		if (after->own[slot])
			hold_r->slots |= 1U << slot;
	}
}

void ab_tracker_allow(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt, time_t now,
		      unsigned int flags, struct ab_decision *decision_r)
{
	const struct ab_config *cfg = tracker->cfg;
	struct ab_snapshot snap, after;
	struct ab_ops ops;
	struct ab_hold hold;
	ab_key keys[AB_SLOT_COUNT];
	const char *error;
	int ret;

	ret = read_snapshot(tracker, attempt, now, &snap, keys, &error);
	if (ret < 0 || (ret > 0 && cfg->fail_mode == AB_FAIL_CLOSED)) {
		store_failure(tracker, now, ret < 0 ? "memcached unreachable" :
			      "memcached partly unreachable", error, NULL);
		fail_mode_decision(cfg, ret > 0, decision_r);
		return;
	}
	if (ret > 0)
		store_failure(tracker, now, "memcached partly unreachable", error,
			      "deciding on the counts of the servers that answered");
	ab_decide(&snap, attempt, cfg, now, decision_r);
	if ((flags & AB_ALLOW_DRY_RUN) != 0 || decision_r->verdict == AB_REJECT)
		return;
	/* Without a session nothing pairs this allow with its report, so
	   nothing is held; a second allow for one session (Dovecot's
	   after-auth check) finds its places held already. */
	if (!attempt->has_session || snap.found[AB_SLOT_SESSION])
		return;

	ab_reserve(&snap, attempt, cfg, &ops);
	after = snap;
	ret = apply_ops(tracker, attempt, &ops, keys, now, &after, NULL, &error);
	hold_from(&after, now, &hold);
	if (ret < 0 && cfg->fail_mode == AB_FAIL_CLOSED) {
		store_failure(tracker, now, "memcached unreachable", error, NULL);
		fail_mode_decision(cfg, true, decision_r);
	} else {
		if (ret < 0)
			store_failure(tracker, now, "memcached partly unreachable",
				      error, "an attempt holds fewer places than it should");
		/* judged again with its places taken: of attempts in
		   parallel, only those within the limits go on */
		ab_decide(&after, attempt, cfg, now, decision_r);
	}
	if (decision_r->verdict == AB_REJECT) {
		ops.count = 0;
		ab_release(&hold, attempt, &ops);
		(void)apply_ops(tracker, attempt, &ops, keys, now, &after, NULL,
				&error);
		return;
	}
	if (ab_store_set(tracker->store, keys[AB_SLOT_SESSION],
			 ab_hold_pack(&hold), AB_HOLD_TTL, &error) < 0) {
		/* no report could settle the places: give them back now, and
		   its failure is counted when it is reported */
		store_failure(tracker, now, "memcached unreachable", error,
			      "an attempt holds no places until its report");
		ops.count = 0;
		ab_release(&hold, attempt, &ops);
		(void)apply_ops(tracker, attempt, &ops, keys, now, &after, NULL,
				&error);
	}
}

/* --- observer hook (ab-observer.h) --- */
void ab_tracker_set_observer(struct ab_tracker *tracker,
			     const struct ab_observer *observer, void *ctx)
{
	tracker->observer = observer;
	tracker->observer_ctx = ctx;
	ab_store_set_observer(tracker->store, observer, ctx);
}

static void tracker_observe_block(struct ab_tracker *tracker,
				  const struct ab_op *op, time_t now)
{
	enum ab_observed_block kind;

	if (tracker->observer == NULL || tracker->observer->block_set == NULL)
		return;
	if (op->slot == AB_SLOT_IP_BLOCK)
		kind = AB_OBSERVED_ADDRESS;
	else if (op->slot == AB_SLOT_NET_BLOCK)
		kind = AB_OBSERVED_SUBNET;
	else if (op->slot == AB_SLOT_ACCT_LOCK)
		kind = AB_OBSERVED_ACCOUNT;
	else
		return;
	tracker->observer->block_set(tracker->observer_ctx, kind,
		op->value > (uint64_t)now ? (unsigned int)(op->value - (uint64_t)now) : 0);
}
/* --- end of the observer hook --- */

static void log_escalation(struct ab_tracker *tracker,
			   const struct ab_attempt *attempt,
			   const struct ab_snapshot *after,
			   const struct ab_ops *ops, const bool *marked,
			   time_t now)
{
	char addr[AB_ADDR_STRLEN], dur[32];
	unsigned int i;

	for (i = 0; i < ops->count; i++) {
		const struct ab_op *op = &ops->op[i];
		struct ab_addr masked;

		if (!marked[i])
			continue;	/* another node set it first */
		tracker_observe_block(tracker, op, now);	/* observer hook */
		ab_recent_escalation(&tracker->secret, tracker->store, attempt,
				     after, op, now);	/* authbrake list */
		ab_duration_str(op->value - (uint64_t)now, dur, sizeof(dur));
		switch (op->slot) {
		case AB_SLOT_IP_BLOCK:
			ab_addr_origin(&attempt->addr, &masked);
			tracker_log(tracker, AB_LOG_WARNING,
				    "address %s blocked for %s: %llu failures, %llu accounts tried",
				    ab_addr_str(&masked, ab_addr_origin_prefix(&masked), addr),
				    dur,
				    (unsigned long long)ab_window_count(after, AB_SLOT_IP_FAIL),
				    (unsigned long long)ab_window_count(after, AB_SLOT_IP_ACCTS));
			break;
		case AB_SLOT_NET_BLOCK:
			ab_addr_subnet(&attempt->addr, &masked);
			tracker_log(tracker, AB_LOG_WARNING,
				    "subnet %s blocked for %s: %llu failures, %llu accounts tried",
				    ab_addr_str(&masked, ab_addr_subnet_prefix(&masked), addr),
				    dur,
				    (unsigned long long)ab_window_count(after, AB_SLOT_NET_FAIL),
				    (unsigned long long)ab_window_count(after, AB_SLOT_NET_ACCTS));
			break;
		case AB_SLOT_ACCT_LOCK:
			tracker_log(tracker, AB_LOG_WARNING,
				    "account \"%s\" locked for unfamiliar origins for %s: %llu failures",
				    attempt->account, dur,
				    (unsigned long long)ab_window_count(after, AB_SLOT_ACCT_FAIL));
			break;
		default:
			break;
		}
	}
}

int ab_tracker_report(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt,
		      enum ab_outcome outcome, time_t now,
		      const char **error_r)
{
	struct ab_snapshot snap, after;
	struct ab_ops ops;
	struct ab_hold hold = { 0, 0 }, *held = NULL;
	ab_key keys[AB_SLOT_COUNT];
	bool marked[AB_OPS_MAX], taken = false, counted;
	int ret;

	ret = read_snapshot(tracker, attempt, now, &snap, keys, error_r);
	if (ret < 0) {
		store_failure(tracker, now, "memcached unreachable", *error_r,
			      "an outcome was not recorded");
		return -1;
	}
	/* The session record says what the allow holds; deleting it makes
	   this report the one that settles it. Without a record, a failure
	   is counted now. */
	if (snap.found[AB_SLOT_SESSION]) {
		if (ab_store_delete(tracker->store, keys[AB_SLOT_SESSION], &taken,
				    error_r) < 0)
			ret = -1;
		if (taken)
			ab_hold_unpack(snap.value[AB_SLOT_SESSION], &hold);
		held = &hold;
	} else if (attempt->has_session && outcome == AB_OUTCOME_SUCCESS) {
		/* the record is lost (its server went away, an eviction): a
		   real user's places must not stay behind as failures */
		ab_hold_presumed(&snap, attempt, tracker->cfg, now, &hold);
		held = &hold;
	}
	after = snap;
	counted = ab_record(&snap, attempt, outcome, held, tracker->cfg, now, &ops);
	if (apply_ops(tracker, attempt, &ops, keys, now, &after, NULL, error_r) < 0)
		ret = -1;
	ops.count = 0;
	if (counted)
		ab_escalate(&after, attempt, outcome, tracker->cfg, now, &ops);
	if (apply_ops(tracker, attempt, &ops, keys, now, &after, marked, error_r) < 0)
		ret = -1;
	log_escalation(tracker, attempt, &after, &ops, marked, now);
	if (ret != 0)
		store_failure(tracker, now, "memcached partly unreachable",
			      *error_r, "an outcome was recorded in part");
	return ret < 0 ? -1 : 0;
}

void ab_tracker_watch_evictions(struct ab_tracker *tracker)
{
	uint64_t evictions;
	const char *error;

	if (ab_store_evictions(tracker->store, &evictions, &error) < 0)
		return;		/* a store that cannot answer is logged elsewhere */
	if (tracker->evictions_seen && evictions > tracker->evictions)
		tracker_log(tracker, AB_LOG_WARNING,
			    "memcached evicted %llu items since the last look: counts, "
			    "blocks, locks and familiar subnets may have been lost; give "
			    "memcached more memory (-m, see authbrake.conf(5), \"Sizing memcached\")",
			    (unsigned long long)(evictions - tracker->evictions));
	tracker->evictions = evictions;
	tracker->evictions_seen = true;
}

const char *ab_decision_log_line(const struct ab_attempt *attempt,
				 const struct ab_decision *decision,
				 char *buf, size_t size)
{
	static const char *const verdicts[] = {
		[AB_ALLOW] = "allow", [AB_TARPIT] = "tarpit", [AB_REJECT] = "reject",
	};
	char addr[AB_ADDR_STRLEN], extra[64] = "";

	if (decision->verdict == AB_TARPIT)
		snprintf(extra, sizeof(extra), " delay=%us", decision->delay_s);
	else if (decision->verdict == AB_REJECT && decision->retry_after_s > 0)
		snprintf(extra, sizeof(extra), " retry_after=%us",
			 decision->retry_after_s);
	snprintf(buf, size,
		 "account=\"%s\" address=%s protocol=%s decision=%s%s reason=\"%s\"",
		 attempt->account[0] != '\0' ? attempt->account : "-",
		 attempt->has_addr ?
		 ab_addr_str(&attempt->addr, (unsigned int)ab_addr_len(&attempt->addr) * 8, addr) : "-",
		 attempt->protocol, verdicts[decision->verdict], extra,
		 decision->reason);
	return buf;
}

/* --- administration --- */

static unsigned long long time_left(const struct ab_snapshot *snap,
				    enum ab_slot slot, time_t now)
{
	if (!snap->found[slot] || snap->value[slot] <= (uint64_t)now)
		return 0;
	return snap->value[slot] - (uint64_t)now;
}

int ab_tracker_account_status(struct ab_tracker *tracker, const char *login,
			      time_t now, struct ab_account_status *status_r,
			      const char **error_r)
{
	struct ab_attempt attempt;
	struct ab_snapshot snap;
	ab_key keys[AB_SLOT_COUNT];

	memset(status_r, 0, sizeof(*status_r));
	if (ab_attempt_init(tracker, &attempt, login, NULL, NULL, NULL, 0,
			    error_r) < 0)
		return -1;
	if (read_snapshot(tracker, &attempt, now, &snap, keys, error_r) != 0)
		return AB_ERR_STORE;
	status_r->failures = ab_window_count(&snap, AB_SLOT_ACCT_FAIL);
	status_r->familiar_failures = snap.value[AB_SLOT_ACCT_FAMFAIL];
	status_r->strikes = snap.value[AB_SLOT_ACCT_STRIKES];
	status_r->lock_left_s = time_left(&snap, AB_SLOT_ACCT_LOCK, now);
	status_r->locked = status_r->lock_left_s > 0 ||
		status_r->failures >= tracker->cfg->account_lock_failures;
	status_r->familiar_subnets = snap.value[AB_SLOT_ACCT_FAMCOUNT];
	return 0;
}

int ab_tracker_address_status(struct ab_tracker *tracker, const char *address,
			      time_t now, struct ab_address_status *status_r,
			      const char **error_r)
{
	struct ab_attempt attempt;
	struct ab_snapshot snap;
	ab_key keys[AB_SLOT_COUNT];
	const struct ab_config *cfg = tracker->cfg;

	memset(status_r, 0, sizeof(*status_r));
	if (ab_attempt_init(tracker, &attempt, NULL, address, NULL, NULL, 0,
			    error_r) < 0)
		return -1;
	if (!attempt.has_addr)
		return ab_error(error_r, "address is empty");
	if (read_snapshot(tracker, &attempt, now, &snap, keys, error_r) != 0)
		return AB_ERR_STORE;
	status_r->failures = ab_window_count(&snap, AB_SLOT_IP_FAIL);
	status_r->accounts = ab_window_count(&snap, AB_SLOT_IP_ACCTS);
	status_r->inflight = snap.value[AB_SLOT_IP_INFLIGHT];
	status_r->strikes = snap.value[AB_SLOT_IP_STRIKES];
	status_r->block_left_s = time_left(&snap, AB_SLOT_IP_BLOCK, now);
	status_r->blocked = status_r->block_left_s > 0;
	status_r->net_failures = ab_window_count(&snap, AB_SLOT_NET_FAIL);
	status_r->net_accounts = ab_window_count(&snap, AB_SLOT_NET_ACCTS);
	status_r->net_strikes = snap.value[AB_SLOT_NET_STRIKES];
	status_r->net_block_left_s = time_left(&snap, AB_SLOT_NET_BLOCK, now);
	status_r->net_blocked = status_r->net_block_left_s > 0;
	status_r->trusted = ab_attempt_trusted(&attempt, cfg);
	status_r->restricted_out = cfg->restrict_networks.count > 0 &&
		!ab_cidr_list_match(&cfg->restrict_networks, &attempt.addr);
	return 0;
}

static int delete_slots(struct ab_tracker *tracker,
			const struct ab_attempt *attempt,
			const enum ab_slot *slots, size_t n, time_t now,
			const char **error_r)
{
	ab_key key;
	size_t i;

	for (i = 0; i < n; i++) {
		slot_key(tracker, slots[i], attempt, now, key);
		if (ab_store_delete(tracker->store, key, NULL, error_r) < 0)
			return AB_ERR_STORE;
	}
	return 0;
}

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

int ab_tracker_unlock(struct ab_tracker *tracker, const char *login,
		      time_t now, const char **error_r)
{
	/* everything that keeps the user out: the lock, the failures that
	   would set it again, the strikes that make the next one longer, and
	   the failures from their familiar networks */
	static const enum ab_slot slots[] = {
		AB_SLOT_ACCT_LOCK, AB_SLOT_ACCT_FAIL, AB_SLOT_ACCT_FAIL_PREV,
		AB_SLOT_ACCT_STRIKES, AB_SLOT_ACCT_FAMFAIL,
	};
	struct ab_attempt attempt;

	if (ab_attempt_init(tracker, &attempt, login, NULL, NULL, NULL, 0,
			    error_r) < 0)
		return -1;
	if (delete_slots(tracker, &attempt, slots, N_ELEMENTS(slots), now,
			 error_r) < 0)
		return AB_ERR_STORE;
	tracker_log(tracker, AB_LOG_INFO, "account \"%s\" unlocked by an administrator",
		    attempt.account);
	return 0;
}

/* An address (or its IPv6 /64) names the address slots, a /24 or /48 the
   subnet slots. */
static int parse_target(const char *target, struct ab_attempt *attempt_r,
			bool *subnet_r, const char **error_r)
{
	struct ab_cidr cidr;
	const char *error;
	unsigned int full;

	memset(attempt_r, 0, sizeof(*attempt_r));
	if (ab_cidr_parse(target, &cidr, &error) < 0)
		return ab_error(error_r, "%s", error);
	full = (unsigned int)ab_addr_len(&cidr.net) * 8;
	attempt_r->addr = cidr.net;
	attempt_r->has_addr = true;
	snprintf(attempt_r->protocol, sizeof(attempt_r->protocol), "-");
	if (cidr.prefix == full || cidr.prefix == ab_addr_origin_prefix(&cidr.net))
		*subnet_r = false;
	else if (cidr.prefix == ab_addr_subnet_prefix(&cidr.net))
		*subnet_r = true;
	else
		return ab_error(error_r, "'%s': give an address%s or its /%u subnet",
				target, cidr.net.family == AF_INET ? "" : " (or its /64)",
				ab_addr_subnet_prefix(&cidr.net));
	return 0;
}

int ab_tracker_block(struct ab_tracker *tracker, const char *target,
		     unsigned int duration_s, time_t now, const char **error_r)
{
	struct ab_attempt attempt;
	bool subnet;
	ab_key key;
	char dur[32];

	if (parse_target(target, &attempt, &subnet, error_r) < 0)
		return -1;
	if (duration_s == 0)
		duration_s = tracker->cfg->block_time_s;
	if (duration_s > 7 * 24 * 3600)
		return ab_error(error_r, "a block lasts a week at most");
	slot_key(tracker, subnet ? AB_SLOT_NET_BLOCK : AB_SLOT_IP_BLOCK,
		 &attempt, now, key);
	if (ab_store_set(tracker->store, key, (uint64_t)now + duration_s,
			 duration_s, error_r) < 0)
		return AB_ERR_STORE;
	ab_recent_admin_block(&tracker->secret, tracker->store, &attempt.addr,
			      subnet, duration_s, now);	/* authbrake list */
	tracker_log(tracker, AB_LOG_WARNING, "%s %s blocked for %s by an administrator",
		    subnet ? "subnet" : "address", target,
		    ab_duration_str(duration_s, dur, sizeof(dur)));
	return 0;
}

int ab_tracker_unblock(struct ab_tracker *tracker, const char *target,
		       time_t now, const char **error_r)
{
	static const enum ab_slot ip_slots[] = {
		AB_SLOT_IP_BLOCK, AB_SLOT_IP_FAIL, AB_SLOT_IP_FAIL_PREV,
		AB_SLOT_IP_ACCTS, AB_SLOT_IP_ACCTS_PREV, AB_SLOT_IP_STRIKES,
		AB_SLOT_IP_INFLIGHT,
	};
	static const enum ab_slot net_slots[] = {
		AB_SLOT_NET_BLOCK, AB_SLOT_NET_FAIL, AB_SLOT_NET_FAIL_PREV,
		AB_SLOT_NET_ACCTS, AB_SLOT_NET_ACCTS_PREV, AB_SLOT_NET_STRIKES,
	};
	struct ab_attempt attempt;
	bool subnet;
	int ret;

	if (parse_target(target, &attempt, &subnet, error_r) < 0)
		return -1;
	ret = subnet ?
		delete_slots(tracker, &attempt, net_slots, N_ELEMENTS(net_slots),
			     now, error_r) :
		delete_slots(tracker, &attempt, ip_slots, N_ELEMENTS(ip_slots),
			     now, error_r);
	if (ret < 0)
		return AB_ERR_STORE;
	tracker_log(tracker, AB_LOG_INFO, "%s %s unblocked by an administrator",
		    subnet ? "subnet" : "address", target);
	return 0;
}
