/* The tracker: attempt → keyed-hash keys → one mget → engine → writes.
   The faces (Dovecot service, PAM module, CLI) call only this. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "ab-campaign.h"
#include "ab-dnsbl.h"
#include "ab-error.h"
#include "ab-observer.h"
#include "ab-record.h"
#include "ab-recent.h"
#include "ab-tracker.h"
#include "ab-verdict.h"

typedef char ab_key[AB_KEY_LEN];

/* --- records -------------------------------------------------------------

   What authbrake keeps about an address, its subnet and an account lives
   in three items, one per identity (ab-record.h): an attempt reads them in
   one round trip, the engine decides on the snapshot they make, and what
   changes is written back in a second one, each item with a
   compare-and-swap. A writer that finds an item changed since it read it
   reads it again and does its changes over on what is there now (they
   are increments and markers, as memcached's own commands were), and an
   attempt that no longer fits gives back what it took. Blocks, locks,
   strikes and familiar subnets are read from the two servers that rank
   highest for an item and written to both (ab-store.h's dual), so that
   what refuses outlives a server leaving and coming back. */

enum rec_kind {
	REC_ADDR,	/* the address (IPv6: its /64) */
	REC_NET,	/* its subnet */
	REC_ACCT,	/* the account */
	REC_KINDS
};

static const char rec_kinds[REC_KINDS][3] = { "ra", "rn", "rc" };

/* One identity's record in a round trip: read once, changed by every
   attempt of the batch that is about it, written back once. */
struct rec {
	ab_key key;
	struct ab_record r;
	uint64_t cas;		/* 0: missing when read */
	bool answered;		/* its server answered the last read */
	bool dirty;		/* changed since it was read or written */
	bool conflict;		/* another writer came first: read it again */
	unsigned char in[AB_RECORD_BYTES_MAX], in2[AB_RECORD_BYTES_MAX];
	unsigned char out[AB_RECORD_BYTES_MAX];
};

/* An engine op as done to the records, to be done again on a record read
   anew after a conflict. */
struct applied {
	struct ab_op op;
	bool marked;		/* MARK: the marker was added; UNMARK: deleted */
	bool took;		/* it took a place (an increment, a marked pair) */
	bool given_back;	/* ... and gave it back since */
	bool committed;		/* its record was written with it */
};

#define APPLIED_MAX (2 * AB_OPS_MAX + 2)

/* One attempt decided or reported with others. */
struct job {
	const struct ab_attempt *attempt;
	int rec[REC_KINDS];		/* its records in the batch, or -1 */
	uint32_t acct_tag, net_tag;
	struct ab_snapshot snap, after;
	struct ab_ops ops;
	struct applied applied[APPLIED_MAX];
	unsigned int applied_n;
	struct ab_hold hold;
	enum ab_outcome outcome;
	bool counted;
	/* allow: decided by a refusal this process remembers (ab-verdict.h) */
	bool remembered;
	/* allow: holds places (its session entry was added) */
	bool holds;
	/* allow: found over the limits after a conflict; its decision */
	bool gave_back;
	struct ab_decision redo;
};

#define CAS_TRIES 6

/* What a read of the campaign state asks for (campaign_ops()). */
enum campaign_op {
	CAMPAIGN_STATE,		/* the site's state item */
	CAMPAIGN_NOW,		/* failures from unfamiliar origins, this bucket */
	CAMPAIGN_BEFORE,	/* ... the bucket before */
	CAMPAIGN_BASELINE,	/* this bucket's slot's baseline */
	CAMPAIGN_PEAK,		/* the largest baseline of any slot */
	CAMPAIGN_BEFORE_BASELINE, /* the bucket before's slot's, when another */
	CAMPAIGN_FOLD,		/* marker: the bucket before is learned */
	CAMPAIGN_OPS
};

/* What this process last read of the site's campaign state. */
struct campaign_view {
	time_t read_at;		/* 0: never, or to be read again */
	bool known;		/* read at least once */
	struct ab_campaign state;
	uint64_t cas;
	uint64_t now_count, before_count;
	struct ab_campaign_baseline baseline, before_baseline;
	uint64_t peak;
	bool peak_known, fold;
	/* the ops of the read under way */
	bool asked[CAMPAIGN_OPS];
	char key[CAMPAIGN_OPS][AB_KEY_LEN];
	unsigned char in[AB_CAMPAIGN_BYTES_MAX], in2[AB_CAMPAIGN_BYTES_MAX];
};

struct ab_tracker {
	const struct ab_config *cfg;
	struct ab_secret secret;
	struct ab_store *store;
	ab_log_fn *log;
	void *log_ctx;
	/* store failures are logged once per fail_log_interval */
	time_t last_fail_log;
	unsigned long long fail_suppressed;
	/* memcached's evictions, as last seen */
	bool evictions_seen;
	uint64_t evictions;
	/* the records of the batch under way, grown to what a batch needs */
	struct rec *rec;
	unsigned int rec_n, rec_cap;
	struct ab_store_op ops[AB_TRACKER_BATCH_MAX * REC_KINDS + CAMPAIGN_OPS];
	struct job job[AB_TRACKER_BATCH_MAX];
	/* metrics hook (ab-observer.h), NULL when nobody watches */
	const struct ab_observer *observer;
	void *observer_ctx;
	/* DNS blocklists, NULL when dnsbl is empty */
	struct ab_dnsbl *dnsbl;
	/* refusals remembered for verdict_cache */
	struct ab_verdicts *verdicts;
	/* the key of `authbrake list`'s ring index */
	ab_key ring_key;
	/* entries dropped from full records, logged once per interval */
	time_t dropped_logged;
	/* the entry each slot is filed under (slot_ids_init()) */
	uint8_t slot_id[AB_SLOT_COUNT];
	/* campaign mode: the site's state as last read; the next allow's
	   read asks for it again (want: read at most once a second) */
	struct campaign_view campaign;
	bool campaign_want, campaign_dry;
	/* what keeping the state cost, beside the logins' own costs */
	struct ab_store_stats campaign_cost;
	/* the last bucket this process tried to learn */
	uint64_t campaign_folded;
};

static void tracker_log(struct ab_tracker *tracker, enum ab_log_level level,
			const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void tracker_log(struct ab_tracker *tracker, enum ab_log_level level,
			const char *fmt, ...)
{
	char msg[768];
	va_list args;

	if (tracker->log == NULL)
		return;
	va_start(args, fmt);
	vsnprintf(msg, sizeof(msg), fmt, args);
	va_end(args);
	tracker->log(level, msg, tracker->log_ctx);
}

static void slot_ids_init(uint8_t ids_r[AB_SLOT_COUNT]);

int ab_tracker_init(const struct ab_config *cfg, ab_log_fn *log, void *log_ctx,
		    struct ab_tracker **tracker_r, const char **error_r)
{
	struct ab_tracker *tracker = calloc(1, sizeof(*tracker));

	if (tracker == NULL)
		return ab_error(error_r, "out of memory");
	tracker->cfg = cfg;
	tracker->log = log;
	tracker->log_ctx = log_ctx;
	if (ab_secret_load(cfg->secret_file, &tracker->secret, error_r) < 0 ||
	    ab_store_init(cfg, log, log_ctx, &tracker->store, error_r) < 0 ||
	    ab_dnsbl_init(cfg, &tracker->dnsbl, error_r) < 0 ||
	    ab_verdicts_init(cfg->verdict_cache_s, &tracker->verdicts) < 0) {
		ab_tracker_deinit(&tracker);
		return -1;
	}
	ab_recent_index_key(&tracker->secret, tracker->ring_key);
	slot_ids_init(tracker->slot_id);
	*tracker_r = tracker;
	return 0;
}

void ab_tracker_deinit(struct ab_tracker **_tracker)
{
	struct ab_tracker *tracker = *_tracker;

	if (tracker == NULL)
		return;
	*_tracker = NULL;
	ab_store_deinit(&tracker->store);
	if (tracker->dnsbl != NULL)
		ab_dnsbl_deinit(&tracker->dnsbl);
	ab_verdicts_deinit(&tracker->verdicts);
	free(tracker->rec);
	memset(&tracker->secret, 0, sizeof(tracker->secret));
	free(tracker);
}

struct ab_store *ab_tracker_store(struct ab_tracker *tracker)
{
	return tracker->store;
}

const struct ab_config *ab_tracker_config(struct ab_tracker *tracker)
{
	return tracker->cfg;
}

int ab_attempt_init(struct ab_tracker *tracker, struct ab_attempt *attempt_r,
		    const char *login, const char *address,
		    const char *protocol, const void *pw, size_t pw_len,
		    const char **error_r)
{
	const char *error;

	memset(attempt_r, 0, sizeof(*attempt_r));
	if (login != NULL &&
	    ab_account_normalize(login, tracker->cfg->default_domain,
				 attempt_r->account, &error) < 0)
		return ab_error(error_r, "invalid login: %s", error);
	if (address != NULL && address[0] != '\0') {
		if (ab_addr_parse(address, &attempt_r->addr, &error) < 0)
			return ab_error(error_r, "invalid address: %s", error);
		attempt_r->has_addr = true;
	}
	snprintf(attempt_r->protocol, sizeof(attempt_r->protocol), "%s",
		 protocol != NULL && protocol[0] != '\0' ? protocol : "-");
	if (pw != NULL && pw_len > 0 && attempt_r->account[0] != '\0') {
		attempt_r->pw_fp = ab_pw_fingerprint(&tracker->secret,
						     attempt_r->account, pw, pw_len);
		attempt_r->has_pw = true;
	}
	return 0;
}

void ab_attempt_set_spray_password(struct ab_tracker *tracker,
				   struct ab_attempt *attempt,
				   const void *pw, size_t pw_len)
{
	/* keyed with no account ("" is none): one password on two
	   accounts has one fingerprint */
	attempt->has_spray_fp = pw != NULL && pw_len > 0;
	if (attempt->has_spray_fp)
		attempt->spray_fp = ab_pw_fingerprint(&tracker->secret, "", pw,
						      pw_len);
}

void ab_attempt_set_session(struct ab_attempt *attempt, const void *id,
			    size_t len)
{
	attempt->has_session = len > 0;
	if (len > 0)
		crypto_generichash(attempt->session, sizeof(attempt->session),
				   id, len, NULL, 0);
}

/* Address bytes with their family, so 1.2.3.4 and ::102:304 differ. */
static size_t addr_bytes(const struct ab_addr *addr, uint8_t buf[17])
{
	buf[0] = (uint8_t)addr->family;
	memcpy(buf + 1, addr->bytes, 16);
	return 17;
}

/* The key of an identity's record: a keyed hash, never the name or
   address itself. */
static void rec_key(struct ab_tracker *tracker, enum rec_kind kind,
		    const struct ab_attempt *attempt, ab_key key_r)
{
	struct ab_addr masked;
	uint8_t addr[17];

	if (kind == REC_ACCT) {
		ab_hash_key(&tracker->secret, rec_kinds[kind], attempt->account,
			    strlen(attempt->account), NULL, 0, key_r);
		return;
	}
	if (kind == REC_ADDR)
		ab_addr_origin(&attempt->addr, &masked);
	else
		ab_addr_subnet(&attempt->addr, &masked);
	(void)addr_bytes(&masked, addr);
	ab_hash_key(&tracker->secret, rec_kinds[kind], addr, sizeof(addr),
		    NULL, 0, key_r);
}

/* A second identity as it is named inside a record: 32 bits of a keyed
   hash of its own (not of the record key, so no record names another). */
static uint32_t tag_of(struct ab_tracker *tracker, const char kind[2],
		       const void *data, size_t len)
{
	ab_key key;
	uint32_t tag = 0;
	unsigned int i;

	ab_hash_key(&tracker->secret, kind, data, len, NULL, 0, key);
	for (i = 7; i < 15; i++) {
		char c = key[i];

		tag = (tag << 4) | (uint32_t)(c <= '9' ? c - '0' : c - 'a' + 10);
	}
	return tag;
}

/* Which record a slot lives in, for this attempt (-1: none applies). */
static int slot_rec(const struct job *job, enum ab_slot slot)
{
	switch (ab_slot_info(slot)->scope) {
	case AB_SCOPE_ADDR:
	case AB_SCOPE_ADDR_ACCT:
		return job->rec[REC_ADDR];
	case AB_SCOPE_NET:
	case AB_SCOPE_NET_ACCT:
		return job->rec[REC_NET];
	case AB_SCOPE_ACCT:
	case AB_SCOPE_ACCT_NET:
	case AB_SCOPE_ACCT_PW:
		return job->rec[REC_ACCT];
	case AB_SCOPE_SESSION:
		/* beside the place in flight it holds (its address's), so
		   that a report gives both back in one write */
		return job->rec[REC_ADDR] >= 0 ? job->rec[REC_ADDR] :
			job->rec[REC_ACCT];
	}
	return -1;
}

/* The slot a count is filed under: a bucket before this one is the same
   count, a bucket earlier (the first slot of its kind letters). */
static void slot_ids_init(uint8_t ids_r[AB_SLOT_COUNT])
{
	unsigned int slot, s;

	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		const struct ab_slot_info *info = ab_slot_info((enum ab_slot)slot);

		ids_r[slot] = (uint8_t)slot;
		for (s = 0; s < slot; s++) {
			const struct ab_slot_info *other = ab_slot_info((enum ab_slot)s);

			if (other->kind[0] == info->kind[0] &&
			    other->kind[1] == info->kind[1]) {
				ids_r[slot] = (uint8_t)s;
				break;
			}
		}
	}
}

