"""pam_authbrake.so in a real PAM stack, driven by Debian's pamtester.

Nothing is written to /etc/pam.d or /dev on the host: pamtester runs in a
private mount namespace where /etc/pam.d is a copy of the host's plus the
test's service file, and /dev/log (for pam_syslog) is a socket of the
test's (an overlay on /dev with the one symlink added, as courier.py does).
The stacks are preauth -> pam_unix -> authfail / authsucc, against a local
test user with a random password (harness.SystemUsers: marked with this
run's PID, removed after, or at the next start when this run was killed).
State lives in a private memcached; every test has its own secret, so its
keys are its own.

pam_unix prompts "Password:" only when it runs: a reply without the
prompt was refused by preauth before the password was checked.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

import harness
from harness import (PAM_MODULE, Dnsmasq, Memcached, SystemUsers, free_port,
                     host_preload, random_password, write_authbrake_conf)

MODULE = PAM_MODULE
PAMTESTER = shutil.which("pamtester") or "/usr/bin/pamtester"

PASSWORD = random_password()

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: useradd, mount namespaces")


# ------------------------------------------------------------------ syslog

class SyslogListener:
    """Collects the datagrams pam_syslog sends to /dev/log in pamtester's
    namespace (a socket in a private directory; only root writes to it)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ab-pam-syslog-")
        self.path = os.path.join(self.dir, "log")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.lines = []
        self.lock = threading.Lock()
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.lines.append(data.decode(errors="replace"))

    def mark(self):
        with self.lock:
            return len(self.lines)

    def since(self, mark, settle=0.3):
        time.sleep(settle)     # datagrams are queued; let the thread drain them
        with self.lock:
            return "\n".join(self.lines[mark:])

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def syslog():
    listener = SyslogListener()
    try:
        yield listener
    finally:
        listener.close()


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def test_user():
    if not MODULE.exists():
        pytest.fail(f"{MODULE} is missing: run make first")
    with SystemUsers() as users:
        yield users.add(PASSWORD, tag="test")


@pytest.fixture(scope="module")
def memcached():
    with Memcached() as mc:
        yield mc


# pamtester's namespace: the private /etc/pam.d, and /dev/log the test's
# socket (harness.DEV_LOG_SH)
_NAMESPACE = harness.DEV_LOG_SH + r"""
set -e
D=$1; SOCK=$2; shift 2
mount --bind "$D/pam.d" /etc/pam.d
dev_log "$D/dev-overlay" "$SOCK"
exec "$@"
"""


class PamStack:
    """A service file with the authbrake stack in a private copy of
    /etc/pam.d (in self.dir, with the mount point of pamtester's /dev
    overlay; remove() removes it), and pamtester."""

    count = 0

    def __init__(self, conf, syslog_listener, preauth_args="", common_args="",
                 text=None):
        PamStack.count += 1
        # the service name is the protocol in logs, which keeps 15 bytes
        self.name = f"abtest{os.getpid() % 100000}-{PamStack.count}"
        self.dir = Path(tempfile.mkdtemp(prefix="ab-pam-"))
        shutil.copytree("/etc/pam.d", self.dir / "pam.d", symlinks=True)
        (self.dir / "dev-overlay").mkdir()
        self.path = self.dir / "pam.d" / self.name
        self.syslog = syslog_listener
        conf_arg = f"conf={conf}" if conf else ""
        mod = str(MODULE)
        if text is not None:
            self.path.write_text(text)
            return
        self.path.write_text(
            "# written by test/integration/test_pam.py\n"
            f"auth requisite {mod} preauth {conf_arg} {common_args} {preauth_args}\n"
            "auth [success=1 default=bad] pam_unix.so nodelay\n"
            f"auth [default=die] {mod} authfail {conf_arg} {common_args}\n"
            f"auth sufficient {mod} authsucc {conf_arg} {common_args}\n"
            "auth requisite pam_deny.so\n"
            "account required pam_permit.so\n")

    def auth(self, user, password, rhost=None, timeout=30):
        """pamtester authenticate: (ok, output, seconds)."""
        cmd = [PAMTESTER, "-v"]
        if rhost is not None:
            cmd += ["-I", f"rhost={rhost}"]
        cmd += [self.name, user, "authenticate"]
        if host_preload():
            # a sanitizer build of the module: its runtimes must be loaded
            # first, into pamtester only (not unshare, sh or mount below)
            cmd = ["env", f"LD_PRELOAD={host_preload()}"] + cmd
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", _NAMESPACE,
               "sh", str(self.dir), self.syslog.path] + cmd
        start = time.monotonic()
        proc = subprocess.run(cmd, input=password + "\n", text=True,
                              capture_output=True, timeout=timeout)
        elapsed = time.monotonic() - start
        out = proc.stdout + proc.stderr
        ok = proc.returncode == 0
        assert ok == ("successfully authenticated" in out), out
        return ok, out, elapsed

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def make_stack(tmp_path, memcached, syslog, test_user):
    """make_stack(conf=None, preauth_args="", **conf_overrides) -> PamStack.
    Without conf, a fresh authbrake.conf with the harness's test thresholds
    and pam_max_delay = 0 (so the tarpit does not slow the test), and
    memcached timeouts of 2 s."""
    stacks = []

    def make(conf=None, preauth_args="", common_args="", text=None, **overrides):
        if conf is None:
            overrides.setdefault("pam_max_delay", 0)
            # a loaded CI machine must not turn a slow reply into fail_mode
            overrides.setdefault("poll_timeout", "2s")
            overrides.setdefault("connect_timeout", "2s")
            conf = write_authbrake_conf(tmp_path / f"conf{len(stacks)}",
                                        memcached, **overrides)
        if text is not None:
            text = "".join(
                line if line.startswith("#") else
                line.replace("pam_authbrake.so ", f"{MODULE} conf={conf} ")
                for line in text.splitlines(keepends=True))
        stack = PamStack(conf, syslog, preauth_args, common_args, text)
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.remove()


