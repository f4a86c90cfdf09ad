"""The execution stage: order intents -> risk rails -> router -> venue -> portfolio and store.

Input: one channel carrying ``OrderIntent`` and ``Bar`` items. Bars only mark prices (the paper
venue fills at the latest mark; positions are valued at it). For a deterministic backtest the
producer forwards each bar *after* the intents decided on it, through this same channel.

Per intent, in order (one intent at a time):
1. duplicate check: the client order id (a hash of the intent id) already in the store -> no
   second order;
2. router: venue symbol, filters, rounding (never above the intended notional);
3. risk rails in SPEC §4 order; a rejection is named in metrics and the audit log and recorded
   in the store (so the same intent stays refused after a restart);
4. the order is committed to the store in state NEW *before* it is sent;
5. venue submit -> ack; fills arrive on the venue's event stream, handled by a second task: each
   fill is committed (fill, order, position, account) before the next event is handled.

This module is the loop; its parts live beside it, sharing one ``WorkingBook`` (state.py):
- ``reconcile.py``: restore from the store at (re)start, reconcile orders and positions with
  the venue;
- ``bookkeeping.py``: the venue's order reports and fills into the book and the store;
- ``equity.py``: marks, funding, money gauges and equity snapshots;
- ``exits.py``: exits that never give up, and the exits the stage makes (flatten, liquidation);
- ``controls.py``: the control loop (flatten, halt persistence, unknown orders, retries);
- ``views.py``: /status, /positions, /orders and readiness.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from dolphind.channels import Channel
from dolphind.events import Bar, Order, OrderIntent
from dolphind.execution.bookkeeping import OrderKeeping
from dolphind.execution.controls import ControlHandling
from dolphind.execution.equity import EquityBooks
from dolphind.execution.exits import ExitRetries, ExitRetry, liquidation_intent
from dolphind.execution.reconcile import Reconciler
from dolphind.execution.state import STAGE, ExecutionServices, WorkingBook, now_ns
from dolphind.execution.views import ExecutionViews
from dolphind.orders.portfolio import CapitalView, Portfolio
from dolphind.orders.router import (
    OrderState,
    RouteRejection,
    Router,
    client_order_id,
    transition,
    venue_symbol,
)
from dolphind.risk.overrides import RiskOverrides
from dolphind.risk.rails import OrderCheck, RiskRails
from dolphind.store.sqlite import RestoredState, order_op
from dolphind.telemetry.metrics import Children
from dolphind.venues.venue import VenueRejected, VenueUnavailable

__all__ = ["ExecutionServices", "ExecutionStage", "ExitRetry"]

log = structlog.get_logger("dolphind.execution")

# The audit queue is drained by its own thread; past this many queued records the intent loop
# waits (back-pressure instead of unbounded memory).
_AUDIT_HIGH_WATER = 10_000


class ExecutionStage:
    name = STAGE
    is_source = False  # ends once its input (the intents) is closed and drained

    def __init__(self, intents: Channel[OrderIntent | Bar], services: ExecutionServices,
                 rails: RiskRails, overrides: RiskOverrides) -> None:
        """``rails`` check every order against the risk config as ``overrides`` scale it;
        ``overrides`` also shrink new entries (both built by the app, dolphind.app.execution)."""
        self.intents = intents
        self.output = None  # nothing downstream: fills and orders go to the store and plugins
        s = self._s = services
        self._m = s.m
        self._intents = Children(self._m.intents)  # bound once (see telemetry.metrics)
        book = self._book = WorkingBook(Portfolio(s.config().execution.capital_usdt))
        self.overrides = overrides
        self.rails = rails
        self.equity = EquityBooks(s, book)
        self.exits = ExitRetries(s, book, self._send)
        self._keeping = OrderKeeping(s, book, self.equity, self.exits)
        self.router = Router(s.venue.filters_for, lambda sym: book.portfolio.position_qty(sym),
                             self._keeping.working_reduce_qty,
                             lambda: s.config().execution.client_id_prefix)
        self.reconciler = Reconciler(s, book, self.equity, self._keeping)
        self.views = ExecutionViews(s, book, self.exits, self.rails)
        self._controls = ControlHandling(s, book, self.exits, self.reconciler, self.views,
                                         self._send)
        # Items taken from the intents channel and fully handled (see ``settled``).
        self.processed = 0

    # ---- the book, as the rest of the daemon reads it ---------------------------------------

    @property
    def portfolio(self) -> Portfolio:
        return self._book.portfolio

    @property
    def orders(self) -> dict[str, Order]:
        """Working orders (not in a final state), by client id."""
        return self._book.orders

    @property
    def recent_orders(self) -> Any:
        return self._book.recent_orders

    @property
    def foreign_positions(self) -> dict[str, tuple[float, float]]:
        return self._book.foreign_positions

    @property
    def exit_retries(self) -> dict[str, ExitRetry]:
        return self.exits.pending

    @property
    def last_intents(self) -> Any:
        return self._book.last_intents

    @property
    def restored(self) -> RestoredState | None:
        return self._book.restored

    @property
    def ready(self) -> bool:
        return self._book.ready

    @property
    def starts(self) -> int:
        return self._book.starts

    @property
    def market_time_s(self) -> float:
        """Market time of the latest bar: the rails' clock in a backtest (dolphind.app.execution)."""
        return self.equity.bar_ns / 1e9

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        book = self._book
        book.ready = False
        await self.reconciler.restore()
        book.ready = True
        self._s.health.beat(self.name)
        async with asyncio.TaskGroup() as tg:
            venue_task = tg.create_task(self._venue_loop(), name="execution:venue")
            control_task = tg.create_task(self._controls.loop(), name="execution:control")
            await self._intent_loop()
            await self._drain()
            control_task.cancel()
            venue_task.cancel()
        # A backtest's books end at its last bar, not at the wall-clock moment it finished.
        bar_ns = self.equity.bar_ns
        end_ns = bar_ns if self._s.backtest and bar_ns else now_ns()
        await self.equity.snapshot(end_ns, wait=True)
        log.info("execution.finished", equity_usdt=round(book.portfolio.equity(), 6))

    async def _intent_loop(self) -> None:
        s, book = self._s, self._book
        async for item in self.intents:
            if isinstance(item, Bar):
                if book.orders and s.backtest:
                    # The paper venue has filled the last bar's orders already; their fills
                    # are booked (by the venue task) before this bar marks and snapshots the
                    # books, or which bar first sees a new position would depend on task
                    # scheduling and a backtest would not repeat exactly.
                    await self._keeping.settle()
                await self.equity.on_bar(item)
                # A liquidation the paper venue found at this bar's marks (issue 16): closed
                # now, before the bar counts as handled, so the next decision sees it booked.
                for sym in s.venue.take_liquidations():
                    if sym in book.portfolio.positions:
                        await self._send(liquidation_intent(book.portfolio, sym, item.ts_ns))
            else:
                await self._send(item)
            self.processed += 1
            book.progress.set()
            s.health.beat(self.name)
            if s.audit.backlog >= _AUDIT_HIGH_WATER:
                await s.audit.wait_below(_AUDIT_HIGH_WATER // 2)

    async def _drain(self) -> None:
        """Input closed: give working orders ``drain_timeout_s`` to reach a final state."""
        book, mono = self._book, self._s.monotonic
        deadline = mono() + self._s.config().execution.drain_timeout_s
        while book.orders and mono() < deadline:
            await asyncio.sleep(0.01)
        if book.orders:
            log.warning("execution.drain_timeout", working=sorted(book.orders))

    async def _venue_loop(self) -> None:
        async for event in self._s.venue.events():
            await self._keeping.on_event(event)
            self._s.health.beat(self.name)

    # ---- intents ---------------------------------------------------------------------------

    async def _send(self, intent: OrderIntent) -> None:
        """Handle one intent under the stage's lock (the intent loop, flatten, exit retries
        and the position checks take turns)."""
        async with self._book.lock:
            await self._handle_intent(intent)

    async def _handle_intent(self, intent: OrderIntent) -> None:
        t0 = time.perf_counter()
        s = self._s
        cfg = s.config()
        cid = client_order_id(intent.intent_id, cfg.execution.client_id_prefix)
        if cid in self._book.known_ids:
            self._intents["duplicate"].inc()
            s.audit.record("intent.duplicate", intent_id=intent.intent_id, client_id=cid)
            self._remember(intent, cid, "duplicate")
            return
        symbol = venue_symbol(intent.symbol)
        intent = self.overrides.intent(intent)  # a risk multiplier shrinks new entries
        if intent.reduce_only:
            # An exit closes the position, which must include the fills of entries still being
            # booked (their fills travel through the venue's event stream).
            await self._keeping.settle(symbol)
        if intent.ref_price > 0:
            s.venue.mark(symbol, intent.ref_price, intent.ts_ns)
        price = self.equity.price(symbol, intent.ref_price)
        built = self.router.build(intent, price, intent.ts_ns)
        if isinstance(built, RouteRejection):
            self._m.router_rejections.labels(built.reason).inc()
            await self._refuse(intent, cid, symbol, "router", built.reason, built.detail)
            return
        order = built
        check = OrderCheck(order.symbol, order.side, order.qty * price, intent.leverage,
                           order.reduce_only, cid)
        decision = self.rails.check(check, self.equity.account_snapshot())
        self._m.breaker_state.set(self.rails.breaker_gauge())
        if not decision.ok:
            self._m.risk_rejections.labels(decision.rule).inc()
            await self._refuse(intent, cid, symbol, "risk", decision.rule, decision.detail,
                               order)
            return
        # Committed before it is sent: after a crash the id is known and never sent twice.
        # The intent's leverage goes with it (the ledger's restored trade reports it).
        await s.store.write(order_op(order, intent.leverage), wait=True)
        self._keeping.submitted(order, t0)
        s.audit.record("order.submitted", kind="exit" if order.reduce_only else "entry",
                       intent_id=intent.intent_id, client_id=cid, symbol=order.symbol,
                       side=order.side, qty=order.qty, ref_price=price,
                       notional_usdt=order.qty * price,
                       intent_notional_usdt=intent.notional_usdt, leverage=intent.leverage,
                       reason=intent.reason, gates=dict(intent.gates))
        s.events.on_order(order)
        self._remember(intent, cid, "submitted")
        try:
            ack = await s.venue.submit(order)
        except VenueRejected as exc:
            if not exc.local:  # refused here (fenced, budget): not a venue failure
                self.rails.record_venue(False)
            self._intents["venue_rejected"].inc()
            self._keeping.not_timed(cid)
            await self._keeping.set_order(transition(order, OrderState.REJECTED, now_ns(),
                                                     reject_reason=f"venue:{exc.reason}"))
            s.audit.record("order.rejected", stage="venue", rule=exc.reason,
                           client_id=cid, intent_id=intent.intent_id)
            return
        except (VenueUnavailable, TimeoutError, OSError) as exc:
            # Outcome unknown: never retry blindly; the control loop queries by client id.
            self.rails.record_venue(False)
            self._intents["unknown"].inc()
            await self._keeping.set_order(transition(order, OrderState.UNKNOWN, now_ns()))
            s.audit.record("order.unknown", client_id=cid, error=repr(exc))
            return
        self.rails.record_venue(True)
        self._intents["submitted"].inc()
        self._m.intent_to_ack.observe(time.perf_counter() - t0)
        await self._keeping.apply_update(ack)

    async def _refuse(self, intent: OrderIntent, cid: str, symbol: str, stage: str, rule: str,
                      detail: str, order: Order | None = None) -> None:
        """Record a refused intent as a rejected order (so it stays refused after a restart)."""
        s = self._s
        ts = intent.ts_ns
        rejected = Order(
            client_id=cid, intent_id=intent.intent_id, symbol=symbol, side=intent.side,
            qty=order.qty if order else 0.0, order_type="MARKET", price=0.0,
            reduce_only=intent.reduce_only, reason=intent.reason,
            state=str(OrderState.REJECTED), created_ns=ts, updated_ns=ts,
            reject_reason=f"{stage}:{rule}", ref_price=intent.ref_price)
        self._book.known_ids.add(cid)
        self._intents[f"{stage}_rejected"].inc()
        self._keeping.count_state(rejected)
        self._book.recent_orders.append(rejected)
        await s.store.write(order_op(rejected))
        if rejected.reduce_only:
            self.exits.not_through(rejected)  # e.g. the venue breaker: retried when it closes
        s.audit.record(f"{stage}.rejected", rule=rule, detail=detail,
                       intent_id=intent.intent_id, client_id=cid, symbol=symbol,
                       side=intent.side, notional_usdt=intent.notional_usdt,
                       reduce_only=intent.reduce_only, reason=intent.reason)
        log.info(f"{stage}.rejected", rule=rule, detail=detail, symbol=symbol,
                 intent_id=intent.intent_id)
        self._remember(intent, cid, f"{stage}_rejected:{rule}")


    def _remember(self, intent: OrderIntent, cid: str, outcome: str) -> None:
        self._book.last_intents.append({
            "intent_id": intent.intent_id, "client_id": cid, "ts_ns": intent.ts_ns,
            "symbol": intent.symbol, "side": intent.side, "notional_usdt": intent.notional_usdt,
            "reduce_only": intent.reduce_only, "reason": intent.reason, "outcome": outcome})

    # ---- what the rest of the daemon asks --------------------------------------------------

    async def settled(self, sent: int, timeout_s: float) -> bool:
        """Wait until the first ``sent`` items of the channel are handled and no order is
        working, so a decision sees every fill that came before it. False on timeout.

        The alpha stage calls this before each decision: with the paper venue it returns at
        once after the fills are booked, which also makes a backtest deterministic (the store's
        writer thread cannot change which fills a decision sees)."""
        if self.processed >= sent and not self._book.orders:
            return True
        # Usually the stage has only the bar just sent to mark: one pass of the loop lets it
        # run, which is cheaper than arming a timer and waiting on the event.
        await asyncio.sleep(0)
        if self.processed >= sent and not self._book.orders:
            return True
        # Called once per bar: one timer that ends the wait is much cheaper than an
        # asyncio.timeout scope around every wait.
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._book.progress.set()

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        try:
            while self.processed < sent or self._book.orders:
                if expired:
                    return False
                self._book.progress.clear()
                await self._book.progress.wait()
        finally:
            timer.cancel()
        return True

    def capital_view(self) -> CapitalView:
        """For the alpha engine's sizing and capital sensor (bible §11.2 Cat5)."""
        return self._book.portfolio.view()

    async def check_positions(self, cause: str) -> bool:
        """The live venue's position check (see ``Reconciler.check_positions``)."""
        return await self.reconciler.check_positions(cause)

    def positions_view(self) -> dict[str, Any]:
        return self.views.positions_view()

    def orders_view(self) -> dict[str, Any]:
        return self.views.orders_view()

    def foreign_view(self) -> dict[str, Any]:
        return self.views.foreign_view()

    def status(self) -> dict[str, Any]:
        return self.views.status()

    def readiness(self) -> str:
        return self.views.readiness()
