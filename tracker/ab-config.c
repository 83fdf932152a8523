/* The config file and PAM module arguments share this one parser: a
   table of keys, each with its type, its place in struct ab_config and
   its limits. Defaults are set in ab_config_defaults() only. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ab-config.h"
#include "ab-dnsbl.h"
#include "ab-error.h"

#define DAY (24U * 3600U)
/* memcached reads a TTL over 30 days as an absolute time */
#define TTL_MAX (30U * DAY - 1U)
/* a window's bucket is kept for two windows */
#define WINDOW_MAX (14U * DAY)

enum key_type {
	T_STRING,
	T_UINT,
	T_SECONDS,
	T_MILLIS,
	T_DAYS,
	T_CIDRS,
	T_FAIL_MODE,
	T_DNSBL_ACTION,
	T_ZONES,
};

struct key_def {
	const char *name;
	enum key_type type;
	size_t offset;
	unsigned long long min, max;	/* in the field's own unit */
};

#define F(field) offsetof(struct ab_config, field)
static const struct key_def keys[] = {
	{ "secret_file", T_STRING, F(secret_file), 0, 0 },
	{ "api_key_file", T_STRING, F(api_key_file), 0, 0 },
	{ "memcached_servers", T_STRING, F(memcached_servers), 0, 0 },
	{ "connect_timeout", T_MILLIS, F(connect_timeout_ms), 1, 10000 },
	{ "poll_timeout", T_MILLIS, F(poll_timeout_ms), 1, 10000 },
	{ "dead_timeout", T_SECONDS, F(dead_timeout_s), 1, 3600 },
	{ "server_failure_limit", T_UINT, F(server_failure_limit), 1, 100 },
	{ "breaker_failures", T_UINT, F(breaker_failures), 1, 1000 },
	{ "breaker_cooldown", T_SECONDS, F(breaker_cooldown_s), 1, 3600 },
	{ "fail_mode", T_FAIL_MODE, F(fail_mode), 0, 0 },
	{ "fail_log_interval", T_SECONDS, F(fail_log_interval_s), 1, DAY },
	{ "verdict_cache", T_SECONDS, F(verdict_cache_s), 0, 60 },
	{ "default_domain", T_STRING, F(default_domain), 0, 0 },
	{ "trusted_networks", T_CIDRS, F(trusted_networks), 0, 0 },
	{ "restrict_networks", T_CIDRS, F(restrict_networks), 0, 0 },
	{ "trusted_proxies", T_CIDRS, F(trusted_proxies), 0, 0 },
	{ "ip_window", T_SECONDS, F(ip_window_s), 1, WINDOW_MAX },
	{ "ip_free_failures", T_UINT, F(ip_free_failures), 0, 1000000 },
	{ "ip_block_failures", T_UINT, F(ip_block_failures), 1, 1000000 },
	{ "ip_max_accounts", T_UINT, F(ip_max_accounts), 1, 1000000 },
	{ "max_inflight", T_UINT, F(max_inflight), 1, 1000000 },
	{ "net_free_failures", T_UINT, F(net_free_failures), 0, 1000000 },
	{ "net_block_failures", T_UINT, F(net_block_failures), 1, 1000000 },
	{ "net_max_accounts", T_UINT, F(net_max_accounts), 1, 1000000 },
	{ "tarpit_max", T_SECONDS, F(tarpit_max_s), 0, 300 },
	{ "block_time", T_SECONDS, F(block_time_s), 1, 7 * DAY },
	{ "block_max", T_SECONDS, F(block_max_s), 1, 7 * DAY },
	{ "account_window", T_SECONDS, F(account_window_s), 1, WINDOW_MAX },
	{ "account_lock_failures", T_UINT, F(account_lock_failures), 1, 1000000 },
	{ "familiar_failures", T_UINT, F(familiar_failures), 1, 1000000 },
	{ "lock_time", T_SECONDS, F(lock_time_s), 1, TTL_MAX },
	{ "familiar_days", T_DAYS, F(familiar_days), 1, 29 },
	{ "password_repeat", T_SECONDS, F(password_repeat_s), 0, TTL_MAX },
	{ "dnsbl", T_ZONES, F(dnsbl), 0, 0 },
	{ "dnsbl_action", T_DNSBL_ACTION, F(dnsbl_action), 0, 0 },
	{ "dnsbl_resolver", T_STRING, F(dnsbl_resolver), 0, 0 },
	{ "dnsbl_timeout", T_MILLIS, F(dnsbl_timeout_ms), 1, 5000 },
	{ "campaign_interval", T_SECONDS, F(campaign_interval_s), 1, DAY },
	{ "campaign_floor", T_UINT, F(campaign_floor), 1, 1000000000 },
	{ "campaign_factor", T_UINT, F(campaign_factor), 1, 1000 },
	{ "campaign_cooldown", T_SECONDS, F(campaign_cooldown_s), 1, 7 * DAY },
	{ "campaign_learn_days", T_UINT, F(campaign_learn_days), 1, 365 },
	{ "campaign_day", T_SECONDS, F(campaign_day_s), 24, 7 * DAY },
	{ "campaign_password_accounts", T_UINT, F(campaign_password_accounts), 0, 1000000 },
	{ "campaign_lock_failures", T_UINT, F(campaign_lock_failures), 1, 1000000 },
	{ "campaign_tarpit", T_SECONDS, F(campaign_tarpit_s), 0, 300 },
	{ "pam_max_delay", T_SECONDS, F(pam_max_delay_s), 0, 30 },
	{ "server_state_file", T_STRING, F(server_state_file), 0, 0 },
};
#undef F
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

