"""End to end: real Courier imapd/pop3d, authdaemond with authpam, and
pam_authbrake.so in the project's own PAM stacks; then Courier and Dovecot
(authbrake-policy) sharing one memcached and one authbrake.conf.

Courier is unpacked from Debian's packages and run in a private mount
namespace (see courier.py). Courier's login processes sleep ~5 s after every
failed login before they answer, outside authdaemond's workers, so failures
are driven on parallel connections, each test from its own 127.N.0.0/16 of
sources so no test's counters touch another's.

pam_unix logs every password it checks ("authentication failure" or nothing
on success); a refusal with no pam_unix line for that login was made by
pam_authbrake's preauth, before the password was checked.

The parallel guesses test pam_authbrake's reservations: preauth takes a
place in every budget a failure would count against before the password is
checked, so of guesses made at once no more than the limit reach pam_unix.
For that to be tested at all, more guesses than the limit must be decided
before any of them is reported: authdaemond runs DAEMONS (> LIMIT) workers,
PARALLEL (> LIMIT) logins are sent at once, and the stack gets a slow
password check, a stand-in for a slow backend: pam_exec between preauth and
pam_unix waits until every guess has entered PAM, and SETTLE_S more
(SlowChecks). pam_unix's own failure delay would not do: libpam sleeps it
after the whole stack, so after authfail has reported. The tests check, from
pam_exec's time stamps and the order of the syslog lines, that every guess
was decided before the first password was checked; code without
reservations then lets all PARALLEL guesses through.
"""

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import courier
import harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: useradd, mount namespaces")

PASSWORD = harness.random_password()

# ip_max_accounts and account_lock_failures in the tests' authbrake.conf
LIMIT = 5
assert harness.TEST_DEFAULTS["ip_max_accounts"] == LIMIT
assert harness.TEST_DEFAULTS["account_lock_failures"] == LIMIT
# authdaemond's workers (each checks one password at a time) and the guesses
# sent at once: both well over LIMIT
DAEMONS = 12
PARALLEL = 12
# in the parallel tests, how long a password check waits after the last
# guess has entered PAM: its preauth takes milliseconds (half a second seen
# on a loaded machine)
SETTLE_S = 1.5


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def memcached():
    with harness.Memcached() as mc:
        yield mc


@pytest.fixture(scope="module")
def conf(memcached, tmp_path_factory):
    d = tmp_path_factory.mktemp("authbrake-courier")
    return harness.write_authbrake_conf(d, memcached)


@pytest.fixture(scope="module")
def courier_srv(tmp_path_factory):
    with courier.serving(tmp_path_factory.mktemp("courier"), DAEMONS) as srv:
        yield srv


@pytest.fixture
def brake(courier_srv, conf):
    """Courier with pam_authbrake's imap and pop3 stacks."""
    if not courier.PAM_MODULE.exists():
        pytest.fail(f"{courier.PAM_MODULE} is missing: run make")
    for service in ("imap", "pop3"):
        courier_srv.set_pam_stack(service, courier.authbrake_stack(service, conf))
    mark = courier_srv.syslog_mark()
    yield courier_srv
    for service in ("imap", "pop3"):
        courier_srv.set_pam_stack(service, courier.pam_unix_stack())
    print(courier_srv.syslog_text(mark))


@pytest.fixture
def users():
    with courier.SystemUsers() as u:
        yield u


def parallel(calls):
    """Run (function, args...) tuples at once; their results in order."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(c[0], *c[1:]) for c in calls]
        return [f.result() for f in futures]


def pam_lines(srv, mark, user=None):
    lines = srv.syslog.lines(mark)
    return [l for l in lines if user is None or user in l]


class SlowChecks:
    """The project's stack with pam_exec around preauth, for `expected`
    logins sent at once: `enter` stamps each login as it reaches PAM (before
    preauth); `check` (after preauth, before pam_unix) stamps, waits until
    all `expected` logins have entered (at most 20 s) and SETTLE_S more, and
    stamps `checked`. So every login is decided before any password is
    checked, however long the logins take to arrive."""

    def __init__(self, srv, conf, dir, expected):
        self.srv, self.conf = srv, conf
        self.log = os.path.join(dir, "stamps.log")
        self.script = os.path.join(dir, "stamp")
        with open(self.script, "w") as f:
            f.write(f"""#!/bin/sh
log={self.log}
stamp() {{ printf '%s %s %s %s\\n' "$(date +%s.%N)" "$1" "$PAM_USER" "$PAM_RHOST" >>"$log"; }}
stamp "$1"
if [ "$1" = check ]; then
    i=0
    while [ "$(grep -c ' enter ' "$log")" -lt {expected} ] && [ $i -lt 200 ]; do
        sleep 0.1; i=$((i + 1))
    done
    sleep {SETTLE_S}
    stamp checked
