/* The policy engine: DESIGN.md's policy model as arithmetic over a
   snapshot of stored values. No I/O, no clock: both come in. */
#include <string.h>

#include "ab-config.h"
#include "ab-engine.h"

static const char *const slot_names[AB_SLOT_COUNT] = {
	[AB_SLOT_IP_FAIL] = "ip_fail",
	[AB_SLOT_IP_ACCTS] = "ip_accounts",
	[AB_SLOT_IP_PAIR] = "ip_pair",
	[AB_SLOT_IP_BLOCK] = "ip_block",
	[AB_SLOT_IP_STRIKES] = "ip_strikes",
	[AB_SLOT_IP_INFLIGHT] = "ip_inflight",
	[AB_SLOT_NET_FAIL] = "net_fail",
	[AB_SLOT_NET_ACCTS] = "net_accounts",
	[AB_SLOT_NET_PAIR] = "net_pair",
	[AB_SLOT_NET_BLOCK] = "net_block",
	[AB_SLOT_NET_STRIKES] = "net_strikes",
	[AB_SLOT_ACCT_FAIL] = "account_fail",
	[AB_SLOT_ACCT_SFAIL] = "account_subnet_fail",
	[AB_SLOT_ACCT_LOCK] = "account_lock",
	[AB_SLOT_ACCT_FAM] = "account_familiar",
	[AB_SLOT_ACCT_FAMFAIL] = "account_familiar_fail",
	[AB_SLOT_ACCT_FAMCOUNT] = "account_familiar_count",
	[AB_SLOT_ACCT_PW] = "account_password_seen",
};

/* How long a strike is remembered: long enough that a returning
   attacker meets a longer block, bounded by memcached's 30-day TTL. */
#define STRIKE_TTL_MAX (29U * 24U * 3600U)
#define INFLIGHT_TTL 120U

const char *ab_slot_name(enum ab_slot slot)
{
	return slot < AB_SLOT_COUNT ? slot_names[slot] : "?";
}

static bool slot_is_address(enum ab_slot slot)
{
	return slot <= AB_SLOT_NET_STRIKES;
}

bool ab_slot_applies(enum ab_slot slot, const struct ab_attempt *attempt)
{
	bool has_account = attempt->account[0] != '\0';

	switch (slot) {
	case AB_SLOT_IP_PAIR:
	case AB_SLOT_NET_PAIR:
	case AB_SLOT_ACCT_SFAIL:
	case AB_SLOT_ACCT_FAM:
	case AB_SLOT_ACCT_FAMFAIL:
		return has_account && attempt->has_addr;
	case AB_SLOT_ACCT_PW:
		return has_account && attempt->has_pw;
	default:
		return slot_is_address(slot) ? attempt->has_addr : has_account;
	}
}

bool ab_attempt_trusted(const struct ab_attempt *attempt,
			const struct ab_config *cfg)
{
	return attempt->has_addr &&
		ab_cidr_list_match(&cfg->trusted_networks, &attempt->addr);
}

unsigned int ab_block_duration(const struct ab_config *cfg, uint64_t strikes)
{
	unsigned long long d = cfg->block_time_s;

	while (strikes-- > 0 && d < cfg->block_max_s)
		d *= 2;
	return d > cfg->block_max_s ? cfg->block_max_s : (unsigned int)d;
}

unsigned int ab_tarpit_delay(const struct ab_config *cfg, uint64_t failures,
			     unsigned int free_failures)
{
	uint64_t over;
	unsigned long long d = 1;

	if (failures <= free_failures || cfg->tarpit_max_s == 0)
		return 0;
	over = failures - free_failures;
	/* 1, 2, 4, 8 … seconds, then the cap */
	while (--over > 0 && d < cfg->tarpit_max_s)
		d *= 2;
	return d > cfg->tarpit_max_s ? cfg->tarpit_max_s : (unsigned int)d;
}

static bool active_until(const struct ab_snapshot *snap, enum ab_slot slot,
			 time_t now, unsigned int *left_r)
{
	if (!snap->found[slot] || snap->value[slot] <= (uint64_t)now)
		return false;
	*left_r = (unsigned int)(snap->value[slot] - (uint64_t)now);
	return true;
}

static void reject(struct ab_decision *d, const char *reason,
		   const char *user_msg, unsigned int retry_after)
{
	d->verdict = AB_REJECT;
	d->delay_s = 0;
	d->reason = reason;
	d->user_msg = user_msg;
	d->retry_after_s = retry_after;
}

void ab_decide(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
	       const struct ab_config *cfg, time_t now,
	       struct ab_decision *d)
{
	unsigned int left = 0, delay;

	memset(d, 0, sizeof(*d));
	d->verdict = AB_ALLOW;
	d->reason = "ok";
	d->user_msg = "";