/* A slot's entry in its record: the slot it is filed under (a bucket
   before this one is the same count, a bucket earlier), the second
   identity, the bucket current at `at`. */
static void slot_entry(const struct ab_tracker *tracker, const struct job *job,
		       enum ab_slot slot, time_t at, uint8_t *id_r,
		       uint32_t *sub_r, uint32_t *bucket_r)
{
	const struct ab_slot_info *info = ab_slot_info(slot);

	*id_r = tracker->slot_id[slot];
	*bucket_r = (uint32_t)ab_slot_bucket(slot, tracker->cfg, at);
	switch (info->scope) {
	case AB_SCOPE_ADDR_ACCT:
	case AB_SCOPE_NET_ACCT:
		*sub_r = job->acct_tag;
		break;
	case AB_SCOPE_ACCT_NET:
		*sub_r = job->net_tag;
		break;
	case AB_SCOPE_ACCT_PW:
		*sub_r = job->attempt->pw_fp;
		break;
	case AB_SCOPE_SESSION:
		*sub_r = (uint32_t)job->attempt->session[0] << 24 |
			(uint32_t)job->attempt->session[1] << 16 |
			(uint32_t)job->attempt->session[2] << 8 |
			job->attempt->session[3];
		break;
	default:
		*sub_r = 0;
		break;
	}
}

/* The batch's record of key, added when new. */
static int recs_add(struct ab_tracker *tracker, const ab_key key)
{
	struct rec *r;
	unsigned int i;

	for (i = 0; i < tracker->rec_n; i++) {
		if (strcmp(tracker->rec[i].key, key) == 0)
			return (int)i;
	}
	if (tracker->rec_n == tracker->rec_cap) {
		/* a login's process (PAM) needs three; a busy service 48 */
		unsigned int cap = tracker->rec_cap == 0 ? REC_KINDS :
			tracker->rec_cap * 2;
		struct rec *p;

		if (cap > AB_TRACKER_BATCH_MAX * REC_KINDS)
			cap = AB_TRACKER_BATCH_MAX * REC_KINDS;
		p = realloc(tracker->rec, cap * sizeof(*p));
		if (p == NULL)
			return -1;
		tracker->rec = p;
		tracker->rec_cap = cap;
	}
	r = &tracker->rec[tracker->rec_n];
	memcpy(r->key, key, AB_KEY_LEN);
	r->r.n = 0;
	r->r.dropped = 0;
	r->cas = 0;
	r->answered = r->dirty = r->conflict = false;
	return (int)tracker->rec_n++;
}

/* Set up a job: its records joined to the batch's, its tags. Without
   memory for a record, the job has none of that kind (nothing read,
   nothing held). */
static void job_init(struct ab_tracker *tracker, struct job *job,
		     const struct ab_attempt *attempt)
{
	bool has_account = attempt->account[0] != '\0';
	ab_key key;
	unsigned int k;

	memset(&job->snap, 0, sizeof(job->snap));
	job->attempt = attempt;
	job->applied_n = 0;
	job->ops.count = 0;
	job->hold.at = 0;
	job->hold.slots = 0;
	job->counted = job->holds = job->gave_back = false;
	for (k = 0; k < REC_KINDS; k++) {
		job->rec[k] = -1;
		if (k == REC_ACCT ? !has_account : !attempt->has_addr)
			continue;
		rec_key(tracker, (enum rec_kind)k, attempt, key);
		job->rec[k] = recs_add(tracker, key);
	}
	job->acct_tag = has_account ?
		tag_of(tracker, "ta", attempt->account, strlen(attempt->account)) : 0;
	job->net_tag = 0;
	if (attempt->has_addr) {
		struct ab_addr masked;
		uint8_t addr[17];

		ab_addr_subnet(&attempt->addr, &masked);
		(void)addr_bytes(&masked, addr);
		job->net_tag = tag_of(tracker, "tn", addr, sizeof(addr));
	}
}

/* Which slots are kept on two servers (ab_slot_info()'s dual). */
static void dual_slots(bool keep_r[AB_SLOT_COUNT])
{
	unsigned int s;

	for (s = 0; s < AB_SLOT_COUNT; s++)
		keep_r[s] = ab_slot_info((enum ab_slot)s)->dual;
}

/* --- campaign mode (ab-campaign.h) ------------------------------------

   Every node counts failures from origins unfamiliar to their account in
   one item per campaign_interval (a report posts the increment: no round
   trip). An allow's read asks, at most once a second per process, for
   the site's state, the counts of this bucket and the one before and the
   baseline of this hour: a few more items in the same round trip. The
   node that sees the rate cross the threshold (or an ended campaign)
   writes the state with a compare-and-swap, so that one node logs each
   start and end. The node that adds a bucket's marker first learns the
   bucket before into its slot's baseline. */

static void campaign_number_key(struct ab_tracker *tracker, const char kind[2],
				uint64_t n, uint64_t m, char key_r[AB_KEY_LEN])
{
	uint8_t b[16];
	unsigned int i;

	for (i = 0; i < 8; i++) {
		b[i] = (uint8_t)(n >> (56 - 8 * i));
		b[8 + i] = (uint8_t)(m >> (56 - 8 * i));
	}
	ab_hash_key(&tracker->secret, kind, b, sizeof(b), NULL, 0, key_r);
}

static void campaign_state_key(struct ab_tracker *tracker, char key_r[AB_KEY_LEN])
{
	ab_hash_key(&tracker->secret, "cs", "state", 5, NULL, 0, key_r);
}

/* How long a bucket's count (and marker) is kept: it counts as the
   bucket before for one more interval. */
static unsigned int campaign_bucket_ttl(const struct ab_config *cfg)
{
	return 2 * cfg->campaign_interval_s + 60;
}

static unsigned int campaign_baseline_ttl(const struct ab_config *cfg)
{
	unsigned long long ttl = 2ULL * cfg->campaign_learn_days * cfg->campaign_day_s;

	return ttl > 29ULL * 86400 ? 29U * 86400 : (unsigned int)ttl;
}

static void campaign_op(struct ab_tracker *tracker, struct ab_store_op *ops,
			unsigned int *n, enum campaign_op which,
			enum ab_store_cmd cmd)
{
	struct campaign_view *v = &tracker->campaign;
	struct ab_store_op *op = &ops[(*n)++];

	memset(op, 0, sizeof(*op));
	op->cmd = cmd;
	op->key = v->key[which];
	v->asked[which] = true;
	if (which == CAMPAIGN_STATE) {
		/* kept on two servers: a forced mode outlives one leaving */
		op->dual = true;
		op->out_bytes = v->in;
		op->out_bytes_cap = sizeof(v->in);
		op->out_bytes2 = v->in2;
		op->out_bytes2_cap = sizeof(v->in2);
	} else if (which == CAMPAIGN_FOLD) {
		op->value = 1;
		op->ttl_s = campaign_bucket_ttl(tracker->cfg);
	}
}

/* The reads of the state, appended to ops; returns how many. dry: a look
   that must change nothing (no marker for learning). */
static unsigned int campaign_ops(struct ab_tracker *tracker,
				 struct ab_store_op *ops, time_t now, bool dry)
{
	const struct ab_config *cfg = tracker->cfg;
	struct campaign_view *v = &tracker->campaign;
	uint64_t b = ab_campaign_bucket(cfg, now);
	unsigned int n = 0, slot = ab_campaign_slot(cfg, b);
	unsigned int fold_slot = ab_campaign_slot(cfg, b - 1);

	memset(v->asked, 0, sizeof(v->asked));
	campaign_state_key(tracker, v->key[CAMPAIGN_STATE]);
	campaign_number_key(tracker, "cn", b, 0, v->key[CAMPAIGN_NOW]);
	campaign_number_key(tracker, "cn", b - 1, 0, v->key[CAMPAIGN_BEFORE]);
	campaign_number_key(tracker, "cb", slot, cfg->campaign_day_s,
			    v->key[CAMPAIGN_BASELINE]);
	campaign_number_key(tracker, "cb", AB_CAMPAIGN_SLOTS, cfg->campaign_day_s,
			    v->key[CAMPAIGN_PEAK]);
	campaign_number_key(tracker, "cf", b - 1, 0, v->key[CAMPAIGN_FOLD]);
	campaign_number_key(tracker, "cb", fold_slot, cfg->campaign_day_s,
			    v->key[CAMPAIGN_BEFORE_BASELINE]);
	campaign_op(tracker, ops, &n, CAMPAIGN_STATE, AB_STORE_GETS);
	campaign_op(tracker, ops, &n, CAMPAIGN_NOW, AB_STORE_GET);
	campaign_op(tracker, ops, &n, CAMPAIGN_BEFORE, AB_STORE_GET);
	campaign_op(tracker, ops, &n, CAMPAIGN_BASELINE, AB_STORE_GET);
	campaign_op(tracker, ops, &n, CAMPAIGN_PEAK, AB_STORE_GET);
	if (fold_slot != slot)
		campaign_op(tracker, ops, &n, CAMPAIGN_BEFORE_BASELINE, AB_STORE_GET);
	if (!dry && tracker->campaign_folded != b) {
		tracker->campaign_folded = b;
		campaign_op(tracker, ops, &n, CAMPAIGN_FOLD, AB_STORE_ADD);
	}
	tracker->campaign_cost.ops += n;
	return n;
}

