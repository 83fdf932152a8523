/* An identity's record (see ab-record.h). The decoder trusts nothing: a
   record is memcached's to give back, and anything that answers on its
   port can give back anything. */
#include <string.h>

#include "ab-error.h"
#include "ab-record.h"

#define RECORD_VERSION 1
/* memcached reads a TTL of more than 30 days as a date */
#define RECORD_TTL_MAX (29U * 24U * 3600U)

static void put_le(unsigned char *p, uint64_t v, unsigned int len)
{
	unsigned int i;

	for (i = 0; i < len; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, unsigned int len)
{
	uint64_t v = 0;
	unsigned int i;

	for (i = 0; i < len; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

int ab_record_decode(const unsigned char *buf, size_t len, time_t now,
		     struct ab_record *record_r, const char **error_r)
{
	unsigned int count, i;

	record_r->n = 0;
	record_r->dropped = 0;
	if (len == 0)
		return 0;
	if (len < AB_RECORD_HEADER || buf[0] != 'A' || buf[1] != 'B')
		return ab_error(error_r, "not a record of ours");
	if (buf[2] != RECORD_VERSION)
		return ab_error(error_r, "a record of version %u (this is %u)",
				buf[2], RECORD_VERSION);
	count = buf[3];
	if (count > AB_RECORD_ENTRIES_MAX ||
	    len != AB_RECORD_HEADER + (size_t)count * AB_RECORD_ENTRY_LEN)
		return ab_error(error_r, "a record whose length is not its %u entries'",
				count);
	for (i = 0; i < count; i++) {
		const unsigned char *p = buf + AB_RECORD_HEADER + i * AB_RECORD_ENTRY_LEN;
		struct ab_record_entry e = {
			.slot = p[0],
			.sub = (uint32_t)get_le(p + 1, 4),
			.bucket = (uint32_t)get_le(p + 5, 4),
			.value = get_le(p + 9, 8),
			.expires = (uint32_t)get_le(p + 17, 4),
		};

		if ((time_t)e.expires <= now)
			continue;
		/* two entries for one thing: the record was not written by us */
		if (ab_record_find(record_r, e.slot, e.sub, e.bucket) != NULL) {
			record_r->n = 0;
			return ab_error(error_r, "a record with an entry twice");
		}
		record_r->e[record_r->n++] = e;
	}
	return 0;
}

size_t ab_record_encode(const struct ab_record *record, unsigned char *out)
{
	unsigned int i;

	out[0] = 'A';
	out[1] = 'B';
	out[2] = RECORD_VERSION;
	out[3] = (unsigned char)record->n;
	for (i = 0; i < record->n; i++) {
		const struct ab_record_entry *e = &record->e[i];
		unsigned char *p = out + AB_RECORD_HEADER + i * AB_RECORD_ENTRY_LEN;

		p[0] = e->slot;
		put_le(p + 1, e->sub, 4);
		put_le(p + 5, e->bucket, 4);
		put_le(p + 9, e->value, 8);
		put_le(p + 17, e->expires, 4);
	}
	return AB_RECORD_HEADER + (size_t)record->n * AB_RECORD_ENTRY_LEN;
}

unsigned int ab_record_ttl(const struct ab_record *record, time_t now)
{
	uint32_t last = 0;
	unsigned int i;

	for (i = 0; i < record->n; i++) {
		if (record->e[i].expires > last)
			last = record->e[i].expires;
	}
	if ((time_t)last <= now)
		return 1;
	if ((uint64_t)last - (uint64_t)now > RECORD_TTL_MAX)
		return RECORD_TTL_MAX;
	return (unsigned int)((uint64_t)last - (uint64_t)now);
}

struct ab_record_entry *ab_record_find(struct ab_record *record, uint8_t slot,
				       uint32_t sub, uint32_t bucket)
{
	unsigned int i;

	for (i = 0; i < record->n; i++) {
		struct ab_record_entry *e = &record->e[i];

		if (e->slot == slot && e->sub == sub && e->bucket == bucket)
			return e;
	}
	return NULL;
}

static uint32_t expiry(unsigned int ttl_s, time_t now)
{
	uint64_t t = (uint64_t)now +
		(ttl_s == 0 || ttl_s > RECORD_TTL_MAX ? RECORD_TTL_MAX : ttl_s);

	return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

static void remove_at(struct ab_record *record, unsigned int i)
{
	record->e[i] = record->e[--record->n];
}

/* A new entry; a full record makes room by dropping the entry that
   expires soonest (what a full memcached would have evicted first). */
static struct ab_record_entry *entry_new(struct ab_record *record, uint8_t slot,
					 uint32_t sub, uint32_t bucket,
					 uint64_t value, unsigned int ttl_s,
					 time_t now)
{
	struct ab_record_entry *e;

	if (record->n == AB_RECORD_ENTRIES_MAX) {
		unsigned int i, soonest = 0;

		for (i = 1; i < record->n; i++) {
			if (record->e[i].expires < record->e[soonest].expires)
				soonest = i;
		}
		remove_at(record, soonest);
		record->dropped++;
	}
	e = &record->e[record->n++];
	e->slot = slot;
	e->sub = sub;
	e->bucket = bucket;
	e->value = value;
	e->expires = expiry(ttl_s, now);
	return e;
}

uint64_t ab_record_incr(struct ab_record *record, uint8_t slot, uint32_t sub,
			uint32_t bucket, uint64_t delta, unsigned int ttl_s,
			time_t now)
{
	struct ab_record_entry *e = ab_record_find(record, slot, sub, bucket);

	if (e == NULL)
		return entry_new(record, slot, sub, bucket, delta, ttl_s, now)->value;
	e->value += delta;	/* memcached's counters wrap too */
	return e->value;
}

bool ab_record_decr(struct ab_record *record, uint8_t slot, uint32_t sub,
		    uint32_t bucket, uint64_t delta)
{
	struct ab_record_entry *e = ab_record_find(record, slot, sub, bucket);

	if (e == NULL)
		return false;
	e->value = e->value > delta ? e->value - delta : 0;
	return true;
}

void ab_record_set(struct ab_record *record, uint8_t slot, uint32_t sub,
		   uint32_t bucket, uint64_t value, unsigned int ttl_s,
		   time_t now)
{
	struct ab_record_entry *e = ab_record_find(record, slot, sub, bucket);

	if (e == NULL) {
		(void)entry_new(record, slot, sub, bucket, value, ttl_s, now);
		return;
	}
	e->value = value;
	e->expires = expiry(ttl_s, now);
}

bool ab_record_add(struct ab_record *record, uint8_t slot, uint32_t sub,
		   uint32_t bucket, uint64_t value, unsigned int ttl_s,
		   time_t now)
{
	if (ab_record_find(record, slot, sub, bucket) != NULL)
		return false;
	(void)entry_new(record, slot, sub, bucket, value, ttl_s, now);
	return true;
}

bool ab_record_delete(struct ab_record *record, uint8_t slot, uint32_t sub,
		      uint32_t bucket)
{
	struct ab_record_entry *e = ab_record_find(record, slot, sub, bucket);

	if (e == NULL)
		return false;
	remove_at(record, (unsigned int)(e - record->e));
	return true;
}

void ab_record_delete_slot(struct ab_record *record, uint8_t slot)
{
	unsigned int i = 0;

	while (i < record->n) {
		if (record->e[i].slot == slot)
			remove_at(record, i);
		else
			i++;
	}
}

void ab_record_merge(struct ab_record *record, const struct ab_record *other,
		     const bool *keep, size_t keep_n)
{
	unsigned int i;

	for (i = 0; i < other->n; i++) {
		const struct ab_record_entry *o = &other->e[i];
		struct ab_record_entry *e;

		if (o->slot >= keep_n || !keep[o->slot])
			continue;
		e = ab_record_find(record, o->slot, o->sub, o->bucket);
		if (e == NULL) {
			if (record->n < AB_RECORD_ENTRIES_MAX)
				record->e[record->n++] = *o;
			continue;
		}
		if (o->value > e->value)
			e->value = o->value;
		if (o->expires > e->expires)
			e->expires = o->expires;
	}
}
