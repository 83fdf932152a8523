/* The tracker: attempt → keyed-hash keys → one mget → engine → writes.
   The faces (Dovecot service, PAM module, CLI) call only this. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "ab-dnsbl.h"
#include "ab-error.h"
#include "ab-observer.h"
#include "ab-recent.h"
#include "ab-tracker.h"
#include "ab-verdict.h"

typedef char ab_key[AB_KEY_LEN];

/* Requests for one round trip, shared by the attempts decided together. */
struct requests {
	struct ab_store_op op[AB_STORE_BATCH_MAX];
	unsigned int n;
};

/* One attempt's part of a round trip: which request does what. */
struct plan {
	int get[AB_SLOT_COUNT];		/* the request reading a slot, or -1 */
	int op_req[AB_OPS_MAX];		/* an engine op's request */
	int pair_req[AB_OPS_MAX];	/* MARK: its counter's increment */
	const char *pair_key[AB_OPS_MAX];
	ab_key other[AB_OPS_MAX][2];	/* keys of ops on an earlier bucket */
};

/* One attempt decided or reported with others: its keys, its part of
   each round trip, and what came back. */
struct job {
	const struct ab_attempt *attempt;
	ab_key keys[AB_SLOT_COUNT];
	struct plan plan;
	struct ab_snapshot snap, after;
	struct ab_ops spec;		/* allow: the places taken; report: the ops */
	struct ab_ops keep;		/* allow: the places it holds */
	bool marked[AB_OPS_MAX];
	struct ab_hold hold;
	bool counted, failed;
	/* allow: decided by a refusal this process remembers (ab-verdict.h) */
	bool remembered;
	/* report: the increment of `authbrake list`'s ring index sent with
	   the blocks and locks (-1: none), and the last of the slots it took,
	   one per op (0: none) */
	int ring_req;
	uint64_t ring_index;
	/* the session record's request: allow, its add; report, its delete
	   (-1: none) */
	int record;
};

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
	/* the round trips under way: allocated once, not per login */
	struct requests reqs, later;
	struct job job[AB_TRACKER_BATCH_MAX];
	/* metrics hook (ab-observer.h), NULL when nobody watches */
	const struct ab_observer *observer;
	void *observer_ctx;
	/* DNS blocklists, NULL when dnsbl is empty */
	struct ab_dnsbl *dnsbl;
	/* refusals remembered for verdict_cache */
	struct ab_verdicts *verdicts;
	/* the key of `authbrake list`'s ring index */
	ab_key ring_key;
};

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
	    ab_store_init(cfg, log, log_ctx, &tracker->store, error_r) < 0 ||
	    ab_dnsbl_init(cfg, &tracker->dnsbl, error_r) < 0 ||
	    ab_verdicts_init(cfg->verdict_cache_s, &tracker->verdicts) < 0) {
		ab_tracker_deinit(&tracker);
		return -1;
	}
	ab_recent_index_key(&tracker->secret, tracker->ring_key);
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
	if (tracker->dnsbl != NULL)
		ab_dnsbl_deinit(&tracker->dnsbl);
	ab_verdicts_deinit(&tracker->verdicts);
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
	uint8_t addr[17 + 8], extra[8];
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
		ab_hash_key(&tracker->secret, info->kind, addr, 17,
			    extra, extra_len, key_r);
		break;
	case AB_SCOPE_ADDR_ACCT:
	case AB_SCOPE_NET_ACCT:
		ab_hash_key(&tracker->secret, info->kind, addr, 17,
			    attempt->account, account_len, key_r);
		break;
	case AB_SCOPE_ACCT:
		ab_hash_key(&tracker->secret, info->kind,
			    attempt->account, account_len, extra, extra_len, key_r);
		break;
	case AB_SCOPE_ACCT_NET:
		/* a windowed count of the pair: the bucket after the subnet */
		memcpy(addr + 17, extra, extra_len);
		ab_hash_key(&tracker->secret, info->kind, attempt->account,
			    account_len, addr, 17 + extra_len, key_r);
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

   What logins cost the store, in round trips (each one request per
   server, pipelined), for one attempt or for many decided together:
   - allow: 1. The reads ab_decide() needs, the places an unfamiliar
     attempt holds (ab_reserve() of an empty snapshot) and the session
     record saying so (an add: a record there already is the after-auth
     allow's) go out together; the answers are judged, and only what the
     attempt should not hold (it was refused, its subnet is familiar, a
     marker was there) is given back, and its record corrected, by a
     posted batch that waits for nothing. An attempt that holds what it
     took posts nothing.
     A refusal this process remembers (ab-verdict.h) costs none.
   - report: 1 or 2. The reads and the session record's delete, then the
     counts, unless all it has to do needs no answer (a failure whose
     allow held its places gives back its place in flight): that is
     posted. One more when a block or lock is set: its marker, its strike
     and the next slot of `authbrake list`'s ring together; the list's
     entry is posted.
   What each costs, in round trips and operations, is tabled in
   ab-cost.h; test-store.c checks the table against the store's own
   counters. */

static void plan_init(struct plan *p)
{
	unsigned int i;

	for (i = 0; i < AB_SLOT_COUNT; i++)
		p->get[i] = -1;
	for (i = 0; i < AB_OPS_MAX; i++)
		p->op_req[i] = p->pair_req[i] = -1;
}

/* State that refuses for long (blocks, locks, strikes, familiar
   subnets) is kept on two servers; a key's kind letters ("ab1:KK:...",
   ab_hash_key()) say which slot it is. */
static void op_init(struct ab_store_op *op, enum ab_store_cmd cmd,
		    const char *key, uint64_t value, unsigned int ttl_s)
{
	memset(op, 0, sizeof(*op));
	op->cmd = cmd;
	op->key = key;
	op->value = value;
	op->ttl_s = ttl_s;
	op->dual = strncmp(key, "ab1:", 4) == 0 && ab_slot_kind_dual(key + 4);
}

static int request_add(struct requests *r, enum ab_store_cmd cmd,
		       const char *key, uint64_t value, unsigned int ttl_s)
{
	/* cannot overflow: AB_TRACKER_BATCH_MAX attempts, each reading every
	   slot and making two requests per op, fit */
	op_init(&r->op[r->n], cmd, key, value, ttl_s);
	return (int)r->n++;
}

/* One request, for the administration paths. */
static int run_one(struct ab_tracker *tracker, enum ab_store_cmd cmd,
		   const char *key, uint64_t value, unsigned int ttl_s,
		   const char **error_r)
{
	struct ab_store_op op;

	op_init(&op, cmd, key, value, ttl_s);
	if (ab_store_run(tracker->store, &op, 1, error_r) < 0)
		return -1;
	if (op.result == AB_STORE_FAILED)
		return ab_error(error_r, "memcached: a request failed");
	return 0;
}

/* Which of the slots that apply a round trip reads (none that `written`
   says the plan writes). */
enum reads {
	READS_ALL,		/* status */
	READS_ALLOW,		/* what ab_decide() and ab_reserve() need */
	READS_REPORT,		/* ab_report_reads() of the outcome */
};

static void plan_reads(struct plan *p, struct requests *r,
		       const struct ab_attempt *attempt,
		       ab_key keys[AB_SLOT_COUNT], enum reads reads,
		       enum ab_outcome outcome, const bool *written)
{
	unsigned int slot;

	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		if (!ab_slot_applies((enum ab_slot)slot, attempt) ||
		    (reads == READS_ALLOW &&
		     !ab_slot_info((enum ab_slot)slot)->decides) ||
		    (reads == READS_REPORT &&
		     !ab_report_reads((enum ab_slot)slot, outcome)) ||
		    (written != NULL && written[slot]))
			continue;
		p->get[slot] = request_add(r, AB_STORE_GET, keys[slot], 0, 0);
	}
}

