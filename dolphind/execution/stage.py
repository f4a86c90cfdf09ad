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

Restart (process start, or the supervisor re-running ``run`` after a crash): capital, positions
and orders come back from the store; a fresh paper venue is rebuilt from it; orders that were
working are resolved with the venue by client id (unknown to the venue -> expired; still working
-> cancelled, since a market order left over from before a restart is stale).

Flatten: ``Control.flatten`` (POST /flatten, plugins) makes this stage send a reduce-only order
for every open position.
"""

from __future__ import annotations

import asyncio
import dataclasses
import collections
import time
from typing import Any, Callable

import structlog

from dolphind.backoff import backoff_delay
from dolphind.channels import Channel
from dolphind.config import Config
from dolphind.events import Bar, Fill, Order, OrderIntent, PositionUpdate
from dolphind.orders.portfolio import CapitalView, Portfolio, Position, split_foreign
from dolphind.orders.router import (
    TERMINAL,
    IllegalTransition,
    OrderState,
    RouteRejection,
    Router,
    client_order_id,
    order_state,
    transition,
    venue_symbol,
)
from dolphind.venues.venue import Venue, VenueRejected, VenueUnavailable, is_transient
from dolphind.control import Control, ControlAction
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Children, ExecutionMetrics, Metrics
from dolphind.risk.rails import AccountSnapshot, OrderCheck, RiskRails, Veto
from dolphind.store.audit import AuditLog, audited_client_ids
from dolphind.store.sqlite import (
    Account,
    RestoredState,
    Store,
    account_op,
    equity_op,
    fill_op,
    order_op,
    orders_missing_from,
    position_op,
)

log = structlog.get_logger("dolphind.execution")

# The audit queue is drained by its own thread; past this many queued records the intent loop
# waits (back-pressure instead of unbounded memory).
_AUDIT_HIGH_WATER = 10_000
_CONTROL_TICK_S = 1.0
# A backtest queues its equity snapshots (one per bar at 1m) and commits them as one store
# write per this many bars (see ``_on_bar``); live and paper runs write each one at once.
_EQUITY_BATCH = 256
_QTY_EPS = 1e-12


# Final states of an order that did not fill (an exit in one of them may be retried).
_NOT_THROUGH = frozenset({OrderState.REJECTED, OrderState.EXPIRED, OrderState.CANCELLED})


@dataclasses.dataclass(slots=True)
class ExitRetry:
    """An exit that has not got through yet (one per symbol)."""

    symbol: str
    intent_id: str  # the first exit's; its retries are "<intent_id>:retry<n>"
    reason: str  # the exit's reason (FLATTEN, STOP_LOSS, ...), kept by its retries
    since: float  # monotonic time of the first refusal
    attempts: int = 0
    due: float = 0.0
    last_error: str = ""
    stuck: bool = False

    def view(self, now: float) -> dict[str, Any]:
        return {"attempts": self.attempts, "since_s": round(now - self.since, 3),
                "next_in_s": round(max(0.0, self.due - now), 3),
                "last_error": self.last_error, "stuck": self.stuck, "reason": self.reason}


def record_slippage(m: ExecutionMetrics, notional_usdt: float, slippage_bps: float) -> None:
    """Count a fill's slippage in USDT by direction (a live fill can beat its reference)."""
    usdt = notional_usdt * slippage_bps * 1e-4
    if usdt >= 0.0:
        m.slippage.labels("paid").inc(usdt)
    else:
        m.slippage.labels("gained").inc(-usdt)


