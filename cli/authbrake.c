/* authbrake: the administrator's tool. status, list, unlock, block,
   unblock, a dry-run check and genkey, all through tracker/: no policy
   lives here. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <time.h>

#include "ab-recent.h"
#include "ab-tracker.h"
#include "cli-output.h"

enum cli_exit {
	EXIT_OK = 0,
	EXIT_REJECTED = 1,	/* check would reject; status shows a lock or block */
	EXIT_USAGE = 2,		/* bad command line or configuration */
	EXIT_STORE = 3,		/* memcached unreachable */
	EXIT_OTHER = 4,
};

#define WEEK_S (7U * 24U * 3600U)

struct cli {
	const char *config_path;
	bool json;
	struct ab_config cfg;
	bool cfg_loaded;
	struct ab_tracker *tracker;
	/* the tracker reports store failures through its log callback */
	char last_error[768];
};

static const char usage_text[] =
"usage: authbrake [-c FILE] [--json] COMMAND [ARGS]\n"
"\n"
"commands:\n"
"  status USER|ADDRESS|SUBNET   failures, lock or block and time left, familiar\n"
"                               subnets, and what a login would get now;\n"
"                               without one: campaign mode's state\n"
"         [--user USER | --address ADDRESS]   say which, when a name looks\n"
"                                             like an address\n"
"  list                         the addresses, subnets and accounts blocked or\n"
"                               locked now, on every node, with time left\n"
"  check --user USER --address ADDRESS [--protocol PROTO]\n"
"                               dry run of the decision; changes nothing\n"
"  unlock USER                  clear an account's lock and failure count\n"
"  block ADDRESS|SUBNET [--for DURATION]\n"
"                               block now (default block_time; at most 7d)\n"
"  unblock ADDRESS|SUBNET       remove a block and the counts behind it\n"
"  campaign [on|off|auto]       campaign mode (password sprays): show it, force\n"
"                               it on or off, or hand it back to the detector\n"
"  genkey [FILE]                write a new secret (default: secret_file);\n"
"                               never overwrites\n"
"  genkey --api-key [FILE]      write a new policy API key (default:\n"
"                               api_key_file) and print Dovecot's setting\n"
"  config                       print the settings in effect (after reading\n"
"                               the configuration file over the defaults)\n"
"\n"
"options:\n"
"  -c, --config FILE   configuration file (default " AB_CONFIG_DEFAULT_PATH ")\n"
"  --json              machine-readable output (one JSON object)\n"
"  -h, --help          this text\n"
"\n"
"A SUBNET is an IPv4 /24 or an IPv6 /48; an IPv6 /64 counts as one address.\n"
"DURATION: 30s, 15m, 2h, 1d, 1w (a bare number is seconds).\n"
"\n"
"exit status:\n"
"  0  success; check: the login would go on to the password check\n"
"  1  check: the login would be rejected; status: locked or blocked\n"
"  2  usage or configuration error\n"
"  3  memcached unreachable\n"
"  4  any other error\n";

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
	va_list args;

	fflush(stdout);
	fputs("authbrake: ", stderr);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
	return code;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list args;

	fputs("authbrake: ", stderr);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputs("\nTry 'authbrake --help'.\n", stderr);
	return EXIT_USAGE;
}

/* The store's errors start with "memcached"; anything else that fails
   after the arguments were checked is unexpected. */
static int store_error(int ret, const char *what, const char *error)
{
	return fail(ret == AB_ERR_STORE ? EXIT_STORE : EXIT_OTHER,
		    "%s: %s", what, error);
}

static void cli_log(enum ab_log_level level, const char *msg, void *ctx)
{
	struct cli *cli = ctx;
	int prio;

	switch (level) {
	case AB_LOG_DEBUG:
		return;
	case AB_LOG_INFO:
		prio = LOG_INFO;
		break;
	case AB_LOG_WARNING:
		prio = LOG_WARNING;
		break;
	case AB_LOG_ERROR:
	default:
		prio = LOG_ERR;
		snprintf(cli->last_error, sizeof(cli->last_error), "%s", msg);
		break;
	}
	/* administrative actions and store failures go to the system log,
	   where the other faces log theirs */
	syslog(prio, "%s", msg);
}

static int cli_load_config(struct cli *cli)
{
	const char *error;
	size_t len = strlen(cli->config_path);

	ab_config_defaults(&cli->cfg);
	cli->cfg_loaded = true;
	if (ab_config_load(&cli->cfg, cli->config_path, &error) < 0) {
		/* validation errors do not name the file */
		if (strncmp(error, cli->config_path, len) == 0 && error[len] == ':')
			return fail(EXIT_USAGE, "%s", error);
		return fail(EXIT_USAGE, "%s: %s", cli->config_path, error);
	}
	return EXIT_OK;
}

static int cli_init(struct cli *cli)
{
	const char *error;
	int ret;

	if (cli->tracker != NULL)
		return EXIT_OK;		/* a command that shows what it changed */
	if ((ret = cli_load_config(cli)) != EXIT_OK)
		return ret;
	if (ab_tracker_init(&cli->cfg, cli_log, cli, &cli->tracker, &error) < 0)
		return fail(EXIT_USAGE, "%s", error);
	return EXIT_OK;
}

/* --- targets ----------------------------------------------------------- */

enum target_kind {
	TARGET_ADDRESS,		/* an address, or an IPv6 /64 */
	TARGET_SUBNET,		/* /24 or /48 */
};

