/* The policy engine: the policy model (README, "How it works") as
   arithmetic over a snapshot of stored values. No I/O, no clock: both
   come in. */
#include <string.h>

#include "ab-config.h"
#include "ab-engine.h"

static const struct ab_slot_info slot_info[AB_SLOT_COUNT] = {
	[AB_SLOT_IP_FAIL] = { "ip_fail", "if", AB_SCOPE_ADDR, AB_BUCKET_IP, false },
	[AB_SLOT_IP_FAIL_PREV] = { "ip_fail_prev", "if", AB_SCOPE_ADDR, AB_BUCKET_IP_PREV, false },
	[AB_SLOT_IP_ACCTS] = { "ip_accounts", "ia", AB_SCOPE_ADDR, AB_BUCKET_IP, false },
	[AB_SLOT_IP_ACCTS_PREV] = { "ip_accounts_prev", "ia", AB_SCOPE_ADDR, AB_BUCKET_IP_PREV, false },
	[AB_SLOT_IP_PAIR] = { "ip_pair", "ip", AB_SCOPE_ADDR_ACCT, AB_BUCKET_NONE, false },
	[AB_SLOT_IP_BLOCK] = { "ip_block", "ib", AB_SCOPE_ADDR, AB_BUCKET_NONE, true },
	[AB_SLOT_IP_STRIKES] = { "ip_strikes", "is", AB_SCOPE_ADDR, AB_BUCKET_NONE, true },
	[AB_SLOT_IP_INFLIGHT] = { "ip_inflight", "ii", AB_SCOPE_ADDR, AB_BUCKET_NONE, false },
	[AB_SLOT_NET_FAIL] = { "net_fail", "nf", AB_SCOPE_NET, AB_BUCKET_IP, false },
	[AB_SLOT_NET_FAIL_PREV] = { "net_fail_prev", "nf", AB_SCOPE_NET, AB_BUCKET_IP_PREV, false },
	[AB_SLOT_NET_ACCTS] = { "net_accounts", "na", AB_SCOPE_NET, AB_BUCKET_IP, false },
	[AB_SLOT_NET_ACCTS_PREV] = { "net_accounts_prev", "na", AB_SCOPE_NET, AB_BUCKET_IP_PREV, false },
	[AB_SLOT_NET_PAIR] = { "net_pair", "np", AB_SCOPE_NET_ACCT, AB_BUCKET_NONE, false },
	[AB_SLOT_NET_BLOCK] = { "net_block", "nb", AB_SCOPE_NET, AB_BUCKET_NONE, true },
	[AB_SLOT_NET_STRIKES] = { "net_strikes", "ns", AB_SCOPE_NET, AB_BUCKET_NONE, true },
	[AB_SLOT_ACCT_FAIL] = { "account_fail", "af", AB_SCOPE_ACCT, AB_BUCKET_ACCT, false },
	[AB_SLOT_ACCT_FAIL_PREV] = { "account_fail_prev", "af", AB_SCOPE_ACCT, AB_BUCKET_ACCT_PREV, false },
	[AB_SLOT_ACCT_SFAIL] = { "account_subnet_fail", "as", AB_SCOPE_ACCT_NET, AB_BUCKET_ACCT, false },
	[AB_SLOT_ACCT_SFAIL_PREV] = { "account_subnet_fail_prev", "as", AB_SCOPE_ACCT_NET, AB_BUCKET_ACCT_PREV, false },
	[AB_SLOT_ACCT_UNLOCKED] = { "account_unlocked", "au", AB_SCOPE_ACCT, AB_BUCKET_NONE, false },
	[AB_SLOT_ACCT_LOCK] = { "account_lock", "al", AB_SCOPE_ACCT, AB_BUCKET_NONE, true },
	[AB_SLOT_ACCT_STRIKES] = { "account_strikes", "ak", AB_SCOPE_ACCT, AB_BUCKET_NONE, true },
	[AB_SLOT_ACCT_FAM] = { "account_familiar", "fm", AB_SCOPE_ACCT_NET, AB_BUCKET_NONE, true },
	[AB_SLOT_ACCT_FAMFAIL] = { "account_familiar_fail", "ff", AB_SCOPE_ACCT, AB_BUCKET_ACCT, false },
	[AB_SLOT_ACCT_FAMFAIL_PREV] = { "account_familiar_fail_prev", "ff", AB_SCOPE_ACCT, AB_BUCKET_ACCT_PREV, false },
	[AB_SLOT_ACCT_FAMCOUNT] = { "account_familiar_count", "fc", AB_SCOPE_ACCT, AB_BUCKET_NONE, false },
	[AB_SLOT_ACCT_PW] = { "account_password_seen", "pw", AB_SCOPE_ACCT_PW, AB_BUCKET_NONE, false },
	/* written by allow, read by report */
	[AB_SLOT_SESSION] = { "session", "ss", AB_SCOPE_SESSION, AB_BUCKET_NONE, false },
};

