"""deploy/: the alert rules under promtool, and the Grafana dashboard's every query against a real
Prometheus scraping real daemons.

Two daemons are scraped, as an operator running both would: one on replay with the M-series
plugins (it trades, so fills, positions and rejections have series), one with the live Binance
feed pointed at the fake Binance (connections, frame ages, silent streams). A panel query passes
when Prometheus returns at least one series for it; every query must, so a typo in a metric name
or a label leaves the test red instead of a dashboard panel silently empty.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import REPO, Daemon, free_port, write_config
from tests.integration.test_live_feed import FakeVenue, live_feed_config

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "dolphind-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "dolphind-command-center.json"

PLUGINS = """
[plugins]
enabled = ["guardian", "scheduler"]
"""


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 20 rules found" in check.stdout, check.stdout
    test = subprocess.run(["promtool", "test", "rules", "dolphind-alerts.test.yml"],
                          capture_output=True, text=True, timeout=60, cwd=RULES.parent)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout
    # The example scrape config loads the rules and is a valid Prometheus config.
    cfg = subprocess.run(["promtool", "check", "config", "prometheus.yml"], capture_output=True,
                         text=True, timeout=60, cwd=RULES.parent)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr


def test_every_alert_in_the_rules_has_a_promtool_test() -> None:
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M))
    tested = RULES.with_name("dolphind-alerts.test.yml").read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tested))
    assert len(alerts) == 20 and alerts == fired, alerts ^ fired


def _panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    return out


def test_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "dolphind-command-center"
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 25
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for p in panels:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in ("equity", "drawdown", "exposure", "pnl", "fills", "rejections", "signals",
                   "posture", "feed lag", "feed gaps", "bar lateness", "stage", "restarts",
                   "weight", "ban", "breaker", "store", "plugins"):
        assert needed in titles, needed
    for name, expr in _panel_queries():
        assert "$job" in expr and "$instance" in expr, name  # the variables filter every query
        assert "vector(" not in expr, name  # a constant would hide an empty series


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def replay_daemon(tmp_path: Path) -> Iterator[Daemon]:
    port = free_port()
    root = tmp_path / "replay"
    root.mkdir()
    # As fast as the stages go: it trades within seconds (fills, positions, rejections).
    d = Daemon(write_config(root / "dolphind.toml", port, extra=PLUGINS, speed=0.0), port).start()
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


@pytest.fixture
def live_daemon(tmp_path: Path) -> Iterator[Daemon]:
    root = tmp_path / "live"
    root.mkdir()
    venue = FakeVenue(root / "fake-binance.log")
    port = free_port()
    extra = live_feed_config(venue.url, stall_timeout_s=1.0, stream_grace_s=5.0)
    d = Daemon(write_config(root / "dolphind.toml", port, extra=extra,
                            data_dir=str(root / "var")), port).start()
    try:
        yield d
    finally:
        d.stop()
        venue.stop()


@pytest.fixture
def prometheus(tmp_path: Path, replay_daemon: Daemon, live_daemon: Daemon) -> Iterator[str]:
    """The example config (deploy/prometheus/prometheus.yml) with the two daemons as targets
    and a 1 s scrape, so rates have samples within seconds."""
    port = free_port()
    example = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert '["127.0.0.1:9108"]' in example
    config = example.replace('["127.0.0.1:9108"]',
                             f'["127.0.0.1:{replay_daemon.port}", "127.0.0.1:{live_daemon.port}"]')
    config = config.replace("scrape_interval: 5s", "scrape_interval: 1s")
    config = config.replace("evaluation_interval: 15s", "evaluation_interval: 1s")
    (tmp_path / "prometheus.yml").write_text(config)
    (tmp_path / RULES.name).write_text(RULES.read_text())
    log = (tmp_path / "prom.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(url + "/-/ready", timeout=2).status == 200,
                   timeout=30, what="prometheus ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_every_dashboard_query_returns_data_from_real_daemons(prometheus: str) -> None:
    queries = _panel_queries()
    assert len(queries) >= 50

    def concrete(expr: str) -> str:  # what Grafana sends with job and instance on "All"
        return expr.replace("$job", ".+").replace("$instance", ".+")

    empty: list[str] = []

    def all_have_data() -> bool:
        empty[:] = [f"{name}: {expr}" for name, expr in queries
                    if not _query(prometheus, concrete(expr))]
        return not empty

    try:
        wait_until(all_have_data, timeout=90, interval=2.0, what="every panel query to have data")
    except AssertionError:
        raise AssertionError("panel queries with no data:\n" + "\n".join(empty)) from None
    # Both daemons are up in Prometheus, and the rules loaded and evaluate without error.
    up = _query(prometheus, 'up{job="dolphind"}')
    assert sorted(r["value"][1] for r in up) == ["1", "1"], up
    with urllib.request.urlopen(prometheus + "/api/v1/rules", timeout=10) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 20
    wait_until(lambda: all(r.get("lastEvaluation", "").startswith("2") for r in _rules(prometheus)),
               timeout=30, what="every rule evaluated")
    bad = [(r["name"], r.get("lastError")) for r in _rules(prometheus) if r["health"] != "ok"]
    assert not bad, bad


def _rules(prometheus: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(prometheus + "/api/v1/rules", timeout=10) as resp:
        groups = json.loads(resp.read())["data"]["groups"]
    return [r for g in groups for r in g["rules"]]
