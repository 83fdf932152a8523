#!/bin/sh
# Tests authbrake's Debian packages as installed (issue 15): `make deb`
# (with lintian), then, for a Dovecot host and a Courier host, an install
# with `apt-get install --no-remove ./*.deb`, an attack through the host's
# real IMAP and POP3 servers, a second install, an upgrade and a purge
# (scripts/test-packages-host.py says what is checked).
#
# This machine's own package set is never changed: each host is a
# copy-on-write view of it, an overlay (lower: /, upper: a directory under
# build/pkgtest/) in a private mount namespace, entered with chroot, with
# its own PID namespace (whatever a host starts ends with it) and, for the
# test itself, its own network namespace (loopback only: the servers take
# their usual ports, 143, 110, 11211, 4010, beside whatever runs here).
# The Courier host is made inside its view: Dovecot's IMAP and POP3
# servers removed, courier-imap, courier-pop and courier-authdaemon
# installed from the Debian mirror (the .debs are kept in
# build/pkgtest/apt-archives for the next run).
#
# Needs root. Prints a transcript; exits non-zero on any failure.
set -eu
cd "$(dirname "$0")/.."
REPO=$(pwd)
W=$REPO/build/pkgtest

# --- inside the namespaces: one host ------------------------------------
if [ "${1:-}" = --host ]; then
	kind=$2
	H=$W/$kind
	M=$H/root
	rm -rf "$H"
	mkdir -p "$H/upper" "$H/work" "$M" "$W/apt-archives/partial"
	mount -t overlay overlay -o "lowerdir=/,upperdir=$H/upper,workdir=$H/work" "$M"
	mount -t proc proc "$M/proc"
	# a /dev of its own: a few device nodes, and room for the test's /dev/log
	mount -t tmpfs -o mode=0755,size=1m tmpfs "$M/dev"
	for n in null zero full random urandom tty; do
		touch "$M/dev/$n"
		mount --bind "/dev/$n" "$M/dev/$n"
	done
	mkdir "$M/dev/pts" "$M/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666 devpts "$M/dev/pts"
	ln -s pts/ptmx "$M/dev/ptmx"
	ln -s /proc/self/fd "$M/dev/fd"
	mount -t tmpfs -o mode=1777 tmpfs "$M/tmp"
	mount -t tmpfs -o mode=0755 tmpfs "$M/run"
	mount --bind "$W/apt-archives" "$M/var/cache/apt/archives"
	mkdir -p "$M/tmp/pkgtest"
	# What a chroot usually has: services are not started by packages.
	# Every call is logged, so the test sees that authbrake's maintainer
	# scripts ask for none.
	cat >"$M/usr/sbin/policy-rc.d" <<-'EOF'
	#!/bin/sh
	echo "policy-rc.d $*" >>/tmp/pkgtest/policy-rc.d.log
	exit 101
	EOF
	chmod 0755 "$M/usr/sbin/policy-rc.d"
	if [ "$kind" = courier ]; then
		echo "######## courier host: Courier in place of Dovecot's IMAP and POP3 servers"
		in_root() { chroot "$M" env DEBIAN_FRONTEND=noninteractive "$@"; }
		apt_q="-y -q -o APT::Sandbox::User=root"
		# shellcheck disable=SC2086
		in_root apt-get $apt_q remove dovecot-imapd dovecot-pop3d | grep -E '^(Removing|Remv|E:)' || true
		# shellcheck disable=SC2086
		if ! in_root apt-get $apt_q install --no-remove courier-imap courier-pop courier-authdaemon \
				>"$H/courier-install.log" 2>&1; then
			in_root apt-get -q update >>"$H/courier-install.log" 2>&1 || true
			# shellcheck disable=SC2086
			in_root apt-get $apt_q install --no-remove courier-imap courier-pop courier-authdaemon \
				>>"$H/courier-install.log" 2>&1 || { cat "$H/courier-install.log"; exit 1; }
		fi
		grep -E '^Setting up courier' "$H/courier-install.log" || true
		# shellcheck disable=SC2016
		chroot "$M" dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\n' \
			courier-imap courier-pop courier-authdaemon dovecot-imapd dovecot-pop3d 2>/dev/null | sed 's/^/  /'
	fi
	# shellcheck disable=SC2016
	exec chroot "$M" unshare --net sh -c \
		'ip link set lo up && exec /usr/bin/python3 "$1" "$2"' sh \
		"$REPO/scripts/test-packages-host.py" "$kind"
fi

# --- outside: build, then each host -------------------------------------
if [ "$(id -u)" != 0 ]; then
	echo "$0: run as root (it mounts an overlay and enters namespaces)" >&2
	exit 2
fi
t0=$(date +%s)
echo "######## make deb"
make deb
mkdir -p "$W"

# The upgrade: the same packages rebuilt with a higher version.
version=$(dpkg-deb -f build/deb/authbrake_*_amd64.deb Version)
bumped="$version+pkgtest1"
rm -rf "$W/upgrade"
mkdir -p "$W/upgrade"
for pkg in authbrake libpam-authbrake dovecot-authbrake; do
	d=$W/upgrade/$pkg
	dpkg-deb -R "build/deb/${pkg}_${version}_amd64.deb" "$d"
	sed -i "s/^Version: $version\$/Version: $bumped/; s/(= $version)/(= $bumped)/g" "$d/DEBIAN/control"
	dpkg-deb -b "$d" "$W/upgrade/${pkg}_${bumped}_amd64.deb" >/dev/null
	rm -rf "$d"
done
echo "upgrade packages: version $bumped in build/pkgtest/upgrade/"

# shellcheck disable=SC2016
dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\n' >"$W/machine-before.txt"
rc=0
for kind in dovecot courier; do
	echo
	unshare --mount --pid --fork --propagation private sh "$0" --host "$kind" || rc=1
	rm -rf "${W:?}/$kind"
done
# shellcheck disable=SC2016
dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\n' >"$W/machine-after.txt"
echo
if cmp -s "$W/machine-before.txt" "$W/machine-after.txt"; then
	echo "ok   this machine's own package set is unchanged"
else
	echo "FAIL this machine's own package set changed:"
	diff "$W/machine-before.txt" "$W/machine-after.txt" || true
	rc=1
fi
echo "######## test-packages: $([ $rc = 0 ] && echo PASSED || echo FAILED) in $(($(date +%s) - t0)) s"
exit $rc