/* How long a strike is remembered: long enough that a returning
   attacker meets a longer block, bounded by memcached's 30-day TTL. */
#define STRIKE_TTL_MAX (29U * 24U * 3600U)

const struct ab_slot_info *ab_slot_info(enum ab_slot slot)
{
	return &slot_info[slot < AB_SLOT_COUNT ? slot : 0];
}

static unsigned int bucket_len(enum ab_bucket bucket,
			       const struct ab_config *cfg)
{
	switch (bucket) {
	case AB_BUCKET_IP:
	case AB_BUCKET_IP_PREV:
		return cfg->ip_window_s;
	case AB_BUCKET_ACCT:
	case AB_BUCKET_ACCT_PREV:
		return cfg->account_window_s;
	case AB_BUCKET_NONE:
		break;
	}
	return 0;
}

uint64_t ab_slot_bucket(enum ab_slot slot, const struct ab_config *cfg,
			time_t now)
{
	enum ab_bucket bucket = ab_slot_info(slot)->bucket;
	unsigned int len = bucket_len(bucket, cfg);
	uint64_t n;

	if (len == 0)
		return 0;
	n = (uint64_t)now / len;
	return bucket == AB_BUCKET_IP_PREV || bucket == AB_BUCKET_ACCT_PREV ?
		n - 1 : n;
}

/* A bucket's key outlives the window after it, where it counts as the
   bucket before. */
static unsigned int bucket_ttl(unsigned int window_s)
{
	return 2 * window_s + 60;
}

uint64_t ab_hold_pack(const struct ab_hold *hold)
{
	return ((uint64_t)hold->at << 32) | hold->slots;
}

void ab_hold_unpack(uint64_t value, struct ab_hold *hold_r)
{
	hold_r->at = (time_t)(value >> 32);
	hold_r->slots = (uint32_t)value;
}

static bool held(const struct ab_hold *hold, enum ab_slot slot)
{
	return (hold->slots & (1U << slot)) != 0;
}

bool ab_slot_applies(enum ab_slot slot, const struct ab_attempt *attempt)
{
	bool has_account = attempt->account[0] != '\0';

	switch (ab_slot_info(slot)->scope) {
	case AB_SCOPE_ADDR:
	case AB_SCOPE_NET:
		return attempt->has_addr;
	case AB_SCOPE_ADDR_ACCT:
	case AB_SCOPE_NET_ACCT:
	case AB_SCOPE_ACCT_NET:
		return has_account && attempt->has_addr;
	case AB_SCOPE_ACCT:
		return has_account;
	case AB_SCOPE_ACCT_PW:
		return has_account && attempt->has_pw;
	case AB_SCOPE_SESSION:
		return attempt->has_session;
	}
	return false;
}

bool ab_attempt_trusted(const struct ab_attempt *attempt,
			const struct ab_config *cfg)
{
	return attempt->has_addr &&
		ab_cidr_list_match(ab_config_trusted_networks(cfg, attempt->protocol),
				   &attempt->addr);
}

bool ab_attempt_restricted_out(const struct ab_attempt *attempt,
			       const struct ab_config *cfg)
{
	const struct ab_cidr_list *restrict_networks =
		ab_config_restrict_networks(cfg, attempt->protocol);

	return attempt->has_addr && restrict_networks->count > 0 &&
		!ab_cidr_list_match(restrict_networks, &attempt->addr);
}

bool ab_address_rules(const struct ab_attempt *attempt,
		      const struct ab_config *cfg)
{
	return attempt->has_addr && !ab_attempt_trusted(attempt, cfg);
}

bool ab_familiar(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
		 time_t now)
{
	return attempt->account[0] != '\0' && attempt->has_addr &&
		snap->found[AB_SLOT_ACCT_FAM] &&
		snap->value[AB_SLOT_ACCT_FAM] > (uint64_t)now;
}

/* The count before this attempt took its own place. */
static uint64_t prior(const struct ab_snapshot *snap, enum ab_slot slot)
{
	uint64_t v = snap->value[slot];

	return snap->own[slot] && v > 0 ? v - 1 : v;
}

