"""The trading lines of the log: one ``trade.fill`` per execution and one ``trade.closed`` per
round trip, and the ``on_trade`` plugin event for the closed trade.

It watches the execution stage's events after the ledger has booked them (``app.py`` calls
``observe`` right after ``Ledger.observe``), so a closed trade is read from the ledger, the one
place that turns fills into round trips; nothing is computed twice.
"""

from __future__ import annotations

from typing import Any, Callable

import structlog

from dolphind.events import Fill, Order, PositionUpdate
from dolphind.orders.router import TERMINAL
from dolphind.logs import closed_fields, fill_fields
from dolphind.report.model import ClosedTrade

log = structlog.get_logger("dolphind.trades")


class TradeLog:
    """``observe(hook, event)`` after the ledger; ``closed`` is the ledger's closed-trade list."""

    def __init__(self, closed: list[ClosedTrade],
                 emit: Callable[[str, Any], None] | None = None) -> None:
        self._closed = closed
        self._seen = len(closed)
        self._emit = emit
        # client id -> the order's reason ("entry", "TP", "MAX_HOLD"...), while it can fill.
        self._reasons: dict[str, tuple[str, bool]] = {}

    def observe(self, hook: str, event: Any) -> None:
        if hook == "on_order" and isinstance(event, Order):
            if event.state in TERMINAL:  # a StrEnum set: the plain string is found
                self._reasons.pop(event.client_id, None)
            else:
                self._reasons[event.client_id] = (event.reason, event.reduce_only)
        elif hook == "on_fill" and isinstance(event, Fill):
            reason, _ = self._reasons.get(event.client_id, ("", event.reduce_only))
            log.info("trade.fill", **fill_fields(
                event.symbol, event.side, event.qty, event.price, event.fee_usdt,
                event.liquidity, event.ts_ns, reason, event.reduce_only))
        elif hook == "on_position" and isinstance(event, PositionUpdate):
            while self._seen < len(self._closed):
                trade = self._closed[self._seen]
                self._seen += 1
                log.info("trade.closed", **closed_fields(trade))
                if self._emit is not None:
                    self._emit("on_trade", trade)
