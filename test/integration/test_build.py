"""What `make deps`, `make deps-demo`, `make deps-test` and `make` do on a
host they must not harm: a Courier host (issue 15).

* `make deps` lists only what building needs: no Dovecot server, no
  memcached; dovecot-dev only where Dovecot is installed. `make deps-demo`
  lists what the demo runs and nothing of the test stack.
* every apt-get install runs with --no-remove, and when apt refuses because
  of a conflict the project says which packages conflict and what to do
  (checked with a stubbed apt on a pretend Courier host, and with a real
  apt-get -s on this Dovecot host);
* `make` without Dovecot's headers builds the PAM module and the CLI, says
  once that it skips authbrake-policy, and `make check` stops with the reason;
* no tracked file runs or shows an apt-get install without --no-remove.

Nothing here installs or removes a package: apt is either not run
(DEPS_MODE=print), stubbed, or asked to simulate (-s).
"""

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

BUILD_ONLY = {"build-essential", "pkg-config",
              "libsodium-dev", "libpam0g-dev"}
NOT_FOR_BUILDING = {"dovecot-imapd", "dovecot-pop3d", "dovecot-core",
                    "memcached"}
SKIP_NOTICE = "authbrake-policy (the Dovecot service) skipped"

# an install command, in code or in a doc, by apt-get or by apt
INSTALL_RE = re.compile(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install\b")


def make(*args, env=None, timeout=120):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=timeout)


def packages(line):
    """The package names of a printed install command (options dropped)."""
    words = line[INSTALL_RE.search(line).end():].split()
    return [w for w in words if not w.startswith("-")]


def printed(target, *extra):
    r = make("-s", target, "DEPS_MODE=print", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("apt-get ")]
    assert len(lines) == 1, f"make {target}: expected one apt-get line:\n{r.stdout}"
    assert INSTALL_RE.match(lines[0]), lines[0]
    return r.stdout, lines[0]


# --- (a) what deps and deps-test would install ------------------------------

def test_deps_lists_only_build_packages():
    for host in ("yes", "no"):
        out, line = printed("deps", f"DOVECOT_ON_HOST={host}")
        assert "--no-remove" in line.split(), line
        pkgs = set(packages(line))
        assert BUILD_ONLY <= pkgs, line
        assert not pkgs & NOT_FOR_BUILDING, f"make deps installs {pkgs & NOT_FOR_BUILDING}"
        assert not pkgs & {"courier-imap", "courier-pop"}, line
        if host == "yes":
            assert pkgs == BUILD_ONLY | {"dovecot-dev"}, line
            assert "will skip authbrake-policy" not in out
        else:
            assert pkgs == BUILD_ONLY, line
            notice = [ln for ln in out.splitlines() if "will skip authbrake-policy" in ln]
            assert len(notice) == 1, out
            assert "apt-get install --no-remove dovecot-dev" in notice[0]


def test_deps_test_lists_everything_the_tests_need():
    _, line = printed("deps-test")
    assert "--no-remove" in line.split(), line
    pkgs = set(packages(line))
    assert BUILD_ONLY | {"dovecot-dev"} <= pkgs
    assert {"dovecot-core", "dovecot-imapd", "dovecot-pop3d", "memcached",
            "libcmocka-dev", "python3-pytest", "pamtester", "wrk",
            "groff-base", "curl", "prometheus"} <= pkgs, line


def test_deps_deb_installs_debian_control_build_depends():
    """`make deb` installs (deps-deb) every Build-Depends of debian/control,
    and what dpkg-buildpackage and lintian need."""
    _, line = printed("deps-deb", "DOVECOT_ON_HOST=yes")
    assert "--no-remove" in line.split(), line
    pkgs = set(packages(line))
    control = (REPO_ROOT / "debian" / "control").read_text()
    field = re.search(r"^Build-Depends:(.*(?:\n[ \t].*)*)", control, re.M).group(1)
    wanted = {re.split(r"[ (\[<]", d.strip())[0] for d in field.split(",") if d.strip()}
    # debhelper-compat is a virtual package debhelper provides
    wanted = {"debhelper" if w == "debhelper-compat" else w for w in wanted}
    assert wanted == {"debhelper", "dovecot-dev", "libpam0g-dev",
                      "libsodium-dev", "pkg-config"}, wanted
    assert wanted | {"dpkg-dev", "lintian"} <= pkgs, line
    # a Courier host: no Dovecot, and no dovecot-authbrake built
    _, line = printed("deps-deb", "DOVECOT_ON_HOST=no")
    assert set(packages(line)) == pkgs - {"dovecot-dev"}, line
    assert "dovecot-dev <!pkg.authbrake.nodovecot>" in control
    _, line = printed("deps-test")
    assert {"debhelper", "dpkg-dev", "lintian"} <= set(packages(line)), \
        "CI's deps-test installs what scripts/test-packages.sh builds with: " + line


