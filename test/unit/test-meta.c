/* ab-meta.c alone: the requests as the bytes memcached reads, and the
   replies a server may send, every one either parsed, awaited or refused
   with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ab-meta.h"

/* ab_meta_put() into a buffer of AB_META_REQUEST_MAX, as a string */
static const char *put(enum ab_meta_cmd cmd, const char *key,
		       const void *bytes, size_t bytes_len, uint64_t number,
		       unsigned int ttl_s, uint32_t opaque, bool quiet)
{
	static unsigned char out[AB_META_REQUEST_MAX + 1];
	size_t len;

	memset(out, 0xa5, sizeof(out));
	len = ab_meta_put(out, cmd, key, bytes, bytes_len, number, ttl_s,
			  opaque, quiet);
	assert_true(len <= AB_META_REQUEST_MAX);
	if (len == 0)
		return NULL;
	out[len] = '\0';
	return (const char *)out;
}

static void test_requests(void **state)
{
	(void)state;
	assert_string_equal(put(AB_META_GET, "k", NULL, 0, 0, 0, 7, false),
			    "mg k v O7\r\n");
	assert_string_equal(put(AB_META_GET, "ab1:a:x", NULL, 0, 0, 0, 0, true),
			    "mg ab1:a:x v O0 q\r\n");
	assert_string_equal(put(AB_META_SET, "k", NULL, 0, 1234567890123ULL, 60, 7, false),
			    "ms k 13 T60 O7\r\n1234567890123\r\n");
	assert_string_equal(put(AB_META_SET, "k", "a b\r\n", 5, 99, 0, 7, true),
			    "ms k 5 T0 O7 q\r\na b\r\n\r\n");
	assert_string_equal(put(AB_META_SET, "k", "", 0, 99, 1, 2, false),
			    "ms k 0 T1 O2\r\n\r\n");
	assert_string_equal(put(AB_META_ADD, "k", NULL, 0, 0, 60, 7, false),
			    "ms k 1 T60 ME O7\r\n0\r\n");
	assert_string_equal(put(AB_META_ADD, "k", "xy", 2, 0, 60, 8, true),
			    "ms k 2 T60 ME O8 q\r\nxy\r\n");
	/* created with the delta: J is the initial value, D not added to it */
	assert_string_equal(put(AB_META_INCR, "k", NULL, 0, 3, 60, 7, false),
			    "ma k v N60 J3 D3 O7\r\n");
	assert_string_equal(put(AB_META_INCR, "k", NULL, 0, 1, 5, 9, true),
			    "ma k N5 J1 D1 O9 q\r\n");
	assert_string_equal(put(AB_META_DECR, "k", NULL, 0, 3, 60, 7, false),
			    "ma k v MD D3 O7\r\n");
	assert_string_equal(put(AB_META_DECR, "k", NULL, 0, 2, 0, 7, true),
			    "ma k MD D2 O7 q\r\n");
	assert_string_equal(put(AB_META_DELETE, "k", NULL, 0, 0, 0, 7, false),
			    "md k O7\r\n");
	assert_string_equal(put(AB_META_DELETE, "k", NULL, 0, 0, 0, 7, true),
			    "md k O7 q\r\n");
	assert_string_equal(put(AB_META_NOOP, NULL, NULL, 0, 0, 0, 7, false),
			    "mn\r\n");
	/* the largest numbers */
	assert_string_equal(put(AB_META_INCR, "k", NULL, 0, UINT64_MAX,
				UINT32_MAX, UINT32_MAX, true),
			    "ma k N4294967295 J18446744073709551615 "
			    "D18446744073709551615 O4294967295 q\r\n");
	assert_string_equal(put(AB_META_SET, "k", NULL, 0, UINT64_MAX, 0, 1, false),
			    "ms k 20 T0 O1\r\n18446744073709551615\r\n");
}

