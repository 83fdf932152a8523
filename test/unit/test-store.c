/* The store and the tracker against a real memcached that this test
   starts on a free loopback port and stops by PID. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "ab-cost.h"
#include "ab-recent.h"
#include "ab-tracker.h"

static pid_t mc_pid;
static int mc_port;
/* a second memcached a test starts; teardown stops it if the test failed */
static pid_t mc2_pid;
static char tmpdir[64];
static char secret_path[128];

static int free_port(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
		return -1;
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

static bool port_open(int port)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

/* A memcached on 127.0.0.1:port, up when this returns (or failed). */
static pid_t mc_spawn(int port)
{
	char arg[16];
	pid_t pid;
	int i;

	snprintf(arg, sizeof(arg), "%d", port);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execlp("memcached", "memcached", "-l", "127.0.0.1", "-p", arg,
		       "-U", "0", "-m", "16", "-u", "root", (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 200 && !port_open(port); i++)
		usleep(10000);
	return pid;
}

static void mc_start(void)
{
	mc_pid = mc_spawn(mc_port);
	if (!port_open(mc_port))
		fail_msg("memcached did not start on port %d (is the memcached package installed?)",
			 mc_port);
}

/* kill() returns before the target has stopped: a request sent at once
   could still be answered. Wait until the kernel shows it stopped. */
static void mc_pause(void)
{
	char path[64], buf[256], *p;
	FILE *f;
	int i;

	kill(mc_pid, SIGSTOP);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)mc_pid);
	for (i = 0; i < 1000; i++) {
		if ((f = fopen(path, "r")) == NULL)
			break;
		p = fgets(buf, sizeof(buf), f);
		fclose(f);
		if (p != NULL && (p = strrchr(buf, ')')) != NULL && p[2] == 'T')
			return;
		usleep(1000);
	}
	fail_msg("memcached (pid %d) did not stop", (int)mc_pid);
}

static void mc_stop(void)
{
	if (mc_pid <= 0)
		return;
	kill(mc_pid, SIGCONT);
	kill(mc_pid, SIGKILL);
	waitpid(mc_pid, NULL, 0);
	mc_pid = 0;
}

