"""Metrics against numbers worked out by hand on the run in conftest.py, and the edge cases.

The hand run, initial capital 1000:
  trades (exit order)   t1 +30 (tp), t2 -10 (stop), t3 +20 (tp), t4 -15 (max_hold)
  net 25, gross profit 50, gross loss 25 -> profit factor 2.0; win rate 2/4; fees 6
  closed-trade equity 1030, 1020, 1040, 1025 -> worst drawdown 15/1040
  hold: bars (10+5+15+20)/4 = 12.5; seconds (600+300+900+1200)/4 = 750
  equity every 12 h: 1000, 1020 | 1010, 990 | 1030, 1025 (| = UTC midnight)
  day closes 1020, 990, 1025 -> daily returns 0.02, 990/1020-1, 1025/990-1; ROI 0.025
  drawdown vs running peak (1000, 1020, 1020, 1020, 1030, 1030): deepest 30/1020 at the 4th
  point, from the peak at 12:00 day 0 to the recovery at 00:00 day 2 = 36 h, 3 bars
  exposure: 3 of 6 points hold a position -> 0.5
"""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from dolphind.report import jsonfmt
from dolphind.report.metrics import (
    DayPnl, ReasonPnl, daily_returns, max_drawdown, profit_factor, running_fsum, sharpe,
    sortino, summarize)
from dolphind.report.model import ClosedTrade, EquityPoint
from dolphind.report.writer import summary_document

from .conftest import CAPITAL, DAY0, H, trade


def test_trade_figures_by_hand(hand_trades: list[ClosedTrade],
                               hand_equity: list[EquityPoint]) -> None:
    s = summarize(hand_trades, hand_equity, CAPITAL)
    assert (s.trades, s.wins, s.losses) == (4, 2, 2)
    assert s.win_rate == 0.5
    assert s.net_pnl_usdt == 25.0
    assert (s.gross_profit_usdt, s.gross_loss_usdt) == (50.0, 25.0)
    assert s.profit_factor == 2.0
    assert s.fees_paid_usdt == 6.0
    assert s.avg_hold_bars == 12.5
    assert s.avg_hold_s == 750.0
    assert s.realised_max_drawdown == pytest.approx(15 / 1040, rel=1e-15)
    assert s.pnl_by_exit_reason == {
        "max_hold": ReasonPnl(trades=1, wins=0, pnl_usdt=-15.0, fees_usdt=2.0),
        "stop": ReasonPnl(trades=1, wins=0, pnl_usdt=-10.0, fees_usdt=1.0),
        "tp": ReasonPnl(trades=2, wins=2, pnl_usdt=50.0, fees_usdt=3.0),
    }
    assert list(s.pnl_by_exit_reason) == ["max_hold", "stop", "tp"]  # sorted


def test_equity_figures_by_hand(hand_trades: list[ClosedTrade],
                                hand_equity: list[EquityPoint]) -> None:
    s = summarize(hand_trades, hand_equity, CAPITAL)
    assert s.final_equity_usdt == 1025.0
    assert s.roi == pytest.approx(0.025, rel=1e-14)
    assert s.other_pnl_usdt == 0.0  # the equity change is all closed trades
    assert s.max_drawdown == pytest.approx(30 / 1020, rel=1e-15)
    assert s.max_drawdown_duration_s == 36 * 3600
    assert s.max_drawdown_duration_bars == 3
    assert s.max_drawdown_recovered is True
    # The second episode (1030 -> 1025 at the end, never recovered) is shorter.
    assert (s.longest_drawdown_duration_s, s.longest_drawdown_duration_bars) == (36 * 3600, 3)
    assert s.exposure_time == 0.5
    assert (s.bars, s.days) == (6, 3)
    assert (s.start_ts_ns, s.end_ts_ns) == (DAY0, DAY0 + 60 * H)


