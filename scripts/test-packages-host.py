#!/usr/bin/python3
"""The inside of scripts/test-packages.sh: one mail host, in a copy-on-write
view of this machine (overlay + chroot, its own PID and network namespaces;
the shell script sets them up), gets authbrake's packages the way an admin
installs them, and is attacked through its real IMAP and POP3 servers.

    test-packages-host.py dovecot|courier

dovecot: the machine's own Dovecot (Debian's /etc/dovecot, a local.conf for
loopback without TLS), packages authbrake + dovecot-authbrake, turned on by
`doveadm reload`. courier: courier-imap, courier-pop and courier-authdaemon
installed in place of Dovecot's IMAP and POP3 servers (the shell script did
that), packages authbrake + libpam-authbrake, the example PAM stacks copied
into /etc/pam.d. Both: memcached on 127.0.0.1:11211 (the shipped
configuration's default), a real user logging in from home, a botnet
locking the account for unfamiliar origins, an address blocked after its
failures; then a second install, an upgrade (the secret kept byte for
byte), and a purge that leaves the package set as it was.

Prints a transcript; exits 1 if any check failed. Standard library and the
integration tests' harness only.
"""

import glob
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test" / "integration"))
import harness  # noqa: E402
import courier  # noqa: E402  (SystemUsers, SyslogSink)

DEB_DIR = REPO / "build" / "deb"
UPGRADE_DIR = REPO / "build" / "pkgtest" / "upgrade"
WORK = Path("/tmp/pkgtest")           # a tmpfs of this host (the shell's)
POLICY_RC_LOG = WORK / "policy-rc.d.log"
PACKAGES = {"dovecot": ["authbrake", "dovecot-authbrake"],
            "courier": ["authbrake", "libpam-authbrake"]}
IMAP, POP3, POLICY_PORT = 143, 110, 4010

SECRET = "/etc/authbrake/secret"
API_KEY = "/etc/authbrake/api-key"
API_INCLUDE = "/etc/dovecot/authbrake-api-key.conf"
CONF = "/etc/authbrake/authbrake.conf"
# The admin's change to the conffile: thresholds a short attack reaches.
ADMIN_SETTINGS = """
# test-packages: small thresholds, so that a short attack reaches each state
ip_free_failures = 2
ip_block_failures = 3
ip_max_accounts = 3
account_lock_failures = 4
tarpit_max = 1s
"""

HOME = "127.0.0.5"                    # the real user's usual network
failures = []


def say(text=""):
    print(text, flush=True)


def expect(cond, what, detail=""):
    say(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
        if detail:
            say("     " + detail.strip().replace("\n", "\n     "))
    return cond


def run(cmd, show="all", check=True, env=None):
    """Run cmd, print it and (show="all") its output, or (show="apt") the
    lines that say what apt and dpkg did; a failure prints everything."""
    say("$ " + shlex.join(str(c) for c in cmd))
    e = dict(os.environ, DEBIAN_FRONTEND="noninteractive", **(env or {}))
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       text=True, env=e)
    out = r.stdout.rstrip("\n")
    lines = out.splitlines()
    if show == "apt" and r.returncode == 0:
        lines = [l for l in lines if re.match(
            r"(Unpacking|Setting up|Removing|Purging|Preparing|\S*authbrake: |"
            r"dpkg: warning|W: |E: |\d+ upgraded)", l)]
    if show and lines:
        say("  " + "\n  ".join(lines))
    if check and r.returncode != 0:
        if show == "apt":
            say("  " + "\n  ".join(out.splitlines()))
        raise RuntimeError(f"exit {r.returncode}: {' '.join(str(c) for c in cmd)}")
    return r


def apt(*args):
    return run(["apt-get", "-y", "-q", "-o", "APT::Sandbox::User=root", *args],
               show="apt")


