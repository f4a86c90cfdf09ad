"""The replay feed: historical candles emitted as bar events at ``speed`` x market time.

The same stage serves `dolphind run` on recorded data (paper mode) and the backtest (speed 0,
as fast as the consumers take bars). The bars channel blocks when full, so a replay at full
speed is paced by its slowest consumer and never drops a bar.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

import numpy as np
import structlog

from dolphind.channels import Channel
from dolphind.config import Config, parse_utc
from dolphind.events import Bar, frozen_array
from dolphind.feed.history import History, HistoryError, iso, load_history
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics

log = structlog.get_logger("dolphind.feed.replay")


class ReplayFeed:
    """A stage: emits the bars of ``history`` into ``output``.

    Restart-safe: after a crash the supervisor calls ``run`` again and it continues from the
    next bar it had not yet handed over (``position``), with the sequence numbers continuing.
    After a daemon restart (``resume_after_ns``: the last bar the scan checkpointed) it goes on
    from the bar after that one, so market time never runs backwards under restored positions.

    Market time only moves forward: pass ``k`` of a looping replay is played ``k`` data spans
    (plus one bar) later than the data's own times, and before it starts over, ``flatten``
    (when given) closes every open position, so no position is carried across the seam where
    the prices jump back to the start of the data.

    ``preroll``: while ``await still_cold(bars emitted by this run)`` says the scan is still
    cold, the bars go at full speed whatever ``speed`` says (the demo's first 751 bars), then at
    the configured pace, for good.
    """

    name = "feed"
    is_source = True  # shutdown stops sources first; the rest drain behind them

    def __init__(self, history: History, output: Channel[Bar], config: Callable[[], Config],
                 health: Health, metrics: Metrics, *, resume_after_ns: int | None = None,
                 still_cold: Callable[[int], Awaitable[bool]] | None = None,
                 flatten: Callable[[], Awaitable[int]] | None = None) -> None:
        self.history = history
        self.output = output
        self._config = config
        self._health = health
        self._metrics = metrics
        self.seq = 0
        self.loops = 0
        self.done = False
        # Every funding print of every symbol in time order; the replay walks one pointer
        # through it (O(1) per bar, however many symbols).
        prints = sorted((int(t), sym, float(r)) for sym, f in history.funding.items()
                        for t, r in zip(f.ts_ns.tolist(), f.rate.tolist()))
        self._funding_ts = np.array([p[0] for p in prints], dtype=np.int64)
        self._funding = prints
        self._funding_next = 0
        self.funding_latest: dict[str, tuple[int, float]] = {}
        rc = config().replay
        self._start_at = int(np.searchsorted(history.ts_ns, parse_utc(rc.start))) if rc.start else 0
        stop = int(np.searchsorted(history.ts_ns, parse_utc(rc.end))) if rc.end else len(history)
        if rc.max_bars > 0:
            stop = min(stop, self._start_at + rc.max_bars)
        self._stop_at = stop
        self.position = self._start_at
        if self._stop_at <= self._start_at:
            raise HistoryError(f"no bars between replay.start {rc.start!r} and replay.end "
                               f"{rc.end!r} (the data spans {iso(int(history.ts_ns[0]))} to "
                               f"{iso(int(history.ts_ns[-1]))})")
        self._still_cold = still_cold
        self._prerolling = still_cold is not None
        self._seq_at_start = 0
        self._flatten = flatten
        # One pass of the data in market time (a loop's bars are shifted by this much).
        self.period_ns = (int(history.ts_ns[self._stop_at - 1]) - int(history.ts_ns[self._start_at])
                          + int(round(history.interval_s * 1e9)))
        self.prerolled = 0
        self.resumed: dict[str, object] | None = None
        if resume_after_ns is not None:
            self._resume(int(resume_after_ns))

    def _resume(self, last_ns: int) -> None:
        """Continue after the bar at market time ``last_ns`` (a shifted time of a later pass
        of a looping replay is recognised as such)."""
        first = int(self.history.ts_ns[self._start_at])
        if last_ns < first:
            log.warning("replay.not_resumed", reason="the checkpoint is older than the data",
                        checkpoint_ts=iso(last_ns))
            return
        loops, offset = divmod(last_ns - first, self.period_ns)
        pos = int(np.searchsorted(self.history.ts_ns, first + offset, side="right"))
        pos = max(pos, self._start_at)
        if pos >= self._stop_at:
            if not self._config().replay.loop:
                log.warning("replay.not_resumed", reason="the checkpoint is at the end of the "
                            "data and replay.loop is off", checkpoint_ts=iso(last_ns))
                self.position = self._stop_at
                self.resumed = {"after_ts_ns": last_ns, "position": pos, "loops": loops}
                return
            loops, pos = loops + 1, self._start_at
        self.position, self.loops = pos, int(loops)
        if pos > self._start_at:
            self._passed(int(self.history.ts_ns[pos - 1]))
        self.resumed = {"after_ts_ns": last_ns, "position": pos - self._start_at,
                        "loops": int(loops)}
        log.info("replay.resumed", after=iso(last_ns), position=pos - self._start_at,
                 loops=int(loops))

    @classmethod
    async def open(cls, output: Channel[Bar], config: Callable[[], Config], health: Health,
                   metrics: Metrics, **kw: object) -> "ReplayFeed":
        cfg = config()
        paths = [str(cfg.resolve(p)) for p in cfg.replay.paths]
        # Reading files blocks: do it off the loop (the HTTP server is already answering).
        history = await asyncio.to_thread(load_history, paths, cfg.feed.max_stale_bars)
        for note in history.notes:
            log.info("replay.data_note", note=note)
        log.info("replay.loaded", bars=len(history), symbols=len(history.symbols),
                 interval_s=history.interval_s, start_ns=int(history.ts_ns[0]),
                 end_ns=int(history.ts_ns[-1]))
        return cls(history, output, config, health, metrics, **kw)  # type: ignore[arg-type]

    @property
    def ready(self) -> bool:
        return self.seq > 0 or self.done

    async def run(self) -> None:
        h = self.history
        anchor: tuple[float, int, float] | None = None  # (wall, market ns, speed)
        while True:
            while self.position < self._stop_at:
                rc = self._config().replay
                speed = rc.speed
                ts = int(h.ts_ns[self.position])
                # (The first bar is due at once anyway: the question starts with the second.)
                if (speed > 0 and rc.preroll and self._prerolling
                        and self.seq > self._seq_at_start):
                    assert self._still_cold is not None
                    if await self._still_cold(self.seq - self._seq_at_start):
                        # Pre-roll: as fast as the consumers take bars; pacing rebases after.
                        speed, anchor = 0.0, None
                        self.prerolled += 1
                    else:
                        self._prerolling = False
                        log.info("replay.preroll_done", bars=self.prerolled)
                if speed > 0:
                    if anchor is None or anchor[2] != speed:
                        anchor = (time.monotonic(), ts, speed)  # (re)base on start or reload
                    due = anchor[0] + (ts - anchor[1]) / 1e9 / speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                bar = Bar(ts + self.loops * self.period_ns, h.symbols,
                          frozen_array(h.closes[self.position]), h.interval_s, self.seq)
                await self.output.put(bar)
                self._passed(ts)
                self.position += 1
                self.seq += 1
                self._health.beat(self.name)
            if not self._config().replay.loop:
                self.done = True
                self._metrics.replay_done.set(1)
                log.info("replay.done", bars=self.seq, loops=self.loops)
                return
            # Starting over: the scan sees a price jump from the last bar to the first one,
            # which is real discontinuity in the data, not a bug; it is logged and counted.
            # No position may live across it: flatten first. Market time goes on forward.
            flattened = await self._flatten() if self._flatten is not None else 0
            self.position = self._start_at
            self.loops += 1
            anchor = None
            self._funding_next = 0
            self._metrics.replay_loops.inc()
            log.info("replay.loop", loops=self.loops, positions_flattened=flattened,
                     market_time_offset_s=self.loops * self.period_ns / 1e9)

    def closes_at(self, symbols: tuple[str, ...], start_ns: int, n: int, interval_ns: int,
                  prev: np.ndarray) -> tuple[np.ndarray, int, int, list[str]]:
        """The data's closes of the ``n`` bars from market time ``start_ns`` (a later pass's
        shifted times included): the warm-start filler of a resumed replay, whose gap between
        the windows' checkpoint and the stored market time is in the data itself."""
        h = self.history
        first = int(h.ts_ns[self._start_at])
        out = np.tile(prev, (n, 1)) if prev.size == len(symbols) else np.full(
            (n, len(symbols)), np.nan)
        cols = [h.symbols.index(s) if s in h.symbols else -1 for s in symbols]
        found = 0
        for k in range(n):
            _, offset = divmod(start_ns + k * interval_ns - first, self.period_ns)
            i = int(np.searchsorted(h.ts_ns, first + offset))
            if i < len(h) and int(h.ts_ns[i]) == first + offset:
                for j, c in enumerate(cols):
                    if c >= 0:
                        out[k, j] = h.closes[i, c]
                found += 1
            elif k:
                out[k] = out[k - 1]
        known = sum(c >= 0 for c in cols)
        return out, found * known, n * len(symbols) - found * known, []

    def _passed(self, ts_ns: int) -> None:
        """Record funding prints whose time the replay has now reached."""
        nxt = self._funding_next
        if nxt >= len(self._funding) or self._funding[nxt][0] > ts_ns:
            return
        end = int(np.searchsorted(self._funding_ts, ts_ns, side="right"))
        for t, sym, rate in self._funding[nxt:end]:
            self.funding_latest[sym] = (t, rate)
            self._metrics.funding_rate.labels(sym).set(rate)
        self._funding_next = end

    def status(self) -> dict[str, object]:
        h = self.history
        return {"kind": "replay", "bars_total": self._stop_at - self._start_at,
                "position": self.position - self._start_at,
                "bars_emitted": self.seq, "loops": self.loops, "done": self.done,
                "prerolled_bars": self.prerolled, "resumed": self.resumed,
                "symbols": list(h.symbols), "interval_s": h.interval_s,
                "notes": list(h.notes)}
