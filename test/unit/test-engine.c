/* The policy engine against a table of cases: a fake clock, snapshots
   built by hand, no memcached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ab-config.h"
#include "ab-engine.h"

#define NOW ((time_t)1800000000)

static struct ab_config cfg;

static int setup(void **state)
{
	(void)state;
	ab_config_defaults(&cfg);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ab_config_free(&cfg);
	return 0;
}

static struct ab_attempt attempt(const char *account, const char *addr)
{
	struct ab_attempt a;

	memset(&a, 0, sizeof(a));
	strcpy(a.account, account);
	strcpy(a.protocol, "imap");
	if (addr != NULL) {
		assert_int_equal(ab_addr_parse(addr, &a.addr, NULL), 0);
		a.has_addr = true;
	}
	return a;
}

static void set(struct ab_snapshot *s, enum ab_slot slot, uint64_t v)
{
	s->value[slot] = v;
	s->found[slot] = true;
}

/* --- decide: a table of cases ------------------------------------------ */

struct decide_case {
	const char *name;
	const char *account, *addr;
	struct { enum ab_slot slot; uint64_t value; } state[4];
	enum ab_verdict verdict;
	unsigned int delay;
	const char *reason;	/* substring */
};

#define FUT(s) ((uint64_t)NOW + (s))
#define PAST(s) ((uint64_t)NOW - (s))

static const struct decide_case decide_cases[] = {
	{ "clean state allows", "alice", "198.51.100.7", {{0,0}}, AB_ALLOW, 0, "ok" },
	{ "failures within the free allowance", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 5 }}, AB_ALLOW, 0, "ok" },
	{ "first failure over the allowance: 1s", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 6 }}, AB_TARPIT, 1, "address failures" },
	{ "tarpit grows: 2s", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 7 }}, AB_TARPIT, 2, "address" },
	{ "tarpit grows: 8s", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 9 }}, AB_TARPIT, 8, "address" },
	{ "tarpit caps at tarpit_max", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 19 }}, AB_TARPIT, 15, "address" },
	{ "subnet tarpit when it is larger", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 6 }, { AB_SLOT_NET_FAIL, 33 }}, AB_TARPIT, 4, "subnet failures" },
	{ "address blocked", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_BLOCK, FUT(600) }}, AB_REJECT, 0, "address blocked" },
	{ "expired block no longer rejects", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_BLOCK, PAST(1) }}, AB_ALLOW, 0, "ok" },
	{ "subnet blocked", "alice", "198.51.100.7",
	  {{ AB_SLOT_NET_BLOCK, FUT(60) }}, AB_REJECT, 0, "subnet blocked" },
	{ "account locked, unfamiliar origin: rejected", "alice", "198.51.100.7",
	  {{ AB_SLOT_ACCT_LOCK, FUT(600) }}, AB_REJECT, 0, "account locked" },
	{ "account locked, familiar subnet: allowed", "alice", "198.51.100.7",
	  {{ AB_SLOT_ACCT_LOCK, FUT(600) }, { AB_SLOT_ACCT_FAM, FUT(86400) }}, AB_ALLOW, 0, "ok" },
	{ "familiar subnet over its own allowance", "alice", "198.51.100.7",
	  {{ AB_SLOT_ACCT_FAM, FUT(86400) }, { AB_SLOT_ACCT_FAMFAIL, 10 }}, AB_REJECT, 0, "familiar" },
	{ "account locked, no address known: rejected", "alice", NULL,
	  {{ AB_SLOT_ACCT_LOCK, FUT(600) }}, AB_REJECT, 0, "account locked" },
	{ "too many in flight", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_INFLIGHT, 20 }}, AB_REJECT, 0, "in flight" },
	{ "reject beats tarpit", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 12 }, { AB_SLOT_ACCT_LOCK, FUT(5) }}, AB_REJECT, 0, "account locked" },
	{ "the bucket before counts in full", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 3 }, { AB_SLOT_IP_FAIL_PREV, 3 }}, AB_TARPIT, 1, "address failures" },
	{ "failures and places held at ip_block_failures", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 12 }, { AB_SLOT_IP_FAIL_PREV, 8 }}, AB_REJECT, 0, "address blocked" },
	{ "distinct accounts at ip_max_accounts", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_ACCTS_PREV, 10 }}, AB_REJECT, 0, "address blocked" },
	{ "subnet at net_block_failures", "alice", "198.51.100.7",
	  {{ AB_SLOT_NET_FAIL, 100 }}, AB_REJECT, 0, "subnet blocked" },
	{ "account failures at the lock threshold, no lock set yet", "alice", "198.51.100.7",
	  {{ AB_SLOT_ACCT_FAIL, 4 }, { AB_SLOT_ACCT_FAIL_PREV, 6 }}, AB_REJECT, 0, "account locked" },
	{ "account failures at the threshold, familiar subnet", "alice", "198.51.100.7",
	  {{ AB_SLOT_ACCT_FAIL, 10 }, { AB_SLOT_ACCT_FAM, FUT(86400) }}, AB_ALLOW, 0, "ok" },
	{ "tarpit counts failures, not places in flight", "alice", "198.51.100.7",
	  {{ AB_SLOT_IP_FAIL, 8 }, { AB_SLOT_IP_INFLIGHT, 4 }}, AB_ALLOW, 0, "ok" },
};

