"""The pipeline: every stage and the books it trades on, wired from the daemon's services.

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
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import structlog

from dolphind.alpha.engine import AlphaEngine
from dolphind.alpha.params import StrategyParams, effective_durations
from dolphind.alpha.stage import AlphaStage
from dolphind.app.books import open_books
from dolphind.app.execution import build_execution
from dolphind.app.feeds import Feed, bar_interval_s, book_port, feed_readiness, open_feed
from dolphind.app.kernels import kernels_warm
from dolphind.channels import Channel, Overflow
from dolphind.alpha.profile import strategy_params
from dolphind.config import Config
from dolphind.daemon import Services
from dolphind.events import WINDOWS, Bar, Fill, Order, OrderIntent, ScanRecord
from dolphind.execution.ledger import Ledger
from dolphind.execution.stage import ExecutionStage
from dolphind.execution.state import ExecutionServices
from dolphind.feed.backfill import rest_filler
from dolphind.feed.exf import ExfProducer
from dolphind.feed.funding import ReplayFunding
from dolphind.feed.market import MarketStage
from dolphind.feed.replay import ReplayFeed
from dolphind.ops.history import load_history
from dolphind.orders.filters import entry_gate
from dolphind.orders.router import venue_symbol
from dolphind.plugins import PluginHost, PostureChange
from dolphind.ports import ExecutionEventFanout, NoExecutionEvents
from dolphind.scan.arrow_sink import ArrowScanSink, last_scan_number
from dolphind.scan.scanner import EigenScanner
from dolphind.scan.stage import ScanStage
from dolphind.scan.warm import CHECKPOINT_FILE, CheckpointError, WarmStart, load_checkpoint
from dolphind.stage import Stage, offered_stages
from dolphind.telemetry.metrics import Metrics
from dolphind.venues.venue import Venue
from dolphind.store.audit import AuditLog, subscribe_audit
from dolphind.tradelog import TradeLog

log = structlog.get_logger("dolphind.app")

# Scan records are written by a worker thread in batches; this only bounds the sink's own
# buffer, which the scan stage flushes itself.
_SINK_FLUSH_EVERY = 1_000_000
# A backtest waits for execution to settle this many drain timeouts before deciding anyway.
_BACKTEST_SETTLE_TRIES = 60


@dataclass(frozen=True)
class Pipeline:
    """The running pipeline: its stages for the daemon, its parts for the ops surface and the
    backtest report."""

    stages: list[Stage]
    execution: ExecutionStage
    ledger: Ledger
    scan: ScanStage
    feed: Feed
    alpha: AlphaStage
    venue: Venue
    # Loops the components offer (the Binance venue's): supervised, cancelled after the drain.
    background: list[Stage] = field(default_factory=list)
    readiness_checks: Mapping[str, Callable[[], str]] = field(default_factory=dict)
    status_parts: Mapping[str, Callable[[], Any]] = field(default_factory=dict)

    def readiness(self) -> dict[str, str]:
        return {name: check() for name, check in self.readiness_checks.items()}

    def status(self) -> dict[str, Any]:
        return {name: part() for name, part in self.status_parts.items()}


@dataclass(frozen=True)
class _Channels:
    """The bounded, blocking channels between the stages (nothing is dropped on the way)."""

    bars: Channel[Bar]  # feed -> market
    scan_bars: Channel[Bar]  # market -> scan
    scans: Channel[ScanRecord]  # scan -> alpha
    intents: Channel[OrderIntent | Bar]  # alpha -> execution

    @classmethod
    def open(cls, cfg: Config, m: Metrics) -> "_Channels":
        size, counters = cfg.channels.bars, m.channels
        return cls(bars=Channel("bars", size, Overflow.BLOCK, counters),
                   scan_bars=Channel("scan_bars", size, Overflow.BLOCK, counters),
                   scans=Channel("scans", size, Overflow.BLOCK, counters),
                   intents=Channel("intents", size, Overflow.BLOCK, counters))


def _settled(execution: ExecutionStage, config: Callable[[], Config],
             backtest: bool) -> Callable[[int], Awaitable[bool]]:
    """The alpha stage's wait for execution to have handled ``sent`` items before a decision."""
    async def settled(sent: int) -> bool:
        if not backtest:
            return await execution.settled(sent, config().execution.drain_timeout_s)
        # A backtest decides on a settled portfolio however slow the machine is: a
        # wall-clock timeout would let load change which fills a decision sees.
        for _ in range(_BACKTEST_SETTLE_TRIES):
            if await execution.settled(sent, config().execution.drain_timeout_s):
                return True
            log.warning("backtest.settle_slow", sent=sent)
        return False
    return settled