struct target {
	enum target_kind kind;
	struct ab_cidr cidr;
	char shown[AB_ADDR_STRLEN];	/* normalised: "192.0.2.0/24" */
	char addr[AB_ADDR_STRLEN];	/* the network address, no prefix */
};

static int target_parse(const char *str, struct target *target_r,
			const char **error_r)
{
	static char msg[256];
	struct ab_addr origin;
	const char *error;
	unsigned int full;

	if (ab_cidr_parse(str, &target_r->cidr, &error) < 0) {
		*error_r = error;
		return -1;
	}
	full = (unsigned int)ab_addr_len(&target_r->cidr.net) * 8;
	if (target_r->cidr.prefix == full ||
	    target_r->cidr.prefix == ab_addr_origin_prefix(&target_r->cidr.net)) {
		target_r->kind = TARGET_ADDRESS;
		ab_addr_origin(&target_r->cidr.net, &origin);
		ab_addr_str(&origin, ab_addr_origin_prefix(&origin), target_r->shown);
	} else if (target_r->cidr.prefix == ab_addr_subnet_prefix(&target_r->cidr.net)) {
		target_r->kind = TARGET_SUBNET;
		ab_addr_str(&target_r->cidr.net, target_r->cidr.prefix, target_r->shown);
	} else {
		snprintf(msg, sizeof(msg), "'%s': give an address%s or its /%u subnet",
			 str, target_r->cidr.net.family == AF_INET ? "" : " (or its /64)",
			 ab_addr_subnet_prefix(&target_r->cidr.net));
		*error_r = msg;
		return -1;
	}
	ab_addr_str(&target_r->cidr.net, full, target_r->addr);
	return 0;
}

/* --- decisions --------------------------------------------------------- */

static const char *verdict_name(enum ab_verdict verdict)
{
	switch (verdict) {
	case AB_ALLOW: return "allow";
	case AB_TARPIT: return "tarpit";
	case AB_REJECT: return "reject";
	}
	return "?";
}

static const char *decision_str(const struct ab_decision *d, char *buf, size_t size)
{
	char dur[32];

	switch (d->verdict) {
	case AB_ALLOW:
		snprintf(buf, size, "allow (%s)", d->reason);
		break;
	case AB_TARPIT:
		snprintf(buf, size, "tarpit %us before the password check (%s)",
			 d->delay_s, d->reason);
		break;
	case AB_REJECT:
		if (d->retry_after_s > 0)
			snprintf(buf, size, "reject (%s), may pass again in %s",
				 d->reason, human_duration(d->retry_after_s, dur, sizeof(dur)));
		else
			snprintf(buf, size, "reject (%s)", d->reason);
		break;
	}
	return buf;
}

static void json_decision(struct json_out *out, const char *name,
			  const struct ab_decision *d)
{
	json_object_begin(out, name);
	json_str(out, "verdict", verdict_name(d->verdict));
	json_uint(out, "delay_s", d->verdict == AB_TARPIT ? d->delay_s : 0);
	json_uint(out, "retry_after_s", d->verdict == AB_REJECT ? d->retry_after_s : 0);
	json_str(out, "reason", d->reason != NULL ? d->reason : "");
	json_str(out, "message", d->user_msg != NULL ? d->user_msg : "");
	json_bool(out, "store_failed", d->store_failed);
	json_object_end(out);
}

/* A dry-run allow (with the address's DNSBL answer, looked up when
   memcached keeps none, and not kept); the store's failure is exit 3
   whatever fail_mode says. */
static int dry_run(struct cli *cli, struct ab_attempt *attempt,
		   struct ab_decision *d)
{
	cli->last_error[0] = '\0';
	ab_tracker_dnsbl_check(cli->tracker, attempt, AB_ALLOW_DRY_RUN);
	ab_tracker_allow(cli->tracker, attempt, time(NULL), AB_ALLOW_DRY_RUN, d);
	return d->store_failed ? EXIT_STORE : EXIT_OK;
}

static int report_store_failed(struct cli *cli)
{
	return fail(EXIT_STORE, "%s", cli->last_error[0] != '\0' ?
		    cli->last_error : "memcached unreachable");
}

/* --- option parsing for commands --------------------------------------- */

enum {
	OPT_JSON = 256,
	OPT_USER,
	OPT_ADDRESS,
	OPT_PROTOCOL,
	OPT_FOR,
	OPT_API_KEY,
};

/* getopt_long over a command's own arguments (options may follow the
   operands; "--" ends them); returns the option, -1 at the end, ':' or
   '?' on an error for bad_option(). */
static int next_opt(int argc, char **argv, const struct option *opts,
		    struct cli *cli)
{
	int c;

	for (;;) {
		c = getopt_long(argc, argv, ":h", opts, NULL);
		if (c == OPT_JSON) {
			cli->json = true;
			continue;
		}
		if (c == 'h') {
			fputs(usage_text, stdout);
			exit(EXIT_OK);
		}
		return c;
	}
}

static void reset_getopt(void)
{
	/* glibc: 0 re-initialises the scanner for a new argument vector */
	optind = 0;
	opterr = 0;
}

static int bad_option(const char *cmd, int c, int argc, char **argv)
{
	const char *arg = optind > 0 && optind - 1 < argc ? argv[optind - 1] : "?";

	const char *sep = cmd[0] != '\0' ? ": " : "";

	if (c == ':')
		return usage_error("%s%soption '%s' needs a value", cmd, sep, arg);
	if (optopt != 0 && optopt < 256)
		return usage_error("%s%sunknown option '-%c'", cmd, sep, optopt);
	return usage_error("%s%sunknown option '%s'", cmd, sep, arg);
}

