"""Frames from the real captures (tests/data/ws) come out as the right typed events."""

from __future__ import annotations

import json
from pathlib import Path

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dolphind.events import AggTrade, Depth5, Depth5Raw, MarkPrice
from dolphind.feed.parse import (
    BadFrame,
    FrameParser,
    PriceCache,
    decode_depth5,
    number,
    stream_kind,
)
from tests.fakes.binance import DATA_DIR, GARBAGE, _garbage_for

SYMBOLS = ("SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT")
AGG_STREAMS = [f"{s.lower()}@aggTrade" for s in SYMBOLS]
DEPTH_STREAMS = [f"{s.lower()}@depth5@500ms" for s in SYMBOLS]


def raw_lines(name: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in (DATA_DIR / name).read_text().splitlines() if line]


def test_real_aggtrade_frames_parse_to_the_recorded_values() -> None:
    parser = FrameParser(AGG_STREAMS)
    frames = raw_lines("um_2021-07-22_aggTrade.txt")
    events = [parser.parse(f) for f in frames]
    assert len(events) == 91 and all(kind == "aggTrade" for kind, _ in events)
    # By hand from the raw capture, line 2 of BINANCE_FUTURES.ws.1.0's aggTrade frames:
    # {"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,
    #  "s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,"m":false}}
    assert events[0][1] == AggTrade("CTKUSDT", 1626992741575, 1626992741421, 16599292, 1.011,
                                    10.0, False)
    # {"stream":"akrousdt@aggTrade","data":{..."E":1626992742291,"a":14888302,"s":"AKROUSDT",
    #  "p":"0.01731","q":"312",...,"T":1626992742134,"m":true}}
    assert events[1][1] == AggTrade("AKROUSDT", 1626992742291, 1626992742134, 14888302, 0.01731,
                                    312.0, True)
    counts = dict(zip(parser.streams, parser.counts))
    assert counts == {"sushiusdt@aggTrade": 40, "ctkusdt@aggTrade": 38,
                      "akrousdt@aggTrade": 8, "keepusdt@aggTrade": 5}


def test_depth5_frames_parse_best_first_and_never_crossed() -> None:
    parser = FrameParser(DEPTH_STREAMS)
    frames = raw_lines("um_2021-07-22_depth5_500ms.derived.txt")
    # Every level is converted and checked on arrival (issue 17): the parser hands out Depth5.
    events = [parser.parse(f)[1] for f in frames]
    assert len(events) == 233
    first = events[0]
    assert isinstance(first, Depth5)
    # The first AKROUSDT snapshot: REST book at lastUpdateId 600859605486 plus the diffs.
    assert first.symbol == "AKROUSDT" and first.event_ms == 1626992741257
    assert first.bid_px == [0.01731, 0.0173, 0.01729, 0.01728, 0.01727]
    assert first.bid_qty == [57618.0, 183887.0, 712308.0, 809124.0, 1096926.0]
    assert first.ask_px == [0.01732, 0.01733, 0.01734, 0.01735, 0.01736]
    for ev in events:
        assert isinstance(ev, Depth5)
        assert ev.ask_px[0] > ev.bid_px[0]
        assert ev.bid_px == sorted(ev.bid_px, reverse=True) and ev.ask_px == sorted(ev.ask_px)


def test_mark_price_arr_frames_parse_to_one_event_per_symbol() -> None:
    parser = FrameParser(["!markPrice@arr@1s"])
    frames = raw_lines("um_2021-07-22_markPrice_arr_1s.synthetic.txt")
    kind, events = parser.parse(frames[0])
    assert kind == "markPrice"
    assert events == [MarkPrice("CTKUSDT", 1626992742000, 1.0105),
                      MarkPrice("SUSHIUSDT", 1626992742000, 7.6115)]


@pytest.mark.parametrize("name, stream", [
    ("agg_trade_stream.json", "btcusdt@aggTrade"),
    ("mark_price_stream.json", "btcusdt@markPrice"),
    ("book_ticker_stream.json", "btcusdt@bookTicker"),
    ("ws_futures_depth_update.json", "btcusdt@depth5@500ms"),
])
def test_binance_docs_payloads_parse(name: str, stream: str) -> None:
    data = json.loads((DATA_DIR / "nautilus" / name).read_text())
    parser = FrameParser([stream])
    if data["E"] < 10**12:
        # Docs placeholders such as "E": 123456789 are not epoch milliseconds: rejected as such.
        with pytest.raises(BadFrame, match="bad_time"):
            parser.parse(orjson.dumps({"stream": stream, "data": data}))
        data = {**data, "E": 1626992741575, "T": 1626992741575}
    kind, ev = parser.parse(orjson.dumps({"stream": stream, "data": data}))
    assert kind == stream_kind(stream)
    assert ev.symbol == "BTCUSDT"  # type: ignore[union-attr]
    if isinstance(ev, Depth5Raw):
        # The docs list bids ascending; decoding checks the crossing over all levels.
        full = decode_depth5(ev)
        assert max(full.bid_px) == 7405.43 and min(full.ask_px) == 7405.96


