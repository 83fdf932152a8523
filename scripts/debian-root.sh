#!/bin/sh
# Runs a command in a fresh Debian root of another release, as a new user
# on that release would: CI runs the README's test command (sh ./check.sh)
# on Debian 13 (trixie, Dovecot 2.4) this way, beside the host's Debian 12.
#
#   sh scripts/debian-root.sh SUITE [COMMAND...]     (default: sh ./check.sh)
#
# The root is unpacked from a minimal debootstrap of SUITE cached as
# /var/cache/authbrake/SUITE-minbase.tar.gz (made, with debootstrap from the
# Debian mirror, when it is missing) into build/roots/SUITE, fresh every
# run; a copy of this tree (what git tracks, as it is now on disk) goes to
# /src in it, and COMMAND runs there as root. The packages apt downloads
# are kept in /var/cache/authbrake/SUITE-archives for the next run.
#
# The root gets its own mount and PID namespaces: whatever it starts ends
# with COMMAND, and nothing is mounted on the host. It shares the host's
# network (apt needs the mirror); the tests' servers listen on loopback
# ports they pick, as on the host. Needs root.
set -eu
cd "$(dirname "$0")/.."
REPO=$(pwd)
SUITE=${1:?usage: $0 SUITE [COMMAND...]}
shift
[ $# -gt 0 ] || set -- sh ./check.sh
CACHE=/var/cache/authbrake
TARBALL=$CACHE/$SUITE-minbase.tar.gz
ARCHIVES=$CACHE/$SUITE-archives
R=$REPO/build/roots/$SUITE
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" != 0 ]; then
	echo "$0: needs root (debootstrap, chroot, mounts)" >&2
	exit 2
fi
mkdir -p "$CACHE" "$ARCHIVES/partial"
if [ ! -s "$TARBALL" ]; then
	command -v debootstrap >/dev/null 2>&1 ||
		sh scripts/apt-install.sh --label debian-root debootstrap
	echo "debian-root: making a minimal $SUITE root ($MIRROR) into $TARBALL"
	tmp=$CACHE/$SUITE.tmp
	rm -rf "$tmp"
	debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$CACHE/$SUITE-debootstrap.log" 2>&1 || {
		tail -20 "$CACHE/$SUITE-debootstrap.log" >&2
		echo "debian-root: debootstrap $SUITE failed (log: $CACHE/$SUITE-debootstrap.log)" >&2
		exit 1
	}
	tar -C "$tmp" -czf "$TARBALL.tmp" .
	mv "$TARBALL.tmp" "$TARBALL"
	rm -rf "$tmp"
fi

rm -rf "$R"
mkdir -p "$R"
tar -C "$R" -xzf "$TARBALL"
mkdir -p "$R/src"
git ls-files -z --cached --others --exclude-standard |
	tar -c --null -T - --no-recursion 2>/dev/null | tar -x -C "$R/src"
cp /etc/resolv.conf "$R/etc/resolv.conf"

echo "debian-root: $SUITE ($(cat "$R/etc/debian_version")) in $R: $*"
# /: a mount point of its own (unshare --mount, which the tests use, makes
# every mount private and needs one); /proc, /dev, /tmp, /run as a booted
# system has them; apt's downloads kept across runs.
exec unshare --mount --pid --fork --propagation private sh -c '
	R=$1; ARCHIVES=$2; shift 2
	mount --rbind "$R" "$R"
	mount -t proc proc "$R/proc"
	mount --rbind /dev "$R/dev"
	mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
	mount -t tmpfs -o mode=0755 tmpfs "$R/run"
	mkdir -p "$R/run/lock"
	mount --bind "$ARCHIVES" "$R/var/cache/apt/archives"
	chroot "$R" sh -c "apt-get update -q >/dev/null" || exit 1
	exec chroot "$R" env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		sh -c "cd /src && exec \"\$@\"" sh "$@"
' sh "$R" "$ARCHIVES" "$@"