class ExecutionStage:
    name = "execution"

    def __init__(self, intents: Channel[OrderIntent | Bar], venue: Venue, store: Store,
                 audit: AuditLog, control: Control, health: Health, metrics: Metrics,
                 config: Callable[[], Config], veto: Veto | None = None,
                 emit: Callable[[str, Any], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 trading_clock: Callable[[], float] | None = None) -> None:
        self.intents = intents
        self.output = None  # nothing downstream: fills and orders go to the store and plugins
        self._venue = venue
        self._store = store
        self._audit = audit
        self._control = control
        self._health = health
        self._metrics = metrics
        self._m = metrics.execution
        # The per-order counters, bound once (see telemetry.metrics.Children).
        self._intents = Children(self._m.intents)
        self._orders_by_state = Children(self._m.orders)
        self._fills = Children(self._m.fills)
        self._config = config
        self._emit = emit or (lambda hook, event: None)
        self._mono = monotonic
        self.portfolio = Portfolio(config().execution.capital_usdt)
        # The rails read the risk config with the control plane's overrides applied (a guardian
        # "halve risk" or a throttle scales the caps and the order rate until it expires).
        self.rails = RiskRails(lambda: self._control.effective_risk(self._config().risk), veto,
                               lambda: self._config().plugins.veto_budget_ms,
                               trading_clock or monotonic,
                               on_veto_overrun=self._m.veto_overruns.inc)
        self.router = Router(venue.filters_for, lambda s: self.portfolio.position_qty(s),
                             self._working_reduce_qty,
                             lambda: self._config().execution.client_id_prefix)
        self.orders: dict[str, Order] = {}  # working orders (not in a final state)
        self.recent_orders: collections.deque[Order] = collections.deque(maxlen=50)
        self.known_ids: set[str] = set()
        self.fill_ids: set[str] = set()
        self.last_intents: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self.restored: RestoredState | None = None
        self.ready = False
        self.starts = 0
        self._lock = asyncio.Lock()
        self._intent_t0: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._order_changed = asyncio.Event()
        self._bar_ns = 0  # the latest bar's time (see ``market_time_s``)
        # Items taken from the intents channel and fully handled (see ``settled``).
        self.processed = 0
        self._progress = asyncio.Event()
        self._flatten_requests: collections.deque[ControlAction] = collections.deque()
        self._control_dirty = False
        self._last_equity_ns = 0
        self._saved_peak = 0.0  # peak equity in the store's account row (see ``_on_bar``)
        # A backtest batches its equity snapshots and books each bar's fills before the next bar.
        self._backtest = config().mode == "backtest"
        # Backtest only: equity snapshots (and new peaks) not yet handed to the store.
        self._equity_batch: list[tuple[str, Any]] = []
        self._account_behind = False
        self._symbol_map: tuple[tuple[str, ...], list[str], dict[str, int]] | None = None
        self._published_symbols: set[str] = set()
        self._position_mismatch: dict[str, tuple[float, float]] | None = None
        # Venue positions that are not ours (symbol -> (qty, entry price)), left alone.
        self.foreign_positions: dict[str, tuple[float, float]] = {}
        self._next_position_check = 0.0  # monotonic (see _periodic_position_check)
        # Exits that did not get through, by symbol: sent again until the position is closed.
        self.exit_retries: dict[str, ExitRetry] = {}
        control.subscribe(self._on_control)
        # A live venue is not reconciled until its positions match this book (see
        # ``check_positions``): after every user-stream reconnect and lease takeover.
        venue.set_position_check(self.check_positions)

    @property
    def market_time_s(self) -> float:
        """Market time of the latest bar: the rails' clock in a backtest (``trading_clock``)."""
        return self._bar_ns / 1e9

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        self.ready = False
        await self._restore()
        self.ready = True
        self._health.beat(self.name)
        async with asyncio.TaskGroup() as tg:
            venue_task = tg.create_task(self._venue_loop(), name="execution:venue")
            control_task = tg.create_task(self._control_loop(), name="execution:control")
            await self._intent_loop()
            await self._drain()
            control_task.cancel()
            venue_task.cancel()
        # A backtest's books end at its last bar, not at the wall-clock moment it finished.
        end_ns = self._bar_ns if self._backtest and self._bar_ns else self._now_ns()
        await self._snapshot_equity(end_ns, wait=True)
        log.info("execution.finished", equity_usdt=round(self.portfolio.equity(), 6))

    async def _intent_loop(self) -> None:
        async for item in self.intents:
            if isinstance(item, Bar):
                if self.orders and self._backtest:
                    # The paper venue has filled the last bar's orders already; their fills
                    # are booked (by the venue task) before this bar marks and snapshots the
                    # books, or which bar first sees a new position would depend on task
                    # scheduling and a backtest would not repeat exactly.
                    await self._settle()
                await self._on_bar(item)
                # A liquidation the paper venue found at this bar's marks (issue 16): closed
                # now, before the bar counts as handled, so the next decision sees it booked.
                for sym in self._venue.take_liquidations():
                    if sym in self.portfolio.positions:
                        async with self._lock:
                            await self._handle_intent(self._liquidation_intent(sym, item.ts_ns))
            else:
                async with self._lock:
                    await self._handle_intent(item)
            self.processed += 1
            self._progress.set()
            self._health.beat(self.name)
            if self._audit.backlog >= _AUDIT_HIGH_WATER:
                await self._audit.wait_below(_AUDIT_HIGH_WATER // 2)

    async def _drain(self) -> None:
        """Input closed: give working orders ``drain_timeout_s`` to reach a final state."""
        deadline = self._mono() + self._config().execution.drain_timeout_s
        while self.orders and self._mono() < deadline:
            await asyncio.sleep(0.01)
        if self.orders:
            log.warning("execution.drain_timeout", working=sorted(self.orders))

    # ---- restore and reconcile -------------------------------------------------------------

    async def _restore(self) -> None:
        self.starts += 1
        cfg = self._config()
        state = await self._store.load_state()
        self.restored = state
        if state.account is None:
            cap = cfg.execution.capital_usdt
            self.portfolio = Portfolio(cap)
            await self._store.write(self._account_op(self._now_ns()), wait=True)
            log.info("execution.new_account", capital_usdt=cap)
        else:
            a = state.account
            self.portfolio = Portfolio(a.initial_capital_usdt, a.cash_usdt, a.peak_equity_usdt,
                                       a.realised_pnl_usdt, a.fees_usdt, state.positions)
            self._saved_peak = a.peak_equity_usdt
        self.known_ids = set(state.client_ids)
        self.fill_ids = set(state.fill_ids)
        self.recent_orders.clear()
        self.recent_orders.extend(state.recent_orders)
        self.orders = {o.client_id: o for o in state.open_orders}
        if self.starts == 1:
            await self._recover_audit_gap()
        if self.starts == 1 and self._venue.simulated:
            # A simulated venue has no memory of its own: rebuild it from the store. Orders
            # that were only NEW/UNKNOWN never produced a committed fill: paper never saw them.
            self._venue.restore([o for o in state.open_orders
                     if o.state not in (OrderState.NEW, OrderState.UNKNOWN)],
                    state.positions, self.portfolio.cash_usdt)
        await self._reconcile_orders()
        await self._reconcile_positions()
        if state.halted and not self._control.halted:
            self._control.halt("store:restore", state.halt_reason or "halted before restart")
        self._publish_money()
        self._audit.record("execution.restored", start=self.starts,
                           cash_usdt=self.portfolio.cash_usdt,
                           equity_usdt=self.portfolio.equity(),
                           peak_equity_usdt=self.portfolio.peak_equity_usdt,
                           realised_pnl_usdt=self.portfolio.realised_pnl_usdt,
                           fees_usdt=self.portfolio.fees_usdt,
                           positions={p.symbol: p.qty for p in self.portfolio.positions.values()},
                           working_orders=sorted(self.orders), scan_number=state.scan_number)
        log.info("execution.restored", start=self.starts, cash_usdt=self.portfolio.cash_usdt,
                 positions=len(self.portfolio.positions), working_orders=len(self.orders),
                 scan_number=state.scan_number)

    async def _recover_audit_gap(self) -> None:
        """An order is committed to the store before it is sent; its audit line is queued
        just after and written a moment later. A kill in between leaves an order the store
        has and the log does not: write it now, from the store, as ``order.recovered``."""
        await self._audit.flush()
        known = await asyncio.to_thread(audited_client_ids, self._audit.path)
        missing = await orders_missing_from(self._store, known)
        for o in missing:
            self._audit.record("order.recovered", source="store", client_id=o.client_id,
                               intent_id=o.intent_id, symbol=o.symbol, side=o.side, qty=o.qty,
                               reduce_only=o.reduce_only, reason=o.reason, state=o.state,
                               filled_qty=o.filled_qty, avg_fill_price=o.avg_fill_price,
                               reject_reason=o.reject_reason, created_ns=o.created_ns)
        if missing:
            self._m.audit_recovered.inc(len(missing))
            log.warning("audit.recovered", orders=len(missing),
                        client_ids=[o.client_id for o in missing[:10]])

    async def _reconcile_orders(self) -> None:
        for cid, order in list(self.orders.items()):
            try:
                seen = await self._venue.query(cid)
            except VenueUnavailable as exc:
                log.warning("execution.reconcile_query_failed", client_id=cid, error=str(exc))
                continue
            now = self._now_ns()
            if seen is None:
                # Recorded, never reached the venue: it will not be sent again.
                self._m.reconcile_diffs.labels("order_never_sent").inc()
                await self._set_order(transition(order, OrderState.EXPIRED, now,
                                                 reject_reason="not at venue after restart"),
                                      wait=True)
            elif seen.state in (OrderState.ACKED, OrderState.NEW):
                cancelled = await self._venue.cancel(cid)
                self._m.reconcile_diffs.labels("stale_order_cancelled").inc()
                if cancelled is not None and order.state != cancelled.state:
                    await self._apply_update(cancelled, wait=True)
            elif seen.state != order.state and seen.state not in (
                    OrderState.FILLED, OrderState.PARTIALLY_FILLED):
                # Fills (and the states they imply) are applied when their events arrive.
                self._m.reconcile_diffs.labels("order_state").inc()
                await self._apply_update(seen, wait=True)

    async def _reconcile_positions(self, cause: str = "start") -> bool:
        """The venue's positions are the truth (SPEC §5): differences are logged, counted and
        audited, and adopted when no order is working (with one working, its fills may still
        be on their way and the difference is not yet a fact). True when the book matches the
        venue (at once, or after adopting); False when the venue could not be read or a
        difference remains."""
        try:
            venue_pos = await self._venue.positions()
        except VenueUnavailable as exc:
            log.warning("execution.reconcile_positions_failed", cause=cause, error=str(exc))
            return False
        ours = {s: p.qty for s, p in self.portfolio.positions.items()}
        adopt_all = self._config().execution.foreign == "adopt"
        # The part of each venue position that is ours (all of it under "adopt"); the rest is
        # foreign: reported, left alone, counted by the exposure rails.
        venue_qty = {s: vp.qty for s, vp in venue_pos.items()}
        if not adopt_all and self.orders:
            # A working order's fills may still be on their way: a difference now is not yet
            # foreign. Only the foreign part known already is set aside (the rest is compared
            # as before: a mismatch until the order is done, then split).
            for s, (q, _) in self.foreign_positions.items():
                venue_qty[s] = venue_qty.get(s, 0.0) - q
        elif not adopt_all:
            foreign: dict[str, tuple[float, float]] = {}
            for s in set(ours) | set(venue_pos):
                kept, rest = split_foreign(ours.get(s, 0.0), venue_qty.get(s, 0.0))
                venue_qty[s] = kept
                if rest:
                    foreign[s] = (rest, venue_pos[s].avg_price if s in venue_pos else 0.0)
            self._set_foreign(foreign, cause)
        diffs = {s: (ours.get(s, 0.0), venue_qty.get(s, 0.0))
                 for s in set(ours) | set(venue_qty)
                 if abs(ours.get(s, 0.0) - venue_qty.get(s, 0.0)) > _QTY_EPS}
        if not diffs:
            self._position_mismatch = None
            return True
        adopting = not self.orders
        if not adopting:
            # Said once per distinct difference, not on every retry.
            if diffs != self._position_mismatch:
                self._position_mismatch = diffs
                log.warning("execution.reconcile_positions", cause=cause, differences=diffs,
                            adopting=False, working_orders=sorted(self.orders))
                self._m.reconcile_diffs.labels("position").inc(len(diffs))
                self._audit.record("execution.positions_mismatch", cause=cause,
                                   differences={s: list(v) for s, v in diffs.items()},
                                   working_orders=sorted(self.orders))
            return False
        log.warning("execution.reconcile_positions", cause=cause, differences=diffs,
                    adopting=True)
        if diffs != self._position_mismatch:
            self._m.reconcile_diffs.labels("position").inc(len(diffs))
        self._position_mismatch = None
        ts = self._now_ns()
        ops = []
        for sym in diffs:
            vp = venue_pos.get(sym)
            old = self.portfolio.positions.get(sym) or Position(sym)
            qty = venue_qty.get(sym, 0.0)
            # Our part of a shared position keeps our entry price (the venue's is a blend).
            price = old.avg_price if not adopt_all and not old.flat else \
                (vp.avg_price if vp else 0.0)
            new = Position(sym, qty, price if qty else 0.0,
                           old.realised_pnl_usdt, old.fees_usdt, old.opened_ns or ts, ts)
            if new.flat:
                self.portfolio.positions.pop(sym, None)
            else:
                self.portfolio.positions[sym] = new
            ops.append(position_op(new))
        await self._store.write(*ops, wait=True)
        self._publish_money()
        self._audit.record("execution.positions_reconciled", cause=cause,
                           differences={s: list(v) for s, v in diffs.items()})
        return True

    async def _periodic_position_check(self) -> None:
        """A live venue's positions against the book between reconnects, while no order is
        working (a working order's fills may be on their way: not a difference yet)."""
        if self._venue.simulated:
            return  # the paper venue is rebuilt from this book: nothing to compare
        every = self._config().execution.binance.positions_check_s
        now = self._mono()
        if not every or now < self._next_position_check or self.orders:
            return
        self._next_position_check = now + every
        if not self._venue.reconciled:
            return  # the venue's own reconciliation is running
        async with self._lock:
            if not self.orders:
                await self._reconcile_positions("periodic")

    def _set_foreign(self, foreign: dict[str, tuple[float, float]], cause: str) -> None:
        """Positions on the account that are not ours: reported when they change, never
        traded (the exposure rails count them)."""
        if foreign == self.foreign_positions:
            return
        new = set(foreign) - set(self.foreign_positions)
        self.foreign_positions = foreign
        self._m.foreign_positions.set(len(foreign))
        if new:
            self._m.reconcile_diffs.labels("foreign_position").inc(len(new))
        log.warning("execution.foreign_positions", cause=cause, action="left alone",
                    positions={s: q for s, (q, _) in foreign.items()})
        self._audit.record("execution.foreign_positions", cause=cause, action="left alone",
                           positions={s: q for s, (q, _) in foreign.items()})

    def foreign_view(self) -> dict[str, Any]:
        orders = self._venue.foreign_orders
        self._m.foreign_orders.set(len(orders))
        return {"policy": self._config().execution.foreign,
                "positions": {s: {"qty": q, "avg_price": px}
                              for s, (q, px) in self.foreign_positions.items()},
                "orders": [_order_json(o) for o in orders.values()]}

    async def check_positions(self, cause: str) -> bool:
        """Called by a live venue after each user-stream (re)connect or lease takeover, once
        its orders are re-read: compare (and correct) positions; the venue counts as
        reconciled, and takes new entries, only when this returns True."""
        if not self.ready:
            return False  # the store's book is not restored yet: the venue asks again
        for o in self._venue.take_found_orders():
            # Its fills are booked as they are reported; the position check settles the rest.
            self._m.reconcile_diffs.labels("venue_order_found").inc()
            self._audit.record("execution.venue_order_found", cause=cause,
                               client_id=o.client_id, symbol=o.symbol, side=o.side, qty=o.qty,
                               filled_qty=o.filled_qty, state=o.state,
                               venue_order_id=o.venue_order_id)
        async with self._lock:
            return await self._reconcile_positions(cause)

    # ---- intents ---------------------------------------------------------------------------

    async def _handle_intent(self, intent: OrderIntent) -> None:
        t0 = time.perf_counter()
        cfg = self._config()
        cid = client_order_id(intent.intent_id, cfg.execution.client_id_prefix)
        if cid in self.known_ids:
            self._intents["duplicate"].inc()
            self._audit.record("intent.duplicate", intent_id=intent.intent_id, client_id=cid)
            self._remember(intent, cid, "duplicate")
            return
        symbol = venue_symbol(intent.symbol)
        if not intent.reduce_only:
            factor = self._control.risk_multiplier()
            if factor < 1.0:
                # A risk multiplier from the control plane shrinks new entries; exits are
                # never shrunk (they close the whole position).
                intent = dataclasses.replace(intent, notional_usdt=intent.notional_usdt * factor,
                                             gates=intent.gates + (("risk_multiplier", factor),))
        if intent.reduce_only:
            # An exit closes the position, which must include the fills of entries still being
            # booked (their fills travel through the venue's event stream).
            await self._settle(symbol)
        if intent.ref_price > 0:
            self._venue.mark(symbol, intent.ref_price, intent.ts_ns)
        price = self._price(symbol, intent.ref_price)
        built = self.router.build(intent, price, intent.ts_ns)
        if isinstance(built, RouteRejection):
            self._m.router_rejections.labels(built.reason).inc()
            await self._refuse(intent, cid, symbol, "router", built.reason, built.detail)
            return
        order = built
        check = OrderCheck(order.symbol, order.side, order.qty * price, intent.leverage,
                           order.reduce_only, cid)
        decision = self.rails.check(check, self._account_snapshot())
        self._m.breaker_state.set(self.rails.breaker_gauge())
        if not decision.ok:
            self._m.risk_rejections.labels(decision.rule).inc()
            await self._refuse(intent, cid, symbol, "risk", decision.rule, decision.detail,
                               order)
            return
        # Committed before it is sent: after a crash the id is known and never sent twice.
        # The intent's leverage goes with it (the ledger's restored trade reports it).
        await self._store.write(order_op(order, intent.leverage), wait=True)
        self.known_ids.add(cid)
        self.orders[cid] = order
        self._intent_t0[cid] = t0
        self._count_state(order)
        self._audit.record("order.submitted", kind="exit" if order.reduce_only else "entry",
                           intent_id=intent.intent_id, client_id=cid, symbol=order.symbol,
                           side=order.side, qty=order.qty, ref_price=price,
                           notional_usdt=order.qty * price,
                           intent_notional_usdt=intent.notional_usdt, leverage=intent.leverage,
                           reason=intent.reason, gates=dict(intent.gates))
        self._emit("on_order", order)
        self._remember(intent, cid, "submitted")
        try:
            ack = await self._venue.submit(order)
        except VenueRejected as exc:
            if not exc.local:  # refused here (fenced, budget): not a venue failure
                self.rails.record_venue(False)
            self._intents["venue_rejected"].inc()
            self._intent_t0.pop(cid, None)
            await self._set_order(transition(order, OrderState.REJECTED, self._now_ns(),
                                             reject_reason=f"venue:{exc.reason}"))
            self._audit.record("order.rejected", stage="venue", rule=exc.reason,
                               client_id=cid, intent_id=intent.intent_id)
            return
        except (VenueUnavailable, TimeoutError, OSError) as exc:
            # Outcome unknown: never retry blindly; the control loop queries by client id.
            self.rails.record_venue(False)
            self._intents["unknown"].inc()
            await self._set_order(transition(order, OrderState.UNKNOWN, self._now_ns()))
            self._audit.record("order.unknown", client_id=cid, error=repr(exc))
            return
        self.rails.record_venue(True)
        self._intents["submitted"].inc()
        self._m.intent_to_ack.observe(time.perf_counter() - t0)
        await self._apply_update(ack)

    async def _refuse(self, intent: OrderIntent, cid: str, symbol: str, stage: str, rule: str,
                      detail: str, order: Order | None = None) -> None:
        """Record a refused intent as a rejected order (so it stays refused after a restart)."""
        ts = intent.ts_ns
        rejected = Order(
            client_id=cid, intent_id=intent.intent_id, symbol=symbol, side=intent.side,
            qty=order.qty if order else 0.0, order_type="MARKET", price=0.0,
            reduce_only=intent.reduce_only, reason=intent.reason,
            state=str(OrderState.REJECTED), created_ns=ts, updated_ns=ts,
            reject_reason=f"{stage}:{rule}", ref_price=intent.ref_price)
        self.known_ids.add(cid)
        self._intents[f"{stage}_rejected"].inc()
        self._count_state(rejected)
        self.recent_orders.append(rejected)
        await self._store.write(order_op(rejected))
        if rejected.reduce_only:
            self._exit_not_through(rejected)  # e.g. the venue breaker: retried when it closes
        self._audit.record(f"{stage}.rejected", rule=rule, detail=detail,
                           intent_id=intent.intent_id, client_id=cid, symbol=symbol,
                           side=intent.side, notional_usdt=intent.notional_usdt,
                           reduce_only=intent.reduce_only, reason=intent.reason)
        log.info(f"{stage}.rejected", rule=rule, detail=detail, symbol=symbol,
                 intent_id=intent.intent_id)
        self._remember(intent, cid, f"{stage}_rejected:{rule}")

    # ---- venue events ----------------------------------------------------------------------

    async def _venue_loop(self) -> None:
        async for event in self._venue.events():
            if isinstance(event, Fill):
                if self._equity_batch or self._account_behind:
                    # A fill writes its own snapshot: the batched ones go first, so the rows
                    # keep the order in which they were taken.
                    await self._flush_equity()
                await self._on_fill(event)
            else:
                await self._apply_update(event)
            self._health.beat(self.name)

    async def _apply_update(self, snap: Order, wait: bool = False) -> None:
        """A state change reported by the venue (ack, cancel, expiry, rejection)."""
        cur = self.orders.get(snap.client_id)
        if cur is None:
            return  # already final here (a late or duplicate report)
        new = order_state(snap.state)
        if new in (OrderState.FILLED, OrderState.PARTIALLY_FILLED) or new == cur.state:
            return  # fills drive these states; same state is a duplicate report
        if new is OrderState.ACKED and cur.state != OrderState.NEW \
                and cur.state != OrderState.UNKNOWN:
            return  # a stale ack behind a fill
        try:
            upd = transition(cur, new, max(snap.updated_ns, cur.updated_ns),
                             venue_order_id=snap.venue_order_id or cur.venue_order_id,
                             reject_reason=snap.reject_reason or cur.reject_reason)
        except IllegalTransition as exc:
            self._m.illegal_transitions.inc()
            log.warning("execution.illegal_transition", error=str(exc))
            return
        await self._set_order(upd, wait=wait)

    async def _on_fill(self, fill: Fill) -> None:
        if fill.fill_id in self.fill_ids:
            return  # the same execution reported twice (stream and query)
        cur = self.orders.get(fill.client_id)
        upd: Order | None = None
        if cur is not None:
            filled = round(cur.filled_qty + fill.qty, 12)
            avg = (cur.avg_fill_price * cur.filled_qty + fill.price * fill.qty) / filled
            state = OrderState.FILLED if filled >= cur.qty - _QTY_EPS \
                else OrderState.PARTIALLY_FILLED
            try:
                upd = transition(cur, state, fill.ts_ns, filled_qty=filled, avg_fill_price=avg)
            except IllegalTransition as exc:
                self._m.illegal_transitions.inc()
                log.warning("execution.illegal_transition", error=str(exc))
        else:
            log.warning("execution.fill_for_unknown_order", client_id=fill.client_id,
                        fill_id=fill.fill_id)
        # A fill is a fact: it moves the position even when the order's state cannot.
        pos, realised = self.portfolio.apply_fill(fill)
        self.fill_ids.add(fill.fill_id)
        ops = [fill_op(fill, realised), position_op(pos),
               self._account_op(fill.ts_ns)]
        if upd is not None:
            ops.append(order_op(upd))
        ops.append(self._equity_op(fill.ts_ns))
        await self._store.write(*ops, wait=True)
        self._last_equity_ns = fill.ts_ns
        if upd is not None:
            self._install(upd)
        m = self._m
        self._fills[fill.side, fill.liquidity].inc()
        m.fees.inc(fill.fee_usdt)
        m.notional.inc(fill.qty * fill.price)
        m.slippage_bps.observe(fill.slippage_bps)
        record_slippage(m, fill.qty * fill.price, fill.slippage_bps)
        self._publish_money()
        t0 = self._intent_t0.pop(fill.client_id, None) if upd is not None and \
            upd.state == OrderState.FILLED else None
        if t0 is not None:
            m.intent_to_fill.observe(time.perf_counter() - t0)
        self._audit.record("fill", client_id=fill.client_id, fill_id=fill.fill_id,
                           symbol=fill.symbol, side=fill.side, qty=fill.qty, price=fill.price,
                           fee_usdt=fill.fee_usdt, liquidity=fill.liquidity,
                           slippage_bps=fill.slippage_bps, realised_pnl_usdt=realised,
                           position_qty=pos.qty, cash_usdt=self.portfolio.cash_usdt)
        self._emit("on_fill", fill)
        self._emit("on_position", PositionUpdate(pos.symbol, pos.qty, pos.avg_price,
                                                 pos.realised_pnl_usdt, fill.ts_ns))
        if upd is not None:
            self._emit("on_order", upd)

    # ---- orders bookkeeping ----------------------------------------------------------------

    async def _set_order(self, order: Order, wait: bool = False) -> None:
        self._install(order)
        await self._store.write(order_op(order), wait=wait)
        self._emit("on_order", order)
        if order.state in (OrderState.CANCELLED, OrderState.EXPIRED):
            # Rejections are audited where they happen (with the rule); fills with the fill.
            self._audit.record(f"order.{order.state}", client_id=order.client_id,
                               reason=order.reject_reason)
        if order.reduce_only and order.state in _NOT_THROUGH:
            self._exit_not_through(order)

    # ---- exits that never give up ----------------------------------------------------------

    def _exit_not_through(self, order: Order) -> None:
        """A reduce-only order ended without its fill: when the cause may pass (rate limit, ban,
        breaker, 5xx / timeout resolved as "never arrived", venue cancel or expiry), send the
        exit again after a back-off, until the position is closed (``_retry_exits``)."""
        reason = order.reject_reason or str(order.state)
        if order.state == OrderState.REJECTED and not is_transient(reason):
            return  # a final "no" (fenced, reduce-only refused, filters): retrying cannot help
        if self._backtest or not self.ready:
            # A backtest's paper venue never refuses for a while; at restore, the alpha engine
            # decides again on the restored position.
            return
        x = self._config().execution
        now = self._mono()
        r = self.exit_retries.get(order.symbol)
        if r is None:
            r = ExitRetry(order.symbol, order.intent_id, order.reason, now)
            self.exit_retries[order.symbol] = r
        r.last_error = reason
        wait = max(backoff_delay(r.attempts, x.exit_retry_initial_s, x.exit_retry_max_s),
                   self._venue.retry_after_s())
        r.due = now + wait
        log.warning("execution.exit_retry_scheduled", symbol=order.symbol,
                    client_id=order.client_id, reason=reason, attempt=r.attempts + 1,
                    in_s=round(wait, 3))
        self._wake.set()

    def _next_retry_in(self) -> float:
        if not self.exit_retries:
            return _CONTROL_TICK_S
        soonest = min(r.due for r in self.exit_retries.values())
        return min(_CONTROL_TICK_S, max(0.0, soonest - self._mono()))

    async def _retry_exits(self) -> None:
        x = self._config().execution
        for sym, r in list(self.exit_retries.items()):
            now = self._mono()
            pos = self.portfolio.positions.get(sym)
            if pos is None or abs(pos.qty) <= _QTY_EPS:
                del self.exit_retries[sym]
                log.info("execution.exit_through", symbol=sym, attempts=r.attempts,
                         seconds=round(now - r.since, 3))
                if r.stuck:
                    self._audit.record("execution.exit_unstuck", symbol=sym,
                                       attempts=r.attempts, seconds=now - r.since)
                self._m.exits_stuck.set(sum(1 for e in self.exit_retries.values() if e.stuck))
                continue
            if not r.stuck and now - r.since >= x.exit_stuck_after_s:
                r.stuck = True
                self._m.exits_stuck.set(sum(1 for e in self.exit_retries.values() if e.stuck))
                log.error("execution.exit_stuck", symbol=sym, attempts=r.attempts,
                          last_error=r.last_error, qty=pos.qty)
                self._audit.record("execution.exit_stuck", symbol=sym, attempts=r.attempts,
                                   last_error=r.last_error, qty=pos.qty,
                                   seconds=now - r.since)
                self._control.raise_incident(
                    "execution", "exit_stuck",
                    f"exit of {sym} ({pos.qty:g}) not through after {now - r.since:.0f}s and "
                    f"{r.attempts} retries: {r.last_error}; still retrying",
                    severity="critical", symbol=sym)
            if now < r.due or any(o.symbol == sym and o.reduce_only
                                  for o in self.orders.values()):
                continue  # not yet, or an exit is in flight (its outcome reschedules)
            r.attempts += 1
            # Until this attempt's outcome is known; a refusal reschedules it with back-off.
            r.due = now + backoff_delay(r.attempts, x.exit_retry_initial_s, x.exit_retry_max_s)
            mark = self.portfolio.mark_of(sym)
            intent = OrderIntent(
                intent_id=f"{r.intent_id}:retry{r.attempts}", ts_ns=time.time_ns(),
                symbol=sym, side="BUY" if pos.qty < 0 else "SELL",
                notional_usdt=abs(pos.qty) * mark, leverage=0.0, reduce_only=True,
                reason=r.reason, ref_price=mark,
                gates=(("retry_of", r.intent_id), ("attempt", r.attempts)))
            self._m.exit_retries.inc()
            log.info("execution.exit_retry", symbol=sym, attempt=r.attempts, qty=pos.qty,
                     last_error=r.last_error)
            async with self._lock:
                await self._handle_intent(intent)

    def _install(self, order: Order) -> None:
        self._count_state(order)
        if order.state in TERMINAL:  # a StrEnum set: the plain string is found
            self.orders.pop(order.client_id, None)
            if order.state != OrderState.FILLED:
                self._intent_t0.pop(order.client_id, None)  # no fill will time it
            self.recent_orders.append(order)
        else:
            self.orders[order.client_id] = order
        self._m.open_orders.set(len(self.orders))
        self._order_changed.set()
        self._progress.set()

    def _count_state(self, order: Order) -> None:
        self._orders_by_state[order.state].inc()

    async def _settle(self, symbol: str | None = None) -> None:
        """Wait (up to ``drain_timeout_s``) until no entry order in ``symbol`` is working;
        with no symbol, until no order at all is working."""
        def working() -> bool:
            if symbol is None:
                return bool(self.orders)
            return any(o.symbol == symbol and not o.reduce_only for o in self.orders.values())

        deadline = self._mono() + self._config().execution.drain_timeout_s
        while working():
            remaining = deadline - self._mono()
            if remaining <= 0:
                log.warning("execution.settle_timeout", symbol=symbol,
                            working=sorted(self.orders))
                return
            self._order_changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._order_changed.wait()
            except TimeoutError:
                pass

    def _working_reduce_qty(self, symbol: str) -> float:
        return sum(o.qty - o.filled_qty for o in self.orders.values()
                   if o.symbol == symbol and o.reduce_only)

    async def _resolve_unknown(self) -> None:
        """Orders whose submit got no answer: ask the venue by client id (never resend)."""
        for cid, order in list(self.orders.items()):
            if order.state != OrderState.UNKNOWN:
                continue
            try:
                seen = await self._venue.query(cid)
            except VenueUnavailable:
                continue
            if seen is None:
                await self._set_order(transition(order, OrderState.EXPIRED, self._now_ns(),
                                                 reject_reason="unknown to the venue"))
            else:
                await self._apply_update(seen)

    # ---- marks and money -------------------------------------------------------------------

    async def _on_bar(self, bar: Bar) -> None:
        self._bar_ns = bar.ts_ns
        if self._symbol_map is None or self._symbol_map[0] is not bar.symbols:
            names = [venue_symbol(s) for s in bar.symbols]
            self._symbol_map = (bar.symbols, names, {n: i for i, n in enumerate(names)})
        _, names, index = self._symbol_map
        closes = bar.closes
        self._venue.mark_bar(index, closes, bar.ts_ns)
        # Funding the paper venue settled at a funding time this bar crossed: the wallet
        # (cash, equity) moves by it, as on Binance; trades' PnL does not (issue 16).
        for pay in self._venue.take_funding():
            self.portfolio.cash_usdt += pay.amount_usdt
            self._account_behind = True
            self._audit.record("funding", symbol=pay.symbol, funding_ts_ns=pay.ts_ns,
                               qty=pay.qty, mark=pay.mark, rate=pay.rate,
                               amount_usdt=pay.amount_usdt)
            self._emit("on_funding", pay)  # the ledger books it to the open trade
        if self.portfolio.positions:
            for sym in self.portfolio.positions:
                j = index.get(sym)
                if j is not None and closes[j] == closes[j]:
                    self.portfolio.mark(sym, float(closes[j]))
            self.portfolio.update_peak()
        # One view of the money for this bar's gauges and snapshot (nothing moves in between).
        view = self.portfolio.view() if self.portfolio.positions else None
        self._publish_money(force=False, view=view)
        interval_ns = int(self._config().execution.equity_snapshot_interval_s * 1e9)
        if bar.ts_ns - self._last_equity_ns >= interval_ns:
            await self._snapshot_equity(bar.ts_ns, view=view)
        elif self.portfolio.peak_equity_usdt > self._saved_peak:
            # A new peak from the marks is shown on /status at once: commit it now (not at the
            # next snapshot), or a restart would forget it and understate the drawdown.
            if self._backtest:
                self._account_behind = True  # a backtest commits it with the next batch
            else:
                await self._store.write(self._account_op(bar.ts_ns))

    def _price(self, symbol: str, fallback: float) -> float:
        m = self._venue.last_mark(symbol)
        if m is not None:
            return float(m[0])
        return self.portfolio.marks.get(symbol) or fallback

    def _account(self) -> Account:
        p = self.portfolio
        return Account(p.initial_capital_usdt, p.cash_usdt, p.realised_pnl_usdt, p.fees_usdt,
                       p.peak_equity_usdt)

    def _account_op(self, ts_ns: int) -> tuple[str, Any]:
        self._saved_peak = self.portfolio.peak_equity_usdt
        return account_op(self._account(), ts_ns)

    def _equity_op(self, ts_ns: int, view: CapitalView | None = None) -> tuple[str, Any]:
        v = view or self.portfolio.view()
        return equity_op(ts_ns, v.equity_usdt, v.cash_usdt, v.unrealised_pnl_usdt,
                         v.peak_equity_usdt, v.drawdown, v.gross_exposure_usdt)

    async def _snapshot_equity(self, ts_ns: int, wait: bool = False,
                               view: CapitalView | None = None) -> None:
        self._last_equity_ns = ts_ns
        self._equity_batch.append(self._equity_op(ts_ns, view))
        if self._backtest and not wait and len(self._equity_batch) < _EQUITY_BATCH:
            # A backtest at full speed would otherwise make one store transaction per bar; the
            # same rows, in the same order, are committed in batches (before a fill is booked,
            # every _EQUITY_BATCH bars and at the end of the run).
            return
        await self._flush_equity(wait)

    async def _flush_equity(self, wait: bool = False) -> None:
        """Hand the snapshots taken so far to the store, with the account row as it is now."""
        batch, self._equity_batch = self._equity_batch, []
        self._account_behind = False
        await self._store.write(*batch, self._account_op(self._last_equity_ns), wait=wait)

    def _account_snapshot(self) -> AccountSnapshot:
        p = self.portfolio
        exposure = {s: abs(p.position_notional(s)) for s in p.positions}
        for s, (q, px) in self.foreign_positions.items():
            # Not ours to trade, but the account's risk all the same.
            exposure[s] = exposure.get(s, 0.0) + abs(q) * (p.marks.get(s) or px)
        for o in self.orders.values():
            if not o.reduce_only:
                px = p.marks.get(o.symbol) or o.ref_price
                exposure[o.symbol] = exposure.get(o.symbol, 0.0) + (o.qty - o.filled_qty) * px
        return AccountSnapshot(p.equity(), exposure, sum(exposure.values()),
                               self._control.halted)

    def _publish_money(self, force: bool = True, view: CapitalView | None = None) -> None:
        # Per bar (force=False) nothing moves while flat (equity is cash), so the gauges are
        # only refreshed when a position is marked; fills always refresh them.
        if not force and not self.portfolio.positions:
            return
        m, p = self._m, self.portfolio
        v = view or p.view()
        m.cash.set(v.cash_usdt)
        m.equity.set(v.equity_usdt)
        m.peak_equity.set(v.peak_equity_usdt)
        m.drawdown.set(v.drawdown)
        m.realised_pnl.set(v.realised_pnl_usdt)
        m.unrealised_pnl.set(v.unrealised_pnl_usdt)
        m.gross_exposure.set(v.gross_exposure_usdt)
        for sym in p.positions:
            m.position_notional.labels(sym).set(p.position_notional(sym))
        for sym in [s for s in self._published_symbols if s not in p.positions]:
            m.position_notional.labels(sym).set(0.0)
        self._published_symbols = set(p.positions)

    @staticmethod
    def _now_ns() -> int:
        # Wall time, for bookkeeping of venue-side events only: order and fill times that
        # matter for a backtest come from the data (intent ts, the paper venue's mark time).
        return time.time_ns()

    # ---- control (flatten, halt persistence, unknown orders) -------------------------------

    def _on_control(self, action: ControlAction) -> None:
        if action.action == "flatten":
            self._flatten_requests.append(action)
        elif action.action in ("halt", "resume") and action.cause not in ("shutdown",
                                                                           "store:restore"):
            # A shutdown halt is not an operator's decision: it must not survive the restart.
            self._control_dirty = True
        self._wake.set()

    async def _control_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._next_retry_in()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            self.foreign_view()  # keeps dolphind_foreign_orders current
            await self._periodic_position_check()
            if self.exit_retries:
                await self._retry_exits()
            if self._control_dirty:
                self._control_dirty = False
                await self._store.save_control(self._control.halted,
                                               self._control.halt_reason or "")
                self._audit.record("control.halt_state", halted=self._control.halted,
                                   reason=self._control.halt_reason or "")
            while self._flatten_requests:
                await self._flatten(self._flatten_requests.popleft())
            async with self._lock:
                await self._resolve_unknown()

    def _liquidation_intent(self, symbol: str, ts_ns: int) -> OrderIntent:
        pos = self.portfolio.positions[symbol]
        mark = self.portfolio.mark_of(symbol)
        return OrderIntent(
            intent_id=f"liquidation:{ts_ns}:{symbol}", ts_ns=ts_ns, symbol=symbol,
            side="BUY" if pos.qty < 0 else "SELL", notional_usdt=abs(pos.qty) * mark,
            leverage=0.0, reduce_only=True, reason="LIQUIDATION", ref_price=mark)

    async def _flatten(self, action: ControlAction) -> None:
        positions = list(self.portfolio.positions.values())
        self._audit.record("execution.flatten", cause=action.cause,
                           positions={p.symbol: p.qty for p in positions})
        log.info("execution.flatten", cause=action.cause, positions=len(positions))
        for pos in positions:
            mark = self.portfolio.mark_of(pos.symbol)
            intent = OrderIntent(
                intent_id=f"flatten:{action.ts:.6f}:{pos.symbol}", ts_ns=time.time_ns(),
                symbol=pos.symbol, side="BUY" if pos.qty < 0 else "SELL",
                notional_usdt=abs(pos.qty) * mark, leverage=0.0, reduce_only=True,
                reason="FLATTEN", ref_price=mark)
            async with self._lock:
                await self._handle_intent(intent)

    # ---- views -----------------------------------------------------------------------------

    async def settled(self, sent: int, timeout_s: float) -> bool:
        """Wait until the first ``sent`` items of the channel are handled and no order is
        working, so a decision sees every fill that came before it. False on timeout.

        The alpha stage calls this before each decision: with the paper venue it returns at
        once after the fills are booked, which also makes a backtest deterministic (the store's
        writer thread cannot change which fills a decision sees)."""
        if self.processed >= sent and not self.orders:
            return True
        # Usually the stage has only the bar just sent to mark: one pass of the loop lets it
        # run, which is cheaper than arming a timer and waiting on the event.
        await asyncio.sleep(0)
        if self.processed >= sent and not self.orders:
            return True
        # Called once per bar: one timer that ends the wait is much cheaper than an
        # asyncio.timeout scope around every wait.
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._progress.set()

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        try:
            while self.processed < sent or self.orders:
                if expired:
                    return False
                self._progress.clear()
                await self._progress.wait()
        finally:
            timer.cancel()
        return True

    def capital_view(self) -> CapitalView:
        """For the alpha engine's sizing and capital sensor (bible §11.2 Cat5)."""
        return self.portfolio.view()

    def _remember(self, intent: OrderIntent, cid: str, outcome: str) -> None:
        self.last_intents.append({"intent_id": intent.intent_id, "client_id": cid,
                                  "ts_ns": intent.ts_ns, "symbol": intent.symbol,
                                  "side": intent.side, "notional_usdt": intent.notional_usdt,
                                  "reduce_only": intent.reduce_only, "reason": intent.reason,
                                  "outcome": outcome})

    def positions_view(self) -> dict[str, Any]:
        p = self.portfolio
        return {"positions": [
            {"symbol": s, "qty": pos.qty, "side": "LONG" if pos.qty > 0 else "SHORT",
             "avg_price": pos.avg_price, "mark": p.mark_of(s),
             "notional_usdt": p.position_notional(s),
             "unrealised_pnl_usdt": pos.unrealised(p.mark_of(s)),
             "realised_pnl_usdt": pos.realised_pnl_usdt, "fees_usdt": pos.fees_usdt,
             "opened_ns": pos.opened_ns} for s, pos in p.positions.items()],
            **self._money()}

    def orders_view(self) -> dict[str, Any]:
        return {"working": [_order_json(o) for o in self.orders.values()],
                "recent": [_order_json(o) for o in reversed(self.recent_orders)]}

    def _money(self) -> dict[str, Any]:
        v = self.portfolio.view()
        return {"capital_usdt": self.portfolio.initial_capital_usdt, "cash_usdt": v.cash_usdt,
                "equity_usdt": v.equity_usdt, "peak_equity_usdt": v.peak_equity_usdt,
                "drawdown": v.drawdown, "realised_pnl_usdt": v.realised_pnl_usdt,
                "unrealised_pnl_usdt": v.unrealised_pnl_usdt, "fees_usdt": v.fees_usdt,
                "gross_exposure_usdt": v.gross_exposure_usdt}

    def status(self) -> dict[str, Any]:
        return {**self._money(), "ready": self.ready, "starts": self.starts,
                "positions": {s: p.qty for s, p in self.portfolio.positions.items()},
                "working_orders": len(self.orders), "last_intents": list(self.last_intents),
                "venue": self._venue.name, "venue_breaker": int(self.rails.breaker_gauge()),
                "exits_retrying": {s: r.view(self._mono()) for s, r in
                                   self.exit_retries.items()},
                "foreign": self.foreign_view(),
                "venue_state": self._venue_status(),
                "store": self._store.status(),
                "audit": {"path": str(self._audit.path), "lines": self._audit.seq,
                          "backlog": self._audit.backlog}}

    def _venue_status(self) -> dict[str, Any] | None:
        """The venue's own view (live: lease / fence, ban, reconciliation, user stream)."""
        return self._venue.status()

    def readiness(self) -> str:
        if not self.ready:
            return "restoring from the store"
        why = self._venue.readiness()  # fenced, banned (418) or not reconciled yet
        if why != "ok":
            return f"venue: {why}"
        return self._store.readiness()


def _order_json(o: Order) -> dict[str, Any]:
    return {"client_id": o.client_id, "intent_id": o.intent_id, "symbol": o.symbol,
            "side": o.side, "qty": o.qty, "type": o.order_type, "reduce_only": o.reduce_only,
            "reason": o.reason, "state": o.state, "filled_qty": o.filled_qty,
            "avg_fill_price": o.avg_fill_price, "created_ns": o.created_ns,
            "updated_ns": o.updated_ns, "reject_reason": o.reject_reason}
