"""authbrake's metrics through Dovecot's own stats service: authbrake-policy
sends Dovecot events, the drop-in's metric { } blocks count them, and the
stats service's HTTP listener exports them in OpenMetrics. Against a real
Dovecot 2.3.19, a real memcached and a real Prometheus server scraping it.
"""

import json
import re
import time

from harness import (REPO_ROOT, DROPIN_CONF, Dovecot, Prometheus,
                     metric_value, parse_openmetrics)

DASHBOARD = REPO_ROOT / "conf.d" / "grafana-authbrake.json"


def dashboard_queries():
    """Every PromQL expression of the Grafana dashboard in conf.d/."""
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def wait_scrape(dovecot, ready, timeout=15):
    """Events reach the stats service asynchronously: scrape until ready
    (a predicate over the samples) holds, and return the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        text = dovecot.scrape()
        samples = parse_openmetrics(text)
        if ready(samples) or time.monotonic() > deadline:
            return text, samples
        time.sleep(0.2)


def dropin_metrics():
    """The metric names conf.d/95-authbrake.conf defines, in order."""
    return re.findall(r"^metric (\w+) \{", DROPIN_CONF.read_text(), re.M)


def decisions(samples, **labels):
    return metric_value(samples, "dovecot_authbrake_decisions_total", **labels)


def test_scrape_counts_a_scripted_attack(memcached, authbrake_conf,
                                         dovecot_factory):
    # a subnet block after 4 failures from 4 addresses of one /24; no
    # tarpit, no address block, no account lock on the way
    conf = authbrake_conf(memcached, ip_free_failures=10, ip_block_failures=20,
                          net_free_failures=3, net_block_failures=4,
                          account_lock_failures=50)
    dovecot = dovecot_factory(policy_conf=conf, stats_http=True)

    attackers = [f"127.0.5.{i}" for i in range(1, 5)]
    for src in attackers:
        ok, msg, _ = dovecot.imap_login("bob", "guess-" + src, src=src)
        assert not ok, msg
    ok, msg, _ = dovecot.imap_login("bob", "guess-late", src="127.0.5.9")
    assert not ok and "network" in msg, msg     # refused: subnet blocked
    ok, msg, _ = dovecot.imap_login("alice", "alice-secret-1", src="127.0.9.1")
    assert ok, msg

    text, samples = wait_scrape(
        dovecot, lambda s: metric_value(s, "dovecot_authbrake_decision_latency_count") >= 6
        and metric_value(s, "dovecot_authbrake_reports_count") >= 6)

    # one decision per login (check_after_auth = no in the drop-in)
    assert decisions(samples, verdict="allow", reason="ok") == 5
    assert decisions(samples, verdict="reject", reason="subnet_blocked") == 1
    assert decisions(samples, verdict="tarpit") == 0
    assert metric_value(samples, "dovecot_authbrake_decisions_count") == 6
    assert metric_value(samples, "dovecot_authbrake_fail_mode_decisions_count") == 0
    # the latency histogram holds every decision, buckets cumulative
    assert metric_value(samples, "dovecot_authbrake_decision_latency_count") == 6
    assert metric_value(samples, "dovecot_authbrake_decision_latency_bucket", le="+Inf") == 6
    buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in samples.items()
                     if n == "dovecot_authbrake_decision_latency_bucket"
                     and dict(l)["le"] != "+Inf")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)

    for outcome, n in (("failure", 4), ("policy_reject", 1), ("success", 1)):
        assert metric_value(samples, "dovecot_authbrake_reports_total",
                            outcome=outcome) == n, outcome
    assert metric_value(samples, "dovecot_authbrake_blocks_total", kind="subnet") == 1
    assert metric_value(samples, "dovecot_authbrake_blocks_count") == 1

    # memcached round trips: all answered, one server, each in the histogram
    server = memcached.address
    trips = metric_value(samples, "dovecot_authbrake_store_requests_total",
                         server=server, result="ok")
    assert trips >= 12    # at least one read per allow and per report
    assert metric_value(samples, "dovecot_authbrake_store_requests_count") == trips
    assert metric_value(samples, "dovecot_authbrake_store_latency_count") == trips
    assert metric_value(samples, "dovecot_authbrake_store_errors_count") == 0
    assert metric_value(samples, "dovecot_authbrake_breaker_trips_count") == 0

    # every metric of the drop-in is exported, and no label is nameless
    # (Dovecot 2.3.19 mislabels the metric after a histogram: the drop-in
    # keeps its histograms last)
    for name in dropin_metrics():
        assert f"# TYPE dovecot_{name} " in text, name
    assert '{"' not in text

    # a real Prometheus takes the scrape whole, and reads the same counts
    with Prometheus([f"127.0.0.1:{dovecot.stats_port}"]) as prom:
        health = prom.wait_target_up()
        assert health == "up", prom.last_error
        got = prom.query('dovecot_authbrake_decisions_total'
                         '{verdict="reject",reason="subnet_blocked"}')
        assert [v for _, v in got] == [1.0]
        got = prom.query('dovecot_authbrake_blocks_total{kind="subnet"}')
        assert [v for _, v in got] == [1.0]
        got = prom.query('dovecot_authbrake_decision_latency_bucket{le="+Inf"}')
        assert [v for _, v in got] == [6.0]

        # the dashboard's queries: valid PromQL, over metrics the scrape
        # declares (a counter with no event yet has no sample)
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        queries = dashboard_queries()
        assert len(queries) >= 8
        for expr in queries:
            for family, suffix in re.findall(r"(dovecot_authbrake_\w+?)_(total|bucket)\b", expr):
                assert types.get(family) == ("counter" if suffix == "total" else "histogram"), \
                    (family, expr)
            prom.query(expr)      # raises on a query Prometheus refuses


def test_scrape_counts_store_errors_breaker_and_fail_mode(memcached,
                                                          authbrake_conf,
                                                          dovecot_factory):
    conf = authbrake_conf(memcached, fail_mode="open", breaker_failures=2,
                          breaker_cooldown="1h")
    dovecot = dovecot_factory(policy_conf=conf, stats_http=True)
    ok, msg, _ = dovecot.imap_login("alice", "alice-secret-1", src="127.0.6.1")
    assert ok, msg

    memcached.kill()
    logins = 4
    for i in range(logins):
        ok, msg, _ = dovecot.imap_login("alice", "alice-secret-1",
                                        src=f"127.0.6.{10 + i}")
        assert ok, msg      # fail_mode = open

    def settled(s):
        return metric_value(s, "dovecot_authbrake_decisions_count") >= logins + 1 \
            and metric_value(s, "dovecot_authbrake_reports_count") >= logins + 1
    text, samples = wait_scrape(dovecot, settled)

    assert decisions(samples, verdict="allow", reason="ok") == 1
    assert decisions(samples, verdict="allow", reason="fail_mode_open") == logins
    assert metric_value(samples, "dovecot_authbrake_fail_mode_decisions_total",
                        verdict="allow") == logins
    assert metric_value(samples, "dovecot_authbrake_fail_mode_decisions_count") == logins
    errors = sum(v for (n, l), v in samples.items()
                 if n == "dovecot_authbrake_store_errors_total" and len(l) == 2)
    assert errors >= 2
    assert metric_value(samples, "dovecot_authbrake_store_errors_count") == errors
    # every policy process that met the dead server trips once (cooldown 1h)
    trips = metric_value(samples, "dovecot_authbrake_breaker_trips_total",
                         server=memcached.address)
    assert 1 <= trips <= len(dovecot.policy_pids())
    # what the log says matches: one warning per trip
    assert dovecot.log_text().count("circuit breaker open, skipping it") == trips