def refused_before_password(out):
    return "Password:" not in out and "Authentication failure" in out


def fail_from(stack, user, rhost, n, password_prefix="wrong"):
    for i in range(n):
        ok, out, _ = stack.auth(user, f"{password_prefix}-{i}", rhost)
        assert not ok, out
        assert "Password:" in out, "the password should have been checked:\n" + out


# --------------------------------------------------------------------- tests

def test_right_password_passes_wrong_fails(make_stack, test_user, syslog):
    stack = make_stack()
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.1")
    assert ok, out
    ok, out, _ = stack.auth(test_user, "not-it", "192.0.2.1")
    assert not ok and "Password:" in out, out


def test_blocked_address_refused_before_password_check(make_stack, test_user, syslog):
    stack = make_stack()
    attacker = "198.51.100.7"
    # a dictionary run: ip_max_accounts = 5 distinct accounts blocks the address
    for name in ("monday", "monica", "monroe", "montague", "monty"):
        ok, out, _ = stack.auth(name, "guess-1", attacker)
        assert not ok and "Password:" in out, out
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, attacker)
    assert not ok, out
    assert refused_before_password(out), out
    assert "Too many failed logins from your address" in out, out
    log = syslog.since(mark)
    assert (f'account="{test_user}" address={attacker} protocol={stack.name} '
            'decision=reject') in log, log
    assert 'reason="address blocked"' in log, log
    # the same account and password from elsewhere get in
    ok, out, _ = stack.auth(test_user, PASSWORD, "203.0.113.50")
    assert ok, out


def test_locked_account_spares_familiar_subnet(make_stack, test_user, syslog):
    stack = make_stack()
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.10")   # home network
    assert ok, out
    # account_lock_failures = 5 wrong passwords from unfamiliar places
    for i in range(5):
        ok, out, _ = stack.auth(test_user, f"guess-{i}", f"198.18.{i}.9")
        assert not ok and "Password:" in out, out
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, "203.0.113.77")
    assert not ok and refused_before_password(out), out
    assert "temporarily locked" in out, out
    assert 'reason="account locked for unfamiliar origins"' in syslog.since(mark)
    # another address in the familiar /24 still gets in with the password
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.99")
    assert ok, out


def test_mapped_ipv4_counts_as_ipv4(make_stack, test_user, syslog):
    stack = make_stack()
    addr = "198.51.100.33"
    # failures as authdaemond reports them (::ffff:a.b.c.d) and plain,
    # one address either way: 5 accounts in all block it
    for i, name in enumerate(("ann", "ben", "cat", "dan", "eve")):
        rhost = f"::ffff:{addr}" if i % 2 == 0 else addr
        ok, out, _ = stack.auth(name, "guess", rhost)
        assert not ok and "Password:" in out, out
    for rhost in (addr, f"::ffff:{addr}", f"::FFFF:{addr}"):
        mark = syslog.mark()
        ok, out, _ = stack.auth(test_user, PASSWORD, rhost)
        assert not ok and refused_before_password(out), (rhost, out)
        log = syslog.since(mark)
        assert f"address={addr} " in log and "::ffff" not in log.lower(), log
    ok, out, _ = stack.auth(test_user, PASSWORD, "198.51.100.34")
    assert ok, out


