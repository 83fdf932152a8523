"""The authbrake admin tool against a real memcached (and, for unlock, a real
Dovecot with authbrake-policy): every command, --json, exit codes, bad input.

Every test writes its own authbrake.conf with its own secret, so its keys
in the shared memcached are its own.
"""

import json
import os
import re
import shutil
import stat
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

import harness
from harness import (CLI_BIN, POLICY_BIN, REPO_ROOT, Dovecot, Memcached,
                     free_port, write_authbrake_conf)

RECENT_H = REPO_ROOT / "tracker" / "ab-recent.h"

# the build under test (AB_BUILD_DIR, see harness.py); AUTHBRAKE_CLI: only
# the CLI from elsewhere
CLI = Path(os.environ.get("AUTHBRAKE_CLI", CLI_BIN))
POLICY = POLICY_BIN
REFERENCE_CONF = REPO_ROOT / "conf.d" / "authbrake.conf"
MAN_CONF = REPO_ROOT / "man" / "authbrake.conf.5"
MAN_CLI = REPO_ROOT / "man" / "authbrake.8"
CONFIG_C = REPO_ROOT / "tracker" / "ab-config.c"

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_STORE, EXIT_OTHER = 0, 1, 2, 3, 4


def run(conf, *args, json_out=False, timeout=20):
    """Run authbrake; a crash (signal) or an exit code outside 0-4 fails."""
    cmd = [str(CLI)]
    if conf is not None:
        cmd += ["-c", str(conf)]
    if json_out:
        cmd.append("--json")
    cmd += [a if isinstance(a, bytes) else str(a) for a in args]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    r.out = r.stdout.decode(errors="replace")
    r.err = r.stderr.decode(errors="replace")
    assert r.returncode in (0, 1, 2, 3, 4), (cmd, r.returncode, r.out, r.err)
    if r.returncode in (2, 3, 4):
        assert r.err.startswith("authbrake: "), (cmd, r.err)
    return r


def run_json(conf, *args, expect=EXIT_OK):
    """expect=None: exit 0 or 1 (status of something that may be blocked)."""
    r = run(conf, *args, json_out=True)
    if expect is None:
        assert r.returncode in (EXIT_OK, EXIT_REJECTED), (args, r.returncode, r.out, r.err)
    else:
        assert r.returncode == expect, (args, r.returncode, r.out, r.err)
    lines = r.out.splitlines()
    assert len(lines) == 1, r.out
    return json.loads(lines[0])


def tracker_keys():
    """The keys the tracker's parser accepts, from its table."""
    keys = re.findall(r'^\s*\{ "([a-z_]+)", T_[A-Z_]+,', CONFIG_C.read_text(), re.M)
    assert len(keys) > 20, "cannot read the key table of tracker/ab-config.c"
    return keys


@pytest.fixture(scope="module")
def mc():
    with Memcached() as m:
        yield m


@pytest.fixture
def conf(tmp_path, mc):
    return write_authbrake_conf(tmp_path / "ab", mc)


# ------------------------------------------------------------ usage

def test_help_lists_commands_and_exit_codes():
    r = run(None, "--help")
    assert r.returncode == EXIT_OK
    for word in ("status", "list", "check", "unlock", "block", "unblock",
                 "genkey", "config", "--json", "-c"):
        assert word in r.out
    for code in range(5):
        assert re.search(rf"^\s+{code}\s+\S", r.out, re.M), f"exit code {code} undocumented"

    r = run(None)
    assert r.returncode == EXIT_USAGE and "usage:" in r.err
    r = run(None, "frobnicate")
    assert r.returncode == EXIT_USAGE
    assert "unknown command 'frobnicate'" in r.err
    r = run(None, "--frob", "status", "x")
    assert r.returncode == EXIT_USAGE and "unknown option '--frob'" in r.err
    r = run(None, "-c")
    assert r.returncode == EXIT_USAGE and "needs a value" in r.err


# ------------------------------------------------------------ status, check