/* The engine's ops as requests. A MARK adds its marker and counts it in
   the same round trip; when the marker was there already, the count is
   given back afterwards (plan_results). An UNMARK deletes its marker,
   and its counter follows afterwards when it was there. */
static void plan_ops(struct ab_tracker *tracker, struct plan *p,
		     struct requests *r, const struct ab_attempt *attempt,
		     const struct ab_ops *ops, ab_key keys[AB_SLOT_COUNT],
		     time_t now, bool *written_r)
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
			slot_key(tracker, op->slot, attempt, op->at, p->other[i][0]);
			slot_key(tracker, op->pair_slot, attempt, op->at, p->other[i][1]);
			key = p->other[i][0];
			pair_key = p->other[i][1];
		}
		p->pair_key[i] = pair_key;
		p->op_req[i] = request_add(r, cmds[op->kind], key, op->value,
					   op->ttl_s);
		if (op->kind == AB_OP_MARK)
			p->pair_req[i] = request_add(r, AB_STORE_INCR, pair_key, 1,
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
static void plan_results(const struct plan *p, const struct requests *r,
			 const struct ab_ops *ops, struct ab_snapshot *snap,
			 bool *marked_r, struct requests *later)
{
	unsigned int slot, i;

	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		const struct ab_store_op *get;

		if (p->get[slot] < 0)
			continue;
		get = &r->op[p->get[slot]];
		snap->found[slot] = get->result == AB_STORE_DONE;
		snap->value[slot] = snap->found[slot] ? get->out : 0;
	}
	for (i = 0; i < ops->count; i++) {
		const struct ab_op *op = &ops->op[i];
		const struct ab_store_op *req = &r->op[p->op_req[i]], *pair;
		bool done = req->result == AB_STORE_DONE;

		marked_r[i] = false;
		switch (op->kind) {
		case AB_OP_INCR:
			if (done) {
				snap->value[op->slot] = req->out;
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
			if (done || req->result == AB_STORE_MISS) {
				snap->value[op->slot] = op->value;
				snap->found[op->slot] = true;
			}
			pair = &r->op[p->pair_req[i]];
			if (pair->result != AB_STORE_DONE)
				break;
			snap->value[op->pair_slot] = pair->out;
			snap->found[op->pair_slot] = true;
			if (done) {
				snap->own[op->pair_slot] = true;
			} else {
				/* counted already (the marker was there), or the
				   marker's server did not answer: then no report
				   could take the count back, and a user's every
				   login would add one. This count goes back. */
				snap->value[op->pair_slot]--;
				request_add(later, AB_STORE_DECR, p->pair_key[i], 1, 0);
			}
			break;
		case AB_OP_UNMARK:
			marked_r[i] = done;
			if (done)
				request_add(later, AB_STORE_DECR, p->pair_key[i], 1, 0);
			break;
		case AB_OP_DECR:
		case AB_OP_DELETE:
			break;
		}
	}
}

/* Read every slot that applies in one round trip. Returns the store's
   result: 0, 1 (partial) or -1. */
static int read_snapshot(struct ab_tracker *tracker,
			 const struct ab_attempt *attempt, time_t now,
			 struct ab_snapshot *snap_r, ab_key keys[AB_SLOT_COUNT],
			 const char **error_r)
{
	struct ab_ops none = { .count = 0 };
	int ret;

	memset(snap_r, 0, sizeof(*snap_r));
	slot_keys(tracker, attempt, now, keys);
	tracker->reqs.n = 0;
	plan_init(&tracker->job[0].plan);
	plan_reads(&tracker->job[0].plan, &tracker->reqs, attempt, keys, READS_ALL,
		   AB_OUTCOME_FAILURE, NULL);
	if (tracker->reqs.n == 0)
		return 0;
	ret = ab_store_run(tracker->store, tracker->reqs.op, tracker->reqs.n, error_r);
	plan_results(&tracker->job[0].plan, &tracker->reqs, &none, snap_r, NULL, NULL);
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
	if (cfg->fail_mode == AB_FAIL_OPEN)
		ab_decision_set(d, AB_ALLOW, AB_REASON_FAIL_OPEN);
	else
		ab_decision_set(d, AB_REJECT, partly ? AB_REASON_FAIL_CLOSED_PARTLY :
				AB_REASON_FAIL_CLOSED);
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

/* ab_reserve() of the state as it was before this attempt's own
   requests: the markers it added were not there. */
static void reserve_as_read(const struct job *job, const struct ab_config *cfg,
			    time_t now, struct ab_ops *keep_r)
{
	struct ab_snapshot before = job->snap;
	unsigned int i;

	for (i = 0; i < job->spec.count; i++) {
		if (job->spec.op[i].kind == AB_OP_MARK && job->marked[i])
			before.found[job->spec.op[i].slot] = false;
	}
	ab_reserve(&before, job->attempt, cfg, now, keep_r);
}

/* After an allow's round trip: of the places taken (spec), those the
   attempt holds (keep: ab_reserve() of what was read) go into its hold,
   the others go back; places keep asks for that were not taken (a
   familiar subnet's allowance) are taken now. All of it into later. */
static void settle_places(struct job *job, const struct requests *r,
			  struct requests *later)
{
	const struct ab_ops *spec = &job->spec, *keep = &job->keep;
	unsigned int i;

	for (i = 0; i < spec->count; i++) {
		const struct ab_op *op = &spec->op[i];
		enum ab_slot counted = ab_op_counted(op);

		if (!job->snap.own[counted]) {
			/* not taken; a marker added without its count stays,
			   so the count is not taken twice */
			continue;
		}
		if (ops_have(keep, op)) {
			job->hold.slots |= 1U << counted;
			continue;
		}
		if (op->kind == AB_OP_MARK && job->marked[i])
			request_add(later, AB_STORE_DELETE,
				    r->op[job->plan.op_req[i]].key, 0, 0);
		request_add(later, AB_STORE_DECR, job->keys[counted], 1, 0);
	}
	for (i = 0; i < keep->count; i++) {
		const struct ab_op *op = &keep->op[i];

		/* ab_reserve() of an empty snapshot takes every place but a
		   familiar subnet's, which is a plain increment */
		if (op->kind != AB_OP_INCR || ops_have(spec, op))
			continue;
		request_add(later, AB_STORE_INCR, job->keys[op->slot], op->value,
			    op->ttl_s);
		job->hold.slots |= 1U << op->slot;
	}
}

void ab_tracker_allow_many(struct ab_tracker *tracker,
			   const struct ab_attempt *const *attempts, size_t n,
			   time_t now, unsigned int flags,
			   struct ab_decision *decisions_r)
{
	const struct ab_config *cfg = tracker->cfg;
	struct requests *r = &tracker->reqs, *later = &tracker->later;
	const char *error = "";
	size_t i;
	int ret;

	for (; n > AB_TRACKER_BATCH_MAX; n -= AB_TRACKER_BATCH_MAX) {
		ab_tracker_allow_many(tracker, attempts, AB_TRACKER_BATCH_MAX, now,
				      flags, decisions_r);
		attempts += AB_TRACKER_BATCH_MAX;
		decisions_r += AB_TRACKER_BATCH_MAX;
	}
	r->n = later->n = 0;
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];
		bool written[AB_SLOT_COUNT];

		memset(&job->snap, 0, sizeof(job->snap));
		memset(written, 0, sizeof(written));
		job->attempt = attempts[i];
		/* a flood of attempts already refused costs memcached nothing */
		job->remembered = (flags & AB_ALLOW_DRY_RUN) == 0 &&
			ab_verdicts_find(tracker->verdicts, job->attempt,
					 ab_attempt_trusted(job->attempt, cfg), now,
					 &decisions_r[i]);
		if (job->remembered)
			continue;
		job->spec.count = job->keep.count = 0;
		job->hold.at = now;
		job->hold.slots = 0;
		job->record = -1;
		slot_keys(tracker, job->attempt, now, job->keys);
		plan_init(&job->plan);
		/* Without a session nothing pairs this allow with its report,
		   so nothing is held. With one, the places of an unfamiliar
		   attempt are taken in the same round trip as the reads (of
		   attempts in parallel, only those within the limits go on),
		   and settled below. */
		if ((flags & AB_ALLOW_DRY_RUN) == 0 && job->attempt->has_session) {
			ab_reserve(&job->snap, job->attempt, cfg, now, &job->spec);
			plan_ops(tracker, &job->plan, r, job->attempt, &job->spec,
				 job->keys, now, written);
		}
		if (job->spec.count > 0) {
			struct ab_hold all = {
				.at = now, .slots = ab_ops_slots(&job->spec)
			};

			job->record = request_add(r, AB_STORE_ADD,
						  job->keys[AB_SLOT_SESSION],
						  ab_hold_pack(&all), AB_HOLD_TTL);
		}
		plan_reads(&job->plan, r, job->attempt, job->keys, READS_ALLOW,
			   AB_OUTCOME_FAILURE, written);
	}
	ret = r->n == 0 ? 0 : ab_store_run(tracker->store, r->op, r->n, &error);
	if (ret < 0 || (ret > 0 && cfg->fail_mode == AB_FAIL_CLOSED))
		store_failure(tracker, now, ret < 0 ? "memcached unreachable" :
			      "memcached partly unreachable", error, NULL);
	else if (ret > 0)
		store_failure(tracker, now, "memcached partly unreachable", error,
			      "deciding on the counts of the servers that answered");
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];
		struct ab_decision *d = &decisions_r[i];
		/* the record was added: no allow of this session came before */
		bool recorded;

		if (job->remembered)
			continue;
		recorded = job->record >= 0 &&
			r->op[job->record].result == AB_STORE_DONE;
		plan_results(&job->plan, r, &job->spec, &job->snap, job->marked, later);
		if (ret < 0 || (ret > 0 && cfg->fail_mode == AB_FAIL_CLOSED)) {
			fail_mode_decision(cfg, ret > 0, d);
		} else {
			/* counts holding the attempt's own place are judged
			   without it */
			ab_decide(&job->snap, job->attempt, cfg, now, d);
			if ((flags & AB_ALLOW_DRY_RUN) == 0)
				ab_verdicts_remember(tracker->verdicts, job->attempt,
						     d, now);
			/* a second allow for one session (Dovecot's after-auth
			   check) finds its record, its places held already; a
			   session whose record could not be added (its server
			   is away) holds nothing, or a second allow would hold
			   again what one report settles once */
			if (d->verdict != AB_REJECT && recorded)
				reserve_as_read(job, cfg, now, &job->keep);
		}
		settle_places(job, r, later);
		/* the record says what a report settles; should it be lost, a
		   failure is counted when it is reported and a success gives
		   back what an allow would have held (ab_hold_presumed) */
		if (recorded && job->hold.slots != ab_ops_slots(&job->spec))
			request_add(later, job->hold.slots != 0 ? AB_STORE_SET :
				    AB_STORE_DELETE, job->keys[AB_SLOT_SESSION],
				    ab_hold_pack(&job->hold), AB_HOLD_TTL);
	}
	ab_store_post(tracker->store, later->op, later->n);
}

