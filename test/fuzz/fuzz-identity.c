/* Feeds one string (a newline splits a CIDR list from an address) to ab-identity.c's parsers; what parses must print and parse back the same. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ab-identity.h"
#include "fuzz-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* Well-formed UTF-8 by the table of the Unicode standard (3.9, table
   3-7), written apart from ab-identity.c's decoder to check it. */
static bool utf8_well_formed(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		unsigned char lo = 0x80, hi = 0xbf;
		size_t n, k;

		if (c <= 0x7f) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1;
		else if (c == 0xe0) {
			n = 2; lo = 0xa0;
		} else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
			n = 2;
		else if (c == 0xed) {
			n = 2; hi = 0x9f;
		} else if (c == 0xf0) {
			n = 3; lo = 0x90;
		} else if (c >= 0xf1 && c <= 0xf3)
			n = 3;
		else if (c == 0xf4) {
			n = 3; hi = 0x8f;
		} else
			return false;
		if (i + n >= len)
			return false;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return false;
		for (k = 2; k <= n; k++) {
			if (s[i + k] < 0x80 || s[i + k] > 0xbf)
				return false;
		}
		i += n + 1;
	}
	return true;
}

/* What ab_account_normalize() must accept, in the order it checks. */
static bool account_acceptable(const char *login)
{
	size_t start = 0, end = strlen(login), i;

	while (start < end && (login[start] == ' ' || login[start] == '\t'))
		start++;
	while (end > start && (login[end - 1] == ' ' || login[end - 1] == '\t'))
		end--;
	if (start == end || end - start >= AB_ACCOUNT_MAX)
		return false;
	for (i = start; i < end; i++) {
		if ((unsigned char)login[i] < 0x20 || login[i] == 0x7f)
			return false;
	}
	return utf8_well_formed((const unsigned char *)login + start,
			       end - start);
}

static void check_account(const char *s)
{
	char buf[AB_ACCOUNT_MAX], again[AB_ACCOUNT_MAX];
	const char *error;

	if ((ab_account_normalize(s, NULL, buf, &error) == 0) !=
	    account_acceptable(s)) {
		fprintf(stderr, "ab_account_normalize and the reference "
			"disagree (reference says %s)\n",
			account_acceptable(s) ? "acceptable" : "not acceptable");
		abort();
	}

	if (ab_account_normalize(s, NULL, buf, &error) == 0) {
		/* normalising is idempotent */
		CHECK(ab_account_normalize(buf, NULL, again, &error) == 0);
		CHECK(strcmp(buf, again) == 0);
	}
	if (ab_account_normalize(s, "example.org", buf, &error) == 0) {
		CHECK(strchr(buf, '@') != NULL);
		CHECK(ab_account_normalize(buf, "example.org", again,
					   &error) == 0);
		CHECK(strcmp(buf, again) == 0);
	}
}

/* net/prefix printed and parsed back as a CIDR is net/prefix */
static void check_cidr_round_trip(const struct ab_addr *net,
				  unsigned int prefix)
{
	char buf[AB_ADDR_STRLEN];
	struct ab_cidr back;
	struct ab_cidr_list one;
	const char *error;

	ab_addr_str(net, prefix, buf);
	if (ab_cidr_parse(buf, &back, &error) != 0) {
		fprintf(stderr, "'%s' does not parse back: %s\n", buf, error);
		abort();
	}
	CHECK(back.prefix == prefix);
	CHECK(ab_addr_equal(&back.net, net));
	/* a network contains its own (masked) address */
	one.items = &back;
	one.count = 1;
	CHECK(ab_cidr_list_match(&one, net));
}

static void check_addr(const char *s)
{
	char buf[AB_ADDR_STRLEN];
	struct ab_addr addr, back, masked;
	const char *error;
	unsigned int full;

	if (ab_addr_parse(s, &addr, &error) != 0)
		return;
	CHECK(addr.family == AF_INET || addr.family == AF_INET6);
	full = (unsigned int)ab_addr_len(&addr) * 8;
	ab_addr_str(&addr, full, buf);
	if (ab_addr_parse(buf, &back, &error) != 0) {
		fprintf(stderr, "'%s' does not parse back: %s\n", buf, error);
		abort();
	}
	CHECK(ab_addr_equal(&addr, &back));
	CHECK(memcmp(addr.bytes, back.bytes, sizeof(addr.bytes)) == 0);
	check_cidr_round_trip(&addr, full);

	ab_addr_origin(&addr, &masked);
	check_cidr_round_trip(&masked, ab_addr_origin_prefix(&addr));
	ab_addr_subnet(&addr, &masked);
	check_cidr_round_trip(&masked, ab_addr_subnet_prefix(&addr));
}

static void check_cidr(const char *s)
{
	struct ab_cidr cidr;
	const char *error;

	if (ab_cidr_parse(s, &cidr, &error) != 0)
		return;
	CHECK(cidr.prefix <= ab_addr_len(&cidr.net) * 8);
	check_cidr_round_trip(&cidr.net, cidr.prefix);
}

static void check_list(const char *list_str, const char *addr_str)
{
	struct ab_cidr_list list = { NULL, 0 };
	struct ab_addr addr;
	const char *error;
	size_t i;
	bool any = false;

	if (ab_cidr_list_parse(list_str, &list, &error) != 0) {
		CHECK(list.items == NULL && list.count == 0);
		return;
	}
	for (i = 0; i < list.count; i++) {
		check_cidr_round_trip(&list.items[i].net, list.items[i].prefix);
		CHECK(ab_cidr_list_match(&list, &list.items[i].net));
	}
	if (addr_str != NULL && ab_addr_parse(addr_str, &addr, &error) == 0) {
		/* the list matches when one of its networks does */
		for (i = 0; i < list.count && !any; i++) {
			struct ab_cidr_list one = { &list.items[i], 1 };
			any = ab_cidr_list_match(&one, &addr);
		}
		CHECK(ab_cidr_list_match(&list, &addr) == any);
	}
	ab_cidr_list_free(&list);
	CHECK(list.items == NULL && list.count == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), *nl;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	check_account(s);
	check_addr(s);
	check_cidr(s);
	nl = strchr(s, '\n');
	if (nl != NULL) {
		*nl = '\0';
		check_list(s, nl + 1);
		check_addr(nl + 1);
	} else {
		check_list(s, NULL);
	}
	free(s);
	return 0;
}