def test_status_of_fresh_user_and_address(conf):
    st = run_json(conf, "status", "Alice")
    assert st["type"] == "account" and st["account"] == "alice"
    assert st["failures"] == 0 and st["locked"] is False
    assert st["lock_left_s"] == 0 and st["familiar_subnets"] == 0
    assert st["allow"]["verdict"] == "allow" and st["allow"]["store_failed"] is False

    st = run_json(conf, "status", "::ffff:192.0.2.7")
    assert st["type"] == "address" and st["address"] == "192.0.2.7"
    assert st["blocked"] is False and st["failures"] == 0
    assert st["subnet"]["network"] == "192.0.2.0/24"
    assert st["allow"]["verdict"] == "allow"

    st = run_json(conf, "status", "2001:db8:7:8::1")
    assert st["address"] == "2001:db8:7:8::/64"
    assert st["subnet"]["network"] == "2001:db8:7::/48"

    # a name that looks like an address can still be asked about as a user
    st = run_json(conf, "status", "--user", "10.0.0.1")
    assert st["type"] == "account" and st["account"] == "10.0.0.1"

    r = run(conf, "status", "alice")
    assert r.returncode == EXIT_OK
    assert re.search(r"^lock:\s+not locked$", r.out, re.M), r.out
    assert re.search(r"^allow now:\s+allow", r.out, re.M), r.out


def test_block_status_check_unblock_address(conf):
    r = run(conf, "block", "192.0.2.7", "--for", "42m")
    assert r.returncode == EXIT_OK, r.err
    assert "192.0.2.7" in r.out and "42m" in r.out

    r = run(conf, "status", "192.0.2.7")
    assert r.returncode == EXIT_REJECTED, r.out + r.err
    assert re.search(r"^block:\s+blocked, (42m|41m 5\ds) left", r.out, re.M), r.out
    assert re.search(r"^allow now:\s+reject \(address blocked\)", r.out, re.M), r.out

    st = run_json(conf, "status", "192.0.2.7", expect=EXIT_REJECTED)
    assert st["blocked"] is True and 2500 < st["block_left_s"] <= 42 * 60
    assert st["subnet"]["blocked"] is False
    assert st["allow"]["verdict"] == "reject"
    assert st["allow"]["reason"] == "address blocked"

    d = run_json(conf, "check", "--user", "bob", "--address", "192.0.2.7",
                 "--protocol", "imap", expect=EXIT_REJECTED)
    assert d["verdict"] == "reject" and d["reason"] == "address blocked"
    assert d["account"] == "bob" and d["protocol"] == "imap"
    assert 2500 < d["retry_after_s"] <= 42 * 60 and d["message"]
    r = run(conf, "check", "--user", "bob", "--address", "192.0.2.7")
    assert r.returncode == EXIT_REJECTED
    assert r.out.startswith("reject (address blocked), may pass again in 4")
    # a neighbour in the same /24 is not blocked: the block is the address's
    d = run_json(conf, "check", "--user", "bob", "--address", "192.0.2.8")
    assert d["verdict"] == "allow"

    r = run(conf, "unblock", "192.0.2.7")
    assert r.returncode == EXIT_OK, r.err
    assert "unblocked" in r.out
    st = run_json(conf, "status", "192.0.2.7")
    assert st["blocked"] is False and st["allow"]["verdict"] == "allow"
    r = run(conf, "unblock", "192.0.2.7")
    assert r.returncode == EXIT_OK and "was not blocked" in r.out


def test_block_subnets_v4_and_v6(conf):
    assert run(conf, "block", "198.51.100.0/24").returncode == EXIT_OK
    st = run_json(conf, "status", "198.51.100.9", expect=EXIT_REJECTED)
    assert st["blocked"] is False and st["subnet"]["blocked"] is True
    d = run_json(conf, "check", "--user", "carol", "--address", "198.51.100.77",
                 expect=EXIT_REJECTED)
    assert d["reason"] == "subnet blocked"
    st = run_json(conf, "status", "198.51.100.0/24", expect=EXIT_REJECTED)
    assert st["type"] == "subnet" and st["subnet"]["blocked"] is True
    assert run(conf, "unblock", "198.51.100.0/24").returncode == EXIT_OK
    run_json(conf, "check", "--user", "carol", "--address", "198.51.100.77")

    assert run(conf, "block", "2001:db8:5::/48", "--for", "2h").returncode == EXIT_OK
    d = run_json(conf, "check", "--user", "carol", "--address", "2001:db8:5:1::9",
                 expect=EXIT_REJECTED)
    assert d["reason"] == "subnet blocked" and 7000 < d["retry_after_s"] <= 7200
    # an IPv6 /64 is one address: blocking one address blocks its /64
    assert run(conf, "block", "2001:db8:6:1::1").returncode == EXIT_OK
    d = run_json(conf, "check", "--address", "2001:db8:6:1::ffff", expect=EXIT_REJECTED)
    assert d["reason"] == "address blocked" and d["account"] is None
    run_json(conf, "check", "--address", "2001:db8:6:2::1")
    assert run(conf, "unblock", "2001:db8:6:1::/64").returncode == EXIT_OK
    run_json(conf, "check", "--address", "2001:db8:6:1::ffff")