static int setup(void **state)
{
	FILE *f;

	(void)state;
	strcpy(tmpdir, "/tmp/ab-store-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	snprintf(secret_path, sizeof(secret_path), "%s/secret", tmpdir);
	f = fopen(secret_path, "w");
	fputs("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n", f);
	fclose(f);
	chmod(secret_path, 0600);
	mc_port = free_port();
	mc_start();
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	mc_stop();
	if (mc2_pid > 0) {
		kill(mc2_pid, SIGKILL);
		waitpid(mc2_pid, NULL, 0);
		mc2_pid = 0;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void make_config(struct ab_config *cfg)
{
	char servers[64];
	const char *error;

	ab_config_defaults(cfg);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d", mc_port);
	assert_int_equal(ab_config_set(cfg, "memcached_servers", servers, "test", &error), 0);
	assert_int_equal(ab_config_set(cfg, "secret_file", secret_path, "test", &error), 0);
	/* the tests here run many failures a second through one memcached:
	   campaign mode stays off but for the tests about it */
	assert_int_equal(ab_config_set(cfg, "campaign_floor", "1000000000", "test", &error), 0);
}

static double now_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec * 1000.0 + tv.tv_usec / 1000.0;
}

static void test_counters_and_ttl(void **state)
{
	struct ab_config cfg;
	struct ab_store *store;
	const char *error;
	uint64_t v = 0;
	const char *keys[2] = { "ab1:t1:counter", "ab1:t1:missing" };
	uint64_t values[2];
	bool found[2], added;

	(void)state;
	make_config(&cfg);
	assert_int_equal(ab_store_init(&cfg, NULL, NULL, &store, &error), 0);
	assert_int_equal(ab_store_incr(store, keys[0], 1, 2, &v, &error), 0);
	assert_int_equal(v, 1);
	assert_int_equal(ab_store_incr(store, keys[0], 1, 2, &v, &error), 0);
	assert_int_equal(v, 2);
	assert_int_equal(ab_store_decr(store, keys[0], 5, &error), 0);
	assert_int_equal(ab_store_mget(store, keys, 2, values, found, &error), 0);
	assert_true(found[0]);
	assert_int_equal(values[0], 0);	/* memcached never goes below 0 */
	assert_false(found[1]);
	assert_int_equal(ab_store_decr(store, keys[1], 1, &error), 0);
	/* a decrement that loses a digit: memcached pads "9 " (read as
	   missing, it cleared a lock's failures) */
	assert_int_equal(ab_store_incr(store, "ab1:t1:ten", 10, 60, &v, &error), 0);
	assert_int_equal(ab_store_decr(store, "ab1:t1:ten", 1, &error), 0);
	assert_int_equal(ab_store_incr(store, "ab1:t1:ten", 0, 60, &v, &error), 0);
	assert_int_equal(v, 9);
	keys[1] = "ab1:t1:ten";
	assert_int_equal(ab_store_mget(store, keys, 2, values, found, &error), 0);
	assert_true(found[1]);
	assert_int_equal(values[1], 9);
	keys[1] = "ab1:t1:missing";

	assert_int_equal(ab_store_add(store, "ab1:t1:marker", 7, 60, &added, &error), 0);
	assert_true(added);
	assert_int_equal(ab_store_add(store, "ab1:t1:marker", 8, 60, &added, &error), 0);
	assert_false(added);
	assert_int_equal(ab_store_set(store, "ab1:t1:set", 1234567890123ULL, 60, &error), 0);
	keys[1] = "ab1:t1:set";
	assert_int_equal(ab_store_mget(store, keys, 2, values, found, &error), 0);
	assert_int_equal(values[1], 1234567890123ULL);
	assert_int_equal(ab_store_delete(store, keys[1], &added, &error), 0);
	assert_true(added);	/* it was there */
	assert_int_equal(ab_store_delete(store, keys[1], &added, &error), 0);
	assert_false(added);

	/* the TTL given at creation ends the counter (memcached's clock has
	   one-second steps, so wait past it) */
	sleep(3);
	assert_int_equal(ab_store_mget(store, keys, 1, values, found, &error), 0);
	assert_false(found[0]);
	ab_store_deinit(&store);
	assert_null(store);
	ab_config_free(&cfg);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* A figure, not an assertion: what one allow-sized read (18 keys, the
   slots of an attempt) and one increment cost against this memcached. */
static void print_round_trips(struct ab_store *store, const char *const *keys)
{
	enum { N = 2000 };
	static double mget_ms[N], incr_ms[N];
	uint64_t values[18], v;
	bool found[18];
	const char *error;
	double t;
	int i;

	for (i = 0; i < N; i++) {
		t = now_ms();
		(void)ab_store_mget(store, keys, 18, values, found, &error);
		mget_ms[i] = now_ms() - t;
		t = now_ms();
		(void)ab_store_incr(store, "ab1:t2:rt", 1, 60, &v, &error);
		incr_ms[i] = now_ms() - t;
	}
	qsort(mget_ms, N, sizeof(double), cmp_double);
	qsort(incr_ms, N, sizeof(double), cmp_double);
	print_message("  store round trips over loopback, %d each: mget of 18 keys "
		      "p50 %.3f ms p99 %.3f ms; incr p50 %.3f ms p99 %.3f ms\n",
		      N, mget_ms[N / 2], mget_ms[N * 99 / 100],
		      incr_ms[N / 2], incr_ms[N * 99 / 100]);
}

/* A batch is one round trip per server, whatever its size: 24 keys over
   two servers make two round trips (a request at a time would make 24),
   and every key is answered. */
static void test_mget_is_one_request(void **state)
{
	struct ab_config cfg;
	struct ab_store *store;
	struct ab_store_stats before, after;
	const char *error;
	char names[24][32], servers[64];
	const char *keys[24];
	uint64_t values[24];
	bool found[24];
	int i, mc2_port = free_port();

	(void)state;
	mc2_pid = mc_spawn(mc2_port);
	make_config(&cfg);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d,127.0.0.1:%d", mc_port, mc2_port);
	assert_int_equal(ab_config_set(&cfg, "memcached_servers", servers, "test", &error), 0);
	assert_int_equal(ab_store_init(&cfg, NULL, NULL, &store, &error), 0);
	for (i = 0; i < 24; i++) {
		snprintf(names[i], sizeof(names[i]), "ab1:t2:%02d", i);
		keys[i] = names[i];
		if (i % 2 == 0)
			assert_int_equal(ab_store_set(store, keys[i], (uint64_t)i, 60, &error), 0);
	}
	ab_store_get_stats(store, &before);
	assert_int_equal(ab_store_mget(store, keys, 24, values, found, &error), 0);
	ab_store_get_stats(store, &after);
	assert_int_equal(after.requests - before.requests, 2);
	assert_int_equal(after.ops - before.ops, 24);
	for (i = 0; i < 24; i++) {
		assert_int_equal(found[i], i % 2 == 0);
		if (found[i])
			assert_int_equal(values[i], (uint64_t)i);
	}
	print_round_trips(store, keys);
	ab_store_deinit(&store);
	kill(mc2_pid, SIGKILL);
	waitpid(mc2_pid, NULL, 0);
	mc2_pid = 0;
	ab_config_free(&cfg);
}

/* How long a block set at now by failures all counted at now lasts:
   block_time, and at least until they have left the window (the end of
   the bucket after theirs). */
static unsigned int block_for(const struct ab_config *cfg, time_t now)
{
	time_t counts = (time_t)((now / cfg->ip_window_s + 2) * cfg->ip_window_s);

	return counts - now > (time_t)cfg->block_time_s ?
		(unsigned int)(counts - now) : cfg->block_time_s;
}

static void test_tracker_dictionary_run_blocks(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	struct ab_attempt a;
	struct ab_decision d;
	struct ab_address_status st;
	const char *error;
	char user[32];
	time_t now = time(NULL);
	int i;

	(void)state;
	make_config(&cfg);
	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &tracker, &error), 0);
	for (i = 0; i < (int)cfg.ip_max_accounts; i++) {
		snprintf(user, sizeof(user), "user%02d", i);
		assert_int_equal(ab_attempt_init(tracker, &a, user, "::ffff:203.0.113.9",
						 "imap", "guess", 5, &error), 0);
		ab_tracker_allow(tracker, &a, now, 0, &d);
		assert_int_not_equal(d.verdict, AB_REJECT);
		assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_FAILURE, now, &error), 0);
	}
	assert_int_equal(ab_attempt_init(tracker, &a, "user99", "203.0.113.9",
					 "pop3", NULL, 0, &error), 0);
	ab_tracker_allow(tracker, &a, now, 0, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_string_equal(d.reason, "address blocked");
	assert_int_equal(d.retry_after_s, block_for(&cfg, now));

	assert_int_equal(ab_tracker_address_status(tracker, "203.0.113.9", now, &st, &error), 0);
	assert_true(st.blocked);
	assert_int_equal(st.block_left_s, d.retry_after_s);
	assert_int_equal(st.accounts, cfg.ip_max_accounts);
	assert_int_equal(st.failures, cfg.ip_max_accounts);
	assert_int_equal(st.strikes, 1);
	assert_int_equal(st.inflight, 0);	/* every allowed attempt was reported */

	assert_int_equal(ab_tracker_unblock(tracker, "203.0.113.9", now, &error), 0);
	ab_tracker_allow(tracker, &a, now, AB_ALLOW_DRY_RUN, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_int_equal(ab_tracker_block(tracker, "203.0.113.0/24", 60, now, &error), 0);
	ab_tracker_allow(tracker, &a, now, AB_ALLOW_DRY_RUN, &d);
	assert_string_equal(d.reason, "subnet blocked");
	assert_int_equal(ab_tracker_block(tracker, "203.0.113.0/23", 60, now, &error), -1);
	assert_non_null(strstr(error, "/24 subnet"));
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

static void test_tracker_lockout_and_familiar(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	struct ab_attempt a;
	struct ab_decision d;
	struct ab_account_status st;
	const char *error;
	char addr[32], pw[16];
	time_t now = time(NULL);
	unsigned int i;

	(void)state;
	make_config(&cfg);
	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &tracker, &error), 0);
	/* the user logs in from home: home becomes familiar */
	assert_int_equal(ab_attempt_init(tracker, &a, "Carol", "192.0.2.10", "imap",
					 "right", 5, &error), 0);
	assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_SUCCESS, now, &error), 0);

	/* a phone with a stale password: the same wrong password locks nothing */
	for (i = 0; i < 3 * cfg.account_lock_failures; i++) {
		assert_int_equal(ab_attempt_init(tracker, &a, "carol", "198.18.0.1", "imap",
						 "stale", 5, &error), 0);
		assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_FAILURE, now, &error), 0);
	}
	assert_int_equal(ab_tracker_account_status(tracker, "carol", now, &st, &error), 0);
	assert_int_equal(st.failures, 1);
	assert_false(st.locked);

	/* a botnet: one guess each from rotating addresses */
	for (i = 1; i < cfg.account_lock_failures; i++) {
		snprintf(addr, sizeof(addr), "100.64.%u.%u", i, i);
		snprintf(pw, sizeof(pw), "guess%u", i);
		assert_int_equal(ab_attempt_init(tracker, &a, "carol", addr, "imap",
						 pw, strlen(pw), &error), 0);
		assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_FAILURE, now, &error), 0);
	}
	assert_int_equal(ab_tracker_account_status(tracker, "carol", now, &st, &error), 0);
	assert_true(st.locked);
	assert_int_equal(st.failures, cfg.account_lock_failures);
	assert_int_equal(st.familiar_subnets, 1);

	/* a new address is refused, home (another host in its /24) is not */
	ab_attempt_init(tracker, &a, "carol", "198.51.100.200", "imap", NULL, 0, &error);
	ab_tracker_allow(tracker, &a, now, AB_ALLOW_DRY_RUN, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	ab_attempt_init(tracker, &a, "carol", "192.0.2.99", "imap", NULL, 0, &error);
	ab_tracker_allow(tracker, &a, now, AB_ALLOW_DRY_RUN, &d);
	assert_int_equal(d.verdict, AB_ALLOW);

	/* success from home does not clear the lock failures elsewhere set */
	assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_SUCCESS, now, &error), 0);
	assert_int_equal(ab_tracker_account_status(tracker, "carol", now, &st, &error), 0);
	assert_true(st.locked);

	assert_int_equal(ab_tracker_unlock(tracker, "CAROL", now, &error), 0);
	ab_attempt_init(tracker, &a, "carol", "198.51.100.200", "imap", NULL, 0, &error);
	ab_tracker_allow(tracker, &a, now, AB_ALLOW_DRY_RUN, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

/* A botnet with many connections open: every allow arrives before any
   report. Only account_lock_failures of them may reach the password check;
   each report settles its own places, once. */
static void test_tracker_parallel_allows_hold_places(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	struct ab_attempt a[40];
	struct ab_decision d;
	struct ab_account_status st;
	struct ab_address_status ast;
	const char *error;
	char addr[32], session[32];
	time_t now = time(NULL);
	unsigned int i, allowed = 0;
	bool let_in[40];

	(void)state;
	make_config(&cfg);
	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &tracker, &error), 0);
	for (i = 0; i < 40; i++) {
		snprintf(addr, sizeof(addr), "100.65.%u.7", i);
		snprintf(session, sizeof(session), "sess-par-%u", i);
		assert_int_equal(ab_attempt_init(tracker, &a[i], "erin", addr, "imap",
						 session, strlen(session), &error), 0);
		ab_attempt_set_session(&a[i], session, strlen(session));
		ab_tracker_allow(tracker, &a[i], now, 0, &d);
		let_in[i] = d.verdict != AB_REJECT;
		if (let_in[i])
			allowed++;
		else
			assert_string_equal(d.reason, "account locked for unfamiliar origins");
	}
	assert_int_equal(allowed, cfg.account_lock_failures);
	for (i = 0; i < 40; i++)
		assert_int_equal(ab_tracker_report(tracker, &a[i], let_in[i] ?
			AB_OUTCOME_FAILURE : AB_OUTCOME_POLICY_REJECT, now, &error), 0);
	assert_int_equal(ab_tracker_account_status(tracker, "erin", now, &st, &error), 0);
	assert_int_equal(st.failures, cfg.account_lock_failures);
	assert_true(st.lock_left_s > 0);
	assert_int_equal(st.strikes, 1);
	/* the in-flight counts went back to 0, the refused ones never held any */
	assert_int_equal(ab_tracker_address_status(tracker, "100.65.0.7", now, &ast, &error), 0);
	assert_int_equal(ast.inflight, 0);
	assert_int_equal(ast.failures, 1);
	assert_int_equal(ab_tracker_address_status(tracker, "100.65.39.7", now, &ast, &error), 0);
	assert_int_equal(ast.failures, 0);
	/* a second report for a settled session changes nothing */
	assert_int_equal(ab_tracker_report(tracker, &a[0], AB_OUTCOME_FAILURE, now, &error), 0);
	assert_int_equal(ab_tracker_account_status(tracker, "erin", now, &st, &error), 0);
	assert_int_equal(st.failures, cfg.account_lock_failures);
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