/* Take what the reads of campaign_ops() found. */
static void campaign_take(struct ab_tracker *tracker,
			  const struct ab_store_op *ops, time_t now)
{
	struct campaign_view *v = &tracker->campaign;
	const struct ab_store_op *op = ops;
	const char *error;
	unsigned int w;

	if (op->result == AB_STORE_FAILED && op->result2 == AB_STORE_FAILED)
		return;		/* as last read (logged as a store failure) */
	v->cas = op->result == AB_STORE_DONE ? op->cas : 0;
	if (op->result == AB_STORE_DONE || op->result2 == AB_STORE_DONE) {
		bool first = op->result == AB_STORE_DONE;

		if (ab_campaign_decode(first ? v->in : v->in2,
				       first ? op->out_bytes_len : op->out_bytes2_len,
				       &v->state, &error) < 0)
			tracker_log(tracker, AB_LOG_WARNING,
				    "memcached item %s: %s: taken as campaign mode "
				    "auto, none detected", v->key[CAMPAIGN_STATE], error);
	} else {
		memset(&v->state, 0, sizeof(v->state));
	}
	v->fold = false;
	for (w = CAMPAIGN_NOW, op++; w < CAMPAIGN_OPS; w++) {
		bool found;
		uint64_t value;

		if (!v->asked[w])
			continue;
		found = op->result == AB_STORE_DONE;
		value = found ? op->out : 0;
		switch ((enum campaign_op)w) {
		case CAMPAIGN_NOW: v->now_count = value; break;
		case CAMPAIGN_BEFORE: v->before_count = value; break;
		case CAMPAIGN_BASELINE:
			ab_campaign_baseline_unpack(value, &v->baseline);
			break;
		case CAMPAIGN_BEFORE_BASELINE:
			ab_campaign_baseline_unpack(value, &v->before_baseline);
			break;
		case CAMPAIGN_PEAK:
			v->peak = value;
			v->peak_known = found;
			break;
		case CAMPAIGN_FOLD: v->fold = found; break;
		case CAMPAIGN_STATE:
		case CAMPAIGN_OPS:
			break;
		}
		op++;
	}
	if (!v->asked[CAMPAIGN_BEFORE_BASELINE])
		v->before_baseline = v->baseline;
	v->known = true;
	v->read_at = now;
}

/* "1.5 x 4" or, for an hour not learned yet, "none yet: peak 2.0 x 4 x 4" */
static const char *campaign_baseline_str(const struct ab_config *cfg,
					 const struct ab_campaign_baseline *b,
					 uint64_t peak_milli, char *buf, size_t size)
{
	uint64_t baseline_milli = b->milli;

	if (ab_campaign_learned(cfg, b))
		snprintf(buf, size, "%llu.%llu x %u",
			 (unsigned long long)(baseline_milli / 1000),
			 (unsigned long long)(baseline_milli % 1000 / 100),
			 cfg->campaign_factor);
	else
		snprintf(buf, size, "none yet: the site's peak %llu.%llu x %u x %u",
			 (unsigned long long)(peak_milli / 1000),
			 (unsigned long long)(peak_milli % 1000 / 100),
			 cfg->campaign_factor, cfg->campaign_factor);
	return buf;
}

static void campaign_log(struct ab_tracker *tracker, const struct ab_campaign *c,
			 enum ab_campaign_step step, time_t now)
{
	const struct ab_config *cfg = tracker->cfg;
	const struct campaign_view *v = &tracker->campaign;
	char interval[32], lasted[32], baseline[96];

	ab_duration_str(cfg->campaign_interval_s, interval, sizeof(interval));
	if (step == AB_CAMPAIGN_END) {
		char cooldown[32];

		ab_duration_str(cfg->campaign_cooldown_s, cooldown, sizeof(cooldown));
		ab_duration_str((unsigned long long)(now - c->started), lasted,
				sizeof(lasted));
		tracker_log(tracker, AB_LOG_WARNING,
			    "campaign mode off: failures from unfamiliar origins "
			    "under the threshold for %s (%llu in the last %s; baseline "
			    "%s, floor %u); it lasted %s", cooldown,
			    (unsigned long long)ab_campaign_rate(cfg, now, v->now_count,
								 v->before_count),
			    interval,
			    campaign_baseline_str(cfg, &v->baseline, v->peak,
						  baseline, sizeof(baseline)),
			    cfg->campaign_floor, lasted);
	} else if (c->cause == AB_CAMPAIGN_BY_PASSWORD) {
		ab_duration_str(2ULL * cfg->campaign_interval_s, interval,
				sizeof(interval));
		tracker_log(tracker, AB_LOG_WARNING,
			    "campaign mode on: one wrong password tried on %llu "
			    "accounts in the last %s (campaign_password_accounts %u)",
			    (unsigned long long)c->rate, interval,
			    cfg->campaign_password_accounts);
	} else {
		tracker_log(tracker, AB_LOG_WARNING,
			    "campaign mode on: %llu failures from unfamiliar origins "
			    "in the last %s, threshold %llu (baseline %s, floor %u)",
			    (unsigned long long)c->rate, interval,
			    (unsigned long long)c->threshold,
			    campaign_baseline_str(cfg, &v->baseline, v->peak,
						  baseline, sizeof(baseline)),
			    cfg->campaign_floor);
	}
}

/* Write the state with step done to it, if no other node wrote it since
   it was read; the node that wrote it logs a start or an end. */
/* Write next over the state as it was read (its CAS token): DONE, MISS
   when another writer came first, FAILED. */
static enum ab_store_result campaign_cas(struct ab_tracker *tracker,
					 const struct ab_campaign *next,
					 const char **error_r)
{
	struct campaign_view *v = &tracker->campaign;
	struct ab_store_op op;
	char text[AB_CAMPAIGN_BYTES_MAX];

	memset(&op, 0, sizeof(op));
	op.cmd = AB_STORE_CAS;
	op.key = v->key[CAMPAIGN_STATE];
	op.dual = true;
	op.bytes = text;
	op.bytes_len = ab_campaign_encode(next, text);
	op.cas = v->cas;
	*error_r = "memcached: the campaign state's servers did not answer";
	(void)ab_store_run(tracker->store, &op, 1, error_r);
	tracker->campaign_cost.requests++;
	tracker->campaign_cost.ops++;
	if (op.result == AB_STORE_DONE) {
		v->state = *next;
		v->cas = op.cas;
	}
	return op.result;
}

static void campaign_write(struct ab_tracker *tracker,
			   enum ab_campaign_step step,
			   enum ab_campaign_cause cause, time_t now,
			   uint64_t rate, uint64_t threshold)
{
	struct campaign_view *v = &tracker->campaign;
	struct ab_campaign before = v->state, next = v->state;
	const char *error;

	ab_campaign_apply(&next, step, cause, now, rate, threshold);
	if (campaign_cas(tracker, &next, &error) != AB_STORE_DONE) {
		v->read_at = 0;		/* another node came first: read again */
		return;
	}
	/* one that ran out with no node there to say so ends before the
	   next starts: every start in the log has its end */
	if (step == AB_CAMPAIGN_START && before.started != 0 && before.ended == 0)
		campaign_log(tracker, &before, AB_CAMPAIGN_END, now);
	if (step == AB_CAMPAIGN_START || step == AB_CAMPAIGN_END)
		campaign_log(tracker, &next, step, now);
}

/* After a read of the state: start, refresh or end the detector's
   campaign, and learn the bucket before into the baseline. */
static void campaign_detect(struct ab_tracker *tracker, time_t now)
{
	const struct ab_config *cfg = tracker->cfg;
	struct campaign_view *v = &tracker->campaign;
	uint64_t rate = ab_campaign_rate(cfg, now, v->now_count, v->before_count);
	uint64_t threshold = ab_campaign_threshold(cfg, &v->baseline,
						   &v->before_baseline, v->peak_known,
						   v->peak);
	bool on = ab_campaign_on(&v->state, cfg, now);
	enum ab_campaign_step step;

	if (on) {
		uint64_t normal = 0;

		if (ab_campaign_learned(cfg, &v->baseline))
			normal = v->baseline.milli;
		if (ab_campaign_learned(cfg, &v->before_baseline) &&
		    v->before_baseline.milli > normal)
			normal = v->before_baseline.milli;
		threshold = ab_campaign_keep(&v->state, cfg, threshold, normal);
	}
	step = ab_campaign_step(&v->state, cfg, now, rate, threshold);

	if (step != AB_CAMPAIGN_NOTHING)
		campaign_write(tracker, step, AB_CAMPAIGN_BY_RATE, now, rate,
			       threshold);
	/* a bucket of a campaign, one at the threshold, or one while an
	   administrator overrides the detector, is not what this site
	   normally sees */
	if (v->fold && !on && v->state.mode == AB_CAMPAIGN_AUTO &&
	    step != AB_CAMPAIGN_START &&
	    v->before_count < ab_campaign_threshold(cfg, &v->before_baseline,
						    NULL, v->peak_known, v->peak)) {
		struct ab_campaign_baseline learned = v->before_baseline;
		struct ab_store_op ops[2];
		unsigned int n = 1;

		ab_campaign_learn(cfg, &learned, v->before_count);
		memset(ops, 0, sizeof(ops));
		ops[0].cmd = AB_STORE_SET;
		ops[0].key = v->key[CAMPAIGN_BEFORE_BASELINE];
		ops[0].value = ab_campaign_baseline_pack(&learned);
		ops[0].ttl_s = campaign_baseline_ttl(cfg);
		/* the largest baseline of a slot learned: for the slots that
		   are not yet */
		if (ab_campaign_learned(cfg, &learned) &&
		    (learned.milli > v->peak || !v->peak_known)) {
			ops[1] = ops[0];
			ops[1].key = v->key[CAMPAIGN_PEAK];
			ops[1].value = learned.milli;
			n++;
		}
		ab_store_post(tracker->store, ops, n);
		tracker->campaign_cost.posted++;
		tracker->campaign_cost.ops += n;
	}
	v->fold = false;
}

void ab_tracker_campaign_cost(const struct ab_tracker *tracker,
			      struct ab_store_stats *cost_r)
{
	*cost_r = tracker->campaign_cost;
}

bool ab_tracker_campaign_on(struct ab_tracker *tracker, time_t now)
{
	return tracker->campaign.known &&
		ab_campaign_on(&tracker->campaign.state, tracker->cfg, now);
}

/* A report's share: the failures from unfamiliar origins it counted, in
   this bucket's count (posted); a wrong password PAM saw, in its
   fingerprint's count of accounts. */
