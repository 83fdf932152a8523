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

During dictionary, botnet, parallel-botnet and slow-botnet (and their smtp-
forms), the 40 staff
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


CHECK_RE = re.compile(r"passwd-file\(([^,)]*),([0-9.]+)[^)]*\): "
                      r"(Password mismatch|unknown user)")


STAMP_RE = re.compile(r"^(\w{3} +\d+ \d\d:\d\d:\d\d) ")


def _stamp(line):
    m = STAMP_RE.match(line)
    if not m:
        return None
    t = time.strptime(f"{time.localtime().tm_year} {m.group(1)}", "%Y %b %d %H:%M:%S")
    return time.mktime(t)


def count_checks(log, addresses, tail_from=None):
    """Password checks for these addresses; with tail_from (epoch seconds)
    also those logged since then (Dovecot's log has 1 s resolution)."""
    n = tail = 0
    for line in log.splitlines():
        m = CHECK_RE.search(line)
        if m and m.group(2) in addresses:
            n += 1
            if tail_from is not None:
                ts = _stamp(line)
                if ts is not None and ts >= tail_from:
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
    times = sorted(sent[m.group(2)] for m in CHECK_RE.finditer(log)
                   if m.group(2) in sent)
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


def run(m, scale=1.0):
    pw = users()
    rows = []
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
                    "legit_total": leg.attempts, "legit_refused": leg.refused,
                    "legit_delayed": sum(1 for t in leg.latency if t > 1.0),
                    "legit_p50_ms": ms(percentile(leg.latency, 50)),
                    "legit_p99_ms": ms(percentile(leg.latency, 99)),
                    "legit_max_ms": ms(max(leg.latency) if leg.latency else None),
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
        "legit_added_p99_ms", "note"])
    return rows
