"""Part 1: policy service throughput and latency with wrk + bench/policy.lua.

authbrake-policy runs under a real Dovecot master (harness.Dovecot) with a
real memcached and the tracker's production thresholds. Another server that
speaks Dovecot's policy protocol is measured the same way, in the same run,
when BENCH_POLICY_URL (and BENCH_POLICY_KEY, BENCH_POLICY_NAME) are set.
"""

import atexit
import os
import shutil
import subprocess
import tempfile

from benchlib import (BENCH_DIR, BUILD, figure, harness, production_overrides,
                      say, write_csv, wrk_csv)

PART = "policy"
LUA = BENCH_DIR / "policy.lua"
MODES = ("allow", "report", "mix")


def run_wrk(url, key, mode, conns, seconds, threads=1, extra=()):
    """One wrk run; returns (row dict, command string)."""
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency",
           "--timeout", "10s", "-s", str(LUA), url, "--", f"mode={mode}",
           f"key={key}", f"conns={conns}", *extra]
    shown = " ".join(cmd).replace(f"key={key}", "key=$API_KEY")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=seconds + 60)
    return wrk_csv(r.returncode, r.stdout, r.stderr), shown


def measure(server, url, key, conns_list, seconds, m, rows):
    # warm-up: fill memcached with a realistic state before measuring
    run_wrk(url, key, "mix", 50, max(2, seconds // 2), extra=("seed=99",))
    for conns in conns_list:
        for mode in MODES:
            row, cmd = run_wrk(url, key, mode, conns, seconds)
            row["server"] = server
            rows.append(row)
            replies = (f"allow {row['allow']}, tarpit {row['tarpit']}, "
                       f"reject {row['reject']}, report ok {row['report_ok']}, "
                       f"http errors {row['http_error']}, socket errors "
                       f"{row['socket_errors']}")
            figure(PART, f"{server} {mode:6s} c={conns:<3d}",
                   f"{row['req_per_s']} req/s, p50 {row['p50_ms']} ms, "
                   f"p90 {row['p90_ms']} ms, p99 {row['p99_ms']} ms ({replies})",
                   f"{cmd}  [{row['duration_s']} s, {conns} connections, "
                   f"1 wrk thread, {m['nproc']} CPUs shared by wrk, server and memcached]")


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
                             extra_conf="auth_debug = no\n") as dv:
            url = f"http://127.0.0.1:{dv.policy_port}/"
            say(PART, f"authbrake-policy under Dovecot master pid {dv.pid} "
                f"(4 processes, client_limit 32) at {url}, memcached {mc.address}, "
                "production thresholds (tracker defaults), 10000 users, 50000 addresses, "
                "10 % wrong passwords")
            measure("authbrake", url, dv.api_key, conns_list, seconds, m, rows)
            keys = mc.command("stats")
            items = [ln for ln in keys.splitlines() if " curr_items " in ln]
            say(PART, f"memcached after the runs: {items[0].split()[-1] if items else '?'} items")
    other = os.environ.get("BENCH_POLICY_URL")
    if other:
        name = os.environ.get("BENCH_POLICY_NAME", "other")
        measure(name, other, os.environ.get("BENCH_POLICY_KEY", ""), conns_list,
                seconds, m, rows)
    write_csv("policy.csv", rows, ["server", "mode", "connections", "threads",
                                   "duration_s", "requests", "req_per_s", "p50_ms",
                                   "p90_ms", "p99_ms", "max_ms", "allow", "tarpit",
                                   "reject", "report_ok", "http_error",
                                   "socket_errors", "timeouts", "sent_allow",
                                   "sent_report"])
    return rows
