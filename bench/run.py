#!/usr/bin/python3
"""`make bench`: run every benchmark part, print each figure with how it was
obtained, write CSV + gnuplot PNGs + summary.md under bench/results/.

Timings never make this fail. A part that cannot run at all (a binary
missing, a server that does not start) is reported as FAILED and the
others still run; the exit status is then 1 so a broken setup is seen.
"""

import argparse
import io
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import RESULTS, machine, machine_line  # noqa: E402
import plots  # noqa: E402

PARTS = ("policy", "auth", "pam", "attack")
# run only when named (--parts soak): 10 minutes by default, BENCH_SOAK_SECONDS
OPTIONAL_PARTS = ("soak",)


class Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated subset of "
                    + ",".join(PARTS + OPTIONAL_PARTS)
                    + " (default: " + ",".join(PARTS) + ")")
    ap.add_argument("--quick", action="store_true",
                    help="short runs (a smoke test of the benchmarks, not figures)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    for p in parts:
        if p not in PARTS + OPTIONAL_PARTS:
            ap.error(f"unknown part '{p}' (parts: "
                     f"{', '.join(PARTS + OPTIONAL_PARTS)})")
    if os.geteuid() != 0:
        print("bench: not root; the pam part needs root (useradd, /etc/pam.d)",
              file=sys.stderr)

    RESULTS.mkdir(parents=True, exist_ok=True)
    log = open(RESULTS / "run.log", "w")
    sys.stdout = Tee(sys.__stdout__, log)

    m = machine()
    (RESULTS / "machine.json").write_text(json.dumps(m, indent=2) + "\n")
    print(f"bench: machine: {machine_line(m)}")
    print(f"bench: source {m['git']}, started {m['date']}, parts {', '.join(parts)}"
          + (" (QUICK: smoke-test durations)" if args.quick else ""))
    q = args.quick
    results, failed = {}, []
    t_all = time.monotonic()
    for part in parts:
        t0 = time.monotonic()
        print(f"\n===== {part} =====", flush=True)
        try:
            if part == "policy":
                import policy_load
                results[part] = policy_load.run(m, seconds=2 if q else 10)
            elif part == "auth":
                import auth_latency
                results[part] = auth_latency.run(m, n=200 if q else 2000)
            elif part == "pam":
                import pam_bench
                results[part] = pam_bench.run(m, n=10 if q else 50)
            elif part == "attack":
                import attack
                results[part] = attack.run(m, scale=0.25 if q else 1.0)
            elif part == "soak":
                import soak
                results[part] = soak.run(seconds=60 if q else int(
                    os.environ.get("BENCH_SOAK_SECONDS", "600")))
        except Exception as e:  # report, go on with the other parts
            failed.append(part)
            print(f"[{part}] FAILED: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
        print(f"[{part}] took {time.monotonic() - t0:.0f} s", flush=True)

    print("\n===== plots and summary =====")
    for problem in plots.draw(results):
        print(f"[plots] {problem}")
    summary = plots.summary(results, m, failed, quick=q)
    (RESULTS / "summary.md").write_text(summary)
    print(summary)
    print(f"bench: done in {time.monotonic() - t_all:.0f} s; results in {RESULTS}")
    if failed:
        print(f"bench: parts that could not run: {', '.join(failed)}")
    sys.stdout.flush()
    log.close()
    sys.stdout = sys.__stdout__
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
