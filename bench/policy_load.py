"""Part 1: policy service throughput and latency with wrk + bench/policy.lua.

authbrake-policy runs under a real Dovecot master (harness.Dovecot) with a
real memcached and the tracker's production thresholds. Another server that
speaks Dovecot's policy protocol is measured the same way, in the same run,
when BENCH_POLICY_URL (and BENCH_POLICY_KEY, BENCH_POLICY_NAME) are set;
BENCH_POLICY_HEADER names the header the key goes in (X-API-Key unless set:
`Authorization` with a key of `Basic base64(user:password)` for weakforced).

Beside req/s, for authbrake: the memcached operations one request cost
(memcached's own counters before and after each run) and memcached's bytes
per tracked identity (users + addresses of the workload) after the runs.
"""

import atexit
import os
import shutil
import subprocess
import tempfile

from benchlib import (BENCH_DIR, BUILD, POLICY_FLOOR, STORE_FLOORS, figure, harness,
                      mc_ops, production_overrides, say, write_csv, wrk_csv)

PART = "policy"
LUA = BENCH_DIR / "policy.lua"
MODES = ("allow", "report", "mix")


USERS, ADDRS = 10000, 50000    # policy.lua's defaults


def run_wrk(url, key, mode, conns, seconds, threads=1, extra=(), header=None):
    """One wrk run; returns (row dict, command string)."""
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency",
           "--timeout", "10s", "-s", str(LUA), url, "--", f"mode={mode}",
           f"key={key}", f"conns={conns}", *extra]
    if header:
        cmd.append(f"header={header}")
    shown = " ".join(cmd).replace(f"key={key}", "key=$API_KEY")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=seconds + 60)
    return wrk_csv(r.returncode, r.stdout, r.stderr), shown


