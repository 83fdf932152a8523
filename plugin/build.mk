# plugin/: authbrake-policy, a Dovecot service on libdovecot.
# Dovecot's headers come with -isystem so our warning flags judge only our
# code; -DHAVE_CONFIG_H is needed (without it: "uoff_t size not set"), and
# the rpath lets the binary find libdovecot.so.0 at run time.
DOVECOT_CONFIG  ?= /usr/lib/dovecot/dovecot-config
DOVECOT_INCDIR  := $(shell . $(DOVECOT_CONFIG) 2>/dev/null && echo $${dovecot_pkgincludedir})
DOVECOT_LIBDIR  := $(shell . $(DOVECOT_CONFIG) 2>/dev/null && echo $${dovecot_pkglibdir})
POLICY_CFLAGS   := $(AB_CFLAGS) -DHAVE_CONFIG_H -isystem $(DOVECOT_INCDIR) -Iplugin
POLICY_LIBS     := -L$(DOVECOT_LIBDIR) -Wl,-rpath,$(DOVECOT_LIBDIR) -ldovecot
POLICY_SRC      := $(wildcard plugin/*.c)
POLICY_OBJ      := $(patsubst plugin/%.c,$(B)/plugin/%.o,$(POLICY_SRC))
POLICY_BIN      := $(B)/authbrake-policy

ALL_TARGETS     += $(POLICY_BIN)
INSTALL_TARGETS += install-policy

$(B)/plugin:
	mkdir -p $@

$(B)/plugin/%.o: plugin/%.c $(wildcard plugin/*.h) $(wildcard tracker/*.h) | $(B)/plugin
	$(CC) $(POLICY_CFLAGS) -c -o $@ $<

$(POLICY_BIN): $(POLICY_OBJ) $(LIBAB)
	$(CC) $(LDFLAGS) -o $@ $(POLICY_OBJ) $(LIBAB) $(AB_LIBS) $(POLICY_LIBS)

.PHONY: install-policy
install-policy: $(POLICY_BIN)
	install -d $(DESTDIR)$(DOVECOT_LIBEXECDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(POLICY_BIN) $(DESTDIR)$(DOVECOT_LIBEXECDIR)/authbrake-policy
	install -m 0644 man/authbrake-policy.8 $(DESTDIR)$(MANDIR)/man8/authbrake-policy.8