static enum ab_slot prev_bucket(enum ab_slot slot)
{
	switch (slot) {
	case AB_SLOT_IP_FAIL: return AB_SLOT_IP_FAIL_PREV;
	case AB_SLOT_IP_ACCTS: return AB_SLOT_IP_ACCTS_PREV;
	case AB_SLOT_NET_FAIL: return AB_SLOT_NET_FAIL_PREV;
	case AB_SLOT_NET_ACCTS: return AB_SLOT_NET_ACCTS_PREV;
	case AB_SLOT_ACCT_FAIL: return AB_SLOT_ACCT_FAIL_PREV;
	case AB_SLOT_ACCT_FAMFAIL: return AB_SLOT_ACCT_FAMFAIL_PREV;
	default: return slot;
	}
}

uint64_t ab_window_count(const struct ab_snapshot *snap, enum ab_slot slot)
{
	return snap->value[slot] + snap->value[prev_bucket(slot)];
}

static uint64_t window_prior(const struct ab_snapshot *snap, enum ab_slot slot)
{
	return prior(snap, slot) + snap->value[prev_bucket(slot)];
}

/* Until the current bucket ends: then the oldest failures drop out. */
static unsigned int window_left(unsigned int window_s, time_t now)
{
	return window_s - (unsigned int)((uint64_t)now % window_s);
}

