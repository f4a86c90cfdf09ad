"""The real daemon as a subprocess: readiness, metrics, reload, signals, control, plugins."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import REPO, SAMPLE, TOKEN, Daemon, free_port, write_config
from tests.plugins import install_sample_plugin

pytestmark = pytest.mark.integration


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    port = free_port()
    d = Daemon(write_config(tmp_path / "dolphind.toml", port), port).start()
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


def test_ready_and_metrics_pass_promtool(daemon: Daemon) -> None:
    wait_until(lambda: (daemon.metric("dolphind_bars_total") or 0) >= 5, what="bars")
    status, body = daemon.get("/metrics")
    assert status == 200
    text = body.decode()
    for needle in ("dolphind_build_info{", "dolphind_stage_heartbeat_timestamp_seconds{stage=\"feed\"}",
                   "dolphind_channel_depth{channel=\"bars\"}", "process_resident_memory_bytes",
                   "dolphind_bar_close_price{symbol=\"BTCUSDT\"}",
                   "dolphind_config_reload_failures_total 0.0"):
        assert needle in text, needle
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    health = daemon.get_json("/healthz")
    assert health["level"] == "GREEN"


def test_status_reports_mode_uptime_config_stages_plugins(daemon: Daemon) -> None:
    st = daemon.get_json("/status")
    assert st["mode"] == "paper"
    assert st["uptime_s"] > 0
    assert len(st["config"]["hash"]) == 16
    assert set(st["stages"]) == {"feed", "market", "scan", "alpha", "execution"}
    assert all(s["running"] for s in st["stages"].values())
    assert st["plugins"] == []
    assert st["feed"]["kind"] == "replay" and len(st["feed"]["symbols"]) == 12
    assert st["ready"] is True


def test_real_prometheus_scrapes_the_target(daemon: Daemon, tmp_path: Path) -> None:
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: dolphind
    static_configs:
      - targets: ["127.0.0.1:{daemon.port}"]
""")
    prom_log = (tmp_path / "prom.log").open("wb")
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=prom_log)
    try:
        import urllib.request

        def query(url: str) -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}{url}", timeout=5) as r:
                return json.load(r)

        def target_up() -> bool:
            targets = query("/api/v1/targets")["data"]["activeTargets"]
            return bool(targets) and targets[0]["health"] == "up"

        wait_until(target_up, timeout=60, what="prometheus target up")

        def bars_scraped() -> bool:
            res = query("/api/v1/query?query=dolphind_bars_total")["data"]["result"]
            return bool(res) and float(res[0]["value"][1]) > 0

        wait_until(bars_scraped, timeout=30, what="dolphind_bars_total in prometheus")
    finally:
        prom.terminate()
        prom.wait(15)
        prom_log.close()


def _reload_event(d: Daemon, n: int = 1) -> dict:
    def found() -> dict | None:
        evs = [e for e in d.events() if e.get("event") in ("config.reloaded", "config.reload_failed")]
        return evs[n - 1] if len(evs) >= n else None
    return wait_until(found, what="reload log line")


def test_sighup_applies_a_valid_change(daemon: Daemon) -> None:
    text = daemon.config.read_text()
    new_port = free_port()
    daemon.config.write_text(text.replace("speed = 600.0", "speed = 300.0")
                             .replace(f"127.0.0.1:{daemon.port}", f"127.0.0.1:{new_port}"))
    daemon.signal(signal.SIGHUP)
    ev = _reload_event(daemon)
    assert ev["event"] == "config.reloaded"
    assert ev["applied"] == ["replay.speed"]
    assert ev["needs_restart"] == ["ops.listen"]
    st = daemon.get_json("/status")  # still on the old port: listen needs a restart
    assert st["config"]["values"]["replay"]["speed"] == 300.0
    assert st["last_reload"]["ok"] is True
    assert daemon.metric("dolphind_config_reloads_total") == 1


def test_sighup_with_a_broken_file_keeps_the_old_config(daemon: Daemon) -> None:
    before = daemon.get_json("/status")["config"]["hash"]
    daemon.config.write_text(daemon.config.read_text() + "\n[replay]\nspeed = \"fast\"\n")
    daemon.signal(signal.SIGHUP)
    ev = _reload_event(daemon)
    assert ev["event"] == "config.reload_failed"
    assert any("not valid TOML" in p for p in ev["problems"])  # duplicate [replay] table
    wait_until(lambda: daemon.metric("dolphind_config_reload_failures_total") == 1,
               what="failure counted")
    st = daemon.get_json("/status")
    assert st["config"]["hash"] == before
    assert st["last_reload"]["ok"] is False
    assert daemon.proc is not None and daemon.proc.poll() is None
    # A semantically invalid (but parseable) file is refused too, with the key named.
    daemon.config.write_text(daemon.config.read_text().replace('\n[replay]\nspeed = "fast"\n', "")
                             .replace("speed = 600.0", "speed = -1.0"))
    daemon.signal(signal.SIGHUP)
    ev = _reload_event(daemon, 2)
    assert ev["problems"] == ["replay.speed: must be >= 0 (0 = as fast as possible)"]
    assert daemon.get_json("/status")["config"]["values"]["replay"]["speed"] == 600.0


