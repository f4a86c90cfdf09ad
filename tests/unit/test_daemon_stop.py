"""A daemon told to exit when its pipeline is done (`dolphind backtest`) stops as soon as the
last stage finishes, not at the next housekeeping tick."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dolphind.config import load_config
from dolphind.app import build_daemon
from dolphind.daemon import Daemon
from tests.integration.harness import write_config


class _Quick:
    output = None

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self._seconds = seconds

    async def run(self) -> None:
        await asyncio.sleep(self._seconds)


@pytest.fixture
def daemons(tmp_path: Path) -> dict[bool, Daemon]:
    # Built outside the loop (Metrics reads /proc), one per value of exit_when_done.
    cfg = load_config(write_config(tmp_path / "d.toml", 0, speed=0.0))
    return {flag: build_daemon(cfg, exit_when_done=flag) for flag in (True, False)}


@pytest.mark.parametrize("exit_when_done", [True, False])
async def test_the_last_stage_to_finish_stops_a_daemon_that_exits_when_done(
        daemons: dict[bool, Daemon], exit_when_done: bool) -> None:
    daemon = daemons[exit_when_done]
    stages = [_Quick("a", 0.0), _Quick("b", 0.05)]
    for stage in stages:
        daemon.health.register(stage.name)
    async with asyncio.TaskGroup() as tg:
        for stage in stages:
            daemon._stage_tasks[stage.name] = tg.create_task(daemon._run_stage(stage))
        await asyncio.sleep(0.02)
        assert not daemon._stop.is_set()  # "b" is still running
    assert daemon._stop.is_set() is exit_when_done
