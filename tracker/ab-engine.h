/* The policy engine: pure functions of (stored state, attempt, config,
   now). The store does I/O; this file does arithmetic. */
#ifndef AB_ENGINE_H
#define AB_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ab-identity.h"

struct ab_config;

/* One stored value per slot; the tracker maps slots to keyed hashes of
   the attempt's identities (ab_slot_info() says which). Windowed counts
   live in two buckets, the current one and the one before it: both count
   in full, so a count covers at least one window and no boundary gives a
   fresh budget. */
enum ab_slot {
	AB_SLOT_IP_FAIL,	/* failures + places held, this bucket */
	AB_SLOT_IP_FAIL_PREV,	/* ... the bucket before */
	AB_SLOT_IP_ACCTS,	/* distinct accounts tried from the address */
	AB_SLOT_IP_ACCTS_PREV,
	AB_SLOT_IP_PAIR,	/* marker: this account already tried from it */
	AB_SLOT_IP_BLOCK,	/* block expiry (unix time) */
	AB_SLOT_IP_STRIKES,	/* blocks so far: the next one is longer */
	AB_SLOT_IP_INFLIGHT,	/* attempts allowed but not yet reported */
	AB_SLOT_NET_FAIL,
	AB_SLOT_NET_FAIL_PREV,
	AB_SLOT_NET_ACCTS,
	AB_SLOT_NET_ACCTS_PREV,
	AB_SLOT_NET_PAIR,
	AB_SLOT_NET_BLOCK,
	AB_SLOT_NET_STRIKES,
	AB_SLOT_ACCT_FAIL,	/* failures + places held from unfamiliar origins */
	AB_SLOT_ACCT_FAIL_PREV,
	AB_SLOT_ACCT_SFAIL,	/* of those, the ones from this subnet, this bucket */
	AB_SLOT_ACCT_LOCK,	/* lock expiry (unix time) */
	AB_SLOT_ACCT_STRIKES,	/* locks so far: the next one is longer */
	AB_SLOT_ACCT_FAM,	/* this subnet is familiar: expiry */
	AB_SLOT_ACCT_FAMFAIL,	/* failures from familiar subnets, this bucket */
	AB_SLOT_ACCT_FAMCOUNT,	/* familiar subnets (approximate) */
	AB_SLOT_ACCT_PW,	/* marker: this wrong password seen recently */
	AB_SLOT_SESSION,	/* what an allowed attempt holds, until its report */
	/* after the session: a hold's bits (struct ab_hold) keep their
	   meaning across a rolling upgrade */
	AB_SLOT_ACCT_FAMFAIL_PREV,
	AB_SLOT_ACCT_SFAIL_PREV,
	/* when an administrator last unlocked the account: a subnet's
	   failures counted before it were cleared with the account's */
	AB_SLOT_ACCT_UNLOCKED,

	AB_SLOT_COUNT
};

/* What a slot's key is made of. */
enum ab_scope {
	AB_SCOPE_ADDR,		/* the address (IPv6: its /64) */
	AB_SCOPE_NET,		/* its subnet */
	AB_SCOPE_ADDR_ACCT,	/* address and account */
	AB_SCOPE_NET_ACCT,	/* subnet and account */
	AB_SCOPE_ACCT,		/* the account */
	AB_SCOPE_ACCT_NET,	/* account and subnet */
	AB_SCOPE_ACCT_PW,	/* account and password fingerprint */
	AB_SCOPE_SESSION,	/* the login's session */
};

/* Which window's buckets a slot lives in. */
enum ab_bucket {
	AB_BUCKET_NONE,
	AB_BUCKET_IP,		/* ip_window, current bucket */
	AB_BUCKET_IP_PREV,	/* ip_window, the bucket before */
	AB_BUCKET_ACCT,
	AB_BUCKET_ACCT_PREV,
};

struct ab_slot_info {
	const char *name;	/* for logs and tests */
	/* two letters: slots that share them are one count, in two
	   buckets (ab-tracker.c files them as one entry) */
	char kind[3];
	enum ab_scope scope;
	enum ab_bucket bucket;
	/* refuses for long: read from both copies of its record */
	bool dual;
};

const struct ab_slot_info *ab_slot_info(enum ab_slot slot);
/* The bucket number of a windowed slot at now (0 for other slots). */
uint64_t ab_slot_bucket(enum ab_slot slot, const struct ab_config *cfg,
			time_t now);

struct ab_snapshot {
	uint64_t value[AB_SLOT_COUNT];
	bool found[AB_SLOT_COUNT];
	/* the value includes this attempt's own place (it incremented it) */
	bool own[AB_SLOT_COUNT];
	/* campaign mode is on (ab-campaign.h): an account's budget for
	   unfamiliar origins is campaign_lock_failures */
	bool campaign;
};

#define AB_SESSION_LEN 16