static void test_decide_table(void **state)
{
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(decide_cases) / sizeof(decide_cases[0]); i++) {
		const struct decide_case *c = &decide_cases[i];
		struct ab_attempt a = attempt(c->account, c->addr);
		struct ab_snapshot s;
		struct ab_decision d;

		memset(&s, 0, sizeof(s));
		for (j = 0; j < 4 && (c->state[j].slot != 0 || c->state[j].value != 0); j++)
			set(&s, c->state[j].slot, c->state[j].value);
		ab_decide(&s, &a, &cfg, NOW, &d);
		print_message("  case: %s -> %d %u %s\n", c->name, d.verdict, d.delay_s, d.reason);
		assert_int_equal(d.verdict, c->verdict);
		assert_int_equal(d.delay_s, c->delay);
		assert_non_null(strstr(d.reason, c->reason));
		if (d.verdict == AB_REJECT)
			assert_true(strlen(d.user_msg) > 10);
	}
}

static void test_tarpit_grows_and_caps(void **state)
{
	unsigned int prev = 0, f, d;

	(void)state;
	for (f = 0; f <= cfg.ip_free_failures; f++)
		assert_int_equal(ab_tarpit_delay(&cfg, f, cfg.ip_free_failures), 0);
	for (f = cfg.ip_free_failures + 1; f < 100; f++) {
		d = ab_tarpit_delay(&cfg, f, cfg.ip_free_failures);
		assert_true(d >= prev);
		assert_true(d <= cfg.tarpit_max_s);
		prev = d;
	}
	assert_int_equal(prev, cfg.tarpit_max_s);
	assert_int_equal(ab_tarpit_delay(&cfg, UINT64_MAX, 0), cfg.tarpit_max_s);
}

static void test_block_duration_grows_never_past_max(void **state)
{
	uint64_t strikes;
	unsigned int prev = 0, d;

	(void)state;
	assert_int_equal(ab_escalated_duration(cfg.block_time_s, cfg.block_max_s, 0),
			 cfg.block_time_s);
	assert_int_equal(ab_escalated_duration(cfg.block_time_s, cfg.block_max_s, 1),
			 cfg.block_time_s * 2);
	for (strikes = 0; strikes < 80; strikes++) {
		d = ab_escalated_duration(cfg.block_time_s, cfg.block_max_s, strikes);
		assert_true(d >= prev);
		assert_true(d <= cfg.block_max_s);
		prev = d;
	}
	assert_int_equal(prev, cfg.block_max_s);
	assert_int_equal(ab_escalated_duration(900, 7 * 86400, UINT64_MAX), 7 * 86400);
	/* a base over the cap is the duration */
	assert_int_equal(ab_escalated_duration(7200, 3600, 5), 7200);
}

/* --- reserve, record and escalate ------------------------------------- */

static const struct ab_op *find_op(const struct ab_ops *ops, enum ab_op_kind kind,
				   enum ab_slot slot)
{
	unsigned int i;

	for (i = 0; i < ops->count; i++) {
		if (ops->op[i].kind == kind && ops->op[i].slot == slot)
			return &ops->op[i];
	}
	return NULL;
}

static void test_failure_counts_everywhere(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;
	const struct ab_op *op;

	(void)state;
	memset(&s, 0, sizeof(s));
	a.has_pw = true;
	a.pw_fp = 0x1234;
	/* nothing held (no session): the failure is counted at its report */
	assert_true(ab_record(&s, &a, AB_OUTCOME_FAILURE, NULL, &cfg, NOW, &ops));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_FAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_NET_FAIL));
	op = find_op(&ops, AB_OP_MARK, AB_SLOT_IP_PAIR);
	assert_non_null(op);
	assert_int_equal(op->pair_slot, AB_SLOT_IP_ACCTS);
	op = find_op(&ops, AB_OP_MARK, AB_SLOT_NET_PAIR);
	assert_non_null(op);
	assert_int_equal(op->pair_slot, AB_SLOT_NET_ACCTS);
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_SFAIL));
	assert_non_null(find_op(&ops, AB_OP_SET, AB_SLOT_ACCT_PW));
	/* a bucket's key lives through the window after it */
	assert_true(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_FAIL)->ttl_s >= 2 * cfg.ip_window_s);
	assert_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_INFLIGHT));

	/* the same account again from the address: not a new account */
	set(&s, AB_SLOT_IP_PAIR, 1);
	set(&s, AB_SLOT_NET_PAIR, 1);
	a.pw_fp = 0x4321;
	ab_record(&s, &a, AB_OUTCOME_FAILURE, NULL, &cfg, NOW, &ops);
	assert_null(find_op(&ops, AB_OP_MARK, AB_SLOT_IP_PAIR));
	assert_null(find_op(&ops, AB_OP_MARK, AB_SLOT_NET_PAIR));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_FAIL));
}

/* An attempt let through holds a place in every budget its failure would
   spend, plus one in flight. */
