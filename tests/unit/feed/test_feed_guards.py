"""Frames stamped in the future, late frames, reconnect requests: through ``BinanceFeed.handle``
and its watchdog hooks, without sockets (the socket side is in test_feed_faults.py)."""

from __future__ import annotations

import math

import orjson
import pytest

from dolphind.clock import SimClock
from dolphind.config import ConfigError
from dolphind.events import Bar
from dolphind.feed.binance_ws import BinanceFeed
from dolphind.feed.timeguard import FutureGuard, is_future
from dolphind.telemetry.metrics import Metrics
from tests.fakes.binance import read_frames
from tests.unit.feed.conftest import SYMBOLS, feed_config, make_feed

T0 = 1626992740000  # a 5 s boundary just before the capture's first trade
NOW_MS = T0 + 60_000  # the local clock in these tests: a minute after the capture
HOUR_MS = 3_600_000
AGG_FRAMES = read_frames(files=("um_2021-07-22_aggTrade.txt",))
DEPTH_FRAMES = read_frames(files=("um_2021-07-22_depth5_500ms.derived.txt",))
MARK_FRAMES = read_frames(files=("um_2021-07-22_markPrice_arr_1s.synthetic.txt",))


def agg_frame(symbol: str, e_ms: int, agg_id: int, price: str = "7.6000") -> str:
    return orjson.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": {
        "e": "aggTrade", "E": e_ms, "a": agg_id, "s": symbol, "p": price, "q": "3",
        "f": agg_id, "l": agg_id, "T": e_ms, "m": False}}).decode()


def shifted(raw: str, to_ms: int) -> str:
    """A real frame moved to event time ``to_ms``."""
    obj = orjson.loads(raw)
    obj["data"]["E"] = to_ms
    if "T" in obj["data"]:
        obj["data"]["T"] = to_ms
    return orjson.dumps(obj).decode()


def feed_at(now_ms: int = NOW_MS, **binance: object) -> tuple[BinanceFeed, Metrics]:
    cfg = feed_config(bar_seconds=5, **binance)  # type: ignore[arg-type]
    feed, _, metrics = make_feed(cfg, clock=SimClock(now_ms * 1_000_000))
    return feed, metrics


def conn(feed: BinanceFeed, route: str):  # type: ignore[no-untyped-def]
    return next(c for c in feed.connections if c.route == route)


def run_trades(frames: list[str], now_ms: int = NOW_MS) -> tuple[BinanceFeed, list[Bar]]:
    """Sync on purpose: Metrics() reads /proc, which the event loop's blocking guard forbids."""
    cfg = feed_config(bar_seconds=5)
    feed, out, _ = make_feed(cfg, clock=SimClock(now_ms * 1_000_000))
    market = conn(feed, "market")
    for raw in frames:
        feed.handle(market, raw)
    return feed, [bar for _, bar in out._items]  # what the channel holds, in order


# ---- pure parts -------------------------------------------------------------------------------


def test_is_future_allows_the_tolerance_and_no_more() -> None:
    assert not is_future(NOW_MS, NOW_MS, 5000)
    assert not is_future(NOW_MS + 5000, NOW_MS, 5000)
    assert is_future(NOW_MS + 5001, NOW_MS, 5000)
    assert not is_future(T0, NOW_MS, 5000)  # the past is never "future" (late is for bars)


def test_future_guard_reads_the_clock_only_beyond_its_horizon() -> None:
    reads: list[int] = []
    now = [NOW_MS]

    def clock() -> int:
        reads.append(now[0])
        return now[0]

    guard = FutureGuard(clock, lambda: 5000)
    assert guard.horizon_ms == 0  # so the first frame reads the clock
    assert not guard.too_far(NOW_MS - 10)
    assert guard.horizon_ms == NOW_MS + 5000 and len(reads) == 1
    now[0] += 3000  # the clock moves on: a frame 7 s ahead of the old reading is fine now
    assert not guard.too_far(NOW_MS + 7000)
    assert guard.too_far(NOW_MS + HOUR_MS)
    assert len(reads) == 3


# ---- through the feed -------------------------------------------------------------------------


def test_a_frame_an_hour_ahead_is_dropped_and_the_bars_go_on() -> None:
    """The audit's case: one aggTrade an hour ahead made close_due emit 720 carried bars and
    every real price after it late. It must be counted as future_time and change nothing."""
    half = len(AGG_FRAMES) // 2
    future = agg_frame("SUSHIUSDT", NOW_MS + HOUR_MS, 10**9, price="99.0")
    clean_feed, clean_bars = run_trades(AGG_FRAMES)
    feed, bars = run_trades(AGG_FRAMES[:half] + [future] + AGG_FRAMES[half:])

    assert feed.bad_frames == {"future_time": 1}
    assert feed.metrics.registry.get_sample_value(
        "dolphind_feed_bad_frames_total", {"reason": "future_time"}) == 1
    assert feed.bars.late == 0 and feed.bars.watermark_ms < NOW_MS
    assert len(clean_bars) >= 3
    assert [(b.ts_ns, b.seq) for b in bars] == [(b.ts_ns, b.seq) for b in clean_bars]
    for got, want in zip(bars, clean_bars):
        assert got.closes.tolist() == pytest.approx(want.closes.tolist(), nan_ok=True)
    # The dropped print's id must not shadow the real prints after it (de-duplication).
    assert feed._dups == clean_feed._dups == 0