static bool campaign_counts(const struct ab_tracker *tracker,
			    const struct job *job, time_t now)
{
	const struct ab_attempt *a = job->attempt;

	return job->counted && job->outcome == AB_OUTCOME_FAILURE &&
		a->account[0] != '\0' && ab_address_rules(a, tracker->cfg) &&
		!ab_familiar(&job->snap, a, now);
}

static void campaign_password(struct ab_tracker *tracker, const struct job *job,
			      time_t now);

/* k more in this bucket's count of the site's failures from unfamiliar
   origins, posted. */
static void campaign_post_count(struct ab_tracker *tracker, uint64_t k,
				time_t now)
{
	char key[AB_KEY_LEN];
	struct ab_store_op op;

	if (k == 0)
		return;
	memset(&op, 0, sizeof(op));
	op.cmd = AB_STORE_INCR;
	campaign_number_key(tracker, "cn", ab_campaign_bucket(tracker->cfg, now),
			    0, key);
	op.key = key;
	op.value = k;
	op.ttl_s = campaign_bucket_ttl(tracker->cfg);
	ab_store_post(tracker->store, &op, 1);
}

/* An allow refused by a campaign's budget is a guess the campaign stopped
   before the password check: it counts as a failure would have, so that a
   spray it refuses keeps it on (its failures alone would stop once every
   account had its one). */
static void campaign_allows(struct ab_tracker *tracker,
			    const struct ab_decision *decisions, size_t n,
			    unsigned int flags, time_t now)
{
	uint64_t k = 0;
	size_t i;

	if ((flags & AB_ALLOW_DRY_RUN) != 0)
		return;
	for (i = 0; i < n; i++) {
		if (!tracker->job[i].remembered &&
		    decisions[i].why == AB_REASON_CAMPAIGN_LOCKED)
			k++;
	}
	campaign_post_count(tracker, k, now);
}

static void campaign_report(struct ab_tracker *tracker, size_t n, time_t now)
{
	uint64_t k = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		const struct job *job = &tracker->job[i];

		if (!campaign_counts(tracker, job, now))
			continue;
		k++;
		if (job->attempt->has_spray_fp &&
		    tracker->cfg->campaign_password_accounts > 0)
			campaign_password(tracker, job, now);
	}
	campaign_post_count(tracker, k, now);
}

/* One wrong password (PAM's fingerprint of it alone, not of the account)
   on more than campaign_password_accounts accounts within two buckets:
   the account is marked once per bucket, and the count follows. */
static void campaign_password(struct ab_tracker *tracker, const struct job *job,
			      time_t now)
{
	const struct ab_config *cfg = tracker->cfg;
	struct campaign_view *v = &tracker->campaign;
	uint64_t b = ab_campaign_bucket(cfg, now), count;
	char marker[AB_KEY_LEN], cur[AB_KEY_LEN], before[AB_KEY_LEN];
	struct ab_store_op ops[4], post;
	enum ab_campaign_step step;
	const char *error;
	unsigned int n = 0;

	campaign_number_key(tracker, "cq", b,
			    ((uint64_t)job->attempt->spray_fp << 32) | job->acct_tag,
			    marker);
	campaign_number_key(tracker, "cp", b, job->attempt->spray_fp, cur);
	campaign_number_key(tracker, "cp", b - 1, job->attempt->spray_fp, before);
	memset(ops, 0, sizeof(ops));
	ops[0].cmd = AB_STORE_ADD;
	ops[0].key = marker;
	ops[0].value = 1;
	ops[0].ttl_s = campaign_bucket_ttl(cfg);
	ops[1].cmd = AB_STORE_GET;
	ops[1].key = cur;
	ops[2].cmd = AB_STORE_GET;
	ops[2].key = before;
	campaign_state_key(tracker, v->key[CAMPAIGN_STATE]);
	n = 3;
	campaign_op(tracker, ops, &n, CAMPAIGN_STATE, AB_STORE_GETS);
	if (ab_store_run(tracker->store, ops, n, &error) < 0 ||
	    ops[0].result != AB_STORE_DONE)
		return;		/* this account was counted in this bucket */
	memset(&post, 0, sizeof(post));
	post.cmd = AB_STORE_INCR;
	post.key = cur;
	post.value = 1;
	post.ttl_s = campaign_bucket_ttl(cfg);
	ab_store_post(tracker->store, &post, 1);
	count = 1 + (ops[1].result == AB_STORE_DONE ? ops[1].out : 0) +
		(ops[2].result == AB_STORE_DONE ? ops[2].out : 0);
	if (count <= cfg->campaign_password_accounts)
		return;
	/* the state as read with the counts */
	v->asked[CAMPAIGN_STATE] = true;
	v->cas = ops[3].result == AB_STORE_DONE ? ops[3].cas : 0;
	memset(&v->state, 0, sizeof(v->state));
	if (ops[3].result == AB_STORE_DONE &&
	    ab_campaign_decode(v->in, ops[3].out_bytes_len, &v->state, &error) < 0)
		memset(&v->state, 0, sizeof(v->state));
	if (ops[3].result == AB_STORE_FAILED || v->state.mode != AB_CAMPAIGN_AUTO)
		return;
	/* on already: the password still on many accounts keeps it on */
	step = ab_campaign_step(&v->state, cfg, now, count,
				cfg->campaign_password_accounts + 1);
	if (step == AB_CAMPAIGN_START || step == AB_CAMPAIGN_REFRESH)
		campaign_write(tracker, step, AB_CAMPAIGN_BY_PASSWORD, now,
			       count, cfg->campaign_password_accounts);
}

/* Read the records that `which` picks (all: NULL) in one round trip.
   Returns the store's result: 0, 1 (partial) or -1. */
static int recs_read(struct ab_tracker *tracker, const bool *which, time_t now,
		     const char **error_r)
{
	struct ab_store_op *ops = tracker->ops;
	unsigned int i, n = 0, nrec;
	int idx[AB_TRACKER_BATCH_MAX * REC_KINDS];
	bool keep[AB_SLOT_COUNT];
	int ret;

	for (i = 0; i < tracker->rec_n; i++) {
		struct rec *r = &tracker->rec[i];

		if (which != NULL && !which[i])
			continue;
		memset(&ops[n], 0, sizeof(ops[n]));
		ops[n].cmd = AB_STORE_GETS;
		ops[n].key = r->key;
		ops[n].dual = true;
		ops[n].out_bytes = r->in;
		ops[n].out_bytes_cap = sizeof(r->in);
		ops[n].out_bytes2 = r->in2;
		ops[n].out_bytes2_cap = sizeof(r->in2);
		idx[n++] = (int)i;
	}
	nrec = n;
	/* the campaign state, in the same round trip */
	if (which == NULL && tracker->campaign_want && n > 0)
		n += campaign_ops(tracker, &ops[n], now, tracker->campaign_dry);
	if (n == 0)
		return 0;
	ret = ab_store_run(tracker->store, ops, n, error_r);
	if (n > nrec) {
		campaign_take(tracker, &ops[nrec], now);
		tracker->campaign_want = false;
	}
	dual_slots(keep);
	for (i = 0; i < nrec; i++) {
		struct rec *r = &tracker->rec[idx[i]];
		struct ab_record second;
		const char *error;

		r->r.n = 0;
		r->r.dropped = 0;
		r->cas = 0;
		r->dirty = r->conflict = false;
		r->answered = ops[i].result != AB_STORE_FAILED;
		if (!r->answered) {
			/* its first server is away: the second copy is all
			   there is, and is written as it is */
			if (ops[i].result2 == AB_STORE_FAILED)
				continue;
			r->answered = true;
			if (ops[i].result2 == AB_STORE_DONE &&
			    ab_record_decode(r->in2, ops[i].out_bytes2_len, now,
					     &r->r, &error) < 0)
				r->r.n = 0;
			continue;
		}
		if (ops[i].result == AB_STORE_DONE) {
			r->cas = ops[i].cas;
			if (ab_record_decode(r->in, ops[i].out_bytes_len, now,
					     &r->r, &error) < 0)
				tracker_log(tracker, AB_LOG_WARNING,
					    "memcached item %s: %s: taken as empty, "
					    "and written over", r->key, error);
		}
		/* what refuses, from the second copy too: a lock set while
		   the first server was away */
		if (ops[i].result2 == AB_STORE_DONE &&
		    ab_record_decode(r->in2, ops[i].out_bytes2_len, now,
				     &second, &error) == 0)
			ab_record_merge(&r->r, &second, keep, AB_SLOT_COUNT);
	}
	return ret;
}

/* Write back the records changed since they were read, each only if no
   one wrote it in between (else it is marked conflict). Returns how many
   conflicts; -1 when the store could not take them. */
static int recs_write(struct ab_tracker *tracker, time_t now,
		      const char **error_r)
{
	struct ab_store_op *ops = tracker->ops;
	unsigned int i, n = 0, conflicts = 0;
	int idx[AB_TRACKER_BATCH_MAX * REC_KINDS], ret;

	for (i = 0; i < tracker->rec_n; i++) {
		struct rec *r = &tracker->rec[i];

		if (!r->dirty)
			continue;
		memset(&ops[n], 0, sizeof(ops[n]));
		ops[n].cmd = AB_STORE_CAS;
		ops[n].key = r->key;
		ops[n].dual = true;
		ops[n].bytes = r->out;
		ops[n].bytes_len = ab_record_encode(&r->r, r->out);
		ops[n].ttl_s = ab_record_ttl(&r->r, now);
		ops[n].cas = r->cas;
		idx[n++] = (int)i;
		if (r->r.dropped > 0 &&
		    now - tracker->dropped_logged >= (time_t)tracker->cfg->fail_log_interval_s) {
			tracker_log(tracker, AB_LOG_WARNING,
				    "memcached item %s is full: %u entries dropped, "
				    "those that expired soonest", r->key, r->r.dropped);
			tracker->dropped_logged = now;
		}
	}
	if (n == 0)
		return 0;
	ret = ab_store_run(tracker->store, ops, n, error_r);
	for (i = 0; i < n; i++) {
		struct rec *r = &tracker->rec[idx[i]];

		if (ops[i].result == AB_STORE_DONE ||
		    (ops[i].result == AB_STORE_FAILED &&
		     ops[i].result2 == AB_STORE_DONE)) {
			/* written; with the first server away, on the second */
			r->cas = ops[i].result == AB_STORE_DONE ? ops[i].cas : 0;
			r->dirty = false;
			r->r.dropped = 0;
		} else if (ops[i].result == AB_STORE_MISS) {
			r->conflict = true;
			conflicts++;
		} else {
			r->answered = false;	/* lost: nothing of it holds */
		}
	}
	return ret < 0 ? -1 : (int)conflicts;
}

/* The snapshot the engine reads: every slot that applies, from the
   records as they are now. own[] says which counts hold this job's own
   place. */
