# authbrake — top-level GNU Makefile.
# Each part's rules live in its own fragment (*/build.mk) and add to
# ALL_TARGETS / INSTALL_TARGETS / CHECK_TARGETS.

PREFIX      ?= /usr/local
DESTDIR     ?=
SBINDIR     ?= $(PREFIX)/sbin
MANDIR      ?= $(PREFIX)/share/man
SYSCONFDIR  ?= /etc
# Debian's paths for PAM modules and Dovecot services, whatever PREFIX is.
PAMDIR      ?= /lib/x86_64-linux-gnu/security
DOVECOT_LIBEXECDIR ?= /usr/lib/dovecot

CC      ?= cc
PYTHON  ?= /usr/bin/python3
B       := build

PKGS        := libmemcached libsodium
PKG_CFLAGS  := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN        := -Wall -Wextra -Werror -Wmissing-prototypes -Wstrict-prototypes \
               -Wshadow -Wformat=2 -Wpointer-arith
CFLAGS      ?= -O2 -g
AB_CFLAGS   := -std=gnu11 -fPIC -D_GNU_SOURCE $(WARN) -Itracker $(PKG_CFLAGS) $(CFLAGS)
AB_LIBS     := $(PKG_LIBS)

# Debian packages the build, the tests and the benchmarks need.
DEB_BUILD := build-essential pkg-config libmemcached-dev libsodium-dev \
             libcmocka-dev libpam0g-dev dovecot-dev
DEB_TEST  := memcached libmemcached-tools dovecot-core dovecot-imapd \
             dovecot-pop3d python3 python3-pytest pamtester iproute2 \
             util-linux passwd stress-ng
DEB_BENCH := wrk gnuplot-nox hyperfine
# what `make demo` tells you to try by hand with
DEB_DEMO  := curl netcat-openbsd
DEB_EXTRA ?=

.PHONY: all check check-unit check-integration check-sanitize install deps \
        bench demo demo-stop clean
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
         test/integration/build.mk

# --- unit tests (cmocka) ------------------------------------------------
UNIT_SRC   := $(wildcard test/unit/test-*.c)
UNIT_TESTS := $(patsubst test/unit/%.c,$(B)/test/%,$(UNIT_SRC))
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

$(B)/test/%: test/unit/%.c $(LIBAB) | $(B)/test
	$(CC) $(AB_CFLAGS) -o $@ $< $(LIBAB) $(AB_LIBS) $(CMOCKA_LIBS)

all: $(ALL_TARGETS)

check-unit: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done

check-integration: all
	$(PYTHON) -m pytest -q -p no:cacheprovider test/integration

check: all check-unit check-integration

# The unit tests again, under AddressSanitizer and UndefinedBehaviorSanitizer.
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
check-sanitize: | $(B)/san
	$(MAKE) B=$(B)/san CFLAGS="-O1 -g $(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" \
		CMOCKA_LIBS="$(CMOCKA_LIBS) $(SAN_FLAGS)" check-unit

install: all $(INSTALL_TARGETS)
	install -d $(DESTDIR)$(SYSCONFDIR)/authbrake
	test -e $(DESTDIR)$(SYSCONFDIR)/authbrake/authbrake.conf || \
		install -m 0644 conf.d/authbrake.conf $(DESTDIR)$(SYSCONFDIR)/authbrake/authbrake.conf

# Installs only what is missing, so check.sh can run it every time.
DEB_ALL = $(DEB_BUILD) $(DEB_TEST) $(DEB_BENCH) $(DEB_DEMO) $(DEB_EXTRA)
deps:
	@missing=$$(for p in $(DEB_ALL); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -z "$$missing" ]; then \
		echo "deps: every package is installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "deps: installing" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else \
		echo "deps: run as root:  apt-get install" $$missing; exit 2; \
	fi

# authbrake for real: memcached, Dovecot and authbrake-policy on loopback,
# a scripted attack, a table of decisions; the stack stays up.
demo: all
	$(PYTHON) scripts/demo.py

demo-stop:
	@if [ -f $(B)/demo/pids ]; then kill $$(cat $(B)/demo/pids) 2>/dev/null; \
		rm -f $(B)/demo/pids; echo "demo stopped"; else echo "no demo running"; fi

clean:
	rm -rf $(B)