void ab_tracker_allow(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt, time_t now,
		      unsigned int flags, struct ab_decision *decision_r)
{
	ab_tracker_allow_many(tracker, &attempt, 1, now, flags, decision_r);
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
			   uint64_t ring_index, time_t now)
{
	char addr[AB_ADDR_STRLEN], dur[32];
	char account[AB_LOG_QUOTED_MAX(AB_ACCOUNT_MAX)];
	unsigned int i;

	for (i = 0; i < ops->count; i++) {
		const struct ab_op *op = &ops->op[i];
		struct ab_addr masked;

		if (!marked[i])
			continue;	/* another node set it first */
		tracker_observe_block(tracker, op, now);	/* observer hook */
		/* authbrake list: op i's own slot of those ring_index ends */
		ab_recent_escalation(&tracker->secret, tracker->store, attempt, after,
				     op, ring_index > ops->count - 1 - i ?
				     ring_index - (ops->count - 1 - i) : 0, now);
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
				    "account %s locked for unfamiliar origins for %s: %llu failures",
				    ab_log_quote(attempt->account, account, sizeof(account)), dur,
				    (unsigned long long)ab_window_count(after, AB_SLOT_ACCT_FAIL));
			break;
		default:
			break;
		}
	}
}

/* One round trip of the engine's ops of every job that has some; after
   takes what the store returned, marked what plan_results() says of
   markers. With ring, each job that sets a block or lock takes the next
   slot of `authbrake list`'s ring in the same round trip. Goes on past
   errors: every count that lands still protects. */
