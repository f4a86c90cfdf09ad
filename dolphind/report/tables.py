"""The breakdowns a freqtrade user reads first: per pair, per exit reason, long/short, best and
worst pair/trade/day, streaks, CAGR, Calmar, expectancy, SQN, drawdown dates, market change.

Pure functions of the closed trades (``ClosedTrade``), the equity series and the headline
``Summary``; sums through ``math.fsum``. Conventions (written into summary.json too):

- a trade's profit % is its net PnL over its entry notional (no leverage applied), as in
  freqtrade's ``profit_ratio``; a group's "total %" is its net PnL over the initial capital;
- win ``pnl > 0``, draw ``pnl == 0``, loss ``pnl < 0``;
- streaks run over trades in exit order; a draw ends both kinds of streak;
- best/worst day: realised PnL of the trades that closed that UTC day (days without a closed
  trade are not candidates), the same figure as ``per_day[*].realised_pnl_usdt``; days
  win/draw/lose count every UTC day of the run, a day without a closed trade being a draw;
- expectancy: mean net PnL per trade; expectancy ratio: ``(1 + avg win / avg loss) * win rate
  - 1`` (freqtrade's); SQN: ``sqrt(n) * mean / sample std`` of the trades' net PnL (Van Tharp);
- CAGR: ``(final / initial) ^ (365 days / period) - 1`` over the equity series' first to last
  bar; Calmar: CAGR / max drawdown (mark to market);
- drawdown start/end: the time of the peak before the deepest drawdown and of its trough;
- market change: the mean over symbols of last close / first close - 1 in the replayed range;
- funding: ``funding_paid_usdt`` is whatever the caller passes (None: not modelled, shown so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from dolphind.report.metrics import (
    NS_PER_DAY, NS_PER_S, Summary, day_label, drawdown_series, in_exit_order, utc_day)
from dolphind.report.model import ClosedTrade, EquityPoint

CONVENTIONS = {
    "profit_pct": "trade net pnl / entry notional (no leverage), mean over the group",
    "total_pct": "group net pnl / initial capital",
    "draw": "pnl == 0; a draw ends both win and loss streaks",
    "best_worst_day": "realised pnl of the trades closed that UTC day",
    "days_win_draw_lose": "every UTC day of the run (per_day) by its realised pnl; a day without "
                          "a closed trade is a draw (as freqtrade counts)",
    "expectancy": "mean net pnl per trade; ratio = (1 + avg win / avg loss) * win rate - 1",
    "sqn": "sqrt(n) * mean / sample std of trade net pnl (null with < 2 trades or std 0)",
    "cagr": "(final / initial) ^ (365 d / period) - 1, period = first to last equity bar",
    "calmar": "cagr / max_drawdown (mark to market); null with no drawdown",
    "market_change": "mean over symbols of last / first close - 1 in the replayed range",
    "funding": "funding_paid_usdt is null when the run does not model funding",
}


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One row of a per-pair / per-exit-reason / per-side table."""

    trades: int
    wins: int
    draws: int
    losses: int
    win_rate: float | None
    avg_profit_pct: float | None
    pnl_usdt: float
    total_pct: float
    fees_usdt: float
    avg_duration_s: float | None
    # Funding settled while the group's trades were open (cash to the account; not in pnl_usdt).
    funding_usdt: float = 0.0


@dataclass(frozen=True, slots=True)
class Named:
    """A best/worst pair or day: its name and its net PnL."""

    name: str
    pnl_usdt: float


@dataclass(frozen=True, slots=True)
class TradeRef:
    """A best/worst trade."""

    trade_id: str
    symbol: str
    pnl_usdt: float
    profit_pct: float | None
    exit_reason: str


@dataclass(frozen=True, slots=True)
class Breakdown:
    per_pair: dict[str, GroupStats]
    per_exit_reason: dict[str, GroupStats]
    per_side: dict[str, GroupStats]
    best_pair: Named | None
    worst_pair: Named | None
    best_trade: TradeRef | None
    worst_trade: TradeRef | None
    best_day: Named | None
    worst_day: Named | None
    winning_days: int
    drawn_days: int
    losing_days: int
    max_consecutive_wins: int
    max_consecutive_losses: int
    avg_win_duration_s: float | None
    avg_loss_duration_s: float | None
    avg_win_usdt: float | None
    avg_loss_usdt: float | None
    expectancy_usdt: float | None
    expectancy_ratio: float | None
    sqn: float | None
    cagr: float | None
    calmar: float | None
    trades_per_day: float | None
    drawdown_start_ts_ns: int | None
    drawdown_end_ts_ns: int | None
    market_change: float | None
    market_change_by_symbol: dict[str, float]
    funding_paid_usdt: float | None


