/* Campaign mode's arithmetic (ab-campaign.c): the state item's codec, the
   sliding rate, the threshold and its baseline, the steps a node takes,
   and days of a site's normal traffic that never turn it on while a spray
   does. The tracker's I/O around it: test-store.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ab-campaign.h"
#include "ab-config.h"

#define NOW ((time_t)1800000000)

static void config(struct ab_config *cfg)
{
	ab_config_defaults(cfg);
}

static void test_codec_round_trip(void **state)
{
	struct ab_campaign c = {
		.mode = AB_CAMPAIGN_FORCED_OFF, .started = NOW - 60,
		.last_high = NOW, .ended = 0, .cause = AB_CAMPAIGN_BY_PASSWORD,
		.rate = 11, .threshold = 10,
	}, back;
	char buf[AB_CAMPAIGN_BYTES_MAX];
	const char *error;
	size_t len;

	(void)state;
	len = ab_campaign_encode(&c, buf);
	assert_true(len > 0 && len < sizeof(buf));
	assert_int_equal(ab_campaign_decode(buf, len, &back, &error), 0);
	assert_int_equal(back.mode, c.mode);
	assert_int_equal(back.started, c.started);
	assert_int_equal(back.last_high, c.last_high);
	assert_int_equal(back.ended, c.ended);
	assert_int_equal(back.cause, c.cause);
	assert_int_equal(back.rate, c.rate);
	assert_int_equal(back.threshold, c.threshold);
}

/* What a lying or foreign memcached item holds: an error, and the state
   left auto and idle (never forced on, never a campaign). */
static void test_codec_refuses_junk(void **state)
{
	static const char *const junk[] = {
		"", "c1", "c2 a 0 0 0 r 0 0", "c1 x 0 0 0 r 0 0",
		"c1 a 0 0 0 q 0 0", "c1 a 0 0 0 r 0", "c1 a 0 0 0 r 0 0 ",
		"c1 a 0 0 0 r 0 0 9", "c1 a -1 0 0 r 0 0", "c1 a  0 0 0 r 0 0",
		"c1 n 99999999999999999999 0 0 r 0 0",
		"c1 n 18446744073709551615 0 0 r 0 0",
		"c1 a 0 0 0 r 0 +5", "C1 n 0 0 0 r 0 0",
		"c1 n 1 2 3 r 4 5\n",
	};
	struct ab_campaign c;
	const char *error;
	char nul[] = "c1 n 0 0 0 r 0 0";
	char big[300];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		memset(&c, 0x55, sizeof(c));
		assert_int_equal(ab_campaign_decode(junk[i], strlen(junk[i]), &c,
						    &error), -1);
		assert_int_equal(c.mode, AB_CAMPAIGN_AUTO);
		assert_int_equal(c.started, 0);
	}
	nul[5] = '\0';
	assert_int_equal(ab_campaign_decode(nul, sizeof(nul) - 1, &c, &error), -1);
	memset(big, '1', sizeof(big));
	memcpy(big, "c1 n ", 5);
	assert_int_equal(ab_campaign_decode(big, sizeof(big), &c, &error), -1);
	assert_int_equal(c.mode, AB_CAMPAIGN_AUTO);
}

static void test_on_forced_and_cooldown(void **state)
{
	struct ab_config cfg;
	struct ab_campaign c = { .mode = AB_CAMPAIGN_AUTO };

	(void)state;
	config(&cfg);
	assert_false(ab_campaign_on(&c, &cfg, NOW));
	c.mode = AB_CAMPAIGN_FORCED_ON;
	assert_true(ab_campaign_on(&c, &cfg, NOW));
	/* forced off wins over a campaign the detector sees */
	c.mode = AB_CAMPAIGN_FORCED_OFF;
	c.started = c.last_high = NOW;
	assert_false(ab_campaign_on(&c, &cfg, NOW));
	c.mode = AB_CAMPAIGN_AUTO;
	assert_true(ab_campaign_on(&c, &cfg, NOW + (time_t)cfg.campaign_cooldown_s - 1));
	assert_false(ab_campaign_on(&c, &cfg, NOW + (time_t)cfg.campaign_cooldown_s));
	c.ended = NOW + 5;
	assert_false(ab_campaign_on(&c, &cfg, NOW + 1));
	ab_config_free(&cfg);
}