static int run_ops(struct ab_tracker *tracker, size_t n, time_t now,
		   bool ring, const char **error_r)
{
	struct requests *r = &tracker->reqs;
	size_t i;
	int ret;

	r->n = 0;
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];

		plan_init(&job->plan);
		plan_ops(tracker, &job->plan, r, job->attempt, &job->spec,
			 job->keys, now, NULL);
		/* a slot for each block or lock it may set */
		job->ring_req = ring && job->spec.count > 0 ?
			request_add(r, AB_STORE_INCR, tracker->ring_key,
				    job->spec.count, AB_RECENT_INDEX_TTL) : -1;
		job->ring_index = 0;
	}
	if (r->n == 0)
		return 0;
	ret = ab_store_run(tracker->store, r->op, r->n, error_r);
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];

		plan_results(&job->plan, r, &job->spec, &job->after,
			     job->marked, &tracker->later);
		if (job->ring_req >= 0 && r->op[job->ring_req].result == AB_STORE_DONE)
			job->ring_index = r->op[job->ring_req].out;
		if (ret != 0)
			job->failed = true;
	}
	return ret;
}

/* Ops whose answers decide nothing: decrements, sets and deletes. */
static bool ops_blind(const struct ab_ops *ops)
{
	unsigned int i;

	for (i = 0; i < ops->count; i++) {
		if (ops->op[i].kind == AB_OP_INCR || ops->op[i].kind == AB_OP_MARK ||
		    ops->op[i].kind == AB_OP_UNMARK)
			return false;
	}
	return true;
}

