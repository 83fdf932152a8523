"""SMTP AUTH end to end: a real Postfix (Debian's, an instance of its own)
authenticating through the test Dovecot (smtpd_sasl_type = dovecot), set
up with the shipped conf.d/postfix/ files, and authbrake-policy deciding.

Counted in password checks that REACHED THE PASSDB (harness.passdb_checks),
never only in refused logins. What a client sees at each decision is
asserted, reply code and text:
  allow    235 2.7.0 Authentication successful (then MAIL, RCPT, DATA: 250)
           a wrong password: 535 5.7.8 Error: authentication failed: ...
  tarpit   the answer comes the tarpit later; past Postfix's own limit
           for Dovecot's answer (10 s, fixed in Postfix's
           xsasl_dovecot_server.c) it is
           454 4.7.0 Temporary authentication failure: ...
  reject   535 5.7.8 Error: authentication failed: <authbrake's message>
           (also for an address a DNSBL lists, with dnsbl_action.smtp = reject)
  HELO ylmf-pc   554 5.7.1 <ylmf-pc>: Helo command rejected: ... before AUTH

Dovecot names the protocol of Postfix's requests "smtp": Postfix's SASL
client sends service=smtp (smtpd_sasl_service), and Dovecot's policy
request carries it as "protocol". Postfix sends no session, so Dovecot's
session_id is empty; authbrake-policy then pairs an attempt's allow and
report by protocol, login, address and pwhash, and parallel SMTP guesses
hold places as IMAP ones do (the botnet test: 60 AUTHs released at once;
without that pairing 30 of them reached the passdb, with it 5).

Each test has its own memcached, authbrake.conf, Dovecot and Postfix, and
its own 127.T.x.y range (T = 111..119). Dovecot's anvil penalty is off
(harness default).
"""

import json
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
from harness import cli_status, passdb_checks, policy_decisions, settle_log

USERS = harness.DEFAULT_USERS
ALICE = "alice"
DEFAULTS = harness.TEST_DEFAULTS
MSG_ACCOUNT = "This account is temporarily locked for logins from new locations"
MSG_ADDRESS = "Too many failed logins from your address; try again later."


@pytest.fixture
def mail(memcached, authbrake_conf, dovecot_factory, postfix_factory,
         policy_binary):
    """make(postfix_settings=None, **authbrake overrides) -> (Dovecot, Postfix):
    Postfix's SASL through the Dovecot, authbrake-policy in the Dovecot."""
    def make(postfix_settings=None, **overrides):
        conf = authbrake_conf(memcached, **overrides)
        pf = postfix_factory(settings=postfix_settings)
        dc = dovecot_factory(policy_conf=conf, postfix_listener=pf.sasl_socket)
        dc.ab_conf = conf
        return dc, pf.start()
    return make


def show(label, reply):
    """Print a reply line as a client saw it (the closing note quotes them)."""
    print(f"{label}: {reply}")


# Dovecot's debug line for each policy request ("allow" before the
# check; the report adds "success")
POLICY_REQUEST_RE = re.compile(
    harness.auth_log_re(r"[^,()]*", r"[^,()]*", r"Policy server request JSON: (\{.*\})$",
                        "policy"), re.M)


def request_protocols(dc, since, login):
    """The protocol of each "allow" request Dovecot sent for login."""
    out = []
    for m in POLICY_REQUEST_RE.finditer(dc.log_since(since)):
        body = json.loads(m[1])
        if body.get("login") == login and "success" not in body:
            out.append(body["protocol"])
    return out


def smtp_decisions(dc, since, address=None):
    return [d for d in policy_decisions(dc, since, address)
            if d["protocol"] == "smtp"]


# ------------------------------------------------------------------ allow

