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
	assert_int_equal(ab_block_duration(&cfg, 0), cfg.block_time_s);
	assert_int_equal(ab_block_duration(&cfg, 1), cfg.block_time_s * 2);
	for (strikes = 0; strikes < 80; strikes++) {
		d = ab_block_duration(&cfg, strikes);
		assert_true(d >= prev);
		assert_true(d <= cfg.block_max_s);
		prev = d;
	}
	assert_int_equal(prev, cfg.block_max_s);
	cfg.block_max_s = 7 * 86400;
	assert_int_equal(ab_block_duration(&cfg, UINT64_MAX), 7 * 86400);
	cfg.block_max_s = 86400;
}

/* --- record and escalate ------------------------------------------------ */

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

	(void)state;
	memset(&s, 0, sizeof(s));
	a.has_pw = true;
	a.pw_fp = 0x1234;
	ab_record(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_FAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_NET_FAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_ACCTS));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_NET_ACCTS));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_SFAIL));
	assert_non_null(find_op(&ops, AB_OP_SET, AB_SLOT_ACCT_PW));
	assert_int_equal(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_FAIL)->ttl_s, cfg.ip_window_s);

	/* the same account again from the address: not a new account */
	set(&s, AB_SLOT_IP_PAIR, 1);
	set(&s, AB_SLOT_NET_PAIR, 1);
	a.pw_fp = 0x4321;
	ab_record(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_ACCTS));
	assert_null(find_op(&ops, AB_OP_INCR, AB_SLOT_NET_ACCTS));
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_FAIL));
}

static void test_repeated_wrong_password_not_counted(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	a.has_pw = true;
	a.pw_fp = 0xbeef;
	set(&s, AB_SLOT_ACCT_PW, 1);
	set(&s, AB_SLOT_IP_INFLIGHT, 1);
	ab_record(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	/* only the in-flight count is released */
	assert_int_equal(ops.count, 1);
	assert_non_null(find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT));
}

static void test_familiar_failures_have_own_allowance(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAM, FUT(86400));
	ab_record(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAMFAIL));
	assert_null(find_op(&ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL));
}

static void test_success_clears_own_failures_not_lock(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;
	const struct ab_op *op;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAIL, 7);
	set(&s, AB_SLOT_ACCT_SFAIL, 3);
	set(&s, AB_SLOT_ACCT_LOCK, FUT(600));
	ab_record(&s, &a, AB_OUTCOME_SUCCESS, &cfg, NOW, &ops);
	op = find_op(&ops, AB_OP_SET, AB_SLOT_ACCT_FAM);
	assert_non_null(op);
	assert_int_equal(op->ttl_s, cfg.familiar_days * 86400);
	op = find_op(&ops, AB_OP_DECR, AB_SLOT_ACCT_FAIL);
	assert_non_null(op);
	assert_int_equal(op->value, 3);
	assert_non_null(find_op(&ops, AB_OP_DELETE, AB_SLOT_ACCT_SFAIL));
	assert_null(find_op(&ops, AB_OP_DELETE, AB_SLOT_ACCT_LOCK));
	assert_null(find_op(&ops, AB_OP_SET, AB_SLOT_ACCT_LOCK));
}

/* Dovecot asks "allow" twice for a login whose password was right (before
   and after the check, auth_policy_check_after_auth defaults to yes) and
   reports once: a success releases both, a failure the one it had. */
static void test_inflight_released_by_outcome(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;
	const struct ab_op *op;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_INFLIGHT, 5);
	ab_record(&s, &a, AB_OUTCOME_SUCCESS, &cfg, NOW, &ops);
	op = find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT);
	assert_non_null(op);
	assert_int_equal(op->value, 2);
	ab_record(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	op = find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT);
	assert_non_null(op);
	assert_int_equal(op->value, 1);
	/* nothing in flight: nothing to release */
	memset(&s, 0, sizeof(s));
	ab_record(&s, &a, AB_OUTCOME_SUCCESS, &cfg, NOW, &ops);
	assert_null(find_op(&ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT));
}

static void test_policy_reject_is_not_a_failure(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;

	(void)state;
	memset(&s, 0, sizeof(s));
	ab_record(&s, &a, AB_OUTCOME_POLICY_REJECT, &cfg, NOW, &ops);
	assert_int_equal(ops.count, 0);
	ab_escalate(&s, &a, AB_OUTCOME_POLICY_REJECT, &cfg, NOW, &ops);
	assert_int_equal(ops.count, 0);
}

static void test_escalate_blocks_and_locks(void **state)
{
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_snapshot s;
	struct ab_ops ops;
	const struct ab_op *op;

	(void)state;
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_FAIL, cfg.ip_block_failures - 1);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_int_equal(ops.count, 0);

	set(&s, AB_SLOT_IP_FAIL, cfg.ip_block_failures);
	set(&s, AB_SLOT_IP_STRIKES, 2);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	op = find_op(&ops, AB_OP_SET, AB_SLOT_IP_BLOCK);
	assert_non_null(op);
	assert_int_equal(op->ttl_s, cfg.block_time_s * 4);
	assert_int_equal(op->value, (uint64_t)NOW + cfg.block_time_s * 4);
	assert_non_null(find_op(&ops, AB_OP_INCR, AB_SLOT_IP_STRIKES));

	/* distinct accounts alone block: a dictionary run over user names */
	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_IP_FAIL, 3);
	set(&s, AB_SLOT_IP_ACCTS, cfg.ip_max_accounts);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_non_null(find_op(&ops, AB_OP_SET, AB_SLOT_IP_BLOCK));

	/* already blocked: no second block, no extra strike */
	set(&s, AB_SLOT_IP_BLOCK, FUT(100));
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	assert_null(find_op(&ops, AB_OP_SET, AB_SLOT_IP_BLOCK));

	memset(&s, 0, sizeof(s));
	set(&s, AB_SLOT_ACCT_FAIL, cfg.account_lock_failures);
	ab_escalate(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
	op = find_op(&ops, AB_OP_SET, AB_SLOT_ACCT_LOCK);
	assert_non_null(op);
	assert_int_equal(op->value, (uint64_t)NOW + cfg.lock_time_s);
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

	ab_record(&s, &a, AB_OUTCOME_FAILURE, &cfg, NOW, &ops);
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
		cmocka_unit_test(test_repeated_wrong_password_not_counted),
		cmocka_unit_test(test_familiar_failures_have_own_allowance),
		cmocka_unit_test(test_success_clears_own_failures_not_lock),
		cmocka_unit_test(test_inflight_released_by_outcome),
		cmocka_unit_test(test_policy_reject_is_not_a_failure),
		cmocka_unit_test(test_escalate_blocks_and_locks),
		cmocka_unit_test(test_ipv6_slash64_is_one_origin),
		cmocka_unit_test(test_trusted_exempt_from_address_rules_not_lockout),
		cmocka_unit_test(test_restrict_networks),
		cmocka_unit_test(test_slots_apply),
	};
	return cmocka_run_group_tests_name("engine", tests, setup, teardown);
}
