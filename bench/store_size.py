#!/usr/bin/python3
"""What memcached holds per tracked identity: the sizing rule's figures.

Sends failed logins (allow, then report) to a real authbrake-policy under a
real Dovecot, at production thresholds, for N accounts tried from N
addresses in N/4 subnets, then for the same accounts' successes from their
home subnets, and reads memcached's own `stats` (bytes, curr_items) before
and after each phase.

    /usr/bin/python3 bench/store_size.py [N]        (default 2000)
"""

import json
import sys

import benchlib


def stats(mc):
    vals = mc.stats()
    return int(vals["bytes"]), int(vals["curr_items"]), int(vals["evictions"])


def post(pol, command, body):
    status, text = pol.policy_post(command, body)
    if status != 200:
        raise SystemExit(f"{command}: {status} {text}")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with benchlib.dovecot_pair({"alice": "x"}, "ab-size-") as (mc, _plain, pol):
        base = stats(mc)
        for i in range(n):
            body = {"login": f"user{i}", "remote": f"10.{i // 1000}.{i % 1000 // 4}.{i % 4 + 1}",
                    "protocol": "imap", "pwhash": f"{i:03x}"[-3:],
                    "session_id": f"fail-{i}"}
            post(pol, "allow", body)
            post(pol, "report", dict(body, success=False, policy_reject=False))
        failed = stats(mc)
        for i in range(n):
            body = {"login": f"user{i}", "remote": f"172.16.{i // 250}.{i % 250 + 1}",
                    "protocol": "imap", "pwhash": "abc", "session_id": f"ok-{i}"}
            post(pol, "allow", body)
            post(pol, "report", dict(body, success=True, policy_reject=False))
        done = stats(mc)
    fail_b = (failed[0] - base[0]) / n
    ok_b = (done[0] - failed[0]) / n
    fail_items = (failed[1] - base[1]) / n
    ok_items = (done[1] - failed[1]) / n
    how = f"bench/store_size.py {n}: memcached stats bytes/curr_items, production thresholds"
    benchlib.figure("size", "bytes per failed login from a new account and address",
                    f"{fail_b:.0f} B ({fail_items:.1f} items)", how)
    benchlib.figure("size", "bytes per account's familiar subnet (a success)",
                    f"{ok_b:.0f} B ({ok_items:.1f} items)", how)
    print(json.dumps({"n": n, "failure_bytes": round(fail_b), "failure_items": fail_items,
                      "success_bytes": round(ok_b), "success_items": ok_items,
                      "evictions": done[2]}))


if __name__ == "__main__":
    main()
