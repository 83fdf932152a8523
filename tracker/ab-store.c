/* The memcached store. Every call is bounded by poll_timeout; keys are
   grouped by the server that holds them so an mget is one request per
   server and an error is charged to the server that caused it. A read
   timeout never makes libmemcached eject a server, so a hung server
   (SIGSTOP, a full kernel queue) is handled by a breaker of our own:
   after breaker_failures failed requests in a row the server is skipped
   for breaker_cooldown, then tried again. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libmemcached/memcached.h>

#include "ab-config.h"
#include "ab-error.h"
#include "ab-observer.h"
#include "ab-store.h"

#define AB_STORE_MAX_SERVERS 64
#define AB_MGET_MAX 64

struct breaker {
	unsigned int failures;		/* in a row */
	time_t open_until;		/* 0 closed */
	bool open;
};

struct ab_store {
	memcached_st *memc;
	const struct ab_config *cfg;
	ab_log_fn *log;
	void *log_ctx;
	time_t (*now)(void);
	unsigned int server_count;
	struct breaker breaker[AB_STORE_MAX_SERVERS];
	struct ab_store_stats stats;
	/* metrics hook (ab-observer.h); NULL when nobody watches */
	const struct ab_observer *observer;
	void *observer_ctx;
};

static time_t default_now(void)
{
	return time(NULL);
}

