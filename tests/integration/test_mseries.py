"""The M-series in the real daemon (a subprocess): loaded only through installed entry points,
listed in /status with their metrics, reloaded by SIGHUP, acting through the control plane.

Needs the four distributions installed:
    pip install -e plugins/guardian -e plugins/scheduler -e plugins/governor -e plugins/comms
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import Daemon, free_port, write_config

pytestmark = pytest.mark.integration

MSERIES = ("guardian", "scheduler", "governor", "comms")
WEBHOOK_ENV = "DOLPHIND_TEST_WEBHOOK"


@dataclass
class Webhook:
    """A loopback chat webhook (Slack shape) the comms plugin posts to."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def texts(self) -> list[str]:
        return [m.get("text", "") for m in list(self.messages)]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hook.messages.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook/secret-part"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    server.shutdown()
    server.server_close()


def mseries_config(enabled: tuple[str, ...] = MSERIES, guardian_extra: str = "") -> str:
    names = ", ".join(f'"{n}"' for n in enabled)
    required = ", ".join(f'"dolphind-{n}>=1"' for n in enabled)
    return f"""
[plugins]
enabled = [{names}]
required = [{required}]

[plugins.guardian]
tick_interval_s = 0.2

[plugins.guardian.exchange_lag]
max_feed_age_s = 30.0
cooldown_s = 2.0
{guardian_extra}

[plugins.scheduler]
tick_interval_s = 0.5

[plugins.governor]
tick_interval_s = 0.2
max_position_notional_usdt = 5000.0

[plugins.comms]
url_env = "{WEBHOOK_ENV}"
format = "slack"
# These tests are about incidents: trade messages would take the rate limit's slots first.
events = ["incident"]
max_attempts = 3
backoff_initial_s = 0.05
backoff_max_s = 0.2
"""


def start(tmp: Path, webhook: Webhook, extra: str, name: str = "d.toml",
          speed: float = 600.0) -> Daemon:
    port = free_port()
    cfg = write_config(tmp / name, port, extra=extra, speed=speed)
    d = Daemon(cfg, port, env={WEBHOOK_ENV: webhook.url}).start()
    d.wait_ready(timeout=120)  # numba kernels are compiled before ready
    return d


def plugins_by_name(d: Daemon) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in d.get_json("/status")["plugins"]}


def audited_control_actions(var: Path) -> list[dict[str, Any]]:
    """The control-plane records of the daemon's audit chain, after checking the chain."""
    from dolphind.store.audit import split_line, verify

    path = var / "audit.jsonl"
    res = verify(path)
    assert res.ok, f"audit chain broken at line {res.first_bad_line}: {res.reason}"
    recs = [json.loads(split_line(x)[0]) for x in path.read_bytes().splitlines()]
    return [r["data"] for r in recs if r["event"].startswith("control.")
            and r["event"] != "control.halt_state"]