/* The keys a protocol may set for itself ("key.PROTO"): where its value
   and its "set" flag live in struct ab_protocol_settings. */
struct protocol_key_def {
	const char *name;
	size_t field, has;
};
#define P(field) offsetof(struct ab_protocol_settings, field)
static const struct protocol_key_def protocol_keys[] = {
	{ "trusted_networks", P(trusted_networks), P(has_trusted) },
	{ "restrict_networks", P(restrict_networks), P(has_restrict) },
	{ "dnsbl_action", P(dnsbl_action), P(has_dnsbl_action) },
};
#undef P

static const struct protocol_key_def *protocol_key(const struct key_def *def)
{
	size_t i;

	for (i = 0; i < sizeof(protocol_keys) / sizeof(protocol_keys[0]); i++) {
		if (strcmp(protocol_keys[i].name, def->name) == 0)
			return &protocol_keys[i];
	}
	return NULL;
}

void ab_config_defaults(struct ab_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->secret_file = strdup("/etc/authbrake/secret");
	cfg->api_key_file = strdup("/etc/authbrake/api-key");
	cfg->memcached_servers = strdup("127.0.0.1:11211");
	cfg->connect_timeout_ms = 200;
	cfg->poll_timeout_ms = 400;
	cfg->dead_timeout_s = 10;
	cfg->server_failure_limit = 2;
	cfg->breaker_failures = 3;
	cfg->breaker_cooldown_s = 5;
	cfg->fail_mode = AB_FAIL_OPEN;
	cfg->fail_log_interval_s = 60;
	cfg->verdict_cache_s = 2;
	cfg->default_domain = strdup("");

	cfg->ip_window_s = 3600;
	cfg->ip_free_failures = 5;
	cfg->ip_block_failures = 20;
	cfg->ip_max_accounts = 10;
	cfg->max_inflight = 20;
	cfg->net_free_failures = 30;
	cfg->net_block_failures = 100;
	cfg->net_max_accounts = 40;
	cfg->tarpit_max_s = 15;
	cfg->block_time_s = 15 * 60;
	cfg->block_max_s = DAY;

	cfg->account_window_s = 12 * 3600;
	cfg->account_lock_failures = 10;
	cfg->familiar_failures = 10;
	cfg->lock_time_s = 3600;
	cfg->familiar_days = 14;
	cfg->password_repeat_s = 3600;
	cfg->dnsbl = strdup("");
	cfg->dnsbl_resolver = strdup("");
	cfg->server_state_file = strdup("/run/authbrake/memcached.state");
	cfg->dnsbl_timeout_ms = 500;
	cfg->dnsbl_action = AB_DNSBL_TARPIT;
	cfg->campaign_interval_s = 600;
	cfg->campaign_floor = 30;
	cfg->campaign_factor = 4;
	cfg->campaign_cooldown_s = 3600;
	cfg->campaign_learn_days = 7;
	cfg->campaign_day_s = DAY;
	cfg->campaign_password_accounts = 10;
	cfg->campaign_lock_failures = 1;
	cfg->campaign_tarpit_s = 2;

	cfg->pam_max_delay_s = 2;
}

