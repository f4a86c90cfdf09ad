"""The live feed against the loopback fake Binance: routing, sharding, and every injected fault.

For each fault the feed must recover by itself, count the fault, report not-ready while it is
down, and lose no bar it could have built: every bar window in which the feed accepted a price
is emitted, with the last accepted price as the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import orjson
import pytest

from dolphind.config import Config, ConfigError
from dolphind.events import Bar
from dolphind.backoff import Backoff
from dolphind.feed.binance_ws import BinanceFeed
from dolphind.feed.streams import plan_streams, shard, stream_url
from dolphind.telemetry.metrics import Metrics
from tests.conftest import eventually
from tests.fakes.binance import FakeBinance, Recording, load_recording
from tests.fakes.tls import self_signed_cert, server_context
from tests.unit.feed.conftest import feed_config, make_feed

SPEED = 4.0  # the 30 s capture plays in 7.5 s; 1 s bars close every 0.25 s


@pytest.fixture(scope="module")
def recording() -> Recording:
    return load_recording()


@dataclass
class Live:
    fake: FakeBinance
    feed: BinanceFeed
    metrics: Metrics
    bars: list[Bar] = field(default_factory=list)
    # Every price the bar builder was given: (symbol index, E, price, accepted)
    prices: list[tuple[int, int, float, bool]] = field(default_factory=list)
    readiness: list[str] = field(default_factory=list)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def assert_no_lost_bar(self) -> None:
        """Every closed window with an accepted price was emitted, closing at that price."""
        bar_ms = self.feed.bars.bar_ms
        closed_until = self.feed.bars.next_start or 0
        expected: dict[int, dict[int, float]] = {}
        for i, e, px, ok in self.prices:
            start = e - e % bar_ms
            if ok and start < closed_until:
                expected.setdefault(start, {})[i] = px
        got = {b.ts_ns // 1_000_000: b for b in self.bars}
        assert expected, "no prices were accepted"
        for start, closes in expected.items():
            assert start in got, f"bar {start} had prices but was not emitted"
            for i, px in closes.items():
                assert got[start].closes[i] == px
        seqs = [b.seq for b in self.bars]
        assert seqs == sorted(set(seqs)), "sequence numbers must increase"
        # A sequence jump only where no price was accepted for the skipped windows.
        by_seq = {b.seq: b.ts_ns // 1_000_000 for b in self.bars}
        for a, b in zip(seqs, seqs[1:]):
            if b != a + 1:
                for k in range(1, b - a):
                    assert by_seq[a] + k * bar_ms not in expected


@contextlib.asynccontextmanager
async def live(recording: Recording, metrics: Metrics,
               reconnect_requests: Callable[[], int] = lambda: 0,
               ssl_context: ssl.SSLContext | None = None,
               **settings: object) -> AsyncIterator[Live]:
    async with FakeBinance(recording, speed=SPEED, ssl_context=ssl_context) as fake:
        cfg: Config = feed_config(fake.url, **settings)  # type: ignore[arg-type]
        feed, out, _ = make_feed(cfg, metrics=metrics, reconnect_requests=reconnect_requests)
        state = Live(fake, feed, metrics)
        on_price = feed.bars.on_price

        def spy(i: int, e: int, px: float, qty: float = 0.0) -> bool:
            ok = on_price(i, e, px, qty)
            state.prices.append((i, e, px, ok))
            return ok

        feed.bars.on_price = spy  # type: ignore[method-assign]

        async def collect() -> None:
            async for bar in out:
                state.bars.append(bar)

        async def watch() -> None:
            while True:
                state.readiness.append(feed.readiness())
                await asyncio.sleep(0.01)

        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(feed.run())
            tasks = [tg.create_task(collect())]
            try:
                await eventually(lambda: feed.ready, timeout=10, what="feed ready")
                tasks.append(tg.create_task(watch()))  # readiness from here on
                yield state
            finally:
                run.cancel()
                for t in tasks:
                    t.cancel()
                out.close()


# ---- pure parts ---------------------------------------------------------------------------


def test_streams_are_routed_and_sharded_at_most_200_per_connection() -> None:
    syms = [f"S{i:03d}USDT" for i in range(540)]
    cfg = feed_config(symbols=syms, book_ticker=True).binance_feed
    routes = plan_streams(cfg)
    assert set(routes) == {"public", "market"}
    assert all(s.endswith(("@depth5@500ms", "@bookTicker")) for s in routes["public"])
    assert all(s.endswith("@aggTrade") for s in routes["market"])
    public = shard(routes["public"], cfg.max_streams_per_conn)
    assert [len(g) for g in public] == [200, 200, 200, 200, 200, 80] or \
        all(len(g) <= 200 for g in public)
    assert sum(map(len, public)) == 1080 and len(public) == 6
    assert [len(g) for g in shard(routes["market"], 200)] == [180, 180, 180]
    assert stream_url("wss://fstream.binance.com", "market", ["a@aggTrade", "b@aggTrade"]) == \
        "wss://fstream.binance.com/market/stream?streams=a@aggTrade/b@aggTrade"
    mark = plan_streams(feed_config(bar_source="markPrice", depth=False).binance_feed)
    assert mark == {"market": ["!markPrice@arr@1s"]}


def test_backoff_is_exponential_jittered_and_capped() -> None:
    cfg = feed_config(backoff_initial_s=0.5, backoff_max_s=4.0).binance_feed
    b = Backoff(lambda: cfg)
    delays = [b.next() for _ in range(8)]
    for k, d in enumerate(delays):
        cap = min(4.0, 0.5 * 2 ** k)
        assert cap / 2 <= d <= cap
    b.reset()
    assert b.next() <= 0.5


# ---- against the fake server ----------------------------------------------------------------


async def test_bars_and_book_from_the_fake_venue(recording: Recording, metrics: Metrics) -> None:
    async with live(recording, metrics) as s:
        await eventually(lambda: len(s.bars) >= 8, what="8 bars")
        assert {c.name for c in s.feed.connections} == {"public-0", "market-0"}
        s.feed.flush_metrics()
        assert s.sample("dolphind_feed_messages_total", {"kind": "aggTrade"}) > 0
        assert s.sample("dolphind_feed_messages_total", {"kind": "depth5"}) > 0
        assert s.sample("dolphind_feed_bytes_total", {"kind": "depth5"}) > 0
        assert s.feed.book_view.get("SUSHIUSDT") is not None
        assert s.fake.stats()["accepted"] == 2
    s.assert_no_lost_bar()
    assert s.feed.bad_frames == {}


@pytest.mark.parametrize("abort", [False, True], ids=["close", "abort"])
async def test_socket_closed_by_the_venue(recording: Recording, metrics: Metrics,
                                          abort: bool) -> None:
    async with live(recording, metrics) as s:
        await eventually(lambda: len(s.bars) >= 3, what="bars")
        s.fake.refuse(0.4)  # keep it down long enough to be seen down
        await s.fake.close_all(abort=abort)
        await eventually(lambda: s.feed.readiness() != "ok", what="not ready")
        await eventually(lambda: s.feed.ready, what="recovered")
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 3, what="bars after recovery")
    gaps = s.sample("dolphind_feed_gaps_total", {"reason": "closed"}) + \
        s.sample("dolphind_feed_gaps_total", {"reason": "error"})
    assert gaps >= 2  # both connections lost
    assert s.sample("dolphind_feed_connect_failures_total", {"conn": "market-0"}) >= 1
    assert any("disconnected" in r for r in s.readiness)
    s.assert_no_lost_bar()


async def test_stalled_connection_is_detected_and_replaced(recording: Recording,
                                                           metrics: Metrics) -> None:
    async with live(recording, metrics) as s:
        await eventually(lambda: len(s.bars) >= 3, what="bars")
        s.fake.stall(1.0)  # sockets stay open, pings answered, no data
        await eventually(lambda: s.sample("dolphind_feed_gaps_total", {"reason": "stall"}) >= 1,
                         what="stall detected")
        assert s.feed.readiness() != "ok"
        await eventually(lambda: s.feed.ready, what="recovered")
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 3, what="bars after recovery")
        assert s.sample("dolphind_feed_reconnects_total", {"conn": "market-0", "reason": "stall"}) >= 1
        assert s.sample("dolphind_feed_last_message_age_seconds", {"conn": "market-0"}) < 0.6
    assert any("stalled" in r for r in s.readiness)
    s.assert_no_lost_bar()


def _reconnects(s: Live, reason: str) -> list[float]:
    return [s.sample("dolphind_feed_reconnects_total", {"conn": c.name, "reason": reason})
            for c in s.feed.connections]


async def test_a_peer_that_stops_answering_pings_is_dropped_by_the_heartbeat(
        recording: Recording, metrics: Metrics) -> None:
    """No data and no pong for longer than the stall timeout: the heartbeat (ping after 0.2 s
    idle, pong due within 0.1 s) drops each socket first, reason error, and the feed comes
    back when the peer does. Were the heartbeat not working, the stall timeout would end
    these sockets instead (reason stall)."""
    # The stall timeout is 15x the heartbeat's 0.3 s, so a loaded machine cannot swap them.
    async with live(recording, metrics, heartbeat_s=0.2, stall_timeout_s=4.5) as s:
        await eventually(lambda: len(s.bars) >= 3, what="bars")
        s.fake.deaf(5.0)
        await eventually(lambda: all(n >= 1 for n in _reconnects(s, "error"))
                         or s.sample("dolphind_feed_gaps_total", {"reason": "stall"}) >= 1,
                         what="both sockets dropped")
        assert s.sample("dolphind_feed_gaps_total", {"reason": "stall"}) == 0
        assert all("No PONG" in (c.last_error or "") for c in s.feed.connections), \
            [c.last_error for c in s.feed.connections]
        assert s.feed.readiness() != "ok"
        await eventually(lambda: s.feed.ready, what="ready again")
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 2, what="bars after the fault")
    assert s.sample("dolphind_feed_gaps_total", {"reason": "stall"}) == 0
    s.assert_no_lost_bar()


async def test_a_stalled_peer_that_answers_pings_is_left_to_the_stall_timeout(
        recording: Recording, metrics: Metrics) -> None:
    """The control: with the same heartbeat, a peer that sends no data but answers every ping
    keeps its sockets until the stall timeout (0.6 s) ends them."""
    async with live(recording, metrics, heartbeat_s=0.2, stall_timeout_s=0.6) as s:
        await eventually(lambda: len(s.bars) >= 3, what="bars")
        s.fake.stall(1.0)
        await eventually(lambda: s.sample("dolphind_feed_gaps_total", {"reason": "stall"}) >= 2,
                         what="both sockets stalled")
        await eventually(lambda: s.feed.ready, what="ready again")
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 2, what="bars after the stall")
    assert _reconnects(s, "error") == [0.0, 0.0]
    s.assert_no_lost_bar()


async def test_the_feed_reads_wss_from_a_server_it_trusts(recording: Recording,
                                                          metrics: Metrics,
                                                          tmp_path: Path) -> None:
    """The fake speaks TLS only, with a throwaway self-signed certificate named in ca_file."""
    cert, key = self_signed_cert(tmp_path)
    async with live(recording, metrics, ssl_context=server_context(cert, key),
                    ca_file=str(cert)) as s:
        assert s.fake.url.startswith("wss://127.0.0.1:")
        await eventually(lambda: len(s.bars) >= 4, what="bars over TLS")
        assert s.feed.book_view.get("SUSHIUSDT") is not None
        assert all(c.last_error is None for c in s.feed.connections)
    assert s.feed.bad_frames == {}
    s.assert_no_lost_bar()


async def test_the_feed_refuses_a_certificate_it_does_not_trust(recording: Recording,
                                                                metrics: Metrics,
                                                                tmp_path: Path) -> None:
    """The same server without ``ca_file``: the system's store does not know the certificate,
    so every connection attempt fails verification, is counted, and backs off."""
    cert, key = self_signed_cert(tmp_path)
    async with FakeBinance(recording, speed=SPEED, ssl_context=server_context(cert, key)) as fake:
        feed, out, _ = make_feed(feed_config(fake.url), metrics=metrics)
        task = asyncio.create_task(feed.run())
        try:
            await eventually(lambda: all(
                (metrics.registry.get_sample_value("dolphind_feed_connect_failures_total",
                                                   {"conn": c.name}) or 0) >= 2
                for c in feed.connections), what="failed connection attempts")
            assert not feed.ready and feed.bars.emitted == 0
            assert all(c.sessions == 0 for c in feed.connections)
            assert all("CERTIFICATE_VERIFY_FAILED" in (c.last_error or "")
                       for c in feed.connections), [c.last_error for c in feed.connections]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            out.close()


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    missing, junk = tmp_path / "missing.pem", tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for path in (missing, junk):
        with pytest.raises(ConfigError, match="binance_feed.ca_file"):
            make_feed(feed_config(ca_file=str(path)))


async def test_refused_connections_back_off_and_recover(recording: Recording,
                                                        metrics: Metrics) -> None:
    async with live(recording, metrics) as s:
        await eventually(lambda: len(s.bars) >= 2, what="bars")
        s.fake.refuse(1.0)
        await s.fake.close_all()
        await eventually(lambda: s.fake.refused >= 4, what="several refused attempts")
        assert s.feed.readiness() != "ok"
        await eventually(lambda: s.feed.ready, what="recovered", timeout=10)
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 2, what="bars after recovery")
    assert s.sample("dolphind_feed_connect_failures_total", {"conn": "public-0"}) >= 2
    s.assert_no_lost_bar()


async def test_wrong_route_raises_stream_silence_alarms(recording: Recording,
                                                        metrics: Metrics) -> None:
    async with live(recording, metrics, stream_grace_s=0.8, stall_timeout_s=0.6) as s:
        await eventually(lambda: len(s.bars) >= 2, what="bars")
        market = next(c for c in s.feed.connections if c.route == "market")
        public = next(c for c in s.feed.connections if c.route == "public")
        s.fake.wrong_route("market", 2.0)  # aggTrade asked on /market now gets nothing
        # CTKUSDT trades about every second of the capture: its silence is the alarm.
        await eventually(lambda: "ctkusdt@aggTrade" in market.silent, what="silence alarm")
        assert s.sample("dolphind_feed_stream_silence_alarms_total", {"kind": "aggTrade"}) >= 1
        assert s.sample("dolphind_feed_silent_streams", {"conn": "market-0"}) >= 1
        await eventually(lambda: s.sample("dolphind_feed_gaps_total", {"reason": "stall"}) >= 1,
                         what="stall")
        assert any("market-0" in r for r in s.readiness)
        await eventually(lambda: s.feed.ready and "ctkusdt@aggTrade" not in market.silent,
                         timeout=10, what="recovered")
        assert not public.silent
        # The public connection was never affected.
        assert s.sample("dolphind_feed_reconnects_total", {"conn": "public-0", "reason": "stall"}) == 0
    s.assert_no_lost_bar()


async def test_garbage_frames_are_counted_by_reason_and_dropped(recording: Recording,
                                                                metrics: Metrics) -> None:
    async with live(recording, metrics) as s:
        await eventually(lambda: len(s.bars) >= 2, what="bars")
        s.fake.garbage(2)
        await eventually(lambda: sum(s.fake.injected.values()) >= 2 * 5 + 4
                         and sum(s.feed.bad_frames.values()) == sum(s.fake.injected.values()),
                         what="garbage counted")
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 3, what="bars keep coming")
        assert s.feed.ready
    assert dict(s.feed.bad_frames) == s.fake.injected
    for reason, count in s.fake.injected.items():
        assert s.sample("dolphind_feed_bad_frames_total", {"reason": reason}) == count
    assert s.sample("dolphind_feed_gaps_total", {"reason": "closed"}) == 0
    s.assert_no_lost_bar()


async def test_crossed_books_are_dropped_and_counted(recording: Recording,
                                                     metrics: Metrics) -> None:
    async with live(recording, metrics) as s:
        await eventually(lambda: s.feed.book_view.get("SUSHIUSDT") is not None, what="book")
        s.fake.crossed(3)
        await eventually(lambda: s.feed.bad_frames["crossed_book"] == 3, what="crossed counted")
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 2, what="bars")
        snap = s.feed.book_view.snapshot()
        assert snap is not None
        ok = snap.features["best_bid"] == snap.features["best_bid"]
        assert (snap.features["best_ask"][ok] > snap.features["best_bid"][ok]).all()
    assert s.sample("dolphind_feed_bad_frames_total", {"reason": "crossed_book"}) == 3
    s.assert_no_lost_bar()


async def test_rotation_before_the_cutoff_is_make_before_break(recording: Recording,
                                                               metrics: Metrics) -> None:
    async with live(recording, metrics, rotate_after_s=0.7) as s:
        await eventually(lambda: all(c.rotations >= 2 for c in s.feed.connections),
                         timeout=10, what="two rotations per connection")
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 2, what="bars")
    assert s.sample("dolphind_feed_reconnects_total", {"conn": "market-0", "reason": "rotate"}) >= 2
    # Rotation is not a gap: nothing was lost, no window skipped, the sequence is contiguous.
    assert s.sample("dolphind_feed_gaps_total", {"reason": "closed"}) == 0
    assert s.feed.bars.skipped == 0
    assert [b.seq for b in s.bars] == list(range(s.bars[0].seq, s.bars[0].seq + len(s.bars)))
    assert all(r == "ok" for r in s.readiness[5:])
    s.assert_no_lost_bar()


async def test_a_reopened_socket_counts_only_once_it_delivers(recording: Recording,
                                                              metrics: Metrics) -> None:
    """During a continuing outage the venue accepts the new socket and sends nothing: the
    feed must stay not-ready until a frame arrives, not flip to ready on the open socket."""
    async with live(recording, metrics) as s:
        await eventually(lambda: len(s.bars) >= 2, what="bars")
        s.fake.stall(60.0)  # no frame on any socket, old or new
        await s.fake.close_all()
        reopened = lambda: all(c.sessions >= 2 and c.connected and not c.stalled  # noqa: E731
                               for c in s.feed.connections)
        await eventually(reopened, what="both sockets re-opened")
        # Checked in the same step as the condition above: nothing ran in between.
        assert not any(c.healthy for c in s.feed.connections)
        assert s.feed.readiness().startswith("connected, no frame yet: ")
        assert s.feed.status()["connections"]["market-0"]["receiving"] is False
        # The message age counts from the last frame, not from the newest socket: re-opened
        # sockets (each replaced after 0.6 s of silence) do not make the outage look fresh.
        market = next(c for c in s.feed.connections if c.name == "market-0")
        await eventually(lambda: market.connected and not market.stalled and s.sample(
            "dolphind_feed_last_message_age_seconds", {"conn": "market-0"}) > 1.5,
            what="age grows on across re-opened sockets")
        s.fake.clear()  # frames flow again
        await eventually(lambda: s.feed.ready, what="ready once frames arrive")
        assert all(c.receiving for c in s.feed.connections)
    assert any(r.startswith("connected, no frame yet") for r in s.readiness)
    s.assert_no_lost_bar()


async def test_a_requested_reconnect_reopens_every_connection(recording: Recording,
                                                              metrics: Metrics) -> None:
    """The control plane's feed-reconnect counter (guardian, operator) reaches the sockets."""
    requests = [7]  # requests made before the feed existed are not for it
    async with live(recording, metrics, reconnect_requests=lambda: requests[0]) as s:
        await eventually(lambda: len(s.bars) >= 2, what="bars")
        assert s.fake.accepted == 2 and s.feed.requested_reconnects == 0
        requests[0] += 1
        await eventually(lambda: s.fake.accepted >= 4, what="both connections re-opened")
        for conn in ("market-0", "public-0"):
            assert s.sample("dolphind_feed_reconnects_total",
                            {"conn": conn, "reason": "requested"}) == 1
        assert s.sample("dolphind_feed_gaps_total", {"reason": "requested"}) == 2
        await eventually(lambda: s.feed.ready, what="ready again")
        n = len(s.bars)
        await eventually(lambda: len(s.bars) >= n + 2, what="bars after the reconnect")
        # Acted on once: the counter did not move again, so neither did the sockets.
        assert s.feed.requested_reconnects == 1
        assert s.sample("dolphind_feed_gaps_total", {"reason": "requested"}) == 2
    s.assert_no_lost_bar()