static void test_keys_refused(void **state)
{
	static const char *const bad[] = {
		"", "a b", " a", "a ", "a\tb", "a\r\nb", "a\x01", "\x7f",
		"caf\xc3\xa9",
	};
	char key[AB_META_KEY_MAX + 2];
	const char *req;
	size_t i;
	int cmd;

	(void)state;
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';		/* 251 bytes */
	for (cmd = AB_META_GET; cmd <= AB_META_DELETE; cmd++) {
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			assert_null(put(cmd, bad[i], NULL, 0, 1, 60, 1, false));
		assert_null(put(cmd, NULL, NULL, 0, 1, 60, 1, false));
		assert_null(put(cmd, key, NULL, 0, 1, 60, 1, false));
	}
	/* 250 bytes and every printable byte but the space are a key */
	key[AB_META_KEY_MAX] = '\0';
	for (cmd = AB_META_GET; cmd <= AB_META_DELETE; cmd++) {
		req = put(cmd, key, NULL, 0, 1, UINT32_MAX, UINT32_MAX, true);
		assert_non_null(req);
		assert_memory_equal(req + 3, key, AB_META_KEY_MAX);
		assert_int_equal(req[3 + AB_META_KEY_MAX], ' ');
	}
	assert_string_equal(put(AB_META_GET, "!~:/@{}", NULL, 0, 0, 0, 1, false),
			    "mg !~:/@{} v O1\r\n");
}


static void test_values_refused(void **state)
{
	static const char tail[] = " 2048 T4294967295 ME O4294967295 q\r\n";
	char key[AB_META_KEY_MAX + 1];
	unsigned char value[AB_META_VALUE_MAX + 1];
	const char *req;
	size_t head;

	(void)state;
	memset(value, 'v', sizeof(value));
	assert_null(put(AB_META_SET, "k", value, AB_META_VALUE_MAX + 1, 0, 60, 1, false));
	assert_null(put(AB_META_ADD, "k", value, AB_META_VALUE_MAX + 1, 0, 60, 1, false));
	assert_null(put(AB_META_SET, "k", value, SIZE_MAX, 0, 60, 1, false));

	/* the longest request there is fits in AB_META_REQUEST_MAX */
	memset(key, 'k', AB_META_KEY_MAX);
	key[AB_META_KEY_MAX] = '\0';
	req = put(AB_META_ADD, key, value, AB_META_VALUE_MAX, 0, UINT32_MAX,
		  UINT32_MAX, true);
	assert_non_null(req);
	assert_memory_equal(req, "ms kkk", 6);
	head = 3 + AB_META_KEY_MAX;
	assert_memory_equal(req + head, tail, strlen(tail));
	head += strlen(tail);
	assert_memory_equal(req + head, value, AB_META_VALUE_MAX);
	assert_string_equal(req + head + AB_META_VALUE_MAX, "\r\n");
}

/* ab_meta_parse() on exactly these bytes (a copy of just that size) */
static long parse(const char *bytes, size_t len, struct ab_meta_reply *reply_r,
		  const char **error_r)
{
	unsigned char *copy = malloc(len > 0 ? len : 1);
	long r;

	assert_non_null(copy);
	memcpy(copy, bytes, len);
	*error_r = NULL;
	r = ab_meta_parse(copy, len, reply_r, error_r);
	if (r == -1)
		assert_non_null(*error_r);
	if (r > 0 && reply_r->value != NULL) {
		/* point into the caller's bytes, not the copy */
		reply_r->value = (const unsigned char *)bytes +
			(reply_r->value - copy);
	}
	free(copy);
	return r;
}

static long parse_str(const char *s, struct ab_meta_reply *reply_r,
		      const char **error_r)
{
	return parse(s, strlen(s), reply_r, error_r);
}

/* Every byte count short of a whole reply is one to wait on. */
static void assert_awaited_until_whole(const char *s, size_t whole)
{
	struct ab_meta_reply reply;
	const char *error;
	size_t k;

	for (k = 0; k < whole; k++) {
		if (parse(s, k, &reply, &error) != 0)
			fail_msg("'%s': %zu of %zu bytes do not wait for more", s, k, whole);
	}
	assert_int_equal(parse(s, whole, &reply, &error), (long)whole);
}