unsigned int ab_escalated_duration(unsigned int base_s, unsigned int max_s,
				   uint64_t strikes)
{
	unsigned long long d = base_s;

	if (max_s < base_s)
		max_s = base_s;
	while (strikes-- > 0 && d < max_s)
		d *= 2;
	return d > max_s ? max_s : (unsigned int)d;
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

static const struct ab_reason_info reasons[AB_REASON_COUNT] = {
	[AB_REASON_OK] = { "ok", "ok", "" },
	[AB_REASON_RESTRICTED] = { "address outside restrict_networks",
		"restrict_networks", "Logins are not accepted from your network." },
	[AB_REASON_ADDRESS_BLOCKED] = { "address blocked", "address_blocked",
		"Too many failed logins from your address; try again later." },
	[AB_REASON_SUBNET_BLOCKED] = { "subnet blocked", "subnet_blocked",
		"Too many failed logins from your network; try again later." },
	[AB_REASON_DNSBL_REJECT] = { "address listed in a DNSBL", "dnsbl",
		"Your address is listed in a DNS blocklist; logins are not accepted from it." },
	[AB_REASON_FAMILIAR_FAILURES] = {
		"too many failures for account from its familiar network",
		"familiar_failures",
		"Too many failed logins for this account; try again later." },
	[AB_REASON_ACCOUNT_LOCKED] = { "account locked for unfamiliar origins",
		"account_locked",
		"This account is temporarily locked for logins from new locations; "
		"log in from your usual network or try again later." },
	[AB_REASON_CAMPAIGN_LOCKED] = {
		"account over campaign_lock_failures during a password-spray campaign",
		"campaign_locked",
		"This account is temporarily locked for logins from new locations; "
		"log in from your usual network or try again later." },
	[AB_REASON_INFLIGHT] = { "too many attempts in flight from address",
		"inflight",
		"Too many simultaneous logins from your address; try again shortly." },
	[AB_REASON_ADDRESS_TARPIT] = { "address failures over ip_free_failures",
		"address_tarpit", "" },
	[AB_REASON_DNSBL_TARPIT] = { "address listed in a DNSBL", "dnsbl", "" },
	[AB_REASON_SUBNET_TARPIT] = { "subnet failures over net_free_failures",
		"subnet_tarpit", "" },
	[AB_REASON_CAMPAIGN_TARPIT] = {
		"origin unfamiliar to account during a password-spray campaign",
		"campaign_tarpit", "" },
	[AB_REASON_FAIL_OPEN] = { "store unavailable, fail_mode=open",
		"fail_mode_open", "" },
	[AB_REASON_FAIL_CLOSED] = { "store unavailable, fail_mode=closed",
		"fail_mode_closed",
		"Login is temporarily unavailable; try again in a few minutes." },
	[AB_REASON_FAIL_CLOSED_PARTLY] = {
		"store partly unavailable, fail_mode=closed", "fail_mode_closed",
		"Login is temporarily unavailable; try again in a few minutes." },
};

const struct ab_reason_info *ab_reason_info(enum ab_reason reason)
{
	return &reasons[reason < AB_REASON_COUNT ? reason : AB_REASON_OK];
}

void ab_decision_set(struct ab_decision *d, enum ab_verdict verdict,
		     enum ab_reason why)
{
	d->verdict = verdict;
	d->why = why;
	d->reason = reasons[why].text;
	d->user_msg = verdict == AB_REJECT ? reasons[why].user_msg : "";
}

/* The first second the windowed count of slot is below threshold: now,
   the end of the current bucket (the bucket before drops out), or the
   end of the next one (the current one drops out too). */
static time_t count_until(const struct ab_snapshot *snap, enum ab_slot slot,
			  uint64_t threshold, unsigned int window_s, time_t now)
{
	uint64_t cur = prior(snap, slot);
	time_t next = now + (time_t)window_left(window_s, now);

	if (window_prior(snap, slot) < threshold)
		return now;
	return cur < threshold ? next : next + (time_t)window_s;
}

static time_t later_of(time_t a, time_t b)
{
	return a > b ? a : b;
}

void ab_refusal(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
		enum ab_refused what, const struct ab_config *cfg, time_t now,
		struct ab_refusal *r)
{
	enum ab_slot set_slot = AB_SLOT_COUNT;

	memset(r, 0, sizeof(*r));
	r->until = r->counts_until = now;
	switch (what) {
	case AB_REFUSED_NOTHING:
		return;
	case AB_REFUSED_ADDRESS:
	case AB_REFUSED_SUBNET: {
		bool net = what == AB_REFUSED_SUBNET;

		if (!ab_address_rules(attempt, cfg))
			return;
		set_slot = net ? AB_SLOT_NET_BLOCK : AB_SLOT_IP_BLOCK;
		r->counts_until = later_of(
			count_until(snap, net ? AB_SLOT_NET_FAIL : AB_SLOT_IP_FAIL,
				    net ? cfg->net_block_failures : cfg->ip_block_failures,
				    cfg->ip_window_s, now),
			count_until(snap, net ? AB_SLOT_NET_ACCTS : AB_SLOT_IP_ACCTS,
				    net ? cfg->net_max_accounts : cfg->ip_max_accounts,
				    cfg->ip_window_s, now));
		break;
	}
	case AB_REFUSED_ACCOUNT: {
		unsigned int budget = cfg->account_lock_failures;

		if (attempt->account[0] == '\0')
			return;
		set_slot = AB_SLOT_ACCT_LOCK;
		/* a campaign's budget: counts only, no lock set for it, so
		   the normal budget is back when the campaign ends */
		if (snap->campaign && cfg->campaign_lock_failures < budget &&
		    !ab_attempt_trusted(attempt, cfg))
			budget = cfg->campaign_lock_failures;
		r->counts_until = count_until(snap, AB_SLOT_ACCT_FAIL, budget,
					      cfg->account_window_s, now);
		r->campaign = budget < cfg->account_lock_failures &&
			count_until(snap, AB_SLOT_ACCT_FAIL,
				    cfg->account_lock_failures,
				    cfg->account_window_s, now) <= now;
		break;
	}
	case AB_REFUSED_FAMILIAR:
		/* no lock: failures from familiar subnets refuse them while
		   they are at familiar_failures */
		if (attempt->account[0] == '\0')
			return;
		r->counts_until = count_until(snap, AB_SLOT_ACCT_FAMFAIL,
					      cfg->familiar_failures,
					      cfg->account_window_s, now);
		break;
	}
	if (set_slot != AB_SLOT_COUNT && snap->found[set_slot] &&
	    snap->value[set_slot] > (uint64_t)now) {
		r->set = true;
		r->until = (time_t)snap->value[set_slot];
	}
	r->until = later_of(r->until, r->counts_until);
	r->refused = r->until > now;
	r->campaign = r->campaign && r->refused && !r->set;
}

static const enum ab_reason refused_reason[] = {
	[AB_REFUSED_NOTHING] = AB_REASON_OK,
	[AB_REFUSED_ADDRESS] = AB_REASON_ADDRESS_BLOCKED,
	[AB_REFUSED_SUBNET] = AB_REASON_SUBNET_BLOCKED,
	[AB_REFUSED_ACCOUNT] = AB_REASON_ACCOUNT_LOCKED,
	[AB_REFUSED_FAMILIAR] = AB_REASON_FAMILIAR_FAILURES,
};

/* The account's rule for this attempt's origin: a familiar subnet has its
   own allowance, so an attacker elsewhere cannot lock the user out of
   their usual network. */
static enum ab_refused account_rule(const struct ab_snapshot *snap,
				    const struct ab_attempt *attempt,
				    time_t now)
{
	return ab_familiar(snap, attempt, now) ? AB_REFUSED_FAMILIAR :
		AB_REFUSED_ACCOUNT;
}

/* A listed address where dnsbl_action says so; not from a network
   familiar to the account (a user whose home address is on a list of
   dynamic ranges proved it is theirs). */
static bool dnsbl_applies(const struct ab_snapshot *snap,
			  const struct ab_attempt *attempt,
			  const struct ab_config *cfg, time_t now)
{
	return attempt->dnsbl_listed && ab_address_rules(attempt, cfg) &&
		!ab_familiar(snap, attempt, now);
}

void ab_decide(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
	       const struct ab_config *cfg, time_t now,
	       struct ab_decision *d)
{
	const enum ab_refused rules[] = {
		AB_REFUSED_ADDRESS, AB_REFUSED_SUBNET,
		account_rule(snap, attempt, now),
	};
	struct ab_refusal r;
	time_t until = now;
	unsigned int i, left, delay;
	uint64_t ip_failures, inflight;

	memset(d, 0, sizeof(*d));
	ab_decision_set(d, AB_ALLOW, AB_REASON_OK);
	d->campaign = snap->campaign;

	/* 1. restricted networks (the protocol's own, when it has them) */
	if (ab_attempt_restricted_out(attempt, cfg)) {
		ab_decision_set(d, AB_REJECT, AB_REASON_RESTRICTED);
		return;
	}

	/* 2. blocks, locks and counts at a threshold (ab_refusal()): the
	   first one's reason, and the time every one of them lets an
	   attempt through */
	for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		ab_refusal(snap, attempt, rules[i], cfg, now, &r);
		if (!r.refused)
			continue;
		if (d->verdict != AB_REJECT) {
			ab_decision_set(d, AB_REJECT, r.campaign ?
					AB_REASON_CAMPAIGN_LOCKED :
					refused_reason[rules[i]]);
			d->refused = rules[i];
		}
		until = later_of(until, r.until);
	}
	if (dnsbl_applies(snap, attempt, cfg, now) &&
	    ab_config_dnsbl_action(cfg, attempt->protocol) == AB_DNSBL_REJECT) {
		if (d->verdict != AB_REJECT)
			ab_decision_set(d, AB_REJECT, AB_REASON_DNSBL_REJECT);
		return;		/* listed for as long as the list says: unknown */
	}
	if (d->verdict == AB_REJECT) {
		d->retry_after_s = (unsigned int)(until - now);
		return;
	}

	if (!ab_address_rules(attempt, cfg))
		return;

	/* 3. attempts in flight from one address */
	inflight = prior(snap, AB_SLOT_IP_INFLIGHT);
	if (inflight >= cfg->max_inflight) {
		ab_decision_set(d, AB_REJECT, AB_REASON_INFLIGHT);
		return;
	}

	/* 4. tarpit: the larger of the address's and the subnet's, counted on
	   failures only (places held in flight may yet be successes) */
	ip_failures = window_prior(snap, AB_SLOT_IP_FAIL);
	ip_failures -= inflight < ip_failures ? inflight : ip_failures;
	delay = ab_tarpit_delay(cfg, ip_failures, cfg->ip_free_failures);
	if (delay > 0)
		ab_decision_set(d, AB_TARPIT, AB_REASON_ADDRESS_TARPIT);
	/* a listed address (dnsbl_action = tarpit) has no free failures and
	   waits from its first attempt: 1 s, then doubling per failure */
	if (dnsbl_applies(snap, attempt, cfg, now)) {
		left = ab_tarpit_delay(cfg, ip_failures + 1, 0);
		if (left > delay) {
			delay = left;
			ab_decision_set(d, AB_TARPIT, AB_REASON_DNSBL_TARPIT);
		}
	}
	left = ab_tarpit_delay(cfg, window_prior(snap, AB_SLOT_NET_FAIL),
			       cfg->net_free_failures);
	if (left > delay) {
		delay = left;
		ab_decision_set(d, AB_TARPIT, AB_REASON_SUBNET_TARPIT);
	}
	/* 5. during a campaign, an origin new to the account waits; its
	   familiar subnets (and trusted networks, above) never do */
	if (snap->campaign && attempt->account[0] != '\0' &&
	    !ab_familiar(snap, attempt, now)) {
		left = cfg->campaign_tarpit_s < cfg->tarpit_max_s ?
			cfg->campaign_tarpit_s : cfg->tarpit_max_s;
		if (left > delay) {
			delay = left;
			ab_decision_set(d, AB_TARPIT, AB_REASON_CAMPAIGN_TARPIT);
		}
	}
	d->delay_s = delay;
}