	/* 1. restricted networks */
	if (attempt->has_addr && cfg->restrict_networks.count > 0 &&
	    !ab_cidr_list_match(&cfg->restrict_networks, &attempt->addr)) {
		reject(d, "address outside restrict_networks",
		       "Logins are not accepted from your network.", 0);
		return;
	}

	/* 2.–3. address rules, unless the network is trusted */
	if (attempt->has_addr && !ab_attempt_trusted(attempt, cfg)) {
		if (active_until(snap, AB_SLOT_IP_BLOCK, now, &left)) {
			reject(d, "address blocked",
			       "Too many failed logins from your address; try again later.",
			       left);
			return;
		}
		if (active_until(snap, AB_SLOT_NET_BLOCK, now, &left)) {
			reject(d, "subnet blocked",
			       "Too many failed logins from your network; try again later.",
			       left);
			return;
		}
	}

	/* 4. account lockout: unfamiliar origins are locked out; a familiar
	   subnet has its own allowance, so an attacker elsewhere cannot lock
	   the user out of their usual network */
	if (attempt->account[0] != '\0') {
		bool familiar = attempt->has_addr && snap->found[AB_SLOT_ACCT_FAM];

		if (familiar) {
			if (snap->value[AB_SLOT_ACCT_FAMFAIL] >= cfg->familiar_failures) {
				reject(d, "too many failures for account from its familiar network",
				       "Too many failed logins for this account; try again later.",
				       0);
				return;
			}
		} else if (active_until(snap, AB_SLOT_ACCT_LOCK, now, &left)) {
			reject(d, "account locked for unfamiliar origins",
			       "This account is temporarily locked for logins from new locations; "
			       "log in from your usual network or try again later.",
			       left);
			return;
		}
	}

	if (!attempt->has_addr || ab_attempt_trusted(attempt, cfg))
		return;

	/* 5. attempts in flight from one address */
	if (snap->value[AB_SLOT_IP_INFLIGHT] >= cfg->max_inflight) {
		reject(d, "too many attempts in flight from address",
		       "Too many simultaneous logins from your address; try again shortly.",
		       0);
		return;
	}

	/* 3. tarpit: the larger of the address's and the subnet's */
	delay = ab_tarpit_delay(cfg, snap->value[AB_SLOT_IP_FAIL],
				cfg->ip_free_failures);
	if (delay > 0)
		d->reason = "address failures over ip_free_failures";
	left = ab_tarpit_delay(cfg, snap->value[AB_SLOT_NET_FAIL],
			       cfg->net_free_failures);
	if (left > delay) {
		delay = left;
		d->reason = "subnet failures over net_free_failures";
	}
	if (delay > 0) {
		d->verdict = AB_TARPIT;
		d->delay_s = delay;
	}
}

static void add_op(struct ab_ops *ops, enum ab_op_kind kind,
		   enum ab_slot slot, uint64_t value, unsigned int ttl)
{
	if (ops->count >= AB_OPS_MAX)
		return;		/* cannot happen: AB_OPS_MAX > ops per outcome */
	ops->op[ops->count].kind = kind;
	ops->op[ops->count].slot = slot;
	ops->op[ops->count].value = value;
	ops->op[ops->count].ttl_s = ttl;
	ops->count++;
}

static unsigned int strike_ttl(const struct ab_config *cfg)
{
	unsigned long long ttl = (unsigned long long)cfg->block_max_s * 4;

	return ttl > STRIKE_TTL_MAX ? STRIKE_TTL_MAX : (unsigned int)ttl;
}

void ab_record(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
	       enum ab_outcome outcome, const struct ab_config *cfg, time_t now,
	       struct ab_ops *ops)
{
	bool has_account = attempt->account[0] != '\0';
	bool addr_rules = attempt->has_addr && !ab_attempt_trusted(attempt, cfg);
	bool familiar = has_account && attempt->has_addr &&
		snap->found[AB_SLOT_ACCT_FAM];

	ops->count = 0;
	/* The attempt is over, whatever its outcome. A right password may
	   have been asked about twice (Dovecot's after-auth check is on by
	   default), so a success releases two; memcached stops at 0. */
	if (addr_rules && snap->value[AB_SLOT_IP_INFLIGHT] > 0)
		add_op(ops, AB_OP_DECR, AB_SLOT_IP_INFLIGHT,
		       outcome == AB_OUTCOME_SUCCESS ? 2 : 1, 0);