void ab_config_free(struct ab_config *cfg)
{
	free(cfg->secret_file);
	free(cfg->api_key_file);
	free(cfg->memcached_servers);
	free(cfg->default_domain);
	free(cfg->dnsbl);
	free(cfg->dnsbl_resolver);
	free(cfg->server_state_file);
	ab_cidr_list_free(&cfg->trusted_networks);
	ab_cidr_list_free(&cfg->restrict_networks);
	ab_cidr_list_free(&cfg->trusted_proxies);
	for (unsigned int i = 0; i < cfg->protocol_count; i++) {
		ab_cidr_list_free(&cfg->protocols[i].trusted_networks);
		ab_cidr_list_free(&cfg->protocols[i].restrict_networks);
	}
	memset(cfg, 0, sizeof(*cfg));
}

int ab_duration_parse_ms(const char *str, unsigned long long *ms_r,
			 const char **error_r)
{
	unsigned long long n, unit = 1000;
	char *end;

	if (str[0] < '0' || str[0] > '9')
		return ab_error(error_r, "'%s' is not a duration (like 50ms, 30s, 15m, 1h, 7d)", str);
	errno = 0;
	n = strtoull(str, &end, 10);
	if (errno != 0)
		return ab_error(error_r, "'%s' is too large", str);
	if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
		unit = 1000;
	else if (strcmp(end, "ms") == 0)
		unit = 1;
	else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
		unit = 60 * 1000;
	else if (strcmp(end, "h") == 0)
		unit = 3600 * 1000;
	else if (strcmp(end, "d") == 0)
		unit = DAY * 1000ULL;
	else if (strcmp(end, "w") == 0)
		unit = 7 * DAY * 1000ULL;
	else
		return ab_error(error_r, "'%s' has an unknown unit '%s' (use ms, s, m, h, d, w)",
				str, end);
	if (n > ULLONG_MAX / unit)
		return ab_error(error_r, "'%s' is too large", str);
	*ms_r = n * unit;
	return 0;
}

const char *ab_duration_str(unsigned long long secs, char *buf, size_t size)
{
	if (secs >= DAY && secs % 3600 == 0)
		snprintf(buf, size, "%llud%lluh", secs / DAY, secs % DAY / 3600);
	else if (secs >= 3600)
		snprintf(buf, size, "%lluh%llum", secs / 3600, secs % 3600 / 60);
	else if (secs >= 60)
		snprintf(buf, size, "%llum%llus", secs / 60, secs % 60);
	else
		snprintf(buf, size, "%llus", secs);
	return buf;
}

static int set_uint(unsigned int *field, unsigned long long value,
		    const struct key_def *def, const char *shown,
		    const char *unit, unsigned long long scale,
		    const char *where, const char **error_r)
{
	if (value < def->min * scale || value > def->max * scale)
		return ab_error(error_r, "%s: %s = %s is out of range (%llu%s to %llu%s)",
				where, def->name, shown, def->min, unit,
				def->max, unit);
	*field = (unsigned int)(value / scale);
	return 0;
}

