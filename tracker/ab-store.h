/* The memcached store: requests pipelined in memcached's meta protocol
   (ab-meta.h), one round trip per server for a whole batch, a pool of
   servers with rendezvous hashing and ejection of dead servers, a circuit
   breaker per server for hung ones, and state that must outlive a server
   kept on two of them. It knows nothing of policy. */
#ifndef AB_STORE_H
#define AB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ab-log.h"
#include "ab-meta.h"

struct ab_config;
struct ab_observer;
struct ab_store;

struct ab_store_stats {
	unsigned long long requests;	/* round trips (a batch is one per server) */
	unsigned long long posted;	/* batches sent without waiting */
	unsigned long long ops;		/* memcached operations sent */
	unsigned long long failures;	/* round trips that failed or timed out */
	unsigned long long skipped;	/* round trips not made: breaker open */
	unsigned long long breaker_opened;
	unsigned long long ejected;	/* servers taken out of the pool */
	/* round trips sent again on a new connection: the old one was
	   found closed (a memcached restart) before anything came back */
	unsigned long long retried;
	/* posted requests that could not be sent, or that memcached
	   answered with an error: lost writes */
	unsigned long long posts_lost;
};

enum ab_store_cmd {
	AB_STORE_GET,
	AB_STORE_INCR,		/* creates the key with value `value` and ttl */
	AB_STORE_DECR,		/* never below 0; a missing key stays missing */
	AB_STORE_SET,
	AB_STORE_ADD,		/* only when missing */
	AB_STORE_DELETE,
	/* GET of a record: its bytes into out_bytes, its CAS token into
	   cas (dual: the second copy's bytes into out_bytes2) */
	AB_STORE_GETS,
	/* write bytes only when the item is as GETS read it (cas; 0: only
	   when missing): DONE with the new token in cas, MISS when another
	   writer came first. dual: the second copy is written as it is,
	   without a check */
	AB_STORE_CAS,
};

enum ab_store_result {
	AB_STORE_FAILED,	/* the server did not answer (or was skipped) */
	AB_STORE_DONE,
	/* GET, DECR, DELETE: the key is missing; ADD: the key exists */
	AB_STORE_MISS,
};

/* One request of a batch. */
struct ab_store_op {
	enum ab_store_cmd cmd;
	const char *key;
	uint64_t value;		/* INCR/DECR: delta; SET/ADD: the value */
	/* SET/ADD: these bytes instead of value (at most AB_META_VALUE_MAX) */
	const void *bytes;
	size_t bytes_len;
	unsigned int ttl_s;	/* INCR (when it creates), SET, ADD */
	/* Kept on the two servers that rank highest for the key, so that it
	   outlives either of them leaving and coming back: a GET finds it on
	   either (the larger number), an ADD finds it there on either, an
	   INCR answers the larger count. For rare state that refuses
	   (blocks, locks, strikes, familiar subnets); counters need not. */
	bool dual;
	/* GET: a value that is not a number is copied here (NULL: a value
	   must be a number, anything else fails); GETS: the value */
	unsigned char *out_bytes;
	size_t out_bytes_cap;
	/* GETS of a dual op: the second copy (out_bytes2_cap bytes of room),
	   result2 whether it was found; CAS: whether it was written */
	unsigned char *out_bytes2;
	size_t out_bytes2_cap, out_bytes2_len;
	enum ab_store_result result2;
	/* GETS: the token read; CAS: the token expected, then the new one */
	uint64_t cas;
	/* filled in by ab_store_run() */
	enum ab_store_result result;
	uint64_t out;		/* GET: the value; INCR/DECR: the new value */
	size_t out_bytes_len;	/* GET into out_bytes */
};

/* At most this many requests in one batch. */
#define AB_STORE_BATCH_MAX 1536

/* log may be NULL. Servers are parsed now; connections are made on use. */
int ab_store_init(const struct ab_config *cfg, ab_log_fn *log, void *log_ctx,
		  struct ab_store **store_r, const char **error_r);
void ab_store_deinit(struct ab_store **store);

/* Run a batch: every server's requests go out in one write and come back
   in one read, all servers at once, executed in order per server, within
   poll_timeout. A server whose connection is found closed before it
   answered anything (a restart) gets its requests once more on a new
   connection. Returns 0 when every server answered, 1 when some did not
   (their requests are AB_STORE_FAILED), -1 when none did. */
int ab_store_run(struct ab_store *store, struct ab_store_op *ops, size_t n,
		 const char **error_r);
/* Send a batch and wait for nothing (memcached's quiet requests): for
   writes whose result decides nothing. They are executed before any
   later batch sent to the same server. What cannot be sent is counted
   (posts_lost) and logged. */
void ab_store_post(struct ab_store *store, const struct ab_store_op *ops,
		   size_t n);

/* One-request forms of ab_store_run(), for the administration paths. */
int ab_store_mget(struct ab_store *store, const char *const *keys, size_t n,
		  uint64_t *values_r, bool *found_r, const char **error_r);
int ab_store_incr(struct ab_store *store, const char *key, uint64_t delta,
		  unsigned int ttl_s, uint64_t *value_r, const char **error_r);
int ab_store_decr(struct ab_store *store, const char *key, uint64_t delta,
		  const char **error_r);
int ab_store_set(struct ab_store *store, const char *key, uint64_t value,
		 unsigned int ttl_s, const char **error_r);
int ab_store_add(struct ab_store *store, const char *key, uint64_t value,
		 unsigned int ttl_s, bool *added_r, const char **error_r);
/* *found_r (may be NULL) says whether it was there: of racing deletes,
   one finds it. */
int ab_store_delete(struct ab_store *store, const char *key, bool *found_r,
		    const char **error_r);
/* memcached's evictions so far, summed over the servers that answered. */
int ab_store_evictions(struct ab_store *store, uint64_t *evictions_r,
		       const char **error_r);

/* Share what this process learns of dead and hung servers with the
   processes after it, through the file at path (its folder is made when
   missing): read now, written when a server is taken out or skipped and
   when it is back. For pam_authbrake, whose every login is a new process;
   path NULL or "" shares nothing. */
int ab_store_share_state(struct ab_store *store, const char *path,
			 const char **error_r);

void ab_store_get_stats(const struct ab_store *store,
			struct ab_store_stats *stats_r);
/* Tell observer (may be NULL: nobody) of every request and breaker trip;
   observer must outlive the store. */
void ab_store_set_observer(struct ab_store *store,
			   const struct ab_observer *observer, void *ctx);

#endif