static void test_rate_slides(void **state)
{
	struct ab_config cfg;
	time_t start = (NOW / 600) * 600;

	(void)state;
	config(&cfg);
	/* at a bucket's start the one before counts in full, at its middle
	   half, near its end almost nothing */
	assert_int_equal(ab_campaign_rate(&cfg, start, 0, 100), 100);
	assert_int_equal(ab_campaign_rate(&cfg, start + 300, 10, 100), 60);
	assert_int_equal(ab_campaign_rate(&cfg, start + 599, 10, 100), 10);
	assert_int_equal(ab_campaign_bucket(&cfg, start + 599),
			 ab_campaign_bucket(&cfg, start));
	assert_int_equal(ab_campaign_bucket(&cfg, start + 600),
			 ab_campaign_bucket(&cfg, start) + 1);
	ab_config_free(&cfg);
}

static void test_threshold_and_slots(void **state)
{
	struct ab_config cfg;
	struct ab_campaign_baseline none = { 0, 0 }, seven = { 7000, 6 },
		ten = { 10000, 6 }, young = { 90000, 5 }, huge = { UINT64_MAX >> 8, 255 };
	uint64_t b;

	(void)state;
	config(&cfg);
	/* nothing learned anywhere: no rate turns it on */
	assert_true(ab_campaign_threshold(&cfg, &none, NULL, false, 0) == AB_CAMPAIGN_NEVER);
	/* learned somewhere, as quiet: the floor */
	assert_int_equal(ab_campaign_threshold(&cfg, &none, NULL, true, 0), 30);
	/* the floor, until factor x baseline passes it */
	assert_int_equal(ab_campaign_threshold(&cfg, &seven, NULL, true, 0), 30);
	assert_int_equal(ab_campaign_threshold(&cfg, &ten, NULL, true, 0), 40);
	/* the bucket before in another hour: the larger of the two */
	assert_int_equal(ab_campaign_threshold(&cfg, &seven, &ten, true, 0), 40);
	assert_int_equal(ab_campaign_threshold(&cfg, &ten, &seven, true, 0), 40);
	/* an hour not learned (5 of its 6 buckets a day): the site's largest
	   baseline, factor twice */
	assert_int_equal(ab_campaign_threshold(&cfg, &young, NULL, true, 20000), 320);
	assert_int_equal(ab_campaign_threshold(&cfg, &none, NULL, true, 1000), 30);
	/* no overflow from a huge stored value */
	assert_true(ab_campaign_threshold(&cfg, &huge, NULL, true, 0) > 30);
	assert_true(ab_campaign_threshold(&cfg, &none, NULL, true, UINT64_MAX) > 30);
	/* 24 slots a day, 6 buckets of 10 minutes each */
	b = ab_campaign_bucket(&cfg, (NOW / 86400) * 86400);
	assert_int_equal(ab_campaign_slot(&cfg, b), 0);
	assert_int_equal(ab_campaign_slot(&cfg, b + 5), 0);
	assert_int_equal(ab_campaign_slot(&cfg, b + 6), 1);
	assert_int_equal(ab_campaign_slot(&cfg, b + 143), 23);
	assert_int_equal(ab_campaign_slot(&cfg, b + 144), 0);
	ab_config_free(&cfg);
}