struct ab_attempt {
	char account[AB_ACCOUNT_MAX];	/* normalised; "" when unknown */
	bool has_addr;
	struct ab_addr addr;		/* normalised client address */
	char protocol[16];
	bool has_pw;
	uint16_t pw_fp;			/* keyed, truncated fingerprint */
	/* the password alone (not with the account), for campaign mode's
	   count of accounts one wrong password was tried on: PAM only */
	bool has_spray_fp;
	uint16_t spray_fp;
	/* pairs an allow with its report (Dovecot's session_id hashed, a
	   PAM handle's random id); without it nothing is held */
	bool has_session;
	uint8_t session[AB_SESSION_LEN];
	/* the address is listed in a DNS blocklist (dnsbl): found out
	   before the allow, by ab_tracker_dnsbl_*() */
	bool dnsbl_checked;
	bool dnsbl_listed;
};

enum ab_verdict {
	AB_ALLOW,
	AB_TARPIT,
	AB_REJECT,
};

/* What a refusal is about (a face may remember it: ab-verdict.h). */
enum ab_refused {
	AB_REFUSED_NOTHING,
	AB_REFUSED_ADDRESS,	/* the address (IPv6: its /64) is blocked */
	AB_REFUSED_SUBNET,	/* its subnet is blocked */
	AB_REFUSED_ACCOUNT,	/* the account is locked for unfamiliar origins */
	AB_REFUSED_FAMILIAR,	/* the account's familiar subnets have failed too often */
};

/* Why a decision is what it is: one sentence for logs, a short label for
   metrics (Dovecot 2.3 cuts a label at 32 characters), and what the
   client reads. */
enum ab_reason {
	AB_REASON_OK,
	AB_REASON_RESTRICTED,
	AB_REASON_ADDRESS_BLOCKED,
	AB_REASON_SUBNET_BLOCKED,
	AB_REASON_DNSBL_REJECT,
	AB_REASON_FAMILIAR_FAILURES,
	AB_REASON_ACCOUNT_LOCKED,
	AB_REASON_CAMPAIGN_LOCKED,
	AB_REASON_INFLIGHT,
	AB_REASON_ADDRESS_TARPIT,
	AB_REASON_DNSBL_TARPIT,
	AB_REASON_SUBNET_TARPIT,
	AB_REASON_CAMPAIGN_TARPIT,
	AB_REASON_FAIL_OPEN,
	AB_REASON_FAIL_CLOSED,
	AB_REASON_FAIL_CLOSED_PARTLY,

	AB_REASON_COUNT
};
struct ab_reason_info {
	const char *text, *label, *user_msg;
};
const struct ab_reason_info *ab_reason_info(enum ab_reason reason);

/* Whether one identity of an attempt is refused now, and until when: the
   one rule behind decide, escalate, `authbrake status` and `list`,
   retry_after, the log lines and the metrics. Refused while a block or
   lock is set, and while the counts in the window are at its threshold
   (failures and places held; for an address or subnet, also distinct
   accounts). */
struct ab_refusal {
	bool refused;
	/* refused: the first second an attempt is let through again, given
	   what is counted now (counts only leave the window, so it is exact
	   until something new is counted) */
	time_t until;
	/* refused: by a block or lock set in the store (else by counts at
	   a threshold, which no block has been set for yet) */
	bool set;
	/* the counts alone would refuse until then (now: they do not) */
	time_t counts_until;
	/* refused only because campaign mode tightened the account's
	   budget: no lock, and the normal budget would let it through */
	bool campaign;
};
void ab_refusal(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
		enum ab_refused what, const struct ab_config *cfg, time_t now,
		struct ab_refusal *refusal_r);
/* Is the attempt's subnet familiar to its account? */
bool ab_familiar(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
		 time_t now);

struct ab_decision {
	enum ab_verdict verdict;
	enum ab_refused refused;	/* AB_REJECT of a block, a lock or counts */
	unsigned int delay_s;		/* AB_TARPIT */
	/* AB_REJECT: seconds until an attempt is let through again, as far
	   as what is counted now says (ab_refusal()); 0 unknown */
	unsigned int retry_after_s;
	enum ab_reason why;
	const char *reason;		/* ab_reason_info(why)->text */
	const char *user_msg;		/* for the client: what to do */
	bool store_failed;		/* decided by fail_mode */
	bool campaign;			/* while campaign mode was on */
};

/* Set a decision's verdict and its reason (text, user message). */
void ab_decision_set(struct ab_decision *d, enum ab_verdict verdict,
		     enum ab_reason why);

enum ab_outcome {
	AB_OUTCOME_FAILURE,
	AB_OUTCOME_SUCCESS,
	AB_OUTCOME_POLICY_REJECT,	/* never reached the password check */
};

