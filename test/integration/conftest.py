"""pytest fixtures over harness.py: every server is stopped by PID in teardown.

Fixtures:
  memcached            a fresh Memcached per test
  memcached_factory    make(**kw) -> started Memcached; all stopped at teardown
  authbrake_conf       make(memcached_servers, **overrides) -> AuthbrakeConf
                       (files in a fresh 0755 temp dir per call)
  dovecot_factory      make(**Dovecot kwargs) -> started Dovecot; stopped at
                       teardown; its dir is kept (and its log tail printed)
                       when the test failed, removed otherwise
  postfix_factory      make(**Postfix kwargs) -> a Postfix, configured, not yet
                       started (start it after the Dovecot it authenticates
                       through: Dovecot(postfix_listener=pf.sasl_socket));
                       stopped at teardown; dir kept (log tail printed) when
                       the test failed
  policy_binary        path of authbrake-policy in the build under test
                       (harness.BUILD_DIR); fails the test (never skips) when
                       it has not been built: run `make` first

Against a sanitizer build (harness.SANITIZED: make check-sanitize), every
test fails whose run left a new sanitizer report, and the session fails if
any report is there at its end (reports are printed).
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def pytest_sessionstart(session):
    # the test users (harness.SystemUsers) of a run that was killed
    if os.geteuid() == 0:
        harness.remove_leftover_users()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    for when in ("setup", "call"):
        rep = getattr(request.node, "rep_" + when, None)
        if rep is not None and rep.failed:
            return True
    return False


@pytest.fixture(scope="session", autouse=True)
def _sanitizer_session():
    harness.sanitizer_setup()
    yield


@pytest.fixture(autouse=True)
def _sanitizer_reports(_sanitizer_session):
    """Fail the test after which a sanitizer report appeared. Set up first,
    so torn down last: after the servers of the test have stopped (a leak
    is reported when a process exits)."""
    before = set(harness.sanitizer_reports())
    yield
    new = {p: t for p, t in harness.sanitizer_reports().items() if p not in before}
    if new:
        pytest.fail("sanitizer report(s):\n" + "\n".join(
            f"--- {p}\n{t}" for p, t in new.items()), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    reports = harness.sanitizer_reports()
    if reports:
        sys.stderr.write(f"\n{len(reports)} sanitizer report(s) in "
                         f"{harness.SANITIZER_LOG_DIR}:\n")
        for p, t in reports.items():
            sys.stderr.write(f"--- {p}\n{t}\n")
        session.exitstatus = 1


@pytest.fixture
def policy_binary():
    if not os.access(harness.POLICY_BIN, os.X_OK):
        pytest.fail(f"{harness.POLICY_BIN} is missing: run `make` first")
    return str(harness.POLICY_BIN)


@pytest.fixture
def memcached_factory():
    started = []

    def make(**kw):
        mc = harness.Memcached(**kw)
        started.append(mc)
        return mc.start()

    yield make
    for mc in started:
        mc.stop()
        shutil.rmtree(mc.dir, ignore_errors=True)


@pytest.fixture
def memcached(memcached_factory):
    return memcached_factory()


@pytest.fixture
def authbrake_conf(request):
    dirs = []

    def make(memcached_servers, **overrides):
        d = tempfile.mkdtemp(prefix="ab-conf-")
        os.chmod(d, 0o755)
        dirs.append(d)
        return harness.write_authbrake_conf(d, memcached_servers, **overrides)

    yield make
    if not _failed(request):
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dovecot_factory(request):
    started = []

    def make(**kw):
        dc = harness.Dovecot(**kw)
        started.append(dc)
        return dc.start()

    yield make
    failed = _failed(request)
    for dc in started:
        dc.stop()
        if failed:
            lines = [l for l in dc.log_text().splitlines() if ": Debug: " not in l]
            tail = "\n".join(lines[-60:])
            sys.stderr.write(f"\n--- kept {dc.dir}; tail of {dc.log_path}:\n{tail}\n")
        else:
            shutil.rmtree(dc.dir, ignore_errors=True)


@pytest.fixture
def postfix_factory(request):
    started = []

    def make(**kw):
        pf = harness.Postfix(**kw)
        started.append(pf)
        return pf

    yield make
    failed = _failed(request)
    for pf in started:
        pf.stop()
        if failed:
            tail = "\n".join(pf.log_text().splitlines()[-40:])
            sys.stderr.write(f"\n--- kept {pf.dir}; tail of {pf.log_path}:\n{tail}\n")
        else:
            shutil.rmtree(pf.dir, ignore_errors=True)