static void add_op(struct ab_ops *ops, enum ab_op_kind kind,
		   enum ab_slot slot, uint64_t value, unsigned int ttl)
{
	if (ops->count >= AB_OPS_MAX)
		return;		/* cannot happen: AB_OPS_MAX > ops per outcome */
	memset(&ops->op[ops->count], 0, sizeof(ops->op[0]));
	ops->op[ops->count].kind = kind;
	ops->op[ops->count].slot = slot;
	ops->op[ops->count].value = value;
	ops->op[ops->count].ttl_s = ttl;
	ops->count++;
}

static void add_paired(struct ab_ops *ops, enum ab_op_kind kind,
		       enum ab_slot slot, uint64_t value, unsigned int ttl,
		       enum ab_slot pair_slot, unsigned int pair_ttl)
{
	add_op(ops, kind, slot, value, ttl);
	if (ops->count > 0) {
		ops->op[ops->count - 1].pair_slot = pair_slot;
		ops->op[ops->count - 1].pair_ttl_s = pair_ttl;
	}
}

/* Distinct accounts are counted through markers: the pair (address or
   subnet, account) is marked once, and the count follows the marker. */
static const struct {
	enum ab_slot marker, count;
} pairs[] = {
	{ AB_SLOT_IP_PAIR, AB_SLOT_IP_ACCTS },
	{ AB_SLOT_NET_PAIR, AB_SLOT_NET_ACCTS },
};