/* --- status ------------------------------------------------------------ */

static int status_account(struct cli *cli, const char *login)
{
	struct ab_account_status st;
	struct ab_attempt attempt;
	struct ab_decision d;
	const char *error;
	char dur[32], buf[512];
	int ret;

	if (ab_attempt_init(cli->tracker, &attempt, login, NULL, NULL, NULL, 0,
			    &error) < 0)
		return usage_error("status: %s", error);
	if ((ret = ab_tracker_account_status(cli->tracker, login, time(NULL), &st,
				      &error)) < 0)
		return store_error(ret, "status", error);
	if ((ret = dry_run(cli, &attempt, &d)) != EXIT_OK)
		return report_store_failed(cli);

	if (cli->json) {
		struct json_out out;

		json_begin(&out, stdout);
		json_str(&out, "type", "account");
		json_str(&out, "account", attempt.account);
		json_uint(&out, "failures", st.failures);
		json_bool(&out, "locked", st.locked);
		json_uint(&out, "lock_left_s", st.lock_left_s);
		json_uint(&out, "locks", st.strikes);
		json_uint(&out, "familiar_failures", st.familiar_failures);
		json_bool(&out, "familiar_refused", st.familiar_refused);
		json_uint(&out, "familiar_left_s", st.familiar_left_s);
		json_uint(&out, "familiar_subnets", st.familiar_subnets);
		json_decision(&out, "allow", &d);
		json_end(&out);
	} else {
		printf("account:          %s\n", attempt.account);
		printf("failures:         %llu from unfamiliar origins (lock at %u)\n",
		       st.failures, cli->cfg.account_lock_failures);
		if (st.locked)
			printf("lock:             locked, %s left\n",
			       human_duration(st.lock_left_s, dur, sizeof(dur)));
		else
			printf("lock:             not locked\n");
		printf("locks so far:     %llu (the next lasts %s)\n", st.strikes,
		       human_duration(ab_escalated_duration(cli->cfg.lock_time_s,
							    cli->cfg.block_max_s,
							    st.strikes),
				      dur, sizeof(dur)));
		printf("familiar subnets: %llu, %llu failures from them (refused at %u)",
		       st.familiar_subnets, st.familiar_failures,
		       cli->cfg.familiar_failures);
		if (st.familiar_refused)
			printf(": refused, %s left",
			       human_duration(st.familiar_left_s, dur, sizeof(dur)));
		printf("\n");
		printf("allow now:        %s\n", decision_str(&d, buf, sizeof(buf)));
		if (st.locked)
			printf("                  (from an unfamiliar origin; its familiar subnets are not locked)\n");
	}
	return st.locked ? EXIT_REJECTED : EXIT_OK;
}

static void print_block(const char *label, bool blocked,
			unsigned long long left, unsigned long long strikes)
{
	char dur[32];

	if (blocked)
		printf("%s blocked, %s left", label,
		       human_duration(left, dur, sizeof(dur)));
	else
		printf("%s not blocked", label);
	if (strikes > 0)
		printf(" (%llu block%s in recent memory)", strikes,
		       strikes == 1 ? "" : "s");
	printf("\n");
}

/* The attempt as if it came over the protocol of proto. */
static void protocol_attempt(struct ab_attempt *attempt,
			     const struct ab_protocol_settings *proto)
{
	snprintf(attempt->protocol, sizeof(attempt->protocol), "%s",
		 proto->protocol);
}

/* What a protocol with networks of its own makes of the address, and
   which list says so. */
static void print_protocol_networks(struct cli *cli, struct ab_attempt *attempt,
				    const struct ab_protocol_settings *proto)
{
	char label[AB_PROTOCOL_MAX + 8];

	protocol_attempt(attempt, proto);
	snprintf(label, sizeof(label), "%s logins:", proto->protocol);
	if (ab_attempt_restricted_out(attempt, &cli->cfg))
		printf("%-18srejected (outside restrict_networks%s%s)\n", label,
		       proto->has_restrict ? "." : "",
		       proto->has_restrict ? proto->protocol : "");
	else if (ab_attempt_trusted(attempt, &cli->cfg))
		printf("%-18strusted (in trusted_networks%s%s: address rules do not apply)\n",
		       label, proto->has_trusted ? "." : "",
		       proto->has_trusted ? proto->protocol : "");
	else
		printf("%-18saddress rules apply (not in trusted_networks%s%s)\n",
		       label, proto->has_trusted ? "." : "",
		       proto->has_trusted ? proto->protocol : "");
}

