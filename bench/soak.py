#!/usr/bin/python3
"""Soak: does authbrake-policy (or memcached) grow under long, steady load?

A real memcached, a real Dovecot master running build/authbrake-policy at the
production thresholds (the same stack as policy_load.py), and wrk with
bench/policy.lua sending a 50/50 mix of `allow` and `report` requests at the
highest rate the machine sustains (closed loop, 50 connections) for --seconds
(default 600). Many distinct users and addresses and a fresh session id per
request, so memcached keeps getting new keys until they expire or are evicted.

Every --interval seconds (default 10) the VmRSS of every authbrake-policy
process and of memcached is read from /proc/PID/status, with memcached's own
stats (items, bytes, evictions, gets+sets) and the load average, into
$BENCH_RESULTS/soak.csv (default bench/results/). The verdict compares the RSS
after the warm-up (the first sample at or after --warmup, default 60 s) with
the RSS at the end.

    python3 bench/soak.py                  # 10 minutes
    python3 bench/soak.py --seconds 60     # a quick check that it works
    nice python3 bench/soak.py ...         # (wrk and the servers inherit it)

Exit status: 0 when it ran (growth is reported, never judged), 1 when it
could not run (a binary missing, a server that does not start, wrk failing).
"""

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (BENCH_DIR, BUILD, RESULTS, harness, loadavg,  # noqa: E402
                      machine, machine_line, production_overrides, say,
                      write_csv, wrk_csv)

PART = "soak"
LUA = BENCH_DIR / "policy.lua"
FIELDS = ["t_s", "process", "pid", "vmrss_kib", "load1", "mc_curr_items",
          "mc_bytes", "mc_limit_maxbytes", "mc_evictions", "mc_expired_unfetched",
          "mc_cmds"]


def vmrss_kib(pid):
    """VmRSS of a process in KiB, from /proc/PID/status; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def mc_stats(mc):
    """memcached's `stats`, or {} while it does not answer."""
    try:
        return mc.stats()
    except OSError:
        return {}


def sample(t, dv, mc, rows):
    """One sample: a row per authbrake-policy process and one for memcached."""
    load1 = loadavg().split()[0]
    for pid in dv.policy_pids():
        rss = vmrss_kib(pid)
        if rss is not None:
            rows.append({"t_s": t, "process": "authbrake-policy", "pid": pid,
                         "vmrss_kib": rss, "load1": load1})
    st = mc_stats(mc)
    rows.append({
        "t_s": t, "process": "memcached", "pid": mc.pid,
        "vmrss_kib": vmrss_kib(mc.pid), "load1": load1,
        "mc_curr_items": st.get("curr_items", ""),
        "mc_bytes": st.get("bytes", ""),
        "mc_limit_maxbytes": st.get("limit_maxbytes", ""),
        "mc_evictions": st.get("evictions", ""),
        "mc_expired_unfetched": st.get("expired_unfetched", ""),
        "mc_cmds": (int(st.get("cmd_get", 0)) + int(st.get("cmd_set", 0))
                    + int(st.get("cmd_touch", 0))) if st else "",
    })


def growth(a, b):
    d = b - a
    pct = 100.0 * d / a if a else 0.0
    return f"{a} -> {b} KiB ({d:+d} KiB, {pct:+.1f} %)"


def verdict(rows, warmup_t, end_t):
    """Lines comparing RSS at the warm-up sample with RSS at the end."""
    def at(t):
        return {(r["process"], r["pid"]): r["vmrss_kib"] for r in rows
                if r["t_s"] == t and r["vmrss_kib"] is not None}
    w, e = at(warmup_t), at(end_t)
    lines = []
    for name in ("authbrake-policy", "memcached"):
        pw = {k: v for k, v in w.items() if k[0] == name}
        pe = {k: v for k, v in e.items() if k[0] == name}
        both = sorted(set(pw) & set(pe))
        for k in both:
            lines.append(f"{name} pid {k[1]}: {growth(pw[k], pe[k])}")
        if name == "authbrake-policy":
            if set(pw) != set(pe):
                lines.append(f"authbrake-policy processes changed: at warm-up "
                             f"{sorted(p for _, p in pw)}, at the end "
                             f"{sorted(p for _, p in pe)} (restarted by Dovecot?)")
            if pw and pe:
                lines.append(f"authbrake-policy all {len(pe)} processes: "
                             f"{growth(sum(pw.values()), sum(pe.values()))}")
    return lines