/* A job's ops that need no answer join the posted batch, and what they
   set is taken as done. Their keys live in the job until it is posted. */
static void post_blind_ops(struct ab_tracker *tracker, struct job *job,
			   time_t now)
{
	unsigned int i;

	plan_init(&job->plan);
	plan_ops(tracker, &job->plan, &tracker->later, job->attempt, &job->spec,
		 job->keys, now, NULL);
	for (i = 0; i < job->spec.count; i++) {
		const struct ab_op *op = &job->spec.op[i];

		if (op->kind == AB_OP_SET) {
			job->after.value[op->slot] = op->value;
			job->after.found[op->slot] = true;
		}
	}
	job->spec.count = 0;
}

int ab_tracker_report_many(struct ab_tracker *tracker,
			   const struct ab_attempt *const *attempts,
			   const enum ab_outcome *outcomes, size_t n,
			   time_t now, const char **error_r)
{
	struct requests *r = &tracker->reqs;
	struct ab_ops none = { .count = 0 };
	size_t i;
	int ret, failed = 0;

	for (; n > AB_TRACKER_BATCH_MAX; n -= AB_TRACKER_BATCH_MAX) {
		if (ab_tracker_report_many(tracker, attempts, outcomes,
					   AB_TRACKER_BATCH_MAX, now, error_r) < 0)
			failed = -1;
		attempts += AB_TRACKER_BATCH_MAX;
		outcomes += AB_TRACKER_BATCH_MAX;
	}
	/* The reads, and the session records' deletes: of racing reports,
	   the one whose delete finds a record settles what its allow
	   holds. Without a record, a failure is counted now. */
	r->n = tracker->later.n = 0;
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];

		job->attempt = attempts[i];
		job->failed = false;
		memset(&job->snap, 0, sizeof(job->snap));
		slot_keys(tracker, job->attempt, now, job->keys);
		plan_init(&job->plan);
		plan_reads(&job->plan, r, job->attempt, job->keys, READS_REPORT,
			   outcomes[i], NULL);
		job->record = !job->attempt->has_session ? -1 :
			request_add(r, AB_STORE_DELETE, job->keys[AB_SLOT_SESSION], 0, 0);
	}
	ret = ab_store_run(tracker->store, r->op, r->n, error_r);
	if (ret < 0) {
		store_failure(tracker, now, "memcached unreachable", *error_r,
			      "an outcome was not recorded");
		return -1;
	}
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];
		struct ab_hold *held = NULL;

		plan_results(&job->plan, r, &none, &job->snap, job->marked, NULL);
		job->hold.at = 0;
		job->hold.slots = 0;
		if (job->snap.found[AB_SLOT_SESSION]) {
			if (r->op[job->record].result == AB_STORE_DONE)
				ab_hold_unpack(job->snap.value[AB_SLOT_SESSION], &job->hold);
			held = &job->hold;
		} else if (job->attempt->has_session &&
			   outcomes[i] == AB_OUTCOME_SUCCESS) {
			/* the record is lost (its server went away, an
			   eviction): a real user's places must not stay
			   behind as failures */
			ab_hold_presumed(&job->snap, job->attempt, tracker->cfg,
					 now, &job->hold);
			held = &job->hold;
		}
		job->failed = ret != 0;
		job->after = job->snap;
		job->counted = ab_record(&job->snap, job->attempt, outcomes[i],
					 held, tracker->cfg, now, &job->spec);
		/* a failure whose places were held already gives back only
		   its place in flight: no round trip waits for that */
		if (ops_blind(&job->spec))
			post_blind_ops(tracker, job, now);
	}
	(void)run_ops(tracker, n, now, false, error_r);
	/* a block or lock where a threshold is crossed */
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];

		job->spec.count = 0;
		if (job->counted)
			ab_escalate(&job->after, job->attempt, outcomes[i],
				    tracker->cfg, now, &job->spec);
	}
	(void)run_ops(tracker, n, now, true, error_r);
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];

		log_escalation(tracker, job->attempt, &job->after, &job->spec,
			       job->marked, job->ring_index, now);
		if (job->failed) {
			store_failure(tracker, now, "memcached partly unreachable",
				      *error_r, "an outcome was recorded in part");
			failed = -1;
		}
	}
	ab_store_post(tracker->store, tracker->later.op, tracker->later.n);
	return failed;
}

