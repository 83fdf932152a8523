"""The attackers authbrake is designed against (README, "How it works") against a real Dovecot, counted in password
checks that REACHED THE PASSDB (harness.passdb_checks, from Dovecot's own
passwd-file log lines), never only in refused logins.

  a  a botnet in parallel: 200 connections from 200 /24s, one LOGIN each
     at one account, all released at once (hundreds of allows before any
     report): checks <= account_lock_failures; the real user still gets in
     from a familiar subnet
  b  a dictionary run in parallel from one address: checks <= ip_max_accounts,
     and <= ip_block_failures when that is the binding limit
  c  a patient botnet, one guess a second from a new /24 each time, for ~30 s
     against short windows: at most account_lock_failures checks in any
     account_window, a total within L * ceil(T/W + 1), locks that grow
  d  (a) again while the CPU is overloaded (stress-ng) and memcached stalls
     for 100 ms every 300 ms: the same bound, and no decision fell to
     fail_mode
  e  spellings of one account (auth_username_format = %Ln) count as one;
     invalid logins (300 bytes, a control byte) count against their address

Each test uses its own memcached, authbrake.conf and Dovecot, and its own
127.T.x.y range (T = 101..106; the real user's home is 127.200.0.0/24;
settle_log's sentinels use 127.254.0.0/16). Dovecot's anvil penalty is off (harness
default), so what is measured is authbrake's.
"""

import math
import shutil
import signal
import subprocess
import threading
import time

import pytest

import harness
from harness import (account_locks, cli_status, fail_mode_lines,
                     parallel_imap_logins,
                     passdb_check_list, passdb_checks, policy_failures,
                     settle_log)

USERS = harness.DEFAULT_USERS
ALICE = "alice"
DEFAULTS = harness.TEST_DEFAULTS
N_BOTS = 200


@pytest.fixture
def brake(memcached, authbrake_conf, dovecot_factory, policy_binary):
    """make(dovecot_kw=None, **authbrake overrides) -> Dovecot with
    authbrake-policy that takes N_BOTS connections at once; .ab_conf is
    its authbrake.conf."""
    def make(dovecot_kw=None, **overrides):
        conf = authbrake_conf(memcached, **overrides)
        kw = {"max_clients": N_BOTS}
        kw.update(dovecot_kw or {})
        dc = dovecot_factory(policy_conf=conf, **kw)
        dc.ab_conf = conf
        return dc
    return make


def botnet(t, user, n=N_BOTS):
    """n guesses at user, each a different wrong password, each from its
    own address in its own /24: 127.t.i.1."""
    return [(user, f"guess-{t}-{i}", f"127.{t}.{i}.1") for i in range(n)]


def summary(dc, results, since):
    """What a failed assertion should show: outcomes and the log's view."""
    refused = sum(1 for r in results if "[ALERT]" in r.msg)
    failed = sum(1 for r in results if not r.ok and "[ALERT]" not in r.msg)
    lines = policy_failures(dc, since)
    return (f"{len(results)} logins: {sum(r.ok for r in results)} ok, "
            f"{failed} failed at the password check, {refused} refused by the "
            f"policy; {len(fail_mode_lines(dc, since))} fail_mode/store-error lines, "
            f"{len(lines)} Dovecot policy-request errors {lines[:2]}")


# ---------------------------------------------------------------------- a

def test_a_parallel_botnet_checks_at_most_account_lock_failures(brake):
    """200 guesses at one account released at once from 200 /24s: at most
    account_lock_failures of them reach the passdb; the real user, on the
    subnet they logged in from before, still gets in."""
    dc = brake()
    limit = DEFAULTS["account_lock_failures"]
    home = "127.200.0.1"
    ok, msg, _ = dc.imap_login(ALICE, USERS[ALICE], home)
    assert ok, msg                      # home's /24 is familiar from now on

    mark = dc.log_mark()
    results = parallel_imap_logins(dc.imap_port, botnet(101, ALICE))
    settle_log(dc)
    assert not any(r.ok for r in results)
    checks = passdb_checks(dc, ALICE, since=mark)
    print(f"a: {checks} password checks for {ALICE}; {summary(dc, results, mark)}")
    assert checks <= limit, (
        f"{checks} password checks for {ALICE} reached the passdb > "
        f"account_lock_failures = {limit}; {summary(dc, results, mark)}")
    assert policy_failures(dc, mark) == [], "Dovecot gave up on the policy service"

    # the account is locked for the unfamiliar, not for its user at home
    ok, msg, _ = dc.imap_login(ALICE, USERS[ALICE], "127.101.250.1")
    assert not ok and "[ALERT]" in msg, msg
    ok, msg, _ = dc.imap_login(ALICE, USERS[ALICE], home)
    assert ok, msg
    assert dc.pop3_login(ALICE, USERS[ALICE], "127.200.0.2")[0]


