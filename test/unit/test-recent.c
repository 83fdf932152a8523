/* Sealing and opening the entries of the recent-blocks ring
   (tracker/ab-recent.c): what goes in comes out, and anything changed,
   torn or sealed under another key is refused. No memcached needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include <sodium.h>

#include "ab-recent.h"

static void make_key(uint8_t key[AB_RECENT_KEY_LEN], uint8_t fill)
{
	struct ab_secret secret;

	memset(secret.key, fill, sizeof(secret.key));
	ab_recent_derive_key(&secret, key);
}

static void address_entry(struct ab_recent_entry *e)
{
	const char *error;

	memset(e, 0, sizeof(*e));
	e->kind = AB_RECENT_ADDRESS;
	assert_int_equal(ab_cidr_parse("203.0.113.9", &e->net, &error), 0);
	e->set_at = 1796000000;
	e->duration_s = 900;
	e->failures = 8;
	e->accounts = 3;
}

static void account_entry(struct ab_recent_entry *e, size_t len)
{
	memset(e, 0, sizeof(*e));
	e->kind = AB_RECENT_ACCOUNT;
	memset(e->account, 'a', len);
	memcpy(e->account, "alice", len < 5 ? len : 5);
	e->set_at = 1796000001;
	e->duration_s = 3600;
	e->failures = 10;
}

static void assert_same(const struct ab_recent_entry *a,
			const struct ab_recent_entry *b)
{
	assert_int_equal(a->kind, b->kind);
	assert_int_equal(a->admin, b->admin);
	assert_int_equal(a->set_at, b->set_at);
	assert_int_equal(a->duration_s, b->duration_s);
	assert_int_equal(a->failures, b->failures);
	assert_int_equal(a->accounts, b->accounts);
	if (a->kind == AB_RECENT_ACCOUNT) {
		assert_string_equal(a->account, b->account);
	} else {
		assert_int_equal(a->net.net.family, b->net.net.family);
		assert_int_equal(a->net.prefix, b->net.prefix);
		assert_memory_equal(a->net.net.bytes, b->net.net.bytes, 16);
	}
}

static void test_round_trip(void **state)
{
	uint8_t key[AB_RECENT_KEY_LEN], sealed[AB_RECENT_SEALED_MAX];
	struct ab_recent_entry in, out;
	const char *error;
	size_t len;

	(void)state;
	make_key(key, 1);
	address_entry(&in);
	len = ab_recent_seal(key, &in, sealed);
	assert_true(len > 1 + crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES &&
		    len <= AB_RECENT_SEALED_MAX);
	/* never a number, which the store would not hand back as bytes */
	assert_false(sealed[0] >= '0' && sealed[0] <= '9');
	assert_int_equal(ab_recent_open(key, sealed, len, &out, &error), 0);
	assert_same(&in, &out);

	/* an admin block of an IPv6 /48 */
	memset(&in, 0, sizeof(in));
	in.kind = AB_RECENT_SUBNET;
	in.admin = true;
	assert_int_equal(ab_cidr_parse("2001:db8:1::/48", &in.net, &error), 0);
	in.set_at = 1796000002;
	in.duration_s = 7 * 24 * 3600;
	len = ab_recent_seal(key, &in, sealed);
	assert_int_equal(ab_recent_open(key, sealed, len, &out, &error), 0);
	assert_same(&in, &out);

	/* the shortest and the longest account a login can normalise to */
	account_entry(&in, 1);
	len = ab_recent_seal(key, &in, sealed);
	assert_int_equal(ab_recent_open(key, sealed, len, &out, &error), 0);
	assert_same(&in, &out);
	account_entry(&in, AB_ACCOUNT_MAX - 1);
	len = ab_recent_seal(key, &in, sealed);
	assert_int_equal(len, AB_RECENT_SEALED_MAX);
	assert_int_equal(ab_recent_open(key, sealed, len, &out, &error), 0);
	assert_same(&in, &out);
}