static void test_reserve_takes_every_budget(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	ab_reserve(&s, &a, &cfg, NOW, &ops);
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_FAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_NET_FAIL));
	assert_non_null(find_op(&ops, AB_OP_MARK, AB_SLOT_IP_PAIR));
	assert_non_null(find_op(&ops, AB_OP_MARK, AB_SLOT_NET_PAIR));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_SFAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_INFLIGHT));

	/* a familiar subnet spends its own allowance */
	set(&s, AB_SLOT_ACCT_FAM, FUT(86400));
	ab_reserve(&s, &a, &cfg, NOW, &ops);
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAMFAIL));
	assert_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL));
}

/* The rules judge a count without the attempt's own place: of attempts
   racing for the last place, the one that got it goes on. */
static void test_own_place_judged_without_itself(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_decision d;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAIL, cfg.account_lock_failures);
	s.own[AB_SLOT_ACCT_FAIL] = true;	/* the 10th place is this one */
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	set(&s, AB_SLOT_ACCT_FAIL, cfg.account_lock_failures + 1);
	ab_decide(&s, &a, &cfg, NOW, &d);	/* the 11th is refused */
	assert_int_equal(d.verdict, AB_REJECT);
	assert_non_null(strstr(d.reason, "account locked"));

	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_INFLIGHT, cfg.max_inflight);
	s.own[AB_SLOT_IP_INFLIGHT] = true;
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
}

static void test_repeated_wrong_password_not_counted(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_hold hold = { NOW - 1, (1U << AB_SLOT_IP_FAIL) |
				(1U << AB_SLOT_ACCT_FAIL) | (1U << AB_SLOT_IP_INFLIGHT) };
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	a.has_pw = true;
	a.pw_fp = 0xbeef;
	set(&s, AB_SLOT_ACCT_PW, 1);
	/* every place it held is given back, nothing counted */
	assert_false(ab_record(&s, &a, AB_OUTCOME_FAILURE, &hold, &cfg, NOW, &ops));
	assert_int_equal(ops.count, 3);
	assert_non_null(find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT));
	assert_non_null(find_op(&ops, AB_OP_DECR, AB_SLOT_IP_FAIL));
	assert_int_equal(find_op(&ops, AB_OP_DECR, AB_SLOT_ACCT_FAIL)->at, NOW - 1);
}

/* A failure keeps the places its allow held as its counts: it releases
   only its place in flight, and counts nothing twice. */
static void test_held_failure_keeps_its_places(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_hold hold = { NOW, (1U << AB_SLOT_IP_FAIL) | (1U << AB_SLOT_NET_FAIL) |
				(1U << AB_SLOT_IP_ACCTS) | (1U << AB_SLOT_ACCT_FAIL) |
				(1U << AB_SLOT_IP_INFLIGHT) };
	struct ab_hold nothing = { 0, 0 };
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_true(ab_record(&s, &a, AB_OUTCOME_FAILURE, &hold, &cfg, NOW, &ops));
	assert_int_equal(ops.count, 1);
	assert_non_null(find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT));

	/* a second report for a session already settled: nothing at all */
	assert_true(ab_record(&s, &a, AB_OUTCOME_FAILURE, &nothing, &cfg, NOW, &ops));
	assert_int_equal(ops.count, 0);
	assert_false(ab_record(&s, &a, AB_OUTCOME_POLICY_REJECT, &nothing, &cfg, NOW, &ops));
	assert_int_equal(ops.count, 0);
}

static void test_familiar_failures_have_own_allowance(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAM, FUT(86400));
	ab_record(&s, &a, AB_OUTCOME_FAILURE, NULL, &cfg, NOW, &ops);
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAMFAIL));
	assert_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL));
}

static void test_success_clears_own_failures_not_lock(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_hold hold = { NOW, (1U << AB_SLOT_ACCT_FAIL) | (1U << AB_SLOT_ACCT_SFAIL) |
				(1U << AB_SLOT_IP_ACCTS) | (1U << AB_SLOT_IP_INFLIGHT) };
	struct ab_snapshot s;
	struct ab_ops ops;
	const struct ab_op *op;
	unsigned int i, decr_fail = 0;

	(void)state;
	memset(&s, 0, sizeof(s));
	/* 2 failures in this bucket, 5 before; 3 from this subnet (2 in
	   this bucket, one of them this attempt's place, 1 before) */
	set(&s, AB_SLOT_ACCT_FAIL, 2);
	set(&s, AB_SLOT_ACCT_FAIL_PREV, 5);
	set(&s, AB_SLOT_ACCT_SFAIL, 2);
	set(&s, AB_SLOT_ACCT_SFAIL_PREV, 1);
	set(&s, AB_SLOT_ACCT_LOCK, FUT(600));
	set(&s, AB_SLOT_IP_PAIR, 1);
	assert_false(ab_record(&s, &a, AB_OUTCOME_SUCCESS, &hold, &cfg, NOW, &ops));
	op = find_op(&ops, AB_OP_SET, AB_SLOT_ACCT_FAM);
	assert_non_null(op);
	assert_int_equal(op->ttl_s, cfg.familiar_days * 86400);
	/* its own place, then the subnet's 2 others: 1 left in this bucket,
	   1 from the one before */
	for (i = 0; i < ops.count; i++) {
		if (ops.op[i].kind == AB_OP_DECR && ops.op[i].slot == AB_SLOT_ACCT_FAIL)
			decr_fail += (unsigned int)ops.op[i].value;
	}
	assert_int_equal(decr_fail, 2);
	op = find_op(&ops, AB_OP_DECR, AB_SLOT_ACCT_FAIL_PREV);
	assert_non_null(op);
	assert_int_equal(op->value, 1);
	assert_non_null(find_op(&ops, AB_OP_DELETE, AB_SLOT_ACCT_SFAIL));
	/* the account it held as a distinct account is given back once */
	op = find_op(&ops, AB_OP_UNMARK, AB_SLOT_IP_PAIR);
	assert_non_null(op);
	assert_int_equal(op->pair_slot, AB_SLOT_IP_ACCTS);
	assert_non_null(find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT));
	assert_null(find_op(&ops, AB_OP_DELETE, AB_SLOT_ACCT_LOCK));
	assert_null(find_op(&ops, AB_OP_SET, AB_SLOT_ACCT_LOCK));
}

