"""IRP asset selection (bible §5) on hand-made price paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dolphind.alpha.irp import (
    IrpGates,
    IrpScorer,
    compute_ars,
    compute_irp,
    rank_assets,
    select_asset,
)
from dolphind.alpha.price_windows import PriceWindows
from dolphind.alpha.signal import LONG, SHORT


def test_metrics_by_hand() -> None:
    prices = np.array([10.0, 9.0, 9.5, 8.5, 8.0])
    # SHORT returns: +1, -0.5, +1, +0.5 ; cumulative 1, 0.5, 1.5, 2.0
    m = compute_irp(prices, SHORT)
    assert m.mfe == pytest.approx(2.0)
    assert m.mae == 0.0
    assert m.efficiency == pytest.approx(2.0 / 1e-6)
    assert m.alignment == pytest.approx(0.75)
    assert m.noise == pytest.approx(np.var([1.0, -0.5, 1.0, 0.5]))
    assert m.latency == 1.0  # 10% of mfe (0.2) reached on the first return
    ars = 0.5 * math.log1p(2e6) + 0.35 * 0.75 - 0.15 * np.var([1.0, -0.5, 1.0, 0.5]) * 1000
    assert compute_ars(m) == pytest.approx(ars)


def test_metrics_inverse_and_flat() -> None:
    prices = np.array([10.0, 9.0, 9.5, 8.5, 8.0])
    m = compute_irp(prices, LONG)  # cumulative -1, -0.5, -1.5, -2
    assert m.mfe == pytest.approx(-0.5)
    assert m.mae == pytest.approx(2.0)
    assert m.latency == 50.0  # never moved favourably: the default
    flat = compute_irp(np.full(10, 3.0), SHORT)
    assert (flat.mfe, flat.mae, flat.efficiency, flat.alignment, flat.noise, flat.latency) == (
        0.0, 0.0, 0.0, 0.0, 0.0, 50.0,
    )


def test_latency_counts_bars_to_ten_percent_of_mfe() -> None:
    # SHORT returns: -1, -1, +0.5, +4, +4 ; cumulative -1, -2, -1.5, 2.5, 6.5 ; 10% of mfe = 0.65
    prices = np.array([100.0, 101.0, 102.0, 101.5, 97.5, 93.5])
    assert compute_irp(prices, SHORT).latency == 4.0


def _paths(n: int = 50) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(n)
    clean_down = 1.0 - 0.002 * t + 0.0002 * np.sin(t)  # falls almost every bar
    slow_down = 1.0 - 0.0005 * t + 0.0004 * ((t % 3) - 1)
    # a noisy path: big price-unit swings (price ~ 2000, ±30 a bar) -> noise ~ 900 > 500
    noisy = 2000.0 + np.cumsum(rng.choice([-30.0, 30.0], size=n))
    up = 1.0 + 0.002 * t
    return {"CLEAN": clean_down, "SLOW": slow_down, "NOISY": noisy, "UP": up}


def test_clean_downtrend_ranks_first_for_short_and_noisy_is_gated() -> None:
    paths = _paths()
    names = list(paths)
    prices = np.vstack([paths[k] for k in names])
    ranked = rank_assets(prices, SHORT)
    ranked_names = [names[r.index] for r in ranked]
    assert ranked_names[0] == "CLEAN"
    assert "NOISY" not in ranked_names  # noise > 500 in price units
    noisy = compute_irp(paths["NOISY"], SHORT)
    assert noisy.noise > 500
    sel = select_asset(prices, SHORT)
    assert sel is not None and names[sel.index] == "CLEAN" and sel.action == SHORT


def test_uptrend_wins_in_its_inverse_direction_and_fails_direction_gate() -> None:
    paths = _paths()
    prices = np.vstack([paths["UP"]])
    ranked = rank_assets(prices, SHORT)
    assert len(ranked) == 1 and ranked[0].action == LONG
    assert select_asset(prices, SHORT) is None  # direction gate: no fallback asset
    sel = select_asset(prices, LONG)
    assert sel is not None and sel.action == LONG


def test_latency_gate() -> None:
    # flat for 30 bars, then falls: 10% of mfe is reached only after bar 30 -> latency > 20
    prices = np.r_[np.full(30, 1.0), 1.0 - 0.001 * np.arange(1, 21)]
    m = compute_irp(prices, SHORT)
    assert m.latency > 20
    assert rank_assets(prices[None, :], SHORT) == []


def test_alignment_gates() -> None:
    # a rising path with a dip every 5th bar: SHORT alignment is low, the inverse (LONG)
    # profile wins, passes the filter gates, and is then dropped by the direction gate
    t = np.arange(50)
    prices = 1.0 + 0.001 * t
    prices[::5] -= 0.0005
    ranked = rank_assets(prices[None, :], SHORT)
    assert all(r.action == LONG for r in ranked)
    assert select_asset(prices[None, :], SHORT) is None
    # direct alignment between 0.20 and 0.45 passes the filter but not the 0.45 walk gate
    mixed = np.r_[1.0, 1.0 - np.cumsum(np.where(np.arange(49) % 3 == 0, 0.003, -0.0005))]
    m = compute_irp(mixed, SHORT)
    assert 0.20 <= m.alignment < 0.45
    ranked = rank_assets(mixed[None, :], SHORT)
    assert ranked and ranked[0].action == SHORT
    assert select_asset(mixed[None, :], SHORT) is None
    assert select_asset(mixed[None, :], SHORT, gates=IrpGates(min_irp_alignment=0.0)) is not None


def test_depth_gate_and_ob_sub1_adjustment() -> None:
    paths = _paths()
    prices = np.vstack([paths["CLEAN"], paths["SLOW"]])
    base = {r.index: r.ars for r in rank_assets(prices, SHORT)}
    # thin book on CLEAN (< 0.20): skipped by the depth gate, SLOW is taken instead
    sel = select_asset(prices, SHORT, depth_quality=np.array([0.1, 1.0]))
    assert sel is not None and sel.index == 1
    # OB Sub-1: deep book +5% of |ARS|, thin (< 0.5) -10%
    adj = {r.index: r.ars for r in rank_assets(prices, SHORT, depth_quality=np.array([1.5, 0.3]))}
    assert adj[0] == pytest.approx(base[0] + 0.05 * abs(base[0]))
    assert adj[1] == pytest.approx(base[1] - 0.10 * abs(base[1]))
    same = {r.index: r.ars for r in rank_assets(prices, SHORT, depth_quality=np.array([1.0, 0.5]))}
    assert same == pytest.approx(base)


def test_rows_with_missing_prices_are_not_candidates() -> None:
    paths = _paths()
    prices = np.vstack([paths["CLEAN"], paths["SLOW"]])
    prices[0, 3] = np.nan
    assert [r.index for r in rank_assets(prices, SHORT)] == [1]


def _random_matrix(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.001, 200.0, size=(n, 1))
    drift = rng.normal(0, 0.002, size=(n, 1))
    steps = rng.normal(drift, 0.003, size=(n, 49))
    return scale * np.exp(np.cumsum(np.c_[np.zeros(n), steps], axis=1))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.sampled_from([SHORT, LONG]))
def test_kernel_matches_literal_reference_and_walk(seed: int, n: int, direction: int) -> None:
    prices = _random_matrix(seed, n)
    ranked = rank_assets(prices, direction)
    for r in ranked:
        ref = compute_irp(prices[r.index], r.action)
        for field in ("mfe", "mae", "alignment", "noise", "latency"):
            assert getattr(r.metrics, field) == pytest.approx(getattr(ref, field), rel=1e-9, abs=1e-12)
        other = compute_irp(prices[r.index], -r.action)
        assert compute_ars(ref) >= compute_ars(other) or r.action != direction
    # select == the first ranked row passing the walk gates
    dq = np.random.default_rng(seed).uniform(0.0, 2.0, n)
    ranked = rank_assets(prices, direction, dq)
    walk = next(
        (r for r in ranked if r.metrics.alignment >= 0.45 and r.action == direction
         and dq[r.index] >= 0.20), None,
    )
    sel = select_asset(prices, direction, dq)
    assert (walk is None and sel is None) or (walk is not None and sel is not None and sel.index == walk.index)


def test_price_windows_ring_and_scorer_agree_with_matrix_api() -> None:
    prices = _random_matrix(3, 12)
    syms = tuple(f"S{i}" for i in range(12))
    w = PriceWindows()
    extra = np.full((12, 30), 1.0)  # 30 older bars that must fall out of the 50-bar window
    for col in np.c_[extra, prices].T:
        w.push(syms, col)
    for i in range(12):
        np.testing.assert_array_equal(w.window(i, 50), prices[i])
        assert w.last_price(i) == prices[i, -1]
    dq = np.full(12, np.nan)
    got = IrpScorer().select(w, 50, SHORT, dq, IrpGates())
    want = select_asset(prices, SHORT)
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert got.index == want.index and got.ars == pytest.approx(want.ars)


def test_price_windows_skip_missing_prices_and_grow() -> None:
    w = PriceWindows(capacity=2)
    w.push(("A", "B"), np.array([1.0, np.nan]))
    w.push(("A", "B", "C"), np.array([2.0, 5.0, 0.0]))
    assert list(w.window(w.row("A"), 10)) == [1.0, 2.0]
    assert list(w.window(w.row("B"), 10)) == [5.0]
    assert w.priced_now(w.row("B")) and not w.priced_now(w.row("C"))
    assert math.isnan(w.last_price(w.row("C")))
    assert w.row("Z") == -1