static int status_address(struct cli *cli, const struct target *target)
{
	struct ab_address_status st;
	struct ab_attempt attempt;
	struct ab_decision d;
	struct ab_addr subnet;
	const char *error;
	char net[AB_ADDR_STRLEN], buf[512];
	bool address = target->kind == TARGET_ADDRESS;
	bool blocked;
	unsigned int i;
	int ret;

	if ((ret = ab_tracker_address_status(cli->tracker, target->addr, time(NULL),
				      &st, &error)) < 0)
		return store_error(ret, "status", error);
	if (address) {
		if (ab_attempt_init(cli->tracker, &attempt, NULL, target->addr,
				    NULL, NULL, 0, &error) < 0)
			return usage_error("status: %s", error);
		if ((ret = dry_run(cli, &attempt, &d)) != EXIT_OK)
			return report_store_failed(cli);
	}
	ab_addr_subnet(&target->cidr.net, &subnet);
	ab_addr_str(&subnet, ab_addr_subnet_prefix(&subnet), net);
	blocked = (address && st.blocked) || st.net_blocked;

	if (cli->json) {
		struct json_out out;

		json_begin(&out, stdout);
		json_str(&out, "type", address ? "address" : "subnet");
		if (address) {
			json_str(&out, "address", target->shown);
			json_uint(&out, "failures", st.failures);
			json_uint(&out, "accounts", st.accounts);
			json_uint(&out, "inflight", st.inflight);
			json_bool(&out, "blocked", st.blocked);
			json_uint(&out, "block_left_s", st.block_left_s);
			json_uint(&out, "strikes", st.strikes);
		}
		json_object_begin(&out, "subnet");
		json_str(&out, "network", net);
		json_uint(&out, "failures", st.net_failures);
		json_uint(&out, "accounts", st.net_accounts);
		json_bool(&out, "blocked", st.net_blocked);
		json_uint(&out, "block_left_s", st.net_block_left_s);
		json_uint(&out, "strikes", st.net_strikes);
		json_object_end(&out);
		if (address) {
			json_bool(&out, "trusted", st.trusted);
			json_bool(&out, "restricted_out", st.restricted_out);
			json_object_begin(&out, "protocols");
			for (i = 0; i < cli->cfg.protocol_count; i++) {
				protocol_attempt(&attempt, &cli->cfg.protocols[i]);
				json_object_begin(&out, attempt.protocol);
				json_bool(&out, "trusted",
					  ab_attempt_trusted(&attempt, &cli->cfg));
				json_bool(&out, "restricted_out",
					  ab_attempt_restricted_out(&attempt, &cli->cfg));
				json_object_end(&out);
			}
			json_object_end(&out);
			json_decision(&out, "allow", &d);
		}
		json_end(&out);
		return blocked ? EXIT_REJECTED : EXIT_OK;
	}
	if (address) {
		printf("address:          %s\n", target->shown);
		printf("failures:         %llu (tarpit over %u, block at %u), %llu accounts tried (block at %u), %llu in flight\n",
		       st.failures, cli->cfg.ip_free_failures,
		       cli->cfg.ip_block_failures, st.accounts,
		       cli->cfg.ip_max_accounts, st.inflight);
		print_block("block:           ", st.blocked, st.block_left_s, st.strikes);
	}
	printf("subnet:           %s\n", net);
	printf("subnet failures:  %llu (tarpit over %u, block at %u), %llu accounts tried (block at %u)\n",
	       st.net_failures, cli->cfg.net_free_failures,
	       cli->cfg.net_block_failures, st.net_accounts,
	       cli->cfg.net_max_accounts);
	print_block("subnet block:    ", st.net_blocked, st.net_block_left_s,
		    st.net_strikes);
	if (address) {
		if (st.trusted)
			printf("trusted:          yes (in trusted_networks: address rules do not apply)\n");
		if (st.restricted_out)
			printf("restricted:       outside restrict_networks: every login is rejected\n");
		for (i = 0; i < cli->cfg.protocol_count; i++)
			print_protocol_networks(cli, &attempt,
						&cli->cfg.protocols[i]);
		printf("allow now:        %s\n", decision_str(&d, buf, sizeof(buf)));
	}
	return blocked ? EXIT_REJECTED : EXIT_OK;
}

static int campaign_show(struct cli *cli);

static int cmd_status(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ "user", required_argument, NULL, OPT_USER },
		{ "address", required_argument, NULL, OPT_ADDRESS },
		{ NULL, 0, NULL, 0 },
	};
	const char *user = NULL, *address = NULL, *error;
	struct target target;
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1) {
		switch (c) {
		case OPT_USER: user = optarg; break;
		case OPT_ADDRESS: address = optarg; break;
		default: return bad_option("status", c, argc, argv);
		}
	}
	if (user != NULL && address != NULL)
		return usage_error("status: give --user or --address, not both");
	if (user == NULL && address == NULL && optind == argc)
		return campaign_show(cli);
	if (user == NULL && address == NULL) {
		if (optind != argc - 1)
			return usage_error("status: give one USER, ADDRESS or SUBNET");
		/* whatever parses as an address or network is one */
		if (ab_cidr_parse(argv[optind], &target.cidr, &error) == 0)
			address = argv[optind];
		else
			user = argv[optind];
	} else if (optind != argc) {
		return usage_error("status: unexpected argument '%s'", argv[optind]);
	}
	if (address != NULL && target_parse(address, &target, &error) < 0)
		return usage_error("status: %s", error);
	if ((ret = cli_init(cli)) != EXIT_OK)
		return ret;
	return user != NULL ? status_account(cli, user) :
		status_address(cli, &target);
}

/* --- check ------------------------------------------------------------- */