/* In flight is released only by the report of an allow that counted it,
   once, whatever Dovecot's after-auth check does. */
static void test_inflight_released_by_outcome(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_hold hold = { NOW, 1U << AB_SLOT_IP_INFLIGHT };
	struct ab_snapshot s;
	struct ab_ops ops;
	const struct ab_op *op;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_INFLIGHT, 5);
	ab_record(&s, &a, AB_OUTCOME_SUCCESS, &hold, &cfg, NOW, &ops);
	op = find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT);
	assert_non_null(op);
	assert_int_equal(op->value, 1);
	ab_record(&s, &a, AB_OUTCOME_FAILURE, &hold, &cfg, NOW, &ops);
	assert_non_null(find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT));
	/* nothing held: nothing to release */
	ab_record(&s, &a, AB_OUTCOME_SUCCESS, NULL, &cfg, NOW, &ops);
	assert_null(find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT));
	ab_record(&s, &a, AB_OUTCOME_POLICY_REJECT, NULL, &cfg, NOW, &ops);
	assert_int_equal(ops.count, 0);
}

static void test_policy_reject_is_not_a_failure(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_false(ab_record(&s, &a, AB_OUTCOME_POLICY_REJECT, NULL, &cfg, NOW, &ops));
	assert_int_equal(ops.count, 0);
	ab_escalate(&s, &a, AB_OUTCOME_POLICY_REJECT, &cfg, NOW, &ops);
	assert_int_equal(ops.count, 0);
}

static void test_escalate_blocks_and_locks(void **state)
{
	time_t bucket_end = (time_t)((NOW / cfg.account_window_s + 1) *
				     cfg.account_window_s);
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;
	const struct ab_op *op;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_FAIL, cfg.ip_block_failures - 1);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_int_equal(ops.count, 0);

	/* the window's two buckets together cross the threshold */
	set(&s, AB_SLOT_IP_FAIL, cfg.ip_block_failures - 5);
	set(&s, AB_SLOT_IP_FAIL_PREV, 5);
	set(&s, AB_SLOT_IP_STRIKES, 2);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	/* a block is added, never overwritten: of racing reports one sets
	   it and adds the one strike */
	op = find_op(&ops, AB_OP_MARK, AB_SLOT_IP_BLOCK);
	assert_non_null(op);
	assert_int_equal(op->ttl_s, cfg.block_time_s * 4);
	assert_int_equal(op->value, (uint64_t)NOW + cfg.block_time_s * 4);
	assert_int_equal(op->pair_slot, AB_SLOT_IP_STRIKES);
	assert_null(find_op(&ops, AB_OP_SET, AB_SLOT_IP_BLOCK));

	/* distinct accounts alone block: a dictionary run over user names */
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_FAIL, 3);
	set(&s, AB_SLOT_IP_ACCTS, cfg.ip_max_accounts);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_non_null(find_op(&ops, AB_OP_MARK, AB_SLOT_IP_BLOCK));

	/* already blocked: no second block, no extra strike */
	set(&s, AB_SLOT_IP_BLOCK, FUT(100));
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_null(find_op(&ops, AB_OP_MARK, AB_SLOT_IP_BLOCK));

	/* account locks grow like blocks, up to block_max */
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAIL, cfg.account_lock_failures);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, bucket_end - 1, &ops);
	op = find_op(&ops, AB_OP_MARK, AB_SLOT_ACCT_LOCK);
	assert_non_null(op);
	/* a lock lasts lock_time, and at least until its failures have
	   left the window: all in the current bucket, that is the end of
	   the next one */
	assert_int_equal(op->value, (uint64_t)bucket_end + cfg.account_window_s);
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAIL_PREV, cfg.account_lock_failures);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, bucket_end - 1, &ops);
	op = find_op(&ops, AB_OP_MARK, AB_SLOT_ACCT_LOCK);
	assert_non_null(op);
	/* failures in the bucket before: they leave the window in a second,
	   so the lock's own time decides */
	assert_int_equal(op->value, (uint64_t)bucket_end - 1 + cfg.lock_time_s);
	assert_int_equal(op->pair_slot, AB_SLOT_ACCT_STRIKES);
	set(&s, AB_SLOT_ACCT_STRIKES, 3);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_int_equal(find_op(&ops, AB_OP_MARK, AB_SLOT_ACCT_LOCK)->ttl_s,
			 cfg.lock_time_s * 8);
	set(&s, AB_SLOT_ACCT_STRIKES, 40);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_int_equal(find_op(&ops, AB_OP_MARK, AB_SLOT_ACCT_LOCK)->ttl_s,
			 cfg.block_max_s);
}