int ab_tracker_report(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt,
		      enum ab_outcome outcome, time_t now,
		      const char **error_r)
{
	return ab_tracker_report_many(tracker, &attempt, &outcome, 1, now, error_r);
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
	char account[AB_LOG_QUOTED_MAX(AB_ACCOUNT_MAX)];

	if (decision->verdict == AB_TARPIT)
		snprintf(extra, sizeof(extra), " delay=%us", decision->delay_s);
	else if (decision->verdict == AB_REJECT && decision->retry_after_s > 0)
		snprintf(extra, sizeof(extra), " retry_after=%us",
			 decision->retry_after_s);
	snprintf(buf, size,
		 "account=%s address=%s protocol=%s decision=%s%s reason=\"%s\"",
		 ab_log_quote(attempt->account[0] != '\0' ? attempt->account : "-",
			      account, sizeof(account)),
		 attempt->has_addr ?
		 ab_addr_str(&attempt->addr, (unsigned int)ab_addr_len(&attempt->addr) * 8, addr) : "-",
		 attempt->protocol, verdicts[decision->verdict], extra,
		 decision->reason);
	return buf;
}

/* --- DNS blocklists ---------------------------------------------------

   An answer is kept in memcached for its TTL under a keyed hash of the
   address and of the zones and resolver asked (a change of them forgets
   it): 0 not listed (or the lookup failed), 1 + the zone's index listed. */