def test_legit_user_submits_mail_protocol_smtp(mail):
    """The real user: AUTH, then MAIL FROM / RCPT TO / DATA accepted (and
    discarded); a wrong password is a 535 after one password check. Dovecot
    sends authbrake protocol "smtp" for Postfix's requests."""
    dc, pf = mail()
    mark = dc.log_mark()
    with pf.smtp(src="127.111.0.1") as c:
        assert c.ehlo_reply.code == 250
        reply, _ = c.auth("PLAIN", ALICE, USERS[ALICE])
        show("allow, right password (AUTH PLAIN)", reply)
        assert reply == (235, "2.7.0 Authentication successful")
        sent = c.send("alice@authbrake.test", "bob@example.org",
                      "Subject: test\r\n\r\nhello\r\n")
        for r in sent:
            show("  after AUTH", r)
        assert [r.code for r in sent] == [250, 250, 250], sent
        assert sent[2].text.startswith("2.0.0 Ok: queued as "), sent
    with pf.smtp(src="127.111.0.2") as c:
        reply, _ = c.auth("LOGIN", ALICE, "not-her-password")
    show("allow, wrong password (AUTH LOGIN)", reply)
    assert reply.code == 535 and reply.text.startswith(
        "5.7.8 Error: authentication failed:"), reply
    settle_log(dc)
    assert passdb_checks(dc, ALICE, since=mark) == 2
    # what Dovecot asked authbrake-policy before each check (allows are
    # not logged by authbrake; Dovecot's auth_debug shows the request)
    assert request_protocols(dc, mark, ALICE) == ["smtp", "smtp"]
    assert smtp_decisions(dc, mark) == []       # no tarpit, no reject
    assert "discard" in pf.log_text() and "status=sent" in pf.log_text()


# ---------------------------------------------------------- HELO ylmf-pc

def test_ylmf_pc_helo_refused_before_auth(mail):
    """The shipped HELO check: EHLO ylmf-pc is refused at EHLO; a bot that
    goes on (STARTTLS, EHLO again, AUTH) gets no AUTH, and no password
    check reaches the passdb."""
    dc, pf = mail()
    mark = dc.log_mark()
    for i, mech in enumerate(("LOGIN", "PLAIN", "LOGIN")):
        src = f"127.112.{i}.1"
        with pf.smtp(src=src, helo="ylmf-pc", insist=True) as c:
            for cmd, reply in c.replies:
                show(f"HELO refused: {cmd}", reply)
            assert c.ehlo_reply == (
                554, "5.7.1 <ylmf-pc>: Helo command rejected: "
                "Password-guessing bot (HELO ylmf-pc) refused"), c.ehlo_reply
            reply, _ = c.auth(mech, ALICE, USERS[ALICE])
            show(f"HELO refused: AUTH {mech}", reply)
            assert reply == (503, "5.5.1 Error: send HELO/EHLO first"), reply
    # the check ignores case, as bots vary it
    with pf.smtp(src="127.112.9.1", helo="YLMF-PC") as c:
        assert c.ehlo_reply.code == 554, c.ehlo_reply
    settle_log(dc)
    assert passdb_checks(dc, since=mark) == 0
    assert smtp_decisions(dc, mark) == []
    assert "Helo command rejected" in pf.log_text()


# ------------------------------------- SMTP, IMAP and POP3 count together