/* Windows slide: at a bucket boundary the bucket before still counts, so
   9 failures before it and 1 after reach the threshold of 10. */
static void test_window_boundary_gives_no_fresh_budget(void **state)
{
	time_t end = (time_t)((NOW / cfg.account_window_s + 1) * cfg.account_window_s);
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_decision d;
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	/* just after the boundary: 9 failures in the bucket before, none yet
	   in this one, then 1 */
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAIL_PREV, cfg.account_lock_failures - 1);
	ab_decide(&s, &a, &cfg, end, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	set(&s, AB_SLOT_ACCT_FAIL, 1);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, end, &ops);
	assert_non_null(find_op(&ops, AB_OP_MARK, AB_SLOT_ACCT_LOCK));
	ab_decide(&s, &a, &cfg, end, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_int_equal(d.refused, AB_REFUSED_ACCOUNT);

	assert_int_equal(ab_slot_bucket(AB_SLOT_ACCT_FAIL, &cfg, end - 1) + 1,
			 ab_slot_bucket(AB_SLOT_ACCT_FAIL, &cfg, end));
	assert_int_equal(ab_slot_bucket(AB_SLOT_ACCT_FAIL_PREV, &cfg, end),
			 ab_slot_bucket(AB_SLOT_ACCT_FAIL, &cfg, end - 1));
	assert_int_equal(ab_slot_bucket(AB_SLOT_IP_FAIL_PREV, &cfg, end + 5),
			 ab_slot_bucket(AB_SLOT_IP_FAIL, &cfg, end - 1));
	assert_int_equal(ab_slot_bucket(AB_SLOT_ACCT_LOCK, &cfg, end), 0);
}

/* ab_refusal(): until when each identity is refused, from blocks and
   from counts; decide's retry_after is the latest of every refusal. */
static void test_refusal_until(void **state)
{
	/* 10 s into an hour's bucket */
	time_t t = (time_t)((NOW / cfg.ip_window_s + 1) * cfg.ip_window_s + 10);
	time_t next = t - 10 + (time_t)cfg.ip_window_s;
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_refusal r;
	struct ab_decision d;
	struct ab_snapshot s;

	(void)state;
	memset(&s, 0, sizeof(s));
	ab_refusal(&s, &a, AB_REFUSED_ADDRESS, &cfg, t, &r);
	assert_false(r.refused);

	/* the threshold reached in the bucket before: through when it
	   drops out */
	set(&s, AB_SLOT_IP_FAIL_PREV, cfg.ip_block_failures - 2);
	set(&s, AB_SLOT_IP_FAIL, 2);
	ab_refusal(&s, &a, AB_REFUSED_ADDRESS, &cfg, t, &r);
	assert_true(r.refused);
	assert_false(r.set);
	assert_int_equal(r.until, next);
	/* reached in this bucket: through when this one drops out too */
	set(&s, AB_SLOT_IP_FAIL, cfg.ip_block_failures);
	ab_refusal(&s, &a, AB_REFUSED_ADDRESS, &cfg, t, &r);
	assert_int_equal(r.until, next + (time_t)cfg.ip_window_s);
	/* a block that ends later decides; one that ends earlier does not */
	set(&s, AB_SLOT_IP_BLOCK, (uint64_t)next + 3 * cfg.ip_window_s);
	ab_refusal(&s, &a, AB_REFUSED_ADDRESS, &cfg, t, &r);
	assert_true(r.set);
	assert_int_equal(r.until, next + 3 * (time_t)cfg.ip_window_s);
	set(&s, AB_SLOT_IP_BLOCK, (uint64_t)t + 5);
	ab_refusal(&s, &a, AB_REFUSED_ADDRESS, &cfg, t, &r);
	assert_int_equal(r.until, next + (time_t)cfg.ip_window_s);
	/* its own place is not counted against an attempt */
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_FAIL, cfg.ip_block_failures);
	s.own[AB_SLOT_IP_FAIL] = true;
	ab_refusal(&s, &a, AB_REFUSED_ADDRESS, &cfg, t, &r);
	assert_false(r.refused);
	/* a trusted address has no address rules */
	s.own[AB_SLOT_IP_FAIL] = false;
	ab_refusal(&s, &a, AB_REFUSED_ADDRESS, &cfg, t, &r);
	assert_true(r.refused);
	{
		struct ab_config trusting;
		const char *error;

		ab_config_defaults(&trusting);
		assert_int_equal(ab_config_set(&trusting, "trusted_networks",
					       "198.51.100.0/24", "test", &error), 0);
		ab_refusal(&s, &a, AB_REFUSED_ADDRESS, &trusting, t, &r);
		assert_false(r.refused);
		ab_config_free(&trusting);
	}

	/* decide: the first refusal's reason, the latest one's time */
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_BLOCK, (uint64_t)t + 600);
	set(&s, AB_SLOT_ACCT_LOCK, (uint64_t)t + 900);
	ab_decide(&s, &a, &cfg, t, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_int_equal(d.refused, AB_REFUSED_ADDRESS);
	assert_int_equal(d.retry_after_s, 900);
	assert_string_equal(d.reason, "address blocked");
	/* a familiar subnet: the lock spares it, its own failures count */
	set(&s, AB_SLOT_ACCT_FAM, (uint64_t)t + 86400);
	ab_decide(&s, &a, &cfg, t, &d);
	assert_int_equal(d.retry_after_s, 600);
	set(&s, AB_SLOT_ACCT_FAMFAIL, cfg.familiar_failures);
	ab_decide(&s, &a, &cfg, t, &d);
	assert_int_equal(d.retry_after_s,
			 (time_t)((t / cfg.account_window_s + 2) * cfg.account_window_s) - t);
	/* a familiar mark past its time is not familiar */
	set(&s, AB_SLOT_ACCT_FAM, (uint64_t)t);
	assert_false(ab_familiar(&s, &a, t));
}