static void store_log(struct ab_store *store, enum ab_log_level level,
		      const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void store_log(struct ab_store *store, enum ab_log_level level,
		      const char *fmt, ...)
{
	char msg[512];
	va_list args;

	if (store->log == NULL)
		return;
	va_start(args, fmt);
	vsnprintf(msg, sizeof(msg), fmt, args);
	va_end(args);
	store->log(level, msg, store->log_ctx);
}

static const char *server_name(struct ab_store *store, uint32_t idx,
			       char *buf, size_t size)
{
	const memcached_instance_st *inst =
		memcached_server_instance_by_position(store->memc, idx);

	if (inst == NULL)
		snprintf(buf, size, "server #%u", idx);
	else
		snprintf(buf, size, "%s:%u", memcached_server_name(inst),
			 (unsigned int)memcached_server_port(inst));
	return buf;
}

int ab_store_init(const struct ab_config *cfg, ab_log_fn *log, void *log_ctx,
		  struct ab_store **store_r, const char **error_r)
{
	struct ab_store *store;
	memcached_server_st *servers;
	memcached_return_t rc;

	store = calloc(1, sizeof(*store));
	if (store == NULL)
		return ab_error(error_r, "out of memory");
	store->cfg = cfg;
	store->log = log;
	store->log_ctx = log_ctx;
	store->now = default_now;

	servers = memcached_servers_parse(cfg->memcached_servers);
	if (servers == NULL) {
		free(store);
		return ab_error(error_r, "memcached_servers = '%s' is not a list of host:port",
				cfg->memcached_servers);
	}
	store->memc = memcached_create(NULL);
	if (store->memc == NULL) {
		memcached_server_list_free(servers);
		free(store);
		return ab_error(error_r, "out of memory");
	}
	rc = memcached_server_push(store->memc, servers);
	memcached_server_list_free(servers);
	if (rc != MEMCACHED_SUCCESS) {
		ab_error(error_r, "memcached_servers = '%s': %s",
			 cfg->memcached_servers, memcached_strerror(store->memc, rc));
		ab_store_deinit(&store);
		return -1;
	}
	store->server_count = memcached_server_count(store->memc);
	if (store->server_count == 0 || store->server_count > AB_STORE_MAX_SERVERS) {
		ab_error(error_r, "memcached_servers: 1 to %d servers, not %u",
			 AB_STORE_MAX_SERVERS, store->server_count);
		ab_store_deinit(&store);
		return -1;
	}

#define BEHAVIOR(b, v) memcached_behavior_set(store->memc, b, (uint64_t)(v))
	/* increment-with-initial needs the binary protocol */
	BEHAVIOR(MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
	BEHAVIOR(MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
	/* non-blocking I/O, so that POLL_TIMEOUT bounds every wait */
	BEHAVIOR(MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
	BEHAVIOR(MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, cfg->connect_timeout_ms);
	BEHAVIOR(MEMCACHED_BEHAVIOR_POLL_TIMEOUT, cfg->poll_timeout_ms);
	BEHAVIOR(MEMCACHED_BEHAVIOR_SND_TIMEOUT, cfg->poll_timeout_ms * 1000ULL);
	BEHAVIOR(MEMCACHED_BEHAVIOR_RCV_TIMEOUT, cfg->poll_timeout_ms * 1000ULL);
	/* a pool keeps most keys where they were when a server comes or goes */
	BEHAVIOR(MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
	/* a refused server is ejected and its keys go to the others until
	   dead_timeout has passed */
	BEHAVIOR(MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, cfg->server_failure_limit);
	BEHAVIOR(MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 1);
	BEHAVIOR(MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, cfg->dead_timeout_s);
	BEHAVIOR(MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, cfg->dead_timeout_s);
#undef BEHAVIOR
	*store_r = store;
	return 0;
}

void ab_store_deinit(struct ab_store **_store)
{
	struct ab_store *store = *_store;

	if (store == NULL)
		return;
	*_store = NULL;
	if (store->memc != NULL)
		memcached_free(store->memc);
	free(store);
}

void ab_store_get_stats(const struct ab_store *store,
			struct ab_store_stats *stats_r)
{
	*stats_r = store->stats;
}

void ab_store_set_clock(struct ab_store *store, time_t (*now)(void))
{
	store->now = now != NULL ? now : default_now;
}

static uint32_t server_of(struct ab_store *store, const char *key)
{
	uint32_t idx;

	/* libmemcached rebuilds its continuum of live servers only inside
	   its own operations, once a dead server's retry time is up; do it
	   here too, or keys are grouped for a server the request will not
	   go to and the survivor's answers are lost. */
	memcached_autoeject(store->memc);
	idx = memcached_generate_hash(store->memc, key, strlen(key));

	return idx < store->server_count ? idx : 0;
}

/* --- observer hook (ab-observer.h): metrics for a face that asks --- */
void ab_store_set_observer(struct ab_store *store,
			   const struct ab_observer *observer, void *ctx)
{
	store->observer = observer;
	store->observer_ctx = ctx;
}

static void store_observe_begin(struct ab_store *store)
{
	if (store->observer != NULL && store->observer->store_request_begin != NULL)
		store->observer->store_request_begin(store->observer_ctx);
}

static void store_observe_end(struct ab_store *store, uint32_t idx,
			      const char *what, bool ok, memcached_return_t rc)
{
	char name[128];

	if (store->observer == NULL || store->observer->store_request_end == NULL)
		return;
	store->observer->store_request_end(store->observer_ctx,
		server_name(store, idx, name, sizeof(name)), what,
		ok ? "ok" : rc == MEMCACHED_TIMEOUT ? "timeout" : "error");
}

static void store_observe_breaker(struct ab_store *store, uint32_t idx)
{
	char name[128];

	if (store->observer != NULL && store->observer->breaker_open != NULL)
		store->observer->breaker_open(store->observer_ctx,
			server_name(store, idx, name, sizeof(name)));
}
/* --- end of the observer hook --- */

/* May a request go to server idx now? */
static bool breaker_admit(struct ab_store *store, uint32_t idx)
{
	struct breaker *b = &store->breaker[idx];

	if (!b->open)
		return true;
	if (store->now() >= b->open_until)
		return true;	/* half-open: one request decides */
	store->stats.skipped++;
	return false;
}

static void breaker_result(struct ab_store *store, uint32_t idx, bool ok,
			   const char *what, memcached_return_t rc)
{
	struct breaker *b = &store->breaker[idx];
	char name[128];

	store_observe_end(store, idx, what, ok, rc);	/* observer hook */
	if (ok) {
		if (b->open)
			store_log(store, AB_LOG_INFO,
				  "memcached %s answers again: circuit breaker closed",
				  server_name(store, idx, name, sizeof(name)));
		b->failures = 0;
		b->open = false;
		return;
	}
	store->stats.failures++;
	b->failures++;
	if (b->failures >= store->cfg->breaker_failures) {
		if (!b->open) {
			store->stats.breaker_opened++;
			store_observe_breaker(store, idx);	/* observer hook */
			store_log(store, AB_LOG_WARNING,
				  "memcached %s failed %u requests in a row (last: %s: %s): "
				  "circuit breaker open, skipping it for %us",
				  server_name(store, idx, name, sizeof(name)),
				  b->failures, what,
				  memcached_strerror(store->memc, rc),
				  store->cfg->breaker_cooldown_s);
		}
		b->open = true;
		b->open_until = store->now() + (time_t)store->cfg->breaker_cooldown_s;
	}
}

static int key_error(struct ab_store *store, uint32_t idx, const char *what,
		     memcached_return_t rc, const char **error_r)
{
	char name[128];

	breaker_result(store, idx, false, what, rc);
	return ab_error(error_r, "memcached %s: %s: %s",
			server_name(store, idx, name, sizeof(name)), what,
			memcached_strerror(store->memc, rc));
}

static int admit_or_error(struct ab_store *store, uint32_t idx,
			  const char **error_r)
{
	char name[128];

	if (breaker_admit(store, idx)) {
		store_observe_begin(store);	/* observer hook */
		return 0;
	}
	return ab_error(error_r, "memcached %s: circuit breaker open",
			server_name(store, idx, name, sizeof(name)));
}

static uint64_t parse_value(const char *data, size_t len)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < len && data[i] >= '0' && data[i] <= '9'; i++)
		v = v * 10 + (uint64_t)(data[i] - '0');
	return v;
}

/* One mget for the keys that live on one server. */
static int mget_group(struct ab_store *store, uint32_t idx,
		      const char *const *keys, const size_t *map, size_t n,
		      uint64_t *values_r, bool *found_r, const char **error_r)
{
	const char *group_keys[AB_MGET_MAX];
	size_t lens[AB_MGET_MAX];
	memcached_result_st result;
	memcached_return_t rc;
	size_t i;

	if (admit_or_error(store, idx, error_r) < 0)
		return -1;
	for (i = 0; i < n; i++) {
		group_keys[i] = keys[map[i]];
		lens[i] = strlen(group_keys[i]);
	}
	store->stats.requests++;
	rc = memcached_mget_by_key(store->memc, group_keys[0], lens[0],
				   group_keys, lens, n);
	if (rc != MEMCACHED_SUCCESS)
		return key_error(store, idx, "mget", rc, error_r);
	if (memcached_result_create(store->memc, &result) == NULL)
		return ab_error(error_r, "out of memory");
	while (memcached_fetch_result(store->memc, &result, &rc) != NULL) {
		const char *key = memcached_result_key_value(&result);
		size_t key_len = memcached_result_key_length(&result);

		for (i = 0; i < n; i++) {
			if (lens[i] == key_len &&
			    memcmp(group_keys[i], key, key_len) == 0) {
				values_r[map[i]] = parse_value(
					memcached_result_value(&result),
					memcached_result_length(&result));
				found_r[map[i]] = true;
				break;
			}
		}
	}
	memcached_result_free(&result);
	if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS &&
	    rc != MEMCACHED_NOTFOUND)
		return key_error(store, idx, "mget", rc, error_r);
	breaker_result(store, idx, true, "mget", rc);
	return 0;
}

int ab_store_mget(struct ab_store *store, const char *const *keys, size_t n,
		  uint64_t *values_r, bool *found_r, const char **error_r)
{
	uint32_t server[AB_MGET_MAX];
	bool done[AB_MGET_MAX];
	size_t map[AB_MGET_MAX];
	size_t i, j, groups = 0, failed = 0;
	const char *first_error = NULL;

	if (n > AB_MGET_MAX)
		return ab_error(error_r, "mget of %zu keys: at most %d", n, AB_MGET_MAX);
	for (i = 0; i < n; i++) {
		values_r[i] = 0;
		found_r[i] = false;
		server[i] = server_of(store, keys[i]);
		done[i] = false;
	}
	for (i = 0; i < n; i++) {
		size_t count = 0;
		const char *error;

		if (done[i])
			continue;
		for (j = i; j < n; j++) {
			if (!done[j] && server[j] == server[i]) {
				map[count++] = j;
				done[j] = true;
			}
		}
		groups++;
		if (mget_group(store, server[i], keys, map, count,
			       values_r, found_r, &error) < 0) {
			failed++;
			if (first_error == NULL)
				first_error = error;
		}
	}
	if (failed == 0)
		return 0;
	ab_error(error_r, "%s", first_error);
	return failed == groups ? -1 : 1;
}

int ab_store_incr(struct ab_store *store, const char *key, uint64_t delta,
		  unsigned int ttl_s, uint64_t *value_r, const char **error_r)
{
	uint32_t idx = server_of(store, key);
	memcached_return_t rc;
	uint64_t value = 0;

	if (admit_or_error(store, idx, error_r) < 0)
		return -1;
	store->stats.requests++;
	rc = memcached_increment_with_initial(store->memc, key, strlen(key),
					      delta, delta, (time_t)ttl_s, &value);
	if (rc != MEMCACHED_SUCCESS)
		return key_error(store, idx, "increment", rc, error_r);
	breaker_result(store, idx, true, "increment", rc);
	if (value_r != NULL)
		*value_r = value;
	return 0;
}

int ab_store_decr(struct ab_store *store, const char *key, uint64_t delta,
		  const char **error_r)
{
	uint32_t idx = server_of(store, key);
	memcached_return_t rc;
	uint64_t value;

	if (admit_or_error(store, idx, error_r) < 0)
		return -1;
	store->stats.requests++;
	rc = memcached_decrement(store->memc, key, strlen(key), (uint32_t)delta,
				 &value);
	if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND)
		return key_error(store, idx, "decrement", rc, error_r);
	breaker_result(store, idx, true, "decrement", rc);
	return 0;
}

static int store_value(struct ab_store *store, bool add, const char *key,
		       uint64_t value, unsigned int ttl_s, bool *added_r,
		       const char **error_r)
{
	uint32_t idx = server_of(store, key);
	memcached_return_t rc;
	char buf[24];
	int len = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)value);

	if (admit_or_error(store, idx, error_r) < 0)
		return -1;
	store->stats.requests++;
	if (add)
		rc = memcached_add(store->memc, key, strlen(key), buf, (size_t)len,
				   (time_t)ttl_s, 0);
	else
		rc = memcached_set(store->memc, key, strlen(key), buf, (size_t)len,
				   (time_t)ttl_s, 0);
	if (add && (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS)) {
		breaker_result(store, idx, true, "add", rc);
		*added_r = false;
		return 0;
	}
	if (rc != MEMCACHED_SUCCESS)
		return key_error(store, idx, add ? "add" : "set", rc, error_r);
	breaker_result(store, idx, true, "set", rc);
	if (added_r != NULL)
		*added_r = true;
	return 0;
}