# ---------------------------------------------------------------------- b

DICTIONARY = ([ALICE, "bob", "carol"] +
              [f"{w}{i}" for i in range(40) for w in
               ("monday", "monica", "monroe", "admin", "info")][:N_BOTS - 3])


def test_b_parallel_dictionary_checks_at_most_ip_max_accounts(brake):
    """200 user names guessed at once from one address: at most
    ip_max_accounts of them reach the passdb."""
    dc = brake(account_lock_failures=50)
    limit = DEFAULTS["ip_max_accounts"]
    assert limit < DEFAULTS["ip_block_failures"]   # the binding limit here
    attacker = "127.102.0.1"
    mark = dc.log_mark()
    results = parallel_imap_logins(
        dc.imap_port, [(name, "Passw0rd!", attacker) for name in DICTIONARY])
    settle_log(dc)
    assert not any(r.ok for r in results)
    checks = passdb_check_list(dc, since=mark, address=attacker)
    print(f"b: {len(checks)} password checks from {attacker}; "
          f"{summary(dc, results, mark)}")
    assert len(checks) <= limit, (
        f"{len(checks)} password checks from one address reached the passdb > "
        f"ip_max_accounts = {limit}; {summary(dc, results, mark)}")
    assert len({c.user for c in checks}) <= limit

    # the address is blocked now: even a right password is refused there,
    # and the neighbour in another /24 gets in
    ok, msg, _ = dc.imap_login(ALICE, USERS[ALICE], attacker)
    assert not ok and "[ALERT]" in msg, msg
    assert dc.imap_login(ALICE, USERS[ALICE], "127.102.1.1")[0]


def test_b_parallel_guesses_check_at_most_ip_block_failures(brake):
    """The same run with the accounts and in-flight limits out of the way:
    ip_block_failures binds, and at most that many checks happen."""
    limit = DEFAULTS["ip_block_failures"]
    dc = brake(ip_max_accounts=100000, net_max_accounts=100000,
               net_free_failures=99999, net_block_failures=100000,
               max_inflight=100000, account_lock_failures=50,
               ip_free_failures=limit - 1)
    attacker = "127.102.50.1"
    mark = dc.log_mark()
    results = parallel_imap_logins(
        dc.imap_port, [(name, "Passw0rd!", attacker) for name in DICTIONARY])
    settle_log(dc)
    assert not any(r.ok for r in results)
    checks = passdb_checks(dc, since=mark, address=attacker)
    print(f"b2: {checks} password checks from {attacker}; "
          f"{summary(dc, results, mark)}")
    assert checks <= limit, (
        f"{checks} password checks from one address reached the passdb > "
        f"ip_block_failures = {limit}; {summary(dc, results, mark)}")
    ok, msg, _ = dc.imap_login(ALICE, USERS[ALICE], attacker)
    assert not ok and "[ALERT]" in msg, msg


# ---------------------------------------------------------------------- c

SLOW = dict(account_window="8s", account_lock_failures=3, lock_time="2s",
            block_max="30s", block_time="2s",
            ip_free_failures=99999, ip_block_failures=100000,
            ip_max_accounts=100000, net_free_failures=99999,
            net_block_failures=100000, net_max_accounts=100000)


def most_checks_in_a_window(times, window):
    """The most checks that certainly fell within `window` consecutive
    seconds of the policy service's clock. times: (t_sent, t_answer) per
    check, wall clock. The service counts a check at a whole second
    (time(NULL)) somewhere between floor(t_sent) and floor(t_answer), so
    checks i..j certainly share such a window when
    floor(t_answer_j) - floor(t_sent_i) < window: this is the one second of
    slack the timestamps' resolution costs, and no more."""
    times = sorted(times)
    best = 0
    for i, (sent_i, _) in enumerate(times):
        n = sum(1 for _, answer in times[i:]
                if math.floor(answer) - math.floor(sent_i) < window)
        best = max(best, n)
    return best


