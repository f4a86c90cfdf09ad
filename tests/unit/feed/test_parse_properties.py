"""Property tests: no input, however broken, raises out of the parser or the feed's reader."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dolphind.feed.ws_connection import Connection
from dolphind.feed.parse import BAD_FRAME_REASONS, BadFrame, FrameParser, Parsed, PriceCache
from tests.fakes.binance import read_frames
from tests.unit.feed.conftest import feed_config, make_feed

FILES = ("um_2021-07-22_aggTrade.txt", "um_2021-07-22_depth5_500ms.derived.txt",
         "um_2021-07-22_bookTicker.txt")
REAL = read_frames(files=FILES)
MARK = read_frames(files=("um_2021-07-22_markPrice_arr_1s.synthetic.txt",))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["1.5", "NaN", "inf", "-1", "0", "1e999", ""]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3),
                                                                     children, max_size=4),
    max_leaves=10)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_frames(draw: st.DrawFn, pool: list[str] = REAL + MARK) -> bytes:
    """A real frame with one value replaced, one key deleted, or its bytes damaged."""
    raw = draw(st.sampled_from(pool))
    how = draw(st.sampled_from(["replace", "delete", "truncate", "flip", "insert"]))
    if how in ("replace", "delete"):
        obj = orjson.loads(raw)
        path = draw(st.sampled_from(_paths(obj)[1:]))
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if how == "delete":
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        else:
            parent[path[-1]] = draw(json_values)
        return orjson.dumps(obj)
    data = raw.encode()
    at = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


STREAMS = [s.lower() + k for s in ("SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT")
           for k in ("@aggTrade", "@depth5@500ms", "@bookTicker")] + ["!markPrice@arr@1s"]


def _check_parser(data: bytes | str) -> None:
    parser = FrameParser(STREAMS)
    try:
        parser.parse(data)
    except BadFrame as exc:
        assert exc.reason in BAD_FRAME_REASONS and exc.reason != "parser_error"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_badframe(data: bytes) -> None:
    _check_parser(data)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_arbitrary_json_only_ever_raises_badframe(value: Any) -> None:
    _check_parser(orjson.dumps(value))
    _check_parser(orjson.dumps({"stream": "ctkusdt@aggTrade", "data": value}))
    _check_parser(orjson.dumps({"stream": "ctkusdt@depth5@500ms", "data": value}))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_mutated_real_frames_only_ever_raise_badframe(data: bytes) -> None:
    _check_parser(data)


def _outcome(parser: FrameParser, data: bytes) -> tuple[str, Parsed] | str:
    try:
        return parser.parse(data)
    except BadFrame as exc:
        return exc.reason


# A cache already holding every price of the real frames, small enough to be emptied often.
_WARM = FrameParser(STREAMS, prices=PriceCache(max_size=64))
for _raw in REAL + MARK:
    _outcome(_WARM, _raw.encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_a_warm_price_cache_changes_no_event_and_no_reason(data: bytes) -> None:
    """Prices taken from the cache (or remembered on the way) give the same event, or the same
    bad-frame reason, as a parser whose cache has never seen them."""
    assert _outcome(_WARM, data) == _outcome(FrameParser(STREAMS), data)
    assert _outcome(_WARM, data) == _outcome(FrameParser(STREAMS), data)  # now remembered


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_frames() | st.sampled_from(REAL).map(str.encode), min_size=1,
                max_size=30))
def test_the_reader_survives_any_sequence_of_frames(frames: list[bytes]) -> None:
    """Through the whole hot path (parser, bars, book, bar closing): nothing escapes."""
    feed, out, metrics = make_feed(feed_config(book_ticker=True), capacity=10_000)
    conns = {c.route: c for c in feed.connections}
    for raw in frames:
        stream = orjson.loads(raw)["stream"] if _is_json_obj(raw) else ""
        route = "public" if "depth" in str(stream) or "bookTicker" in str(stream) else "market"
        feed.handle(conns[route], raw)
    feed.close_bars()
    assert "parser_error" not in feed.bad_frames
    # Every frame is either parsed (duplicates included) or counted as bad; a depth5 frame can
    # be both: parsed when read, then found bad when the book decodes its levels at a bar close.
    total = sum(feed.bad_frames.values()) + sum(c[0] for c in feed._counts.values())
    assert len(frames) <= total <= len(frames) + feed._counts["depth5"][0]


def _is_json_obj(raw: bytes) -> bool:
    try:
        return isinstance(orjson.loads(raw), dict) and isinstance(orjson.loads(raw).get("stream"), str)
    except orjson.JSONDecodeError:
        return False


def test_mutations_are_counted_by_reason_in_prometheus() -> None:
    feed, _, metrics = make_feed(feed_config())
    conn: Connection = feed.connections[0]
    for raw in (b"{", b"[]", b'{"result":null,"id":7}'):
        feed.handle(conn, raw)
    reg = metrics.registry
    assert reg.get_sample_value("dolphind_feed_bad_frames_total", {"reason": "invalid_json"}) == 1
    assert reg.get_sample_value("dolphind_feed_bad_frames_total", {"reason": "not_envelope"}) == 1
    assert reg.get_sample_value("dolphind_feed_bad_frames_total",
                                {"reason": "control_message"}) == 1
