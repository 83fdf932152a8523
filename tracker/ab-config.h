/* authbrake configuration: one parser for the config file and for
   module arguments (PAM), defaults set in one place. */
#ifndef AB_CONFIG_H
#define AB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "ab-identity.h"

#define AB_CONFIG_DEFAULT_PATH "/etc/authbrake/authbrake.conf"

enum ab_fail_mode {
	AB_FAIL_OPEN,
	AB_FAIL_CLOSED,
};

/* A protocol name as the front end sends it (Dovecot: its service name,
   "imap", "pop3", "smtp" for Postfix's SASL...; pam_authbrake: the PAM
   service), with the terminating NUL: the size of ab_attempt.protocol. */
#define AB_PROTOCOL_MAX 16
/* protocols that may have networks of their own */
#define AB_PROTOCOL_NETWORKS_MAX 16

/* What a listed address gets (dnsbl): no free failures and a tarpit from
   its first attempt, or a refusal. */
enum ab_dnsbl_action {
	AB_DNSBL_TARPIT,
	AB_DNSBL_REJECT,
};

/* "trusted_networks.PROTO", "restrict_networks.PROTO" and
   "dnsbl_action.PROTO": a setting made here replaces the setting of the
   same name for that protocol (a list even when empty). */
struct ab_protocol_settings {
	char protocol[AB_PROTOCOL_MAX];
	bool has_trusted, has_restrict, has_dnsbl_action;
	struct ab_cidr_list trusted_networks;
	struct ab_cidr_list restrict_networks;
	enum ab_dnsbl_action dnsbl_action;
};

struct ab_config {
	char *secret_file;
	char *api_key_file;
	char *memcached_servers;	/* "host:port,host:port" */
	unsigned int connect_timeout_ms;
	unsigned int poll_timeout_ms;
	unsigned int dead_timeout_s;
	unsigned int server_failure_limit;
	unsigned int breaker_failures;
	unsigned int breaker_cooldown_s;
	enum ab_fail_mode fail_mode;
	unsigned int fail_log_interval_s;
	/* how long a process remembers a refusal (ab-verdict.h) */
	unsigned int verdict_cache_s;

	char *default_domain;
	struct ab_cidr_list trusted_networks;
	struct ab_cidr_list restrict_networks;
	struct ab_cidr_list trusted_proxies;
	struct ab_protocol_settings protocols[AB_PROTOCOL_NETWORKS_MAX];
	unsigned int protocol_count;

	/* per address (IPv4, or IPv6 /64) */
	unsigned int ip_window_s;
	unsigned int ip_free_failures;
	unsigned int ip_block_failures;
	unsigned int ip_max_accounts;
	unsigned int max_inflight;
	/* per subnet (/24, /48) */
	unsigned int net_free_failures;
	unsigned int net_block_failures;
	unsigned int net_max_accounts;
	/* tarpit and blocks */
	unsigned int tarpit_max_s;
	unsigned int block_time_s;
	unsigned int block_max_s;
	/* per account */
	unsigned int account_window_s;
	unsigned int account_lock_failures;
	unsigned int familiar_failures;
	unsigned int lock_time_s;
	unsigned int familiar_days;
	unsigned int password_repeat_s;

	/* DNS blocklists: zones (comma- or space-separated; "" none), the
	   resolver ("" the first of /etc/resolv.conf), the bound on a lookup */
	char *dnsbl;
	char *dnsbl_resolver;
	unsigned int dnsbl_timeout_ms;
	enum ab_dnsbl_action dnsbl_action;

	/* campaign mode (ab-campaign.h): the site-wide detector of password
	   sprays, and the budget an account has while one is on */
	unsigned int campaign_interval_s;
	unsigned int campaign_floor;
	unsigned int campaign_factor;
	unsigned int campaign_cooldown_s;
	unsigned int campaign_learn_days;
	unsigned int campaign_day_s;
	unsigned int campaign_password_accounts;
	unsigned int campaign_lock_failures;
	unsigned int campaign_tarpit_s;

	/* PAM */
	unsigned int pam_max_delay_s;
	/* where pam_authbrake keeps what one login learned of dead and hung
	   memcached servers for the next (ab_store_share_state()) */
	char *server_state_file;
};

/* Fill cfg with the defaults. Every default lives here. */
void ab_config_defaults(struct ab_config *cfg);
/* Free what the config owns; cfg is left with defaults. */
void ab_config_free(struct ab_config *cfg);

/* Apply one "key = value" setting; where names its origin ("file:line"
   or "argument") for the error message. */
int ab_config_set(struct ab_config *cfg, const char *key, const char *value,
		  const char *where, const char **error_r);
/* Read a config file over the current values. A missing, unreadable or
   malformed file is an error naming file and line. */
int ab_config_load(struct ab_config *cfg, const char *path,
		   const char **error_r);
/* Check values that depend on one another (e.g. block_max >= block_time). */
int ab_config_validate(const struct ab_config *cfg, const char **error_r);

/* The networks in effect for a protocol: its own list when the config
   sets one ("restrict_networks.smtp"), else the list for every protocol. */
const struct ab_cidr_list *
ab_config_trusted_networks(const struct ab_config *cfg, const char *protocol);
const struct ab_cidr_list *
ab_config_restrict_networks(const struct ab_config *cfg, const char *protocol);
enum ab_dnsbl_action
ab_config_dnsbl_action(const struct ab_config *cfg, const char *protocol);

/* The settings in effect, in the order of authbrake.conf(5): every key,
   each per-protocol list this config sets right after its key. A
   setting's name and its value written as the config file would write
   them. */
size_t ab_config_key_count(const struct ab_config *cfg);
const char *ab_config_key_name(const struct ab_config *cfg, size_t i,
			       char *buf, size_t size);
const char *ab_config_value_str(const struct ab_config *cfg, size_t i,
				char *buf, size_t size);

/* "50ms", "30s", "15m", "1h", "7d", "2w"; a bare number is seconds.
   Result in milliseconds. */
int ab_duration_parse_ms(const char *str, unsigned long long *ms_r,
			 const char **error_r);
/* "3h 5m" style, for humans. */
const char *ab_duration_str(unsigned long long secs, char *buf, size_t size);

#endif
