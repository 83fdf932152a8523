# plugin/: authbrake-policy, a Dovecot service on libdovecot.
# Dovecot's headers come with -isystem so our warning flags judge only our
# code; -DHAVE_CONFIG_H is needed (without it: "uoff_t size not set"), and
# the rpath lets the binary find libdovecot.so.0 at run time.
#
# It needs dovecot-dev (dovecot-config and the headers) and dovecot-core
# (libdovecot.so). A host without them, a Courier host for one, still builds
# and installs the PAM module and the CLI: `make` says once that it skips
# authbrake-policy, `make install` leaves it out, and what needs it (the
# integration tests, the demo, the benchmarks) stops with the reason.
DOVECOT_CONFIG  ?= /usr/lib/dovecot/dovecot-config
ifneq ($(wildcard $(DOVECOT_CONFIG)),)
DOVECOT_INCDIR  := $(shell . $(DOVECOT_CONFIG) 2>/dev/null && echo $${dovecot_pkgincludedir})
DOVECOT_LIBDIR  := $(shell . $(DOVECOT_CONFIG) 2>/dev/null && echo $${dovecot_pkglibdir})
endif
ifeq ($(wildcard $(DOVECOT_CONFIG)),)
DOVECOT_MISSING := no $(DOVECOT_CONFIG) (dovecot-dev is not installed)
else ifeq ($(wildcard $(DOVECOT_LIBDIR)/libdovecot.so),)
DOVECOT_MISSING := no $(DOVECOT_LIBDIR)/libdovecot.so (dovecot-core is not installed)
else
DOVECOT_MISSING :=
endif

# The Dovecot drop-in in the configuration language of the Dovecot built
# against: 2.3's, or 2.4's (conf.d/dovecot-2.4/), which `make install`
# puts in $(DROPIN_DIR) for the dovecot-authbrake package's include.
DOVECOT_MINOR   := $(shell sed -n 's/^\#define DOVECOT_VERSION_MINOR \([0-9]*\)$$/\1/p' \
                     $(DOVECOT_INCDIR)/config.h 2>/dev/null)
DOVECOT_DROPIN  := conf.d/$(if $(filter-out 0 1 2 3,$(DOVECOT_MINOR)),dovecot-2.4/)95-authbrake.conf
DROPIN_DIR      ?= $(PREFIX)/share/dovecot-authbrake

POLICY_CFLAGS   := $(AB_CFLAGS) -DHAVE_CONFIG_H -isystem $(DOVECOT_INCDIR) -Iplugin
POLICY_LIBS     := -L$(DOVECOT_LIBDIR) -Wl,-rpath,$(DOVECOT_LIBDIR) -ldovecot
POLICY_SRC      := $(wildcard plugin/*.c)
POLICY_OBJ      := $(patsubst plugin/%.c,$(B)/plugin/%.o,$(POLICY_SRC))
POLICY_BIN      := $(B)/authbrake-policy

.PHONY: install-policy policy-skipped need-dovecot
ifeq ($(DOVECOT_MISSING),)
ALL_TARGETS     += $(POLICY_BIN)
INSTALL_TARGETS += install-policy
else
# a phony goal of `all`, so the notice is printed once per make run
ALL_TARGETS     += policy-skipped
endif

policy-skipped:
	@echo "authbrake-policy (the Dovecot service) skipped: $(DOVECOT_MISSING); building the PAM module and the CLI only. On a Dovecot host: apt-get install --no-remove dovecot-dev, then make."

# What runs authbrake-policy under a real Dovecot depends on this first.
need-dovecot:
ifneq ($(DOVECOT_MISSING),)
	@echo "make $(or $(MAKECMDGOALS),all): this runs authbrake-policy under a real Dovecot, and this host cannot build it: $(DOVECOT_MISSING)." >&2
	@echo "On a Dovecot host, make deps-test installs what the tests, the demo and the benchmarks need; on a Courier host, run them in a container or a VM (Dovecot's IMAP and POP3 servers conflict with Courier's)." >&2
	@exit 2
endif

$(B)/plugin:
	mkdir -p $@

$(B)/plugin/%.o: plugin/%.c $(wildcard plugin/*.h) $(wildcard tracker/*.h) | $(B)/plugin
	$(CC) $(POLICY_CFLAGS) -c -o $@ $<

$(POLICY_BIN): $(POLICY_OBJ) $(LIBAB)
	$(CC) $(LDFLAGS) -o $@ $(POLICY_OBJ) $(LIBAB) $(AB_LIBS) $(POLICY_LIBS)

install-policy: $(POLICY_BIN)
	install -d $(DESTDIR)$(DOVECOT_LIBEXECDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(POLICY_BIN) $(DESTDIR)$(DOVECOT_LIBEXECDIR)/authbrake-policy
	install -m 0644 man/authbrake-policy.8 $(DESTDIR)$(MANDIR)/man8/authbrake-policy.8
	install -d $(DESTDIR)$(DROPIN_DIR)
	install -m 0644 $(DOVECOT_DROPIN) $(DESTDIR)$(DROPIN_DIR)/95-authbrake.conf