static void test_learning_is_slow(void **state)
{
	struct ab_config cfg;
	struct ab_campaign_baseline b = { 0, 0 }, back;
	unsigned int i;

	(void)state;
	config(&cfg);
	/* a plain mean of a day's first buckets: learned after 6 */
	for (i = 0; i < 6; i++) {
		assert_false(ab_campaign_learned(&cfg, &b));
		ab_campaign_learn(&cfg, &b, i < 5 ? 12 : 0);
	}
	assert_true(ab_campaign_learned(&cfg, &b));
	assert_int_equal(b.milli, 10000);
	ab_campaign_baseline_unpack(ab_campaign_baseline_pack(&b), &back);
	assert_int_equal(back.milli, b.milli);
	assert_int_equal(back.samples, b.samples);
	/* then slowly: 1/42 of the way (7 days of 6 buckets) per bucket; a
	   run of them converges */
	for (i = 0; i < 36; i++)
		ab_campaign_learn(&cfg, &b, 10);
	ab_campaign_learn(&cfg, &b, 1000);
	assert_true(b.milli > 10000 + 23000 && b.milli < 10000 + 24000);
	for (i = 0; i < 2000; i++)
		ab_campaign_learn(&cfg, &b, 5);
	assert_true(b.milli >= 5000 && b.milli <= 5021);
	assert_int_equal(b.samples, 255);
	ab_config_free(&cfg);
}

static void test_steps(void **state)
{
	struct ab_config cfg;
	struct ab_campaign c = { .mode = AB_CAMPAIGN_AUTO };
	time_t t = NOW;

	(void)state;
	config(&cfg);
	assert_int_equal(ab_campaign_step(&c, &cfg, t, 29, 30), AB_CAMPAIGN_NOTHING);
	assert_int_equal(ab_campaign_step(&c, &cfg, t, 30, 30), AB_CAMPAIGN_START);
	ab_campaign_apply(&c, AB_CAMPAIGN_START, AB_CAMPAIGN_BY_RATE, t, 30, 30);
	assert_true(ab_campaign_on(&c, &cfg, t));
	/* at the threshold again: said at most every interval / 8 */
	assert_int_equal(ab_campaign_step(&c, &cfg, t + 10, 50, 30), AB_CAMPAIGN_NOTHING);
	assert_int_equal(ab_campaign_step(&c, &cfg, t + 75, 50, 30), AB_CAMPAIGN_REFRESH);
	ab_campaign_apply(&c, AB_CAMPAIGN_REFRESH, AB_CAMPAIGN_BY_RATE, t + 75, 50, 30);
	assert_int_equal(c.started, t);
	/* under it: on until the cooldown after the last time at it */
	t += 75;
	assert_int_equal(ab_campaign_step(&c, &cfg, t + 3599, 0, 30), AB_CAMPAIGN_NOTHING);
	assert_true(ab_campaign_on(&c, &cfg, t + 3599));
	assert_int_equal(ab_campaign_step(&c, &cfg, t + 3600, 0, 30), AB_CAMPAIGN_END);
	ab_campaign_apply(&c, AB_CAMPAIGN_END, AB_CAMPAIGN_BY_RATE, t + 3600, 0, 30);
	assert_false(ab_campaign_on(&c, &cfg, t + 3600));
	/* ended once: nothing more to say */
	assert_int_equal(ab_campaign_step(&c, &cfg, t + 4000, 0, 30), AB_CAMPAIGN_NOTHING);
	/* what keeps it on: the threshold; for a campaign PAM saw, the
	   site's normal plus campaign_password_accounts when lower (a spray
	   of one password, too small for the floor, that it now refuses) */
	assert_int_equal(ab_campaign_keep(&c, &cfg, 30, 2000), 30);
	c.cause = AB_CAMPAIGN_BY_PASSWORD;
	assert_int_equal(ab_campaign_keep(&c, &cfg, 30, 2000), 12);
	assert_int_equal(ab_campaign_keep(&c, &cfg, 30, 0), 10);
	assert_int_equal(ab_campaign_keep(&c, &cfg, 30, 25000), 30);
	assert_int_equal(ab_campaign_keep(&c, &cfg, AB_CAMPAIGN_NEVER, 0), 10);
	cfg.campaign_password_accounts = 0;
	assert_int_equal(ab_campaign_keep(&c, &cfg, 30, 0), 30);
	c.cause = AB_CAMPAIGN_BY_RATE;
	/* a forced mode: the detector does nothing */
	c.mode = AB_CAMPAIGN_FORCED_OFF;
	assert_int_equal(ab_campaign_step(&c, &cfg, t + 5000, 500, 30), AB_CAMPAIGN_NOTHING);
	c.mode = AB_CAMPAIGN_FORCED_ON;
	assert_int_equal(ab_campaign_step(&c, &cfg, t + 5000, 500, 30), AB_CAMPAIGN_NOTHING);
	ab_config_free(&cfg);
}

