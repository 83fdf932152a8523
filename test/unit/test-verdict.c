/* The short memory of refusals (ab-verdict.c): what it remembers, for
   whom, for how long; no memcached. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ab-verdict.h"

#define NOW ((time_t)1800000000)

static struct ab_attempt attempt(const char *account, const char *addr)
{
	struct ab_attempt a;

	memset(&a, 0, sizeof(a));
	strcpy(a.account, account);
	strcpy(a.protocol, "imap");
	assert_int_equal(ab_addr_parse(addr, &a.addr, NULL), 0);
	a.has_addr = true;
	return a;
}

static struct ab_decision refusal(enum ab_refused refused, unsigned int retry_after)
{
	struct ab_decision d;

	memset(&d, 0, sizeof(d));
	d.verdict = AB_REJECT;
	d.refused = refused;
	d.reason = "test refusal";
	d.retry_after_s = retry_after;
	return d;
}

static void test_address_refusal_remembered_for_its_address(void **state)
{
	struct ab_verdicts *v;
	struct ab_attempt a = attempt("alice", "192.0.2.1");
	struct ab_attempt other = attempt("bob", "192.0.2.2");
	struct ab_decision d = refusal(AB_REFUSED_ADDRESS, 600), got;

	(void)state;
	assert_int_equal(ab_verdicts_init(2, &v), 0);
	assert_false(ab_verdicts_find(v, &a, false, NOW, &got));
	ab_verdicts_remember(v, &a, &d, NOW);
	/* any account from the address, its retry_after counted down */
	a = attempt("carol", "192.0.2.1");
	assert_true(ab_verdicts_find(v, &a, false, NOW + 1, &got));
	assert_int_equal(got.verdict, AB_REJECT);
	assert_int_equal(got.retry_after_s, 599);
	assert_string_equal(got.reason, "test refusal");
	/* not another address of the subnet; not where it is trusted */
	assert_false(ab_verdicts_find(v, &other, false, NOW + 1, &got));
	assert_false(ab_verdicts_find(v, &a, true, NOW + 1, &got));
	/* forgotten after verdict_cache */
	assert_false(ab_verdicts_find(v, &a, false, NOW + 2, &got));
	ab_verdicts_deinit(&v);
	assert_null(v);
}

static void test_subnet_and_account_refusals(void **state)
{
	struct ab_verdicts *v;
	struct ab_attempt a = attempt("alice", "198.51.100.7");
	struct ab_decision net = refusal(AB_REFUSED_SUBNET, 600);
	struct ab_decision lock = refusal(AB_REFUSED_ACCOUNT, 600), got;

	(void)state;
	assert_int_equal(ab_verdicts_init(5, &v), 0);
	ab_verdicts_remember(v, &a, &net, NOW);
	a = attempt("bob", "198.51.100.200");
	assert_true(ab_verdicts_find(v, &a, false, NOW, &got));
	a = attempt("bob", "198.51.101.200");
	assert_false(ab_verdicts_find(v, &a, false, NOW, &got));

	/* a lock refuses the account from that subnet only (home is not
	   refused by a lock), even where address rules do not apply */
	a = attempt("dave", "203.0.113.5");
	ab_verdicts_remember(v, &a, &lock, NOW);
	a = attempt("dave", "203.0.113.99");
	assert_true(ab_verdicts_find(v, &a, true, NOW, &got));
	a = attempt("dave", "192.0.2.5");
	assert_false(ab_verdicts_find(v, &a, false, NOW, &got));
	a = attempt("erin", "203.0.113.5");
	assert_false(ab_verdicts_find(v, &a, false, NOW, &got));
	ab_verdicts_deinit(&v);
}

static void test_what_is_never_remembered(void **state)
{
	struct ab_verdicts *v, *off;
	struct ab_attempt a = attempt("alice", "192.0.2.1");
	struct ab_decision d = refusal(AB_REFUSED_ADDRESS, 1), got;
	struct ab_decision failed = refusal(AB_REFUSED_ADDRESS, 600);
	struct ab_decision other = refusal(AB_REFUSED_NOTHING, 600);
	struct ab_decision tarpit = refusal(AB_REFUSED_ADDRESS, 600);

	(void)state;
	assert_int_equal(ab_verdicts_init(10, &v), 0);
	/* never past the refusal's own end */
	ab_verdicts_remember(v, &a, &d, NOW);
	assert_true(ab_verdicts_find(v, &a, false, NOW, &got));
	assert_false(ab_verdicts_find(v, &a, false, NOW + 1, &got));
	/* nor a fail_mode decision, a refusal of nothing remembered, a tarpit */
	a = attempt("alice", "192.0.2.50");
	failed.store_failed = true;
	ab_verdicts_remember(v, &a, &failed, NOW);
	ab_verdicts_remember(v, &a, &other, NOW);
	tarpit.verdict = AB_TARPIT;
	ab_verdicts_remember(v, &a, &tarpit, NOW);
	assert_false(ab_verdicts_find(v, &a, false, NOW, &got));
	/* verdict_cache = 0 remembers nothing */
	assert_int_equal(ab_verdicts_init(0, &off), 0);
	ab_verdicts_remember(off, &a, &tarpit, NOW);
	tarpit.verdict = AB_REJECT;
	ab_verdicts_remember(off, &a, &tarpit, NOW);
	assert_false(ab_verdicts_find(off, &a, false, NOW, &got));
	ab_verdicts_deinit(&off);
	ab_verdicts_deinit(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_address_refusal_remembered_for_its_address),
		cmocka_unit_test(test_subnet_and_account_refusals),
		cmocka_unit_test(test_what_is_never_remembered),
	};

	return cmocka_run_group_tests_name("verdict", tests, NULL, NULL);
}