static int cmd_check(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ "user", required_argument, NULL, OPT_USER },
		{ "address", required_argument, NULL, OPT_ADDRESS },
		{ "protocol", required_argument, NULL, OPT_PROTOCOL },
		{ NULL, 0, NULL, 0 },
	};
	const char *user = NULL, *address = NULL, *protocol = NULL, *error;
	struct ab_attempt attempt;
	struct ab_decision d;
	char buf[512], line[768];
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1) {
		switch (c) {
		case OPT_USER: user = optarg; break;
		case OPT_ADDRESS: address = optarg; break;
		case OPT_PROTOCOL: protocol = optarg; break;
		default: return bad_option("check", c, argc, argv);
		}
	}
	if (optind != argc)
		return usage_error("check: unexpected argument '%s'", argv[optind]);
	if (user == NULL && address == NULL)
		return usage_error("check: give --user USER and --address ADDRESS");
	if (address != NULL && address[0] == '\0')
		return usage_error("check: --address is empty");
	if (protocol != NULL && (strlen(protocol) >= sizeof(attempt.protocol) ||
				 strspn(protocol, "abcdefghijklmnopqrstuvwxyz"
					"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != strlen(protocol)))
		return usage_error("check: --protocol '%s': letters, digits, - and _ only, up to %zu",
				   protocol, sizeof(attempt.protocol) - 1);
	if ((ret = cli_init(cli)) != EXIT_OK)
		return ret;
	if (ab_attempt_init(cli->tracker, &attempt, user, address, protocol,
			    NULL, 0, &error) < 0)
		return usage_error("check: %s", error);
	ret = dry_run(cli, &attempt, &d);

	if (cli->json) {
		struct json_out out;

		json_begin(&out, stdout);
		if (user != NULL)
			json_str(&out, "account", attempt.account);
		else
			json_null(&out, "account");
		if (attempt.has_addr)
			json_str(&out, "address", ab_addr_str(&attempt.addr,
				(unsigned int)ab_addr_len(&attempt.addr) * 8, buf));
		else
			json_null(&out, "address");
		json_str(&out, "protocol", attempt.protocol);
		json_str(&out, "verdict", verdict_name(d.verdict));
		json_uint(&out, "delay_s", d.verdict == AB_TARPIT ? d.delay_s : 0);
		json_uint(&out, "retry_after_s", d.verdict == AB_REJECT ? d.retry_after_s : 0);
		json_str(&out, "reason", d.reason);
		json_str(&out, "message", d.user_msg);
		json_bool(&out, "store_failed", d.store_failed);
		json_bool(&out, "dnsbl_listed", attempt.dnsbl_listed);
		json_end(&out);
	} else {
		printf("%s\n", decision_str(&d, buf, sizeof(buf)));
		printf("  %s\n", ab_decision_log_line(&attempt, &d, line, sizeof(line)));
		if (attempt.dnsbl_listed)
			printf("  the address is listed in a DNSBL (%s)\n",
			       cli->cfg.dnsbl);
		if (d.verdict == AB_REJECT && d.user_msg[0] != '\0')
			printf("  the client would read: %s\n", d.user_msg);
	}
	if (ret == EXIT_STORE)
		return report_store_failed(cli);
	return d.verdict == AB_REJECT ? EXIT_REJECTED : EXIT_OK;
}

/* --- unlock, block, unblock -------------------------------------------- */

static int cmd_unlock(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct ab_account_status st;
	struct ab_attempt attempt;
	const char *error;
	char dur[32];
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1)
		return bad_option("unlock", c, argc, argv);
	if (optind != argc - 1)
		return usage_error("unlock: give one USER");
	if ((ret = cli_init(cli)) != EXIT_OK)
		return ret;
	if (ab_attempt_init(cli->tracker, &attempt, argv[optind], NULL, NULL,
			    NULL, 0, &error) < 0)
		return usage_error("unlock: %s", error);
	if ((ret = ab_tracker_account_status(cli->tracker, argv[optind], time(NULL),
				      &st, &error)) < 0)
		return store_error(ret, "unlock", error);
	if ((ret = ab_tracker_unlock(cli->tracker, argv[optind], time(NULL), &error)) < 0)
		return store_error(ret, "unlock", error);

	if (cli->json) {
		struct json_out out;

		json_begin(&out, stdout);
		json_str(&out, "account", attempt.account);
		json_bool(&out, "was_locked", st.locked);
		json_uint(&out, "lock_left_s", st.lock_left_s);
		json_uint(&out, "failures_cleared", st.failures);
		json_end(&out);
	} else if (st.locked) {
		printf("%s: unlocked (the lock had %s left); %llu failures cleared\n",
		       attempt.account, human_duration(st.lock_left_s, dur, sizeof(dur)),
		       st.failures);
	} else {
		printf("%s: was not locked; %llu failures cleared\n",
		       attempt.account, st.failures);
	}
	return EXIT_OK;
}

static int cmd_block(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ "for", required_argument, NULL, OPT_FOR },
		{ NULL, 0, NULL, 0 },
	};
	const char *duration = NULL, *error;
	unsigned long long ms;
	unsigned int secs = 0;
	struct target target;
	char dur[32];
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1) {
		if (c != OPT_FOR)
			return bad_option("block", c, argc, argv);
		duration = optarg;
	}
	if (optind != argc - 1)
		return usage_error("block: give one ADDRESS or SUBNET");
	if (target_parse(argv[optind], &target, &error) < 0)
		return usage_error("block: %s", error);
	if (duration != NULL) {
		if (ab_duration_parse_ms(duration, &ms, &error) < 0)
			return usage_error("block: --for %s", error);
		if (ms % 1000 != 0 || ms == 0)
			return usage_error("block: --for %s: give whole seconds, at least 1s",
					   duration);
		if (ms / 1000 > WEEK_S)
			return usage_error("block: --for %s: a block lasts a week (7d) at most",
					   duration);
		secs = (unsigned int)(ms / 1000);
	}
	if ((ret = cli_init(cli)) != EXIT_OK)
		return ret;
	if (secs == 0)
		secs = cli->cfg.block_time_s;
	if ((ret = ab_tracker_block(cli->tracker, target.shown, secs, time(NULL),
			     &error)) < 0)
		return store_error(ret, "block", error);

	if (cli->json) {
		struct json_out out;

		json_begin(&out, stdout);
		json_str(&out, target.kind == TARGET_ADDRESS ? "address" : "subnet",
			 target.shown);
		json_uint(&out, "block_s", secs);
		json_end(&out);
	} else {
		printf("%s %s: blocked for %s\n",
		       target.kind == TARGET_ADDRESS ? "address" : "subnet",
		       target.shown, human_duration(secs, dur, sizeof(dur)));
	}
	return EXIT_OK;
}