def test_control_endpoints_need_the_token(daemon: Daemon) -> None:
    assert daemon.post("/kill", {"action": "halt"}, token=None)[0] == 401
    assert daemon.post("/kill", {"action": "halt"}, token="wrong")[0] == 401
    assert daemon.post("/reload", token=None)[0] == 401
    assert daemon.get_json("/status")["control"]["halted"] is False
    code, body = daemon.post("/kill", {"action": "halt", "reason": "test"})
    assert code == 200 and body["halted"] is True
    assert daemon.metric("dolphind_trading_halted") == 1
    code, body = daemon.post("/kill", {"action": "resume"})
    assert code == 200 and body["halted"] is False
    assert daemon.post("/kill", {"action": "explode"})[0] == 400
    code, body = daemon.post("/reload")
    assert code == 200 and body["ok"] is True
    # Not JSON at all: a clear 400, and the daemon is fine.
    import urllib.error
    import urllib.request
    req = urllib.request.Request(daemon.url + "/kill", data=b"{nope", method="POST",
                                 headers={"X-Dolphind-Token": TOKEN})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    with err.value:
        assert err.value.code == 400 and b"not JSON" in err.value.read()


def test_control_endpoints_are_disabled_without_a_configured_token(tmp_path: Path) -> None:
    port = free_port()
    d = Daemon(write_config(tmp_path / "d.toml", port), port, env={"DOLPHIND_OPS_TOKEN": ""})
    d.start()
    try:
        d.wait_ready()
        code, body = d.post("/kill", {"action": "halt"}, token="")
        assert code == 403 and "no ops token" in body["error"]
    finally:
        d.stop()


def test_cpu_affinity_pins_every_thread_of_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    cpu = max(os.sched_getaffinity(0))
    cfg = write_config(tmp_path / "d.toml", port)
    cfg.write_text(f"cpu_affinity = [{cpu}]\n" + cfg.read_text())
    d = Daemon(cfg, port).start()
    try:
        d.wait_ready()
        assert d.proc is not None
        allowed = {}
        for task in Path(f"/proc/{d.proc.pid}/task").iterdir():
            status = (task / "status").read_text()
            allowed[task.name] = status.split("Cpus_allowed_list:")[1].split()[0]
        # the loop, the store thread and every other helper thread
        assert len(allowed) >= 3 and set(allowed.values()) == {str(cpu)}, allowed
    finally:
        d.stop()


def test_sigterm_drains_and_exits_zero_in_time(daemon: Daemon) -> None:
    daemon.signal(signal.SIGTERM)
    code = daemon.wait_exit(timeout=15)
    assert code == 0
    assert daemon.elapsed < 5.0  # shutdown_timeout_s in the test config
    names = [e.get("event") for e in daemon.events()]
    assert names.index("daemon.shutdown") < names.index("daemon.drained") < names.index("daemon.stopped")


def test_bad_config_exits_2_with_the_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('mode = "paper"\n[ops]\nlisten = "nowhere"\n')
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "ops.listen: expected HOST:PORT" in res.stderr