/* Every reason has a sentence and a metric label Dovecot keeps whole
   (2.3 cuts a label at 32 characters); refusals tell the client what to
   do. */
static void test_reasons_have_labels(void **state)
{
	unsigned int i;

	(void)state;
	for (i = 0; i < AB_REASON_COUNT; i++) {
		const struct ab_reason_info *info = ab_reason_info((enum ab_reason)i);

		assert_non_null(info->text);
		assert_true(info->text[0] != '\0');
		assert_true(info->label[0] != '\0');
		assert_true(strlen(info->label) < 32);
		assert_non_null(info->user_msg);
	}
}

static void test_hold_round_trips(void **state)
{
	struct ab_hold h = { NOW, (1U << AB_SLOT_SESSION) | 5 }, back;

	(void)state;
	ab_hold_unpack(ab_hold_pack(&h), &back);
	assert_int_equal(back.at, h.at);
	assert_int_equal(back.slots, h.slots);
	assert_true(AB_SLOT_COUNT <= 32);
}

static void test_ipv6_slash64_is_one_origin(void **state)
{
	struct ab_addr a, b, oa, ob, sa, sb;

	(void)state;
	assert_int_equal(ab_addr_parse("2001:db8:1:2:aaaa::1", &a, NULL), 0);
	assert_int_equal(ab_addr_parse("2001:db8:1:2:ffff:1:2:3", &b, NULL), 0);
	ab_addr_origin(&a, &oa);
	ab_addr_origin(&b, &ob);
	assert_true(ab_addr_equal(&oa, &ob));
	assert_int_equal(ab_addr_parse("2001:db8:1:3::1", &b, NULL), 0);
	ab_addr_origin(&b, &ob);
	assert_false(ab_addr_equal(&oa, &ob));
	ab_addr_subnet(&a, &sa);
	ab_addr_subnet(&b, &sb);
	assert_true(ab_addr_equal(&sa, &sb));	/* same /48 */
}

static void test_trusted_exempt_from_address_rules_not_lockout(void **state)
{
	struct ab_attempt a = attempt("alice", "10.1.2.3");
	struct ab_snapshot s;
	struct ab_decision d;
	struct ab_ops ops;

	(void)state;
	assert_int_equal(ab_cidr_list_parse("10.0.0.0/8", &cfg.trusted_networks, NULL), 0);
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_BLOCK, FUT(600));
	set(&s, AB_SLOT_IP_FAIL, 50);
	set(&s, AB_SLOT_IP_INFLIGHT, 500);
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);

	ab_record(&s, &a, AB_OUTCOME_FAILURE, NULL, &cfg, NOW, &ops);
	assert_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_FAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL));

	set(&s, AB_SLOT_ACCT_LOCK, FUT(600));
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_non_null(strstr(d.reason, "account locked"));
	ab_cidr_list_free(&cfg.trusted_networks);
}