def test_no_rhost_applies_account_rules_only(make_stack, test_user, syslog):
    stack = make_stack()
    # a dictionary run without an address: more accounts than ip_max_accounts
    # and more failures than ip_block_failures, yet there is no address to block
    for i in range(9):
        ok, out, _ = stack.auth(f"nobody{i}", "guess", None)
        assert not ok and "Password:" in out, out
    ok, out, _ = stack.auth(test_user, PASSWORD, None)
    assert ok, out
    # the account rules still hold: 5 wrong passwords lock the account
    fail_from(stack, test_user, None, 5)
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, None)
    assert not ok and refused_before_password(out), out
    log = syslog.since(mark)
    assert f'account="{test_user}" address=- ' in log, log
    assert 'reason="account locked for unfamiliar origins"' in log, log
    # and an empty PAM_RHOST is the same as none
    ok, out, _ = stack.auth(test_user, PASSWORD, "")
    assert not ok and refused_before_password(out), out


def test_repeated_wrong_password_locks_nothing(make_stack, test_user, syslog):
    stack = make_stack(password_repeat="10m")
    phone = "203.0.113.5"
    # a phone retrying its stale password, past every threshold
    for _ in range(12):
        ok, out, _ = stack.auth(test_user, "stale-password", phone)
        assert not ok and "Password:" in out, out
    ok, out, _ = stack.auth(test_user, PASSWORD, phone)
    assert ok, out
    ok, out, _ = stack.auth(test_user, PASSWORD, "198.18.200.1")
    assert ok, out


def test_distinct_wrong_passwords_do_count(make_stack, test_user, syslog):
    """The counterpart of the test above: the same number of distinct
    guesses blocks the address (the password fingerprint reaches authfail)."""
    stack = make_stack(account_lock_failures=20)
    attacker = "203.0.113.6"
    fail_from(stack, test_user, attacker, 8)     # ip_block_failures = 8
    ok, out, _ = stack.auth(test_user, PASSWORD, attacker)
    assert not ok and refused_before_password(out), out


def test_broken_config_default_lets_password_check_decide(make_stack, tmp_path,
                                                          memcached, test_user, syslog):
    conf = write_authbrake_conf(tmp_path / "broken", memcached)
    with open(conf, "a") as f:
        f.write("ip_free_failures = lots\n")
    lineno = len(Path(conf).read_text().splitlines())
    stack = make_stack(conf=conf)
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.44")
    assert ok, out
    log = syslog.since(mark)
    assert (f"configuration error: {conf}:{lineno}: ip_free_failures = 'lots' "
            "is not a number; fail_mode=open") in log, log
    assert "the brake is off, the password check goes on" in log, log
    ok, out, _ = stack.auth(test_user, "wrong", "192.0.2.44")
    assert not ok and "Password:" in out, out
    log = syslog.since(mark)
    assert "this attempt is not recorded" in log, log


def test_broken_config_fail_mode_closed_argument_refuses(make_stack, tmp_path,
                                                         memcached, test_user, syslog):
    conf = write_authbrake_conf(tmp_path / "broken", memcached)
    with open(conf, "a") as f:
        f.write("this line has no equals sign\n")
    stack = make_stack(conf=conf, preauth_args="fail_mode=closed")
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.45")
    assert not ok and refused_before_password(out), out
    log = syslog.since(mark)
    assert "expected 'key = value'" in log, log
    assert "fail_mode=closed (from the module arguments): logins are refused" in log, log


def test_missing_config_and_bad_argument_are_reported(make_stack, tmp_path,
                                                       test_user, syslog):
    missing = str(tmp_path / "no-such.conf")
    stack = make_stack(conf=missing)
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.46")
    assert ok, out
    assert f"{missing}: cannot read: No such file or directory" in syslog.since(mark)

    stack = make_stack(common_args="ip_free_failures=-3 fail_mode=closed")
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.46")
    assert not ok and refused_before_password(out), out
    assert "module argument: ip_free_failures = '-3' is not a number" in syslog.since(mark)


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
def test_memcached_down_follows_fail_mode(make_stack, tmp_path, test_user, syslog,
                                          fail_mode):
    dead = f"127.0.0.1:{free_port()}"      # nothing listens there
    conf = write_authbrake_conf(tmp_path / "down", dead, fail_mode=fail_mode,
                                pam_max_delay=0)
    stack = make_stack(conf=conf)
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.60")
    log = syslog.since(mark)
    assert "memcached unreachable" in log and f"fail_mode={fail_mode}" in log, log
    if fail_mode == "open":
        assert ok, out
        ok, out, _ = stack.auth(test_user, "wrong", "192.0.2.60")
        assert not ok and "Password:" in out, out
    else:
        assert not ok and refused_before_password(out), out
        assert "temporarily unavailable" in out, out
        assert 'decision=reject reason="store unavailable, fail_mode=closed"' in log, log


