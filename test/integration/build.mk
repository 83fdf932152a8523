# test/integration/: packages the Courier tests need installed normally.
# courier-imap, courier-pop, courier-authdaemon, courier-authlib and
# courier-base themselves are NOT installed (courier-imap/courier-pop
# conflict with dovecot-imapd/dovecot-pop3d): test/integration/courier.py
# fetches them with `apt-get download` into build/courier-debs/ and unpacks
# them into build/courier-root/ (build/courier-*-CODENAME: each Debian
# release its own). Installed normally: the shared libraries the unpacked
# binaries link against (none conflicts with Dovecot), which apt names
# (they differ by release: libcourier-unicode4 and libgamin0 on Debian
# 12, libcourier-unicode8 and libgdbm6t64 on 13), plus the tools the
# harness runs (unshare/mount: util-linux, mount; useradd: passwd).
COURIER_PACKAGES := courier-base courier-authlib courier-authdaemon courier-imap courier-pop
COURIER_LIBS = $(shell apt-cache depends --no-recommends --no-suggests --no-conflicts \
                  --no-breaks --no-replaces --no-enhances $(COURIER_PACKAGES) 2>/dev/null | \
                  sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \(lib[^ <>]*\)$$/\2/p' | sort -u)
DEB_EXTRA += $(COURIER_LIBS) mount util-linux passwd