/* --- a site, simulated ---------------------------------------------------

   What the tracker does around the arithmetic, over days of 10-minute
   buckets: every node's reads see the rate at a few moments of each
   bucket, the first read of a bucket learns the one before (unless a
   campaign is on or it was at the threshold). Failures from unfamiliar
   origins follow the hour of the day: a night rate, and a morning peak
   five times it, with noise; a spray adds its own on top. */

struct site {
	struct ab_config cfg;
	struct ab_campaign state;
	struct ab_campaign_baseline baseline[AB_CAMPAIGN_SLOTS];
	uint64_t peak;
	bool peak_known;
	uint64_t rng;
	unsigned int starts;
	time_t first_start;
};

static uint64_t site_random(struct site *s, uint64_t n)
{
	s->rng = s->rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return (s->rng >> 33) % n;
}

/* Normal failures from unfamiliar origins in a bucket at hour h: night
   night_rate, 7-10 o'clock five times it; +-50 % noise. */
static uint64_t normal_failures(struct site *s, unsigned int h,
				uint64_t night_rate)
{
	uint64_t mean = h >= 7 && h < 10 ? 5 * night_rate : night_rate;

	return mean / 2 + site_random(s, mean + 1);
}

static void site_bucket(struct site *s, time_t start, uint64_t count,
			uint64_t before)
{
	const struct ab_config *cfg = &s->cfg;
	uint64_t b = ab_campaign_bucket(cfg, start);
	unsigned int slot = ab_campaign_slot(cfg, b);
	unsigned int fold_slot = ab_campaign_slot(cfg, b - 1);
	unsigned int k;

	/* the first read of the bucket learns the one before */
	if (!ab_campaign_on(&s->state, cfg, start) &&
	    before < ab_campaign_threshold(cfg, &s->baseline[fold_slot], NULL,
					   s->peak_known, s->peak)) {
		ab_campaign_learn(cfg, &s->baseline[fold_slot], before);
		if (ab_campaign_learned(cfg, &s->baseline[fold_slot]) &&
		    (s->baseline[fold_slot].milli > s->peak || !s->peak_known)) {
			s->peak = s->baseline[fold_slot].milli;
			s->peak_known = true;
		}
	}
	/* reads at ten moments of the bucket; the count grows evenly */
	for (k = 0; k < 10; k++) {
		time_t t = start + (time_t)(k * cfg->campaign_interval_s / 10);
		uint64_t rate = ab_campaign_rate(cfg, t, count * (k + 1) / 10, before);
		uint64_t threshold = ab_campaign_threshold(cfg, &s->baseline[slot],
							   &s->baseline[fold_slot],
							   s->peak_known, s->peak);
		enum ab_campaign_step step = ab_campaign_step(&s->state, cfg, t,
							      rate, threshold);

		if (step == AB_CAMPAIGN_START) {
			if (s->starts++ == 0)
				s->first_start = t;
		}
		ab_campaign_apply(&s->state, step, AB_CAMPAIGN_BY_RATE, t, rate,
				  threshold);
	}
}

/* days of normal traffic; spray_per_bucket from spray_from on (0: none).
   Returns the spray's failures before it was seen. */