def test_block_durations(conf):
    assert run(conf, "block", "203.0.113.5").returncode == EXIT_OK
    st = run_json(conf, "status", "203.0.113.5", expect=EXIT_REJECTED)
    block_time = 60   # harness TEST_DEFAULTS
    assert block_time - 5 <= st["block_left_s"] <= block_time
    for bad, msg in (("8d", "a week"), ("10x", "unknown unit"), ("0", "at least 1s"),
                     ("1500ms", "whole seconds"), ("soon", "not a duration")):
        r = run(conf, "block", "203.0.113.6", "--for", bad)
        assert r.returncode == EXIT_USAGE and msg in r.err, (bad, r.err)
    st = run_json(conf, "status", "203.0.113.6")
    assert st["blocked"] is False


def test_bad_targets_and_logins(conf):
    cases = [
        (("status", "192.0.2.0/25"), "give an address or its /24 subnet"),
        (("block", "not-an-address"), "not a network"),
        (("block", "300.1.2.3"), "not a network"),
        (("unblock", "2001:db8::/56"), "/48 subnet"),
        (("block",), "give one ADDRESS or SUBNET"),
        (("campaign", "bogus"), "give on, off or auto"),
        (("campaign", "on", "off"), "give on, off or auto, or nothing"),
        (("status", "a", "b"), "give one USER"),
        (("check",), "--user"),
        (("check", "--user", "bob", "--address", "bogus"), "invalid address"),
        (("check", "--user", "bob", "--address", "1.2.3.4", "--protocol", "i map"),
         "--protocol"),
        (("check", "--user", "bob", "--address"), "needs a value"),
        (("status", "bo\x01b"), "control byte"),
        (("unlock", " "), "login is empty"),
        (("unlock", "a" * 300), "longer than"),
        (("unblock", "--frob", "1.2.3.4"), "unknown option '--frob'"),
        (("genkey", "a", "b"), "at most one FILE"),
    ]
    for args, msg in cases:
        r = run(conf, *args)
        assert r.returncode == EXIT_USAGE, (args, r.returncode, r.err)
        assert msg in r.err, (args, r.err)


def test_campaign_forced_and_handed_back(conf):
    """authbrake campaign: off and idle on a fresh site (nothing learned, so
    no rate can turn it on yet); on and off force it for every node, auto
    hands it back; `status` alone shows the same."""
    st = run_json(conf, "campaign")
    assert (st["type"], st["on"], st["mode"], st["armed"]) == \
        ("campaign", False, "auto", False), st
    assert st["floor"] == 30 and st["interval_s"] == 600, st
    r = run(conf, "status")
    assert r.returncode == EXIT_OK, r.err
    assert r.out.splitlines()[0] == "campaign mode: off (auto: the detector decides)"
    assert "threshold: none yet" in r.out, r.out
    r = run(conf, "campaign", "on")
    assert r.returncode == EXIT_OK, r.err
    assert r.out.startswith("campaign mode: on (forced)"), r.out
    assert run_json(conf, "status")["on"] is True
    st = run_json(conf, "campaign", "off")
    assert (st["on"], st["mode"]) == (False, "off"), st
    st = run_json(conf, "campaign", "auto")
    assert (st["on"], st["mode"]) == (False, "auto"), st


