#!/bin/sh
# Runs authbrake's tests: installs what is missing (as root: `make
# deps-test`; no service of those packages is started or enabled), builds
# with warnings as errors, then `make check` (unit tests and the integration
# tests against real memcached, Dovecot and Courier, each an instance of the
# tests' own on loopback).
set -eu
cd "$(dirname "$0")"
sh scripts/bootstrap.sh deps-test
exec make check