	switch (outcome) {
	case AB_OUTCOME_POLICY_REJECT:
		/* never reached the password check: not a password failure */
		return;
	case AB_OUTCOME_SUCCESS:
		if (!has_account || !attempt->has_addr)
			return;
		/* the origin subnet becomes familiar, and the failures it had
		   counted against the account are taken back; a lock set by
		   failures from elsewhere stays */
		add_op(ops, AB_OP_SET, AB_SLOT_ACCT_FAM,
		       (uint64_t)now + cfg->familiar_days * 86400ULL,
		       cfg->familiar_days * 86400U);
		if (!familiar)
			add_op(ops, AB_OP_INCR, AB_SLOT_ACCT_FAMCOUNT, 1,
			       cfg->familiar_days * 86400U);
		if (snap->value[AB_SLOT_ACCT_SFAIL] > 0) {
			add_op(ops, AB_OP_DECR, AB_SLOT_ACCT_FAIL,
			       snap->value[AB_SLOT_ACCT_SFAIL], 0);
			add_op(ops, AB_OP_DELETE, AB_SLOT_ACCT_SFAIL, 0, 0);
		}
		if (snap->found[AB_SLOT_ACCT_FAMFAIL])
			add_op(ops, AB_OP_DELETE, AB_SLOT_ACCT_FAMFAIL, 0, 0);
		return;
	case AB_OUTCOME_FAILURE:
		break;
	}

	/* a wrong password already seen recently for this account is a
	   client retrying a stale password, not a new guess */
	if (has_account && attempt->has_pw && snap->found[AB_SLOT_ACCT_PW])
		return;
	if (has_account && attempt->has_pw && cfg->password_repeat_s > 0)
		add_op(ops, AB_OP_SET, AB_SLOT_ACCT_PW, 1, cfg->password_repeat_s);

	if (addr_rules) {
		add_op(ops, AB_OP_INCR, AB_SLOT_IP_FAIL, 1, cfg->ip_window_s);
		add_op(ops, AB_OP_INCR, AB_SLOT_NET_FAIL, 1, cfg->ip_window_s);
		if (has_account && !snap->found[AB_SLOT_IP_PAIR]) {
			add_op(ops, AB_OP_SET, AB_SLOT_IP_PAIR, 1, cfg->ip_window_s);
			add_op(ops, AB_OP_INCR, AB_SLOT_IP_ACCTS, 1, cfg->ip_window_s);
		}
		if (has_account && !snap->found[AB_SLOT_NET_PAIR]) {
			add_op(ops, AB_OP_SET, AB_SLOT_NET_PAIR, 1, cfg->ip_window_s);
			add_op(ops, AB_OP_INCR, AB_SLOT_NET_ACCTS, 1, cfg->ip_window_s);
		}
	}
	if (!has_account)
		return;
	if (familiar) {
		add_op(ops, AB_OP_INCR, AB_SLOT_ACCT_FAMFAIL, 1, cfg->account_window_s);
	} else {
		add_op(ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL, 1, cfg->account_window_s);
		if (attempt->has_addr)
			add_op(ops, AB_OP_INCR, AB_SLOT_ACCT_SFAIL, 1,
			       cfg->account_window_s);
	}
}

static void escalate_block(const struct ab_snapshot *after,
			   enum ab_slot fail, enum ab_slot accts,
			   enum ab_slot block, enum ab_slot strikes,
			   unsigned int block_failures, unsigned int max_accounts,
			   const struct ab_config *cfg, time_t now,
			   struct ab_ops *ops)
{
	unsigned int left, duration;

	if (active_until(after, block, now, &left))
		return;
	if (after->value[fail] < block_failures &&
	    after->value[accts] < max_accounts)
		return;
	duration = ab_block_duration(cfg, after->value[strikes]);
	add_op(ops, AB_OP_SET, block, (uint64_t)now + duration, duration);
	add_op(ops, AB_OP_INCR, strikes, 1, strike_ttl(cfg));
}

void ab_escalate(const struct ab_snapshot *after,
		 const struct ab_attempt *attempt, enum ab_outcome outcome,
		 const struct ab_config *cfg, time_t now, struct ab_ops *ops)
{
	unsigned int left;

	ops->count = 0;
	if (outcome != AB_OUTCOME_FAILURE)
		return;
	if (attempt->has_addr && !ab_attempt_trusted(attempt, cfg)) {
		escalate_block(after, AB_SLOT_IP_FAIL, AB_SLOT_IP_ACCTS,
			       AB_SLOT_IP_BLOCK, AB_SLOT_IP_STRIKES,
			       cfg->ip_block_failures, cfg->ip_max_accounts,
			       cfg, now, ops);
		escalate_block(after, AB_SLOT_NET_FAIL, AB_SLOT_NET_ACCTS,
			       AB_SLOT_NET_BLOCK, AB_SLOT_NET_STRIKES,
			       cfg->net_block_failures, cfg->net_max_accounts,
			       cfg, now, ops);
	}
	if (attempt->account[0] != '\0' &&
	    after->value[AB_SLOT_ACCT_FAIL] >= cfg->account_lock_failures &&
	    !active_until(after, AB_SLOT_ACCT_LOCK, now, &left))
		add_op(ops, AB_OP_SET, AB_SLOT_ACCT_LOCK,
		       (uint64_t)now + cfg->lock_time_s, cfg->lock_time_s);
}
