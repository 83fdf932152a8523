/* What one login costs memcached, in one place: round trips waited for
   and operations sent (posted ones too), on one server: one operation
   per identity's record (ab-record.h). Servers and dual copies
   (ab-store.h) multiply requests, not round trips.
   test-store.c (test_costs_as_tabled) makes each case happen and checks
   the store's own counters against this table, so a change that costs
   more changes the table too. ab-tracker.c ("round trips") says why each
   costs what it does. Beside these, campaign mode reads the site's
   state with an allow's records at most once a second per process (a
   few more operations in the same round trip; ab_tracker_campaign_cost()
   says how many). */
#ifndef AB_COST_H
#define AB_COST_H

enum ab_cost_case {
	/* an attempt from an unfamiliar origin, let through: it holds its
	   places until its report */
	AB_COST_ALLOW,
	/* its report: a wrong password (the places held become its counts) */
	AB_COST_REPORT_FAILURE,
	/* its report: the right password (places given back, the subnet
	   becomes familiar) */
	AB_COST_REPORT_SUCCESS,
	/* the report of the failure that reaches account_lock_failures:
	   the lock, its strike and `authbrake list`'s entry */
	AB_COST_REPORT_LOCKS,
	/* an attempt refused by that lock */
	AB_COST_ALLOW_REFUSED,
	/* the same within verdict_cache: remembered (ab-verdict.h) */
	AB_COST_ALLOW_REMEMBERED,

	AB_COST_COUNT
};

struct ab_cost {
	const char *what;
	unsigned int round_trips;
	unsigned int ops;
};

static const struct ab_cost ab_costs[AB_COST_COUNT] = {
	/* the three records read; the three written back with its places */
	[AB_COST_ALLOW] = { "allow, let through", 2, 6 },
	/* the records read; the address's written: its place in flight and
	   its session entry gone, the failure's counts held already; + the
	   site's count of failures from unfamiliar origins (campaign mode,
	   ab-campaign.h), posted */
	[AB_COST_REPORT_FAILURE] = { "report, wrong password", 2, 4 + 1 },
	/* places given back everywhere, the subnet familiar */
	[AB_COST_REPORT_SUCCESS] = { "report, right password", 2, 6 },
	/* the lock written with the counts; one more round trip for the
	   slot of `authbrake list`'s ring, and its entry posted */
	[AB_COST_REPORT_LOCKS] = { "report, wrong password that locks", 3, 7 + 1 },
	/* the records read; a refusal writes nothing */
	[AB_COST_ALLOW_REFUSED] = { "allow, refused by a lock", 1, 3 },
	[AB_COST_ALLOW_REMEMBERED] = { "allow, refusal remembered", 0, 0 },
};

#endif
