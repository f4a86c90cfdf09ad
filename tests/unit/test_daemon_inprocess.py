"""The whole daemon lifecycle inside the test's event loop, under the blockbuster fixture:
any blocking call made by dolphind on the loop (file I/O, sleeps, sockets) fails the test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from dolphind.config import load_config
from dolphind.app import build_daemon
from dolphind.daemon import EXIT_OK, Daemon
from tests.conftest import eventually
from tests.integration.harness import write_config


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    cfg = load_config(write_config(tmp_path / "d.toml", 0, speed=0.0))
    return build_daemon(cfg)  # built outside the loop, as dolphind.daemon.run does


async def test_lifecycle_without_blocking_the_loop(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOLPHIND_OPS_TOKEN", "t")
    task = asyncio.create_task(daemon.serve())
    # A cold numba cache (fresh machine) compiles the kernels first: allow for it.
    await eventually(lambda: daemon.readiness()[0], timeout=180, what="ready")
    assert daemon.http is not None and daemon.http.bound is not None
    host, port = daemon.http.bound
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{host}:{port}/metrics") as r:
            assert r.status == 200
            assert "dolphind_bars_total" in await r.text()
        async with s.get(f"http://{host}:{port}/status") as r:
            status = await r.json()
        assert status["stages"]["feed"]["running"]
        async with s.post(f"http://{host}:{port}/reload", headers={"X-Dolphind-Token": "t"}) as r:
            assert r.status == 200 and (await r.json())["ok"]
        async with s.get(f"http://{host}:{port}/nope") as r:
            assert r.status == 404
        async with s.get(f"http://{host}:{port}/kill") as r:
            assert r.status == 405
    await eventually(lambda: daemon.metrics.registry.get_sample_value("dolphind_bars_total") > 100,
                     what="bars flowing at full speed")
    assert daemon.metrics.registry.get_sample_value("dolphind_statebus_writes_total",
                                                    {"outcome": "ok"}) > 0
    # The scan stage publishes its latest record on the bus and reports its work.
    def warm_scan() -> dict | None:  # the replay loops at full speed: some scans are cold
        scan = daemon.bus.get("DOLPHIN_FEATURES", "latest_eigen_scan")
        return scan if scan and scan["n_symbols"] > 0 and scan["w50_lambda_max"] else None

    latest = await eventually(warm_scan, what="a warm scan on the bus")
    assert latest["scan_number"] > 0 and 1.0 <= latest["w50_lambda_max"] <= latest["n_symbols"]
    get = daemon.metrics.registry.get_sample_value
    assert get("dolphind_scan_seconds_count") > 0
    assert get("dolphind_scan_iterations", {"window": "50"}) >= 1
    assert get("dolphind_scan_fallbacks_total") is not None
    daemon._request_stop("test")
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    assert daemon.health.stages["market"].finished
    # blockbuster's BlockingError is an ordinary Exception: a stage supervisor, the plugin guard
    # or aiohttp's 500 handler would swallow it. So the test also demands that nothing failed.
    _assert_nothing_failed(daemon)


def _assert_nothing_failed(daemon: Daemon) -> None:
    failures = []
    for metric in daemon.metrics.registry.collect():
        for sample in metric.samples:
            if sample.value and (
                sample.name in ("dolphind_stage_errors_total", "dolphind_stage_restarts_total")
                or (sample.name == "dolphind_http_requests_total"
                    and sample.labels.get("status", "").startswith("5"))):
                failures.append((sample.name, sample.labels, sample.value))
    assert not failures, failures
    for name, st in daemon.health.stages.items():
        assert not st.last_error, (name, st.last_error)
