/* The key=value log lines: a login must not be able to forge a field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ab-log.h"
#include "ab-tracker.h"

static void test_quote(void **state)
{
	char buf[AB_LOG_QUOTED_MAX(16)], small[8];

	(void)state;
	assert_string_equal(ab_log_quote("alice", buf, sizeof(buf)), "\"alice\"");
	assert_string_equal(ab_log_quote("", buf, sizeof(buf)), "\"\"");
	assert_string_equal(ab_log_quote("x\" a=1", buf, sizeof(buf)),
			    "\"x\\\" a=1\"");
	assert_string_equal(ab_log_quote("a\\\"", buf, sizeof(buf)),
			    "\"a\\\\\\\"\"");
	/* cut short, still closed, never half an escape */
	assert_string_equal(ab_log_quote("abcdefgh", small, sizeof(small)),
			    "\"abcde\"");
	assert_string_equal(ab_log_quote("abcd\"", small, sizeof(small)),
			    "\"abcd\"");
	assert_string_equal(ab_log_quote("\"\"\"", small, sizeof(small)),
			    "\"\\\"\\\"\"");
}

static void test_decision_line_quotes_the_login(void **state)
{
	struct ab_attempt attempt;
	struct ab_decision decision;
	const char *error;
	char line[1024];

	(void)state;
	memset(&attempt, 0, sizeof(attempt));
	memset(&decision, 0, sizeof(decision));
	assert_int_equal(ab_account_normalize("x\" address=192.0.2.1 blocked", NULL,
					      attempt.account, &error), 0);
	assert_int_equal(ab_addr_parse("203.0.113.5", &attempt.addr, &error), 0);
	attempt.has_addr = true;
	strcpy(attempt.protocol, "imap");
	decision.verdict = AB_REJECT;
	decision.reason = "address blocked";
	assert_string_equal(ab_decision_log_line(&attempt, &decision, line,
						 sizeof(line)),
			    "account=\"x\\\" address=192.0.2.1 blocked\" "
			    "address=203.0.113.5 protocol=imap decision=reject "
			    "reason=\"address blocked\"");

	attempt.account[0] = '\0';
	attempt.has_addr = false;
	decision.verdict = AB_TARPIT;
	decision.delay_s = 4;
	decision.reason = "address failures over ip_free_failures";
	assert_string_equal(ab_decision_log_line(&attempt, &decision, line,
						 sizeof(line)),
			    "account=\"-\" address=- protocol=imap decision=tarpit "
			    "delay=4s reason=\"address failures over ip_free_failures\"");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote),
		cmocka_unit_test(test_decision_line_quotes_the_login),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
