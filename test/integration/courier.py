"""Real Courier IMAP and POP3 for authbrake's integration tests.

courier-imap and courier-pop conflict with dovecot-imapd/dovecot-pop3d as
packages, so they are not installed: their .debs are fetched once with
`apt-get download` into build/courier-debs/, unpacked with `dpkg -x` into
build/courier-root/, and run inside a private mount namespace
(`unshare -m --propagation private`) where bind mounts put the unpacked
files and this test's own config at the paths compiled into the binaries.
See COURIER-NOTES.md for what was found by experiment. Standard library only.

API:

ensure_courier_root() -> Path       download + unpack (reused when present)

class SyslogSink(path)              a /dev/log for the namespace: a unix
    datagram socket whose messages (pam_syslog lines) land in .lines()

class Courier(dir=None, daemons=5)  context manager
    authdaemond (authmodulelist="authpam"), imapd and pop3d via couriertcpd
    on free 127.0.0.1 ports. PAM stacks live in .pam_dir (bind-mounted over
    /etc/pam.d) and are read at every login, so a test may swap them:
    .set_pam_stack(service, text)   (+ files it @includes, copied from /etc/pam.d)
    .start() .stop()  .imap_port .pop3_port .pids()
    .imap_login(user, pw, src) / .pop3_login(user, pw, src) -> (ok, msg, seconds)
    .log_text() (authdaemond + couriertcpd stderr)  .syslog_text() / .syslog_mark()

class SystemUsers()                 harness.SystemUsers (marked, removed
    after, or by the next run when this one was killed) with a ~/Maildir:
    .add(password, tag="c") -> name   .remove_all()

pam_unix_stack() -> str             the baseline stack: pam_unix only
authbrake_stack(service, conf) -> str   conf.d/pam.d/SERVICE with the module
    path replaced by PAM_MODULE (the build under test) and conf= set to conf
"""

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import harness

REPO_ROOT = harness.REPO_ROOT
# per Debian release: a tree shared by a Debian 12 and a Debian 13 root
# keeps both
DEB_DIR = harness.CACHE_DIR / f"courier-debs{harness.DEBIAN_SUFFIX}"
ROOT = harness.CACHE_DIR / f"courier-root{harness.DEBIAN_SUFFIX}"
PAM_MODULE = harness.PAM_MODULE
PAM_CONF_DIR = REPO_ROOT / "conf.d" / "pam.d"

# The binary packages Courier's imapd/pop3d/authdaemond are unpacked from.
# Their shared-library dependencies that do not conflict with Dovecot are
# installed normally (test/integration/build.mk, DEB_EXTRA).
COURIER_PACKAGES = ("courier-base", "courier-authlib", "courier-authdaemon",
                    "courier-imap", "courier-pop")

# Paths compiled into the Courier binaries, each covered by a bind mount
# inside the namespace. The host needs an (empty) directory at each to
# mount on; ensure_mountpoints() makes the missing ones.
MOUNTPOINTS = ("/etc/courier", "/run/courier", "/usr/lib/courier",
               "/usr/lib/courier-authlib")

_lock = threading.Lock()


def _run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, check=False, **kw)


def _debs_present():
    if not DEB_DIR.is_dir():
        return False
    names = [p.name for p in DEB_DIR.glob("*.deb")]
    return all(any(n.startswith(pkg + "_") for n in names)
               for pkg in COURIER_PACKAGES)


def ensure_courier_root():
    """Fetch and unpack the Courier packages once; return build/courier-root."""
    with _lock:
        stamp = ROOT / ".unpacked"
        if stamp.exists() and _debs_present():
            return ROOT
        if not _debs_present():
            DEB_DIR.mkdir(parents=True, exist_ok=True)
            cmd = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root",
                   *COURIER_PACKAGES]
            r = _run(cmd, cwd=DEB_DIR)
            if r.returncode != 0:
                # a fresh machine may have no package lists yet
                _run(["apt-get", "update", "-q"])
                r = _run(cmd, cwd=DEB_DIR)
            if r.returncode != 0 or not _debs_present():
                raise RuntimeError("apt-get download of the Courier packages failed:\n"
                                   + r.stdout.decode(errors="replace"))
        if ROOT.exists():
            shutil.rmtree(ROOT)
        ROOT.mkdir(parents=True)
        for deb in sorted(DEB_DIR.glob("*.deb")):
            r = _run(["dpkg-deb", "-x", str(deb), str(ROOT)])
            if r.returncode != 0:
                raise RuntimeError(f"dpkg -x {deb} failed:\n"
                                   + r.stdout.decode(errors="replace"))
        stamp.write_text("\n".join(sorted(p.name for p in DEB_DIR.glob("*.deb"))) + "\n")
        return ROOT