static void test_replies(void **state)
{
	static const struct {
		const char *reply;
		enum ab_meta_status status;
		bool has_opaque;
		uint32_t opaque;
	} cases[] = {
		{ "HD O1\r\n", AB_META_HD, true, 1 },
		{ "HD\r\n", AB_META_HD, false, 0 },
		{ "EN O2\r\n", AB_META_EN, true, 2 },
		{ "EN\r\n", AB_META_EN, false, 0 },
		{ "NF O3\r\n", AB_META_NF, true, 3 },
		{ "NS O4\r\n", AB_META_NS, true, 4 },
		{ "EX O5\r\n", AB_META_EX, true, 5 },
		{ "MN\r\n", AB_META_MN, false, 0 },
		{ "HD O0\r\n", AB_META_HD, true, 0 },
		{ "HD O4294967295\r\n", AB_META_HD, true, UINT32_MAX },
		/* flags of memcached's own, before or after ours */
		{ "HD t60 O9 k\r\n", AB_META_HD, true, 9 },
		{ "NF O10 b c99\r\n", AB_META_NF, true, 10 },
		{ "ERROR\r\n", AB_META_ERROR, false, 0 },
		{ "CLIENT_ERROR bad command line format\r\n", AB_META_ERROR, false, 0 },
		{ "SERVER_ERROR out of memory storing object\r\n", AB_META_ERROR, false, 0 },
		{ "SERVER_ERROR O5\r\n", AB_META_ERROR, false, 0 },
	};
	struct ab_meta_reply reply;
	const char *error;
	size_t i, len;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		len = strlen(cases[i].reply);
		if (parse_str(cases[i].reply, &reply, &error) != (long)len)
			fail_msg("'%s': %s", cases[i].reply, error);
		assert_int_equal(reply.status, cases[i].status);
		assert_int_equal(reply.has_opaque, cases[i].has_opaque);
		assert_int_equal(reply.opaque, cases[i].opaque);
		assert_null(reply.value);
		assert_int_equal(reply.value_len, 0);
		assert_awaited_until_whole(cases[i].reply, len);
	}
}

static void test_value_replies(void **state)
{
	static const char batch[] =
		"VA 2 O1\r\n42\r\nEN O2\r\nHD O3\r\nNS O4\r\nNF O5\r\nMN\r\n";
	static const enum ab_meta_status statuses[] = {
		AB_META_VA, AB_META_EN, AB_META_HD, AB_META_NS, AB_META_NF,
		AB_META_MN,
	};
	char big[64 + AB_META_VALUE_MAX];
	struct ab_meta_reply reply;
	const char *error;
	size_t pos = 0, i, len;
	long r;

	(void)state;
	/* a batch's replies, one after another */
	for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		r = parse(batch + pos, sizeof(batch) - 1 - pos, &reply, &error);
		assert_true(r > 0);
		assert_int_equal(reply.status, statuses[i]);
		assert_int_equal(reply.has_opaque, i < 5);
		if (i < 5)
			assert_int_equal(reply.opaque, i + 1);
		if (i == 0) {
			assert_int_equal(r, 13);
			assert_ptr_equal(reply.value, batch + 9);
			assert_int_equal(reply.value_len, 2);
		}
		pos += (size_t)r;
	}
	assert_int_equal(pos, sizeof(batch) - 1);
	assert_int_equal(parse(batch + pos, 0, &reply, &error), 0);
	assert_awaited_until_whole(batch, 13);

	/* an empty value; a value that holds CRLF; the largest value */
	assert_int_equal(parse_str("VA 0 O1\r\n\r\n", &reply, &error), 11);
	assert_int_equal(reply.value_len, 0);
	assert_non_null(reply.value);
	assert_awaited_until_whole("VA 0 O1\r\n\r\n", 11);
	assert_int_equal(parse_str("VA 4 O1\r\n\r\n\r\n\r\n", &reply, &error), 15);
	assert_memory_equal(reply.value, "\r\n\r\n", 4);
	len = (size_t)snprintf(big, sizeof(big), "VA %d t-1 O77\r\n", AB_META_VALUE_MAX);
	memset(big + len, '7', AB_META_VALUE_MAX);
	memcpy(big + len + AB_META_VALUE_MAX, "\r\n", 2);
	assert_int_equal(parse(big, len + AB_META_VALUE_MAX + 2, &reply, &error),
			 (long)(len + AB_META_VALUE_MAX + 2));
	assert_int_equal(reply.value_len, AB_META_VALUE_MAX);
	assert_int_equal(reply.opaque, 77);
	assert_awaited_until_whole(big, len + AB_META_VALUE_MAX + 2);
}