def run(seconds=600, interval=10, warmup=60, conns=50, users=200000,
        addrs=400000, memory_mb=64, csv_name="soak.csv"):
    policy_bin = BUILD / "authbrake-policy"
    if not policy_bin.exists():
        raise RuntimeError(f"{policy_bin} is missing: run make first")
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make deps)")
    if warmup >= seconds:
        warmup = max(interval, seconds // 3)
    rows = []
    with harness.Memcached(memory_mb=memory_mb) as mc:
        d = tempfile.mkdtemp(prefix="ab-bench-soak-")
        atexit.register(shutil.rmtree, d, True)
        conf = harness.write_authbrake_conf(d, mc, **production_overrides())
        with harness.Dovecot(policy_conf=conf,
                             auth_debug=False) as dv:
            url = f"http://127.0.0.1:{dv.policy_port}/"
            cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
                   "--timeout", "10s", "-s", str(LUA), url, "--", "mode=mix",
                   f"key={dv.api_key}", f"conns={conns}", f"users={users}",
                   f"addrs={addrs}", "seed=7"]
            say(PART, f"authbrake-policy under Dovecot master pid {dv.pid} "
                f"(processes {dv.policy_pids()}) at {url}, memcached pid {mc.pid} "
                f"-m {memory_mb} at {mc.address}; production thresholds")
            say(PART, "load: " + " ".join(cmd).replace(f"key={dv.api_key}",
                                                       "key=$API_KEY"))
            say(PART, f"{seconds} s, RSS sampled every {interval} s, warm-up "
                f"{warmup} s; load average at start {loadavg()}")
            t0 = time.monotonic()
            sample(0, dv, mc, rows)
            wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            try:
                t_next = interval
                while True:
                    # wake at the next sample time, or as soon as wrk ends
                    while wrk.poll() is None and time.monotonic() < t0 + t_next:
                        time.sleep(min(0.5, max(0.0, t0 + t_next - time.monotonic())))
                    if wrk.poll() is not None:
                        break
                    if t_next > seconds + 30:
                        raise RuntimeError("wrk did not finish in time")
                    if t_next <= seconds:
                        sample(t_next, dv, mc, rows)
                        mc_row = rows[-1]
                        pol = [r for r in rows if r["t_s"] == t_next
                               and r["process"] == "authbrake-policy"]
                        say(PART, f"t={t_next:4d}s policy RSS "
                            f"{'/'.join(str(r['vmrss_kib']) for r in pol)} KiB, "
                            f"memcached {mc_row['vmrss_kib']} KiB, items "
                            f"{mc_row['mc_curr_items']}, evictions "
                            f"{mc_row['mc_evictions']}, load {mc_row['load1']}")
                    t_next += interval
                out, err = wrk.communicate(timeout=60)
            finally:
                if wrk.poll() is None:
                    wrk.kill()
                    wrk.wait()
            # the end sample, under no load: what stayed
            end_t = int(round(time.monotonic() - t0))
            sample(end_t, dv, mc, rows)
            loadavg_end = loadavg()
    w = wrk_csv(wrk.returncode, out, err)
    path = write_csv(csv_name, rows, FIELDS)
    warm_t = min(r["t_s"] for r in rows if r["t_s"] >= warmup)
    lines = verdict(rows, warm_t, end_t)
    mc_end = rows[-1]
    say(PART, f"wrk: {w['requests']} requests in {w['duration_s']} s = "
        f"{w['req_per_s']} req/s, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, "
        f"max {w['max_ms']} ms (allow {w['allow']}, tarpit {w['tarpit']}, "
        f"reject {w['reject']}, report ok {w['report_ok']}, http errors "
        f"{w['http_error']}, socket errors {w['socket_errors']}, timeouts "
        f"{w['timeouts']})")
    say(PART, f"memcached at the end: {mc_end['mc_curr_items']} items, "
        f"{mc_end['mc_bytes']} of {mc_end['mc_limit_maxbytes']} bytes, "
        f"{mc_end['mc_evictions']} evictions, {mc_end['mc_expired_unfetched']} "
        f"expired unfetched")
    say(PART, f"RSS at warm-up (t={warm_t} s) vs at the end (t={end_t} s):")
    for ln in lines:
        say(PART, "  " + ln)
    pol_total = [ln for ln in lines if ln.startswith("authbrake-policy all")]
    mc_line = [ln for ln in lines if ln.startswith("memcached")]
    say(PART, f"VERDICT: {seconds} s at {w['req_per_s']} req/s (mix, {conns} "
        f"connections): {pol_total[0] if pol_total else 'authbrake-policy ?'}; "
        f"{mc_line[0] if mc_line else 'memcached ?'}; load average at the end "
        f"{loadavg_end}; samples in {path}")
    return {"wrk": w, "rows": rows, "verdict": lines}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--users", type=int, default=200000)
    ap.add_argument("--addrs", type=int, default=400000)
    ap.add_argument("--memcached-mb", type=int, default=64,
                    help="memcached -m (Debian's default is 64)")
    ap.add_argument("--csv", default="soak.csv",
                    help=f"file name under {RESULTS}")
    a = ap.parse_args()
    say(PART, f"machine: {machine_line(machine())}")
    try:
        run(a.seconds, a.interval, a.warmup, a.connections, a.users, a.addrs,
            a.memcached_mb, a.csv)
    except Exception as e:  # noqa: BLE001 - report, exit 1
        say(PART, f"FAILED: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
