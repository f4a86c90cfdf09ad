"""Positions, cash, equity, PnL, peak equity and drawdown (SPEC §6).

Futures accounting in USDT: ``cash`` is the wallet balance (starting capital + realised PnL -
fees); a position adds its unrealised PnL at the latest mark; ``equity = cash + unrealised``.
Margin is not locked out of cash (USDT-M cross margin: the wallet balance is what the account
is worth when flat). Peak equity and drawdown (``1 - equity / peak``) feed the alpha engine's
capital sensor (bible §11.2 Cat5) through ``CapitalView``.

Quantities are float64 but always multiples of the venue's step; sums are rounded to 1e-12 so
that float drift (0.1 + 0.2) does not leave phantom dust positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from dolphind.events import Fill

_QTY_DECIMALS = 12


@dataclass(frozen=True, slots=True)
class Position:
    """One symbol's position: signed ``qty`` (negative = short) at ``avg_price``."""

    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0
    realised_pnl_usdt: float = 0.0
    fees_usdt: float = 0.0
    opened_ns: int = 0
    updated_ns: int = 0

    @property
    def flat(self) -> bool:
        return self.qty == 0.0

    def unrealised(self, mark: float) -> float:
        return self.qty * (mark - self.avg_price) if self.qty else 0.0


def apply_fill(pos: Position, side: str, qty: float, price: float, fee_usdt: float,
               ts_ns: int) -> tuple[Position, float]:
    """The position after a fill, and the PnL that fill realised (before fees).

    Adding to a position averages the entry price; reducing realises
    ``closed_qty * (price - avg_price)`` for a long (the negative for a short); a fill that
    flips the position closes it and opens the rest at the fill price.
    """
    signed = qty if side == "BUY" else -qty
    q0 = pos.qty
    if q0 == 0.0 or (q0 > 0) == (signed > 0):
        new_q = round(q0 + signed, _QTY_DECIMALS)
        avg = (abs(q0) * pos.avg_price + qty * price) / abs(new_q) if new_q else 0.0
        realised = 0.0
        opened = pos.opened_ns if q0 else ts_ns
    else:
        closing = min(abs(q0), qty)
        realised = closing * (price - pos.avg_price) * (1.0 if q0 > 0 else -1.0)
        new_q = round(q0 + signed, _QTY_DECIMALS)
        if new_q == 0.0:
            avg, opened = 0.0, 0
        elif (new_q > 0) != (q0 > 0):
            avg, opened = price, ts_ns  # flipped: the remainder opened at this fill
        else:
            avg, opened = pos.avg_price, pos.opened_ns
    return Position(pos.symbol, new_q, avg, pos.realised_pnl_usdt + realised,
                    pos.fees_usdt + fee_usdt, opened, ts_ns), realised


@dataclass(frozen=True, slots=True)
class CapitalView:
    """What the alpha engine's sizing and capital sensor read (one consistent snapshot)."""

    capital_usdt: float  # = equity: what sizing multiplies by fraction and leverage
    cash_usdt: float
    equity_usdt: float
    peak_equity_usdt: float
    drawdown: float
    realised_pnl_usdt: float
    unrealised_pnl_usdt: float
    fees_usdt: float
    gross_exposure_usdt: float
    positions: tuple[Position, ...]