def test_c_patient_botnet_stays_under_the_limit_in_every_window(brake):
    """One guess a second at one account, each from a new /24, for ~31 s,
    with account_window = 8 s and account_lock_failures = 3: no interval of
    8 s holds more than 3 password checks (no window boundary hands out a
    fresh budget), the run's total stays within L * ceil(T/W + 1), and the
    account's locks grow: 2 s, 4 s, ..."""
    dc = brake(**SLOW)
    limit = SLOW["account_lock_failures"]
    window = harness.parse_duration(SLOW["account_window"])
    lock_time = harness.parse_duration(SLOW["lock_time"])
    block_max = harness.parse_duration(SLOW["block_max"])

    mark = dc.log_mark()
    start = time.time()
    results = []
    for i in range(32):
        delay = start + i - time.time()
        if delay > 0:
            time.sleep(delay)
        results.append(harness.imap_login_raw(
            dc.imap_port, ALICE, f"patient-{i}", f"127.103.{i}.1"))
    settle_log(dc)
    run_time = results[-1].t_answer - results[0].t_sent

    checks = passdb_check_list(dc, ALICE, since=mark)
    checked = {c.address for c in checks}
    assert len(checked) == len(checks), "two checks from one address?"
    for r in results:
        assert not r.ok
        # each attempt either reached the passdb or was refused before it
        assert (r.src in checked) != ("[ALERT]" in r.msg), (r.src, r.msg)
    times = [(r.t_sent, r.t_answer) for r in results if r.src in checked]
    worst = most_checks_in_a_window(times, window)
    bound = limit * math.ceil(run_time / window + 1)
    locks = [secs for _, secs, _ in account_locks(dc, mark, ALICE)]
    print(f"c: {len(checks)} checks in {run_time:.1f}s (bound {bound}); "
          f"at most {worst} in {window}s (limit {limit}); locks {locks}; "
          f"checked at +" + " ".join(f"{t[0] - start:.1f}" for t in times))

    assert worst <= limit, (
        f"{worst} password checks within {window}s > account_lock_failures = "
        f"{limit}; checks at +" + " ".join(f"{t[0] - start:.1f}s" for t in times))
    assert len(checks) <= bound, (len(checks), bound)
    assert len(checks) >= limit, "the attack never reached the limit: test is void"
    # each lock lasts until its failures have left the window (two
    # windows at most), and at least lock_time x 2^(locks so far), capped
    # by block_max
    assert len(locks) >= 2, locks
    for k, secs in enumerate(locks):
        least = min(lock_time * 2 ** k, block_max)
        assert least <= secs <= max(least, 2 * window), (
            f"lock {k + 1} lasted {secs}s: not between {least}s and "
            f"{max(least, 2 * window)}s; locks {locks}")


# ---------------------------------------------------------------------- d

