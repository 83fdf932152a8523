# auth-shim/: pam_authbrake.so, the PAM face of the tracker.
# Only pam_sm_* are exported: the module is built with hidden visibility
# and libauthbrake.a's symbols are kept out of the dynamic table.

PAM_MODULE := $(B)/pam_authbrake.so
ALL_TARGETS += $(PAM_MODULE)
INSTALL_TARGETS += install-pam

$(B)/auth-shim:
	mkdir -p $@

$(B)/auth-shim/pam_authbrake.o: auth-shim/pam_authbrake.c $(wildcard tracker/*.h) | $(B)/auth-shim
	$(CC) $(AB_CFLAGS) -fvisibility=hidden -c -o $@ $<

$(PAM_MODULE): $(B)/auth-shim/pam_authbrake.o $(LIBAB)
	$(CC) -shared -fPIC $(LDFLAGS) -Wl,--exclude-libs,ALL -Wl,-z,defs \
		-o $@ $< $(LIBAB) $(AB_LIBS) -lpam

.PHONY: install-pam
install-pam: $(PAM_MODULE)
	install -d $(DESTDIR)$(PAMDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0644 $(PAM_MODULE) $(DESTDIR)$(PAMDIR)/pam_authbrake.so
	install -m 0644 man/pam_authbrake.8 $(DESTDIR)$(MANDIR)/man8/pam_authbrake.8