/* Count the account as tried from the address and from its subnet, where
   it was not yet. */
static void mark_pairs(const struct ab_snapshot *snap, const struct ab_config *cfg,
		       struct ab_ops *ops)
{
	unsigned int ttl = bucket_ttl(cfg->ip_window_s), i;

	for (i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		if (!snap->found[pairs[i].marker])
			add_paired(ops, AB_OP_MARK, pairs[i].marker, 1, ttl,
				   pairs[i].count, ttl);
	}
}

/* The marker whose count this is (AB_SLOT_COUNT: none). */
static enum ab_slot pair_marker(enum ab_slot count)
{
	unsigned int i;

	for (i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		if (pairs[i].count == count)
			return pairs[i].marker;
	}
	return AB_SLOT_COUNT;
}

/* Take the account back from a count: its marker goes, and the count
   follows when the marker was there. */
static void unmark_pair(enum ab_slot count, struct ab_ops *ops)
{
	add_paired(ops, AB_OP_UNMARK, pair_marker(count), 0, 0, count, 0);
}

/* A failure's counts: the address, its subnet, the distinct accounts
   they tried, and the account (from unfamiliar origins, or from its
   familiar subnets). */
static void count_failure(const struct ab_snapshot *snap,
			  const struct ab_attempt *attempt,
			  const struct ab_config *cfg, time_t now,
			  struct ab_ops *ops)
{
	unsigned int ip_ttl = bucket_ttl(cfg->ip_window_s);
	unsigned int acct_ttl = bucket_ttl(cfg->account_window_s);
	bool has_account = attempt->account[0] != '\0';

	if (ab_address_rules(attempt, cfg)) {
		add_op(ops, AB_OP_INCR, AB_SLOT_IP_FAIL, 1, ip_ttl);
		add_op(ops, AB_OP_INCR, AB_SLOT_NET_FAIL, 1, ip_ttl);
		if (has_account)
			mark_pairs(snap, cfg, ops);
	}
	if (!has_account)
		return;
	if (ab_familiar(snap, attempt, now)) {
		add_op(ops, AB_OP_INCR, AB_SLOT_ACCT_FAMFAIL, 1, acct_ttl);
	} else {
		add_op(ops, AB_OP_INCR, AB_SLOT_ACCT_FAIL, 1, acct_ttl);
		if (attempt->has_addr)
			add_op(ops, AB_OP_INCR, AB_SLOT_ACCT_SFAIL, 1, acct_ttl);
	}
}

void ab_reserve(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
		const struct ab_config *cfg, time_t now, struct ab_ops *ops)
{
	ops->count = 0;
	count_failure(snap, attempt, cfg, now, ops);
	if (ab_address_rules(attempt, cfg))
		add_op(ops, AB_OP_INCR, AB_SLOT_IP_INFLIGHT, 1, AB_HOLD_TTL);
	/* the password's marker, set now with the account's place and taken
	   back by a success: a wrong password's report then changes nothing
	   of the account's (ab_record()) */
	if (attempt->account[0] != '\0' && attempt->has_pw &&
	    cfg->password_repeat_s > 0 && !snap->found[AB_SLOT_ACCT_PW])
		add_paired(ops, AB_OP_MARK, AB_SLOT_ACCT_PW, 1,
			   cfg->password_repeat_s, AB_SLOT_COUNT, 0);
}