def test_json_escapes_hostile_logins(conf):
    login = 'Ev"il\\ \u00fc\u4e2d<script>'.encode()
    st = run_json(conf, "status", login)
    assert st["account"] == 'ev"il\\ \u00fc\u4e2d<script>'
    d = run_json(conf, "check", "--user", login, "--address", "192.0.2.1")
    assert d["account"].startswith('ev"il\\') and d["verdict"] == "allow"
    # bytes that are not UTF-8 name no account: a clear usage error
    r = run(conf, "status", login + b"\xff\xc3")
    assert r.returncode == EXIT_USAGE
    assert "not valid UTF-8" in r.err


def test_unlock_of_unlocked_user(conf):
    r = run(conf, "unlock", "Dave")
    assert r.returncode == EXIT_OK, r.err
    assert r.out.strip() == "dave: was not locked; 0 failures cleared"
    d = run_json(conf, "unlock", "dave")
    assert d == {"account": "dave", "was_locked": False, "lock_left_s": 0,
                 "failures_cleared": 0}


# ------------------------------------------------------------ configuration

def test_config_errors_name_file_and_line(tmp_path, mc):
    conf = write_authbrake_conf(tmp_path / "ab", mc)
    with open(conf) as f:
        n = len(f.read().splitlines())
    with open(conf, "a") as f:
        f.write("foo = 1\n")
    r = run(conf, "status", "alice")
    assert r.returncode == EXIT_USAGE
    assert r.err.strip() == f"authbrake: {conf}:{n + 1}: unknown setting 'foo'"

    conf = write_authbrake_conf(tmp_path / "range", mc, tarpit_max="20m")
    r = run(conf, "check", "--user", "a", "--address", "192.0.2.1")
    assert r.returncode == EXIT_USAGE and "tarpit_max = 20m is out of range" in r.err

    conf = write_authbrake_conf(tmp_path / "dep", mc, block_time="2h", block_max="1h")
    r = run(conf, "status", "alice")
    assert r.returncode == EXIT_USAGE
    assert f"{conf}: block_max" in r.err and "shorter than block_time" in r.err

    missing = tmp_path / "nope.conf"
    r = run(missing, "status", "alice")
    assert r.returncode == EXIT_USAGE
    assert f"{missing}: cannot read: No such file or directory" in r.err


def test_config_unreadable_by_caller(tmp_path, mc):
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed"
    if os.geteuid() != 0:
        pytest.fail("this test drops to user nobody and must start as root")
    conf = write_authbrake_conf(tmp_path / "ab", mc)
    os.chmod(tmp_path, 0o755)
    os.chmod(os.path.dirname(conf), 0o755)
    os.chmod(conf, 0o600)
    r = subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        str(CLI), "-c", str(conf), "status", "alice"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert r.returncode == EXIT_USAGE, r.stderr
    assert f"{conf}: cannot read: Permission denied" in r.stderr.decode()


def test_secret_file_problems_are_config_errors(tmp_path, mc):
    conf = write_authbrake_conf(tmp_path / "ab", mc)
    os.chmod(conf.secret_file, 0o644)
    r = run(conf, "status", "alice")
    assert r.returncode == EXIT_USAGE and "world-readable" in r.err
    os.unlink(conf.secret_file)
    r = run(conf, "status", "alice")
    assert r.returncode == EXIT_USAGE and f"{conf.secret_file}: cannot open" in r.err


def test_reference_config_parses_and_documents_every_key(tmp_path, mc):
    """conf.d/authbrake.conf parses; its "#key = value" lines are the real
    defaults; it and authbrake.conf(5) document every key the parser takes."""
    base = write_authbrake_conf(tmp_path / "ab", mc)
    overrides = (f"secret_file = {base.secret_file}\n"
                 f"api_key_file = {base.api_key_file}\n"
                 f"memcached_servers = {mc.address}\n")
    text = REFERENCE_CONF.read_text()

    ref = tmp_path / "reference.conf"
    ref.write_text(text + overrides)
    r = run(ref, "check", "--user", "alice", "--address", "192.0.2.1")
    assert r.returncode == EXIT_OK, r.err
    assert r.out.startswith("allow")

    documented = dict(re.findall(r"^#([a-z_]+) =[ ]?(.*)$", text, re.M))
    keys = tracker_keys()
    assert sorted(documented) == sorted(keys)

    # the defaults it shows are the defaults the code has
    uncommented = tmp_path / "uncommented.conf"
    uncommented.write_text(re.sub(r"^#([a-z_]+ =)", r"\1", text, flags=re.M) + overrides)
    minimal = tmp_path / "minimal.conf"
    minimal.write_text(overrides)
    got = run_json(uncommented, "config")
    want = run_json(minimal, "config")
    assert got == want
    assert list(want) == keys, "authbrake config does not list the tracker's keys"

    # authbrake.conf(5) has each key as ".B key = default", the same default
    man = dict(re.findall(r"^\.B ([a-z_]+) =[ ]?(.*)$", MAN_CONF.read_text(), re.M))
    assert sorted(man) == sorted(keys)
    for key in keys:
        assert man[key].replace("\\-", "-") == documented[key], key