class _AlphaListener:
    """The alpha stage's events: intents to the plugins; a posture change is a decision, so
    it is audited (issue #15) before the plugins hear of it."""

    def __init__(self, audit: AuditLog, plugins: PluginHost) -> None:
        self._audit = audit
        self._plugins = plugins

    def on_intent(self, intent: OrderIntent) -> None:
        self._plugins.on_intent(intent)

    def on_posture(self, posture: str, previous: str, rm: float, scan_number: int) -> None:
        self._audit.record("alpha.posture_changed", posture=posture, previous=previous, rm=rm,
                           scan_number=scan_number)
        self._plugins.on_posture(PostureChange(posture, previous, rm, scan_number))


class _PluginExecutionListener(NoExecutionEvents):
    """The execution stage's events the plugins have hooks for (orders and fills); positions
    and funding settlements are the ledger's, not a plugin hook (ignored, as inherited)."""

    def __init__(self, plugins: PluginHost) -> None:
        self._plugins = plugins

    def on_order(self, order: Order) -> None:
        self._plugins.on_order(order)

    def on_fill(self, fill: Fill) -> None:
        self._plugins.on_fill(fill)


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
async def build_pipeline(services: Services, record_equity: bool = False
                         ) -> AsyncIterator[Pipeline]:
    """The pipeline of ``services.config()``, open for the body of the ``async with``."""
    params = strategy_params(services.config())  # a changed champion parameter was refused
    async with contextlib.AsyncExitStack() as stack:
        async with kernels_warm(params):  # numba kernels compiled before any bar reaches them
            pipeline = await _open(services, stack, params, record_equity)
        yield pipeline


