"""fail2ban on authbrake's block lines: the shipped filter and jail
(conf.d/fail2ban/) against what the real components log.

- Debian's fail2ban-regex against Dovecot's log after a short attack on the
  real Dovecot + authbrake-policy, and against the syslog lines
  pam_authbrake writes under pamtester (test_pam.py's stack and listener):
  exactly the address blocks match, never a subnet block, an account lock
  or a login written to look like a block line.
- A real fail2ban-server (its own config dir, socket, pidfile and database
  in a temporary directory, stopped by PID) with the shipped jail and
  nftables action, inside a network namespace of its own where memcached,
  Dovecot and the IMAP clients live too: after authbrake blocks an address,
  its next TCP connection to IMAP is refused by the firewall; `fail2ban-client
  unban` plus `authbrake unblock` let it log in again.
"""

import configparser
import ctypes
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import harness
from harness import CLI_BIN, REPO_ROOT
from test_pam import PamStack, SyslogListener

F2B_CONF = REPO_ROOT / "conf.d" / "fail2ban"
FILTER = F2B_CONF / "filter.d" / "authbrake.conf"
FAIL2BAN_REGEX = shutil.which("fail2ban-regex") or "/usr/bin/fail2ban-regex"
FAIL2BAN_SERVER = shutil.which("fail2ban-server") or "/usr/bin/fail2ban-server"
FAIL2BAN_CLIENT = shutil.which("fail2ban-client") or "/usr/bin/fail2ban-client"
# Debian's stock configuration, copied under the test's own directory
F2B_ETC = Path("/etc/fail2ban")

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: /etc/pam.d, network namespaces, nft")

# Logins written to look like a block line of some other address: logged
# quoted (decision lines, lock lines) or by Dovecot's own processes, they
# must never get that address banned.
FORGED_QUOTE = 'x" address={ip} blocked'
FORGED_LINE = "address {ip} blocked for 1h: 9 failures, 9 accounts tried"