def test_config_prints_a_valid_config(conf, tmp_path):
    r = run(conf, "config")
    assert r.returncode == EXIT_OK
    again = tmp_path / "again.conf"
    again.write_text(r.out)
    assert run(again, "config").out.splitlines()[1:] == r.out.splitlines()[1:]
    assert "account_lock_failures = 5" in r.out.splitlines()


# ------------------------------------------------------------ store unreachable

def test_store_unreachable_exits_3(tmp_path):
    conf = write_authbrake_conf(tmp_path / "ab", f"127.0.0.1:{free_port()}")
    for args in (("status", "alice"), ("status", "192.0.2.1"),
                 ("check", "--user", "alice", "--address", "192.0.2.1"),
                 ("unlock", "alice"), ("block", "192.0.2.1"),
                 ("unblock", "192.0.2.0/24")):
        r = run(conf, *args)
        assert r.returncode == EXIT_STORE, (args, r.returncode, r.out, r.err)
        assert "memcached 127.0.0.1:" in r.err, (args, r.err)
    # fail_mode=open would let the login through: check says so, and still exits 3
    d = run_json(conf, "check", "--user", "alice", "--address", "192.0.2.1",
                 expect=EXIT_STORE)
    assert d["store_failed"] is True and d["verdict"] == "allow"


def test_hung_store_exits_3_quickly(tmp_path):
    with Memcached() as m:
        conf = write_authbrake_conf(tmp_path / "ab", m)
        assert run(conf, "block", "192.0.2.9").returncode == EXIT_OK
        m.pause()
        try:
            t0 = time.monotonic()
            r = run(conf, "check", "--user", "alice", "--address", "192.0.2.9")
            seconds = time.monotonic() - t0
            assert r.returncode == EXIT_STORE, (r.out, r.err)
            assert "TIMEOUT" in r.err.upper()
            assert seconds < 5, seconds
            assert run(conf, "unblock", "192.0.2.9").returncode == EXIT_STORE
        finally:
            m.resume()
        assert run(conf, "status", "192.0.2.9").returncode == EXIT_REJECTED


# ------------------------------------------------------------ genkey

def assert_private(path):
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & 0o137 == 0, f"{path} has mode {mode:04o}"


def test_genkey_writes_private_secret_and_refuses_to_overwrite(tmp_path, mc):
    conf = write_authbrake_conf(tmp_path / "ab", mc)
    target = tmp_path / "new-secret"
    old_umask = os.umask(0)
    try:
        r = run(None, "genkey", target)
    finally:
        os.umask(old_umask)
    assert r.returncode == EXIT_OK, r.err
    assert_private(target)
    content = target.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", content)

    r = run(None, "genkey", target)
    assert r.returncode == EXIT_OTHER and "File exists" in r.err
    assert target.read_text() == content

    r = run(None, "genkey", tmp_path / "no-such-dir" / "secret")
    assert r.returncode == EXIT_OTHER and "No such file or directory" in r.err

    # no FILE: secret_file from the configuration; the new secret works
    os.unlink(conf.secret_file)
    r = run(conf, "genkey")
    assert r.returncode == EXIT_OK and conf.secret_file in r.out
    assert_private(conf.secret_file)
    assert run(conf, "status", "alice").returncode == EXIT_OK
    r = run(conf, "genkey")
    assert r.returncode == EXIT_OTHER and "refusing" in r.err


