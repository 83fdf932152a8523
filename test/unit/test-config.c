/* Config parsing, identities and the secret file's permissions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "ab-config.h"
#include "ab-hash.h"
#include "ab-identity.h"

static char tmpdir[64];

static int setup(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/ab-test-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *text, mode_t mode)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	unlink(path);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static void test_config_file_values(void **state)
{
	struct ab_config cfg;
	const char *error = NULL;
	const char *path = write_file("ok.conf",
		"# comment\n"
		"memcached_servers = 127.0.0.1:1, 127.0.0.1:2\n"
		"  poll_timeout = 30ms   # trailing comment\n"
		"block_time = 15m\n"
		"block_max = 7d\n"
		"lock_time=1h\n"
		"familiar_days = 10\n"
		"trusted_networks = 10.0.0.0/8 192.168.0.0/16,2001:db8::/32\n"
		"fail_mode = closed\n"
		"\n", 0644);

	(void)state;
	ab_config_defaults(&cfg);
	if (ab_config_load(&cfg, path, &error) < 0)
		fail_msg("%s", error);
	assert_string_equal(cfg.memcached_servers, "127.0.0.1:1, 127.0.0.1:2");
	assert_int_equal(cfg.poll_timeout_ms, 30);
	assert_int_equal(cfg.block_time_s, 900);
	assert_int_equal(cfg.block_max_s, 7 * 86400);
	assert_int_equal(cfg.lock_time_s, 3600);
	assert_int_equal(cfg.familiar_days, 10);
	assert_int_equal(cfg.trusted_networks.count, 3);
	assert_int_equal(cfg.fail_mode, AB_FAIL_CLOSED);
	ab_config_free(&cfg);
}

struct bad_line {
	const char *text;
	const char *expect;	/* substring of the error, after file:line */
};

static void test_config_errors_name_file_and_line(void **state)
{
	static const struct bad_line bad[] = {
		{ "no_such_key = 1\n", "unknown setting 'no_such_key'" },
		{ "block_time = soon\n", "not a duration" },
		{ "block_time = 5y\n", "unknown unit" },
		{ "block_max = 8d\n", "out of range" },
		{ "ip_free_failures = -1\n", "not a number" },
		{ "ip_free_failures = 12abc\n", "not a number" },
		{ "fail_mode = maybe\n", "use open or closed" },
		{ "trusted_networks = 10.0.0.0/33\n", "prefix length" },
		{ "trusted_networks = example.org\n", "not a network" },
		{ "just some words\n", "expected 'key = value'" },
		{ "= 5\n", "setting name is missing" },
		{ "familiar_days = 40\n", "out of range" },
		/* found by fuzz-config: 640511947005 days wrapped to 1 */
		{ "familiar_days = 640511947005\n", "out of range" },
		{ "poll_timeout = 1500ms0\n", "unknown unit" },
		{ "restrict_networks.SMTP = 10.0.0.0/8\n", "lower-case letters" },
		{ "restrict_networks. = 10.0.0.0/8\n", "protocol name is missing" },
		{ "restrict_networks.averyveryverylongname = 10.0.0.0/8\n",
		  "up to 15" },
		{ "trusted_proxies.imap = 10.0.0.0/8\n", "no per-protocol form" },
		{ "block_time.smtp = 1h\n", "no per-protocol form" },
		{ "restrict_network.smtp = 10.0.0.0/8\n",
		  "unknown setting 'restrict_network.smtp'" },
		{ "restrict_networks.smtp = 10.0.0.0/33\n", "prefix length" },
		{ "dnsbl = zen..example.org\n", "not a DNS zone name" },
		{ "dnsbl = bl.example.org/24\n", "not a DNS zone name" },
		{ "dnsbl = a.test b.test c.test d.test e.test f.test g.test h.test i.test\n",
		  "more than 8 zones" },
		{ "dnsbl_action = block\n", "use tarpit or reject" },
		{ "dnsbl_action.smtp = block\n", "use tarpit or reject" },
		{ "dnsbl_timeout = 10s\n", "out of range" },
		{ "dnsbl_resolver.smtp = 127.0.0.1\n", "no per-protocol form" },
	};
	char expect_where[160];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ab_config cfg;
		const char *error = NULL;
		char text[256];
		const char *path;

		snprintf(text, sizeof(text), "# line 1\nip_window = 1h\n%s", bad[i].text);
		path = write_file("bad.conf", text, 0644);
		ab_config_defaults(&cfg);
		assert_int_equal(ab_config_load(&cfg, path, &error), -1);
		snprintf(expect_where, sizeof(expect_where), "%s:3: ", path);
		print_message("  %s", error);
		print_message("\n");
		assert_non_null(strstr(error, expect_where));
		assert_non_null(strstr(error, bad[i].expect));
		ab_config_free(&cfg);
	}
}