def test_every_kind_of_broken_frame_is_classified() -> None:
    parser = FrameParser(["ctkusdt@aggTrade", "ctkusdt@depth5@500ms"])
    cases = list(GARBAGE) + _garbage_for("ctkusdt@aggTrade", 1626992741575) \
        + _garbage_for("ctkusdt@depth5@500ms", 1626992741575)
    for reason, frame in cases:
        with pytest.raises(BadFrame) as info:
            parser.parse(frame)
        assert info.value.reason == reason, frame
    assert parser.counts == [0, 0]  # bad frames do not count as the stream being alive


def test_deep_levels_are_validated_on_arrival() -> None:
    # Was: validated when the book decoded the snapshot, so most bad ones (replaced before the
    # book read them) were counted good. Issue 17: every level is checked when the frame comes.
    parser = FrameParser(["ctkusdt@depth5@500ms"])
    base = {"e": "depthUpdate", "E": 1626992741575, "T": 1626992741575, "s": "CTKUSDT",
            "b": [["1.010", "5"], ["1.009", "5"]], "a": [["1.011", "3"], ["1.012", "3"]]}
    for reason, change in (("non_numeric", {"b": [["1.010", "5"], ["1.009", "x"]]}),
                           ("non_numeric", {"b": [["1.010", "5"], ["1.009", "١"]]}),
                           ("non_numeric", {"a": [["1.011", "3"], ["1.012", " 3"]]}),
                           ("wrong_type", {"a": [["1.011", "3"], 7]}),
                           ("crossed_book", {"b": [["1.010", "5"], ["1.5", "1"]]})):
        with pytest.raises(BadFrame) as info:
            parser.parse(orjson.dumps({"stream": "ctkusdt@depth5@500ms",
                                       "data": {**base, **change}}))
        assert info.value.reason == reason, change
    # a kept Depth5Raw (built elsewhere) is still decoded and checked by decode_depth5
    with pytest.raises(BadFrame, match="non_numeric"):
        decode_depth5(Depth5Raw("CTKUSDT", 1626992741575, 1.01, 1.011,
                                [["1.010", "5"], ["1.009", "x"]], [["1.011", "3"]]))


def test_crossed_book_is_rejected() -> None:
    parser = FrameParser(["ctkusdt@depth5@500ms"])
    frame = {"stream": "ctkusdt@depth5@500ms",
             "data": {"e": "depthUpdate", "E": 1626992741575, "T": 1626992741575,
                      "s": "CTKUSDT", "b": [["1.011", "5"], ["1.010", "5"]],
                      "a": [["1.011", "3"], ["1.012", "3"]]}}
    with pytest.raises(BadFrame, match="crossed_book"):
        parser.parse(orjson.dumps(frame))


def test_stream_kinds_and_unsupported_streams() -> None:
    assert stream_kind("btcusdt@aggTrade") == "aggTrade"
    assert stream_kind("btcusdt@depth5@500ms") == "depth5"
    assert stream_kind("!markPrice@arr@1s") == "markPrice"
    assert stream_kind("btcusdt@bookTicker") == "bookTicker"
    assert stream_kind("btcusdt@kline_1m") is None
    with pytest.raises(ValueError):
        FrameParser(["btcusdt@kline_1m"])


def test_data_folder_has_provenance() -> None:
    text = (Path(DATA_DIR) / "PROVENANCE.md").read_text()
    assert "derived" in text and "synthetic" in text


@given(st.lists(st.text(alphabet="0123456789.-+eEinfatyNI_ x", max_size=40)
                | st.floats().map(repr) | st.integers(1, 10**7).map(lambda n: f"{n / 1e4:.5f}"),
                max_size=60))
def test_the_price_cache_is_number(texts: list[str]) -> None:
    """Remembered or not, a lookup is number() itself (float() of the strings in Binance's
    grammar; issue 17: was float() itself): same value, same ValueError; the cache stays
    within its size and remembers no long string."""
    cache = PriceCache(max_size=8, max_len=12)  # small: clearing and the length cap are used
    for text in texts + texts:
        try:
            want = number(text)
        except ValueError:
            with pytest.raises(ValueError):
                cache[text]  # noqa: B018
            assert text not in cache
            continue
        got = cache[text]
        assert got == want or (math.isnan(got) and math.isnan(want))
        assert len(cache) <= 8 and all(len(k) <= 12 for k in cache)



def test_the_price_cache_stays_bounded() -> None:
    cache = PriceCache(max_size=8, max_len=12)
    for n in range(1, 1000):  # a market moving through many ticks
        text = f"{n / 1e4:.5f}"
        assert cache[text] == float(text) and len(cache) <= 8
    assert text in cache  # the newest is remembered after a clearing
    long = "1." + "0" * 18  # longer than max_len, inside the grammar's 20 decimals
    assert cache[long] == 1.0 and long not in cache


def test_the_parsers_of_a_feed_share_one_price_cache() -> None:
    prices = PriceCache()
    agg, depth = FrameParser(AGG_STREAMS, prices=prices), FrameParser(DEPTH_STREAMS, prices=prices)
    agg.parse(raw_lines("um_2021-07-22_aggTrade.txt")[0])  # CTKUSDT at "1.01100"
    depth.parse(raw_lines("um_2021-07-22_depth5_500ms.derived.txt")[0])  # AKRO 0.01731/0.01732
    # every depth5 level's price goes through the cache too (checked on arrival, issue 17)
    assert prices == {"1.01100": 1.011, **{f"0.0{n}": n / 1e5 for n in range(1727, 1737)}}
