"""DNS blocklists (dnsbl) against a real DNS server: Debian's dnsmasq on
loopback (harness.Dnsmasq), a real Dovecot with authbrake-policy, a real
memcached. Its zones give each case the issue names:
  bl.test    listed (127.0.0.2, TTL 600) or not listed (NXDOMAIN)
  slow.test  no answer: dnsbl_timeout passes, counted as not listed
  fail.test  SERVFAIL: counted as not listed
and a resolver port where nothing listens (the ICMP error ends the wait).

Counted in password checks that reached the passdb: a tarpitted attempt
still reaches it (after its delay), a refused one never does. Answers are
kept in memcached for their TTL, so the DNS server is asked once per
address; how often it was asked comes from its own query log.

Addresses are 127.120.x.y. Dovecot's anvil penalty is off (harness default).
"""

import json
import re
import socket
import subprocess
import time
import urllib.parse

import pytest

import harness
from harness import passdb_checks, policy_decisions, settle_log

USERS = harness.DEFAULT_USERS
LISTED = "127.120.0.2"
LISTED_PAM = "127.120.0.9"
CLEAN = "127.120.1.3"
REASON = "address listed in a DNSBL"
MSG = "Your address is listed in a DNS blocklist; logins are not accepted from it."


@pytest.fixture
def dns():
    with harness.Dnsmasq(listed=[LISTED, LISTED_PAM], ttl=600) as d:
        yield d


@pytest.fixture
def dnsbl_dovecot(memcached, authbrake_conf, dovecot_factory, policy_binary, dns):
    """make(**authbrake overrides) -> Dovecot with dnsbl = bl.test at dns."""
    def make(**overrides):
        overrides.setdefault("dnsbl", "bl.test")
        overrides.setdefault("dnsbl_resolver", dns.resolver)
        conf = authbrake_conf(memcached, **overrides)
        dc = dovecot_factory(policy_conf=conf)
        dc.ab_conf = conf
        return dc
    return make