/* "restrict_networks.smtp" replaces restrict_networks for smtp only, an
   empty list included; protocols without their own list keep the list
   for every protocol. */
static void test_config_per_protocol_networks(void **state)
{
	struct ab_config cfg;
	const char *error = NULL;
	char name[64], value[256];
	size_t i, n;
	const char *path = write_file("proto.conf",
		"restrict_networks = 10.0.0.0/8\n"
		"restrict_networks.smtp = 192.0.2.0/24\n"
		"restrict_networks.imap =\n"
		"trusted_networks.pop3 = 198.51.100.0/24\n"
		"restrict_networks.smtp = 192.0.2.0/24, 2001:db8::/32\n", 0644);
	static const char *const expect[][2] = {
		{ "trusted_networks", "" },
		{ "trusted_networks.pop3", "198.51.100.0/24" },
		{ "restrict_networks", "10.0.0.0/8" },
		/* in name order, not the file's */
		{ "restrict_networks.imap", "" },
		{ "restrict_networks.smtp", "192.0.2.0/24, 2001:db8::/32" },
	};

	(void)state;
	ab_config_defaults(&cfg);
	if (ab_config_load(&cfg, path, &error) < 0)
		fail_msg("%s", error);
	assert_int_equal(cfg.protocol_count, 3);
	assert_int_equal(ab_config_restrict_networks(&cfg, "smtp")->count, 2);
	assert_int_equal(ab_config_restrict_networks(&cfg, "imap")->count, 0);
	assert_ptr_equal(ab_config_restrict_networks(&cfg, "pop3"),
			 &cfg.restrict_networks);
	assert_ptr_equal(ab_config_restrict_networks(&cfg, "-"),
			 &cfg.restrict_networks);
	assert_int_equal(ab_config_trusted_networks(&cfg, "pop3")->count, 1);
	assert_ptr_equal(ab_config_trusted_networks(&cfg, "smtp"),
			 &cfg.trusted_networks);

	/* the settings in effect list each protocol's own after its key,
	   written as the file would write them */
	n = ab_config_key_count(&cfg);
	for (i = 0; i < n; i++) {
		if (strcmp(ab_config_key_name(&cfg, i, name, sizeof(name)),
			   "trusted_networks") == 0)
			break;
	}
	assert_true(i + 4 < n);
	for (size_t j = 0; j < sizeof(expect) / sizeof(expect[0]); j++) {
		assert_string_equal(ab_config_key_name(&cfg, i + j, name, sizeof(name)),
				    expect[j][0]);
		assert_string_equal(ab_config_value_str(&cfg, i + j, value, sizeof(value)),
				    expect[j][1]);
	}
	assert_null(ab_config_key_name(&cfg, n, name, sizeof(name)));
	ab_config_free(&cfg);

	/* the same settings as module arguments */
	ab_config_defaults(&cfg);
	assert_int_equal(ab_config_set(&cfg, "restrict_networks.pop3", "192.0.2.1",
				       "argument", &error), 0);
	assert_int_equal(ab_config_restrict_networks(&cfg, "pop3")->count, 1);
	assert_int_equal(ab_config_restrict_networks(&cfg, "imap")->count, 0);
	ab_config_free(&cfg);
}

