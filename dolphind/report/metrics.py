"""Backtest metrics: pure functions of the closed trades and the equity series.

Conventions (also written into summary.json under ``conventions``):

- PnL is net of fees (``ClosedTrade.pnl_usdt``); a win is ``pnl > 0``, a loss ``pnl < 0``.
- Sums use ``math.fsum`` (exactly rounded), so they do not depend on the order of the trades
  and agree with any other exact summation, e.g. the independent check in ``verify.py``.
- Sharpe and Sortino are computed from DAILY returns of the mark-to-market equity curve
  (UTC calendar days, close-to-close; the first day's return is taken from the initial
  capital; a day without an equity point keeps the previous day's equity, i.e. returns 0),
  with a risk-free rate of 0, annualised by ``sqrt(365)``. Why daily and 365: crypto perps
  trade every calendar day, so there are 365 trading days a year, and per-bar returns
  (minutes, seconds) are strongly autocorrelated and mostly zero while flat, which inflates a
  sqrt(bars-per-year) annualisation by orders of magnitude; daily returns are also what other
  tools report, so the numbers compare.
- Undefined ratios are ``None`` (null in JSON), never 0 and never NaN: Sharpe when there are
  fewer than two daily returns or their standard deviation is zero; Sortino when there are
  fewer than two daily returns or no downside (no day below 0); win rate and average hold with
  no trades; profit factor with neither profits nor losses (no trades, or only flat ones).
  Profit factor with profits and no losses is ``math.inf`` (written "inf" in JSON); with
  losses and no profits it is 0.0.
- Max drawdown is ``1 - equity / running peak``, the peak starting at the initial capital;
  its duration is the episode from the peak to the bar that regains it (or to the last bar if
  it never does). ``realised_max_drawdown`` is the same over the closed-trade equity
  (initial capital + cumulative net PnL in exit order): the one that can be checked from
  trades.csv alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Sequence

import numpy as np

from dolphind.report.model import ClosedTrade, EquityPoint

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
PERIODS_PER_YEAR = 365
# A daily-return standard deviation below this is float noise around a constant, not risk.
_ZERO_STD = 1e-12


@dataclass(frozen=True, slots=True)
class Drawdown:
    """The deepest drawdown and the longest one (they are often different episodes)."""

    max_fraction: float
    max_duration_s: float
    max_duration_bars: int
    max_recovered: bool
    longest_duration_s: float
    longest_duration_bars: int


@dataclass(frozen=True, slots=True)
class DayPnl:
    """One UTC day. Equity fields are None on days the equity series does not cover."""

    equity_change_usdt: float | None
    end_equity_usdt: float | None
    realised_pnl_usdt: float
    trades: int


@dataclass(frozen=True, slots=True)
class ReasonPnl:
    """Closed trades grouped by exit reason."""

    trades: int
    wins: int
    pnl_usdt: float
    fees_usdt: float


@dataclass(frozen=True, slots=True)
class Summary:
    """Every headline number of a run. See the module docstring for the conventions."""

    initial_capital_usdt: float
    final_equity_usdt: float
    roi: float
    net_pnl_usdt: float
    other_pnl_usdt: float
    gross_profit_usdt: float
    gross_loss_usdt: float
    profit_factor: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_duration_s: float
    max_drawdown_duration_bars: int
    max_drawdown_recovered: bool
    longest_drawdown_duration_s: float
    longest_drawdown_duration_bars: int
    realised_max_drawdown: float
    trades: int
    wins: int
    losses: int
    win_rate: float | None
    avg_hold_bars: float | None
    avg_hold_s: float | None
    fees_paid_usdt: float
    exposure_time: float | None
    bars: int
    days: int
    start_ts_ns: int | None
    end_ts_ns: int | None
    per_day: dict[str, DayPnl]
    pnl_by_exit_reason: dict[str, ReasonPnl]


# --- trades -------------------------------------------------------------------------------

def in_exit_order(trades: Sequence[ClosedTrade]) -> list[ClosedTrade]:
    """Trades sorted by exit time (ties: entry time, then id): the order PnL is realised in."""
    return sorted(trades, key=lambda t: (t.exit_ts_ns, t.entry_ts_ns, t.trade_id))


def net_pnl(trades: Sequence[ClosedTrade]) -> float:
    return math.fsum(t.pnl_usdt for t in trades)


def gross_profit(trades: Sequence[ClosedTrade]) -> float:
    return math.fsum(t.pnl_usdt for t in trades if t.pnl_usdt > 0)


def gross_loss(trades: Sequence[ClosedTrade]) -> float:
    """The sum of losing trades as a positive number."""
    return -math.fsum(t.pnl_usdt for t in trades if t.pnl_usdt < 0)


def profit_factor(trades: Sequence[ClosedTrade]) -> float | None:
    """Gross profit / gross loss; ``inf`` with no losses, None with neither (see module doc)."""
    gp, gl = gross_profit(trades), gross_loss(trades)
    if gl > 0:
        return gp / gl
    return math.inf if gp > 0 else None


def win_rate(trades: Sequence[ClosedTrade]) -> float | None:
    if not trades:
        return None
    return sum(1 for t in trades if t.pnl_usdt > 0) / len(trades)


def average_hold(trades: Sequence[ClosedTrade]) -> tuple[float | None, float | None]:
    """(mean bars held, mean seconds held); (None, None) with no trades."""
    if not trades:
        return None, None
    n = len(trades)
    bars = math.fsum(t.bars_held for t in trades) / n
    secs = math.fsum((t.exit_ts_ns - t.entry_ts_ns) / NS_PER_S for t in trades) / n
    return bars, secs


def fees_paid(trades: Sequence[ClosedTrade]) -> float:
    return math.fsum(t.fees_usdt for t in trades)


def pnl_by_exit_reason(trades: Sequence[ClosedTrade]) -> dict[str, ReasonPnl]:
    """Per exit reason: trade count, wins, net PnL and fees; keys sorted."""
    groups: dict[str, list[ClosedTrade]] = {}
    for t in trades:
        groups.setdefault(t.exit_reason, []).append(t)
    return {reason: ReasonPnl(len(g), sum(1 for t in g if t.pnl_usdt > 0), net_pnl(g),
                              fees_paid(g))
            for reason, g in sorted(groups.items())}


def realised_equity(trades: Sequence[ClosedTrade], initial_capital_usdt: float) -> np.ndarray:
    """Closed-trade equity after each trade in exit order, starting value excluded."""
    pnl = [t.pnl_usdt for t in in_exit_order(trades)]
    return initial_capital_usdt + np.array(running_fsum(pnl), dtype=np.float64)


def running_fsum(values: Sequence[float]) -> list[float]:
    """Exactly rounded prefix sums (``fsum(values[:k+1])`` for every k) in linear time.

    Shewchuk's algorithm, the one behind ``math.fsum``: the running total is kept as a few
    non-overlapping partials, so the last prefix equals ``math.fsum(values)`` bit for bit and
    no prefix depends on float-cancellation luck (a plain cumsum would drift).
    """
    partials: list[float] = []
    out: list[float] = []
    for x in values:
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]
        out.append(math.fsum(partials))
    return out


# --- equity curve ---------------------------------------------------------------------------

def drawdown_series(equity_usdt: np.ndarray, initial_capital_usdt: float) -> np.ndarray:
    """``1 - equity / running peak`` per point, the peak starting at the initial capital."""
    eq = np.asarray(equity_usdt, dtype=np.float64)
    if eq.size == 0:
        return eq.copy()
    peak = np.maximum.accumulate(np.maximum(eq, initial_capital_usdt))
    return 1.0 - eq / peak


def max_drawdown(ts_ns: np.ndarray, equity_usdt: np.ndarray,
                 initial_capital_usdt: float) -> Drawdown:
    """The deepest drawdown (fraction, duration) and the longest under-water episode.

    An episode starts at the bar of the peak (the first bar when the account is under its
    initial capital from the start) and ends at the first bar back at or above that peak, or
    at the last bar when it never recovers.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    dd = drawdown_series(equity_usdt, initial_capital_usdt)
    if dd.size == 0 or not np.any(dd > 0):
        return Drawdown(0.0, 0.0, 0, True, 0.0, 0)
    under = dd > 0
    # Runs of consecutive under-water bars: [starts[k], ends[k]] inclusive.
    edges = np.diff(np.concatenate(([0], under.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    n = dd.size
    episodes = []  # (first bar, last bar, recovered)
    for s, e in zip(starts.tolist(), ends.tolist()):
        first = s - 1 if s > 0 else 0
        recovered = e + 1 < n
        episodes.append((first, e + 1 if recovered else e, recovered))
    deepest = int(np.argmax(dd))
    m_first, m_last, m_rec = next(ep for ep, s, e in zip(episodes, starts, ends)
                                  if s <= deepest <= e)
    durations = [(int(ts[last] - ts[first]), last - first) for first, last, _ in episodes]
    longest = max(range(len(durations)), key=lambda k: (durations[k][0], -k))
    return Drawdown(
        max_fraction=float(dd[deepest]),
        max_duration_s=int(ts[m_last] - ts[m_first]) / NS_PER_S,
        max_duration_bars=m_last - m_first,
        max_recovered=m_rec,
        longest_duration_s=durations[longest][0] / NS_PER_S,
        longest_duration_bars=durations[longest][1],
    )


def exposure_time(equity: Sequence[EquityPoint]) -> float | None:
    """Fraction of bars with an open position; None without an equity series."""
    if not equity:
        return None
    return sum(1 for p in equity if p.position_notional_usdt != 0.0) / len(equity)


def utc_day(ts_ns: int) -> int:
    """Days since 1970-01-01 (UTC) of a nanosecond timestamp."""
    return ts_ns // NS_PER_DAY


def day_label(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


def daily_equity(equity: Sequence[EquityPoint]) -> tuple[list[int], list[float]]:
    """(UTC days, equity at the end of each day), every calendar day from the first point's
    day to the last point's, a day without points keeping the previous day's equity."""
    if not equity:
        return [], []
    ts = np.fromiter((p.ts_ns for p in equity), dtype=np.int64, count=len(equity))
    eq = np.fromiter((p.equity_usdt for p in equity), dtype=np.float64, count=len(equity))
    order = np.argsort(ts, kind="stable")  # stable: equal times keep their given order
    ts, eq = ts[order], eq[order]
    day = ts // NS_PER_DAY
    last = np.flatnonzero(np.append(day[1:] != day[:-1], True))  # last point of each day
    first_day, last_day = int(day[0]), int(day[-1])
    closes = np.full(last_day - first_day + 1, np.nan)
    closes[day[last] - first_day] = eq[last]
    # A day with no point keeps the previous close (the first day always has one).
    filled = np.maximum.accumulate(np.where(np.isnan(closes), 0, np.arange(closes.size)))
    return list(range(first_day, last_day + 1)), closes[filled].tolist()


def daily_returns(equity: Sequence[EquityPoint], initial_capital_usdt: float) -> np.ndarray:
    """Simple daily returns of the equity curve; the first from the initial capital.

    Empty when an equity value on which a return would be based is not positive (a blown-up
    account has no meaningful return series).
    """
    _, values = daily_equity(equity)
    prev = np.array([initial_capital_usdt, *values[:-1]], dtype=np.float64)[:len(values)]
    if np.any(prev <= 0):
        return np.empty(0)
    return np.asarray(values, dtype=np.float64) / prev - 1.0


def sharpe(returns: np.ndarray, periods_per_year: int = PERIODS_PER_YEAR) -> float | None:
    """Annualised Sharpe ratio (risk-free 0): mean / sample std * sqrt(periods per year)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return None
    std = float(np.std(r, ddof=1))
    if std < _ZERO_STD:
        return None
    return math.fsum(r.tolist()) / r.size / std * math.sqrt(periods_per_year)


def sortino(returns: np.ndarray, periods_per_year: int = PERIODS_PER_YEAR) -> float | None:
    """Annualised Sortino ratio (target 0): mean / downside deviation * sqrt(periods).

    Downside deviation is ``sqrt(sum(min(r, 0)^2) / N)`` over ALL N returns (Sortino &
    Price), not only the negative ones.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return None
    downside = math.sqrt(math.fsum((np.minimum(r, 0.0) ** 2).tolist()) / r.size)
    if downside < _ZERO_STD:
        return None
    return math.fsum(r.tolist()) / r.size / downside * math.sqrt(periods_per_year)


def per_day_pnl(trades: Sequence[ClosedTrade], equity: Sequence[EquityPoint],
                initial_capital_usdt: float) -> dict[str, DayPnl]:
    """Per UTC day (ISO date keys, sorted): equity change, day-end equity, PnL realised by
    trades that exited that day, and their count."""
    days, values = daily_equity(equity)
    eq_end = dict(zip(days, values))
    change = {d: v - (values[k - 1] if k else initial_capital_usdt)
              for k, (d, v) in enumerate(zip(days, values))}
    by_exit: dict[int, list[float]] = {}
    for t in trades:
        by_exit.setdefault(utc_day(t.exit_ts_ns), []).append(t.pnl_usdt)
    out: dict[str, DayPnl] = {}
    for d in sorted(set(days) | set(by_exit)):
        pnl = by_exit.get(d, [])
        out[day_label(d)] = DayPnl(change.get(d), eq_end.get(d), math.fsum(pnl), len(pnl))
    return out


# --- everything -----------------------------------------------------------------------------

def summarize(trades: Sequence[ClosedTrade], equity: Sequence[EquityPoint],
              initial_capital_usdt: float) -> Summary:
    """Every metric of a run. ``equity`` may be empty (then the equity-curve metrics describe
    a flat account); ``initial_capital_usdt`` must be positive."""
    if not initial_capital_usdt > 0:
        raise ValueError(f"initial capital must be positive, got {initial_capital_usdt!r}")
    points = sorted(equity, key=lambda p: p.ts_ns)
    ts = np.array([p.ts_ns for p in points], dtype=np.int64)
    eq = np.array([p.equity_usdt for p in points], dtype=np.float64)
    net = net_pnl(trades)
    final = float(eq[-1]) if eq.size else initial_capital_usdt + net
    dd = max_drawdown(ts, eq, initial_capital_usdt)
    realised = realised_equity(trades, initial_capital_usdt)
    realised_dd = drawdown_series(realised, initial_capital_usdt)
    returns = daily_returns(points, initial_capital_usdt)
    hold_bars, hold_s = average_hold(trades)
    per_day = per_day_pnl(trades, points, initial_capital_usdt)
    return Summary(
        initial_capital_usdt=initial_capital_usdt,
        final_equity_usdt=final,
        roi=final / initial_capital_usdt - 1.0,
        net_pnl_usdt=net,
        other_pnl_usdt=final - initial_capital_usdt - net,
        gross_profit_usdt=gross_profit(trades),
        gross_loss_usdt=gross_loss(trades),
        profit_factor=profit_factor(trades),
        sharpe=sharpe(returns),
        sortino=sortino(returns),
        max_drawdown=dd.max_fraction,
        max_drawdown_duration_s=dd.max_duration_s,
        max_drawdown_duration_bars=dd.max_duration_bars,
        max_drawdown_recovered=dd.max_recovered,
        longest_drawdown_duration_s=dd.longest_duration_s,
        longest_drawdown_duration_bars=dd.longest_duration_bars,
        realised_max_drawdown=float(realised_dd.max()) if realised_dd.size else 0.0,
        trades=len(trades),
        wins=sum(1 for t in trades if t.pnl_usdt > 0),
        losses=sum(1 for t in trades if t.pnl_usdt < 0),
        win_rate=win_rate(trades),
        avg_hold_bars=hold_bars,
        avg_hold_s=hold_s,
        fees_paid_usdt=fees_paid(trades),
        exposure_time=exposure_time(points),
        bars=len(points),
        days=len(per_day),
        start_ts_ns=int(ts[0]) if ts.size else None,
        end_ts_ns=int(ts[-1]) if ts.size else None,
        per_day=per_day,
        pnl_by_exit_reason=pnl_by_exit_reason(trades),
    )