fi
exit 0
""")
        os.chmod(self.script, 0o755)
        open(self.log, "w").close()

    def stack(self, service):
        out, found = [], False
        for line in courier.authbrake_stack(service, self.conf).splitlines():
            if re.match(r"\s*auth\s+\S+\s+\S*pam_authbrake\.so\s.*\bpreauth\b", line):
                found = True
                out += [f"auth optional pam_exec.so quiet {self.script} enter", line,
                        f"auth optional pam_exec.so quiet {self.script} check"]
            else:
                out.append(line)
        assert found, f"no preauth line in conf.d/pam.d/{service}"
        return "\n".join(out) + "\n"

    def __enter__(self):
        for service in ("imap", "pop3"):
            self.srv.set_pam_stack(service, self.stack(service))
        return self

    def __exit__(self, *exc):
        for service in ("imap", "pop3"):
            self.srv.set_pam_stack(service, courier.authbrake_stack(service, self.conf))

    def stamps(self, what):
        """{(user, address): [times]} of the stamps `what`."""
        out = {}
        with open(self.log) as f:
            for line in f:
                t, kind, user, rhost = (line.split() + ["", "", "", ""])[:4]
                if kind == what:
                    out.setdefault((user, rhost.replace("::ffff:", "")), []).append(float(t))
        return out


def parallel_guesses(brake, conf, dir, calls, keys):
    """Run the login calls at once (keys: their (user, address)) through
    SlowChecks' stack, and check that every one of them was decided before
    the first password was checked: those let through reached pam_exec's
    `check` before the first check ended, those refused were logged before
    the first pam_unix line. Returns the results and a line on the timing."""
    mark = brake.syslog_mark()
    with SlowChecks(brake, conf, dir, len(keys)) as slow:
        t0 = time.monotonic()
        results = parallel(calls)
        seconds = time.monotonic() - t0
    enter, check, checked = (slow.stamps(w) for w in ("enter", "check", "checked"))
    assert sorted(enter) == sorted(keys) and all(len(v) == 1 for v in enter.values()), \
        f"not one enter stamp per guess: {enter}"
    assert checked, "no guess reached the password check"
    first_enter = min(v[0] for v in enter.values())
    last_enter = max(v[0] for v in enter.values())
    first_checked = min(v[0] for v in checked.values())
    last_check = max(v[0] for v in check.values())
    timing = (f"{len(keys)} guesses entered PAM within {last_enter - first_enter:.2f} s; "
              f"{len(check)} let through, the last {first_checked - last_check:.2f} s "
              f"before the first password check; {seconds:.1f} s in all")
    print(timing)
    assert last_check < first_checked, timing
    lines = brake.syslog.lines(mark)
    first_pam_unix = min((i for i, l in enumerate(lines) if "pam_unix(" in l),
                         default=len(lines))
    for user, addr in set(keys) - set(check):
        decided = [i for i, l in enumerate(lines)
                   if re.search(rf'pam_authbrake\(\w+:auth\): account="{user}" '
                                rf'address={re.escape(addr)} .*decision=reject', l)]
        assert decided and decided[0] < first_pam_unix, \
            f"{user} from {addr}: not refused before the first password check " \
            f"({timing})\n" + "\n".join(lines)
    return results, timing


def checked_by_pam_unix(srv, mark, user, addr):
    """Did pam_unix check a password for user from addr after mark?"""
    return any("pam_unix" in l and f"user={user}" in l and f"rhost=::ffff:{addr}" in l
               for l in srv.syslog.lines(mark))


# ------------------------------------------------------------------ Courier alone

def test_plain_pam_unix_login(courier_srv, users):
    """The harness itself: Courier with a pam_unix-only stack."""
    for service in ("imap", "pop3"):
        courier_srv.set_pam_stack(service, courier.pam_unix_stack())
    user = users.add(PASSWORD)
    (ok_i, msg_i, _), (ok_p, msg_p, _), (bad, msg_b, _) = parallel([
        (courier_srv.imap_login, user, PASSWORD, "127.40.0.1"),
        (courier_srv.pop3_login, user, PASSWORD, "127.40.0.2"),
        (courier_srv.imap_login, user, "not-" + PASSWORD, "127.40.0.3"),
    ])
    assert ok_i, msg_i
    assert ok_p, msg_p
    assert not bad and "Login failed" in msg_b, msg_b
    assert re.search(rf"LOGIN, user={user}, ip=\[::ffff:127\.40\.0\.1\]",
                     courier_srv.log_text())


def test_right_password_passes_brake(brake, users, memcached):
    user = users.add(PASSWORD)
    keys_before = set(memcached.dump_keys())
    mark = brake.syslog_mark()
    (ok_i, msg_i, _), (ok_p, msg_p, _), (bad, msg_b, _) = parallel([
        (brake.imap_login, user, PASSWORD, "127.41.0.1"),
        (brake.pop3_login, user, PASSWORD, "127.41.0.2"),
        (brake.pop3_login, user, "wrong-" + PASSWORD, "127.41.0.3"),
    ])
    assert ok_i, msg_i + brake.syslog_text(mark)
    assert ok_p, msg_p + brake.syslog_text(mark)
    assert not bad, msg_b
    # the wrong password did reach pam_unix: the brake let it through
    assert checked_by_pam_unix(brake, mark, user, "127.41.0.3"), brake.syslog_text(mark)
    # the module recorded the outcomes, under keyed hashes only
    new_keys = set(memcached.dump_keys()) - keys_before
    assert new_keys, "pam_authbrake stored nothing"
    for key in new_keys:
        for clear in (user, "127.41.0", PASSWORD):
            assert clear not in key, key


def test_dictionary_run_blocks_address(brake, users, conf, tmp_path):
    """One address tries one common password on many accounts over POP3, all
    at once: at most ip_max_accounts of them reach pam_unix, the rest are
    refused by preauth; then the address is blocked and the right password is
    refused on IMAP and POP3 before pam_unix sees it. (authpam looks the user
    up before it starts PAM, so only accounts that exist reach pam_authbrake:
    the run uses real ones.)"""
    user = users.add(PASSWORD)
    victims = [users.add(PASSWORD) for _ in range(PARALLEL)]
    attacker = "127.42.0.66"
    attack_mark = brake.syslog_mark()
    results, timing = parallel_guesses(
        brake, conf, tmp_path, [(brake.pop3_login, v, "123456", attacker) for v in victims],
        [(v, attacker) for v in victims])
    assert not any(ok for ok, _, _ in results), results
    text = brake.syslog_text(attack_mark)
    checked = [v for v in victims if checked_by_pam_unix(brake, attack_mark, v, attacker)]
    refused = [v for v in victims
               if re.search(rf'pam_authbrake\(pop3:auth\): account="{v}" address=127\.42\.0\.66 '
                            r'.*decision=reject.*reason="address blocked"', text)]
    print(f"dictionary run: {len(checked)} of {PARALLEL} names reached pam_unix, "
          f"{len(refused)} refused by preauth")
    assert 1 <= len(checked) <= LIMIT, \
        f"{len(checked)} of {PARALLEL} names reached pam_unix ({timing})\n{text}"
    assert sorted(checked + refused) == sorted(victims), text
    # the block reaches syslog from authdaemond's PAM, in the words the
    # shipped fail2ban filter reads (test_fail2ban.py)
    assert brake.syslog.wait(r"^authdaemond(?:\[\d+\])?: pam_authbrake\(pop3:auth\): "
                             r"address 127\.42\.0\.66 blocked for \w+: \d+ failures, "
                             rf"{LIMIT} accounts tried$", since=attack_mark), \
        brake.syslog_text(attack_mark)

    mark = brake.syslog_mark()
    (ok_i, msg_i, _), (ok_p, msg_p, _), (ok_o, msg_o, _) = parallel([
        (brake.imap_login, user, PASSWORD, attacker),
        (brake.pop3_login, user, PASSWORD, attacker),
        (brake.imap_login, user, PASSWORD, "127.42.1.5"),   # another /24: untouched
    ])
    assert not ok_i, msg_i
    assert not ok_p, msg_p
    assert ok_o, msg_o + brake.syslog_text(mark)
    text = brake.syslog_text(mark)
    rejects = re.findall(rf'pam_authbrake\((imap|pop3):auth\).*account="{user}" '
                         rf'address=127\.42\.0\.66 .*decision=reject.*reason="address blocked"',
                         text)
    assert sorted(rejects) == ["imap", "pop3"], text
    assert not checked_by_pam_unix(brake, mark, user, attacker), text


def test_locked_account_refused_from_new_address_allowed_from_familiar(brake, users, conf,
                                                                      tmp_path):
    user = users.add(PASSWORD)
    home = "127.43.1.10"
    ok, msg, _ = brake.imap_login(user, PASSWORD, home)   # home /24 becomes familiar
    assert ok, msg

    # a botnet rotating addresses (one /24 each), each guess a new password,
    # all at once: at most account_lock_failures of them reach pam_unix, the
    # rest are refused by preauth
    mark = brake.syslog_mark()
    bots = [f"127.43.{20 + k}.9" for k in range(PARALLEL)]
    results, timing = parallel_guesses(
        brake, conf, tmp_path,
        [(brake.imap_login, user, f"guess-{k}", addr) for k, addr in enumerate(bots)],
        [(user, addr) for addr in bots])
    assert not any(ok for ok, _, _ in results), results
    text = brake.syslog_text(mark)
    checked = [a for a in bots if checked_by_pam_unix(brake, mark, user, a)]
    refused = [a for a in bots
               if re.search(rf'pam_authbrake\(imap:auth\): account="{user}" '
                            rf'address={re.escape(a)} .*decision=reject'
                            r'.*reason="account locked for unfamiliar origins"', text)]
    print(f"botnet: {len(checked)} of {PARALLEL} guesses reached pam_unix, "
          f"{len(refused)} refused by preauth")
    assert 1 <= len(checked) <= LIMIT, \
        f"{len(checked)} of {PARALLEL} parallel guesses reached pam_unix ({timing})\n{text}"
    assert sorted(checked + refused) == sorted(bots), text
    assert brake.syslog.wait(rf'pam_authbrake\(imap:auth\): account "{user}" locked for '
                             rf'unfamiliar origins for \w+: {LIMIT} failures$', since=mark), \
        brake.syslog_text(mark)

    mark = brake.syslog_mark()
    (ok_new, msg_new, _), (ok_new3, msg_new3, _), (ok_home, msg_home, _) = parallel([
        (brake.imap_login, user, PASSWORD, "127.43.99.1"),
        (brake.pop3_login, user, PASSWORD, "127.43.98.1"),
        (brake.pop3_login, user, PASSWORD, "127.43.1.77"),   # same /24 as home
    ])
    text = brake.syslog_text(mark)
    assert not ok_new, msg_new
    assert not ok_new3, msg_new3
    assert ok_home, msg_home + text
    assert len(re.findall(rf'account="{user}" address=127\.43\.9[89]\.1 .*decision=reject'
                          rf'.*reason="account locked for unfamiliar origins"', text)) == 2, text
    assert not checked_by_pam_unix(brake, mark, user, "127.43.99.1"), text


# ------------------------------------------------------------------ with Dovecot

@pytest.fixture(scope="module")
def dovecot(conf):
    if not harness.POLICY_BIN.exists():
        pytest.fail(f"{harness.POLICY_BIN} is missing: run make")
    # its own 0755 dir: Dovecot's auth process (user dovecot) reads the users file
    with harness.Dovecot(policy_conf=conf) as dc:
        yield dc


def test_courier_pop3_failures_block_address_on_dovecot_imap(brake, dovecot, users):
    attacker = "127.44.0.66"
    user, password = next(iter(harness.DEFAULT_USERS.items()))
    ok, msg, _ = dovecot.imap_login(user, password, "127.44.1.1")
    assert ok, msg           # Dovecot and its policy service work

    victims = [users.add(PASSWORD) for _ in range(5)]
    results = parallel([(brake.pop3_login, v, "password1", attacker) for v in victims])
    assert not any(ok for ok, _, _ in results), results

    mark = dovecot.log_mark()
    ok, msg, seconds = dovecot.imap_login(user, password, attacker)
    assert not ok, msg
    assert dovecot.wait_log(r'address=127\.44\.0\.66 .*decision=reject.*reason="address blocked"',
                            mark), dovecot.log_since(mark)


def test_account_locked_through_dovecot_is_locked_on_courier(brake, dovecot, users):
    user = users.add(PASSWORD)
    dovecot.add_user(user, PASSWORD)
    home = "127.45.1.10"
    ok, out, _ = dovecot.auth_test(user, PASSWORD, home)
    assert ok, out           # the home /24 becomes familiar, through Dovecot

    for k in range(5):
        ok, out, _ = dovecot.auth_test(user, f"guess-{k}", f"127.45.{20 + k}.9")
        assert not ok, out
    ok, out, _ = dovecot.auth_test(user, PASSWORD, "127.45.99.2")
    assert not ok, out       # locked on Dovecot itself

    mark = brake.syslog_mark()
    (ok_new, msg_new, _), (ok_home, msg_home, _) = parallel([
        (brake.imap_login, user, PASSWORD, "127.45.99.1"),
        (brake.pop3_login, user, PASSWORD, "127.45.1.77"),
    ])
    text = brake.syslog_text(mark)
    assert not ok_new, msg_new
    assert ok_home, msg_home + text
    assert re.search(rf'account="{user}" address=127\.45\.99\.1 .*decision=reject'
                     rf'.*reason="account locked for unfamiliar origins"', text), text
    assert not checked_by_pam_unix(brake, mark, user, "127.45.99.1"), text