def dpkg_state():
    r = subprocess.run(["dpkg-query", "-W", "-f",
                        "${binary:Package}\t${Version}\t${db:Status-Abbrev}\n"],
                       stdout=subprocess.PIPE, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        pkg, version, status = line.split("\t")
        if status.strip() not in ("un", ""):
            out[pkg.split(":")[0]] = (version, status.strip())
    return out


def state_diff(before, after):
    out = []
    for p in sorted(set(before) | set(after)):
        if p not in after:
            out.append(f"- {p} {before[p][0]} ({before[p][1]})")
        elif p not in before:
            out.append(f"+ {p} {after[p][0]} ({after[p][1]})")
        elif before[p] != after[p]:
            out.append(f"~ {p} {before[p]} -> {after[p]}")
    return out


def debs(directory, names):
    out = []
    for name in names:
        found = sorted(glob.glob(f"{directory}/{name}_*.deb"))
        if len(found) != 1:
            raise RuntimeError(f"want one {name}_*.deb in {directory}, found {found}")
        out.append(found[0])
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def file_mode(path):
    """'0640 root:dovecot' of path."""
    import grp
    import pwd
    st = os.stat(path)
    return (f"{stat.S_IMODE(st.st_mode):04o} {pwd.getpwuid(st.st_uid).pw_name}:"
            f"{grp.getgrgid(st.st_gid).gr_name}")


def policy_rc_calls():
    try:
        return POLICY_RC_LOG.read_text().splitlines()
    except FileNotFoundError:
        return []


def login(proto, user, password, src):
    fn = harness.imap_login if proto == "imap" else harness.pop3_login
    ok, msg, _ = fn(IMAP if proto == "imap" else POP3, user, password, src, 40)
    return ok, msg


def expect_login(proto, user, password, src, want, why):
    ok, msg = login(proto, user, password, src)
    return expect(ok == want, f"{proto.upper():4} {user} from {src}: "
                  f"{'in' if ok else 'refused'} ({why})", f"server said: {msg}")


def parallel_logins(attempts):
    """[(proto, user, password, src)] at once (Courier answers a failure
    after ~5 s, Dovecot's anvil delays repeats): [(ok, msg)]."""
    results = [None] * len(attempts)

    def one(i, a):
        try:
            results[i] = login(*a)
        except Exception as e:        # noqa: BLE001 - reported as a failed login
            results[i] = (False, f"error: {e!r}")

    threads = [threading.Thread(target=one, args=(i, a)) for i, a in enumerate(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def cli(*args):
    r = run(["authbrake", *args], check=False)
    return r.returncode, r.stdout


# ------------------------------------------------------------------ hosts

class DovecotHost:
    """The machine's Dovecot as Debian installed it, on loopback."""

    name = "Dovecot"

    def __init__(self):
        self.proc = None
        self.log = WORK / "dovecot.log"

    def configure(self):
        say("admin: /etc/dovecot/local.conf (loopback, no TLS, Maildir, a log file)")
        if not os.path.exists("/etc/dovecot/private/dovecot.pem"):
            # dovecot-core links its certificate to ssl-cert's snakeoil one,
            # when that exists; without it Dovecot reads 10-ssl.conf's
            # ssl_cert/ssl_key (even with ssl = no) and stops
            say("admin: no /etc/dovecot/private/dovecot.pem here: ssl_cert and ssl_key "
                "commented out in 10-ssl.conf")
            ssl = Path("/etc/dovecot/conf.d/10-ssl.conf")
            # (2.4: ssl_server_cert_file and ssl_server_key_file)
            ssl.write_text(re.sub(r"(?m)^(ssl_(server_)?(cert|key)(_file)? *=)", r"#\1",
                                  ssl.read_text()))
        # in the configuration language of the host's Dovecot (2.3 or 2.4)
        lang = harness.DOVECOT_LANG[harness.DOVECOT_24]
        Path("/etc/dovecot/local.conf").write_text(
            "# test-packages: this test host's own settings\n"
            f"listen = 127.0.0.1\nssl = no\n{lang['cleartext']}\n{lang['mail']}\n"
            f"log_path = {self.log}\nauth_verbose = yes\n")

    def start(self):
        self.proc = subprocess.Popen(["dovecot", "-F"], stdin=subprocess.DEVNULL,
                                     stdout=open(WORK / "dovecot.stderr", "ab"),
                                     stderr=subprocess.STDOUT)
        if not all(harness.wait_port(p, 20, proc=self.proc) for p in (IMAP, POP3)):
            raise RuntimeError("Dovecot did not start:\n" + self.log_text()[-3000:]
                               + (WORK / "dovecot.stderr").read_text()[-2000:])
        say(f"Dovecot master pid {self.proc.pid}: IMAP 127.0.0.1:{IMAP}, POP3 :{POP3}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def policy_processes(self):
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if exe.endswith("/authbrake-policy"):
                    out.append((int(pid), exe))
        return out

    def after_install(self):
        expect(self.proc.poll() is None and not self.policy_processes()
               and not harness.wait_port(POLICY_PORT, 0.5),
               "Dovecot was neither reloaded nor restarted: no authbrake-policy yet")
        mark = len(self.log_text())
        run(["doveadm", "reload"])
        # the master listens on the port at once; its processes follow
        deadline = time.monotonic() + 20
        while not self.policy_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        ok = harness.wait_port(POLICY_PORT, 1)
        procs = self.policy_processes()
        expect(ok and procs and all(e == "/usr/lib/dovecot/authbrake-policy" for _, e in procs),
               f"after doveadm reload the drop-in is active: {len(procs)} authbrake-policy "
               f"processes of /usr/lib/dovecot/authbrake-policy, 127.0.0.1:{POLICY_PORT}",
               self.log_text()[mark:][-3000:])
        expect("Fatal" not in self.log_text()[mark:], "no fatal line in Dovecot's log",
               self.log_text()[mark:][-3000:])

    def evidence(self, since):
        lines = [l for l in self.log_text()[since:].splitlines()
                 if "authbrake-policy" in l and re.search(r"decision=(reject|tarpit)|locked|blocked", l)]
        say("Dovecot's log, authbrake-policy's refusals, locks and blocks:")
        say("  " + "\n  ".join(lines[-12:]))
        expect(any("decision=reject" in l for l in lines),
               "authbrake-policy logged its refusals with a reason")

    def log_mark(self):
        return len(self.log_text())


class CourierHost:
    """Courier's authdaemond, imapd and pop3d as Debian installed them."""

    name = "Courier"
    SERVICES = ("courier-authdaemon", "courier-imap", "courier-pop")

    def __init__(self):
        self.saved_pam = {}

    def configure(self):
        rc = Path("/etc/courier/authdaemonrc").read_text()
        expect(re.search(r'(?m)^authmodulelist="authpam"', rc) is not None,
               'Courier as installed: authmodulelist="authpam"')

    def start(self):
        for s in self.SERVICES:
            run([f"/etc/init.d/{s}", "start"])
        ok = all(harness.wait_port(p, 20) for p in (IMAP, POP3))
        if not ok:
            raise RuntimeError("Courier did not start:\n" + "\n".join(SYSLOG.lines()[-30:]))
        say(f"Courier: IMAP 127.0.0.1:{IMAP}, POP3 :{POP3} (couriertcpd), authdaemond")

    def stop(self):
        for s in reversed(self.SERVICES):
            run([f"/etc/init.d/{s}", "stop"], check=False)

    def after_install(self):
        say("admin: the example PAM stacks into /etc/pam.d (libpam-authbrake's README.Debian)")
        for service in ("imap", "pop3"):
            self.saved_pam[service] = Path(f"/etc/pam.d/{service}").read_text()
            shutil.copyfile(f"/usr/share/doc/libpam-authbrake/examples/pam.d/{service}",
                            f"/etc/pam.d/{service}")

    def before_remove(self):
        say("admin: Courier's own PAM stacks back before removing the module")
        for service, text in self.saved_pam.items():
            Path(f"/etc/pam.d/{service}").write_text(text)

    def evidence(self, since):
        lines = [l for l in SYSLOG.lines(since) if "pam_authbrake" in l]
        say("syslog, pam_authbrake's lines:")
        say("  " + "\n  ".join(lines[-12:]))
        expect(any("decision=reject" in l for l in lines),
               "pam_authbrake logged its refusals with a reason")

    def log_mark(self):
        return SYSLOG.mark()


SYSLOG = None


# ------------------------------------------------------------------ steps

def check_installed(kind, names):
    st = dpkg_state()
    expect(all(st.get(n, ("", ""))[1] == "ii" for n in names),
           "installed: " + ", ".join(f"{n} {st.get(n, ('?',))[0]}" for n in names))
    expect(file_mode(SECRET) == ("0640 root:dovecot" if kind == "dovecot" else "0640 root:root"),
           f"{SECRET}: {file_mode(SECRET)}")
    secret = Path(SECRET).read_text().strip()
    expect(re.fullmatch(r"[0-9a-f]{64}", secret) is not None, f"{SECRET}: 64 hex digits")
    conffiles = run(["dpkg-query", "-W", "-f", "${Conffiles}\n", *names], show=None).stdout
    want = ["/etc/authbrake/authbrake.conf"]
    if kind == "dovecot":
        want.append("/etc/dovecot/conf.d/95-authbrake.conf")
        for path in (API_KEY, API_INCLUDE):
            expect(file_mode(path) == "0640 root:dovecot", f"{path}: {file_mode(path)}")
        key = Path(API_KEY).read_text().strip()
        expect(f"X-API-Key: {key}" in Path(API_INCLUDE).read_text(),
               f"{API_INCLUDE} holds the key of {API_KEY}")
        url = harness.dovecot_policy_setting("server_url")
        expect(url == f"http://127.0.0.1:{POLICY_PORT}/",
               f"doveconf: auth_policy_server_url = {url}")
        nonce = harness.dovecot_policy_setting("hash_nonce")
        expect(re.fullmatch(r"[0-9a-f]{32}", nonce) is not None,
               "doveconf: auth_policy_hash_nonce is the generated one, not the placeholder")
    else:
        expect(not os.path.exists(API_KEY) and not os.path.exists("/etc/dovecot/conf.d/95-authbrake.conf"),
               "no API key and no Dovecot drop-in on a Courier host")
        expect(os.path.exists("/lib/x86_64-linux-gnu/security/pam_authbrake.so"),
               "/lib/x86_64-linux-gnu/security/pam_authbrake.so")
    expect(all(w in conffiles for w in want), "conffiles: " + ", ".join(want), conffiles)


def key_files(kind):
    files = [SECRET] + ([API_KEY, API_INCLUDE] if kind == "dovecot" else [])
    return {f: sha256(f) for f in files}


def attack(host, alice, bob, pw):
    say("\n== the real user, a botnet, a dictionary run")
    mark = host.log_mark()
    expect_login("imap", alice, pw[alice], HOME, True, "the real user at home")
    expect_login("pop3", alice, pw[alice], HOME, True, "the real user at home")
    bots = [("imap" if i % 2 else "pop3", alice, f"guess-{i}", f"127.0.1.{i}")
            for i in range(1, 7)]
    res = parallel_logins(bots)
    expect(not any(ok for ok, _ in res),
           f"botnet: {len(bots)} wrong passwords for {alice} from 127.0.1.1-6 over IMAP and POP3 refused")
    rc, out = cli("status", alice)
    expect(rc == 1 and re.search(r"(?m)^lock: +locked", out) is not None,
           f"authbrake status {alice}: locked (exit {rc})")
    expect_login("imap", alice, pw[alice], "127.0.2.1", False,
                 "right password, unfamiliar origin: account locked")
    expect_login("pop3", alice, pw[alice], "127.0.2.2", False,
                 "right password, unfamiliar origin: account locked")
    expect_login("pop3", alice, pw[alice], HOME, True, "home still gets in")
    expect_login("imap", alice, pw[alice], HOME, True, "home still gets in")
    res = parallel_logins([("imap", bob, "wrong-1", "127.0.3.1"),
                           ("pop3", bob, "wrong-2", "127.0.3.1"),
                           ("imap", bob, "wrong-3", "127.0.3.1")])
    expect(not any(ok for ok, _ in res), f"3 wrong passwords for {bob} from 127.0.3.1 refused")
    rc, out = cli("status", "127.0.3.1")
    expect(rc == 1 and re.search(r"(?m)^block: +blocked", out) is not None,
           f"authbrake status 127.0.3.1: blocked (exit {rc})")
    expect_login("imap", bob, pw[bob], "127.0.3.1", False, "right password, blocked address")
    expect_login("pop3", bob, pw[bob], "127.0.3.1", False, "right password, blocked address")
    expect_login("imap", bob, pw[bob], "127.0.4.1", True, "another address is not blocked")
    host.evidence(mark)


def main():
    global SYSLOG
    kind = sys.argv[1]
    names = PACKAGES[kind]
    say(f"######## {kind} host")
    WORK.mkdir(exist_ok=True)
    SYSLOG = courier.SyslogSink("/dev/log")
    memcached = harness.Memcached(port=11211).start()
    say(f"memcached on {memcached.address} (the shipped configuration's default)")
    users = courier.SystemUsers()
    host = DovecotHost() if kind == "dovecot" else CourierHost()
    try:
        pw = {}
        for tag in ("alice", "bob"):
            password = harness.random_password()
            pw[users.add(password, tag=tag)] = password
        alice, bob = pw
        say(f"users (useradd, pam_unix): {alice}, {bob}")
        host.configure()
        host.start()
        expect_login("imap", alice, pw[alice], HOME, True, "before the packages")

        say("\n== install")
        before = dpkg_state()
        calls = len(policy_rc_calls())
        apt("install", "--no-remove", *debs(DEB_DIR, names))
        after = dpkg_state()
        diff = state_diff(before, after)
        expect(sorted(diff) == sorted(f"+ {n} {after[n][0]} (ii)" for n in names),
               "the package set changed by our packages only: " + "; ".join(diff), "\n".join(diff))
        expect(len(policy_rc_calls()) == calls,
               "no service started, restarted or reloaded by the maintainer scripts",
               "\n".join(policy_rc_calls()[calls:]))
        check_installed(kind, names)
        with open(CONF, "a") as f:
            f.write(ADMIN_SETTINGS)
        say(f"admin: thresholds appended to {CONF}")
        host.after_install()
        keys = key_files(kind)
        attack(host, alice, bob, pw)

        say("\n== a second install of the same packages")
        apt("install", "--no-remove", "--reinstall", *debs(DEB_DIR, names))
        expect(dpkg_state() == after, "package set unchanged", "\n".join(state_diff(after, dpkg_state())))
        expect(key_files(kind) == keys, "secret (and API key, include) byte for byte the same")
        expect(ADMIN_SETTINGS in Path(CONF).read_text(), f"the admin's {CONF} kept")

        say("\n== upgrade to a rebuilt version")
        apt("install", "--no-remove", *debs(UPGRADE_DIR, names))
        st = dpkg_state()
        expect(all(st[n][1] == "ii" and st[n][0] != after[n][0] for n in names),
               "upgraded: " + ", ".join(f"{n} {after[n][0]} -> {st[n][0]}" for n in names))
        expect(key_files(kind) == keys, "secret (and API key, include) byte for byte the same")
        expect(ADMIN_SETTINGS in Path(CONF).read_text(), f"the admin's {CONF} kept")
        expect(len(policy_rc_calls()) == calls, "no service touched by the upgrade",
               "\n".join(policy_rc_calls()[calls:]))
        if kind == "dovecot":
            run(["doveadm", "reload"])
            harness.wait_port(POLICY_PORT, 20)
        expect_login("imap", alice, pw[alice], "127.0.2.3", False,
                     "the upgraded packages still refuse the locked account")

        say("\n== remove, then purge")
        if kind == "courier":
            host.before_remove()
        apt("remove", names[1])
        if kind == "dovecot":
            host.stop()
            host.start()      # raises if Dovecot's master does not start
            url = harness.dovecot_policy_setting("server_url")
            expect(os.path.exists("/etc/dovecot/conf.d/95-authbrake.conf") and url == "",
                   "Dovecot starts with dovecot-authbrake removed: its conffile is left, "
                   "its settings went with the package")
        expect_login("imap", alice, pw[alice], "127.0.2.4", True,
                     "no authbrake any more: the lock is not enforced")
        apt("purge", *names)
        expect(dpkg_state() == before, "package set as before the install",
               "\n".join(state_diff(before, dpkg_state())))
        gone = ["/etc/authbrake", API_INCLUDE, "/etc/dovecot/conf.d/95-authbrake.conf",
                "/usr/share/dovecot-authbrake", "/usr/sbin/authbrake"]
        left = [p for p in gone if os.path.lexists(p)]
        expect(not left, "gone after purge: " + ", ".join(gone), "left: " + ", ".join(left))
    except Exception as e:              # noqa: BLE001 - a failed step is a failed test
        expect(False, f"{kind} host: {e}")
    finally:
        host.stop()
        memcached.stop()
        try:
            users.remove_all()
        except RuntimeError as e:
            say(f"(removing the test users: {e})")
        SYSLOG.close()
    say(f"######## {kind} host: " + ("PASSED" if not failures else
                                     f"{len(failures)} FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
