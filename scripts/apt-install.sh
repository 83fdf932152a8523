#!/bin/sh
# Installs the named Debian packages that are not installed yet; the one
# recipe behind `make deps`, `make deps-demo`, `make deps-test`, `make
# deps-deb` and scripts/bootstrap.sh.
#
#   sh scripts/apt-install.sh [--label NAME] [--advice TEXT] [--print|--simulate] PACKAGE...
#
#   --label NAME   what the messages start with (the make target)
#   --advice TEXT  printed when a conflict stops apt-get: what to do instead
#   --print        print the apt-get command for every named package,
#                  installed or not, and run nothing (test_build.py checks it)
#   --simulate     do everything but install (apt-get -s)
#
# apt-get always runs with --no-remove. Without it, `install -y` settles a
# conflict by removing the installed side: on a Courier host, installing
# dovecot-imapd removed courier-imap (issue 15). With it apt-get refuses and
# changes nothing, and this script says which packages conflict, with what,
# and prints the advice. The one apt-get call here without --no-remove is
# the simulation (-s) that asks apt what it would have removed.
#
# Nor does it add what was not asked for (--no-install-recommends), or leave
# a new service running or enabled. The demo and the tests run Dovecot,
# memcached, Postfix and the rest as instances of their own on loopback; the
# system services their packages bring (Dovecot on every address, checking
# system passwords through PAM; Prometheus and its node exporter on every
# address) are not what was asked for. While apt-get runs, a policy-rc.d
# (invoke-rc.d(8)) keeps the services that were not on this host before
# from starting; afterwards those it kept are disabled, so they do not start
# at boot either, and the script names them. A service that was here before
# is started and restarted as apt would. An existing policy-rc.d is the
# admin's: it is left as it is, and decides.
#
# Plain sh, dpkg-query, apt-get, apt-cache and awk: it runs on a fresh
# Debian before anything else is installed.
set -u

label=apt-install
advice=
mode=install
while [ $# -gt 0 ]; do
	case $1 in
	--label) label=$2; shift 2 ;;
	--advice) advice=$2; shift 2 ;;
	--print) mode=print; shift ;;
	--simulate) mode=simulate; shift ;;
	--) shift; break ;;
	-*) echo "$0: unknown option $1" >&2; exit 2 ;;
	*) break ;;
	esac