# Mount points made by this process, removed again by the last Courier.
_made_mountpoints = []
_running = 0


def _ensure_mountpoints():
    global _running
    with _lock:
        for d in MOUNTPOINTS:
            if not os.path.isdir(d):
                os.makedirs(d)
                _made_mountpoints.append(d)
        _running += 1


def _release_mountpoints():
    global _running
    with _lock:
        _running -= 1
        if _running > 0:
            return
        while _made_mountpoints:
            d = _made_mountpoints.pop()
            try:
                os.rmdir(d)          # only if still empty
            except OSError:
                pass


# ------------------------------------------------------------------ syslog

class SyslogSink:
    """A unix datagram socket standing in for /dev/log inside the namespace."""

    def __init__(self, path):
        self.path = str(path)
        self._lines = []
        self._cond = threading.Condition()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                continue
            text = data.decode(errors="replace").rstrip("\0\n")
            # "<PRI>Mon DD HH:MM:SS ident[pid]: message" -> "ident[pid]: message"
            text = re.sub(r"^<\d+>(\w{3} [ \d]\d \d\d:\d\d:\d\d )?", "", text)
            with self._cond:
                self._lines.append(text)
                self._cond.notify_all()

    def mark(self):
        with self._cond:
            return len(self._lines)

    def lines(self, since=0):
        with self._cond:
            return list(self._lines[since:])

    def wait(self, regex, since=0, timeout=5.0):
        """The first line after mark `since` matching regex, or None."""
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[since:]:
                    m = pat.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(2)
        try:
            os.unlink(self.path)
        except OSError:
            pass


# ------------------------------------------------------------------ users

class SystemUsers(harness.SystemUsers):
    """harness.SystemUsers with a ~/Maildir each, which Courier's imapd and
    pop3d open after the login."""

    def add(self, password, tag="c"):
        name = super().add(password, tag)
        pw = pwd.getpwnam(name)
        for sub in ("", "/cur", "/new", "/tmp"):
            path = os.path.join(pw.pw_dir, "Maildir" + sub)
            os.makedirs(path, exist_ok=True)
            os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(path, 0o700)
        return name


# ------------------------------------------------------------- PAM stacks

def pam_unix_stack():
    """The baseline: the password checked by pam_unix alone."""
    return ("# baseline written by test/integration/courier.py\n"
            "auth     required  pam_unix.so\n"
            "account  required  pam_unix.so\n"
            "session  required  pam_permit.so\n")


_MODULE_RE = re.compile(r"(?<!\S)\S*pam_authbrake\.so(?!\S)")


def authbrake_stack(service, conf_path, module=PAM_MODULE):
    """The project's stack for service, pointing at the built module and conf."""
    path = PAM_CONF_DIR / service
    text = path.read_text()
    out = []
    for line in text.splitlines():
        body = line.split("#", 1)[0]
        if _MODULE_RE.search(body):
            line = _MODULE_RE.sub(str(module), body, count=1).rstrip()
            line = re.sub(r"(?<!\S)conf=\S+", "", line).rstrip()
            line = f"{line} conf={conf_path}"
        out.append(line)
    return "\n".join(out) + "\n"


_INCLUDE_RE = re.compile(
    r"^\s*(?:@include\s+(\S+)|-?\w+\s+(?:include|substack)\s+(\S+))", re.M)


# ------------------------------------------------------------------ Courier

