"""`dolphind top` with [statebus] kind = "hazelcast": its state-bus line is fed by entry listeners
on a real Hazelcast member, where the real daemon publishes its keys (a halt shows up there)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Iterator

import pytest

from dolphind.tui.app import TopApp
from dolphind.tui.source import bus_config
from tests.hazelcast import Cluster
from tests.integration.harness import Daemon, free_port, write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "hz", size=1).start()
    yield c
    c.stop()


@pytest.fixture
def daemon(tmp_path: Path, cluster: Cluster) -> Iterator[Daemon]:
    port = free_port()
    extra = cluster.toml('namespace = "top-test"\npublish_interval_s = 0.2\n')
    d = Daemon(write_config(tmp_path / "dolphind.toml", port, extra, speed=0.0), port).start()
    try:
        d.wait_ready(timeout=120)
        yield d
    finally:
        d.stop()


async def _until(pilot, check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_top_reads_the_daemons_keys_from_hazelcast(daemon: Daemon) -> None:
    bus = await asyncio.to_thread(bus_config, str(daemon.config))  # reads the file
    assert bus is not None and bus.namespace == "top-test"
    app = TopApp(daemon.url, bus=bus)
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(pilot, lambda: {"DOLPHIN_SAFETY", "DOLPHIN_STATE_BLUE",
                                     "DOLPHIN_META_HEALTH"} <= set(app.bus_values),
                     "the daemon's keys from the cluster", timeout=60)
        line = str(app.query_one("#bus").render())
        assert "state bus " in line and "/top-test" in line and "active" in line, line
        assert re.search(r"capital [\d,]+\.\d\d  drawdown \d+\.\d\d%", line), line
        status, _ = daemon.post("/kill", {"action": "halt", "reason": "bus"})
        assert status == 200
        # The publisher writes the halt to DOLPHIN_SAFETY; the listener brings it to the line.
        await _until(pilot, lambda: (app.bus_values["DOLPHIN_SAFETY"] or {}).get("halted"),
                     "the halt through the cluster", timeout=20)
        assert "HALTED" in str(app.query_one("#bus").render())


def test_bus_config_only_for_hazelcast(tmp_path: Path) -> None:
    plain = write_config(tmp_path / "a.toml", 9108)
    assert bus_config(str(plain)) is None
    assert bus_config(None) is None
