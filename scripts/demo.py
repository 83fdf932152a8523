#!/usr/bin/python3
"""authbrake, for real, on this machine: memcached, a Dovecot with IMAP and
POP3 on loopback, authbrake-policy under Dovecot's master; a short scripted
attack beside a legitimate user; a table of what authbrake decided; then the
stack stays up for you to try by hand.  Run by `make demo` (`sh ./demo.sh`
on a fresh machine).  `make demo-stop` (scripts/demo.py --stop) stops it.

Every run starts clean: a demo still running from an earlier run is stopped
first (it says so), and build/demo/ (config, Dovecot's log and state,
memcached's log) is removed and written anew.  If the start or the scripted
attack fails, everything this run started is stopped again; the logs stay in
build/demo/ until the next run.

AUTHBRAKE_DEMO_POLICY_BIN=PATH runs another authbrake-policy binary (default
build/authbrake-policy)."""

import argparse
import os
import re
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test" / "integration"))
import harness  # noqa: E402  (the test harness starts the same real servers)

DEMO_DIR = REPO / "build" / "demo"
PIDS = DEMO_DIR / "pids"
DOVECOT_CONF = DEMO_DIR / "dovecot" / "dovecot.conf"
USERS = {"alice": "correct-horse-7", "bob": "battery-staple-9",
         "monday": "m0nday-pass", "monica": "m0nica-pass"}

if os.environ.get("AUTHBRAKE_DEMO_POLICY_BIN"):
    harness.POLICY_BIN = Path(os.environ["AUTHBRAKE_DEMO_POLICY_BIN"])


# ------------------------------------------------- the demo's processes

def _stat(pid):
    """(comm, state, start time in clock ticks since boot) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    rest = text.rsplit(")", 1)[1].split()
    return comm, rest[0], int(rest[19])


def _alive(pid):
    st = _stat(pid)
    return st is not None and st[1] != "Z"


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def record(procs):
    """Write build/demo/pids: "name pid starttime" per process, so a later
    --stop signals these processes and not others that reuse the PID."""
    lines = []
    for name, pid in procs:
        st = _stat(pid)
        if st is not None:
            lines.append(f"{name} {pid} {st[2]}\n")
    PIDS.write_text("".join(lines))


def recorded():
    """[(name, pid)] of the processes in build/demo/pids still running as
    the demo started them (same start time; the old "PID PID" format by
    program name)."""
    try:
        text = PIDS.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        try:
            if len(parts) == 3:
                name, pid, start = parts[0], int(parts[1]), int(parts[2])
                st = _stat(pid)
                if st is not None and st[1] != "Z" and st[2] == start:
                    out.append((name, pid))
            else:  # written by an older demo.py: "DOVECOT_PID MEMCACHED_PID"
                for pid in map(int, parts):
                    st = _stat(pid)
                    if st is not None and st[1] != "Z" and st[0] in ("dovecot", "memcached"):
                        out.append((st[0], pid))
        except ValueError:
            continue
    return out


def strays():
    """Dovecot masters running the demo's dovecot.conf that no pids file
    names (a demo killed before it wrote one)."""
    out = []
    conf = str(DOVECOT_CONF).encode()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            args = _cmdline(int(name))
            if conf in args and b"-c" in args and os.path.basename(args[0]) == b"dovecot":
                out.append(("dovecot", int(name)))
    return out


def terminate(procs, timeout=15.0):
    """SIGTERM each (a Dovecot master takes its children down), wait, then
    SIGKILL whatever is left, children of the masters included."""
    kids = [k for name, pid in procs if name == "dovecot"
            for k in harness._descendants_of(pid)]
    for _, pid in procs:
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    pids = [pid for _, pid in procs] + kids
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def stop_previous(verb="stopping the previous demo"):
    """Stop a demo left running; True if there was one."""
    procs = recorded()
    procs += [p for p in strays() if p not in procs]
    if procs:
        print(f"{verb}: " + ", ".join(f"{n} pid {p}" for n, p in procs), flush=True)
        left = terminate(procs)
        if left:
            sys.exit(f"demo: could not stop pids {left}; stop them and run again")
    PIDS.unlink(missing_ok=True)
    return bool(procs)


def decisions_for(dovecot, mark, address):
    """authbrake-policy's own log lines about this address since mark."""
    out = []
    for line in dovecot.log_since(mark).splitlines():
        m = re.search(r'authbrake-policy: Info: account="([^"]*)" address=(\S+) '
                      r'protocol=\S+ decision=(\w+)(?: delay=(\d+)s)?'
                      r'(?: retry_after=\d+s)? reason="([^"]*)"', line)
        if m and m.group(2) == address:
            d = m.group(3) + (f" {m.group(4)}s" if m.group(4) else "")
            out.append((m.group(1), d, m.group(5)))
    return out