uint32_t ab_ops_slots(const struct ab_ops *ops)
{
	uint32_t slots = 0;
	unsigned int i;

	for (i = 0; i < ops->count; i++)
		slots |= 1U << ab_op_counted(&ops->op[i]);
	return slots;
}

void ab_hold_presumed(const struct ab_snapshot *snap,
		      const struct ab_attempt *attempt,
		      const struct ab_config *cfg, time_t now,
		      struct ab_hold *hold_r)
{
	struct ab_ops ops;

	ab_reserve(snap, attempt, cfg, now, &ops);
	hold_r->at = now;
	hold_r->slots = ab_ops_slots(&ops);
}

void ab_release(const struct ab_hold *hold, const struct ab_attempt *attempt,
		struct ab_ops *ops)
{
	unsigned int slot;

	(void)attempt;
	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		if (!held(hold, (enum ab_slot)slot))
			continue;
		if (pair_marker((enum ab_slot)slot) != AB_SLOT_COUNT)
			unmark_pair((enum ab_slot)slot, ops);
		else if (slot == AB_SLOT_ACCT_PW)
			add_op(ops, AB_OP_DELETE, (enum ab_slot)slot, 0, 0);
		else
			add_op(ops, AB_OP_DECR, (enum ab_slot)slot, 1, 0);
		ops->op[ops->count - 1].at = hold->at;
	}
}

/* A success: the subnet becomes familiar, and what it had counted against
   the account and the address is taken back; a lock set by failures from
   elsewhere stays. */
static void record_success(const struct ab_snapshot *snap,
			   const struct ab_attempt *attempt,
			   const struct ab_hold *hold,
			   const struct ab_config *cfg, time_t now,
			   struct ab_ops *ops)
{
	unsigned int fam_ttl = cfg->familiar_days * 86400U, i;

	if (attempt->account[0] == '\0' || !attempt->has_addr)
		return;
	add_op(ops, AB_OP_SET, AB_SLOT_ACCT_FAM, (uint64_t)now + fam_ttl, fam_ttl);
	if (!ab_familiar(snap, attempt, now))
		add_op(ops, AB_OP_INCR, AB_SLOT_ACCT_FAMCOUNT, 1, fam_ttl);
	/* the account tried from this address was its owner's */
	for (i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		if (snap->found[pairs[i].marker] && !held(hold, pairs[i].count))
			unmark_pair(pairs[i].count, ops);
	}
	/* the subnet's earlier failures against the account, bucket by
	   bucket, beyond the place this attempt held (released above) */
	for (i = 0; i < 2; i++) {
		enum ab_slot sfail = i == 0 ? AB_SLOT_ACCT_SFAIL : AB_SLOT_ACCT_SFAIL_PREV;
		enum ab_slot fail = i == 0 ? AB_SLOT_ACCT_FAIL : AB_SLOT_ACCT_FAIL_PREV;
		uint64_t own = held(hold, AB_SLOT_ACCT_SFAIL) &&
			ab_slot_bucket(AB_SLOT_ACCT_SFAIL, cfg, hold->at) ==
			ab_slot_bucket(sfail, cfg, now) ? 1 : 0;
		uint64_t theirs = snap->value[sfail], counted = snap->value[fail];

		/* counted in the bucket of an unlock, or before it: cleared */
		if (snap->found[AB_SLOT_ACCT_UNLOCKED] &&
		    ab_slot_bucket(AB_SLOT_ACCT_FAIL, cfg,
				   (time_t)snap->value[AB_SLOT_ACCT_UNLOCKED]) >=
		    ab_slot_bucket(sfail, cfg, now))
			theirs = 0;
		theirs -= own < theirs ? own : theirs;
		counted -= own < counted ? own : counted;
		if (theirs > counted)
			theirs = counted;
		if (theirs > 0)
			add_op(ops, AB_OP_DECR, fail, theirs, 0);
		if (snap->found[sfail])
			add_op(ops, AB_OP_DELETE, sfail, 0, 0);
	}
	if (snap->found[AB_SLOT_ACCT_FAMFAIL])
		add_op(ops, AB_OP_DELETE, AB_SLOT_ACCT_FAMFAIL, 0, 0);
	if (snap->found[AB_SLOT_ACCT_FAMFAIL_PREV])
		add_op(ops, AB_OP_DELETE, AB_SLOT_ACCT_FAMFAIL_PREV, 0, 0);
}