/* dnsbl_action.PROTO: a refusal for SMTP AUTH, the tarpit elsewhere */
static void test_config_dnsbl(void **state)
{
	struct ab_config cfg;
	const char *error = NULL;
	char name[64], value[256];
	size_t i, n;
	bool seen_action = false, seen_smtp = false;
	const char *path = write_file("dnsbl.conf",
		"dnsbl = zen.example.org, bl.example.net\n"
		"dnsbl_action.smtp = reject\n"
		"dnsbl_resolver = [::1]:5353\n"
		"dnsbl_timeout = 250ms\n", 0644);

	(void)state;
	ab_config_defaults(&cfg);
	assert_int_equal(cfg.dnsbl_action, AB_DNSBL_TARPIT);
	if (ab_config_load(&cfg, path, &error) < 0)
		fail_msg("%s", error);
	assert_string_equal(cfg.dnsbl, "zen.example.org, bl.example.net");
	assert_int_equal(cfg.dnsbl_timeout_ms, 250);
	assert_int_equal(ab_config_dnsbl_action(&cfg, "smtp"), AB_DNSBL_REJECT);
	assert_int_equal(ab_config_dnsbl_action(&cfg, "imap"), AB_DNSBL_TARPIT);
	n = ab_config_key_count(&cfg);
	for (i = 0; i < n; i++) {
		const char *key = ab_config_key_name(&cfg, i, name, sizeof(name));
		const char *val = ab_config_value_str(&cfg, i, value, sizeof(value));

		if (strcmp(key, "dnsbl_action") == 0) {
			assert_string_equal(val, "tarpit");
			seen_action = true;
		} else if (strcmp(key, "dnsbl_action.smtp") == 0) {
			assert_true(seen_action);
			assert_string_equal(val, "reject");
			seen_smtp = true;
		} else if (strcmp(key, "dnsbl_timeout") == 0) {
			assert_string_equal(val, "250ms");
		}
	}
	assert_true(seen_smtp);
	ab_config_free(&cfg);
}

static void test_config_per_protocol_limit(void **state)
{
	struct ab_config cfg;
	const char *error = NULL;
	char key[64];
	unsigned int i;

	(void)state;
	ab_config_defaults(&cfg);
	for (i = 0; i < AB_PROTOCOL_NETWORKS_MAX; i++) {
		snprintf(key, sizeof(key), "trusted_networks.p%u", i);
		assert_int_equal(ab_config_set(&cfg, key, "10.0.0.1", "argument",
					       &error), 0);
	}
	/* a second list for a protocol already there takes no new place */
	assert_int_equal(ab_config_set(&cfg, "restrict_networks.p0", "10.0.0.1",
				       "argument", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "restrict_networks.one-more",
				       "10.0.0.1", "argument", &error), -1);
	assert_non_null(strstr(error, "more than 16 protocols"));
	ab_config_free(&cfg);
}

static void test_config_unreadable_and_inconsistent(void **state)
{
	struct ab_config cfg;
	const char *error = NULL;
	const char *path;

	(void)state;
	ab_config_defaults(&cfg);
	assert_int_equal(ab_config_load(&cfg, "/nonexistent/authbrake.conf", &error), -1);
	assert_non_null(strstr(error, "/nonexistent/authbrake.conf: cannot read"));
	path = write_file("inc.conf", "block_time = 2h\nblock_max = 1h\n", 0644);
	assert_int_equal(ab_config_load(&cfg, path, &error), -1);
	assert_non_null(strstr(error, "block_max"));
	ab_config_free(&cfg);

	/* module arguments go through the same parser */
	ab_config_defaults(&cfg);
	assert_int_equal(ab_config_set(&cfg, "tarpit_max", "4s", "argument", &error), 0);
	assert_int_equal(cfg.tarpit_max_s, 4);
	assert_int_equal(ab_config_set(&cfg, "tarpit_max", "4x", "argument", &error), -1);
	assert_non_null(strstr(error, "argument: tarpit_max"));
	ab_config_free(&cfg);
}

static void test_durations(void **state)
{
	unsigned long long ms;
	char buf[32];

	(void)state;
	assert_int_equal(ab_duration_parse_ms("50ms", &ms, NULL), 0);
	assert_int_equal(ms, 50);
	assert_int_equal(ab_duration_parse_ms("30", &ms, NULL), 0);
	assert_int_equal(ms, 30000);
	assert_int_equal(ab_duration_parse_ms("1h", &ms, NULL), 0);
	assert_int_equal(ms, 3600000);
	assert_int_equal(ab_duration_parse_ms("2w", &ms, NULL), 0);
	assert_int_equal(ms, 14ULL * 86400000);
	assert_int_equal(ab_duration_parse_ms("", &ms, NULL), -1);
	assert_int_equal(ab_duration_parse_ms("99999999999999999999d", &ms, NULL), -1);
	assert_string_equal(ab_duration_str(90, buf, sizeof(buf)), "1m30s");
	assert_string_equal(ab_duration_str(7 * 86400, buf, sizeof(buf)), "7d0h");
}

