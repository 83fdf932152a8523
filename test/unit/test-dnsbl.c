/* DNSBL queries and answers on the wire (ab-dnsbl.c): the names asked,
   the query's bytes, and what each kind of answer means. The lookups
   themselves are tested against a real DNS server (test_dnsbl.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ab-dnsbl.h"
#include "ab-identity.h"

static const char *query_name(const char *address, const char *zone)
{
	static char name[300];
	struct ab_addr addr;
	const char *error;

	assert_int_equal(ab_addr_parse(address, &addr, &error), 0);
	assert_int_equal(ab_dnsbl_query_name(zone, &addr, name, sizeof(name)), 0);
	return name;
}

static void test_query_names(void **state)
{
	(void)state;
	assert_string_equal(query_name("192.0.2.99", "zen.example.org"),
			    "99.2.0.192.zen.example.org");
	assert_string_equal(query_name("::ffff:10.1.2.3", "bl.test"),
			    "3.2.1.10.bl.test");
	/* RFC 5782 section 2.4: every nibble of the address, reversed */
	assert_string_equal(query_name("2001:db8:1:2:3:4:567:89ab", "bl.test"),
			    "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test");
}

static void test_query_bytes(void **state)
{
	static const uint8_t expect[] = {
		0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
		1, '2', 1, '0', 1, '0', 3, '1', '2', '7', 2, 'b', 'l',
		4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
	};
	uint8_t buf[300];
	char longname[300];

	(void)state;
	assert_int_equal(ab_dnsbl_query_build("2.0.0.127.bl.test", 0xabcd, buf,
					      sizeof(buf)), sizeof(expect));
	assert_memory_equal(buf, expect, sizeof(expect));
	/* too small a buffer, an empty label, a name over 253 */
	assert_int_equal(ab_dnsbl_query_build("2.0.0.127.bl.test", 1, buf, 20), -1);
	assert_int_equal(ab_dnsbl_query_build("a..test", 1, buf, sizeof(buf)), -1);
	memset(longname, 'a', 260);
	longname[260] = '\0';
	assert_int_equal(ab_dnsbl_query_build(longname, 1, buf, sizeof(buf)), -1);
}

/* --- answers, built record by record --- */

#define NAME "2.0.0.127.bl.test"

struct packet {
	uint8_t buf[600];
	size_t len;
};

static void put(struct packet *p, const void *data, size_t len)
{
	assert_true(p->len + len <= sizeof(p->buf));
	memcpy(p->buf + p->len, data, len);
	p->len += len;
}

static void put16(struct packet *p, unsigned int v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };

	put(p, b, 2);
}

