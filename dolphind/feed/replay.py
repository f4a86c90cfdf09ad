"""The replay feed: historical candles emitted as bar events at ``speed`` x market time.

The same stage serves `dolphind run` on recorded data (paper mode) and the backtest (speed 0,
as fast as the consumers take bars). The bars channel blocks when full, so a replay at full
speed is paced by its slowest consumer and never drops a bar.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import numpy as np
import structlog

from dolphind.channels import Channel
from dolphind.config import Config, parse_utc
from dolphind.events import Bar, frozen_array
from dolphind.feed.history import History, HistoryError, iso, load_history
from dolphind.ops.health import Health
from dolphind.ops.metrics import Metrics

log = structlog.get_logger("dolphind.feed.replay")


class ReplayFeed:
    """A stage: emits the bars of ``history`` into ``output``.

    Restart-safe: after a crash the supervisor calls ``run`` again and it continues from the
    next bar it had not yet handed over (``position``), with the sequence numbers continuing.
    """

    name = "feed"
    is_source = True  # shutdown stops sources first; the rest drain behind them

    def __init__(self, history: History, output: Channel[Bar], config: Callable[[], Config],
                 health: Health, metrics: Metrics) -> None:
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

    @classmethod
    async def open(cls, output: Channel[Bar], config: Callable[[], Config], health: Health,
                   metrics: Metrics) -> "ReplayFeed":
        cfg = config()
        paths = [str(cfg.resolve(p)) for p in cfg.replay.paths]
        # Reading files blocks: do it off the loop (the HTTP server is already answering).
        history = await asyncio.to_thread(load_history, paths, cfg.feed.max_stale_bars)
        for note in history.notes:
            log.info("replay.data_note", note=note)
        log.info("replay.loaded", bars=len(history), symbols=len(history.symbols),
                 interval_s=history.interval_s, start_ns=int(history.ts_ns[0]),
                 end_ns=int(history.ts_ns[-1]))
        return cls(history, output, config, health, metrics)

    @property
    def ready(self) -> bool:
        return self.seq > 0 or self.done

    async def run(self) -> None:
        h = self.history
        anchor: tuple[float, int, float] | None = None  # (wall, market ns, speed)
        while True:
            while self.position < self._stop_at:
                speed = self._config().replay.speed
                ts = int(h.ts_ns[self.position])
                if speed > 0:
                    if anchor is None or anchor[2] != speed:
                        anchor = (time.monotonic(), ts, speed)  # (re)base on start or reload
                    due = anchor[0] + (ts - anchor[1]) / 1e9 / speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                bar = Bar(ts, h.symbols, frozen_array(h.closes[self.position]), h.interval_s,
                          self.seq)
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
            self.position = self._start_at
            self.loops += 1
            anchor = None
            self._funding_next = 0
            self._metrics.replay_loops.inc()
            log.info("replay.loop", loops=self.loops)

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
                "symbols": list(h.symbols), "interval_s": h.interval_s,
                "notes": list(h.notes)}
