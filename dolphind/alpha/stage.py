"""The alpha stage: scan records in, order intents out (the thin shell around AlphaEngine).

The engine is pure; this stage supplies what it reads each bar (the book view, the portfolio
view), applies the operator's halt (entries are dropped while halted, exits always pass),
exports the decision on /metrics, keeps the last decisions for /status, and hands intents to
the execution stage through a blocking channel: an intent is never dropped.

Before each decision it also passes the engine its outside inputs (the engine stays pure):

- survival Cat1 (SPEC §3): the daemon's own health level (§9), re-read at most every
  ``HEALTH_REFRESH_S`` of wall time so the per-bar cost stays a clock read;
- ACB external factors and a recalibrated w750 threshold from the state bus, or the external
  factors file (read at start and after every reload, in a worker thread): ``alpha/inputs.py``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Awaitable, Callable, Protocol

import numpy as np
import structlog

from dolphind.alpha.engine import AlphaEngine, Decision
from dolphind.alpha.acb import ExternalFactors
from dolphind.alpha.inputs import ExternalInputs, FilePayload, read_exf_file
from dolphind.alpha.mc_gate import SOURCE_NO_MODEL
from dolphind.alpha.posture import system_alive
from dolphind.alpha.views import BookView, PortfolioView
from dolphind.channels import Channel
from dolphind.events import Bar, OrderIntent, ScanRecord
from dolphind.control import Control
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Children, Metrics
from dolphind.statebus.base import StateBus

log = structlog.get_logger("dolphind.alpha")

POSTURES = ("APEX", "STALKER", "TURTLE", "HIBERNATE")
# How stale the health reading fed to Cat1 may get; the score walks every stage, which is too
# much work for every bar at backtest speed and pointless more often than this.
HEALTH_REFRESH_S = 0.25


def mc_statement(status: str, source: str) -> str:
    """The MC gate's verdict in words (/status, the log, the backtest report)."""
    if source == SOURCE_NO_MODEL:
        return "no MC model installed: fallback ORANGE, every entry sized at half (SPEC §3)"
    return f"{status} from {source}"


_NOT_APPLIED: Any = object()


class AlphaEvents(Protocol):
    """The alpha stage's listener port: every intent handed to execution, every posture
    change (the wiring audits it and tells the plugins)."""

    def on_intent(self, intent: OrderIntent) -> None: ...

    def on_posture(self, posture: str, previous: str, rm: float, scan_number: int) -> None: ...


class PortfolioPort(Protocol):
    """The alpha stage's portfolio input (the ledger): the portfolio as of the latest fills."""

    def portfolio_view(self) -> PortfolioView: ...

    def on_bar(self, ts_ns: int) -> None: ...

    def note_intent(self, intent_id: str, leverage: float) -> None: ...


Books = PortfolioPort  # the name callers used before the port had one


class BookPort(Protocol):
    """The alpha stage's order-book input, read once per decision: the book as of now, or
    None when there is no reading this bar (the engine then degrades as the bible says: no OB).
    The feed that keeps a book provides it (the live feed's ``BookSource``); a feed without
    depth provides ``NO_BOOK``."""

    def __call__(self) -> BookView | None: ...


class NoBook:
    """The book port of a feed without depth (a replay of candles): never a reading."""

    def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_BOOK"


NO_BOOK = NoBook()


