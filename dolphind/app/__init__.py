"""The only place that wires concrete parts together: feed, stages, channels, books.

    feed ─bars─► market ─bars─► scan ─scans─► alpha ─intents+bars─► execution
                                                  ▲                      │
                                                  └──── ledger ◄─────────┘ (fills, positions)

``build_pipeline`` is an async context manager: the parts it opens (store, audit log, scan
files) are closed in reverse order on exit, after the stages have drained, also when opening
fails half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import structlog

from dolphind.alpha.engine import AlphaEngine
from dolphind.alpha.params import effective_durations
from dolphind.alpha.stage import AlphaStage
from dolphind.alpha.warmup import warmup as warmup_alpha
from dolphind.channels import Channel, Overflow
from dolphind.alpha.profile import strategy_params
from dolphind.config import Config
from dolphind.events import WINDOWS, Bar, OrderIntent, ScanRecord
from dolphind.execution.ledger import Ledger
from dolphind.ops.history import load_history
from dolphind.tradelog import TradeLog
from dolphind.app.books import open_books
from dolphind.execution.stage import ExecutionStage
from dolphind.feed.backfill import rest_filler
from dolphind.feed.binance_ws import BinanceFeed
from dolphind.feed.book import BookSource
from dolphind.feed.exf import ExfProducer
from dolphind.feed.funding import ReplayFunding
from dolphind.feed.market import MarketStage
from dolphind.feed.replay import ReplayFeed
from dolphind.telemetry.metrics import Metrics
from dolphind.plugins import PostureChange
from dolphind.scan.arrow_sink import ArrowScanSink, last_scan_number
from dolphind.scan.scanner import warmup as warmup_scan
from dolphind.scan.scanner import EigenScanner
from dolphind.scan.stage import ScanStage
from dolphind.scan.warm import (
    CHECKPOINT_FILE, CheckpointError, WarmStart, last_scan_ts, load_checkpoint,
)
from dolphind.store.audit import subscribe_audit

if TYPE_CHECKING:
    from dolphind.daemon import Daemon

log = structlog.get_logger("dolphind.app")

# Scan records are written by a worker thread in batches; this only bounds the sink's own
# buffer, which the scan stage flushes itself.
_SINK_FLUSH_EVERY = 1_000_000
# A backtest waits for execution to settle this many drain timeouts before deciding anyway.
_BACKTEST_SETTLE_TRIES = 60


@dataclass
class Pipeline:
    stages: list[Any]
    readiness_checks: dict[str, Callable[[], str]] = field(default_factory=dict)
    status_parts: dict[str, Callable[[], Any]] = field(default_factory=dict)
    execution: ExecutionStage | None = None
    ledger: Ledger | None = None
    scan: ScanStage | None = None
    feed: Any = None
    alpha: Any = None
    venue: Any = None

    def readiness(self) -> dict[str, str]:
        return {name: check() for name, check in self.readiness_checks.items()}

    def status(self) -> dict[str, Any]:
        return {name: part() for name, part in self.status_parts.items()}


def _warm_kernels(params: Any) -> None:
    """Compile (or load from cache) every numba kernel: runs in a worker thread."""
    warmup_scan(readonly_only=True)  # the daemon's closes are always read-only arrays
    warmup_alpha(params)


async def _compile_kernels(params: Any) -> None:
    """The kernels in a worker thread while the books and the history load; a first start
    (nothing in numba's cache yet) takes tens of seconds, and the console says so."""
    t0 = time.monotonic()
    task = asyncio.ensure_future(asyncio.to_thread(_warm_kernels, params))
    # Loading from the cache takes about a second (more on a busy machine): only a start that
    # takes longer is compiling.
    done, _ = await asyncio.wait({task}, timeout=4.0)
    if not done:
        import numba

        log.info("scan.kernels_compiling",
                 note="first start (or a new version): numba compiles the scan and alpha "
                      "kernels once (tens of seconds, minutes on a busy machine); later "
                      "starts load them from its cache in about 2 s",
                 cache_dir=numba.config.CACHE_DIR or "__pycache__ next to the package")
    await task
    log.info("scan.kernels_ready", seconds=round(time.monotonic() - t0, 2))


def _sync_filler(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def fill(*args: Any) -> Any:
        return fn(*args)
    return fill


def _load_windows(path: Any) -> tuple[Any, str | None]:
    try:
        return load_checkpoint(path), None
    except CheckpointError as exc:
        log.warning("warm_start.checkpoint_unusable", error=str(exc))
        return None, str(exc)


@contextlib.asynccontextmanager
async def build_pipeline(daemon: "Daemon", record_equity: bool = False) -> AsyncIterator[Pipeline]:
    cfg = daemon.config
    config: Callable[[], Config] = lambda: daemon.config  # noqa: E731 - read the current config
    m: Metrics = daemon.metrics
    health, bus, control = daemon.health, daemon.bus, daemon.control
    emit = daemon.plugins.emit

    params = strategy_params(cfg)  # a changed champion parameter was refused at load
    engine = AlphaEngine(params)
    log.info("strategy.profile", profile=cfg.strategy.profile, params_hash=engine.status().params_hash)

    async with contextlib.AsyncExitStack() as stack:
        warm = asyncio.create_task(_compile_kernels(params), name="warmup")
        store, audit, venue = await stack.enter_async_context(open_books(config, m, bus))
        # Every control action (HTTP, plugins, signals) lands in the audit chain with its
        # cause, through this one subscriber; it goes before the audit log closes.
        market_ts: list[Callable[[], float]] = []  # a backtest's market clock, set below
        stack.callback(control.unsubscribe, subscribe_audit(
            control, audit, (lambda: market_ts[0]()) if cfg.mode == "backtest" else None))
        stored = await store.load_state()
        scan_dir = cfg.data_dir / "scans"
        persisted = await asyncio.to_thread(last_scan_number, scan_dir)
        start_scan = max(-1 if persisted is None else persisted,
                         -1 if stored.scan_number is None else stored.scan_number) + 1
        sink = await asyncio.to_thread(ArrowScanSink, scan_dir, _SINK_FLUSH_EVERY)
        # After the scan stage's last flush (stages drain first); file I/O: off the loop.
        stack.push_async_callback(asyncio.to_thread, sink.close)

        bars: Channel[Bar] = Channel("bars", cfg.channels.bars, Overflow.BLOCK, m.channels)
        scan_bars: Channel[Bar] = Channel("scan_bars", cfg.channels.bars, Overflow.BLOCK,
                                          m.channels)
        scans: Channel[ScanRecord] = Channel("scans", cfg.channels.bars, Overflow.BLOCK,
                                             m.channels)
        intents: Channel[OrderIntent | Bar] = Channel("intents", cfg.channels.bars,
                                                      Overflow.BLOCK, m.channels)

        # Warm start (issue 18): the windows' checkpoint; not in a backtest, which must not
        # depend on what an earlier run left in the data dir.
        ws_cfg = cfg.warm_start
        warm_start: WarmStart | None = None
        checkpoint_path = scan_dir / CHECKPOINT_FILE if cfg.mode != "backtest" else None
        checkpoint, ck_problem = (await asyncio.to_thread(_load_windows, checkpoint_path)
                                  if checkpoint_path is not None else (None, None))

        async def flatten_for_loop() -> int:
            """Close every position before a looping replay starts over (none may live
            across the seam where prices jump back); returns how many there were."""
            open_now = len(execution.portfolio.positions)
            if open_now:
                control.flatten("replay:loop", "the replay starts over from its first bar")
                deadline = time.monotonic() + cfg.execution.drain_timeout_s + 5.0
                while execution.portfolio.positions and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if execution.portfolio.positions:
                    log.warning("replay.loop_not_flat", positions=len(execution.portfolio.positions))
            return open_now

        async def still_cold(emitted: int) -> bool:
            """The replay's pre-roll asks: is the scan still cold after ``emitted`` bars?
            Exact, not racing the channels: past the bars any window needs, it waits for the
            scan to catch up before answering, so the pre-roll stops at the warm bar."""
            while not scan.restored:  # the first bar is out; the windows are coming back
                await asyncio.sleep(0.005)
            tracker = scan.tracker
            if tracker.can_trade:
                return False
            if emitted < max(WINDOWS) + 1:
                return True
            while tracker.bars_seen < emitted and not tracker.can_trade:
                await asyncio.sleep(0.005)
            return not tracker.can_trade

        feed: ReplayFeed | BinanceFeed
        if cfg.feed.kind == "binance":
            # The feed polls the control plane's reconnect counter (guardian, operator).
            feed = BinanceFeed(bars, config, health, m,
                               reconnect_requests=lambda: control.feed_reconnect_requests)
            # Market time never runs backwards under restored positions (issue 15): no bar
            # starts at or before the newest bar an earlier run checkpointed or scanned, whatever
            # times the venue (or a replaying fake) sends after the restart.
            if checkpoint_path is not None:
                marks = [checkpoint.last_ts_ns] if checkpoint is not None else []
                last_scan = await asyncio.to_thread(last_scan_ts, scan_dir)
                marks += [last_scan] if last_scan is not None else []
                if marks:
                    feed.bars.resume_after(max(marks) // 1_000_000 + feed.bars.bar_ms)
        else:
            # The stored market time: the newest of the windows' checkpoint, the last scan
            # record written (flushed every second) and the open trades' fills. A restarted
            # replay goes on after it, never back under a restored position (issue 15).
            resume = None
            if checkpoint_path is not None and cfg.replay.resume:
                marks = [checkpoint.last_ts_ns] if checkpoint is not None else []
                last_scan = await asyncio.to_thread(last_scan_ts, scan_dir)
                marks += [last_scan] if last_scan is not None else []
                marks += [f.ts_ns for t in stored.open_trades for f in t.fills]
                resume = max(marks) if marks else None
            feed = await ReplayFeed.open(bars, config, health, m, resume_after_ns=resume,
                                         still_cold=still_cold,
                                         flatten=flatten_for_loop)
        # Durations are defined in seconds: convert them with this run's real bar interval
        # (a replay's comes from its data, the live feed's from feed.bar_seconds).
        bar_interval_s = (float(feed.status()["interval_s"]) if isinstance(feed, ReplayFeed)
                          else float(cfg.feed.bar_seconds))
        engine.set_bar_interval(bar_interval_s)
        if bar_interval_s != params.validation_bar_s:
            log.warning("strategy.interval_differs", bar_interval_s=bar_interval_s,
                        validation_bar_s=params.validation_bar_s,
                        effective=[dataclasses.asdict(d) for d in
                                   effective_durations(params, bar_interval_s)])
        market = MarketStage(bars, scan_bars, health, m, bus,
                             on_bar=daemon.plugins.on_bar)
        if checkpoint_path is not None:
            live = cfg.feed.kind == "binance"
            filler: Any = None
            if live and ws_cfg.fill_from_rest:
                filler = rest_filler(ws_cfg, m, lambda: warm_start)
            elif isinstance(feed, ReplayFeed):
                filler = _sync_filler(feed.closes_at)  # the gap is in the data itself
            warm_start = WarmStart(
                checkpoint, ck_problem, ws_cfg.max_gap_s,
                backfill_bars=max(WINDOWS) + 1 if live and ws_cfg.backfill else 0,
                fill=filler,
                prime=lambda *bar: scan.prime(*bar),
                count=lambda source, n: m.warm_start_bars.labels(source).inc(n),
                fill_source="rest" if live else "replay")
        scan = ScanStage(scan_bars, scans, EigenScanner(start_scan_number=start_scan), sink,
                         bus, health, m, emit, warm_start=warm_start,
                         prime_alpha=engine.prime, checkpoint_path=checkpoint_path,
                         checkpoint_every_s=ws_cfg.checkpoint_every_s,
                         max_stale_bars=lambda: config().feed.max_stale_bars)

        def execution_emit(hook: str, event: Any) -> None:
            ledger.observe(hook, event)
            emit(hook, event)
            trades.observe(hook, event)  # after the ledger: it reads the closed trade there

        # In a backtest the rails' rate limit and breaker run on market time, not wall time:
        # a replay at full speed must make the same decisions on every run.
        trading_clock = (lambda: execution.market_time_s) if cfg.mode == "backtest" else None
        # A backtest runs no plugins, and a veto hook is timed against a wall-clock budget: a
        # loaded machine would veto entries. No hook at all in a backtest (issue 16).
        veto = None if cfg.mode == "backtest" else daemon.plugins.veto
        execution = ExecutionStage(intents, venue, store, audit, control, health, m, config,
                                   veto=veto, emit=execution_emit,
                                   trading_clock=trading_clock)
        if cfg.mode == "backtest":
            # Every audit record of a backtest carries market time (the latest bar's), not
            # the wall clock of the machine that replayed it.
            first_ns = (int(feed.history.ts_ns[min(feed.position, len(feed.history) - 1)])
                        if isinstance(feed, ReplayFeed) else 0)  # records before the 1st bar
            audit.use_clock(lambda: round(execution.market_time_s * 1e9) or first_ns)
            market_ts.append(lambda: execution.market_time_s or first_ns / 1e9)
        ledger = Ledger(execution.capital_view, record_equity=record_equity)
        if cfg.mode != "backtest":  # a backtest's report covers its own run only
            # Earlier runs' closed trades, for /trades /profit /daily (not logged again).
            ledger.closed.extend(await load_history(store))
        trades = TradeLog(ledger.closed, emit)  # trade.fill / trade.closed lines, on_trade
        # The open trade as it was before the stop (entry scan, fees, bars held): the alpha
        # engine's position view and the closing trade's PnL read it.
        ledger.restore(stored.open_trades, next_scan=start_scan)

        async def settled(sent: int) -> bool:
            if cfg.mode != "backtest":
                return await execution.settled(sent, config().execution.drain_timeout_s)
            # A backtest decides on a settled portfolio however slow the machine is: a
            # wall-clock timeout would let load change which fills a decision sees.
            for _ in range(_BACKTEST_SETTLE_TRIES):
                if await execution.settled(sent, config().execution.drain_timeout_s):
                    return True
                log.warning("backtest.settle_slow", sent=sent)
            return False

        # A replay's funding prints feed the ACB funding factor (bible §10.2), at bar time.
        replay_funding = (ReplayFunding(feed.history.funding) if isinstance(feed, ReplayFeed)
                          else None)
        # IRP ranks only assets the venue can take: listed, TRADING, and an order of the sized
        # notional at or above its min quantity / MIN_NOTIONAL (issue 15/16).
        engine.set_venue_check(venue_entry_check(venue))
        if replay_funding and hasattr(venue, "set_funding"):
            venue.set_funding(replay_funding)  # the paper venue books funding payments
        # The book reaches the strategy wherever the feed keeps one (the live feed's depth5);
        # a replay of candles has none and the engine degrades as the bible says (no OB).
        book = (BookSource(feed.book, lambda: 0) if isinstance(feed, BinanceFeed)
                else lambda: None)

        def alpha_emit(hook: str, event: Any) -> None:
            if hook == "on_posture":  # a posture change is a decision: audited (issue #15)
                audit.record("alpha.posture_changed", **event)
                daemon.plugins.on_posture(PostureChange(event["posture"], event["previous"],
                                                        event["rm"], event["scan_number"]))
                return
            emit(hook, event)

        alpha = AlphaStage(scans, intents, engine, ledger, settled, book, control,
                           health, m, alpha_emit, checkpoint=store.save_scan_checkpoint,
                           bus=bus, config=config, deterministic=cfg.mode == "backtest",
                           bar_close_ns=round(bar_interval_s * 1e9),
                           market_factors=replay_funding.factors_at if replay_funding else None)

        health.register(feed.name)
        health.register(market.name, backlog=lambda: len(bars))
        health.register(scan.name, backlog=lambda: len(scan_bars))
        health.register(alpha.name, backlog=lambda: len(scans))
        health.register(execution.name, backlog=lambda: len(intents))
        await warm  # numba kernels compiled before any bar reaches them

        def scan_ready() -> str:
            return "ok" if scan.warm else "shortest window still cold"

        pipeline = Pipeline(
            stages=[feed, market, scan, alpha, execution],
            readiness_checks={
                # The live feed says why it is not ready (which connection is down or stalled).
                "feed": feed.readiness if isinstance(feed, BinanceFeed)
                else lambda: "ok" if feed.ready else "no bar yet",
                "scan": scan_ready,
                "execution": execution.readiness,
            },
            status_parts={"feed": feed.status, "market": market.status, "scan": scan.status,
                          "strategy": scan.strategy_status,
                          "alpha": alpha.status, "execution": execution.status},
            execution=execution, ledger=ledger, scan=scan, feed=feed, alpha=alpha,
            venue=venue,
        )
        if cfg.external_factors.enabled and cfg.mode != "backtest":
            # Live ACB inputs (funding, taker ratio, DVOL, Fear & Greed) onto the bus; never
            # in a backtest, whose factors come from its own data only.
            producer = ExfProducer(config, bus)
            health.register(producer.name)
            pipeline.stages.append(producer)
            pipeline.status_parts["external_factors"] = producer.status
        yield pipeline


def venue_entry_check(venue: Any) -> Any:
    """The alpha engine's venue check (``AlphaEngine.set_venue_check``) for ``venue``: the
    symbol's filters from its cached exchangeInfo (paper: its fallback filters), no I/O."""
    from dolphind.orders.filters import entry_gate
    from dolphind.orders.router import venue_symbol

    def check(symbol: str, notional_usdt: float, price: float) -> str:
        return entry_gate(venue.filters_for(venue_symbol(symbol)), notional_usdt, price)

    return check