struct ab_dnsbl *ab_tracker_dnsbl(struct ab_tracker *tracker)
{
	return tracker->dnsbl;
}

bool ab_tracker_dnsbl_wanted(struct ab_tracker *tracker,
			     const struct ab_attempt *attempt)
{
	return tracker->dnsbl != NULL && !attempt->dnsbl_checked &&
		ab_address_rules(attempt, tracker->cfg) &&
		!ab_attempt_restricted_out(attempt, tracker->cfg);
}

static void dnsbl_key(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt, ab_key key_r)
{
	const char *signature = ab_dnsbl_signature(tracker->dnsbl);
	uint8_t addr[17];

	(void)addr_bytes(&attempt->addr, addr);
	ab_hash_key(&tracker->secret, "db", addr, sizeof(addr), signature,
		    strlen(signature), key_r);
}

void ab_tracker_dnsbl_cached(struct ab_tracker *tracker,
			     struct ab_attempt *const *attempts, size_t n)
{
	struct ab_store_op ops[AB_TRACKER_BATCH_MAX];
	ab_key keys[AB_TRACKER_BATCH_MAX];
	struct ab_attempt *wanted[AB_TRACKER_BATCH_MAX];
	size_t i, count = 0;

	for (i = 0; i < n && count < AB_TRACKER_BATCH_MAX; i++) {
		if (!ab_tracker_dnsbl_wanted(tracker, attempts[i]))
			continue;
		dnsbl_key(tracker, attempts[i], keys[count]);
		memset(&ops[count], 0, sizeof(ops[count]));
		ops[count].cmd = AB_STORE_GET;
		ops[count].key = keys[count];
		wanted[count++] = attempts[i];
	}
	if (count == 0)
		return;
	/* a store that cannot answer is logged by the batches of the
	   decision itself; the address is then looked up */
	(void)ab_store_run(tracker->store, ops, count, NULL);
	for (i = 0; i < count; i++) {
		if (ops[i].result != AB_STORE_DONE)
			continue;
		wanted[i]->dnsbl_checked = true;
		wanted[i]->dnsbl_listed = ops[i].out != 0;
	}
}

void ab_tracker_dnsbl_take(struct ab_tracker *tracker,
			   struct ab_attempt *attempt,
			   const struct ab_dnsbl_result *result,
			   unsigned int flags)
{
	char addr[AB_ADDR_STRLEN];
	struct ab_store_op op;
	ab_key key;

	attempt->dnsbl_checked = true;
	attempt->dnsbl_listed = result->status == AB_DNSBL_LISTED;
	(void)ab_addr_str(&attempt->addr, (unsigned int)ab_addr_len(&attempt->addr) * 8,
			  addr);
	switch (result->status) {
	case AB_DNSBL_LISTED:
		tracker_log(tracker, AB_LOG_INFO,
			    "dnsbl: address=%s listed in %s (%u.%u.%u.%u), for %us",
			    addr, ab_dnsbl_zone(tracker->dnsbl, result->zone),
			    result->answer[0], result->answer[1],
			    result->answer[2], result->answer[3], result->ttl_s);
		break;
	case AB_DNSBL_NOT_LISTED:
		tracker_log(tracker, AB_LOG_DEBUG,
			    "dnsbl: address=%s not listed, for %us", addr,
			    result->ttl_s);
		break;
	case AB_DNSBL_ERROR:
		tracker_log(tracker, AB_LOG_WARNING,
			    "dnsbl: address=%s lookup failed (%s): counted as not listed for %us",
			    addr, result->error, result->ttl_s);
		break;
	}
	if ((flags & AB_ALLOW_DRY_RUN) != 0)
		return;
	dnsbl_key(tracker, attempt, key);
	memset(&op, 0, sizeof(op));
	op.cmd = AB_STORE_SET;
	op.key = key;
	op.value = attempt->dnsbl_listed ? 1 + result->zone : 0;
	op.ttl_s = result->ttl_s;
	ab_store_post(tracker->store, &op, 1);
}

