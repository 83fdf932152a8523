"""Part 2: what authbrake adds to one authentication through Dovecot's auth
process. Two Dovecots run side by side from the same harness: one without a
policy server, one with authbrake-policy (production thresholds, real
memcached). A client on each auth-client socket (bench/authclient.py, the
protocol imap-login speaks: VERSION, CPID, AUTH PLAIN) sends N sequential
successful logins, alternating between the two servers so drift hits both
alike. When `make bench` has built it, a third Dovecot runs the lib-http
floor (authbrake-policy built with AB_BENCH_HTTP_FLOOR: every request
answered status 0 without the store), which shows what any policy server
hosted by Dovecot adds before it does any work. Only the success path is
timed: Dovecot 2.3 answers every failure on
a 500 ms timer tick even with auth_failure_delay = 0, which would hide
anything a policy server adds.
"""

import atexit
import contextlib
import os
import shutil
import tempfile

from benchlib import (POLICY_FLOOR, dovecot_pair, figure, harness, mc_ops,
                      ms, percentile, production_overrides, say, write_csv)
from authclient import AuthClient

PART = "auth"
USERS = 200
# wrong passwords sent after the timed runs, each for another account from
# an address of its own (a botnet's guesses), to count memcached's work
FAILURES = 40


def _users():
    return {f"user{i:03d}": f"pw-{i:03d}-correct" for i in range(USERS)}


def _home(i):
    # each user logs in from one address of their own /24
    return f"127.20.{i % 250}.10"


def run(m, n=2000):
    users = _users()
    names = sorted(users)
    rows = []
    with dovecot_pair(users, "ab-bench-auth-") as (mc, plain, pol), \
            contextlib.ExitStack() as stack:
        say(PART, f"Dovecot without policy pid {plain.pid}; Dovecot with "
            f"authbrake-policy pid {pol.pid} (memcached {mc.address}); "
            f"{USERS} passwd-file users, auth_cache_size = 0")
        clients = {
            "no policy": AuthClient(os.path.join(plain.base_dir, "auth-client")),
            "authbrake": AuthClient(os.path.join(pol.base_dir, "auth-client")),
        }
        if POLICY_FLOOR.exists():
            d = tempfile.mkdtemp(prefix="ab-bench-auth-floor-")
            atexit.register(shutil.rmtree, d, True)
            conf = harness.write_authbrake_conf(d, mc, **production_overrides())
            floor = stack.enter_context(harness.Dovecot(
                users=users, policy_conf=conf, auth_debug=False,
                anvil_penalty=True, policy_bin=POLICY_FLOOR))
            say(PART, f"Dovecot with the lib-http floor pid {floor.pid}")
            clients["lib-http floor"] = AuthClient(
                os.path.join(floor.base_dir, "auth-client"))
        times = {k: [] for k in clients}
        oks = {k: 0 for k in clients}
        # warm-up: every user once (authbrake learns their home /24)
        for i, name in enumerate(names):
            for c in clients.values():
                c.auth(name, users[name], _home(i))
        # only authbrake's Dovecot asks this memcached
        ops_before = mc_ops(mc)
        for j in range(n):
            i = j % USERS
            name = names[i]
            # each config first in turn, so drift hits them alike
            order = list(clients.items())
            order = order[j % len(order):] + order[:j % len(order)]
            for cfg, c in order:
                ok, _, secs = c.auth(name, users[name], _home(i))
                times[cfg].append(secs)
                oks[cfg] += ok
        ops_success = (mc_ops(mc) - ops_before) / n
        ops_before = mc_ops(mc)
        for k in range(FAILURES):
            clients["authbrake"].auth(names[k], "wrong-password", f"127.21.{k}.1")
        ops_failure = (mc_ops(mc) - ops_before) / FAILURES
        for c in clients.values():
            c.close()
    figure(PART, "authbrake memcached operations per login",
           f"{ops_success:.1f} per successful login from home, "
           f"{ops_failure:.1f} per wrong password from a new address",
           f"memcached `stats` (gets, sets, incr/decr, deletes) before and after the "
           f"{n} timed logins, then {FAILURES} wrong passwords for as many accounts, "
           "each from an address of its own; every login an allow and a report")
    base50 = percentile(times["no policy"], 50)
    base99 = percentile(times["no policy"], 99)
    for cfg in clients:
        t = times[cfg]
        p50, p90, p99 = percentile(t, 50), percentile(t, 90), percentile(t, 99)
        row = {"config": cfg, "path": "success", "n": len(t), "ok": oks[cfg],
               "p50_ms": ms(p50), "p90_ms": ms(p90), "p99_ms": ms(p99),
               "max_ms": ms(max(t)), "mean_ms": ms(sum(t) / len(t)),
               "added_p50_ms": ms(p50 - base50), "added_p99_ms": ms(p99 - base99)}
        rows.append(row)
        figure(PART, f"{cfg:9s} one successful PLAIN auth",
               f"p50 {row['p50_ms']} ms, p90 {row['p90_ms']} ms, p99 {row['p99_ms']} ms, "
               f"added vs no policy: p50 {row['added_p50_ms']} ms, p99 {row['added_p99_ms']} ms "
               f"({oks[cfg]}/{len(t)} ok)",
               f"bench/auth_latency.py: {len(t)} sequential AUTH PLAIN on Dovecot's "
               f"auth-client socket, {USERS} users from their own 127.20.x.10, "
               "1 connection, alternating with the other config; "
               + ("no auth_policy_server_url" if cfg == "no policy" else
                  "the shipped drop-in: allow before the password check, report after it"
                  + (" (answered at once, no store)" if cfg == "lib-http floor" else ""))
               + f"; {m['nproc']} CPUs")
    write_csv("auth.csv", rows)
    return rows
