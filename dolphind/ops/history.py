"""The closed trades of earlier runs, rebuilt from the store at start, so `/trades`, `/profit`
and `/daily` (and the CLI and chat commands on them) cover the account's whole history on
this data dir, not only the trades closed since the process started.

Every fill in the store is replayed, in the order it was written, through a fresh ``Ledger``
(the one place fills become round trips) with the position update that followed it; the
trades it closes are the history. The trade that is still open is left to the live ledger's
own restore. Rebuilt trades carry an ``h`` before their id (the live ledger numbers its own
from 1 again) and ``bars_held`` 0 (bars are not stored; the times are).
"""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from typing import Any

import structlog

from dolphind.events import PositionUpdate
from dolphind.execution.ledger import Ledger
from dolphind.report.model import ClosedTrade
from dolphind.store.rows import LEVERAGE_COLUMN as _LEVERAGE, fill_row as _fill_row, order_row as _order_row

log = structlog.get_logger("dolphind.trades")

_FILL_COLUMNS = ("fill_id, client_id, symbol, side, qty, price, fee_usdt, liquidity, ts_ns, "
                 "slippage_bps, reduce_only")


def closed_history(conn: sqlite3.Connection) -> list[ClosedTrade]:
    """Blocking (runs on the store's thread through ``Store.read``)."""
    ledger = Ledger(capital=lambda: None)  # type: ignore[arg-type, return-value]  # unused
    for r in conn.execute("SELECT * FROM orders"):
        order = _order_row(r)
        if r[_LEVERAGE] is not None:
            ledger.note_intent(order.intent_id, float(r[_LEVERAGE]))
        ledger.on_order(order)
    net: dict[str, float] = {}
    for r in conn.execute(f"SELECT {_FILL_COLUMNS} FROM fills ORDER BY rowid"):
        fill = _fill_row(r)
        ledger.on_fill(fill)
        # Rounded as the portfolio rounds positions, so a closed position reads exactly zero.
        qty = round(net.get(fill.symbol, 0.0) + (fill.qty if fill.side == "BUY" else -fill.qty),
                    12)
        net[fill.symbol] = qty
        ledger.on_position(PositionUpdate(fill.symbol, qty, math.nan, 0.0, fill.ts_ns))
    return [dataclasses.replace(t, trade_id="h" + t.trade_id) for t in ledger.closed]


async def load_history(store: Any) -> list[ClosedTrade]:
    """``closed_history`` through the store's thread. The history is for reading only: if it
    cannot be rebuilt (a store written by an older version, a fill the replay cannot book),
    the daemon starts without it and says so, it never refuses to trade over it."""
    try:
        trades: list[ClosedTrade] = await store.read(closed_history)
    except Exception as exc:  # noqa: BLE001 - any failure here only costs the history
        log.warning("trades.history_unavailable", error=f"{type(exc).__name__}: {exc}")
        return []
    log.info("trades.history", closed_trades=len(trades))
    return trades