def measure(server, url, key, conns_list, seconds, m, rows, mc=None,
            header=None, allow_only=False):
    # warm-up: fill memcached with a realistic state before measuring
    run_wrk(url, key, "mix", 50, max(2, seconds // 2), extra=("seed=99",),
            header=header)
    for conns in conns_list:
        for mode in (("allow",) if allow_only else MODES):
            before = mc_ops(mc) if mc else None
            row, cmd = run_wrk(url, key, mode, conns, seconds, header=header)
            row["server"] = server
            row["mc_ops_per_req"] = ""
            if mc and row["requests"]:
                row["mc_ops_per_req"] = f"{(mc_ops(mc) - before) / int(row['requests']):.1f}"
            rows.append(row)
            replies = (f"allow {row['allow']}, tarpit {row['tarpit']}, "
                       f"reject {row['reject']}, report ok {row['report_ok']}, "
                       f"http errors {row['http_error']}, socket errors "
                       f"{row['socket_errors']}")
            if row["mc_ops_per_req"]:
                replies += f"; memcached operations per request {row['mc_ops_per_req']}"
            figure(PART, f"{server} {mode:6s} c={conns:<3d}",
                   f"{row['req_per_s']} req/s, p50 {row['p50_ms']} ms, "
                   f"p90 {row['p90_ms']} ms, p99 {row['p99_ms']} ms ({replies})",
                   f"{cmd}  [{row['duration_s']} s, {conns} connections, "
                   f"1 wrk thread, {m['nproc']} CPUs shared by wrk, server and memcached]")


# The flood row: allows from addresses every server refuses. A warm-up of
# failed reports, each address trying many accounts, makes them refused
# everywhere (authbrake: ip_max_accounts, then a block; weakforced's
# policy: its reject on distinct logins per address); then allows from
# those addresses only. The reply counts show that they were refused.
FLOOD_ADDRS = 64
FLOOD = ("users=10000", f"addrs={FLOOD_ADDRS}", "home=0")


def measure_flood(server, url, key, conns_list, seconds, m, rows, mc=None,
                  header=None):
    run_wrk(url, key, "report", 8, 3, extra=(*FLOOD, "fail=100", "seed=7"),
            header=header)
    for conns in conns_list:
        before = mc_ops(mc) if mc else None
        row, cmd = run_wrk(url, key, "allow", conns, seconds, extra=FLOOD,
                           header=header)
        row["server"] = server
        row["mode"] = "flood"
        row["mc_ops_per_req"] = ""
        if mc and row["requests"]:
            row["mc_ops_per_req"] = f"{(mc_ops(mc) - before) / int(row['requests']):.2f}"
        rows.append(row)
        replies = (f"allow {row['allow']}, tarpit {row['tarpit']}, reject {row['reject']}, "
                   f"http errors {row['http_error']}")
        if row["mc_ops_per_req"]:
            replies += f"; memcached operations per request {row['mc_ops_per_req']}"
        figure(PART, f"{server} flood  c={conns:<3d}",
               f"{row['req_per_s']} req/s, p50 {row['p50_ms']} ms, "
               f"p99 {row['p99_ms']} ms ({replies})",
               f"{cmd}  [after a 3 s warm-up of failed reports from the same "
               f"{FLOOD_ADDRS} addresses; {m['nproc']} CPUs shared]")


def run(m, seconds=10, conns_list=(4, 50)):
    rows = []
    policy_bin = BUILD / "authbrake-policy"
    if not policy_bin.exists():
        raise RuntimeError(f"{policy_bin} is missing: run make first")
    with harness.Memcached(memory_mb=256) as mc:
        d = tempfile.mkdtemp(prefix="ab-bench-policy-")
        atexit.register(shutil.rmtree, d, True)
        conf = harness.write_authbrake_conf(d, mc, **production_overrides())
        with harness.Dovecot(policy_conf=conf,
                             auth_debug=False) as dv:
            url = f"http://127.0.0.1:{dv.policy_port}/"
            say(PART, f"authbrake-policy under Dovecot master pid {dv.pid} "
                f"(4 processes, client_limit 32) at {url}, memcached {mc.address}, "
                "production thresholds (tracker defaults), 10000 users, 50000 addresses, "
                "10 % wrong passwords")
            measure("authbrake", url, dv.api_key, conns_list, seconds, m, rows, mc=mc)
            measure_flood("authbrake", url, dv.api_key, conns_list, seconds, m, rows,
                          mc=mc)
            st = mc.stats()
            items, size = int(st.get("curr_items", 0)), int(st.get("bytes", 0))
            logins = {r["mode"]: r["mc_ops_per_req"] for r in rows
                      if r["server"] == "authbrake" and r["connections"] == str(conns_list[0])}
            figure(PART, "authbrake memcached cost",
                   f"{logins.get('allow', '?')} operations per allow + "
                   f"{logins.get('report', '?')} per report; {items} items, "
                   f"{size} bytes after the runs = {size / (USERS + ADDRS):.0f} bytes "
                   f"per tracked identity ({USERS} users + {ADDRS} addresses)",
                   "memcached `stats` (cmd_get + cmd_set + incr/decr/delete hits and "
                   "misses) before and after each wrk run, divided by its requests; "
                   "`bytes` over the workload's users + addresses")
        # the floor: the same service with the HTTP side alone
        if POLICY_FLOOR.exists():
            with harness.Dovecot(policy_conf=conf, policy_bin=POLICY_FLOOR,
                                 auth_debug=False) as dv:
                url = f"http://127.0.0.1:{dv.policy_port}/"
                say(PART, f"the floor: {POLICY_FLOOR.name} (authbrake-policy built with "
                    "AB_BENCH_HTTP_FLOOR: each request read, parsed and answered "
                    "status 0, no memcached) under the same Dovecot settings")
                measure("lib-http floor", url, dv.api_key, conns_list, seconds, m, rows)
        else:
            say(PART, f"{POLICY_FLOOR} is missing (make bench builds it): no floor row")
        # the store floor: the floor plus one memcached round trip per batch
        # of N reads per request, nothing else: what any policy service that
        # shares its state through memcached costs at least
        for nops, binary in STORE_FLOORS.items():
            if not binary.exists():
                say(PART, f"{binary} is missing (make bench builds it): no store floor row")
                continue
            with harness.Dovecot(policy_conf=conf, policy_bin=binary,
                                 auth_debug=False) as dv:
                url = f"http://127.0.0.1:{dv.policy_port}/"
                say(PART, f"the store floor: {binary.name} (the floor plus one memcached "
                    f"round trip per batch, {nops} read(s) per request, answered status 0)")
                measure(f"store floor {nops} op", url, dv.api_key, conns_list, seconds,
                        m, rows, mc=mc, allow_only=True)
    other = os.environ.get("BENCH_POLICY_URL")
    if other:
        name = os.environ.get("BENCH_POLICY_NAME", "other")
        measure(name, other, os.environ.get("BENCH_POLICY_KEY", ""), conns_list,
                seconds, m, rows, header=os.environ.get("BENCH_POLICY_HEADER"))
        measure_flood(name, other, os.environ.get("BENCH_POLICY_KEY", ""), conns_list,
                      seconds, m, rows, header=os.environ.get("BENCH_POLICY_HEADER"))
    write_csv("policy.csv", rows, ["server", "mode", "connections", "threads",
                                   "duration_s", "requests", "req_per_s", "p50_ms",
                                   "p90_ms", "p99_ms", "max_ms", "allow", "tarpit",
                                   "reject", "report_ok", "http_error",
                                   "socket_errors", "timeouts", "sent_allow",
                                   "sent_report", "mc_ops_per_req"])
    return rows