static const struct key_def *key_find(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++) {
		if (strlen(keys[i].name) == len &&
		    memcmp(keys[i].name, name, len) == 0)
			return &keys[i];
	}
	return NULL;
}

/* Protocol names are compared as the front ends send them, which are
   lower case; any other spelling could never match, so it is an error
   rather than a setting that silently does nothing. */
static int protocol_name_check(const char *name, const char *key,
			       const char *where, const char **error_r)
{
	size_t len = strlen(name);

	if (len == 0)
		return ab_error(error_r, "%s: '%s': the protocol name is missing after '.'",
				where, key);
	if (len >= AB_PROTOCOL_MAX ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-_") != len)
		return ab_error(error_r, "%s: '%s': a protocol name is lower-case letters, digits, - and _, up to %d (imap, pop3, smtp...)",
				where, key, AB_PROTOCOL_MAX - 1);
	return 0;
}

/* The place of the protocol's lists in cfg->protocols, -1 when it has none. */
static int protocol_index(const struct ab_config *cfg, const char *protocol)
{
	unsigned int i;

	for (i = 0; i < cfg->protocol_count; i++) {
		if (strcmp(cfg->protocols[i].protocol, protocol) == 0)
			return (int)i;
	}
	return -1;
}

static int set_field(const struct key_def *def, void *field, const char *key,
		     const char *value, const char *where, const char **error_r);

/* "restrict_networks.smtp = ...": a setting for one protocol. */
static int config_set_protocol(struct ab_config *cfg, const char *key,
			       const char *value, const char *where,
			       const char **error_r)
{
	const char *dot = strchr(key, '.'), *protocol = dot + 1;
	const struct key_def *def = key_find(key, (size_t)(dot - key));
	const struct protocol_key_def *pdef;
	struct ab_protocol_settings *proto;
	int i;

	if (def == NULL)
		return ab_error(error_r, "%s: unknown setting '%s'", where, key);
	if ((pdef = protocol_key(def)) == NULL)
		return ab_error(error_r, "%s: '%s': %s has no per-protocol form (only trusted_networks, restrict_networks and dnsbl_action have)",
				where, key, def->name);
	if (protocol_name_check(protocol, key, where, error_r) < 0)
		return -1;
	if ((i = protocol_index(cfg, protocol)) >= 0) {
		proto = &cfg->protocols[i];
		if (set_field(def, (char *)proto + pdef->field, key, value,
			      where, error_r) < 0)
			return -1;
	} else {
		struct ab_protocol_settings fresh;
		unsigned int at = 0;

		if (cfg->protocol_count == AB_PROTOCOL_NETWORKS_MAX)
			return ab_error(error_r, "%s: '%s': settings for more than %d protocols",
					where, key, AB_PROTOCOL_NETWORKS_MAX);
		memset(&fresh, 0, sizeof(fresh));
		snprintf(fresh.protocol, sizeof(fresh.protocol), "%s", protocol);
		if (set_field(def, (char *)&fresh + pdef->field, key, value,
			      where, error_r) < 0)
			return -1;
		/* kept in name order: the settings print the same, whatever
		   order the file gave them in */
		while (at < cfg->protocol_count &&
		       strcmp(cfg->protocols[at].protocol, protocol) < 0)
			at++;
		memmove(&cfg->protocols[at + 1], &cfg->protocols[at],
			(cfg->protocol_count - at) * sizeof(cfg->protocols[0]));
		cfg->protocols[at] = fresh;
		cfg->protocol_count++;
		proto = &cfg->protocols[at];
	}
	*(bool *)((char *)proto + pdef->has) = true;
	return 0;
}

int ab_config_set(struct ab_config *cfg, const char *key, const char *value,
		  const char *where, const char **error_r)
{
	const struct key_def *def;

	if (strchr(key, '.') != NULL)
		return config_set_protocol(cfg, key, value, where, error_r);
	if ((def = key_find(key, strlen(key))) == NULL)
		return ab_error(error_r, "%s: unknown setting '%s'", where, key);
	return set_field(def, (char *)cfg + def->offset, key, value, where,
			 error_r);
}

/* Parse value into field, a setting of def's type: in struct ab_config,
   or in a protocol's settings. Nothing changes on an error. */
static int set_field(const struct key_def *def, void *field, const char *key,
		     const char *value, const char *where, const char **error_r)
{
	const char *error;
	unsigned long long n;

	switch (def->type) {
	case T_ZONES:
		if (ab_dnsbl_zones_check(value, &error) < 0)
			return ab_error(error_r, "%s: %s", where, error);
		/* fall through */
	case T_STRING: {
		char *copy = strdup(value);
		if (copy == NULL)
			return ab_error(error_r, "%s: out of memory", where);
		free(*(char **)field);
		*(char **)field = copy;
		return 0;
	}
	case T_UINT: {
		char *end;
		if (value[0] < '0' || value[0] > '9')
			return ab_error(error_r, "%s: %s = '%s' is not a number",
					where, key, value);
		errno = 0;
		n = strtoull(value, &end, 10);
		if (*end != '\0' || errno != 0)
			return ab_error(error_r, "%s: %s = '%s' is not a number",
					where, key, value);
		return set_uint(field, n, def, value, "", 1, where, error_r);
	}
	case T_SECONDS:
	case T_MILLIS:
	case T_DAYS:
		if (ab_duration_parse_ms(value, &n, &error) < 0)
			return ab_error(error_r, "%s: %s: %s", where, key, error);
		if (def->type == T_MILLIS)
			return set_uint(field, n, def, value, "ms", 1, where, error_r);
		if (def->type == T_DAYS) {
			/* a bare number of familiar_days means days; one
			   too large to multiply must not wrap into range */
			if (strspn(value, "0123456789") == strlen(value))
				n = n > ULLONG_MAX / DAY ? ULLONG_MAX : n * DAY;
			return set_uint(field, n, def, value, "d",
					DAY * 1000ULL, where, error_r);
		}
		if (n % 1000 != 0)
			return ab_error(error_r, "%s: %s = %s: use whole seconds",
					where, key, value);
		return set_uint(field, n, def, value, "s", 1000, where, error_r);
	case T_CIDRS:
		if (ab_cidr_list_parse(value, field, &error) < 0)
			return ab_error(error_r, "%s: %s: %s", where, key, error);
		return 0;
	case T_FAIL_MODE:
		if (strcmp(value, "open") == 0)
			*(enum ab_fail_mode *)field = AB_FAIL_OPEN;
		else if (strcmp(value, "closed") == 0)
			*(enum ab_fail_mode *)field = AB_FAIL_CLOSED;
		else
			return ab_error(error_r, "%s: fail_mode = '%s': use open or closed",
					where, value);
		return 0;
	case T_DNSBL_ACTION:
		if (strcmp(value, "tarpit") == 0)
			*(enum ab_dnsbl_action *)field = AB_DNSBL_TARPIT;
		else if (strcmp(value, "reject") == 0)
			*(enum ab_dnsbl_action *)field = AB_DNSBL_REJECT;
		else
			return ab_error(error_r, "%s: %s = '%s': use tarpit or reject",
					where, key, value);
		return 0;
	}
	return ab_error(error_r, "%s: %s: internal error", where, key);
}

static char *trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
			   end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

int ab_config_load(struct ab_config *cfg, const char *path,
		   const char **error_r)
{
	FILE *f = fopen(path, "r");
	char line[4096], where[600];
	unsigned int lineno = 0;

	if (f == NULL)
		return ab_error(error_r, "%s: cannot read: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p, *eq, *key, *value;

		lineno++;
		snprintf(where, sizeof(where), "%s:%u", path, lineno);
		if (strchr(line, '\n') == NULL && !feof(f)) {
			fclose(f);
			return ab_error(error_r, "%s: line is longer than %zu bytes",
					where, sizeof(line) - 2);
		}
		/* '#' starts a comment anywhere: no value needs one */
		if ((p = strchr(line, '#')) != NULL)
			*p = '\0';
		p = trim(line);
		if (*p == '\0')
			continue;
		eq = strchr(p, '=');
		if (eq == NULL) {
			fclose(f);
			return ab_error(error_r, "%s: expected 'key = value', got '%.80s'",
					where, p);
		}
		*eq = '\0';
		key = trim(p);
		value = trim(eq + 1);
		if (*key == '\0') {
			fclose(f);
			return ab_error(error_r, "%s: setting name is missing before '='", where);
		}
		if (ab_config_set(cfg, key, value, where, error_r) < 0) {
			fclose(f);
			return -1;
		}
	}
	if (ferror(f)) {
		fclose(f);
		return ab_error(error_r, "%s: read error", path);
	}
	fclose(f);
	return ab_config_validate(cfg, error_r);
}

int ab_config_validate(const struct ab_config *cfg, const char **error_r)
{
	if (cfg->block_max_s < cfg->block_time_s)
		return ab_error(error_r, "block_max (%us) is shorter than block_time (%us)",
				cfg->block_max_s, cfg->block_time_s);
	if (cfg->ip_block_failures <= cfg->ip_free_failures)
		return ab_error(error_r, "ip_block_failures (%u) must be above ip_free_failures (%u)",
				cfg->ip_block_failures, cfg->ip_free_failures);
	if (cfg->net_block_failures <= cfg->net_free_failures)
		return ab_error(error_r, "net_block_failures (%u) must be above net_free_failures (%u)",
				cfg->net_block_failures, cfg->net_free_failures);
	if (cfg->campaign_day_s < 24 * cfg->campaign_interval_s)
		return ab_error(error_r, "campaign_day (%us) must hold 24 campaign_intervals (%us each)",
				cfg->campaign_day_s, cfg->campaign_interval_s);
	if (cfg->memcached_servers == NULL || cfg->memcached_servers[0] == '\0')
		return ab_error(error_r, "memcached_servers is empty");
	return 0;
}

/* --- the settings in effect, as a config file would write them --- */

const struct ab_cidr_list *
ab_config_trusted_networks(const struct ab_config *cfg, const char *protocol)
{
	int i = protocol_index(cfg, protocol);

	return i >= 0 && cfg->protocols[i].has_trusted ?
		&cfg->protocols[i].trusted_networks : &cfg->trusted_networks;
}

const struct ab_cidr_list *
ab_config_restrict_networks(const struct ab_config *cfg, const char *protocol)
{
	int i = protocol_index(cfg, protocol);

	return i >= 0 && cfg->protocols[i].has_restrict ?
		&cfg->protocols[i].restrict_networks : &cfg->restrict_networks;
}

enum ab_dnsbl_action
ab_config_dnsbl_action(const struct ab_config *cfg, const char *protocol)
{
	int i = protocol_index(cfg, protocol);

	return i >= 0 && cfg->protocols[i].has_dnsbl_action ?
		cfg->protocols[i].dnsbl_action : cfg->dnsbl_action;
}

static bool proto_sets(const struct ab_protocol_settings *proto,
		       const struct key_def *def)
{
	const struct protocol_key_def *pdef = protocol_key(def);

	return pdef != NULL && *(const bool *)((const char *)proto + pdef->has);
}

/* The i-th setting: a key of the table, or (proto set) the list one
   protocol has for it. */
static bool setting_at(const struct ab_config *cfg, size_t i,
		       const struct key_def **def_r,
		       const struct ab_protocol_settings **proto_r)
{
	size_t k;
	unsigned int p;

	for (k = 0; k < N_KEYS; k++) {
		if (i-- == 0) {
			*def_r = &keys[k];
			*proto_r = NULL;
			return true;
		}
		for (p = 0; p < cfg->protocol_count; p++) {
			if (proto_sets(&cfg->protocols[p], &keys[k]) && i-- == 0) {
				*def_r = &keys[k];
				*proto_r = &cfg->protocols[p];
				return true;
			}
		}
	}
	return false;
}

size_t ab_config_key_count(const struct ab_config *cfg)
{
	size_t count = N_KEYS, k;
	unsigned int p;

	for (k = 0; k < N_KEYS; k++) {
		for (p = 0; p < cfg->protocol_count; p++)
			count += proto_sets(&cfg->protocols[p], &keys[k]) ? 1 : 0;
	}
	return count;
}

const char *ab_config_key_name(const struct ab_config *cfg, size_t i,
			       char *buf, size_t size)
{
	const struct key_def *def;
	const struct ab_protocol_settings *proto;

	if (!setting_at(cfg, i, &def, &proto))
		return NULL;
	if (proto == NULL)
		return def->name;
	snprintf(buf, size, "%s.%s", def->name, proto->protocol);
	return buf;
}

/* The largest unit that divides the value exactly: 3600 -> "1h". */
static const char *exact_duration(unsigned long long secs, char *buf,
				  size_t size)
{
	static const struct {
		const char *unit;
		unsigned long long secs;
	} units[] = { { "d", 86400 }, { "h", 3600 }, { "m", 60 } };
	size_t i;

	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (secs > 0 && secs % units[i].secs == 0) {
			snprintf(buf, size, "%llu%s", secs / units[i].secs,
				 units[i].unit);
			return buf;
		}
	}
	snprintf(buf, size, "%llus", secs);
	return buf;
}