static int cmd_unblock(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct ab_address_status st;
	struct target target;
	const char *error;
	char dur[32];
	bool address, was_blocked;
	unsigned long long left;
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1)
		return bad_option("unblock", c, argc, argv);
	if (optind != argc - 1)
		return usage_error("unblock: give one ADDRESS or SUBNET");
	if (target_parse(argv[optind], &target, &error) < 0)
		return usage_error("unblock: %s", error);
	if ((ret = cli_init(cli)) != EXIT_OK)
		return ret;
	if ((ret = ab_tracker_address_status(cli->tracker, target.addr, time(NULL),
				      &st, &error)) < 0)
		return store_error(ret, "unblock", error);
	if ((ret = ab_tracker_unblock(cli->tracker, target.shown, time(NULL), &error)) < 0)
		return store_error(ret, "unblock", error);

	address = target.kind == TARGET_ADDRESS;
	was_blocked = address ? st.blocked : st.net_blocked;
	left = address ? st.block_left_s : st.net_block_left_s;
	if (cli->json) {
		struct json_out out;

		json_begin(&out, stdout);
		json_str(&out, address ? "address" : "subnet", target.shown);
		json_bool(&out, "was_blocked", was_blocked);
		json_uint(&out, "block_left_s", left);
		json_end(&out);
	} else if (was_blocked) {
		printf("%s %s: unblocked (the block had %s left); its counts are cleared\n",
		       address ? "address" : "subnet", target.shown,
		       human_duration(left, dur, sizeof(dur)));
	} else {
		printf("%s %s: was not blocked; its counts are cleared\n",
		       address ? "address" : "subnet", target.shown);
	}
	return EXIT_OK;
}

/* --- list -------------------------------------------------------------- */

static const char *recent_kind_name(enum ab_recent_kind kind)
{
	switch (kind) {
	case AB_RECENT_ADDRESS:
		return "address";
	case AB_RECENT_SUBNET:
		return "subnet";
	case AB_RECENT_ACCOUNT:
		return "account";
	}
	return "?";
}

static const char *recent_who(const struct ab_recent_entry *e,
			      char buf[AB_ADDR_STRLEN])
{
	if (e->kind == AB_RECENT_ACCOUNT)
		return e->account;
	return ab_addr_str(&e->net.net, e->net.prefix, buf);
}

static const char *recent_why(const struct ab_recent_entry *e,
			      char *buf, size_t size)
{
	if (e->admin)
		snprintf(buf, size, "authbrake block");
	else if (e->kind == AB_RECENT_ACCOUNT)
		snprintf(buf, size, "%u failures from unfamiliar origins",
			 e->failures);
	else
		snprintf(buf, size, "%u failures, %u accounts tried",
			 e->failures, e->accounts);
	return buf;
}

static int cmd_list(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct ab_recent_list *list;
	const char *error;
	char who[AB_ADDR_STRLEN], dur[32], why[96], when[32];
	size_t i, width = 3;
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1)
		return bad_option("list", c, argc, argv);
	if (optind != argc)
		return usage_error("list: takes no arguments");
	if ((ret = cli_init(cli)) != EXIT_OK)
		return ret;
	if ((list = malloc(sizeof(*list))) == NULL)
		return fail(EXIT_OTHER, "out of memory");
	if ((ret = ab_recent_list(cli->tracker, time(NULL), list, &error)) < 0) {
		free(list);
		return store_error(ret, "list", error);
	}

	if (cli->json) {
		struct json_out out;

		json_begin(&out, stdout);
		json_array_begin(&out, "blocked");
		for (i = 0; i < list->count; i++) {
			const struct ab_recent_item *it = &list->items[i];

			json_element_begin(&out);
			json_str(&out, "type", recent_kind_name(it->entry.kind));
			json_str(&out, it->entry.kind == AB_RECENT_ACCOUNT ?
				 "account" : it->entry.kind == AB_RECENT_SUBNET ?
				 "subnet" : "address", recent_who(&it->entry, who));
			json_uint(&out, "left_s", it->left_s);
			json_uint(&out, "set_at", (unsigned long long)it->entry.set_at);
			json_uint(&out, "duration_s", it->entry.duration_s);
			json_str(&out, "by", it->entry.admin ? "admin" : "attack");
			json_uint(&out, "failures", it->entry.failures);
			if (it->entry.kind != AB_RECENT_ACCOUNT)
				json_uint(&out, "accounts", it->entry.accounts);
			json_str(&out, "reason", recent_why(&it->entry, why, sizeof(why)));
			json_object_end(&out);
		}
		json_array_end(&out);
		json_uint(&out, "count", list->count);
		json_uint(&out, "slots", AB_RECENT_SLOTS);
		json_uint(&out, "recorded", list->written);
		json_uint(&out, "unreadable", list->unreadable);
		json_end(&out);
		free(list);
		return EXIT_OK;
	}

	for (i = 0; i < list->count; i++) {
		size_t len = strlen(recent_who(&list->items[i].entry, who));

		if (len > width)
			width = len;
	}
	if (list->count > 0)
		printf("%-8s %-*s %-8s %-19s %s\n", "TYPE", (int)width, "WHO",
		       "LEFT", "SET", "WHY");
	for (i = 0; i < list->count; i++) {
		const struct ab_recent_item *it = &list->items[i];
		time_t set_at = it->entry.set_at;
		struct tm tm;

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S",
			 localtime_r(&set_at, &tm));
		printf("%-8s %-*s %-8s %-19s %s\n", recent_kind_name(it->entry.kind),
		       (int)width, recent_who(&it->entry, who),
		       human_duration(it->left_s, dur, sizeof(dur)), when,
		       recent_why(&it->entry, why, sizeof(why)));
	}
	printf("%zu blocked or locked now", list->count);
	if (list->written > AB_RECENT_SLOTS)
		printf(" (of the %u most recent blocks and locks; %llu older ones "
		       "are not kept: authbrake status tells of one you know)",
		       AB_RECENT_SLOTS,
		       (unsigned long long)(list->written - AB_RECENT_SLOTS));
	printf("\n");
	if (list->unreadable > 0)
		printf("%u record%s could not be read (being written as this "
		       "ran, or changed in memcached)\n", list->unreadable,
		       list->unreadable == 1 ? "" : "s");
	free(list);
	return EXIT_OK;
}

