"""Exit management (bible §7)."""

from __future__ import annotations

import pytest

from dolphind.alpha.exits import (
    FIXED_TP,
    HIBERNATE_HALT,
    MAX_HOLD,
    STOP_LOSS,
    SUBDAY_ACB_NORMALIZATION,
    BookStress,
    dynamic_levels,
    evaluate_exit,
    pnl_pct,
)
from dolphind.alpha.params import CHAMPION

P = CHAMPION
SHORT = -1


def _book(cascade: int = 0, regime: int = 0, imb: float = 0.0, wv: float = 0.0) -> BookStress:
    return BookStress(cascade, regime, imb, wv)


def test_pnl_sign() -> None:
    assert pnl_pct(100.0, 99.0, SHORT) == pytest.approx(0.01)
    assert pnl_pct(100.0, 101.0, 1) == pytest.approx(0.01)


def test_fixed_tp_at_95_bps() -> None:
    assert evaluate_exit(P, 100.0, 99.06, SHORT, 3, None) is None  # 94 bps
    d = evaluate_exit(P, 100.0, 99.05, SHORT, 3, None)  # 95 bps
    assert d is not None and d.reason == FIXED_TP and d.pnl_pct == pytest.approx(0.0095)


def test_stop_is_effectively_off() -> None:
    assert evaluate_exit(P, 100.0, 150.0, SHORT, 3, None) is None
    d = evaluate_exit(P, 100.0, 200.0, SHORT, 3, None)
    assert d is not None and d.reason == STOP_LOSS


def test_max_hold_120() -> None:
    assert evaluate_exit(P, 100.0, 100.1, SHORT, 119, None) is None
    d = evaluate_exit(P, 100.0, 100.1, SHORT, 120, None)
    assert d is not None and d.reason == MAX_HOLD


def test_tp_has_priority_over_max_hold() -> None:
    d = evaluate_exit(P, 100.0, 99.0, SHORT, 500, None)
    assert d is not None and d.reason == FIXED_TP


def test_cascade_widens_tp_and_halves_hold() -> None:
    lv = dynamic_levels(P, SHORT, 0.0, _book(cascade=3))
    assert lv.tp_pct == pytest.approx(0.0095 * 1.4) and lv.max_hold_bars == 60
    # 1% profit would be a TP normally; under a cascade TP is 1.33%
    assert evaluate_exit(P, 100.0, 99.0, SHORT, 10, _book(cascade=1)) is None
    d = evaluate_exit(P, 100.0, 100.0, SHORT, 60, _book(cascade=1))
    assert d is not None and d.reason == MAX_HOLD


def test_withdrawal_hard_stop_and_earlier_tp() -> None:
    b = _book(regime=1)
    lv = dynamic_levels(P, SHORT, 0.001, b)
    assert lv.sl_pct == 0.10 and lv.tp_pct == pytest.approx(0.0095 * 0.6)
    assert dynamic_levels(P, SHORT, -0.001, b).tp_pct == 0.0095  # only when in profit
    d = evaluate_exit(P, 100.0, 99.4, SHORT, 5, b)  # +60 bps >= 57 bps
    assert d is not None and d.reason == FIXED_TP
    d = evaluate_exit(P, 100.0, 110.0, SHORT, 5, b)  # -10%
    assert d is not None and d.reason == STOP_LOSS
    # book opposing (SHORT: imbalance_ma5 > 0.10 is buy pressure) -> hold 48
    assert dynamic_levels(P, SHORT, 0.0, _book(regime=1, imb=0.2)).max_hold_bars == 48


def test_calm_and_favourable_lets_winners_run() -> None:
    assert dynamic_levels(P, SHORT, 0.0, _book(regime=-1, imb=-0.2)).max_hold_bars == 180
    assert dynamic_levels(P, SHORT, 0.0, _book(regime=-1, imb=0.2)).max_hold_bars == 120


def test_per_asset_withdrawal() -> None:
    lv = dynamic_levels(P, SHORT, 0.002, _book(wv=-0.3))
    assert lv.max_hold_bars == 48 and lv.tp_pct == pytest.approx(0.0095 * 0.75)
    calm = dynamic_levels(P, SHORT, 0.0, _book(regime=-1, imb=-0.2, wv=-0.3))
    assert calm.max_hold_bars == 48
    # not under cascade / stress
    assert dynamic_levels(P, SHORT, 0.0, _book(cascade=1, wv=-0.3)).max_hold_bars == 60
    assert dynamic_levels(P, SHORT, 0.002, _book(regime=1, wv=-0.3)).tp_pct == pytest.approx(0.0095 * 0.6)


def test_forced_exits_come_first() -> None:
    d = evaluate_exit(P, 100.0, 99.0, SHORT, 500, None, hibernate=True, subday_acb_exit=True)
    assert d is not None and d.reason == SUBDAY_ACB_NORMALIZATION
    d = evaluate_exit(P, 100.0, 99.0, SHORT, 500, None, hibernate=True)
    assert d is not None and d.reason == HIBERNATE_HALT


def test_missing_price_only_allows_forced_and_time_exits() -> None:
    nan = float("nan")
    assert evaluate_exit(P, 100.0, nan, SHORT, 5, None) is None
    d = evaluate_exit(P, 100.0, nan, SHORT, 120, None)
    assert d is not None and d.reason == MAX_HOLD


def test_exit_pnl_has_no_friction() -> None:
    d = evaluate_exit(P, 100.0, 99.0, SHORT, 1, None)
    assert d is not None and d.pnl_pct == pytest.approx(0.01, abs=1e-15)
