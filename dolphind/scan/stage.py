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
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import structlog

from dolphind.channels import Channel, ChannelClosed
from dolphind.events import WINDOWS, Bar, ScanRecord
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.scan.arrow_sink import ArrowScanSink
from dolphind.scan.scanner import EigenScanner
from dolphind.scan.warm import (
    RecentBars, SeamCarry, WarmStart, WarmupTracker, history_of, save_checkpoint,
)
from dolphind.statebus import base as bus_names
from dolphind.statebus.base import StateBus

log = structlog.get_logger("dolphind.scan")

_FLUSH_EVERY_S = 1.0
_FLUSH_RECORDS = 512
_PUBLISH_EVERY_S = 1.0
_WARMING_LOG_EVERY_S = 15.0


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
    is_source = False  # ends once its input (the market's bars) is closed and drained

    def __init__(self, source: Channel[Bar], output: Channel[ScanRecord] | None,
                 scanner: EigenScanner, sink: ArrowScanSink, bus: StateBus, health: Health,
                 metrics: Metrics, on_scan: Callable[[ScanRecord], None], *,
                 warm_start: WarmStart | None = None,
                 prime_alpha: Callable[[ScanRecord], None] = lambda rec: None,
                 checkpoint_path: Path | None = None,
                 checkpoint_every_s: float = 0.0,
                 max_stale_bars: Callable[[], int] = lambda: 12) -> None:
        self.source = source
        self.output = output
        self.scanner = scanner
        self._sink = sink
        self._bus = bus
        self._health = health
        self._m = metrics
        self._on_scan = on_scan  # each scan record, after it went downstream (plugins)
        self._buffer: list[ScanRecord] = []
        self._flushed_at = time.monotonic()
        self._published_at = 0.0
        self._fallbacks_seen = 0
        self.last: ScanRecord | None = None
        self.first_warm_scan: int | None = None
        # Warm start and warm-up report (issue 18)
        self.warm_start = warm_start
        self._prime_alpha = prime_alpha
        self._restored = warm_start is None
        self._ck_path = checkpoint_path
        self._ck_every = checkpoint_every_s
        self._ck_at = time.monotonic()
        self._ck_saving: asyncio.Future[None] | None = None
        self.recent = RecentBars(max(scanner.windows) + 1)
        self.tracker = WarmupTracker(scanner.windows)
        self._warming_logged_at = 0.0
        self._warm_windows: set[int] = set()
        self._max_stale = max_stale_bars
        self._seam: SeamCarry | None = None
        self._seam_carried_final = 0
        metrics.strategy_can_trade.set_function(lambda: 1.0 if self.tracker.can_trade else 0.0)
        metrics.first_entry_eta.set_function(self.tracker.eta_s)
        def window_fill(j: int) -> Callable[[], float]:
            return lambda: self.tracker.windows[j][0] / self.tracker.windows[j][1]

        for j, w in enumerate(scanner.windows):
            metrics.scan_window_fill.labels(str(w)).set_function(window_fill(j))
        # Gauges of the latest scan are read at scrape time (no per-bar cost).
        nan = float("nan")
        metrics.scan_number.set_function(lambda: self.last.scan_number if self.last else nan)
        metrics.scan_symbols.set_function(lambda: self.last.n_symbols if self.last else nan)
        metrics.vel_div.set_function(lambda: self.last.vel_div if self.last else nan)

    async def run(self) -> None:
        try:
            if not self._restored:
                # The windows come back before the first new bar is scanned: that bar says
                # where the gap since the checkpoint ends.
                try:
                    first = await self.source.get()
                except ChannelClosed:  # stopped before any bar
                    return
                assert self.warm_start is not None
                try:
                    await self.warm_start.restore(first)
                except Exception as exc:  # noqa: BLE001 - history must never stop a start
                    log.exception("warm_start.failed")
                    self.warm_start.fail(f"restore failed: {exc!r}"[:300])
                    self.scanner = self.scanner.fresh()
                    self._fallbacks_seen = 0
                seam = self.warm_start.seam_from
                if seam is not None:
                    self._seam = SeamCarry(first.symbols, seam, self._max_stale())
                self._restored = True
                await self._scan(first)
            async for bar in self.source:
                await self._scan(bar)
        finally:
            await asyncio.shield(self.flush())
            if self._ck_path is not None:  # at every stop, whatever the period
                await asyncio.shield(self._checkpoint())

    @property
    def restored(self) -> bool:
        """The warm start (if any) is over: new bars are being scanned."""
        return self._restored

    def prime(self, ts_ns: int, symbols: tuple[str, ...], closes: np.ndarray,
              interval_s: float) -> ScanRecord:
        """One bar of history into the windows (and the alpha engine's), before any new bar."""
        rec = self.scanner.prime(ts_ns, symbols, closes)
        self.recent.append(ts_ns, symbols, rec.prices, interval_s)
        self._prime_alpha(rec)
        self._observe(rec)
        return rec

    async def _checkpoint(self) -> None:
        """Write the windows' history off the loop (one write at a time)."""
        if self._ck_path is None or not len(self.recent):
            return
        if self._ck_saving is not None and not self._ck_saving.done():
            return
        self._ck_at = time.monotonic()
        bars, path = self.recent.take(), self._ck_path

        def write() -> None:
            save_checkpoint(path, history_of(bars))

        self._ck_saving = asyncio.ensure_future(asyncio.to_thread(write))
        try:
            await self._ck_saving
        except OSError as exc:
            log.error("scan.checkpoint_failed", path=str(path), error=str(exc))

    def _observe(self, rec: ScanRecord) -> None:
        """Warm-up bookkeeping: per-window progress, can-trade, a console line now and then."""
        # Trading starts with the first new bar: while history is being restored the
        # windows may already be warm, but no decision is made on a restored bar.
        warm = self._restored and all(x == x for x in rec.lambda_max)
        tracker = self.tracker
        was = tracker.can_trade
        if warm and was:
            tracker.tick()  # the steady state: nothing to recompute
            return
        tracker.observe(self.scanner.window_progress(), warm)
        for (have, need) in tracker.windows:
            if have >= need and need not in self._warm_windows:
                self._warm_windows.add(need)
                log.info("scan.window_warm", window=need, scan_number=rec.scan_number)
        if tracker.can_trade and not was:
            log.info("strategy.can_trade", scan_number=rec.scan_number,
                     market_ts_ns=rec.ts_ns)
        elif not tracker.can_trade and was:
            log.warning("strategy.cannot_trade", reason="a scan window went cold",
                        scan_number=rec.scan_number)
        now = time.monotonic()
        if not tracker.can_trade and now - self._warming_logged_at >= _WARMING_LOG_EVERY_S:
            self._warming_logged_at = now
            eta = tracker.eta_s()
            log.info("scan.warming", windows={str(n): f"{h}/{n}" for h, n in tracker.windows},
                     bars_to_first_entry=tracker.bars_to_go(),
                     first_entry_eta_s=None if math.isnan(eta) else round(eta, 1))

    async def _scan(self, bar: Bar) -> None:
        closes = bar.closes
        seam = self._seam
        if seam is not None:
            carried = seam.carried
            closes = seam.apply(bar.symbols, closes)
            if seam.carried > carried:
                self._m.warm_start_bars.labels("seam").inc(seam.carried - carried)
            if not seam.active:
                log.info("warm_start.seam_closed", symbol_bars_carried=seam.carried)
                self._seam_carried_final = seam.carried
                self._seam = None
        t0 = time.perf_counter()
        rec = self.scanner.update(bar.ts_ns, bar.symbols, closes)
        self._m.scan_seconds.observe(time.perf_counter() - t0)
        self.recent.append(bar.ts_ns, bar.symbols, closes, bar.interval_s)
        self._observe(rec)
        self._record(rec)
        if self.output is not None:
            await self.output.put(rec)
        self._on_scan(rec)
        if (len(self._buffer) >= _FLUSH_RECORDS
                or time.monotonic() - self._flushed_at >= _FLUSH_EVERY_S):
            await self.flush()
        if (self._ck_path is not None and self._ck_every > 0
                and time.monotonic() - self._ck_at >= self._ck_every):
            await self._checkpoint()
        self._health.beat(self.name)

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

    def strategy_status(self) -> dict[str, Any]:
        """/status "strategy": can it trade; while warming, each window's progress and the
        estimated wait for the first possible entry; how the windows were restored."""
        out = self.tracker.status()
        if self.warm_start is not None:
            out["warm_start"] = self.warm_start.status()
            out["warm_start"]["seam_symbol_bars_carried"] = (
                self._seam.carried if self._seam is not None else self._seam_carried_final)
        return out
