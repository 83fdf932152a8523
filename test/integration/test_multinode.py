"""Several auth nodes on one pool of two memcached servers, and memcached
faults (issue 6).

Every test builds its own cluster: two memcached (one pool, rendezvous hashing), one
authbrake.conf (same secret, api key and settings for every node), two
Dovecot instances each with its own authbrake-policy processes, and the
module's Courier (pam_authbrake in the shipped imap/pop3 stacks, pointed at
that same conf). Faults are real: SIGKILL, SIGSTOP and restarts of the
memcached processes, SIGKILL of authbrake-policy under Dovecot's master.

Decisions are driven mostly with `doveadm auth test` (fast); a few go through
real IMAP/POP3 logins, on Dovecot and on Courier (whose failed logins sleep
~5 s, so they run on threads). Where many decisions are needed in a short
window (does a block hold at every moment of an outage?) the tests also POST
to the policy service exactly as Dovecot's auth process does.

For each fault the longest login delay measured and the time until normal
service resumed are printed and appended to build/multinode-figures.txt.
Each test uses its own 127.T.x.y range.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import courier
import harness

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: Courier runs in a mount namespace")

CLI = harness.BUILD_DIR / "authbrake"
FIGURES = harness.BUILD_DIR / "multinode-figures.txt"
USERS = harness.DEFAULT_USERS
ALICE = "alice"
BOB = "bob"
PASSWORD = harness.random_password()

# Pool settings under test: short so a test sees ejection, breaker and
# recovery within seconds. poll_timeout bounds each store call.
POOL_SETTINGS = dict(poll_timeout="50ms", connect_timeout="50ms",
                     dead_timeout="2s", breaker_cooldown="2s",
                     breaker_failures=3, server_failure_limit=2)

# Generous upper bounds (the issue asks for bounded logins, not speed).
LEGIT_BOUND = 1.0      # right password, memcached killed or all down
HUNG_BOUND = 2.0       # any decision while a memcached is SIGSTOPped
ATTACK_BOUND = 4.0     # a failure: Dovecot's 0.5 s tick + tarpit (tarpit_max 2 s)
COURIER_BOUND = 2.0    # a successful Courier login (fresh PAM process each time)

STORE_LINE = re.compile(r"authbrake-policy: (?:Error|Warning): .*memcached.*")


# ------------------------------------------------------------------ helpers

def figure(line):
    """Print a measured figure and keep it for the closing note."""
    print("\nFIGURE " + line)
    with open(FIGURES, "a") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")


def cli(conf, *args, tries=5):
    """Run build/authbrake; a store timeout (exit 3: a loaded machine can
    miss the 50 ms poll_timeout of a healthy server) is retried."""
    for _ in range(tries):
        r = subprocess.run([str(CLI), "-c", str(conf), *args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        if r.returncode != 3:
            break
        time.sleep(0.2)
    return r


def parallel(calls):
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(c[0], *c[1:]) for c in calls]
        return [f.result() for f in futures]


# The account of policy probes (allow without a report). A probe let
# through holds its places until their TTL, as a login that never reports
# would: with alice's name, a few probes let in while a returned server
# is not yet used by every node locked alice for unfamiliar origins, and
# her next login from a new network was refused (1 run in 5 of
# test_one_memcached_killed_mid_attack).
PROBE = "prober"


def allow(dc, addr, login=PROBE):
    """POST /?command=allow as Dovecot's auth process does: (reply, seconds)."""
    body = {"login": login, "remote": addr, "real_rip": addr, "protocol": "imap",
            "pwhash": "0a1", "session_id": f"mn{time.monotonic_ns()}",
            "device_id": ""}
    t0 = time.monotonic()
    status, text = dc.policy_post("allow", body, timeout=10)
    seconds = time.monotonic() - t0
    assert status == 200, (status, text)
    return json.loads(text), seconds


def ib_keys(mc):
    """The address records a server holds (a block lives in its address's
    record)."""
    return {k for k in mc.dump_keys() if "%3Ara%3A" in k or ":ra:" in k}


