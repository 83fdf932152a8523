"""Part 4: simulated attacks on a real Dovecot, with legitimate users
logging in meanwhile, under four protections in the same run:

  none                  no policy server, Dovecot's per-IP penalty off
                        (every request carries the auth protocol's
                        "no-penalty" flag, as for a trusted network)
  dovecot-penalty       no policy server, Dovecot's built-in anvil penalty
  authbrake             authbrake-policy (production thresholds) + anvil
                        penalty: what a production install runs
  authbrake-no-penalty  authbrake-policy alone (isolates its own effect)

Scenarios (each a fixed wall-clock time, so the attacker's tally is "what
it got in that time"):

  dictionary  one address, 16 parallel connections, 80 user names x 10
              common passwords (password-major); "monica" has "123456"
  botnet      400 addresses in 400 /24s, 3 tries each, 200 in parallel,
              against 50 accounts (40 staff + 10 role accounts) with 24
              common passwords; "sales" has "Summer2024" (13th guess)
  phone-nat   staff00's phone retries a stale password every second from
              a NAT address that 10 colleagues share and log in from;
              afterwards staff00 logs in with the right password there
  parallel-botnet
              200 addresses in 200 /24s each send one guess (each a
              different wrong password) at ONE account (staff07) at the same
              moment (threads + barrier: 200 `allow`s before any `report`),
              then, once every answer is in, a second such wave; staff07
              then logs in from their usual /24. Reported: the password
              checks that account got, per wave. Not a fixed wall time: it
              ends when both waves are answered (or at a deadline).
  slow-botnet a patient botnet: one guess at one account (support) every
              SLOW_PERIOD s, each from a new /24, for the scenario's wall
              time. Production windows are hours long (account_window 12h,
              account_lock_failures 10, lock_time 1h doubling up to block_max
              1d: at most 10 checks per account in any 12 hours, 20 in any
              day, 80 in any week), so under authbrake this scenario runs a
              SECOND authbrake-policy with SHORT windows (SLOW_CONF:
              account_window 10s, account_lock_failures 3, lock_time 5s,
              block_time 5s, block_max 60s) to compress days into a minute:
              10 s here stands for 12 hours. Reported: checks per 10 s
              window and the most in any 10 s interval, next to the bound
              (account_lock_failures = 3 in any account_window). "none" and
              "dovecot-penalty" have no windows: they run as for the others.

  smtp-dictionary, smtp-botnet, smtp-parallel-botnet
              the same attackers over SMTP AUTH: their requests are the
              ones Postfix's smtpd sends Dovecot for SASL (service=smtp, no
              session id; the staff keep logging in over IMAP). authbrake
              pairs such an attempt's allow and report by protocol, login,
              address and pwhash; smtp-parallel-botnet shows it holds.

  spray       a password spray in SCALED time (one day = SPRAY_DAY s): 2000
              accounts, 3 guesses per account per scaled day (one common
              password per 8 scaled hours), each from a new /24, under its
              own four configurations (SPRAY_CONFIGS: none, dovecot-penalty,
              authbrake after `authbrake campaign off`, authbrake with
              campaign mode auto) on Dovecots of its own whose authbrake has
              the production windows scaled to SPRAY_DAY. Reported: checks
              per scaled day and per 8 scaled hours, and when campaign mode
              turned on. BENCH_ATTACK_SCENARIOS=spray runs it alone.

During dictionary, botnet, parallel-botnet and slow-botnet (and their smtp-
forms, and spray), the 40 staff
log in (right password) from their usual /24 in a loop: refused or delayed
(> 1 s) logins and their latency are what the attack cost them. In
phone-nat the legitimate logins are the 10 colleagues behind the NAT and
staff00's own logins with the right password afterwards: under authbrake
they must see 0 refusals.

Clients speak Dovecot's auth-client protocol (bench/authclient.py, what
imap-login sends) with rip = real_rip = 127.x.y.z: the attack is on the
auth process, where the policy check and the penalty live; login processes
would only add their own fork cost. Like imap-login, every request carries
a session id of its own (authclient.py): authbrake holds places in its
budgets only for attempts it can pair with their report. Dovecot runs with
auth_failure_delay = 0 (production has 2 s), yet 2.3 still answers every
failure on a 500 ms tick. Password checks the attacker got are counted
from Dovecot's own log (auth_verbose: "Password mismatch" / "unknown user"
for the attacker's addresses) plus the attacker's successful logins.
"""

import atexit
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from authclient import AuthClient, AuthError
from benchlib import (dovecot_pair, figure, ms, percentile,
                      production_overrides, say, write_csv)
import harness  # noqa: E402  (benchlib puts test/integration on the path)


PART = "attack"
PROTECTIONS = ("none", "dovecot-penalty", "authbrake", "authbrake-no-penalty")

NAMES = ("admin", "info", "sales", "support", "office", "contact", "billing",
         "hr", "webmaster", "postmaster", "test", "user", "mail", "guest",
         "root", "backup", "service", "marketing", "jobs", "news",
         "aaron", "adam", "alan", "albert", "alex", "alice", "amanda", "amy",
         "andrea", "andrew", "angela", "anna", "anthony", "barbara", "ben",
         "betty", "bob", "brian", "carl", "carol", "monday", "monica",
         "monroe", "charles", "chris", "daniel", "david", "diana", "donna",
         "edward", "emily", "eric", "frank", "gary", "george", "helen",
         "henry", "jack", "james", "jane", "jason", "jeff", "jennifer",
         "john", "joseph", "karen", "kevin", "laura", "linda", "lisa",
         "mark", "mary", "michael", "nancy", "paul", "peter", "richard",
         "robert", "sarah", "steven")
DICT_PASSWORDS = ("password", "123456", "12345678", "qwerty", "letmein",
                  "welcome", "monkey", "abc123", "111111", "iloveyou")
BOT_PASSWORDS = ("123456", "password", "12345678", "qwerty", "123456789",
                 "12345", "1234", "111111", "1234567", "dragon", "123123",
                 "baseball", "Summer2024", "abc123", "football", "monkey",
                 "letmein", "696969", "shadow", "master", "666666",
                 "qwertyuiop", "123321", "mustang")