static void test_account_normalize(void **state)
{
	char buf[AB_ACCOUNT_MAX];
	char longlogin[400];
	const char *error;

	(void)state;
	assert_int_equal(ab_account_normalize("  Alice@Example.ORG \t", NULL, buf, &error), 0);
	assert_string_equal(buf, "alice@example.org");
	assert_int_equal(ab_account_normalize("Bob", "Example.org", buf, &error), 0);
	assert_string_equal(buf, "bob@example.org");
	assert_int_equal(ab_account_normalize("bob@other.net", "example.org", buf, &error), 0);
	assert_string_equal(buf, "bob@other.net");
	assert_int_equal(ab_account_normalize("   ", NULL, buf, &error), -1);
	assert_non_null(strstr(error, "empty"));
	assert_int_equal(ab_account_normalize("ev\nil", NULL, buf, &error), -1);
	assert_non_null(strstr(error, "control byte (0x0a)"));
	assert_int_equal(ab_account_normalize("a\x7f", NULL, buf, &error), -1);
	memset(longlogin, 'a', sizeof(longlogin) - 1);
	longlogin[sizeof(longlogin) - 1] = '\0';
	assert_int_equal(ab_account_normalize(longlogin, NULL, buf, &error), -1);
	assert_non_null(strstr(error, "longer than"));
	/* UTF-8 passes through untouched (only ASCII is lower-cased) */
	assert_int_equal(ab_account_normalize("J\xc3\xb6rg", NULL, buf, &error), 0);
	assert_string_equal(buf, "j\xc3\xb6rg");
	assert_int_equal(ab_account_normalize("\xf0\x9f\x90\x88" "cat", NULL, buf, &error), 0);
	/* not UTF-8: Latin-1, a lone continuation byte, a cut sequence, an
	   overlong '/', a surrogate, past U+10FFFF */
	static const char *const bad[] = {
		"J\xf6" "rg", "a\x80" "b", "ab\xc3", "\xc0\xaf" "etc", "\xe0\x80\xaf",
		"\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ab_account_normalize(bad[i], NULL, buf, &error), -1);
		assert_non_null(strstr(error, "not valid UTF-8"));
	}
}

static void test_addresses(void **state)
{
	struct ab_addr a, b;
	char buf[AB_ADDR_STRLEN];
	const char *error;
	struct ab_cidr_list list = { NULL, 0 };

	(void)state;
	assert_int_equal(ab_addr_parse("::ffff:192.0.2.1", &a, &error), 0);
	assert_int_equal(ab_addr_parse("192.0.2.1", &b, &error), 0);
	assert_true(ab_addr_equal(&a, &b));
	assert_string_equal(ab_addr_str(&a, 32, buf), "192.0.2.1");
	assert_int_equal(ab_addr_parse("[2001:db8::1]", &a, &error), 0);
	assert_int_equal(a.bytes[15], 1);
	assert_int_equal(ab_addr_parse("192.0.2.256", &a, &error), -1);
	assert_non_null(strstr(error, "not an IPv4 or IPv6 address"));
	assert_int_equal(ab_addr_parse("", &a, &error), -1);
	assert_int_equal(ab_addr_parse("mail.example.org", &a, &error), -1);
	assert_int_equal(ab_addr_parse("1.2.3.4\n", &a, &error), -1);

	ab_addr_parse("192.0.2.77", &a, NULL);
	ab_addr_subnet(&a, &b);
	assert_string_equal(ab_addr_str(&b, 24, buf), "192.0.2.0/24");
	ab_addr_parse("2001:db8:aa:bb:1::2", &a, NULL);
	ab_addr_origin(&a, &b);
	assert_string_equal(ab_addr_str(&b, 64, buf), "2001:db8:aa:bb::/64");
	ab_addr_subnet(&a, &b);
	assert_string_equal(ab_addr_str(&b, 48, buf), "2001:db8:aa::/48");

	assert_int_equal(ab_cidr_list_parse("10.0.0.0/8,::ffff:192.0.2.0/120", &list, &error), 0);
	ab_addr_parse("192.0.2.200", &a, NULL);
	assert_true(ab_cidr_list_match(&list, &a));
	ab_addr_parse("10.255.0.1", &a, NULL);
	assert_true(ab_cidr_list_match(&list, &a));
	ab_addr_parse("11.0.0.1", &a, NULL);
	assert_false(ab_cidr_list_match(&list, &a));
	ab_cidr_list_free(&list);
}

