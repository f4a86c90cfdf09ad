"""What the venue knows of each order, and how Binance's reports become the events the
execution stage reads.

- **Fills are counted once.** A fill's id is ``<symbol>:<trade id>``, the same from the user
  stream and from REST; each id is emitted once here, and the stage drops ids it has already
  committed (so a restart is safe too).
- **A terminal state never overtakes its fills.** A cancelled / expired / filled report is held
  back until the fills it implies have been emitted (the caller fetches missing trades).
- **Ownership (issue #15).** An order is ours when its client id carries our prefix (or we
  track it: the store knows it). Under any policy but "adopt", others' orders are reported in
  ``foreign_orders`` and left alone: never tracked, their fills never emitted (they would move
  our book).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import structlog

from dolphind.channels import Channel, Overflow
from dolphind.events import Fill, Order
from dolphind.orders.router import TERMINAL, OrderState
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.venues.binance.reports import Report, Trade

log = structlog.get_logger("dolphind.venues.binance")

QTY_EPS = 1e-12
_EVENTS_CAPACITY = 4096


@dataclass(slots=True)
class TrackedOrder:
    order: Order  # the latest snapshot (our own fields kept: intent id, reason, ref price)
    fill_ids: set[str] = field(default_factory=set)
    filled_qty: float = 0.0  # emitted fills
    executed_qty: float = 0.0  # what the venue last said
    emitted_state: str = ""
    venue_state: OrderState = OrderState.NEW
    sent_at: float | None = None  # wall time the submit went out (unknown-outcome grace)
    unknown: bool = False
    gone: bool = False  # the venue does not know it
    baseline_left: float = 0.0  # fills already in the venue's position when adopted
    last_news: float = 0.0  # monotonic

    @property
    def settled(self) -> bool:
        return self.gone or (self.venue_state in TERMINAL
                             and self.filled_qty >= self.executed_qty - QTY_EPS
                             and self.emitted_state == str(self.venue_state))


class OrderTracker:
    """The tracked orders (by client id), the foreign ones, and the event channel."""

    def __init__(self, metrics: VenueMetrics, monotonic: Callable[[], float],
                 owns: Callable[[str], bool], foreign_policy: Callable[[], str]) -> None:
        self._m = metrics
        self._mono = monotonic
        self._owns = owns
        self._foreign_policy = foreign_policy
        self.orders: dict[str, TrackedOrder] = {}
        self.foreign_orders: dict[str, Order] = {}
        self.events: Channel[Order | Fill] = Channel("binance_venue_events", _EVENTS_CAPACITY,
                                                     Overflow.BLOCK)
        self._apply_lock = asyncio.Lock()

    def unsettled(self) -> list[tuple[str, TrackedOrder]]:
        return [(cid, t) for cid, t in self.orders.items() if not t.settled]

    def track(self, order: Order) -> None:
        """Know an order sent before this process started (its symbol, our fields)."""
        if order.client_id not in self.orders:
            # Fills start from zero: REST re-reads them all and the stage drops the ids it
            # has already committed (its store is the judge of what is booked).
            self.orders[order.client_id] = TrackedOrder(
                order, emitted_state=order.state, unknown=order.state == OrderState.UNKNOWN,
                sent_at=order.created_ns / 1e9 if order.state == OrderState.UNKNOWN else None,
                last_news=self._mono())

    def foreign(self, rep: Report) -> Order:
        """An order this process did not send (placed by hand, before a lost store, ...)."""
        return Order(client_id=rep.client_id, intent_id=f"venue:{rep.client_id}",
                     symbol=rep.symbol, side=rep.side, qty=rep.qty, order_type=rep.order_type,
                     price=rep.price, reduce_only=rep.reduce_only, reason="VENUE",
                     state=str(OrderState.NEW), created_ns=rep.ts_ns, updated_ns=rep.ts_ns,
                     venue_order_id=rep.venue_order_id)

    def adopt(self, rep: Report) -> TrackedOrder:
        t = TrackedOrder(self.foreign(rep), emitted_state=str(OrderState.NEW),
                         last_news=self._mono())
        self.orders[rep.client_id] = t
        log.warning("venue.foreign_order", client_id=rep.client_id, symbol=rep.symbol,
                    state=str(rep.state))
        return t

    def adopt_at_start(self, order: Order) -> None:
        """An open order found at start that the store does not know: its fills so far are
        already in the venue's position (which the stage adopts), so they are not emitted."""
        self.track(order)
        t = self.orders[order.client_id]
        t.filled_qty = t.executed_qty = t.baseline_left = order.filled_qty
        t.unknown, t.sent_at = False, None

    @staticmethod
    def snapshot(base: Order, rep: Report) -> Order:
        return dataclasses.replace(base, state=str(rep.state), filled_qty=rep.executed_qty,
                                   avg_fill_price=rep.avg_price,
                                   venue_order_id=rep.venue_order_id or base.venue_order_id,
                                   updated_ns=max(rep.ts_ns, base.updated_ns))

    def is_foreign(self, client_id: str) -> bool:
        """An order this process must leave alone: not tracked, not ours, policy not adopt."""
        return (self._foreign_policy() != "adopt" and client_id not in self.orders
                and not self._owns(client_id))

    def note_foreign(self, rep: Report) -> Order:
        """Remember (or forget, once final) an order somebody else placed; nothing emitted."""
        snap = self.snapshot(self.foreign(rep), rep)
        if rep.state in TERMINAL:
            self.foreign_orders.pop(rep.client_id, None)
        else:
            if rep.client_id not in self.foreign_orders:
                log.warning("venue.foreign_order", client_id=rep.client_id, symbol=rep.symbol,
                            side=rep.side, qty=rep.qty, state=str(rep.state),
                            action="left alone")
            self.foreign_orders[rep.client_id] = snap
        return snap

    async def apply(self, rep: Report, trades: list[Trade], source: str) -> Order:
        """Emit the new fills of ``rep``'s order, then its state (never before its fills)."""
        if self.is_foreign(rep.client_id):
            return self.note_foreign(rep)
        async with self._apply_lock:
            t = self.orders.get(rep.client_id) or self.adopt(rep)
            t.last_news = self._mono()
            t.executed_qty = max(t.executed_qty, rep.executed_qty)
            t.venue_state = rep.state
            t.unknown = False
            t.gone = False
            for tr in sorted(trades, key=lambda x: (x.ts_ns, x.trade_id)):
                if tr.fill_id in t.fill_ids:
                    self._m.duplicate_fills.inc()
                    continue
                t.fill_ids.add(tr.fill_id)
                if t.baseline_left > QTY_EPS:
                    # Adopted at start with these fills already in the venue's position.
                    t.baseline_left = round(t.baseline_left - tr.qty, 12)
                    continue
                t.filled_qty = round(t.filled_qty + tr.qty, 12)
                t.executed_qty = max(t.executed_qty, t.filled_qty)
                if source != "stream":
                    self._m.fills_recovered.inc()
                    log.info("venue.fill_recovered", client_id=rep.client_id,
                             fill_id=tr.fill_id, source=source)
                await self.events.put(self._fill(t.order, tr))
            snap = self.snapshot(t.order, rep)
            t.order = snap
            state = str(rep.state)
            fills_done = t.filled_qty >= t.executed_qty - QTY_EPS
            if state != t.emitted_state and (rep.state not in TERMINAL or fills_done):
                if rep.state not in (OrderState.FILLED, OrderState.PARTIALLY_FILLED):
                    await self.events.put(snap)
                t.emitted_state = state
            return snap

    def _fill(self, order: Order, tr: Trade) -> Fill:
        fee = tr.fee if tr.fee_asset in ("USDT", "BNFCR", "USDC", "FDUSD") else 0.0
        if fee == 0.0 and tr.fee > 0:
            log.warning("venue.fee_not_in_usdt", asset=tr.fee_asset, fee=tr.fee,
                        fill_id=tr.fill_id)
        ref = order.ref_price
        slip = ((tr.price / ref - 1.0) * 1e4 * (1.0 if tr.side == "BUY" else -1.0)
                if ref > 0 else 0.0)
        return Fill(fill_id=tr.fill_id, client_id=order.client_id, symbol=tr.symbol,
                    side=tr.side or order.side, qty=tr.qty, price=tr.price, fee_usdt=fee,
                    liquidity="MAKER" if tr.maker else "TAKER", ts_ns=tr.ts_ns,
                    slippage_bps=slip, reduce_only=order.reduce_only)
