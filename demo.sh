#!/bin/sh
# Runs authbrake for real on this machine: installs what the demo runs and
# is missing (as root: `make deps-demo`; no service of those packages is
# started or enabled), builds, starts memcached, Dovecot (IMAP + POP3 on
# loopback) and authbrake-policy of its own, runs a short scripted attack
# beside a real user, and leaves the stack running with instructions to try
# it by hand.
set -eu
cd "$(dirname "$0")"
sh scripts/bootstrap.sh deps-demo
exec make demo
