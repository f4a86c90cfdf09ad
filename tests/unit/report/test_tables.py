"""The freqtrade-style breakdown (dolphind/report/tables.py) against a hand computation on a
small real data set: the 12 trades of a real backtest of data/sample (tests/data/report, see
PROVENANCE.md). The expected figures were computed outside dolphind with awk over the CSV:

    awk -F, 'NR>1{p[$2]+=$14; n[$2]++; pct[$2]+=100*$14/$11; d[substr($5,1,10)]+=$14; ...}'

and are written here as literals; the streaks and durations were read off the CSV by eye
(exit order W L L L L W L L W L L W; holds 18/120/120/120/120/120/120/120/72/120/120/11 min).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dolphind.report import jsonfmt, tables
from dolphind.report.metrics import summarize
from dolphind.report.model import ClosedTrade, EquityPoint
from dolphind.report.verify import verify_report
from dolphind.report.writer import summary_document, trades_csv_text

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "report" / "sample_trades.csv"
CAPITAL = 10_000.0
approx = pytest.approx


def load() -> list[ClosedTrade]:
    with SAMPLE.open(newline="") as fh:
        return [ClosedTrade(r["trade_id"], r["symbol"], r["side"], int(r["entry_ts_ns"]),
                            int(r["exit_ts_ns"]), float(r["entry_price"]),
                            float(r["exit_price"]), float(r["qty"]), float(r["notional_usdt"]),
                            float(r["leverage"]), float(r["fees_usdt"]), float(r["pnl_usdt"]),
                            r["exit_reason"], int(r["bars_held"]))
                for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def b() -> tables.Breakdown:
    trades = load()
    return tables.breakdown(trades, [], summarize(trades, [], CAPITAL))


def test_per_pair_by_hand(b: tables.Breakdown) -> None:
    assert list(b.per_pair) == ["AVAXUSDT", "BNBUSDT", "ETCUSDT", "SOLUSDT", "SUIUSDT",
                                "XRPUSDT"]
    avax, sui, bnb = b.per_pair["AVAXUSDT"], b.per_pair["SUIUSDT"], b.per_pair["BNBUSDT"]
    assert (avax.trades, avax.wins, avax.draws, avax.losses) == (4, 3, 0, 1)
    assert avax.pnl_usdt == approx(-142.344886669828, abs=1e-9)
    assert avax.avg_profit_pct == approx(0.076157658901, abs=1e-9)
    assert avax.total_pct == approx(-1.42344886669828, abs=1e-9)  # of 10,000 capital
    assert avax.avg_duration_s == 4845.0  # (120 + 120 + 72 + 11) min / 4
    assert avax.win_rate == 0.75
    assert (sui.trades, sui.wins, sui.losses) == (3, 1, 2)
    assert sui.pnl_usdt == approx(5.651592634263, abs=1e-9)
    assert sui.avg_profit_pct == approx(-0.229341036281, abs=1e-9)
    assert sui.avg_duration_s == 5160.0  # (18 + 120 + 120) min / 3
    assert bnb.pnl_usdt == approx(-60.777961210643, abs=1e-9)
    assert b.per_pair["XRPUSDT"].avg_profit_pct == approx(-1.349362132888, abs=1e-9)


def test_per_exit_reason_and_side_by_hand(b: tables.Breakdown) -> None:
    tp, mh = b.per_exit_reason["FIXED_TP"], b.per_exit_reason["MAX_HOLD"]
    assert (tp.trades, tp.wins, tp.losses) == (3, 3, 0)
    assert tp.pnl_usdt == approx(15.382370571706, abs=1e-9)
    assert tp.avg_duration_s == approx((18 + 72 + 11) * 60 / 3)
    assert (mh.trades, mh.wins, mh.losses) == (9, 1, 8)
    assert mh.pnl_usdt == approx(-215.999237866167, abs=1e-9)
    assert mh.avg_duration_s == 7200.0
    assert list(b.per_side) == ["SHORT"] and b.per_side["SHORT"].trades == 12


def test_best_worst_streaks_expectancy_sqn_by_hand(b: tables.Breakdown) -> None:
    assert b.best_pair == tables.Named("SUIUSDT", approx(5.651592634263, abs=1e-9))
    assert b.worst_pair is not None and b.worst_pair.name == "AVAXUSDT"
    assert b.best_trade is not None and b.best_trade.trade_id == "000001-SUIUSDT"
    assert b.worst_trade is not None and b.worst_trade.trade_id == "000003-AVAXUSDT"
    assert b.best_day is not None and b.best_day.name == "2025-05-11"
    assert b.best_day.pnl_usdt == approx(1.339135736170, abs=1e-9)
    assert b.worst_day is not None and b.worst_day.name == "2025-05-10"
    assert b.worst_day.pnl_usdt == approx(-201.463543553704, abs=1e-9)
    assert (b.winning_days, b.drawn_days, b.losing_days) == (1, 0, 2)
    assert (b.max_consecutive_wins, b.max_consecutive_losses) == (1, 4)
    assert b.avg_win_duration_s == (18 + 120 + 72 + 11) * 60 / 4  # the four winners' holds
    assert b.avg_loss_duration_s == 7200.0  # all eight losers ran to MAX_HOLD
    assert b.expectancy_usdt == approx(-16.718072274538, abs=1e-9)
    assert b.avg_win_usdt == approx(3.848657760325, abs=1e-9)
    assert b.avg_loss_usdt == approx(27.001437291970, abs=1e-9)
    assert b.expectancy_ratio == approx(-0.619154902525, abs=1e-9)
    assert b.sqn == approx(-1.2866037042, abs=1e-8)
    assert b.funding_paid_usdt is None  # not modelled: said, not zero


def test_cagr_calmar_drawdown_dates_market_change() -> None:
    day = 86_400 * 10**9
    t0 = 1_746_835_200_000_000_000
    eq = [EquityPoint(t0, 10_000.0, 0.0), EquityPoint(t0 + day, 11_000.0, 0.0),
          EquityPoint(t0 + 2 * day, 9_900.0, 0.0), EquityPoint(t0 + 3 * day, 10_500.0, 0.0),
          EquityPoint(t0 + 365 * day, 12_100.0, 0.0)]
    s = summarize([], eq, 10_000.0)
    b = tables.breakdown([], eq, s, {"BTCUSDT": (100.0, 110.0), "ETHUSDT": (50.0, 45.0),
                                     "BAD": (float("nan"), 3.0)})
    assert b.cagr == approx(0.21)  # 12,100 / 10,000 over exactly 365 days
    assert s.max_drawdown == approx(0.1)  # 11,000 -> 9,900
    assert b.calmar == approx(2.1)
    assert (b.drawdown_start_ts_ns, b.drawdown_end_ts_ns) == (t0 + day, t0 + 2 * day)
    assert b.market_change == approx(0.0)  # (+10 % - 10 %) / 2; the NaN symbol left out
    assert b.market_change_by_symbol == {"BTCUSDT": approx(0.1), "ETHUSDT": approx(-0.1)}
    # freqtrade's count: a day of the run without a closed trade is a drawn day
    one = ClosedTrade("1", "BTCUSDT", "LONG", t0, t0 + 60 * 10**9, 1.0, 2.0, 1.0, 1.0, 1.0,
                      0.0, 1.0, "TP", 1)
    s1 = summarize([one], eq[:4], 10_000.0)
    b1 = tables.breakdown([one], eq[:4], s1)
    assert (b1.winning_days, b1.drawn_days, b1.losing_days) == (1, 3, 0)
    assert b1.avg_loss_duration_s is None and b1.avg_win_duration_s == 60.0
    flat = tables.breakdown([], [], summarize([], [], 10_000.0))
    assert flat.cagr is None and flat.calmar is None and flat.best_pair is None
    assert flat.drawdown_start_ts_ns is None and flat.sqn is None


def test_verifier_checks_the_new_tables_and_catches_tampering(tmp_path: Path) -> None:
    trades = load()
    summary = summarize(trades, [], CAPITAL)
    doc = summary_document(summary, None, tables.breakdown(trades, [], summary))
    (tmp_path / "trades.csv").write_text(trades_csv_text(trades))
    (tmp_path / "summary.json").write_text(jsonfmt.dumps(doc))
    assert verify_report(tmp_path) == []
    for path, value in ((("per_pair", "SUIUSDT", "pnl_usdt"), 5.7),
                        (("per_exit_reason", "FIXED_TP", "draws"), 1),
                        (("best_trade", "trade_id"), "000009-AVAXUSDT"),
                        (("max_consecutive_losses",), 3), (("sqn",), -1.3)):
        bad = json.loads(jsonfmt.dumps(doc))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        (tmp_path / "summary.json").write_text(json.dumps(bad))
        problems = verify_report(tmp_path)
        assert problems and path[0] in problems[0], (path, problems)
