"""What the execution stage shows: money, positions and orders for /status, /positions and
/orders, the foreign holdings, and whether the stage is ready to trade. Read-only."""

from __future__ import annotations

from typing import Any

from dolphind.events import Order
from dolphind.execution.exits import ExitRetries
from dolphind.execution.state import ExecutionServices, WorkingBook
from dolphind.risk.rails import RiskRails


def order_json(o: Order) -> dict[str, Any]:
    return {"client_id": o.client_id, "intent_id": o.intent_id, "symbol": o.symbol,
            "side": o.side, "qty": o.qty, "type": o.order_type, "reduce_only": o.reduce_only,
            "reason": o.reason, "state": o.state, "filled_qty": o.filled_qty,
            "avg_fill_price": o.avg_fill_price, "created_ns": o.created_ns,
            "updated_ns": o.updated_ns, "reject_reason": o.reject_reason}


class ExecutionViews:
    def __init__(self, services: ExecutionServices, book: WorkingBook, exits: ExitRetries,
                 rails: RiskRails) -> None:
        self._s = services
        self._book = book
        self._exits = exits
        self._rails = rails

    def money(self) -> dict[str, Any]:
        p = self._book.portfolio
        v = p.view()
        return {"capital_usdt": p.initial_capital_usdt, "cash_usdt": v.cash_usdt,
                "equity_usdt": v.equity_usdt, "peak_equity_usdt": v.peak_equity_usdt,
                "drawdown": v.drawdown, "realised_pnl_usdt": v.realised_pnl_usdt,
                "unrealised_pnl_usdt": v.unrealised_pnl_usdt, "fees_usdt": v.fees_usdt,
                "gross_exposure_usdt": v.gross_exposure_usdt}

    def positions_view(self) -> dict[str, Any]:
        p = self._book.portfolio
        return {"positions": [
            {"symbol": s, "qty": pos.qty, "side": "LONG" if pos.qty > 0 else "SHORT",
             "avg_price": pos.avg_price, "mark": p.mark_of(s),
             "notional_usdt": p.position_notional(s),
             "unrealised_pnl_usdt": pos.unrealised(p.mark_of(s)),
             "realised_pnl_usdt": pos.realised_pnl_usdt, "fees_usdt": pos.fees_usdt,
             "opened_ns": pos.opened_ns} for s, pos in p.positions.items()],
            **self.money()}

    def orders_view(self) -> dict[str, Any]:
        book = self._book
        return {"working": [order_json(o) for o in book.orders.values()],
                "recent": [order_json(o) for o in reversed(book.recent_orders)]}

    def foreign_view(self) -> dict[str, Any]:
        """Positions and working orders on the account that are not ours (and, as a side
        effect, the ``foreign_orders`` gauge kept current)."""
        orders = self._s.venue.foreign_orders
        self._s.m.foreign_orders.set(len(orders))
        return {"policy": self._s.config().execution.foreign,
                "positions": {s: {"qty": q, "avg_price": px}
                              for s, (q, px) in self._book.foreign_positions.items()},
                "orders": [order_json(o) for o in orders.values()]}

    def status(self) -> dict[str, Any]:
        book, s = self._book, self._s
        return {**self.money(), "ready": book.ready, "starts": book.starts,
                "positions": {sym: p.qty for sym, p in book.portfolio.positions.items()},
                "working_orders": len(book.orders), "last_intents": list(book.last_intents),
                "venue": s.venue.name, "venue_breaker": int(self._rails.breaker_gauge()),
                "exits_retrying": self._exits.views(),
                "foreign": self.foreign_view(),
                # The venue's own view (live: lease / fence, ban, reconciliation, user stream).
                "venue_state": s.venue.status(),
                "store": s.store.status(),
                "audit": {"path": str(s.audit.path), "lines": s.audit.seq,
                          "backlog": s.audit.backlog}}

    def readiness(self) -> str:
        if not self._book.ready:
            return "restoring from the store"
        why = self._s.venue.readiness()  # fenced, banned (418) or not reconciled yet
        if why != "ok":
            return f"venue: {why}"
        return self._s.store.readiness()