def wait_lines(dc, since, regex, n=1, timeout=5):
    """The lines after since matching regex, once there are n of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(regex, dc.log_since(since), re.M)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def decisions_for(dc, since, address):
    return [(d["decision"], d["delay"], d["reason"])
            for d in policy_decisions(dc, since, address)]


def test_listed_address_has_no_free_failures_and_waits_at_once(dnsbl_dovecot, dns,
                                                              memcached):
    """dnsbl_action = tarpit (the default): a listed address waits from its
    first attempt, 1 s then doubling (to tarpit_max 2 s), while a clean one
    has its ip_free_failures (3) without delay. Each address is asked of
    the DNS server once: the answer is kept in memcached for its TTL."""
    dc = dnsbl_dovecot()
    mark = dc.log_mark()
    for i in range(3):
        ok, msg, _ = dc.pop3_login("bob", f"wrong-{i}", src=LISTED)
        assert not ok, msg
        ok, msg, _ = dc.imap_login("carol", f"wrong-{i}", src=CLEAN)
        assert not ok, msg
    settle_log(dc)
    # the tarpit delays the check; it does not stop it
    assert passdb_checks(dc, "bob", since=mark, address=LISTED) == 3
    assert passdb_checks(dc, "carol", since=mark, address=CLEAN) == 3
    got = decisions_for(dc, mark, LISTED)
    print("listed:", got)
    assert got == [("tarpit", "1", REASON), ("tarpit", "2", REASON),
                   ("tarpit", "2", REASON)], got
    assert decisions_for(dc, mark, CLEAN) == []
    lines = wait_lines(dc, mark, r"dnsbl: address=%s listed in bl\.test "
                       r"\(127\.0\.0\.2\), for 600s" % re.escape(LISTED))
    assert len(lines) == 1, dc.log_since(mark)

    # asked once each; later attempts read memcached (under a keyed hash)
    assert dns.queries(dns.reversed_name(LISTED, "bl.test")) == 1, dns.log_text()
    assert dns.queries(dns.reversed_name(CLEAN, "bl.test")) == 1, dns.log_text()
    keys = [urllib.parse.unquote(k) for k in memcached.dump_keys()]
    assert any(k.startswith("ab1:db:") for k in keys), keys
    assert not any("127.120" in k or "bl.test" in k for k in keys), keys

    # the real user from the listed address: waits, gets in, and then the
    # network is familiar to her account: no more delay for her there
    mark = dc.log_mark()
    ok, msg, _ = dc.imap_login("alice", USERS["alice"], src=LISTED)
    assert ok, msg
    ok, msg, _ = dc.imap_login("alice", USERS["alice"], src=LISTED)
    assert ok, msg
    settle_log(dc)
    got = [d for d in policy_decisions(dc, mark, LISTED) if d["account"] == "alice"]
    assert [(d["decision"], d["reason"]) for d in got] == [("tarpit", REASON)], got

    # the CLI's dry run says so too (and asks memcached, not the DNS server)
    r = subprocess.run([str(harness.CLI_BIN), "-c", str(dc.ab_conf), "--json", "check",
                        "--user", "dave", "--address", LISTED],
                       capture_output=True, text=True, timeout=30)
    out = json.loads(r.stdout)
    assert out["dnsbl_listed"] is True and out["reason"] == REASON, r.stdout + r.stderr
    assert dns.queries(dns.reversed_name(LISTED, "bl.test")) == 1


def test_reject_for_chosen_protocols(dnsbl_dovecot, dns):
    """dnsbl_action.smtp = reject: SMTP AUTH from a listed address is refused
    before any password check, with the message the client reads; IMAP from
    it is only delayed, and a clean address is let through to the check."""
    dc = dnsbl_dovecot(**{"dnsbl_action.smtp": "reject"})
    mark = dc.log_mark()
    ok, out, _ = dc.auth_test("alice", USERS["alice"], LISTED, service="smtp")
    assert not ok, out
    ok, out, _ = dc.auth_test("bob", "wrong", CLEAN, service="smtp")
    assert not ok, out
    ok, out, _ = dc.auth_test("alice", USERS["alice"], LISTED, service="imap")
    assert ok, out
    settle_log(dc)
    assert passdb_checks(dc, "alice", since=mark, address=LISTED) == 1
    assert passdb_checks(dc, "bob", since=mark, address=CLEAN) == 1
    got = [(d["protocol"], d["decision"], d["reason"])
           for d in policy_decisions(dc, mark, LISTED)]
    assert got == [("smtp", "reject", REASON), ("imap", "tarpit", REASON)], got


@pytest.mark.parametrize("case", ["timeout", "servfail", "no resolver"])
def test_failed_lookup_counts_as_not_listed(dnsbl_dovecot, dns, case):
    """No answer within dnsbl_timeout, a SERVFAIL, or no resolver at the
    port: the address counts as not listed, the failure is logged with its
    cause, and the login goes on to the password check. The failure is kept
    for 30 s, so the next attempts do not wait for the DNS again."""
    zone, resolver, error = {
        "timeout": ("slow.test", dns.resolver,
                    r"slow\.test: no answer from 127\.0\.0\.1:\d+ in 300 ms"),
        "servfail": ("fail.test", dns.resolver, r"fail\.test: SERVFAIL"),
        "no resolver": ("bl.test", f"127.0.0.1:{harness.free_port()}",
                        r"bl\.test: the resolver refused the connection"),
    }[case]
    dc = dnsbl_dovecot(dnsbl=zone, dnsbl_resolver=resolver, dnsbl_timeout="300ms")
    mark = dc.log_mark()
    for _ in range(2):
        ok, msg, _ = dc.imap_login("alice", USERS["alice"], src=LISTED)
        assert ok, msg
    settle_log(dc)
    assert passdb_checks(dc, "alice", since=mark, address=LISTED) == 2
    assert decisions_for(dc, mark, LISTED) == []
    lines = wait_lines(dc, mark, r"dnsbl: address=%s lookup failed \((.*)\): "
                       r"counted as not listed for 30s" % re.escape(LISTED))
    print(case, "->", lines)
    assert len(lines) == 1 and re.fullmatch(error, lines[0]), dc.log_since(mark)
    if case != "no resolver":
        assert dns.queries(dns.reversed_name(LISTED, zone)) == 1, dns.log_text()


def test_a_listing_does_not_wait_for_a_slow_zone(dnsbl_dovecot, dns):
    """With several zones, one listing is enough: the answer is not held
    back until the zone that never answers times out. Waiting for it would
    take dnsbl_timeout (5 s) plus the 1 s tarpit: the login takes about
    1 s (the bound leaves a loaded machine 4 s)."""
    dc = dnsbl_dovecot(dnsbl="slow.test, bl.test", dnsbl_timeout="5s")
    mark = dc.log_mark()
    ok, msg, secs = dc.imap_login("alice", USERS["alice"], src=LISTED)
    assert ok, msg
    print(f"login from a listed address, one zone silent: {secs:.2f} s")
    assert secs < 5.0
    settle_log(dc)
    assert [(d["decision"], d["reason"]) for d in policy_decisions(dc, mark, LISTED)] \
        == [("tarpit", REASON)]
    assert "lookup failed" not in dc.log_since(mark)
    assert wait_lines(dc, mark, r"dnsbl: address=%s listed in bl\.test"
                      % re.escape(LISTED))


def test_client_gone_while_its_lookup_waits(dnsbl_dovecot, dns):
    """A policy client that hangs up while its address is being looked up
    (a zone that never answers): whether lib-http sees the hang-up first
    (the request is destroyed with its lookup and timer) or the timeout
    does (the answer goes nowhere), the process goes on answering, and
    against the sanitizer build leaves no report."""
    dc = dnsbl_dovecot(dnsbl="slow.test", dnsbl_timeout="2s")
    body = json.dumps({"login": "alice", "remote": "127.120.3.1", "protocol": "imap",
                       "session_id": "gone-1", "pwhash": "abc", "device_id": "",
                       "tls": True}).encode()
    pids = dc.policy_pids()
    for i in range(4):
        with socket.create_connection(("127.0.0.1", dc.policy_port), timeout=5) as s:
            s.sendall(b"POST /?command=allow HTTP/1.1\r\nHost: x\r\n"
                      b"X-API-Key: " + dc.api_key.encode() + b"\r\n"
                      b"Content-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.1)
    time.sleep(2.5)     # past dnsbl_timeout: a timer left behind would fire now
    status, text = dc.policy_post("allow", {"login": "bob", "remote": CLEAN,
                                            "protocol": "imap", "session_id": "s2"})
    assert status == 200 and json.loads(text)["status"] == 0, text
    assert dc.policy_pids() == pids, "a policy process died"
