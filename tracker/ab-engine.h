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
   the attempt's identities. */
enum ab_slot {
	AB_SLOT_IP_FAIL,	/* failures from the address, windowed */
	AB_SLOT_IP_ACCTS,	/* distinct accounts tried from it */
	AB_SLOT_IP_PAIR,	/* marker: this account already tried from it */
	AB_SLOT_IP_BLOCK,	/* block expiry (unix time) */
	AB_SLOT_IP_STRIKES,	/* blocks so far: the next one is longer */
	AB_SLOT_IP_INFLIGHT,	/* attempts allowed but not yet reported */
	AB_SLOT_NET_FAIL,
	AB_SLOT_NET_ACCTS,
	AB_SLOT_NET_PAIR,
	AB_SLOT_NET_BLOCK,
	AB_SLOT_NET_STRIKES,
	AB_SLOT_ACCT_FAIL,	/* failures from unfamiliar origins */
	AB_SLOT_ACCT_SFAIL,	/* of those, the ones from this subnet */
	AB_SLOT_ACCT_LOCK,	/* lock expiry (unix time) */
	AB_SLOT_ACCT_FAM,	/* this subnet is familiar: expiry */
	AB_SLOT_ACCT_FAMFAIL,	/* failures from this familiar subnet */
	AB_SLOT_ACCT_FAMCOUNT,	/* familiar subnets (approximate) */
	AB_SLOT_ACCT_PW,	/* marker: this wrong password seen recently */

	AB_SLOT_COUNT
};

const char *ab_slot_name(enum ab_slot slot);

struct ab_snapshot {
	uint64_t value[AB_SLOT_COUNT];
	bool found[AB_SLOT_COUNT];
};

struct ab_attempt {
	char account[AB_ACCOUNT_MAX];	/* normalised; "" when unknown */
	bool has_addr;
	struct ab_addr addr;		/* normalised client address */
	char protocol[16];
	bool has_pw;
	uint16_t pw_fp;			/* keyed, truncated fingerprint */
};

enum ab_verdict {
	AB_ALLOW,
	AB_TARPIT,
	AB_REJECT,
};

struct ab_decision {
	enum ab_verdict verdict;
	unsigned int delay_s;		/* AB_TARPIT */
	unsigned int retry_after_s;	/* AB_REJECT: when it may pass again, 0 unknown */
	const char *reason;		/* short, for logs: "address blocked" */
	const char *user_msg;		/* for the client: what to do */
	bool store_failed;		/* decided by fail_mode */
};

enum ab_outcome {
	AB_OUTCOME_FAILURE,
	AB_OUTCOME_SUCCESS,
	AB_OUTCOME_POLICY_REJECT,	/* never reached the password check */
};

enum ab_op_kind {
	AB_OP_INCR,
	AB_OP_DECR,
	AB_OP_SET,
	AB_OP_ADD,
	AB_OP_DELETE,
};

struct ab_op {
	enum ab_op_kind kind;
	enum ab_slot slot;
	uint64_t value;
	unsigned int ttl_s;
};

#define AB_OPS_MAX 32
struct ab_ops {
	struct ab_op op[AB_OPS_MAX];
	unsigned int count;
};

/* Which slots apply to this attempt (an attempt without an address has no
   address slots; without a fingerprint, no AB_SLOT_ACCT_PW). */
bool ab_slot_applies(enum ab_slot slot, const struct ab_attempt *attempt);
/* Is the address exempt from address rules (trusted_networks)? */
bool ab_attempt_trusted(const struct ab_attempt *attempt,
			const struct ab_config *cfg);

/* The answer to "may this attempt go on to the password check?" */
void ab_decide(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
	       const struct ab_config *cfg, time_t now,
	       struct ab_decision *decision_r);
/* Counting after an outcome: increments, markers, clearing on success. */
void ab_record(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
	       enum ab_outcome outcome, const struct ab_config *cfg, time_t now,
	       struct ab_ops *ops_r);
/* After the counts are in (snap holds the values the increments
   returned): the blocks and locks they call for. */
void ab_escalate(const struct ab_snapshot *after,
		 const struct ab_attempt *attempt, enum ab_outcome outcome,
		 const struct ab_config *cfg, time_t now, struct ab_ops *ops_r);

/* Block duration for the n-th block (strikes = blocks before it). */
unsigned int ab_block_duration(const struct ab_config *cfg, uint64_t strikes);
/* Tarpit for a failure count over a free allowance. */
unsigned int ab_tarpit_delay(const struct ab_config *cfg, uint64_t failures,
			     unsigned int free_failures);

#endif