def profit_pct(t: ClosedTrade) -> float | None:
    return 100.0 * t.pnl_usdt / t.notional_usdt if t.notional_usdt else None


def group_stats(trades: Sequence[ClosedTrade], initial_capital_usdt: float) -> GroupStats:
    n = len(trades)
    wins = sum(1 for t in trades if t.pnl_usdt > 0)
    losses = sum(1 for t in trades if t.pnl_usdt < 0)
    pcts = [p for p in (profit_pct(t) for t in trades) if p is not None]
    pnl = math.fsum(t.pnl_usdt for t in trades)
    return GroupStats(
        trades=n, wins=wins, draws=n - wins - losses, losses=losses,
        win_rate=wins / n if n else None,
        avg_profit_pct=math.fsum(pcts) / len(pcts) if pcts else None,
        pnl_usdt=pnl, total_pct=100.0 * pnl / initial_capital_usdt,
        fees_usdt=math.fsum(t.fees_usdt for t in trades),
        avg_duration_s=math.fsum((t.exit_ts_ns - t.entry_ts_ns) / NS_PER_S for t in trades) / n
        if n else None,
        funding_usdt=math.fsum(t.funding_usdt for t in trades))


def grouped(trades: Sequence[ClosedTrade], key: str,
            initial_capital_usdt: float) -> dict[str, GroupStats]:
    """Stats per value of ``key`` (a ClosedTrade field), keys sorted."""
    groups: dict[str, list[ClosedTrade]] = {}
    for t in trades:
        groups.setdefault(str(getattr(t, key)), []).append(t)
    return {k: group_stats(g, initial_capital_usdt) for k, g in sorted(groups.items())}


def streaks(trades: Sequence[ClosedTrade]) -> tuple[int, int]:
    """(longest run of wins, longest run of losses) in exit order; draws break both."""
    best_w = best_l = w = loss = 0
    for t in in_exit_order(trades):
        if t.pnl_usdt > 0:
            w, loss = w + 1, 0
        elif t.pnl_usdt < 0:
            w, loss = 0, loss + 1
        else:
            w = loss = 0
        best_w, best_l = max(best_w, w), max(best_l, loss)
    return best_w, best_l


def sqn(trades: Sequence[ClosedTrade]) -> float | None:
    pnl = np.array([t.pnl_usdt for t in trades], dtype=np.float64)
    if pnl.size < 2:
        return None
    scale = float(np.max(np.abs(pnl)))
    if scale == 0.0:
        return None
    # SQN does not depend on the unit: scaled to at most 1 first, tiny PnLs cannot underflow
    # the variance to zero (nor huge ones overflow it).
    pnl = pnl / scale
    std = float(np.std(pnl, ddof=1))
    if std == 0.0:
        return None
    return math.sqrt(pnl.size) * (math.fsum(pnl.tolist()) / pnl.size) / std


def cagr(initial: float, final: float, start_ts_ns: int | None,
         end_ts_ns: int | None) -> float | None:
    if start_ts_ns is None or end_ts_ns is None or end_ts_ns <= start_ts_ns or final <= 0:
        return None
    years = (end_ts_ns - start_ts_ns) / NS_PER_DAY / 365.0
    return float((final / initial) ** (1.0 / years) - 1.0)


def drawdown_dates(equity: Sequence[EquityPoint],
                   initial_capital_usdt: float) -> tuple[int | None, int | None]:
    """(time of the peak before the deepest drawdown, time of its trough); None without one.
    A peak that is the initial capital itself (under water from the first bar) is the first
    bar's time."""
    if not equity:
        return None, None
    points = sorted(equity, key=lambda p: p.ts_ns)
    ts = np.array([p.ts_ns for p in points], dtype=np.int64)
    eq = np.array([p.equity_usdt for p in points], dtype=np.float64)
    dd = drawdown_series(eq, initial_capital_usdt)
    if not np.any(dd > 0):
        return None, None
    trough = int(np.argmax(dd))
    head = eq[:trough + 1]
    peak_value = max(float(head.max()), initial_capital_usdt)
    at_peak = np.flatnonzero(head >= peak_value)
    peak = int(at_peak[-1]) if at_peak.size else 0
    return int(ts[peak]), int(ts[trough])


