/* A process's short memory of refusals: an address or subnet blocked, an
   account locked for an origin, remembered for verdict_cache seconds so
   that a flood of attempts already refused costs memcached nothing. Only
   refusals are remembered, never for longer than they last, so the memory
   can refuse late what memcached lifted (`authbrake unblock` reaches a
   process within verdict_cache) but never lets through what memcached
   would refuse. */
#ifndef AB_VERDICT_H
#define AB_VERDICT_H

#include <time.h>

#include "ab-engine.h"

struct ab_verdicts;

/* ttl_s 0: remembers nothing (every call is a no-op). */
int ab_verdicts_init(unsigned int ttl_s, struct ab_verdicts **verdicts_r);
void ab_verdicts_deinit(struct ab_verdicts **verdicts);

/* A refusal remembered for this attempt (trusted: the attempt is exempt
   from address rules, so only its account's refusal applies)? Fills
   decision_r with it, retry_after counted from now. */
bool ab_verdicts_find(struct ab_verdicts *verdicts,
		      const struct ab_attempt *attempt, bool trusted,
		      time_t now, struct ab_decision *decision_r);
/* Remember a refusal ab_decide() made (decision->refused says of what). */
void ab_verdicts_remember(struct ab_verdicts *verdicts,
			  const struct ab_attempt *attempt,
			  const struct ab_decision *decision, time_t now);

#endif