/* The store's counters less what keeping campaign mode's state cost
   (ab_tracker_campaign_cost()): what logins themselves cost. */
static void login_stats(const struct ab_tracker *tracker,
			struct ab_store_stats *stats_r)
{
	struct ab_store_stats campaign;

	ab_store_get_stats(ab_tracker_store((struct ab_tracker *)tracker), stats_r);
	ab_tracker_campaign_cost(tracker, &campaign);
	stats_r->requests -= campaign.requests;
	stats_r->ops -= campaign.ops;
	stats_r->posted -= campaign.posted;
}

/* A right password, with Dovecot's after-auth allow on: one place held,
   given back once; the address ends with no failure and nothing in
   flight. The allow that takes its places costs two round trips (its
   records read, then written), and nothing is posted. */
static void test_tracker_success_gives_places_back(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	struct ab_attempt a;
	struct ab_decision d;
	struct ab_address_status ast;
	struct ab_account_status st;
	struct ab_store_stats before, after;
	const char *error;
	time_t now = time(NULL);

	(void)state;
	make_config(&cfg);
	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &tracker, &error), 0);
	assert_int_equal(ab_attempt_init(tracker, &a, "frank", "100.66.1.1", "imap",
					 NULL, 0, &error), 0);
	ab_attempt_set_session(&a, "sess-ok", 7);
	login_stats(tracker, &before);
	ab_tracker_allow(tracker, &a, now, 0, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	/* it holds every place it took: its records read and written back,
	   nothing posted */
	login_stats(tracker, &after);
	assert_int_equal(after.requests - before.requests, 2);
	assert_int_equal(after.posted - before.posted, 0);
	assert_int_equal(ab_tracker_address_status(tracker, "100.66.1.1", now, &ast, &error), 0);
	assert_int_equal(ast.inflight, 1);
	assert_int_equal(ast.failures, 1);	/* the place held */
	ab_tracker_allow(tracker, &a, now, 0, &d);	/* after-auth */
	assert_int_equal(ab_tracker_address_status(tracker, "100.66.1.1", now, &ast, &error), 0);
	assert_int_equal(ast.inflight, 1);
	assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_SUCCESS, now, &error), 0);
	assert_int_equal(ab_tracker_address_status(tracker, "100.66.1.1", now, &ast, &error), 0);
	assert_int_equal(ast.inflight, 0);
	assert_int_equal(ast.failures, 0);
	assert_int_equal(ast.accounts, 0);
	assert_int_equal(ab_tracker_account_status(tracker, "frank", now, &st, &error), 0);
	assert_int_equal(st.failures, 0);
	assert_int_equal(st.familiar_subnets, 1);

	/* a wrong password from elsewhere, under every threshold: its allow
	   held its places, so its report reads the records and writes back
	   only the address's (its place in flight, its session entry), and
	   posts the site's count of failures from unfamiliar origins */
	assert_int_equal(ab_attempt_init(tracker, &a, "frank", "100.66.2.1", "imap",
					 NULL, 0, &error), 0);
	ab_attempt_set_session(&a, "sess-bad", 8);
	ab_tracker_allow(tracker, &a, now, 0, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	login_stats(tracker, &before);
	assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_FAILURE, now, &error), 0);
	login_stats(tracker, &after);
	assert_int_equal(after.requests - before.requests, 2);
	assert_int_equal(after.ops - before.ops, 4 + 1);
	assert_int_equal(after.posted - before.posted, 1);
	assert_int_equal(ab_tracker_address_status(tracker, "100.66.2.1", now, &ast, &error), 0);
	assert_int_equal(ast.inflight, 0);
	assert_int_equal(ast.failures, 1);
	assert_int_equal(ab_tracker_account_status(tracker, "frank", now, &st, &error), 0);
	assert_int_equal(st.failures, 1);
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

/* Two nodes whose reports cross a block threshold together leave one
   block, of the first length, and one strike. */
/* Two nodes increment the same missing keys at once, a batch each: both
   find a key missing and add it, and memcached tells the one whose add
   lost NOT_STORED. Every increment must still count (a lost one is a
   place not held, one guess too many let through). */
#define CREATION_KEYS 200

struct creation_race {
	struct ab_config *cfg;
	pthread_barrier_t *barrier;
	unsigned int round;
	unsigned int done;
};

static void *creation_race_run(void *context)
{
	struct creation_race *cr = context;
	struct ab_store *store;
	struct ab_store_op ops[CREATION_KEYS];
	char keys[CREATION_KEYS][40];
	const char *error;
	unsigned int i, round;

	if (ab_store_init(cr->cfg, NULL, NULL, &store, &error) < 0)
		return NULL;
	for (round = 0; round < cr->round; round++) {
		memset(ops, 0, sizeof(ops));
		for (i = 0; i < CREATION_KEYS; i++) {
			snprintf(keys[i], sizeof(keys[i]), "ab1:cr:%u:%u", round, i);
			ops[i].cmd = AB_STORE_INCR;
			ops[i].key = keys[i];
			ops[i].value = 1;
			ops[i].ttl_s = 60;
		}
		pthread_barrier_wait(cr->barrier);
		(void)ab_store_run(store, ops, CREATION_KEYS, &error);
		for (i = 0; i < CREATION_KEYS; i++)
			cr->done += ops[i].result == AB_STORE_DONE;
	}
	ab_store_deinit(&store);
	return NULL;
}

static void test_racing_creation_counts_every_increment(void **state)
{
	enum { ROUNDS = 20 };
	struct ab_config cfg;
	struct ab_store *store;
	pthread_barrier_t barrier;
	pthread_t threads[2];
	struct creation_race races[2];
	char keys[CREATION_KEYS][40];
	const char *key_ptrs[CREATION_KEYS];
	uint64_t values[CREATION_KEYS];
	bool found[CREATION_KEYS];
	const char *error;
	unsigned int i, round, lost = 0;

	(void)state;
	make_config(&cfg);
	assert_int_equal(pthread_barrier_init(&barrier, NULL, 2), 0);
	for (i = 0; i < 2; i++) {
		races[i].cfg = &cfg;
		races[i].barrier = &barrier;
		races[i].round = ROUNDS;
		races[i].done = 0;
		assert_int_equal(pthread_create(&threads[i], NULL, creation_race_run,
						&races[i]), 0);
	}
	for (i = 0; i < 2; i++)
		pthread_join(threads[i], NULL);
	pthread_barrier_destroy(&barrier);

	assert_int_equal(ab_store_init(&cfg, NULL, NULL, &store, &error), 0);
	for (round = 0; round < ROUNDS; round++) {
		for (i = 0; i < CREATION_KEYS; i++) {
			snprintf(keys[i], sizeof(keys[i]), "ab1:cr:%u:%u", round, i);
			key_ptrs[i] = keys[i];
		}
		assert_int_equal(ab_store_mget(store, key_ptrs, CREATION_KEYS,
					       values, found, &error), 0);
		for (i = 0; i < CREATION_KEYS; i++)
			lost += 2 - (unsigned int)values[i];
	}
	print_message("  racing creation: %u increments, %u lost, %u answered done\n",
		      2 * ROUNDS * CREATION_KEYS, lost, races[0].done + races[1].done);
	assert_int_equal(lost, 0);
	assert_int_equal(races[0].done + races[1].done, 2 * ROUNDS * CREATION_KEYS);
	ab_store_deinit(&store);
	ab_config_free(&cfg);
}

struct race_node {
	struct ab_config *cfg;
	pthread_barrier_t *barrier;
	unsigned int node;
};

static void *race_node_run(void *context)
{
	struct race_node *rn = context;
	struct ab_tracker *tracker;
	struct ab_attempt a;
	const char *error;
	char user[32];
	unsigned int i;

	assert_int_equal(ab_tracker_init(rn->cfg, NULL, NULL, &tracker, &error), 0);
	for (i = 0; i < rn->cfg->ip_block_failures; i++) {
		snprintf(user, sizeof(user), "race%u-%u", rn->node, i);
		assert_int_equal(ab_attempt_init(tracker, &a, user, "100.67.0.9", "imap",
						 user, strlen(user), &error), 0);
		pthread_barrier_wait(rn->barrier);
		assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_FAILURE,
						   time(NULL), &error), 0);
	}
	ab_tracker_deinit(&tracker);
	return NULL;
}

