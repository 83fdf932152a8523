/* The short memory of refusals (ab-verdict.h): a direct-mapped table of
   SipHash keys, under a random key of the process's own. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ab-error.h"
#include "ab-verdict.h"

/* a flood from thousands of blocked addresses still fits */
#define VERDICT_SLOTS 4096

struct verdict {
	uint64_t id;			/* 0: empty */
	time_t forget_at;		/* remembered until then */
	time_t ends;			/* the refusal's own end (0: unknown) */
	struct ab_decision decision;
};

struct ab_verdicts {
	unsigned int ttl_s;
	uint8_t key[crypto_shorthash_KEYBYTES];
	struct verdict *slot;		/* allocated at the first refusal */
};

int ab_verdicts_init(unsigned int ttl_s, struct ab_verdicts **verdicts_r)
{
	struct ab_verdicts *v = calloc(1, sizeof(*v));

	if (v == NULL)
		return -1;
	v->ttl_s = ttl_s;
	crypto_shorthash_keygen(v->key);
	*verdicts_r = v;
	return 0;
}

void ab_verdicts_deinit(struct ab_verdicts **_v)
{
	struct ab_verdicts *v = *_v;

	if (v == NULL)
		return;
	*_v = NULL;
	free(v->slot);
	sodium_memzero(v, sizeof(*v));
	free(v);
}

/* The id of what a refusal is about: the address (IPv6: its /64), the
   subnet, or the account from a subnet (a lock spares familiar ones). */
static uint64_t refusal_id(const struct ab_verdicts *v,
			   const struct ab_attempt *attempt,
			   enum ab_refused scope)
{
	uint8_t buf[1 + 17 + AB_ACCOUNT_MAX], out[crypto_shorthash_BYTES];
	struct ab_addr masked;
	size_t len = 1 + 17, alen;
	uint64_t id;

	buf[0] = (uint8_t)scope;
	if (scope == AB_REFUSED_ADDRESS)
		ab_addr_origin(&attempt->addr, &masked);
	else
		ab_addr_subnet(&attempt->addr, &masked);
	buf[1] = (uint8_t)masked.family;
	memcpy(buf + 2, masked.bytes, 16);
	if (scope == AB_REFUSED_ACCOUNT) {
		alen = strnlen(attempt->account, AB_ACCOUNT_MAX - 1);
		memcpy(buf + len, attempt->account, alen);
		len += alen;
	}
	crypto_shorthash(out, buf, len, v->key);
	memcpy(&id, out, sizeof(id));
	return id != 0 ? id : 1;
}

static struct verdict *lookup(struct ab_verdicts *v, uint64_t id)
{
	return &v->slot[id % VERDICT_SLOTS];
}

bool ab_verdicts_find(struct ab_verdicts *v, const struct ab_attempt *attempt,
		      bool trusted, time_t now, struct ab_decision *decision_r)
{
	static const enum ab_refused scopes[] = {
		AB_REFUSED_ADDRESS, AB_REFUSED_SUBNET, AB_REFUSED_ACCOUNT,
	};
	unsigned int i;

	if (v == NULL || v->slot == NULL || !attempt->has_addr)
		return false;
	for (i = 0; i < sizeof(scopes) / sizeof(scopes[0]); i++) {
		struct verdict *e;
		uint64_t id;

		if (scopes[i] == AB_REFUSED_ACCOUNT ? attempt->account[0] == '\0' : trusted)
			continue;
		id = refusal_id(v, attempt, scopes[i]);
		e = lookup(v, id);
		if (e->id != id || now >= e->forget_at)
			continue;
		*decision_r = e->decision;
		decision_r->retry_after_s = e->ends > now ? (unsigned int)(e->ends - now) : 0;
		return true;
	}
	return false;
}

void ab_verdicts_remember(struct ab_verdicts *v, const struct ab_attempt *attempt,
			  const struct ab_decision *decision, time_t now)
{
	struct verdict *e;
	unsigned int ttl;
	uint64_t id;

	/* a familiar subnet's refusal is rare and ends with a success: not
	   remembered */
	if (v == NULL || v->ttl_s == 0 || decision->verdict != AB_REJECT ||
	    decision->refused == AB_REFUSED_NOTHING ||
	    decision->refused == AB_REFUSED_FAMILIAR || decision->store_failed ||
	    !attempt->has_addr)
		return;
	/* never past the refusal's own end */
	ttl = v->ttl_s;
	if (decision->retry_after_s > 0 && decision->retry_after_s < ttl)
		ttl = decision->retry_after_s;
	if (v->slot == NULL &&
	    (v->slot = calloc(VERDICT_SLOTS, sizeof(*v->slot))) == NULL)
		return;
	id = refusal_id(v, attempt, decision->refused);
	e = lookup(v, id);
	e->id = id;
	e->forget_at = now + (time_t)ttl;
	e->ends = decision->retry_after_s > 0 ? now + (time_t)decision->retry_after_s : 0;
	e->decision = *decision;
}