def block_on_both(conf, servers, addrs):
    """Block each address with `authbrake block`, and check that its
    record went to both servers (records are kept on two: issue 20)."""
    for addr in addrs:
        before = [ib_keys(mc) for mc in servers]
        r = cli(conf, "block", addr, "--for", "10m")
        assert r.returncode == 0, r.stderr
        gained = [i for i, mc in enumerate(servers) if ib_keys(mc) - before[i]]
        assert gained == list(range(len(servers))), (addr, gained)
    return list(addrs)


class Load:
    """Background login traffic during a fault: threads calling fn(i) in a
    loop and recording (start, seconds, result) until stopped."""

    def __init__(self):
        self.stop_event = threading.Event()
        self.threads = []
        self.records = {}
        self.errors = []
        self.lock = threading.Lock()

    def add(self, name, fn, pause=0.0):
        self.records[name] = []

        def loop():
            i = 0
            while not self.stop_event.is_set():
                t0 = time.monotonic()
                try:
                    result = fn(i)
                except Exception as e:      # recorded, the test fails on it
                    with self.lock:
                        self.errors.append(f"{name}#{i}: {e!r}")
                    result = None
                seconds = time.monotonic() - t0
                with self.lock:
                    self.records[name].append((t0, seconds, result))
                i += 1
                if pause:
                    self.stop_event.wait(pause)

        t = threading.Thread(target=loop, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(120)

    def between(self, name, t_from, t_to=None):
        return [r for r in self.records[name]
                if r[0] >= t_from and (t_to is None or r[0] <= t_to)]

    def longest(self, name, t_from=0, t_to=None):
        rs = self.between(name, t_from, t_to)
        return max((r[1] for r in rs), default=0.0)


def legit_login(nodes, prefix):
    """fn(i): alice's right password from a fresh address, nodes in turn."""
    def fn(i):
        dc = nodes[i % len(nodes)]
        ok, out, secs = dc.auth_test(ALICE, USERS[ALICE],
                                     f"{prefix}.{i // 200}.{i % 200 + 1}")
        return (ok, out)
    return fn


def attack(nodes, prefix):
    """fn(i): a dictionary run: each address tries 6 names, then the next
    address (its own /24) takes over."""
    def fn(i):
        dc = nodes[i % len(nodes)]
        addr = f"{prefix}.{(i // 6) % 250}.{(i // 1500) + 1}"
        ok, out, secs = dc.auth_test(f"guess{i % 6}x{i // 6}", f"pw{i}", addr)
        return (ok, out)
    return fn


def wait_until(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def fatal_lines(dc):
    return re.findall(r".*(?:Panic|Fatal|killed with signal|core dumped).*", dc.log_text())


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module", autouse=True)
def figures_file():
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with open(FIGURES, "w") as f:
        f.write("# authbrake multi-node fault figures (test/integration/test_multinode.py)\n")
    yield


@pytest.fixture(scope="module")
def sysusers():
    with courier.SystemUsers() as u:
        yield u


@pytest.fixture(scope="module")
def courier_srv():
    if not courier.PAM_MODULE.exists():
        pytest.fail(f"{courier.PAM_MODULE} is missing: run make")
    # not under pytest's basetemp: a concurrent pytest session prunes those
    srv = courier.Courier(daemons=5)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.dir, ignore_errors=True)


class Cluster:
    pass


@pytest.fixture
def cluster(request, courier_srv, sysusers):
    """make(**authbrake overrides) -> Cluster: .m (two Memcached), .conf,
    .dc (two Dovecot), .courier (PAM stacks on .conf), .user/.password (a
    system user known to both Dovecots and to Courier)."""
    if not os.access(harness.POLICY_BIN, os.X_OK) or not os.access(CLI, os.X_OK):
        pytest.fail("build/authbrake-policy or build/authbrake missing: run make")
    made = []

    def make(pam_args="", **overrides):
        c = Cluster()
        made.append(c)
        c.m, c.dc, c.conf_dir = [], [], None
        c.syslog_mark = courier_srv.syslog_mark()
        for _ in range(2):
            mc = harness.Memcached()
            c.m.append(mc)
            mc.start()
        settings = dict(POOL_SETTINGS)
        settings.update(overrides)
        d = tempfile.mkdtemp(prefix="ab-mn-conf-")
        os.chmod(d, 0o755)
        c.conf_dir = d
        c.conf = harness.write_authbrake_conf(d, c.m, **settings)
        c.user = sysusers.add(PASSWORD, tag="m")
        c.password = PASSWORD
        users = dict(USERS)
        users[c.user] = PASSWORD
        for k in range(2):
            # its own 0755 temp dir: Dovecot's auth process reads the users file
            dc = harness.Dovecot(users=users, policy_conf=c.conf)
            c.dc.append(dc)
            dc.start()
        c.courier = courier_srv
        for service in ("imap", "pop3"):
            stack = courier.authbrake_stack(service, c.conf)
            if pam_args:
                stack = stack.replace(f"conf={c.conf}", f"conf={c.conf} {pam_args}")
            courier_srv.set_pam_stack(service, stack)
        c.syslog_mark = courier_srv.syslog_mark()
        return c

    yield make
    failed = any(getattr(request.node, "rep_" + w, None) is not None and
                 getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    for c in made:
        parallel([(dc.stop,) for dc in c.dc])      # each waits for its master to go
        for dc in c.dc:
            if failed:
                tail = [l for l in dc.log_text().splitlines() if ": Debug: " not in l]
                sys.stderr.write(f"\n--- kept {dc.dir}: log tail (no Debug lines)\n"
                                 + "\n".join(tail[-40:]) + "\n")
            else:
                shutil.rmtree(dc.dir, ignore_errors=True)
        for mc in c.m:
            mc.stop()
            shutil.rmtree(mc.dir, ignore_errors=True)
        if not failed and c.conf_dir:
            shutil.rmtree(c.conf_dir, ignore_errors=True)
        if failed:
            sys.stderr.write("\n--- Courier syslog\n"
                             + courier_srv.syslog_text(c.syslog_mark)[-4000:] + "\n")
    for service in ("imap", "pop3"):
        courier_srv.set_pam_stack(service, courier.pam_unix_stack())


# ------------------------------------------------------------------ tests

def test_counting_is_global(cluster):
    """Failures spread over two Dovecots and Courier add up once; a block
    set through one node or with `authbrake block` holds on every node at
    once."""
    c = cluster()
    dc1, dc2 = c.dc
    srv = c.courier

    # 4 wrong passwords from 4 unfamiliar /24s: 2 through each Dovecot
    for k, dc in enumerate((dc1, dc2, dc1, dc2)):
        ok, out, _ = dc.auth_test(c.user, f"wrong-{k}", f"127.90.{10 + k}.1")
        assert not ok, out
    st = json.loads(cli(c.conf, "--json", "status", "--user", c.user).stdout)
    assert st["failures"] == 4 and st["locked"] is False, st   # 4 < 5: no lock yet

    # the 5th, through Courier's POP3: locked for every node
    ok, msg, _ = srv.pop3_login(c.user, "wrong-4", "127.90.14.1")
    assert not ok, msg
    r = cli(c.conf, "--json", "status", "--user", c.user)
    st = json.loads(r.stdout)
    assert st["failures"] == 5 and st["locked"] is True, st

    # a dictionary run through dc1 only: blocked on dc2 at its first try
    attacker = "127.91.0.66"
    for k in range(5):                               # ip_max_accounts = 5
        dc1.auth_test(f"dict{k}", "123456", attacker)
    t_blocked = time.monotonic()
    mark2 = dc2.log_mark()
    ok2, out2, _ = dc2.auth_test(ALICE, USERS[ALICE], attacker)
    node_block_s = time.monotonic() - t_blocked
    assert not ok2 and "address" in out2, out2
    assert node_block_s < 1.0, f"first check on dc2 came back after {node_block_s:.2f}s"
    assert dc2.wait_log(r'address=127\.91\.0\.66 .*decision=reject.*reason="address blocked"',
                        mark2), dc2.log_since(mark2)

    # `authbrake block` from the admin host: every node, within a second
    admin = "127.92.0.7"
    r = cli(c.conf, "block", admin, "--for", "5m")
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    enforced = {}
    for name, dc in (("dc1", dc1), ("dc2", dc2)):
        assert wait_until(lambda: allow(dc, admin)[0]["status"] == -1, 1.0), \
            f"{name} does not enforce the block within 1 s"
        enforced[name] = time.monotonic() - t0

    # the lock, the node's block and the admin's block on real IMAP/POP3
    # logins (Courier answers a refusal after its ~5 s sleep: all at once)
    mark = [dc.log_mark() for dc in c.dc]
    smark = srv.syslog_mark()
    (ok1, out1, _), (ok2, msg2, _), (okc, msgc, _), (oki, msgi, _), (okp, msgp, _), \
        (oka, msga, _) = parallel([
            (dc1.auth_test, c.user, c.password, "127.90.20.1"),
            (dc2.imap_login, c.user, c.password, "127.90.21.1"),
            (srv.imap_login, c.user, c.password, "127.90.22.1"),
            (dc2.imap_login, ALICE, USERS[ALICE], attacker),
            (srv.pop3_login, c.user, c.password, attacker),
            (srv.imap_login, c.user, c.password, admin),
        ])
    assert not ok1 and "locked" in out1, out1
    assert not ok2 and "[ALERT]" in msg2 and "locked" in msg2, msg2
    assert not oki and "[ALERT]" in msgi, msgi
    assert not okc, msgc
    assert not okp, msgp
    assert not oka, msga
    for dc, m, addr in ((dc1, mark[0], "127.90.20.1"), (dc2, mark[1], "127.90.21.1")):
        assert dc.wait_log(rf'account="{c.user}" address={re.escape(addr)} .*decision=reject'
                           r'.*reason="account locked for unfamiliar origins"', m), dc.log_since(m)
    for addr, reason in (("127.90.22.1", "account locked for unfamiliar origins"),
                         (attacker, "address blocked"), (admin, "address blocked")):
        assert srv.syslog.wait(rf'account="{c.user}" address={re.escape(addr)} '
                               rf'.*decision=reject.*reason="{reason}"', smark), \
            srv.syslog_text(smark)
    figure(f"global counting: lock after 5 failures over dc1+dc2+Courier; block via dc1 "
           f"enforced on dc2 at the first try ({node_block_s * 1000:.0f} ms after), "
           f"and on Courier; `authbrake block` enforced on dc1 after {enforced['dc1'] * 1000:.0f} ms, "
           f"dc2 after {enforced['dc2'] * 1000:.0f} ms")


def test_one_memcached_killed_mid_attack(cluster):
    """SIGKILL one memcached during an attack: every login is still decided
    within the bound, every block keeps holding on every node at every
    moment (each is kept on both servers), no policy process dies; restarted
    on the same port, empty, the server is used again, and the blocks set
    before it left still hold without being set again."""
    c = cluster()
    dc1, dc2 = c.dc
    m1, m2 = c.m
    blocked = block_on_both(c.conf, c.m, [f"127.93.0.{k}" for k in range(1, 17)])
    pids = [dc.policy_pids() for dc in c.dc]

    load = Load()
    load.add("legit", legit_login(c.dc, "127.94"))
    load.add("attack", attack(c.dc, "127.95"))

    def probe_blocks(i):
        dc = c.dc[i % 2]
        addr = blocked[i % len(blocked)]
        reply, secs = allow(dc, addr)
        return (reply["status"] == -1, addr, f"dc{i % 2 + 1}", reply)
    load.add("blocks", probe_blocks, pause=0.002)
    courier_results = []
    try:
        time.sleep(1.0)
        t_kill = time.monotonic()
        m2.kill()
        # Courier during the outage: a right password passes, a block still
        # refuses (fresh PAM process per login)
        courier_results = parallel([
            (c.courier.imap_login, c.user, c.password, "127.94.250.1"),
            (c.courier.pop3_login, c.user, c.password, blocked[0]),
        ])
        time.sleep(max(0.0, 8.0 - (time.monotonic() - t_kill)))
        t_restart = time.monotonic()
        m2.restart()
        # used again: a block set now lands on the returned server too and
        # holds on both nodes
        fresh = "127.93.1.1"

        def fresh_block_on_both():
            before = ib_keys(m2)
            r = cli(c.conf, "block", fresh, "--for", "10m")
            assert r.returncode == 0, r.stderr
            return bool(ib_keys(m2) - before) and all(
                allow(dc, fresh)[0]["status"] == -1 for dc in c.dc)
        resumed = wait_until(fresh_block_on_both, 20, step=0.5)
        t_resumed = time.monotonic()
        time.sleep(0.5)
    finally:
        load.stop()

    assert not load.errors, load.errors[:5]
    legit = load.between("legit", t_kill)
    assert legit, "no legit logins measured during the outage"
    bad = [r for r in legit if not r[2][0]]
    assert not bad, f"right password refused during the outage: {bad[:3]}"
    slow = [r[1] for r in legit if r[1] > LEGIT_BOUND]
    slow_attack = [r[1] for r in load.between("attack", t_kill) if r[1] > ATTACK_BOUND]
    let_in = [(round(r[0] - t_kill, 2), r[2][1], r[2][2])
              for r in load.between("blocks", t_kill) if not r[2][0]]
    probes = len(load.between("blocks", t_kill))
    after_return = len(load.between("blocks", t_restart))
    (okc, msgc, secc), (okb, msgb, _) = courier_results
    figure(f"one memcached killed: longest login {load.longest('legit', t_kill) * 1000:.0f} ms "
           f"(dovecot legit, {len(legit)} logins), longest attack decision "
           f"{load.longest('attack', t_kill) * 1000:.0f} ms, longest policy decision "
           f"{load.longest('blocks', t_kill) * 1000:.0f} ms, Courier login "
           f"{secc * 1000:.0f} ms; blocks let through {len(let_in)}/{probes} "
           f"probes from the kill on ({after_return} after the restart); normal service "
           f"(returned server used by both nodes) {t_resumed - t_restart:.2f}s after restart"
           + ("" if resumed else " (NOT resumed within 20 s)"))
    assert not slow, f"legit logins over {LEGIT_BOUND}s: {slow}"
    assert not slow_attack, f"attack decisions over {ATTACK_BOUND}s: {slow_attack}"
    assert okc, msgc
    assert secc < COURIER_BOUND, f"Courier login took {secc:.2f}s"
    assert not okb, msgb
    assert [dc.policy_pids() for dc in c.dc] == pids, "a policy process died"
    for dc in c.dc:
        assert not fatal_lines(dc), fatal_lines(dc)
    assert resumed, "the returned memcached was not used again by both nodes within 20 s"
    assert after_return > 0, "no block probed after the restart"
    assert not let_in, (f"blocks were let through {len(let_in)} times out of {probes} "
                        f"(seconds after the kill, address, node): {let_in[:10]}")


def test_one_memcached_hung(cluster):
    """SIGSTOP one memcached: no login waits past the bound, the circuit
    breaker opens on both nodes and closes after SIGCONT."""
    c = cluster()
    dc1, dc2 = c.dc
    m1, m2 = c.m
    blocked = block_on_both(c.conf, c.m, [f"127.96.0.{k}" for k in range(1, 13)])
    marks = [dc.log_mark() for dc in c.dc]
    hung = re.escape(m2.address)

    load = Load()
    load.add("legit", legit_login(c.dc, "127.97"))
    load.add("attack", attack(c.dc, "127.98"))

    def probe(i):
        reply, secs = allow(c.dc[i % 2], blocked[i % len(blocked)])
        return (reply["status"] == -1, reply)
    load.add("policy", probe, pause=0.01)
    courier_result = None
    try:
        time.sleep(1.0)
        t_stop = time.monotonic()
        m2.pause()
        opened = [dc.wait_log(rf"authbrake-policy: Warning: memcached {hung} failed \d+ "
                              r"requests in a row.*circuit breaker open", marks[k], 10)
                  for k, dc in enumerate(c.dc)]
        t_open = time.monotonic()
        courier_result = c.courier.imap_login(c.user, c.password, "127.97.250.1")
        time.sleep(max(0.0, 5.0 - (time.monotonic() - t_stop)))
        t_cont = time.monotonic()
        cont_marks = [dc.log_mark() for dc in c.dc]
        m2.resume()
        closed = [dc.wait_log(rf"memcached {hung} answers again: circuit breaker closed",
                              cont_marks[k], 15) for k, dc in enumerate(c.dc)]
        t_closed = time.monotonic()
        time.sleep(0.3)
    finally:
        if m2.paused:
            m2.resume()
        load.stop()

    assert not load.errors, load.errors[:5]
    during = lambda name: load.between(name, t_stop, t_cont)  # noqa: E731
    longest = {n: max((r[1] for r in during(n)), default=0) for n in ("legit", "attack", "policy")}
    okc, msgc, secc = courier_result
    figure(f"one memcached hung (SIGSTOP 5s): longest login {longest['legit'] * 1000:.0f} ms "
           f"(dovecot legit, {len(during('legit'))} logins), longest attack decision "
           f"{longest['attack'] * 1000:.0f} ms, longest policy decision "
           f"{longest['policy'] * 1000:.0f} ms, Courier login {secc * 1000:.0f} ms; breaker "
           f"open on both nodes {t_open - t_stop:.2f}s after SIGSTOP; closed on both nodes "
           f"{t_closed - t_cont:.2f}s after SIGCONT")
    assert all(opened), "circuit breaker never opened: " + " | ".join(
        dc.log_since(marks[k])[-1500:] for k, dc in enumerate(c.dc))
    assert all(closed), "circuit breaker never closed after SIGCONT"
    assert during("legit") and all(r[2][0] for r in during("legit")), \
        [r for r in during("legit") if not r[2][0]][:3]
    # a failed login also waits out Dovecot's 0.5 s tick and its tarpit
    for name, bound in (("legit", HUNG_BOUND), ("policy", HUNG_BOUND),
                        ("attack", ATTACK_BOUND)):
        assert longest[name] < bound, f"{name}: a decision took {longest[name]:.2f}s"
    assert okc, msgc
    assert secc < HUNG_BOUND, f"Courier login took {secc:.2f}s with a hung memcached"
    let_in = [r for r in during("policy") if not r[2][0]]
    assert not let_in, f"blocks let through while a server hung: {let_in[:5]}"
    for dc in c.dc:
        assert not fatal_lines(dc), fatal_lines(dc)


def test_all_memcached_down_fail_open(cluster):
    """Both memcached down, fail_mode = open: users get in at once, and the
    failure is logged once per fail_log_interval per process, not per login."""
    c = cluster(fail_mode="open", fail_log_interval="60s")
    dc1, dc2 = c.dc
    assert dc1.auth_test(ALICE, USERS[ALICE], "127.99.0.1")[0]
    procs = len(dc1.policy_pids())
    marks = [dc.log_mark() for dc in c.dc]
    smark = c.courier.syslog_mark()
    t_down = time.monotonic()
    for mc in c.m:
        mc.kill()

    n = 20
    times, wrong = [], []
    for i in range(n):
        dc = c.dc[i % 2]
        ok, out, secs = dc.auth_test(ALICE, USERS[ALICE], f"127.99.1.{i + 1}")
        assert ok, out
        times.append(secs)
    for i in range(4):                       # wrong passwords are still checked
        ok, out, secs = c.dc[i % 2].auth_test(ALICE, "wrong", f"127.99.2.{i + 1}")
        assert not ok and "reason=" not in out, out
        wrong.append(secs)
    ok, msg, secs_imap = dc2.imap_login(ALICE, USERS[ALICE], "127.99.3.1")
    assert ok, msg
    courier_logins = parallel([(c.courier.pop3_login, c.user, c.password, f"127.99.3.{k}")
                               for k in range(2, 5)])
    for okc, msgc, _ in courier_logins:
        assert okc, msgc
    secs_c = max(x[2] for x in courier_logins)
    time.sleep(0.5)
    per_node = [STORE_LINE.findall(dc.log_since(marks[k])) for k, dc in enumerate(c.dc)]
    courier_lines = [l for l in c.courier.syslog.lines(smark)
                     if "pam_authbrake" in l and "memcached" in l]

    # back: both restarted on their ports; a block set now holds on both nodes
    t_up = time.monotonic()
    for mc in c.m:
        mc.restart()
    r = None

    def block_holds():
        nonlocal r
        r = cli(c.conf, "block", "127.99.9.9", "--for", "5m", tries=1)
        return r.returncode == 0 and all(
            allow(dc, "127.99.9.9")[0]["status"] == -1 for dc in c.dc for _ in range(4))
    resumed = wait_until(block_holds, 20, step=0.2)
    t_resumed = time.monotonic()

    logins = n + len(wrong) + 1
    figure(f"all memcached down, fail_mode=open: longest login "
           f"{max(times + [secs_imap]) * 1000:.0f} ms (right password; wrong ones "
           f"{max(wrong) * 1000:.0f} ms incl. Dovecot's failure tick), Courier "
           f"{secs_c * 1000:.0f} ms; store log lines per node over {logins} logins: "
           f"{[len(x) for x in per_node]} ({procs} policy processes each), Courier "
           f"{len(courier_lines)} for {len(courier_logins)} logins; normal service "
           f"{t_resumed - t_up:.2f}s after restart")
    assert max(times + [secs_imap]) < LEGIT_BOUND, times
    assert secs_c < COURIER_BOUND
    assert resumed, f"no normal service after the restart: {r and r.stderr}"
    for k, lines in enumerate(per_node):
        assert any("fail_mode=open" in l for l in lines), \
            f"dc{k + 1}: the store failure was never logged: {lines}"
        # a circuit breaker opening, a server taken out of the pool: once
        # per server and process
        breaker = [l for l in lines if "circuit breaker open, skipping" in l
                   or "out of the pool" in l]
        assert len(breaker) <= procs * len(c.m), breaker
        # the failure itself: once per fail_log_interval (60 s) and policy
        # process, not once per login
        failure = [l for l in lines if l not in breaker]
        assert len(failure) <= procs, (
            f"dc{k + 1}: {len(failure)} store-failure lines for {logins // 2 + 1} logins "
            f"(at most {procs} expected: {procs} processes, fail_log_interval=60s):\n"
            + "\n".join(failure[:8]))


def test_all_memcached_down_fail_closed(cluster):
    """Both memcached down, fail_mode = closed: even the right password is
    refused, with a clear message, on Dovecot and on Courier."""
    c = cluster(fail_mode="closed")
    dc1, dc2 = c.dc
    assert dc1.auth_test(ALICE, USERS[ALICE], "127.100.0.1")[0]
    marks = [dc.log_mark() for dc in c.dc]
    smark = c.courier.syslog_mark()
    for mc in c.m:
        mc.kill()

    (ok1, out1, s1), (ok2, msg2, s2), (okc, msgc, sc) = parallel([
        (dc1.auth_test, ALICE, USERS[ALICE], "127.100.1.1"),
        (dc2.imap_login, ALICE, USERS[ALICE], "127.100.1.2"),
        (c.courier.imap_login, c.user, c.password, "127.100.1.3"),
    ])
    assert not ok1 and "temporarily unavailable" in out1, out1
    assert not ok2 and "[ALERT] Login is temporarily unavailable" in msg2, msg2
    assert not okc, msgc
    for k, dc in enumerate(c.dc):
        assert dc.wait_log(r'decision=reject reason="store unavailable, fail_mode=closed"',
                           marks[k]), dc.log_since(marks[k])
        assert dc.wait_log(r"authbrake-policy: Error: memcached (partly )?unreachable.*fail_mode=closed",
                           marks[k]), dc.log_since(marks[k])
    assert c.courier.syslog.wait(r'address=127\.100\.1\.3 .*decision=reject'
                                 r'.*reason="store unavailable, fail_mode=closed"', smark), \
        c.courier.syslog_text(smark)
    # refused before the password check: Dovecot never looked the user up
    assert not harness.passdb_check_list(dc1, since=marks[0], address="127.100.1.1")

    t_up = time.monotonic()
    for mc in c.m:
        mc.restart()
    resumed = wait_until(lambda: all(dc.auth_test(ALICE, USERS[ALICE], "127.100.2.1")[0]
                                     for dc in c.dc), 20, step=0.2)
    t_resumed = time.monotonic()
    figure(f"all memcached down, fail_mode=closed: rejection took at most "
           f"{max(s1, s2) * 1000:.0f} ms on Dovecot (Courier {sc:.1f}s incl. its own "
           f"failure sleep); normal service {t_resumed - t_up:.2f}s after restart")
    assert max(s1, s2) < LEGIT_BOUND
    assert resumed, "fail_mode=closed never let the user in again"


def test_policy_restarted_mid_attack(cluster):
    """SIGKILL every authbrake-policy on both nodes during an attack: the
    master starts new ones, and blocks, locks and counts in memcached carry
    on as if nothing happened."""
    c = cluster()
    dc1, dc2 = c.dc
    # state before the restart: a blocked address, a locked account, and
    # half-finished counts (3 of 5 accounts from one address, 3 of 5
    # failures on another account)
    for k in range(5):
        dc1.auth_test(f"pre{k}", "x", "127.101.0.1")
    for k in range(5):
        dc2.auth_test(c.user, f"wrong{k}", f"127.101.{10 + k}.1")
    for k in range(3):
        dc1.auth_test(f"half{k}", "x", "127.101.0.2")
    for k in range(3):
        dc2.auth_test(BOB, f"bad{k}", f"127.101.{20 + k}.1")
    assert allow(dc2, "127.101.0.1")[0]["status"] == -1
    assert not dc1.auth_test(c.user, c.password, "127.101.30.1")[0]

    load = Load()
    load.add("legit", legit_login(c.dc, "127.102"))
    load.add("attack", attack(c.dc, "127.103"))
    old = [dc.policy_pids() for dc in c.dc]
    marks = [dc.log_mark() for dc in c.dc]
    try:
        time.sleep(1.0)
        t_kill = time.monotonic()
        for pids in old:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)

        def restarted():
            new = [dc.policy_pids() for dc in c.dc]
            return all(len(n) == len(o) and not set(n) & set(o) for n, o in zip(new, old))
        back = wait_until(restarted, 15)
        t_back = time.monotonic()
        served = wait_until(lambda: all(allow(dc, "127.101.0.1")[0]["status"] == -1
                                        for dc in c.dc), 10)
        t_served = time.monotonic()
        time.sleep(1.0)
    finally:
        load.stop()
    assert back, ([dc.policy_pids() for dc in c.dc], old)
    assert served
    for k, dc in enumerate(c.dc):
        assert dc.wait_log(r"authbrake-policy.*killed with signal 9", marks[k])

    # nothing lost: the block and the lock hold on both nodes ...
    for dc in c.dc:
        assert allow(dc, "127.101.0.1")[0]["status"] == -1
        ok, out, _ = dc.auth_test(c.user, c.password, "127.101.31.1")
        assert not ok and "locked" in out, out
    # ... and the half-finished counts go on where they were
    for k in range(3, 5):
        dc2.auth_test(f"half{k}", "x", "127.101.0.2")
    ok, out, _ = dc1.auth_test(ALICE, USERS[ALICE], "127.101.0.2")
    assert not ok and "address" in out, out
    for k in range(3, 5):
        dc1.auth_test(BOB, f"bad{k}", f"127.101.{20 + k}.1")
    ok, out, _ = dc2.auth_test(BOB, USERS[BOB], "127.101.40.1")
    assert not ok and "locked" in out, out

    assert not load.errors, load.errors[:5]
    legit = load.between("legit", t_kill)
    figure(f"authbrake-policy SIGKILLed on both nodes: longest login "
           f"{load.longest('legit', t_kill) * 1000:.0f} ms ({len(legit)} logins), longest "
           f"attack decision {load.longest('attack', t_kill) * 1000:.0f} ms; new processes "
           f"{t_back - t_kill:.2f}s after the kill, deciding from memcached "
           f"{t_served - t_kill:.2f}s after; block, lock and partial counts kept")
    assert legit and all(r[2][0] for r in legit), [r for r in legit if not r[2][0]][:3]
    assert load.longest("legit", t_kill) < HUNG_BOUND