def test_missing_replay_data_exits_2_naming_the_path(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "d.toml", free_port())
    text = cfg.read_text()
    assert f'paths = ["{SAMPLE}"]' in text
    cfg.write_text(text.replace(f'paths = ["{SAMPLE}"]', 'paths = ["no/such/candles"]'))
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "no/such/candles: no such file or folder" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_stage_that_keeps_crashing_ends_the_real_process_with_exit_3(tmp_path: Path) -> None:
    """Crash-only: the market stage is made to raise on every bar (a fault injected into the real
    process through sitecustomize); after max_restarts the daemon exits 3 for its manager."""
    site = tmp_path / "fault"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from dolphind.feed import market\n"
        "def _broken(self, bar):\n"
        "    raise RuntimeError('injected market fault')\n"
        "market.MarketStage._accept = _broken\n")
    cfg = write_config(tmp_path / "d.toml", free_port(), extra="""
[supervision]
max_restarts = 2
backoff_initial_s = 0.05
backoff_max_s = 0.1
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert res.returncode == 3, res.stdout[-3000:] + res.stderr[-2000:]
    lines = res.stdout.splitlines()
    restarts = [x for x in lines if '"stage.crashed"' in x and "injected market fault" in x]
    assert len(restarts) == 2, restarts  # max_restarts = 2: restarted twice...
    assert any('"daemon.crash_loop"' in x and '"market"' in x for x in lines)  # ...then out


def test_second_daemon_on_the_same_data_dir_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    port = free_port()
    other = tmp_path / "other.toml"
    write_config(other, port, data_dir=str(daemon.config.parent / "var"))
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "run", "--config", str(other)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "is in use by another dolphind" in res.stderr


def _daemon_with_sample_plugin(tmp_path: Path, settings: str,
                               required: str = "") -> tuple[Daemon, Path, Path]:
    """A daemon (started) whose sample plugin, installed through entry-point metadata, writes
    its events to the returned JSONL path; ``settings`` go into ``[plugins.sample]``."""
    site = install_sample_plugin(tmp_path / "site")
    out = tmp_path / "plugin-events.jsonl"
    port = free_port()
    cfg = write_config(tmp_path / "d.toml", port, extra=f"""
[plugins]
enabled = ["sample"]
{required}

[plugins.sample]
{settings}
out = "{out}"
""")
    return Daemon(cfg, port, env={"PYTHONPATH": str(site)}).start(), cfg, out


def test_plugin_from_entry_point_metadata_runs_and_reloads(tmp_path: Path) -> None:
    d, cfg, out = _daemon_with_sample_plugin(tmp_path, "threshold = 1",
                                             required='required = ["dolphind-sample-plugin>=1"]')
    try:
        d.wait_ready()
        plugins = d.get_json("/status")["plugins"]
        assert [(p["name"], p["version"], p["enabled"]) for p in plugins] == [("sample", "1.2.0", True)]

        def events() -> list[str]:
            return [json.loads(x)["event"] for x in out.read_text().splitlines()] if out.exists() else []

        wait_until(lambda: "first_bar" in events(), what="plugin saw a bar")
        cfg.write_text(cfg.read_text().replace("threshold = 1", "threshold = 7"))
        d.signal(signal.SIGHUP)
        wait_until(lambda: "reload" in events(), what="plugin reloaded")
        assert json.loads(out.read_text().splitlines()[-1])["threshold"] == 7
        # An invalid plugin setting is refused by the plugin's own validation at reload.
        cfg.write_text(cfg.read_text().replace("threshold = 7", "threshold = -3"))
        d.signal(signal.SIGHUP)
        ev = _reload_event(d, 2)
        assert ev["problems"] == ["plugins.sample.threshold: expected an integer >= 0"]
    finally:
        assert d.stop() == 0
    assert events()[-1] == "stop"


def test_a_slow_plugin_cannot_stretch_shutdown_past_its_timeout(tmp_path: Path) -> None:
    """Each queued event takes the plugin 4 s (under the 5 s hook limit): without one budget for
    the whole shutdown, draining its queue would take minutes and the manager would SIGKILL."""
    d, _, out = _daemon_with_sample_plugin(tmp_path, "slow_s = 4")
    try:
        d.wait_ready()
        wait_until(lambda: out.exists() and "first_bar" in out.read_text(), timeout=30,
                   what="the slow plugin handled a bar")
    finally:
        d.signal(signal.SIGTERM)
        code = d.wait_exit(timeout=60)
        d.stop()  # already exited: closes the log
    assert code == 0
    assert d.elapsed < 5.0 + 5.0  # shutdown_timeout_s (5) plus start-up slack, not minutes
    names = [e.get("event") for e in d.events()]
    assert "daemon.drain_timeout" in names and names[-1] == "daemon.stopped"


def test_plugin_with_wrong_api_version_fails_startup(tmp_path: Path) -> None:
    site = install_sample_plugin(tmp_path / "site", api_version=1)
    cfg = write_config(tmp_path / "d.toml", free_port(), extra='[plugins]\nenabled = ["sample"]\n')
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2
    assert "plugin 'sample' declares API_VERSION 1, but this dolphind provides API_VERSION 2" in res.stderr


def test_systemd_notify_protocol(tmp_path: Path) -> None:
    # A short path: AF_UNIX paths are limited to ~108 bytes.
    sock_dir = Path(tempfile.mkdtemp(prefix="sd"))
    sock_path = sock_dir / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    port = free_port()
    d = Daemon(write_config(tmp_path / "d.toml", port), port,
               env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
    messages: list[str] = []

    def received(what: str) -> bool:
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            pass
        return any(what in m for m in messages)

    try:
        d.start()
        wait_until(lambda: received("READY=1"), timeout=60, what="READY=1")
        wait_until(lambda: received("WATCHDOG=1"), what="WATCHDOG=1")
        d.signal(signal.SIGHUP)
        wait_until(lambda: received("RELOADING=1"), what="RELOADING=1")
        d.signal(signal.SIGTERM)
        wait_until(lambda: received("STOPPING=1"), what="STOPPING=1")
        assert d.wait_exit(15) == 0
    finally:
        d.stop()
        sock.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    reload_idx = next(i for i, m in enumerate(messages) if "RELOADING=1" in m)
    assert any("READY=1" in m for m in messages[reload_idx + 1:])  # READY=1 after the reload