_SCRIPT = harness.DEV_LOG_SH + r"""
set -eu
T="$1"; R="$2"
mount --bind "$T/etc-courier" /etc/courier
mount --bind "$T/pam.d" /etc/pam.d
mount --bind "$T/run" /run/courier
mount --bind "$R/usr/lib/courier" /usr/lib/courier
mount --bind "$R/usr/lib/courier-authlib" /usr/lib/courier-authlib
dev_log "$T/dev-overlay" "$T/syslog.sock"
mkdir -p /run/courier/authdaemon
export LD_LIBRARY_PATH="$R/usr/lib"
# AB_PRELOAD: the sanitizer runtimes, for authdaemond only (its PAM workers
# dlopen() pam_authbrake.so); the tools above need not be run under them
LD_PRELOAD="$AB_PRELOAD" \
"$R/usr/lib/courier/courier-authlib/authdaemond" </dev/null >>"$T/authdaemond.log" 2>&1 &
echo $! > "$T/authdaemond.pid"
i=0
while [ ! -S /run/courier/authdaemon/socket ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
# couriertcpd 5.2 (Debian 13) has dropped ident lookups and the option
noident=
grep -q noidentlookup "$R/usr/sbin/couriertcpd" && noident=-noidentlookup
tcpd() {  # PORT LOGIN-BINARY SERVER-BINARY ENV-FILE LOG
    env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$R/usr/lib" \
        sh -c 'set -a; . "$1"; shift; exec "$@"' sh "$4" \
        "$R/usr/sbin/couriertcpd" -address=127.0.0.1 -maxprocs=$MAXPROCS \
        -maxperip=$MAXPROCS -nodnslookup $noident "$1" "$2" "$3" Maildir \
        </dev/null >>"$5" 2>&1 &
}
tcpd "$IMAP_PORT" /usr/lib/courier/courier/imaplogin "$R/usr/bin/imapd" \
    "$T/etc-courier/imapd.env" "$T/imapd.log"
echo $! > "$T/imapd.pid"
tcpd "$POP3_PORT" /usr/lib/courier/courier/courierpop3login \
    /usr/lib/courier/courier/courierpop3d "$T/etc-courier/pop3d.env" "$T/pop3d.log"
echo $! > "$T/pop3d.pid"
wait
"""


