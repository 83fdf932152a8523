"""Part 2: what authbrake adds to one authentication through Dovecot's auth
process. Two Dovecots run side by side from the same harness: one without a
policy server, one with authbrake-policy (production thresholds, real
memcached). A client on each auth-client socket (bench/authclient.py, the
protocol imap-login speaks: VERSION, CPID, AUTH PLAIN) sends N sequential
successful logins, alternating between the two servers so drift hits both
alike. Only the success path is timed: Dovecot 2.3 answers every failure on
a 500 ms timer tick even with auth_failure_delay = 0, which would hide
anything a policy server adds.
"""

import os

from benchlib import (dovecot_pair, figure, harness, ms, percentile,
                      say, write_csv)
from authclient import AuthClient

PART = "auth"
USERS = 200


def _users():
    return {f"user{i:03d}": f"pw-{i:03d}-correct" for i in range(USERS)}


def _home(i):
    # each user logs in from one address of their own /24
    return f"127.20.{i % 250}.10"


def run(m, n=2000):
    users = _users()
    names = sorted(users)
    rows = []
    with dovecot_pair(users, "ab-bench-auth-") as (mc, plain, pol):
        say(PART, f"Dovecot without policy pid {plain.pid}; Dovecot with "
            f"authbrake-policy pid {pol.pid} (memcached {mc.address}); "
            f"{USERS} passwd-file users, auth_cache_size = 0")
        clients = {
            "no policy": AuthClient(os.path.join(plain.base_dir, "auth-client")),
            "authbrake": AuthClient(os.path.join(pol.base_dir, "auth-client")),
        }
        times = {k: [] for k in clients}
        oks = {k: 0 for k in clients}
        # warm-up: every user once (authbrake learns their home /24)
        for i, name in enumerate(names):
            for c in clients.values():
                c.auth(name, users[name], _home(i))
        for j in range(n):
            i = j % USERS
            name = names[i]
            for cfg, c in (clients.items() if j % 2 == 0
                           else reversed(list(clients.items()))):
                ok, _, secs = c.auth(name, users[name], _home(i))
                times[cfg].append(secs)
                oks[cfg] += ok
        for c in clients.values():
            c.close()
    base50 = percentile(times["no policy"], 50)
    base99 = percentile(times["no policy"], 99)
    for cfg in ("no policy", "authbrake"):
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
               + ("authbrake-policy: allow before + allow after + report per login"
                  if cfg == "authbrake" else "no auth_policy_server_url")
               + f"; {m['nproc']} CPUs")
    write_csv("auth.csv", rows)
    return rows
