/* The memcached store: bounded calls over libmemcached, one mget round
   trip per server, and a circuit breaker per server for hung servers. */
#ifndef AB_STORE_H
#define AB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ab-log.h"

struct ab_config;
struct ab_observer;
struct ab_store;

struct ab_store_stats {
	unsigned long long requests;	/* requests sent (an mget is one per server) */
	unsigned long long failures;	/* requests that failed or timed out */
	unsigned long long skipped;	/* requests not sent: breaker open */
	unsigned long long breaker_opened;
};

/* log may be NULL. Servers are parsed now; connections are made on use. */
int ab_store_init(const struct ab_config *cfg, ab_log_fn *log, void *log_ctx,
		  struct ab_store **store_r, const char **error_r);
void ab_store_deinit(struct ab_store **store);

/* Read n numeric values. values_r[i] is 0 and found_r[i] false for a
   missing key. Returns 0 when every server answered, 1 when some did not
   (the keys they hold read as missing), -1 when none answered. */
int ab_store_mget(struct ab_store *store, const char *const *keys, size_t n,
		  uint64_t *values_r, bool *found_r, const char **error_r);
/* Increment, creating the key with value delta and ttl when missing. */
int ab_store_incr(struct ab_store *store, const char *key, uint64_t delta,
		  unsigned int ttl_s, uint64_t *value_r, const char **error_r);
/* Decrement; memcached never goes below 0; a missing key is not an error. */
int ab_store_decr(struct ab_store *store, const char *key, uint64_t delta,
		  const char **error_r);
int ab_store_set(struct ab_store *store, const char *key, uint64_t value,
		 unsigned int ttl_s, const char **error_r);
/* Add only when missing; *added_r says whether it was. */
int ab_store_add(struct ab_store *store, const char *key, uint64_t value,
		 unsigned int ttl_s, bool *added_r, const char **error_r);
/* Delete; a missing key is not an error. *found_r (may be NULL) says
   whether it was there: of racing deletes, one finds it. */
int ab_store_delete(struct ab_store *store, const char *key, bool *found_r,
		    const char **error_r);
/* memcached's evictions so far, summed over the servers that answered. */
int ab_store_evictions(struct ab_store *store, uint64_t *evictions_r,
		       const char **error_r);

void ab_store_get_stats(const struct ab_store *store,
			struct ab_store_stats *stats_r);
/* Tell observer (may be NULL: nobody) of every request and breaker trip;
   observer must outlive the store. */
void ab_store_set_observer(struct ab_store *store,
			   const struct ab_observer *observer, void *ctx);
/* For tests: a clock the breaker reads; NULL restores time(). */
void ab_store_set_clock(struct ab_store *store, time_t (*now)(void));

#endif
