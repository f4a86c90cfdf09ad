"""A plugin context made of real parts (control plane, metrics and the figures read from them,
state bus, a data dir), with clocks the test moves by hand. Only the logger is a recorder: the tests read what
the plugin logged (and check that secrets are never in it)."""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from dolphind.control import Control
from dolphind.telemetry.metrics import Metrics
from dolphind.plugins import PluginContext, Tick
from dolphind.plugins.figures import figures_from_metrics
from dolphind.statebus.base import FEATURES
from dolphind.statebus.memory import MemoryStateBus


PLUGIN_PACKAGES = ["dolphind", "dolphind_guardian", "dolphind_scheduler", "dolphind_governor",
                   "dolphind_comms"]


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """As tests/conftest.py, and the plugins' own packages are scanned too: a plugin that
    blocks the loop blocks the daemon's."""
    with blockbuster_ctx(PLUGIN_PACKAGES) as bb:
        yield bb


def jsonl(path: Path) -> list[Any]:
    """The lines of a JSONL file the plugin wrote (read by the test, which may block)."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@dataclass
class Clock:
    mono: float = 1000.0
    wall: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def tick(self) -> Tick:
        return Tick(self.mono, self.wall)


@dataclass
class RecordingLog:
    records: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def _rec(self, level: str, event: str, **kw: Any) -> None:
        self.records.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._rec("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._rec("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._rec("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._rec("error", event, **kw)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.records]

    def text(self) -> str:
        return repr(self.records)


@dataclass
class Rig:
    """Everything a plugin touches, shared by the plugins of one test (like one daemon)."""

    tmp: Path
    clock: Clock = field(default_factory=Clock)
    metrics: Metrics = field(default_factory=Metrics)
    bus: MemoryStateBus = field(default_factory=MemoryStateBus)
    log: RecordingLog = field(default_factory=RecordingLog)
    control: Control = field(init=False)
    reloads: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.new_control()

    async def restart(self) -> None:
        """As after a daemon restart: fresh control plane, metrics and bus; files are kept."""
        # Metrics() reads /proc (the process collector): the daemon builds it before the loop.
        self.metrics = await asyncio.to_thread(Metrics)
        self.bus = MemoryStateBus()
        self.new_control()

    def new_control(self) -> Control:
        self.control = Control(self.metrics, self.reloads.append,
                               monotonic=lambda: self.clock.mono, wall=lambda: self.clock.wall)
        return self.control

    def ctx(self, name: str, settings: Mapping[str, Any] | None = None) -> PluginContext:
        # As the daemon builds it: figures from this rig's metrics, features onto its bus.
        return PluginContext(name=name, settings=settings or {}, control=self.control,
                             metrics_registry=self.metrics.registry,
                             features=functools.partial(self.bus.put, FEATURES),
                             data_dir=self.tmp / "var" / "plugins" / name, log=self.log,
                             figures=functools.partial(figures_from_metrics, self.metrics))

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        return self.metrics.registry.get_sample_value(name, dict(labels or {}))


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)
