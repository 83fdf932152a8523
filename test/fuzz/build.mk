# test/fuzz/: libFuzzer harnesses over the parsers that face attackers and
# admins, built with clang's -fsanitize=fuzzer,address,undefined into
# $(B)/fuzz/ (with their own sanitized copy of libauthbrake: the project's
# objects keep the compiler and flags they have). clang and its runtime
# (libclang-rt-dev) come with `make deps-test`.
#
#   make fuzz                   every harness for FUZZ_SECONDS (60) each
#   make fuzz FUZZ_SECONDS=20   what CI runs
#   make fuzz-build             build them only
#
# A harness runs on a work corpus in $(B)/fuzz/work/NAME, seeded read-only
# from test/fuzz/corpus/NAME; a crash fails the target and prints the path
# of its reproducer ($(B)/fuzz/artifacts/NAME/). The two over libdovecot
# (policy-body, policy-http) need what authbrake-policy needs and are left
# out, with a notice, where it cannot be built.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_B       := $(B)/fuzz
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer
FUZZ_CFLAGS  := -std=gnu11 -D_GNU_SOURCE $(WARN) -Itracker $(PKG_CFLAGS) \
                -O1 -g $(FUZZ_SAN)
FUZZ_POLICY_CFLAGS := $(FUZZ_CFLAGS) -DHAVE_CONFIG_H -isystem $(DOVECOT_INCDIR) \
                -Iplugin

FUZZ_NAMES   := identity config dnsbl meta record campaign
ifeq ($(DOVECOT_MISSING),)
FUZZ_NAMES   += policy-body policy-http
endif
FUZZ_BINS    := $(patsubst %,$(FUZZ_B)/fuzz-%,$(FUZZ_NAMES))
FUZZ_LIBAB   := $(FUZZ_B)/libauthbrake.a
FUZZ_TRACKER_OBJ := $(patsubst tracker/%.c,$(FUZZ_B)/tracker/%.o,$(TRACKER_SRC))

.PHONY: fuzz fuzz-build need-fuzzer

# libFuzzer's runtime is the one file a missing libclang-rt-dev leaves out
need-fuzzer:
	@rt=$$($(FUZZ_CC) -print-runtime-dir 2>/dev/null) && \
	ls "$$rt"/libclang_rt.fuzzer-*.a >/dev/null 2>&1 || { \
		echo "make $(or $(MAKECMDGOALS),fuzz): needs $(FUZZ_CC) and libFuzzer's runtime: apt-get install --no-remove clang libclang-rt-dev (make deps-test installs them)" >&2; \
		exit 2; }

fuzz-build: need-fuzzer $(FUZZ_BINS)

fuzz: need-fuzzer $(FUZZ_BINS)
ifneq ($(DOVECOT_MISSING),)
	@echo "fuzz: policy-body and policy-http skipped: $(DOVECOT_MISSING)"
endif
	@sh test/fuzz/run.sh $(FUZZ_B) $(FUZZ_SECONDS) $(FUZZ_NAMES)

$(FUZZ_B)/tracker $(FUZZ_B)/plugin: | need-fuzzer
	mkdir -p $@

$(FUZZ_B)/tracker/%.o: tracker/%.c $(wildcard tracker/*.h) | $(FUZZ_B)/tracker
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_LIBAB): $(FUZZ_TRACKER_OBJ)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_B)/plugin/%.o: plugin/%.c plugin/%.h | $(FUZZ_B)/plugin
	$(FUZZ_CC) $(FUZZ_POLICY_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_B)/fuzz-identity $(FUZZ_B)/fuzz-config $(FUZZ_B)/fuzz-dnsbl \
		$(FUZZ_B)/fuzz-meta $(FUZZ_B)/fuzz-record \
		$(FUZZ_B)/fuzz-campaign: $(FUZZ_B)/fuzz-%: test/fuzz/fuzz-%.c test/fuzz/fuzz-check.h $(FUZZ_LIBAB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIBAB) $(AB_LIBS)

$(FUZZ_B)/fuzz-policy-body: test/fuzz/fuzz-policy-body.c $(FUZZ_B)/plugin/policy-body.o \
		$(FUZZ_LIBAB)
	$(FUZZ_CC) $(FUZZ_POLICY_CFLAGS) -fsanitize=fuzzer -o $@ $< \
		$(FUZZ_B)/plugin/policy-body.o $(FUZZ_LIBAB) $(AB_LIBS) $(POLICY_LIBS)

# authbrake-policy.c is compiled into its harness as it is, its main()
# renamed: the harness drives its request handler through lib-http.
$(FUZZ_B)/fuzz-policy-http: test/fuzz/fuzz-policy-http.c plugin/authbrake-policy.c \
		$(FUZZ_B)/plugin/policy-body.o $(FUZZ_B)/plugin/policy-events.o $(FUZZ_LIBAB)
	$(FUZZ_CC) $(FUZZ_POLICY_CFLAGS) -Dmain=policy_main -fsanitize=fuzzer \
		-o $@ $< $(FUZZ_B)/plugin/policy-body.o $(FUZZ_B)/plugin/policy-events.o \
		$(FUZZ_LIBAB) $(AB_LIBS) \
		$(POLICY_LIBS)
