#!/usr/bin/python3
"""authbrake, for real, on this machine: memcached, a Dovecot with IMAP and
POP3 on loopback, authbrake-policy under Dovecot's master; a short scripted
attack beside a legitimate user; a table of what authbrake decided; then the
stack stays up for you to try by hand.  Run by `make demo` (`sh ./demo.sh`
on a fresh machine).  `make demo-stop` stops it."""

import os
import re
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
USERS = {"alice": "correct-horse-7", "bob": "battery-staple-9",
         "monday": "m0nday-pass", "monica": "m0nica-pass"}


def stop_previous():
    if not PIDS.exists():
        return
    for pid in PIDS.read_text().split():
        try:
            os.kill(int(pid), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
    time.sleep(1)
    PIDS.unlink()


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
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    stop_previous()
    mc = harness.Memcached().start()
    # The production defaults of authbrake.conf(5), except a 3 s tarpit cap
    # so the demo takes one minute instead of five.
    drop = {k: None for k in harness.TEST_DEFAULTS}
    drop["tarpit_max"] = "3s"
    conf = harness.write_authbrake_conf(DEMO_DIR / "etc", mc, **drop)
    dovecot = harness.Dovecot(dir=DEMO_DIR / "dovecot", users=USERS,
                              policy_conf=conf).start()
    PIDS.write_text(f"{dovecot.pid} {mc.pid}\n")
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