def test_genkey_api_key_prints_dovecot_setting(tmp_path, mc):
    conf = write_authbrake_conf(tmp_path / "ab", mc)
    os.unlink(conf.api_key_file)
    r = run(conf, "genkey", "--api-key")
    assert r.returncode == EXIT_OK, r.err
    assert_private(conf.api_key_file)
    token = open(conf.api_key_file).read().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert f"\nauth_policy_server_api_header = X-API-Key: {token}\n" in r.out
    assert "root" in r.out      # advice: keep it in a root-only file
    r = run(conf, "genkey", "--api-key")
    assert r.returncode == EXIT_OTHER
    assert open(conf.api_key_file).read().strip() == token
    other = tmp_path / "key2"
    r = run(None, "genkey", "--api-key", other)
    assert r.returncode == EXIT_OK and other.read_text().strip() in r.out


# ------------------------------------------------------------ through Dovecot

def test_unlock_lets_a_locked_user_in_through_dovecot(tmp_path, mc):
    assert POLICY.exists(), f"{POLICY} is not built (make)"
    conf = write_authbrake_conf(tmp_path / "ab", mc)
    lock_after = int(conf.settings["account_lock_failures"])
    with Dovecot(policy_conf=conf) as dc:
        # a botnet guessing bob's password: one guess per /24, each different
        for i in range(lock_after):
            ok, out, _ = dc.auth_test("bob", f"guess-{i}", f"10.{i + 1}.0.1")
            assert not ok, out
        st = run_json(conf, "status", "bob", expect=EXIT_REJECTED)
        assert st["locked"] is True and st["failures"] >= lock_after
        # a lock lasts until its failures have left account_window, and
        # at least lock_time
        lock_time = harness.parse_duration(conf.settings["lock_time"])
        window = harness.parse_duration(conf.settings["account_window"])
        assert lock_time - 5 <= st["lock_left_s"] <= max(lock_time, 2 * window)
        d = run_json(conf, "check", "--user", "bob", "--address", "10.200.0.1",
                     "--protocol", "imap", expect=EXIT_REJECTED)
        assert 0 <= st["lock_left_s"] - d["retry_after_s"] <= 1, (st, d)
        r = run(conf, "status", "bob")
        assert re.search(r"^lock:\s+locked, \d+m( \d+s)? left$", r.out, re.M), r.out

        # the right password from a new address is refused now
        ok, msg, _ = dc.imap_login("bob", dc.users["bob"], src="127.77.1.1")
        assert not ok, msg
        d = run_json(conf, "check", "--user", "bob", "--address", "127.77.1.1",
                     "--protocol", "imap", expect=EXIT_REJECTED)
        assert d["reason"] == "account locked for unfamiliar origins"

        r = run(conf, "unlock", "bob")
        assert r.returncode == EXIT_OK, r.err
        assert r.out.startswith("bob: unlocked (the lock had ")

        ok, msg, _ = dc.imap_login("bob", dc.users["bob"], src="127.77.1.1")
        assert ok, msg
        st = run_json(conf, "status", "bob")
        assert st["locked"] is False and st["familiar_subnets"] == 1


def test_check_reports_tarpit_after_failures(tmp_path, mc):
    assert POLICY.exists(), f"{POLICY} is not built (make)"
    conf = write_authbrake_conf(tmp_path / "ab", mc)
    free = int(conf.settings["ip_free_failures"])
    with Dovecot(policy_conf=conf) as dc:
        for i in range(free + 1):
            ok, out, _ = dc.auth_test(f"nobody{i}", "x", "192.0.2.50")
            assert not ok, out
    st = run_json(conf, "status", "192.0.2.50")
    assert st["failures"] == free + 1 and st["accounts"] == free + 1
    d = run_json(conf, "check", "--user", "alice", "--address", "192.0.2.50")
    assert d["verdict"] == "tarpit" and d["delay_s"] >= 1
    r = run(conf, "check", "--user", "alice", "--address", "192.0.2.50")
    assert r.returncode == EXIT_OK
    assert r.out.startswith(f"tarpit {d['delay_s']}s before the password check")
    # a dry run changes nothing
    assert run_json(conf, "status", "192.0.2.50")["failures"] == free + 1


