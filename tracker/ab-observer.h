/* What a face may watch of the tracker and the store, for its metrics:
   memcached round trips, circuit breaker trips, blocks and locks set.
   Plain C values only, so the library stays free of Dovecot; the Dovecot
   service turns each call into a Dovecot event (plugin/policy-events.c). */
#ifndef AB_OBSERVER_H
#define AB_OBSERVER_H

enum ab_observed_block {
	AB_OBSERVED_ADDRESS,
	AB_OBSERVED_SUBNET,
	AB_OBSERVED_ACCOUNT,
};

/* Every member may be NULL. Calls come from inside tracker and store
   calls, synchronously: a callback must not call the tracker. */
struct ab_observer {
	/* A round trip to one memcached server (server_idx: its place in
	   memcached_servers) is about to start, after the circuit breaker
	   admitted it; store_request_end follows for the same server. */
	void (*store_request_begin)(void *ctx, unsigned int server_idx);
	/* server "host:port"; op "batch" (a round trip, any number of
	   requests); result "ok", "timeout" or "error" */
	void (*store_request_end)(void *ctx, unsigned int server_idx,
				  const char *server, const char *op,
				  const char *result);
	/* the breaker opened: the server is skipped for breaker_cooldown */
	void (*breaker_open)(void *ctx, const char *server);
	/* this node set a block or a lock (another node's are not seen) */
	void (*block_set)(void *ctx, enum ab_observed_block kind,
			  unsigned int duration_s);
};

#endif
