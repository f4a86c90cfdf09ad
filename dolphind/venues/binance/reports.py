"""Binance's wire format for orders and trades, as plain values.

One order as Binance reports it (a REST order object or a user-stream ORDER_TRADE_UPDATE) is a
``Report``; one execution is a ``Trade``, whose ``fill_id`` (``<symbol>:<trade id>``) is the
same from the stream (``t``) and from REST (userTrades ``id``), so a fill is counted once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from dolphind.orders.router import OrderState

STATUS = {"NEW": OrderState.ACKED, "PARTIALLY_FILLED": OrderState.PARTIALLY_FILLED,
           "FILLED": OrderState.FILLED, "CANCELED": OrderState.CANCELLED,
           "EXPIRED": OrderState.EXPIRED, "EXPIRED_IN_MATCH": OrderState.EXPIRED,
           "REJECTED": OrderState.REJECTED, "NEW_INSURANCE": OrderState.ACKED,
           "NEW_ADL": OrderState.ACKED}


@dataclass(frozen=True, slots=True)
class Report:
    """One order as Binance reports it (REST order object or ORDER_TRADE_UPDATE ``o``)."""

    client_id: str
    symbol: str
    side: str
    qty: float
    order_type: str
    price: float
    reduce_only: bool
    state: OrderState
    executed_qty: float
    avg_price: float
    venue_order_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    fee_asset: str
    maker: bool
    ts_ns: int

    @property
    def fill_id(self) -> str:
        return f"{self.symbol}:{self.trade_id}"


def num(x: Any) -> float:
    try:
        return float(x) if x not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def report_from_rest(d: Mapping[str, Any]) -> Report:
    ts = int(d.get("updateTime") or d.get("time") or 0) * 1_000_000
    return Report(client_id=str(d.get("clientOrderId", "")), symbol=str(d["symbol"]),
                  side=str(d.get("side", "")), qty=num(d.get("origQty")),
                  order_type=str(d.get("type", d.get("origType", ""))), price=num(d.get("price")),
                  reduce_only=bool(d.get("reduceOnly", False)),
                  state=STATUS.get(str(d.get("status")), OrderState.ACKED),
                  executed_qty=num(d.get("executedQty")), avg_price=num(d.get("avgPrice")),
                  venue_order_id=str(d.get("orderId", "")), ts_ns=ts or time.time_ns())


def report_from_stream(msg: Mapping[str, Any]) -> Report:
    o = msg["o"]
    return Report(client_id=str(o.get("c", "")), symbol=str(o["s"]), side=str(o.get("S", "")),
                  qty=num(o.get("q")), order_type=str(o.get("o", "")), price=num(o.get("p")),
                  reduce_only=bool(o.get("R", False)),
                  state=STATUS.get(str(o.get("X")), OrderState.ACKED),
                  executed_qty=num(o.get("z")), avg_price=num(o.get("ap")),
                  venue_order_id=str(o.get("i", "")),
                  ts_ns=int(o.get("T") or msg.get("T") or msg.get("E") or 0) * 1_000_000)


def trade_from_stream(msg: Mapping[str, Any]) -> Trade | None:
    o = msg["o"]
    if o.get("x") != "TRADE" or num(o.get("l")) <= 0:
        return None
    return Trade(trade_id=str(o["t"]), symbol=str(o["s"]), side=str(o.get("S", "")),
                 qty=num(o["l"]), price=num(o["L"]), fee=num(o.get("n")),
                 fee_asset=str(o.get("N") or "USDT"), maker=bool(o.get("m", False)),
                 ts_ns=int(o.get("T") or msg.get("E") or 0) * 1_000_000)


def trade_from_rest(d: Mapping[str, Any]) -> Trade:
    return Trade(trade_id=str(d["id"]), symbol=str(d["symbol"]), side=str(d.get("side", "")),
                 qty=num(d["qty"]), price=num(d["price"]), fee=num(d.get("commission")),
                 fee_asset=str(d.get("commissionAsset") or "USDT"),
                 maker=bool(d.get("maker", False)), ts_ns=int(d.get("time", 0)) * 1_000_000)


def decimal_str(x: float) -> str:
    """A quantity or price as Binance wants it: plain decimal, no exponent."""
    d = Decimal(repr(float(x)))
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s