static void job_snapshot(const struct ab_tracker *tracker, const struct job *job,
			 time_t now, struct ab_snapshot *snap_r)
{
	unsigned int slot, i;

	memset(snap_r, 0, sizeof(*snap_r));
	snap_r->campaign = tracker->campaign.known &&
		ab_campaign_on(&tracker->campaign.state, tracker->cfg, now);
	for (slot = 0; slot < AB_SLOT_COUNT; slot++) {
		int ri = slot_rec(job, (enum ab_slot)slot);
		struct ab_record_entry *e;
		uint32_t sub, bucket;
		uint8_t id;

		if (ri < 0 || !tracker->rec[ri].answered ||
		    !ab_slot_applies((enum ab_slot)slot, job->attempt))
			continue;
		slot_entry(tracker, job, (enum ab_slot)slot, now, &id, &sub, &bucket);
		e = ab_record_find(&tracker->rec[ri].r, id, sub, bucket);
		if (e != NULL) {
			snap_r->found[slot] = true;
			snap_r->value[slot] = e->value;
		}
	}
	for (i = 0; i < job->applied_n; i++) {
		const struct applied *a = &job->applied[i];

		if (a->took && !a->given_back && (a->op.at == 0 || a->op.at == now))
			snap_r->own[ab_op_counted(&a->op)] = true;
	}
}

/* Do an engine op to the job's records; false when its record could not
   be read (then nothing is done). */
static bool apply_op(struct ab_tracker *tracker, struct job *job,
		     struct applied *a, time_t now)
{
	const struct ab_op *op = &a->op;
	time_t at = op->at != 0 ? op->at : now;
	int ri = slot_rec(job, op->slot);
	struct ab_record *r;
	uint32_t sub, bucket, psub, pbucket;
	uint8_t id, pid;

	a->marked = a->took = false;
	if (ri < 0 || !tracker->rec[ri].answered)
		return false;
	r = &tracker->rec[ri].r;
	slot_entry(tracker, job, op->slot, at, &id, &sub, &bucket);
	switch (op->kind) {
	case AB_OP_INCR:
		(void)ab_record_incr(r, id, sub, bucket, op->value, op->ttl_s, now);
		a->took = true;
		break;
	case AB_OP_DECR:
		(void)ab_record_decr(r, id, sub, bucket, op->value);
		break;
	case AB_OP_SET:
		ab_record_set(r, id, sub, bucket, op->value, op->ttl_s, now);
		break;
	case AB_OP_MARK:
		a->marked = ab_record_add(r, id, sub, bucket, op->value,
					  op->ttl_s, now);
		/* a marker without a count is held as its own place */
		a->took = a->marked;
		if (a->marked && op->pair_slot != AB_SLOT_COUNT) {
			/* a marker and its count live in one record */
			slot_entry(tracker, job, op->pair_slot, at, &pid, &psub,
				   &pbucket);
			(void)ab_record_incr(r, pid, psub, pbucket, 1,
					     op->pair_ttl_s, now);
		}
		break;
	case AB_OP_UNMARK:
		a->marked = ab_record_delete(r, id, sub, bucket);
		if (a->marked && op->pair_slot != AB_SLOT_COUNT) {
			slot_entry(tracker, job, op->pair_slot, at, &pid, &psub,
				   &pbucket);
			(void)ab_record_decr(r, pid, psub, pbucket, 1);
		}
		break;
	case AB_OP_DELETE:
		(void)ab_record_delete(r, id, sub, bucket);
		break;
	}
	tracker->rec[ri].dirty = true;
	return true;
}

/* Do the engine's ops and remember them, to do them again should a
   record be read anew. */
static void apply_ops(struct ab_tracker *tracker, struct job *job,
		      const struct ab_ops *ops, time_t now)
{
	unsigned int i;

	for (i = 0; i < ops->count && job->applied_n < APPLIED_MAX; i++) {
		struct applied *a = &job->applied[job->applied_n];

		a->op = ops->op[i];
		a->given_back = a->committed = false;
		if (apply_op(tracker, job, a, now))
			job->applied_n++;
	}
}

/* Does the job touch a record read anew? Its ops there are done again
   (in the order they were done), and true is returned. */
static bool job_redo(struct ab_tracker *tracker, struct job *job, time_t now,
		     const bool *reread)
{
	bool touched = false;
	unsigned int i, k;

	for (k = 0; k < REC_KINDS; k++)
		touched = touched || (job->rec[k] >= 0 && reread[job->rec[k]]);
	if (!touched)
		return false;
	for (i = 0; i < job->applied_n; i++) {
		struct applied *a = &job->applied[i];
		int ri = slot_rec(job, a->op.slot);
		bool given_back = a->given_back;

		/* what was written with an earlier version is in it already */
		if (ri >= 0 && reread[ri] && !a->committed) {
			(void)apply_op(tracker, job, a, now);
			a->given_back = given_back;
		}
	}
	return true;
}

/* Give back every place the job took (an allow that no longer fits). */
static void job_give_back(struct ab_tracker *tracker, struct job *job,
			  time_t now)
{
	struct ab_ops back = { .count = 0 };
	unsigned int i, n = job->applied_n;

	for (i = 0; i < n && back.count < AB_OPS_MAX; i++) {
		struct applied *a = &job->applied[i];
		struct ab_op *op = &back.op[back.count];

		if (a->given_back)
			continue;
		a->given_back = true;

		if (a->op.kind == AB_OP_MARK && a->marked) {
			*op = a->op;
			op->kind = AB_OP_UNMARK;
			back.count++;
		} else if (a->op.kind == AB_OP_INCR && a->took) {
			*op = a->op;
			op->kind = AB_OP_DECR;
			back.count++;
		} else if (a->op.kind == AB_OP_SET &&
			   a->op.slot == AB_SLOT_SESSION) {
			*op = a->op;
			op->kind = AB_OP_DELETE;
			back.count++;
		}
	}
	/* done after the rest, and again with it on a record read anew */
	apply_ops(tracker, job, &back, now);
	job->holds = false;
}

/* After a write: the ops whose record was written are in memcached now. */
static void jobs_committed(struct ab_tracker *tracker, size_t n)
{
	size_t j;
	unsigned int i;

	for (j = 0; j < n; j++) {
		struct job *job = &tracker->job[j];

		if (job->remembered)
			continue;
		for (i = 0; i < job->applied_n; i++) {
			struct applied *a = &job->applied[i];
			int ri = slot_rec(job, a->op.slot);

			if (ri >= 0 && !tracker->rec[ri].dirty &&
			    !tracker->rec[ri].conflict && tracker->rec[ri].answered)
				a->committed = true;
		}
	}
}

/* Store errors are logged once per fail_log_interval, whatever call met
   them, each time with what fail_mode does while the store is away. */
static void store_failure(struct ab_tracker *tracker, time_t now,
			  const char *what, const char *error,
			  const char *consequence)
{
	if (tracker->last_fail_log != 0 &&
	    now - tracker->last_fail_log < (time_t)tracker->cfg->fail_log_interval_s) {
		tracker->fail_suppressed++;
		return;
	}
	tracker_log(tracker, AB_LOG_ERROR,
		    "%s: %s; %s%s%s (%llu more like this since the last message)",
		    what, error, consequence != NULL ? consequence : "",
		    consequence != NULL ? "; while it lasts " : "",
		    tracker->cfg->fail_mode == AB_FAIL_OPEN ?
		    "fail_mode=open: logins are let through unchecked" :
		    "fail_mode=closed: logins are rejected",
		    tracker->fail_suppressed);
	tracker->last_fail_log = now;
	tracker->fail_suppressed = 0;
}

static void fail_mode_decision(const struct ab_config *cfg, bool partly,
			       struct ab_decision *d)
{
	memset(d, 0, sizeof(*d));
	d->store_failed = true;
	if (cfg->fail_mode == AB_FAIL_OPEN)
		ab_decision_set(d, AB_ALLOW, AB_REASON_FAIL_OPEN);
	else
		ab_decision_set(d, AB_REJECT, partly ? AB_REASON_FAIL_CLOSED_PARTLY :
				AB_REASON_FAIL_CLOSED);
}

/* Write what the jobs changed; records another writer changed first are
   read again and each job's ops there done again, and redo() says what
   that changes for the job (an allow that no longer fits gives its
   places back; a report sets the blocks its counts now call for), until
   every record is written or CAS_TRIES are spent. Returns 0, or -1 with
   *error_r when the store failed or a record could not be written. */
static int recs_settle(struct ab_tracker *tracker, size_t n, time_t now,
		       void (*redo)(struct ab_tracker *, struct job *, time_t),
		       const char **error_r)
{
	bool reread[AB_TRACKER_BATCH_MAX * REC_KINDS];
	unsigned int i, try;
	size_t j;
	int conflicts;

	for (try = 0;; try++) {
		conflicts = recs_write(tracker, now, error_r);
		jobs_committed(tracker, n);
		if (conflicts <= 0)
			break;
		if (try == CAS_TRIES) {
			*error_r = "memcached: records changed by other writers at every try";
			return -1;
		}
		for (i = 0; i < tracker->rec_n; i++)
			reread[i] = tracker->rec[i].conflict;
		if (recs_read(tracker, reread, now, error_r) < 0)
			return -1;
		for (j = 0; j < n; j++) {
			struct job *job = &tracker->job[j];

			if (!job->remembered && job_redo(tracker, job, now, reread))
				redo(tracker, job, now);
		}
	}
	for (i = 0; i < tracker->rec_n; i++) {
		if (tracker->rec[i].dirty && !tracker->rec[i].answered)
			conflicts = -1;
	}
	return conflicts < 0 ? -1 : 0;
}

/* --- round trips -------------------------------------------------------

   What logins cost the store, in round trips and operations (one per
   record: an address's, its subnet's, an account's):
   - allow: the records read (1 round trip); the engine decides. A refusal
     writes nothing. An attempt let through takes its places (ab_reserve())
     and its session entry, and the records it changed are written back
     (1 more). A refusal this process remembers (ab-verdict.h) costs none.
   - report: the records read, what the outcome changes written back, with
     the block or lock its counts call for in the same write (2). One more
     when a block or lock is set: the slot of `authbrake list`'s ring.
   A record another writer changed in between costs its read and write
   again. What each costs is tabled in ab-cost.h; test-store.c checks the
   table against the store's own counters. */

/* What an allow holds: the places its ops took. */
static void hold_of(const struct job *job, struct ab_hold *hold_r)
{
	unsigned int i;

	hold_r->at = job->hold.at;
	hold_r->slots = 0;
	for (i = 0; i < job->applied_n; i++) {
		const struct applied *a = &job->applied[i];

		if (a->took && !a->given_back)
			hold_r->slots |= 1U << ab_op_counted(&a->op);
	}
}

/* After a conflict: is the allow still within the limits, counting the
   places it holds? If not, it gives them back. */
static void allow_redo(struct ab_tracker *tracker, struct job *job, time_t now)
{
	struct ab_hold hold;
	unsigned int i;

	if (!job->holds)
		return;
	job_snapshot(tracker, job, now, &job->snap);
	ab_decide(&job->snap, job->attempt, tracker->cfg, now, &job->redo);
	if (job->redo.verdict == AB_REJECT) {
		job_give_back(tracker, job, now);
		job->gave_back = true;
		return;
	}
	/* a marker another writer added since is not this attempt's to
	   give back: its session entry says what it holds now */
	hold_of(job, &hold);
	if (hold.slots == job->hold.slots)
		return;
	job->hold = hold;
	for (i = 0; i < job->applied_n; i++) {
		struct applied *a = &job->applied[i];

		if (a->op.kind == AB_OP_SET && a->op.slot == AB_SLOT_SESSION) {
			a->op.value = ab_hold_pack(&hold);
			(void)apply_op(tracker, job, a, now);
		}
	}
}