def test_smtp_imap_pop3_failures_count_together(mail):
    """Guesses at one account over IMAP, POP3 and SMTP (AUTH LOGIN and AUTH
    PLAIN), each from its own /24, cross account_lock_failures together:
    exactly that many reach the passdb, then the right password over SMTP
    from a new address is refused with authbrake's message; the address
    counts of one source also add up across protocols."""
    dc, pf = mail()
    limit = DEFAULTS["account_lock_failures"]
    mark = dc.log_mark()
    protocols = []
    for i in range(limit):
        src, pw = f"127.113.{i}.1", f"guess-{i}"
        kind = ("imap", "pop3", "smtp-login", "smtp-plain")[i % 4]
        protocols.append(kind)
        if kind == "imap":
            ok = dc.imap_login(ALICE, pw, src)[0]
        elif kind == "pop3":
            ok = dc.pop3_login(ALICE, pw, src)[0]
        else:
            reply, _ = pf.smtp(src=src).auth(kind[5:].upper(), ALICE, pw)
            ok = reply.code == 235
            assert reply.code == 535, reply
        assert not ok
    settle_log(dc)
    assert passdb_checks(dc, ALICE, since=mark) == limit
    assert {"imap", "pop3", "smtp-login", "smtp-plain"} <= set(protocols)

    # locked for unfamiliar origins: SMTP AUTH with the right password
    lock_mark = dc.log_mark()
    for mech, src in (("PLAIN", "127.113.200.1"), ("LOGIN", "127.113.201.1")):
        reply, _ = harness.smtp_auth(pf.port, ALICE, USERS[ALICE], src, mech)
        show(f"reject, account locked (AUTH {mech})", reply)
        assert reply.code == 535, reply
        assert reply.text.startswith(
            "5.7.8 Error: authentication failed: " + MSG_ACCOUNT), reply
    ok, msg, _ = dc.imap_login(ALICE, USERS[ALICE], "127.113.202.1")
    assert not ok and MSG_ACCOUNT in msg, msg
    settle_log(dc)
    assert passdb_checks(dc, ALICE, since=lock_mark) == 0
    rejects = smtp_decisions(dc, lock_mark)
    assert [d["decision"] for d in rejects] == ["reject", "reject"], rejects
    assert all("account locked" in d["reason"] for d in rejects), rejects

    # one address: IMAP, POP3 and SMTP failures at other accounts add up
    # to its block (ip_block_failures over ip_max_accounts: one account
    # per protocol is too few to hit the account rules)
    src = "127.113.250.1"
    for user in ("bob", "carol"):
        assert not dc.imap_login(user, "x", src)[0]
        assert not dc.pop3_login(user, "y", src)[0]
        assert harness.smtp_auth(pf.port, user, "z", src)[0].code == 535
    status = cli_status(dc.ab_conf, src)
    assert status["failures"] == 6, status


# -------------------------------------------- a block set by IMAP guesses

def test_imap_block_refuses_smtp_auth_at_once(mail):
    """An address blocked by IMAP guesses (a dictionary run over user names)
    is refused SMTP AUTH at once, the right password included: no password
    check, authbrake's message in the 535."""
    dc, pf = mail()
    src = "127.114.0.1"
    n = DEFAULTS["ip_max_accounts"]
    for i in range(n):
        dc.imap_login(f"user{i}", "guess", src)
    mark = dc.log_mark()
    for mech in ("PLAIN", "LOGIN"):
        reply, _ = harness.smtp_auth(pf.port, ALICE, USERS[ALICE], src, mech)
        show(f"reject, address blocked by IMAP guesses (AUTH {mech})", reply)
        assert reply == (535, "5.7.8 Error: authentication failed: " + MSG_ADDRESS), reply
    settle_log(dc)
    assert passdb_checks(dc, since=mark, address=src) == 0
    rejects = smtp_decisions(dc, mark, src)
    assert [d["reason"] for d in rejects] == ["address blocked"] * 2, rejects
    # the user, from elsewhere, still submits
    reply, _ = harness.smtp_auth(pf.port, ALICE, USERS[ALICE], "127.114.1.1")
    assert reply.code == 235, reply


# ----------------------------------------------------------------- tarpit

