"""Campaign mode (issue 23): a password spray over thousands of accounts,
three guesses at each per day, every guess from a /24 of its own, through
real Dovecot (IMAP and POP3) and real Postfix (SMTP AUTH through Dovecot),
with authbrake-policy deciding. Counted in password checks that REACHED
THE PASSDB (harness.passdb_check_list, from Dovecot's own log), and every
guess is matched to its check by its source address.

Time is scaled: one day is DAY = 48 s (1 h = 2 s, 10 min = 1/3 s):
  campaign_interval = 1s    the smallest whole second (30 scaled minutes)
  campaign_day      = 48s   one scaled day: 24 slots of 2 s
  account_window    = 48s   one scaled day (production: 12h), so "at most
                            campaign_lock_failures per account_window" is
                            "at most 1 a day" where the spray sends 3
  campaign_cooldown = 4s    2 scaled hours
  campaign_floor    = 8     per interval: over what normal traffic fails
                            from unfamiliar origins (a traveller's typo
                            now and then), under the successes of the
                            morning peak (10 a second: a detector counting
                            them would trigger), far under the spray (125)
  campaign_tarpit   = 0     for the mass spray (the tarpit is tested with
                            campaign mode forced on, in a short test)
Every other setting is harness.TEST_DEFAULTS (account_lock_failures 5 > 3
guesses a day: without campaign mode every guess is checked).

  1  the spray: 2000 accounts in the passwd-file, 3 guesses at each in a
     scaled day (125 guesses a second, on up to WORKERS connections at
     once), each from a /24 of its own; by protocol 1 in 20 SMTP AUTH
     through Postfix (the client's bound 127.x.y.z source address is what
     Postfix hands Dovecot as rip), the rest half IMAP, half POP3. Beside
     it, 8 real users whose accounts are sprayed log in from their home
     /24 (made familiar by a success before the spray) every 4 s, each
     with 2 typos; one more user, whose account is not sprayed, logs in
     from a new network in the middle of the campaign. The home logins
     start first, and the spray waits until the detector is armed (it
     learns an hour of the site's traffic first: "armed" in `authbrake
     --json campaign`), as on a site that has run for a while. Campaign
     mode turns on (Dovecot's log and the CLI) before a tenth of
     the day's guesses were sent; after that no sprayed account gets more
     than 1 password check per account_window; no real user at home is
     refused or delayed; the traveller gets in, delayed at most
     tarpit_max. The control, the same spray with `authbrake campaign
     off`, runs first on its own memcached and Dovecot, over OFF_ACCOUNTS
     of the accounts (1 in 4) at the same guess rate, i.e. their day
     compressed 4x: with campaign mode forced off nothing there has a
     clock but the account's budget, and account_window covers either
     run, so compressing it can only lower its count. Both numbers
     (checks per account per day, off and on) are printed and are in the
     assertion's message.
  2  a normal scaled day (campaign_day = that day): 40 users with familiar
     home /24s log in at 2 a second at night, 10 a second in the morning
     peak (hours 7-9), 4 a second in the daytime; a few typos from home;
     4 travellers log in from a new /24, two of them after a typo there.
     Campaign mode never turns on, the detector's rate never exceeds the
     failures from unfamiliar origins that traffic had (the travellers'
     typos), and no login was delayed or refused.
  3  a campaign ends: once the detector is armed, a spray until campaign
     mode is on, then only real users' logins from home (the detector runs
     at the policy service's
     allows: a site never has none); "campaign mode off" is logged no
     earlier than about campaign_cooldown after the spray's last guess and
     no later than campaign_cooldown + a few intervals; `authbrake
     campaign on` forces it on, `auto` hands it back; forced off, a spray
     does not turn it on; handed back to the detector while the spray
     goes on, it turns on.
  4  campaign mode forced on (campaign_tarpit 3s over tarpit_max 2s): an
     origin new to its account waits tarpit_max, right password or not; a
     second guess at an account with one failure from a new network is
     refused before the password check (campaign_locked, the
     account-lock message); home logins are never delayed; back on auto
     (off), the account's normal budget is back: no lock was set.

Each test has its own memcached, authbrake.conf and Dovecot (and Postfix),
and its own 127.T.x.y ranges: guesses from T = 150..187 (a /24 each), the
users' homes in 127.190-193.x.0/24, new networks in 127.188-189.x.0/24;
settle_log's sentinels use 127.254.0.0/16. Dovecot's anvil penalty is off
(harness default). The detector's clock is the policy service's
time(NULL): whole seconds, and each process reads the shared state at most
once a second; bounds below allow that and no more.
"""

import json
import math
import random
import re
import subprocess
import threading
import time
from collections import Counter, defaultdict, namedtuple

import pytest

import harness
from harness import passdb_check_list, policy_decisions, settle_log

DEFAULTS = harness.TEST_DEFAULTS