/* A record's read and its compare-and-swap: the token asked for, sent
   back, and read from the answer. */
static void test_cas(void **state)
{
	struct ab_meta_reply reply;
	const char *error;

	(void)state;
	assert_string_equal(put(AB_META_GETS, "k", NULL, 0, 0, 0, 7, false),
			    "mg k v c O7\r\n");
	assert_string_equal(put(AB_META_CAS, "k", "ab", 2, 1234, 60, 7, false),
			    "ms k 2 T60 C1234 c O7\r\nab\r\n");
	/* token 0: the record was missing, so only when it still is */
	assert_string_equal(put(AB_META_CAS, "k", "ab", 2, 0, 60, 8, false),
			    "ms k 2 T60 ME c O8\r\nab\r\n");
	/* a CAS writes bytes, never a number */
	assert_null(put(AB_META_CAS, "k", NULL, 0, 1234, 60, 7, false));
	assert_int_equal(parse_str("VA 2 c99 O7\r\nab\r\n", &reply, &error), 17);
	assert_true(reply.has_cas);
	assert_int_equal(reply.cas, 99);
	assert_int_equal(reply.opaque, 7);
	assert_int_equal(parse_str("HD O7 c18446744073709551615\r\n", &reply, &error), 29);
	assert_true(reply.cas == UINT64_MAX);
	assert_int_equal(parse_str("EX O7\r\n", &reply, &error), 7);
	assert_false(reply.has_cas);
}

/* Replies no server of ours sends: refused, with a reason. */
static void test_replies_refused(void **state)
{
	static const char *const bad[] = {
		/* the size lies: more than we ever store */
		"VA 2049 O1\r\n",
		"VA 99999999999999999999999 O1\r\n",
		/* the value not followed by CRLF where its size says */
		"VA 2 O1\r\n4242\r\n",
		"VA 4 O1\r\n42\r\nMN\r\n",
		"VA 1 O1\r\n42\r\n",
		/* no size, or not one */
		"VA\r\n", "VA O1\r\n", "VA -1 O1\r\n", "VA 2x O1\r\n", "VA  2 O1\r\n",
		"VA 2\n42\r\n",
		/* codes */
		"XX O1\r\n", "hd O1\r\n", "H\r\n", "\r\n", "HDO1\r\n", "VA2\r\n",
		"ERRORS\r\n", "OK\r\n", "END\r\n", "STORED\r\n",
		/* lines */
		"HD O1\n", "HD O1\r\r\n", "\n",
		/* flags */
		"HD  O1\r\n", "HD O1 \r\n", "HD \r\n", "HD O1\tO2\r\n",
		"HD O1 k\x01\r\n", "HD O1 \x80\r\n", "HD O1 k\x7f\r\n",
		/* the opaque */
		"HD O1 O2\r\n", "HD O1 O1\r\n", "HD O\r\n", "HD Oabc\r\n",
		"HD O-1\r\n", "HD O1x\r\n", "HD O4294967296\r\n",
		"HD O99999999999999999999\r\n",
		/* the CAS token */
		"HD c O1\r\n", "HD cx O1\r\n", "HD c1 c2 O1\r\n",
		"HD c18446744073709551616 O1\r\n", "HD c-1 O1\r\n",
	};
	char line[AB_META_LINE_MAX + 8];
	struct ab_meta_reply reply;
	const char *error;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse_str(bad[i], &reply, &error) != -1)
			fail_msg("'%s' is not refused", bad[i]);
		assert_true(error[0] != '\0');
	}
	/* a size we would take, still coming: awaited, not refused */
	assert_int_equal(parse_str("VA 2048 O1\r\n42\r\n", &reply, &error), 0);
	assert_int_equal(parse_str("VA 4 O1\r\n42\r\n", &reply, &error), 0);

	/* a line that never ends: awaited up to AB_META_LINE_MAX */
	memset(line, 'x', sizeof(line));
	memcpy(line, "HD O1 ", 6);
	assert_int_equal(parse(line, AB_META_LINE_MAX - 1, &reply, &error), 0);
	assert_int_equal(parse(line, AB_META_LINE_MAX, &reply, &error), -1);
	assert_int_equal(parse(line, sizeof(line), &reply, &error), -1);
	/* the longest line taken: AB_META_LINE_MAX with its CRLF */
	memcpy(line + AB_META_LINE_MAX - 2, "\r\n", 2);
	assert_int_equal(parse(line, AB_META_LINE_MAX, &reply, &error),
			 AB_META_LINE_MAX);
	assert_int_equal(reply.opaque, 1);
	memcpy(line + AB_META_LINE_MAX - 1, "\r\n", 2);
	assert_int_equal(parse(line, AB_META_LINE_MAX + 1, &reply, &error), -1);
}