def test_loaded_through_entry_points_listed_in_status_with_metrics(tmp_path: Path,
                                                                   webhook: Webhook) -> None:
    d = start(tmp_path, webhook, mseries_config())
    try:
        plugins = plugins_by_name(d)
        assert list(plugins) == list(MSERIES)
        for name, p in plugins.items():
            assert (p["version"], p["distribution"], p["enabled"], p["healthy"]) == \
                ("1.0.0", f"dolphind-{name}", True, True), p
            assert "detail" in p
        _, body = d.get("/metrics")
        text = body.decode()
        for needle in ('dolphind_m20_incidents_total{playbook="drawdown"} 0.0',
                       'dolphind_m19_actions_total{action="recalibrate"} 0.0',
                       "dolphind_m25_halted 0.0",
                       'dolphind_m22_messages_total{outcome="sent"} 0.0',
                       'dolphind_plugin_enabled{plugin="governor"} 1.0',
                       "dolphind_risk_multiplier 1.0", "dolphind_order_rate_factor 1.0"):
            assert needle in text, needle
        check = subprocess.run(["promtool", "check", "metrics"], input=body,
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        # The webhook URL is a secret: it is in the environment, never in the logs.
        assert "secret-part" not in d.logs()
    finally:
        assert d.stop() == 0


def test_disabling_one_in_the_config_removes_it(tmp_path: Path, webhook: Webhook) -> None:
    d = start(tmp_path, webhook, mseries_config(enabled=("guardian", "scheduler", "governor")))
    try:
        assert list(plugins_by_name(d)) == ["guardian", "scheduler", "governor"]
        assert d.metric("dolphind_m22_queue_depth") is None
        assert d.metric("dolphind_m25_halted") == 0
    finally:
        assert d.stop() == 0


def test_feed_stall_fires_exchange_lag_once_per_cooldown_and_sighup_moves_the_threshold(
        tmp_path: Path, webhook: Webhook) -> None:
    """A real feed stall (the replay slowed to a crawl by a reload), judged by the guardian
    against a threshold that a second SIGHUP lowers while the daemon runs."""
    d = start(tmp_path, webhook, mseries_config())
    incidents = tmp_path / "var" / "plugins" / "guardian" / "incidents.jsonl"
    try:
        def guardian() -> dict[str, Any]:
            return plugins_by_name(d)["guardian"]["detail"]

        assert guardian()["thresholds"]["exchange_lag.max_feed_age_s"] == 30.0
        # Stall the feed: one market minute now takes ~17 wall hours.
        d.config.write_text(d.config.read_text().replace("speed = 600.0", "speed = 0.001"))
        d.signal(signal.SIGHUP)
        wait_until(lambda: (guardian()["observation"]["feed_age_s"] or 0) >= 2.0, timeout=20,
                   what="the guardian sees the feed silent for 2 s")
        # Silent for longer than the new threshold will be, but below the current one.
        assert guardian()["playbooks"]["exchange_lag"]["fired"] == 0
        assert not incidents.exists()

        d.config.write_text(d.config.read_text().replace("max_feed_age_s = 30.0",
                                                         "max_feed_age_s = 1.0"))
        d.signal(signal.SIGHUP)
        wait_until(lambda: guardian()["thresholds"]["exchange_lag.max_feed_age_s"] == 1.0,
                   what="threshold reloaded")
        wait_until(lambda: guardian()["playbooks"]["exchange_lag"]["fired"] >= 3, timeout=30,
                   what="exchange_lag fired three times")
        lines = [json.loads(x) for x in incidents.read_text().splitlines()]
        assert {x["playbook"] for x in lines} == {"exchange_lag"}
        gaps = [b["ts"] - a["ts"] for a, b in zip(lines, lines[1:])]
        assert all(g >= 2.0 for g in gaps), gaps  # never more than once per 2 s cooldown
        actions = [json.loads(x) for x in
                   (incidents.parent / "recovery_actions.jsonl").read_text().splitlines()]
        assert {a["action"] for a in actions} == {"reconnect_feed"}
        st = d.get_json("/status")
        assert st["control"]["feed_reconnect_requests"] >= 3
        assert d.metric("dolphind_m20_incidents_total", 'playbook="exchange_lag"') >= 3
        assert d.metric("dolphind_m20_recovery_actions_total", 'action="reconnect_feed"') >= 3
        # The incidents reached the webhook through the control plane and comms.
        wait_until(lambda: sum("exchange_lag" in t for t in webhook.texts()) >= 3,
                   what="incidents delivered to the webhook")
        # And the daemon kept running throughout.
        assert d.get_json("/healthz")["level"] in ("GREEN", "DEGRADED")
        assert all(p["healthy"] for p in plugins_by_name(d).values())
    finally:
        assert d.stop() == 0
    # Every control action is in the audit chain with its cause: the SIGHUP reloads (the
    # request and the outcome) and the guardian's incidents and reconnects.
    acts = audited_control_actions(tmp_path / "var")
    sighup = [(a["action"], a["params"].get("ok")) for a in acts if a["cause"] == "signal:SIGHUP"]
    assert sighup == [("reload_requested", None), ("reload", True)] * 2
    reloads = [a["params"] for a in acts if a["action"] == "reload"]
    assert [r["applied"] for r in reloads] == [["replay.speed"], ["plugins.settings.guardian"]]
    guardian = [a for a in acts if a["cause"] == "guardian"]
    assert sum(a["action"] == "reconnect_feed" for a in guardian) >= 3
    assert sum(a["action"] == "incident" and a["params"]["kind"] == "exchange_lag"
               for a in guardian) >= 3
    assert any(a["action"] == "halt" and a["cause"] == "shutdown" for a in acts)


def _breach_governor_offline(data_dir: Path) -> None:
    """Drive the governor's own code to a real breach on this data dir, as the daemon's
    governor would on a fill (the daemon has no execution stage to fill orders yet)."""
    from dolphind.events import Fill
    from dolphind.control import Control
    from dolphind.telemetry.metrics import Metrics
    from dolphind.plugins import PluginContext
    from dolphind.plugins.figures import figures_from_metrics
    from dolphind_governor import GovernorPlugin

    import structlog

    async def breach() -> None:
        m = await asyncio.to_thread(Metrics)
        control = Control(m, lambda cause: None)
        g = GovernorPlugin()
        await g.start(PluginContext("governor", {"max_position_notional_usdt": 5000.0}, control,
                                    m.registry, None, data_dir / "plugins" / "governor",
                                    structlog.get_logger("test"), lambda: figures_from_metrics(m)))
        await g.on_fill(Fill("f1", "dd-1", "BTCUSDT", "SELL", 0.1, 60_000.0, 0.0, "TAKER", 1))
        assert control.halt_holds["governor"].startswith("max_position_notional")
        await g.stop()

    asyncio.run(breach())


def test_governor_halt_survives_restart_until_the_operator_resumes_with_the_token(
        tmp_path: Path, webhook: Webhook) -> None:
    var = tmp_path / "var"
    _breach_governor_offline(var)
    state = var / "plugins" / "governor" / "governor_state.json"
    compliance = var / "plugins" / "governor" / "compliance.jsonl"

    d = start(tmp_path, webhook, mseries_config())
    try:
        st = d.get_json("/status")
        assert st["control"]["halted"] is True
        assert "max_position_notional" in st["control"]["halted_by"]["governor"]
        assert d.metric("dolphind_m25_halted") == 1
        assert d.metric("dolphind_trading_halted") == 1
        wait_until(lambda: any("governor_halt" in t and "still halted after restart" in t
                               for t in webhook.texts()), what="halt announced on the webhook")
        # No token, wrong token: nothing changes.
        assert d.post("/kill", {"action": "resume"}, token=None)[0] == 401
        assert d.post("/kill", {"action": "resume"}, token="nope")[0] == 401
        assert d.get_json("/status")["control"]["halted"] is True
    finally:
        assert d.stop() == 0

    # Restarted again without a resume: still halted.
    d = start(tmp_path, webhook, mseries_config())
    try:
        assert d.get_json("/status")["control"]["halted"] is True
        code, body = d.post("/kill", {"action": "resume"})
        assert code == 200 and body["halted"] is False
        wait_until(lambda: plugins_by_name(d)["governor"]["detail"]["halted"] is False,
                   what="governor saw the operator's resume")
        wait_until(lambda: json.loads(state.read_text())["halted"] is False,
                   what="state file cleared")
        assert d.metric("dolphind_m25_halted") == 0
        events = [json.loads(x)["event"] for x in compliance.read_text().splitlines()]
        assert events == ["violation", "halt", "halt_restored", "halt_restored", "resumed"]
        assert json.loads(compliance.read_text().splitlines()[-1])["by"].startswith("http:")
    finally:
        assert d.stop() == 0
    # The governor's restored halts and the operator's resume, audited with their causes.
    acts = [(a["action"], a["cause"].split(":")[0]) for a in audited_control_actions(var)
            if a["action"] in ("halt", "resume") and a["cause"] != "shutdown"]
    assert acts == [("halt", "governor"), ("halt", "governor"), ("resume", "http")], acts

    # Resumed for good: a restart no longer halts.
    d = start(tmp_path, webhook, mseries_config())
    try:
        assert d.get_json("/status")["control"]["halted"] is False
    finally:
        assert d.stop() == 0


FAULT_COOLDOWN_S = 3.0


def _fault_config() -> str:
    """All four plugins; guardian thresholds low enough that a few seconds of full-speed paper
    trading on the bundled sample reach them; governor limits out of the way (a governor halt
    would stop the entries the rejection fault needs)."""
    base = mseries_config().replace("max_position_notional_usdt = 5000.0",
                                    "max_position_notional_usdt = 1e9\nmax_leverage = 100.0\n"
                                    "max_daily_loss_usdt = 1e9\nmax_drawdown = 0.99")
    cd = FAULT_COOLDOWN_S
    return base.replace("[plugins.guardian.exchange_lag]\nmax_feed_age_s = 30.0\ncooldown_s = 2.0",
                        f"""[plugins.guardian.exchange_lag]
max_feed_age_s = 2.0
cooldown_s = {cd}

[plugins.guardian.drawdown]
threshold = 0.0001
duration_s = 60.0
cooldown_s = {cd}

[plugins.guardian.rejections]
threshold = 3
window_s = 30.0
duration_s = 60.0
cooldown_s = {cd}

[plugins.guardian.entropy]
window = 30
min_scans = 10
short_threshold = -0.0002
long_threshold = 0.0002
max_flip_rate = 0.2
duration_s = 60.0
cooldown_s = {cd}
""") + "\n[risk]\nmax_orders_per_minute = 100000.0\norder_burst = 1000\n"


def test_fault_replay_each_playbook_fires_once_per_cooldown(tmp_path: Path,
                                                            webhook: Webhook) -> None:
    """The real daemon trading the bundled replay at full speed, with faults injected:
    a drawdown (paper trading's own losses and fees against a 1 bp threshold), a burst of risk
    rejections (SIGHUP: an allowlist no symbol is on), a noisy signal (the scanner's vel_div
    judged on tight state gates), then a feed stall (SIGHUP: the replay slowed to a crawl).
    Each playbook fires, at most once per cooldown, visible in /status, /metrics and the
    JSONL logs; the daemon keeps running. (The feed stall over the live feed and the fake
    Binance is the next test.)"""
    d = start(tmp_path, webhook, _fault_config(), speed=0.0)
    folder = tmp_path / "var" / "plugins" / "guardian"

    def fired(playbook: str) -> float:
        return d.metric("dolphind_m20_incidents_total", f'playbook="{playbook}"') or 0

    try:
        wait_until(lambda: fired("drawdown") >= 1, timeout=60, what="drawdown playbook")
        wait_until(lambda: fired("entropy") >= 1, timeout=60, what="entropy playbook")
        overrides = d.get_json("/status")["control"]["overrides"]
        assert {(o["cause"], o["key"]) for o in overrides} >= {("guardian", "drawdown"),
                                                              ("guardian", "entropy")}
        assert d.metric("dolphind_risk_multiplier") == 0.5

        # Issue 16: IRP no longer proposes a symbol off the allowlist, so the rails' refusals
        # come from an order cap every entry exceeds.
        d.config.write_text(d.config.read_text() + '\nmin_order_notional_usdt = 1.0\n'
                            'max_order_notional_usdt = 2.0\n')
        d.signal(signal.SIGHUP)
        wait_until(lambda: fired("rejections") >= 1, timeout=60, what="rejections playbook")
        assert (d.metric("dolphind_risk_rejections_total", 'rule="max_notional"') or 0) >= 3
        assert d.metric("dolphind_order_rate_factor") == 0.5

        d.config.write_text(d.config.read_text().replace("speed = 0.0", "speed = 0.001"))
        d.signal(signal.SIGHUP)
        wait_until(lambda: fired("exchange_lag") >= 1, timeout=30, what="exchange_lag playbook")

        incidents = [json.loads(x) for x in (folder / "incidents.jsonl").read_text().splitlines()]
        actions = [json.loads(x) for x in
                   (folder / "recovery_actions.jsonl").read_text().splitlines()]
        by_playbook: dict[str, list[float]] = {}
        for inc in incidents:
            by_playbook.setdefault(inc["playbook"], []).append(inc["ts"])
        assert set(by_playbook) == {"drawdown", "rejections", "exchange_lag", "entropy"}
        for playbook, times in by_playbook.items():
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert all(g >= FAULT_COOLDOWN_S - 0.01 for g in gaps), (playbook, gaps)
            assert fired(playbook) >= len(times)  # the file lags the counter by a write
        assert {a["action"] for a in actions} == {"risk_multiplier", "throttle",
                                                  "reconnect_feed"}
        st = d.get_json("/status")
        detail = {p["name"]: p for p in st["plugins"]}["guardian"]["detail"]
        assert all(detail["playbooks"][p]["fired"] >= 1 for p in by_playbook)
        assert {a["cause"] for a in st["control"]["recent_actions"]} >= {"guardian"}
        # The daemon kept running and every plugin is healthy.
        assert d.proc is not None and d.proc.poll() is None
        assert d.get_json("/healthz")["level"] != "DEAD"
        assert all(p["healthy"] for p in st["plugins"]), st["plugins"]
        wait_until(lambda: {k for k in ("drawdown", "rejections", "entropy", "exchange_lag")
                            if any(k in t for t in webhook.texts())} ==
                   {"drawdown", "rejections", "entropy", "exchange_lag"},
                   what="every playbook's incident on the webhook")
    finally:
        assert d.stop() == 0


def test_live_feed_stall_through_the_fake_binance_fires_exchange_lag(tmp_path: Path,
                                                                     webhook: Webhook) -> None:
    """The feed-stall fault of the issue over the real live feed: the fake Binance (another
    process) stops sending frames; the guardian sees the feed's own message age and asks for a
    reconnect, at most once per cooldown; when frames flow again it stops."""
    from tests.integration.test_live_feed import FakeVenue, live_feed_config

    venue = FakeVenue(tmp_path / "fake-binance.log")
    port = free_port()
    extra = live_feed_config(venue.url, stall_timeout_s=30.0, stream_grace_s=30.0) + mseries_config(guardian_extra="").replace("max_feed_age_s = 30.0", "max_feed_age_s = 1.5")
    d = Daemon(write_config(tmp_path / "d.toml", port, extra=extra,
                            data_dir=str(tmp_path / "var")), port,
               env={WEBHOOK_ENV: webhook.url}).start()
    incidents = tmp_path / "var" / "plugins" / "guardian" / "incidents.jsonl"
    try:
        d.wait_ready(timeout=120)  # numba kernels are compiled before ready
        wait_until(lambda: (d.metric("dolphind_bars_total") or 0) >= 2, timeout=30, what="bars")
        assert not incidents.exists()

        def requested(conn: str) -> float:
            return d.metric("dolphind_feed_reconnects_total",
                            f'conn="{conn}",reason="requested"') or 0

        # The feed's stall timeout (30 s) is far off: any reconnect now is the guardian's.
        assert requested("market-0") == requested("public-0") == 0
        venue.fault("stall", seconds=5.0)
        wait_until(lambda: (d.metric("dolphind_m20_incidents_total",
                                     'playbook="exchange_lag"') or 0) >= 2, timeout=15,
                   what="exchange_lag fired during the stall")
        st = d.get_json("/status")
        assert st["control"]["feed_reconnect_requests"] >= 2
        # The request reached the sockets: both connections were re-opened because of it.
        wait_until(lambda: requested("market-0") >= 1 and requested("public-0") >= 1,
                   timeout=10, what="the live feed reconnected on the guardian's request")
        assert (d.metric("dolphind_feed_gaps_total", 'reason="stall"') or 0) == 0
        # Frames flow again: the playbook goes quiet (after at most one more firing).
        wait_until(lambda: (plugins_by_name(d)["guardian"]["detail"]["observation"]
                            ["feed_age_s"] or 99) < 1.0, timeout=20, what="feed flowing again")
        fired = d.metric("dolphind_m20_incidents_total", 'playbook="exchange_lag"') or 0
        lines = [json.loads(x) for x in incidents.read_text().splitlines()]
        assert len(lines) == fired
        assert all(b["ts"] - a["ts"] >= 2.0 for a, b in zip(lines, lines[1:]))
        assert fired <= 4  # a 5 s stall with a 2 s cooldown, judged at 1.5 s of silence
        assert d.get_json("/healthz")["level"] != "DEAD"
    finally:
        d.stop()
        venue.stop()