static uint64_t site_run(struct site *s, time_t day0, unsigned int days,
			 uint64_t night_rate, time_t spray_from,
			 uint64_t spray_per_bucket)
{
	const struct ab_config *cfg = &s->cfg;
	uint64_t before = 0, sprayed_unseen = 0;
	time_t t;

	for (t = day0; t < day0 + (time_t)days * 86400; t += cfg->campaign_interval_s) {
		unsigned int h = (unsigned int)((t % 86400) / 3600);
		uint64_t count = normal_failures(s, h, night_rate);

		if (spray_per_bucket > 0 && t >= spray_from) {
			count += spray_per_bucket;
			if (s->starts == 0)
				sprayed_unseen += spray_per_bucket;
		}
		site_bucket(s, t, count, before);
		before = count;
	}
	return sprayed_unseen;
}

static void site_init(struct site *s, uint64_t seed)
{
	memset(s, 0, sizeof(*s));
	config(&s->cfg);
	s->rng = seed;
}

/* A small site (2 failures from unfamiliar origins per 10 minutes at
   night, 10 in the morning peak) and a large one (20 and 100): two
   weeks from a fresh install, the first day included, never on. */
static void test_normal_days_never_turn_it_on(void **state)
{
	static const uint64_t nights[] = { 2, 20, 60 };
	struct site s;
	time_t day0 = (NOW / 86400) * 86400;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(nights) / sizeof(nights[0]); i++) {
		site_init(&s, 7 + i);
		(void)site_run(&s, day0, 14, nights[i], 0, 0);
		print_message("  night %llu, morning peak %llu per 10 minutes: "
			      "14 days, %u starts; learned peak %llu.%llu\n",
			      (unsigned long long)nights[i],
			      (unsigned long long)nights[i] * 5, s.starts,
			      (unsigned long long)(s.peak / 1000),
			      (unsigned long long)(s.peak % 1000 / 100));
		assert_int_equal(s.starts, 0);
		ab_config_free(&s.cfg);
	}
}

/* The spray: 3 guesses a day at each of 5,000 accounts, ~104 per
   10 minutes, on a small site after a week of learning: seen within its
   first bucket, long before a tenth of its day (1,500 guesses). */
static void test_spray_turns_it_on(void **state)
{
	struct site s;
	time_t day0 = (NOW / 86400) * 86400;
	time_t spray_from = day0 + 7 * 86400 + 2 * 3600;
	uint64_t unseen;

	(void)state;
	site_init(&s, 42);
	(void)site_run(&s, day0, 7, 2, 0, 0);
	assert_int_equal(s.starts, 0);
	unseen = site_run(&s, day0 + 7 * 86400, 1, 2, spray_from, 104);
	print_message("  spray of 104 per 10 minutes on a site of 2 at night: on "
		      "%lld s after it began, %llu of its guesses before\n",
		      (long long)(s.first_start - spray_from),
		      (unsigned long long)unseen);
	assert_int_equal(s.starts, 1);
	assert_true(unseen < 1500);
	/* and on a large site's night (20; the morning 100): ~80 more per 10
	   minutes than usual is seen at night */
	ab_config_free(&s.cfg);
	site_init(&s, 43);
	(void)site_run(&s, day0, 7, 20, 0, 0);
	assert_int_equal(s.starts, 0);
	unseen = site_run(&s, day0 + 7 * 86400, 1, 20, spray_from, 104);
	print_message("  the same spray on a site of 20 at night: %u start(s), "
		      "%llu guesses before\n", s.starts, (unsigned long long)unseen);
	/* in the morning peak 100 + 104 is under 4 x 100: it ends there
	   (campaign_cooldown after) and is seen again after the peak */
	assert_int_equal(s.starts, 2);
	assert_true(unseen < 1500);
	ab_config_free(&s.cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec_round_trip),
		cmocka_unit_test(test_codec_refuses_junk),
		cmocka_unit_test(test_on_forced_and_cooldown),
		cmocka_unit_test(test_rate_slides),
		cmocka_unit_test(test_threshold_and_slots),
		cmocka_unit_test(test_learning_is_slow),
		cmocka_unit_test(test_steps),
		cmocka_unit_test(test_normal_days_never_turn_it_on),
		cmocka_unit_test(test_spray_turns_it_on),
	};

	return cmocka_run_group_tests_name("campaign", tests, NULL, NULL);
}