void ab_tracker_allow_many(struct ab_tracker *tracker,
			   const struct ab_attempt *const *attempts, size_t n,
			   time_t now, unsigned int flags,
			   struct ab_decision *decisions_r)
{
	const struct ab_config *cfg = tracker->cfg;
	const char *error = "";
	size_t i;
	int ret;

	for (; n > AB_TRACKER_BATCH_MAX; n -= AB_TRACKER_BATCH_MAX) {
		ab_tracker_allow_many(tracker, attempts, AB_TRACKER_BATCH_MAX, now,
				      flags, decisions_r);
		attempts += AB_TRACKER_BATCH_MAX;
		decisions_r += AB_TRACKER_BATCH_MAX;
	}
	tracker->rec_n = 0;
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];

		/* a flood of attempts already refused costs memcached nothing */
		job->remembered = (flags & AB_ALLOW_DRY_RUN) == 0 &&
			ab_verdicts_find(tracker->verdicts, attempts[i],
					 ab_attempt_trusted(attempts[i], cfg), now,
					 &decisions_r[i]);
		if (!job->remembered)
			job_init(tracker, job, attempts[i]);
	}
	/* the campaign state, at most once a second */
	tracker->campaign_want = tracker->campaign.read_at != now;
	tracker->campaign_dry = (flags & AB_ALLOW_DRY_RUN) != 0;
	ret = recs_read(tracker, NULL, now, &error);
	if (tracker->campaign.read_at == now && !tracker->campaign_want &&
	    !tracker->campaign_dry)
		campaign_detect(tracker, now);
	tracker->campaign_want = false;
	if (ret < 0 || (ret > 0 && cfg->fail_mode == AB_FAIL_CLOSED))
		store_failure(tracker, now, ret < 0 ? "memcached unreachable" :
			      "memcached partly unreachable", error, NULL);
	else if (ret > 0)
		store_failure(tracker, now, "memcached partly unreachable", error,
			      "deciding on the counts of the servers that answered");
	/* decided in order: each sees the places those before it took */
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];
		struct ab_decision *d = &decisions_r[i];
		struct ab_ops entry;
		int home;

		if (job->remembered)
			continue;
		if (ret < 0 || (ret > 0 && cfg->fail_mode == AB_FAIL_CLOSED)) {
			fail_mode_decision(cfg, ret > 0, d);
			continue;
		}
		job_snapshot(tracker, job, now, &job->snap);
		ab_decide(&job->snap, job->attempt, cfg, now, d);
		if ((flags & AB_ALLOW_DRY_RUN) != 0 || !job->attempt->has_session ||
		    d->verdict == AB_REJECT)
			continue;
		/* a second allow for one session (Dovecot's after-auth check)
		   finds the first one's entry: its places are held already */
		home = slot_rec(job, AB_SLOT_SESSION);
		if (home < 0 || !tracker->rec[home].answered || job->snap.found[AB_SLOT_SESSION])
			continue;
		ab_reserve(&job->snap, job->attempt, cfg, now, &job->ops);
		apply_ops(tracker, job, &job->ops, now);
		job->hold.at = now;
		hold_of(job, &job->hold);
		if (job->hold.slots == 0)
			continue;	/* nothing it fails would count */
		memset(&entry, 0, sizeof(entry));
		entry.count = 1;
		entry.op[0].kind = AB_OP_SET;
		entry.op[0].slot = AB_SLOT_SESSION;
		entry.op[0].value = ab_hold_pack(&job->hold);
		entry.op[0].ttl_s = AB_HOLD_TTL;
		apply_ops(tracker, job, &entry, now);
		job->holds = true;
	}
	if (ret >= 0 && recs_settle(tracker, n, now, allow_redo, &error) < 0)
		store_failure(tracker, now, "memcached partly unreachable", error,
			      "places taken by attempts let through may not be held");
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];
		struct ab_decision *d = &decisions_r[i];

		if (job->remembered || d->store_failed)
			continue;
		/* a conflict found it over the limits after all */
		if (job->gave_back)
			*d = job->redo;
		if ((flags & AB_ALLOW_DRY_RUN) == 0)
			ab_verdicts_remember(tracker->verdicts, job->attempt, d, now);
	}
	campaign_allows(tracker, decisions_r, n, flags, now);
}

void ab_tracker_allow(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt, time_t now,
		      unsigned int flags, struct ab_decision *decision_r)
{
	ab_tracker_allow_many(tracker, &attempt, 1, now, flags, decision_r);
}

/* --- observer hook (ab-observer.h) --- */
void ab_tracker_set_observer(struct ab_tracker *tracker,
			     const struct ab_observer *observer, void *ctx)
{
	tracker->observer = observer;
	tracker->observer_ctx = ctx;
	ab_store_set_observer(tracker->store, observer, ctx);
}

static void tracker_observe_block(struct ab_tracker *tracker,
				  const struct ab_op *op, time_t now)
{
	enum ab_observed_block kind;

	if (tracker->observer == NULL || tracker->observer->block_set == NULL)
		return;
	if (op->slot == AB_SLOT_IP_BLOCK)
		kind = AB_OBSERVED_ADDRESS;
	else if (op->slot == AB_SLOT_NET_BLOCK)
		kind = AB_OBSERVED_SUBNET;
	else if (op->slot == AB_SLOT_ACCT_LOCK)
		kind = AB_OBSERVED_ACCOUNT;
	else
		return;
	tracker->observer->block_set(tracker->observer_ctx, kind,
		op->value > (uint64_t)now ? (unsigned int)(op->value - (uint64_t)now) : 0);
}
/* --- end of the observer hook --- */

/* A block or lock op that this job set (its marker added, and written). */
static bool set_block(const struct applied *a)
{
	return a->op.kind == AB_OP_MARK && a->marked &&
		(a->op.slot == AB_SLOT_IP_BLOCK || a->op.slot == AB_SLOT_NET_BLOCK ||
		 a->op.slot == AB_SLOT_ACCT_LOCK);
}

static void log_escalation(struct ab_tracker *tracker, const struct job *job,
			   uint64_t *ring_index, time_t now)
{
	const struct ab_attempt *attempt = job->attempt;
	const struct ab_snapshot *after = &job->after;
	char addr[AB_ADDR_STRLEN], dur[32];
	char account[AB_LOG_QUOTED_MAX(AB_ACCOUNT_MAX)];
	unsigned int i;

	for (i = 0; i < job->applied_n; i++) {
		const struct ab_op *op = &job->applied[i].op;
		struct ab_addr masked;

		if (!set_block(&job->applied[i]))
			continue;	/* another node set it first */
		tracker_observe_block(tracker, op, now);	/* observer hook */
		/* authbrake list: the next slot of its ring */
		ab_recent_escalation(&tracker->secret, tracker->store, attempt, after,
				     op, *ring_index, now);
		if (*ring_index > 0)
			(*ring_index)++;
		ab_duration_str(op->value - (uint64_t)now, dur, sizeof(dur));
		switch (op->slot) {
		case AB_SLOT_IP_BLOCK:
			ab_addr_origin(&attempt->addr, &masked);
			tracker_log(tracker, AB_LOG_WARNING,
				    "address %s blocked for %s: %llu failures, %llu accounts tried",
				    ab_addr_str(&masked, ab_addr_origin_prefix(&masked), addr),
				    dur,
				    (unsigned long long)ab_window_count(after, AB_SLOT_IP_FAIL),
				    (unsigned long long)ab_window_count(after, AB_SLOT_IP_ACCTS));
			break;
		case AB_SLOT_NET_BLOCK:
			ab_addr_subnet(&attempt->addr, &masked);
			tracker_log(tracker, AB_LOG_WARNING,
				    "subnet %s blocked for %s: %llu failures, %llu accounts tried",
				    ab_addr_str(&masked, ab_addr_subnet_prefix(&masked), addr),
				    dur,
				    (unsigned long long)ab_window_count(after, AB_SLOT_NET_FAIL),
				    (unsigned long long)ab_window_count(after, AB_SLOT_NET_ACCTS));
			break;
		case AB_SLOT_ACCT_LOCK:
			tracker_log(tracker, AB_LOG_WARNING,
				    "account %s locked for unfamiliar origins for %s: %llu failures",
				    ab_log_quote(attempt->account, account, sizeof(account)), dur,
				    (unsigned long long)ab_window_count(after, AB_SLOT_ACCT_FAIL));
			break;
		default:
			break;
		}
	}
}

/* After the counts are in (or in again, after a conflict): the blocks and
   locks they call for, done to the records with the counts. */
static void report_escalate(struct ab_tracker *tracker, struct job *job,
			    time_t now)
{
	struct ab_ops esc;

	if (!job->counted)
		return;
	job_snapshot(tracker, job, now, &job->after);
	ab_escalate(&job->after, job->attempt, job->outcome, tracker->cfg, now, &esc);
	apply_ops(tracker, job, &esc, now);
}

int ab_tracker_report_many(struct ab_tracker *tracker,
			   const struct ab_attempt *const *attempts,
			   const enum ab_outcome *outcomes, size_t n,
			   time_t now, const char **error_r)
{
	uint64_t ring_index = 0, blocks = 0;
	size_t i;
	unsigned int k;
	int ret, failed = 0;

	for (; n > AB_TRACKER_BATCH_MAX; n -= AB_TRACKER_BATCH_MAX) {
		if (ab_tracker_report_many(tracker, attempts, outcomes,
					   AB_TRACKER_BATCH_MAX, now, error_r) < 0)
			failed = -1;
		attempts += AB_TRACKER_BATCH_MAX;
		outcomes += AB_TRACKER_BATCH_MAX;
	}
	tracker->rec_n = 0;
	for (i = 0; i < n; i++) {
		tracker->job[i].remembered = false;
		job_init(tracker, &tracker->job[i], attempts[i]);
		tracker->job[i].outcome = outcomes[i];
	}
	ret = recs_read(tracker, NULL, now, error_r);
	if (ret < 0) {
		store_failure(tracker, now, "memcached unreachable", *error_r,
			      "an outcome was not recorded");
		return -1;
	}
	/* The session entry says what its allow holds; of racing reports,
	   the one that deletes it settles that. Without one, a failure is
	   counted now. */
	for (i = 0; i < n; i++) {
		struct job *job = &tracker->job[i];
		struct ab_hold *held = NULL;

		job_snapshot(tracker, job, now, &job->snap);
		if (job->snap.found[AB_SLOT_SESSION]) {
			struct ab_ops del = { .count = 1 };

			ab_hold_unpack(job->snap.value[AB_SLOT_SESSION], &job->hold);
			held = &job->hold;
			del.op[0].kind = AB_OP_DELETE;
			del.op[0].slot = AB_SLOT_SESSION;
			apply_ops(tracker, job, &del, now);
		} else if (job->attempt->has_session &&
			   outcomes[i] == AB_OUTCOME_SUCCESS) {
			/* the entry is lost (its server went away, an
			   eviction): a real user's places must not stay
			   behind as failures */
			ab_hold_presumed(&job->snap, job->attempt, tracker->cfg,
					 now, &job->hold);
			held = &job->hold;
		}
		job->counted = ab_record(&job->snap, job->attempt, outcomes[i],
					 held, tracker->cfg, now, &job->ops);
		apply_ops(tracker, job, &job->ops, now);
		report_escalate(tracker, job, now);
	}
	if (recs_settle(tracker, n, now, report_escalate, error_r) < 0) {
		store_failure(tracker, now, "memcached partly unreachable",
			      *error_r, "an outcome was recorded in part");
		failed = -1;
	}
	campaign_report(tracker, n, now);
	/* `authbrake list`: one slot of its ring for each block or lock set,
	   taken together */
	for (i = 0; i < n; i++) {
		for (k = 0; k < tracker->job[i].applied_n; k++)
			blocks += set_block(&tracker->job[i].applied[k]);
	}
	if (blocks > 0) {
		const char *error;

		if (ab_store_incr(tracker->store, tracker->ring_key, blocks,
				  AB_RECENT_INDEX_TTL, &ring_index, &error) < 0)
			ring_index = 0;		/* each takes its own, posted */
		else
			ring_index -= blocks - 1;
	}
	for (i = 0; i < n; i++)
		log_escalation(tracker, &tracker->job[i], &ring_index, now);
	/* a server that did not answer the reads: its records took nothing */
	if (ret != 0) {
		store_failure(tracker, now, "memcached partly unreachable",
			      *error_r, "an outcome was recorded in part");
		failed = -1;
	}
	return failed;
}

