/* authbrake configuration: one parser for the config file and for
   module arguments (PAM), defaults set in one place. */
#ifndef AB_CONFIG_H
#define AB_CONFIG_H

#include <stddef.h>

#include "ab-identity.h"

#define AB_CONFIG_DEFAULT_PATH "/etc/authbrake/authbrake.conf"

enum ab_fail_mode {
	AB_FAIL_OPEN,
	AB_FAIL_CLOSED,
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

	char *default_domain;
	struct ab_cidr_list trusted_networks;
	struct ab_cidr_list restrict_networks;
	struct ab_cidr_list trusted_proxies;

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

	/* PAM */
	unsigned int pam_max_delay_s;
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

/* The keys, in the order of authbrake.conf(5), and a key's value in
   effect written as the config file would write it. */
size_t ab_config_key_count(void);
const char *ab_config_key_name(size_t i);
const char *ab_config_value_str(const struct ab_config *cfg, size_t i,
				char *buf, size_t size);

/* "50ms", "30s", "15m", "1h", "7d", "2w"; a bare number is seconds.
   Result in milliseconds. */
int ab_duration_parse_ms(const char *str, unsigned long long *ms_r,
			 const char **error_r);
/* "3h 5m" style, for humans. */
const char *ab_duration_str(unsigned long long secs, char *buf, size_t size);

#endif
