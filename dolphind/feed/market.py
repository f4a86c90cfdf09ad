"""The market stage: the daemon's view of the latest bar, shared with everything downstream.

It checks bar continuity (sequence gaps), exports the bar on /metrics, publishes it on the
state bus and to plugins, and forwards it to the next stage (the scan) when there is one.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import structlog

from dolphind.channels import Channel
from dolphind.events import Bar
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.statebus import base as bus_names
from dolphind.statebus.base import StateBus

log = structlog.get_logger("dolphind.feed.market")

# Per-symbol gauges and the bus snapshot cost O(N) Python work; at backtest speed that would
# dominate, so they are refreshed at most this often (wall clock). Counters stay exact.
_PUBLISH_EVERY_S = 1.0


class MarketStage:
    name = "market"
    is_source = False  # ends once its input (the feed's bars) is closed and drained

    def __init__(self, source: Channel[Bar], output: Channel[Bar] | None, health: Health,
                 metrics: Metrics, bus: StateBus, on_bar: Callable[[Bar], None]) -> None:
        self.source = source
        self.output = output
        self._health = health
        self._metrics = metrics
        self._bus = bus
        self._on_bar = on_bar
        self.last: Bar | None = None
        self.gaps = 0
        self._published_at = 0.0
        metrics.bar_timestamp.set_function(
            lambda: self.last.ts_ns / 1e9 if self.last else float("nan"))

    async def run(self) -> None:
        async for bar in self.source:
            self._accept(bar)
            if self.output is not None:
                await self.output.put(bar)
            self._health.beat(self.name)

    def _accept(self, bar: Bar) -> None:
        prev = self.last
        if prev is not None and bar.seq != prev.seq + 1:
            missing = bar.seq - prev.seq - 1
            self.gaps += max(missing, 0)
            self._metrics.bar_seq_gaps.inc(max(missing, 0))
            log.warning("market.bar_gap", expected_seq=prev.seq + 1, got_seq=bar.seq)
        self.last = bar
        m = self._metrics
        m.bars.inc()
        self._on_bar(bar)
        now = time.monotonic()
        if now - self._published_at >= _PUBLISH_EVERY_S:
            self._published_at = now
            self._publish(bar)

    def _publish(self, bar: Bar) -> None:
        present = ~np.isnan(bar.closes)
        self._metrics.bar_symbols.set(int(present.sum()))
        prices = {}
        for sym, px, ok in zip(bar.symbols, bar.closes.tolist(), present.tolist()):
            if ok:
                self._metrics.bar_close.labels(sym).set(px)
                prices[sym] = px
        self._bus.put(bus_names.FEATURES, "latest_bar",
                      {"ts_ns": bar.ts_ns, "seq": bar.seq, "prices": prices})

    def status(self) -> dict[str, object]:
        b = self.last
        if b is None:
            return {"bars": 0}
        return {"last_bar_ts_ns": b.ts_ns, "last_bar_seq": b.seq, "sequence_gaps": self.gaps,
                "symbols_present": int((~np.isnan(b.closes)).sum())}
