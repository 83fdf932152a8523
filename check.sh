#!/bin/sh
# Runs authbrake's tests: installs what is missing (as root), builds with
# warnings as errors, then `make check` (unit tests and the integration
# tests against real memcached, Dovecot and Courier).
set -eu
cd "$(dirname "$0")"
sh scripts/bootstrap.sh
exec make check