static void put32(struct packet *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

/* header and our question (as the query has it, case aside) */
static void answer_begin(struct packet *p, uint16_t id, unsigned int flags,
			 unsigned int an, unsigned int ns, const char *qname)
{
	uint8_t query[300];
	int len = ab_dnsbl_query_build(qname, id, query, sizeof(query));

	assert_true(len > 0);
	p->len = 0;
	put(p, query, (size_t)len);
	p->buf[2] = (uint8_t)(flags >> 8);
	p->buf[3] = (uint8_t)flags;
	p->buf[6] = (uint8_t)(an >> 8);
	p->buf[7] = (uint8_t)an;
	p->buf[8] = (uint8_t)(ns >> 8);
	p->buf[9] = (uint8_t)ns;
}

/* an A record whose name points at the question's */
static void answer_a(struct packet *p, uint32_t ttl, uint8_t a, uint8_t b,
		     uint8_t c, uint8_t d)
{
	uint8_t rdata[4] = { a, b, c, d };

	put16(p, 0xc00c);
	put16(p, 1);
	put16(p, 1);
	put32(p, ttl);
	put16(p, 4);
	put(p, rdata, 4);
}

/* the zone's SOA in the authority section (RFC 2308) */
static void answer_soa(struct packet *p, uint32_t ttl, uint32_t minimum)
{
	static const uint8_t zone[] = { 2, 'b', 'l', 4, 't', 'e', 's', 't', 0 };
	static const uint8_t mname[] = { 2, 'n', 's', 0xc0, 0x0c + 10 };

	put(p, zone, sizeof(zone));
	put16(p, 6);
	put16(p, 1);
	put32(p, ttl);
	put16(p, sizeof(mname) + 2 + 20);
	put(p, mname, sizeof(mname));
	put16(p, 0xc000 | (0x0c + 10));	/* rname: the zone again */
	put32(p, 2026113001);		/* serial */
	put32(p, 3600);			/* refresh */
	put32(p, 600);			/* retry */
	put32(p, 86400);		/* expire */
	put32(p, minimum);
}

static struct ab_dnsbl_result parse_ok(const struct packet *p, uint16_t id)
{
	struct ab_dnsbl_result result;

	assert_true(ab_dnsbl_answer_parse(p->buf, p->len, id, NAME, &result));
	return result;
}

static void test_answer_listed(void **state)
{
	struct packet p;
	struct ab_dnsbl_result r;

	(void)state;
	answer_begin(&p, 7, 0x8180, 2, 0, NAME);
	answer_a(&p, 120, 127, 0, 0, 2);
	answer_a(&p, 60, 127, 0, 0, 4);
	r = parse_ok(&p, 7);
	assert_int_equal(r.status, AB_DNSBL_LISTED);
	assert_int_equal(r.ttl_s, 60);
	assert_int_equal(r.answer[3], 4);

	/* the question's name in another case is still ours (0x20 mixing) */
	answer_begin(&p, 7, 0x8180, 1, 0, "2.0.0.127.BL.Test");
	answer_a(&p, 0, 127, 0, 0, 10);
	r = parse_ok(&p, 7);
	assert_int_equal(r.status, AB_DNSBL_LISTED);
	/* a TTL of 0 is kept for a second: memcached keeps 0 for ever */
	assert_int_equal(r.ttl_s, 1);

	/* a day at most */
	answer_begin(&p, 7, 0x8180, 1, 0, NAME);
	answer_a(&p, 30 * 86400, 127, 0, 0, 2);
	assert_int_equal(parse_ok(&p, 7).ttl_s, AB_DNSBL_MAX_TTL);
}

static void test_answer_not_listed(void **state)
{
	struct packet p;
	struct ab_dnsbl_result r;

	(void)state;
	/* NXDOMAIN with the zone's SOA: the smaller of its TTL and MINIMUM */
	answer_begin(&p, 9, 0x8183, 0, 1, NAME);
	answer_soa(&p, 3600, 900);
	r = parse_ok(&p, 9);
	assert_int_equal(r.status, AB_DNSBL_NOT_LISTED);
	assert_int_equal(r.ttl_s, 900);
	answer_begin(&p, 9, 0x8183, 0, 1, NAME);
	answer_soa(&p, 120, 900);
	assert_int_equal(parse_ok(&p, 9).ttl_s, 120);
	/* without an SOA (dnsmasq's --local): the default */
	answer_begin(&p, 9, 0x8183, 0, 0, NAME);
	r = parse_ok(&p, 9);
	assert_int_equal(r.status, AB_DNSBL_NOT_LISTED);
	assert_int_equal(r.ttl_s, AB_DNSBL_DEFAULT_TTL);
	/* NOERROR without an address (NODATA) */
	answer_begin(&p, 9, 0x8180, 0, 1, NAME);
	answer_soa(&p, 600, 600);
	assert_int_equal(parse_ok(&p, 9).status, AB_DNSBL_NOT_LISTED);
	/* an address outside 127/8 is no listing (a resolver that answers
	   every name with an advert page) */
	answer_begin(&p, 9, 0x8180, 1, 0, NAME);
	answer_a(&p, 60, 192, 0, 2, 80);
	assert_int_equal(parse_ok(&p, 9).status, AB_DNSBL_NOT_LISTED);
}

static void test_answer_errors(void **state)
{
	struct packet p;
	struct ab_dnsbl_result r;

	(void)state;
	answer_begin(&p, 3, 0x8182, 0, 0, NAME);
	r = parse_ok(&p, 3);
	assert_int_equal(r.status, AB_DNSBL_ERROR);
	assert_string_equal(r.error, "SERVFAIL");
	assert_int_equal(r.ttl_s, AB_DNSBL_ERROR_TTL);
	answer_begin(&p, 3, 0x8185, 0, 0, NAME);
	assert_string_equal(parse_ok(&p, 3).error, "REFUSED");
	answer_begin(&p, 3, 0x818b, 0, 0, NAME);
	assert_string_equal(parse_ok(&p, 3).error, "rcode 11");
	/* truncated: the answer is incomplete */
	answer_begin(&p, 3, 0x8380, 0, 0, NAME);
	assert_string_equal(parse_ok(&p, 3).error, "truncated answer");
	/* Spamhaus's "query refused" codes are no listing */
	answer_begin(&p, 3, 0x8180, 1, 0, NAME);
	answer_a(&p, 60, 127, 255, 255, 254);
	r = parse_ok(&p, 3);
	assert_int_equal(r.status, AB_DNSBL_ERROR);
	assert_non_null(strstr(r.error, "127.255.255.254"));
	/* records cut short */
	answer_begin(&p, 3, 0x8180, 2, 0, NAME);
	answer_a(&p, 60, 127, 0, 0, 2);
	assert_string_equal(parse_ok(&p, 3).error, "malformed answer");
}

/* Datagrams that are not the answer to our query are not taken. */
static void test_answer_not_ours(void **state)
{
	struct packet p;
	struct ab_dnsbl_result r;

	(void)state;
	answer_begin(&p, 5, 0x8180, 1, 0, NAME);
	answer_a(&p, 60, 127, 0, 0, 2);
	assert_false(ab_dnsbl_answer_parse(p.buf, p.len, 6, NAME, &r));
	assert_false(ab_dnsbl_answer_parse(p.buf, p.len, 5, "3.0.0.127.bl.test", &r));
	assert_false(ab_dnsbl_answer_parse(p.buf, p.len, 5, "2.0.0.127.bl.tes", &r));
	assert_false(ab_dnsbl_answer_parse(p.buf, p.len, 5, "2.0.0.127.bl.test.x", &r));
	/* a query, not a response */
	p.buf[2] &= 0x7f;
	assert_false(ab_dnsbl_answer_parse(p.buf, p.len, 5, NAME, &r));
	/* another opcode */
	p.buf[2] = 0x80 | (4 << 3);
	assert_false(ab_dnsbl_answer_parse(p.buf, p.len, 5, NAME, &r));
	/* a question for another type */
	answer_begin(&p, 5, 0x8180, 0, 0, NAME);
	p.buf[p.len - 3] = 28;
	assert_false(ab_dnsbl_answer_parse(p.buf, p.len, 5, NAME, &r));
}

/* Every prefix of an answer, and every byte of it flipped, is parsed
   without reading past the datagram (ASan in check-sanitize says so) and
   is either refused or given a status. */
static void test_answer_cut_and_flipped(void **state)
{
	struct packet p, q;
	struct ab_dnsbl_result r;
	size_t len, i;
	unsigned int bit;

	(void)state;
	answer_begin(&p, 11, 0x8180, 2, 1, NAME);
	answer_a(&p, 120, 127, 0, 0, 2);
	answer_a(&p, 60, 127, 0, 0, 4);
	answer_soa(&p, 3600, 900);
	for (len = 0; len <= p.len; len++) {
		uint8_t copy[600];

		memcpy(copy, p.buf, len);
		if (ab_dnsbl_answer_parse(copy, len, 11, NAME, &r))
			assert_true(r.status <= AB_DNSBL_ERROR);
	}
	for (i = 0; i < p.len; i++) {
		for (bit = 0; bit < 8; bit++) {
			q = p;
			q.buf[i] ^= (uint8_t)(1U << bit);
			if (ab_dnsbl_answer_parse(q.buf, q.len, 11, NAME, &r))
				assert_true(r.status <= AB_DNSBL_ERROR);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query_names),
		cmocka_unit_test(test_query_bytes),
		cmocka_unit_test(test_answer_listed),
		cmocka_unit_test(test_answer_not_listed),
		cmocka_unit_test(test_answer_errors),
		cmocka_unit_test(test_answer_not_ours),
		cmocka_unit_test(test_answer_cut_and_flipped),
	};
	return cmocka_run_group_tests_name("dnsbl", tests, NULL, NULL);
}
