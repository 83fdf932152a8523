#!/bin/sh
# Shared first step of check.sh and demo.sh: on a fresh Debian 12 machine
# (as root) install make, then every package `make deps` lists.
set -eu
if [ "$(id -u)" = 0 ]; then
	if ! command -v make >/dev/null 2>&1; then
		echo "bootstrap: installing make" >&2
		apt-get update -q
		apt-get install -y -q --no-install-recommends make
	fi
	make -s deps
else
	command -v make >/dev/null 2>&1 || {
		echo "bootstrap: make is missing; run this as root, or: apt-get install make" >&2
		exit 2
	}
	make -s deps	# prints the apt-get command when something is missing
fi