def test_a_frame_years_ahead_does_not_block_the_loop() -> None:
    # 2100-01-01: inside the parser's plausible epoch range, so only the clock can catch it.
    feed, bars = run_trades(
        AGG_FRAMES[:10] + [agg_frame("CTKUSDT", 4_102_444_800_000, 10**9)] + AGG_FRAMES[10:])
    assert feed.bad_frames == {"future_time": 1}
    assert feed.bars.skipped == 0 and bars and bars[-1].seq < 10


def test_a_frame_within_the_tolerance_is_accepted() -> None:
    feed, _ = run_trades([agg_frame("SUSHIUSDT", NOW_MS + 4000, 1)])
    assert feed.bad_frames == {} and feed.bars.watermark_ms == NOW_MS + 4000
    # A tighter tolerance from the config (reloadable: read on every clock read).
    tight, _ = feed_at(max_clock_skew_s=1.0)
    tight.handle(conn(tight, "market"), agg_frame("SUSHIUSDT", NOW_MS + 4000, 1))
    assert tight.bad_frames == {"future_time": 1}


def test_a_future_depth_snapshot_does_not_block_real_ones() -> None:
    feed, _ = feed_at()
    public = conn(feed, "public")
    first = orjson.loads(DEPTH_FRAMES[0])["data"]
    i = feed.index[first["s"]]
    feed.handle(public, shifted(DEPTH_FRAMES[0], NOW_MS + HOUR_MS))
    assert feed.bad_frames == {"future_time": 1}
    later = [raw for raw in DEPTH_FRAMES if orjson.loads(raw)["data"]["s"] == first["s"]]
    for raw in later[:3]:
        feed.handle(public, raw)
    newest = max(orjson.loads(raw)["data"]["E"] for raw in later[:3])
    assert feed.book._latest_ms[i] == newest  # the real snapshots were kept
    assert feed.book.updates == 3


def test_a_mark_price_array_with_a_future_entry_is_dropped_whole() -> None:
    feed, _ = feed_at(bar_source="markPrice")
    market = conn(feed, "market")
    obj = orjson.loads(MARK_FRAMES[0])
    obj["data"][-1]["E"] = NOW_MS + HOUR_MS
    feed.handle(market, orjson.dumps(obj))
    assert feed.bad_frames == {"future_time": 1} and feed.bars.watermark_ms == 0
    feed.handle(market, MARK_FRAMES[1])
    assert feed.bad_frames == {"future_time": 1} and 0 < feed.bars.watermark_ms < NOW_MS


def test_max_clock_skew_must_be_positive() -> None:
    with pytest.raises(ConfigError) as err:
        feed_config(max_clock_skew_s=0.0)
    assert "binance_feed.max_clock_skew_s: must be > 0" in err.value.problems


# ---- late frames --------------------------------------------------------------------------------


def test_late_prices_move_the_late_frame_metric_through_the_feed() -> None:
    # Bars close on the data: the frame at +6 s closes [T0, T0+5 s), the one at +11 s closes
    # [T0+5 s, T0+10 s); a price for +9.5 s then comes 0.5 s after its bar's end was passed.
    frames = [agg_frame("SUSHIUSDT", T0 + 1000, 1), agg_frame("SUSHIUSDT", T0 + 6000, 2),
              agg_frame("SUSHIUSDT", T0 + 11_000, 3)]
    late = agg_frame("SUSHIUSDT", T0 + 9500, 4, price="1.0")
    feed, bars = run_trades(frames + [late])
    reg = feed.metrics.registry
    assert feed.bars.late == 1
    feed.flush_metrics()  # as the watchdog does every second
    assert reg.get_sample_value("dolphind_feed_late_frames_total") == 1
    assert reg.get_sample_value("dolphind_feed_bar_lateness_seconds_count") == 1
    assert reg.get_sample_value("dolphind_feed_bar_lateness_seconds_sum") == pytest.approx(0.5)
    second = next(b for b in bars if b.ts_ns // 1_000_000 == T0 + 5000)
    assert second.closes[SYMBOLS.index("SUSHIUSDT")] == 7.6  # not merged into the closed bar
    assert math.isnan(second.closes[SYMBOLS.index("CTKUSDT")])


# ---- reconnect requests (the socket side: test_feed_faults.py) ---------------------------------


def test_reconnect_requests_made_before_the_feed_are_not_acted_on() -> None:
    requests = [3]
    feed, _, _ = make_feed(feed_config(), reconnect_requests=lambda: requests[0])
    assert feed.poll_reconnect_requests() == 0 and feed.requested_reconnects == 0
    requests[0] += 2  # two requests between polls are one reconnect
    feed.poll_reconnect_requests()
    assert feed.requested_reconnects == 1
    feed.poll_reconnect_requests()
    assert feed.requested_reconnects == 1
