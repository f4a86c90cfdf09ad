"""Restore and reconcile: the book comes back from the store and is brought in line with the
venue, whose orders and positions are the truth (SPEC §5).

At start (process start, or the supervisor re-running the stage after a crash): capital,
positions and orders come back from the store; a simulated venue is rebuilt from it; orders
that were working are resolved with the venue by client id (unknown to the venue -> expired;
still working -> cancelled, since a market order left over from before a restart is stale).
Then positions are compared: differences are logged, counted, audited and adopted when no
order is working; positions on the account that are not ours are reported and left alone.

A live venue asks for the position check after each user-stream reconnect or lease takeover
(``check_positions``), and the control loop repeats it every ``positions_check_s``.
"""

from __future__ import annotations

import asyncio

import structlog

from dolphind.execution.bookkeeping import OrderKeeping
from dolphind.execution.equity import EquityBooks
from dolphind.execution.state import QTY_EPS, ExecutionServices, WorkingBook, now_ns
from dolphind.orders.portfolio import Portfolio, Position, split_foreign
from dolphind.orders.router import OrderState, transition
from dolphind.store.audit import audited_client_ids
from dolphind.store.sqlite import orders_missing_from, position_op
from dolphind.venues.venue import VenueUnavailable

log = structlog.get_logger("dolphind.execution")


