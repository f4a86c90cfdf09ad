"""Book features (SPEC §1, bible §9/§26.2) against hand calculations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dolphind.config import BookConfig
from dolphind.events import Depth5
from dolphind.feed.book import BookState
from dolphind.feed.parse import FrameParser
from tests.fakes.binance import read_frames

T = 1626992741257
AKRO = Depth5("AKROUSDT", T, [0.01731, 0.01730, 0.01729, 0.01728, 0.01727],
              [57618.0, 183887.0, 712308.0, 809124.0, 1096926.0],
              [0.01732, 0.01733, 0.01734, 0.01735, 0.01736],
              [72524.0, 355270.0, 396300.0, 359895.0, 874535.0])


def state(symbols: tuple[str, ...] = ("AKROUSDT", "KEEPUSDT"), **cfg: float) -> BookState:
    settings_ = BookConfig(**cfg)  # type: ignore[arg-type]
    return BookState(symbols, lambda: settings_, bar_seconds=5)


def snap(symbol: str, t: int, bid_qty: float, ask_qty: float, mid: float = 100.0) -> Depth5:
    return Depth5(symbol, t, [mid - 0.05 - i * 0.1 for i in range(5)], [bid_qty] * 5,
                  [mid + 0.05 + i * 0.1 for i in range(5)], [ask_qty] * 5)


def test_instant_features_of_the_first_real_akro_snapshot() -> None:
    s = state()
    s.on_depth(0, AKRO)
    f = s.sample(T * 1_000_000, T + 1000, None).features
    bid = 57618 + 183887 + 712308 + 809124 + 1096926  # 2 859 863
    ask = 72524 + 355270 + 396300 + 359895 + 874535  # 2 058 524
    assert f["imbalance"][0] == pytest.approx((bid - ask) / (bid + ask))  # 0.16293
    mid = (0.01731 + 0.01732) / 2
    assert f["spread_bps"][0] == pytest.approx(0.00001 / mid * 1e4)  # 5.775 bps
    # every level lies within 1 % of mid (mid +- 0.000173): all ten count
    notional = sum(p * q for p, q in zip(AKRO.bid_px + AKRO.ask_px, AKRO.bid_qty + AKRO.ask_qty))
    assert f["depth_1pct_usd"][0] == pytest.approx(notional)
    assert f["best_bid"][0] == 0.01731 and f["best_ask"][0] == 0.01732
    assert math.isnan(f["imbalance"][1])  # KEEPUSDT has no book: unknown, not zero


def test_depth_outside_one_percent_is_excluded() -> None:
    s = state(("X",))
    s.on_depth(0, Depth5("X", T, [100.0, 98.0], [1.0, 5.0], [101.0, 103.0], [2.0, 7.0]))
    f = s.sample(T * 1_000_000, T, None).features
    # mid 100.5, band +-1.005: 100 bid and 101 ask count; 98 and 103 do not
    assert f["depth_1pct_usd"][0] == pytest.approx(100.0 * 1.0 + 101.0 * 2.0)


def test_rolling_features_ma_persistence_quality_velocity() -> None:
    s = state(("X",), imbalance_ma_bars=5, persistence_bars=4, depth_median_bars=3,
              withdrawal_bars=2)
    # bid/ask quantities per bar -> imbalance +0.5, +0.5, -0.5, +0.5, +0.5, +0.5
    quantities = [(3, 1), (3, 1), (1, 3), (3, 1), (3, 1), (3, 1)]
    snaps = []
    for k, (b, a) in enumerate(quantities):
        s.on_depth(0, snap("X", T + k * 5000, b, a))
        snaps.append(s.sample((T + k * 5000) * 1_000_000, T + k * 5000, None))
    last = snaps[-1].features
    assert last["imbalance"][0] == pytest.approx(0.5)
    # MA over the last 5 samples: (0.5 - 0.5 + 0.5 + 0.5 + 0.5) / 5
    assert last["imbalance_ma5"][0] == pytest.approx(0.3)
    # persistence over the last 4 samples: signs -, +, +, + vs current + -> 3/4
    assert last["imbalance_persistence"][0] == pytest.approx(0.75)
    # every snapshot has the same depth -> quality 1, velocity 0
    assert last["depth_quality"][0] == pytest.approx(1.0)
    assert last["withdrawal_velocity"][0] == pytest.approx(0.0)


def test_withdrawal_velocity_cascade_and_regime() -> None:
    syms = ("A", "B", "C", "D")
    s = state(syms, withdrawal_bars=1, cascade_window_bars=2, cascade_drop=0.3,
              stress_cascades=3, depth_median_bars=3)
    for k in range(3):  # a steady book everywhere
        for i, sym in enumerate(syms):
            s.on_depth(i, snap(sym, T + k * 5000, 10, 10))
        s.sample(0, T + k * 5000, None)
    macro = s.latest.macro  # type: ignore[union-attr]
    assert (macro.cascade_count, macro.regime_signal) == (0, -1)  # calm
    t = T + 3 * 5000
    for i, sym in enumerate(syms):  # three symbols lose 60 % of their depth in one bar
        s.on_depth(i, snap(sym, t, 4 if i < 3 else 10, 4 if i < 3 else 10))
    f = s.sample(0, t, None)
    assert f.macro.cascade_count == 3 and f.macro.regime_signal == 1  # withdrawal stress
    # velocity = (4 - 10) / 10 per 5 s bar = -0.12 / s
    assert f.features["withdrawal_velocity"][0] == pytest.approx(-0.6 / 5)
    assert f.features["depth_quality"][0] == pytest.approx(0.4)  # 4 vs median 10
    assert f.features["depth_quality"][3] == pytest.approx(1.0)


def test_fill_probability_is_queue_depletion_by_traded_volume() -> None:
    s = state(("X", "Y"))
    s.on_depth(0, snap("X", T, 10, 30))  # touch queue = (10 + 30) / 2 = 20
    s.on_depth(1, snap("Y", T, 10, 30))
    f = s.sample(0, T, [20.0, 0.0]).features
    assert f["fill_probability"][0] == pytest.approx(1 - math.exp(-1))  # traded = queue
    assert f["fill_probability"][1] == 0.0  # nothing traded
    assert np.isnan(s.sample(0, T, None).features["fill_probability"]).all()  # no trades known


def test_stale_books_are_unknown_and_the_view_reports_absence() -> None:
    s = state(("X",), stale_bars=3)
    assert s.view.absent and s.view.get("X") is None
    s.on_depth(0, snap("X", T, 1, 1))
    s.sample(0, T + 15_000, None)
    assert s.view.get("X") is not None and not s.view.absent
    s.sample(0, T + 15_001, None)  # older than 3 bars of 5 s
    assert s.view.get("X") is None and s.view.absent


def test_older_snapshots_do_not_replace_newer_ones() -> None:
    s = state(("X",))
    s.on_depth(0, snap("X", T + 10, 1, 1))
    s.on_depth(0, snap("X", T, 5, 1))  # arrived late from the other socket
    assert s.sample(0, T + 10, None).features["imbalance"][0] == 0.0


def test_features_over_the_real_depth_capture_are_bounded() -> None:
    syms = ("SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT")
    parser = FrameParser([f"{x.lower()}@depth5@500ms" for x in syms])
    s = state(syms)
    next_sample = 0
    for raw in read_frames(files=("um_2021-07-22_depth5_500ms.derived.txt",)):
        _, ev = parser.parse(raw)
        s.on_depth(syms.index(ev.symbol), ev)  # type: ignore[union-attr,arg-type]
        if ev.event_ms >= next_sample:  # type: ignore[union-attr]
            snap_ = s.sample(0, ev.event_ms, None)  # type: ignore[union-attr]
            next_sample = ev.event_ms + 5000  # type: ignore[union-attr]
            f = snap_.features
            ok = ~np.isnan(f["imbalance"])
            assert (np.abs(f["imbalance"][ok]) <= 1).all()
            assert (f["spread_bps"][ok] > 0).all() and (f["depth_1pct_usd"][ok] > 0).all()
            assert ((f["imbalance_persistence"][ok] >= 0) & (f["imbalance_persistence"][ok] <= 1)).all()
    assert s.view.macro() is not None and s.view.macro().symbols_with_book == 4  # type: ignore[union-attr]
    sushi = s.view.get("SUSHIUSDT")
    assert sushi is not None and sushi.best_ask > sushi.best_bid


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)), min_size=1, max_size=5),
       st.lists(st.tuples(st.floats(0, 1e6), st.floats(0, 1e6)), min_size=1, max_size=5),
       st.floats(1e-8, 1e6))
def test_features_never_raise_or_leave_bounds(bids: list[tuple[float, float]],
                                               asks: list[tuple[float, float]],
                                               mid: float) -> None:
    s = state(("X",))
    ev = Depth5("X", T, [mid * (1 - 1e-4) - p * 1e-9 for p, _ in bids], [q for _, q in bids],
                [mid * (1 + 1e-4) + p * 1e-9 for p, _ in asks], [q for _, q in asks])
    s.on_depth(0, ev)
    f = s.sample(0, T, [1.0]).features
    imb = f["imbalance"][0]
    assert math.isnan(imb) or -1 <= imb <= 1
    fp = f["fill_probability"][0]
    assert math.isnan(fp) or 0 <= fp <= 1
