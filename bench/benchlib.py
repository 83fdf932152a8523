"""Shared pieces of the benchmarks: where results go, what machine this is,
printing each figure with how it was obtained, CSV files, percentiles."""

import atexit
import contextlib
import csv
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS = Path(os.environ.get("BENCH_RESULTS", BENCH_DIR / "results"))
BUILD = REPO_ROOT / "build"
# authbrake-policy with the HTTP side alone (make bench builds it, with
# AB_BENCH_HTTP_FLOOR): what a Dovecot service answers at most here
POLICY_FLOOR = BUILD / "bench" / "authbrake-policy-floor"
# ... with the least a shared store costs: one memcached round trip per
# batch, N reads per request (AB_BENCH_STORE_FLOOR=N)
STORE_FLOORS = {n: BUILD / "bench" / f"authbrake-policy-store-floor-{n}" for n in (1, 6)}

sys.path.insert(0, str(REPO_ROOT / "test" / "integration"))
import harness  # noqa: E402  (the project's real-server harness)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    """What the figures were measured on, from nproc, lscpu and dpkg."""
    lscpu = sh("lscpu")
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    mhz = re.search(r"^CPU max MHz:\s*(.+)$", lscpu, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)

    def ver(pkg):
        return sh(f"dpkg-query -W -f='${{Version}}' {pkg}") or "?"

    return {
        "nproc": sh("nproc"),
        "cpu": model.group(1) if model else platform.processor(),
        "cpu_max_mhz": mhz.group(1) if mhz else "",
        "mem_gib": f"{int(mem.group(1)) / 1048576:.1f}" if mem else "?",
        "kernel": platform.release(),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "dovecot": ver("dovecot-core"),
        "memcached": ver("memcached"),
        "wrk": ver("wrk"),
        "libpam": ver("libpam-modules"),
        "git": sh(f"git -C {REPO_ROOT} describe --always --dirty"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def machine_line(m):
    return (f"{m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB, {m['os']}, "
            f"kernel {m['kernel']}, dovecot {m['dovecot']}, memcached {m['memcached']}")


def say(part, text):
    print(f"[{part}] {text}", flush=True)


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def figure(part, what, value, how):
    """Print one figure and, on the next line, how it was obtained (with the
    load average when it was printed: other work on the machine shows)."""
    print(f"[{part}] {what}: {value}", flush=True)
    print(f"[{part}]     how: {how} [load average {loadavg()}]", flush=True)


def write_csv(name, rows, fields=None):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    if not rows:
        return path
    fields = fields or list(rows[0].keys())
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def percentile(values, p):
    """Nearest-rank percentile of a list (p in 0..100); None when empty."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 3)


def gnuplot(script_name, script):
    """Run a gnuplot script (kept beside the PNG); a failure is reported, not fatal."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / script_name
    path.write_text(script)
    exe = shutil.which("gnuplot")
    if exe is None:
        return "gnuplot not installed (make deps-test, or apt-get install --no-remove gnuplot-nox)"
    r = subprocess.run([exe, str(path)], cwd=RESULTS, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    if r.returncode != 0:
        return f"gnuplot failed: {r.stdout.strip()[-500:]}"
    return None


def wrk_csv(returncode, out, err):
    """The row bench/policy.lua prints at the end of a wrk run (CSVHEAD,
    CSV lines) as a dict; a failed run raises with wrk's last words."""
    head = vals = None
    for line in out.splitlines():
        if line.startswith("CSVHEAD,"):
            head = line.split(",")[1:]
        elif line.startswith("CSV,"):
            vals = line.split(",")[1:]
    if returncode != 0 or head is None or vals is None:
        raise RuntimeError(f"wrk failed ({returncode}): {err.strip()[-400:]} "
                           f"{out.strip()[-400:]}")
    return dict(zip(head, vals))


def production_overrides(**extra):
    """authbrake.conf overrides that drop every test threshold of the
    harness, so the tracker's production defaults (tracker/ab-config.c) hold."""
    over = {k: None for k in harness.TEST_DEFAULTS}
    over.update(extra)
    return over


# memcached's counters of operations (a get of n keys counts n)
MC_OPS = ("cmd_get", "cmd_set", "incr_hits", "incr_misses", "decr_hits",
          "decr_misses", "delete_hits", "delete_misses")


def mc_ops(mc):
    st = mc.stats()
    return sum(int(st.get(k, 0)) for k in MC_OPS)


@contextlib.contextmanager
def dovecot_pair(users, prefix):
    """A real memcached and two Dovecots with the same users, Dovecot's anvil
    penalty on as in production: one without a policy server, one with
    authbrake-policy at production thresholds. Yields (mc, plain, pol)."""
    with harness.Memcached() as mc:
        d = tempfile.mkdtemp(prefix=prefix)
        atexit.register(shutil.rmtree, d, True)
        conf = harness.write_authbrake_conf(d, mc, **production_overrides())
        with harness.Dovecot(users=users, auth_debug=False, anvil_penalty=True) as plain, \
                harness.Dovecot(users=users, policy_conf=conf, auth_debug=False,
                                anvil_penalty=True) as pol:
            yield mc, plain, pol
