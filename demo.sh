#!/bin/sh
# Runs authbrake for real on this machine: installs what is missing (as
# root), builds, starts memcached, Dovecot (IMAP + POP3 on loopback) and
# authbrake-policy, runs a short scripted attack beside a real user, and
# leaves the stack running with instructions to try it by hand.
set -eu
cd "$(dirname "$0")"
sh scripts/bootstrap.sh
exec make demo