# --- the scale
DAY = 48                        # seconds: one scaled day
HOUR = DAY / 24
INTERVAL = 1                    # campaign_interval, seconds
COOLDOWN = 4                    # campaign_cooldown, seconds
FLOOR = 8                       # campaign_floor, failures per interval
CAMPAIGN = {
    "campaign_interval": f"{INTERVAL}s",
    "campaign_day": f"{DAY}s",
    "campaign_floor": FLOOR,
    "campaign_factor": 4,
    "campaign_cooldown": f"{COOLDOWN}s",
    "campaign_lock_failures": 1,
    "campaign_tarpit": 0,
    "account_window": f"{DAY}s",
}
CAMPAIGN_LOCK_FAILURES = CAMPAIGN["campaign_lock_failures"]
TARPIT_MAX = harness.parse_duration(DEFAULTS["tarpit_max"])
# without campaign mode every one of the day's guesses at an account is checked
assert DEFAULTS["account_lock_failures"] > 3

# --- the spray
N_ACCOUNTS = 2000
GUESSES_PER_DAY = 3
RATE = N_ACCOUNTS * GUESSES_PER_DAY / DAY     # 125 guesses a second
WORKERS = 128                   # connections at once at most (a failure takes ~0.5 s)
SMTP_SHARE = 20                 # 1 guess in 20 through Postfix
OFF_ACCOUNTS = N_ACCOUNTS // 4
# one common password per round, as sprays do
SPRAY_PASSWORDS = ("Winter2025!", "Spring2025!", "Summer2025!")
REAL = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
TRAVELLER = "ivan"              # a real user whose account is not sprayed
MAX_CLIENTS = 300               # Dovecot's login services take this many at once
# the detector learns an hour (HOUR s) of normal traffic before it arms
WARMUP_MAX = 6 * HOUR

CAMPAIGN_LOCKED_REASON = "account over campaign_lock_failures during a password-spray campaign"
CAMPAIGN_TARPIT_REASON = "origin unfamiliar to account during a password-spray campaign"
MSG_ACCOUNT = "This account is temporarily locked for logins from new locations"
ON_RE = re.compile(r"authbrake-policy: \w+: campaign mode on: (.*)")
OFF_RE = re.compile(r"authbrake-policy: \w+: campaign mode off: (.*)")
STAMP_RE = re.compile(r"^(\w{3} [ \d]\d \d\d:\d\d:\d\d) ")


def password_of(name):
    return f"{name}-secret-{sum(name.encode()) % 97}"


def users_with(sprayed, others=()):
    return {name: password_of(name) for name in list(sprayed) + list(others)}


SPRAYED = REAL + [f"user{i:04d}" for i in range(N_ACCOUNTS - len(REAL))]


# ------------------------------------------------------------------ rigs

class Rig:
    """A Dovecot with authbrake-policy (and a Postfix authenticating
    through it), its authbrake.conf (.conf) and memcached."""

    def __init__(self, dc, pf, conf):
        self.dc, self.pf, self.conf = dc, pf, conf


@pytest.fixture
def rig(memcached_factory, authbrake_conf, dovecot_factory, postfix_factory,
        policy_binary):
    """make(users, smtp=False, **authbrake overrides over CAMPAIGN) -> Rig,
    each with a memcached of its own."""
    def make(users, smtp=False, **overrides):
        settings = dict(CAMPAIGN)
        settings.update(overrides)
        conf = authbrake_conf(memcached_factory(), **settings)
        pf = postfix_factory() if smtp else None
        dc = dovecot_factory(users=users, policy_conf=conf, max_clients=MAX_CLIENTS,
                             postfix_listener=pf.sasl_socket if pf else None)
        if pf:
            pf.start()
        return Rig(dc, pf, conf)
    return make


# ------------------------------------------------------------------ the CLI

def cli_campaign(conf, mode=None):
    """`authbrake -c CONF --json campaign [MODE]`: the state as a dict."""
    cmd = [str(harness.CLI_BIN), "-c", str(conf), "--json", "campaign"]
    if mode:
        cmd.append(mode)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=20)
    assert r.returncode == 0, (cmd, r.returncode, r.stdout, r.stderr)
    state = json.loads(r.stdout)
    assert state["type"] == "campaign", state
    return state


def wait_armed(conf, timeout=WARMUP_MAX):
    """Wait until the detector has learned an hour of the site's traffic
    (the CLI's "armed": before, no rate is a campaign); its state."""
    deadline = time.time() + timeout
    while True:
        state = cli_campaign(conf)
        if state.get("armed", True):
            return state
        assert time.time() < deadline, (
            f"the detector never armed in {timeout}s of normal traffic: {state}")
        time.sleep(0.25)


def force(conf, mode):
    """Set the mode, and wait until every policy process has read it (each
    reads the shared state at most once a second, at an allow in a new
    second)."""
    state = cli_campaign(conf, mode)
    assert state["mode"] == mode, state
    time.sleep(1.5)
    return state


# ------------------------------------------------------------------ logins

Attempt = namedtuple("Attempt", "proto user password src ok msg t_sent t_answer error")


