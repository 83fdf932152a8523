/* Feeds raw bytes to ab-record.c's decoder, as memcached (or anything
   answering on its port) may hand back for an identity's record: what
   decodes must encode and decode back the same, and survive being
   changed as the tracker changes it. */
#include <stdint.h>
#include <string.h>

#include "ab-record.h"
#include "fuzz-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW ((time_t)1800000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ab_record r, back;
	static unsigned char out[AB_RECORD_BYTES_MAX];
	const char *error = NULL;
	unsigned int i;
	size_t len;

	if (ab_record_decode(data, size, NOW, &r, &error) < 0) {
		CHECK(error != NULL && error[0] != '\0');
		CHECK(r.n == 0);
		return 0;
	}
	CHECK(r.n <= AB_RECORD_ENTRIES_MAX);
	len = ab_record_encode(&r, out);
	CHECK(len <= AB_RECORD_BYTES_MAX);
	CHECK(ab_record_decode(out, len, NOW, &back, &error) == 0);
	CHECK(back.n == r.n);
	for (i = 0; i < r.n; i++) {
		const struct ab_record_entry *e = &r.e[i];
		struct ab_record_entry *b = ab_record_find(&back, e->slot, e->sub, e->bucket);

		CHECK(b != NULL && b->value == e->value && b->expires == e->expires);
		CHECK((time_t)e->expires > NOW);
	}
	/* what the tracker does to a record read back */
	(void)ab_record_incr(&r, 1, 2, 3, 1, 60, NOW);
	(void)ab_record_add(&r, 4, 5, 0, 6, 60, NOW);
	(void)ab_record_decr(&r, 1, 2, 3, 2);
	ab_record_delete_slot(&r, size > 0 ? data[0] : 0);
	ab_record_merge(&r, &back, (const bool[256]){ [1] = true, [4] = true }, 256);
	CHECK(r.n <= AB_RECORD_ENTRIES_MAX);
	CHECK(ab_record_ttl(&r, NOW) >= 1);
	len = ab_record_encode(&r, out);
	CHECK(ab_record_decode(out, len, NOW, &back, &error) == 0);
	return 0;
}