static void test_secret_permissions(void **state)
{
	struct ab_secret secret;
	const char *error;
	const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
	char path[128], tok[64];

	(void)state;
	assert_int_equal(ab_secret_load(write_file("s1", hex, 0600), &secret, &error), 0);
	assert_int_equal(secret.key[1], 0x11);
	assert_int_equal(ab_secret_load(write_file("s2", hex, 0640), &secret, &error), 0);
	assert_int_equal(ab_secret_load(write_file("s3", hex, 0644), &secret, &error), -1);
	assert_non_null(strstr(error, "world-readable"));
	assert_int_equal(ab_secret_load(write_file("s4", hex, 0660), &secret, &error), -1);
	assert_non_null(strstr(error, "group-writable"));
	assert_int_equal(ab_secret_load(write_file("s5", hex, 0602), &secret, &error), -1);
	assert_non_null(strstr(error, "world-writable"));
	assert_int_equal(ab_secret_load(write_file("s6", "short\n", 0600), &secret, &error), -1);
	assert_non_null(strstr(error, "64 hex digits"));

	snprintf(path, sizeof(path), "%s/generated", tmpdir);
	assert_int_equal(ab_secret_generate(path, &error), 0);
	assert_int_equal(ab_secret_load(path, &secret, &error), 0);
	assert_int_equal(ab_secret_generate(path, &error), -1);
	assert_non_null(strstr(error, "refusing to replace"));

	assert_int_equal(ab_token_load(write_file("t1", "k3y-token\n", 0640), tok, sizeof(tok), &error), 0);
	assert_string_equal(tok, "k3y-token");
	assert_int_equal(ab_token_load(write_file("t2", "k3y\n", 0644), tok, sizeof(tok), &error), -1);
}

static void test_keys_are_fixed_length_and_keyed(void **state)
{
	struct ab_secret s1, s2;
	char k1[AB_KEY_LEN], k2[AB_KEY_LEN], k3[AB_KEY_LEN];

	(void)state;
	memset(&s1, 1, sizeof(s1));
	memset(&s2, 2, sizeof(s2));
	ab_hash_key(&s1, "af", "alice", 5, NULL, 0, k1);
	ab_hash_key(&s2, "af", "alice", 5, NULL, 0, k2);
	ab_hash_key(&s1, "af", "alic", 4, "e", 1, k3);
	assert_int_equal(strlen(k1), AB_KEY_LEN - 1);
	assert_string_not_equal(k1, k2);
	assert_string_not_equal(k1, k3);	/* no collision by concatenation */
	assert_null(strstr(k1, "alice"));
	assert_int_equal(ab_pw_fingerprint(&s1, "alice", "pw", 2),
			 ab_pw_fingerprint(&s1, "alice", "pw", 2));
	assert_int_not_equal(ab_pw_fingerprint(&s1, "alice", "pw", 2),
			     ab_pw_fingerprint(&s2, "alice", "pw", 2));
}

/* Per-protocol settings are listed in protocol-name order, whatever
   order the file gave them in: printed settings read back the same
   (found by fuzz-config). */
static void test_protocols_listed_in_name_order(void **state)
{
	static const char *const order[2][3] = {
		{ "restrict_networks.smtp", "restrict_networks.imap", "trusted_networks.imap" },
		{ "trusted_networks.imap", "restrict_networks.imap", "restrict_networks.smtp" },
	};
	char names[2][512];
	size_t run, i;

	(void)state;
	for (run = 0; run < 2; run++) {
		struct ab_config cfg;
		const char *error;
		char name[64];

		ab_config_defaults(&cfg);
		for (i = 0; i < 3; i++)
			assert_int_equal(ab_config_set(&cfg, order[run][i],
						       "192.0.2.0/24", "test", &error), 0);
		names[run][0] = '\0';
		for (i = 0; i < ab_config_key_count(&cfg); i++) {
			const char *key = ab_config_key_name(&cfg, i, name, sizeof(name));

			if (strchr(key, '.') == NULL)
				continue;
			strcat(names[run], key);
			strcat(names[run], " ");
		}
		ab_config_free(&cfg);
	}
	assert_string_equal(names[0], names[1]);
	assert_non_null(strstr(names[0], "restrict_networks.imap restrict_networks.smtp"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_file_values),
		cmocka_unit_test(test_config_errors_name_file_and_line),
		cmocka_unit_test(test_config_per_protocol_networks),
		cmocka_unit_test(test_config_dnsbl),
		cmocka_unit_test(test_config_per_protocol_limit),
		cmocka_unit_test(test_config_unreadable_and_inconsistent),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_account_normalize),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_secret_permissions),
		cmocka_unit_test(test_keys_are_fixed_length_and_keyed),
		cmocka_unit_test(test_protocols_listed_in_name_order),
	};
	return cmocka_run_group_tests_name("config-identity-hash", tests, setup, teardown);
}
