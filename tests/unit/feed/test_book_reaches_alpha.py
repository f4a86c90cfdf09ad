"""The order book reaches the strategy (issue 16): recorded depth5 frames -> the feed's parser
and BookState -> the typed view the alpha engine reads -> a decision the book changes.

The depth is real (tests/data/ws/um_2021-07-22_depth5_500ms.derived.txt, see its PROVENANCE):
over those 30 seconds CTKUSDT's book is bid-heavy (imbalance_ma5 about +0.27 with
persistence 1.0), which bible §4.3 (OB Sub-2) reads as a hard skip for a SHORT. The price path
is synthetic: CTKUSDT falls steadily so that IRP picks it for the SHORT signal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dolphind.alpha.engine import AlphaEngine
from dolphind.alpha.views import PortfolioView
from dolphind.config import BookConfig
from dolphind.events import ScanRecord, frozen_array
from dolphind.feed.book import BookSource, BookState, alpha_view
from dolphind.feed.parse import PriceCache, parse_depth5

DEPTH = Path(__file__).resolve().parents[2] / "data" / "ws" / "um_2021-07-22_depth5_500ms.derived.txt"
SYMS = ("AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT")
T0 = 1_626_992_741_000_000_000
BAR_NS = 5_000_000_000


def recorded_book() -> BookState:
    """Replay the recorded frames into the feed's BookState, sampled once per second."""
    frames = []
    for line in DEPTH.read_text().splitlines():
        _, payload = line.split(": ", 1)
        frames.append(json.loads(payload)["data"])
    frames.sort(key=lambda d: d["E"])
    state = BookState(SYMS, lambda: BookConfig(), 1.0)
    prices = PriceCache()
    j = 0
    first = frames[0]["E"] // 1000 * 1000
    for sec in range(first, frames[-1]["E"] + 1000, 1000):
        while j < len(frames) and frames[j]["E"] < sec + 1000:
            d = frames[j]
            state.on_depth(SYMS.index(d["s"]), parse_depth5(d, d["s"], prices))
            j += 1
        state.sample(sec * 1_000_000, sec + 1000, None)
    return state


def scan(bar: int, vel_div: float) -> ScanRecord:
    prices = np.array([0.0173 + 1e-6 * bar, 1.0 - 0.0005 * bar,
                       0.30 + 0.003 * (-1) ** bar, 10.0 + 0.01 * bar])
    return ScanRecord(scan_number=bar, ts_ns=T0 + bar * BAR_NS, n_symbols=4, symbols=SYMS,
                      prices=frozen_array(prices), lambda_max=(1.0,) * 4,
                      velocity=(0.0, 0.0, 0.0, 0.001), instability=(0.0,) * 4,
                      vel_div=vel_div, regime_signal=0.0, instability_composite=0.0)


def first_entry_decision(book_source: object) -> tuple[str, str | None]:
    engine = AlphaEngine(min_symbols=0)
    flat = PortfolioView(capital=10_000.0, equity=10_000.0)
    for bar in range(130):
        decision = engine.on_scan(scan(bar, -0.03 if bar >= 99 else 0.0),
                                  book_source(),  # type: ignore[operator]
                                  flat)
        if decision.outcome not in ("warmup", "cold", "no_signal"):
            symbol = decision.intents[0].symbol if decision.intents else None
            return decision.outcome, symbol
    raise AssertionError("the signal never reached the entry gates")


def test_the_recorded_book_is_a_typed_view_the_engine_reads() -> None:
    state = recorded_book()
    view = alpha_view(state.latest)
    assert view is not None and view.symbols == SYMS
    ctk = view.get("CTKUSDT")
    assert ctk is not None
    assert ctk.imbalance_ma5 > 0.15 and ctk.imbalance_persistence > 0.6  # bid-heavy, persistent
    assert np.isfinite(view.depth_quality).all()
    # The source builds the view once per sample (the engine caches per view object).
    source = BookSource(state, lambda: 0)
    assert source() is source() and source.views == 1


def test_an_ob_gate_changes_the_decision_on_recorded_depth() -> None:
    # Without a book the steady faller is shorted...
    assert first_entry_decision(lambda: None) == ("entered", "CTKUSDT")
    # ... with the recorded book, its persistent bid pressure skips the entry (bible §4.3).
    assert first_entry_decision(BookSource(recorded_book(), lambda: 0)) == ("ob_contradict", None)


def test_no_depth_data_means_no_view() -> None:
    state = BookState(SYMS, lambda: BookConfig(), 1.0)
    assert BookSource(state, lambda: 0)() is None
    state.sample(T0, T0 // 1_000_000, None)  # sampled, but not one snapshot arrived
    assert alpha_view(state.latest) is None


@pytest.mark.parametrize("symbol", SYMS)
def test_every_feature_crosses_with_its_name(symbol: str) -> None:
    state = recorded_book()
    snap = state.latest
    assert snap is not None
    view = alpha_view(snap)
    assert view is not None
    sb = view.get(symbol)
    i = SYMS.index(symbol)
    assert sb is not None
    for name in ("imbalance", "imbalance_ma5", "imbalance_persistence", "spread_bps",
                 "depth_1pct_usd", "depth_quality", "withdrawal_velocity"):
        assert getattr(sb, name) == pytest.approx(float(snap.features[name][i]), nan_ok=True), name