def row(rows, who, src, user, pw_ok, result, dovecot, mark):
    ok, msg, secs = result
    dec = [d for d in decisions_for(dovecot, mark, src) if d[0] == user]
    decision, reason = (dec[-1][1], dec[-1][2]) if dec else ("allow", "-")
    rows.append((who, src, user, "right" if pw_ok else "wrong", decision,
                 reason, "logged in" if ok else "refused", f"{secs:.1f}s"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stop", action="store_true",
                    help="stop a running demo (make demo-stop) and exit")
    if ap.parse_args().stop:
        if not stop_previous("stopping the demo"):
            print("no demo running")
        else:
            print("demo stopped")
        return
    stop_previous()
    # a fresh directory: no earlier run's log (with its Fatal: lines), state
    # or config is ever read again
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    started = []

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    # kill PID and a closed terminal clean up as Ctrl-C does
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        run(started)
    except BaseException as e:
        # a failed start or run leaves nothing behind (a second Ctrl-C
        # must not cut the clean-up short)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for server in reversed(started):
            server.stop()
        PIDS.unlink(missing_ok=True)
        if isinstance(e, KeyboardInterrupt):
            sys.exit("\ndemo: interrupted; stopped what it had started")
        if isinstance(e, SystemExit):
            raise
        sys.exit(f"demo: FAILED: {e}\nStopped what it had started; its logs are "
                 f"in {DEMO_DIR} until the next run.")


def run(started):
    mc = harness.Memcached()
    # its log beside the others, not in a temp dir of its own
    os.rmdir(mc.dir)
    mc.dir = str(DEMO_DIR / "memcached")
    os.makedirs(mc.dir)
    started.append(mc.start())
    record([("memcached", mc.pid)])
    # The production defaults of authbrake.conf(5), except a 3 s tarpit cap
    # so the demo takes one minute instead of five.
    drop = {k: None for k in harness.TEST_DEFAULTS}
    drop["tarpit_max"] = "3s"
    conf = harness.write_authbrake_conf(DEMO_DIR / "etc", mc, **drop)
    dovecot = harness.Dovecot(dir=DEMO_DIR / "dovecot", users=USERS,
                              policy_conf=conf)
    started.append(dovecot)
    dovecot.start()
    record([("dovecot", dovecot.pid), ("memcached", mc.pid)])
    print(f"memcached on {mc.address}, Dovecot IMAP 127.0.0.1:{dovecot.imap_port} "
          f"POP3 127.0.0.1:{dovecot.pop3_port}, authbrake-policy "
          f"127.0.0.1:{dovecot.policy_port}\n")

    rows = []
    # alice logs in from home first: her subnet becomes familiar
    mark = dovecot.log_mark()
    row(rows, "alice at home", "127.10.1.5", "alice", True,
        dovecot.imap_login("alice", USERS["alice"], "127.10.1.5"),
        dovecot, mark)

    # 1. a dictionary run over user names from one address
    print("1. dictionary run from 127.66.0.1 over 14 user names ...")
    names = ["mon", "monday", "monica", "monroe", "montana", "monty",
             "moira", "molly", "mona", "monique", "morgan", "morris",
             "moses", "monday"]
    for i, name in enumerate(names):
        mark = dovecot.log_mark()
        row(rows, f"dictionary #{i + 1}", "127.66.0.1", name, False,
            dovecot.imap_login(name, "123456", "127.66.0.1"), dovecot, mark)
    mark = dovecot.log_mark()
    row(rows, "dictionary, right pw", "127.66.0.1", "monday", True,
        dovecot.pop3_login("monday", USERS["monday"], "127.66.0.1"),
        dovecot, mark)

    # 2. a botnet: one guess each from rotating addresses against alice
    print("2. botnet: 12 addresses in 12 subnets, one guess each at alice ...")
    srcs = [f"127.{100 + i}.{i}.{7 + i}" for i in range(12)]
    marks = dovecot.log_mark()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda i: dovecot.imap_login("alice", f"Summer20{i:02}!", srcs[i]),
            range(len(srcs))))
    for i, (src, res) in enumerate(zip(srcs, results)):
        row(rows, f"botnet #{i + 1}", src, "alice", False, res, dovecot, marks)
    mark = dovecot.log_mark()
    row(rows, "botnet, right pw", "127.201.9.9", "alice", True,
        dovecot.imap_login("alice", USERS["alice"], "127.201.9.9"),
        dovecot, mark)

    # 3. the real alice, from her usual network, during the attack
    mark = dovecot.log_mark()
    row(rows, "alice at home", "127.10.1.5", "alice", True,
        dovecot.imap_login("alice", USERS["alice"], "127.10.1.5"),
        dovecot, mark)
    mark = dovecot.log_mark()
    row(rows, "bob, elsewhere", "127.20.2.2", "bob", True,
        dovecot.pop3_login("bob", USERS["bob"], "127.20.2.2"), dovecot, mark)

    widths = [max(len(str(r[i])) for r in rows + [HEAD]) for i in range(len(HEAD))]
    print()
    for r in [HEAD] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"""
authbrake is still running (stop it with: make demo-stop). Try it by hand:

  # alice from her home network: let in, although her account is locked elsewhere
  printf 'a1 LOGIN alice {USERS['alice']}\\r\\na2 LOGOUT\\r\\n' | nc -q 3 -s 127.10.1.5 127.0.0.1 {dovecot.imap_port}
  # the same from the dictionary attacker's address: refused, the password is never checked
  printf 'a1 LOGIN alice {USERS['alice']}\\r\\na2 LOGOUT\\r\\n' | nc -q 3 -s 127.66.0.1 127.0.0.1 {dovecot.imap_port}
  # POP3, from a new address: alice is locked for unfamiliar origins
  printf 'USER alice\\r\\nPASS {USERS['alice']}\\r\\nQUIT\\r\\n' | nc -q 3 -s 127.77.0.1 127.0.0.1 {dovecot.pop3_port}
  # the policy endpoint itself, as Dovecot's auth process asks it
  curl -s -H 'X-API-Key: {conf.api_key}' -d '{{"login":"bob","remote":"192.0.2.1"}}' 'http://127.0.0.1:{dovecot.policy_port}/?command=allow'

Inspect and act with the admin tool:

  build/authbrake -c {conf} status alice
  build/authbrake -c {conf} status 127.66.0.1
  build/authbrake -c {conf} unlock alice
  build/authbrake -c {conf} check --user alice --address 127.201.9.9

Dovecot's log (authbrake-policy's decisions included): {dovecot.log_path}
""")


HEAD = ("who", "address", "login", "password", "authbrake", "reason",
        "result", "took")

if __name__ == "__main__":
    main()
