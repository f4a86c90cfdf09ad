"""Signal layer (bible §4): gate, confidence, extreme, LONG mirror, DC, OB Sub-2."""

from __future__ import annotations

import numpy as np
import pytest

from dolphind.alpha.signal import (
    LONG,
    SHORT,
    book_confirmation,
    direction_confirmation,
    is_extreme,
    rolling_vol,
    short_confidence,
    short_equivalent,
    signal_direction,
    vel_div_trend,
    vol_regime_ok,
)

THR, EXT = -0.02, -0.05


@pytest.mark.parametrize(
    ("vel_div", "expected"),
    [(-0.02, 0.50), (-0.035, 0.50 + 0.5 * 0.40), (-0.05, 0.90), (-0.20, 0.90), (0.01, 0.50)],
)
def test_confidence_by_ratio(vel_div: float, expected: float) -> None:
    # ratio = clamp((-0.02 - vd) / 0.03, 0, 1); confidence = 0.5 + 0.4 * ratio
    assert short_confidence(vel_div, THR, EXT) == pytest.approx(expected, abs=1e-12)


def test_confidence_is_monotone_between_threshold_and_extreme() -> None:
    vds = np.linspace(-0.02, -0.05, 31)
    conf = [short_confidence(v, THR, EXT) for v in vds]
    assert all(b >= a for a, b in zip(conf, conf[1:]))


def test_short_gate_is_strict() -> None:
    assert signal_direction(-0.02, THR, False, 0.01) == 0
    assert signal_direction(-0.0200001, THR, False, 0.01) == SHORT
    assert signal_direction(float("nan"), THR, True, 0.01) == 0


def test_long_path_is_off_by_default_and_mirrors_when_on() -> None:
    assert signal_direction(0.05, THR, False, 0.01) == 0
    assert signal_direction(0.05, THR, True, 0.01) == LONG
    assert signal_direction(0.01, THR, True, 0.01) == 0
    # +0.04 is as far past the LONG gate as -0.05 is past the SHORT gate
    assert short_equivalent(0.04, LONG, THR, 0.01) == pytest.approx(-0.05)
    assert short_equivalent(-0.03, SHORT, THR, 0.01) == -0.03


def test_extreme_flag() -> None:
    assert is_extreme(-0.05, EXT)
    assert is_extreme(-0.06, EXT)
    assert not is_extreme(-0.0499, EXT)


def _path(p0: float, p1: float, n: int = 8) -> np.ndarray:
    prices = np.full(n, 100.0)
    prices[-8] = p0
    prices[-1] = p1
    return prices


def test_dc_confirm_contradict_neutral_short() -> None:
    # 7-bar lookback: p0 = price[n-8], p1 = price[n-1]; 1 bp of 100 is 0.01
    assert direction_confirmation(_path(100.0, 99.99), 7, 0.75, SHORT) == "CONFIRM"  # -1 bp
    assert direction_confirmation(_path(100.0, 100.01), 7, 0.75, SHORT) == "CONTRADICT"  # +1 bp
    assert direction_confirmation(_path(100.0, 100.005), 7, 0.75, SHORT) == "NEUTRAL"  # +0.5 bp
    assert direction_confirmation(_path(100.0, 99.995), 7, 0.75, SHORT) == "NEUTRAL"


def test_dc_reads_exactly_lookback_plus_one_bars_back() -> None:
    prices = np.array([50.0, 100.0, 100, 100, 100, 100, 100, 100, 100.02])
    # price[n-8] is 100.0 (not the 50.0 before it): +2 bp -> contradict
    assert direction_confirmation(prices, 7, 0.75, SHORT) == "CONTRADICT"
    assert direction_confirmation(prices[-7:], 7, 0.75, SHORT) == "NEUTRAL"  # too short


def test_dc_long_is_mirrored() -> None:
    assert direction_confirmation(_path(100.0, 100.01), 7, 0.75, LONG) == "CONFIRM"
    assert direction_confirmation(_path(100.0, 99.99), 7, 0.75, LONG) == "CONTRADICT"


def test_ob_sub2_confirm_boost_capped_at_15pct() -> None:
    # SHORT: eff_imb = -imbalance_ma5 = 0.2; boost = min(0.15, 0.2 * 0.8 * 0.5) = 0.08
    r = book_confirmation(-0.2, 0.8, SHORT)
    assert not r.skip and r.confidence_mult == pytest.approx(1.08)
    assert book_confirmation(-0.9, 1.0, SHORT).confidence_mult == pytest.approx(1.15)


def test_ob_sub2_hard_skip_and_dampen() -> None:
    assert book_confirmation(0.2, 0.7, SHORT).skip  # eff -0.2, persistence > 0.6
    soft = book_confirmation(0.2, 0.5, SHORT)  # not persistent: dampen 1 - 0.2*0.5*0.4 = 0.96
    assert not soft.skip and soft.confidence_mult == pytest.approx(0.96)
    floor = book_confirmation(0.12, 1.0, SHORT)  # 1 - 0.12*0.4 = 0.952
    assert floor.confidence_mult == pytest.approx(0.952)
    assert book_confirmation(0.5, 0.55, SHORT).confidence_mult == pytest.approx(0.89)


def test_ob_sub2_dampen_floor_is_085() -> None:
    r = book_confirmation(1.0, 0.6, SHORT)  # eff -1.0, persistence exactly 0.6: not a skip
    assert not r.skip and r.confidence_mult == pytest.approx(0.85)


def test_ob_sub2_neutral_and_missing() -> None:
    assert book_confirmation(0.05, 1.0, SHORT).confidence_mult == 1.0
    assert book_confirmation(float("nan"), 1.0, SHORT).confidence_mult == 1.0
    assert book_confirmation(0.2, 0.8, LONG).confidence_mult == pytest.approx(1.08)


def test_vel_div_trend_uses_minus_10() -> None:
    hist = [-0.001 * i for i in range(12)]  # hist[-10] is -0.002, hist[-1] is -0.011
    assert vel_div_trend(hist) == pytest.approx(-0.011 - (-0.002))
    assert vel_div_trend(hist[:9]) == 0.0


def test_vol_gate() -> None:
    assert vol_regime_ok(float("nan"), None)
    assert not vol_regime_ok(float("nan"), 0.001)
    prices = 100.0 * np.cumprod(np.r_[1.0, np.tile([1.001, 1 / 1.001], 25)])
    v = rolling_vol(prices, 50)
    assert v == pytest.approx(np.std(np.diff(prices) / prices[:-1]))
    assert vol_regime_ok(v, v / 2) and not vol_regime_ok(v, v * 2)
