"""Rows <-> domain objects: the write operations (``*_op``) the store commits, and the reads a
restart makes (``load_state``: money, positions, working orders, the open trade's history)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from dolphind.events import Fill, Order
from dolphind.orders.portfolio import Position
from dolphind.store.transactions import Op

TERMINAL_STATES = ("filled", "cancelled", "rejected", "expired")


@dataclass(frozen=True, slots=True)
class Account:
    initial_capital_usdt: float
    cash_usdt: float
    realised_pnl_usdt: float
    fees_usdt: float
    peak_equity_usdt: float


@dataclass(frozen=True, slots=True)
class OpenTrade:
    """The history of one open position since it was last flat: what the trade ledger replays
    on restart to know the trade's entry, size, fees and partial exits as before the stop."""

    position: Position
    fills: tuple[Fill, ...]  # in commit order, the first one opened the position
    orders: tuple[Order, ...]  # the orders of those fills
    leverage: Mapping[str, float]  # client id -> the intent's leverage (orders from v2 on)


@dataclass(frozen=True, slots=True)
class RestoredState:
    """What a restart needs: money, positions, working orders, ids already used, scan number."""

    account: Account | None
    positions: tuple[Position, ...]
    open_orders: tuple[Order, ...]
    recent_orders: tuple[Order, ...]
    client_ids: frozenset[str]
    fill_ids: frozenset[str]
    scan_number: int | None
    halted: bool
    halt_reason: str
    schema_version: int
    open_trades: tuple[OpenTrade, ...] = ()


ORDER_COLUMNS = ("client_id", "intent_id", "symbol", "side", "qty", "order_type", "price",
                  "reduce_only", "reason", "state", "filled_qty", "avg_fill_price",
                  "venue_order_id", "created_ns", "updated_ns", "reject_reason", "ref_price")
# An update of an order keeps the leverage its write-ahead recorded (the Order has none).
_ORDER_UPSERT = (
    f"INSERT INTO orders VALUES ({','.join('?' * (len(ORDER_COLUMNS) + 1))}) "
    "ON CONFLICT (client_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in ORDER_COLUMNS[1:])
    + ", leverage = coalesce(excluded.leverage, orders.leverage)")
LEVERAGE_COLUMN = len(ORDER_COLUMNS)  # its column in ``SELECT * FROM orders``


def order_op(o: Order, leverage: float | None = None) -> Op:
    """Insert or update ``o``; ``leverage`` is the intent's (given with the write-ahead)."""
    return (_ORDER_UPSERT,
            (o.client_id, o.intent_id, o.symbol, o.side, o.qty, o.order_type, o.price,
             int(o.reduce_only), o.reason, o.state, o.filled_qty, o.avg_fill_price,
             o.venue_order_id, o.created_ns, o.updated_ns, o.reject_reason, o.ref_price,
             leverage))


def order_row(r: Sequence[Any]) -> Order:
    return Order(client_id=r[0], intent_id=r[1], symbol=r[2], side=r[3], qty=r[4],
                 order_type=r[5], price=r[6], reduce_only=bool(r[7]), reason=r[8], state=r[9],
                 filled_qty=r[10], avg_fill_price=r[11], venue_order_id=r[12],
                 created_ns=r[13], updated_ns=r[14], reject_reason=r[15], ref_price=r[16])


def fill_op(f: Fill, realised_pnl_usdt: float) -> Op:
    return ("INSERT OR IGNORE INTO fills VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (f.fill_id, f.client_id, f.symbol, f.side, f.qty, f.price, f.fee_usdt, f.liquidity,
             f.ts_ns, f.slippage_bps, int(f.reduce_only), realised_pnl_usdt))


def fill_row(r: Sequence[Any]) -> Fill:
    return Fill(fill_id=r[0], client_id=r[1], symbol=r[2], side=r[3], qty=r[4], price=r[5],
                fee_usdt=r[6], liquidity=r[7], ts_ns=r[8], slippage_bps=r[9],
                reduce_only=bool(r[10]))


def since_flat(fills: Sequence[Fill]) -> tuple[Fill, ...]:
    """The fills after the last moment the running position was zero (the open trade's).

    Rounded like the portfolio rounds positions, so a position closed by fills reads exactly
    zero here too."""
    start, qty = 0, 0.0
    for i, f in enumerate(fills):
        qty = round(qty + (f.qty if f.side == "BUY" else -f.qty), 12)
        if qty == 0.0:
            start = i + 1
    return tuple(fills[start:])


