"""Part 3: pam_authenticate() per second and per call, three stacks of the
same shape on the same machine in the same run:

  unix       auth required pam_unix.so nodelay
  faillock   pam_faillock preauth / pam_unix / authfail / authsucc
  authbrake  pam_authbrake preauth / pam_unix / authfail / authsucc

and the same three with a stub in place of pam_unix (pam_permit for the
success path, pam_deny for the failure path), which leaves only what the
wrapping module costs. build/bench/pam-bench does pam_start +
pam_authenticate + pam_end per call. Thresholds are set so high that no call
is ever refused early (pam_faillock deny=1000000, and nodelay like pam_unix's, so PAM's 2 s
failure delay is not measured; authbrake's every limit at
its maximum): each call does the module's full work. Service files are
written to /etc/pam.d/authbrake-bench-* and a user abbench is created;
both are removed afterwards.
"""

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchlib import (BUILD, figure, harness, production_overrides, say,
                      write_csv)

PART = "pam"
PAM_D = Path("/etc/pam.d")
USER = "abbench"
RHOST = "::ffff:127.30.0.1"
HIGH = {"ip_free_failures": 999999, "ip_block_failures": 1000000,
        "ip_max_accounts": 1000000, "net_free_failures": 999999,
        "net_block_failures": 1000000, "net_max_accounts": 1000000,
        "account_lock_failures": 1000000, "familiar_failures": 1000000,
        "max_inflight": 1000000}


def _stack(kind, real, tally_dir, conf):
    if kind == "unix":
        return f"auth required {real}\n"
    if kind == "faillock":
        args = f"dir={tally_dir} deny=1000000 unlock_time=60 nodelay"
        mod = "pam_faillock.so"
    else:
        args = f"conf={conf}"
        mod = str(BUILD / "pam_authbrake.so")
    return (f"auth requisite {mod} preauth {args}\n"
            f"auth [success=1 default=bad] {real}\n"
            f"auth [default=die] {mod} authfail {args}\n"
            f"auth sufficient {mod} authsucc {args}\n"
            "auth requisite pam_deny.so\n")


def _pam_bench(service, password, n):
    cmd = [str(BUILD / "bench" / "pam-bench"), "-s", service, "-u", USER,
           "-p", password, "-n", str(n), "-r", RHOST]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    keys = ["n", "ok", "auth_err", "other", "total_s", "calls_per_s", "p50_ms",
            "p90_ms", "p99_ms", "max_ms"]
    return dict(zip(keys, r.stdout.strip().split(","))), " ".join(cmd[:-6] + [
        "-p", "PASSWORD", "-n", str(n), "-r", RHOST])


def run(m, n=50):
    if os.geteuid() != 0:
        raise RuntimeError("needs root (useradd, /etc/pam.d)")
    for f in (BUILD / "bench" / "pam-bench", BUILD / "pam_authbrake.so"):
        if not f.exists():
            raise RuntimeError(f"{f} is missing: run make bench (builds it)")
    rows, written = [], []
    password = "Bench-" + secrets.token_hex(8)
    tmp = tempfile.mkdtemp(prefix="ab-bench-pam-")
    tally = os.path.join(tmp, "faillock")
    os.makedirs(tally)
    subprocess.run(["userdel", USER], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", USER], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{USER}:{password}\n", text=True,
                       check=True)
        shadow = [ln for ln in Path("/etc/shadow").read_text().splitlines()
                  if ln.startswith(USER + ":")]
        scheme = shadow[0].split(":")[1].split("$")[1] if shadow else "?"
        scheme = {"y": "yescrypt", "6": "sha512crypt", "5": "sha256crypt"}.get(scheme, scheme)
        with harness.Memcached() as mc:
            conf = harness.write_authbrake_conf(tmp, mc, **production_overrides(**HIGH))
            say(PART, f"user {USER} ({scheme} hash in /etc/shadow), rhost {RHOST}, "
                f"memcached {mc.address} for pam_authbrake, faillock tally dir {tally}; "
                "every limit set high so no call is cut short")
            for real_name, reals in (("pam_unix", ("pam_unix.so nodelay",) * 2),
                                     ("stub", ("pam_permit.so", "pam_deny.so"))):
                count = n if real_name == "pam_unix" else n * 6
                for kind in ("unix", "faillock", "authbrake"):
                    label = kind if real_name == "pam_unix" else f"{kind}+stub"
                    if kind == "unix" and real_name == "stub":
                        label = "stub only"
                    for path, real, pw in (("success", reals[0], password),
                                           ("failure", reals[1], password + "-wrong")):
                        service = f"authbrake-bench-{kind}-{real_name}-{path}"
                        svc_path = PAM_D / service
                        svc_path.write_text("# written by bench/pam_bench.py; removed after\n"
                                            + _stack(kind, real, tally, conf))
                        written.append(svc_path)
                        _pam_bench(service, pw, 3)  # warm the page cache
                        row, cmd = _pam_bench(service, pw, count)
                        row.update({"stack": label, "path": path,
                                    "results": f"{row['ok']} ok/{row['auth_err']} denied/"
                                               f"{row['other']} other"})
                        rows.append(row)
                        figure(PART, f"{label:18s} {path:7s}",
                               f"{row['calls_per_s']} calls/s, p50 {row['p50_ms']} ms, "
                               f"p90 {row['p90_ms']} ms, p99 {row['p99_ms']} ms "
                               f"({row['results']})",
                               f"{cmd}  [/etc/pam.d/{service}: "
                               + _stack(kind, real, tally, "CONF").strip().replace("\n", " | ")
                               + f"; sequential, 1 process, {m['nproc']} CPUs]")
    finally:
        for p in written:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        subprocess.run(["userdel", USER], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)
    write_csv("pam.csv", rows, ["stack", "path", "n", "ok", "auth_err", "other",
                                "total_s", "calls_per_s", "p50_ms", "p90_ms",
                                "p99_ms", "max_ms", "results"])
    return rows
