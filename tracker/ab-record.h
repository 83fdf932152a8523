/* An identity's record: everything authbrake keeps about one address,
   one subnet or one account, as one memcached item read whole and written
   back whole with a compare-and-swap (ab-store.h, AB_STORE_GETS and
   AB_STORE_CAS), so that a login costs one operation per identity instead
   of one per count. Entries stand for what were items of their own: a
   slot (enum ab_slot), the second identity it is about (an account tried
   from an address, a subnet familiar to an account, a password, a
   session: a keyed 32-bit tag, else 0), the bucket of a windowed count,
   a value and when it expires. Pure: no I/O, no clock. */
#ifndef AB_RECORD_H
#define AB_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct ab_record_entry {
	uint8_t slot;
	uint32_t sub;
	uint32_t bucket;
	uint64_t value;
	uint32_t expires;	/* unix time */
};

/* "AB", the format's version, the entry count; then the entries, each
   21 bytes (slot, sub, bucket, value, expires; little-endian) */
#define AB_RECORD_HEADER 4
#define AB_RECORD_ENTRY_LEN 21
/* what fits in one memcached value of ours (AB_META_VALUE_MAX) */
#define AB_RECORD_ENTRIES_MAX 96
#define AB_RECORD_BYTES_MAX \
	(AB_RECORD_HEADER + AB_RECORD_ENTRIES_MAX * AB_RECORD_ENTRY_LEN)

struct ab_record {
	unsigned int n;
	struct ab_record_entry e[AB_RECORD_ENTRIES_MAX];
	/* entries dropped to make room since it was read (the soonest to
	   expire went first) */
	unsigned int dropped;
};

/* Read a record; entries expired at now are left out. len 0 is an empty
   record. Returns -1 with *error_r for bytes that are no record of ours
   (then *record_r is empty). */
int ab_record_decode(const unsigned char *buf, size_t len, time_t now,
		     struct ab_record *record_r, const char **error_r);
/* Write it (room for AB_RECORD_BYTES_MAX); returns the length. */
size_t ab_record_encode(const struct ab_record *record, unsigned char *out);
/* The item's TTL: until its last entry expires (at least 1 s, at most
   29 days: memcached reads more than 30 as a date). */
unsigned int ab_record_ttl(const struct ab_record *record, time_t now);

/* The entry of (slot, sub, bucket), or NULL. */
struct ab_record_entry *ab_record_find(struct ab_record *record, uint8_t slot,
				       uint32_t sub, uint32_t bucket);

/* What memcached did to an item of its own, done to an entry. ttl_s is
   from now, as memcached's; 0 lasts as long as a record can. */
/* Add delta, creating the entry with delta when missing; the new value. */
uint64_t ab_record_incr(struct ab_record *record, uint8_t slot, uint32_t sub,
			uint32_t bucket, uint64_t delta, unsigned int ttl_s,
			time_t now);
/* Take delta away, never below 0; false when missing. */
bool ab_record_decr(struct ab_record *record, uint8_t slot, uint32_t sub,
		    uint32_t bucket, uint64_t delta);
void ab_record_set(struct ab_record *record, uint8_t slot, uint32_t sub,
		   uint32_t bucket, uint64_t value, unsigned int ttl_s,
		   time_t now);
/* Only when missing; true when added. */
bool ab_record_add(struct ab_record *record, uint8_t slot, uint32_t sub,
		   uint32_t bucket, uint64_t value, unsigned int ttl_s,
		   time_t now);
/* true when it was there. */
bool ab_record_delete(struct ab_record *record, uint8_t slot, uint32_t sub,
		      uint32_t bucket);
/* Delete every entry of slot, whatever its sub and bucket. */
void ab_record_delete_slot(struct ab_record *record, uint8_t slot);

/* Take into record what other (a second copy) has of the slots keep
   says (keep[slot]): entries it lacks, and of those both have, the
   larger value and the later expiry. */
void ab_record_merge(struct ab_record *record, const struct ab_record *other,
		     const bool *keep, size_t keep_n);

#endif
