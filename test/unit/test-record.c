/* An identity's record (ab-record.c): what memcached's commands did to
   items, done to entries; a codec that takes only what it wrote. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ab-record.h"

#define NOW ((time_t)1800000000)

static void test_entries_as_items(void **state)
{
	struct ab_record r = { .n = 0 };

	(void)state;
	/* an increment creates with the delta, then adds */
	assert_int_equal(ab_record_incr(&r, 1, 0, 7, 1, 60, NOW), 1);
	assert_int_equal(ab_record_incr(&r, 1, 0, 7, 2, 60, NOW), 3);
	/* another bucket, another second identity: other entries */
	assert_int_equal(ab_record_incr(&r, 1, 0, 8, 1, 60, NOW), 1);
	assert_int_equal(ab_record_incr(&r, 1, 42, 7, 1, 60, NOW), 1);
	assert_int_equal(r.n, 3);
	/* a decrement stops at 0 and creates nothing */
	assert_true(ab_record_decr(&r, 1, 0, 7, 5));
	assert_int_equal(ab_record_find(&r, 1, 0, 7)->value, 0);
	assert_false(ab_record_decr(&r, 2, 0, 0, 1));
	assert_int_equal(r.n, 3);
	/* add only when missing; delete says whether it was there */
	assert_true(ab_record_add(&r, 3, 9, 0, 100, 60, NOW));
	assert_false(ab_record_add(&r, 3, 9, 0, 200, 60, NOW));
	assert_int_equal(ab_record_find(&r, 3, 9, 0)->value, 100);
	assert_true(ab_record_delete(&r, 3, 9, 0));
	assert_false(ab_record_delete(&r, 3, 9, 0));
	ab_record_set(&r, 4, 0, 0, 5, 10, NOW);
	ab_record_set(&r, 4, 0, 0, 6, 20, NOW);
	assert_int_equal(ab_record_find(&r, 4, 0, 0)->value, 6);
	assert_int_equal(ab_record_find(&r, 4, 0, 0)->expires, NOW + 20);
	ab_record_delete_slot(&r, 1);
	assert_int_equal(r.n, 1);
}

static void test_codec_round_trip_and_expiry(void **state)
{
	struct ab_record r = { .n = 0 }, back;
	unsigned char buf[AB_RECORD_BYTES_MAX];
	const char *error;
	size_t len;

	(void)state;
	ab_record_set(&r, 5, 0xdeadbeef, 0xfffffffe, UINT64_MAX, 100, NOW);
	ab_record_set(&r, 6, 1, 2, 3, 10, NOW);
	len = ab_record_encode(&r, buf);
	assert_int_equal(len, AB_RECORD_HEADER + 2 * AB_RECORD_ENTRY_LEN);
	assert_int_equal(ab_record_decode(buf, len, NOW, &back, &error), 0);
	assert_int_equal(back.n, 2);
	assert_true(ab_record_find(&back, 5, 0xdeadbeef, 0xfffffffe)->value == UINT64_MAX);
	/* what expired is left out; the item lives until its last entry */
	assert_int_equal(ab_record_decode(buf, len, NOW + 10, &back, &error), 0);
	assert_int_equal(back.n, 1);
	assert_int_equal(ab_record_ttl(&r, NOW), 100);
	assert_int_equal(ab_record_ttl(&back, NOW + 200), 1);
	/* nothing is an empty record */
	assert_int_equal(ab_record_decode(buf, 0, NOW, &back, &error), 0);
	assert_int_equal(back.n, 0);
}

static void test_bytes_refused(void **state)
{
	struct ab_record r = { .n = 0 }, back;
	unsigned char buf[AB_RECORD_BYTES_MAX + 1];
	const char *error;
	size_t len;

	(void)state;
	ab_record_set(&r, 5, 0, 0, 1, 100, NOW);
	ab_record_set(&r, 6, 0, 0, 1, 100, NOW);
	len = ab_record_encode(&r, buf);
	/* too short, too long, another magic or version, a count that lies */
	assert_int_equal(ab_record_decode(buf, 3, NOW, &back, &error), -1);
	assert_int_equal(ab_record_decode(buf, len - 1, NOW, &back, &error), -1);
	assert_int_equal(ab_record_decode(buf, len + 1, NOW, &back, &error), -1);
	assert_int_equal(back.n, 0);
	buf[0] = 'X';
	assert_int_equal(ab_record_decode(buf, len, NOW, &back, &error), -1);
	buf[0] = 'A';
	buf[2] = 9;
	assert_int_equal(ab_record_decode(buf, len, NOW, &back, &error), -1);
	buf[2] = 1;
	buf[3] = 200;
	assert_int_equal(ab_record_decode(buf, len, NOW, &back, &error), -1);
	/* one entry twice */
	buf[3] = 2;
	memcpy(buf + AB_RECORD_HEADER + AB_RECORD_ENTRY_LEN, buf + AB_RECORD_HEADER,
	       AB_RECORD_ENTRY_LEN);
	assert_int_equal(ab_record_decode(buf, len, NOW, &back, &error), -1);
	assert_int_equal(back.n, 0);
}

static void test_full_record_drops_soonest(void **state)
{
	struct ab_record r = { .n = 0 };
	unsigned int i;

	(void)state;
	for (i = 0; i < AB_RECORD_ENTRIES_MAX; i++)
		ab_record_set(&r, 1, i, 0, i, 100 + i, NOW);
	ab_record_set(&r, 2, 0, 0, 1, 1000, NOW);
	assert_int_equal(r.n, AB_RECORD_ENTRIES_MAX);
	assert_int_equal(r.dropped, 1);
	assert_null(ab_record_find(&r, 1, 0, 0));
	assert_non_null(ab_record_find(&r, 2, 0, 0));
}

static void test_merge_takes_what_refuses(void **state)
{
	struct ab_record a = { .n = 0 }, b = { .n = 0 };
	bool keep[8] = { [3] = true };

	(void)state;
	ab_record_set(&a, 3, 0, 0, 100, 60, NOW);	/* a block, kept dual */
	ab_record_set(&a, 1, 0, 0, 5, 60, NOW);		/* a count */
	ab_record_set(&b, 3, 0, 0, 200, 90, NOW);
	ab_record_set(&b, 3, 7, 0, 1, 60, NOW);
	ab_record_set(&b, 1, 0, 0, 9, 60, NOW);
	ab_record_merge(&a, &b, keep, 8);
	assert_int_equal(ab_record_find(&a, 3, 0, 0)->value, 200);
	assert_int_equal(ab_record_find(&a, 3, 0, 0)->expires, NOW + 90);
	assert_non_null(ab_record_find(&a, 3, 7, 0));
	/* counts are the first copy's */
	assert_int_equal(ab_record_find(&a, 1, 0, 0)->value, 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_entries_as_items),
		cmocka_unit_test(test_codec_round_trip_and_expiry),
		cmocka_unit_test(test_bytes_refused),
		cmocka_unit_test(test_full_record_drops_soonest),
		cmocka_unit_test(test_merge_takes_what_refuses),
	};

	return cmocka_run_group_tests_name("record", tests, NULL, NULL);
}