# ------------------------------------------------------------ list

def memcached_dump(m):
    """Every key and value in memcached: {key: the value's bytes}."""
    out = {}
    for key in m.dump_keys():
        key = urllib.parse.unquote(key)
        out[key] = m.get_raw(key) or b""
    return out


def assert_nothing_in_clear(m, words, addresses):
    """No name or address in memcached keys or values, as text or packed
    (the recent-blocks ring keeps sealed entries as bytes: all of each
    value is searched), nor in the bytes of a numeric value."""
    dump = memcached_dump(m)
    assert dump, "memcached is empty"
    blob = b""
    for key, value in dump.items():
        for w in words + addresses:
            assert w not in key and w.encode() not in value, (w, key, value)
        blob += value
        if value.isdigit() and int(value) < 2 ** 64:
            blob += int(value).to_bytes(8, "little")
    for w in words:
        assert w.encode() not in blob, w
    for a in addresses:
        packed = bytes(int(x) for x in a.split("."))
        assert packed not in blob, a


def list_lines(conf):
    r = run(conf, "list")
    assert r.returncode == EXIT_OK, r.err
    return r.out.splitlines()


def test_list_shows_blocks_and_locks_until_lifted(tmp_path):
    assert POLICY.exists(), f"{POLICY} is not built (make)"
    with Memcached() as m:
        conf = write_authbrake_conf(tmp_path / "ab", m, ip_free_failures=2,
                                    ip_block_failures=3, account_lock_failures=3,
                                    block_time="10m", lock_time="20m",
                                    block_max="1h")
        assert run_json(conf, "list") == {"blocked": [], "count": 0,
                                          "slots": 128, "recorded": 0,
                                          "unreadable": 0}
        with Dovecot(policy_conf=conf) as dc:
            # a dictionary run from one address: blocked at its 3rd failure
            for user in ("ursula", "ulrich", "umberto"):
                ok, msg, _ = dc.imap_login(user, "guess", src="127.0.7.1")
                assert not ok, msg
            # a botnet at bob, one guess per /24: locked at the 3rd
            for i in range(1, 4):
                ok, msg, _ = dc.imap_login("bob", f"guess-{i}", src=f"127.8.{i}.1")
                assert not ok, msg
        r = run(conf, "block", "198.51.100.0/24", "--for", "1d")
        assert r.returncode == EXIT_OK, r.err

        r = run(conf, "list")
        assert r.returncode == EXIT_OK, r.err
        lines = r.out.splitlines()
        assert lines[0].split() == ["TYPE", "WHO", "LEFT", "SET", "WHY"], r.out
        rows = {l.split()[1]: l for l in lines[1:-1]}
        assert set(rows) == {"127.0.7.1", "bob", "198.51.100.0/24"}, r.out
        # a block lasts until its failures have left ip_window (10m:
        # 10 to 20 minutes from the attack), and at least block_time (10m)
        assert re.match(r"address +127\.0\.7\.1 +(20m|1\dm( \d+s)?|9m( \d+s)?) .* "
                        r"3 failures, 3 accounts tried$", rows["127.0.7.1"]), r.out
        assert re.match(r"account +bob +(20m|19m( \d+s)?) .* "
                        r"3 failures from unfamiliar origins$", rows["bob"]), r.out
        assert re.match(r"subnet +198\.51\.100\.0/24 +(1d|23h( \d+m)?) .* "
                        r"authbrake block$", rows["198.51.100.0/24"]), r.out
        assert lines[-1] == "3 blocked or locked now"

        doc = run_json(conf, "list")
        assert doc["count"] == 3 and doc["recorded"] == 3 and doc["unreadable"] == 0
        got = {e.get("address") or e.get("subnet") or e.get("account"): e
               for e in doc["blocked"]}
        a, b, n = got["127.0.7.1"], got["bob"], got["198.51.100.0/24"]
        assert a["type"] == "address" and a["by"] == "attack"
        assert a["failures"] == 3 and a["accounts"] == 3
        assert 600 <= a["duration_s"] <= 1200 and 0 < a["left_s"] <= a["duration_s"]
        # what status says of it, to the second (or the one after)
        st = run_json(conf, "status", "127.0.7.1", expect=EXIT_REJECTED)
        assert 0 <= a["left_s"] - st["block_left_s"] <= 1, (a, st)
        assert b["type"] == "account" and b["by"] == "attack" and b["failures"] == 3
        assert b["duration_s"] == 1200 and 0 < b["left_s"] <= 1200
        assert n["type"] == "subnet" and n["by"] == "admin"
        assert n["duration_s"] == 86400 and 86000 < n["left_s"] <= 86400
        assert abs(a["set_at"] - time.time()) < 600
        # newest first
        assert [e["set_at"] for e in doc["blocked"]] == \
            sorted((e["set_at"] for e in doc["blocked"]), reverse=True)

        assert_nothing_in_clear(m, ["bob", "ursula", "ulrich", "umberto"],
                                ["127.0.7.1", "198.51.100.0", "127.8.3.1"])

        # lifted: gone from the list (the ring still holds them, sealed)
        assert run(conf, "unblock", "127.0.7.1").returncode == EXIT_OK
        assert {l.split()[1] for l in list_lines(conf)[1:-1]} == \
            {"bob", "198.51.100.0/24"}
        assert run(conf, "unlock", "bob").returncode == EXIT_OK
        assert run(conf, "unblock", "198.51.100.0/24").returncode == EXIT_OK
        assert list_lines(conf) == ["0 blocked or locked now"]
        doc = run_json(conf, "list")
        assert doc["count"] == 0 and doc["blocked"] == [] and doc["recorded"] == 3