int ab_store_set(struct ab_store *store, const char *key, uint64_t value,
		 unsigned int ttl_s, const char **error_r)
{
	return store_value(store, false, key, value, ttl_s, NULL, error_r);
}

int ab_store_add(struct ab_store *store, const char *key, uint64_t value,
		 unsigned int ttl_s, bool *added_r, const char **error_r)
{
	return store_value(store, true, key, value, ttl_s, added_r, error_r);
}

int ab_store_delete(struct ab_store *store, const char *key, bool *found_r,
		    const char **error_r)
{
	uint32_t idx = server_of(store, key);
	memcached_return_t rc;

	if (found_r != NULL)
		*found_r = false;
	if (admit_or_error(store, idx, error_r) < 0)
		return -1;
	store->stats.requests++;
	rc = memcached_delete(store->memc, key, strlen(key), 0);
	if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND)
		return key_error(store, idx, "delete", rc, error_r);
	breaker_result(store, idx, true, "delete", rc);
	if (found_r != NULL)
		*found_r = rc == MEMCACHED_SUCCESS;
	return 0;
}

int ab_store_evictions(struct ab_store *store, uint64_t *evictions_r,
		       const char **error_r)
{
	memcached_stat_st *stats;
	memcached_return_t rc;
	uint64_t sum = 0;
	uint32_t i;
	bool any = false;

	*evictions_r = 0;
	stats = memcached_stat(store->memc, NULL, &rc);
	if (stats == NULL)
		return ab_error(error_r, "memcached stats: %s",
				memcached_strerror(store->memc, rc));
	for (i = 0; i < store->server_count; i++) {
		/* a server that did not answer has pid 0 */
		if (stats[i].pid == 0)
			continue;
		sum += stats[i].evictions;
		any = true;
	}
	memcached_stat_free(store->memc, stats);
	if (!any)
		return ab_error(error_r, "memcached stats: no server answered");
	*evictions_r = sum;
	return 0;
}