enum ab_op_kind {
	AB_OP_INCR,
	AB_OP_DECR,
	AB_OP_SET,
	/* add slot when missing; when it was added, increment pair_slot
	   (AB_SLOT_COUNT: none): one strike per block, one count per
	   distinct account */
	AB_OP_MARK,
	/* delete slot; when it was there, decrement pair_slot */
	AB_OP_UNMARK,
	AB_OP_DELETE,
};

struct ab_op {
	enum ab_op_kind kind;
	enum ab_slot slot;
	uint64_t value;
	unsigned int ttl_s;
	/* AB_OP_MARK / AB_OP_UNMARK: the counter that follows the marker */
	enum ab_slot pair_slot;
	unsigned int pair_ttl_s;
	/* the keys of the bucket current at this time (0: now) */
	time_t at;
};

#define AB_OPS_MAX 32
struct ab_ops {
	struct ab_op op[AB_OPS_MAX];
	unsigned int count;
};

/* What the session record of an allowed attempt holds: when it was
   allowed and which slots it took a place in. */
struct ab_hold {
	time_t at;
	uint32_t slots;		/* 1 << slot */
};
uint64_t ab_hold_pack(const struct ab_hold *hold);
void ab_hold_unpack(uint64_t value, struct ab_hold *hold_r);
/* The count an op takes a place in: a marker's pair, else its slot. */
static inline enum ab_slot ab_op_counted(const struct ab_op *op)
{
	return op->kind == AB_OP_MARK && op->pair_slot != AB_SLOT_COUNT ?
		op->pair_slot : op->slot;
}
/* The slots ops take places in, as struct ab_hold's slots. */
uint32_t ab_ops_slots(const struct ab_ops *ops);
/* How long an allowed attempt holds its places without a report. */
#define AB_HOLD_TTL 600U

/* Which slots apply to this attempt (an attempt without an address has no
   address slots; without a fingerprint, no AB_SLOT_ACCT_PW). */
bool ab_slot_applies(enum ab_slot slot, const struct ab_attempt *attempt);
/* Is the address exempt from address rules (trusted_networks, or
   trusted_networks.PROTO for the attempt's protocol)? */
bool ab_attempt_trusted(const struct ab_attempt *attempt,
			const struct ab_config *cfg);
/* Do the address rules (per address and per subnet) apply: an address,
   not trusted? */
bool ab_address_rules(const struct ab_attempt *attempt,
		      const struct ab_config *cfg);
/* Is the address outside restrict_networks (or restrict_networks.PROTO),
   so that every login from it is refused? */
bool ab_attempt_restricted_out(const struct ab_attempt *attempt,
			       const struct ab_config *cfg);
/* A windowed count: this bucket and the one before. */
uint64_t ab_window_count(const struct ab_snapshot *snap, enum ab_slot slot);

/* The answer to "may this attempt go on to the password check?". Counts
   that hold the attempt's own place (snap->own) are judged without it, so
   the same rules serve a look before holding places and after. */
void ab_decide(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
	       const struct ab_config *cfg, time_t now,
	       struct ab_decision *decision_r);
/* The places an attempt let through holds: a count in every budget its
   failure would spend. */
void ab_reserve(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
		const struct ab_config *cfg, time_t now, struct ab_ops *ops_r);
/* What an allow would have held for this attempt: for a success whose
   session record was lost (a server gone, an eviction), so that a real
   user's places do not stay behind as failures. */
void ab_hold_presumed(const struct ab_snapshot *snap,
		      const struct ab_attempt *attempt,
		      const struct ab_config *cfg, time_t now,
		      struct ab_hold *hold_r);
/* Give back what hold says was taken (a refused attempt, a success, a
   repeated password): appends to ops. */
void ab_release(const struct ab_hold *hold, const struct ab_attempt *attempt,
		struct ab_ops *ops);
/* Counting after an outcome. hold is what the allow took (NULL: nothing
   is known to be held, so a failure is counted now). Returns whether the
   outcome counts as a failure (so blocks and locks may follow). */
bool ab_record(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
	       enum ab_outcome outcome, const struct ab_hold *hold,
	       const struct ab_config *cfg, time_t now, struct ab_ops *ops_r);
/* After the counts are in: the blocks and locks they call for, each set
   with AB_OP_MARK so that racing nodes set it once, with one strike. */
void ab_escalate(const struct ab_snapshot *after,
		 const struct ab_attempt *attempt, enum ab_outcome outcome,
		 const struct ab_config *cfg, time_t now, struct ab_ops *ops_r);

/* The n-th block or lock (strikes = those before it): base doubled per
   strike, never past max. */
unsigned int ab_escalated_duration(unsigned int base_s, unsigned int max_s,
				   uint64_t strikes);
/* Tarpit for a failure count over a free allowance. */
unsigned int ab_tarpit_delay(const struct ab_config *cfg, uint64_t failures,
			     unsigned int free_failures);

#endif