bool ab_record(const struct ab_snapshot *snap, const struct ab_attempt *attempt,
	       enum ab_outcome outcome, const struct ab_hold *hold,
	       const struct ab_config *cfg, time_t now, struct ab_ops *ops)
{
	static const struct ab_hold nothing_held;
	const struct ab_hold *h = hold != NULL ? hold : &nothing_held;
	struct ab_hold inflight_only;
	bool has_account = attempt->account[0] != '\0';

	ops->count = 0;
	switch (outcome) {
	case AB_OUTCOME_POLICY_REJECT:
		/* never reached the password check: not a password failure */
		ab_release(h, attempt, ops);
		return false;
	case AB_OUTCOME_SUCCESS:
		ab_release(h, attempt, ops);
		record_success(snap, attempt, h, cfg, now, ops);
		return false;
	case AB_OUTCOME_FAILURE:
		break;
	}

	/* a wrong password already seen recently for this account is a
	   client retrying a stale password, not a new guess */
	if (has_account && attempt->has_pw && snap->found[AB_SLOT_ACCT_PW] &&
	    !held(h, AB_SLOT_ACCT_PW)) {
		ab_release(h, attempt, ops);
		return false;
	}
	/* the places held become the failure's counts; only the place in
	   flight is given back */
	inflight_only = *h;
	inflight_only.slots &= 1U << AB_SLOT_IP_INFLIGHT;
	ab_release(&inflight_only, attempt, ops);
	/* (its allow set it already) */
	if (has_account && attempt->has_pw && cfg->password_repeat_s > 0 &&
	    !held(h, AB_SLOT_ACCT_PW))
		add_op(ops, AB_OP_SET, AB_SLOT_ACCT_PW, 1, cfg->password_repeat_s);
	if (hold == NULL)
		count_failure(snap, attempt, cfg, now, ops);
	return true;
}

static unsigned int strike_ttl(unsigned int base_s, unsigned int max_s)
{
	unsigned long long ttl = (unsigned long long)(max_s > base_s ? max_s : base_s) * 4;

	return ttl > STRIKE_TTL_MAX ? STRIKE_TTL_MAX : (unsigned int)ttl;
}

/* Counts at a threshold and no block or lock set: set one, lasting the
   escalated duration (base doubled per strike, up to max) and at least
   until the counts let an attempt through (ab_refusal()), so that what
   it says is what clients get. */
static void escalate(const struct ab_snapshot *after,
		     const struct ab_attempt *attempt, enum ab_refused what,
		     enum ab_slot set_slot, enum ab_slot strikes,
		     unsigned int base_s, unsigned int max_s,
		     const struct ab_config *cfg, time_t now, struct ab_ops *ops)
{
	struct ab_snapshot counted = *after;
	struct ab_refusal r;
	time_t until;

	/* the failure just counted is in the counts now; a campaign's
	   budget refuses while it lasts, and sets no lock */
	memset(counted.own, 0, sizeof(counted.own));
	counted.campaign = false;
	ab_refusal(&counted, attempt, what, cfg, now, &r);
	if (!r.refused || r.set)
		return;
	until = later_of(now + (time_t)ab_escalated_duration(base_s, max_s,
							     after->value[strikes]),
			 r.counts_until);
	add_paired(ops, AB_OP_MARK, set_slot, (uint64_t)until,
		   (unsigned int)(until - now), strikes, strike_ttl(base_s, max_s));
}

void ab_escalate(const struct ab_snapshot *after,
		 const struct ab_attempt *attempt, enum ab_outcome outcome,
		 const struct ab_config *cfg, time_t now, struct ab_ops *ops)
{
	ops->count = 0;
	if (outcome != AB_OUTCOME_FAILURE)
		return;
	escalate(after, attempt, AB_REFUSED_ADDRESS, AB_SLOT_IP_BLOCK,
		 AB_SLOT_IP_STRIKES, cfg->block_time_s, cfg->block_max_s, cfg,
		 now, ops);
	escalate(after, attempt, AB_REFUSED_SUBNET, AB_SLOT_NET_BLOCK,
		 AB_SLOT_NET_STRIKES, cfg->block_time_s, cfg->block_max_s, cfg,
		 now, ops);
	if (account_rule(after, attempt, now) == AB_REFUSED_ACCOUNT)
		escalate(after, attempt, AB_REFUSED_ACCOUNT, AB_SLOT_ACCT_LOCK,
			 AB_SLOT_ACCT_STRIKES, cfg->lock_time_s, cfg->block_max_s,
			 cfg, now, ops);
}