class Reconciler:
    """Restores the book from the store and reconciles it with the venue."""

    def __init__(self, services: ExecutionServices, book: WorkingBook, equity: EquityBooks,
                 keeping: OrderKeeping) -> None:
        self._s = services
        self._book = book
        self._equity = equity
        self._keeping = keeping
        self._m = services.m
        self._position_mismatch: dict[str, tuple[float, float]] | None = None
        self._next_position_check = 0.0  # monotonic (see periodic_position_check)

    async def restore(self) -> None:
        book, s = self._book, self._s
        book.starts += 1
        cfg = s.config()
        state = await s.store.load_state()
        book.restored = state
        if state.account is None:
            cap = cfg.execution.capital_usdt
            book.portfolio = Portfolio(cap)
            await s.store.write(self._equity.account_op(now_ns()), wait=True)
            log.info("execution.new_account", capital_usdt=cap)
        else:
            a = state.account
            book.portfolio = Portfolio(a.initial_capital_usdt, a.cash_usdt, a.peak_equity_usdt,
                                       a.realised_pnl_usdt, a.fees_usdt, state.positions)
            self._equity.saved_peak = a.peak_equity_usdt
        book.known_ids = set(state.client_ids)
        book.fill_ids = set(state.fill_ids)
        book.recent_orders.clear()
        book.recent_orders.extend(state.recent_orders)
        book.orders = {o.client_id: o for o in state.open_orders}
        if book.starts == 1:
            await self._recover_audit_gap()
        if book.starts == 1 and s.venue.simulated:
            # A simulated venue has no memory of its own: rebuild it from the store. Orders
            # that were only NEW/UNKNOWN never produced a committed fill: paper never saw them.
            s.venue.restore([o for o in state.open_orders
                             if o.state not in (OrderState.NEW, OrderState.UNKNOWN)],
                            state.positions, book.portfolio.cash_usdt)
        await self._reconcile_orders()
        await self.reconcile_positions()
        if state.halted and not s.control.halted:
            s.control.halt("store:restore", state.halt_reason or "halted before restart")
        self._equity.publish()
        p = book.portfolio
        s.audit.record("execution.restored", start=book.starts, cash_usdt=p.cash_usdt,
                       equity_usdt=p.equity(), peak_equity_usdt=p.peak_equity_usdt,
                       realised_pnl_usdt=p.realised_pnl_usdt, fees_usdt=p.fees_usdt,
                       positions={q.symbol: q.qty for q in p.positions.values()},
                       working_orders=sorted(book.orders), scan_number=state.scan_number)
        log.info("execution.restored", start=book.starts, cash_usdt=p.cash_usdt,
                 positions=len(p.positions), working_orders=len(book.orders),
                 scan_number=state.scan_number)

    async def _recover_audit_gap(self) -> None:
        """An order is committed to the store before it is sent; its audit line is queued
        just after and written a moment later. A kill in between leaves an order the store
        has and the log does not: write it now, from the store, as ``order.recovered``."""
        audit = self._s.audit
        await audit.flush()
        known = await asyncio.to_thread(audited_client_ids, audit.path)
        missing = await orders_missing_from(self._s.store, known)
        for o in missing:
            audit.record("order.recovered", source="store", client_id=o.client_id,
                         intent_id=o.intent_id, symbol=o.symbol, side=o.side, qty=o.qty,
                         reduce_only=o.reduce_only, reason=o.reason, state=o.state,
                         filled_qty=o.filled_qty, avg_fill_price=o.avg_fill_price,
                         reject_reason=o.reject_reason, created_ns=o.created_ns)
        if missing:
            self._m.audit_recovered.inc(len(missing))
            log.warning("audit.recovered", orders=len(missing),
                        client_ids=[o.client_id for o in missing[:10]])

    async def _reconcile_orders(self) -> None:
        venue, keeping = self._s.venue, self._keeping
        for cid, order in list(self._book.orders.items()):
            try:
                seen = await venue.query(cid)
            except VenueUnavailable as exc:
                log.warning("execution.reconcile_query_failed", client_id=cid, error=str(exc))
                continue
            now = now_ns()
            if seen is None:
                # Recorded, never reached the venue: it will not be sent again.
                self._m.reconcile_diffs.labels("order_never_sent").inc()
                await keeping.set_order(transition(order, OrderState.EXPIRED, now,
                                                   reject_reason="not at venue after restart"),
                                        wait=True)
            elif seen.state in (OrderState.ACKED, OrderState.NEW):
                cancelled = await venue.cancel(cid)
                self._m.reconcile_diffs.labels("stale_order_cancelled").inc()
                if cancelled is not None and order.state != cancelled.state:
                    await keeping.apply_update(cancelled, wait=True)
            elif seen.state != order.state and seen.state not in (
                    OrderState.FILLED, OrderState.PARTIALLY_FILLED):
                # Fills (and the states they imply) are applied when their events arrive.
                self._m.reconcile_diffs.labels("order_state").inc()
                await keeping.apply_update(seen, wait=True)

    async def resolve_unknown(self) -> None:
        """Orders whose submit got no answer: ask the venue by client id (never resend)."""
        for cid, order in list(self._book.orders.items()):
            if order.state != OrderState.UNKNOWN:
                continue
            try:
                seen = await self._s.venue.query(cid)
            except VenueUnavailable:
                continue
            if seen is None:
                await self._keeping.set_order(transition(order, OrderState.EXPIRED, now_ns(),
                                                         reject_reason="unknown to the venue"))
            else:
                await self._keeping.apply_update(seen)

    async def reconcile_positions(self, cause: str = "start") -> bool:
        """The venue's positions are the truth (SPEC §5): differences are logged, counted and
        audited, and adopted when no order is working (with one working, its fills may still
        be on their way and the difference is not yet a fact). True when the book matches the
        venue (at once, or after adopting); False when the venue could not be read or a
        difference remains."""
        book, s = self._book, self._s
        try:
            venue_pos = await s.venue.positions()
        except VenueUnavailable as exc:
            log.warning("execution.reconcile_positions_failed", cause=cause, error=str(exc))
            return False
        portfolio = book.portfolio
        ours = {sym: p.qty for sym, p in portfolio.positions.items()}
        adopt_all = s.config().execution.foreign == "adopt"
        # The part of each venue position that is ours (all of it under "adopt"); the rest is
        # foreign: reported, left alone, counted by the exposure rails.
        venue_qty = {sym: vp.qty for sym, vp in venue_pos.items()}
        if not adopt_all and book.orders:
            # A working order's fills may still be on their way: a difference now is not yet
            # foreign. Only the foreign part known already is set aside (the rest is compared
            # as before: a mismatch until the order is done, then split).
            for sym, (q, _) in book.foreign_positions.items():
                venue_qty[sym] = venue_qty.get(sym, 0.0) - q
        elif not adopt_all:
            foreign: dict[str, tuple[float, float]] = {}
            for sym in set(ours) | set(venue_pos):
                kept, rest = split_foreign(ours.get(sym, 0.0), venue_qty.get(sym, 0.0))
                venue_qty[sym] = kept
                if rest:
                    foreign[sym] = (rest, venue_pos[sym].avg_price if sym in venue_pos else 0.0)
            self._set_foreign(foreign, cause)
        diffs = {sym: (ours.get(sym, 0.0), venue_qty.get(sym, 0.0))
                 for sym in set(ours) | set(venue_qty)
                 if abs(ours.get(sym, 0.0) - venue_qty.get(sym, 0.0)) > QTY_EPS}
        if not diffs:
            self._position_mismatch = None
            return True
        if book.orders:
            # Not adopted while an order works; said once per distinct difference, not on
            # every retry.
            if diffs != self._position_mismatch:
                self._position_mismatch = diffs
                log.warning("execution.reconcile_positions", cause=cause, differences=diffs,
                            adopting=False, working_orders=sorted(book.orders))
                self._m.reconcile_diffs.labels("position").inc(len(diffs))
                s.audit.record("execution.positions_mismatch", cause=cause,
                               differences={k: list(v) for k, v in diffs.items()},
                               working_orders=sorted(book.orders))
            return False
        log.warning("execution.reconcile_positions", cause=cause, differences=diffs,
                    adopting=True)
        if diffs != self._position_mismatch:
            self._m.reconcile_diffs.labels("position").inc(len(diffs))
        self._position_mismatch = None
        ts = now_ns()
        ops = []
        for sym in diffs:
            vp = venue_pos.get(sym)
            old = portfolio.positions.get(sym) or Position(sym)
            qty = venue_qty.get(sym, 0.0)
            # Our part of a shared position keeps our entry price (the venue's is a blend).
            price = old.avg_price if not adopt_all and not old.flat else \
                (vp.avg_price if vp else 0.0)
            new = Position(sym, qty, price if qty else 0.0,
                           old.realised_pnl_usdt, old.fees_usdt, old.opened_ns or ts, ts)
            if new.flat:
                portfolio.positions.pop(sym, None)
            else:
                portfolio.positions[sym] = new
            ops.append(position_op(new))
        await s.store.write(*ops, wait=True)
        self._equity.publish()
        s.audit.record("execution.positions_reconciled", cause=cause,
                       differences={k: list(v) for k, v in diffs.items()})
        return True

    async def periodic_position_check(self) -> None:
        """A live venue's positions against the book between reconnects, while no order is
        working (a working order's fills may be on their way: not a difference yet)."""
        s, book = self._s, self._book
        if s.venue.simulated:
            return  # the paper venue is rebuilt from this book: nothing to compare
        every = s.config().execution.binance.positions_check_s
        now = s.monotonic()
        if not every or now < self._next_position_check or book.orders:
            return
        self._next_position_check = now + every
        if not s.venue.reconciled:
            return  # the venue's own reconciliation is running
        async with book.lock:
            if not book.orders:
                await self.reconcile_positions("periodic")

    def _set_foreign(self, foreign: dict[str, tuple[float, float]], cause: str) -> None:
        """Positions on the account that are not ours: reported when they change, never
        traded (the exposure rails count them)."""
        book = self._book
        if foreign == book.foreign_positions:
            return
        new = set(foreign) - set(book.foreign_positions)
        book.foreign_positions = foreign
        self._m.foreign_positions.set(len(foreign))
        if new:
            self._m.reconcile_diffs.labels("foreign_position").inc(len(new))
        log.warning("execution.foreign_positions", cause=cause, action="left alone",
                    positions={sym: q for sym, (q, _) in foreign.items()})
        self._s.audit.record("execution.foreign_positions", cause=cause, action="left alone",
                             positions={sym: q for sym, (q, _) in foreign.items()})

    async def check_positions(self, cause: str) -> bool:
        """Called by a live venue after each user-stream (re)connect or lease takeover, once
        its orders are re-read: compare (and correct) positions; the venue counts as
        reconciled, and takes new entries, only when this returns True."""
        if not self._book.ready:
            return False  # the store's book is not restored yet: the venue asks again
        for o in self._s.venue.take_found_orders():
            # Its fills are booked as they are reported; the position check settles the rest.
            self._m.reconcile_diffs.labels("venue_order_found").inc()
            self._s.audit.record("execution.venue_order_found", cause=cause,
                                 client_id=o.client_id, symbol=o.symbol, side=o.side,
                                 qty=o.qty, filled_qty=o.filled_qty, state=o.state,
                                 venue_order_id=o.venue_order_id)
        async with self._book.lock:
            return await self.reconcile_positions(cause)