static void test_tracker_racing_nodes_one_block(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	struct ab_address_status st;
	pthread_barrier_t barrier;
	pthread_t threads[2];
	struct race_node nodes[2];
	const char *error;
	unsigned int i;

	(void)state;
	make_config(&cfg);
	/* blocks by failures only, so each node's reports count */
	cfg.ip_max_accounts = 1000;
	cfg.ip_block_failures = 9;
	assert_int_equal(pthread_barrier_init(&barrier, NULL, 2), 0);
	for (i = 0; i < 2; i++) {
		nodes[i].cfg = &cfg;
		nodes[i].barrier = &barrier;
		nodes[i].node = i;
		assert_int_equal(pthread_create(&threads[i], NULL, race_node_run, &nodes[i]), 0);
	}
	for (i = 0; i < 2; i++)
		pthread_join(threads[i], NULL);
	pthread_barrier_destroy(&barrier);

	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &tracker, &error), 0);
	assert_int_equal(ab_tracker_address_status(tracker, "100.67.0.9", time(NULL), &st, &error), 0);
	print_message("  racing nodes: %llu failures, strikes %llu, block %llus left\n",
		      st.failures, st.strikes, st.block_left_s);
	assert_true(st.blocked);
	assert_int_equal(st.strikes, 1);
	assert_true(st.block_left_s <= block_for(&cfg, time(NULL)));
	assert_int_equal(st.failures, 2 * cfg.ip_block_failures);
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

/* --- campaign mode through memcached, two nodes --- */

struct campaign_lines {
	unsigned int on_rate, on_password, off;
};

static void campaign_log(enum ab_log_level level, const char *msg, void *ctx)
{
	struct campaign_lines *l = ctx;

	(void)level;
	if (strncmp(msg, "campaign mode on: ", 18) == 0 &&
	    strstr(msg, "failures from unfamiliar origins") != NULL)
		l->on_rate++;
	else if (strncmp(msg, "campaign mode on: one wrong password", 36) == 0)
		l->on_password++;
	else if (strncmp(msg, "campaign mode off: failures", 27) == 0)
		l->off++;
}

static void campaign_config(struct ab_config *cfg, const char *floor)
{
	const char *error;

	make_config(cfg);
	assert_int_equal(ab_config_set(cfg, "campaign_floor", floor, "test", &error), 0);
	assert_int_equal(ab_config_set(cfg, "campaign_interval", "10s", "test", &error), 0);
	assert_int_equal(ab_config_set(cfg, "campaign_day", "240s", "test", &error), 0);
	assert_int_equal(ab_config_set(cfg, "campaign_cooldown", "30s", "test", &error), 0);
	assert_int_equal(ab_config_set(cfg, "campaign_password_accounts", "4", "test", &error), 0);
	assert_int_equal(ab_config_validate(cfg, &error), 0);
}

/* One login: its allow, and when let through, its report. */
static void campaign_login(struct ab_tracker *tracker, const char *user,
			   const char *addr, const char *pw, enum ab_outcome outcome,
			   time_t now, struct ab_decision *d)
{
	struct ab_attempt a;
	char session[96];
	const char *error;

	assert_int_equal(ab_attempt_init(tracker, &a, user, addr, "imap", pw,
					 strlen(pw), &error), 0);
	ab_attempt_set_spray_password(tracker, &a, pw, strlen(pw));
	snprintf(session, sizeof(session), "%s/%s/%lld", user, addr, (long long)now);
	ab_attempt_set_session(&a, session, strlen(session));
	ab_tracker_allow(tracker, &a, now, 0, d);
	if (d->verdict != AB_REJECT)
		assert_int_equal(ab_tracker_report(tracker, &a, outcome, now, &error), 0);
}

/* A spray seen by one node turns campaign mode on for both: one of them
   logs it; an account with a failure from an unfamiliar origin is then
   refused from the next, a new origin waits campaign_tarpit, a familiar
   subnet neither; campaign_cooldown under the threshold ends it, once. */