def test_deps_demo_lists_only_what_the_demo_runs():
    _, line = printed("deps-demo")
    assert "--no-remove" in line.split() and "--no-install-recommends" in line.split(), line
    pkgs = set(packages(line))
    assert pkgs == BUILD_ONLY | {"dovecot-dev", "dovecot-core", "dovecot-imapd",
                                 "dovecot-pop3d", "memcached", "python3", "curl",
                                 "netcat-openbsd"}, line


def test_scripts_install_what_they_run():
    text = (REPO_ROOT / "scripts" / "bootstrap.sh").read_text()
    assert re.search(r'^make -s "\$1"', text, re.M), text
    for script, target in (("demo.sh", "deps-demo"), ("check.sh", "deps-test")):
        text = (REPO_ROOT / script).read_text()
        assert re.search(rf"^sh scripts/bootstrap.sh {target}$", text, re.M), text


# --- (a) a conflict: apt refuses, the project explains ----------------------

STUBS = {
    # a Courier host: everything installed but Dovecot's IMAP and POP3 servers
    "dpkg-query": r"""
        fmt=$2; shift 2
        case $fmt in
        *db:Status-Status*)
            case $1 in
            dovecot-imapd|dovecot-pop3d)
                echo "dpkg-query: no packages found matching $1" >&2; exit 1 ;;
            *) printf installed ;;
            esac ;;
        *)
            for p; do case $p in
            courier-imap) printf 'Package: courier-imap\nProvides: imap-server\nConflicts: imap-server\nBreaks: courier-imap-ssl (<< 4.16.2+0.75.0-1~)\n\n' ;;
            courier-pop) printf 'Package: courier-pop\nProvides: pop3-server\nConflicts: pop3-server\nBreaks: courier-pop-ssl (<< 0.75.0-1~)\n\n' ;;
            esac; done ;;
        esac
        """,
    "apt-cache": r"""
        for p; do case $p in
        dovecot-imapd) printf 'Package: dovecot-imapd\nVersion: 1:2.3.19.1\nProvides: imap-server\nDepends: dovecot-core\n\n' ;;
        dovecot-pop3d) printf 'Package: dovecot-pop3d\nVersion: 1:2.3.19.1\nProvides: pop3-server\nDepends: dovecot-core\n\n' ;;
        esac; done
        """,
    "apt-get": r"""
        echo "$*" >> "$APT_LOG"
        [ "$1" = update ] && exit 0
        case " $* " in
        *" --no-remove "*)
            echo "The following packages will be REMOVED:"
            echo "  courier-imap courier-pop"
            echo "E: Packages need to be removed but remove is disabled." >&2
            exit 100 ;;
        *" -s "*)
            echo "Remv courier-imap [5.0.13+1.0.16-3+b6]"
            echo "Remv courier-pop [1.0.16-3+b6]"
            echo "Inst dovecot-imapd (1:2.3.19.1 Debian:12 [amd64])"
            echo "Inst dovecot-pop3d (1:2.3.19.1 Debian:12 [amd64])"
            exit 0 ;;
        esac
        echo "stub apt-get: would have installed, removing what conflicts" >&2
        exit 99
        """,
    "id": 'echo 0\n',
}