static void test_fits(void **state)
{
	/* rows: commands; columns: HD VA EN NF NS EX MN ERROR */
	static const bool fits[][8] = {
		[AB_META_GET] =    { 0, 1, 1, 0, 0, 0, 0, 0 },
		[AB_META_SET] =    { 1, 0, 0, 0, 0, 0, 0, 0 },
		[AB_META_ADD] =    { 1, 0, 0, 0, 1, 0, 0, 0 },
		[AB_META_INCR] =   { 1, 1, 0, 0, 1, 0, 0, 0 },
		[AB_META_DECR] =   { 1, 1, 0, 1, 0, 0, 0, 0 },
		[AB_META_DELETE] = { 1, 0, 0, 1, 0, 0, 0, 0 },
		[AB_META_NOOP] =   { 0, 0, 0, 0, 0, 0, 1, 0 },
		[AB_META_GETS] =   { 0, 1, 1, 0, 0, 0, 0, 0 },
		[AB_META_CAS] =    { 1, 0, 0, 1, 1, 1, 0, 0 },
	};
	int cmd, status;

	(void)state;
	for (cmd = AB_META_GET; cmd <= AB_META_CAS; cmd++) {
		for (status = AB_META_HD; status <= AB_META_ERROR; status++) {
			if (ab_meta_fits(cmd, status) != fits[cmd][status])
				fail_msg("command %d, status %d: fits says %d",
					 cmd, status, !fits[cmd][status]);
		}
	}
}

static void test_number(void **state)
{
	static const char *const bad[] = {
		"", "18446744073709551616", "99999999999999999999",
		"000000000000000000001", "-1", "+1", " 1", "1a", "0x10",
		"\r\n", " ", "  ", "1 2", "1 a",
	};
	uint64_t n;
	size_t i;

	(void)state;
	n = 99;
	assert_true(ab_meta_number((const unsigned char *)"0", 1, &n));
	assert_int_equal(n, 0);
	assert_true(ab_meta_number((const unsigned char *)"18446744073709551615", 20, &n));
	assert_true(n == UINT64_MAX);
	assert_true(ab_meta_number((const unsigned char *)"18446744073709551614", 20, &n));
	assert_true(n == UINT64_MAX - 1);
	assert_true(ab_meta_number((const unsigned char *)"00000000000000000042", 20, &n));
	assert_int_equal(n, 42);
	/* memcached pads a counter a decrement shortened: 10 - 1 is "9 ",
	   100 - 91 is "9  " */
	assert_true(ab_meta_number((const unsigned char *)"9 ", 2, &n));
	assert_int_equal(n, 9);
	assert_true(ab_meta_number((const unsigned char *)"9  ", 3, &n));
	assert_int_equal(n, 9);
	/* the length given, not the NUL */
	assert_true(ab_meta_number((const unsigned char *)"123\r\n", 3, &n));
	assert_int_equal(n, 123);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = 99;
		if (ab_meta_number((const unsigned char *)bad[i], strlen(bad[i]), &n))
			fail_msg("'%s' is taken as a number", bad[i]);
		assert_int_equal(n, 99);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_requests),
		cmocka_unit_test(test_cas),
		cmocka_unit_test(test_keys_refused),
		cmocka_unit_test(test_values_refused),
		cmocka_unit_test(test_replies),
		cmocka_unit_test(test_value_replies),
		cmocka_unit_test(test_replies_refused),
		cmocka_unit_test(test_fits),
		cmocka_unit_test(test_number),
	};

	return cmocka_run_group_tests_name("meta", tests, NULL, NULL);
}