/* --- campaign ---------------------------------------------------------- */

static int campaign_show(struct cli *cli)
{
	struct ab_campaign_status st;
	const struct ab_config *cfg;
	char interval[32], when[32], dur[32];
	const char *error;
	time_t now = time(NULL), since;
	int ret;

	if ((ret = cli_init(cli)) != EXIT_OK)
		return ret;
	cfg = &cli->cfg;
	if ((ret = ab_tracker_campaign_status(cli->tracker, now, &st, &error)) < 0)
		return store_error(ret, "campaign", error);
	since = st.state.mode == AB_CAMPAIGN_AUTO && st.on ? st.state.started : 0;
	if (cli->json) {
		struct json_out out;

		json_begin(&out, stdout);
		json_str(&out, "type", "campaign");
		json_bool(&out, "on", st.on);
		json_str(&out, "mode", ab_campaign_mode_name(st.mode));
		json_uint(&out, "since", (unsigned long long)since);
		json_str(&out, "cause", since == 0 ? "" :
			 st.state.cause == AB_CAMPAIGN_BY_PASSWORD ? "password" : "rate");
		json_uint(&out, "rate", st.rate);
		/* nothing learned anywhere yet: no rate is a campaign */
		json_bool(&out, "armed", st.threshold != AB_CAMPAIGN_NEVER);
		json_uint(&out, "threshold", st.threshold != AB_CAMPAIGN_NEVER ?
			  st.threshold : 0);
		json_bool(&out, "learned", st.learned);
		json_uint(&out, "baseline_milli", st.baseline_milli);
		json_uint(&out, "peak_milli", st.peak_milli);
		json_uint(&out, "floor", cfg->campaign_floor);
		json_uint(&out, "interval_s", cfg->campaign_interval_s);
		json_end(&out);
		return EXIT_OK;
	}
	printf("campaign mode: %s (%s)\n", st.on ? "on" : "off",
	       st.mode == AB_CAMPAIGN_AUTO ? "auto: the detector decides" : "forced");
	if (since != 0) {
		struct tm tm;

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S",
			 localtime_r(&since, &tm));
		printf("since: %s (%s), %s\n", when,
		       human_duration((unsigned long long)(now - since), dur, sizeof(dur)),
		       st.state.cause == AB_CAMPAIGN_BY_PASSWORD ?
		       "one wrong password tried on many accounts" :
		       "failures from unfamiliar origins over the threshold");
	}
	ab_duration_str(cfg->campaign_interval_s, interval, sizeof(interval));
	printf("rate: %llu failures from unfamiliar origins in the last %s\n",
	       st.rate, interval);
	if (st.threshold == AB_CAMPAIGN_NEVER)
		printf("threshold: none yet (nothing learned: the detector learns "
		       "an hour of the day, 1/24 of campaign_day, before the rate "
		       "can turn it on)\n");
	else if (st.learned)
		printf("threshold: %llu (this hour's baseline %llu.%llu x "
		       "campaign_factor %u; campaign_floor %u)\n", st.threshold,
		       st.baseline_milli / 1000, st.baseline_milli % 1000 / 100,
		       cfg->campaign_factor, cfg->campaign_floor);
	else
		printf("threshold: %llu (this hour not learned yet: the largest "
		       "baseline %llu.%llu x campaign_factor %u twice; "
		       "campaign_floor %u)\n", st.threshold,
		       st.peak_milli / 1000, st.peak_milli % 1000 / 100,
		       cfg->campaign_factor, cfg->campaign_floor);
	return EXIT_OK;
}