void ab_tracker_dnsbl_check(struct ab_tracker *tracker,
			    struct ab_attempt *attempt, unsigned int flags)
{
	struct ab_attempt *attempts[1] = { attempt };
	struct ab_dnsbl_result result;

	ab_tracker_dnsbl_cached(tracker, attempts, 1);
	if (!ab_tracker_dnsbl_wanted(tracker, attempt))
		return;
	ab_dnsbl_lookup_wait(tracker->dnsbl, &attempt->addr, &result);
	ab_tracker_dnsbl_take(tracker, attempt, &result, flags);
}

/* --- administration --- */

static void status_refusal(const struct ab_snapshot *snap,
			   const struct ab_attempt *attempt, enum ab_refused what,
			   const struct ab_config *cfg, time_t now,
			   bool *refused_r, unsigned long long *left_r)
{
	struct ab_refusal r;

	ab_refusal(snap, attempt, what, cfg, now, &r);
	*refused_r = r.refused;
	*left_r = r.refused ? (unsigned long long)(r.until - now) : 0;
}

int ab_tracker_account_status(struct ab_tracker *tracker, const char *login,
			      time_t now, struct ab_account_status *status_r,
			      const char **error_r)
{
	struct ab_attempt attempt;
	struct ab_snapshot snap;
	ab_key keys[AB_SLOT_COUNT];
	const struct ab_config *cfg = tracker->cfg;

	memset(status_r, 0, sizeof(*status_r));
	if (ab_attempt_init(tracker, &attempt, login, NULL, NULL, NULL, 0,
			    error_r) < 0)
		return -1;
	if (read_snapshot(tracker, &attempt, now, &snap, keys, error_r) != 0)
		return AB_ERR_STORE;
	status_r->failures = ab_window_count(&snap, AB_SLOT_ACCT_FAIL);
	status_r->familiar_failures = ab_window_count(&snap, AB_SLOT_ACCT_FAMFAIL);
	status_r->strikes = snap.value[AB_SLOT_ACCT_STRIKES];
	status_refusal(&snap, &attempt, AB_REFUSED_ACCOUNT, cfg, now,
		       &status_r->locked, &status_r->lock_left_s);
	status_refusal(&snap, &attempt, AB_REFUSED_FAMILIAR, cfg, now,
		       &status_r->familiar_refused, &status_r->familiar_left_s);
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
	status_refusal(&snap, &attempt, AB_REFUSED_ADDRESS, cfg, now,
		       &status_r->blocked, &status_r->block_left_s);
	status_r->net_failures = ab_window_count(&snap, AB_SLOT_NET_FAIL);
	status_r->net_accounts = ab_window_count(&snap, AB_SLOT_NET_ACCTS);
	status_r->net_strikes = snap.value[AB_SLOT_NET_STRIKES];
	status_refusal(&snap, &attempt, AB_REFUSED_SUBNET, cfg, now,
		       &status_r->net_blocked, &status_r->net_block_left_s);
	status_r->trusted = ab_attempt_trusted(&attempt, cfg);
	status_r->restricted_out = ab_attempt_restricted_out(&attempt, cfg);
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
		if (run_one(tracker, AB_STORE_DELETE, key, 0, 0, error_r) < 0)
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
		AB_SLOT_ACCT_FAMFAIL_PREV,
	};
	struct ab_attempt attempt;
	ab_key key;

	if (ab_attempt_init(tracker, &attempt, login, NULL, NULL, NULL, 0,
			    error_r) < 0)
		return -1;
	if (delete_slots(tracker, &attempt, slots, N_ELEMENTS(slots), now,
			 error_r) < 0)
		return AB_ERR_STORE;
	/* the failures each subnet counted against it are cleared too: a
	   success gives back none counted up to now */
	slot_key(tracker, AB_SLOT_ACCT_UNLOCKED, &attempt, now, key);
	if (run_one(tracker, AB_STORE_SET, key, (uint64_t)now,
		    2 * tracker->cfg->account_window_s + 60, error_r) < 0)
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
	if (run_one(tracker, AB_STORE_SET, key, (uint64_t)now + duration_s,
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