int ab_tracker_report(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt,
		      enum ab_outcome outcome, time_t now,
		      const char **error_r)
{
	return ab_tracker_report_many(tracker, &attempt, &outcome, 1, now, error_r);
}

void ab_tracker_watch_evictions(struct ab_tracker *tracker)
{
	uint64_t evictions;
	const char *error;

	if (ab_store_evictions(tracker->store, &evictions, &error) < 0)
		return;		/* a store that cannot answer is logged elsewhere */
	if (tracker->evictions_seen && evictions > tracker->evictions)
		tracker_log(tracker, AB_LOG_WARNING,
			    "memcached evicted %llu items since the last look: counts, "
			    "blocks, locks and familiar subnets may have been lost; give "
			    "memcached more memory (-m, see authbrake.conf(5), \"Sizing memcached\")",
			    (unsigned long long)(evictions - tracker->evictions));
	tracker->evictions = evictions;
	tracker->evictions_seen = true;
}

const char *ab_decision_log_line(const struct ab_attempt *attempt,
				 const struct ab_decision *decision,
				 char *buf, size_t size)
{
	static const char *const verdicts[] = {
		[AB_ALLOW] = "allow", [AB_TARPIT] = "tarpit", [AB_REJECT] = "reject",
	};
	char addr[AB_ADDR_STRLEN], extra[64] = "";
	char account[AB_LOG_QUOTED_MAX(AB_ACCOUNT_MAX)];

	if (decision->verdict == AB_TARPIT)
		snprintf(extra, sizeof(extra), " delay=%us", decision->delay_s);
	else if (decision->verdict == AB_REJECT && decision->retry_after_s > 0)
		snprintf(extra, sizeof(extra), " retry_after=%us",
			 decision->retry_after_s);
	snprintf(buf, size,
		 "account=%s address=%s protocol=%s decision=%s%s reason=\"%s\"",
		 ab_log_quote(attempt->account[0] != '\0' ? attempt->account : "-",
			      account, sizeof(account)),
		 attempt->has_addr ?
		 ab_addr_str(&attempt->addr, (unsigned int)ab_addr_len(&attempt->addr) * 8, addr) : "-",
		 attempt->protocol, verdicts[decision->verdict], extra,
		 decision->reason);
	return buf;
}

/* --- DNS blocklists ---------------------------------------------------

   An answer is kept in memcached for its TTL under a keyed hash of the
   address and of the zones and resolver asked (a change of them forgets
   it): 0 not listed (or the lookup failed), 1 + the zone's index listed. */

struct ab_dnsbl *ab_tracker_dnsbl(struct ab_tracker *tracker)
{
	return tracker->dnsbl;
}

bool ab_tracker_dnsbl_wanted(struct ab_tracker *tracker,
			     const struct ab_attempt *attempt)
{
	return tracker->dnsbl != NULL && !attempt->dnsbl_checked &&
		ab_address_rules(attempt, tracker->cfg) &&
		!ab_attempt_restricted_out(attempt, tracker->cfg);
}

static void dnsbl_key(struct ab_tracker *tracker,
		      const struct ab_attempt *attempt, ab_key key_r)
{
	const char *signature = ab_dnsbl_signature(tracker->dnsbl);
	uint8_t addr[17];

	(void)addr_bytes(&attempt->addr, addr);
	ab_hash_key(&tracker->secret, "db", addr, sizeof(addr), signature,
		    strlen(signature), key_r);
}

void ab_tracker_dnsbl_cached(struct ab_tracker *tracker,
			     struct ab_attempt *const *attempts, size_t n)
{
	struct ab_store_op ops[AB_TRACKER_BATCH_MAX];
	ab_key keys[AB_TRACKER_BATCH_MAX];
	struct ab_attempt *wanted[AB_TRACKER_BATCH_MAX];
	size_t i, count = 0;

	for (i = 0; i < n && count < AB_TRACKER_BATCH_MAX; i++) {
		if (!ab_tracker_dnsbl_wanted(tracker, attempts[i]))
			continue;
		dnsbl_key(tracker, attempts[i], keys[count]);
		memset(&ops[count], 0, sizeof(ops[count]));
		ops[count].cmd = AB_STORE_GET;
		ops[count].key = keys[count];
		wanted[count++] = attempts[i];
	}
	if (count == 0)
		return;
	/* a store that cannot answer is logged by the batches of the
	   decision itself; the address is then looked up */
	(void)ab_store_run(tracker->store, ops, count, NULL);
	for (i = 0; i < count; i++) {
		if (ops[i].result != AB_STORE_DONE)
			continue;
		wanted[i]->dnsbl_checked = true;
		wanted[i]->dnsbl_listed = ops[i].out != 0;
	}
}

void ab_tracker_dnsbl_take(struct ab_tracker *tracker,
			   struct ab_attempt *attempt,
			   const struct ab_dnsbl_result *result,
			   unsigned int flags)
{
	char addr[AB_ADDR_STRLEN];
	struct ab_store_op op;
	ab_key key;

	attempt->dnsbl_checked = true;
	attempt->dnsbl_listed = result->status == AB_DNSBL_LISTED;
	(void)ab_addr_str(&attempt->addr, (unsigned int)ab_addr_len(&attempt->addr) * 8,
			  addr);
	switch (result->status) {
	case AB_DNSBL_LISTED:
		tracker_log(tracker, AB_LOG_INFO,
			    "dnsbl: address=%s listed in %s (%u.%u.%u.%u), for %us",
			    addr, ab_dnsbl_zone(tracker->dnsbl, result->zone),
			    result->answer[0], result->answer[1],
			    result->answer[2], result->answer[3], result->ttl_s);
		break;
	case AB_DNSBL_NOT_LISTED:
		tracker_log(tracker, AB_LOG_DEBUG,
			    "dnsbl: address=%s not listed, for %us", addr,
			    result->ttl_s);
		break;
	case AB_DNSBL_ERROR:
		tracker_log(tracker, AB_LOG_WARNING,
			    "dnsbl: address=%s lookup failed (%s): counted as not listed for %us",
			    addr, result->error, result->ttl_s);
		break;
	}
	if ((flags & AB_ALLOW_DRY_RUN) != 0)
		return;
	dnsbl_key(tracker, attempt, key);
	memset(&op, 0, sizeof(op));
	op.cmd = AB_STORE_SET;
	op.key = key;
	op.value = attempt->dnsbl_listed ? 1 + result->zone : 0;
	op.ttl_s = result->ttl_s;
	ab_store_post(tracker->store, &op, 1);
}

void ab_tracker_dnsbl_check(struct ab_tracker *tracker,
			    struct ab_attempt *attempt, unsigned int flags)
{
	struct ab_attempt *attempts[1] = { attempt };
	struct ab_dnsbl_result result;

	ab_tracker_dnsbl_cached(tracker, attempts, 1);
	if (!ab_tracker_dnsbl_wanted(tracker, attempt))
		return;
	ab_dnsbl_lookup_wait(tracker->dnsbl, &attempt->addr, &result);
	ab_tracker_dnsbl_take(tracker, attempt, &result, flags);
}

/* --- administration --- */

/* Read an attempt's records into a snapshot, in one round trip (job 0). */
static int read_snapshot(struct ab_tracker *tracker,
			 const struct ab_attempt *attempt, time_t now,
			 struct ab_snapshot *snap_r, const char **error_r)
{
	struct job *job = &tracker->job[0];
	int ret;

	tracker->rec_n = 0;
	job->remembered = false;
	job_init(tracker, job, attempt);
	ret = recs_read(tracker, NULL, now, error_r);
	job_snapshot(tracker, job, now, snap_r);
	return ret;
}

static void status_refusal(const struct ab_snapshot *snap,
			   const struct ab_attempt *attempt, enum ab_refused what,
			   const struct ab_config *cfg, time_t now,
			   bool *refused_r, unsigned long long *left_r)
{
	struct ab_refusal r;

	ab_refusal(snap, attempt, what, cfg, now, &r);
	*refused_r = r.refused;
	*left_r = r.refused ? (unsigned long long)(r.until - now) : 0;
}

int ab_tracker_account_status(struct ab_tracker *tracker, const char *login,
			      time_t now, struct ab_account_status *status_r,
			      const char **error_r)
{
	struct ab_attempt attempt;
	struct ab_snapshot snap;
	const struct ab_config *cfg = tracker->cfg;

	memset(status_r, 0, sizeof(*status_r));
	if (ab_attempt_init(tracker, &attempt, login, NULL, NULL, NULL, 0,
			    error_r) < 0)
		return -1;
	if (read_snapshot(tracker, &attempt, now, &snap, error_r) != 0)
		return AB_ERR_STORE;
	status_r->failures = ab_window_count(&snap, AB_SLOT_ACCT_FAIL);
	status_r->familiar_failures = ab_window_count(&snap, AB_SLOT_ACCT_FAMFAIL);
	status_r->strikes = snap.value[AB_SLOT_ACCT_STRIKES];
	status_refusal(&snap, &attempt, AB_REFUSED_ACCOUNT, cfg, now,
		       &status_r->locked, &status_r->lock_left_s);
	status_refusal(&snap, &attempt, AB_REFUSED_FAMILIAR, cfg, now,
		       &status_r->familiar_refused, &status_r->familiar_left_s);
	status_r->familiar_subnets = snap.value[AB_SLOT_ACCT_FAMCOUNT];
	return 0;
}

