"""ACB v6 (bible §10, §7.3, §19.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dolphind.alpha.acb import (
    ExternalFactors,
    W750Beta,
    base_boost,
    compute_boost,
    dynamic_beta,
    factor_signals,
    subday_exit_due,
)
from dolphind.alpha.params import CHAMPION

P = CHAMPION


@pytest.mark.parametrize(("signals", "boost"), [(1.0, 1.347), (2.0, 1.549), (3.0, 1.693)])
def test_base_boost_bible_numbers(signals: float, boost: float) -> None:
    assert base_boost(signals) == pytest.approx(boost, abs=5e-4)
    assert base_boost(signals) == pytest.approx(1 + 0.5 * math.log1p(signals))


def test_base_boost_below_one_signal_is_one() -> None:
    assert base_boost(0.5) == 1.0
    assert base_boost(0.0) == 1.0
    assert base_boost(2.5) == pytest.approx(1 + 0.5 * math.log1p(2.5))


@pytest.mark.parametrize(
    ("factors", "boost"),
    [
        (ExternalFactors(dvol_btc=85.0), 1.347),
        (ExternalFactors(dvol_btc=85.0, taker=0.75), 1.549),
        (ExternalFactors(dvol_btc=85.0, taker=0.75, funding_btc=-0.0002), 1.693),
    ],
)
def test_boost_from_factors(factors: ExternalFactors, boost: float) -> None:
    assert compute_boost(factors, P).boost == pytest.approx(boost, abs=5e-4)


def test_factor_tiers() -> None:
    w = factor_signals(ExternalFactors(funding_btc=-0.00005, dvol_btc=60.0, taker=0.85, fng=30.0), P)
    assert w == {"funding": 0.5, "dvol": 0.5, "taker": 0.5, "fng": 0.5}
    w = factor_signals(ExternalFactors(funding_btc=0.0001, dvol_btc=50.0, taker=1.0, fng=60.0), P)
    assert sum(w.values()) == 0.0


def test_fng_requires_confirmation() -> None:
    alone = compute_boost(ExternalFactors(fng=10.0, dvol_btc=40.0), P)
    assert alone.signals == 0.0 and alone.boost == 1.0
    confirmed = compute_boost(ExternalFactors(fng=10.0, dvol_btc=85.0), P)
    assert confirmed.signals == 2.0


def test_absent_factors_give_boost_one_with_reason() -> None:
    for f in (None, ExternalFactors(), ExternalFactors(dvol_btc=float("nan"))):
        b = compute_boost(f, P)
        assert b.boost == 1.0
        assert "no external factors" in b.reason


def test_reason_names_missing_factors() -> None:
    b = compute_boost(ExternalFactors(dvol_btc=85.0), P)
    assert "missing" in b.reason and "taker" in b.reason and "1.347" in b.reason


def test_dynamic_beta() -> None:
    assert dynamic_beta(0.5, 0.4, P) == 0.8
    assert dynamic_beta(0.4, 0.4, P) == 0.8
    assert dynamic_beta(0.3, 0.4, P) == 0.2


def test_subday_normalisation_rule() -> None:
    assert subday_exit_due(1.25, 1.09, P)
    assert subday_exit_due(1.6, 1.0, P)
    assert not subday_exit_due(1.24, 1.0, P)
    assert not subday_exit_due(1.5, 1.10, P)


def test_w750_beta_decides_once_per_day_against_p60() -> None:
    day = 86_400 * 10**9
    b = W750Beta(P, min_samples=10)
    vels = np.linspace(-1.0, 1.0, 20)
    for i, v in enumerate(vels):
        b.observe(i, float(v))
    # Day 0 began with 1 sample: BETA_LOW until 10 samples, then decided once at sample 10
    # (vel -0.0526 vs p60 of the first 10 values, -0.526 -> HIGH)
    first10 = vels[:10]
    assert b.threshold == pytest.approx(np.percentile(first10, 60))
    assert b.beta == 0.8
    # next day, a low velocity against the whole history -> LOW
    assert b.observe(day, -0.9) == 0.2
    assert b.threshold == pytest.approx(np.percentile(np.r_[vels, -0.9], 60))
    # same day, later bars do not change it
    assert b.observe(day + 1, 5.0) == 0.2
    assert b.observe(day + 2, float("nan")) == 0.2


def test_parse_external_factors_accepts_the_bible_names_and_ignores_the_rest() -> None:
    from dolphind.alpha.acb import parse_external_factors

    f = parse_external_factors({"funding_btc": -0.0002, "dvol_btc": 60, "fng": None,
                                "taker": 0.85, "_pushed_at": 1.7e9, "other": "x"})
    assert f == ExternalFactors(funding_btc=-0.0002, dvol_btc=60.0, fng=None, taker=0.85)
    assert compute_boost(f, CHAMPION).signals == 2.0  # 1.0 + 0.5 + 0.5


@pytest.mark.parametrize(("payload", "problem"), [
    ([1, 2], "JSON object"),
    ({"_pushed_at": 1.0}, "none of funding_btc"),
    ({"dvol_btc": "90"}, "dvol_btc: expected a number"),
    ({"fng": True}, "fng: expected a number"),
    ({"fng": 140.0}, "fng: 140.0 is outside"),
    ({"taker": -1.0}, "taker: -1.0 is outside"),
    ({"funding_btc": float("inf")}, "funding_btc: inf is outside"),
])
def test_parse_external_factors_refuses_a_bad_payload_by_name(payload: object,
                                                              problem: str) -> None:
    from dolphind.alpha.acb import parse_external_factors

    with pytest.raises(ValueError, match=problem):
        parse_external_factors(payload)


def test_w750_override_replaces_the_percentile_and_redecides_at_the_next_bar() -> None:
    from dolphind.alpha.acb import parse_w750_calibration

    day = W750Beta.DAY_NS
    b = W750Beta(CHAMPION)
    assert b.observe(day, 0.01) == CHAMPION.beta_low and math.isnan(b.threshold)
    b.set_threshold(parse_w750_calibration({"threshold": 0.005, "samples": 10}))
    assert b.observe(day + 1, 0.01) == CHAMPION.beta_high and b.threshold == 0.005
    assert b.observe(day + 2, 0.0) == CHAMPION.beta_high  # decided for the day
    assert b.observe(2 * day, 0.0) == CHAMPION.beta_low  # next day, same override
    for bad in ({"threshold": "x"}, {"threshold": 2.0}, {}, None):
        with pytest.raises(ValueError):
            parse_w750_calibration(bad)
