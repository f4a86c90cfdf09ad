"""The only place that wires concrete parts together: feed, stages, channels.

``build_pipeline`` is an async context manager: the parts it opens are closed in reverse
order on exit, also when opening fails half-way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from dolphind.channels import Channel, Overflow
from dolphind.events import Bar
from dolphind.feed.market import MarketStage
from dolphind.feed.replay import ReplayFeed

if TYPE_CHECKING:
    from dolphind.daemon import Daemon


@dataclass
class Pipeline:
    stages: list[Any]
    readiness_checks: dict[str, Callable[[], str]] = field(default_factory=dict)
    status_parts: dict[str, Callable[[], Any]] = field(default_factory=dict)

    def readiness(self) -> dict[str, str]:
        return {name: check() for name, check in self.readiness_checks.items()}

    def status(self) -> dict[str, Any]:
        return {name: part() for name, part in self.status_parts.items()}


@contextlib.asynccontextmanager
async def build_pipeline(daemon: "Daemon") -> AsyncIterator[Pipeline]:
    cfg = daemon.config
    config = lambda: daemon.config  # noqa: E731 - components read the current config
    m, health = daemon.metrics, daemon.health

    bars: Channel[Bar] = Channel("bars", cfg.channels.bars, Overflow.BLOCK, m.channels)
    feed = await ReplayFeed.open(bars, config, health, m)
    market = MarketStage(bars, None, health, m, daemon.bus,
                         on_bar=lambda bar: daemon.plugins.emit("on_bar", bar))

    health.register(feed.name)
    health.register(market.name, backlog=lambda: len(bars))
    pipeline = Pipeline(
        stages=[feed, market],
        readiness_checks={
            "feed": lambda: "ok" if feed.ready else "no bar yet",
        },
        status_parts={"feed": feed.status, "market": market.status},
    )
    yield pipeline
