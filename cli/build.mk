# cli/: the authbrake admin tool and its manual pages.

CLI_SRC := $(wildcard cli/*.c)
CLI_OBJ := $(patsubst cli/%.c,$(B)/cli/%.o,$(CLI_SRC))
CLI_BIN := $(B)/authbrake
ALL_TARGETS += $(CLI_BIN)
INSTALL_TARGETS += install-cli

$(B)/cli:
	mkdir -p $@

$(B)/cli/%.o: cli/%.c $(wildcard cli/*.h) $(wildcard tracker/*.h) | $(B)/cli
	$(CC) $(AB_CFLAGS) -c -o $@ $<

$(CLI_BIN): $(CLI_OBJ) $(LIBAB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIBAB) $(AB_LIBS)

.PHONY: install-cli
install-cli: $(CLI_BIN)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m 0755 $(CLI_BIN) $(DESTDIR)$(SBINDIR)/authbrake
	install -m 0644 man/authbrake.8 $(DESTDIR)$(MANDIR)/man8/authbrake.8
	install -m 0644 man/authbrake.conf.5 $(DESTDIR)$(MANDIR)/man5/authbrake.conf.5

# the manual page tests render with groff (-ww: every warning)
DEB_EXTRA += groff-base