async def test_the_feed_stops_cleanly(recording: Recording, metrics: Metrics) -> None:
    """Cancelling the stage (what the daemon does to a source on shutdown) returns promptly,
    closes every socket and leaves no task of the feed behind."""
    async with FakeBinance(recording, speed=SPEED) as fake:
        feed, out, _ = make_feed(feed_config(fake.url), metrics=metrics)
        run = asyncio.create_task(feed.run())
        await eventually(lambda: feed.ready, what="feed ready")
        assert len(fake.clients) == 2
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, timeout=5)
        left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("feed:")]
        assert left == []
        assert not any(c.connected for c in feed.connections) and not feed.ready
        for conn in ("market-0", "public-0"):
            assert metrics.registry.get_sample_value("dolphind_feed_connected",
                                                     {"conn": conn}) == 0
        await eventually(lambda: not fake.clients, what="the server saw both sockets close")
        out.close()


def test_rebased_replay_stays_in_the_past_at_speed(recording: Recording) -> None:
    """--rebase (the daemon tests' fake venue) moves the 2021 capture to recent times that a
    client accepts: none in the future for far longer than a test runs, spacing kept."""
    fake = FakeBinance(recording, speed=8.0, rebase=True)
    first, last = recording.frames[0], recording.frames[-1]
    e0 = orjson.loads(fake._frame_text(first, 0))["data"]["E"]
    assert abs(e0 - (time.time() * 1000 - 3 * 3600 * 1000)) < 60_000
    # Still in the past when the wall clock has moved on by ten minutes of play (4800 s of
    # recorded time at speed 8), and recorded spacing is kept.
    loops = int(8.0 * 600 * 1000 // fake._period())
    e_late = orjson.loads(fake._frame_text(last, loops))["data"]["E"]
    assert e_late - e0 == loops * fake._period() + last.offset_ms
    assert e_late < time.time() * 1000 + 600_000
    plain = FakeBinance(recording, speed=8.0)
    assert plain._frame_text(first, 0) == first.raw  # without rebase: the recorded bytes