const char *ab_config_value_str(const struct ab_config *cfg, size_t i,
				char *buf, size_t size)
{
	const struct key_def *def;
	const struct ab_protocol_settings *proto;
	const void *field;
	unsigned int n = 0;

	if (!setting_at(cfg, i, &def, &proto))
		return NULL;
	field = proto == NULL ? (const char *)cfg + def->offset :
		(const char *)proto + protocol_key(def)->field;

	if (def->type == T_UINT || def->type == T_SECONDS ||
	    def->type == T_MILLIS || def->type == T_DAYS)
		n = *(const unsigned int *)field;
	switch (def->type) {
	case T_STRING:
	case T_ZONES:
		return *(char *const *)field != NULL ? *(char *const *)field : "";
	case T_UINT:
		snprintf(buf, size, "%u", n);
		return buf;
	case T_SECONDS:
		return exact_duration(n, buf, size);
	case T_MILLIS:
		if (n % 1000 == 0)
			return exact_duration(n / 1000, buf, size);
		snprintf(buf, size, "%ums", n);
		return buf;
	case T_DAYS:
		snprintf(buf, size, "%ud", n);
		return buf;
	case T_FAIL_MODE:
		return *(const enum ab_fail_mode *)field == AB_FAIL_OPEN ?
			"open" : "closed";
	case T_DNSBL_ACTION:
		return *(const enum ab_dnsbl_action *)field == AB_DNSBL_TARPIT ?
			"tarpit" : "reject";
	case T_CIDRS: {
		const struct ab_cidr_list *list = field;
		char addr[AB_ADDR_STRLEN];
		size_t j, len = 0;

		buf[0] = '\0';
		for (j = 0; j < list->count && len < size; j++) {
			int ret = snprintf(buf + len, size - len, "%s%s",
					   j > 0 ? ", " : "",
					   ab_addr_str(&list->items[j].net,
						       list->items[j].prefix,
						       addr));
			if (ret < 0)
				break;
			len += (size_t)ret;
		}
		return buf;
	}
	}
	return "?";
}
