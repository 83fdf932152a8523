"""Real servers for authbrake's integration tests: memcached, Dovecot, clients.

Every server gets its own temporary directory and free 127.0.0.1 ports, and
is stopped by PID (also when a test fails: use them as context managers or
through the fixtures in conftest.py). Standard library only.

API (stable; other test modules import it):

BUILD_DIR  POLICY_BIN  CLI_BIN  PAM_MODULE
    The binaries under test: in REPO_ROOT/$AB_BUILD_DIR (default build/).

Sanitizer builds (make check-sanitize: AB_BUILD_DIR=build/san):
SANITIZED           True when the binaries under test link ASan
sanitizer_setup()   once per run: empty SANITIZER_LOG_DIR, options in os.environ
sanitizer_env() -> {ASAN_OPTIONS, UBSAN_OPTIONS} ({} if not SANITIZED)
sanitizer_reports() -> {path: text}   every non-empty report so far
host_preload() -> str   LD_PRELOAD for a host that dlopen()s pam_authbrake.so

free_port() -> int
    A TCP port on 127.0.0.1 that was free a moment ago, below the ephemeral
    range and never handed out twice in one run.

class Memcached(port=None, memory_mb=64)          context manager
    .start()  .stop()  .kill() (SIGKILL)  .pause() (SIGSTOP)  .resume() (SIGCONT)
    .restart()  start again on the *same* port (state is lost: it is a new process)
    .pid  .port  .address ("127.0.0.1:PORT")  .running
    .command(line) -> str       one raw text-protocol command ("stats", "flush_all")
    .stats() -> {name: str}     memcached's `stats` counters
    .dump_keys() -> [str]       every key stored (lru_crawler metadump)

class SystemUsers()                                 context manager
    Real Unix accounts for PAM stacks (pam_unix checks /etc/shadow):
    .add(password, tag="c") -> name   useradd -m + chpasswd; the name is
        TEST_USER_PREFIX + tag + 8 hex digits, the comment TEST_USER_MARK +
        this run's PID
    .remove_all()   userdel -r -f (also when a test failed)
remove_leftover_users()   at the start of a run: the marked users of runs
    whose PID is gone (a run that was killed); nothing else
random_password() -> str   letters, digits, "-", "_"; never a leading "-"

write_authbrake_conf(dir, memcached_servers, **overrides) -> AuthbrakeConf
    Writes DIR/secret (64 hex digits, 0600), DIR/api-key (0600) and
    DIR/authbrake.conf with TEST_DEFAULTS updated by overrides
    (key=value; a value None drops the key so the tracker's default holds;
    lists/tuples are joined with ", "). The result is the conf path (a str)
    with .api_key, .secret_file, .api_key_file, .settings (dict written).
    memcached_servers may be a Memcached, a list of them, or a string.

class Dovecot(dir=None, users=None, policy_conf=None, trusted_networks=None,
              extra_conf="", policy_user="root", anvil_penalty=False,
              policy_after_auth=False, settings=None, max_clients=None,
              postfix_listener=None, stats_http=False, policy_bin=None,
              auth_debug=True)
                                                              context manager
    Self-contained dovecot.conf in the host Dovecot's configuration
    language (2.3 or 2.4: DOVECOT_LANG) (base_dir, state_dir, log file in
    its own dir), `dovecot -F -c CONF`, IMAP and POP3 listeners on free
    127.0.0.1 ports, ssl = no, cleartext auth allowed, auth_failure_delay = 0,
    auth_verbose + the auth process's debug lines (every password check
    shows in the log; auth_debug=False leaves them out),
    passwd-file passdb/userdb ({PLAIN} passwords; users = {name: password},
    default DEFAULT_USERS). With policy_conf (a path from write_authbrake_conf)
    the config `!include`s the shipped drop-in for the host's Dovecot (DROPIN_CONF)
    and then overrides only the service's executable (POLICY_BIN, or
    policy_bin, -C policy_conf),
    its port (.policy_port), its user, auth_policy_server_url, the API header
    and the hash nonce; policy_after_auth=True sets Dovecot's default
    auth_policy_check_after_auth = yes over the drop-in's "no".
    settings = {dovecot setting: value} is written after all that (e.g.
    {"auth_username_format": "%Ln"}), then extra_conf verbatim.
    postfix_listener=PATH: an auth socket for Postfix's SASL client at
    PATH (a Postfix's .sasl_socket), mode 0660, user and group postfix.
    max_clients=N: login services in high-performance mode (long-lived
    processes, client_limit >= N) so N connections can be open at once.
    stats_http=True: Dovecot's stats service listens for HTTP on a free
    port (.stats_port); .scrape() -> str is its /metrics (OpenMetrics),
    where the drop-in's metric { } blocks show authbrake's events.
    trusted_networks -> login_trusted_networks. anvil_penalty=False turns off
    Dovecot's own per-address delay (2..15 s after failures) so tests measure
    authbrake alone; True keeps it as production has it.
    .start() .stop() .reload() (SIGHUP)  .pid  .imap_port  .pop3_port
    .policy_port  .conf_path  .log_path  .dir  .policy_conf  .api_key
    .add_user(name, password)
    .auth_test(user, pw, rip, service="imap", extra=None) -> (ok, output, seconds)
    .imap_login(user, pw, src="127.0.0.1", timeout=30, forwarded_ip=None)
    .pop3_login(user, pw, src="127.0.0.1", timeout=30, forwarded_ip=None)
        -> (ok, message, seconds); forwarded_ip makes the client a proxy
        (IMAP ID x-originating-ip / POP3 XCLIENT ADDR=), which Dovecot
        believes when src is in trusted_networks (login_trusted_networks)
    .log_text() -> str   .log_mark() -> int   .log_since(mark) -> str
    .wait_log(regex, since=0, timeout=5) -> re.Match | None
    .policy_pids() -> [int]     authbrake-policy processes under this master
    .policy_post(command, body, api_key=True, headers=None) -> (status, text)
    .scrape() -> str    the stats service's /metrics (stats_http=True)

class Postfix(dir=None, settings=None)                         context manager
    A Postfix instance of its own (Debian's postfix; the system instance is
    not touched): config_directory, queue, data dir and maillog_file under
    .dir; main.cf = a loopback/discard base + the shipped
    conf.d/postfix/main.cf.authbrake + settings; master.cf = the services it
    needs + the shipped master.cf.submission on .port (STARTTLS with a
    throw-away certificate, AUTH through Dovecot). Made before its Dovecot:
    Dovecot(postfix_listener=pf.sasl_socket), then pf.start().
    .start() .stop() (master by PID)  .pid  .port  .sasl_socket  .log_text()
    .smtp(src, helo, timeout=30, insist=False) -> SmtpClient
SmtpClient(port, src, helo, timeout, insist)   EHLO, STARTTLS, EHLO;
    .ehlo_reply  .replies  .auth("PLAIN"|"LOGIN", user, pw) -> (SmtpReply, s)
    .send(sender, rcpt, body) -> [SmtpReply]  .command(line) -> SmtpReply
smtp_auth(port, user, pw, src, mech="PLAIN") -> (SmtpReply, seconds)
SmtpReply = (code, text)

cli_status(conf, target) -> dict   `authbrake -c CONF --json status TARGET`

imap_login / pop3_login / auth_test are also module functions taking the
ports/conf first. `seconds` is the time of the authentication exchange
(LOGIN, or USER+PASS), not of connecting.

parse_openmetrics(text) -> {(name, ((label, value), ...)): float}
    The samples of an OpenMetrics scrape (Dovecot's stats /metrics); labels
    sorted. Raises ValueError on a line that is not a valid sample.
metric_value(samples, name, **labels) -> float   one sample (0 when absent)

class Dnsmasq(listed=(), ttl=600)                 context manager
    A DNS server on loopback (.resolver "127.0.0.1:PORT") with test zones:
    bl.test lists the addresses in listed (127.0.0.2, TTL ttl), slow.test
    never answers, fail.test answers SERVFAIL. .queries(name) -> int
    queries it received for name; .log_text()

class Prometheus(targets)                          context manager
    A real Prometheus server (Debian's prometheus) scraping targets
    (["127.0.0.1:PORT", ...]) every second, on a free port, TSDB in its own
    dir. .wait_target_up() -> the target's health ("up", "down" with
    .last_error)  .query(promql) -> [(labels dict, float)]

http_post(port, path, body, headers=None, timeout=10) -> (status, text)
    Raw HTTP POST to 127.0.0.1:port (body: bytes, str or JSON-able object).

Bare IMAP (any bytes in a user name, wall-clock times):
ImapClient(port, src, timeout)   connects and reads the greeting;
    .login(user, pw) -> (ok, msg, t_sent, t_answer)   .close()
imap_login_raw(port, user, pw, src) -> LoginResult
parallel_imap_logins(port, [(user, pw, src), ...], timeout=60) -> [LoginResult]
    every connection opened first, then every LOGIN released at once;
    LoginResult = (ok, msg, t_sent, t_answer, user, src) with those names.

Reading Dovecot's log (password checks are counted where the passdb logs them):
passdb_checks(dovecot, user=None, since=0, address=None) -> int
passdb_check_list(...) -> [PassdbCheck(user, address, session, outcome, stamp)]
settle_log(dovecot, sentinel_ip=None)   wait until the auth lines of every
    answered request are in the log (a sentinel lookup, LOG_SENTINEL_USER)
policy_decisions(dovecot, since, address=None) -> [dict]   per-decision lines
account_locks(dovecot, since, account=None) -> [(account, seconds, failures)]
address_blocks(dovecot, since, address=None)
    -> [(kind, address, seconds, failures, accounts)]
fail_mode_lines(dovecot, since)    decisions that fell to fail_mode, store errors
policy_failures(dovecot, since)    Dovecot's own policy request errors/timeouts
parse_duration("1m30s") -> 90
"""