class Courier(harness._ServerInDir):
    """authdaemond (authpam) + imapd + pop3d from the unpacked packages."""

    def __init__(self, dir=None, daemons=5, maxprocs=40):
        self.root = ensure_courier_root()
        self.dir = str(dir) if dir else tempfile.mkdtemp(prefix="ab-courier-")
        self._own_dir = dir is None
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.daemons = daemons
        self.maxprocs = maxprocs
        self.imap_port = harness.free_port()
        self.pop3_port = harness.free_port()
        self.etc_dir = os.path.join(self.dir, "etc-courier")
        self.pam_dir = os.path.join(self.dir, "pam.d")
        self.run_dir = os.path.join(self.dir, "run")
        self.proc = None
        self.syslog = None
        self._mounted = False
        self._write_config()

    # -- configuration
    def _write_config(self):
        for d in (self.etc_dir, self.pam_dir, self.run_dir,
                  os.path.join(self.dir, "dev-overlay")):
            os.makedirs(d, exist_ok=True)
        src = self.root / "etc" / "courier"
        rc = (src / "authdaemonrc").read_text()
        rc = re.sub(r'(?m)^authmodulelist=.*$', 'authmodulelist="authpam"', rc)
        rc = re.sub(r'(?m)^daemons=.*$', f'daemons={self.daemons}', rc)
        rc = re.sub(r'(?m)^DEBUG_LOGIN=.*$', 'DEBUG_LOGIN=0', rc)
        with open(os.path.join(self.etc_dir, "authdaemonrc"), "w") as f:
            f.write(rc)
        # imapd/pop3d read their settings from the environment only (the
        # init scripts source these files): the packaged defaults, minus TLS.
        for name, extra in (("imapd", "IMAP_STARTTLS=NO\nIMAP_TLS_REQUIRED=0\n"),
                            ("pop3d", "POP3_STARTTLS=NO\nPOP3_TLS_REQUIRED=0\n")):
            text = (src / name).read_text()
            with open(os.path.join(self.etc_dir, name + ".env"), "w") as f:
                f.write(text + "\n# test overrides\n" + extra)
        with open(os.path.join(self.pam_dir, "other"), "w") as f:
            f.write("auth     required pam_deny.so\naccount  required pam_deny.so\n"
                    "password required pam_deny.so\nsession  required pam_deny.so\n")
        for service in ("imap", "pop3"):
            self.set_pam_stack(service, pam_unix_stack())

    def set_pam_stack(self, service, text):
        """Write the PAM stack for service (read anew at every login)."""
        self._copy_includes(text)
        path = os.path.join(self.pam_dir, service)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def _copy_includes(self, text, seen=None):
        seen = set() if seen is None else seen
        for m in _INCLUDE_RE.finditer(text):
            name = m.group(1) or m.group(2)
            if name.startswith("/") or name in seen:
                continue
            seen.add(name)
            src = os.path.join("/etc/pam.d", name)
            with open(src) as f:
                included = f.read()
            shutil.copyfile(src, os.path.join(self.pam_dir, name))
            self._copy_includes(included, seen)

    # -- life cycle
    def start(self, timeout=20):
        if self.proc is not None:
            return self
        _ensure_mountpoints()
        self._mounted = True
        self.syslog = SyslogSink(os.path.join(self.dir, "syslog.sock"))
        script = os.path.join(self.dir, "start.sh")
        with open(script, "w") as f:
            f.write(_SCRIPT)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "IMAP_PORT": str(self.imap_port), "POP3_PORT": str(self.pop3_port),
               "MAXPROCS": str(self.maxprocs), "AB_PRELOAD": harness.host_preload()}
        env.update(harness.sanitizer_env())
        if "ASAN_OPTIONS" in env:
            # No leak check in authdaemond: Courier's own code leaks a
            # strdup() in every authdaemond process at exit, and LSan cannot
            # tell its leaks from the module's (a suppression matches any
            # frame, and the module allocates under authdaemond's frames).
            # The module's leaks are checked under pamtester (test_pam.py),
            # which runs the same code; memory errors are still caught here.
            env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"].replace("detect_leaks=1",
                                                              "detect_leaks=0")
        self._out = open(os.path.join(self.dir, "namespace.log"), "ab")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", script,
             self.dir, str(self.root)],
            env=env, stdout=self._out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        ok = (harness.wait_port(self.imap_port, timeout, proc=self.proc) and
              harness.wait_port(self.pop3_port, timeout, proc=self.proc) and
              self._wait_socket(timeout))
        if not ok:
            err = self.diagnostics()
            self.stop()
            raise RuntimeError("Courier did not start:\n" + err)
        return self

    def _wait_socket(self, timeout):
        sock = os.path.join(self.run_dir, "authdaemon", "socket")
        deadline = time.monotonic() + timeout
        while not os.path.exists(sock):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return True

    def pids(self):
        """PIDs of authdaemond and the two couriertcpd (from their pid files)."""
        out = {}
        for name in ("authdaemond", "imapd", "pop3d"):
            try:
                with open(os.path.join(self.dir, name + ".pid")) as f:
                    out[name] = int(f.read().strip())
            except (OSError, ValueError):
                pass
        return out

    def _namespace_pids(self):
        """Every process in this instance's mount namespace (but not the shell)."""
        if self.proc is None:
            return []
        try:
            ns = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")
        except OSError:
            return []
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.proc.pid:
                continue
            try:
                if os.readlink(f"/proc/{name}/ns/mnt") == ns:
                    out.append(int(name))
            except OSError:
                pass
        return out

    def stop(self):
        if self.proc is not None:
            leftovers = self._namespace_pids()
            for pid in self.pids().values():
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            # imapd/pop3d sessions or authdaemond workers that outlived
            # their parent: only processes of this namespace, by PID
            harness.reap(leftovers)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
            self.proc = None
            self._out.close()
        if self.syslog is not None:
            self.syslog.close()
            self.syslog = None
        if self._mounted:
            self._mounted = False
            _release_mountpoints()

    # -- inspection
    def log_text(self):
        parts = []
        for name in ("namespace.log", "authdaemond.log", "imapd.log", "pop3d.log"):
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    parts.append(f"--- {name}\n" + f.read().decode(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def diagnostics(self):
        return self.log_text()[-6000:] + "\n--- syslog\n" + self.syslog_text()[-4000:]

    def syslog_mark(self):
        return self.syslog.mark() if self.syslog else 0

    def syslog_text(self, since=0):
        return "\n".join(self.syslog.lines(since)) if self.syslog else ""

    # -- clients (harness's, bound to a 127.x.y.z source)
    def imap_login(self, user, password, src="127.0.0.1", timeout=30):
        return harness.imap_login(self.imap_port, user, password, src, timeout)

    def pop3_login(self, user, password, src="127.0.0.1", timeout=30):
        return harness.pop3_login(self.pop3_port, user, password, src, timeout)

    def __repr__(self):
        return f"<Courier imap={self.imap_port} pop3={self.pop3_port} dir={self.dir}>"


@contextlib.contextmanager
def serving(dir, daemons):
    """A started Courier in dir for a module's tests; its diagnostics are
    printed when a test fails, and it is stopped at the end."""
    srv = Courier(dir=dir, daemons=daemons)
    try:
        srv.start()
        yield srv
    except BaseException:
        print(srv.diagnostics())
        raise
    finally:
        srv.stop()
