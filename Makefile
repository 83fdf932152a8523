# authbrake — top-level GNU Makefile.
# Each part's rules live in its own fragment (*/build.mk) and add to
# ALL_TARGETS / INSTALL_TARGETS / CHECK_TARGETS.

PREFIX      ?= /usr/local
DESTDIR     ?=
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
SYSCONFDIR  ?= /etc
# Debian's paths for PAM modules and Dovecot services, whatever PREFIX is.
# PAM modules go where libpam's pam.pc says: /lib/<multiarch>/security on
# Debian 12, /usr/lib/<multiarch>/security on 13 (merged /usr).
PAMDIR      ?= $(or $(shell pkg-config --variable=libdir pam 2>/dev/null),/lib/x86_64-linux-gnu)/security
DOVECOT_LIBEXECDIR ?= /usr/lib/dovecot

CC      ?= cc
PYTHON  ?= /usr/bin/python3
B       := build

PKGS        := libsodium
PKG_CFLAGS  := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN        := -Wall -Wextra -Werror -Wmissing-prototypes -Wstrict-prototypes \
               -Wshadow -Wformat=2 -Wpointer-arith
CFLAGS      ?= -O2 -g
AB_CFLAGS   := -std=gnu11 -fPIC -D_GNU_SOURCE $(WARN) -Itracker $(PKG_CFLAGS) $(CFLAGS)
AB_LIBS     := $(PKG_LIBS)

# Debian packages, by names both Debian 12 and Debian 13 have (`clang`,
# not `clang-14`). `make deps` installs what BUILDING needs and nothing that
# could clash with a running mail server: a Courier host builds the PAM module
# and the CLI. dovecot-dev (for authbrake-policy) comes only where Dovecot is
# already installed. `make deps-demo` (demo.sh) adds what the demo runs, and
# `make deps-test` (check.sh) what the tests and the benchmarks need as well.
# Dovecot's IMAP and POP3 servers, in both, conflict with Courier's.
DEB_BUILD   := build-essential pkg-config libsodium-dev \
               libpam0g-dev
DEB_DOVECOT := dovecot-dev
# what scripts/demo.py runs (Dovecot and memcached, its own instances on
# loopback), and curl and nc, which it tells you to try it by hand with
DEB_DEMO    := dovecot-core dovecot-imapd dovecot-pop3d memcached python3 \
               curl netcat-openbsd
# postfix: test_postfix.py runs an instance of its own (the package's
# system instance is left alone); like any MTA it conflicts with exim4.
DEB_TEST    := libcmocka-dev python3-pytest pamtester \
               iproute2 util-linux passwd stress-ng clang libclang-rt-dev \
               fail2ban nftables postfix openssl prometheus dnsmasq-base
DEB_BENCH   := wrk gnuplot-nox hyperfine
# what `make deb` needs besides DEB_BUILD and DEB_DOVECOT (debian/control's
# Build-Depends), and lintian, which checks what it built
DEB_PACKAGING := debhelper dpkg-dev fakeroot lintian
DEB_EXTRA   ?=
# yes when dovecot-core is on this host (unpacked at least); only `make deps`
# asks, and `make deps DOVECOT_ON_HOST=no` shows what a Courier host gets
DOVECOT_ON_HOST ?= $(shell s=$$(dpkg-query -W -f='$${db:Status-Status}' dovecot-core 2>/dev/null); \
                     [ -n "$$s" ] && [ "$$s" != not-installed ] && [ "$$s" != config-files ] && echo yes)

.PHONY: all check check-unit check-integration check-sanitize install deps \
        deps-demo deps-test deps-deb deb bench demo demo-stop clean
.DEFAULT_GOAL := all

ALL_TARGETS     :=
INSTALL_TARGETS :=
UNIT_TESTS      :=

