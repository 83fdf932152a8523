# test/integration/: packages the Courier tests need installed normally.
# courier-imap, courier-pop, courier-authdaemon, courier-authlib and
# courier-base themselves are NOT installed (courier-imap/courier-pop
# conflict with dovecot-imapd/dovecot-pop3d): test/integration/courier.py
# fetches them with `apt-get download` into build/courier-debs/ and unpacks
# them into build/courier-root/. These are the shared libraries the unpacked
# binaries link against (none conflicts with Dovecot), plus the tools the
# harness runs (unshare/mount: util-linux, mount; useradd: passwd).
#   imapd: libcourier-unicode.so.4 libfam.so.0 (libgamin0) libgdbm.so.6 libidn.so.12
#   authdaemond: libltdl.so.7 libstdc++.so.6; libauthpam: libpam.so.0
DEB_EXTRA += libcourier-unicode4 libgamin0 libgdbm6 libidn12 libltdl7 \
             libpam0g libstdc++6 mount util-linux passwd