def test_tarpit_delays_auth_then_postfix_gives_up_at_10s(mail):
    """One address's wrong passwords over SMTP: the tarpit doubles (1, 2, 4,
    8 s); each AUTH answer waits for it and the password is still checked
    (535). Postfix waits at most 10 s for Dovecot: a 12 s tarpit reaches
    the client as a 454 temporary failure, and the password check happens
    after Postfix has gone (Dovecot 2.3) or never (2.4). The delays are read from authbrake's log, not
    timed."""
    dc, pf = mail(ip_free_failures=0, ip_block_failures=50, tarpit_max="12s",
                  account_lock_failures=50, familiar_failures=50)
    src = "127.115.0.1"
    mark = dc.log_mark()
    replies = []
    for i in range(6):
        reply, seconds = harness.smtp_auth(pf.port, ALICE, f"guess-{i}", src,
                                           ("LOGIN", "PLAIN")[i % 2], timeout=60)
        replies.append(reply)
        show(f"attempt {i + 1} ({seconds:.1f}s)", reply)
    settle_log(dc)
    decisions = smtp_decisions(dc, mark, src)
    got = [(d["decision"], int(d["delay"] or 0)) for d in decisions]
    # the first is allowed (authbrake logs no allow), then the doubling
    assert got == [("tarpit", 1), ("tarpit", 2), ("tarpit", 4), ("tarpit", 8),
                   ("tarpit", 12)], got
    # the first five: answered after the tarpit, password checked
    for reply in replies[:5]:
        assert reply.code == 535 and reply.text.startswith(
            "5.7.8 Error: authentication failed:"), replies
    # the sixth: 12 s > Postfix's 10 s
    show("tarpit 12s", replies[5])
    assert replies[5] == (454, "4.7.0 Temporary authentication failure: "
                          "Connection lost to authentication server"), replies[5]
    # Dovecot 2.3 goes on after Postfix stopped waiting: the sixth password
    # is checked when the tarpit ends. 2.4 drops the request of a client
    # that has gone: it is never checked (waited for as long).
    checks = 5 if harness.DOVECOT_24 else 6
    deadline = time.monotonic() + 20
    while passdb_checks(dc, ALICE, since=mark) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert passdb_checks(dc, ALICE, since=mark) == checks
    assert "Connection lost to authentication server" in pf.log_text()
    # Postfix's smtpd processes recover: the next logins are answered
    for i in range(3):
        reply, seconds = harness.smtp_auth(pf.port, ALICE, USERS[ALICE], f"127.115.{i + 1}.1")
        show(f"after the 454 ({seconds:.1f}s)", reply)
        assert reply.code == 235, reply


# ------------------------------------------------- the ylmf-pc botnet

N_BOTS = 60


def ylmf_pc_botnet(port, t, user, n=N_BOTS):
    """n bots, each from its own /24 (127.t.i.1): EHLO ylmf-pc, STARTTLS,
    then, all released at once, one AUTH LOGIN or AUTH PLAIN guess each.
    Returns their AUTH replies."""
    clients = []
    try:
        for i in range(n):
            clients.append(harness.SmtpClient(port, f"127.{t}.{i}.1", "ylmf-pc"))
        start = threading.Barrier(n)

        def guess(i):
            start.wait()
            return clients[i].auth(("LOGIN", "PLAIN")[i % 2], user,
                                   f"guess-{t}-{i}")[0]
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(guess, range(n)))
    finally:
        for c in clients:
            c.close()


def test_ylmf_pc_botnet_in_parallel_when_helo_check_is_off(mail):
    """The ylmf-pc pattern against a Postfix without the HELO check (what a
    bot that changes its HELO meets): 60 bots from 60 /24s, every AUTH
    released at once. Postfix sends Dovecot no session, yet each attempt
    holds its places (authbrake-policy names it by protocol, login, address
    and pwhash): at most account_lock_failures guesses reach the passdb,
    the others get authbrake's message in a 535, and the user still
    submits from home."""
    dc, pf = mail(postfix_settings={"authbrake_helo_restrictions": ""})
    limit = DEFAULTS["account_lock_failures"]
    assert harness.smtp_auth(pf.port, ALICE, USERS[ALICE], "127.116.250.1")[0].code == 235
    mark = dc.log_mark()
    replies = ylmf_pc_botnet(pf.port, 116, ALICE)
    settle_log(dc)
    checks = passdb_checks(dc, ALICE, since=mark)
    refused = [r for r in replies if MSG_ACCOUNT in r.text]
    print(f"ylmf-pc botnet, {N_BOTS} AUTHs at once: {checks} password checks, "
          f"{len(refused)} refused by authbrake")
    assert checks <= limit, checks
    assert all(r.code == 535 for r in replies), replies
    assert len(refused) == N_BOTS - checks, replies
    # from home (a familiar subnet) the user still gets in and sends
    with pf.smtp(src="127.116.250.2") as c:
        assert c.auth("LOGIN", ALICE, USERS[ALICE])[0].code == 235
        assert [r.code for r in c.send("alice@authbrake.test", "bob@example.org",
                                       "Subject: x\r\n\r\nx\r\n")] == [250] * 3


