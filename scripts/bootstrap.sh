#!/bin/sh
# Shared first step of demo.sh and check.sh: on a fresh Debian 12 or 13
# machine (as root) install make, then the packages that script needs:
#
#   sh scripts/bootstrap.sh deps-demo   what the demo runs (demo.sh)
#   sh scripts/bootstrap.sh deps-test   what the tests, the benchmarks and
#                                       the demo need (check.sh)
#
# Nothing is ever removed (--no-remove): where a package conflicts with an
# installed one (Dovecot's IMAP server on a Courier host), it stops and says
# so. No service of a package it adds is started or enabled
# (scripts/apt-install.sh).
set -eu
case ${1-} in
deps-demo|deps-test) ;;
*) echo "usage: $0 deps-demo|deps-test" >&2; exit 2 ;;
esac
if ! command -v make >/dev/null 2>&1; then
	# as root it installs make; otherwise it prints the command to run
	sh scripts/apt-install.sh --label bootstrap make
fi
make -s "$1"	# not root: prints the apt-get command when something is missing
