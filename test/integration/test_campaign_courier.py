"""Campaign mode (password-spray detection, issue 23) through real Courier:
authdaemond with authpam, imapd and pop3d, pam_authbrake in the project's
PAM stacks (courier.py starts them; test_courier_pam.py tells how).

A spray is one common wrong password tried on many accounts, each guess
from an address of its own, so no address and no account ever reaches its
own threshold (account_lock_failures 5 here, ip_max_accounts 5). The
attacker sends it in WAVES, each wave a guess at every one of ACCOUNTS
accounts, all at once (Courier answers a failure only after ~5 s), each
guess from a /24 of its own. pam_authbrake has the password at authfail:
once one wrong password has been tried on more than
campaign_password_accounts accounts, campaign mode turns on, and from then
on an account with campaign_lock_failures (1) failures from unfamiliar
origins in account_window is refused from any unfamiliar origin before its
password is checked. So every sprayed account gets at most one password
check in account_window (10 min here; the test takes about a minute) where
without campaign mode each wave would get one: WAVES checks each.

Password checks are counted as in test_courier_pam.py: pam_unix logs every
password it turns down ("authentication failure; ... rhost=... user=...");
a login refused by pam_authbrake's preauth has no such line.

The rate detector (failures from unfamiliar origins per campaign_interval
over max(campaign_floor, campaign_factor x baseline)) is tested too, with a
spray of different wrong passwords (no fingerprint in common) and a small
campaign_floor. It arms only once it has learned an hour of the day (1/24
of campaign_day): that test makes an hour one 10 s bucket and lets it learn
a quiet one first. The detector looks at the rate when an allow reads it,
so the real users also log in from home while the first wave's failures
are coming in.

Those two keep campaign_cooldown at its production 1h: the spray takes
seconds. A real spray lasts days, far longer than campaign_cooldown, so the last
test runs it in SCALED time (SCALED: 1 s stands for 10 minutes; the
campaign and account windows scaled by as much) with LONG_WAVES waves,
about an hour apart in scaled time: campaign mode must hold the sprayed
accounts to campaign_lock_failures checks per account_window however long
the spray goes on.
"""

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import courier
import harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: useradd, mount namespaces")

PASSWORD = harness.random_password()
SPRAY_PASSWORDS = ("Summer2024!", "Welcome1", "Password1")   # one per wave

# campaign_password_accounts in this test's authbrake.conf, and the
# accounts sprayed: more than twice as many
PASSWORD_ACCOUNTS = 5
ACCOUNTS = 12
WAVES = 3
LONG_WAVES = 4
# the last test's windows: production's, 1 s for 10 minutes
SCALED = {"campaign_interval": "1s", "campaign_cooldown": "9s", "campaign_day": "144s",
          "account_window": "72s", "campaign_floor": 30}
# the first HOMES sprayed accounts are real users with a familiar /24
HOMES = 3
# account_lock_failures in the tests' conf: without campaign mode, each
# wave's guess at an account would reach pam_unix
assert harness.TEST_DEFAULTS["account_lock_failures"] == 5 > WAVES
CAMPAIGN_LOCK_FAILURES = 1     # the default
CAMPAIGN_REASON = "account over campaign_lock_failures during a password-spray campaign"
# authdaemond workers: one wave's guesses are checked side by side
DAEMONS = ACCOUNTS + 4

ON_FINGERPRINT_RE = (r"pam_authbrake\((?:imap|pop3):auth\): campaign mode on: one wrong "
                     r"password tried on (?P<accounts>\d+) accounts in the last (?P<span>\S+) "
                     rf"\(campaign_password_accounts {PASSWORD_ACCOUNTS}\)$")
ON_RATE_RE = (r"pam_authbrake\((?:imap|pop3):auth\): campaign mode on: (?P<failures>\d+) "
              r"failures from unfamiliar origins in the last (?P<span>\S+), threshold "
              r"(?P<threshold>\d+) \(baseline (?P<baseline>[^()]*), floor \d+\)$")
PAM_UNIX_FAIL_RE = re.compile(r"pam_unix\(\w+:auth\): authentication failure;.*"
                              r"rhost=::ffff:(?P<addr>[0-9.]+)\s+user=(?P<user>\S+)")


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def courier_srv(tmp_path_factory):
    with courier.serving(tmp_path_factory.mktemp("courier-campaign"), DAEMONS) as srv:
        yield srv


@pytest.fixture(scope="module")
def accounts():
    """ACCOUNTS real Unix users (one PASSWORD), shared by the tests: each
    test has a memcached of its own, so none inherits another's state."""
    with courier.SystemUsers() as u:
        yield [u.add(PASSWORD) for _ in range(ACCOUNTS)]


@pytest.fixture(scope="module")
def bystander():
    """A user the spray never touches."""
    with courier.SystemUsers() as u:
        yield u.add(PASSWORD)