def test_daily_returns_sharpe_and_sortino_by_hand(hand_equity: list[EquityPoint]) -> None:
    r = [1020 / 1000 - 1, 990 / 1020 - 1, 1025 / 990 - 1]
    np.testing.assert_allclose(daily_returns(hand_equity, CAPITAL), r, rtol=1e-15)
    mean = statistics.fmean(r)
    want_sharpe = mean / statistics.stdev(r) * math.sqrt(365)
    downside = math.sqrt((990 / 1020 - 1) ** 2 / 3)  # only day 1 is below 0; divide by all 3
    want_sortino = mean / downside * math.sqrt(365)
    s = summarize([], hand_equity, CAPITAL)
    assert s.sharpe == pytest.approx(want_sharpe, rel=1e-12)
    assert s.sortino == pytest.approx(want_sortino, rel=1e-12)
    # Worked by hand: mean 0.00864726, sample std 0.0338423, downside 0.0169809,
    # sqrt(365) = 19.10497. Literal, so a wrong formula shared by the test and the code
    # (e.g. a population std) cannot pass.
    assert s.sharpe == pytest.approx(4.88163, rel=1e-5)
    assert s.sortino == pytest.approx(9.72891, rel=1e-5)
    # Compounding the daily returns gives back the ROI.
    assert math.prod(1 + x for x in r) - 1 == pytest.approx(s.roi, rel=1e-12)


def test_per_day_pnl_by_hand(hand_trades: list[ClosedTrade],
                             hand_equity: list[EquityPoint]) -> None:
    s = summarize(hand_trades, hand_equity, CAPITAL)
    assert s.per_day == {
        "2025-05-10": DayPnl(20.0, 1020.0, 20.0, 2),
        "2025-05-11": DayPnl(-30.0, 990.0, 5.0, 2),
        "2025-05-12": DayPnl(35.0, 1025.0, 0.0, 0),
    }


def test_a_day_without_equity_points_is_a_zero_return_day() -> None:
    eq = [EquityPoint(DAY0, 1000.0, 0.0), EquityPoint(DAY0 + 50 * H, 1100.0, 0.0)]
    np.testing.assert_allclose(daily_returns(eq, CAPITAL), [0.0, 0.0, 0.1], atol=1e-15)
    s = summarize([], eq, CAPITAL)
    assert s.per_day["2025-05-11"] == DayPnl(0.0, 1000.0, 0.0, 0)


def test_no_trades_no_equity() -> None:
    s = summarize([], [], CAPITAL)
    assert (s.trades, s.wins, s.losses, s.net_pnl_usdt, s.fees_paid_usdt) == (0, 0, 0, 0, 0)
    assert s.win_rate is None and s.profit_factor is None
    assert s.avg_hold_bars is None and s.avg_hold_s is None
    assert s.sharpe is None and s.sortino is None and s.exposure_time is None
    assert (s.roi, s.max_drawdown, s.realised_max_drawdown) == (0.0, 0.0, 0.0)
    assert s.final_equity_usdt == CAPITAL and s.per_day == {} and s.start_ts_ns is None
    doc = json.loads(jsonfmt.dumps(summary_document(s)))
    assert doc["profit_factor"] is None and doc["sharpe"] is None and doc["win_rate"] is None


def test_all_wins_profit_factor_is_inf_and_written_as_a_string() -> None:
    trades = [trade("a", 1, 60, 5.0, 0.1, "tp", 1), trade("b", 2, 60, 7.0, 0.1, "tp", 1)]
    s = summarize(trades, [], CAPITAL)
    assert s.profit_factor == math.inf and s.win_rate == 1.0
    text = jsonfmt.dumps(summary_document(s))
    assert json.loads(text)["profit_factor"] == "inf"
    assert float(json.loads(text)["profit_factor"]) == math.inf
    assert "Infinity" not in text and "NaN" not in text  # strict JSON
    assert s.final_equity_usdt == CAPITAL + 12.0  # no equity series: capital + closed PnL


def test_all_losses_profit_factor_is_zero() -> None:
    trades = [trade("a", 1, 60, -5.0, 0.1, "stop", 1), trade("b", 2, 60, -1.0, 0.1, "stop", 1)]
    s = summarize(trades, [], CAPITAL)
    assert s.profit_factor == 0.0 and s.win_rate == 0.0
    assert json.loads(jsonfmt.dumps(summary_document(s)))["profit_factor"] == 0.0
    assert s.realised_max_drawdown == pytest.approx(6 / 1000)


