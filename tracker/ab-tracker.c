/* The tracker: attempt → keyed-hash keys → one mget → engine → writes.
   The faces (Dovecot service, PAM module, CLI) call only this. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "ab-error.h"
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

/* The keys of every slot that applies, in the buckets current at now. */
static void slot_keys(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt, time_t now,
		      ab_key keys[AB_SLOT_COUNT])
{
	unsigned int slot;

	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		if (ab_slot_applies((enum ab_slot)slot, attempt))
			slot_key(tracker, (enum ab_slot)slot, attempt, now, keys[slot]);
	}
}

/* --- round trips -------------------------------------------------------

   What one login costs the store, in round trips (each one request per
   server, pipelined):
   - allow: 1. The reads ab_decide() needs and the places an unfamiliar
     attempt holds (ab_reserve() of an empty snapshot) go out together;
     the answers are judged, and what the attempt should not hold (it was
     refused, its subnet is familiar, a marker was there) is given back by
     a posted batch that waits for nothing, with the session record.
   - report: 2. The reads and the session record's delete, then the
     counts; a third only when a block or lock is set. */

/* One batch of requests, and what each is for. */
struct batch {
	struct ab_store_op req[AB_STORE_BATCH_MAX];
	unsigned int n;
	int get[AB_SLOT_COUNT];		/* the request reading a slot, or -1 */
	int op_req[AB_OPS_MAX];		/* an engine op's request */
	int pair_req[AB_OPS_MAX];	/* MARK: its counter's increment */
	const char *pair_key[AB_OPS_MAX];
	ab_key other[AB_OPS_MAX][2];	/* keys of ops on an earlier bucket */
};

static void batch_init(struct batch *b)
{
	unsigned int i;

	b->n = 0;
	for (i = 0; i < AB_SLOT_COUNT; i++)
		b->get[i] = -1;
	for (i = 0; i < AB_OPS_MAX; i++)
		b->op_req[i] = b->pair_req[i] = -1;
}

static int batch_add(struct batch *b, enum ab_store_cmd cmd, const char *key,
		     uint64_t value, unsigned int ttl_s)
{
	struct ab_store_op *r = &b->req[b->n];

	/* cannot overflow: reads of every slot and two requests per op fit */
	memset(r, 0, sizeof(*r));
	r->cmd = cmd;
	r->key = key;
	r->value = value;
	r->ttl_s = ttl_s;
	return (int)b->n++;
}

/* Reads of the slots that apply: all of them, or only those ab_decide()
   and ab_reserve() need; none that `written` says the batch writes. */
static void batch_reads(struct batch *b, const struct ab_attempt *attempt,
			ab_key keys[AB_SLOT_COUNT], bool decides_only,
			const bool *written)
{
	unsigned int slot;

	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		if (!ab_slot_applies((enum ab_slot)slot, attempt) ||
		    (decides_only && !ab_slot_info((enum ab_slot)slot)->decides) ||
		    (written != NULL && written[slot]))
			continue;
		b->get[slot] = batch_add(b, AB_STORE_GET, keys[slot], 0, 0);
	}
}

/* The engine's ops as requests. A MARK adds its marker and counts it in
   the same round trip; when the marker was there already, the count is
   given back afterwards (batch_results). An UNMARK deletes its marker,
   and its counter follows afterwards when it was there. */