@pytest.fixture
def memcached():
    with harness.Memcached() as mc:
        yield mc


def brake(srv, conf):
    """Point Courier's imap and pop3 stacks at pam_authbrake with conf."""
    if not courier.PAM_MODULE.exists():
        pytest.fail(f"{courier.PAM_MODULE} is missing: run make")
    for service in ("imap", "pop3"):
        srv.set_pam_stack(service, courier.authbrake_stack(service, conf))


@pytest.fixture
def unbrake(courier_srv):
    yield
    for service in ("imap", "pop3"):
        courier_srv.set_pam_stack(service, courier.pam_unix_stack())


# ------------------------------------------------------------------ helpers

def parallel(calls):
    """Run (function, args...) tuples at once; their results in order."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(c[0], *c[1:]) for c in calls]
        return [f.result() for f in futures]


def campaign(conf, *args):
    """`authbrake -c CONF --json campaign [ARGS]` as a dict."""
    r = subprocess.run([str(harness.CLI_BIN), "-c", str(conf), "--json", "campaign", *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=20)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    state = json.loads(r.stdout)
    assert state.get("type") == "campaign", r.stdout
    return state


def home(i):
    """Real user i's familiar network."""
    return f"127.70.{i + 1}.10"


def spray_addr(wave, k, net):
    """Wave `wave`'s guess at account k: a /24 of its own in 127.NET/16."""
    return f"127.{net}.{wave * 64 + k + 1}.9"


def login(srv, k):
    """IMAP and POP3 in turn."""
    return srv.imap_login if k % 2 == 0 else srv.pop3_login


def later(delay, fn, *args):
    time.sleep(delay)
    return fn(*args)


def arm(srv, conf, accounts):
    """Let the rate detector learn one bucket (a quiet one), so that it is
    armed: on a fresh memcached nothing is learned, and no rate turns
    campaign mode on until an hour of the day (1/24 of campaign_day) has
    been learned. A bucket is learned by the first allow after it: one
    login from home in the next bucket."""
    interval = campaign(conf)["interval_s"]
    time.sleep(interval - time.time() % interval + 0.2)
    ok, msg, _ = login(srv, 1)(accounts[0], PASSWORD, home(0))
    assert ok, msg
    deadline = time.monotonic() + 5
    while not (state := campaign(conf))["armed"]:
        assert time.monotonic() < deadline, f"the rate detector never armed: {state}"
        time.sleep(0.2)
    return state


def checks_by_account(lines, addrs):
    """{user: password checks pam_unix turned down from these addresses}."""
    out = {}
    for line in lines:
        m = PAM_UNIX_FAIL_RE.search(line)
        if m and m["addr"] in addrs:
            out[m["user"]] = out.get(m["user"], 0) + 1
    return out


def familiarise(srv, accounts):
    """The real users log in from home: their /24 becomes familiar."""
    results = parallel([(login(srv, i), accounts[i], PASSWORD, home(i))
                        for i in range(HOMES)])
    for i, (ok, msg, _) in enumerate(results):
        assert ok, f"{accounts[i]} from home: {msg}\n{srv.syslog_text()[-3000:]}"


def spray(srv, accounts, wave, net, passwords, legit=()):
    """One wave: every account guessed at once, each from its own /24
    (passwords[k] at account k), beside the legit logins (calls). Returns
    (guess results, legit results, {address: account})."""
    addrs = {spray_addr(wave, k, net): a for k, a in enumerate(accounts)}
    calls = [(login(srv, k), a, passwords[k], spray_addr(wave, k, net))
             for k, a in enumerate(accounts)]
    results = parallel(calls + list(legit))
    return results[:len(calls)], results[len(calls):], addrs


def campaign_conf(memcached, tmp_path, **over):
    return harness.write_authbrake_conf(tmp_path / "conf", memcached, **over)


