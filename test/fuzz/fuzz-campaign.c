/* Feeds raw bytes to ab-campaign.c's decoder, as memcached (or anything
   answering on its port) may hand back for the site's campaign state:
   what decodes must encode and decode back the same; what does not is an
   error that leaves the state auto and idle, never forced on. The same
   bytes as numbers go through the baseline's codec and arithmetic. */
#include <stdint.h>
#include <string.h>

#include "ab-campaign.h"
#include "ab-config.h"
#include "fuzz-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW ((time_t)1800000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ab_config cfg;
	static int configured;
	struct ab_campaign c, back;
	struct ab_campaign_baseline b, before;
	char out[AB_CAMPAIGN_BYTES_MAX];
	const char *error = NULL;
	uint64_t n = 0, t;
	size_t len, i;

	if (!configured) {
		ab_config_defaults(&cfg);
		configured = 1;
	}
	if (ab_campaign_decode(data, size, &c, &error) < 0) {
		CHECK(error != NULL && error[0] != '\0');
		CHECK(c.mode == AB_CAMPAIGN_AUTO && c.started == 0);
		CHECK(!ab_campaign_on(&c, &cfg, NOW));
	} else {
		len = ab_campaign_encode(&c, out);
		CHECK(len > 0 && len < sizeof(out));
		CHECK(ab_campaign_decode(out, len, &back, &error) == 0);
		CHECK(back.mode == c.mode && back.started == c.started &&
		      back.last_high == c.last_high && back.ended == c.ended &&
		      back.cause == c.cause && back.rate == c.rate &&
		      back.threshold == c.threshold);
		ab_campaign_apply(&c, ab_campaign_step(&c, &cfg, NOW, 50, 30),
				  AB_CAMPAIGN_BY_RATE, NOW, 50, 30);
		len = ab_campaign_encode(&c, out);
		CHECK(ab_campaign_decode(out, len, &back, &error) == 0);
	}
	/* the bytes as the numbers memcached keeps: baselines, counts */
	for (i = 0; i < size && i < 8; i++)
		n = (n << 8) | data[i];
	ab_campaign_baseline_unpack(n, &b);
	ab_campaign_baseline_unpack(~n, &before);
	t = ab_campaign_threshold(&cfg, &b, &before, (n & 1) != 0, n >> 3);
	CHECK(t >= cfg.campaign_floor);
	ab_campaign_learn(&cfg, &b, n);
	CHECK(b.samples <= 255);
	(void)ab_campaign_rate(&cfg, NOW, n, ~n);
	return 0;
}