static void batch_ops(struct ab_tracker *tracker, struct batch *b,
		      const struct ab_attempt *attempt, const struct ab_ops *ops,
		      ab_key keys[AB_SLOT_COUNT], time_t now, bool *written_r)
{
	static const enum ab_store_cmd cmds[] = {
		[AB_OP_INCR] = AB_STORE_INCR, [AB_OP_DECR] = AB_STORE_DECR,
		[AB_OP_SET] = AB_STORE_SET, [AB_OP_MARK] = AB_STORE_ADD,
		[AB_OP_UNMARK] = AB_STORE_DELETE, [AB_OP_DELETE] = AB_STORE_DELETE,
	};
	unsigned int i;

	for (i = 0; i < ops->count; i++) {
		const struct ab_op *op = &ops->op[i];
		const char *key = keys[op->slot], *pair_key = keys[op->pair_slot];

		if (op->at != 0 && op->at != now) {
			/* a place held in an earlier bucket goes back there */
			slot_key(tracker, op->slot, attempt, op->at, b->other[i][0]);
			slot_key(tracker, op->pair_slot, attempt, op->at, b->other[i][1]);
			key = b->other[i][0];
			pair_key = b->other[i][1];
		}
		b->pair_key[i] = pair_key;
		b->op_req[i] = batch_add(b, cmds[op->kind], key, op->value,
					 op->ttl_s);
		if (op->kind == AB_OP_MARK)
			b->pair_req[i] = batch_add(b, AB_STORE_INCR, pair_key, 1,
						   op->pair_ttl_s);
		if (written_r != NULL) {
			written_r[op->slot] = true;
			if (op->kind == AB_OP_MARK)
				written_r[op->pair_slot] = true;
		}
	}
}

/* What the answers say: values read and counts taken go into snap
   (own[] for the places this attempt took); marked_r[i] says whether op
   i's marker was added (MARK) or deleted (UNMARK). Writes that follow
   from an answer go into later. */
static void batch_results(const struct batch *b, const struct ab_ops *ops,
			  struct ab_snapshot *snap, bool *marked_r,
			  struct batch *later)
{
	unsigned int slot, i;

	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		const struct ab_store_op *r;

		if (b->get[slot] < 0)
			continue;
		r = &b->req[b->get[slot]];
		snap->found[slot] = r->result == AB_STORE_DONE;
		snap->value[slot] = snap->found[slot] ? r->out : 0;
	}
	for (i = 0; i < ops->count; i++) {
		const struct ab_op *op = &ops->op[i];
		const struct ab_store_op *r = &b->req[b->op_req[i]], *pair;
		bool done = r->result == AB_STORE_DONE;

		marked_r[i] = false;
		switch (op->kind) {
		case AB_OP_INCR:
			if (done) {
				snap->value[op->slot] = r->out;
				snap->found[op->slot] = true;
				snap->own[op->slot] = true;
			}
			break;
		case AB_OP_SET:
			if (done) {
				snap->value[op->slot] = op->value;
				snap->found[op->slot] = true;
			}
			break;
		case AB_OP_MARK:
			marked_r[i] = done;
			if (done || r->result == AB_STORE_MISS) {
				snap->value[op->slot] = op->value;
				snap->found[op->slot] = true;
			}
			pair = &b->req[b->pair_req[i]];
			if (pair->result != AB_STORE_DONE)
				break;
			snap->value[op->pair_slot] = pair->out;
			snap->found[op->pair_slot] = true;
			if (r->result != AB_STORE_MISS) {
				snap->own[op->pair_slot] = true;
			} else {
				/* counted already: this count goes back */
				snap->value[op->pair_slot]--;
				batch_add(later, AB_STORE_DECR, pair->key, 1, 0);
			}
			break;
		case AB_OP_UNMARK:
			marked_r[i] = done;
			if (done)
				batch_add(later, AB_STORE_DECR, b->pair_key[i], 1, 0);
			break;
		case AB_OP_DECR:
		case AB_OP_DELETE:
			break;
		}
	}
}

/* Run the engine's ops in one round trip; after takes what the store
   returned, marked_r (may be NULL) what batch_results() says of markers.
   Goes on past errors: every count that lands still protects. */
static int run_ops(struct ab_tracker *tracker, const struct ab_attempt *attempt,
		   const struct ab_ops *ops, ab_key keys[AB_SLOT_COUNT],
		   time_t now, struct ab_snapshot *after, bool *marked_r,
		   const char **error_r)
{
	struct batch b, later;
	bool marked[AB_OPS_MAX];
	int ret;

	if (ops->count == 0)
		return 0;
	batch_init(&b);
	batch_init(&later);
	batch_ops(tracker, &b, attempt, ops, keys, now, NULL);
	ret = ab_store_run(tracker->store, b.req, b.n, error_r);
	batch_results(&b, ops, after, marked_r != NULL ? marked_r : marked, &later);
	ab_store_post(tracker->store, later.req, later.n);
	return ret == 0 ? 0 : -1;
}

