"""Reconciliation: the venue's truth against what this process knows.

- **The user stream is not trusted to be complete.** While it is down REST polling takes over
  (``poll``); after every (re)connect (and a lease takeover) the working orders are re-read by
  REST (catching the outage's fills), open orders nobody here sent are tracked and reported for
  the audit, and then the book's positions are compared with the venue's (the execution
  stage's ``check_positions``: differences audited, adopted once no order is working). New
  entries wait until both succeeded (``reconciled``), retried every ``poll_interval_s``; even
  with the stream up, a working order with no news for ``order_check_s`` is queried.
- At start, before the execution stage restores, ``reconcile_store`` makes the venue know the
  store's working orders and brings the venue's unknown open orders into the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Awaitable, Callable

import structlog

from dolphind.config import BinanceVenueConfig
from dolphind.events import Order
from dolphind.orders.portfolio import split_foreign
from dolphind.orders.router import TERMINAL, OrderState
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.venues.binance.account import VenueSetupError
from dolphind.venues.binance.lease import Lease
from dolphind.venues.binance.orders import OrderDesk
from dolphind.venues.binance.tracking import OrderTracker
from dolphind.venues.venue import VenueUnavailable

log = structlog.get_logger("dolphind.venues.binance")


class Reconciler:
    """Whether the venue is reconciled, and the work that makes it so."""

    def __init__(self, config: Callable[[], BinanceVenueConfig], book: OrderTracker,
                 desk: OrderDesk, lease: Lease, metrics: VenueMetrics,
                 monotonic: Callable[[], float]) -> None:
        self._cfg = config
        self._book = book
        self._desk = desk
        self._lease = lease
        self._m = metrics
        self._mono = monotonic
        self.reconciled = False
        self._position_check: Callable[[str], Awaitable[bool]] | None = None
        self._found: list[Order] = []  # open orders found by a resync that nobody sent here
        # The user stream's state, bound by the stream (it reconciles while connected).
        self._stream_up: Callable[[], bool] = lambda: False
        self._kick = asyncio.Event()

    def bind_stream(self, connected: Callable[[], bool], kick: asyncio.Event) -> None:
        self._stream_up = connected
        self._kick = kick

    def lost(self, why: str | None) -> None:
        """Not reconciled any more (stream down, lease lost): entries wait for the next
        reconciliation. ``why`` is logged when it was reconciled."""
        if self.reconciled and why:
            log.warning("venue.unreconciled", reason=why)
        self.reconciled = False
        self._m.reconciled.set(0)

    def take_found_orders(self) -> list[Order]:
        """Open orders that a resync found at the venue and this process did not send (placed
        by hand, or by the previous holder of the lease), once each, for the audit."""
        found, self._found = self._found, []
        return found

    def set_position_check(self, check: Callable[[str], Awaitable[bool]]) -> None:
        """The book's position check (the execution stage's): after each reconnect the
        venue is reconciled only once it returns True."""
        self._position_check = check

    async def _positions_confirmed(self, cause: str) -> bool:
        check = self._position_check
        if check is None:
            return True  # no book to compare with (the venue used on its own)
        # Every fill emitted so far must be booked before positions are compared.
        deadline = self._mono() + 5.0
        while len(self._book.events) and self._mono() < deadline:
            await asyncio.sleep(0.01)
        if len(self._book.events):
            return False
        try:
            ok = await check(cause)
        except VenueUnavailable as exc:
            log.warning("venue.position_check_failed", cause=cause, error=str(exc))
            return False
        return ok

    async def resync(self, cause: str) -> bool:
        """Re-read every unsettled order by REST (fills missed by the stream are emitted) and
        look for open orders this process does not know. True when all of it succeeded."""
        ok = True
        for cid, t in list(self._book.orders.items()):
            if t.settled:
                continue
            try:
                await self._desk.query(cid)
            except VenueUnavailable as exc:
                ok = False
                log.warning("venue.resync_query_failed", client_id=cid, error=str(exc))
        try:
            open_now = await self._desk.open_orders()
            for cid in set(self._book.foreign_orders) - {o.client_id for o in open_now}:
                self._book.foreign_orders.pop(cid, None)  # gone (filled, cancelled by its owner)
            for o in open_now:
                if self._book.is_foreign(o.client_id):
                    if o.client_id not in self._book.foreign_orders:
                        log.warning("venue.foreign_order", cause=cause, client_id=o.client_id,
                                    symbol=o.symbol, side=o.side, qty=o.qty, state=o.state,
                                    action="left alone")
                    self._book.foreign_orders[o.client_id] = o
                    continue
                if o.client_id not in self._book.orders:
                    # Appeared while we were not listening: its fills are news.
                    self._book.track(o)
                    log.warning("venue.unknown_open_order", cause=cause, client_id=o.client_id,
                                symbol=o.symbol, side=o.side, qty=o.qty, state=o.state,
                                filled_qty=o.filled_qty)
                    self._found.append(o)  # for the book's audit (take_found_orders)
                    await self._desk.query(o.client_id)
        except VenueUnavailable as exc:
            ok = False
            log.warning("venue.resync_open_orders_failed", error=str(exc))
        log.info("venue.resynced", cause=cause, ok=ok,
                 working=sum(1 for t in self._book.orders.values() if not t.settled))
        return ok

    async def while_connected(self, reader: asyncio.Task[str], cause: str) -> str:
        """With the stream connected (first, so nothing falls between it and REST): re-read
        the orders, then have the positions checked; until both succeed, try again every
        ``poll_interval_s``. Returns why the connection ended (the reader's reason, or
        "restart" when kicked)."""
        synced = False
        while True:
            if not self.reconciled and self._stream_up() and self._lease.held:
                if not synced:
                    synced = await self.resync(cause)
                if synced and await self._positions_confirmed(cause) \
                        and self._stream_up() and self._lease.held \
                        and not reader.done():
                    self.reconciled = True
                    self._m.reconciled.set(1)
                    log.info("venue.reconciled", cause=cause)
            kick = asyncio.create_task(self._kick.wait())
            done, _ = await asyncio.wait(
                {reader, kick}, return_when=asyncio.FIRST_COMPLETED,
                timeout=None if self.reconciled else self._cfg().poll_interval_s)
            kick.cancel()
            if reader in done:
                return reader.result()
            if kick in done:
                return "restart"

    async def poll(self) -> None:
        """REST polling while the stream is down; with it up, orders with no news for long."""
        while True:
            cfg = self._cfg()
            await asyncio.sleep(cfg.poll_interval_s)
            polling = not self._stream_up() and self._lease.held
            self._m.rest_polling.set(1 if polling else 0)
            if not self._lease.held:
                continue
            now = self._mono()
            for cid, t in list(self._book.orders.items()):
                if t.settled:
                    continue
                stale = now - t.last_news >= cfg.order_check_s
                behind = t.venue_state in TERMINAL  # a final state waiting for its fills
                if not (polling or stale or behind):
                    continue
                try:
                    await self._desk.query(cid)
                except VenueUnavailable as exc:
                    t.last_news = now  # do not hammer a failing query
                    log.info("venue.poll_failed", client_id=cid, error=str(exc))
                    if "rate_limited" in str(exc) or "ip_banned" in str(exc):
                        break


# ---- start-up reconciliation with the store ---------------------------------------------


class ForeignHoldings(VenueSetupError):
    """execution.foreign = "refuse" and the account holds positions or orders not ours."""


async def reconcile_store(venue: Any, store: Any, audit: Any, reconcile_diffs: Any,
                          write_order: Callable[[Order], Awaitable[None]],
                          policy: str = "adopt") -> None:
    """Before the execution stage restores: make the venue know the store's working orders
    (their symbols, for query by client id), and bring open orders the store does not know
    into it. Those are cancelled (a working order left from before a start is stale, the
    stage's own policy) and recorded with their state; their fills are already in the venue's
    positions, which the stage adopts. Orders and positions the store has and the venue does
    not are the stage's to correct (expired / adopted flat). Skipped while fenced.
    ``write_order`` records an order in the store and returns once it is committed."""
    state = await store.load_state()
    for o in state.open_orders:
        venue.track(o)
    if not venue.lease.held:
        log.warning("venue.reconcile_skipped", reason=venue.lease.reason)
        return
    known = set(state.client_ids)
    open_orders = await venue.open_orders()
    foreign_orders = [o for o in open_orders
                      if o.client_id not in known and venue.is_foreign(o.client_id)]
    foreign_positions = {}
    if policy != "adopt":
        ours = {p.symbol: p.qty for p in state.positions}
        for sym, vp in (await venue.positions()).items():
            rest = split_foreign(ours.get(sym, 0.0), vp.qty)[1]
            if rest:
                foreign_positions[sym] = rest
    if policy == "refuse" and (foreign_orders or foreign_positions):
        raise ForeignHoldings(
            f"the account holds what this daemon did not open (execution.foreign = "
            f"'refuse'): positions {foreign_positions or '{}'}, orders "
            f"{sorted(o.client_id for o in foreign_orders) or '[]'}")
    for o in foreign_orders:
        venue.foreign_orders[o.client_id] = o
        log.warning("venue.foreign_order", client_id=o.client_id, symbol=o.symbol,
                    side=o.side, qty=o.qty, state=o.state, action="left alone")
        audit.record("execution.foreign_order", client_id=o.client_id, symbol=o.symbol,
                     side=o.side, qty=o.qty, price=o.price, state=o.state,
                     venue_order_id=o.venue_order_id, action="left alone")
    for o in open_orders:
        if o.client_id in known or o.client_id in venue.foreign_orders:
            continue
        log.warning("venue.unknown_open_order", client_id=o.client_id, symbol=o.symbol,
                    side=o.side, qty=o.qty, state=o.state, filled_qty=o.filled_qty)
        reconcile_diffs.labels("venue_order_adopted").inc()
        adopted = dataclasses.replace(o, state=str(OrderState.ACKED)
                                      if o.state != OrderState.PARTIALLY_FILLED else o.state)
        venue.adopt_at_start(adopted)
        await write_order(adopted)
        cancelled = await venue.cancel(o.client_id)
        final = cancelled if cancelled is not None else adopted
        if final.state in (OrderState.ACKED, OrderState.PARTIALLY_FILLED):
            log.error("venue.unknown_open_order_not_cancelled", client_id=o.client_id)
        else:
            await write_order(dataclasses.replace(
                final, intent_id=adopted.intent_id, reason=adopted.reason,
                reject_reason="unknown to the store at start"))
        audit.record("execution.venue_order_adopted", client_id=o.client_id, symbol=o.symbol,
                     side=o.side, qty=o.qty, filled_qty=o.filled_qty,
                     venue_order_id=o.venue_order_id, action="cancelled",
                     final_state=final.state)