static void test_campaign_shared_by_nodes(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *a, *b;
	struct campaign_lines la = { 0, 0, 0 }, lb = { 0, 0, 0 };
	struct ab_campaign_status st;
	struct ab_decision d;
	const char *error;
	char user[32], addr[32], pw[32];
	time_t t0 = time(NULL), t;
	unsigned int i;

	(void)state;
	campaign_config(&cfg, "5");
	assert_int_equal(ab_tracker_init(&cfg, campaign_log, &la, &a, &error), 0);
	assert_int_equal(ab_tracker_init(&cfg, campaign_log, &lb, &b, &error), 0);
	assert_int_equal(ab_tracker_campaign_set(a, AB_CAMPAIGN_AUTO, t0, &error), 0);
	/* the first allow learns the bucket before: the detector is armed,
	   at campaign_floor (a quiet site) */
	campaign_login(a, "camp-home", "100.70.0.1", "right", AB_OUTCOME_SUCCESS, t0, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_int_equal(ab_tracker_campaign_status(a, t0, &st, &error), 0);
	assert_false(st.on);
	assert_int_equal(st.threshold, 5);
	/* node b: six accounts, one wrong password each (each its own: not
	   PAM's signal), each from its own /24 */
	for (i = 0; i < 6; i++) {
		snprintf(user, sizeof(user), "camp-spray-%u", i);
		snprintf(addr, sizeof(addr), "100.71.%u.1", i);
		snprintf(pw, sizeof(pw), "Winter2026-%u", i);
		campaign_login(b, user, addr, pw, AB_OUTCOME_FAILURE, t0 + 1, &d);
		assert_int_equal(d.verdict, AB_ALLOW);
	}
	assert_int_equal(la.on_rate + lb.on_rate, 0);
	/* node a sees the rate: on, logged once; a sprayed account is refused
	   from a new origin with its one failure */
	campaign_login(a, "camp-spray-0", "100.72.0.1", "Spring2026", AB_OUTCOME_FAILURE,
		       t0 + 2, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	assert_int_equal(d.why, AB_REASON_CAMPAIGN_LOCKED);
	assert_true(d.campaign);
	assert_int_equal(la.on_rate, 1);
	/* node b knows it at its next read, and says nothing */
	campaign_login(b, "camp-fresh", "100.73.0.1", "typo", AB_OUTCOME_FAILURE, t0 + 3, &d);
	assert_int_equal(d.verdict, AB_TARPIT);
	assert_int_equal(d.delay_s, cfg.campaign_tarpit_s);
	assert_int_equal(d.why, AB_REASON_CAMPAIGN_TARPIT);
	campaign_login(b, "camp-home", "100.70.0.9", "right", AB_OUTCOME_SUCCESS, t0 + 3, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_int_equal(d.delay_s, 0);
	assert_int_equal(la.on_rate + lb.on_rate, 1);
	assert_int_equal(ab_tracker_campaign_status(b, t0 + 3, &st, &error), 0);
	assert_true(st.on);
	assert_int_equal(st.mode, AB_CAMPAIGN_AUTO);
	assert_int_equal(st.state.cause, AB_CAMPAIGN_BY_RATE);
	assert_true(st.state.rate >= 5);
	/* forced off: nobody is held back by it; auto: on again */
	assert_int_equal(ab_tracker_campaign_set(b, AB_CAMPAIGN_FORCED_OFF, t0 + 4, &error), 0);
	campaign_login(a, "camp-spray-1", "100.72.1.1", "Spring2026", AB_OUTCOME_FAILURE,
		       t0 + 4, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_false(d.campaign);
	assert_int_equal(ab_tracker_campaign_set(b, AB_CAMPAIGN_AUTO, t0 + 5, &error), 0);
	campaign_login(a, "camp-spray-2", "100.72.2.1", "Spring2026", AB_OUTCOME_FAILURE,
		       t0 + 5, &d);
	assert_int_equal(d.verdict, AB_REJECT);
	/* the spray goes on, refused: what it refuses keeps it on past
	   campaign_cooldown (its failures alone stopped with the first
	   round) */
	for (t = t0 + 15; t <= t0 + 75; t += 10) {
		for (i = 0; i < 6; i++) {
			snprintf(user, sizeof(user), "camp-spray-%u", i);
			snprintf(addr, sizeof(addr), "100.78.%u.%u", i, (unsigned int)(t - t0));
			campaign_login(i % 2 == 0 ? a : b, user, addr, "Autumn2026",
				       AB_OUTCOME_FAILURE, t, &d);
			assert_int_equal(d.verdict, AB_REJECT);
			assert_int_equal(d.why, AB_REASON_CAMPAIGN_LOCKED);
		}
		/* the next second's read sees them */
		campaign_login(b, "camp-home", "100.70.0.9", "right", AB_OUTCOME_SUCCESS,
			       t + 1, &d);
		assert_true(d.campaign);
	}
	assert_int_equal(la.off + lb.off, 0);
	/* the spray stops: campaign_cooldown later, it ends, logged once,
	   and the normal budget is back */
	campaign_login(a, "camp-spray-3", "100.72.3.1", "Spring2026", AB_OUTCOME_FAILURE,
		       t0 + 130, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_false(d.campaign);
	campaign_login(b, "camp-spray-4", "100.72.4.1", "Spring2026", AB_OUTCOME_FAILURE,
		       t0 + 131, &d);
	assert_int_equal(d.verdict, AB_ALLOW);
	assert_int_equal(la.off + lb.off, 1);
	assert_int_equal(la.on_rate + lb.on_rate, 1);
	/* the tests after this one run at the real clock */
	assert_int_equal(ab_tracker_campaign_set(a, AB_CAMPAIGN_FORCED_OFF, t0, &error), 0);
	ab_tracker_deinit(&a);
	ab_tracker_deinit(&b);
	ab_config_free(&cfg);
}

/* PAM: one wrong password on more than campaign_password_accounts
   accounts turns it on (the rate alone would not: floor 1000); the same
   number of accounts each with a password of its own does not. */
static void test_campaign_one_password_many_accounts(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *a;
	struct campaign_lines la = { 0, 0, 0 };
	struct ab_campaign_status st;
	struct ab_decision d;
	const char *error;
	char user[32], addr[32], pw[32];
	time_t t0 = time(NULL) + 300;
	unsigned int i;

	(void)state;
	campaign_config(&cfg, "1000");
	assert_int_equal(ab_tracker_init(&cfg, campaign_log, &la, &a, &error), 0);
	assert_int_equal(ab_tracker_campaign_set(a, AB_CAMPAIGN_AUTO, t0, &error), 0);
	for (i = 0; i < 8; i++) {
		snprintf(user, sizeof(user), "pwcamp-own-%u", i);
		snprintf(addr, sizeof(addr), "100.75.%u.1", i);
		snprintf(pw, sizeof(pw), "own-password-%u", i);
		campaign_login(a, user, addr, pw, AB_OUTCOME_FAILURE, t0, &d);
	}
	assert_int_equal(la.on_password, 0);
	for (i = 0; i < 5; i++) {
		snprintf(user, sizeof(user), "pwcamp-%u", i);
		snprintf(addr, sizeof(addr), "100.76.%u.1", i);
		campaign_login(a, user, addr, "Summer2026!", AB_OUTCOME_FAILURE, t0 + 1, &d);
		assert_int_equal(d.verdict, AB_ALLOW);
		/* the same account twice counts once */
		campaign_login(a, user, "100.77.0.1", "Summer2026!", AB_OUTCOME_FAILURE,
			       t0 + 1, &d);
		assert_int_equal(la.on_password, i < 4 ? 0U : 1U);
	}
	assert_int_equal(ab_tracker_campaign_status(a, t0 + 2, &st, &error), 0);
	assert_true(st.on);
	assert_int_equal(st.state.cause, AB_CAMPAIGN_BY_PASSWORD);
	assert_int_equal(st.state.rate, 5);
	assert_int_equal(la.on_rate, 0);
	assert_int_equal(ab_tracker_campaign_set(a, AB_CAMPAIGN_FORCED_OFF, t0, &error), 0);
	ab_tracker_deinit(&a);
	ab_config_free(&cfg);
}

static int log_errors;
static void count_log(enum ab_log_level level, const char *msg, void *ctx)
{
	(void)msg;
	(void)ctx;
	if (level == AB_LOG_ERROR)
		log_errors++;
}

static void fail_mode_case(bool hung, enum ab_fail_mode mode)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	struct ab_attempt a;
	struct ab_decision d;
	struct ab_store_stats stats;
	const char *error;
	double start, worst = 0, t;
	int i;

	make_config(&cfg);
	cfg.fail_mode = mode;
	assert_int_equal(ab_tracker_init(&cfg, count_log, NULL, &tracker, &error), 0);
	assert_int_equal(ab_attempt_init(tracker, &a, "dave", "192.0.2.44", "imap",
					 NULL, 0, &error), 0);
	ab_tracker_allow(tracker, &a, time(NULL), AB_ALLOW_DRY_RUN, &d);
	assert_false(d.store_failed);

	if (hung)
		mc_pause();
	else
		mc_stop();
	log_errors = 0;
	for (i = 0; i < 20; i++) {
		start = now_ms();
		ab_tracker_allow(tracker, &a, time(NULL), 0, &d);
		t = now_ms() - start;
		if (t > worst)
			worst = t;
		assert_true(d.store_failed);
		assert_int_equal(d.verdict, mode == AB_FAIL_OPEN ? AB_ALLOW : AB_REJECT);
	}
	login_stats(tracker, &stats);
	print_message("  %s memcached, fail_mode=%s: slowest of 20 decisions %.1f ms "
		      "(poll_timeout %u ms), breaker opened %llu, skipped %llu\n",
		      hung ? "hung" : "dead", mode == AB_FAIL_OPEN ? "open" : "closed",
		      worst, cfg.poll_timeout_ms, stats.breaker_opened, stats.skipped);
	/* bounded: a generous multiple of the configured timeouts, far below
	   anything a client would notice as a hang */
	assert_true(worst < 1000.0);
	assert_int_equal(stats.breaker_opened, 1);
	assert_true(stats.skipped >= 15);
	/* logged once, not once per login */
	assert_int_equal(log_errors, 1);

	if (hung) {
		kill(mc_pid, SIGCONT);
	} else {
		mc_start();
	}
	/* after the cooldown the breaker lets a request through again */
	sleep(cfg.breaker_cooldown_s + 1);
	ab_tracker_allow(tracker, &a, time(NULL), AB_ALLOW_DRY_RUN, &d);
	if (d.store_failed) {
		/* the store may still hold the server as dead for
		   dead_timeout after a refused connection */
		sleep(cfg.dead_timeout_s);
		ab_tracker_allow(tracker, &a, time(NULL), AB_ALLOW_DRY_RUN, &d);
	}
	assert_false(d.store_failed);
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

/* memcached_servers as the store reads it: host:port, a bare host (port
   11211), [IPv6]:port or a bare IPv6 address, comma- or space-separated;
   anything else is an error that says what is wrong. */
/* A lock set while one of two servers is down is still in force once
   that server is back, empty: locks are kept on the two servers that rank
   highest for their key, and the one that stayed ranks second or better
   when the other returns. Eight accounts, so that some locks have their
   first home on the server that went away. */
static void test_lock_set_during_outage_survives_return(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	struct ab_attempt a;
	struct ab_decision d;
	struct ab_account_status st;
	const char *error;
	char servers[64], addr[32], pw[16], user[16];
	int mc2_port = free_port();
	time_t now = time(NULL);
	unsigned int u, f, locked = 0;

	(void)state;
	make_config(&cfg);
	snprintf(servers, sizeof(servers), "127.0.0.1:%d,127.0.0.1:%d", mc_port, mc2_port);
	assert_int_equal(ab_config_set(&cfg, "memcached_servers", servers, "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "server_failure_limit", "1", "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "dead_timeout", "1s", "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "connect_timeout", "100ms", "test", &error), 0);
	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &tracker, &error), 0);

	/* the second server is never started before the outage: what it
	   would have held is lost with it anyway */
	for (u = 0; u < 8; u++) {
		snprintf(user, sizeof(user), "outage%u", u);
		for (f = 0; f < cfg.account_lock_failures; f++) {
			snprintf(addr, sizeof(addr), "100.%u.%u.1", 70 + u, f);
			snprintf(pw, sizeof(pw), "guess%u", f);
			assert_int_equal(ab_attempt_init(tracker, &a, user, addr, "imap",
							 pw, strlen(pw), &error), 0);
			(void)ab_tracker_report(tracker, &a, AB_OUTCOME_FAILURE, now, &error);
		}
		assert_int_equal(ab_tracker_account_status(tracker, user, now, &st, &error), 0);
		assert_true(st.lock_left_s > 0);
	}

	/* the server comes (back) on its port, empty, and rejoins the pool */
	mc2_pid = mc_spawn(mc2_port);
	usleep(1100 * 1000);	/* dead_timeout */

	for (u = 0; u < 8; u++) {
		snprintf(user, sizeof(user), "outage%u", u);
		assert_int_equal(ab_tracker_account_status(tracker, user, now, &st, &error), 0);
		locked += st.lock_left_s > 0;
		ab_attempt_init(tracker, &a, user, "198.51.100.77", "imap", NULL, 0, &error);
		ab_tracker_allow(tracker, &a, now, AB_ALLOW_DRY_RUN, &d);
		assert_int_equal(d.verdict, AB_REJECT);
	}
	print_message("  locks set during an outage, in force after the server's return: %u of 8\n",
		      locked);
	assert_int_equal(locked, 8);
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

/* pam_authbrake's logins are processes of their own: what one learns of
   a hung server, the next knows from the state file, and does not wait
   poll_timeout for it again. */
static void test_hung_server_remembered_across_processes(void **state)
{
	struct ab_config cfg;
	struct ab_store *first, *next;
	struct ab_store_stats stats;
	const char *error, *keys[1] = { "ab1:t9:k" };
	char path[160];
	uint64_t values[1];
	bool found[1];
	double t0, first_ms, next_ms;

	(void)state;
	snprintf(path, sizeof(path), "%s/run/memcached.state", tmpdir);
	make_config(&cfg);
	assert_int_equal(ab_config_set(&cfg, "poll_timeout", "300ms", "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "breaker_failures", "1", "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "breaker_cooldown", "30s", "test", &error), 0);
	assert_int_equal(ab_store_init(&cfg, NULL, NULL, &first, &error), 0);
	assert_int_equal(ab_store_share_state(first, path, &error), 0);
	assert_int_equal(ab_store_mget(first, keys, 1, values, found, &error), 0);
	mc_pause();
	t0 = now_ms();
	assert_int_equal(ab_store_mget(first, keys, 1, values, found, &error), -1);
	first_ms = now_ms() - t0;
	ab_store_deinit(&first);

	assert_int_equal(ab_store_init(&cfg, NULL, NULL, &next, &error), 0);
	assert_int_equal(ab_store_share_state(next, path, &error), 0);
	t0 = now_ms();
	assert_int_equal(ab_store_mget(next, keys, 1, values, found, &error), -1);
	next_ms = now_ms() - t0;
	ab_store_get_stats(next, &stats);
	print_message("  hung memcached: the first process waited %.1f ms, the next %.1f ms "
		      "(skipped %llu)\n", first_ms, next_ms, stats.skipped);
	assert_true(first_ms >= 250);
	assert_true(next_ms < 100);
	assert_int_equal(stats.skipped, 1);
	ab_store_deinit(&next);
	kill(mc_pid, SIGCONT);
	ab_config_free(&cfg);
}

/* One report that sets two blocks (the address's and its subnet's) takes
   a slot of `authbrake list`'s ring for each: both are listed. */
static void test_tracker_two_blocks_two_list_entries(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	struct ab_attempt a;
	struct ab_recent_list *list = calloc(1, sizeof(*list));
	struct ab_store_stats before, after;
	const char *error;
	time_t now = time(NULL);
	unsigned int i, kinds = 0;

	(void)state;
	assert_non_null(list);
	make_config(&cfg);
	assert_int_equal(ab_config_set(&cfg, "ip_block_failures", "2", "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "net_block_failures", "2", "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "net_free_failures", "0", "test", &error), 0);
	assert_int_equal(ab_config_set(&cfg, "ip_free_failures", "0", "test", &error), 0);
	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &tracker, &error), 0);
	for (i = 0; i < 2; i++) {
		assert_int_equal(ab_attempt_init(tracker, &a, i == 0 ? "henry" : "iris",
						 "100.68.1.1", "imap", NULL, 0, &error), 0);
		login_stats(tracker, &before);
		assert_int_equal(ab_tracker_report(tracker, &a, AB_OUTCOME_FAILURE, now, &error), 0);
		login_stats(tracker, &after);
	}
	/* the second report set both blocks: one round trip more, not two */
	assert_int_equal(after.requests - before.requests, 3);
	assert_int_equal(ab_recent_list(tracker, now, list, &error), 0);
	/* (the ring also holds what the tests before set) */
	for (i = 0; i < list->count; i++) {
		const struct ab_recent_entry *e = &list->items[i].entry;
		char addr[AB_ADDR_STRLEN];

		if (e->kind == AB_RECENT_ACCOUNT)
			continue;
		ab_addr_str(&e->net.net, e->net.prefix, addr);
		if (strcmp(addr, e->kind == AB_RECENT_ADDRESS ? "100.68.1.1" :
			   "100.68.1.0/24") == 0)
			kinds |= 1U << e->kind;
	}
	assert_int_equal(kinds, (1U << AB_RECENT_ADDRESS) | (1U << AB_RECENT_SUBNET));
	free(list);
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

static void test_server_list(void **state)
{
	static const char *const good[] = {
		"127.0.0.1:11211", "localhost", "[::1]:11211, 127.0.0.1:2",
		"::1", "a.example:1 b.example:2,c.example:3",
	};
	static const struct { const char *list, *expect; } bad[] = {
		{ "127.0.0.1:0", "not a port" },
		{ "127.0.0.1:70000", "not a port" },
		{ "h.example:abc", "not a port" },
		{ "h.example:", "not a port" },
		{ "[::1", "use [IPv6]:port" },
		{ "[::1]x", "use [IPv6]:port" },
		{ "1.2.3.4:5:6", "not host:port" },
		{ ", ,", "is empty" },
		{ "h.example:1, h.example:1", "listed twice" },
		{ "ho$t:1", "not a host name" },
		{ ":11211", "host is missing" },
	};
	struct ab_config cfg;
	struct ab_store *store;
	const char *error;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		make_config(&cfg);
		assert_int_equal(ab_config_set(&cfg, "memcached_servers", good[i],
					       "test", &error), 0);
		if (ab_store_init(&cfg, NULL, NULL, &store, &error) < 0)
			fail_msg("'%s': %s", good[i], error);
		ab_store_deinit(&store);
		ab_config_free(&cfg);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		make_config(&cfg);
		assert_int_equal(ab_config_set(&cfg, "memcached_servers", bad[i].list,
					       "test", &error), 0);
		assert_int_equal(ab_store_init(&cfg, NULL, NULL, &store, &error), -1);
		print_message("  '%s': %s\n", bad[i].list, error);
		assert_non_null(strstr(error, bad[i].expect));
		assert_null(store);
		ab_config_free(&cfg);
	}
}

/* memcached's "evictions" statistic, read with a STAT request: it grows
   when the cache (16 MB here) is filled past its size. The store's
   connection keeps working for batches after it. */
static void test_evictions_read_by_stat(void **state)
{
	enum { BATCH = 1024 };
	static struct ab_store_op ops[BATCH];
	static char keys[BATCH][40];
	struct ab_config cfg;
	struct ab_store *store;
	const char *error;
	uint64_t before = 0, after = 0, v = 0;
	unsigned int round, i;

	(void)state;
	make_config(&cfg);
	assert_int_equal(ab_store_init(&cfg, NULL, NULL, &store, &error), 0);
	if (ab_store_evictions(store, &before, &error) < 0)
		fail_msg("%s", error);
	after = before;
	for (round = 0; round < 1000 && after == before; round++) {
		for (i = 0; i < BATCH; i++) {
			snprintf(keys[i], sizeof(keys[i]), "ab1:ev:%u:%u", round, i);
			memset(&ops[i], 0, sizeof(ops[i]));
			ops[i].cmd = AB_STORE_SET;
			ops[i].key = keys[i];
			ops[i].value = 1234567890123ULL;
			ops[i].ttl_s = 600;
		}
		assert_int_equal(ab_store_run(store, ops, BATCH, &error), 0);
		if (round % 20 == 19 &&
		    ab_store_evictions(store, &after, &error) < 0)
			fail_msg("%s", error);
	}
	print_message("  evictions %llu -> %llu after %u batches of %d sets\n",
		      (unsigned long long)before, (unsigned long long)after,
		      round, BATCH);
	assert_true(after > before);
	assert_int_equal(ab_store_incr(store, "ab1:ev:after", 1, 60, &v, &error), 0);
	assert_int_equal(v, 1);
	ab_store_deinit(&store);
	ab_config_free(&cfg);
}

static void test_hung_memcached_open(void **state)
{
	(void)state;
	fail_mode_case(true, AB_FAIL_OPEN);
}

static void test_dead_memcached_closed(void **state)
{
	(void)state;
	fail_mode_case(false, AB_FAIL_CLOSED);
}

/* ab-cost.h's table is what logins cost: each case made to happen on a
   fresh account, the store's counters read around it. */
static void cost_check(struct ab_tracker *tracker, enum ab_cost_case c,
		       const struct ab_store_stats *before)
{
	struct ab_store_stats after;

	login_stats(tracker, &after);
	print_message("  %-36s %llu round trips, %llu ops (table: %u, %u)\n",
		      ab_costs[c].what, after.requests - before->requests,
		      after.ops - before->ops, ab_costs[c].round_trips,
		      ab_costs[c].ops);
	assert_int_equal(after.requests - before->requests, ab_costs[c].round_trips);
	assert_int_equal(after.ops - before->ops, ab_costs[c].ops);
}

static void cost_login(struct ab_tracker *tracker, const char *user,
		       unsigned int n, enum ab_outcome outcome,
		       enum ab_cost_case allow_case, enum ab_cost_case report_case)
{
	struct ab_store_stats before;
	struct ab_attempt a;
	struct ab_decision d;
	const char *error;
	char addr[32], sess[32];

	snprintf(addr, sizeof(addr), "100.69.%u.1", n);
	snprintf(sess, sizeof(sess), "cost-%s-%u", user, n);
	/* a password's fingerprint, as Dovecot's hash of it gives one */
	assert_int_equal(ab_attempt_init(tracker, &a, user, addr, "imap",
					 sess, strlen(sess), &error), 0);
	ab_attempt_set_session(&a, sess, strlen(sess));
	login_stats(tracker, &before);
	ab_tracker_allow(tracker, &a, time(NULL), 0, &d);
	if (allow_case != AB_COST_COUNT)
		cost_check(tracker, allow_case, &before);
	if (d.verdict == AB_REJECT)
		return;
	login_stats(tracker, &before);
	assert_int_equal(ab_tracker_report(tracker, &a, outcome, time(NULL), &error), 0);
	if (report_case != AB_COST_COUNT)
		cost_check(tracker, report_case, &before);
}

static void test_costs_as_tabled(void **state)
{
	struct ab_config cfg;
	struct ab_tracker *tracker;
	const char *error;
	unsigned int i;

	(void)state;
	make_config(&cfg);
	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &tracker, &error), 0);
	cost_login(tracker, "cost-ok", 1, AB_OUTCOME_SUCCESS, AB_COST_ALLOW,
		   AB_COST_REPORT_SUCCESS);
	for (i = 1; i < cfg.account_lock_failures; i++)
		cost_login(tracker, "cost-lock", i, AB_OUTCOME_FAILURE,
			   AB_COST_ALLOW, AB_COST_REPORT_FAILURE);
	cost_login(tracker, "cost-lock", i, AB_OUTCOME_FAILURE, AB_COST_ALLOW,
		   AB_COST_REPORT_LOCKS);
	cost_login(tracker, "cost-lock", 100, AB_OUTCOME_FAILURE,
		   AB_COST_ALLOW_REFUSED, AB_COST_COUNT);
	/* from the same subnet: a lock spares familiar ones */
	cost_login(tracker, "cost-lock", 100, AB_OUTCOME_FAILURE,
		   AB_COST_ALLOW_REMEMBERED, AB_COST_COUNT);
	ab_tracker_deinit(&tracker);
	ab_config_free(&cfg);
}

/* --- the engine's promises, checked on random histories ------------------

   Random sequences of attempts (an attacker from two unfamiliar subnets,
   the user from home), their reports, admin blocks, unblocks and
   unlocks, and clock steps, at the default windows, through the tracker
   and a real memcached, on a simulated clock. After every step:
   - status says what decide does: a dry-run allow is refused exactly
     when status shows a block or lock that applies, and its retry_after
     is the latest time left status shows;
   - retry_after is exact: a second before it the attempt is still
     refused, at it the attempt is let through;
   - BOUNDS (authbrake.conf(5)): the attacker's password checks against
     the account are at most 10 in any 12 h, 20 in any day, 80 in any
     week, and at most ip_block_failures per address in any ip_window.
   AB_PROPERTY_SEED and AB_PROPERTY_RUNS repeat or widen a run. */

#define PROP_ADDRS 4		/* attacker: 2 in one /24, 1 in another; home */
#define PROP_HOME 3
#define PROP_CHECKS_MAX 4096

struct prop {
	struct ab_tracker *tracker;
	const struct ab_config *cfg;
	unsigned long long seed;
	unsigned int run, step;
	char account[32];
	char addr[PROP_ADDRS][48];
	time_t t;
	/* the attacker's password checks, per account and per address */
	time_t checks[PROP_CHECKS_MAX];
	unsigned int n_checks;
	time_t addr_checks[PROP_ADDRS][PROP_CHECKS_MAX];
	unsigned int n_addr_checks[PROP_ADDRS];
	bool home_familiar;
	time_t familiar_until;
	char trace[2048];
};

static unsigned long long prop_rng;

static unsigned int prop_rand(unsigned int n)
{
	/* xorshift64*: reproducible from the seed printed on failure */
	prop_rng ^= prop_rng >> 12;
	prop_rng ^= prop_rng << 25;
	prop_rng ^= prop_rng >> 27;
	return (unsigned int)((prop_rng * 2685821657736338717ULL) >> 33) % n;
}

static void prop_trace(struct prop *p, const char *fmt, ...)
{
	size_t len = strlen(p->trace);
	va_list args;

	if (len > sizeof(p->trace) - 128) {
		memmove(p->trace, p->trace + len / 2, len - len / 2 + 1);
		len = strlen(p->trace);
	}
	va_start(args, fmt);
	vsnprintf(p->trace + len, sizeof(p->trace) - len, fmt, args);
	va_end(args);
}

#define PROP_CHECK(p, cond) do { \
	if (!(cond)) { \
		fprintf(stderr, "property failed: %s\n  seed %llu run %u step %u t %lld\n" \
			"  rerun: AB_PROPERTY_SEED=%llu\n  last steps:%s\n", \
			#cond, (p)->seed, (p)->run, (p)->step, \
			(long long)(p)->t, (p)->seed, (p)->trace); \
		fail(); \
	} \
} while (0)

static unsigned int in_last(const time_t *times, unsigned int n, time_t t,
			    time_t span)
{
	unsigned int i, count = 0;

	for (i = 0; i < n; i++)
		count += times[i] > t - span;
	return count;
}

static void prop_attempt(struct prop *p, unsigned int who, bool dry,
			 time_t t, struct ab_attempt *a_r, struct ab_decision *d)
{
	uint8_t session[AB_SESSION_LEN];
	const char *error;
	unsigned int i;

	/* no password fingerprint: a 16-bit one matches an earlier wrong
	   password now and then, and such a retry is not counted (BOUNDS
	   names the exception) */
	assert_int_equal(ab_attempt_init(p->tracker, a_r, p->account, p->addr[who],
					 "imap", NULL, 0, &error), 0);
	for (i = 0; i < sizeof(session); i++)
		session[i] = (uint8_t)prop_rand(256);
	ab_attempt_set_session(a_r, session, sizeof(session));
	ab_tracker_allow(p->tracker, a_r, t, dry ? AB_ALLOW_DRY_RUN : 0, d);
	PROP_CHECK(p, !d->store_failed);
}

/* status's view of one origin: refused, and the latest time left */
static bool prop_status(struct prop *p, unsigned int who, time_t t,
			unsigned long long *left_r)
{
	struct ab_address_status as;
	struct ab_account_status st;
	const char *error;
	bool refused = false;

	*left_r = 0;
	assert_int_equal(ab_tracker_address_status(p->tracker, p->addr[who], t,
						   &as, &error), 0);
	assert_int_equal(ab_tracker_account_status(p->tracker, p->account, t,
						   &st, &error), 0);
	if (as.blocked) {
		refused = true;
		*left_r = as.block_left_s;
	}
	if (as.net_blocked) {
		refused = true;
		if (as.net_block_left_s > *left_r)
			*left_r = as.net_block_left_s;
	}
	if (who == PROP_HOME && p->home_familiar && t < p->familiar_until ?
	    st.familiar_refused : st.locked) {
		refused = true;
		if ((who == PROP_HOME && p->home_familiar && t < p->familiar_until ?
		     st.familiar_left_s : st.lock_left_s) > *left_r)
			*left_r = who == PROP_HOME && p->home_familiar &&
				t < p->familiar_until ? st.familiar_left_s :
				st.lock_left_s;
	}
	return refused;
}

static void prop_check_agreement(struct prop *p, unsigned int who)
{
	struct ab_attempt a;
	struct ab_decision d, later;
	unsigned long long left;
	bool refused;

	prop_attempt(p, who, true, p->t, &a, &d);
	refused = prop_status(p, who, p->t, &left);
	PROP_CHECK(p, refused == (d.verdict == AB_REJECT));
	if (!refused)
		return;
	PROP_CHECK(p, d.retry_after_s == left);
	PROP_CHECK(p, d.retry_after_s > 0);
	/* exact: refused a second before, let through at it */
	prop_attempt(p, who, true, p->t + (time_t)d.retry_after_s - 1, &a, &later);
	PROP_CHECK(p, later.verdict == AB_REJECT);
	prop_attempt(p, who, true, p->t + (time_t)d.retry_after_s, &a, &later);
	PROP_CHECK(p, later.verdict != AB_REJECT);
}

static void prop_record_check(struct prop *p, unsigned int who)
{
	const struct ab_config *cfg = p->cfg;

	if (who == PROP_HOME)
		return;
	PROP_CHECK(p, p->n_checks < PROP_CHECKS_MAX);
	p->checks[p->n_checks++] = p->t;
	p->addr_checks[who][p->n_addr_checks[who]++] = p->t;
	PROP_CHECK(p, in_last(p->checks, p->n_checks, p->t,
			      cfg->account_window_s) <= cfg->account_lock_failures);
	PROP_CHECK(p, in_last(p->checks, p->n_checks, p->t, 86400) <=
		   2 * cfg->account_lock_failures);
	PROP_CHECK(p, in_last(p->checks, p->n_checks, p->t, 7 * 86400) <=
		   8 * cfg->account_lock_failures);
	PROP_CHECK(p, in_last(p->addr_checks[who], p->n_addr_checks[who], p->t,
			      cfg->ip_window_s) <= cfg->ip_block_failures);
}

static void prop_run(struct prop *p, unsigned int steps)
{
	static const time_t clock_steps[] = { 1, 7, 60, 600, 3600, 4 * 3600, 11 * 3600 };
	struct ab_attempt a;
	struct ab_decision d;
	const char *error;
	unsigned int who, roll;

	for (p->step = 0; p->step < steps; p->step++) {
		roll = prop_rand(100);
		if (roll < 62) {
			/* the attacker, from one of three addresses */
			who = prop_rand(3);
			prop_attempt(p, who, false, p->t, &a, &d);
			prop_trace(p, " A%u:%c", who, "atr"[d.verdict]);
			if (d.verdict != AB_REJECT) {
				prop_record_check(p, who);
				assert_int_equal(ab_tracker_report(p->tracker, &a,
					AB_OUTCOME_FAILURE, p->t, &error), 0);
			} else if (prop_rand(2) == 0) {
				assert_int_equal(ab_tracker_report(p->tracker, &a,
					AB_OUTCOME_POLICY_REJECT, p->t, &error), 0);
			}
		} else if (roll < 72) {
			/* the user at home: mostly right, sometimes a typo */
			bool ok = prop_rand(4) != 0;

			prop_attempt(p, PROP_HOME, false, p->t, &a, &d);
			prop_trace(p, " H%c%c", "atr"[d.verdict], ok ? '+' : '-');
			if (d.verdict != AB_REJECT) {
				assert_int_equal(ab_tracker_report(p->tracker, &a,
					ok ? AB_OUTCOME_SUCCESS : AB_OUTCOME_FAILURE,
					p->t, &error), 0);
				if (ok) {
					p->home_familiar = true;
					p->familiar_until = p->t +
						(time_t)p->cfg->familiar_days * 86400;
				}
			}
		} else if (roll < 95) {
			time_t step = clock_steps[prop_rand(sizeof(clock_steps) /
							    sizeof(clock_steps[0]))];

			p->t += step;
			prop_trace(p, " +%llds", (long long)step);
		} else if (roll < 97) {
			unsigned int dur = 60 + prop_rand(7200);

			who = prop_rand(3);
			assert_int_equal(ab_tracker_block(p->tracker, p->addr[who], dur,
							  p->t, &error), 0);
			prop_trace(p, " block%u:%us", who, dur);
		} else if (roll < 99) {
			who = prop_rand(3);
			assert_int_equal(ab_tracker_unblock(p->tracker, p->addr[who],
							    p->t, &error), 0);
			/* what an administrator clears is counted anew */
			p->n_addr_checks[who] = 0;
			prop_trace(p, " unblock%u", who);
		} else {
			assert_int_equal(ab_tracker_unlock(p->tracker, p->account,
							   p->t, &error), 0);
			p->n_checks = 0;
			prop_trace(p, " unlock");
		}
		/* an attacker's origin and the user's home */
		prop_check_agreement(p, prop_rand(3));
		prop_check_agreement(p, PROP_HOME);
	}
}

static void test_property_status_decide_bounds(void **state)
{
	static struct prop p;
	struct ab_config cfg;
	const char *env, *error;
	unsigned int runs = 1500, steps = 60, run;

	(void)state;
	make_config(&cfg);
	/* what this process remembers would answer before the store does */
	assert_int_equal(ab_config_set(&cfg, "verdict_cache", "0", "test", &error), 0);
	assert_int_equal(ab_tracker_init(&cfg, NULL, NULL, &p.tracker, &error), 0);
	p.cfg = &cfg;
	env = getenv("AB_PROPERTY_SEED");
	p.seed = env != NULL ? strtoull(env, NULL, 10) :
		(unsigned long long)time(NULL) * 2654435761ULL + (unsigned long long)getpid();
	if (p.seed == 0)
		p.seed = 1;
	if ((env = getenv("AB_PROPERTY_RUNS")) != NULL)
		runs = (unsigned int)strtoul(env, NULL, 10);
	prop_rng = p.seed;
	print_message("  property: seed %llu, %u runs of %u steps\n", p.seed, runs, steps);
	for (run = 0; run < runs; run++) {
		p.run = run;
		p.trace[0] = '\0';
		p.n_checks = 0;
		memset(p.n_addr_checks, 0, sizeof(p.n_addr_checks));
		p.home_familiar = false;
		/* names of this run only; somewhere in a bucket, in 2027 */
		snprintf(p.account, sizeof(p.account), "prop%llu.%u",
			 p.seed % 100000, run);
		snprintf(p.addr[0], sizeof(p.addr[0]), "10.%u.%u.1", run >> 8, run & 255);
		snprintf(p.addr[1], sizeof(p.addr[1]), "10.%u.%u.2", run >> 8, run & 255);
		snprintf(p.addr[2], sizeof(p.addr[2]), "11.%u.%u.1", run >> 8, run & 255);
		snprintf(p.addr[3], sizeof(p.addr[3]), "12.%u.%u.1", run >> 8, run & 255);
		p.t = (time_t)1800000000 + (time_t)prop_rand(86400 * 7);
		prop_run(&p, steps);
	}
	ab_tracker_deinit(&p.tracker);
	ab_config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counters_and_ttl),
		cmocka_unit_test(test_mget_is_one_request),
		cmocka_unit_test(test_tracker_dictionary_run_blocks),
		cmocka_unit_test(test_tracker_lockout_and_familiar),
		cmocka_unit_test(test_tracker_parallel_allows_hold_places),
		cmocka_unit_test(test_tracker_success_gives_places_back),
		cmocka_unit_test(test_tracker_racing_nodes_one_block),
		cmocka_unit_test(test_racing_creation_counts_every_increment),
		cmocka_unit_test(test_lock_set_during_outage_survives_return),
		cmocka_unit_test(test_hung_server_remembered_across_processes),
		cmocka_unit_test(test_costs_as_tabled),
		cmocka_unit_test(test_tracker_two_blocks_two_list_entries),
		cmocka_unit_test(test_server_list),
		cmocka_unit_test(test_evictions_read_by_stat),
		cmocka_unit_test(test_hung_memcached_open),
		cmocka_unit_test(test_dead_memcached_closed),
		cmocka_unit_test(test_property_status_decide_bounds),
		cmocka_unit_test(test_campaign_shared_by_nodes),
		cmocka_unit_test(test_campaign_one_password_many_accounts),
	};
	return cmocka_run_group_tests_name("store", tests, setup, teardown);
}