# --- tracker/: libauthbrake.a -------------------------------------------
TRACKER_SRC := $(wildcard tracker/*.c)
TRACKER_OBJ := $(patsubst tracker/%.c,$(B)/tracker/%.o,$(TRACKER_SRC))
LIBAB       := $(B)/libauthbrake.a
ALL_TARGETS += $(LIBAB)

$(B)/tracker/%.o: tracker/%.c $(wildcard tracker/*.h) | $(B)/tracker
	$(CC) $(AB_CFLAGS) -c -o $@ $<

$(LIBAB): $(TRACKER_OBJ)
	rm -f $@
	ar rcs $@ $^

$(B)/tracker $(B)/test $(B)/san:
	mkdir -p $@

-include plugin/build.mk auth-shim/build.mk cli/build.mk bench/build.mk \
         test/integration/build.mk test/fuzz/build.mk

# --- unit tests (cmocka) ------------------------------------------------
UNIT_SRC   := $(wildcard test/unit/test-*.c)
UNIT_TESTS := $(patsubst test/unit/%.c,$(B)/test/%,$(UNIT_SRC))
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

$(B)/test/%: test/unit/%.c $(LIBAB) | $(B)/test
	$(CC) $(AB_CFLAGS) -pthread -o $@ $< $(LIBAB) $(AB_LIBS) $(CMOCKA_LIBS)

# check-sanitize links this into the programs (through LDFLAGS)
ifneq ($(SAN_OPTIONS_OBJ),)
$(SAN_OPTIONS_OBJ): test/sanitize/sanitizer-options.c | $(B)/test
	$(CC) $(AB_CFLAGS) -c -o $@ $<
$(POLICY_BIN) $(CLI_BIN) $(PAM_MODULE): $(SAN_OPTIONS_OBJ)
endif

all: $(ALL_TARGETS)

check-unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

# need-dovecot (plugin/build.mk): without Dovecot these stop and say why,
# rather than skip
check-integration: need-dovecot all
	$(PYTHON) -m pytest -q -p no:cacheprovider test/integration

check: need-dovecot all check-unit check-integration

# Everything again under AddressSanitizer and UndefinedBehaviorSanitizer:
# authbrake-policy, pam_authbrake.so, the CLI and the unit tests built into
# $(B)/san, then the unit tests and the integration tests against those
# binaries (only our code is instrumented, not Dovecot, PAM or Courier;
# test/integration/harness.py says how each host gets the runtime and the
# options). Every report lands in a file of its own in $(SAN_LOGS); a test
# after which one appears fails, and so does this target.
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_LOGS  := $(B)/san/sanitizer-logs
SAN_OPTS  := $(B)/san/test/sanitizer-options.o
check-sanitize: need-dovecot | $(B)/san
	$(MAKE) B=$(B)/san CFLAGS="-O1 -g $(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS) $(SAN_OPTS)" \
		SAN_OPTIONS_OBJ=$(SAN_OPTS) CMOCKA_LIBS="$(CMOCKA_LIBS) $(SAN_FLAGS)" \
		all check-unit
	AB_BUILD_DIR=$(B)/san AB_SANITIZER_LOG_DIR=$(abspath $(SAN_LOGS)) \
		$(PYTHON) -m pytest -q -p no:cacheprovider test/integration
	@if [ -n "$$(find $(SAN_LOGS) -type f -size +0c 2>/dev/null)" ]; then \
		echo "check-sanitize: sanitizer reports (in full above):" >&2; \
		find $(SAN_LOGS) -type f -size +0c -exec grep -H -m1 -E 'ERROR|runtime error' {} + >&2; \
		exit 1; fi

install: all $(INSTALL_TARGETS)
	install -d $(DESTDIR)$(SYSCONFDIR)/authbrake
	test -e $(DESTDIR)$(SYSCONFDIR)/authbrake/authbrake.conf || \
		install -m 0644 conf.d/authbrake.conf $(DESTDIR)$(SYSCONFDIR)/authbrake/authbrake.conf

# These and deps-deb below install only what is missing (so the scripts can
# run them every time), never remove a package (--no-remove), leave
# recommends out, and say what conflicts when apt-get refuses. The services
# of the packages they add (Dovecot, memcached, Postfix, Prometheus, ...) are
# neither started nor enabled: the demo and the tests run their own on
# loopback. All of that is scripts/apt-install.sh. DEPS_MODE=print prints
# the apt-get command and runs nothing; DEPS_MODE=simulate runs apt-get -s.
APT_INSTALL = sh scripts/apt-install.sh $(if $(DEPS_MODE),--$(DEPS_MODE))
DEB_ALL     = $(DEB_BUILD) $(DEB_DOVECOT) $(DEB_TEST) $(DEB_BENCH) $(DEB_DEMO) \
              $(DEB_PACKAGING) $(DEB_EXTRA)

deps:
	@if [ "$(DOVECOT_ON_HOST)" = yes ]; then dovecot="$(DEB_DOVECOT)"; else dovecot=; \
		echo "deps: Dovecot is not installed here, so make will skip authbrake-policy (the Dovecot service); on a Dovecot host, apt-get install --no-remove $(DEB_DOVECOT) adds it"; \
	fi; \
	$(APT_INSTALL) --label deps \
		--advice 'remove the conflicting package yourself if this host can do without it, or build in a container' \
		$(DEB_BUILD) $$dovecot

deps-demo:
	@$(APT_INSTALL) --label deps-demo \
		--advice "authbrake's demo runs Dovecot, so it needs a host without the package(s) named above (a container or a VM will do); to only build and install the PAM module and the CLI here, run: make deps && make && make install" \
		$(DEB_BUILD) $(DEB_DOVECOT) $(DEB_DEMO)

deps-test:
	@$(APT_INSTALL) --label deps-test \
		--advice "authbrake's tests, benchmarks and demo need Dovecot, so they need a host without the package(s) named above (a container or a VM will do); to only build and install the PAM module and the CLI here, run: make deps && make && make install" \
		$(DEB_ALL)

# Debian packages from debian/ (authbrake, libpam-authbrake,
# dovecot-authbrake) into $(B)/deb/, then lintian over them (errors and
# warnings fail; the tags left are explained in debian/*.lintian-overrides).
# dpkg-buildpackage writes next to the tree it builds and its clean step
# runs `make clean`, so it builds a copy in $(B)/deb/src. deps-deb installs
# what is missing first (root), as deps does: on a host without Dovecot (a
# Courier host) no dovecot-dev, and make deb builds authbrake and
# libpam-authbrake only (build profile pkg.authbrake.nodovecot).
DEB_OUT := $(B)/deb
DEB_PROFILES := $(if $(filter yes,$(DOVECOT_ON_HOST)),,-Ppkg.authbrake.nodovecot)
deps-deb:
	@$(APT_INSTALL) --label deps-deb \
		--advice 'build the packages in a container or on another Debian 12 machine' \
		$(DEB_BUILD) $(if $(filter yes,$(DOVECOT_ON_HOST)),$(DEB_DOVECOT)) $(DEB_PACKAGING)

deb: deps-deb
	rm -rf $(DEB_OUT)
	mkdir -p $(DEB_OUT)/src
	tar -c --exclude=./build --exclude=./.git --exclude=./bench/results . | tar -x -C $(DEB_OUT)/src
	$(if $(DEB_PROFILES),@echo "deb: Dovecot is not installed here: building authbrake and libpam-authbrake only (no dovecot-authbrake)")
	cd $(DEB_OUT)/src && dpkg-buildpackage -us -uc -b $(DEB_PROFILES)
	rm -rf $(DEB_OUT)/src
	lintian --fail-on error,warning --info $(DEB_OUT)/*.changes
	@ls -l $(DEB_OUT)/*.deb

# authbrake for real: memcached, Dovecot and authbrake-policy on loopback,
# a scripted attack, a table of decisions; the stack stays up.
demo: need-dovecot all
	$(PYTHON) scripts/demo.py

demo-stop:
	@$(PYTHON) scripts/demo.py --stop

clean:
	rm -rf $(B)
