"""The independent re-check agrees with the metrics on any trade list, and catches tampering."""

from __future__ import annotations

import json
import dataclasses
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dolphind.report import jsonfmt, tables
from dolphind.report.metrics import summarize
from dolphind.report.model import ClosedTrade
from dolphind.report.verify import VerifyError, compare, recompute_from_csv, verify_report
from dolphind.report.writer import summary_document, trades_csv_text

from .conftest import CAPITAL, DAY0

# A PnL under 1e-200 USDT (never made by a trade: float rounding leaves ~1e-17) would push
# ratios such as the profit factor past the float range, where the report's float division
# says inf and the exact recompute a finite number; both are right, they cannot agree.
_MONEY = st.floats(min_value=-5_000.0, max_value=5_000.0, allow_nan=False,
                   allow_subnormal=False).filter(lambda x: x == 0 or abs(x) >= 1e-200)


@st.composite
def trade_lists(draw: st.DrawFn) -> list[ClosedTrade]:
    n = draw(st.integers(min_value=0, max_value=40))
    out = []
    for k in range(n):
        entry = DAY0 + draw(st.integers(min_value=0, max_value=10 * 86_400)) * 10**9
        hold_s = draw(st.integers(min_value=0, max_value=3 * 86_400))
        pnl = draw(st.one_of(_MONEY, st.sampled_from([0.0, -0.0, 0.1, -0.1, 1e-9])))
        out.append(ClosedTrade(
            trade_id=f"T{k:04d}", symbol=draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])),
            side=draw(st.sampled_from(["LONG", "SHORT"])), entry_ts_ns=entry,
            exit_ts_ns=entry + hold_s * 10**9, entry_price=100.0, exit_price=101.0, qty=1.0,
            notional_usdt=100.0, leverage=2.0,
            fees_usdt=draw(st.floats(min_value=0.0, max_value=50.0, allow_subnormal=False)),
            pnl_usdt=pnl, exit_reason=draw(st.sampled_from(["tp", "stop", "max_hold", "hib"])),
            bars_held=hold_s // 60,
            funding_usdt=draw(st.one_of(st.just(0.0), st.floats(min_value=-5.0, max_value=5.0,
                                                                 allow_subnormal=False)))))
    return out


def _write_files(out: Path, trades: list[ClosedTrade], capital: float) -> None:
    """summary.json and trades.csv exactly as write_report writes them (without the charts,
    which would make a hundred examples slow)."""
    summary = summarize(trades, [], capital)
    doc = summary_document(summary, None, tables.breakdown(trades, [], summary))
    (out / "summary.json").write_text(jsonfmt.dumps(doc))
    (out / "trades.csv").write_text(trades_csv_text(trades))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trades=trade_lists(), capital=st.floats(min_value=10.0, max_value=1e7))