ROLE_ACCOUNTS = NAMES[:10]
BOTS_PARALLEL = 200
TAIL_SECONDS = 5
STAFF = [f"staff{i:02d}" for i in range(40)]
WAVE_BOTS = 200              # parallel-botnet: addresses (one per /24) per wave
PARALLEL_TARGET = "staff07"
SLOW_TARGET = "support"
SLOW_PERIOD = 1.0            # slow-botnet: one guess every SLOW_PERIOD seconds
# slow-botnet's authbrake: production thresholds with short windows, so that
# a minute of the bench shows what days do in production (10 s ~ 12 h)
SLOW_CONF = {"account_window": "10s", "account_lock_failures": 3,
             "lock_time": "5s", "block_time": "5s", "block_max": "60s"}
SLOW_WINDOW = 10             # = SLOW_CONF account_window, in seconds
SLOW_BOUND = 3               # = SLOW_CONF account_lock_failures


def users():
    u = {s: f"{s}-Long-Pass-{i * 7919 % 10007}" for i, s in enumerate(STAFF)}
    for r in ROLE_ACCOUNTS:
        u[r] = f"{r}-Strong-Pass-9d3f"
    u["sales"] = "Summer2024"          # weak: the botnet's 13th guess
    u["monica"] = "123456"             # weak: the dictionary's 2nd password
    u["monday"] = "monday-Strong-7a1c"
    u["monroe"] = "monroe-Strong-55e0"
    return u


class Block:
    """Addresses for one (protection, scenario): anvil keeps per-IP state
    for the life of Dovecot, so no two runs share an address."""

    def __init__(self, p, s):
        self.base = 1 + p * 4 * len(SCENARIOS) + s * 4

    def home(self, i, alt=0):      # staff i's usual /24
        return f"127.{self.base + 1}.{i}.{7 + alt}"

    def dictionary(self):
        return f"127.{self.base}.66.6"

    def bot(self, k):              # one address per /24
        return f"127.{self.base + 2 + k % 2}.{(k // 2) % 256}.{50 + k // 512}"

    def nat(self):
        return f"127.{self.base}.88.1"


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = 0
        self.ok = 0
        self.ok_accounts = set()
        self.latency = []
        self.refused = 0
        self.planned = None       # attempts the attacker had in store
        self.windows = ""         # slow-botnet: checks per account_window
        self.last_answer = None   # time.monotonic() of the last answer

    def add(self, ok, secs, user=None):
        with self.lock:
            self.attempts += 1
            self.last_answer = time.monotonic()
            self.latency.append(secs)
            if ok:
                self.ok += 1
                if user:
                    self.ok_accounts.add(user)
            else:
                self.refused += 1


class Run:
    """One scenario under one protection."""

    def __init__(self, dv, sock, no_penalty, seconds, smtp=False):
        self.dv, self.sock, self.no_penalty = dv, sock, no_penalty
        self.seconds = seconds
        # the attacker's requests as Postfix's smtpd sends them (SASL
        # through Dovecot): service smtp, no session id
        self.smtp = smtp
        self.clients = []
        self.clients_lock = threading.Lock()
        self.stop = threading.Event()
        self.errors = []

    def client(self):
        try:
            c = AuthClient(self.sock, timeout=120)
        except (OSError, AuthError) as e:
            self.errors.append(f"cannot connect to {self.sock}: {e}")
            raise
        with self.clients_lock:
            self.clients.append(c)
        return c

    def auth(self, c, user, pw, rip, attacker=True):
        smtp = self.smtp and attacker
        try:
            ok, _, secs = c.auth(user, pw, rip, no_penalty=self.no_penalty,
                                 service="smtp" if smtp else "imap",
                                 session=not smtp)
            return ok, secs
        except (OSError, AuthError) as e:
            if not self.stop.is_set():
                self.errors.append(f"{user}@{rip}: {e}")
            return None, None        # cut off at the end of the run

    def attacker(self, tally, jobs):
        """jobs: iterator of (user, password, rip), shared by the threads."""
        try:
            c = self.client()
        except (OSError, AuthError):
            return
        while not self.stop.is_set():
            try:
                with tally.lock:
                    user, pw, rip = next(jobs)
            except StopIteration:
                return
            ok, secs = self.auth(c, user, pw, rip)
            if ok is None:
                return
            tally.add(ok, secs, user)

    def legit_loop(self, tally, who, pause):
        """who: list of (user, password, rip), logged in round robin."""
        try:
            c = self.client()
        except (OSError, AuthError):
            return
        i = 0
        while not self.stop.is_set():
            user, pw, rip = who[i % len(who)]
            ok, secs = self.auth(c, user, pw, rip, attacker=False)
            if ok is None:
                return
            tally.add(ok, secs)
            i += 1
            self.stop.wait(pause)

    def go(self, threads, until=()):
        """Run for self.seconds; with until (some of threads), stop as soon
        as those have finished (or at self.seconds)."""
        for t in threads:
            t.daemon = True
            t.start()
        deadline = time.monotonic() + self.seconds
        for t in until:
            t.join(max(0.0, deadline - time.monotonic()))
        if not until:
            time.sleep(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        time.sleep(0.7)          # let answers already on their way arrive
        with self.clients_lock:  # then cut off requests held by a delay
            for c in self.clients:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in threads:
            t.join(10)
        for c in self.clients:
            c.close()


def check_lines(log):
    """Dovecot's log lines for password checks that failed ("Password
    mismatch" / "unknown user"), as matches of the harness's parser of
    2.3's and 2.4's lines (harness.PASSDB_LINE_RE: groups user, address,
    stamp)."""
    for m in harness.PASSDB_LINE_RE.finditer(log):
        if m["what"] in ("Password mismatch", "unknown user"):
            yield m


def _stamp(text):
    """Epoch seconds of a log time stamp ("Dec  6 11:56:44"; this year)."""
    t = time.strptime(f"{time.localtime().tm_year} {text}", "%Y %b %d %H:%M:%S")
    return time.mktime(t)


def count_checks(log, addresses, tail_from=None):
    """Password checks for these addresses; with tail_from (epoch seconds)
    also those logged since then (Dovecot's log has 1 s resolution)."""
    n = tail = 0
    for m in check_lines(log):
        if m["address"] in addresses:
            n += 1
            if tail_from is not None and _stamp(m["stamp"]) >= tail_from:
                tail += 1
    return n, tail


REJECT_RE = re.compile(r'authbrake-policy: \w+: account="[^"]*" address=([0-9.]+) '
                       r'[^"]*?decision=(\w+)[^"]*?reason="([^"]*)"')
BLOCK_RE = re.compile(r"authbrake-policy: \w+: address ([0-9.]+) blocked for (\S+):")


def policy_reasons(log, addresses):
    """How authbrake-policy's log says it treated these addresses."""
    seen = {}
    for m in REJECT_RE.finditer(log):
        if m.group(1) in addresses:
            key = f"{m.group(2)}: {m.group(3)}"
            seen[key] = seen.get(key, 0) + 1
    for m in BLOCK_RE.finditer(log):
        if m.group(1) in addresses:
            key = f"address blocked for {m.group(2)}"
            seen[key] = seen.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(seen.items(), key=lambda kv: -kv[1]))


