#!/bin/sh
# Shared first step of check.sh and demo.sh: on a fresh Debian 12 machine
# (as root) install make, then every package the tests, the benchmarks and
# the demo need (`make deps-test`). Nothing is ever removed (--no-remove):
# where a package conflicts with an installed one (Dovecot's IMAP server on
# a Courier host), it stops and says so.
set -eu
if ! command -v make >/dev/null 2>&1; then
	# as root it installs make; otherwise it prints the command to run
	sh scripts/apt-install.sh --label bootstrap make
fi
make -s deps-test	# not root: prints the apt-get command when something is missing
