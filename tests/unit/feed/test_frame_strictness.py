"""Issue 17's frame defects, each through the real parser and ``BinanceFeed.handle``:

- one strict ASCII number grammar for prices and quantities ("١", "1_0", padded strings...);
- depth5 levels validated on arrival and counted there (a bad snapshot replaced before the book
  sampled it used to be counted good);
- the past guard: an old first frame must not make the next one create a day of bars;
- market time never runs backwards: no bar before ``resume_after``, nor before an emitted one.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dolphind.clock import SimClock
from dolphind.events import Bar
from dolphind.feed.binance_ws import BinanceFeed
from dolphind.feed.parse import BadFrame, FrameParser, number
from tests.unit.feed.conftest import feed_config, make_feed

NOW_MS = 1_626_992_800_000
DAY_MS = 86_400_000


@pytest.mark.parametrize("text", [
    "\u0661", "1_0", " 1", "1 ", "\t1", "1e3", "1E3", "nan", "NaN", "inf", "infinity", "+1",
    "-1", "0x10", "1.", ".5", "\uff11", "1.2.3", "", "1,5", "\u0661.\u0662",
    "1" * 21, "0." + "1" * 21,
])
def test_numbers_outside_binances_grammar_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        number(text)
    parser = FrameParser(["btcusdt@aggTrade"])
    frame = {"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": NOW_MS, "a": 1, "s": "BTCUSDT", "p": text, "q": "1", "f": 1,
        "l": 1, "T": NOW_MS, "m": False}}
    with pytest.raises(BadFrame, match="non_numeric"):
        parser.parse(orjson.dumps(frame))
    frame["data"].update(p="1.0", q=text)  # type: ignore[attr-defined]
    with pytest.raises(BadFrame, match="non_numeric"):
        parser.parse(orjson.dumps(frame))


@pytest.mark.parametrize("text,value", [("0", 0.0), ("0.00100", 0.001), ("65000.1", 65000.1),
                                        ("1" * 20, 1e20 / 9), ("7.6115", 7.6115)])
def test_numbers_in_the_grammar_are_float(text: str, value: float) -> None:
    assert number(text) == pytest.approx(value) and number(text) == float(text)


class _Bars:
    """The bars waiting in the feed's output channel, in order (a live view)."""

    def __init__(self, out: object) -> None:
        self._out = out

    def _list(self) -> list[Bar]:
        return [bar for _, bar in self._out._items]  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._list())

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._list())

    def __getitem__(self, k: int) -> Bar:
        return self._list()[k]

    def __bool__(self) -> bool:
        return bool(self._list())


def _feed(**binance: object) -> tuple[BinanceFeed, _Bars]:
    cfg = feed_config(bar_seconds=5, **binance)  # type: ignore[arg-type]
    # The local clock a minute after the frames: none of them is in the future.
    feed, out, _ = make_feed(cfg, clock=SimClock((NOW_MS + 60_000) * 1_000_000))
    return feed, _Bars(out)


def _conn(feed: BinanceFeed, route: str):  # type: ignore[no-untyped-def]
    return next(c for c in feed.connections if c.route == route)


def _depth(e_ms: int, bids: list[list[str]], asks: list[list[str]]) -> bytes:
    return orjson.dumps({"stream": "ctkusdt@depth5@500ms", "data": {
        "e": "depthUpdate", "E": e_ms, "T": e_ms, "s": "CTKUSDT", "b": bids, "a": asks}})


def _agg(e_ms: int, agg_id: int, price: str = "1.0100") -> bytes:
    return orjson.dumps({"stream": "ctkusdt@aggTrade", "data": {
        "e": "aggTrade", "E": e_ms, "a": agg_id, "s": "CTKUSDT", "p": price, "q": "3",
        "f": agg_id, "l": agg_id, "T": e_ms, "m": False}})


def test_bad_deep_depth_levels_are_counted_on_arrival_even_when_never_sampled() -> None:
    feed, _ = _feed()
    public = _conn(feed, "public")
    good = ([["1.010", "5"], ["1.009", "5"]], [["1.011", "3"], ["1.012", "3"]])
    bad_levels = (([["1.010", "5"], ["1.009", "\u0661"]], good[1]),
                  ([["1.010", "5"], ["1.009", "x"]], good[1]),
                  (good[0], [["1.011", "3"], ["1.012", " 3"]]),
                  ([["1.010", "5"], ["1.5", "1"]], good[1]))  # crossed at level 2
    for k, (bids, asks) in enumerate(bad_levels):
        feed.handle(public, _depth(NOW_MS - 10_000 + k, bids, asks))
        feed.handle(public, _depth(NOW_MS - 10_000 + k, *good))  # replaces it at once
    assert sum(feed.bad_frames.values()) == len(bad_levels), feed.bad_frames
    assert feed.bad_frames["crossed_book"] == 1 and feed.bad_frames["non_numeric"] == 3
    assert feed.metrics.registry.get_sample_value(
        "dolphind_feed_bad_frames_total", {"reason": "non_numeric"}) == 3


