/* Campaign mode's arithmetic and its state item (ab-campaign.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ab-campaign.h"
#include "ab-config.h"
#include "ab-error.h"

static const char mode_letters[] = { 'a', 'n', 'f' };
static const char cause_letters[] = { 'r', 'p' };

size_t ab_campaign_encode(const struct ab_campaign *c,
			  char buf[AB_CAMPAIGN_BYTES_MAX])
{
	int n = snprintf(buf, AB_CAMPAIGN_BYTES_MAX,
			 "c1 %c %lld %lld %lld %c %" PRIu64 " %" PRIu64,
			 mode_letters[c->mode], (long long)c->started,
			 (long long)c->last_high, (long long)c->ended,
			 cause_letters[c->cause], c->rate, c->threshold);

	return n < 0 ? 0 : (size_t)n;
}

static int letter_index(char c, const char *letters, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (letters[i] == c)
			return (int)i;
	}
	return -1;
}

/* One space, then a decimal number that fits. */
static bool next_number(const char **p, uint64_t *n_r)
{
	char *end;

	if (**p != ' ' || (*p)[1] < '0' || (*p)[1] > '9')
		return false;
	*n_r = strtoull(*p + 1, &end, 10);
	if (end - (*p + 1) > 19)
		return false;
	*p = end;
	return true;
}

static bool next_letter(const char **p, const char *letters, size_t n,
			int *index_r)
{
	if (**p != ' ' || (*p)[1] == '\0')
		return false;
	*index_r = letter_index((*p)[1], letters, n);
	*p += 2;
	return *index_r >= 0;
}

int ab_campaign_decode(const void *bytes, size_t len, struct ab_campaign *c_r,
		       const char **error_r)
{
	char text[AB_CAMPAIGN_BYTES_MAX];
	const char *p = text;
	uint64_t started, last_high, ended;
	int mode, cause;

	memset(c_r, 0, sizeof(*c_r));
	if (len >= sizeof(text) || memchr(bytes, '\0', len) != NULL)
		return ab_error(error_r, "campaign state: not its format");
	memcpy(text, bytes, len);
	text[len] = '\0';
	if (strncmp(p, "c1", 2) != 0)
		return ab_error(error_r, "campaign state: not its format");
	p += 2;
	if (!next_letter(&p, mode_letters, sizeof(mode_letters), &mode) ||
	    !next_number(&p, &started) || !next_number(&p, &last_high) ||
	    !next_number(&p, &ended) ||
	    !next_letter(&p, cause_letters, sizeof(cause_letters), &cause) ||
	    !next_number(&p, &c_r->rate) || !next_number(&p, &c_r->threshold) ||
	    *p != '\0' || started > INT64_MAX || last_high > INT64_MAX ||
	    ended > INT64_MAX) {
		memset(c_r, 0, sizeof(*c_r));
		return ab_error(error_r, "campaign state: not its format");
	}
	c_r->mode = (enum ab_campaign_mode)mode;
	c_r->cause = (enum ab_campaign_cause)cause;
	c_r->started = (time_t)started;
	c_r->last_high = (time_t)last_high;
	c_r->ended = (time_t)ended;
	return 0;
}

/* The detector's campaign, on until campaign_cooldown after the rate was
   last at the threshold. */
static bool detected(const struct ab_campaign *c, const struct ab_config *cfg,
		     time_t now)
{
	return c->started != 0 && c->ended == 0 &&
		now < c->last_high + (time_t)cfg->campaign_cooldown_s;
}

bool ab_campaign_on(const struct ab_campaign *c, const struct ab_config *cfg,
		    time_t now)
{
	switch (c->mode) {
	case AB_CAMPAIGN_FORCED_ON:
		return true;
	case AB_CAMPAIGN_FORCED_OFF:
		return false;
	case AB_CAMPAIGN_AUTO:
		break;
	}
	return detected(c, cfg, now);
}

uint64_t ab_campaign_bucket(const struct ab_config *cfg, time_t now)
{
	return (uint64_t)now / cfg->campaign_interval_s;
}

unsigned int ab_campaign_slot(const struct ab_config *cfg, uint64_t bucket)
{
	uint64_t at = bucket * cfg->campaign_interval_s % cfg->campaign_day_s;

	return (unsigned int)(at / (cfg->campaign_day_s / AB_CAMPAIGN_SLOTS));
}

uint64_t ab_campaign_rate(const struct ab_config *cfg, time_t now,
			  uint64_t current, uint64_t before)
{
	uint64_t len = cfg->campaign_interval_s;
	uint64_t into = (uint64_t)now % len;

	/* the bucket before is still (len - into)/len inside the interval */
	return current + (before * (len - into) + len / 2) / len;
}

/* Buckets of one slot in a day. */
static uint64_t slot_buckets(const struct ab_config *cfg)
{
	uint64_t n = cfg->campaign_day_s / AB_CAMPAIGN_SLOTS / cfg->campaign_interval_s;

	return n > 0 ? n : 1;
}

uint64_t ab_campaign_baseline_pack(const struct ab_campaign_baseline *b)
{
	uint64_t milli = b->milli > (UINT64_MAX >> 8) ? (UINT64_MAX >> 8) : b->milli;

	return (milli << 8) | (b->samples > 255 ? 255 : b->samples);
}

