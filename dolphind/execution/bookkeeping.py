"""Orders and fills into the book: every state change and every fill the venue reports is
committed to the store (fill, order, position, account, equity in one write) before the next
is handled, counted, audited and told to the plugins.

Fills drive the filled quantity and the filled / partially-filled states; the venue's order
snapshots drive acked / cancelled / expired / rejected. A fill is a fact: it moves the position
even when the order's state cannot. An exit that ends without its fill goes to the exit
retries (``exits.py``).
"""

from __future__ import annotations

import asyncio
import time

import structlog

from dolphind.events import Fill, Order, PositionUpdate
from dolphind.execution.equity import EquityBooks
from dolphind.execution.exits import NOT_THROUGH, ExitRetries
from dolphind.execution.state import QTY_EPS, ExecutionServices, WorkingBook
from dolphind.orders.router import TERMINAL, IllegalTransition, OrderState, order_state, transition
from dolphind.store.sqlite import fill_op, order_op, position_op
from dolphind.telemetry.metrics import Children, ExecutionMetrics
from dolphind.venues.venue import VenueEvent

log = structlog.get_logger("dolphind.execution")


def record_slippage(m: ExecutionMetrics, notional_usdt: float, slippage_bps: float) -> None:
    """Count a fill's slippage in USDT by direction (a live fill can beat its reference)."""
    usdt = notional_usdt * slippage_bps * 1e-4
    if usdt >= 0.0:
        m.slippage.labels("paid").inc(usdt)
    else:
        m.slippage.labels("gained").inc(-usdt)


class OrderKeeping:
    """Applies the venue's reports to the working orders and the portfolio."""

    def __init__(self, services: ExecutionServices, book: WorkingBook, equity: EquityBooks,
                 exits: ExitRetries) -> None:
        self._s = services
        self._book = book
        self._equity = equity
        self._exits = exits
        self._m = services.m
        # The per-order counters, bound once (see telemetry.metrics.Children).
        self._orders_by_state = Children(self._m.orders)
        self._fills = Children(self._m.fills)
        # perf_counter time each working order's intent arrived (intent-to-fill latency).
        self._intent_t0: dict[str, float] = {}

    def submitted(self, order: Order, t0: float) -> None:
        """``order`` is committed and about to be sent (its intent arrived at ``t0``)."""
        self._book.known_ids.add(order.client_id)
        self._book.orders[order.client_id] = order
        self._intent_t0[order.client_id] = t0
        self.count_state(order)

    def not_timed(self, client_id: str) -> None:
        """No fill will time this order (refused by the venue)."""
        self._intent_t0.pop(client_id, None)

    async def on_event(self, event: VenueEvent) -> None:
        if isinstance(event, Fill):
            if self._equity.behind:
                # A fill writes its own snapshot: the batched ones go first, so the rows keep
                # the order in which they were taken.
                await self._equity.flush()
            await self.on_fill(event)
        else:
            await self.apply_update(event)

    async def apply_update(self, snap: Order, wait: bool = False) -> None:
        """A state change reported by the venue (ack, cancel, expiry, rejection)."""
        cur = self._book.orders.get(snap.client_id)
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
        await self.set_order(upd, wait=wait)

    async def on_fill(self, fill: Fill) -> None:
        book, s = self._book, self._s
        if fill.fill_id in book.fill_ids:
            return  # the same execution reported twice (stream and query)
        cur = book.orders.get(fill.client_id)
        upd: Order | None = None
        if cur is not None:
            filled = round(cur.filled_qty + fill.qty, 12)
            avg = (cur.avg_fill_price * cur.filled_qty + fill.price * fill.qty) / filled
            state = OrderState.FILLED if filled >= cur.qty - QTY_EPS \
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
        pos, realised = book.portfolio.apply_fill(fill)
        book.fill_ids.add(fill.fill_id)
        ops = [fill_op(fill, realised), position_op(pos), self._equity.account_op(fill.ts_ns)]
        if upd is not None:
            ops.append(order_op(upd))
        ops.append(self._equity.equity_op(fill.ts_ns))
        await s.store.write(*ops, wait=True)
        self._equity.last_equity_ns = fill.ts_ns
        if upd is not None:
            self.install(upd)
        m = self._m
        self._fills[fill.side, fill.liquidity].inc()
        m.fees.inc(fill.fee_usdt)
        m.notional.inc(fill.qty * fill.price)
        m.slippage_bps.observe(fill.slippage_bps)
        record_slippage(m, fill.qty * fill.price, fill.slippage_bps)
        self._equity.publish()
        t0 = self._intent_t0.pop(fill.client_id, None) if upd is not None and \
            upd.state == OrderState.FILLED else None
        if t0 is not None:
            m.intent_to_fill.observe(time.perf_counter() - t0)
        s.audit.record("fill", client_id=fill.client_id, fill_id=fill.fill_id,
                       symbol=fill.symbol, side=fill.side, qty=fill.qty, price=fill.price,
                       fee_usdt=fill.fee_usdt, liquidity=fill.liquidity,
                       slippage_bps=fill.slippage_bps, realised_pnl_usdt=realised,
                       position_qty=pos.qty, cash_usdt=book.portfolio.cash_usdt)
        s.events.on_fill(fill)
        s.events.on_position(PositionUpdate(pos.symbol, pos.qty, pos.avg_price,
                                            pos.realised_pnl_usdt, fill.ts_ns))
        if upd is not None:
            s.events.on_order(upd)

    async def set_order(self, order: Order, wait: bool = False) -> None:
        self.install(order)
        await self._s.store.write(order_op(order), wait=wait)
        self._s.events.on_order(order)
        if order.state in (OrderState.CANCELLED, OrderState.EXPIRED):
            # Rejections are audited where they happen (with the rule); fills with the fill.
            self._s.audit.record(f"order.{order.state}", client_id=order.client_id,
                                 reason=order.reject_reason)
        if order.reduce_only and order.state in NOT_THROUGH:
            self._exits.not_through(order)

    def install(self, order: Order) -> None:
        book = self._book
        self.count_state(order)
        if order.state in TERMINAL:  # a StrEnum set: the plain string is found
            book.orders.pop(order.client_id, None)
            if order.state != OrderState.FILLED:
                self._intent_t0.pop(order.client_id, None)  # no fill will time it
            book.recent_orders.append(order)
        else:
            book.orders[order.client_id] = order
        self._m.open_orders.set(len(book.orders))
        book.order_changed.set()
        book.progress.set()

    def count_state(self, order: Order) -> None:
        self._orders_by_state[order.state].inc()

    async def settle(self, symbol: str | None = None) -> None:
        """Wait (up to ``drain_timeout_s``) until no entry order in ``symbol`` is working;
        with no symbol, until no order at all is working."""
        book, mono = self._book, self._s.monotonic

        def working() -> bool:
            if symbol is None:
                return bool(book.orders)
            return any(o.symbol == symbol and not o.reduce_only for o in book.orders.values())

        deadline = mono() + self._s.config().execution.drain_timeout_s
        while working():
            remaining = deadline - mono()
            if remaining <= 0:
                log.warning("execution.settle_timeout", symbol=symbol,
                            working=sorted(book.orders))
                return
            book.order_changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await book.order_changed.wait()
            except TimeoutError:
                pass

    def working_reduce_qty(self, symbol: str) -> float:
        """The unfilled quantity of the working exits in ``symbol`` (the router's cap)."""
        return sum(o.qty - o.filled_qty for o in self._book.orders.values()
                   if o.symbol == symbol and o.reduce_only)