def test_list_keeps_the_most_recent_blocks(conf):
    slots = int(re.search(r"#define AB_RECENT_SLOTS (\d+)", RECENT_H.read_text()).group(1))
    assert run_json(conf, "list")["slots"] == slots
    total = slots + 2
    for i in range(total):
        r = run(conf, "block", f"10.9.{i // 200}.{i % 200}", "--for", "1h")
        assert r.returncode == EXIT_OK, r.err
    doc = run_json(conf, "list")
    assert doc["recorded"] == total and doc["count"] == slots
    shown = {e["address"] for e in doc["blocked"]}
    # the two oldest were overwritten; still blocked, no longer listed
    assert "10.9.0.0" not in shown and "10.9.0.1" not in shown
    assert run_json(conf, "status", "10.9.0.0", expect=EXIT_REJECTED)["blocked"]
    assert f"10.9.{(total - 1) // 200}.{(total - 1) % 200}" in shown
    r = run(conf, "list")
    assert r.out.splitlines()[-1] == (
        f"{slots} blocked or locked now (of the {slots} most recent blocks and "
        "locks; 2 older ones are not kept: authbrake status tells of one you know)")


def test_list_leaves_out_an_expired_block(conf):
    assert run(conf, "block", "192.0.2.99", "--for", "1s").returncode == EXIT_OK
    assert run(conf, "block", "192.0.2.98", "--for", "1h").returncode == EXIT_OK
    deadline = time.monotonic() + 10
    while run_json(conf, "status", "192.0.2.99", expect=None)["blocked"]:
        assert time.monotonic() < deadline, "a 1s block did not end"
        time.sleep(0.2)
    doc = run_json(conf, "list")
    assert [e["address"] for e in doc["blocked"]] == ["192.0.2.98"]


# ------------------------------------------------------------ manual pages

@pytest.mark.parametrize("page", [MAN_CLI, MAN_CONF], ids=lambda p: p.name)
def test_man_page_renders_without_warnings(page):
    groff = shutil.which("groff")
    assert groff, "groff (groff-base) is needed"
    r = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(page)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=dict(os.environ, LC_ALL="C.UTF-8"), timeout=30)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


def test_man_page_documents_every_command_and_exit_code():
    man = MAN_CLI.read_text()
    for cmd in ("status", "list", "check", "unlock", "block", "unblock", "genkey",
                "config"):
        assert re.search(rf"^\.TP\n\.B[IR]? {cmd}\b", man, re.M), f"{cmd} not in authbrake(8)"
    exit_section = man.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    assert re.findall(r"^\.B ([0-9])$", exit_section, re.M) == ["0", "1", "2", "3", "4"]
