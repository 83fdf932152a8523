/* The tracker: what the Dovecot service, the PAM module and the CLI call.
   It reads the records an attempt is about (ab-record.h) in one round
   trip, asks the engine, and writes back what the engine changed. */
#ifndef AB_TRACKER_H
#define AB_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "ab-campaign.h"
#include "ab-config.h"
#include "ab-engine.h"
#include "ab-hash.h"
#include "ab-log.h"
#include "ab-store.h"

struct ab_tracker;

/* cfg must outlive the tracker. Loads the secret and sets up the store
   (no connection is made until the first call). */
int ab_tracker_init(const struct ab_config *cfg, ab_log_fn *log, void *log_ctx,
		    struct ab_tracker **tracker_r, const char **error_r);
void ab_tracker_deinit(struct ab_tracker **tracker);
struct ab_store *ab_tracker_store(struct ab_tracker *tracker);
const struct ab_config *ab_tracker_config(struct ab_tracker *tracker);

/* Normalise what a face received into an attempt. login may be NULL
   (address rules only), address may be NULL or "" (account rules only),
   pw may be NULL. A malformed login or address is an error. */
int ab_attempt_init(struct ab_tracker *tracker, struct ab_attempt *attempt_r,
		    const char *login, const char *address,
		    const char *protocol, const void *pw, size_t pw_len,
		    const char **error_r);

/* The password itself (PAM): its fingerprint without the account, for
   campaign mode's count of accounts one wrong password was tried on
   (ab-campaign.h). Dovecot's pwhash is salted per login: not for it. */
void ab_attempt_set_spray_password(struct ab_tracker *tracker,
				   struct ab_attempt *attempt,
				   const void *pw, size_t pw_len);

/* Pair the attempt's allow with its report: Dovecot's session_id, or an
   id the PAM module keeps on its handle. Only a paired allow holds places
   in the budgets (see ab_reserve()). */
void ab_attempt_set_session(struct ab_attempt *attempt, const void *id,
			    size_t len);

enum ab_allow_flags {
	/* a dry run: change nothing (the CLI's check) */
	AB_ALLOW_DRY_RUN = 1 << 0,
};

/* Decide, and when the attempt goes on to the password check, hold its
   places until its report. Never fails: when the store cannot answer, the
   decision follows fail_mode and says so (decision_r->store_failed).
   Two round trips, one for a refusal (see "round trips" in ab-tracker.c). */
void ab_tracker_allow(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt, time_t now,
		      unsigned int flags, struct ab_decision *decision_r);
/* Record an outcome, settling what its allow held. Two round trips, one
   more when a block or lock is set. Returns -1 when the store could not
   take it (the tracker has logged it, once per fail_log_interval). */
int ab_tracker_report(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt,
		      enum ab_outcome outcome, time_t now,
		      const char **error_r);

/* The same for many attempts at once, sharing the round trips: a service
   with several requests ready decides them together. Decided in the
   order given, as if one after the other. */
#define AB_TRACKER_BATCH_MAX 16
void ab_tracker_allow_many(struct ab_tracker *tracker,
			   const struct ab_attempt *const *attempts, size_t n,
			   time_t now, unsigned int flags,
			   struct ab_decision *decisions_r);
int ab_tracker_report_many(struct ab_tracker *tracker,
			   const struct ab_attempt *const *attempts,
			   const enum ab_outcome *outcomes, size_t n,
			   time_t now, const char **error_r);
/* DNS blocklists (dnsbl): whether an attempt's address is listed, found
   out before its allow (attempt->dnsbl_listed). */
struct ab_dnsbl;
/* NULL when dnsbl is empty. */
struct ab_dnsbl *ab_tracker_dnsbl(struct ab_tracker *tracker);
/* Does the attempt still need to know (dnsbl set, not yet checked, an
   address to which address rules apply)? */
bool ab_tracker_dnsbl_wanted(struct ab_tracker *tracker,
			     const struct ab_attempt *attempt);
/* The answers memcached keeps for the attempts that want one, in one
   round trip: each found is checked after it; the others need a lookup. */
void ab_tracker_dnsbl_cached(struct ab_tracker *tracker,
			     struct ab_attempt *const *attempts, size_t n);
/* A lookup's result (ab-dnsbl.h): the attempt is checked, the answer
   logged and kept in memcached for its TTL (not with AB_ALLOW_DRY_RUN). */
