"""Sizing (bible §6, §13.3): strength, cubic leverage, buckets, alpha layers, fraction, ceiling."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dolphind.alpha.params import CHAMPION
from dolphind.alpha.sizing import (
    BUCKET_EXTREME,
    BUCKET_MODERATE,
    BUCKET_STRONG,
    BUCKET_WEAK,
    bucket_boost,
    dynamic_leverage,
    effective_fraction,
    final_leverage,
    leverage_ceiling,
    market_ob_mult,
    regime_size_mult,
    signal_bucket,
    size_position,
    streak_mult,
    strength_score,
    trend_mult,
)

P = CHAMPION
THR, EXT = P.vel_div_threshold, P.vel_div_extreme


@pytest.mark.parametrize(("s", "lev"), [(0.0, 0.5), (0.5, 0.5 + 0.125 * 4.5), (1.0, 5.0)])
def test_cubic_leverage(s: float, lev: float) -> None:
    assert dynamic_leverage(s, P) == pytest.approx(lev, abs=1e-12)


def test_strength() -> None:
    assert strength_score(-0.02, THR, EXT) == 0.0
    assert strength_score(-0.035, THR, EXT) == pytest.approx(0.5)
    assert strength_score(-0.05, THR, EXT) == 1.0
    assert strength_score(-0.3, THR, EXT) == 1.0
    assert strength_score(0.1, THR, EXT) == 0.0


def test_bucket_edges() -> None:
    e0 = EXT * 1.5  # -0.07500000000000001 in floating point, as the bible computes it
    mid = (THR + EXT) / 2
    assert signal_bucket(e0, THR, EXT) == BUCKET_EXTREME
    assert signal_bucket(-0.08, THR, EXT) == BUCKET_EXTREME
    assert signal_bucket(-0.075 + 1e-9, THR, EXT) == BUCKET_STRONG
    assert signal_bucket(EXT, THR, EXT) == BUCKET_STRONG
    assert signal_bucket(EXT + 1e-9, THR, EXT) == BUCKET_MODERATE
    assert signal_bucket(mid, THR, EXT) == BUCKET_MODERATE
    assert signal_bucket(mid + 1e-9, THR, EXT) == BUCKET_WEAK
    assert signal_bucket(-0.021, THR, EXT) == BUCKET_WEAK


@pytest.mark.parametrize(
    ("wins", "trades", "boost"),
    [(0, 0, 1.0), (7, 10, 1.3), (6, 10, 1.1), (61, 100, 1.3), (56, 100, 1.1), (55, 100, 1.0),
     (39, 100, 0.7), (40, 100, 0.85), (44, 100, 0.85), (45, 100, 1.0), (1, 1, 1.3), (0, 1, 0.7)],
)
def test_bucket_boost_tiers(wins: int, trades: int, boost: float) -> None:
    assert bucket_boost(wins, trades) == boost


@pytest.mark.parametrize(
    ("history", "mult"),
    [((), 1.1), ((False,), 1.1), ((True, False, False), 1.0), ((False, False, False), 0.7),
     ((False, False, False, False, True), 0.5), ((False,) * 4 + (True,) * 5, 1.1),
     ((True, False, False, False, True), 0.7)],
)
def test_streak(history: tuple[bool, ...], mult: float) -> None:
    assert streak_mult(history) == mult


def test_trend() -> None:
    assert trend_mult(-0.011) == 1.3
    assert trend_mult(-0.01) == 1.0
    assert trend_mult(0.011) == 0.7
    assert trend_mult(0.0) == 1.0


def test_fraction_by_hand() -> None:
    # strength 0.5, not extreme: base 0.02 + 0.5 * 0.18 = 0.11; x 0.55/0.95 = 0.0636842...
    f = effective_fraction(0.5, False, 1.0, 1.0, 1.0, P)
    assert f == pytest.approx(0.11 * 0.55 / 0.95)
    # strength 0: 0.02 * 0.578 < 0.02 -> clamped up to 0.02
    assert effective_fraction(0.0, False, 1.0, 1.0, 1.0, P) == 0.02
    # extreme: 0.20 * 0.70/0.95 * 2.0 = 0.2947 -> clamped to 0.20
    assert effective_fraction(1.0, True, 1.0, 1.0, 1.0, P) == 0.20
    # layers multiply: 0.11 * 0.55/0.95 * 1.3 * 0.85 * 1.1
    f2 = effective_fraction(0.5, False, 1.3, 0.85, 1.1, P)
    assert f2 == pytest.approx(0.11 * 0.55 / 0.95 * 1.3 * 0.85 * 1.1)


def test_regime_size_mult() -> None:
    # beta 0.8, vel_div -0.035 -> strength_cubic 0.125: 1.347 * (1 + 0.1) * 0.5
    assert regime_size_mult(-0.035, 1.347, 0.8, 0.5, P) == pytest.approx(1.347 * 1.1 * 0.5)
    assert regime_size_mult(-0.035, 1.347, 0.0, 1.0, P) == 1.347
    assert regime_size_mult(float("nan"), 1.0, 0.8, 1.0, P) == 1.0


def test_ceiling_and_stalker_cap() -> None:
    assert leverage_ceiling(1.0, 1.0, False, P) == 5.0
    assert leverage_ceiling(1.5, 1.0, False, P) == 6.0  # 7.5 capped at abs max
    assert leverage_ceiling(0.5, 1.0, False, P) == 2.5
    assert leverage_ceiling(1.5, 1.0, True, P) == 2.0
    assert final_leverage(5.0, 1.0, 1.5, 1.0, 6.0, P) == 6.0
    assert final_leverage(0.5, 1.0, 0.5, 1.0, 2.5, P) == 0.5  # floor


def test_market_ob_mult_bounds() -> None:
    assert market_ob_mult(float("nan")) == 1.0
    assert market_ob_mult(0.1) == pytest.approx(1.1)
    assert market_ob_mult(0.5) == pytest.approx(1.2)
    assert market_ob_mult(-0.5) == pytest.approx(0.85)


def test_size_position_notional_is_capital_fraction_leverage() -> None:
    r = size_position(10_000.0, -0.035, 0.0, 0, 0, (), 1.0, 1.0, False, P)
    assert r.leverage == pytest.approx(0.5 + 0.125 * 4.5)
    assert r.fraction == pytest.approx(0.11 * 0.55 / 0.95 * 1.1)  # streak 1.1 (no losses)
    assert r.notional == pytest.approx(10_000.0 * r.fraction * r.leverage)


vd_st = st.floats(-0.5, 0.0, allow_nan=False)
mult_st = st.floats(0.3, 3.0, allow_nan=False)


@given(vd_st, mult_st, st.floats(0.85, 1.2), st.booleans(), st.floats(-0.05, 0.05),
       st.integers(0, 50), st.integers(0, 50), st.lists(st.booleans(), max_size=8))
def test_leverage_within_min_and_ceiling_and_fraction_within_clamp(
    vd: float, rsm: float, ob: float, stalker: bool, trend: float, wins: int, extra: int,
    history: list[bool],
) -> None:
    r = size_position(1000.0, vd, trend, wins, wins + extra, tuple(history), rsm, ob, stalker, P)
    assert P.min_leverage <= r.leverage <= r.ceiling + 1e-12
    assert r.ceiling <= P.abs_max_leverage
    if stalker:
        assert r.ceiling <= P.stalker_max_leverage
    assert P.min_fraction <= r.fraction <= P.fraction
    assert r.notional == pytest.approx(1000.0 * r.fraction * r.leverage)


def test_ceiling_wins_over_floor_if_ever_below() -> None:
    p = dataclasses.replace(P, max_leverage=0.05)
    r = size_position(1000.0, -0.05, 0.0, 0, 0, (), 1.0, 1.0, False, p)
    assert r.leverage == r.ceiling == pytest.approx(0.05)
