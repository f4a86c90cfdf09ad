"""The scan stage: bars in, one scan record per bar out (SPEC §2).

The numerics live in ``scanner.py`` (pure) and ``kernels.py`` (numba); this shell exports the
scan on /metrics, appends it to the day's Arrow file, publishes the latest one on the state
bus, and hands it to the alpha stage through a blocking channel (a scan is never dropped).

Arrow writes are file I/O: records are buffered here and written by a worker thread at most
every ``_FLUSH_EVERY_S`` (or every ``_FLUSH_RECORDS``), so the loop never blocks on the disk.
A crash loses at most that buffer; the scan number still continues after a restart because
the execution store checkpoints the scan number of every decision it acted on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import structlog

from dolphind.channels import Channel
from dolphind.events import WINDOWS, Bar, ScanRecord
from dolphind.ops.health import Health
from dolphind.ops.metrics import Metrics
from dolphind.scan.arrow_sink import ArrowScanSink
from dolphind.scan.scanner import EigenScanner
from dolphind.statebus import base as bus_names
from dolphind.statebus.base import StateBus

log = structlog.get_logger("dolphind.scan")

_FLUSH_EVERY_S = 1.0
_FLUSH_RECORDS = 512
_PUBLISH_EVERY_S = 1.0


def scan_to_json(rec: ScanRecord) -> dict[str, Any]:
    """The bus / status form of a scan record (NaN becomes null)."""
    def num(x: float) -> float | None:
        return None if x != x else float(x)
    out: dict[str, Any] = {"scan_number": rec.scan_number, "timestamp_ns": rec.ts_ns,
                           "n_symbols": rec.n_symbols, "vel_div": num(rec.vel_div),
                           "regime_signal": num(rec.regime_signal),
                           "instability_composite": num(rec.instability_composite)}
    for i, w in enumerate(WINDOWS):
        out[f"w{w}_lambda_max"] = num(rec.lambda_max[i])
        out[f"w{w}_velocity"] = num(rec.velocity[i])
        out[f"w{w}_instability"] = num(rec.instability[i])
    return out


class ScanStage:
    name = "scan"

    def __init__(self, source: Channel[Bar], output: Channel[ScanRecord] | None,
                 scanner: EigenScanner, sink: ArrowScanSink, bus: StateBus, health: Health,
                 metrics: Metrics, emit: Callable[[str, Any], None]) -> None:
        self.source = source
        self.output = output
        self.scanner = scanner
        self._sink = sink
        self._bus = bus
        self._health = health
        self._m = metrics
        self._emit = emit
        self._buffer: list[ScanRecord] = []
        self._flushed_at = time.monotonic()
        self._published_at = 0.0
        self._fallbacks_seen = 0
        self.last: ScanRecord | None = None
        self.first_warm_scan: int | None = None
        # Gauges of the latest scan are read at scrape time (no per-bar cost).
        nan = float("nan")
        metrics.scan_number.set_function(lambda: self.last.scan_number if self.last else nan)
        metrics.scan_symbols.set_function(lambda: self.last.n_symbols if self.last else nan)
        metrics.vel_div.set_function(lambda: self.last.vel_div if self.last else nan)

    async def run(self) -> None:
        try:
            async for bar in self.source:
                t0 = time.perf_counter()
                rec = self.scanner.update(bar.ts_ns, bar.symbols, bar.closes)
                self._m.scan_seconds.observe(time.perf_counter() - t0)
                self._record(rec)
                if self.output is not None:
                    await self.output.put(rec)
                self._emit("on_scan", rec)
                if (len(self._buffer) >= _FLUSH_RECORDS
                        or time.monotonic() - self._flushed_at >= _FLUSH_EVERY_S):
                    await self.flush()
                self._health.beat(self.name)
        finally:
            await asyncio.shield(self.flush())

    def _record(self, rec: ScanRecord) -> None:
        m = self._m
        self.last = rec
        self._buffer.append(rec)
        m.scans.inc()
        c = self.scanner.counters
        if c.fallbacks_total > self._fallbacks_seen:
            m.scan_fallbacks.inc(c.fallbacks_total - self._fallbacks_seen)
            self._fallbacks_seen = c.fallbacks_total
        if self.first_warm_scan is None and rec.velocity[0] == rec.velocity[0]:
            self.first_warm_scan = rec.scan_number
        now = time.monotonic()
        if now - self._published_at >= _PUBLISH_EVERY_S:
            self._published_at = now
            for i, w in enumerate(WINDOWS):
                m.scan_lambda_max.labels(str(w)).set(rec.lambda_max[i])
                m.scan_iterations.labels(str(w)).set(c.last_iterations[i])
            self._bus.put(bus_names.FEATURES, "latest_eigen_scan", scan_to_json(rec))

    async def flush(self) -> None:
        """Write buffered records to the Arrow files (in a worker thread)."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        self._flushed_at = time.monotonic()
        await asyncio.to_thread(self._write, batch)

    def _write(self, batch: list[ScanRecord]) -> None:
        for rec in batch:
            self._sink.append(rec)
        self._sink.flush()

    @property
    def warm(self) -> bool:
        """The shortest window is warm: the scan produces velocities."""
        return self.first_warm_scan is not None

    def status(self) -> dict[str, Any]:
        rec = self.last
        return {"scans": self.scanner.next_scan_number, "warm": self.warm,
                "windows_warm": [] if rec is None else
                [w for i, w in enumerate(WINDOWS) if rec.velocity[i] == rec.velocity[i]],
                "fallbacks_total": self.scanner.counters.fallbacks_total,
                "last": None if rec is None else scan_to_json(rec)}