struct ab_dnsbl_result;
void ab_tracker_dnsbl_take(struct ab_tracker *tracker,
			   struct ab_attempt *attempt,
			   const struct ab_dnsbl_result *result,
			   unsigned int flags);
/* Both, blocking for at most dnsbl_timeout: for PAM and the CLI. */
void ab_tracker_dnsbl_check(struct ab_tracker *tracker,
			    struct ab_attempt *attempt, unsigned int flags);

/* Tell observer (ab-observer.h; NULL: nobody) of memcached round trips,
   breaker trips and the blocks and locks this process sets; it must
   outlive the tracker. For a face's metrics. */
struct ab_observer;
void ab_tracker_set_observer(struct ab_tracker *tracker,
			     const struct ab_observer *observer, void *ctx);

/* Warn (through the log hook) when memcached has evicted items since the
   last call: lost counts and locks. One stats round trip per server; the
   Dovecot service calls it on a timer. */
void ab_tracker_watch_evictions(struct ab_tracker *tracker);

/* One line for logs: account, address, protocol, decision, reason. */
const char *ab_decision_log_line(const struct ab_attempt *attempt,
				 const struct ab_decision *decision,
				 char *buf, size_t size);

/* Campaign mode (ab-campaign.h) as this process last read it (allows
   read it at most once a second): for a face's metrics. */
bool ab_tracker_campaign_on(struct ab_tracker *tracker, time_t now);
/* What reading and writing the campaign state cost this process so far
   (requests, ops, posted): beside what a login costs (ab-cost.h), at most
   a few operations a second per process. */
void ab_tracker_campaign_cost(const struct ab_tracker *tracker,
			      struct ab_store_stats *cost_r);

/* --- administration (the CLI) ---
   Each call returns 0, -1 for bad input (error_r says what), or
   AB_ERR_STORE when memcached could not answer. */
#define AB_ERR_STORE (-2)

/* What refuses and for how long is ab_refusal()'s answer, as for a
   login: *_left_s is the time until one is let through again. */
struct ab_account_status {
	unsigned long long failures;	/* from unfamiliar origins, in the window */
	unsigned long long familiar_failures;
	unsigned long long strikes;	/* locks so far */
	bool locked;			/* for unfamiliar origins */
	unsigned long long lock_left_s;
	bool familiar_refused;		/* familiar subnets: familiar_failures */
	unsigned long long familiar_left_s;
	unsigned long long familiar_subnets;
};

struct ab_address_status {
	unsigned long long failures, accounts, inflight, strikes;
	bool blocked;			/* address rules refuse it */
	unsigned long long block_left_s;
	unsigned long long net_failures, net_accounts, net_strikes;
	bool net_blocked;
	unsigned long long net_block_left_s;
	bool trusted, restricted_out;
};

int ab_tracker_account_status(struct ab_tracker *tracker, const char *login,
			      time_t now, struct ab_account_status *status_r,
			      const char **error_r);
int ab_tracker_address_status(struct ab_tracker *tracker, const char *address,
			      time_t now, struct ab_address_status *status_r,
			      const char **error_r);
/* Clear what keeps an account out: its lock, its failures (also those
   from its familiar networks) and its strikes. */
int ab_tracker_unlock(struct ab_tracker *tracker, const char *login,
		      time_t now, const char **error_r);
/* target: an address, or a subnet as "a.b.c.0/24" / "x:y:z::/48"
   (also an IPv6 /64). duration_s 0 means block_time. */
int ab_tracker_block(struct ab_tracker *tracker, const char *target,
		     unsigned int duration_s, time_t now, const char **error_r);
/* Remove a block and the counts behind it (and its strikes). */
int ab_tracker_unblock(struct ab_tracker *tracker, const char *target,
		       time_t now, const char **error_r);

/* Campaign mode now: the site's state, the rate the detector sees and
   the threshold it compares it with. */
struct ab_campaign_status {
	bool on;
	enum ab_campaign_mode mode;
	struct ab_campaign state;
	unsigned long long rate, threshold;
	/* this hour's baseline, when learned; the largest of any hour */
	bool learned;
	unsigned long long baseline_milli, peak_milli;
};
int ab_tracker_campaign_status(struct ab_tracker *tracker, time_t now,
			       struct ab_campaign_status *status_r,
			       const char **error_r);
/* Force campaign mode on or off, or hand it back to the detector. */
int ab_tracker_campaign_set(struct ab_tracker *tracker,
			    enum ab_campaign_mode mode, time_t now,
			    const char **error_r);

#endif