/* Read every slot that applies in one round trip. Returns the store's
   result: 0, 1 (partial) or -1. */
static int read_snapshot(struct ab_tracker *tracker,
			 const struct ab_attempt *attempt, time_t now,
			 struct ab_snapshot *snap_r, ab_key keys[AB_SLOT_COUNT],
			 const char **error_r)
{
	struct batch b;
	struct ab_ops none = { .count = 0 };
	int ret;

	memset(snap_r, 0, sizeof(*snap_r));
	slot_keys(tracker, attempt, now, keys);
	batch_init(&b);
	batch_reads(&b, attempt, keys, false, NULL);
	if (b.n == 0)
		return 0;
	ret = ab_store_run(tracker->store, b.req, b.n, error_r);
	batch_results(&b, &none, snap_r, NULL, NULL);
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

/* Is op in ops (the same kind on the same slot)? */
static bool ops_have(const struct ab_ops *ops, const struct ab_op *op)
{
	unsigned int i;

	for (i = 0; i < ops->count; i++) {
		if (ops->op[i].kind == op->kind && ops->op[i].slot == op->slot)
			return true;
	}
	return false;
}

/* After an allow's round trip: of the places taken (spec), those the
   attempt holds (keep: ab_reserve() of what was read) go into hold, the
   others go back; places keep asks for that were not taken (a familiar
   subnet's allowance) are taken now. All of it into later. */
static void settle_places(const struct batch *b, const struct ab_ops *spec,
			  const bool *marked, const struct ab_ops *keep,
			  const struct ab_snapshot *snap, struct ab_hold *hold,
			  ab_key keys[AB_SLOT_COUNT], struct batch *later)
{
	unsigned int i;

	for (i = 0; i < spec->count; i++) {
		const struct ab_op *op = &spec->op[i];
		enum ab_slot counted = op->kind == AB_OP_MARK ? op->pair_slot : op->slot;

		if (!snap->own[counted]) {
			/* not taken; a marker added without its count stays,
			   so the count is not taken twice */
			continue;
		}
		if (ops_have(keep, op)) {
			hold->slots |= 1U << counted;
			continue;
		}
		if (op->kind == AB_OP_MARK && marked[i])
			batch_add(later, AB_STORE_DELETE, b->req[b->op_req[i]].key, 0, 0);
		batch_add(later, AB_STORE_DECR, keys[counted], 1, 0);
	}
	for (i = 0; i < keep->count; i++) {
		const struct ab_op *op = &keep->op[i];

		/* ab_reserve() of an empty snapshot takes every place but a
		   familiar subnet's, which is a plain increment */
		if (op->kind != AB_OP_INCR || ops_have(spec, op))
			continue;
		batch_add(later, AB_STORE_INCR, keys[op->slot], op->value, op->ttl_s);
		hold->slots |= 1U << op->slot;
	}
}

/* ab_reserve() of the state as it was before this attempt's own
   requests: the markers it added were not there. */
static void reserve_as_read(const struct ab_snapshot *snap,
			    const struct ab_ops *spec, const bool *marked,
			    const struct ab_attempt *attempt,
			    const struct ab_config *cfg, struct ab_ops *keep_r)
{
	struct ab_snapshot before = *snap;
	unsigned int i;

	for (i = 0; i < spec->count; i++) {
		if (spec->op[i].kind == AB_OP_MARK && marked[i])
			before.found[spec->op[i].slot] = false;
	}
	ab_reserve(&before, attempt, cfg, keep_r);
}

void ab_tracker_allow(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt, time_t now,
		      unsigned int flags, struct ab_decision *decision_r)
{
	const struct ab_config *cfg = tracker->cfg;
	struct ab_snapshot snap;
	struct ab_ops spec, keep;
	struct ab_hold hold = { now, 0 };
	struct batch b, later;
	ab_key keys[AB_SLOT_COUNT];
	bool written[AB_SLOT_COUNT], marked[AB_OPS_MAX];
	const char *error = "";
	int ret;

	memset(&snap, 0, sizeof(snap));
	memset(written, 0, sizeof(written));
	spec.count = keep.count = 0;
	slot_keys(tracker, attempt, now, keys);
	batch_init(&b);
	batch_init(&later);
	/* Without a session nothing pairs this allow with its report, so
	   nothing is held. With one, the places of an unfamiliar attempt are
	   taken in the same round trip as the reads (of attempts in parallel,
	   only those within the limits go on), and settled below. */
	if ((flags & AB_ALLOW_DRY_RUN) == 0 && attempt->has_session) {
		ab_reserve(&snap, attempt, cfg, &spec);
		batch_ops(tracker, &b, attempt, &spec, keys, now, written);
	}
	batch_reads(&b, attempt, keys, true, written);
	ret = b.n == 0 ? 0 : ab_store_run(tracker->store, b.req, b.n, &error);
	batch_results(&b, &spec, &snap, marked, &later);

	if (ret < 0 || (ret > 0 && cfg->fail_mode == AB_FAIL_CLOSED)) {
		store_failure(tracker, now, ret < 0 ? "memcached unreachable" :
			      "memcached partly unreachable", error, NULL);
		fail_mode_decision(cfg, ret > 0, decision_r);
	} else {
		if (ret > 0)
			store_failure(tracker, now, "memcached partly unreachable", error,
				      "deciding on the counts of the servers that answered");
		/* counts holding the attempt's own place are judged without it */
		ab_decide(&snap, attempt, cfg, now, decision_r);
		/* a second allow for one session (Dovecot's after-auth check)
		   finds its places held already */
		if (decision_r->verdict != AB_REJECT && spec.count > 0 &&
		    !snap.found[AB_SLOT_SESSION])
			reserve_as_read(&snap, &spec, marked, attempt, cfg, &keep);
	}
	settle_places(&b, &spec, marked, &keep, &snap, &hold, keys, &later);
	/* what a report settles; should the record be lost, a failure is
	   counted when it is reported and a success gives back what an allow
	   would have held (ab_hold_presumed) */
	if (hold.slots != 0)
		batch_add(&later, AB_STORE_SET, keys[AB_SLOT_SESSION],
			  ab_hold_pack(&hold), AB_HOLD_TTL);
	ab_store_post(tracker->store, later.req, later.n);
}

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
	struct ab_ops ops, none = { .count = 0 };
	struct ab_hold hold = { 0, 0 }, *held = NULL;
	struct batch b;
	ab_key keys[AB_SLOT_COUNT];
	bool marked[AB_OPS_MAX], counted;
	int del = -1, ret;

	/* The reads, and the session record's delete: of racing reports,
	   the one whose delete finds it settles what its allow holds.
	   Without a record, a failure is counted now. */
	memset(&snap, 0, sizeof(snap));
	slot_keys(tracker, attempt, now, keys);
	batch_init(&b);
	batch_reads(&b, attempt, keys, false, NULL);
	if (attempt->has_session)
		del = batch_add(&b, AB_STORE_DELETE, keys[AB_SLOT_SESSION], 0, 0);
	ret = ab_store_run(tracker->store, b.req, b.n, error_r);
	if (ret < 0) {
		store_failure(tracker, now, "memcached unreachable", *error_r,
			      "an outcome was not recorded");
		return -1;
	}
	batch_results(&b, &none, &snap, marked, NULL);
	if (snap.found[AB_SLOT_SESSION]) {
		if (b.req[del].result == AB_STORE_DONE)
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
	if (run_ops(tracker, attempt, &ops, keys, now, &after, NULL, error_r) < 0)
		ret = -1;
	ops.count = 0;
	if (counted)
		ab_escalate(&after, attempt, outcome, tracker->cfg, now, &ops);
	if (run_ops(tracker, attempt, &ops, keys, now, &after, marked, error_r) < 0)
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
