"""Orders at Binance: placement, cancels, queries, and resolving an unknown outcome.

- **Never a blind resubmit.** ``submit`` sends an order once. No answer (timeout, 5xx, -1006,
  -1007, a dropped connection) leaves it *unknown*: ``VenueUnavailable``, and the execution
  stage queries by client id before anything else. An unknown order is declared "never
  arrived" only once Binance itself would refuse it (its ``recvWindow`` has passed, plus
  ``unknown_grace_s``); until then a "does not exist" answer stays "not settled yet".
- -2019 (margin): reject, no retry. -2011/-2013 on cancel: ask what became of the order (it
  may have filled). -4116 (client order id duplicated): an order with that id is at the
  venue, so it is queried by client id, never called rejected.
- **One account, one trader.** Orders need the account lease (lease.py); an order is stamped
  with the lease's fencing token, and a venue that does not hold the lease sends nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

import structlog

from dolphind.config import BinanceVenueConfig
from dolphind.events import Order
from dolphind.orders.router import OrderState
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.venues.binance.filters import VenueFilters
from dolphind.venues.binance.lease import Lease
from dolphind.venues.binance.reports import (Report, Trade, decimal_str, report_from_rest,
                                             trade_from_rest)
from dolphind.venues.binance.rest import (W_OPEN_ALL, W_ORDER, W_QUERY, W_TRADES,
                                          BinanceAPIError, NoAnswer, NotSent, RestClient)
from dolphind.venues.binance.tracking import QTY_EPS, OrderTracker, TrackedOrder
from dolphind.venues.venue import VenueRejected, VenueUnavailable

log = structlog.get_logger("dolphind.venues.binance")


def reject_reason(exc: BinanceAPIError) -> str:
    if exc.code == -2019:
        return "margin_insufficient"
    if exc.code == -2022:
        return "reduce_only_rejected"
    if exc.banned:
        return "ip_banned"
    if exc.rate_limited:
        return "rate_limited"
    if exc.code == -1021:
        return "timestamp_outside_recv_window"
    return f"binance_{exc.code if exc.code is not None else exc.status}:{exc.msg[:80]}"


class OrderDesk:
    """Sends orders and cancels, queries them by client id; what comes back goes through the
    tracker (fills, then states, as events)."""

    def __init__(self, config: Callable[[], BinanceVenueConfig], rest: RestClient,
                 book: OrderTracker, filters: VenueFilters, lease: Lease,
                 metrics: VenueMetrics, symbols: Callable[[], Iterable[str]],
                 monotonic: Callable[[], float], reconciled: Callable[[], bool]) -> None:
        self._cfg = config
        self._rest = rest
        self._book = book
        self._filters = filters
        self.lease = lease
        self._m = metrics
        self._symbols = symbols
        self._mono = monotonic
        self._reconciled = reconciled

    async def submit(self, order: Order) -> Order:
        # The lease's fencing token stamps the order (logged with its client id); None: the
        # lease is not held, e.g. a stale holder whose CP session ran out: it must not send.
        if self.lease.fence_for(order.client_id) is None:
            self._m.fenced.inc()
            log.error("venue.fenced_order", client_id=order.client_id, reason=self.lease.reason)
            raise VenueRejected(f"fenced: {self.lease.reason}", local=True)
        if not order.reduce_only and not self._reconciled():
            raise VenueRejected("not_reconciled: only reduce-only orders until the venue is "
                                "reconciled", local=True)
        if order.client_id in self._book.orders:
            raise VenueRejected(f"duplicate client order id {order.client_id}", local=True)
        if order.symbol not in self._filters:
            raise VenueRejected(f"unknown symbol {order.symbol}", local=True)
        params: dict[str, Any] = {"symbol": order.symbol, "side": order.side,
                                  "type": order.order_type, "quantity": decimal_str(order.qty),
                                  "newClientOrderId": order.client_id,
                                  "newOrderRespType": "RESULT"}
        if order.reduce_only:
            params["reduceOnly"] = "true"
        if order.order_type == "LIMIT":
            params["price"] = decimal_str(order.price)
            params["timeInForce"] = "GTC"
        t = TrackedOrder(order, sent_at=self._rest.now(), last_news=self._mono())
        self._book.orders[order.client_id] = t
        try:
            res = await self._rest.request("submit", "fapiPrivatePostOrder", params, W_ORDER, 1)
        except NotSent as exc:
            self._book.orders.pop(order.client_id, None)
            raise VenueRejected(exc.reason, local=True) from None
        except (NoAnswer, BinanceAPIError) as exc:
            if isinstance(exc, NoAnswer) or exc.outcome_unknown:
                if t.venue_state is not OrderState.NEW or t.fill_ids:
                    # No answer, but the user stream has already shown the order at the venue.
                    log.info("venue.submit_answer_lost", client_id=order.client_id,
                             state=str(t.venue_state))
                    return dataclasses.replace(order, state=str(OrderState.ACKED),
                                               venue_order_id=t.order.venue_order_id,
                                               updated_ns=t.order.updated_ns)
                t.unknown = True
                raise VenueUnavailable(f"submit {order.client_id}: {exc}; state unknown, "
                                       "query by client id") from None
            assert isinstance(exc, BinanceAPIError)
            if exc.code == -4116:
                return await self._duplicate_submit(order, t)
            t.gone, t.venue_state, t.emitted_state = True, OrderState.REJECTED, "rejected"
            raise VenueRejected(reject_reason(exc)) from None
        rep = report_from_rest(res)
        ack = dataclasses.replace(order, state=str(OrderState.ACKED),
                                  venue_order_id=rep.venue_order_id, updated_ns=rep.ts_ns)
        t.order = ack
        t.emitted_state = str(OrderState.ACKED)
        # Fills come from the stream (or REST); a final state follows its fills.
        await self._book.apply(rep, [], "submit")
        return ack

    async def _duplicate_submit(self, order: Order, t: TrackedOrder) -> Order:
        """-4116 "ClientOrderId is duplicated": an order with this id *is* at the venue (this
        one, sent before and its answer lost, or left from before a restart). Not a rejection:
        ask what it is by client id; until that answer, its state is unknown."""
        cid = order.client_id
        log.warning("venue.duplicate_client_id", client_id=cid, symbol=order.symbol)
        t.unknown = True
        try:
            seen = await self.query(cid)
        except VenueUnavailable as exc:
            raise VenueUnavailable(f"submit {cid}: client order id already at the venue "
                                   f"(-4116); state unknown, query by client id ({exc})"
                                   ) from None
        if seen is None:  # Binance said it exists, then that it does not: keep asking
            t.gone, t.unknown = False, True
            raise VenueUnavailable(f"submit {cid}: -4116 but not found by client id; state "
                                   "unknown, query by client id")
        # Its fills and any final state were emitted by the query; the submit is an ack.
        return dataclasses.replace(seen, state=str(OrderState.ACKED))

    async def cancel(self, client_id: str) -> Order | None:
        t = self._book.orders.get(client_id)
        if not self.lease.held:
            self._m.fenced.inc()
            log.error("venue.fenced_cancel", client_id=client_id, reason=self.lease.reason)
            return await self.query(client_id)
        if t is None:
            return await self.query(client_id)
        try:
            res = await self._rest.request("cancel", "fapiPrivateDeleteOrder",
                                           {"symbol": t.order.symbol,
                                            "origClientOrderId": client_id}, W_QUERY)
        except BinanceAPIError as exc:
            if exc.code in (-2011, -2013):
                # Unknown order on cancel: already final (filled?) or never there. Ask.
                return await self.query(client_id)
            raise VenueUnavailable(f"cancel {client_id}: {exc}") from None
        except (NotSent, NoAnswer) as exc:
            raise VenueUnavailable(f"cancel {client_id}: {exc}") from None
        rep = report_from_rest(res)
        trades = await self._missing_trades(t, rep)
        return await self._book.apply(rep, trades, "rest")

    async def query(self, client_id: str) -> Order | None:
        t = self._book.orders.get(client_id)
        symbols = [t.order.symbol] if t is not None else list(self._cfg().symbols
                                                               or self._symbols())
        if not symbols:
            raise VenueUnavailable(f"query {client_id}: symbol unknown")
        for sym in symbols:
            try:
                res = await self._rest.request("read", "fapiPrivateGetOrder",
                                               {"symbol": sym, "origClientOrderId": client_id},
                                               W_QUERY)
            except BinanceAPIError as exc:
                if exc.code == -2013:
                    continue
                raise VenueUnavailable(f"query {client_id}: {exc}") from None
            except (NotSent, NoAnswer) as exc:
                raise VenueUnavailable(f"query {client_id}: {exc}") from None
            rep = report_from_rest(res)
            if t is None and self._book.is_foreign(client_id):
                return self._book.note_foreign(rep)
            if t is None:
                t = self._book.adopt(rep)
            t.unknown = False
            trades = await self._missing_trades(t, rep)
            return await self._book.apply(rep, trades, "rest")
        # Not at the venue. If our submit got no answer, Binance may still act on it until
        # its recvWindow has passed: only then is "does not exist" final.
        if t is not None and t.unknown and t.sent_at is not None:
            cfg = self._cfg()
            settle_at = t.sent_at + cfg.recv_window_ms / 1000 + cfg.unknown_grace_s
            if self._rest.now() < settle_at:
                raise VenueUnavailable(f"query {client_id}: not at the venue yet; final in "
                                       f"{settle_at - self._rest.now():.1f}s")
        if t is not None:
            t.gone = True
        return None

    async def open_orders(self) -> list[Order]:
        try:
            res = await self._rest.request("read", "fapiPrivateGetOpenOrders", {}, W_OPEN_ALL)
        except (BinanceAPIError, NotSent, NoAnswer) as exc:
            raise VenueUnavailable(f"open orders: {exc}") from None
        out = []
        for d in res:
            rep = report_from_rest(d)
            t = self._book.orders.get(rep.client_id)
            out.append(self._book.snapshot(t.order if t else self._book.foreign(rep), rep))
        return out

    async def _missing_trades(self, t: TrackedOrder, rep: Report) -> list[Trade]:
        if rep.executed_qty <= t.filled_qty + QTY_EPS:
            return []
        try:
            res = await self._rest.request("read", "fapiPrivateGetUserTrades",
                                           {"symbol": rep.symbol,
                                            "orderId": rep.venue_order_id}, W_TRADES)
        except (BinanceAPIError, NotSent, NoAnswer) as exc:
            log.warning("venue.trades_failed", client_id=rep.client_id, error=str(exc))
            return []
        return [trade_from_rest(d) for d in res
                if str(d.get("orderId")) == rep.venue_order_id or "orderId" not in d]
