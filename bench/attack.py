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

During dictionary and botnet, the 40 staff log in (right password) from
their usual /24 in a loop: refused or delayed (> 1 s) logins and their
latency are what the attack cost them.

Clients speak Dovecot's auth-client protocol (bench/authclient.py, what
imap-login sends) with rip = real_rip = 127.x.y.z: the attack is on the
auth process, where the policy check and the penalty live; login processes
would only add their own fork cost. Dovecot runs with auth_failure_delay = 0
(production has 2 s), yet 2.3 still answers every failure on a 500 ms tick.
Password checks the attacker got are counted from Dovecot's own log
(auth_verbose: "Password mismatch" / "unknown user" for the attacker's
addresses) plus the attacker's successful logins.
"""

import os
import re
import socket
import subprocess
import threading
import time

from authclient import AuthClient, AuthError
from benchlib import (dovecot_pair, figure, ms, percentile,
                      say, write_csv)

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
        self.base = 1 + p * 12 + s * 4

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

    def __init__(self, dv, sock, no_penalty, seconds):
        self.dv, self.sock, self.no_penalty = dv, sock, no_penalty
        self.seconds = seconds
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

    def auth(self, c, user, pw, rip):
        try:
            ok, _, secs = c.auth(user, pw, rip, no_penalty=self.no_penalty)
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
            ok, secs = self.auth(c, user, pw, rip)
            if ok is None:
                return
            tally.add(ok, secs)
            i += 1
            self.stop.wait(pause)

    def go(self, threads):
        for t in threads:
            t.daemon = True
            t.start()
        time.sleep(self.seconds)
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


def who_of(scenario):
    return "phone" if scenario == "phone-nat" else "attacker"


SCENARIOS = (("dictionary", scenario_dictionary), ("botnet", scenario_botnet),
             ("phone-nat", scenario_phone))


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
    durations = {"dictionary": 15, "botnet": 20, "phone-nat": 15}
    # "none" and "authbrake-no-penalty" switch the anvil penalty off per
    # request (no-penalty flag); the others keep it, as production does
    with dovecot_pair(pw, "ab-bench-attack-") as (mc, plain, pol):
        say(PART, f"Dovecot without policy pid {plain.pid}, Dovecot with "
            f"authbrake-policy pid {pol.pid} (memcached {mc.address}, production "
            f"thresholds); {len(pw)} passwd-file users; auth_failure_delay = 0")
        for p, prot in enumerate(PROTECTIONS):
            dv = pol if prot.startswith("authbrake") else plain
            no_penalty = prot in ("none", "authbrake-no-penalty")
            sock = os.path.join(dv.base_dir, "auth-client")
            for s, (name, fn) in enumerate(SCENARIOS):
                blk = Block(p, s)
                mc.command("flush_all")
                extra_warm = []
                if name == "phone-nat":  # the NAT is the office: everyone knows it
                    extra_warm = [(u, blk.nat()) for u in STAFF[:11]]
                warm_up(sock, pw, blk, no_penalty, extra_warm)
                seconds = max(3, round(durations[name] * scale))
                mark = dv.log_mark()
                r = Run(dv, sock, no_penalty, seconds)
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
                note = "; ".join(notes)
                broken = sorted(att.ok_accounts) if name != "phone-nat" else []
                row = {
                    "scenario": name, "protection": prot, "seconds": seconds,
                    "attacker_attempts": att.attempts,
                    "attacker_checks": checks + (att.ok if name != "phone-nat" else 0),
                    # the rate the attack still had at the end of the run
                    "checks_per_min_at_end": round(tail * 60 / TAIL_SECONDS),
                    "accounts_broken": " ".join(broken) or "-",
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
                       f"bench/attack.py {name} for {seconds} s (ran {elapsed:.1f} s), "
                       f"auth-client socket of Dovecot pid {dv.pid}, "
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
        "accounts_broken", "legit_total", "legit_refused", "legit_delayed",
        "legit_p50_ms", "legit_p99_ms", "legit_max_ms", "legit_added_p50_ms",
        "legit_added_p99_ms", "note"])
    return rows