done
if [ $# -eq 0 ]; then
	echo "usage: $0 [--label NAME] [--advice TEXT] [--print|--simulate] PACKAGE..." >&2
	exit 2
fi

if [ $mode = print ]; then
	echo "apt-get install -y -q --no-install-recommends --no-remove $*"
	exit 0
fi

missing=
for p in "$@"; do
	s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
	[ "$s" = installed ] || missing="$missing $p"
done
missing=${missing# }
if [ -z "$missing" ]; then
	echo "$label: every package is installed"
	exit 0
fi

# Relation fields of dpkg/apt stanzas on stdin, one line per package:
# "PACKAGE<TAB> provided names <TAB> conflicting names" (Conflicts + Breaks),
# names only: versions, alternatives and architectures dropped.
relations() {
	awk '
	function names(s,   n, a, i, x, out) {
		gsub(/\|/, ",", s)
		n = split(s, a, ",")
		out = ""
		for (i = 1; i <= n; i++) {
			x = a[i]
			sub(/^[ \t]+/, "", x)
			sub(/[ \t(:].*$/, "", x)
			if (x != "") out = out " " x
		}
		return out " "
	}
	function flush() {
		if (pkg != "") print pkg "\t" names(prov) "\t" names(conf)
		pkg = ""; prov = ""; conf = ""; field = ""
	}
	/^Package:/ { flush(); pkg = $2; sub(/:.*/, "", pkg); next }
	/^[ \t]/ {
		if (field == "p") prov = prov ", " $0
		else if (field == "c") conf = conf ", " $0
		next
	}
	/^Provides:/ { field = "p"; v = $0; sub(/^[^:]*:/, "", v); prov = prov ", " v; next }
	/^(Conflicts|Breaks):/ { field = "c"; v = $0; sub(/^[^:]*:/, "", v); conf = conf ", " v; next }
	/^$/ { flush(); next }
	{ field = "" }
	END { flush() }
	'
}

# After apt-get refused: which installed packages would it have removed, and
# which of the packages it would install conflict with them.
explain() {
	# simulation only (-s): without --no-remove, so the plan shows the removals
	plan=$(apt-get install -s -q --no-install-recommends "$@" 2>/dev/null)
	removed=$(printf '%s\n' "$plan" | awk '$1 == "Remv" { sub(/:.*/, "", $2); print $2 }' | sort -u)
	inst=$(printf '%s\n' "$plan" | awk '$1 == "Inst" { sub(/:.*/, "", $2); print $2 }' | sort -u)
	if [ -z "$removed" ]; then
		echo "$label: apt-get failed (its message is above); nothing was removed" >&2
		return
	fi
	{
		echo "#removed"
		# shellcheck disable=SC2086
		dpkg-query -W -f='Package: ${Package}\nProvides: ${Provides}\nConflicts: ${Conflicts}\nBreaks: ${Breaks}\n\n' $removed 2>/dev/null | relations
		echo "#inst"
		# shellcheck disable=SC2086
		[ -z "$inst" ] || apt-cache show --no-all-versions $inst 2>/dev/null | relations
	} | awk -F '\t' -v label="$label" '
	$0 == "#removed" { part = "r"; next }
	$0 == "#inst" { part = "i"; next }
	part == "r" { if (!($1 in rprov)) { rn[++nr] = $1 }; rprov[$1] = rprov[$1] $2; rconf[$1] = rconf[$1] $3; next }
	part == "i" { if (!($1 in iprov)) { in_[++ni] = $1 }; iprov[$1] = iprov[$1] $2; iconf[$1] = iconf[$1] $3; next }
	function hits(list, names,   n, a, k) {
		n = split(names, a, " ")
		for (k = 1; k <= n; k++) if (index(list, " " a[k] " ")) return 1
		return 0
	}
	END {
		for (j = 1; j <= nr; j++) {
			r = rn[j]; who = ""
			for (k = 1; k <= ni; k++) {
				i = in_[k]
				if (hits(iconf[i], r " " rprov[r]) || hits(rconf[r], i " " iprov[i]))
					who = who (who == "" ? "" : ", ") i
			}
			if (who != "")
				printf "%s: %s conflicts with %s, which this host has installed\n", label, who, r
			else
				printf "%s: installing them would remove %s, which this host has installed\n", label, r
		}
	}' >&2
	echo "$label: apt-get was told to remove nothing (--no-remove), so it installed nothing." >&2
	[ -z "$advice" ] || echo "$label: $advice" >&2
}

if [ $mode = install ] && [ "$(id -u)" != 0 ]; then
	echo "$label: run as root:  apt-get install --no-install-recommends --no-remove $missing"
	exit 2
fi

# The services on this host before apt-get runs: names of init scripts and
# systemd units (without .service or .socket), which policy-rc.d lets start.
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_MARK="# written by authbrake's scripts/apt-install.sh for one apt-get run"
known_services() {
	for f in /etc/init.d/* /lib/systemd/system/* /usr/lib/systemd/system/* \
	         /etc/systemd/system/*; do
		[ -e "$f" ] || continue
		f=${f##*/}
		case $f in *.service|*.socket) f=${f%.*} ;; *.*) continue ;; esac
		echo "$f"
	done | sort -u | tr '\n' ' '
}
# Any other it keeps from starting, and names in $held_log.
held_log=
hold_new_services() {
	[ -e $POLICY_RC ] || [ -L $POLICY_RC ] && return 0
	held_log=$(mktemp) || return 0
	# noclobber: created only if still absent (a policy-rc.d of the admin's wins)
	(set -C; cat >$POLICY_RC) 2>/dev/null <<-EOF || { rm -f "$held_log"; held_log=; return 0; }
	#!/bin/sh
	$POLICY_MARK
	# (removed after it): a service that was not on this host before does not start
	[ "\$1" = --quiet ] && shift
	id=\${1%.service}; id=\${id%.socket}
	case " $(known_services)" in *" \$id "*) exit 0 ;; esac
	echo "\$id" >>$held_log
	exit 101
	EOF
	chmod 755 $POLICY_RC
}
release_services() {
	if [ -n "$held_log" ] && grep -qxF "$POLICY_MARK" $POLICY_RC 2>/dev/null; then
		rm -f $POLICY_RC
	fi
}

# The services policy-rc.d kept from starting, disabled at boot too: init
# scripts with update-rc.d; systemd units with systemctl where systemd is
# installed, else with deb-systemd-helper, which made their links (it serves
# only maintainer scripts, hence DPKG_MAINTSCRIPT_PACKAGE).
disable_held() {
	[ -s "$held_log" ] || return 0
	ids=$(sort -u "$held_log")
	for id in $ids; do
		[ -f "/etc/init.d/$id" ] && update-rc.d "$id" disable >/dev/null 2>&1
		for u in "$id.service" "$id.socket"; do
			[ -f "/lib/systemd/system/$u" ] || [ -f "/usr/lib/systemd/system/$u" ] || continue
			if command -v systemctl >/dev/null 2>&1; then
				systemctl disable --quiet "$u"
			else
				DPKG_MAINTSCRIPT_PACKAGE=authbrake deb-systemd-helper disable "$u"
			fi >/dev/null 2>&1
		done
	done
	# shellcheck disable=SC2086
	echo "$label: not started, and disabled at boot (the demo and the tests run their own):" $ids
}

# shellcheck disable=SC2086
if [ $mode = install ]; then
	echo "$label: installing $missing"
	apt-get update -q || exit
	trap 'release_services; rm -f "$held_log"' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	hold_new_services
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		--no-remove $missing
	rc=$?
	release_services
	disable_held	# even if apt-get failed half-way
else
	echo "$label: simulating the installation of $missing"
	apt-get install -s -q --no-install-recommends --no-remove $missing
	rc=$?
fi
[ $rc = 0 ] && exit 0
# shellcheck disable=SC2086
explain $missing
exit $rc