def fail2ban_regex(log_path):
    """fail2ban-regex LOG FILTER: (addresses matched in order, matched line
    count, full output). The count comes from its summary line."""
    r = subprocess.run([FAIL2BAN_REGEX, "-o", "ip", str(log_path), str(FILTER)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    ips = r.stdout.split()
    full = subprocess.run([FAIL2BAN_REGEX, str(log_path), str(FILTER)],
                          capture_output=True, text=True, timeout=60)
    assert full.returncode == 0, full.stdout + full.stderr
    m = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed",
                  full.stdout, re.M)
    assert m, full.stdout
    print(full.stdout)
    return ips, int(m[3]), full.stdout


# --------------------------------------------------- fail2ban-regex: Dovecot

def test_filter_matches_dovecot_address_blocks_only(memcached, authbrake_conf,
                                                    dovecot_factory, policy_binary):
    # net_max_accounts low enough for a subnet block within a few logins;
    # ip_free_failures = 2: the 4th and 5th guesses are tarpits (logged)
    conf = authbrake_conf(memcached, net_max_accounts=6, ip_free_failures=2)
    # auth_username_chars empty: Dovecot hands any login to the policy, so
    # the forged names reach authbrake's lines (the default would refuse
    # them before the policy check, and prove nothing)
    dc = dovecot_factory(policy_conf=conf,
                         settings={"auth_username_chars": ""})
    mark = dc.log_mark()

    # a dictionary run from one address, forged names among the guesses:
    # ip_max_accounts = 5 distinct accounts block it
    attacker = "127.0.31.1"
    # (last, so that their decisions are tarpits: logged, unlike an allow)
    names = ["monday", "monica", "monroe",
             FORGED_QUOTE.format(ip="127.0.31.77"),
             FORGED_LINE.format(ip="127.0.31.78")]
    for name in names:
        ok, out, _ = dc.auth_test(name, "guess-1", attacker)
        assert not ok, out
    # IPv6: blocked, and logged, as its /64
    attacker6 = "2001:db8:31:1::5"
    for name in ["tuesday", "tudor", "tucker", "tully", "tupac"]:
        ok, out, _ = dc.auth_test(name, "guess-1", attacker6)
        assert not ok, out
    # an account locked under a forged name: account_lock_failures = 5
    # failures, each from an address of its own (none of them blocked)
    victim = FORGED_LINE.format(ip="127.0.32.79")
    for i in range(5):
        ok, out, _ = dc.auth_test(victim, f"guess-{i}", f"127.0.32.{i + 1}")
        assert not ok, out
    # a subnet block: 4 addresses of 127.0.33.0/24, 2 accounts each
    for i in range(4):
        for j in range(2):
            ok, out, _ = dc.auth_test(f"user{i}x{j}", "guess", f"127.0.33.{i + 1}")
            assert not ok, out
    harness.settle_log(dc)

    blocks = harness.address_blocks(dc, mark)
    assert [(b[0], b[1]) for b in blocks] == [("address", attacker),
                                              ("address", "2001:db8:31:1::/64"),
                                              ("subnet", "127.0.33.0/24")], blocks
    locks = harness.account_locks(dc, mark)
    assert [l[0] for l in locks] == [victim], locks
    log = dc.log_since(mark)
    # the quote in a login is escaped: no field of its own
    assert 'account="x\\" address=127.0.31.77 blocked" address=127.0.31.1 ' in log, log

    ips, matched, _ = fail2ban_regex(dc.log_path)
    assert ips == [attacker, "2001:db8:31:1::/64"]
    assert matched == 2


# ------------------------------------------------------ fail2ban-regex: PAM

@pytest.fixture
def syslog_listener():
    listener = SyslogListener()
    try:
        yield listener
    finally:
        listener.close()


def syslog_file(lines, path, host="mail"):
    """Datagrams as rsyslog writes them to /var/log/auth.log: the <PRI>
    dropped, the host name after the timestamp."""
    with open(path, "w") as f:
        for line in lines:
            m = re.match(r"<\d+>(\w{3} [ \d]\d \d\d:\d\d:\d\d) (.*)", line, re.S)
            assert m, line
            f.write(f"{m[1]} {host} {m[2].rstrip()}\n")
    return path


def test_filter_matches_pam_address_blocks_only(authbrake_conf, memcached,
                                                syslog_listener, tmp_path):
    conf = authbrake_conf(memcached, pam_max_delay=0, ip_free_failures=2, poll_timeout="2s",
                          connect_timeout="2s")
    stack = PamStack(conf, syslog_listener)
    try:
        mark = syslog_listener.mark()
        attacker = "198.51.100.31"
        # pam_max_delay = 0: the tarpits that ip_free_failures = 2 sets are
        # logged, not slept
        for name in ["monday", "monica", "monroe", FORGED_QUOTE.format(ip="198.51.100.77"),
                     FORGED_LINE.format(ip="198.51.100.78")]:
            ok, out, _ = stack.auth(name, "guess-1", attacker)
            assert not ok and "Password:" in out, out
        # refused before its password is checked, with its reason in the log
        ok, out, _ = stack.auth("monty", "guess-1", attacker)
        assert not ok and "Password:" not in out, out
        victim = FORGED_LINE.format(ip="198.51.100.79")
        for i in range(5):
            ok, out, _ = stack.auth(victim, f"guess-{i}", f"203.0.113.{i + 1}")
            assert not ok, out
        text = syslog_listener.since(mark)
    finally:
        stack.remove()

    lines = text.splitlines()
    tag = rf"pamtester: pam_authbrake\({re.escape(stack.name)}:auth\): "
    assert any(re.search(tag + rf"address {attacker} blocked for \w+: \d+ failures, "
                         r"5 accounts tried$", l) for l in lines), text
    assert any(re.search(tag + rf'account="monty" address={attacker} protocol=\S+ '
                         r'decision=reject .*reason="address blocked"', l)
               for l in lines), text
    assert any(re.search(tag + re.escape('account="x\\" address=198.51.100.77 blocked" '
                                         f'address={attacker} ') + r'.*decision=tarpit', l)
               for l in lines), text
    assert any(re.search(tag + r'account "address 198\.51\.100\.79 blocked for 1h: '
                         r'9 failures, 9 accounts tried" locked for unfamiliar', l)
               for l in lines), text
    ips, matched, _ = fail2ban_regex(syslog_file(lines, tmp_path / "auth.log"))
    assert ips == [attacker]
    assert matched == 1


# ------------------------------------- fail2ban-server + nftables, end to end

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetNamespace:
    """A network namespace with only loopback, held by an `unshare --net
    sleep` process stopped by PID. .run(fn, *args) runs fn in a thread that
    has entered it: the sockets it opens and the processes it starts (they
    inherit the thread's namespace) live there."""

    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"],
                                       stdin=subprocess.DEVNULL)
        self.path = f"/proc/{self.holder.pid}/ns/net"
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(self.path) == own:
            if time.monotonic() > deadline or self.holder.poll() is not None:
                self.close()
                raise RuntimeError("unshare --net did not make a namespace")
            time.sleep(0.02)
        self.pool = ThreadPoolExecutor(1, initializer=self._enter)
        self.run(subprocess.run, ["ip", "link", "set", "lo", "up"], check=True)

    def _enter(self):
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
        finally:
            os.close(fd)

    def run(self, fn, *args, **kw):
        return self.pool.submit(fn, *args, **kw).result()

    def close(self):
        if getattr(self, "pool", None):
            self.pool.shutdown()
        harness._stop_process(self.holder, timeout=5)