def run_spray(srv, conf, accounts, bystander, net, passwords_of_wave, on_re,
              waves_n=WAVES, armed=False):
    """The spray of waves_n waves, and the real users beside it. Once
    campaign mode is on, two more logins go with the next wave: the
    bystander (right password, a new /24) and accounts[0] with its right
    password from a new /24. In the first wave, the real users also log in
    from home 3 and 5 s after it began, when its failures are in: the rate
    detector looks at the rate at allows. With armed, the rate detector is
    armed first (arm()). Returns what the test checks: (the 'campaign
    mode on' match, the syslog lines since the start, every spray address
    -> account, the spray addresses of each wave, the real users' results
    at home, the bystander's result, accounts[0]'s from afar)."""
    start = srv.syslog_mark()
    state = campaign(conf)
    assert state["on"] is False and state["mode"] == "auto", state
    familiarise(srv, accounts)
    if armed:
        print(f"`authbrake campaign` before the spray: {arm(srv, conf, accounts)}")

    addrs, waves, on_after, legit, by, afar = {}, [], None, [], None, None
    t0 = time.monotonic()
    for wave in range(waves_n):
        # the real users log in from home (another address in the same
        # /24) while the wave is under way
        beside = [(login(srv, i + 1), accounts[i], PASSWORD, home(i)[:-2] + "77")
                  for i in range(HOMES)] if wave else \
            [(later, 3.0 + 2.0 * (i % 2), login(srv, i), accounts[i], PASSWORD,
              home(i)[:-2] + "78") for i in range(HOMES)]
        extra = []
        if on_after is not None and by is None:
            extra = [(login(srv, 0), bystander, PASSWORD, f"127.{net}.250.5"),
                     (srv.imap_login, accounts[0], PASSWORD, f"127.{net}.251.5")]
        results, res_beside, wave_addrs = spray(srv, accounts, wave, net,
                                                passwords_of_wave(wave), beside + extra)
        legit += res_beside[:len(beside)]
        if extra:
            by, afar = res_beside[len(beside):]
        addrs.update(wave_addrs)
        waves.append(set(wave_addrs))
        assert not any(ok for ok, _, _ in results), results
        seen = on_after is None and srv.syslog.wait(on_re, since=start, timeout=1.0)
        state = campaign(conf)
        if seen:
            on_after = wave
            assert state["on"] is True and state["mode"] == "auto", state
            assert state["since"] > 0, state
        print(f"`authbrake campaign` after wave {wave + 1}: {state}")
        print(f"wave {wave + 1}: {len(accounts)} guesses answered "
              f"{time.monotonic() - t0:.1f} s after the first wave began; campaign "
              f"mode {'on' if state['on'] else 'off'} after it")
    assert by is not None, ("campaign mode was not on before the last wave\n"
                            + srv.syslog_text(start))
    match = srv.syslog.wait(on_re, since=start, timeout=0.1)
    return match, srv.syslog.lines(start), addrs, waves, legit, by, afar


def check_spray(srv, accounts, lines, addrs, waves, legit, by, afar, net):
    text = "\n".join(lines)
    ons = [i for i, l in enumerate(lines) if "campaign mode on" in l]
    for l in lines:
        if "campaign mode o" in l:
            print(l)
    checks = checks_by_account(lines, addrs)
    total = sum(checks.values())
    print(f"password checks per sprayed account from unfamiliar origins over "
          f"{len(waves)} waves: {sorted(checks.values())} ({total} in all, "
          f"{len(addrs)} guesses)")
    over = {a: n for a, n in checks.items() if n > CAMPAIGN_LOCK_FAILURES}
    assert not over, (f"accounts checked more than campaign_lock_failures "
                      f"({CAMPAIGN_LOCK_FAILURES}) times in account_window: {over}\n{text}")
    assert total > PASSWORD_ACCOUNTS, text   # what turned campaign mode on

    assert len(ons) == 1, "not exactly one 'campaign mode on' line\n" + text
    assert not [l for l in lines if "campaign mode off" in l], text
    # on once the first wave's failures are in: at the latest when the
    # next attempt is decided (the rate detector looks at allows)
    later = [i for i, l in enumerate(lines)
             if any(f"address={a} " in l or f"rhost=::ffff:{a} " in l
                    for w in waves[1:] for a in w)]
    assert later and ons[0] < min(later), \
        "campaign mode was not on for the guesses after the first wave\n" + text

    # every guess that did not reach pam_unix was refused by preauth, for
    # the campaign
    refused_for_campaign = 0
    for addr, account in addrs.items():
        checked = any(PAM_UNIX_FAIL_RE.search(l) and f"rhost=::ffff:{addr} " in l
                      for l in lines)
        refused = [l for l in lines
                   if re.search(rf'pam_authbrake\(\w+:auth\): account="{account}" '
                                rf'address={re.escape(addr)} .*decision=reject', l)]
        assert checked or refused, f"{account} from {addr}: neither checked nor refused\n{text}"
        if refused:
            assert f'reason="{CAMPAIGN_REASON}"' in refused[0], refused[0]
            refused_for_campaign += 1
    print(f"{refused_for_campaign} guesses refused by preauth: {CAMPAIGN_REASON}")

    refused_legit = [(ok, msg) for ok, msg, _ in legit if not ok]
    print(f"real users at home during the spray: {len(legit)} logins, "
          f"{len(refused_legit)} refused")
    assert legit and not refused_legit, f"{refused_legit}\n{text}"

    ok, msg, seconds = by
    print(f"a user the spray never touched, from a new /24 during the campaign: "
          f"{'ok' if ok else 'REFUSED'} in {seconds:.1f} s")
    assert ok, msg + "\n" + text

    # the cost of campaign mode: a sprayed account with its right password
    # from an unfamiliar /24 is refused before the check while it is on
    ok, msg, _ = afar
    addr = re.escape(f"127.{net}.251.5")
    assert not ok, msg
    assert re.search(rf'account="{accounts[0]}" address={addr} .*decision=reject'
                     rf'.*reason="{CAMPAIGN_REASON}"', text), text
    assert not re.search(rf"pam_unix.*rhost=::ffff:{addr}\s", text), text