/* The sealed bytes hold neither the name nor the address. */
static void test_sealed_bytes_hide_the_identity(void **state)
{
	uint8_t key[AB_RECENT_KEY_LEN], sealed[AB_RECENT_SEALED_MAX];
	static const uint8_t addr[4] = { 203, 0, 113, 9 };
	struct ab_recent_entry in;
	size_t len;

	(void)state;
	make_key(key, 2);
	account_entry(&in, 5);
	len = ab_recent_seal(key, &in, sealed);
	assert_null(memmem(sealed, len, "alice", 5));
	address_entry(&in);
	len = ab_recent_seal(key, &in, sealed);
	assert_null(memmem(sealed, len, addr, sizeof(addr)));
}

static void test_tampered_entry_is_refused(void **state)
{
	uint8_t key[AB_RECENT_KEY_LEN], other[AB_RECENT_KEY_LEN];
	uint8_t sealed[AB_RECENT_SEALED_MAX], copy[AB_RECENT_SEALED_MAX + 8];
	struct ab_recent_entry in, out;
	const char *error;
	size_t len, i;
	unsigned int bit;

	(void)state;
	make_key(key, 3);
	make_key(other, 4);
	account_entry(&in, 5);
	len = ab_recent_seal(key, &in, sealed);

	/* any one bit flipped, in any byte: the version and nonce included */
	for (i = 0; i < len; i++) {
		for (bit = 0; bit < 8; bit++) {
			memcpy(copy, sealed, len);
			copy[i] ^= (uint8_t)(1U << bit);
			error = NULL;
			assert_int_equal(ab_recent_open(key, copy, len, &out, &error), -1);
			assert_non_null(error);
		}
	}
	/* another site's secret */
	assert_int_equal(ab_recent_open(other, sealed, len, &out, &error), -1);
	/* cut short by any number of bytes, down to nothing */
	for (i = 0; i < len; i++) {
		error = NULL;
		assert_int_equal(ab_recent_open(key, sealed, i, &out, &error), -1);
		assert_non_null(error);
	}
	/* with bytes after it */
	memcpy(copy, sealed, len);
	memset(copy + len, 0, 8);
	assert_int_equal(ab_recent_open(key, copy, len + 8, &out, &error), -1);
	/* spliced: the nonce of another entry */
	account_entry(&in, 9);
	memcpy(copy, sealed, len);
	(void)ab_recent_seal(key, &in, sealed);
	memcpy(copy + 1, sealed + 1, crypto_secretbox_NONCEBYTES);
	assert_int_equal(ab_recent_open(key, copy, len, &out, &error), -1);
	/* an entry moved whole into another slot still opens: the slot is
	   not secret, and list checks every entry against the live block */
	len = ab_recent_seal(key, &in, sealed);
	assert_int_equal(ab_recent_open(key, sealed, len, &out, &error), 0);
	/* the longest entry, and more */
	account_entry(&in, AB_ACCOUNT_MAX - 1);
	len = ab_recent_seal(key, &in, copy);
	memset(copy + len, 0, 8);
	assert_int_equal(ab_recent_open(key, copy, len + 8, &out, &error), -1);
}

/* A fresh random nonce each time: one entry sealed twice differs. */
static void test_nonce_is_fresh(void **state)
{
	uint8_t key[AB_RECENT_KEY_LEN];
	uint8_t a[AB_RECENT_SEALED_MAX], b[AB_RECENT_SEALED_MAX];
	struct ab_recent_entry in;
	size_t len;

	(void)state;
	make_key(key, 5);
	address_entry(&in);
	len = ab_recent_seal(key, &in, a);
	assert_int_equal(ab_recent_seal(key, &in, b), len);
	assert_memory_not_equal(a + 1, b + 1, crypto_secretbox_NONCEBYTES);
	assert_memory_not_equal(a + 1 + crypto_secretbox_NONCEBYTES,
				b + 1 + crypto_secretbox_NONCEBYTES,
				len - 1 - crypto_secretbox_NONCEBYTES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_sealed_bytes_hide_the_identity),
		cmocka_unit_test(test_tampered_entry_is_refused),
		cmocka_unit_test(test_nonce_is_fresh),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests_name("recent", tests, NULL, NULL);
}