@pytest.fixture
def netns():
    ns = NetNamespace()
    try:
        yield ns
    finally:
        ns.close()


class Fail2ban:
    """fail2ban-server in the foreground with Debian's stock configuration
    plus the shipped authbrake files, everything (config, socket, pidfile,
    database, log) under dir; stopped by PID."""

    def __init__(self, dir, jail_local):
        self.dir = Path(dir)
        self.conf = self.dir / "etc"
        # the stock files only: no jail of this host's (jail.d: Debian's
        # sshd), none of its local changes
        shutil.copytree(F2B_ETC, self.conf,
                        ignore=shutil.ignore_patterns("jail.d", "fail2ban.d", "*.local"))
        shutil.copytree(F2B_CONF, self.conf, dirs_exist_ok=True)
        (self.conf / "jail.d" / "authbrake.local").write_text(jail_local)
        self.sock = self.dir / "fail2ban.sock"
        self.pidfile = self.dir / "fail2ban.pid"
        self.log = self.dir / "fail2ban.log"
        self.dbfile = self.dir / "fail2ban.sqlite3"
        (self.conf / "fail2ban.local").write_text(
            f"[Definition]\ndbfile = {self.dbfile}\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [FAIL2BAN_SERVER, "-f", "-x", "-c", str(self.conf), "-s", str(self.sock),
             "-p", str(self.pidfile), "--logtarget", str(self.log),
             "--loglevel", "INFO", "start"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            r = self.client("status", "authbrake", check=False)
            if r.returncode == 0:
                return self
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("fail2ban-server did not start:\n" + self.log_text())
            time.sleep(0.2)

    def client(self, *args, check=True):
        r = subprocess.run([FAIL2BAN_CLIENT, "-c", str(self.conf), "-s", str(self.sock),
                            *args], capture_output=True, text=True, timeout=30)
        if check:
            assert r.returncode == 0, r.stdout + r.stderr + self.log_text()
        return r

    def banned(self):
        out = self.client("status", "authbrake").stdout
        m = re.search(r"Banned IP list:\s*(.*)$", out, re.M)
        assert m, out
        return m[1].split()

    def ban_lengths(self, ip):
        """Seconds of each ban of ip, in order, from fail2ban's database
        (it keeps them after they ran out)."""
        db = sqlite3.connect(f"file:{self.dbfile}?mode=ro", uri=True, timeout=10)
        try:
            return [row[0] for row in db.execute(
                "SELECT bantime FROM bans WHERE jail = 'authbrake' AND ip = ? "
                "ORDER BY timeofban, bancount", (ip,))]
        finally:
            db.close()

    def wait_ban_count(self, ip, n, timeout=30):
        deadline = time.monotonic() + timeout
        while len(self.ban_lengths(ip)) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(self.ban_lengths(ip)) == n, self.log_text()

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            harness._stop_process(self.proc, timeout=15)
            self.proc = None


def connect(port, src, timeout=3):
    """A TCP connection to 127.0.0.1:port from src: None when it opened,
    else the error."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        return None
    except OSError as e:
        return e
    finally:
        s.close()


def cli(conf, *args):
    r = subprocess.run([str(CLI_BIN), "-c", str(conf), *args],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_blocked_address_banned_at_firewall_then_let_in(
        netns, memcached_factory, authbrake_conf, dovecot_factory, policy_binary,
        tmp_path):
    mc = netns.run(memcached_factory)
    conf = authbrake_conf(mc)
    dc = netns.run(dovecot_factory, policy_conf=conf)
    jail = configparser.ConfigParser(interpolation=None)
    jail.read(F2B_CONF / "jail.d" / "authbrake.conf")
    shipped_ports = jail["authbrake"]["port"]
    f2b = Fail2ban(tmp_path / "fail2ban", f"""[authbrake]
logpath  = {dc.log_path}
backend  = polling
# the shipped ports (nft must know their names) and the test's IMAP port
port     = {shipped_ports},{dc.imap_port}
findtime = 10m
# the test's clients are 127.x.y.z; the shipped jail never bans loopback
ignoreip =
""")
    try:
        netns.run(f2b.start)
        assert f2b.banned() == []
        # the shipped jail's growing bans, as fail2ban read them
        assert f2b.client("get", "authbrake", "bantime.increment").stdout.strip() == "True"
        assert f2b.client("get", "authbrake", "bantime.maxtime").stdout.strip() == "604800"
        attacker, neighbour = "127.0.41.1", "127.0.41.2"

        def attack(src, tag):
            """A dictionary run over IMAP: 5 distinct accounts block src.
            Names of its own (tag): a guess seen before counts once."""
            mark = dc.log_mark()
            for name in ("monday", "monica", "monroe", "montague", "monty"):
                ok, msg, _ = netns.run(dc.imap_login, f"{name}-{tag}", "guess-1", src)
                assert not ok, msg
            assert dc.wait_log(r"authbrake-policy: Warning: address %s blocked for "
                               % re.escape(src), since=mark, timeout=10), \
                dc.log_since(mark)[-3000:]

        def wait_banned(src):
            deadline = time.monotonic() + 30
            while f2b.banned() != [src] and time.monotonic() < deadline:
                time.sleep(0.2)
            status = f2b.client("status", "authbrake").stdout
            print(status)
            assert f2b.banned() == [src], status + f2b.log_text()

        attack(attacker, "first")
        wait_banned(attacker)
        assert f2b.ban_lengths(attacker) == [3600]
        nft = netns.run(subprocess.run, ["nft", "list", "ruleset"],
                        capture_output=True, text=True).stdout
        print(nft)
        assert re.search(r"elements = \{ %s \}" % re.escape(attacker), nft), nft
        assert ("tcp dport { 110, 143, 465, 587, 993, 995, 4190, %d } "
                "ip saddr @addr-set-authbrake reject" % dc.imap_port) in nft, nft

        # the firewall refuses the attacker's next connection; its
        # neighbour in the same /24 still reaches Dovecot
        err = netns.run(connect, dc.imap_port, attacker)
        assert isinstance(err, (ConnectionRefusedError, socket.timeout)), err
        assert netns.run(connect, dc.imap_port, neighbour) is None
        ok, msg, _ = netns.run(dc.imap_login, "alice", harness.DEFAULT_USERS["alice"],
                               neighbour)
        assert ok, msg

        # unban: the connection opens, but authbrake still refuses the login
        f2b.client("unban", attacker)
        assert f2b.banned() == []
        assert netns.run(connect, dc.imap_port, attacker) is None
        ok, msg, _ = netns.run(dc.imap_login, "alice", harness.DEFAULT_USERS["alice"],
                               attacker)
        assert not ok and "Too many failed logins" in msg, msg
        # authbrake unblock: the right password gets in
        rc, out = netns.run(cli, conf, "unblock", attacker)
        assert rc == 0, out
        ok, msg, _ = netns.run(dc.imap_login, "alice", harness.DEFAULT_USERS["alice"],
                               attacker)
        assert ok, msg
        # fail2ban read no new block line: still nothing banned
        assert f2b.banned() == []

        # an IPv6 block comes as its /64: the shipped action's set takes it
        f2b.client("set", "authbrake", "banip", "2001:db8:41:1::/64")
        nft = netns.run(subprocess.run, ["nft", "list", "set", "inet", "f2b-table",
                                         "addr6-set-authbrake"],
                        capture_output=True, text=True)
        assert "elements = { 2001:db8:41:1::/64 }" in nft.stdout, nft.stdout + nft.stderr
        f2b.client("unban", "2001:db8:41:1::/64")

        # A ban that ran out is remembered: the address's next ban is
        # twice as long (bantime.increment: 1h, 2h, 4h ... bantime.maxtime).
        # (An unban by hand, as above, forgets it.) Here bantime is 8 s so
        # that the first ban runs out while the test waits; fail2ban's
        # database keeps each ban's length, whenever the test looks. (Not
        # shorter: fail2ban ignores a match whose log time, whole seconds,
        # plus the bantime is already past when its poller reads the line,
        # and a loaded machine reads it a second or two late.)
        f2b.client("set", "authbrake", "bantime", "8")
        repeat = "127.0.42.1"
        attack(repeat, "r1")
        f2b.wait_ban_count(repeat, 1)
        deadline = time.monotonic() + 30
        while repeat in f2b.banned() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert repeat not in f2b.banned(), f2b.log_text()
        rc, out = netns.run(cli, conf, "unblock", repeat)
        assert rc == 0, out
        attack(repeat, "r2")
        f2b.wait_ban_count(repeat, 2)
        assert f2b.ban_lengths(repeat) == [8, 16], f2b.log_text()
    finally:
        f2b.stop()
