"""The market-data source of a run: the live Binance feed or a replay of history, and what the
rest of the pipeline reads of it (its bar interval, readiness, and book port).

Market time never runs backwards under restored positions (issue 15): either feed starts after
the newest bar an earlier run checkpointed or scanned (a replay: also after the open trades'
fills), whatever times the venue (or a replaying fake) sends after the restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

from dolphind.alpha.stage import NO_BOOK, BookPort
from dolphind.channels import Channel
from dolphind.config import Config
from dolphind.control import Control
from dolphind.events import Bar
from dolphind.feed.binance_ws import BinanceFeed
from dolphind.feed.book import BookSource
from dolphind.feed.replay import ReplayFeed
from dolphind.scan.warm import last_scan_ts
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics

Feed = ReplayFeed | BinanceFeed


async def _stored_marks(scan_dir: Path, checkpoint: Any) -> list[int]:
    """Market times (ns) an earlier run reached: its windows' checkpoint and last scan record
    written (flushed every second)."""
    marks = [checkpoint.last_ts_ns] if checkpoint is not None else []
    last_scan = await asyncio.to_thread(last_scan_ts, scan_dir)
    return marks + ([last_scan] if last_scan is not None else [])


async def open_feed(cfg: Config, config: Callable[[], Config], bars: Channel[Bar],
                    health: Health, metrics: Metrics, control: Control, *,
                    scan_dir: Path, resume: bool, checkpoint: Any, open_trades: Any,
                    still_cold: Callable[[int], Awaitable[bool]],
                    flatten: Callable[[], Awaitable[int]]) -> Feed:
    """The feed ``cfg.feed.kind`` names, producing onto ``bars``. ``resume``: go on after the
    stored market time (not in a backtest, which must not depend on an earlier run's data)."""
    if cfg.feed.kind == "binance":
        # The feed polls the control plane's reconnect counter (guardian, operator).
        feed = BinanceFeed(bars, config, health, metrics,
                           reconnect_requests=lambda: control.feed_reconnect_requests)
        if resume:
            marks = await _stored_marks(scan_dir, checkpoint)
            if marks:
                feed.bars.resume_after(max(marks) // 1_000_000 + feed.bars.bar_ms)
        return feed
    resume_after = None
    if resume and cfg.replay.resume:
        marks = await _stored_marks(scan_dir, checkpoint)
        marks += [f.ts_ns for t in open_trades for f in t.fills]
        resume_after = max(marks) if marks else None
    return await ReplayFeed.open(bars, config, health, metrics, resume_after_ns=resume_after,
                                 still_cold=still_cold, flatten=flatten)


def bar_interval_s(feed: Feed, cfg: Config) -> float:
    """The run's real bar interval: a replay's comes from its data, the live feed's from
    ``feed.bar_seconds``."""
    if isinstance(feed, ReplayFeed):
        return float(feed.history.interval_s)
    return float(cfg.feed.bar_seconds)


def book_port(feed: Feed) -> BookPort:
    """The alpha stage's book input: the live feed's depth5 book, or ``NO_BOOK`` for a replay
    of candles (the engine degrades as the bible says: no OB)."""
    if isinstance(feed, BinanceFeed):
        return BookSource(feed.book, lambda: 0)
    return NO_BOOK


def feed_readiness(feed: Feed) -> Callable[[], str]:
    """The live feed says why it is not ready (which connection is down or stalled)."""
    if isinstance(feed, BinanceFeed):
        return feed.readiness
    return lambda: "ok" if feed.ready else "no bar yet"