def login(rig, proto, user, password, src):
    """One login from src: an Attempt with wall-clock times (the policy
    service's clock). IMAP: t_sent is the LOGIN; POP3 and SMTP: the
    connection (a few ms before the password)."""
    t0 = time.time()
    try:
        if proto == "imap":
            r = harness.imap_login_raw(rig.dc.imap_port, user, password, src)
            return Attempt(proto, user, password, src, r.ok, r.msg, r.t_sent,
                           r.t_answer, r.msg.startswith("connection"))
        if proto == "pop3":
            ok, msg, _ = harness.pop3_login(rig.dc.pop3_port, user, password, src)
        else:
            reply, _ = harness.smtp_auth(rig.pf.port, user, password, src)
            ok, msg = reply.code == 235, str(reply)
    except Exception as e:          # noqa: BLE001 - counted as an error below
        return Attempt(proto, user, password, src, False, repr(e), t0, time.time(), True)
    return Attempt(proto, user, password, src, ok, msg, t0, time.time(),
                   msg.startswith("connection error"))


Item = namedtuple("Item", "at proto user passwords src")


class Runner:
    """Runs items at t0 + item.at on a pool of threads; each item's
    passwords are tried in order, each on a connection of its own (a
    typo, then the right one). .results[i] is the list of Attempts of
    items[i] (None: not run, stopped first)."""

    def __init__(self, rig, items, workers, t0, stop=None):
        self.rig, self.items, self.t0 = rig, sorted(items), t0
        self.stop = stop or threading.Event()
        self.results = [None] * len(self.items)
        self.next = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.work, daemon=True)
                        for _ in range(min(workers, len(self.items)) or 1)]

    def work(self):
        while not self.stop.is_set():
            with self.lock:
                i = self.next
                self.next += 1
            if i >= len(self.items):
                return
            item = self.items[i]
            delay = self.t0 + item.at - time.time()
            if delay > 0 and self.stop.wait(delay):
                return
            self.results[i] = [login(self.rig, item.proto, item.user, pw, item.src)
                               for pw in item.passwords]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout=120):
        """Wait for the last item (at most timeout s after it was due)."""
        deadline = self.t0 + max((i.at for i in self.items), default=0) + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.time()))
        assert not any(t.is_alive() for t in self.threads), "logins never finished"
        return self

    def attempts(self):
        return [a for r in self.results if r for a in r]


def spray_items(accounts, t_base, rate=RATE, rounds=GUESSES_PER_DAY, seed=23):
    """rounds x each account, in a shuffled order each round, one guess
    every 1/rate s; guess k from 127.(t_base + k // 256).(k % 256).1."""
    items, k = [], 0
    rnd = random.Random(seed)
    for r in range(rounds):
        order = list(accounts)
        rnd.shuffle(order)
        for user in order:
            proto = "smtp" if k % SMTP_SHARE == 0 else ("imap" if k % 2 else "pop3")
            items.append(Item(k / rate, proto, user,
                              (SPRAY_PASSWORDS[r % len(SPRAY_PASSWORDS)],),
                              f"127.{t_base + k // 256}.{k % 256}.1"))
            k += 1
    return items


# ------------------------------------------------------------------ watching

def stamp_epoch(line, near):
    """The wall time of a log line's stamp ("Dec 06 12:06:01", local
    time, no year: the year of `near`)."""
    m = STAMP_RE.match(line)
    assert m, line
    year = time.localtime(near).tm_year
    return time.mktime(time.strptime(f"{year} {m.group(1)}", "%Y %b %d %H:%M:%S"))