class AlphaStage:
    name = "alpha"
    is_source = False  # ends once its input (the scans) is closed and drained

    def __init__(self, source: Channel[ScanRecord], output: Channel[OrderIntent | Bar],
                 engine: AlphaEngine, books: PortfolioPort,
                 settled: Callable[[int], Awaitable[bool]],
                 book: BookPort, control: Control, health: Health,
                 metrics: Metrics, events: AlphaEvents,
                 checkpoint: Callable[[int], Awaitable[None]] | None = None,
                 bus: StateBus | None = None, config: Callable[[], Any] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 deterministic: bool = False, bar_close_ns: int = 0,
                 market_factors: Callable[[int], ExternalFactors | None] | None = None) -> None:
        self.source = source
        # ACB factors the market data itself carries (a replay's funding prints), read at the
        # bar's time; used while neither the bus nor the factors file gives any.
        self._market_factors = market_factors
        self._market_applied: Any = _NOT_APPLIED
        # Bars are stamped with their open time; a decision is made on the close, so the bar
        # handed to execution (marks, fills, trades.csv times) carries the close time.
        self._bar_close_ns = bar_close_ns
        # A backtest decides on market data alone: the daemon's own health (a wall-clock
        # heartbeat, slower on a loaded machine) is not fed to survival Cat1 there.
        self._deterministic = deterministic
        self._checkpoint = checkpoint
        self.output = output
        self.engine = engine
        self._books = books
        self._settled = settled
        self._book = book
        self._sent = 0  # items put on the output channel (execution counts what it handled)
        self.unsettled = 0
        self._control = control
        self._health = health
        self._m = metrics
        self._events = events
        self.decisions = 0
        self._signals = Children(metrics.signals)  # one outcome per bar: bound once
        self.last_intents: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        # Per entry: the IRP ranking and the gates that excluded the others (the report's
        # "why this asset"); a backtest keeps all of them, a daemon the latest.
        self.entry_rankings: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=None if deterministic else 100)
        self._posture: str | None = None
        self._last: Decision | None = None
        self._last_book: BookView | None = None
        self.inputs = ExternalInputs(bus)
        self._config = config
        self._config_seen: Any = None
        self._mono = monotonic
        self._health_at = float("-inf")
        self.health_level: str | None = None
        nan = float("nan")
        metrics.posture_rm.set_function(lambda: self._last.rm if self._last else nan)
        metrics.regime_size_mult.set_function(
            lambda: self._last.regime_size_mult if self._last else nan)
        metrics.acb_boost.set_function(lambda: self.engine.status().acb_boost)

    async def run(self) -> None:
        await self._refresh_config()
        await self._say_mc_fallback()
        async for scan in self.source:
            # The bar goes to execution first: marks move, and an intent decided on this bar
            # fills at this bar's price (the price the decision saw), never an older one.
            await self._put(Bar(scan.ts_ns + self._bar_close_ns, scan.symbols, scan.prices,
                                0.0, scan.scan_number))
            # Decide on a settled portfolio: every earlier intent handled, its fills booked.
            if not await self._settled(self._sent):
                self.unsettled += 1
                log.warning("alpha.unsettled", scan_number=scan.scan_number)
            self._books.on_bar(scan.ts_ns)
            if self._config is not None and self._config() is not self._config_seen:
                await self._refresh_config()  # started, or reloaded
            self._feed_engine()
            self._feed_market(scan.ts_ns)
            t0 = time.perf_counter()
            book = self._book()
            self._last_book = book
            decision = self.engine.on_scan(scan, book, self._books.portfolio_view())
            intents, outcome = self._apply_halt(decision)
            self._m.alpha_seconds.observe(time.perf_counter() - t0)
            self._record(decision, outcome, intents)
            if intents and self._checkpoint is not None:
                # Intent ids carry the scan number: persist it before acting, so a restart
                # never reuses a number an order was already derived from.
                await self._checkpoint(scan.scan_number)
            for intent in intents:
                self._books.note_intent(intent.intent_id, intent.leverage)
                await self._put(intent)
                self._events.on_intent(intent)
            self._health.beat(self.name)

    async def _refresh_config(self) -> None:
        """(Re-)read the external factors file when the config object changed (start, reload):
        the daemon swaps the whole config on a reload, so an identity check per bar suffices."""
        if self._config is None:
            return
        cfg = self._config()
        if cfg is self._config_seen:
            return
        self._config_seen = cfg
        # IRP ranks only what the rails would let through (risk.allowed_symbols), and a thin
        # universe opens nothing (scan.min_symbols); both follow a reload.
        allowed = cfg.risk.allowed_symbols
        self.engine.set_eligible(frozenset(allowed) if allowed else None)
        self.engine.set_min_symbols(cfg.scan.min_symbols)
        name = cfg.strategy.external_factors_file
        # A file read must not block the loop: a worker thread (this stage waits, others run).
        file = await asyncio.to_thread(read_exf_file, cfg.resolve(name)) if name else FilePayload()
        self.inputs.set_file(file)

    def _feed_engine(self) -> None:
        """Hand the engine this bar's outside inputs (health, ACB factors, w750 threshold)."""
        now = self._mono()
        if now - self._health_at >= HEALTH_REFRESH_S:
            _, level = self._health.score()
            self.health_level = level.value
            self._health_at = now
        assert self.health_level is not None
        if not self._deterministic:
            self.engine.set_health(system_alive(self.health_level), now - self._health_at)
        exf = self.inputs.poll_exf()
        if exf is not None:
            self._market_applied = _NOT_APPLIED  # replaced: market factors apply afresh
            boost = self.engine.set_external_factors(exf[0])
            log.info("alpha.external_factors", source=self.inputs.exf.source,
                     boost=round(boost.boost, 4), reason=boost.reason)
        threshold = self.inputs.poll_w750()
        if threshold is not None:
            self.engine.set_w750_threshold(threshold)
            log.info("alpha.w750_threshold", threshold=threshold, source="bus")
        acb = self.inputs.poll_acb()
        if acb is not None:
            self.engine.apply_acb_update(acb[0], acb[1], reason="bus acb_boost")
            log.info("alpha.acb_update", boost=acb[0], beta=acb[1], source="bus")

    def _feed_market(self, ts_ns: int) -> None:
        if self._market_factors is None or self.inputs.exf.source != "none":
            return
        factors = self._market_factors(ts_ns)
        if factors == self._market_applied:
            return
        self._market_applied = factors
        boost = self.engine.set_external_factors(factors)
        log.info("alpha.external_factors", source="market_data", boost=round(boost.boost, 4),
                 reason=boost.reason)

    async def _put(self, item: OrderIntent | Bar) -> None:
        await self.output.put(item)
        self._sent += 1

    def _apply_halt(self, decision: Decision) -> tuple[tuple[OrderIntent, ...], str]:
        if not self._control.halted:
            return decision.intents, decision.outcome
        kept = tuple(i for i in decision.intents if i.reduce_only)
        if len(kept) < len(decision.intents):
            return kept, "halted"
        return kept, decision.outcome

    def _record(self, decision: Decision, outcome: str, intents: tuple[OrderIntent, ...]) -> None:
        m = self._m
        self.decisions += 1
        self._signals[outcome].inc()
        self._last = decision
        if decision.posture != self._posture:
            for p in POSTURES:
                m.posture.labels(p).set(1 if p == decision.posture else 0)
            if self._posture is not None:
                log.info("alpha.posture_changed", posture=decision.posture,
                         previous=self._posture, rm=round(decision.rm, 4))
                self._events.on_posture(decision.posture, self._posture, decision.rm,
                                        decision.scan_number)
            self._posture = decision.posture
        if decision.candidates and any(not i.reduce_only for i in intents):
            entry = next(i for i in intents if not i.reduce_only)
            self.entry_rankings.append({
                "intent_id": entry.intent_id, "ts_ns": entry.ts_ns,
                "scan_number": decision.scan_number, "symbol": entry.symbol,
                "candidates": [{"symbol": c.symbol, "ars": c.ars, "alignment": c.alignment,
                                "action": c.action, "excluded_by": c.excluded_by}
                               for c in decision.candidates]})
        for intent in intents:
            m.intents.labels("exit" if intent.reduce_only else "entry").inc()
            self.last_intents.append({
                "intent_id": intent.intent_id, "ts_ns": intent.ts_ns, "symbol": intent.symbol,
                "side": intent.side, "notional_usdt": intent.notional_usdt,
                "leverage": intent.leverage, "reduce_only": intent.reduce_only,
                "reason": intent.reason, "ref_price": intent.ref_price,
                "gates": dict(intent.gates)})
            log.info("alpha.intent", intent_id=intent.intent_id, symbol=intent.symbol,
                     side=intent.side, notional_usdt=round(intent.notional_usdt, 2),
                     leverage=round(intent.leverage, 3), reason=intent.reason)

    def status(self) -> dict[str, Any]:
        st = self.engine.status()
        return {"decisions": self.decisions, "unsettled_decisions": self.unsettled,
                "engine_bars": st.bars,  # bars of history the engine has (primed ones too)
                "posture": st.posture, "rm": st.rm,
                "params_hash": st.params_hash, "acb_boost": st.acb_boost,
                "acb_beta": st.acb_beta, "acb_reason": st.acb_reason,
                "mc_status": st.mc_status, "mc_source": st.mc_source,
                "mc_statement": mc_statement(st.mc_status, st.mc_source),
                "regime_size_mult": st.regime_size_mult,
                "acb_w750_threshold": st.w750_threshold, "acb_w750_source": st.w750_source,
                "health_level": self.health_level, "system_alive": st.system_alive,
                **self.inputs.status(), "book": self._book_status(),
                "last_intents": list(self.last_intents)}

    async def _say_mc_fallback(self) -> None:
        st = self.engine.status()
        if st.mc_source == SOURCE_NO_MODEL:
            log.warning("alpha.mc_gate_fallback", statement=mc_statement(st.mc_status,
                                                                         st.mc_source))

    def _book_status(self) -> dict[str, Any]:
        """What the last decision saw of the order book (issue 16: it used to see nothing)."""
        b = self._last_book
        if b is None:
            return {"present": False}
        return {"present": True, "symbols": len(b.symbols),
                "symbols_with_book": int(np.count_nonzero(np.isfinite(b.depth_quality))),
                "cascade_count": b.cascade_count, "regime_signal": b.regime_signal,
                "stale": b.stale}