async def _open(services: Services, stack: contextlib.AsyncExitStack, params: StrategyParams,
                record_equity: bool) -> Pipeline:
    """Open every part (closed by ``stack``) and wire the stages."""
    config = services.config  # read the current config (a reload swaps it)
    cfg = config()
    m, health, bus, control = services.metrics, services.health, services.bus, services.control
    plugins = services.plugins
    engine = AlphaEngine(params)
    log.info("strategy.profile", profile=cfg.strategy.profile, params_hash=engine.status().params_hash)

    store, audit, venue = await stack.enter_async_context(open_books(config, m, bus))
    # Every control action (HTTP, plugins, signals) lands in the audit chain with its
    # cause, through this one subscriber; it goes before the audit log closes.
    market_ts: list[Callable[[], float]] = []  # a backtest's market clock, set below
    stack.callback(control.unsubscribe, subscribe_audit(
        control, audit, (lambda: market_ts[0]()) if cfg.mode == "backtest" else None))
    # No decision without its record: if the audit log fails, new entries stop (exits run).
    audit.on_failure(lambda exc: control.halt(
        "audit", f"the audit log failed ({type(exc).__name__}); entries halted"))
    stored = await store.load_state()
    scan_dir = cfg.data_dir / "scans"
    persisted = await asyncio.to_thread(last_scan_number, scan_dir)
    start_scan = max(-1 if persisted is None else persisted,
                     -1 if stored.scan_number is None else stored.scan_number) + 1
    sink = await asyncio.to_thread(ArrowScanSink, scan_dir, _SINK_FLUSH_EVERY)
    # After the scan stage's last flush (stages drain first); file I/O: off the loop.
    stack.push_async_callback(asyncio.to_thread, sink.close)

    ch = _Channels.open(cfg, m)
    bars, scan_bars, scans, intents = ch.bars, ch.scan_bars, ch.scans, ch.intents

    # Warm start (issue 18): the windows' checkpoint; not in a backtest, which must not
    # depend on what an earlier run left in the data dir.
    ws_cfg = cfg.warm_start
    warm_start: WarmStart | None = None
    checkpoint_path = scan_dir / CHECKPOINT_FILE if cfg.mode != "backtest" else None
    checkpoint, ck_problem = (await asyncio.to_thread(_load_windows, checkpoint_path)
                              if checkpoint_path is not None else (None, None))

    # Built below; the replay's callbacks read them once the stages run.
    execution: ExecutionStage
    scan: ScanStage

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

    feed = await open_feed(cfg, config, bars, health, m, control, scan_dir=scan_dir,
                           resume=checkpoint_path is not None, checkpoint=checkpoint,
                           open_trades=stored.open_trades, still_cold=still_cold,
                           flatten=flatten_for_loop)
    # Durations are defined in seconds: convert them with this run's real bar interval.
    interval_s = bar_interval_s(feed, cfg)
    engine.set_bar_interval(interval_s)
    if interval_s != params.validation_bar_s:
        log.warning("strategy.interval_differs", bar_interval_s=interval_s,
                    validation_bar_s=params.validation_bar_s,
                    effective=[dataclasses.asdict(d) for d in
                               effective_durations(params, interval_s)])
    market = MarketStage(bars, scan_bars, health, m, bus,
                         on_bar=plugins.on_bar)
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
                     bus, health, m, plugins.on_scan, warm_start=warm_start,
                     prime_alpha=engine.prime, checkpoint_path=checkpoint_path,
                     checkpoint_every_s=ws_cfg.checkpoint_every_s,
                     max_stale_bars=lambda: config().feed.max_stale_bars)

    # A backtest runs no plugins, and a veto hook is timed against a wall-clock budget: a
    # loaded machine would veto entries. No hook at all in a backtest (issue 16).
    veto = None if cfg.mode == "backtest" else plugins.veto
    # Execution's events, in order, to the ledger, the plugins, then the trade log (which
    # reads the trade the ledger has just closed); the listeners are added below.
    events = ExecutionEventFanout()
    # In a backtest the rails run on market time (dolphind.app.execution).
    execution = build_execution(intents, ExecutionServices(
        venue, store, audit, control, health, m, config, events,
        backtest=cfg.mode == "backtest"), veto=veto)
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
    trades = TradeLog(ledger.closed, plugins.on_trade)  # trade.fill / trade.closed lines
    for listener in (ledger, _PluginExecutionListener(plugins), trades):
        events.add(listener)
    # The open trade as it was before the stop (entry scan, fees, bars held): the alpha
    # engine's position view and the closing trade's PnL read it.
    ledger.restore(stored.open_trades, next_scan=start_scan)

    # A replay's funding prints feed the ACB funding factor (bible §10.2), at bar time.
    replay_funding = (ReplayFunding(feed.history.funding) if isinstance(feed, ReplayFeed)
                      else None)
    # IRP ranks only assets the venue can take: listed, TRADING, and an order of the sized
    # notional at or above its min quantity / MIN_NOTIONAL (issue 15/16).
    engine.set_venue_check(venue_entry_check(venue))
    if replay_funding:
        venue.set_funding(replay_funding)  # the paper venue books funding payments

    settled = _settled(execution, config, backtest=cfg.mode == "backtest")
    alpha = AlphaStage(scans, intents, engine, ledger, settled, book_port(feed), control,
                       health, m, _AlphaListener(audit, plugins),
                       checkpoint=store.save_scan_checkpoint,
                       bus=bus, config=config, deterministic=cfg.mode == "backtest",
                       bar_close_ns=round(interval_s * 1e9),
                       market_factors=replay_funding.factors_at if replay_funding else None)

    health.register(feed.name)
    health.register(market.name, backlog=lambda: len(bars))
    health.register(scan.name, backlog=lambda: len(scan_bars))
    health.register(alpha.name, backlog=lambda: len(scans))
    health.register(execution.name, backlog=lambda: len(intents))

    def scan_ready() -> str:
        return "ok" if scan.warm else "shortest window still cold"

    stages: list[Stage] = [feed, market, scan, alpha, execution]
    status_parts: dict[str, Callable[[], Any]] = {
        "feed": feed.status, "market": market.status, "scan": scan.status,
        "strategy": scan.strategy_status, "alpha": alpha.status,
        "execution": execution.status}
    if cfg.external_factors.enabled and cfg.mode != "backtest":
        # Live ACB inputs (funding, taker ratio, DVOL, Fear & Greed) onto the bus; never
        # in a backtest, whose factors come from its own data only.
        producer = ExfProducer(config, bus)
        health.register(producer.name)
        stages.append(producer)
        status_parts["external_factors"] = producer.status
    return Pipeline(
        stages=stages, background=offered_stages(venue),
        readiness_checks={"feed": feed_readiness(feed), "scan": scan_ready,
                          "execution": execution.readiness, "audit": audit.readiness},
        status_parts=status_parts,
        execution=execution, ledger=ledger, scan=scan, feed=feed, alpha=alpha, venue=venue)


def venue_entry_check(venue: Venue) -> Callable[[str, float, float], str]:
    """The alpha engine's venue check (``AlphaEngine.set_venue_check``) for ``venue``: the
    symbol's filters from its cached exchangeInfo (paper: its fallback filters), no I/O."""
    def check(symbol: str, notional_usdt: float, price: float) -> str:
        return entry_gate(venue.filters_for(venue_symbol(symbol)), notional_usdt, price)

    return check