class Stutter:
    """memcached stopped for `pause` seconds every `period` (SIGSTOP/SIGCONT)."""

    def __init__(self, mc, pause=0.1, period=0.3):
        self.mc, self.pause, self.period = mc, pause, period
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.stalls = 0

    def run(self):
        while not self.stop_event.is_set():
            self.mc.pause()
            try:
                time.sleep(self.pause)
            finally:
                self.mc.resume()
            self.stalls += 1
            self.stop_event.wait(self.period - self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(5)
        if self.mc.paused:
            self.mc.resume()


class CpuLoad:
    """stress-ng --cpu N, stopped by its PID (it takes its workers along)."""

    def __init__(self, workers=4, seconds=60):
        exe = shutil.which("stress-ng")
        if exe is None:
            pytest.fail("stress-ng is missing: `make deps` installs it (DEB_TEST)")
        self.cmd = [exe, "--cpu", str(workers), "--timeout", f"{seconds}s", "--quiet"]
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        # its workers are its children: stress-ng stops them on SIGTERM;
        # any that outlive it are killed by their PIDs
        workers = harness._children_of(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        harness.reap(workers, timeout=5)


def test_d_parallel_botnet_under_load_with_a_stalling_store(brake, memcached):
    """(a) while 4 CPU hogs run on the 2 cores and memcached stalls 100 ms
    every 300 ms: still at most account_lock_failures checks, and no
    decision fell to fail_mode (a stall is slowness, not an outage: the
    store answers within poll_timeout)."""
    dc = brake()
    limit = DEFAULTS["account_lock_failures"]
    assert dc.imap_login(ALICE, USERS[ALICE], "127.200.0.1")[0]
    mark = dc.log_mark()
    with CpuLoad(workers=4, seconds=60):
        time.sleep(1.0)                 # the hogs are running
        with Stutter(memcached) as stutter:
            time.sleep(0.35)            # one stall done: the rhythm is on
            results = parallel_imap_logins(dc.imap_port, botnet(104, ALICE),
                                           timeout=90)
    assert stutter.stalls >= 3, "memcached never stalled: test is void"
    settle_log(dc)
    assert not any(r.ok for r in results)
    checks = passdb_checks(dc, ALICE, since=mark)
    fell = fail_mode_lines(dc, mark)
    print(f"d: {checks} password checks for {ALICE}; {stutter.stalls} stalls; "
          f"{summary(dc, results, mark)}")
    assert checks <= limit, (
        f"{checks} password checks for {ALICE} reached the passdb > "
        f"account_lock_failures = {limit} under load; {summary(dc, results, mark)}")
    assert fell == [], f"{len(fell)} lines of decisions that fell to fail_mode: {fell[:3]}"
    assert policy_failures(dc, mark) == [], "Dovecot gave up on the policy service"
    assert dc.imap_login(ALICE, USERS[ALICE], "127.200.0.1")[0]


# ---------------------------------------------------------------------- e

SPELLINGS = ["ALICE", "alice@example.org", "Alice@Example.Org"]


def test_e_spellings_of_one_account_count_as_one(brake):
    """With auth_username_format = %Ln the passdb treats ALICE,
    alice@example.org and Alice@Example.Org as alice: so does authbrake
    (default_domain unset), whichever name the guesses use."""
    lower_name = "%{user | username | lower}" if harness.DOVECOT_24 else "%Ln"
    dc = brake(dovecot_kw={"settings": {"auth_username_format": lower_name}},
               default_domain=None)
    limit = DEFAULTS["account_lock_failures"]
    assert "default_domain" not in dc.ab_conf.settings
    mark = dc.log_mark()
    results = []
    for i in range(4 * len(SPELLINGS)):
        login = SPELLINGS[i % len(SPELLINGS)]
        results.append(dc.imap_login(login, f"spelled-{i}", f"127.105.{i}.1"))
    settle_log(dc)
    assert not any(ok for ok, _, _ in results)
    checks = passdb_checks(dc, ALICE, since=mark)
    print(f"e: {checks} password checks for {ALICE} over {len(results)} guesses "
          f"spelled {SPELLINGS}")
    assert checks <= limit, (
        f"{checks} password checks for {ALICE} > account_lock_failures = {limit}: "
        "spellings counted as different accounts")
    locks = account_locks(dc, mark)
    assert [a for a, _, _ in locks][:1] == [ALICE], locks
    # locked for every spelling from a new place, right password or not
    for n, login in enumerate(SPELLINGS + [ALICE]):
        ok, msg, _ = dc.imap_login(login, USERS[ALICE], f"127.105.{100 + n}.1")
        assert not ok and "[ALERT]" in msg and "locked" in msg, (login, msg)


def test_e_300_byte_logins_count_against_their_address(brake):
    """A 300-byte login is no account authbrake can name, but it is an
    attempt: it counts against the address that sent it (the policy answers
    it from the address rules, never with HTTP 400, which Dovecot would
    take as "no opinion"), so enough of them block the address and at most
    ip_block_failures reach the passdb (Dovecot looks them up: "unknown
    user")."""
    limit = DEFAULTS["ip_block_failures"]
    dc = brake(ip_free_failures=limit - 1, account_lock_failures=50)
    src = "127.106.0.1"
    mark = dc.log_mark()
    for i in range(limit + 3):
        login = (f"{i:03d}" + "x" * 300)[:300]
        r = harness.imap_login_raw(dc.imap_port, login, "Passw0rd!", src)
        assert not r.ok
    settle_log(dc)
    checks = passdb_checks(dc, since=mark, address=src)
    st = cli_status(dc.ab_conf, src)
    errors = policy_failures(dc, mark)
    print(f"e2: {checks} checks for {limit + 3} 300-byte logins; address "
          f"failures {st['failures']}, blocked {st['blocked']}; "
          f"{len(errors)} Dovecot policy errors {[e[-60:] for e in errors[:1]]}")
    assert checks <= limit, (
        f"{checks} password checks for 300-byte logins from one address > "
        f"ip_block_failures = {limit}; address failures {st['failures']}; "
        f"{len(errors)} Dovecot policy errors")
    assert st["blocked"] and st["block_left_s"] > 0, st
    assert errors == [], errors[:3]
    ok, msg, _ = dc.imap_login(ALICE, USERS[ALICE], src)
    assert not ok and "[ALERT]" in msg, msg


def test_e_control_byte_logins_count_against_their_address(brake):
    """A login with a control byte: Dovecot refuses the name itself
    (auth_username_chars, before any passdb lookup) and never asks
    "allow", but it reports the failure (login "") to the policy: each
    such attempt counts against its address."""
    dc = brake()
    src = "127.106.1.1"
    mark = dc.log_mark()
    before = cli_status(dc.ab_conf, src)["failures"]
    for i in range(3):
        r = harness.imap_login_raw(dc.imap_port, f"bob\x01{i}", "Passw0rd!", src)
        assert not r.ok
    ok, out, _ = dc.auth_test("bob\x01", "Passw0rd!", src)
    assert not ok
    settle_log(dc)
    after = cli_status(dc.ab_conf, src)["failures"]
    print(f"e3: control-byte logins from {src}: address failures {before} -> {after}")
    assert dc.wait_log(r"Username character disallowed by auth_username_chars: 0x01",
                       since=mark)
    assert passdb_checks(dc, since=mark, address=src) == 0
    assert after >= before + 4, (before, after)
