"""The trading lines of the log: one ``trade.fill`` per execution and one ``trade.closed`` per
round trip, and the ``on_trade`` plugin event for the closed trade.

It listens to the execution stage's events (``dolphind.ports.ExecutionEvents``) after the
ledger has booked them (the wiring adds it after the ledger), so a closed trade is read from the
ledger, the one place that turns fills into round trips; nothing is computed twice.
"""

from __future__ import annotations

from typing import Callable

import structlog

from dolphind.events import Fill, Order, PositionUpdate
from dolphind.ports import FundingSettlement
from dolphind.orders.router import TERMINAL
from dolphind.logs import closed_fields, fill_fields
from dolphind.report.model import ClosedTrade

log = structlog.get_logger("dolphind.trades")


class TradeLog:
    """An execution listener after the ledger; ``closed`` is the ledger's closed-trade list,
    ``on_trade`` hears each newly closed trade (the plugins' hook)."""

    def __init__(self, closed: list[ClosedTrade],
                 on_trade: Callable[[ClosedTrade], None] | None = None) -> None:
        self._closed = closed
        self._seen = len(closed)
        self._on_trade = on_trade
        # client id -> the order's reason ("entry", "TP", "MAX_HOLD"...), while it can fill.
        self._reasons: dict[str, tuple[str, bool]] = {}

    def on_order(self, order: Order) -> None:
        if order.state in TERMINAL:  # a StrEnum set: the plain string is found
            self._reasons.pop(order.client_id, None)
        else:
            self._reasons[order.client_id] = (order.reason, order.reduce_only)

    def on_fill(self, fill: Fill) -> None:
        reason, _ = self._reasons.get(fill.client_id, ("", fill.reduce_only))
        log.info("trade.fill", **fill_fields(
            fill.symbol, fill.side, fill.qty, fill.price, fill.fee_usdt,
            fill.liquidity, fill.ts_ns, reason, fill.reduce_only))

    def on_position(self, update: PositionUpdate) -> None:
        # A position update follows every fill: a trade the ledger closed on it is read here.
        while self._seen < len(self._closed):
            trade = self._closed[self._seen]
            self._seen += 1
            log.info("trade.closed", **closed_fields(trade))
            if self._on_trade is not None:
                self._on_trade(trade)

    def on_funding(self, payment: FundingSettlement) -> None:
        pass  # booked to the trade by the ledger; the trade.closed line carries it
