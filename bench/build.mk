# bench/: `make bench` runs every benchmark (about 10 minutes on 2 cores) and
# writes CSV, gnuplot PNGs and summary.md under bench/results/. Timings never
# fail the build; a part that cannot run is reported and the rest go on.
# BENCH_PARTS=policy,auth,pam,attack picks parts; BENCH_QUICK=1 shortens runs.

PAM_BENCH := $(B)/bench/pam-bench

$(B)/bench:
	mkdir -p $@

$(PAM_BENCH): bench/pam-bench.c | $(B)/bench
	$(CC) $(AB_CFLAGS) -o $@ $< -lpam

# authbrake-policy with the HTTP side alone (AB_BENCH_HTTP_FLOOR): what a
# Dovecot service answers at most on this machine, measured beside it
POLICY_FLOOR := $(B)/bench/authbrake-policy-floor

$(POLICY_FLOOR): plugin/authbrake-policy.c $(filter-out $(B)/plugin/authbrake-policy.o,$(POLICY_OBJ)) $(LIBAB) | $(B)/bench
	$(CC) $(POLICY_CFLAGS) -DAB_BENCH_HTTP_FLOOR $(LDFLAGS) -o $@ $< \
		$(filter-out $(B)/plugin/authbrake-policy.o,$(POLICY_OBJ)) $(LIBAB) \
		$(AB_LIBS) $(POLICY_LIBS)

# ... and with the least a shared store can cost beside it: one memcached
# round trip per batch, 1 or 6 reads per request (AB_BENCH_STORE_FLOOR)
STORE_FLOORS := $(B)/bench/authbrake-policy-store-floor-1 $(B)/bench/authbrake-policy-store-floor-6

$(B)/bench/authbrake-policy-store-floor-%: plugin/authbrake-policy.c $(filter-out $(B)/plugin/authbrake-policy.o,$(POLICY_OBJ)) $(LIBAB) | $(B)/bench
	$(CC) $(POLICY_CFLAGS) -DAB_BENCH_HTTP_FLOOR -DAB_BENCH_STORE_FLOOR=$* $(LDFLAGS) -o $@ $< \
		$(filter-out $(B)/plugin/authbrake-policy.o,$(POLICY_OBJ)) $(LIBAB) \
		$(AB_LIBS) $(POLICY_LIBS)

bench: need-dovecot all $(PAM_BENCH) $(POLICY_FLOOR) $(STORE_FLOORS)
	$(PYTHON) bench/run.py $(if $(BENCH_PARTS),--parts $(BENCH_PARTS)) $(if $(BENCH_QUICK),--quick)
