/* Campaign mode: a password spray across many accounts, seen site-wide.

   A spray tries one or two passwords on each of thousands of accounts,
   each from a new address, and stays under every per-account and
   per-address limit. What it cannot hide is the site's rate of failures
   from origins unfamiliar to their account: every node counts them in
   memcached, in buckets of campaign_interval, and compares the last
   interval with what this site normally sees at this hour (a baseline
   per 1/24 of campaign_day, learned slowly, never during a campaign)
   and with campaign_floor. pam_authbrake, which has the password, also
   counts how many accounts one wrong password was tried on.

   While campaign mode is on, an account refuses unfamiliar origins after
   campaign_lock_failures failures (ab_decide()); familiar subnets and
   trusted_networks are untouched.

   This file is arithmetic and the state item's codec; the tracker does
   the I/O (ab-tracker.c, "campaign"). */
#ifndef AB_CAMPAIGN_H
#define AB_CAMPAIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct ab_config;

enum ab_campaign_mode {
	AB_CAMPAIGN_AUTO,	/* the detector decides */
	AB_CAMPAIGN_FORCED_ON,	/* `authbrake campaign on` */
	AB_CAMPAIGN_FORCED_OFF,	/* `authbrake campaign off` */
};

enum ab_campaign_cause {
	AB_CAMPAIGN_BY_RATE,
	AB_CAMPAIGN_BY_PASSWORD,
};

/* The site's state: one memcached item, shared by every node. */
struct ab_campaign {
	enum ab_campaign_mode mode;
	/* the detector's campaign: when it started (0: none), when a node
	   last saw the rate at the threshold (it ends campaign_cooldown
	   after), when its end was logged (0: not yet) */
	time_t started, last_high, ended;
	enum ab_campaign_cause cause;
	/* what started it: failures in the interval and the threshold, or
	   accounts one password was tried on and campaign_password_accounts */
	uint64_t rate, threshold;
};

#define AB_CAMPAIGN_BYTES_MAX 128

/* The item's text: "c1 MODE STARTED LAST_HIGH ENDED CAUSE RATE THRESHOLD".
   Decoding anything else is an error (and leaves *c_r in auto, idle). */
size_t ab_campaign_encode(const struct ab_campaign *c,
			  char buf[AB_CAMPAIGN_BYTES_MAX]);
int ab_campaign_decode(const void *bytes, size_t len, struct ab_campaign *c_r,
		       const char **error_r);

/* Is campaign mode on now: forced on, or the detector's campaign while the
   rate was at the threshold within campaign_cooldown? */
bool ab_campaign_on(const struct ab_campaign *c, const struct ab_config *cfg,
		    time_t now);

/* The detector's bucket at now, and the baseline slot of a bucket (its
   1/24 of campaign_day). */
uint64_t ab_campaign_bucket(const struct ab_config *cfg, time_t now);
unsigned int ab_campaign_slot(const struct ab_config *cfg, uint64_t bucket);
#define AB_CAMPAIGN_SLOTS 24

/* Failures in the last campaign_interval: this bucket's, and the part of
   the bucket before that the interval still covers. */
uint64_t ab_campaign_rate(const struct ab_config *cfg, time_t now,
			  uint64_t current, uint64_t before);
/* What a slot has learned: failures per interval, in thousandths, and
   how many buckets it learned from (at most 255 are told apart). It is
   learned once it has seen a day's worth of its buckets; until then its
   average is a plain mean of what it saw. */
struct ab_campaign_baseline {
	uint64_t milli;
	unsigned int samples;
};
/* As a memcached number, and back (0: nothing learned). */
uint64_t ab_campaign_baseline_pack(const struct ab_campaign_baseline *b);
void ab_campaign_baseline_unpack(uint64_t value,
				 struct ab_campaign_baseline *b_r);
bool ab_campaign_learned(const struct ab_config *cfg,
			 const struct ab_campaign_baseline *b);
/* One more bucket of the slot counted count failures: an average that
   gives each bucket 1/(campaign_learn_days x buckets per slot per day). */
void ab_campaign_learn(const struct ab_config *cfg,
		       struct ab_campaign_baseline *b, uint64_t count);

/* The threshold the rate is compared with: campaign_factor times the
   baseline of this bucket's slot, and of the slot of the bucket before
   (before may be NULL: the same slot) while it still counts in the rate;
   never under campaign_floor. A slot not learned yet (a site's first
   day) takes the largest baseline learned in any slot (peak_milli) times
   campaign_factor once more, so that a morning peak is not a campaign;
   with no slot learned anywhere (!peak_known), no rate is one. */
#define AB_CAMPAIGN_NEVER UINT64_MAX
uint64_t ab_campaign_threshold(const struct ab_config *cfg,
			       const struct ab_campaign_baseline *slot,
			       const struct ab_campaign_baseline *before,
			       bool peak_known, uint64_t peak_milli);

/* The rate that keeps a campaign on: its threshold, or for a campaign PAM
   saw (one password on many accounts) the site's normal rate
   (normal_milli: this hour's baseline, 0 when not learned) plus
   campaign_password_accounts, when that is lower: the attempts it
   refuses count in the rate, and a spray too small for the threshold
   that started it by its password must not end it while it goes on. */
uint64_t ab_campaign_keep(const struct ab_campaign *c,
			  const struct ab_config *cfg, uint64_t threshold,
			  uint64_t normal_milli);

/* What a node does with the state it read and the rate it sees (threshold:
   ab_campaign_threshold(), or while it is on ab_campaign_keep()). */
enum ab_campaign_step {
	AB_CAMPAIGN_NOTHING,
	AB_CAMPAIGN_START,	/* on now: log it */
	AB_CAMPAIGN_REFRESH,	/* still at the threshold: say so (last_high) */
	AB_CAMPAIGN_END,	/* under it for campaign_cooldown: log the end */
};
enum ab_campaign_step ab_campaign_step(const struct ab_campaign *c,
				       const struct ab_config *cfg, time_t now,
				       uint64_t rate, uint64_t threshold);
/* Do step to c (what the node writes back). */
void ab_campaign_apply(struct ab_campaign *c, enum ab_campaign_step step,
		       enum ab_campaign_cause cause, time_t now,
		       uint64_t rate, uint64_t threshold);

const char *ab_campaign_mode_name(enum ab_campaign_mode mode);

#endif