def position_op(p: Position) -> Op:
    if p.flat:
        return ("DELETE FROM positions WHERE symbol = ?", (p.symbol,))
    return ("INSERT OR REPLACE INTO positions VALUES (?,?,?,?,?,?,?)",
            (p.symbol, p.qty, p.avg_price, p.realised_pnl_usdt, p.fees_usdt, p.opened_ns,
             p.updated_ns))


def account_op(a: Account, ts_ns: int) -> Op:
    return ("INSERT OR REPLACE INTO account VALUES (1,?,?,?,?,?,?)",
            (a.initial_capital_usdt, a.cash_usdt, a.realised_pnl_usdt, a.fees_usdt,
             a.peak_equity_usdt, ts_ns))


def equity_op(ts_ns: int, equity: float, cash: float, unrealised: float, peak: float,
              drawdown: float, gross: float) -> Op:
    return ("INSERT INTO equity_snapshots VALUES (?,?,?,?,?,?,?)",
            (ts_ns, equity, cash, unrealised, peak, drawdown, gross))


AUDIT_ANCHOR_KEY = "audit_anchor"


def read_audit_anchor(path: str | Path) -> tuple[int, str] | None:
    """(seq, hash) of the audit line the store last saw written, from the file at ``path``
    (read-only; blocking). None when the store has no anchor."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (AUDIT_ANCHOR_KEY,)).fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    seq, _, digest = str(row[0]).partition(":")
    return int(seq), digest


def kv_op(key: str, value: str, ts_ns: int = 0) -> Op:
    return ("INSERT OR REPLACE INTO kv VALUES (?,?,?)", (key, value, ts_ns or time.time_ns()))


def load_state(conn: sqlite3.Connection) -> RestoredState:
    acc = conn.execute("SELECT initial_capital_usdt, cash_usdt, realised_pnl_usdt, fees_usdt, "
                       "peak_equity_usdt FROM account WHERE id = 1").fetchone()
    positions = tuple(Position(*r) for r in conn.execute(
        "SELECT symbol, qty, avg_price, realised_pnl_usdt, fees_usdt, opened_ns, updated_ns "
        "FROM positions ORDER BY symbol"))
    marks = ",".join("?" * len(TERMINAL_STATES))
    open_orders = tuple(order_row(r) for r in conn.execute(
        f"SELECT * FROM orders WHERE state NOT IN ({marks}) ORDER BY created_ns",
        TERMINAL_STATES))
    recent = tuple(reversed([order_row(r) for r in conn.execute(
        "SELECT * FROM orders ORDER BY updated_ns DESC, created_ns DESC, client_id DESC "
        "LIMIT 50")]))
    client_ids = frozenset(r[0] for r in conn.execute("SELECT client_id FROM orders"))
    fill_ids = frozenset(r[0] for r in conn.execute("SELECT fill_id FROM fills"))
    kv = dict(conn.execute("SELECT key, value FROM kv").fetchall())
    version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    open_trades = tuple(open_trade(conn, p) for p in positions if not p.flat)
    return RestoredState(
        account=Account(*acc) if acc else None, positions=positions, open_orders=open_orders,
        recent_orders=recent, client_ids=client_ids, fill_ids=fill_ids,
        scan_number=int(kv["scan_number"]) if "scan_number" in kv else None,
        halted=kv.get("halted") == "1", halt_reason=kv.get("halt_reason", ""),
        schema_version=int(version or 0), open_trades=open_trades)


def open_trade(conn: sqlite3.Connection, pos: Position) -> OpenTrade:
    fills = since_flat([fill_row(r) for r in conn.execute(
        "SELECT fill_id, client_id, symbol, side, qty, price, fee_usdt, liquidity, ts_ns, "
        "slippage_bps, reduce_only FROM fills WHERE symbol = ? ORDER BY rowid", (pos.symbol,))])
    ids = sorted({f.client_id for f in fills})
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT * FROM orders WHERE client_id IN ({marks})", ids).fetchall()
    leverage = {r[0]: r[LEVERAGE_COLUMN] for r in rows if r[LEVERAGE_COLUMN] is not None}
    return OpenTrade(pos, fills, tuple(order_row(r) for r in rows), leverage)