class Watcher:
    """Follows Dovecot's log from mark for "campaign mode on/off" (when
    each line was first seen: an upper bound of when it was logged), and
    asks the CLI for the state every cli_every s: .cli = [(t_asked,
    t_answered, state)]."""

    def __init__(self, rig, mark, cli_every=0.5):
        self.rig, self.pos, self.cli_every = rig, mark, cli_every
        self.on, self.off, self.cli, self.errors = [], [], [], []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.buf = ""

    def read_log(self):
        with open(self.rig.dc.log_path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        lines = (self.buf + data.decode(errors="replace")).split("\n")
        self.buf = lines.pop()
        now = time.time()
        for line in lines:
            if ON_RE.search(line):
                self.on.append((now, line))
            elif OFF_RE.search(line):
                self.off.append((now, line))

    def run(self):
        next_cli = 0.0
        while not self.stop_event.is_set():
            self.read_log()
            if self.cli_every and time.time() >= next_cli:
                t = time.time()
                try:
                    self.cli.append((t, time.time(), cli_campaign(self.rig.conf)))
                except Exception as e:      # noqa: BLE001 - asserted by stop()
                    self.errors.append(repr(e))
                next_cli = t + self.cli_every
            self.stop_event.wait(0.05)
        self.read_log()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        """Stop watching (again: nothing); .errors: the CLI's failures."""
        self.stop_event.set()
        self.thread.join(30)

    def first_cli_on(self):
        """When the CLI first answered on (None: never)."""
        return next((t1 for _, t1, s in self.cli if s["on"]), None)

    def wait(self, what, timeout):
        """Wait for the first line of what (self.on or self.off)."""
        deadline = time.time() + timeout
        while not what and time.time() < deadline:
            time.sleep(0.05)
        return what[0] if what else None


# ------------------------------------------------------------------ counting

def checks_by_address(rig, since):
    """{address: [PassdbCheck]} of the checks since the mark."""
    out = defaultdict(list)
    for c in passdb_check_list(rig.dc, since=since):
        out[c.address].append(c)
    return out


def decisions_by_address(rig, since):
    out = defaultdict(list)
    for d in policy_decisions(rig.dc, since):
        out[d["address"]].append(d)
    return out


def spray_outcome(attempts, checks):
    """Per account: the spray's guesses that reached the passdb, as Attempts."""
    per_account = defaultdict(list)
    for a in attempts:
        if checks.get(a.src):
            per_account[a.user].append(a)
    return per_account


def window_violations(per_account, after, window):
    """Checks from guesses sent after `after` that share an account_window
    with another check at the same account. Two checks certainly fell in
    one window of the service's whole-second clock when
    floor(later answer) - floor(earlier send) < window (test_botnet's
    most_checks_in_a_window: the second of slack the clock costs, no
    more)."""
    out = []
    for user, checked in per_account.items():
        for c in checked:
            if c.t_sent <= after:
                continue
            near = [o for o in checked if o is not c and
                    math.floor(max(c.t_answer, o.t_answer)) -
                    math.floor(min(c.t_sent, o.t_sent)) < window]
            if near:
                out.append((user, c.src, [o.src for o in near]))
    return out


def sent_before(attempts, t):
    return sum(1 for a in attempts if a.t_sent < t)


# ------------------------------------------------------------------ 1

def run_off_control(rig_factory):
    """The spray with campaign mode forced off, over 1 account in 4 at
    the same guess rate: checks per account per day."""
    accounts = SPRAYED[::N_ACCOUNTS // OFF_ACCOUNTS]
    r = rig_factory(users_with(accounts), smtp=True)
    state = force(r.conf, "off")
    assert state["on"] is False, state
    mark = r.dc.log_mark()
    items = spray_items(accounts, 174)
    assert len({i.src.rsplit(".", 1)[0] for i in items}) == len(items)
    run = Runner(r, items, WORKERS, time.time() + 0.3).start().join()
    settle_log(r.dc)
    attempts = run.attempts()
    errors = [a for a in attempts if a.error]
    assert errors == [], f"{len(errors)} logins failed to connect: {errors[:3]}"
    checks = checks_by_address(r, mark)
    per_account = spray_outcome(attempts, checks)
    campaign_refusals = [d for d in policy_decisions(r.dc, mark)
                         if "campaign" in d["reason"]]
    state = cli_campaign(r.conf)
    assert state["mode"] == "off" and state["on"] is False, state
    assert campaign_refusals == [], campaign_refusals[:3]
    total = sum(len(v) for v in per_account.values())
    print(f"1 off: {total} checks for {len(items)} guesses at {len(accounts)} "
          f"accounts in {attempts[-1].t_answer - attempts[0].t_sent:.1f}s "
          f"= {total / len(accounts):.2f} per account per day; CLI {state}")
    return total / len(accounts)


def normal_items_beside_spray(homes, seconds):
    """The real users at home, every 4 s each for seconds, 2 typos each."""
    items = []
    for i, user in enumerate(REAL):
        for j in range(int(seconds / 4)):
            pws = (("typo-" + password_of(user)) if j in (3, 8) else None,
                   password_of(user))
            items.append(Item(0.5 * i + 4 * j, "imap" if (i + j) % 2 else "pop3",
                              user, tuple(p for p in pws if p), homes[user]))
    return items


def test_spray_detected_early_then_one_check_per_account_per_window(rig):
    off_per_day = run_off_control(rig)

    users = users_with(SPRAYED, [TRAVELLER])
    r = rig(users, smtp=True)
    homes = {u: f"127.190.{i}.1" for i, u in enumerate(REAL + [TRAVELLER])}
    for n, (user, src) in enumerate(homes.items()):
        ok, msg, _ = (r.dc.imap_login if n % 2 else r.dc.pop3_login)(
            user, users[user], src)
        assert ok, (user, msg)          # home's /24 is familiar from now on
    assert cli_campaign(r.conf)["on"] is False
    time.sleep(1.0)                     # the familiarising logins' second is over

    mark = r.dc.log_mark()
    spray = spray_items(SPRAYED, 150)
    assert len({i.src.rsplit(".", 1)[0] for i in spray}) == len(spray)
    away = "127.189.0.1"
    watcher = Watcher(r, mark).start()
    stop = threading.Event()
    try:
        # the site's normal traffic, until the detector has learned an
        # hour; then the spray, and the traveller in the middle of its day
        t_warm = time.time() + 0.2
        normal_run = Runner(r, normal_items_beside_spray(homes, WARMUP_MAX + DAY + 4),
                            8, t_warm, stop).start()
        armed = wait_armed(r.conf)
        waited = time.time() - t_warm
        t0 = time.time() + 0.3
        spray_run = Runner(r, spray, WORKERS, t0, stop).start()
        trip_run = Runner(r, [Item(DAY / 2, "imap", TRAVELLER, (users[TRAVELLER],), away)],
                          1, t0, stop).start()
        spray_run.join()
        trip_run.join()
        stop.set()                      # the home logins end with the spray
        normal_run.join()
        t_end = time.time()
        settle_log(r.dc)
    finally:
        stop.set()
        watcher.stop()
    assert watcher.errors == [], f"`authbrake campaign` failed: {watcher.errors[:3]}"
    print(f"1 on: armed {max(waited, 0):.1f}s into the normal traffic: {armed}")

    attempts = spray_run.attempts()
    day_len = max(a.t_answer for a in attempts) - min(a.t_sent for a in attempts)
    errors = [a for a in attempts + normal_run.attempts() + trip_run.attempts()
              if a.error]
    assert errors == [], f"{len(errors)} logins failed to connect: {errors[:3]}"
    assert len(attempts) == len(spray) == N_ACCOUNTS * GUESSES_PER_DAY

    checks = checks_by_address(r, mark)
    decisions = decisions_by_address(r, mark)
    per_account = spray_outcome(attempts, checks)
    total = sum(len(v) for v in per_account.values())
    on_per_day = total / N_ACCOUNTS

    # --- what happened (all of it printed before any assertion)
    assert watcher.on, ("campaign mode never turned on: no 'campaign mode on' "
                        f"in Dovecot's log; {total} checks for {len(attempts)} "
                        f"guesses; CLI said {watcher.cli[-1:]}")
    t_on, on_line = watcher.on[0]
    t_cli_on = watcher.first_cli_on()
    n_log = sent_before(attempts, t_on)
    n_cli = sent_before(attempts, t_cli_on) if t_cli_on else None
    tenth = len(attempts) / 10
    flips = sorted((t, line.split(": ", 2)[2]) for t, line in watcher.on + watcher.off
                   if t <= t_end)
    # after detection (a second for the policy processes to read the
    # state, one for the whole-second clock)
    grace = t_on + 2.0
    after = [a for a in attempts if a.t_sent > grace]
    checked_after = [a for a in after if checks.get(a.src)]
    most = max((sum(1 for a in v if a.t_sent > grace)
                for v in per_account.values()), default=0)
    window = harness.parse_duration(CAMPAIGN["account_window"])
    bad = window_violations(per_account, grace, window)
    checks_per_account = Counter(len(v) for v in per_account.values())
    refused = [a for a in attempts if not checks.get(a.src)]
    reasons = Counter(d["reason"] for a in attempts for d in decisions.get(a.src, []))
    unexplained = [a for a in refused if not any(
        d["decision"] == "reject" and d["reason"] == CAMPAIGN_LOCKED_REASON
        for d in decisions.get(a.src, []))]
    wrong_msg = [a for a in refused if MSG_ACCOUNT not in a.msg]
    twice = [a.src for a in attempts if len(checks.get(a.src, [])) > 1]
    # the real users at home, and the traveller
    normal_attempts = normal_run.attempts() + trip_run.attempts()
    at_home = [a for a in normal_attempts if a.user in REAL]
    typos = [a for a in at_home if a.password.startswith("typo-")]
    rights = [a for a in at_home if not a.password.startswith("typo-")]
    home_decisions = [d for a in at_home for d in decisions.get(a.src, [])]
    slow = sorted((round(a.t_answer - a.t_sent, 2) for a in rights), reverse=True)[:3]
    trip = [a for a in normal_attempts if a.user == TRAVELLER]
    trip_decisions = decisions.get(away, [])
    summary = (f"password checks per sprayed account per scaled day: "
               f"campaign mode forced off {off_per_day:.2f}, on (auto) "
               f"{on_per_day:.2f} ({total} checks for {len(attempts)} guesses at "
               f"{N_ACCOUNTS} accounts)")
    print(f"1 on: first {on_line.split(': ', 2)[2]}")
    print(f"1 on: detected after {n_log} guesses (log; {n_cli} by the CLI's "
          f"first 'on'), {t_on - t0:.1f}s into a day of {day_len:.1f}s; "
          f"{len(flips)} on/off lines during the spray: " +
          "; ".join(f"+{t - t0:.1f}s {text[:60]}" for t, text in flips))
    print(f"1 on: after detection {len(checked_after)} of {len(after)} guesses "
          f"checked; at most {most} check(s) per account after it; {len(bad)} "
          f"checks in an account_window with another; accounts by checks "
          f"{dict(sorted(checks_per_account.items()))}; decisions {dict(reasons)}")
    print(f"1 home: {len(rights)} logins from home (slowest {slow} s), "
          f"{len(typos)} typos; policy decisions for them: {home_decisions}")
    print(f"1 traveller: {[(a.ok, a.msg[:40], round(a.t_answer - a.t_sent, 2)) for a in trip]}"
          f"; decisions {trip_decisions}")
    print("1 " + summary)

    # --- detection, early and once
    assert n_log < tenth, (
        f"'campaign mode on' seen after {n_log} of the day's {len(attempts)} "
        f"guesses: not before a tenth ({tenth:.0f})")
    assert t_cli_on is not None, f"the CLI never said on: {watcher.cli[-3:]}"
    assert n_cli < tenth, (
        f"`authbrake campaign` first said on after {n_cli} guesses (>= {tenth:.0f})")

    # --- after detection: at most campaign_lock_failures checks a window
    assert most <= CAMPAIGN_LOCK_FAILURES and bad == [], (
        f"after campaign mode turned on, {len(bad)} checks shared an "
        f"account_window with another at the same account (e.g. {bad[:3]}); "
        f"at most {most} per account after detection; campaign mode went "
        f"on and off {len(flips)} times during the spray: {flips[:4]}")
    assert len(flips) == 1, (
        f"campaign mode went on and off while the spray went on: {flips}")

    # every guess either reached the passdb or was refused as campaign
    # mode refuses: before the password check, with the account message
    assert unexplained == [], (
        f"{len(unexplained)} guesses neither checked nor refused for "
        f"campaign_locked: {unexplained[:3]}; decisions {dict(reasons)}")
    assert wrong_msg == [], f"refused without the account message: {wrong_msg[:3]}"
    assert not any(a.ok for a in attempts)
    assert twice == [], f"two checks from one guess's address? {twice[:3]}"

    # --- the real users at home: never refused, never delayed
    assert all(a.ok for a in rights), [a for a in rights if not a.ok][:3]
    assert not any(a.ok or MSG_ACCOUNT in a.msg for a in typos), typos[:3]
    assert home_decisions == [], (
        f"the real users at home were delayed or refused: {home_decisions[:3]}")
    assert len([a for a in rights if a.t_sent > t0]) >= len(REAL) * int(DAY / 4) - len(REAL)

    # --- the traveller, from a new network during the campaign
    assert len(trip) == 1 and trip[0].t_sent > grace, trip
    assert trip[0].ok, trip[0]
    assert all(d["decision"] == "tarpit" and int(d["delay"]) <= TARPIT_MAX
               for d in trip_decisions), trip_decisions
    assert trip[0].t_answer - trip[0].t_sent < TARPIT_MAX + 2, trip[0]

    # --- off against on
    assert off_per_day >= GUESSES_PER_DAY - 0.1, summary
    assert max(len(v) for v in per_account.values()) <= CAMPAIGN_LOCK_FAILURES, summary
    assert on_per_day <= CAMPAIGN_LOCK_FAILURES, summary


# ------------------------------------------------------------------ 2

NORMAL_USERS = [f"staff{i:02d}" for i in range(40)]
NIGHT = 2.0                     # successful logins a second at night
PEAK_HOURS = (7, 8, 9)
DAYTIME_HOURS = range(10, 20)


def rate_at(hour):
    if hour in PEAK_HOURS:
        return 5 * NIGHT
    if hour in DAYTIME_HOURS:
        return 2 * NIGHT
    return NIGHT


def normal_day(homes):
    """A day of logins from home by rate_at(hour), every 25th after a
    typo, and 4 travellers (hours 6, 11, 15, 20) from a new /24, two of
    them after a typo there: (items, travellers' new addresses)."""
    items, n = [], 0
    for hour in range(24):
        k = int(rate_at(hour) * HOUR)
        for j in range(k):
            user = NORMAL_USERS[n % len(NORMAL_USERS)]
            pws = ((("typo-" + password_of(user)),) if n % 25 == 12 else ()) + \
                (password_of(user),)
            items.append(Item(hour * HOUR + j * HOUR / k, "imap" if n % 2 else "pop3",
                              user, pws, homes[user]))
            n += 1
    away = {}
    for t, (hour, typo) in enumerate(((6, True), (11, False), (15, True), (20, False))):
        user = NORMAL_USERS[(7 * t + 3) % len(NORMAL_USERS)]
        src = f"127.188.{t}.1"
        away[src] = typo
        pws = (("typo-" + password_of(user),) if typo else ()) + (password_of(user),)
        items.append(Item(hour * HOUR + 0.3, "imap", user, pws, src))
    return items, away


def test_normal_day_never_turns_campaign_mode_on(rig):
    users = users_with(NORMAL_USERS)
    r = rig(users)
    homes = {u: f"127.191.{i}.1" for i, u in enumerate(NORMAL_USERS)}
    for n, (user, src) in enumerate(homes.items()):
        ok, msg, _ = (r.dc.imap_login if n % 2 else r.dc.pop3_login)(
            user, users[user], src)
        assert ok, (user, msg)
    time.sleep(1.0)
    mark = r.dc.log_mark()
    items, away = normal_day(homes)
    watcher = Watcher(r, mark).start()
    stop = threading.Event()
    t0 = time.time() + 0.3
    try:
        run = Runner(r, items, 16, t0, stop).start().join()
        time.sleep(2 * INTERVAL)        # the last buckets are looked at
    finally:
        stop.set()
        watcher.stop()
    assert watcher.errors == [], f"`authbrake campaign` failed: {watcher.errors[:3]}"
    state = cli_campaign(r.conf)
    settle_log(r.dc)
    attempts = run.attempts()
    errors = [a for a in attempts if a.error]
    assert errors == [], errors[:3]
    decisions = policy_decisions(r.dc, mark)

    unfamiliar_failures = sorted(a.t_answer for a in attempts
                                 if a.src in away and not a.ok)
    # the most failures from unfamiliar origins in any 3 s (two whole-second
    # buckets, wherever they fall)
    most_unfamiliar = max((sum(1 for u in unfamiliar_failures if t <= u < t + 3)
                           for t in unfamiliar_failures), default=0)
    rates = [s["rate"] for _, _, s in watcher.cli]
    per_hour = defaultdict(int)
    for a in attempts:
        if a.ok:
            per_hour[int((a.t_sent - t0) // HOUR)] += 1
    print(f"2: {sum(a.ok for a in attempts)} logins, "
          f"{sum(not a.ok for a in attempts)} typos ({len(unfamiliar_failures)} "
          f"from a new network) in {attempts[-1].t_answer - t0:.1f}s; successes "
          f"per scaled hour {[per_hour[h] for h in range(24)]}; detector's rate "
          f"at most {max(rates, default=None)} (threshold {state['threshold']}); "
          f"CLI at the end {state}")

    assert [a for a in attempts if a.password.startswith("typo-") == a.ok] == []
    assert watcher.cli, "the CLI was never asked"
    assert watcher.on == [], f"campaign mode turned on on a normal day: {watcher.on}"
    assert not any(s["on"] for _, _, s in watcher.cli), [
        s for _, _, s in watcher.cli if s["on"]][:1]
    assert state["on"] is False and state["mode"] == "auto", state
    assert decisions == [], f"normal logins delayed or refused: {decisions[:3]}"
    assert max(rates) <= most_unfamiliar, (
        f"the detector's rate reached {max(rates)} on a day whose only failures "
        f"from unfamiliar origins were {len(unfamiliar_failures)} travellers' "
        f"typos, at most {most_unfamiliar} in 3 s: it counts something else "
        f"(successes, typos from home?)")
    # the day had its morning peak: over the floor in successes a second
    peak = max(per_hour[h] for h in PEAK_HOURS) / HOUR
    assert peak > FLOOR, f"the morning peak was only {peak}/s: test is void"


# ------------------------------------------------------------------ 3

def trickle(rig, user, src, stop, every=0.5):
    """A real user's logins from home until stop: what keeps the policy
    service's allows (and with them the detector) going."""
    def run():
        n = 0
        while not stop.wait(every):
            login(rig, "imap" if n % 2 else "pop3", user, password_of(user), src)
            n += 1
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_campaign_ends_after_cooldown_and_the_cli_overrides(rig):
    accounts = [f"user{i:04d}" for i in range(400)]
    r = rig(users_with(accounts, ["alice"]))
    home = "127.192.0.1"
    assert r.dc.imap_login("alice", password_of("alice"), home)[0]
    stops = [threading.Event() for _ in range(3)]   # trickle, spray 1, spray 2
    watchers = []
    trickler = trickle(r, "alice", home, stops[0])
    try:
        # a spray until campaign mode is on, and one second more
        watchers.append(Watcher(r, r.dc.log_mark(), cli_every=0.25).start())
        watcher = watchers[-1]
        wait_armed(r.conf)
        run = Runner(r, spray_items(accounts, 180)[:1000], WORKERS,
                     time.time() + 0.2, stops[1]).start()
        on = watcher.wait(watcher.on, 8)
        assert on, "the spray never turned campaign mode on"
        time.sleep(1.0)
        stops[1].set()
        run.join()
        attempts = run.attempts()
        t_last = max(a.t_answer for a in attempts)
        print(f"3: campaign mode on after {sent_before(attempts, on[0])} guesses; "
              f"the spray stopped after {len(attempts)}")

        off = watcher.wait(watcher.off, COOLDOWN + 3 * INTERVAL + 10)
        watcher.stop()
        assert watcher.errors == [], f"`authbrake campaign` failed: {watcher.errors[:3]}"
        assert off, (f"no 'campaign mode off' {COOLDOWN + 3 * INTERVAL + 10}s "
                     f"after the spray; CLI said {watcher.cli[-1:]}")
        t_seen, line = off
        logged = stamp_epoch(line, t_seen)
        print(f"3: {line.split(': ', 2)[2]!r} logged {logged - t_last:+.1f}s "
              f"(seen {t_seen - t_last:+.1f}s) after the spray's last answer")
        # no earlier than the cooldown after the last failures were counted
        # (a second for the detector's last look at the threshold, one for
        # the log's whole-second stamp), no later than the cooldown and a
        # few intervals (the rate falls under the threshold within two,
        # a process looks at most once a second)
        assert logged >= math.floor(t_last) + COOLDOWN - 2, (logged, t_last, line)
        assert t_seen <= t_last + COOLDOWN + 3 * INTERVAL + 2, (t_seen, t_last, line)
        assert f"under the threshold for {COOLDOWN}s" in line, line
        during = [s for t, _, s in watcher.cli if t_last + 1 < t < t_last + COOLDOWN - 2]
        assert during and all(s["on"] for s in during), during
        assert len(watcher.on) == 1 and len(watcher.off) == 1, (watcher.on, watcher.off)
        state = cli_campaign(r.conf)
        assert state["on"] is False and state["mode"] == "auto", state

        # forced on, and handed back
        state = cli_campaign(r.conf, "on")
        assert state["on"] is True and state["mode"] == "on", state
        assert cli_campaign(r.conf)["on"] is True
        state = cli_campaign(r.conf, "auto")
        assert state["on"] is False and state["mode"] == "auto", state

        # forced off, a spray does not turn it on; handed back while the
        # spray goes on, the detector turns it on
        force(r.conf, "off")
        watchers.append(Watcher(r, r.dc.log_mark(), cli_every=0.25).start())
        watcher = watchers[-1]
        run = Runner(r, spray_items(accounts, 184)[:1000], WORKERS,
                     time.time() + 0.2, stops[2]).start()
        time.sleep(3.0)
        forced_off = [s for _, _, s in watcher.cli]
        cli_campaign(r.conf, "auto")
        t_auto = time.time()
        on = watcher.wait(watcher.on, 5)
        stops[2].set()
        run.join()
        watcher.stop()
        assert watcher.errors == [], f"`authbrake campaign` failed: {watcher.errors[:3]}"
    finally:
        for ev in stops:
            ev.set()
        for w in watchers:
            w.stop()
        trickler.join(10)
    print(f"3: forced off during a spray: rates {[s['rate'] for s in forced_off]}; " +
          (f"auto -> on after {on[0] - t_auto:.1f}s" if on else "never on after auto"))
    assert forced_off and not any(s["on"] for s in forced_off), forced_off
    assert all(s["mode"] == "off" for s in forced_off), forced_off
    assert max(s["rate"] for s in forced_off) >= FLOOR, (
        "the spray under forced off was too thin to have turned it on: test is void")
    assert on, "handed back to the detector during a spray, campaign mode never turned on"
    assert on[0] - t_auto <= 2 * INTERVAL + 2, on[0] - t_auto


# ------------------------------------------------------------------ 4

def test_forced_on_tarpits_and_refuses_only_unfamiliar_origins(rig):
    """campaign_tarpit 3s over tarpit_max 2s: tarpit_max holds. Every
    attempt has an address of its own (home: its first since the mark),
    so each one's decisions and checks are read from the log at the end."""
    users = users_with(["alice", "dave"])
    r = rig(users, campaign_tarpit="3s")
    tarpit = min(3, TARPIT_MAX)
    homes = {"alice": "127.193.0.1", "dave": "127.193.1.1"}
    for user, src in homes.items():
        assert r.dc.imap_login(user, users[user], src)[0]
    state = force(r.conf, "on")
    assert state["on"] is True and state["mode"] == "on", state
    mark = r.dc.log_mark()
    a_home = login(r, "imap", "alice", users["alice"], homes["alice"])
    # the real user from a new network
    a_away = login(r, "pop3", "alice", users["alice"], "127.188.100.1")
    # a guess at dave from a new network, then two more from others
    g1 = login(r, "imap", "dave", "Winter2025!", "127.188.101.1")
    g2 = login(r, "imap", "dave", users["dave"], "127.188.102.1")
    g3 = login(r, "pop3", "dave", users["dave"], "127.188.103.1")
    d_home = login(r, "pop3", "dave", users["dave"], homes["dave"])
    # back to the detector (nothing near its threshold: off)
    state = force(r.conf, "auto")
    a_back = login(r, "imap", "dave", users["dave"], "127.188.104.1")
    settle_log(r.dc)
    checks = checks_by_address(r, mark)
    decisions = decisions_by_address(r, mark)

    def show(label, a):
        print(f"4 {label}: {a.ok} {a.msg!r} in {a.t_answer - a.t_sent:.2f}s; "
              f"decisions {decisions.get(a.src, [])}; "
              f"{len(checks.get(a.src, []))} check(s)")
    for label, a in (("alice at home", a_home), ("alice away", a_away),
                     ("guess 1 at dave", g1), ("guess 2", g2), ("guess 3", g3),
                     ("dave at home", d_home), ("dave away after auto", a_back)):
        show(label, a)

    def verdicts(a, *fields):
        return [tuple(d[f] for f in fields) for d in decisions.get(a.src, [])]

    # at home: no delay, no refusal
    for a in (a_home, d_home):
        assert a.ok and verdicts(a, "decision") == [], a
        assert a.t_answer - a.t_sent < tarpit, a
    # the real user from a new network: let in, after tarpit_max
    assert a_away.ok and len(checks[a_away.src]) == 1, a_away
    assert verdicts(a_away, "decision", "delay", "reason") == [
        ("tarpit", str(tarpit), CAMPAIGN_TARPIT_REASON)], decisions.get(a_away.src)
    assert tarpit - 0.5 <= a_away.t_answer - a_away.t_sent <= tarpit + 2, a_away
    # the first guess at dave: tarpitted, checked
    assert not g1.ok and len(checks[g1.src]) == 1, g1
    assert verdicts(g1, "decision", "delay") == [("tarpit", str(tarpit))], g1
    # the next, right password or not: refused before the check
    for a in (g2, g3):
        assert not a.ok and MSG_ACCOUNT in a.msg and not checks.get(a.src), a
        assert verdicts(a, "decision", "reason") == [
            ("reject", CAMPAIGN_LOCKED_REASON)], decisions.get(a.src)
    # on auto, off: dave's normal budget is back, no lock was set
    assert state["on"] is False and state["mode"] == "auto", state
    assert a_back.ok and verdicts(a_back, "decision") == [], a_back
    assert len(checks[a_back.src]) == 1
    assert harness.account_locks(r.dc, mark) == []