def test_dnsbl_listed_rhost_refused_before_password_check(make_stack, test_user,
                                                          syslog):
    """dnsbl_action = reject under PAM: a listed PAM_RHOST is refused before
    pam_unix runs, a clean one is not; the answer is looked up once (a
    bounded lookup on a miss) and then read from memcached."""
    listed, clean = "198.51.100.20", "198.51.100.21"
    with Dnsmasq(listed=[listed]) as dns:
        stack = make_stack(dnsbl="bl.test", dnsbl_resolver=dns.resolver,
                           dnsbl_action="reject")
        mark = syslog.mark()
        for _ in range(2):
            ok, out, _ = stack.auth(test_user, PASSWORD, listed)
            assert not ok and refused_before_password(out), out
            assert "listed in a DNS blocklist" in out, out
        ok, out, _ = stack.auth(test_user, PASSWORD, clean)
        assert ok, out
        log = syslog.since(mark)
        assert (f'address={listed} protocol={stack.name} decision=reject '
                'reason="address listed in a DNSBL"') in log, log
        assert f"dnsbl: address={listed} listed in bl.test (127.0.0.2)" in log, log
        assert dns.queries(dns.reversed_name(listed, "bl.test")) == 1, dns.log_text()
        assert dns.queries(dns.reversed_name(clean, "bl.test")) == 1, dns.log_text()


def test_tarpit_is_capped_by_pam_max_delay(make_stack, test_user, syslog):
    # delays 1, 2, 4, 8 s after the 1st..4th failure; PAM sleeps at most 1 s
    stack = make_stack(ip_free_failures=0, tarpit_max="30s", pam_max_delay="1s")
    addr = "198.51.100.90"
    fail_from(stack, test_user, addr, 4)
    mark = syslog.mark()
    ok, out, elapsed = stack.auth(test_user, PASSWORD, addr)
    assert ok, out
    log = syslog.since(mark)
    assert (f'address={addr} protocol={stack.name} decision=tarpit delay=8s '
            'reason="address failures over ip_free_failures" slept=1s pam_max_delay=1s') in log, log
    assert elapsed < 6, elapsed      # far below the 8 s the engine asked for


@pytest.mark.parametrize("service", ["imap", "pop3"])
def test_shipped_courier_stacks(make_stack, test_user, syslog, service):
    """conf.d/pam.d/imap and pop3 as shipped (module path and conf= filled in)."""
    shipped = (Path(__file__).resolve().parents[2] / "conf.d" / "pam.d" / service).read_text()
    assert sum(1 for line in shipped.splitlines()
               if not line.startswith("#") and "pam_authbrake.so " in line) == 3
    stack = make_stack(text=shipped)
    ok, out, _ = stack.auth(test_user, PASSWORD, "::ffff:192.0.2.200")
    assert ok, out
    attacker = "::ffff:198.51.100.201"
    for name in ("u1", "u2", "u3", "u4", "u5"):
        ok, out, _ = stack.auth(name, "guess", attacker)
        assert not ok and "Password:" in out, out
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, attacker)
    assert not ok and refused_before_password(out), out
    assert 'address=198.51.100.201 ' in syslog.since(mark)
    ok, out, _ = stack.auth(test_user, PASSWORD, "::ffff:192.0.2.201")
    assert ok, out


def test_password_never_in_memcached_or_log(make_stack, memcached, test_user, syslog):
    stack = make_stack()
    secret_guess = "Hunter2-unique-guess"
    mark = syslog.mark()
    stack.auth(test_user, secret_guess, "198.18.9.9")
    log = syslog.since(mark)
    keys = [urllib.parse.unquote(k) for k in memcached.dump_keys()]
    assert keys
    for needle in (secret_guess, test_user, "198.18.9.9"):
        assert needle not in " ".join(keys)
    assert secret_guess not in log
    assert all(re.fullmatch(r"ab1:[a-z]{2}:[0-9a-f]{32}", k) for k in keys), keys


def test_hostname_rhost_falls_back_to_account_rules(make_stack, test_user, syslog):
    stack = make_stack()
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, "mail.example.com")
    assert ok, out
    log = syslog.since(mark)
    assert "invalid address" in log and "deciding without it" in log, log


def test_unreadable_secret_follows_the_files_fail_mode(make_stack, tmp_path, memcached,
                                                       test_user, syslog):
    conf = write_authbrake_conf(tmp_path / "nosecret", memcached, fail_mode="closed",
                                secret_file=str(tmp_path / "no-such-secret"))
    stack = make_stack(conf=conf)
    mark = syslog.mark()
    ok, out, _ = stack.auth(test_user, PASSWORD, "192.0.2.70")
    assert not ok and refused_before_password(out), out
    log = syslog.since(mark)
    assert "no-such-secret" in log and "fail_mode=closed: logins are refused" in log, log