def market_change(first_last: Mapping[str, tuple[float, float]]) -> tuple[float | None,
                                                                           dict[str, float]]:
    """Mean of last/first - 1 over symbols with two finite positive closes, and each one."""
    each = {s: b / a - 1.0 for s, (a, b) in sorted(first_last.items())
            if math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0}
    if not each:
        return None, {}
    return math.fsum(each.values()) / len(each), each


def breakdown(trades: Sequence[ClosedTrade], equity: Sequence[EquityPoint], summary: Summary,
              first_last_close: Mapping[str, tuple[float, float]] | None = None,
              funding_paid_usdt: float | None = None) -> Breakdown:
    cap = summary.initial_capital_usdt
    per_pair = grouped(trades, "symbol", cap)
    pairs = sorted(((g.pnl_usdt, s) for s, g in per_pair.items()))
    by_trade = sorted(trades, key=lambda t: (t.pnl_usdt, t.trade_id))
    days: dict[int, list[float]] = {}
    for t in trades:
        days.setdefault(utc_day(t.exit_ts_ns), []).append(t.pnl_usdt)
    day_pnl = sorted((math.fsum(v), day_label(d)) for d, v in days.items())
    wins = [t.pnl_usdt for t in trades if t.pnl_usdt > 0]
    losses = [-t.pnl_usdt for t in trades if t.pnl_usdt < 0]
    n = len(trades)
    avg_win = math.fsum(wins) / len(wins) if wins else None
    avg_loss = math.fsum(losses) / len(losses) if losses else None
    ratio = None
    if n and avg_win is not None and avg_loss is not None:
        ratio = (1.0 + avg_win / avg_loss) * (len(wins) / n) - 1.0
    max_w, max_l = streaks(trades)
    growth = cagr(cap, summary.final_equity_usdt, summary.start_ts_ns, summary.end_ts_ns)
    dd_start, dd_end = drawdown_dates(equity, cap)
    mc, mc_each = market_change(first_last_close or {})
    period_days = ((summary.end_ts_ns - summary.start_ts_ns) / NS_PER_DAY
                   if summary.start_ts_ns is not None and summary.end_ts_ns is not None
                   and summary.end_ts_ns > summary.start_ts_ns else None)

    def ref(t: ClosedTrade) -> TradeRef:
        return TradeRef(t.trade_id, t.symbol, t.pnl_usdt, profit_pct(t), t.exit_reason)

    return Breakdown(
        per_pair=per_pair,
        per_exit_reason=grouped(trades, "exit_reason", cap),
        per_side=grouped(trades, "side", cap),
        best_pair=Named(pairs[-1][1], pairs[-1][0]) if pairs else None,
        worst_pair=Named(pairs[0][1], pairs[0][0]) if pairs else None,
        best_trade=ref(by_trade[-1]) if by_trade else None,
        worst_trade=ref(by_trade[0]) if by_trade else None,
        best_day=Named(day_pnl[-1][1], day_pnl[-1][0]) if day_pnl else None,
        worst_day=Named(day_pnl[0][1], day_pnl[0][0]) if day_pnl else None,
        winning_days=sum(1 for p, _ in day_pnl if p > 0),
        drawn_days=len(set(summary.per_day) | {d for _, d in day_pnl})
        - sum(1 for p, _ in day_pnl if p != 0),
        losing_days=sum(1 for p, _ in day_pnl if p < 0),
        max_consecutive_wins=max_w, max_consecutive_losses=max_l,
        avg_win_duration_s=_mean_held([t for t in trades if t.pnl_usdt > 0]),
        avg_loss_duration_s=_mean_held([t for t in trades if t.pnl_usdt < 0]),
        avg_win_usdt=avg_win, avg_loss_usdt=avg_loss,
        expectancy_usdt=math.fsum(t.pnl_usdt for t in trades) / n if n else None,
        expectancy_ratio=ratio,
        sqn=sqn(trades),
        cagr=growth,
        calmar=growth / summary.max_drawdown if growth is not None and summary.max_drawdown > 0
        else None,
        trades_per_day=n / period_days if period_days else None,
        drawdown_start_ts_ns=dd_start, drawdown_end_ts_ns=dd_end,
        market_change=mc, market_change_by_symbol=mc_each,
        funding_paid_usdt=funding_paid_usdt,
    )


def _mean_held(trades: Sequence[ClosedTrade]) -> float | None:
    if not trades:
        return None
    return math.fsum((t.exit_ts_ns - t.entry_ts_ns) / NS_PER_S for t in trades) / len(trades)