def test_an_old_first_frame_does_not_make_a_day_of_bars() -> None:
    feed, bars = _feed()
    market = _conn(feed, "market")
    feed.handle(market, _agg(NOW_MS - DAY_MS, 1))  # a day old: e.g. a stale cached frame
    feed.handle(market, _agg(NOW_MS - 3000, 2))
    feed.handle(market, _agg(NOW_MS + 2000, 3))
    feed.bars.close_due(now_ms=NOW_MS + 2000)
    # Before the past guard: 17,280 carried-forward 5 s bars, 2 s of a blocked loop.
    assert len(bars) <= 3, len(bars)
    assert feed.bars.jumps == 1 and feed.bars.skipped >= 17_000
    ts = [b.ts_ns for b in bars]
    assert ts == sorted(ts) and bars[-1].ts_ns // 1_000_000 >= NOW_MS - 5000


def test_market_time_never_runs_backwards_in_the_live_feed() -> None:
    feed, bars = _feed()
    market = _conn(feed, "market")
    feed.bars.resume_after(NOW_MS)  # a previous run's last bar reached NOW_MS
    feed.handle(market, _agg(NOW_MS - 60_000, 1))  # the venue (or a fake) sends older times
    feed.handle(market, _agg(NOW_MS - 1, 2))
    feed.handle(market, _agg(NOW_MS + 1000, 3))
    feed.handle(market, _agg(NOW_MS + 6000, 4))
    feed.bars.close_due(now_ms=NOW_MS + 20_000)
    assert bars and all(b.ts_ns // 1_000_000 >= NOW_MS for b in bars), [b.ts_ns for b in bars]
    assert feed.bars.late == 2
    emitted = bars[-1].ts_ns
    feed.handle(market, _agg(emitted // 1_000_000 - 1, 5))  # behind an emitted bar: late
    feed.bars.close_due(now_ms=NOW_MS + 40_000)
    ts = [b.ts_ns for b in bars]
    assert ts == sorted(set(ts)) and feed.bars.late == 3


# ---- properties: the grammar decides, whatever the string ----------------------------------

number_texts = st.text(alphabet="0123456789._ +-eEnaifINF\t\u0661\u0662\uff11\u00b2\u0969",
                       max_size=14) | st.decimals(min_value=0, max_value=10**9, places=8,
                                                  allow_nan=False).map(str)


def _in_grammar(text: str) -> bool:
    """The reference: ASCII digits, at most one point with digits on both sides."""
    whole, dot, frac = text.partition(".")
    digits = "0123456789"
    return (0 < len(whole) <= 20 and all(c in digits for c in whole)
            and (not dot or (0 < len(frac) <= 20 and all(c in digits for c in frac))))


@settings(max_examples=400, deadline=None)
@given(number_texts, number_texts)
def test_an_aggtrade_is_accepted_exactly_when_its_numbers_are_in_the_grammar(
        price: str, qty: str) -> None:
    parser = FrameParser(["btcusdt@aggTrade"])
    frame = orjson.dumps({"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": NOW_MS, "a": 1, "s": "BTCUSDT", "p": price, "q": qty, "f": 1,
        "l": 1, "T": NOW_MS, "m": False}})
    good = _in_grammar(price) and _in_grammar(qty) and float(price) > 0
    try:
        _, ev = parser.parse(frame)
    except BadFrame as exc:
        assert not good and exc.reason == "non_numeric", (price, qty, exc.reason)
        return
    assert good, (price, qty)
    assert ev.price == float(price) and ev.qty == float(qty)  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(number_texts, number_texts), min_size=1, max_size=5),
       st.lists(st.tuples(number_texts, number_texts), min_size=1, max_size=5))
def test_a_depth5_frame_is_counted_bad_on_arrival_exactly_when_a_level_is_bad(
        bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
    feed, _ = _feed()
    public = _conn(feed, "public")
    feed.handle(public, _depth(NOW_MS, [list(b) for b in bids], [list(a) for a in asks]))
    numbers_ok = all(_in_grammar(p) and _in_grammar(q) and float(p) > 0 for p, q in bids + asks)
    crossed = numbers_ok and min(float(p) for p, _ in asks) <= max(float(p) for p, _ in bids)
    assert sum(feed.bad_frames.values()) == (0 if numbers_ok and not crossed else 1), \
        (bids, asks, feed.bad_frames)