static void test_restrict_networks(void **state)
{
	struct ab_attempt in = attempt("alice", "192.0.2.9");
	struct ab_attempt out = attempt("alice", "198.51.100.7");
	struct ab_attempt mapped = attempt("alice", "::ffff:192.0.2.10");
	struct ab_attempt none = attempt("alice", NULL);
	struct ab_snapshot s;
	struct ab_decision d;

	(void)state;
	memset(&s, 0, sizeof(s));
	assert_int_equal(ab_cidr_list_parse("192.0.2.0/24, 2001:db8::/32",
					    &cfg.restrict_networks, NULL), 0);
	ab_decide(&s, &in, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	ab_decide(&s, &mapped, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	ab_decide(&s, &out, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_non_null(strstr(d.reason, "restrict_networks"));
	/* no address (local PAM): restrict_networks cannot apply */
	ab_decide(&s, &none, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	ab_cidr_list_free(&cfg.restrict_networks);
}

/* SMTP AUTH only from the office, IMAP from anywhere; the office is
   trusted for IMAP alone. A protocol without lists of its own keeps the
   lists for every protocol (none here). */
static void test_per_protocol_networks(void **state)
{
	struct ab_attempt imap_out = attempt("alice", "198.51.100.7");
	struct ab_attempt smtp_out = attempt("alice", "198.51.100.7");
	struct ab_attempt smtp_in = attempt("alice", "192.0.2.9");
	struct ab_attempt imap_in = attempt("alice", "192.0.2.9");
	struct ab_attempt pop3_in = attempt("alice", "192.0.2.9");
	struct ab_snapshot s;
	struct ab_decision d;
	const char *error;

	(void)state;
	strcpy(smtp_out.protocol, "smtp");
	strcpy(smtp_in.protocol, "smtp");
	strcpy(pop3_in.protocol, "pop3");
	assert_int_equal(ab_config_set(&cfg, "restrict_networks.smtp",
				       "192.0.2.0/24", "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "trusted_networks.imap",
				       "192.0.2.0/24", "test", &error), 0);
	memset(&s, 0, sizeof(s));
	ab_decide(&s, &imap_out, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	ab_decide(&s, &smtp_out, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_non_null(strstr(d.reason, "restrict_networks"));
	ab_decide(&s, &smtp_in, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);

	/* a blocked office address: trusted for IMAP, not for SMTP or POP3 */
	set(&s, AB_SLOT_IP_BLOCK, FUT(600));
	ab_decide(&s, &imap_in, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_true(ab_attempt_trusted(&imap_in, &cfg));
	ab_decide(&s, &smtp_in, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_non_null(strstr(d.reason, "address blocked"));
	ab_decide(&s, &pop3_in, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_false(ab_attempt_trusted(&pop3_in, &cfg));

	/* an empty list for a protocol lifts the restriction for every one */
	assert_int_equal(ab_config_set(&cfg, "restrict_networks", "192.0.2.0/24",
				       "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "restrict_networks.imap", "",
				       "test", &error), 0);
	memset(&s, 0, sizeof(s));
	ab_decide(&s, &imap_out, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_false(ab_attempt_restricted_out(&imap_out, &cfg));
	strcpy(imap_out.protocol, "pop3");
	ab_decide(&s, &imap_out, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);

	/* the rest of the tests run with the defaults */
	ab_config_free(&cfg);
	ab_config_defaults(&cfg);
}

/* A listed address: no free failures and a tarpit from its first
   attempt (dnsbl_action = tarpit), or a refusal where dnsbl_action says
   reject; neither for a network familiar to the account, nor for a
   trusted one. */
static void test_dnsbl_listed(void **state)
{
	struct ab_attempt imap = attempt("alice", "198.51.100.7");
	struct ab_attempt smtp = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_decision d;
	const char *error;

	(void)state;
	strcpy(smtp.protocol, "smtp");
	memset(&s, 0, sizeof(s));
	imap.dnsbl_listed = smtp.dnsbl_listed = true;
	ab_decide(&s, &imap, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_TARPIT);
	assert_int_equal(d.delay_s, 1);
	assert_string_equal(d.reason, "address listed in a DNSBL");
	/* each failure doubles it, with no allowance first */
	set(&s, AB_SLOT_IP_FAIL, 3);
	ab_decide(&s, &imap, &cfg, NOW, &d);
	assert_int_equal(d.delay_s, 8);
	/* the larger tarpit wins: the address's own past the allowance */
	set(&s, AB_SLOT_IP_FAIL, 11);
	ab_decide(&s, &imap, &cfg, NOW, &d);
	assert_int_equal(d.delay_s, 15);

	assert_int_equal(ab_config_set(&cfg, "dnsbl_action.smtp", "reject",
				       "test", &error), 0);
	memset(&s, 0, sizeof(s));
	ab_decide(&s, &smtp, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_string_equal(d.reason, "address listed in a DNSBL");
	assert_non_null(strstr(d.user_msg, "DNS blocklist"));
	ab_decide(&s, &imap, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_TARPIT);
	/* not listed: nothing */
	smtp.dnsbl_listed = false;
	ab_decide(&s, &smtp, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	smtp.dnsbl_listed = true;

	/* the account's familiar network: neither refused nor delayed */
	set(&s, AB_SLOT_ACCT_FAM, FUT(86400));
	ab_decide(&s, &smtp, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	ab_decide(&s, &imap, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	/* ...but a login without an account has no familiar network */
	smtp.account[0] = '\0';
	ab_decide(&s, &smtp, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);

	/* a trusted network is exempt from address rules, this one too */
	assert_int_equal(ab_config_set(&cfg, "trusted_networks", "198.51.100.0/24",
				       "test", &error), 0);
	memset(&s, 0, sizeof(s));
	ab_decide(&s, &smtp, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	ab_decide(&s, &imap, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);

	ab_config_free(&cfg);
	ab_config_defaults(&cfg);
}

/* Campaign mode: an account's budget for unfamiliar origins shrinks to
   campaign_lock_failures (counts only: no lock is set, so it is back when
   the campaign ends), and an origin new to the account waits
   campaign_tarpit; its familiar subnets and trusted networks never see
   any of it. */
static void test_campaign_tightens_unfamiliar_only(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_attempt web = attempt("alice", "10.1.2.3");
	struct ab_snapshot s;
	struct ab_decision d;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAIL, 1);
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_false(d.campaign);
	s.campaign = true;
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_true(d.campaign);
	assert_int_equal(d.why, AB_REASON_CAMPAIGN_LOCKED);
	assert_string_equal(ab_reason_info(d.why)->label, "campaign_locked");
	assert_true(d.retry_after_s > 0 && d.retry_after_s <= 2 * cfg.account_window_s);
	assert_true(strlen(d.user_msg) > 10);
	/* no lock follows from the campaign's budget */
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_null(find_op(&ops, AB_OP_MARK, AB_SLOT_ACCT_LOCK));
	/* a lock that is set says so, campaign or not */
	set(&s, AB_SLOT_ACCT_LOCK, FUT(600));
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.why, AB_REASON_ACCOUNT_LOCKED);
	s.found[AB_SLOT_ACCT_LOCK] = false;
	s.value[AB_SLOT_ACCT_LOCK] = 0;
	/* its familiar subnet: neither refused nor delayed */
	set(&s, AB_SLOT_ACCT_FAM, FUT(86400));
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_int_equal(d.delay_s, 0);
	s.found[AB_SLOT_ACCT_FAM] = false;
	/* a trusted network (webmail): the normal budget, no tarpit */
	assert_int_equal(ab_cidr_list_parse("10.0.0.0/8", &cfg.trusted_networks, NULL), 0);
	ab_decide(&s, &web, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_int_equal(d.delay_s, 0);
	ab_cidr_list_free(&cfg.trusted_networks);
	/* an account with no failures, from a new origin: campaign_tarpit,
	   never more than tarpit_max */
	memset(&s, 0, sizeof(s));
	s.campaign = true;
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_TARPIT);
	assert_int_equal(d.delay_s, cfg.campaign_tarpit_s);
	assert_int_equal(d.why, AB_REASON_CAMPAIGN_TARPIT);
	cfg.campaign_tarpit_s = 60;
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.delay_s, cfg.tarpit_max_s);
	cfg.campaign_tarpit_s = 0;
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	ab_config_free(&cfg);
	ab_config_defaults(&cfg);
	/* a larger tarpit of the address's own stays */
	s.campaign = true;
	set(&s, AB_SLOT_IP_FAIL, 9);
	ab_decide(&s, &a, &cfg, NOW, &d);
	assert_int_equal(d.delay_s, 8);
	assert_int_equal(d.why, AB_REASON_ADDRESS_TARPIT);
}

static void test_slots_apply(void **state)
{
	struct ab_attempt none = attempt("alice", NULL);
	struct ab_attempt anon = attempt("", "198.51.100.7");

	(void)state;
	assert_false(ab_slot_applies(AB_SLOT_IP_FAIL, &none));
	assert_true(ab_slot_applies(AB_SLOT_ACCT_FAIL, &none));
	assert_false(ab_slot_applies(AB_SLOT_ACCT_PW, &none));
	assert_false(ab_slot_applies(AB_SLOT_ACCT_FAM, &none));
	assert_true(ab_slot_applies(AB_SLOT_IP_FAIL, &anon));
	assert_false(ab_slot_applies(AB_SLOT_IP_PAIR, &anon));
	assert_false(ab_slot_applies(AB_SLOT_ACCT_LOCK, &anon));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decide_table),
		cmocka_unit_test(test_tarpit_grows_and_caps),
		cmocka_unit_test(test_block_duration_grows_never_past_max),
		cmocka_unit_test(test_failure_counts_everywhere),
		cmocka_unit_test(test_reserve_takes_every_budget),
		cmocka_unit_test(test_own_place_judged_without_itself),
		cmocka_unit_test(test_held_failure_keeps_its_places),
		cmocka_unit_test(test_window_boundary_gives_no_fresh_budget),
		cmocka_unit_test(test_hold_round_trips),
		cmocka_unit_test(test_refusal_until),
		cmocka_unit_test(test_reasons_have_labels),
		cmocka_unit_test(test_repeated_wrong_password_not_counted),
		cmocka_unit_test(test_familiar_failures_have_own_allowance),
		cmocka_unit_test(test_success_clears_own_failures_not_lock),
		cmocka_unit_test(test_inflight_released_by_outcome),
		cmocka_unit_test(test_policy_reject_is_not_a_failure),
		cmocka_unit_test(test_escalate_blocks_and_locks),
		cmocka_unit_test(test_ipv6_slash64_is_one_origin),
		cmocka_unit_test(test_trusted_exempt_from_address_rules_not_lockout),
		cmocka_unit_test(test_restrict_networks),
		cmocka_unit_test(test_per_protocol_networks),
		cmocka_unit_test(test_dnsbl_listed),
		cmocka_unit_test(test_slots_apply),
		cmocka_unit_test(test_campaign_tightens_unfamiliar_only),
	};
	return cmocka_run_group_tests_name("engine", tests, setup, teardown);
}