import errno
import http.client
import imaplib
import json
import os
import poplib
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where the binaries under test are: AB_BUILD_DIR (relative to the
# repository), build/ by default; `make check-sanitize` runs the tests
# against its ASan+UBSan build in build/san.
BUILD_DIR = REPO_ROOT / os.environ.get("AB_BUILD_DIR", "build")
POLICY_BIN = BUILD_DIR / "authbrake-policy"
CLI_BIN = BUILD_DIR / "authbrake"
PAM_MODULE = BUILD_DIR / "pam_authbrake.so"
# Downloads and unpacked packages are the same whatever the build: they
# stay in build/ (a sanitizer run need not fetch Courier again).
CACHE_DIR = REPO_ROOT / "build"


def _debian_codename():
    try:
        with open("/etc/os-release") as f:
            m = re.search(r"^VERSION_CODENAME=(\w+)", f.read(), re.M)
            return m.group(1) if m else ""
    except OSError:
        return ""


# What is cached per Debian release is named with this suffix, except on
# Debian 12 where it was cached before (build/courier-debs).
DEBIAN_CODENAME = _debian_codename()
DEBIAN_SUFFIX = "" if DEBIAN_CODENAME in ("", "bookworm") else "-" + DEBIAN_CODENAME

DOVECOT_BIN = shutil.which("dovecot") or "/usr/sbin/dovecot"


def _dovecot_version():
    """(major, minor) of the Dovecot on this host, or None without one."""
    try:
        out = subprocess.run([DOVECOT_BIN, "--version"], capture_output=True,
                             text=True, timeout=10).stdout
    except OSError:
        return None
    m = re.match(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


# Dovecot 2.4 (Debian 13) speaks another configuration language than 2.3
# (Debian 12): Dovecot writes its config in the host's language, and
# every Dovecot with a policy includes the drop-in written in it.
DOVECOT_VERSION = _dovecot_version()
DOVECOT_24 = DOVECOT_VERSION is not None and DOVECOT_VERSION >= (2, 4)
POSTFIX_BIN = shutil.which("postfix") or "/usr/sbin/postfix"
# Debian's postfix: the daemons live in daemon_directory
POSTFIX_MASTER_BIN = "/usr/lib/postfix/sbin/master"
OPENSSL_BIN = shutil.which("openssl") or "/usr/bin/openssl"
PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
DOVEADM_BIN = shutil.which("doveadm") or "/usr/bin/doveadm"
MEMCACHED_BIN = shutil.which("memcached") or "/usr/bin/memcached"

DEFAULT_USERS = {
    "alice": "alice-secret-1",
    "bob": "bob-secret-2",
    "carol": "carol-secret-3",
}

# Small thresholds so a test reaches each state in a few attempts and a
# tarpit costs little; the production defaults are in tracker/ab-config.c.
TEST_DEFAULTS = {
    "fail_mode": "open",
    "fail_log_interval": "1s",
    # tests check each decision right after the state behind it changed
    # (an unblock, a success): a process must not answer from its memory
    # of refusals; test_refusals_remembered_cost_memcached_nothing turns
    # it on
    "verdict_cache": "0",
    "ip_window": "10m",
    "ip_free_failures": 3,
    "ip_block_failures": 8,
    "ip_max_accounts": 5,
    "net_free_failures": 20,
    "net_block_failures": 60,
    "net_max_accounts": 20,
    "tarpit_max": "2s",
    "block_time": "60s",
    "block_max": "5m",
    "account_window": "10m",
    "account_lock_failures": 5,
    "familiar_failures": 5,
    "lock_time": "5m",
    "familiar_days": 1,
    # Off by default here: a repeat is recognised by a 12-bit hash from
    # Dovecot (auth_policy_hash_truncate), so 1 pair of distinct guesses in
    # 4096 looks like a retry and is not counted, and a test counting
    # exact failures would fail now and then. The tests of the retry rule
    # turn it on themselves.
    "password_repeat": 0,
}

# What the harness's dovecot.conf says differently in each configuration
# language, keyed by DOVECOT_24; every other line is the same in both.
DOVECOT_LANG = {
    False: {
        "version": "",
        "cleartext": "disable_plaintext_auth = no",
        "mail": "mail_location = maildir:~/Maildir",
        "login_log": "user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>",
        "passdb": """passdb {{
  driver = passwd-file
  args = scheme=PLAIN {path}
}}
userdb {{
  driver = passwd-file
  args = {path}
}}
""",
        "address": "address",
        "debug": "auth_debug = yes",
        "service_count": "service_count = 0",
        "internal_user": "$default_internal_user",
    },
    True: {
        # must be the first setting
        "version": "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n",
        "cleartext": "auth_allow_cleartext = yes",
        "mail": "mail_driver = maildir\nmail_path = ~/Maildir",
        "login_log": ("user=<%{user}> method=%{mechanism} rip=%{remote_ip} "
                      "lip=%{local_ip} mpid=%{mail_pid} %{secured} session=<%{session}>"),
        "passdb": """passdb passwd-file {{
  passwd_file_path = {path}
  default_password_scheme = PLAIN
}}
userdb passwd-file {{
  passwd_file_path = {path}
}}
""",
        "address": "listen",
        # 2.4's auth_debug no longer logs the passdb's lookups
        "debug": "log_debug = category=auth",
        "service_count": "restart_request_count = unlimited",
        "internal_user": "$SET:default_internal_user",
    },
}


def dovecot_policy_setting(name, conf=None):
    """auth_policy_<name> as in force for Dovecot's auth process, from
    `doveconf -n -P` (conf: a dovecot.conf; default the system's): "" when
    it is at its default. 2.3 prints "auth_policy_<name> = ...", 2.4
    "<name> = ..." inside its auth_policy { } filter, where the auth
    process reads it (2.4's `doveconf -h auth_policy_<name>` answers the
    default or "Multiple settings matched" instead)."""
    cmd = ["doveconf", "-n", "-P"] + (["-c", str(conf)] if conf else [])
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, timeout=30).stdout
    m = re.search(r"(?m)^\s*(?:auth_policy_)?%s = (.*)$" % re.escape(name), out)
    return m.group(1).strip() if m else ""


# The Dovecot drop-in users install: every Dovecot with a policy includes it.
DROPIN_CONF = REPO_ROOT / "conf.d" / ("dovecot-2.4/95-authbrake.conf" if DOVECOT_24
                                     else "95-authbrake.conf")


# Ports free_port() has handed out in this process. Asking the kernel for
# port 0 twice can answer the same port twice once the first probe socket is
# closed (CI once gave a Dovecot the same port for IMAP and POP3), so a port is
# handed out at most once per run.
_ports_given = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# where the kernel picks client connections' local ports from
_EPHEMERAL_LOW = _ephemeral_low()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on, never handed out
    before in this process, and below the kernel's ephemeral range, so that
    no client connection's local port takes it before its server binds."""
    low, high = 10000, _EPHEMERAL_LOW
    for _ in range(1000):
        if high - low >= 1000:
            port = low + secrets.randbelow(high - low)
        else:                       # a host with an odd range: ask the kernel
            port = 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("free_port: no free 127.0.0.1 port found in 1000 tries")


def wait_port(port, timeout=10.0, host="127.0.0.1", proc=None):
    """Wait until something accepts on host:port; False on timeout or if proc died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    # a zombie still answers kill(0): look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def reap(pids, timeout=3.0):
    """Give processes that should be going (children of a stopped server)
    until timeout to end, then SIGKILL what is left, by PID."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _stop_process(proc, sig=signal.SIGTERM, timeout=10.0):
    """Signal a Popen, wait for it, SIGKILL it if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _children_of(ppid):
    """PIDs whose parent is ppid (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            out.append(int(name))
    return out


def _descendants_of(pid):
    out, todo = [], [pid]
    while todo:
        kids = _children_of(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


# -------------------------------------------------------------- sanitizers
# `make check-sanitize` builds authbrake-policy, pam_authbrake.so and the
# CLI with ASan+UBSan into build/san and runs these tests against them.
# Every report goes to a file of its own (log_path appends the PID) in
# SANITIZER_LOG_DIR; conftest.py fails a test after which one appeared.
# Only our code is instrumented: Dovecot, pamtester and Courier are not.

def _built_with_asan():
    """True when the binaries under test need the ASan runtime."""
    for path in (PAM_MODULE, CLI_BIN, POLICY_BIN):
        try:
            with open(path, "rb") as f:
                return b"libasan.so" in f.read()
        except OSError:
            continue
    return False


SANITIZED = _built_with_asan()
SANITIZER_LOG_DIR = REPO_ROOT / (os.environ.get("AB_SANITIZER_LOG_DIR")
                                  or BUILD_DIR / "sanitizer-logs")


# a sanitizer's lines in a log that should have none
SANITIZER_LOG_RE = re.compile(r"(?:Address|Leak|UndefinedBehavior)Sanitizer|runtime error: ")


def sanitizer_env():
    """ASAN_OPTIONS and UBSAN_OPTIONS for every instrumented process: stop
    at the first error (exit status 1, no core), leaks checked at exit
    (only at exit: the policy service is long-lived), reports into
    SANITIZER_LOG_DIR. {} for an ordinary build."""
    if not SANITIZED:
        return {}
    d = SANITIZER_LOG_DIR
    return {
        "ASAN_OPTIONS": f"halt_on_error=1:abort_on_error=0:detect_leaks=1:"
                        f"log_path={d}/asan",
        "UBSAN_OPTIONS": f"halt_on_error=1:abort_on_error=0:print_stacktrace=1:"
                         f"log_path={d}/ubsan",
    }


def sanitizer_setup():
    """Once per test run: an empty report directory (1777: the policy
    service may have dropped to another user when it writes a report) and
    the options in os.environ, which the CLI, pamtester and Dovecot's
    master (import_environment passes them on) inherit."""
    if not SANITIZED:
        return
    SANITIZER_LOG_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(SANITIZER_LOG_DIR, 0o1777)
    for p in SANITIZER_LOG_DIR.iterdir():
        p.unlink()
    os.environ.update(sanitizer_env())


def sanitizer_reports():
    """{path: text} of every non-empty report file so far."""
    if not SANITIZED or not SANITIZER_LOG_DIR.is_dir():
        return {}
    out = {}
    for p in sorted(SANITIZER_LOG_DIR.iterdir()):
        try:
            if p.stat().st_size > 0:
                out[str(p)] = p.read_text(errors="replace")
        except OSError:
            pass
    return out


_host_preload = None


def host_preload():
    """LD_PRELOAD for an uninstrumented program that dlopen()s the
    sanitizer build of pam_authbrake.so (pamtester, Courier's authdaemond):
    ASan must be the first library of the process, so its runtime (and
    UBSan's) are preloaded: the ones the module itself links against, as
    ldd resolves them. libcrypt too: ASan intercepts crypt_r() and looks
    the real one up when it starts; in a host where libcrypt arrives later
    (with pam_unix.so, dlopen()ed) that lookup finds nothing and pam_unix's
    crypt_r() call jumps to address 0. "" for an ordinary build."""
    global _host_preload
    if not SANITIZED:
        return ""
    if _host_preload is None:
        r = subprocess.run(["ldd", str(PAM_MODULE)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, check=False)
        libs = {}
        for m in re.finditer(r"^\s*(lib(asan|ubsan)\.so\S*) => (\S+)", r.stdout, re.M):
            libs[m.group(2)] = m.group(3)
        if "asan" not in libs:
            raise RuntimeError(f"no libasan in ldd {PAM_MODULE}:\n{r.stdout}")
        _host_preload = " ".join([libs[k] for k in ("asan", "ubsan") if k in libs]
                                 + ["libcrypt.so.1"])
    return _host_preload


# --------------------------------------------------------------- memcached

class Memcached:
    """A private memcached on 127.0.0.1 (TCP only, -U 0), stopped by PID."""

    def __init__(self, port=None, memory_mb=64):
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.memory_mb = memory_mb
        self.dir = tempfile.mkdtemp(prefix="ab-memcached-")
        self.proc = None
        self.paused = False

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running:
            return self
        cmd = [MEMCACHED_BIN, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
               "-m", str(self.memory_mb), "-c", "1024"]
        if os.geteuid() == 0:
            cmd += ["-u", "memcache" if _user_exists("memcache") else "nobody"]
        self.log = open(os.path.join(self.dir, "memcached.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.paused = False
        if not wait_port(self.port, 10, proc=self.proc):
            self.stop()
            raise RuntimeError(f"memcached did not start on port {self.port}: "
                               + self._log_tail())
        return self

    def _log_tail(self):
        try:
            with open(os.path.join(self.dir, "memcached.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def pause(self):
        """SIGSTOP: the port still accepts connections but nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self):
        if self.proc is None:
            return
        if self.paused and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False
        _stop_process(self.proc, signal.SIGTERM, 5)
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def kill(self):
        """SIGKILL, as a crash would."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(5)
        self.proc = None
        self.paused = False

    def restart(self):
        """Stop and start again on the same port (an empty cache)."""
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                return self.start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def command(self, line, timeout=3.0):
        """Send one text-protocol command, return the reply up to END/OK/etc."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(line.encode() + b"\r\n")
            data = b""
            ends = (b"END\r\n", b"OK\r\n", b"ERROR\r\n", b"STORED\r\n",
                    b"DELETED\r\n", b"NOT_FOUND\r\n")
            while not any(data.endswith(e) for e in ends):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.isdigit() or re.fullmatch(rb"\d+\r\n", data):
                    break
            return data.decode(errors="replace")

    def get_raw(self, key, timeout=3.0):
        """A key's value, exactly the bytes stored (None when missing)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(f"get {key}\r\n".encode())
            data = b""
            while True:
                if data.startswith(b"END\r\n"):
                    return None
                m = re.match(rb"VALUE \S+ \d+ (\d+)\r\n", data)
                if m and len(data) >= m.end() + int(m.group(1)) + 2:
                    return data[m.end():m.end() + int(m.group(1))]
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk

    def stats(self):
        """memcached's `stats`, as {name: value string}."""
        out = {}
        for line in self.command("stats").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
        return out

    def dump_keys(self):
        """Every key in the cache (URL-encoded as memcached prints them)."""
        out = self.command("lru_crawler metadump all")
        keys = []
        for line in out.splitlines():
            m = re.match(r"key=(\S+)", line)
            if m:
                keys.append(m.group(1))
        return keys

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self):
        return f"<Memcached {self.address} pid={self.pid}>"


# ------------------------------------------------------------------- dnsmasq

DNSMASQ_BIN = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
# a root trust anchor no real DNSKEY matches: every name dnsmasq forwards
# to its default upstream fails DNSSEC validation, which it answers SERVFAIL
_BOGUS_ROOT_ANCHOR = (".,20326,8,2,"
                      "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D")


class Dnsmasq:
    """A DNS server on 127.0.0.1 (Debian's dnsmasq-base), stopped by PID,
    serving three test zones:
      bl.test    a blocklist: the addresses in listed are listed (answer
                 127.0.0.2, TTL ttl), every other name is NXDOMAIN
      slow.test  forwarded to a UDP socket this object holds and never
                 reads: no answer ever comes (a timeout)
      fail.test  forwarded to a second dnsmasq that answers it unsigned,
                 while this one validates DNSSEC against a bogus root
                 anchor: SERVFAIL
    Every query is logged: .queries(name) counts those for a name."""

    def __init__(self, listed=(), ttl=600):
        self.dir = tempfile.mkdtemp(prefix="ab-dnsmasq-")
        self.port = free_port()
        self.upstream_port = free_port()
        self.listed = list(listed)
        self.ttl = ttl
        self.procs = []
        self.blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.blackhole.bind(("127.0.0.1", 0))
        self.resolver = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.dir, "dnsmasq.log")

    @staticmethod
    def reversed_name(address, zone):
        return ".".join(reversed(address.split("."))) + "." + zone

    def _run(self, port, args, log):
        cmd = [DNSMASQ_BIN, "--keep-in-foreground", "--conf-file=/dev/null",
               "--no-resolv", "--no-hosts", "--pid-file=",
               "--listen-address=127.0.0.1", "--bind-interfaces",
               f"--port={port}", f"--log-facility={log}", "--log-queries"]
        if os.geteuid() == 0:
            cmd.append("--user=root")   # its files are in our temp dir
        cmd += args
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        if not wait_port(port, 10, proc=proc):
            err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"dnsmasq did not start on port {port}: {err}")

    def start(self):
        self._run(self.upstream_port,
                  ["--local=/fail.test/", "--host-record=2.0.0.127.fail.test,127.0.0.2"],
                  os.path.join(self.dir, "upstream.log"))
        args = ["--local=/bl.test/", f"--local-ttl={self.ttl}",
                f"--server=/slow.test/127.0.0.1#{self.blackhole.getsockname()[1]}",
                f"--server=127.0.0.1#{self.upstream_port}",
                "--dnssec", f"--trust-anchor={_BOGUS_ROOT_ANCHOR}"]
        args += [f"--host-record={self.reversed_name(a, 'bl.test')},127.0.0.2"
                 for a in self.listed]
        self._run(self.port, args, self.log_path)
        return self

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def queries(self, name):
        """How many queries for name this server received."""
        return len(re.findall(r"query\[A\] " + re.escape(name) + r" from ",
                              self.log_text()))

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                _stop_process(proc, signal.SIGTERM, 5)
            if proc.stderr:
                proc.stderr.close()
        self.procs = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.blackhole.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


# A shell function for a script run in a private mount namespace
# (unshare -m): `dev_log DIR SOCKET` makes /dev/log there a symlink to the
# test's SOCKET (pam_syslog writes to it), the host's /dev untouched: an
# overlay on /dev with that one symlink added, its upper layer on a tmpfs
# mounted at DIR, an empty directory (an upper dir cannot be on overlayfs).
DEV_LOG_SH = r"""
dev_log() {
    mount -t tmpfs -o size=1m,mode=0755 tmpfs "$1"
    mkdir "$1/upper" "$1/work"
    mount -t overlay overlay -o "lowerdir=/dev,upperdir=$1/upper,workdir=$1/work" /dev
    ln -sf "$2" /dev/log
}
"""


# ------------------------------------------------------------- Unix users

TEST_USER_PREFIX = "ab"
TEST_USER_MARK = "authbrake test user, removed after the tests; pid"
_TEST_USER_COMMENT_RE = re.compile(re.escape(TEST_USER_MARK) + r" ([0-9]+)")


def random_password():
    """A fresh password every client here sends as it is: an IMAP quoted
    string, POP3 PASS, a doveadm argument, a passwd-file field (letters,
    digits, '-' and '_'; never a leading '-', which doveadm would take for
    an option)."""
    return "pw-" + secrets.token_urlsafe(18)


def _userdel(pw):
    """userdel -f (a login may still be running as the user) with the home
    directory (-r) only when the user owns it: "" when done, else why not."""
    cmd = ["userdel", "-f"]
    try:
        if os.stat(pw.pw_dir).st_uid == pw.pw_uid:
            cmd.append("-r")
    except OSError:
        pass
    r = subprocess.run(cmd + [pw.pw_name], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    # 6: gone already (the useradd that made it failed half-way)
    if r.returncode in (0, 6):
        return ""
    return f"userdel {pw.pw_name}: " + r.stdout.decode(errors="replace")


class SystemUsers:
    """Real Unix accounts (pam_unix checks /etc/shadow), removed with their
    home directories after. Each is named TEST_USER_PREFIX + tag + random
    hex and carries TEST_USER_MARK + the PID of this run as its comment, so
    remove_leftover_users() at the next start removes those of a run that
    was killed, and no other account is ever touched."""

    def __init__(self):
        self.names = []

    def add(self, password, tag="c"):
        name = f"{TEST_USER_PREFIX}{tag}{secrets.token_hex(4)}"
        self.names.append(name)          # before useradd: remove even half-made
        for cmd, text in ((["useradd", "-m", "-s", "/usr/sbin/nologin", "-c",
                            f"{TEST_USER_MARK} {os.getpid()}", name], None),
                          (["chpasswd"], f"{name}:{password}\n")):
            r = subprocess.run(cmd, input=text, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            if r.returncode != 0:
                raise RuntimeError(f"{cmd[0]} {name}: {r.stdout}")
        return name

    def remove_all(self):
        errors = []
        while self.names:
            name = self.names.pop()
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                continue
            errors.append(_userdel(pw))
        if any(errors):
            raise RuntimeError("\n".join(e for e in errors if e))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove_all()


def remove_leftover_users():
    """Remove the SystemUsers of runs that were killed: named with
    TEST_USER_PREFIX, marked with TEST_USER_MARK and a PID no process has
    now (or this one's, which has made none yet). A run still going keeps
    its users; an account without the mark is never touched."""
    for pw in pwd.getpwall():
        m = _TEST_USER_COMMENT_RE.fullmatch(pw.pw_gecos)
        if not (m and pw.pw_name.startswith(TEST_USER_PREFIX)):
            continue
        pid = m.group(1)
        if pid != str(os.getpid()) and os.path.exists(f"/proc/{pid}"):
            continue
        _userdel(pw)


# ------------------------------------------------------------ authbrake.conf

class AuthbrakeConf(str):
    """The path of an authbrake.conf, carrying what a test needs about it."""
    api_key = ""
    api_key_file = ""
    secret_file = ""
    settings = None


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _servers_str(servers):
    if isinstance(servers, Memcached):
        return servers.address
    if isinstance(servers, (list, tuple)):
        return ", ".join(_servers_str(s) for s in servers)
    return str(servers)


def write_authbrake_conf(dir, memcached_servers, **overrides):
    """Write secret, api key and authbrake.conf into dir; return the conf path."""
    dir = str(dir)
    os.makedirs(dir, exist_ok=True)
    secret_file = os.path.join(dir, "secret")
    api_key_file = os.path.join(dir, "api-key")
    conf_path = os.path.join(dir, "authbrake.conf")
    api_key = secrets.token_hex(16)
    _write_private(secret_file, secrets.token_hex(32) + "\n")
    _write_private(api_key_file, api_key + "\n")

    settings = {"secret_file": secret_file, "api_key_file": api_key_file,
                "memcached_servers": _servers_str(memcached_servers)}
    settings.update(TEST_DEFAULTS)
    for key, value in overrides.items():
        if value is None:
            settings.pop(key, None)
        elif isinstance(value, (list, tuple)):
            settings[key] = ", ".join(str(v) for v in value)
        else:
            settings[key] = value
    lines = ["# authbrake.conf written by test/integration/harness.py"]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    with open(conf_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(conf_path, 0o644)

    path = AuthbrakeConf(conf_path)
    path.api_key = api_key
    path.api_key_file = api_key_file
    path.secret_file = secret_file
    path.settings = settings
    return path


# ------------------------------------------------------------ metrics

_OM_SAMPLE_RE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \S+)?$')
_OM_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def parse_openmetrics(text):
    """{(name, sorted label pairs): value} of an OpenMetrics text."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _OM_SAMPLE_RE.match(line)
        if not m:
            raise ValueError(f"not an OpenMetrics sample: {line!r}")
        name, labels_text, value = m.groups()
        labels = []
        rest = labels_text or ""
        while rest:
            lm = _OM_LABEL_RE.match(rest)
            if not lm:
                raise ValueError(f"bad labels in {line!r}")
            labels.append((lm.group(1), lm.group(2)))
            rest = rest[lm.end():]
        samples[(name, tuple(sorted(labels)))] = float(value)
    return samples


def metric_value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Prometheus:
    """A private Prometheus server scraping targets every second."""

    def __init__(self, targets):
        self.targets = list(targets)
        self.dir = tempfile.mkdtemp(prefix="ab-prometheus-")
        self.port = free_port()
        self.proc = None
        self.last_error = ""

    def start(self, timeout=30):
        conf = os.path.join(self.dir, "prometheus.yml")
        targets = ", ".join(f"'{t}'" for t in self.targets)
        with open(conf, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: dovecot
    static_configs:
      - targets: [{targets}]
""")
        self._log = open(os.path.join(self.dir, "prometheus.log"), "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS_BIN, f"--config.file={conf}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        # the port opens before the storage is ready (503 until then)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("prometheus did not start: see " + self.dir)
            time.sleep(0.1)
        return self

    def _ready(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/-/ready")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def _get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode()
            try:
                return json.loads(body)
            except ValueError:
                raise RuntimeError(f"prometheus {path}: {resp.status} {body[:300]!r}")
        finally:
            conn.close()

    def wait_target_up(self, timeout=30):
        """Wait for a scrape of every target; the health of the last one
        scraped ("up", or "down" with .last_error), or "unknown"."""
        deadline = time.monotonic() + timeout
        health = "unknown"
        while time.monotonic() < deadline:
            targets = self._get("/api/v1/targets")["data"]["activeTargets"]
            done = [t for t in targets if t["health"] != "unknown"]
            if targets and len(done) == len(targets):
                bad = [t for t in done if t["health"] != "up"]
                self.last_error = bad[0]["lastError"] if bad else ""
                return "down" if bad else "up"
            time.sleep(0.2)
        return health

    def query(self, promql):
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        data = self._get(path)
        if data.get("status") != "success":
            raise RuntimeError(f"prometheus query {promql!r}: {data}")
        return [(r["metric"], float(r["value"][1])) for r in data["data"]["result"]]

    def stop(self):
        _stop_process(self.proc, signal.SIGTERM, 15)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ clients

class _BoundSource:
    """A client whose socket leaves from source address src (any 127.x.y.z)."""

    def __init__(self, host, port, src, timeout):
        self._src = src
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._src, 0))


class _BoundIMAP(_BoundSource, imaplib.IMAP4):
    pass


class _BoundPOP3(_BoundSource, poplib.POP3):
    pass


def _text(x):
    if isinstance(x, (bytes, bytearray)):
        return x.decode(errors="replace")
    if isinstance(x, list):
        return " ".join(_text(i) for i in x)
    return str(x)


def imap_login(port, user, password, src="127.0.0.1", timeout=30,
               forwarded_ip=None):
    """LOGIN over IMAP from source address src: (ok, server message, seconds).
    forwarded_ip: first send ID ("x-originating-ip" ...) as a proxy does
    (Dovecot believes it when src is in login_trusted_networks)."""
    conn = _BoundIMAP("127.0.0.1", port, src, timeout)
    try:
        if forwarded_ip is not None:
            conn.xatom("ID", f'("x-originating-ip" "{forwarded_ip}")')
        t0 = time.monotonic()
        try:
            typ, data = conn.login(user, password)
            ok, msg = typ == "OK", _text(data)
        except (imaplib.IMAP4.error, imaplib.IMAP4.abort) as e:
            ok, msg = False, _text(e.args[0] if e.args else e)
        except (OSError, EOFError) as e:
            ok, msg = False, f"connection error: {e!r}"
        seconds = time.monotonic() - t0
        try:
            if ok:
                conn.logout()
            else:
                conn.shutdown()
        except Exception:
            pass
        return ok, msg, seconds
    finally:
        try:
            conn.sock.close()
        except Exception:
            pass


def pop3_login(port, user, password, src="127.0.0.1", timeout=30,
               forwarded_ip=None):
    """USER/PASS over POP3 from source address src: (ok, server message, seconds).
    forwarded_ip: first send XCLIENT ADDR=... as a proxy does."""
    conn = _BoundPOP3("127.0.0.1", port, src, timeout)
    try:
        if forwarded_ip is not None:
            conn._shortcmd(f"XCLIENT ADDR={forwarded_ip}")
        t0 = time.monotonic()
        try:
            conn.user(user)
            resp = conn.pass_(password)
            ok, msg = True, _text(resp)
        except poplib.error_proto as e:
            ok, msg = False, _text(e.args[0] if e.args else e)
        except (OSError, EOFError) as e:
            ok, msg = False, f"connection error: {e!r}"
        seconds = time.monotonic() - t0
        try:
            if ok:
                conn.quit()
        except Exception:
            pass
        return ok, msg, seconds
    finally:
        try:
            conn.close()
        except Exception:
            pass


def auth_test(conf_path, user, password, rip, service="imap", extra=None,
              timeout=60):
    """`doveadm -c CONF auth test -x rip=RIP -x service=...`: (ok, output, seconds)."""
    cmd = [DOVEADM_BIN, "-c", str(conf_path), "auth", "test",
           "-x", f"rip={rip}", "-x", f"service={service}"]
    for k, v in (extra or {}).items():
        cmd += ["-x", f"{k}={v}"]
    cmd += [user, password]
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    seconds = time.monotonic() - t0
    out = r.stdout.decode(errors="replace")
    ok = r.returncode == 0 and "auth succeeded" in out
    return ok, out, seconds


def http_post(port, path, body, headers=None, timeout=10):
    """POST body to http://127.0.0.1:port/path; returns (status, response text)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


# ------------------------------------------------------- raw, parallel IMAP

def _imap_astring(value):
    """An IMAP astring for LOGIN: quoted when plain, else a literal
    (any bytes: a control byte, 300 bytes, 8-bit)."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if raw and len(raw) < 100 and all(0x20 < b < 0x7f and b not in b'"\\(){%*' for b in raw):
        return [b'"' + raw + b'"']
    return [b"{%d}" % len(raw), raw]


class ImapClient:
    """A bare IMAP client socket from source address src: connect and read
    the greeting now, send LOGIN later (login()), with any bytes in the
    user name. Times are wall-clock (time.time(), the clock the policy
    service's time(NULL) reads)."""

    def __init__(self, port, src="127.0.0.1", timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout,
                                             source_address=(src, 0))
        self.src = src
        self.file = self.sock.makefile("rb")
        greeting = self.file.readline()
        if not greeting.startswith(b"* OK"):
            self.close()
            raise RuntimeError(f"IMAP greeting from {src}: {greeting!r}")

    def login(self, user, password):
        """(ok, message, t_sent, t_answer) of `a LOGIN user password`."""
        # synchronizing literals: send up to each {n}, wait for "+"
        chunks, cur = [], b"a LOGIN "
        for n, tokens in enumerate((_imap_astring(user), _imap_astring(password))):
            if n:
                cur += b" "
            cur += tokens[0]
            if len(tokens) == 2:
                chunks.append(cur + b"\r\n")
                cur = tokens[1]
        chunks.append(cur + b"\r\n")
        t_sent = time.time()
        try:
            for i, chunk in enumerate(chunks):
                self.sock.sendall(chunk)
                if i < len(chunks) - 1:
                    cont = self.file.readline()
                    if not cont.startswith(b"+"):
                        return False, cont.decode(errors="replace").strip(), t_sent, time.time()
            while True:
                line = self.file.readline()
                if not line:
                    return False, "connection closed", t_sent, time.time()
                if line.startswith(b"a "):
                    break
            t_answer = time.time()
            text = line.decode(errors="replace").strip()
            return text.startswith("a OK"), text[2:], t_sent, t_answer
        except OSError as e:
            return False, f"connection error: {e!r}", t_sent, time.time()

    def close(self):
        try:
            self.file.close()
        finally:
            self.sock.close()


class LoginResult(tuple):
    """(ok, msg, t_sent, t_answer) with names, plus the attempt's user and src."""
    __slots__ = ()
    ok = property(lambda self: self[0])
    msg = property(lambda self: self[1])
    t_sent = property(lambda self: self[2])
    t_answer = property(lambda self: self[3])
    user = property(lambda self: self[4])
    src = property(lambda self: self[5])


def parallel_imap_logins(port, attempts, timeout=60):
    """Open one IMAP connection per attempt (user, password, src) first,
    then release every LOGIN at once (threads and a barrier). Returns a
    LoginResult per attempt, in order. Raises if a connection could not be
    opened (a botnet test must not silently run with fewer clients)."""
    import threading
    n = len(attempts)
    barrier = threading.Barrier(n + 1)
    results = [None] * n
    errors = []

    def run(i, user, password, src):
        client = None
        try:
            client = ImapClient(port, src, timeout)
        except Exception as e:           # noqa: BLE001 - reported below
            errors.append(f"{src}: {e!r}")
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            if client:
                client.close()
            return
        if client is None:
            return
        try:
            results[i] = LoginResult(client.login(user, password) + (user, src))
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,) + tuple(a), daemon=True)
               for i, a in enumerate(attempts)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        pass
    if errors:
        barrier.abort()
    for t in threads:
        t.join(timeout + 10)
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} connections failed: {errors[:5]}")
    missing = [attempts[i][2] for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"{len(missing)} logins never finished: {missing[:5]}")
    return results


def imap_login_raw(port, user, password, src="127.0.0.1", timeout=30):
    """One LOGIN over a bare socket (any bytes in user): a LoginResult."""
    client = ImapClient(port, src, timeout)
    try:
        return LoginResult(client.login(user, password) + (user, src))
    finally:
        client.close()


# ------------------------------------------------------------------ Dovecot

def _mail_owner():
    """uid, gid and name that own the test mailboxes."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        return pw.pw_uid, pw.pw_gid
    pw = pwd.getpwnam("nobody")   # uid 65534 >= Dovecot's first_valid_uid
    return pw.pw_uid, pw.pw_gid


class _ServerInDir:
    """A server run by the harness in a directory of its own (self.dir,
    removed on a clean exit when the harness made it, self._own_dir),
    logging to self.log_path: start()/stop() as a context manager, and its
    log (Courier, with several logs, reads them its own way)."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self._own_dir and exc[0] is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


class Dovecot(_ServerInDir):
    """A private Dovecot (IMAP + POP3 + optional authbrake-policy), stopped by PID."""

    def __init__(self, dir=None, users=None, policy_conf=None,
                 trusted_networks=None, extra_conf="", policy_user="root",
                 anvil_penalty=False, policy_after_auth=False, settings=None,
                 max_clients=None, postfix_listener=None, stats_http=False,
                 policy_bin=None, auth_debug=True):
        self.anvil_penalty = anvil_penalty
        # the auth process's debug lines: every password check in the log
        # (the benchmarks turn them off)
        self.auth_debug = auth_debug
        # the service's executable: the build's authbrake-policy, or
        # another (bench/: the HTTP-only floor build)
        self.policy_bin = policy_bin or POLICY_BIN
        # the auth socket Postfix's smtpd talks SASL to (type dovecot)
        self.postfix_listener = postfix_listener
        self.stats_port = free_port() if stats_http else None
        self.settings = dict(settings or {})
        self.max_clients = max_clients
        # conf.d/95-authbrake.conf ships "no"; Dovecot's default is "yes"
        self.policy_after_auth = policy_after_auth
        self.dir = str(dir) if dir else tempfile.mkdtemp(prefix="ab-dovecot-")
        self._own_dir = dir is None
        os.makedirs(self.dir, exist_ok=True)
        # the auth process (user dovecot) reads the passwd-file through this dir
        os.chmod(self.dir, 0o755)
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.policy_conf = policy_conf
        self.api_key = getattr(policy_conf, "api_key", None)
        if policy_conf is not None and not self.api_key:
            with open(os.path.join(os.path.dirname(str(policy_conf)), "api-key")) as f:
                self.api_key = f.read().strip()
        self.trusted_networks = trusted_networks
        self.extra_conf = extra_conf
        self.policy_user = policy_user
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.policy_port = free_port() if policy_conf is not None else None
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.base_dir = os.path.join(self.dir, "run")
        self.state_dir = os.path.join(self.dir, "state")
        self.home_root = os.path.join(self.dir, "home")
        self.passwd_path = os.path.join(self.dir, "users")
        self.uid, self.gid = _mail_owner()
        self.proc = None
        self._write_config()

    # -- configuration
    def _passwd_line(self, name, password):
        home = os.path.join(self.home_root, name)
        return f"{name}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::\n"

    def _write_users(self):
        tmp = self.passwd_path + ".tmp"
        with open(tmp, "w") as f:
            for name, password in self.users.items():
                f.write(self._passwd_line(name, password))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.passwd_path)
        os.makedirs(self.home_root, exist_ok=True)
        os.chmod(self.home_root, 0o755)
        for name in self.users:
            home = os.path.join(self.home_root, name)
            if not os.path.isdir(home):
                os.makedirs(home)
                os.chown(home, self.uid, self.gid)
                os.chmod(home, 0o700)

    def add_user(self, name, password):
        """Add or change a user; Dovecot re-reads the passwd-file by mtime."""
        self.users[name] = password
        self._write_users()
        # passwd-file notices a change by mtime: make sure it moves
        t = time.time() + 1
        os.utime(self.passwd_path, (t, t))

    def _write_config(self):
        if os.geteuid() == 0:
            internal_user, login_user = "dovecot", "dovenull"
        else:
            internal_user = login_user = pwd.getpwuid(os.geteuid()).pw_name
        self._write_users()
        v = DOVECOT_LANG[DOVECOT_24]
        c = f"""# dovecot.conf written by test/integration/harness.py
{v["version"]}base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = ab-test-{os.path.basename(self.dir)}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
{v["cleartext"]}
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = 1
{v["mail"]}
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
{v["debug"] if self.auth_debug else ""}
auth_cache_size = 0
login_log_format_elements = {v["login_log"]}
"""
        if self.trusted_networks:
            nets = self.trusted_networks
            if isinstance(nets, (list, tuple)):
                nets = " ".join(nets)
            c += f"login_trusted_networks = {nets}\n"
        c += "\n" + v["passdb"].format(path=self.passwd_path) + f"""
service imap-login {{
  inet_listener imap {{
    {v["address"]} = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    {v["address"]} = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""
        if self.postfix_listener:
            # as conf.d/postfix/main.cf.authbrake tells the admin to set it
            # up, in the Postfix queue's private/ directory
            c += f"""service auth {{
  unix_listener {self.postfix_listener} {{
    mode = 0660
    user = {"postfix" if os.geteuid() == 0 else internal_user}
    group = {"postfix" if os.geteuid() == 0 else internal_user}
  }}
}}
"""
        if self.max_clients:
            # Dovecot's default runs one login process per connection, at
            # most default_process_limit (100) of them; more connections
            # wait. A botnet test opens hundreds at once: long-lived login
            # processes, each taking many clients ("high-performance mode").
            n = int(self.max_clients)
            for svc in ("imap-login", "pop3-login"):
                c += f"""service {svc} {{
  {v["service_count"]}
  process_min_avail = 2
  process_limit = 4
  client_limit = {max(n, 100)}
}}
"""
            c += f"default_client_limit = {max(4 * n, 1000)}\n"
        if self.policy_conf is not None:
            # The shipped drop-in, as an administrator installs it; below
            # it only what a test must change (later settings and a later
            # service block override earlier ones: see doveconf -n).
            user = self.policy_user or v["internal_user"]
            c += f"""
!include {DROPIN_CONF}
service authbrake-policy {{
  executable = {self.policy_bin} -C {self.policy_conf}
  inet_listener authbrake-policy {{
    port = {self.policy_port}
  }}
  user = {user}
}}
{self._sanitizer_conf()}auth_policy_server_url = http://127.0.0.1:{self.policy_port}/
auth_policy_server_api_header = X-API-Key: {self.api_key}
auth_policy_hash_nonce = {secrets.token_hex(16)}
"""
            if self.policy_after_auth:
                # Dovecot's own default; the drop-in turns it off
                c += "auth_policy_check_after_auth = yes\n"
        if self.stats_port is not None:
            c += f"""
service stats {{
  inet_listener http {{
    {v["address"]} = 127.0.0.1
    port = {self.stats_port}
  }}
}}
"""
        if not self.anvil_penalty:
            # Dovecot's own per-address penalty (2..15 s after failures) would
            # hide authbrake's tarpit: the auth process cannot open a mode-0
            # socket and then runs without it. Production keeps it.
            c += """
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""
        for key, value in self.settings.items():
            c += f"{key} = {value}\n"
        c += self.extra_conf + "\n"
        with open(self.conf_path, "w") as f:
            f.write(c)

    def _sanitizer_conf(self):
        if not SANITIZED:
            return ""
        # The master starts its services with a clean environment: only
        # import_environment passes ASAN_OPTIONS/UBSAN_OPTIONS through (the
        # uninstrumented Dovecot processes ignore them). vsz_limit = 0
        # (unlimited) replaces the drop-in's 256M: ASan reserves terabytes
        # of address space for its shadow memory and could not even start
        # within 256M.
        names = " ".join(sanitizer_env())
        return f"""import_environment = $import_environment {names}
service authbrake-policy {{
  vsz_limit = 0
}}
"""

    def _keep_stray_sanitizer_output(self, pid):
        """A report the policy service printed instead of writing it to
        its file (no options reached it, or it could not open the file)
        went to its stderr, which the master logs: copy those lines into
        SANITIZER_LOG_DIR so they fail the test like any report."""
        lines = [l for l in self.log_text().splitlines() if SANITIZER_LOG_RE.search(l)]
        if lines:
            with open(SANITIZER_LOG_DIR / f"dovecot-log.{pid}", "w") as f:
                f.write(f"from {self.log_path}:\n" + "\n".join(lines) + "\n")

    # -- life cycle
    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20):
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._stderr = open(os.path.join(self.dir, "dovecot.stderr"), "ab")
        self.proc = subprocess.Popen([DOVECOT_BIN, "-F", "-c", self.conf_path],
                                     stdout=self._stderr, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        ports = [self.imap_port, self.pop3_port]
        if self.stats_port is not None:
            ports.append(self.stats_port)
        ok = all(wait_port(p, timeout, proc=self.proc) for p in ports)
        auth_socket = os.path.join(self.base_dir, "auth-client")
        deadline = time.monotonic() + timeout
        while ok and not os.path.exists(auth_socket):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                ok = False
                break
            time.sleep(0.05)
        if ok and self.policy_port is not None:
            ok = self._wait_policy_answers(timeout)
        if not ok:
            err = self._diagnostics()
            self.stop()
            raise RuntimeError("dovecot did not start:\n" + err)
        return self

    def _wait_policy_answers(self, timeout):
        """True once an authbrake-policy process answers HTTP (a GET, which it
        refuses with 405 without logging or touching the store)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if "authbrake-policy: Fatal:" in self.log_text():
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.policy_port,
                                                  timeout=2)
                try:
                    conn.request("GET", "/")
                    conn.getresponse().read()
                    return True
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        return False

    def _diagnostics(self):
        parts = []
        for name in ("dovecot.stderr", "dovecot.log"):
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    lines = [l for l in f.read().decode(errors="replace").splitlines()
                             if ": Debug: " not in l]
                    parts.append(f"--- {name}\n" + "\n".join(lines[-40:]))
            except OSError:
                pass
        return "\n".join(parts)

    def reload(self):
        os.kill(self.pid, signal.SIGHUP)

    def stop(self):
        if self.proc is None:
            return
        kids = _descendants_of(self.proc.pid) if self.proc.poll() is None else []
        master = self.proc.pid
        _stop_process(self.proc, signal.SIGTERM, 15)
        self.proc = None
        # anything of ours the master left behind (it should not)
        reap(kids)
        if SANITIZED and self.policy_port is not None:
            self._keep_stray_sanitizer_output(master)
        if getattr(self, "_stderr", None):
            self._stderr.close()
            self._stderr = None

    # -- inspection
    def policy_pids(self):
        """PIDs of the authbrake-policy processes this master runs."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        out = []
        for pid in _children_of(self.proc.pid):
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if os.path.basename(exe.replace(" (deleted)", "")) == "authbrake-policy":
                out.append(pid)
        return sorted(out)

    def log_mark(self):
        """An offset into the log; pass it to log_since() / wait_log()."""
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def log_since(self, mark):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, regex, since=0, timeout=5.0):
        """Wait for a log line matching regex after offset since; the match or None."""
        pat = re.compile(regex, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.log_since(since))
            if m or time.monotonic() > deadline:
                return m
            time.sleep(0.05)

    # -- clients
    def imap_login(self, user, password, src="127.0.0.1", timeout=30,
                   forwarded_ip=None):
        return imap_login(self.imap_port, user, password, src, timeout, forwarded_ip)

    def pop3_login(self, user, password, src="127.0.0.1", timeout=30,
                   forwarded_ip=None):
        return pop3_login(self.pop3_port, user, password, src, timeout, forwarded_ip)

    def auth_test(self, user, password, rip, service="imap", extra=None, timeout=60):
        return auth_test(self.conf_path, user, password, rip, service, extra, timeout)

    def scrape(self, timeout=10):
        """The stats service's /metrics (needs stats_http=True)."""
        assert self.stats_port is not None, "Dovecot(stats_http=True) first"
        conn = http.client.HTTPConnection("127.0.0.1", self.stats_port,
                                          timeout=timeout)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            text = resp.read().decode()
            if resp.status != 200:
                raise RuntimeError(f"stats /metrics: {resp.status} {text[:200]}")
            return text
        finally:
            conn.close()

    def policy_post(self, command, body, api_key=True, headers=None, timeout=10):
        """POST to the policy service; api_key True = the right key, False = none,
        a string = that key. Returns (status, text)."""
        hdrs = dict(headers or {})
        if api_key is True:
            hdrs["X-API-Key"] = self.api_key
        elif api_key:
            hdrs["X-API-Key"] = api_key
        path = f"/?command={command}" if command is not None else "/"
        return http_post(self.policy_port, path, body, hdrs, timeout)

    def __repr__(self):
        return (f"<Dovecot imap={self.imap_port} pop3={self.pop3_port} "
                f"policy={self.policy_port} pid={self.pid}>")


# ------------------------------------------------------------------ Postfix

POSTFIX_SNIPPET_DIR = REPO_ROOT / "conf.d" / "postfix"
POSTFIX_MAIN_SNIPPET = POSTFIX_SNIPPET_DIR / "main.cf.authbrake"
POSTFIX_MASTER_SNIPPET = POSTFIX_SNIPPET_DIR / "master.cf.submission"
POSTFIX_HELO_TABLE = POSTFIX_SNIPPET_DIR / "authbrake_helo_access"

# The services a submission-only instance needs besides its smtpd (as in
# Debian's master.cf, none chrooted: the queue is a test directory).
_POSTFIX_MASTER_BASE = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix(_ServerInDir):
    """A private Postfix instance for SMTP AUTH through Dovecot, stopped by
    PID. Made in two steps, as a host is set up: Postfix() writes the
    config and creates the queue; a Dovecot(postfix_listener=.sasl_socket)
    puts its auth socket into the queue's private/ directory, where the
    shipped smtpd_sasl_path (private/auth) finds it; then .start().

    Its own config_directory, queue_directory, data_directory and log file
    (maillog_file) under dir; Debian's system instance is neither used nor
    touched. main.cf is a base (loopback, IPv4, every transport `discard`
    so nothing is delivered, a throw-away TLS certificate), then the shipped
    conf.d/postfix/main.cf.authbrake as it is, then settings (a test's
    changes).
    master.cf is the services Postfix needs, then the shipped
    master.cf.submission with its service name "submission" replaced by
    127.0.0.1:PORT; the shipped authbrake_helo_access is copied beside
    main.cf. The master runs in the foreground (master -d), its PID ours.
    Postfix's user `postfix` and group `postdrop` are the ones Debian's
    package creates."""

    def __init__(self, dir=None, settings=None):
        self.settings = dict(settings or {})
        self.dir = str(dir) if dir else tempfile.mkdtemp(prefix="ab-postfix-")
        self._own_dir = dir is None
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)      # user postfix walks through it
        self.config_dir = os.path.join(self.dir, "etc")
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "maillog")
        # smtpd_sasl_path in main.cf.authbrake, relative to the queue
        self.sasl_socket = os.path.join(self.queue_dir, "private", "auth")
        self.port = free_port()
        self.proc = None
        self._write_config()
        # the queue's directories, owned as Postfix wants them
        r = self.postfix("post-install", "create-missing")
        if r.returncode != 0:
            raise RuntimeError("postfix post-install failed:\n" +
                               r.stdout.decode(errors="replace") + self._log_tail())

    def _write_config(self):
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        shutil.chown(self.data_dir, "postfix", "postfix")
        cert = os.path.join(self.config_dir, "cert.pem")
        key = os.path.join(self.config_dir, "key.pem")
        subprocess.run([OPENSSL_BIN, "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=mx.authbrake.test"],
                       check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        shutil.copy(POSTFIX_HELO_TABLE,
                    os.path.join(self.config_dir, "authbrake_helo_access"))
        main = f"""# main.cf written by test/integration/harness.py
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {self.log_path}
maillog_file_prefixes = {self.dir}
myhostname = mx.authbrake.test
mydomain = authbrake.test
mydestination =
relay_domains =
mynetworks = 127.0.0.0/32
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
# nothing is delivered
default_transport = discard
relay_transport = discard
local_transport = discard
virtual_transport = discard
# no DNS in a test: clients show as unknown[127.x.y.z]
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_loglevel = 1

# --- {POSTFIX_MAIN_SNIPPET.relative_to(REPO_ROOT)}, as shipped
{POSTFIX_MAIN_SNIPPET.read_text()}
# --- what the test changes
"""
        for k, v in self.settings.items():
            main += f"{k} = {v}\n"
        submission = POSTFIX_MASTER_SNIPPET.read_text()
        submission, n = re.subn(r"^submission(?=\s)", f"127.0.0.1:{self.port}",
                                submission, flags=re.M)
        if n != 1:
            raise RuntimeError(f"{POSTFIX_MASTER_SNIPPET}: no 'submission' entry")
        master = (f"# master.cf written by test/integration/harness.py\n"
                  f"{_POSTFIX_MASTER_BASE}\n"
                  f"# --- {POSTFIX_MASTER_SNIPPET.relative_to(REPO_ROOT)}, "
                  f"on a test port\n{submission}")
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.write(main)
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(master)

    def postfix(self, *args, timeout=60):
        """`postfix -c CONFIG_DIR ARGS...` (its messages go to the log)."""
        return subprocess.run([POSTFIX_BIN, "-c", self.config_dir, *args],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20):
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._stderr = open(os.path.join(self.dir, "master.stderr"), "ab")
        # its own process group: on SIGTERM the master signals the group
        # it leads (and fails when it leads none)
        self.proc = subprocess.Popen([POSTFIX_MASTER_BIN, "-c", self.config_dir, "-d"],
                                     stdout=self._stderr, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_port(self.port, timeout, proc=self.proc):
            err = self._log_tail()
            self.stop()
            raise RuntimeError("postfix did not start:\n" + err)
        return self

    def _log_tail(self):
        parts = []
        for path in (self.log_path, os.path.join(self.dir, "master.stderr")):
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()
                parts.append(f"--- {path}\n" + "\n".join(lines[-40:]))
            except OSError:
                pass
        return "\n".join(parts)

    def stop(self):
        if self.proc is None:
            return
        kids = _descendants_of(self.proc.pid) if self.proc.poll() is None else []
        _stop_process(self.proc, signal.SIGTERM, 15)
        self.proc = None
        reap(kids)
        if getattr(self, "_stderr", None):
            self._stderr.close()
            self._stderr = None

    def smtp(self, src="127.0.0.1", helo="client.authbrake.test", timeout=30,
             insist=False):
        return SmtpClient(self.port, src, helo, timeout, insist)

    def __repr__(self):
        return f"<Postfix port={self.port} pid={self.pid}>"


class SmtpReply(tuple):
    """(code, text): one SMTP reply, text with its lines joined by a space."""
    __slots__ = ()
    code = property(lambda self: self[0])
    text = property(lambda self: self[1])

    def __str__(self):
        return f"{self[0]} {self[1]}"


class SmtpClient:
    """One SMTP connection from source address src, as a submission client
    (or a bot) makes it: EHLO helo, then STARTTLS and EHLO again when the
    first EHLO was accepted; insist=True goes on with STARTTLS and EHLO
    after a refused EHLO, as a bot may. .ehlo_reply is the first EHLO's
    reply, .replies [(command, SmtpReply)] those of the opening;
    .auth() / .send() / .command() return SmtpReply and never raise on a
    refusal."""

    def __init__(self, port, src="127.0.0.1", helo="client.authbrake.test",
                 timeout=30, insist=False):
        self.conn = smtplib.SMTP("127.0.0.1", port, local_hostname=helo,
                                 timeout=timeout, source_address=(src, 0))
        code, text = self.conn.ehlo(helo)
        self.ehlo_reply = SmtpReply((code, _text(text)))
        self.replies = [("EHLO " + helo, self.ehlo_reply)]
        if code == 250:
            self.conn.starttls(context=_tls_anything())
            self.conn.ehlo(helo)
        elif insist:
            # a bot that goes on as if EHLO had been accepted
            self.replies.append(("STARTTLS", self.command("STARTTLS")))
            if self.replies[-1][1].code == 220:
                self.conn.sock = _tls_anything().wrap_socket(self.conn.sock)
                self.conn.file = None
                self.replies.append(("EHLO " + helo, self.command("EHLO " + helo)))

    def auth(self, mech, user, password):
        """AUTH PLAIN (initial response) or AUTH LOGIN (user and password
        each on a 334 prompt, as bots do): (SmtpReply, seconds)."""
        c = self.conn
        c.user, c.password = user, password
        t0 = time.monotonic()
        try:
            if mech == "PLAIN":
                code, text = c.auth("PLAIN", c.auth_plain)
            elif mech == "LOGIN":
                code, text = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
            else:
                raise ValueError(mech)
        except smtplib.SMTPNotSupportedError as e:
            code, text = 0, f"AUTH not offered: {e}"
        except smtplib.SMTPResponseException as e:
            code, text = e.smtp_code, e.smtp_error
        return SmtpReply((code, _text(text))), time.monotonic() - t0

    def command(self, line):
        """A raw command (e.g. AUTH after a refused EHLO): SmtpReply."""
        code, text = self.conn.docmd(line)
        return SmtpReply((code, _text(text)))

    def send(self, sender, rcpt, body):
        """MAIL FROM, RCPT TO, DATA: [SmtpReply] of the three."""
        c, out = self.conn, []
        out.append(SmtpReply(_reply(c.mail(sender))))
        out.append(SmtpReply(_reply(c.rcpt(rcpt))))
        out.append(SmtpReply(_reply(c.data(body))))
        return out

    def close(self):
        try:
            self.conn.quit()
        except (smtplib.SMTPException, OSError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _reply(pair):
    return pair[0], _text(pair[1])


def _tls_anything():
    """A TLS context that takes the test's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def smtp_auth(port, user, password, src="127.0.0.1", mech="PLAIN",
              helo="client.authbrake.test", timeout=30):
    """One connection, one AUTH: (SmtpReply, seconds)."""
    with SmtpClient(port, src, helo, timeout) as c:
        return c.auth(mech, user, password)



def cli_status(conf, target):
    """`authbrake -c CONF --json status TARGET` as a dict (exit 0 or 1)."""
    r = subprocess.run([str(CLI_BIN), "-c", str(conf), "--json", "status", target],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    assert r.returncode in (0, 1), (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)

# ------------------------------------------------- reading Dovecot's log

# What Dovecot's passwd-file passdb logs for each password check
# (auth_verbose + debug logging of the auth category, as the harness
# configures it). Dovecot 2.3.19:
#   auth: Debug: passwd-file(alice,127.0.0.3,<SESSION>): Performing passdb lookup
#   auth: Info: passwd-file(alice,127.0.0.3,<SESSION>): Password mismatch
#   auth: Info: passwd-file(nobody,127.0.0.4,<SESSION>): unknown user
#   auth: Debug: passwd-file(alice,127.0.0.3,<SESSION>): Finished passdb lookup
# Dovecot 2.4.1 says the same after another prefix:
#   auth(alice,127.0.0.3,sasl:plain)<SESSION>: Debug: passwd-file: Performing passdb lookup
# A right password has no line of its own: it is a lookup that finished
# with neither "Password mismatch" nor "unknown user". The prefix is
# (user,rip[,master][,<session>]) on 2.3, (user,rip,mechanism)<session>
# on 2.4; doveadm auth test has no session, a master passdb adds
# ",master"; a long user name is cut with "...". passwd-file looks up
# synchronously in the single auth process, so a check's lines follow
# each other in the log.
_PASSDB_WHAT = (r"(?P<what>Performing passdb lookup|Password mismatch|unknown user|"
                r"Finished passdb lookup)$")
_LOG_STAMP = r"^(?P<stamp>\w{3} [ \d]\d \d\d:\d\d:\d\d) "
PASSDB_LINE_RE = re.compile(
    _LOG_STAMP + r"auth\((?P<user>.*?),(?P<address>[0-9a-fA-F.:]*)(?:,[^()<>]*)?\)"
    r"(?:<(?P<session>[^>]*)>)?: (?:Debug|Info): passwd-file: " + _PASSDB_WHAT
    if DOVECOT_24 else
    _LOG_STAMP + r"auth: (?:Debug|Info): "
    r"passwd-file\((?P<user>.*?),(?P<address>[0-9a-fA-F.:]*)(?:,master)?"
    r"(?:,<(?P<session>[^>]*)>)?\): " + _PASSDB_WHAT, re.M)


def auth_log_re(user, address, what="", component=None):
    """A regex (text) for a line of Dovecot's auth process about user
    from address (both regexes) from component ("passwd-file", "policy";
    None: any) saying what (a regex): in 2.3's words
    "auth: Info: passwd-file(user,address...): what", in 2.4's
    "auth(user,address,...)<session>: Info: passwd-file: what"."""
    if DOVECOT_24:
        return r"auth\(%s,%s[,)]\S*: \w+: %s.*%s" % (
            user, address, component + ": " if component else "", what)
    return r"auth: \w+: %s\(%s,%s[,)].*%s" % (
        component or r"[\w-]+", user, address, what)


# The user name settle_log() looks up; passdb_checks() leaves it out.
LOG_SENTINEL_USER = "ab-log-sentinel"


class PassdbCheck(tuple):
    """(user, address, session, outcome, stamp): one password check that
    reached the passdb. outcome: "mismatch", "unknown user", "ok" (a right
    password), or "pending" (not finished in the log yet)."""
    __slots__ = ()
    user = property(lambda self: self[0])
    address = property(lambda self: self[1])
    session = property(lambda self: self[2])
    outcome = property(lambda self: self[3])
    stamp = property(lambda self: self[4])


def passdb_check_list(dovecot, user=None, since=0, address=None):
    """Every password check Dovecot's passwd-file passdb made after log
    offset since, in log order, as PassdbCheck; user / address filter
    (user as Dovecot logs it: after auth_username_format)."""
    open_checks = {}      # (user, address, session) -> [outcome, stamp, index]
    out = []
    for m in PASSDB_LINE_RE.finditer(dovecot.log_since(since)):
        key = (m["user"], m["address"], m["session"] or "")
        what = m["what"]
        if what == "Performing passdb lookup":
            open_checks[key] = ["pending", m["stamp"], len(out)]
            out.append(None)
            continue
        entry = open_checks.get(key)
        if entry is None:
            continue          # began before since
        if what == "Password mismatch":
            entry[0] = "mismatch"
        elif what == "unknown user":
            entry[0] = "unknown user"
        else:                 # Finished passdb lookup
            if entry[0] == "pending":
                entry[0] = "ok"
            out[entry[2]] = PassdbCheck(key + (entry[0], entry[1]))
            del open_checks[key]
    for key, (outcome, stamp, index) in open_checks.items():
        out[index] = PassdbCheck(key + (outcome, stamp))
    return [c for c in out
            if (user is None and c.user != LOG_SENTINEL_USER or c.user == user)
            and (address is None or c.address == address)]


def passdb_checks(dovecot, user=None, since=0, address=None):
    """How many password checks reached Dovecot's passdb after log offset
    since (for user / from address when given): mismatches, unknown users
    and right passwords alike. A refused login that never reached the
    passdb is not one."""
    return len(passdb_check_list(dovecot, user, since, address))


def settle_log(dovecot, sentinel_ip=None, timeout=10):
    """Make sure every auth line of the requests answered so far is in the
    log: one more lookup (user LOG_SENTINEL_USER), waited for. The auth
    process logs in order, so its first line about the sentinel comes
    after every line about the requests that finished before. Each call
    uses a fresh address in 127.254.0.0/16 unless given one."""
    if sentinel_ip is None:
        dovecot._sentinels = getattr(dovecot, "_sentinels", 0) + 1
        n = dovecot._sentinels
        sentinel_ip = f"127.254.{n // 250 % 250}.{n % 250 + 1}"
    mark = dovecot.log_mark()
    dovecot.auth_test(LOG_SENTINEL_USER, "x", sentinel_ip)
    if not dovecot.wait_log(auth_log_re(LOG_SENTINEL_USER, re.escape(sentinel_ip)),
                            since=mark, timeout=timeout):
        raise AssertionError("the log sentinel lookup never showed in the log")
    time.sleep(0.2)   # authbrake-policy's lines come through another pipe


# authbrake-policy's lines (through Dovecot's log)
DECISION_RE = re.compile(
    r'authbrake-policy: \w+: account="(?P<account>(?:[^"\\]|\\.)*)" address=(?P<address>\S+) '
    r'protocol=(?P<protocol>\S*) decision=(?P<decision>\w+)'
    r'(?: delay=(?P<delay>\d+)s)?(?: retry_after=(?P<retry_after>\d+)s)?'
    r'.*?reason="(?P<reason>[^"]*)"')
LOCK_RE = re.compile(
    r'authbrake-policy: \w+: account "(?P<account>(?:[^"\\]|\\.)*)" locked for unfamiliar '
    r'origins for (?P<duration>\S+): (?P<failures>\d+) failures')
BLOCK_RE = re.compile(
    r'authbrake-policy: \w+: (?P<kind>address|subnet) (?P<address>\S+) blocked for '
    r'(?P<duration>\S+): (?P<failures>\d+) failures, (?P<accounts>\d+) accounts tried')
# a decision that fell to fail_mode, or a store error behind one
FAIL_MODE_RE = re.compile(
    r"authbrake-policy: .*(?:fail_mode=(?:open|closed)|memcached (?:partly )?unreachable).*")
# Dovecot's own side giving up on the policy service (it then goes on
# without a decision: auth_policy_reject_on_fail = no)
POLICY_FAILURE_RE = re.compile(
    r"auth(?:\([^)]*\)\S*)?: (?:Error|Warning): .*(?:[Pp]olicy server|policy[(:]).*")


def parse_duration(text):
    """Seconds of a duration as authbrake logs it: 45s, 2m5s, 1h30m, 1d0h."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total, num = 0, ""
    for ch in text:
        if ch.isdigit():
            num += ch
        elif ch in units and num:
            total += int(num) * units[ch]
            num = ""
        else:
            raise ValueError(f"not a duration: {text!r}")
    if num:
        raise ValueError(f"not a duration: {text!r}")
    return total


def policy_decisions(dovecot, since=0, address=None):
    """authbrake-policy's per-decision lines after since, as dicts."""
    out = [m.groupdict() for m in DECISION_RE.finditer(dovecot.log_since(since))]
    return [d for d in out if address is None or d["address"] == address]


def account_locks(dovecot, since=0, account=None):
    """[(account, seconds, failures)] of the "locked ... for" lines."""
    return [(m["account"], parse_duration(m["duration"]), int(m["failures"]))
            for m in LOCK_RE.finditer(dovecot.log_since(since))
            if account is None or m["account"] == account]


def address_blocks(dovecot, since=0, address=None):
    """[(kind, address, seconds, failures, accounts)] of the "blocked for" lines."""
    return [(m["kind"], m["address"], parse_duration(m["duration"]),
             int(m["failures"]), int(m["accounts"]))
            for m in BLOCK_RE.finditer(dovecot.log_since(since))
            if address is None or m["address"] == address]


def fail_mode_lines(dovecot, since=0):
    """Lines that say a decision fell to fail_mode or the store failed."""
    return FAIL_MODE_RE.findall(dovecot.log_since(since))


def policy_failures(dovecot, since=0):
    """Dovecot's auth lines saying a policy request failed (timeout, HTTP error)."""
    return POLICY_FAILURE_RE.findall(dovecot.log_since(since))