def test_breakeven_trades_are_neither_wins_nor_losses() -> None:
    trades = [trade("a", 1, 60, 0.0, 0.1, "max_hold", 1)]
    s = summarize(trades, [], CAPITAL)
    assert (s.trades, s.wins, s.losses, s.win_rate, s.profit_factor) == (1, 0, 0, 0.0, None)
    assert profit_factor([]) is None


def test_zero_variance_returns_give_null_sharpe_and_sortino() -> None:
    flat = [EquityPoint(DAY0 + k * 24 * H, 1000.0, 0.0) for k in range(5)]
    s = summarize([], flat, CAPITAL)
    assert s.sharpe is None and s.sortino is None
    # A constant 1 % a day: the std is float noise (~1e-18), not risk -> still undefined.
    grow = [EquityPoint(DAY0 + k * 24 * H, 1000.0 * 1.01 ** (k + 1), 0.0) for k in range(5)]
    r = daily_returns(grow, CAPITAL)
    np.testing.assert_allclose(r, 0.01, rtol=1e-12)
    assert sharpe(r) is None
    assert sortino(r) is None  # no downside at all


def test_fewer_than_two_days_gives_null_ratios() -> None:
    one_day = [EquityPoint(DAY0, 1000.0, 0.0), EquityPoint(DAY0 + H, 1010.0, 0.0)]
    s = summarize([], one_day, CAPITAL)
    assert s.sharpe is None and s.sortino is None and s.roi == pytest.approx(0.01)


def test_a_blown_account_has_no_return_series() -> None:
    eq = [EquityPoint(DAY0 + k * 24 * H, v, 0.0) for k, v in enumerate([500.0, -10.0, 5.0])]
    assert daily_returns(eq, CAPITAL).size == 0
    s = summarize([], eq, CAPITAL)
    assert s.sharpe is None and s.max_drawdown == pytest.approx(1.01)


def test_drawdown_from_the_first_bar_and_never_recovered() -> None:
    ts = np.array([0, 60, 120], dtype=np.int64) * 10**9
    dd = max_drawdown(ts, np.array([990.0, 980.0, 985.0]), CAPITAL)
    assert dd.max_fraction == pytest.approx(0.02)
    assert (dd.max_duration_s, dd.max_duration_bars, dd.max_recovered) == (120.0, 2, False)
    assert max_drawdown(ts, np.array([1000.0, 1001.0, 1002.0]), CAPITAL).max_fraction == 0.0


def test_longest_drawdown_can_differ_from_the_deepest() -> None:
    ts = np.arange(8, dtype=np.int64) * 60 * 10**9
    # Deep and short (bars 1-2), then shallow and long (bars 3..7, never recovered).
    eq = np.array([1000.0, 900.0, 1000.0, 999.0, 999.0, 999.0, 999.0, 999.0])
    dd = max_drawdown(ts, eq, CAPITAL)
    assert dd.max_fraction == pytest.approx(0.1)
    assert (dd.max_duration_bars, dd.max_duration_s, dd.max_recovered) == (2, 120.0, True)
    assert (dd.longest_duration_bars, dd.longest_duration_s) == (5, 300.0)


def test_sums_do_not_depend_on_trade_order() -> None:
    # Values chosen so that naive left-to-right float sums differ by order.
    pnl = [1e16, 1.0, -1e16, 3.3, 0.1, 0.2]
    trades = [trade(f"x{k}", k, 60, p, 0.0, "tp", 1) for k, p in enumerate(pnl)]
    a = summarize(trades, [], 1e17)
    b = summarize(trades[::-1], [], 1e17)
    assert a == b
    assert a.net_pnl_usdt == math.fsum(pnl)
    assert running_fsum(pnl)[-1] == math.fsum(pnl)
    assert running_fsum([0.1] * 10) == [math.fsum([0.1] * k) for k in range(1, 11)]


def test_initial_capital_must_be_positive() -> None:
    with pytest.raises(ValueError, match="initial capital must be positive"):
        summarize([], [], 0.0)