def test_verify_agrees_with_metrics_on_any_trade_list(trades: list[ClosedTrade],
                                                      capital: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _write_files(Path(tmp), trades, capital)
        assert verify_report(tmp) == []
        rec = recompute_from_csv(Path(tmp) / "trades.csv", capital)
    s = summarize(trades, [], capital)
    # Unrounded, the two computations agree far below the JSON's 10 decimals.
    assert (rec.trades, rec.wins, rec.losses) == (s.trades, s.wins, s.losses)
    assert rec.net_pnl_usdt == s.net_pnl_usdt  # both exactly rounded sums of the same floats
    assert rec.fees_paid_usdt == s.fees_paid_usdt
    assert math.isclose(rec.realised_max_drawdown, s.realised_max_drawdown,
                        rel_tol=1e-12, abs_tol=1e-15)
    if s.profit_factor is None or math.isinf(s.profit_factor):
        assert rec.profit_factor == s.profit_factor
    else:
        assert rec.profit_factor == pytest.approx(s.profit_factor, rel=1e-12)


def test_a_ratio_past_the_float_range_is_inf_not_a_crash(
        tmp_path: Path, hand_trades: list[ClosedTrade]) -> None:
    """A hand-edited trades.csv may hold any number: the verifier reports, it does not crash."""
    win, loss = hand_trades[0], hand_trades[1]
    trades = [dataclasses.replace(win, pnl_usdt=4.0),
              dataclasses.replace(loss, pnl_usdt=-2.2250738585072014e-308)]
    _write_files(tmp_path, trades, CAPITAL)
    rec = recompute_from_csv(tmp_path / "trades.csv", CAPITAL)
    assert rec.profit_factor == math.inf


def test_tampered_trades_csv_is_caught(tmp_path: Path, hand_trades: list[ClosedTrade]) -> None:
    _write_files(tmp_path, hand_trades, CAPITAL)
    assert verify_report(tmp_path) == []
    csv_path = tmp_path / "trades.csv"
    csv_path.write_text(csv_path.read_text().replace(",-15.0,max_hold,", ",-16.0,max_hold,"))
    problems = verify_report(tmp_path)
    assert any(p.startswith("net_pnl_usdt: summary.json says 25.0") for p in problems)
    assert any("pnl_by_exit_reason[max_hold].pnl_usdt" in p for p in problems)
    assert any("realised_max_drawdown" in p for p in problems)


def test_tampered_summary_is_caught(tmp_path: Path, hand_trades: list[ClosedTrade]) -> None:
    _write_files(tmp_path, hand_trades, CAPITAL)
    doc = json.loads((tmp_path / "summary.json").read_text())
    doc["win_rate"] = 0.75
    doc["profit_factor"] = "inf"
    doc["per_day"]["2025-05-11"]["trades"] = 3
    problems = compare(doc, recompute_from_csv(tmp_path / "trades.csv", CAPITAL))
    assert [p.split(":")[0] for p in problems] == ["win_rate", "profit_factor",
                                                   "per_day[2025-05-11].trades"]


def test_unreadable_inputs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="summary.json: cannot read"):
        verify_report(tmp_path)
    (tmp_path / "summary.json").write_text('{"initial_capital_usdt": 0}')
    with pytest.raises(VerifyError, match="no positive initial_capital_usdt"):
        verify_report(tmp_path)
    (tmp_path / "trades.csv").write_text("trade_id,pnl_usdt\nx,1.0\n")
    with pytest.raises(VerifyError, match="missing columns entry_ts_ns, exit_ts_ns"):
        recompute_from_csv(tmp_path / "trades.csv", CAPITAL)
    (tmp_path / "trades.csv").write_text(
        "trade_id,entry_ts_ns,exit_ts_ns,fees_usdt,pnl_usdt,exit_reason,symbol,side,notional_usdt"
        "\nx,1,2,0.0,nan,tp,BTCUSDT,LONG,100.0\n")
    with pytest.raises(VerifyError, match="not a finite number"):
        recompute_from_csv(tmp_path / "trades.csv", CAPITAL)


def test_trade_funding_is_checked_per_group(tmp_path: Path,
                                            hand_trades: list[ClosedTrade]) -> None:
    """Issue 16: trades.csv's funding_usdt column feeds the per-pair / per-exit-reason tables;
    a summary whose funding disagrees with it is caught, a trades.csv without it (written
    before funding was modelled) is still read."""
    import dataclasses
    trades = [dataclasses.replace(t, funding_usdt=0.25 * (k + 1))
              for k, t in enumerate(hand_trades)]
    _write_files(tmp_path, trades, CAPITAL)
    assert verify_report(tmp_path) == []
    doc = json.loads((tmp_path / "summary.json").read_text())
    pair = sorted(doc["per_pair"])[0]
    assert doc["per_pair"][pair]["funding_usdt"] != 0.0
    doc["per_pair"][pair]["funding_usdt"] += 1.0
    (tmp_path / "summary.json").write_text(json.dumps(doc))
    assert any(f"per_pair[{pair}].funding_usdt" in p for p in verify_report(tmp_path))
    # An old trades.csv (no funding column) and its summary: still clean.
    old = tmp_path / "old"
    old.mkdir()
    _write_files(old, hand_trades, CAPITAL)
    lines = (old / "trades.csv").read_text().splitlines()
    (old / "trades.csv").write_text("\n".join(",".join(x.split(",")[:-1]) for x in lines) + "\n")
    doc = json.loads((old / "summary.json").read_text())
    for table in ("per_pair", "per_exit_reason", "per_side"):
        for g in doc[table].values():
            g.pop("funding_usdt")
    (old / "summary.json").write_text(json.dumps(doc))
    assert verify_report(old) == []
