"""The report's input types: what the backtest pipeline hands over once a run is done.

They are deliberately plain (numbers and strings, no numpy, no pipeline types) so the
portfolio can be adapted to them in one place and the report code stays independent of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """One round trip, entry to exit.

    ``pnl_usdt`` is the NET result of the trade: price PnL minus every fee of the round trip.
    ``fees_usdt`` is the part of it that went to fees (so the gross price PnL is
    ``pnl_usdt + fees_usdt``). A trade is a win when ``pnl_usdt > 0`` and a loss when
    ``pnl_usdt < 0``; a trade at exactly 0 is neither (it still counts as a trade).
    ``funding_usdt`` is the funding settled on the position while the trade was open (cash to
    the account: positive received, negative paid). It is NOT in ``pnl_usdt``: like Binance's
    realised PnL, a trade's PnL is price and fees only, while the wallet (equity, ROI) also
    moves by funding; the trade's result including funding is ``pnl_usdt + funding_usdt``.
    ``side`` is ``"LONG"`` or ``"SHORT"``; ``notional_usdt`` is the entry notional
    (``qty * entry_price``); ``bars_held`` counts bars from the entry bar to the exit bar.
    """

    trade_id: str
    symbol: str
    side: str
    entry_ts_ns: int
    exit_ts_ns: int
    entry_price: float
    exit_price: float
    qty: float
    notional_usdt: float
    leverage: float
    fees_usdt: float
    pnl_usdt: float
    exit_reason: str
    bars_held: int
    funding_usdt: float = 0.0


@dataclass(frozen=True, slots=True)
class EquityPoint:
    """Mark-to-market account equity at the close of one bar.

    ``position_notional_usdt`` is the gross notional of open positions at that bar (0 when
    flat); it is what exposure time is measured from.
    """

    ts_ns: int
    equity_usdt: float
    position_notional_usdt: float


@dataclass(frozen=True, slots=True)
class SignalSeries:
    """The vel_div series for the signal chart: ``vel_div[i]`` at ``ts_ns[i]`` (NaN while the
    scan is cold), and optional horizontal threshold lines (e.g. the SHORT threshold -0.02)."""

    ts_ns: np.ndarray
    vel_div: np.ndarray
    thresholds: tuple[float, ...] = ()