# ------------------------------------------------------------------ tests

def test_spray_of_one_password_turns_campaign_mode_on(courier_srv, accounts, bystander,
                                                      memcached, tmp_path, unbrake):
    """One common wrong password per wave over ACCOUNTS accounts: the PAM
    fingerprint turns campaign mode on after the first wave. The rate
    detector is kept out of it (campaign_floor far above the spray)."""
    net = 71                     # its guesses come from 127.71.0.0/16
    conf = campaign_conf(memcached, tmp_path,
                         campaign_password_accounts=PASSWORD_ACCOUNTS,
                         campaign_floor=1000)
    brake(courier_srv, conf)
    t0 = time.monotonic()
    match, lines, addrs, waves, legit, by, afar = run_spray(
        courier_srv, conf, accounts, bystander, net,
        lambda wave: [SPRAY_PASSWORDS[wave]] * len(accounts), ON_FINGERPRINT_RE)
    print(f"spray of {WAVES} x {len(accounts)} guesses in {time.monotonic() - t0:.1f} s")
    text = "\n".join(lines)
    assert match, "no 'campaign mode on: one wrong password' line\n" + text
    print(match.group(0))
    assert int(match["accounts"]) > PASSWORD_ACCOUNTS, match.group(0)
    check_spray(courier_srv, accounts, lines, addrs, waves, legit, by, afar, net)


def test_spray_of_many_passwords_turns_campaign_mode_on_by_rate(
        courier_srv, accounts, bystander, memcached, tmp_path, unbrake):
    """A different wrong password at every guess (no fingerprint in
    common; the fingerprint detector off): the failures from unfamiliar
    origins of the first wave reach campaign_floor. The detector arms once
    it has learned an hour of the day: campaign_interval 10s and
    campaign_day 240s make an hour one bucket (10 s), learned quiet
    before the spray."""
    floor = PASSWORD_ACCOUNTS + 1
    net = 72                     # its guesses come from 127.72.0.0/16
    conf = campaign_conf(memcached, tmp_path, campaign_password_accounts=0,
                         campaign_floor=floor, campaign_interval="10s",
                         campaign_day="240s")
    brake(courier_srv, conf)
    match, lines, addrs, waves, legit, by, afar = run_spray(
        courier_srv, conf, accounts, bystander, net,
        lambda wave: [f"guess-{wave}-{k}-{PASSWORD[-6:]}" for k in range(len(accounts))],
        ON_RATE_RE, armed=True)
    text = "\n".join(lines)
    assert match, "no 'campaign mode on: N failures from unfamiliar origins' line\n" + text
    print(match.group(0))
    assert int(match["failures"]) >= floor and int(match["threshold"]) == floor, match.group(0)
    check_spray(courier_srv, accounts, lines, addrs, waves, legit, by, afar, net)


def test_spray_longer_than_campaign_cooldown_in_scaled_time(
        courier_srv, accounts, bystander, memcached, tmp_path, unbrake):
    """The spray of the first test in SCALED time (1 s = 10 min), LONG_WAVES
    waves about 5.5 s (55 scaled minutes) apart, so that it goes on for
    longer than campaign_cooldown (9 s: 1.5 h) after campaign mode turned
    on: what it refuses keeps it on. (A spray that pauses for longer than
    campaign_cooldown between its waves is caught anew by each wave's
    password: campaign_cooldown is set above the pauses to expect.)
    Campaign mode's production floor (30 per interval) is far above 12
    failures: the fingerprint turns it on."""
    net = 73                     # its guesses come from 127.73.0.0/16
    conf = campaign_conf(memcached, tmp_path,
                         campaign_password_accounts=PASSWORD_ACCOUNTS, **SCALED)
    brake(courier_srv, conf)
    t0 = time.monotonic()
    match, lines, addrs, waves, legit, by, afar = run_spray(
        courier_srv, conf, accounts, bystander, net,
        lambda wave: [SPRAY_PASSWORDS[wave % len(SPRAY_PASSWORDS)]] * len(accounts),
        ON_FINGERPRINT_RE, waves_n=LONG_WAVES)
    print(f"spray of {LONG_WAVES} x {len(accounts)} guesses in "
          f"{time.monotonic() - t0:.1f} s ({SCALED})")
    text = "\n".join(lines)
    assert match, "no 'campaign mode on: one wrong password' line\n" + text
    check_spray(courier_srv, accounts, lines, addrs, waves, legit, by, afar, net)