def test_conflict_is_refused_and_explained(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in STUBS.items():
        stub = bindir / name
        stub.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        stub.chmod(0o755)
    log = tmp_path / "apt.log"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", APT_LOG=str(log))
    r = make("-s", "deps-test", env=env)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    calls = log.read_text().splitlines()
    installs = [c for c in calls if c.split()[:1] == ["install"]]
    assert installs, calls
    for c in installs:
        args = c.split()
        # the real install, and the simulation of it, never may remove;
        # only the plan that explains the refusal (-s) goes without
        assert "--no-remove" in args or "-s" in args, c
    real = [c for c in installs if "-s" not in c.split()]
    assert real and all("-y" in c.split() for c in real), calls
    assert "dovecot-imapd" in real[0] and "dovecot-pop3d" in real[0], real
    assert "stub apt-get: would have installed" not in out
    assert ("deps-test: dovecot-imapd conflicts with courier-imap, "
            "which this host has installed") in r.stderr, out
    assert ("deps-test: dovecot-pop3d conflicts with courier-pop, "
            "which this host has installed") in r.stderr, out
    assert "--no-remove), so it installed nothing" in r.stderr, out
    assert "make deps && make && make install" in r.stderr, out


def test_conflict_explained_by_real_apt_simulation():
    """This Dovecot host seen from the other side: apt-get -s --no-remove of
    courier-imap and courier-pop (a simulation: nothing changes) refuses, and
    the script names Dovecot's servers as what they conflict with."""
    for p in ("dovecot-imapd", "dovecot-pop3d"):
        r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", p],
                           stdout=subprocess.PIPE, text=True)
        assert r.stdout == "installed", f"{p} is not installed: make deps-test"
    if subprocess.run(["apt-cache", "show", "courier-imap"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
        # a fresh machine may have no package lists yet (as in courier.py)
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
    r = subprocess.run(["sh", "scripts/apt-install.sh", "--simulate", "--label", "t",
                        "--advice", "ADVICE", "courier-imap", "courier-pop"],
                       cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "t: courier-imap conflicts with dovecot-imapd, which this host has installed" in r.stderr, out
    assert "t: courier-pop conflicts with dovecot-pop3d, which this host has installed" in r.stderr, out
    assert "t: ADVICE" in r.stderr, out


# --- (b) building without Dovecot's headers ---------------------------------

def test_build_without_dovecot_dev(tmp_path):
    b = tmp_path / "build"
    dest = tmp_path / "dest"
    nodovecot = ["B=" + str(b), "DOVECOT_CONFIG=" + str(tmp_path / "nonexistent")]
    r = make("-j2", *nodovecot)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert (b / "pam_authbrake.so").is_file(), out
    assert (b / "authbrake").is_file(), out
    assert (b / "libauthbrake.a").is_file(), out
    assert not (b / "authbrake-policy").exists(), out
    assert out.count(SKIP_NOTICE) == 1, out
    assert "-ldovecot" not in out and "cannot find" not in out, out

    r = make("-s", "install", "DESTDIR=" + str(dest), *nodovecot)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert out.count(SKIP_NOTICE) == 1, out
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    pamdir = subprocess.run(["pkg-config", "--variable=libdir", "pam"], text=True,
                            stdout=subprocess.PIPE).stdout.strip().lstrip("/")
    assert f"{pamdir}/security/pam_authbrake.so" in files, files
    assert "usr/local/sbin/authbrake" in files, files
    assert "usr/local/share/man/man8/pam_authbrake.8" in files, files
    assert "usr/local/share/man/man8/authbrake.8" in files, files
    assert "usr/local/share/man/man5/authbrake.conf.5" in files, files
    assert not any("authbrake-policy" in f for f in files), files

    # the tests need Dovecot: make check stops, with the reason, never skips.
    # PYTHON=false and no unit tests: should the stop be missing, make fails
    # without the reason instead of running this suite inside itself.
    for goal in ("check", "check-integration", "demo", "bench"):
        r = make(goal, "PYTHON=false", "UNIT_TESTS=", *nodovecot)
        assert r.returncode != 0, r.stdout + r.stderr
        assert "cannot build it: no " in r.stderr, r.stderr
        assert "pytest" not in r.stdout, r.stdout


def test_build_with_dovecot_dev_builds_the_policy_service():
    """The other side of the switch, without building: with dovecot-config
    present (this host), make would link authbrake-policy."""
    assert Path("/usr/lib/dovecot/dovecot-config").is_file(), "dovecot-dev is not installed"
    r = make("-n", "B=/nonexistent-build")
    assert r.returncode == 0, r.stderr
    assert "-o /nonexistent-build/authbrake-policy" in r.stdout, r.stdout
    assert SKIP_NOTICE not in r.stdout


# --- (c) no apt-get install without --no-remove anywhere --------------------

def logical_lines(text):
    """(first line number, line), a command continued with backslashes
    being one line."""
    start, acc = None, ""
    for n, line in enumerate(text.splitlines(), 1):
        if start is None:
            start = n
        if line.endswith("\\"):
            acc += line[:-1] + " "
            continue
        yield start, acc + line
        start, acc = None, ""
    if start is not None:
        yield start, acc


def repo_files():
    """The tracked files; outside a git checkout, every file but build/."""
    if shutil.which("git"):
        r = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            return [n for n in r.stdout.decode().split("\0") if n]
    skip = {".git", "build", "__pycache__"}
    return [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(REPO_ROOT).parts)]


def test_no_install_without_no_remove_in_tracked_files():
    bad = []
    names = repo_files()
    assert "scripts/apt-install.sh" in names, names
    for name in names:
        path = REPO_ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in logical_lines(text):
            if not INSTALL_RE.search(line) or "--no-remove" in line:
                continue
            # apt-get -s only simulates: scripts/apt-install.sh asks apt
            # what it would have removed, to name it
            if re.search(r"\binstall\s+(?:-\S+\s+)*-s\b", line):
                continue
            bad.append(f"{name}:{n}: {line.strip()}")
    assert not bad, "apt-get install without --no-remove:\n" + "\n".join(bad)
