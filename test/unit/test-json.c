/* ab-json: the policy body's JSON, read strictly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ab-json.h"

struct seen {
	char text[1024];
};

static int collect(void *context, const char *key, enum ab_json_type type,
		   const char *value, const char **error_r)
{
	struct seen *s = context;
	size_t len = strlen(s->text);

	if (strcmp(key, "stop") == 0) {
		*error_r = "stopped";
		return -1;
	}
	snprintf(s->text + len, sizeof(s->text) - len, "%s%s=%d:%s",
		 len > 0 ? "|" : "", key, (int)type, value);
	return 0;
}

static int parse(const char *json, struct seen *s, const char **error_r)
{
	static char scratch[4096], error_buf[128];

	memset(s, 0, sizeof(*s));
	return ab_json_object((const unsigned char *)json, strlen(json), scratch,
			      strlen(json) + 2, collect, s, error_buf,
			      sizeof(error_buf), error_r);
}

static void test_members(void **state)
{
	struct seen s;
	const char *error = NULL;

	(void)state;
	assert_int_equal(parse("{}", &s, &error), 0);
	assert_string_equal(s.text, "");
	assert_int_equal(parse(" {\"login\":\"al\\\"ice\" ,\"success\": true,"
			       "\"n\":-1.5e3,\"x\":null,\"f\":false,"
			       "\"nest\":{\"a\":[1,{\"b\":\"c\"},[]]},\"last\":\"\"}\n",
			       &s, &error), 0);
	assert_string_equal(s.text, "login=0:al\"ice|success=2:|n=1:-1.5e3|x=4:|"
			    "f=3:|nest=5:|last=0:");
	/* escapes, UTF-8 and surrogate pairs */
	assert_int_equal(parse("{\"k\":\"\\u00e9\\n\\/\\ud83d\\ude00\xc3\xa9\"}",
			       &s, &error), 0);
	assert_string_equal(s.text, "k=0:\xc3\xa9\n/\xf0\x9f\x98\x80\xc3\xa9");
	/* bytes that are not UTF-8 are kept: the tracker judges them */
	assert_int_equal(parse("{\"login\":\"J\xf6rg\xc0\xaf\"}", &s, &error), 0);
	assert_string_equal(s.text, "login=0:J\xf6rg\xc0\xaf");
	/* the member function can stop it */
	assert_int_equal(parse("{\"a\":1,\"stop\":2,\"b\":3}", &s, &error), -1);
	assert_string_equal(error, "stopped");
	assert_string_equal(s.text, "a=1:1");
}

static void test_malformed(void **state)
{
	static const char *const bad[] = {
		"", " ", "[]", "\"x\"", "1", "{", "{\"a\"", "{\"a\":", "{\"a\":1",
		"{\"a\":1,}", "{,}", "{\"a\" 1}", "{a:1}", "{\"a\":1}x",
		"{\"a\":1}{}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}",
		"{\"a\":1e}", "{\"a\":+1}", "{\"a\":tru}", "{\"a\":nul}",
		"{\"a\":[1,]}", "{\"a\":[1 2]}", "{\"a\":{\"b\"}}",
		"{\"a\":\"\x01\"}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}",
		"{\"a\":\"\\u0000\"}", "{\"a\":\"\\ud800\"}", "{\"a\":\"\\udc00\"}",
		"{\"a\":\"\\ud800\\u0041\"}", "{\"a\":\"abc}", "{\"\xff\":1",
		"{\"a\":'x'}", "{\"a\":1,,\"b\":2}",
	};
	char deep[200];
	struct seen s;
	const char *error;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		error = NULL;
		if (parse(bad[i], &s, &error) == 0)
			fail_msg("taken: '%s'", bad[i]);
		assert_non_null(error);
		assert_non_null(strstr(error, "malformed JSON at byte "));
	}
	/* nesting has a bound; up to it, it is fine */
	memset(deep, 0, sizeof(deep));
	strcpy(deep, "{\"a\":");
	for (i = 0; i < AB_JSON_DEPTH_MAX - 1; i++)
		strcat(deep, "[");
	for (i = 0; i < AB_JSON_DEPTH_MAX - 1; i++)
		strcat(deep, "]");
	strcat(deep, "}");
	assert_int_equal(parse(deep, &s, &error), 0);
	memmove(deep + 6, deep + 5, strlen(deep + 5) + 1);
	deep[5] = '[';
	memmove(deep + strlen(deep), "", 1);
	deep[strlen(deep) - 1] = ']';
	strcat(deep, "}");
	assert_int_equal(parse(deep, &s, &error), -1);
	assert_non_null(strstr(error, "nested too deep"));
}

static void test_escape(void **state)
{
	char buf[64] = "";

	(void)state;
	assert_true(ab_json_escape(buf, sizeof(buf), "a\"b\\c\n\x01\x7f\xc3\xa9"));
	assert_string_equal(buf, "a\\\"b\\\\c\\u000a\\u0001\\u007f\xc3\xa9");
	buf[0] = '\0';
	assert_false(ab_json_escape(buf, 4, "abcd"));
	assert_string_equal(buf, "abc");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_members),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_escape),
	};

	return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
