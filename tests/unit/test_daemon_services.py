"""The daemon runs what dolphind.app hands it: services, a pipeline opener, an ops-server
opener. Here the pipeline is a small fake, so the daemon's own duties are seen alone: every
stage and every background loop a component offers runs under supervision, a loop crash is
counted and restarted, and the loops stop only after the pipeline has drained."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from dolphind.app import open_ops_server, open_services
from dolphind.config import load_config
from dolphind.daemon import EXIT_CRASH_LOOP, EXIT_OK, Daemon, Services
from dolphind.stage import Stage
from dolphind.statebus.memory import MemoryStateBus
from tests.conftest import eventually
from tests.integration.harness import write_config


class Source:
    """A source stage: runs until the daemon cancels it at shutdown."""

    name = "source"
    is_source = True
    output = None

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.events.append("source stopped")


class UserStream:
    """A component's background loop that crashes ``failures`` times, then runs until cancelled."""

    def __init__(self, events: list[str], failures: int, name: str = "venue.user_stream") -> None:
        self.name = name
        self.events = events
        self.failures = failures
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise ConnectionError(f"stream dropped {self.runs}")
        try:
            await asyncio.Event().wait()
        finally:
            self.events.append("loop stopped")


@dataclass
class FakePipeline:
    stages: list[Stage]
    background: list[Stage] = field(default_factory=list)

    def readiness(self) -> dict[str, str]:
        return {"fake": "ok"}

    def status(self) -> dict[str, Any]:
        return {"fake": {"stages": [s.name for s in self.stages]}}


def _services(tmp_path: Path, restarts: int) -> Services:
    extra = f"\n[supervision]\nmax_restarts = {restarts}\nbackoff_initial_s = 0.001\n" \
            "backoff_max_s = 0.002\n"
    cfg = load_config(write_config(tmp_path / "d.toml", 0, extra=extra, speed=0.0))
    return open_services(cfg)


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return _services(tmp_path, restarts=5)  # outside the loop, as build_daemon does


@pytest.fixture
def impatient_services(tmp_path: Path) -> Services:
    return _services(tmp_path, restarts=2)


def _daemon(services: Services, pipeline: FakePipeline) -> Daemon:
    @contextlib.asynccontextmanager
    async def open_pipeline() -> AsyncIterator[FakePipeline]:
        yield pipeline

    return Daemon(services, open_pipeline,
                  lambda view: open_ops_server(services.config, view))


async def test_a_background_loop_is_supervised_and_stops_after_the_pipeline(
        services: Services) -> None:
    events: list[str] = []
    loop = UserStream(events, failures=2)
    daemon = _daemon(services, FakePipeline(stages=[Source(events)], background=[loop]))
    daemon.health.register("source")
    task = asyncio.create_task(daemon.serve())
    await eventually(lambda: loop.runs == 3, what="the loop restarted twice")
    get = daemon.metrics.registry.get_sample_value
    assert get("dolphind_stage_errors_total", {"stage": "venue.user_stream"}) == 2
    assert get("dolphind_stage_restarts_total", {"stage": "venue.user_stream"}) == 2
    assert daemon.health.stages["venue.user_stream"].last_error == \
        "ConnectionError: stream dropped 2"
    await eventually(lambda: daemon.health.stages["venue.user_stream"].running,
                     what="the loop running again")
    assert daemon.readiness()[1]["fake"] == "ok"  # the pipeline's own checks are asked
    daemon._request_stop("test")
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    # The draining pipeline still had the venue's loops; they end after it.
    assert events == ["source stopped", "loop stopped"]


async def test_a_background_loop_in_a_crash_loop_ends_the_daemon(
        impatient_services: Services) -> None:
    events: list[str] = []
    loop = UserStream(events, failures=1000)
    daemon = _daemon(impatient_services,
                     FakePipeline(stages=[Source(events)], background=[loop]))
    daemon.health.register("source")
    assert await asyncio.wait_for(daemon.serve(), 10) == EXIT_CRASH_LOOP
    assert loop.runs == 3  # the first run and two restarts
    assert "source stopped" in events  # the task group cancelled the rest


async def test_a_reload_request_reaches_the_daemon_through_the_control_plane(
        services: Services) -> None:
    daemon = _daemon(services, FakePipeline(stages=[Source([])]))
    daemon.health.register("source")
    task = asyncio.create_task(daemon.serve())
    await eventually(lambda: daemon.pipeline is not None, what="started")
    daemon.control.reload("test:reload")
    await eventually(lambda: daemon.last_reload, what="the reload")
    assert daemon.last_reload["cause"] == "test:reload" and daemon.last_reload["ok"]
    assert daemon.config is daemon.services.config()  # the swapped config is the one read
    daemon._request_stop("test")
    assert await asyncio.wait_for(task, 10) == EXIT_OK


def test_the_daemon_does_not_import_the_wiring() -> None:
    import ast
    import dolphind.daemon as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and (m == "dolphind.app"
                                              or m.startswith("dolphind.app."))}


class LoopingBus(MemoryStateBus):
    """A state bus with one background loop (as the Hazelcast bus's writer); its close is
    recorded."""

    def __init__(self, events: list[str], failures: int) -> None:
        super().__init__()
        self.events = events
        self.loop = UserStream(events, failures, name="statebus:writer")

    def stages(self) -> list[Stage]:
        return [self.loop]

    async def close(self) -> None:
        self.events.append("bus closed")


async def test_the_state_bus_loops_are_supervised_from_start_until_after_the_pipeline(
        services: Services) -> None:
    events: list[str] = []
    bus = LoopingBus(events, failures=1)
    daemon = _daemon(dataclasses.replace(services, bus=bus),
                     FakePipeline(stages=[Source(events)]))
    daemon.health.register("source")
    task = asyncio.create_task(daemon.serve())
    await eventually(lambda: bus.loop.runs == 2, what="the bus loop restarted")
    get = daemon.metrics.registry.get_sample_value
    assert get("dolphind_stage_errors_total", {"stage": "statebus:writer"}) == 1
    assert get("dolphind_stage_restarts_total", {"stage": "statebus:writer"}) == 1
    await eventually(lambda: daemon.health.stages["statebus:writer"].running,
                     what="the bus loop running again")
    daemon._request_stop("test")
    assert await asyncio.wait_for(task, 10) == EXIT_OK
    # The pipeline drains with the bus still served; its loops stop, then the bus closes.
    assert events == ["source stopped", "loop stopped", "bus closed"]


async def test_a_state_bus_loop_in_a_crash_loop_ends_the_daemon(
        impatient_services: Services) -> None:
    events: list[str] = []
    bus = LoopingBus(events, failures=1000)
    daemon = _daemon(dataclasses.replace(impatient_services, bus=bus),
                     FakePipeline(stages=[Source(events)]))
    daemon.health.register("source")
    assert await asyncio.wait_for(daemon.serve(), 10) == EXIT_CRASH_LOOP
    assert bus.loop.runs == 3  # the first run and two restarts
    assert events[-1] == "bus closed"  # closed on the way out all the same