def anvil_penalty(dv, addresses):
    """The highest penalty Dovecot's anvil holds for these addresses
    (`doveadm penalty`): evidence the penalty was on, or not."""
    r = subprocess.run(["doveadm", "-c", dv.conf_path, "penalty"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30)
    best = 0
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        if len(f) >= 2 and f[0] in addresses and f[1].isdigit():
            best = max(best, int(f[1]))
    return best


def locked_iter(it):
    return iter(list(it))


def scenario_dictionary(run, blk, pw):
    att, leg = Tally(), Tally()
    rip = blk.dictionary()
    jobs = locked_iter((n, p, rip) for p in DICT_PASSWORDS for n in NAMES)
    att.planned = len(DICT_PASSWORDS) * len(NAMES)
    legit = [(s, pw[s], blk.home(i, i % 2)) for i, s in enumerate(STAFF)]
    threads = [threading.Thread(target=run.attacker, args=(att, jobs)) for _ in range(16)]
    threads.append(threading.Thread(target=run.legit_loop, args=(leg, legit, 0.1)))
    run.go(threads)
    return att, leg, {rip}, {blk.home(i, a) for i in range(40) for a in (0, 1)}, ""


def scenario_botnet(run, blk, pw):
    att, leg = Tally(), Tally()
    targets = STAFF + list(ROLE_ACCOUNTS)
    jobs = []
    for k in range(400):
        for j in range(3):
            g = k * 3 + j
            jobs.append((targets[g % len(targets)],
                         BOT_PASSWORDS[(g // len(targets)) % len(BOT_PASSWORDS)],
                         blk.bot(k)))
    # 200 bots at a time (a botnet's hosts work in parallel), each address
    # sending its 3 tries in a row
    per_thread = [[] for _ in range(BOTS_PARALLEL)]
    for k in range(400):
        per_thread[k % BOTS_PARALLEL].extend(jobs[k * 3:k * 3 + 3])
    threads = [threading.Thread(target=run.attacker, args=(att, iter(pt)))
               for pt in per_thread]
    att.planned = len(jobs)
    legit = [(s, pw[s], blk.home(i, i % 2)) for i, s in enumerate(STAFF)]
    threads.append(threading.Thread(target=run.legit_loop, args=(leg, legit, 0.1)))
    run.go(threads)
    return (att, leg, {blk.bot(k) for k in range(400)},
            {blk.home(i, a) for i in range(40) for a in (0, 1)}, "")


def scenario_phone(run, blk, pw):
    phone, leg = Tally(), Tally()
    nat = blk.nat()
    owner = STAFF[0]
    stale = pw[owner] + "-old"
    colleagues = [(s, pw[s], nat) for s in STAFF[1:11]]
    threads = [threading.Thread(target=run.legit_loop,
                                args=(phone, [(owner, stale, nat)], 1.0)),
               threading.Thread(target=run.legit_loop, args=(leg, colleagues, 0.25))]
    run.go(threads)
    # the owner fixes the phone: right password from the NAT, then from home
    notes = []
    with AuthClient(run.sock) as c:
        for where, rip in (("NAT", nat), ("home", blk.home(0))):
            ok, _, secs = c.auth(owner, pw[owner], rip, no_penalty=run.no_penalty)
            leg.add(ok, secs)
            notes.append(f"owner from {where}: {'ok' if ok else 'REFUSED'} {secs:.2f}s")
    notes.append(f"phone tries {phone.attempts}")
    return phone, leg, {nat}, {nat, blk.home(0)}, "; ".join(notes)


def scenario_parallel(run, blk, pw):
    """200 bots, one per /24, one guess each at one account at the same
    moment; a second wave once all are answered."""
    att, leg = Tally(), Tally()
    target = PARALLEL_TARGET
    bots = [blk.bot(k) for k in range(WAVE_BOTS)]
    att.planned = 2 * WAVE_BOTS
    mark0 = run.dv.log_mark()
    between = []                 # log offset once wave 1 is all answered

    def wave_done():
        time.sleep(0.3)          # Dovecot's log process writes a bit later
        between.append(run.dv.log_mark())

    # a bot that cannot connect still waits at the barriers (so they are
    # not broken); a broken barrier (timeout) lets the others go anyway
    start = threading.Barrier(WAVE_BOTS, timeout=15)
    second = threading.Barrier(WAVE_BOTS, action=wave_done, timeout=15)

    def bot(k):
        try:
            c = run.client()
        except (OSError, AuthError):
            c = None
        for wave, barrier in enumerate((start, second)):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            if c is None or run.stop.is_set():
                continue
            ok, secs = run.auth(c, target, f"{target}-guess{wave + 1}-{k:03d}", bots[k])
            if ok is None:
                c = None
                continue
            att.add(ok, secs, target)

    bot_threads = [threading.Thread(target=bot, args=(k,)) for k in range(WAVE_BOTS)]
    legit = [(s, pw[s], blk.home(i, i % 2)) for i, s in enumerate(STAFF)]
    threads = bot_threads + [threading.Thread(target=run.legit_loop, args=(leg, legit, 0.1))]
    run.go(threads, until=bot_threads)
    notes = []
    time.sleep(0.3)
    log = run.dv.log_since(mark0)
    addrs = set(bots)
    if between:
        cut = between[0] - mark0
        w1 = count_checks(log[:cut], addrs)[0]
        w2 = count_checks(log[cut:], addrs)[0]
        notes.append(f"checks on {target}: wave 1 {w1}, wave 2 {w2}")
    else:
        notes.append("the waves did not line up (barrier timed out)")
    # the owner from their usual /24, then (right password) from a new /24
    with AuthClient(run.sock) as c:
        for where, rip in (("home", blk.home(STAFF.index(target))),
                           ("a new /24", blk.bot(WAVE_BOTS))):
            ok, _, secs = c.auth(target, pw[target], rip, no_penalty=run.no_penalty)
            if where == "home":
                leg.add(ok, secs)
            notes.append(f"{target} (right password) from {where}: "
                         f"{'ok' if ok else 'REFUSED'} {secs:.2f}s")
    return (att, leg, addrs, {blk.home(i, a) for i in range(40) for a in (0, 1)},
            "; ".join(notes))


def window_counts(times, seconds, window):
    """Checks per consecutive window from the start, and the most in any
    interval of that length (times: seconds since the start)."""
    n = max(1, -(-int(round(seconds)) // window))
    per = [0] * n
    for t in times:
        per[min(n - 1, int(t // window))] += 1
    most = max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)
    return per, most


def scenario_slow(run, blk, pw):
    """A patient botnet: one guess at one account every SLOW_PERIOD s, each
    from a new /24."""
    att, leg = Tally(), Tally()
    target = SLOW_TARGET
    sent = {}                    # address -> seconds since the start
    mark0 = run.dv.log_mark()
    t0 = time.monotonic()

    def attacker():
        try:
            c = run.client()
        except (OSError, AuthError):
            return
        k = 0
        while not run.stop.is_set():
            rip = blk.bot(k)
            sent[rip] = time.monotonic() - t0
            ok, secs = run.auth(c, target, f"{target}-slow-{k:04d}", rip)
            if ok is None:
                return
            att.add(ok, secs, target)
            k += 1
            run.stop.wait(max(0.0, t0 + k * SLOW_PERIOD - time.monotonic()))

    legit = [(s, pw[s], blk.home(i, i % 2)) for i, s in enumerate(STAFF)]
    threads = [threading.Thread(target=attacker),
               threading.Thread(target=run.legit_loop, args=(leg, legit, 0.1))]
    run.go(threads)
    time.sleep(0.3)
    log = run.dv.log_since(mark0)
    times = sorted(sent[m["address"]] for m in check_lines(log)
                   if m["address"] in sent)
    per, most = window_counts(times, run.seconds, SLOW_WINDOW)
    att.windows = " ".join(map(str, per))
    note = (f"{len(sent)} guesses at {target}, 1 per {SLOW_PERIOD:g} s, each from a new "
            f"/24; checks per {SLOW_WINDOW} s window: {att.windows}; most in any "
            f"{SLOW_WINDOW} s: {most} (short-window authbrake bound: "
            f"account_lock_failures {SLOW_BOUND} per account_window {SLOW_WINDOW} s; "
            f"production: 10 per 12 h, 20 per day, 80 per week)")
    return (att, leg, set(sent), {blk.home(i, a) for i in range(40) for a in (0, 1)},
            note)


def who_of(scenario):
    return "phone" if scenario == "phone-nat" else "attacker"


SCENARIOS = (("dictionary", scenario_dictionary), ("botnet", scenario_botnet),
             ("phone-nat", scenario_phone), ("parallel-botnet", scenario_parallel),
             ("slow-botnet", scenario_slow),
             # the same attackers over SMTP AUTH (Run.smtp)
             ("smtp-dictionary", scenario_dictionary),
             ("smtp-botnet", scenario_botnet),
             ("smtp-parallel-botnet", scenario_parallel))


@contextlib.contextmanager
def short_window_dovecot(users, mc):
    """A third Dovecot whose authbrake-policy has production thresholds but
    SHORT windows (SLOW_CONF), for slow-botnet: minutes stand for days."""
    d = tempfile.mkdtemp(prefix="ab-bench-attack-slow-")
    atexit.register(shutil.rmtree, d, True)
    conf = harness.write_authbrake_conf(d, mc, **production_overrides(**SLOW_CONF))
    with harness.Dovecot(users=users, policy_conf=conf, auth_debug=False,
                         anvil_penalty=True) as dv:
        yield dv


def warm_up(sock, pw, blk, no_penalty, extra=()):
    """Every staff member has logged in from their usual /24 before."""
    with AuthClient(sock) as c:
        for i, s in enumerate(STAFF):
            c.auth(s, pw[s], blk.home(i), no_penalty=no_penalty)
        for user, rip in extra:
            c.auth(user, pw[user], rip, no_penalty=no_penalty)


def legit_columns(leg):
    """A row's columns for the legitimate logins beside an attack."""
    return {
        "legit_total": leg.attempts, "legit_refused": leg.refused,
        "legit_delayed": sum(1 for t in leg.latency if t > 1.0),
        "legit_p50_ms": ms(percentile(leg.latency, 50)),
        "legit_p99_ms": ms(percentile(leg.latency, 99)),
        "legit_max_ms": ms(max(leg.latency) if leg.latency else None),
    }


# ------------------------------------------------------------------ spray
#
# A password spray (issue 23): SPRAY_PER_DAY common wrong passwords a day,
# each tried on every one of SPRAY_ACCOUNTS accounts, every guess from a new
# /24. No address and no account ever reaches a threshold of its own (3
# failures a day per account; account_lock_failures is 10 in 12 h): only
# campaign mode's site-wide detector sees the spray. It runs in scaled time:
# one day is SPRAY_DAY seconds, and authbrake's production windows are
# scaled by the same factor (spray_conf()). Dovecot sends no password an
# account does not tie to (pwhash hashes the login with it), so on Dovecot
# campaign mode comes from the rate detector alone.

SPRAY_ACCOUNTS = 2000
SPRAY_PER_DAY = 3            # guesses per account per scaled day
SPRAY_DAY = 72               # seconds that stand for a day: 1 s = 20 min
# one common password per SPRAY_DAY / SPRAY_PER_DAY (8 scaled hours), tried
# on every account in turn
SPRAY_PASSWORDS = ("Winter2025!", "Password1", "Welcome1")
# attacker connections: under campaign mode a guess let through is held
# campaign_tarpit (2 s) before its check
SPRAY_THREADS = 256
SPRAY_CONFIGS = ("none", "dovecot-penalty", "authbrake-campaign-off", "authbrake")
# the windows of the production configuration, scaled to SPRAY_DAY (each at
# least 1 s, the configuration's resolution); familiar_days (whole days)
# and the delays (tarpit_max, campaign_tarpit) are not scaled
SPRAY_SCALED = ("ip_window", "block_time", "block_max", "account_window", "lock_time",
                "password_repeat", "campaign_interval", "campaign_cooldown",
                "campaign_day")
SPRAY_CAMPAIGN_RE = re.compile(r"^(\w{3} [ \d]\d \d\d:\d\d:\d\d) authbrake-policy: \w+: "
                               r"(campaign mode (?:on|off): .*)$", re.M)


def spray_account(i):
    return f"m{i:04d}"


def spray_users():
    return {spray_account(i): f"m{i:04d}-Strong-Pass-{i * 7919 % 10007}"
            for i in range(SPRAY_ACCOUNTS)}


class SprayBlock:
    """Addresses of the spray under configuration c: a /24 per guess in 25
    second octets from 127.130 on (Block's end below 130), the staff's
    homes in 127.232 on."""

    def __init__(self, c):
        self.c = c

    def bot(self, g):
        return f"127.{130 + self.c * 25 + g // 256}.{g % 256}.9"

    def home(self, i, alt=0):
        return f"127.{232 + self.c}.{i}.{7 + alt}"


def authbrake_cli(conf, *args):
    """`authbrake -c CONF ARGS`: (exit status, stdout, stderr)."""
    r = subprocess.run([str(harness.CLI_BIN), "-c", str(conf), *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=30)
    return r.returncode, r.stdout, r.stderr


def campaign_state(conf):
    """`authbrake --json campaign` as a dict; {"error": ...} when it fails."""
    rc, out, err = authbrake_cli(conf, "--json", "campaign")
    try:
        if rc == 0:
            return json.loads(out)
    except ValueError:
        pass
    return {"error": f"authbrake campaign: exit {rc}: {(err or out).strip()[:200]}"}


def spray_conf(d, mc):
    """An authbrake.conf with the production settings (tracker/ab-config.c,
    as `authbrake config` prints them) and their windows scaled to
    SPRAY_DAY. campaign_interval cannot go below 1 s: when it is longer
    than its scaled value, campaign_floor (failures per interval) grows by
    as much, so the floor's rate stays production's. Returns (conf, {key:
    value written}, {key: production value})."""
    prod_conf = harness.write_authbrake_conf(os.path.join(d, "production"), mc,
                                             **production_overrides())
    rc, out, err = authbrake_cli(prod_conf, "config")
    if rc != 0:
        raise RuntimeError(f"authbrake config: exit {rc}: {err.strip()}")
    prod = dict(re.findall(r"(?m)^(\w+) = (.*)$", out))
    missing = [k for k in SPRAY_SCALED + ("campaign_floor",) if k not in prod]
    if missing:
        raise RuntimeError(f"authbrake config does not print {', '.join(missing)}: "
                           "a build without campaign mode?")
    factor = SPRAY_DAY / 86400
    scaled = {}
    for k in SPRAY_SCALED:
        scaled[k] = max(1, round(harness.parse_duration(prod[k]) * factor))
    ideal = harness.parse_duration(prod["campaign_interval"]) * factor
    scaled["campaign_floor"] = max(1, round(int(prod["campaign_floor"])
                                            * scaled["campaign_interval"] / ideal))
    conf = harness.write_authbrake_conf(os.path.join(d, "scaled"), mc,
                                        **production_overrides(
                                            **{k: f"{v}s" if k in SPRAY_SCALED else v
                                               for k, v in scaled.items()}))
    return conf, scaled, {k: prod[k] for k in scaled}


@contextlib.contextmanager
def spray_dovecots(pw, mc):
    """Two Dovecots with the staff and the SPRAY_ACCOUNTS accounts, anvil
    penalty on as in production: one without a policy server, one with
    authbrake-policy on the scaled production configuration. Yields
    (plain, pol, conf, scaled, production)."""
    d = tempfile.mkdtemp(prefix="ab-bench-attack-spray-")
    atexit.register(shutil.rmtree, d, True)
    conf, scaled, prod = spray_conf(d, mc)
    every = dict(pw, **spray_users())
    with harness.Dovecot(users=every, auth_debug=False, anvil_penalty=True) as plain, \
            harness.Dovecot(users=every, policy_conf=conf, auth_debug=False,
                            anvil_penalty=True) as pol:
        yield plain, pol, conf, scaled, prod


class CampaignWatch(threading.Thread):
    """Asks `authbrake campaign` every POLL s while the spray runs: when
    campaign mode was first seen on (time.monotonic()), how often it was
    seen turning on, and the last answer."""
    POLL = 0.2

    def __init__(self, conf, stop):
        super().__init__(daemon=True)
        self.conf, self.stop = conf, stop
        self.first_on = None
        self.turned_on = 0
        self.last = {}

    def run(self):
        was_on = False
        while not self.stop.is_set():
            st = campaign_state(self.conf)
            self.last = st
            on = st.get("on") is True
            if on and not was_on:
                self.turned_on += 1
                if self.first_on is None:
                    self.first_on = time.monotonic()
            was_on = on
            self.stop.wait(self.POLL)


def learn(dv, sock, pw, blk, no_penalty, conf):
    """The site's normal traffic before the spray (the staff from home,
    every 0.1 s) until the rate detector is armed: it learns an hour of
    the day (1/24 of campaign_day) before a rate can turn campaign mode on.
    At most three scaled hours. Returns (seconds it took, last state)."""
    run = Run(dv, sock, no_penalty, 0)
    tally = Tally()
    legit = [(s, pw[s], blk.home(i, i % 2)) for i, s in enumerate(STAFF)]
    t = threading.Thread(target=run.legit_loop, args=(tally, legit, 0.1), daemon=True)
    t0 = time.monotonic()
    t.start()
    deadline = t0 + 3 * SPRAY_DAY / 24 + 2
    st = campaign_state(conf)
    while not st.get("armed") and time.monotonic() < deadline and "error" not in st:
        time.sleep(0.2)
        st = campaign_state(conf)
    run.stop.set()
    t.join(10)
    for c in run.clients:
        c.close()
    return time.monotonic() - t0, st


def scaled_hours(seconds):
    return seconds * 24 / SPRAY_DAY


def scenario_spray(run, blk, pw, n_guesses, conf=None):
    """The spray: guess g at account g % SPRAY_ACCOUNTS with the common
    password of its 8 scaled hours, from its own /24, sent at g x period
    (SPRAY_THREADS connections take them in turn); the staff log in from
    home meanwhile. With conf, a CampaignWatch polls campaign mode."""
    att, leg = Tally(), Tally()
    period = SPRAY_DAY / (SPRAY_ACCOUNTS * SPRAY_PER_DAY)
    jobs = iter(range(n_guesses))
    att.planned = n_guesses
    sent = [None] * n_guesses    # seconds since t0 each guess was sent
    t0 = time.monotonic()

    def attacker():
        try:
            c = run.client()
        except (OSError, AuthError):
            return
        while not run.stop.is_set():
            with att.lock:
                g = next(jobs, None)
            if g is None:
                return
            wait = t0 + g * period - time.monotonic()
            if wait > 0 and run.stop.wait(wait):
                return
            account = spray_account(g % SPRAY_ACCOUNTS)
            password = SPRAY_PASSWORDS[(g // SPRAY_ACCOUNTS) % len(SPRAY_PASSWORDS)]
            sent[g] = time.monotonic() - t0
            ok, secs = run.auth(c, account, password, blk.bot(g))
            if ok is None:
                return
            att.add(ok, secs, account)

    watch = CampaignWatch(conf, run.stop) if conf else None
    bots = [threading.Thread(target=attacker) for _ in range(SPRAY_THREADS)]
    legit = [(s, pw[s], blk.home(i, i % 2)) for i, s in enumerate(STAFF)]
    threads = bots + [threading.Thread(target=run.legit_loop, args=(leg, legit, 0.1))]
    if watch:
        threads.append(watch)
    run.go(threads, until=bots)
    return att, leg, sent, watch, t0


def run_spray(m, scale, mc, pw):
    """The spray under SPRAY_CONFIGS; its rows, as the scenarios' are."""
    rows = []
    seconds = max(3, round(SPRAY_DAY * scale))
    n_guesses = round(SPRAY_ACCOUNTS * SPRAY_PER_DAY * seconds / SPRAY_DAY)
    day = ("the scaled day" if seconds == SPRAY_DAY
           else f"{scaled_hours(seconds):g} scaled hours")
    with spray_dovecots(pw, mc) as (plain, pol, conf, scaled, prod):
        scale_desc = (f"1 s = {86400 / SPRAY_DAY / 60:g} scaled min, a day = {SPRAY_DAY} s; "
                      + ", ".join(f"{k} {scaled[k]}{'s' if k in SPRAY_SCALED else ''}"
                                  f" (production {prod[k]})" for k in scaled))
        say(PART, f"spray: Dovecot without policy pid {plain.pid}, with authbrake-policy "
            f"pid {pol.pid} on production thresholds with windows SCALED ({scale_desc}); "
            f"{SPRAY_ACCOUNTS} spray accounts + {len(pw)} users in passwd-file")
        for c, prot in enumerate(SPRAY_CONFIGS):
            dv = pol if prot.startswith("authbrake") else plain
            no_penalty = prot == "none"
            sock = os.path.join(dv.base_dir, "auth-client")
            blk = SprayBlock(c)
            mc.command("flush_all")
            notes = []
            if prot == "authbrake-campaign-off":
                rc, out, err = authbrake_cli(conf, "campaign", "off")
                if rc != 0:
                    raise RuntimeError(f"authbrake campaign off: exit {rc}: {err.strip()}")
            if dv is pol:
                st = campaign_state(conf)
                notes.append(f"before: campaign mode {st.get('mode', '?')}, "
                             f"{'on' if st.get('on') else 'off'}"
                             + (f" ({st['error']})" if "error" in st else ""))
            warm_up(sock, pw, blk, no_penalty)
            if prot == "authbrake":
                # (nothing is learned while the mode is forced)
                took, st = learn(dv, sock, pw, blk, no_penalty, conf)
                notes.append(f"normal traffic for {took:.1f} s "
                             f"({scaled_hours(took) * 60:.0f} scaled min) before the spray: "
                             + ("the rate detector armed, threshold "
                                f"{st.get('threshold')}" if st.get("armed") else
                                f"the rate detector NOT armed ({st})"))
            mark = dv.log_mark()
            # a deadline: the run ends once every guess is answered
            r = Run(dv, sock, no_penalty, seconds + 15)
            tail_from = int(time.time()) + seconds - TAIL_SECONDS
            wall0 = time.time()
            att, leg, sent, watch, t0 = scenario_spray(
                r, blk, pw, n_guesses, conf if dv is pol else None)
            elapsed = time.monotonic() - t0
            time.sleep(0.3)
            log = dv.log_since(mark)
            g_of = {blk.bot(g): g for g in range(n_guesses)}
            checks, tail = count_checks(log, g_of, tail_from)
            per_pass = [0] * -(-n_guesses // SPRAY_ACCOUNTS)
            per_account = {}
            for mt in check_lines(log):
                g = g_of.get(mt["address"])
                if g is not None:
                    per_pass[g // SPRAY_ACCOUNTS] += 1
                    per_account[g % SPRAY_ACCOUNTS] = per_account.get(g % SPRAY_ACCOUNTS, 0) + 1
            checks += att.ok
            late = max((s - g * SPRAY_DAY / (SPRAY_ACCOUNTS * SPRAY_PER_DAY)
                        for g, s in enumerate(sent) if s is not None), default=0.0)
            unsent = sum(1 for s in sent if s is None)
            notes.append(f"{SPRAY_ACCOUNTS} accounts x {SPRAY_PER_DAY} guesses per scaled "
                         f"day, one common password per {24 // SPRAY_PER_DAY} scaled hours, "
                         f"each guess from a new /24: {sum(1 for s in sent if s is not None)} "
                         f"sent (the latest {late:.1f} s behind schedule"
                         + (f", {unsent} never sent" if unsent else "") + ")")
            notes.append(f"checks per {24 // SPRAY_PER_DAY} scaled hours: "
                         + " / ".join(map(str, per_pass))
                         + f"; most on one account: {max(per_account.values(), default=0)}")
            on_after = ""
            if watch is not None:
                lines = SPRAY_CAMPAIGN_RE.findall(log)
                ons = [l for _, l in lines if l.startswith("campaign mode on")]
                offs = [l for _, l in lines if l.startswith("campaign mode off")]
                if watch.first_on is not None:
                    t_on = watch.first_on - t0
                    before = sum(1 for s in sent if s is not None and s <= t_on)
                    on_after = f"{before} guesses"
                    notes.append(f"campaign mode on after {before} guesses, {t_on:.1f} s "
                                 f"({scaled_hours(t_on) * 60:.0f} scaled min) into the day "
                                 f"(`authbrake campaign` polled every {CampaignWatch.POLL} s)")
                else:
                    on_after = "never"
                    notes.append("campaign mode never seen on")
                notes.append(f"Dovecot's log: 'campaign mode on' x{len(ons)}, "
                             f"'campaign mode off' x{len(offs)}"
                             + (f", first: \"{ons[0]}\"" if len(lines) == 1 else "")
                             + ("; at (s into the day): " + ", ".join(
                                 f"{_stamp(t) - int(wall0):.0f}: \"{l}\""
                                 for t, l in lines[:12]) if len(lines) > 1 else ""))
                st = watch.last
                notes.append(f"after: campaign mode {st.get('mode', '?')}, "
                             f"{'on' if st.get('on') else 'off'}"
                             + (f" ({st['error']})" if "error" in st else ""))
                why = policy_reasons(log, g_of)
                if why:
                    notes.append(f"authbrake on attacker: {why}")
                why = policy_reasons(log, {blk.home(i, a) for i in range(40) for a in (0, 1)})
                if why:
                    notes.append(f"authbrake on legit addresses: {why}")
                unchecked = sum(1 for line in log.splitlines()
                                if "auth: " in line and "Policy server" in line)
                notes.append(f"policy requests Dovecot gave up on: {unchecked}")
            elif not no_penalty:
                notes.append(f"anvil penalty of attacker address(es): max "
                             f"{anvil_penalty(dv, set(g_of))}")
            note = "; ".join(notes)
            # a figure per day only when the run was a whole day (campaign
            # mode's checks are not spread evenly over it)
            per_day = checks if seconds == SPRAY_DAY else ""
            row = {
                "scenario": "spray", "protection": prot, "seconds": seconds,
                "attacker_attempts": att.attempts, "attacker_checks": checks,
                "checks_per_min_at_end": round(tail * 60 / TAIL_SECONDS),
                "accounts_broken": " ".join(sorted(att.ok_accounts)) or "-",
                "checks_per_window": " ".join(map(str, per_pass)),
                "checks_per_day": per_day, "campaign_on_after": on_after,
                **legit_columns(leg),
                "note": note,
            }
            if r.errors:
                row["note"] += f"; {len(r.errors)} client errors, first: {r.errors[0]}"
            rows.append(row)
            figure(PART, f"{'spray':10s} {prot:20s}",
                   f"attacker: {att.attempts} answered, {checks} password checks in "
                   f"{day} ({row['checks_per_min_at_end']}/min in "
                   f"the last {TAIL_SECONDS} s), broken: {row['accounts_broken']}; legit: "
                   f"{leg.attempts} logins, {leg.refused} refused, {row['legit_delayed']} "
                   f"delayed >1 s, p50 {row['legit_p50_ms']} ms, p99 {row['legit_p99_ms']} ms; "
                   + row["note"],
                   f"bench/attack.py spray for {seconds} s = {day} (ran {elapsed:.1f} s), "
                   f"SCALED time ({scale_desc}), {SPRAY_THREADS} attacker connections, "
                   + ("`authbrake campaign off` before it, "
                      if prot == "authbrake-campaign-off" else "")
                   + f"auth-client socket of Dovecot pid {dv.pid}, "
                   f"{'no-penalty flag' if no_penalty else 'anvil penalty on'}, "
                   f"checks = Dovecot log lines 'Password mismatch'/'unknown user' for "
                   f"{len(g_of)} attacker addresses + attacker OKs; {m['nproc']} CPUs")
    return rows


def run(m, scale=1.0):
    pw = users()
    rows = []
    # BENCH_ATTACK_SCENARIOS=spray,botnet: those scenarios only
    only = {x.strip() for x in os.environ.get("BENCH_ATTACK_SCENARIOS", "").split(",")
            if x.strip()}
    unknown = only - {name for name, _ in SCENARIOS} - {"spray"}
    if unknown:
        raise ValueError(f"BENCH_ATTACK_SCENARIOS: unknown scenario(s) {', '.join(sorted(unknown))}"
                         f" (scenarios: {', '.join(n for n, _ in SCENARIOS)}, spray)")
    durations = {"dictionary": 15, "botnet": 20, "phone-nat": 15,
                 # a deadline: it ends when its two waves are answered
                 "parallel-botnet": 30,
                 "slow-botnet": 60}
    # not scaled down below: parallel-botnet's deadline, slow-botnet's two windows
    floor = {"parallel-botnet": 30, "slow-botnet": 2 * SLOW_WINDOW}
    slow_desc = ", ".join(f"{k} {v}" for k, v in SLOW_CONF.items())
    # "none" and "authbrake-no-penalty" switch the anvil penalty off per
    # request (no-penalty flag); the others keep it, as production does
    with dovecot_pair(pw, "ab-bench-attack-") as (mc, plain, pol), \
            short_window_dovecot(pw, mc) as short:
        say(PART, f"Dovecot without policy pid {plain.pid}, Dovecot with "
            f"authbrake-policy pid {pol.pid} (memcached {mc.address}, production "
            f"thresholds); {len(pw)} passwd-file users; auth_failure_delay = 0")
        say(PART, f"slow-botnet under authbrake runs on Dovecot pid {short.pid}: "
            f"authbrake-policy with SHORT windows to compress days into a minute ("
            f"{slow_desc}; production: account_window 12h, account_lock_failures 10, "
            "lock_time 1h, block_max 1d = at most 10 checks per account in any "
            "12 h, 20 in any day, 80 in any week)")
        for p, prot in enumerate(PROTECTIONS):
            for s, (name, fn) in enumerate(SCENARIOS):
                if only and name not in only:
                    continue
                dv = pol if prot.startswith("authbrake") else plain
                if name == "slow-botnet" and prot.startswith("authbrake"):
                    dv = short
                no_penalty = prot in ("none", "authbrake-no-penalty")
                sock = os.path.join(dv.base_dir, "auth-client")
                blk = Block(p, s)
                mc.command("flush_all")
                extra_warm = []
                if name == "phone-nat":  # the NAT is the office: everyone knows it
                    extra_warm = [(u, blk.nat()) for u in STAFF[:11]]
                warm_up(sock, pw, blk, no_penalty, extra_warm)
                base_name = name.removeprefix("smtp-")
                seconds = max(3, floor.get(base_name, 0),
                              round(durations[base_name] * scale))
                mark = dv.log_mark()
                r = Run(dv, sock, no_penalty, seconds, smtp=name.startswith("smtp-"))
                t0 = time.monotonic()
                tail_from = int(time.time()) + seconds - TAIL_SECONDS
                att, leg, addrs, legit_addrs, note = fn(r, blk, pw)
                elapsed = time.monotonic() - t0
                time.sleep(0.3)
                log = dv.log_since(mark)
                checks, tail = count_checks(log, addrs, tail_from)
                notes = [note] if note else []
                if att.planned and att.attempts >= att.planned:
                    notes.append(f"attack done: all {att.planned} tries answered "
                                 f"after {att.last_answer - t0:.1f} s")
                if not no_penalty and name != "phone-nat":
                    # (a success from an address resets its penalty, so
                    # after phone-nat's last logins it would read 0)
                    notes.append(f"anvil penalty of {who_of(name)} "
                                 f"address(es): max {anvil_penalty(dv, addrs)}")
                if prot.startswith("authbrake"):
                    why = policy_reasons(log, legit_addrs)
                    if why:
                        notes.append(f"authbrake on legit addresses: {why}")
                    why = policy_reasons(log, addrs)
                    if why:
                        notes.append(f"authbrake on {who_of(name)}: {why}")
                    # Dovecot goes on unchecked when the policy server does
                    # not answer in time (auth_policy_reject_on_fail = no)
                    unchecked = sum(1 for line in log.splitlines()
                                    if "auth: " in line and "Policy server" in line
                                    and any(f",{a}" in line for a in addrs))
                    notes.append(f"policy requests Dovecot gave up on: {unchecked}")
                if name == "phone-nat" and prot.startswith("authbrake"):
                    notes.append(f"legitimate logins refused: {leg.refused}"
                                 + (" (MUST be 0)" if leg.refused else " (as it must be)"))
                note = "; ".join(notes)
                broken = sorted(att.ok_accounts) if name != "phone-nat" else []
                row = {
                    "scenario": name, "protection": prot, "seconds": seconds,
                    "attacker_attempts": att.attempts,
                    "attacker_checks": checks + (att.ok if name != "phone-nat" else 0),
                    # the rate the attack still had at the end of the run
                    "checks_per_min_at_end": round(tail * 60 / TAIL_SECONDS),
                    "accounts_broken": " ".join(broken) or "-",
                    "checks_per_window": att.windows,
                    **legit_columns(leg),
                    "note": note,
                }
                if r.errors:
                    row["note"] = (note + "; " if note else "") + \
                        f"{len(r.errors)} client errors, first: {r.errors[0]}"
                rows.append(row)
                who = who_of(name)
                figure(PART, f"{name:10s} {prot:20s}",
                       f"{who}: {att.attempts} answered, {row['attacker_checks']} "
                       f"password checks ({row['checks_per_min_at_end']}/min in the last "
                       f"{TAIL_SECONDS} s), broken: {row['accounts_broken']}; legit: "
                       f"{leg.attempts} logins, {leg.refused} refused, "
                       f"{row['legit_delayed']} delayed >1 s, p50 {row['legit_p50_ms']} ms, "
                       f"p99 {row['legit_p99_ms']} ms"
                       + (f"; {row['note']}" if row["note"] else ""),
                       f"bench/attack.py {name} for "
                       + (f"{seconds} s" if not name.endswith("parallel-botnet")
                          else f"two waves (deadline {seconds} s)")
                       + (", attacker over SMTP AUTH (service=smtp, no session, "
                          "as Postfix's smtpd sends)" if r.smtp else "")
                       + f" (ran {elapsed:.1f} s), "
                       + (f"SHORT-WINDOW authbrake conf ({slow_desc}), "
                          if dv is short else "")
                       + f"auth-client socket of Dovecot pid {dv.pid}, "
                       f"{'no-penalty flag' if no_penalty else 'anvil penalty on'}, "
                       f"checks = Dovecot log lines 'Password mismatch'/'unknown user' "
                       f"for {len(addrs)} {who} address(es) + {who} OKs; "
                       f"{m['nproc']} CPUs")
        if not only or "spray" in only:
            rows += run_spray(m, scale, mc, pw)
    base = {r["scenario"]: r for r in rows if r["protection"] == "none"}
    for r in rows:
        b = base.get(r["scenario"])
        if b and r["legit_p50_ms"] is not None and b["legit_p50_ms"] is not None:
            r["legit_added_p50_ms"] = round(r["legit_p50_ms"] - b["legit_p50_ms"], 3)
            r["legit_added_p99_ms"] = round(r["legit_p99_ms"] - b["legit_p99_ms"], 3)
    write_csv("attack.csv", rows, [
        "scenario", "protection", "seconds", "attacker_attempts", "attacker_checks",
        "checks_per_min_at_end",
        "accounts_broken", "checks_per_window", "legit_total", "legit_refused", "legit_delayed",
        "legit_p50_ms", "legit_p99_ms", "legit_max_ms", "legit_added_p50_ms",
        "legit_added_p99_ms", "checks_per_day", "campaign_on_after", "note"])
    return rows