void ab_campaign_baseline_unpack(uint64_t value,
				 struct ab_campaign_baseline *b_r)
{
	b_r->milli = value >> 8;
	b_r->samples = (unsigned int)(value & 255);
}

bool ab_campaign_learned(const struct ab_config *cfg,
			 const struct ab_campaign_baseline *b)
{
	uint64_t day = slot_buckets(cfg);

	return b->samples >= (day < 255 ? day : 255);
}

void ab_campaign_learn(const struct ab_config *cfg,
		       struct ab_campaign_baseline *b, uint64_t count)
{
	uint64_t n = (uint64_t)cfg->campaign_learn_days * slot_buckets(cfg);
	uint64_t sample = count > UINT64_MAX / 1000 / 2 ? UINT64_MAX / 1000 / 2 :
		count * 1000;

	/* a plain mean of the first samples, then a slow average */
	if ((uint64_t)b->samples + 1 < n)
		n = (uint64_t)b->samples + 1;
	if (sample >= b->milli)
		b->milli += (sample - b->milli + n / 2) / n;
	else
		b->milli -= (b->milli - sample + n / 2) / n;
	if (b->samples < 255)
		b->samples++;
}

static uint64_t slot_threshold(const struct ab_config *cfg,
			       const struct ab_campaign_baseline *b,
			       bool peak_known, uint64_t peak_milli)
{
	uint64_t base;

	if (ab_campaign_learned(cfg, b))
		base = b->milli;
	else if (peak_known)
		base = peak_milli > UINT64_MAX / 1000 / 1000 / cfg->campaign_factor ?
			UINT64_MAX / 1000 / 1000 : peak_milli * cfg->campaign_factor;
	else
		return AB_CAMPAIGN_NEVER;
	if (base > UINT64_MAX / 1000 / 1000)
		base = UINT64_MAX / 1000 / 1000;
	return (base * cfg->campaign_factor + 999) / 1000;
}

uint64_t ab_campaign_threshold(const struct ab_config *cfg,
			       const struct ab_campaign_baseline *slot,
			       const struct ab_campaign_baseline *before,
			       bool peak_known, uint64_t peak_milli)
{
	uint64_t t = slot_threshold(cfg, slot, peak_known, peak_milli);

	if (before != NULL) {
		uint64_t tb = slot_threshold(cfg, before, peak_known, peak_milli);

		if (tb > t)
			t = tb;
	}
	return t > cfg->campaign_floor ? t : cfg->campaign_floor;
}

uint64_t ab_campaign_keep(const struct ab_campaign *c,
			  const struct ab_config *cfg, uint64_t threshold,
			  uint64_t normal_milli)
{
	uint64_t keep;

	if (c->cause != AB_CAMPAIGN_BY_PASSWORD || cfg->campaign_password_accounts == 0)
		return threshold;
	keep = (normal_milli > UINT64_MAX / 2 ? UINT64_MAX / 2 : normal_milli + 999) / 1000 +
		cfg->campaign_password_accounts;
	return keep < threshold ? keep : threshold;
}

enum ab_campaign_step ab_campaign_step(const struct ab_campaign *c,
				       const struct ab_config *cfg, time_t now,
				       uint64_t rate, uint64_t threshold)
{
	unsigned int every = cfg->campaign_interval_s < cfg->campaign_cooldown_s ?
		cfg->campaign_interval_s : cfg->campaign_cooldown_s;

	if (c->mode != AB_CAMPAIGN_AUTO)
		return AB_CAMPAIGN_NOTHING;
	if (detected(c, cfg, now)) {
		/* say it is still at the threshold, a few times per
		   interval: not at every login */
		every /= 8;
		if (rate >= threshold &&
		    now - c->last_high >= (time_t)(every > 0 ? every : 1))
			return AB_CAMPAIGN_REFRESH;
		return AB_CAMPAIGN_NOTHING;
	}
	if (rate >= threshold)
		return AB_CAMPAIGN_START;
	if (c->started != 0 && c->ended == 0)
		return AB_CAMPAIGN_END;
	return AB_CAMPAIGN_NOTHING;
}

void ab_campaign_apply(struct ab_campaign *c, enum ab_campaign_step step,
		       enum ab_campaign_cause cause, time_t now,
		       uint64_t rate, uint64_t threshold)
{
	switch (step) {
	case AB_CAMPAIGN_NOTHING:
		break;
	case AB_CAMPAIGN_START:
		c->started = c->last_high = now;
		c->ended = 0;
		c->cause = cause;
		c->rate = rate;
		c->threshold = threshold;
		break;
	case AB_CAMPAIGN_REFRESH:
		c->last_high = now;
		break;
	case AB_CAMPAIGN_END:
		c->ended = now;
		break;
	}
}

const char *ab_campaign_mode_name(enum ab_campaign_mode mode)
{
	switch (mode) {
	case AB_CAMPAIGN_AUTO:
		return "auto";
	case AB_CAMPAIGN_FORCED_ON:
		return "on";
	case AB_CAMPAIGN_FORCED_OFF:
		return "off";
	}
	return "auto";
}