static int cmd_campaign(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	static const struct {
		const char *name;
		enum ab_campaign_mode mode;
	} modes[] = {
		{ "on", AB_CAMPAIGN_FORCED_ON },
		{ "off", AB_CAMPAIGN_FORCED_OFF },
		{ "auto", AB_CAMPAIGN_AUTO },
	};
	const char *error;
	size_t i;
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1)
		return bad_option("campaign", c, argc, argv);
	if (optind == argc)
		return campaign_show(cli);
	if (optind != argc - 1)
		return usage_error("campaign: give on, off or auto, or nothing");
	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (strcmp(modes[i].name, argv[optind]) == 0)
			break;
	}
	if (i == sizeof(modes) / sizeof(modes[0]))
		return usage_error("campaign: '%s': give on, off or auto", argv[optind]);
	if ((ret = cli_init(cli)) != EXIT_OK)
		return ret;
	if ((ret = ab_tracker_campaign_set(cli->tracker, modes[i].mode,
					   time(NULL), &error)) < 0)
		return store_error(ret, "campaign", error);
	return campaign_show(cli);
}

/* --- genkey ------------------------------------------------------------ */

static int cmd_genkey(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "api-key", no_argument, NULL, OPT_API_KEY },
		{ NULL, 0, NULL, 0 },
	};
	const char *path, *error;
	char token[256];
	bool api_key = false;
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1) {
		if (c != OPT_API_KEY)
			return bad_option("genkey", c, argc, argv);
		api_key = true;
	}
	if (optind < argc - 1)
		return usage_error("genkey: give at most one FILE");
	if (optind == argc - 1) {
		path = argv[optind];
	} else {
		if ((ret = cli_load_config(cli)) != EXIT_OK)
			return ret;
		path = api_key ? cli->cfg.api_key_file : cli->cfg.secret_file;
	}
	if (path[0] == '\0')
		return usage_error("genkey: the file name is empty");
	if (ab_secret_generate(path, &error) < 0)
		return fail(EXIT_OTHER, "genkey: %s", error);

	if (!api_key) {
		printf("wrote a new secret to %s (mode 0640).\n"
		       "Every node of one memcached pool needs the same secret: copy this file\n"
		       "to each of them, and let the group the services run as read it\n"
		       "(e.g. chgrp dovecot %s).\n", path, path);
		return EXIT_OK;
	}
	if (ab_token_load(path, token, sizeof(token), &error) < 0)
		return fail(EXIT_OTHER, "genkey: %s", error);
	printf("wrote a new API key to %s (mode 0640).\n"
	       "Put this line in Dovecot's configuration, in a file only root can read,\n"
	       "included from the main one (e.g. !include_try /etc/dovecot/authbrake-api-key.conf):\n"
	       "\n"
	       "auth_policy_server_api_header = X-API-Key: %s\n", path, token);
	memset(token, 0, sizeof(token));
	return EXIT_OK;
}

/* --- config ------------------------------------------------------------ */

static int cmd_config(struct cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct json_out out;
	char buf[4096], name_buf[64];
	size_t i;
	int c, ret;

	reset_getopt();
	while ((c = next_opt(argc, argv, opts, cli)) != -1)
		return bad_option("config", c, argc, argv);
	if (optind != argc)
		return usage_error("config: unexpected argument '%s'", argv[optind]);
	if ((ret = cli_load_config(cli)) != EXIT_OK)
		return ret;
	if (cli->json)
		json_begin(&out, stdout);
	else
		printf("# %s\n", cli->config_path);
	for (i = 0; i < ab_config_key_count(&cli->cfg); i++) {
		const char *value = ab_config_value_str(&cli->cfg, i, buf, sizeof(buf));
		const char *name = ab_config_key_name(&cli->cfg, i, name_buf,
						      sizeof(name_buf));

		if (cli->json)
			json_str(&out, name, value);
		else
			printf("%s = %s\n", name, value);
	}
	if (cli->json)
		json_end(&out);
	return EXIT_OK;
}

/* --- main -------------------------------------------------------------- */

static const struct {
	const char *name;
	int (*run)(struct cli *cli, int argc, char **argv);
} commands[] = {
	{ "status", cmd_status },
	{ "list", cmd_list },
	{ "check", cmd_check },
	{ "unlock", cmd_unlock },
	{ "block", cmd_block },
	{ "unblock", cmd_unblock },
	{ "campaign", cmd_campaign },
	{ "genkey", cmd_genkey },
	{ "config", cmd_config },
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli cli;
	size_t i;
	int c, ret;

	memset(&cli, 0, sizeof(cli));
	cli.config_path = AB_CONFIG_DEFAULT_PATH;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			cli.config_path = optarg;
			break;
		case OPT_JSON:
			cli.json = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return EXIT_OK;
		default:
			return bad_option("", c, argc, argv);
		}
	}
	if (optind >= argc) {
		fputs("authbrake: no command given\n", stderr);
		fputs(usage_text, stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[optind], "help") == 0) {
		fputs(usage_text, stdout);
		return EXIT_OK;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, argv[optind]) == 0)
			break;
	}
	if (i == sizeof(commands) / sizeof(commands[0]))
		return usage_error("unknown command '%s'", argv[optind]);

	openlog("authbrake", LOG_PID, LOG_AUTHPRIV);
	ret = commands[i].run(&cli, argc - optind, argv + optind);
	ab_tracker_deinit(&cli.tracker);
	if (cli.cfg_loaded)
		ab_config_free(&cli.cfg);
	closelog();
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "authbrake: writing the output: %s\n", strerror(errno));
		return ret != EXIT_OK ? ret : EXIT_OTHER;
	}
	return ret;
}
