"""authbrake-policy under a real Dovecot master (issue 3)."""

import pytest

import harness


def test_baseline_dovecot_without_policy(dovecot_factory):
    """Control: the harness's Dovecot checks passwords over IMAP, POP3 and doveadm."""
    dc = dovecot_factory()
    user, pw = "alice", harness.DEFAULT_USERS["alice"]
    assert dc.imap_login(user, pw, "127.0.0.2")[0]
    ok, msg, _ = dc.imap_login(user, "wrong", "127.0.0.3")
    assert not ok and "AUTHENTICATIONFAILED" in msg
    assert dc.pop3_login(user, pw, "127.0.0.4")[0]
    assert not dc.pop3_login(user, "wrong", "127.0.0.5")[0]
    assert dc.auth_test(user, pw, "127.0.0.6")[0]
    assert not dc.auth_test(user, "wrong", "127.0.0.7")[0]
    assert dc.wait_log(r"passwd-file\(alice,127\.0\.0\.7\b.*Password mismatch")