# ------------------------------------------------- per-protocol networks

def test_restrict_networks_per_protocol(mail):
    """restrict_networks.smtp = the office: SMTP AUTH from elsewhere is
    refused before any password check, while IMAP and POP3 from the same
    address pass; the office submits. `authbrake config` and `status`
    show the protocol's own list."""
    office, elsewhere = "127.118.1.0/24", "127.118.2.1"
    dc, pf = mail(**{"restrict_networks.smtp": office})
    mark = dc.log_mark()
    reply, _ = harness.smtp_auth(pf.port, ALICE, USERS[ALICE], elsewhere)
    show("reject, outside restrict_networks.smtp", reply)
    assert reply == (535, "5.7.8 Error: authentication failed: "
                     "Logins are not accepted from your network."), reply
    assert dc.imap_login(ALICE, USERS[ALICE], elsewhere)[0]
    assert dc.pop3_login(ALICE, USERS[ALICE], elsewhere)[0]
    assert harness.smtp_auth(pf.port, ALICE, USERS[ALICE], "127.118.1.7")[0].code == 235
    settle_log(dc)
    assert passdb_checks(dc, ALICE, since=mark, address=elsewhere) == 2   # IMAP, POP3
    rejects = smtp_decisions(dc, mark, elsewhere)
    assert [d["reason"] for d in rejects] == ["address outside restrict_networks"], rejects

    r = subprocess.run([str(harness.CLI_BIN), "-c", str(dc.ab_conf), "config"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
    assert r.returncode == 0, r.stdout
    assert f"restrict_networks.smtp = {office}\n" in r.stdout.decode()
    status = cli_status(dc.ab_conf, elsewhere)
    assert status["restricted_out"] is False, status
    assert status["protocols"] == {"smtp": {"trusted": False, "restricted_out": True}}


# ------------------------------------------------------------------ DNSBL

def test_dnsbl_listed_address_refused_smtp_auth(mail):
    """dnsbl_action.smtp = reject, against a real DNS server (dnsmasq): a
    listed address's AUTH gets a 535 with authbrake's message and no
    password check, the right password included; IMAP from it is only
    tarpitted; a clean address submits."""
    listed, clean = "127.119.0.2", "127.119.1.2"
    with harness.Dnsmasq(listed=[listed]) as dns:
        dc, pf = mail(dnsbl="bl.test", dnsbl_resolver=dns.resolver,
                      **{"dnsbl_action.smtp": "reject"})
        mark = dc.log_mark()
        for mech in ("PLAIN", "LOGIN"):
            reply, _ = harness.smtp_auth(pf.port, ALICE, USERS[ALICE], listed, mech)
            show(f"reject, address listed in a DNSBL (AUTH {mech})", reply)
            assert reply == (535, "5.7.8 Error: authentication failed: Your address "
                             "is listed in a DNS blocklist; logins are not accepted "
                             "from it."), reply
        assert harness.smtp_auth(pf.port, ALICE, USERS[ALICE], clean)[0].code == 235
        assert dc.imap_login(ALICE, USERS[ALICE], listed)[0]
        settle_log(dc)
        assert passdb_checks(dc, ALICE, since=mark, address=listed) == 1   # IMAP
        got = [(d["protocol"], d["decision"], d["reason"])
               for d in policy_decisions(dc, mark, listed)]
        assert got == [("smtp", "reject", "address listed in a DNSBL")] * 2 + \
            [("imap", "tarpit", "address listed in a DNSBL")], got
        assert dns.queries(dns.reversed_name(listed, "bl.test")) == 1, dns.log_text()
