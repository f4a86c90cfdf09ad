"""Round trips from fills: what the alpha engine and the backtest report read about trades.

The execution stage books fills into positions; the ledger watches the same events (orders,
fills, position updates) and turns them into trades: a trade opens when a symbol's position
leaves zero and closes when it returns to zero. From that it answers the alpha engine's
questions (the open position with its entry scan and bars held, the last closed trade for the
bucket/streak layers) and keeps the closed trades and per-bar equity for the report.

After a restart ``restore`` rebuilds the open trades from the store: their fills since the
position was last flat are replayed through the same booking code, so the entry price, size,
fees and partial exits are what they were before the stop, and bars held continues from the
entry scan instead of starting again at zero (which would restart the max-hold clock and book
the closing fill as a new trade whose PnL is only its fees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from dolphind.alpha.views import ClosedTrade as AlphaClosedTrade
from dolphind.alpha.views import PortfolioView, PositionView
from dolphind.events import Fill, Order, PositionUpdate
from dolphind.orders.portfolio import CapitalView
from dolphind.ports import FundingSettlement
from dolphind.report.model import ClosedTrade, EquityPoint

if TYPE_CHECKING:
    from dolphind.store.sqlite import OpenTrade

_QTY_EPS = 1e-12


@dataclass(slots=True)
class _OpenTrade:
    symbol: str
    side: str  # "LONG" | "SHORT"
    entry_ts_ns: int
    entry_price: float
    qty: float  # absolute, the largest size reached
    entry_scan: int
    leverage: float
    fees_usdt: float = 0.0
    bars_held: int = 0
    exit_qty: float = 0.0
    exit_value: float = 0.0  # sum(qty * price) of the reducing fills
    exit_reason: str = ""
    realised_before: float = 0.0
    funding_usdt: float = 0.0  # settled on the position while open (cash to the account)


@dataclass(slots=True)
class Ledger:
    """Trades and equity, fed by the execution stage's events (``observe``) and the bars."""

    capital: Callable[[], CapitalView]
    closed: list[ClosedTrade] = field(default_factory=list)
    equity: list[EquityPoint] = field(default_factory=list)
    record_equity: bool = False
    _open: dict[str, _OpenTrade] = field(default_factory=dict)
    _orders: dict[str, Order] = field(default_factory=dict)
    _intent_leverage: dict[str, float] = field(default_factory=dict)
    _last_closed: AlphaClosedTrade | None = None
    _seq: int = 0

    # ---- restart --------------------------------------------------------------------------

    def restore(self, trades: Iterable[OpenTrade], next_scan: int) -> None:
        """Seed the open trades from the store (``RestoredState.open_trades``).

        ``next_scan`` is the first scan number of this run: one scan is one bar, so a trade
        entered on scan S has been held ``next_scan - 1 - S`` bars when the first bar of this
        run arrives (its ``on_bar`` adds the next one). Downtime adds no bars: the strategy
        counts the bars it saw, as the scan numbers do."""
        for t in trades:
            symbol = t.position.symbol
            self._open.pop(symbol, None)
            for o in t.orders:
                self._orders[o.client_id] = o
                if o.client_id in t.leverage:
                    self._intent_leverage[o.intent_id] = t.leverage[o.client_id]
            for f in t.fills:
                self.on_fill(f)
            trade = self._open.get(symbol)
            if trade is None or abs(_net_qty(t.fills) - t.position.qty) > _QTY_EPS:
                # The store's position is not the sum of its fills (adopted from the venue at
                # a reconciliation): trust the position, the entry scan is unknown.
                trade = _from_position(t.position)
                self._open[symbol] = trade
            if trade.entry_scan >= 0:
                trade.bars_held = max(0, next_scan - 1 - trade.entry_scan)

    # ---- inputs ---------------------------------------------------------------------------

    def note_intent(self, intent_id: str, leverage: float) -> None:
        self._intent_leverage[intent_id] = leverage

    # The execution stage's listener (``dolphind.ports.ExecutionEvents``).

    def on_order(self, order: Order) -> None:
        self._orders[order.client_id] = order

    def on_funding(self, pay: FundingSettlement) -> None:
        """A funding settlement on an open position belongs to the trade holding it: it goes
        to the trade's ``funding_usdt``, not its PnL (Binance's realised PnL excludes it)."""
        trade = self._open.get(pay.symbol)
        if trade is not None:
            trade.funding_usdt += pay.amount_usdt

    def on_bar(self, ts_ns: int) -> None:
        for trade in self._open.values():
            trade.bars_held += 1
        if self.record_equity:
            view = self.capital()
            self.equity.append(EquityPoint(ts_ns, view.equity_usdt, view.gross_exposure_usdt))

    def on_fill(self, fill: Fill) -> None:
        trade = self._open.get(fill.symbol)
        order = self._orders.get(fill.client_id)
        if trade is None:
            side = "LONG" if fill.side == "BUY" else "SHORT"
            intent_id = order.intent_id if order else ""
            self._open[fill.symbol] = _OpenTrade(
                symbol=fill.symbol, side=side, entry_ts_ns=fill.ts_ns, entry_price=fill.price,
                qty=fill.qty, entry_scan=_scan_of(intent_id),
                leverage=self._intent_leverage.pop(intent_id, math.nan), fees_usdt=fill.fee_usdt)
            return
        trade.fees_usdt += fill.fee_usdt
        adds = (fill.side == "BUY") == (trade.side == "LONG")
        if adds:
            total = trade.qty + fill.qty
            trade.entry_price = (trade.entry_price * trade.qty + fill.price * fill.qty) / total
            trade.qty = total
        else:
            trade.exit_qty += fill.qty
            trade.exit_value += fill.qty * fill.price
            trade.exit_reason = order.reason if order else (
                "LIQUIDATION" if fill.client_id.startswith("liquidation-") else "UNKNOWN")

    def on_position(self, upd: PositionUpdate) -> None:
        trade = self._open.get(upd.symbol)
        if trade is None or abs(upd.qty) > _QTY_EPS:
            return
        del self._open[upd.symbol]
        exit_price = trade.exit_value / trade.exit_qty if trade.exit_qty else trade.entry_price
        direction = 1.0 if trade.side == "LONG" else -1.0
        gross = direction * trade.qty * (exit_price - trade.entry_price)
        pnl = gross - trade.fees_usdt
        self._seq += 1
        self.closed.append(ClosedTrade(
            trade_id=f"{self._seq:06d}-{trade.symbol}", symbol=trade.symbol, side=trade.side,
            entry_ts_ns=trade.entry_ts_ns, exit_ts_ns=upd.ts_ns, entry_price=trade.entry_price,
            exit_price=exit_price, qty=trade.qty, notional_usdt=trade.qty * trade.entry_price,
            leverage=trade.leverage, fees_usdt=trade.fees_usdt, pnl_usdt=pnl,
            exit_reason=trade.exit_reason or "UNKNOWN", bars_held=trade.bars_held,
            funding_usdt=trade.funding_usdt))
        self._last_closed = AlphaClosedTrade(self._seq, trade.symbol, trade.entry_scan, pnl)

    # ---- the alpha engine's view ----------------------------------------------------------

    def portfolio_view(self) -> PortfolioView:
        view = self.capital()
        position = None
        for p in view.positions:
            if abs(p.qty) <= _QTY_EPS:
                continue
            trade = self._open.get(p.symbol)
            position = PositionView(
                symbol=p.symbol, side="LONG" if p.qty > 0 else "SHORT",
                entry_price=p.avg_price, notional=abs(p.qty) * p.avg_price,
                bars_held=trade.bars_held if trade else 0,
                entry_scan=trade.entry_scan if trade else -1,
                leverage=trade.leverage if trade and trade.leverage == trade.leverage else 1.0)
            break  # the champion holds one position at a time
        return PortfolioView(capital=view.capital_usdt, equity=view.equity_usdt,
                             drawdown=view.drawdown, position=position,
                             last_closed=self._last_closed)


def _net_qty(fills: Iterable[Fill]) -> float:
    return round(sum(f.qty if f.side == "BUY" else -f.qty for f in fills), 12)


def _from_position(pos: Any) -> _OpenTrade:
    """An open trade known only from its position (no fill history to replay)."""
    return _OpenTrade(symbol=pos.symbol, side="LONG" if pos.qty > 0 else "SHORT",
                      entry_ts_ns=pos.opened_ns, entry_price=pos.avg_price, qty=abs(pos.qty),
                      entry_scan=-1, leverage=math.nan, fees_usdt=pos.fees_usdt)


def _scan_of(intent_id: str) -> int:
    """The scan number in an alpha intent id ("<scan>-<symbol>-entry"), else -1."""
    head = intent_id.split("-", 1)[0]
    return int(head) if head.isdigit() else -1
