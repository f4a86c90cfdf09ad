"""Bars on event-time boundaries: real capture values, carry-forward, lateness, gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dolphind.events import Bar
from dolphind.feed.bars import BarBuilder
from dolphind.feed.parse import FrameParser
from dolphind.telemetry.metrics import Metrics
from tests.fakes.binance import read_frames
from tests.unit.feed.conftest import SYMBOLS, drain, feed_config, make_feed

T0 = 1626992740000
MARK_FRAMES = read_frames(files=("um_2021-07-22_markPrice_arr_1s.synthetic.txt",))  # a 5 s boundary just before the capture's first trade


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def builder(max_stale: int = 100, delay: int = 0,
            clock: Clock | None = None) -> tuple[BarBuilder, list[Bar]]:
    bars: list[Bar] = []
    b = BarBuilder(tuple(SYMBOLS), 5, delay, lambda: max_stale, bars.append,
                   monotonic=clock or Clock())
    return b, bars


def test_bars_from_the_real_aggtrade_capture_match_hand_values() -> None:
    parser = FrameParser([f"{s.lower()}@aggTrade" for s in SYMBOLS])
    b, bars = builder()
    for raw in read_frames(files=("um_2021-07-22_aggTrade.txt",)):
        _, ev = parser.parse(raw)
        b.on_price(b.index[ev.symbol], ev.event_ms, ev.price, ev.qty)  # type: ignore[union-attr]
    b.close_due(now_ms=T0 + 20_000)
    assert [bar.ts_ns // 1_000_000 for bar in bars] == [T0, T0 + 5000, T0 + 10000, T0 + 15000]
    assert [bar.seq for bar in bars] == [0, 1, 2, 3]
    assert all(bar.symbols is bars[0].symbols for bar in bars)  # one tuple object
    by_ts = {bar.ts_ns // 1_000_000: dict(zip(SYMBOLS, bar.closes.tolist())) for bar in bars}
    # Last print in each window, read off the raw capture (E, symbol, p):
    # [740000, 745000): SUSHI 744262 7.6120, CTK 744265 1.01100, AKRO 742291 0.01731, KEEP none
    first = by_ts[T0]
    assert (first["SUSHIUSDT"], first["CTKUSDT"], first["AKROUSDT"]) == (7.612, 1.011, 0.01731)
    assert math.isnan(first["KEEPUSDT"])
    # [745000, 750000): CTK 749966 1.01000; SUSHI 746062 7.6120; AKRO carried forward
    assert by_ts[T0 + 5000] == pytest.approx(
        {"SUSHIUSDT": 7.612, "CTKUSDT": 1.01, "AKROUSDT": 0.01731, "KEEPUSDT": math.nan},
        nan_ok=True)
    # [750000, 755000): SUSHI 753295 7.6120, CTK 754940 1.01100, AKRO 753824 0.01731
    assert by_ts[T0 + 10000]["CTKUSDT"] == 1.011
    # [755000, 760000): SUSHI 759715 7.6170, CTK 759747 1.01200, AKRO 758650 0.01733,
    # KEEP 757650 0.2466 (its first trades: the symbol appears)
    assert by_ts[T0 + 15000] == {"SUSHIUSDT": 7.617, "CTKUSDT": 1.012, "AKROUSDT": 0.01733,
                                 "KEEPUSDT": 0.2466}


def test_volume_per_bar_is_the_sum_of_quantities() -> None:
    b, bars = builder()
    ctk = b.index["CTKUSDT"]
    # CTKUSDT prints in [750000, 755000) of the capture: 999 + 1100 + 10 + 10 + 10 + 10.
    for e, q in ((750117, 999), (750295, 1100), (751390, 10), (752576, 10), (753756, 10),
                 (754940, 10)):
        b.on_price(ctk, 1626992000000 + e, 1.011, q)
    b.close_due(now_ms=1626992755000)
    assert b.last_volume[ctk] == 2139


def test_carry_forward_is_limited_by_max_stale_bars() -> None:
    b, bars = builder(max_stale=2)
    b.on_price(0, T0 + 1, 10.0)
    b.on_price(1, T0 + 2, 20.0)
    b.on_price(1, T0 + 5001, 21.0)
    b.on_price(1, T0 + 10001, 22.0)
    b.on_price(1, T0 + 15001, 23.0)
    b.close_due(now_ms=T0 + 20000)
    sushi = [bar.closes[0] for bar in bars]
    assert sushi[:3] == [10.0, 10.0, 10.0] and math.isnan(sushi[3])  # stale after 2 bars
    assert [bar.closes[1] for bar in bars] == [20.0, 21.0, 22.0, 23.0]


def test_late_frames_are_counted_not_merged() -> None:
    late: list[float] = []
    bars: list[Bar] = []
    b = BarBuilder(tuple(SYMBOLS), 5, 0, lambda: 100, bars.append, on_late=late.append,
                   monotonic=Clock())
    b.on_price(0, T0 + 100, 10.0)
    b.close_due(now_ms=T0 + 5000)
    assert len(bars) == 1
    assert b.on_price(0, T0 + 4000, 99.0) is False  # belongs to the closed bar
    assert late == [1.0] and b.late == 1
    b.on_price(0, T0 + 6000, 11.0)
    b.close_due(now_ms=T0 + 10000)
    assert [bar.closes[0] for bar in bars] == [10.0, 11.0]  # 99 never appears


def test_bars_wait_for_the_close_delay_and_then_close_on_the_clock() -> None:
    clock = Clock()
    b, bars = builder(delay=250, clock=clock)
    b.on_price(0, T0 + 4900, 10.0)
    assert b.close_due() == []
    clock.t += 0.2  # venue time T0 + 5100: inside the delay
    assert b.close_due() == []
    clock.t += 0.2  # T0 + 5300: closed, with nothing else arriving (quiet market)
    assert [bar.ts_ns for bar in b.close_due()] == [T0 * 1_000_000]
    clock.t += 10.0  # two more windows, healthy and quiet: carried forward
    assert [bar.closes[0] for bar in b.close_due()] == [10.0, 10.0]


def test_empty_windows_during_a_gap_are_skipped_and_the_sequence_jumps() -> None:
    skipped: list[int] = []
    bars: list[Bar] = []
    b = BarBuilder(tuple(SYMBOLS), 5, 0, lambda: 100, bars.append, on_skipped=skipped.append,
                   monotonic=Clock())
    b.on_price(0, T0 + 1000, 10.0)
    b.on_price(0, T0 + 4000, 10.5)  # the window before the gap has data: it is kept
    b.mark_gap()
    b.close_due(healthy=False, now_ms=T0 + 16000)  # two empty windows while disconnected
    b.on_price(0, T0 + 31000, 12.0)  # back: two more empty windows were never observed
    b.close_due(now_ms=T0 + 40000)
    # seq 1-2 skipped while down, 3-5 skipped up to the first price after the gap; the
    # window after that is observed (healthy, quiet) and carries the price forward.
    assert [(bar.ts_ns // 1_000_000 - T0, bar.seq) for bar in bars] == \
        [(0, 0), (30000, 6), (35000, 7)]
    assert skipped == [2, 3] and b.skipped == 5
    assert bars[1].closes[0] == bars[2].closes[0] == 12.0


def test_a_huge_time_jump_does_not_loop_over_every_bar() -> None:
    b, bars = builder()
    b.on_price(0, T0, 10.0)
    b.mark_gap()
    b.on_price(0, T0 + 10 * 365 * 86_400_000, 11.0)  # ten years later
    b.close_due(now_ms=T0 + 10 * 365 * 86_400_000 + 5000)
    assert len(bars) == 2 and bars[1].seq == 10 * 365 * 86_400 // 5


async def test_bars_from_mark_price_are_selectable(metrics: Metrics) -> None:
    cfg = feed_config(bar_source="markPrice", bar_seconds=5)
    feed, out, _ = make_feed(cfg, metrics=metrics)
    [market] = [c for c in feed.connections if c.route == "market"]
    assert market.streams == ["!markPrice@arr@1s"]
    for raw in MARK_FRAMES:
        feed.handle(market, raw)
    bars = await drain(out)
    assert len(bars) >= 5
    # The 1626992745000 bar closes on the frame with E = ...749000: SUSHIUSDT "7.61250000".
    bar = next(b for b in bars if b.ts_ns // 1_000_000 == T0 + 5000)
    assert bar.closes[SYMBOLS.index("SUSHIUSDT")] == 7.6125
    assert np.isfinite(bar.closes).sum() >= 2


class _LongWay(BarBuilder):
    """Every price through the general path: the reference for the newest-window shortcut."""

    def on_price(self, i: int, event_ms: int, price: float, qty: float = 0.0) -> bool:
        return self._on_other_price(i, event_ms, price, qty)


_steps = st.one_of(
    st.tuples(st.just("price"), st.integers(0, len(SYMBOLS) - 1), st.integers(-7000, 2500),
              st.sampled_from([1.0, 1.5, 2.25, 7.0]), st.sampled_from([0.0, 1.0, 0.5])),
    st.tuples(st.just("gap")),
    st.tuples(st.just("close"), st.integers(-3000, 12000), st.booleans()))


@settings(max_examples=300, deadline=None)
@given(st.lists(_steps, max_size=80))
def test_the_newest_window_shortcut_changes_nothing(steps: list[tuple]) -> None:
    """Prices, gaps and closes in any order: the same bars, late and skipped counts, volumes
    and watermark as when every price takes the general path."""
    fast, fast_bars = builder(max_stale=2)
    ref_bars: list[Bar] = []
    ref = _LongWay(tuple(SYMBOLS), 5, 0, lambda: 2, ref_bars.append, monotonic=Clock())

    def state(b: BarBuilder) -> tuple:
        return (b.late, b.skipped, b.seq, b.watermark_ms, b.last_volume, b.next_start, b._gap,
                b._resume_start, b._open, b._volume)

    t = T0
    for step in steps:
        if step[0] == "price":
            _, i, dt, px, qty = step
            t = max(T0, t + dt)
            assert fast.on_price(i, t, px, qty) == ref.on_price(i, t, px, qty)
        elif step[0] == "gap":
            fast.mark_gap()
            ref.mark_gap()
        else:
            _, ahead, healthy = step
            fast.close_due(healthy, now_ms=t + ahead)
            ref.close_due(healthy, now_ms=t + ahead)
        assert state(fast) == state(ref)

    def seen(bars: list[Bar]) -> list[tuple[int, int, list[float | None]]]:
        return [(b.ts_ns, b.seq, [None if math.isnan(x) else x for x in b.closes.tolist()])
                for b in bars]

    assert seen(fast_bars) == seen(ref_bars)