int ab_tracker_address_status(struct ab_tracker *tracker, const char *address,
			      time_t now, struct ab_address_status *status_r,
			      const char **error_r)
{
	struct ab_attempt attempt;
	struct ab_snapshot snap;
	const struct ab_config *cfg = tracker->cfg;

	memset(status_r, 0, sizeof(*status_r));
	if (ab_attempt_init(tracker, &attempt, NULL, address, NULL, NULL, 0,
			    error_r) < 0)
		return -1;
	if (!attempt.has_addr)
		return ab_error(error_r, "address is empty");
	if (read_snapshot(tracker, &attempt, now, &snap, error_r) != 0)
		return AB_ERR_STORE;
	status_r->failures = ab_window_count(&snap, AB_SLOT_IP_FAIL);
	status_r->accounts = ab_window_count(&snap, AB_SLOT_IP_ACCTS);
	status_r->inflight = snap.value[AB_SLOT_IP_INFLIGHT];
	status_r->strikes = snap.value[AB_SLOT_IP_STRIKES];
	status_refusal(&snap, &attempt, AB_REFUSED_ADDRESS, cfg, now,
		       &status_r->blocked, &status_r->block_left_s);
	status_r->net_failures = ab_window_count(&snap, AB_SLOT_NET_FAIL);
	status_r->net_accounts = ab_window_count(&snap, AB_SLOT_NET_ACCTS);
	status_r->net_strikes = snap.value[AB_SLOT_NET_STRIKES];
	status_refusal(&snap, &attempt, AB_REFUSED_SUBNET, cfg, now,
		       &status_r->net_blocked, &status_r->net_block_left_s);
	status_r->trusted = ab_attempt_trusted(&attempt, cfg);
	status_r->restricted_out = ab_attempt_restricted_out(&attempt, cfg);
	return 0;
}

/* Change one record as an administrator says: read it, change it, write
   it back unless another writer came first (then again). */
static int admin_change(struct ab_tracker *tracker,
			const struct ab_attempt *attempt, enum rec_kind kind,
			void (*change)(struct ab_tracker *, struct job *,
				       struct ab_record *, time_t, const void *),
			const void *ctx, time_t now, const char **error_r)
{
	struct job *job = &tracker->job[0];
	unsigned int try;
	int conflicts;

	tracker->rec_n = 0;
	job->remembered = false;
	job_init(tracker, job, attempt);
	if (job->rec[kind] < 0)
		return ab_error(error_r, "out of memory");
	for (try = 0; try <= CAS_TRIES; try++) {
		struct rec *r;

		if (recs_read(tracker, NULL, now, error_r) != 0)
			return AB_ERR_STORE;
		r = &tracker->rec[job->rec[kind]];
		change(tracker, job, &r->r, now, ctx);
		r->dirty = true;
		conflicts = recs_write(tracker, now, error_r);
		if (conflicts < 0 || (conflicts == 0 && !r->answered))
			return AB_ERR_STORE;
		if (conflicts == 0)
			return 0;
	}
	*error_r = "memcached: the record changed under every try";
	return AB_ERR_STORE;
}

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* everything that keeps the user out: the lock, the failures that would
   set it again (from every subnet), the strikes that make the next one
   longer, and the failures from their familiar networks */
static void unlock_change(struct ab_tracker *tracker, struct job *job,
			  struct ab_record *r, time_t now, const void *ctx)
{
	static const enum ab_slot slots[] = {
		AB_SLOT_ACCT_LOCK, AB_SLOT_ACCT_FAIL, AB_SLOT_ACCT_SFAIL,
		AB_SLOT_ACCT_STRIKES, AB_SLOT_ACCT_FAMFAIL,
	};
	uint32_t sub, bucket;
	uint8_t id;
	size_t i;

	(void)ctx;
	for (i = 0; i < N_ELEMENTS(slots); i++)
		ab_record_delete_slot(r, tracker->slot_id[slots[i]]);
	slot_entry(tracker, job, AB_SLOT_ACCT_UNLOCKED, now, &id, &sub, &bucket);
	ab_record_set(r, id, sub, bucket, (uint64_t)now,
		      2 * tracker->cfg->account_window_s + 60, now);
}

int ab_tracker_unlock(struct ab_tracker *tracker, const char *login,
		      time_t now, const char **error_r)
{
	struct ab_attempt attempt;
	int ret;

	if (ab_attempt_init(tracker, &attempt, login, NULL, NULL, NULL, 0,
			    error_r) < 0)
		return -1;
	if (attempt.account[0] == '\0')
		return ab_error(error_r, "account is empty");
	ret = admin_change(tracker, &attempt, REC_ACCT, unlock_change, NULL, now,
			   error_r);
	if (ret < 0)
		return ret;
	tracker_log(tracker, AB_LOG_INFO, "account \"%s\" unlocked by an administrator",
		    attempt.account);
	return 0;
}

/* An address (or its IPv6 /64) names the address's record, a /24 or /48
   the subnet's. */
static int parse_target(const char *target, struct ab_attempt *attempt_r,
			bool *subnet_r, const char **error_r)
{
	struct ab_cidr cidr;
	const char *error;
	unsigned int full;

	memset(attempt_r, 0, sizeof(*attempt_r));
	if (ab_cidr_parse(target, &cidr, &error) < 0)
		return ab_error(error_r, "%s", error);
	full = (unsigned int)ab_addr_len(&cidr.net) * 8;
	attempt_r->addr = cidr.net;
	attempt_r->has_addr = true;
	snprintf(attempt_r->protocol, sizeof(attempt_r->protocol), "-");
	if (cidr.prefix == full || cidr.prefix == ab_addr_origin_prefix(&cidr.net))
		*subnet_r = false;
	else if (cidr.prefix == ab_addr_subnet_prefix(&cidr.net))
		*subnet_r = true;
	else
		return ab_error(error_r, "'%s': give an address%s or its /%u subnet",
				target, cidr.net.family == AF_INET ? "" : " (or its /64)",
				ab_addr_subnet_prefix(&cidr.net));
	return 0;
}

struct block_ctx {
	enum ab_slot slot;
	unsigned int duration_s;
};

static void block_change(struct ab_tracker *tracker, struct job *job,
			 struct ab_record *r, time_t now, const void *ctx)
{
	const struct block_ctx *b = ctx;
	uint32_t sub, bucket;
	uint8_t id;

	slot_entry(tracker, job, b->slot, now, &id, &sub, &bucket);
	ab_record_set(r, id, sub, bucket, (uint64_t)now + b->duration_s,
		      b->duration_s, now);
}

int ab_tracker_block(struct ab_tracker *tracker, const char *target,
		     unsigned int duration_s, time_t now, const char **error_r)
{
	struct ab_attempt attempt;
	struct block_ctx b;
	bool subnet;
	char dur[32];
	int ret;

	if (parse_target(target, &attempt, &subnet, error_r) < 0)
		return -1;
	if (duration_s == 0)
		duration_s = tracker->cfg->block_time_s;
	if (duration_s > 7 * 24 * 3600)
		return ab_error(error_r, "a block lasts a week at most");
	b.slot = subnet ? AB_SLOT_NET_BLOCK : AB_SLOT_IP_BLOCK;
	b.duration_s = duration_s;
	ret = admin_change(tracker, &attempt, subnet ? REC_NET : REC_ADDR,
			   block_change, &b, now, error_r);
	if (ret < 0)
		return ret;
	ab_recent_admin_block(&tracker->secret, tracker->store, &attempt.addr,
			      subnet, duration_s, now);	/* authbrake list */
	tracker_log(tracker, AB_LOG_WARNING, "%s %s blocked for %s by an administrator",
		    subnet ? "subnet" : "address", target,
		    ab_duration_str(duration_s, dur, sizeof(dur)));
	return 0;
}

int ab_tracker_unblock(struct ab_tracker *tracker, const char *target,
		       time_t now, const char **error_r)
{
	struct ab_attempt attempt;
	struct ab_store_op op;
	ab_key key;
	bool subnet;

	(void)now;
	if (parse_target(target, &attempt, &subnet, error_r) < 0)
		return -1;
	/* the whole record: the block, the counts behind it, the strikes,
	   the accounts it tried, on both servers it is kept on */
	rec_key(tracker, subnet ? REC_NET : REC_ADDR, &attempt, key);
	memset(&op, 0, sizeof(op));
	op.cmd = AB_STORE_DELETE;
	op.key = key;
	op.dual = true;
	if (ab_store_run(tracker->store, &op, 1, error_r) != 0 ||
	    op.result == AB_STORE_FAILED)
		return AB_ERR_STORE;
	tracker_log(tracker, AB_LOG_INFO, "%s %s unblocked by an administrator",
		    subnet ? "subnet" : "address", target);
	return 0;
}

/* --- campaign mode, for the administrator --- */

static int campaign_read(struct ab_tracker *tracker, time_t now,
			 const char **error_r)
{
	unsigned int n = campaign_ops(tracker, tracker->ops, now, true);
	int ret = ab_store_run(tracker->store, tracker->ops, n, error_r);

	if (ret < 0 || (tracker->ops[0].result == AB_STORE_FAILED &&
			tracker->ops[0].result2 == AB_STORE_FAILED)) {
		if (ret >= 0)
			*error_r = "memcached: the campaign state's servers did not answer";
		return AB_ERR_STORE;
	}
	campaign_take(tracker, tracker->ops, now);
	/* a look, not an allow's read: the next allow reads (and learns) */
	tracker->campaign.read_at = 0;
	return 0;
}

int ab_tracker_campaign_status(struct ab_tracker *tracker, time_t now,
			       struct ab_campaign_status *status_r,
			       const char **error_r)
{
	const struct ab_config *cfg = tracker->cfg;
	struct campaign_view *v = &tracker->campaign;
	int ret = campaign_read(tracker, now, error_r);

	memset(status_r, 0, sizeof(*status_r));
	if (ret < 0)
		return ret;
	status_r->state = v->state;
	status_r->mode = v->state.mode;
	status_r->on = ab_campaign_on(&v->state, cfg, now);
	status_r->rate = ab_campaign_rate(cfg, now, v->now_count, v->before_count);
	status_r->learned = ab_campaign_learned(cfg, &v->baseline);
	status_r->baseline_milli = v->baseline.milli;
	status_r->peak_milli = v->peak;
	status_r->threshold = ab_campaign_threshold(cfg, &v->baseline,
						    &v->before_baseline, v->peak_known,
						    v->peak);
	return 0;
}

int ab_tracker_campaign_set(struct ab_tracker *tracker,
			    enum ab_campaign_mode mode, time_t now,
			    const char **error_r)
{
	unsigned int try;
	int ret;

	for (try = 0; try < CAS_TRIES; try++) {
		struct ab_campaign next;
		enum ab_store_result result;

		if ((ret = campaign_read(tracker, now, error_r)) < 0)
			return ret;
		next = tracker->campaign.state;
		next.mode = mode;
		result = campaign_cas(tracker, &next, error_r);
		if (result == AB_STORE_FAILED)
			return AB_ERR_STORE;
		if (result == AB_STORE_DONE) {
			tracker_log(tracker, AB_LOG_WARNING,
				    mode == AB_CAMPAIGN_AUTO ?
				    "campaign mode: handed back to the detector by the administrator" :
				    mode == AB_CAMPAIGN_FORCED_ON ?
				    "campaign mode on: forced by the administrator" :
				    "campaign mode off: forced by the administrator");
			return 0;
		}
	}
	*error_r = "memcached: the campaign state changed at every try";
	return AB_ERR_STORE;
}
