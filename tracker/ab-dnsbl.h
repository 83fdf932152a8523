/* DNS blocklists (RFC 5782): is a client's address listed in one of the
   zones of `dnsbl`? Queries go over UDP to one resolver, all zones at
   once, on a connected socket of their own with random ids; an answer is
   taken only when its id, question and sender match. No blocking call:
   the Dovecot service waits on the socket in its ioloop, PAM and the CLI
   in ab_dnsbl_lookup_wait(). Answers carry their TTL, which the tracker
   caches them for (ab_tracker_dnsbl_*). */
#ifndef AB_DNSBL_H
#define AB_DNSBL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ab-identity.h"

struct ab_config;

#define AB_DNSBL_ZONES_MAX 8
/* a zone's name leaves room for an IPv6 address's 32 nibbles */
#define AB_DNSBL_ZONE_MAX 180
/* how long an answer without a TTL of its own is kept (a negative
   answer without an SOA), and the most any answer is kept */
#define AB_DNSBL_DEFAULT_TTL 300U
#define AB_DNSBL_MAX_TTL 86400U
/* a lookup that failed (timeout, SERVFAIL) counts as "not listed" for
   this long, so that a dead resolver does not delay every login */
#define AB_DNSBL_ERROR_TTL 30U

enum ab_dnsbl_status {
	AB_DNSBL_NOT_LISTED,
	AB_DNSBL_LISTED,
	/* no answer in time, SERVFAIL, a malformed answer...: treated as
	   not listed, and logged */
	AB_DNSBL_ERROR,
};

struct ab_dnsbl_result {
	enum ab_dnsbl_status status;
	unsigned int zone;		/* LISTED: by which zone (index) */
	uint8_t answer[4];		/* LISTED: the A record, 127.0.0.x */
	unsigned int ttl_s;		/* how long to keep the answer */
	char error[160];		/* ERROR: what went wrong, per zone */
};

struct ab_dnsbl;
struct ab_dnsbl_lookup;

/* The zones, the resolver and the timeout of cfg. *dnsbl_r is NULL when
   cfg sets no zone. The resolver is cfg->dnsbl_resolver, or the first
   nameserver of /etc/resolv.conf. */
/* Check the zones of a `dnsbl` setting (comma- or space-separated). */
int ab_dnsbl_zones_check(const char *zones, const char **error_r);
int ab_dnsbl_init(const struct ab_config *cfg, struct ab_dnsbl **dnsbl_r,
		  const char **error_r);
void ab_dnsbl_deinit(struct ab_dnsbl **dnsbl);
const char *ab_dnsbl_zone(const struct ab_dnsbl *dnsbl, unsigned int i);
/* The zones and the resolver in one string: part of the cache key, so a
   change of either forgets the answers of the old ones. */
const char *ab_dnsbl_signature(const struct ab_dnsbl *dnsbl);

/* Send the queries for addr. Fails only when no socket can be made (the
   error says why). */
int ab_dnsbl_lookup_start(struct ab_dnsbl *dnsbl, const struct ab_addr *addr,
			  struct ab_dnsbl_lookup **lookup_r,
			  const char **error_r);
/* The socket to wait on for input. */
int ab_dnsbl_lookup_fd(const struct ab_dnsbl_lookup *lookup);
/* Read what has arrived. True when the result is known (a zone listed
   the address, or every zone has answered). */
bool ab_dnsbl_lookup_input(struct ab_dnsbl_lookup *lookup);
/* The result, and free the lookup. A zone that has not answered yet
   timed out. */
void ab_dnsbl_lookup_finish(struct ab_dnsbl_lookup **lookup,
			    struct ab_dnsbl_result *result_r);
/* A lookup that could not be made (ab_dnsbl_lookup_start() failed):
   the result it counts as, with error as its cause. */
void ab_dnsbl_result_failed(struct ab_dnsbl_result *result_r,
			    const char *error);
/* Start, wait at most cfg's dnsbl_timeout, finish. */
void ab_dnsbl_lookup_wait(struct ab_dnsbl *dnsbl, const struct ab_addr *addr,
			  struct ab_dnsbl_result *result_r);

/* --- the wire format, for the lookup and its unit tests --- */

/* "d.c.b.a.zone" (IPv4) or the 32 nibbles of an IPv6 address, reversed. */
int ab_dnsbl_query_name(const char *zone, const struct ab_addr *addr,
			char *buf, size_t size);
/* A recursive query for name's A record; returns its length, or -1. */
int ab_dnsbl_query_build(const char *name, uint16_t id, uint8_t *buf,
			 size_t size);
/* What one answer to (id, name) says. Returns false when the datagram is
   not that answer (another id, another question, not a response), true
   when it is; then result_r says listed, not listed or error (the zone
   field is left 0). */
bool ab_dnsbl_answer_parse(const uint8_t *buf, size_t len, uint16_t id,
			   const char *name, struct ab_dnsbl_result *result_r);

#endif