class Portfolio:
    """The account as the execution stage knows it. Owned and mutated by that stage only."""

    def __init__(self, initial_capital_usdt: float, cash_usdt: float | None = None,
                 peak_equity_usdt: float | None = None, realised_pnl_usdt: float = 0.0,
                 fees_usdt: float = 0.0, positions: Iterable[Position] = ()) -> None:
        self.initial_capital_usdt = initial_capital_usdt
        self.cash_usdt = initial_capital_usdt if cash_usdt is None else cash_usdt
        self.realised_pnl_usdt = realised_pnl_usdt
        self.fees_usdt = fees_usdt
        self.positions: dict[str, Position] = {p.symbol: p for p in positions if not p.flat}
        self.marks: dict[str, float] = {}
        self.peak_equity_usdt = max(peak_equity_usdt or 0.0, self.equity())

    # ---- changes ---------------------------------------------------------------------------

    def apply_fill(self, fill: Fill) -> tuple[Position, float]:
        """Book a fill: position, realised PnL, fees, cash; returns (position, realised)."""
        pos = self.positions.get(fill.symbol) or Position(fill.symbol)
        new, realised = apply_fill(pos, fill.side, fill.qty, fill.price, fill.fee_usdt,
                                   fill.ts_ns)
        if new.flat:
            self.positions.pop(fill.symbol, None)
        else:
            self.positions[fill.symbol] = new
        self.realised_pnl_usdt += realised
        self.fees_usdt += fill.fee_usdt
        self.cash_usdt += realised - fill.fee_usdt
        # A fill happens at a market price: it is the freshest mark of that symbol.
        self.marks[fill.symbol] = fill.price
        self.update_peak()
        return new, realised

    def mark(self, symbol: str, price: float) -> None:
        if price > 0:
            self.marks[symbol] = price

    def mark_many(self, prices: Mapping[str, float]) -> None:
        for sym, px in prices.items():
            self.mark(sym, px)
        self.update_peak()

    def update_peak(self) -> None:
        """Raise the peak to the current equity (after marks have moved)."""
        eq = self.equity()
        if eq > self.peak_equity_usdt:
            self.peak_equity_usdt = eq

    # ---- figures ---------------------------------------------------------------------------

    def position_qty(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return pos.qty if pos else 0.0

    def mark_of(self, symbol: str) -> float:
        """Latest mark; a position never marked yet is valued at its entry price."""
        m = self.marks.get(symbol)
        if m is not None:
            return m
        pos = self.positions.get(symbol)
        return pos.avg_price if pos else 0.0

    def unrealised(self) -> float:
        return sum(p.unrealised(self.mark_of(s)) for s, p in self.positions.items())

    def equity(self) -> float:
        return self.cash_usdt + self.unrealised()

    def position_notional(self, symbol: str) -> float:
        """Signed notional of a position at its mark."""
        pos = self.positions.get(symbol)
        return pos.qty * self.mark_of(symbol) if pos else 0.0

    def gross_exposure(self) -> float:
        return sum(abs(p.qty) * self.mark_of(s) for s, p in self.positions.items())

    def drawdown(self) -> float:
        peak = self.peak_equity_usdt
        return max(0.0, 1.0 - self.equity() / peak) if peak > 0 else 0.0

    def view(self) -> CapitalView:
        # Read several times per bar: one pass over the positions, the same sums (same order)
        # as equity() and gross_exposure(). Positions are frozen, so the view shares them.
        cash = self.cash_usdt
        if self.positions:
            unrealised = 0.0
            gross = 0.0
            for s, p in self.positions.items():
                mark = self.mark_of(s)
                unrealised += p.unrealised(mark)
                gross += abs(p.qty) * mark
            eq = cash + unrealised
            positions = tuple(self.positions.values())
        else:
            eq, gross, positions = cash + 0, 0, ()
        peak = max(self.peak_equity_usdt, eq)
        return CapitalView(
            capital_usdt=eq, cash_usdt=cash, equity_usdt=eq, peak_equity_usdt=peak,
            drawdown=max(0.0, 1.0 - eq / peak) if peak > 0 else 0.0,
            realised_pnl_usdt=self.realised_pnl_usdt, unrealised_pnl_usdt=eq - cash,
            fees_usdt=self.fees_usdt, gross_exposure_usdt=gross, positions=positions)


def split_foreign(ours: float, venue: float, eps: float = 1e-12) -> tuple[float, float]:
    """(our position, the foreign rest) of a venue's net position ``venue`` in one symbol, when
    the book says we hold ``ours``.

    The venue nets everybody's trades into one position (one-way mode). Ours is never more
    than the venue holds in our direction: a venue position smaller than ours (closed by hand
    while we were down) shrinks ours to it, an opposite or flat one leaves us flat. What is
    left of the venue's position is foreign: someone else's, not ours to manage."""
    if abs(ours) <= eps:
        return 0.0, venue
    side = 1.0 if ours > 0 else -1.0
    kept = side * min(abs(ours), max(0.0, side * venue))
    rest = venue - kept
    return kept, (0.0 if abs(rest) <= eps else rest)
