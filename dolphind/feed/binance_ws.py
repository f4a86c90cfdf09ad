"""The live feed: Binance USDT-M futures combined-stream WebSockets -> bars and book (SPEC §1).

Routing (Binance, since 2026-04): ``/public`` carries depth and bookTicker, ``/market`` carries
aggTrade, kline and markPrice. A connection on the wrong route silently receives nothing, so
every kind goes to its own routed connections, at most ``max_streams_per_conn`` streams each:
``<ws_base_url>/<route>/stream?streams=a/b/c``.

Each ``Connection`` owns one socket at a time and re-establishes it

- on close or error, with capped exponential back-off and full jitter (reset once a session
  delivered data, so a server that accepts and drops at once is not hammered);
- on a stall: no frame at all for ``stall_timeout_s`` (the feed's watchdog interrupts it);
- before Binance's 24 h cut-off (``rotate_after_s``): make-before-break, the new socket is
  read together with the old one until it delivers its first frame, so rotation loses nothing
  (aggTrade duplicates from the overlap are dropped by aggregate id, depth by event time);
- when the control plane asks (``Control.reconnect_feed``, e.g. the guardian's exchange-lag
  playbook): every connection, reason ``requested``.

A connection is healthy (for readiness and the bar gap logic) only once its current socket has
delivered a frame: during a continuing outage a venue may accept sockets and send nothing.
A frame stamped more than ``max_clock_skew_s`` ahead of the local clock is dropped and counted
(``future_time``) before it can move the bar clock or the book.

A subscribed stream that delivers nothing for ``stream_grace_s`` raises an alarm (log, counter,
gauge): that is how a wrong route or a delisted symbol shows up.

The reader parses each frame inline (``FrameParser``) and updates the bar and book state
directly, with no queue in between: the only queue is the bounded bars channel downstream.
Per-frame counters are plain integers, flushed to Prometheus by the watchdog.

Over wss:// the server's certificate is checked against the system's certificate authorities,
or those of ``ca_file``. aiohttp answers the server's pings, and its heartbeat pings a socket
that received nothing for ``heartbeat_s``: no pong within half of that and the socket is
dropped (reason ``error``), long before a silent but answering socket meets the stall timeout.
"""

from __future__ import annotations

import asyncio
import collections
import random
import ssl
import time
from typing import Any, Callable

import aiohttp
import numpy as np
import structlog

from dolphind.channels import Channel, ChannelClosed
from dolphind.clock import Clock, LiveClock
from dolphind.config import BinanceFeedConfig, Config, ConfigError
from dolphind.events import Bar
from dolphind.feed.bars import BarBuilder
from dolphind.feed.book import BookState, BookView
from dolphind.feed.parse import (
    AGG_TRADE,
    BOOK_TICKER,
    DEPTH5,
    KINDS,
    MARK_PRICE,
    BadFrame,
    FrameParser,
    PriceCache,
    stream_kind,
)
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics

log = structlog.get_logger("dolphind.feed.binance")

ROUTE_OF_KIND = {DEPTH5: "public", BOOK_TICKER: "public", AGG_TRADE: "market",
                 MARK_PRICE: "market"}
_WATCHDOG_S = 0.1
_FLUSH_S = 1.0
_TIMED_EVERY = 64  # one frame in this many is timed for dolphind_feed_parse_seconds


def plan_streams(cfg: BinanceFeedConfig) -> dict[str, list[str]]:
    """The streams to subscribe, grouped by route, in a stable order."""
    routes: dict[str, list[str]] = {"public": [], "market": []}
    syms = [s.lower() for s in cfg.symbols]
    if cfg.bar_source == "aggTrade":
        routes["market"] += [f"{s}@aggTrade" for s in syms]
    else:
        routes["market"].append("!markPrice@arr@1s")
    if cfg.depth:
        routes["public"] += [f"{s}@depth5@500ms" for s in syms]
    if cfg.book_ticker:
        routes["public"] += [f"{s}@bookTicker" for s in syms]
    for route, streams in routes.items():
        for st in streams:
            kind = stream_kind(st)
            assert kind is not None and ROUTE_OF_KIND[kind] == route, st
    return {r: s for r, s in routes.items() if s}


def shard(streams: list[str], max_per_conn: int) -> list[list[str]]:
    """Split ``streams`` into as few connections as the limit allows, evenly sized."""
    if not streams:
        return []
    n = -(-len(streams) // max_per_conn)
    size = -(-len(streams) // n)
    return [streams[i:i + size] for i in range(0, len(streams), size)]


def stream_url(base: str, route: str, streams: list[str]) -> str:
    return f"{base}/{route}/stream?streams={'/'.join(streams)}"


def is_future(event_ms: int, now_ms: int, skew_ms: int) -> bool:
    """True when ``event_ms`` is more than ``skew_ms`` ahead of the local clock ``now_ms``."""
    return event_ms - now_ms > skew_ms


def max_jump_ms(cfg: Config) -> int:
    """How far a frame may lead the bar clock before the time so far counts as stale (the
    past guard, ``BarBuilder``): the clock-skew tolerance, and at least as many bars as carry
    a price forward (after ``max_stale_bars`` empty windows every symbol is absent anyway, so
    skipping them loses nothing even when the leap was real, e.g. a replay run faster than
    real time through a pause)."""
    bar_ms = int(cfg.feed.bar_seconds * 1000)
    return max(int(cfg.binance_feed.max_clock_skew_s * 1000),
               bar_ms * (cfg.feed.max_stale_bars + 1))


class FutureGuard:
    """Rejects event times too far ahead of the local wall clock without a clock read per frame.

    A frame an hour ahead would move the bar clock an hour on (720 carried-forward 5 s bars,
    then every real price is late); one years ahead would keep ``close_due`` busy for good. The
    horizon (clock + tolerance) cached at the last read is never later than the current one
    while the clock moves forward, so a time at or below it is accepted without reading the
    clock; only a time beyond it re-reads the clock (real data crosses it about once per
    ``max_clock_skew_s`` of venue time). The watchdog refreshes it too, which picks up a config
    reload and bounds how long a wall clock stepped backwards is trusted.
    """

    __slots__ = ("_now_ms", "_skew_ms", "horizon_ms")

    def __init__(self, now_ms: Callable[[], int], skew_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self._skew_ms = skew_ms
        self.horizon_ms = 0  # the first frame reads the clock

    def refresh(self) -> None:
        self.horizon_ms = self._now_ms() + self._skew_ms()

    def too_far(self, event_ms: int) -> bool:
        """Re-read the clock and judge ``event_ms``; the caller first checks ``horizon_ms``."""
        now, skew = self._now_ms(), self._skew_ms()
        self.horizon_ms = now + skew
        return is_future(event_ms, now, skew)


class Backoff:
    """Capped exponential back-off with full jitter in [d/2, d]."""

    def __init__(self, settings: Callable[[], BinanceFeedConfig],
                 rng: random.Random | None = None) -> None:
        self._settings = settings
        self._rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        cfg = self._settings()
        d = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return self._rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0


class _Interrupt(Exception):
    """Raised inside a reader to end its session (stall, rotation due, shutdown)."""


class Connection:
    """One routed, sharded stream group; keeps one socket open (two while rotating)."""

    def __init__(self, name: str, route: str, streams: list[str], feed: "BinanceFeed") -> None:
        self.name = name
        self.route = route
        self.streams = streams
        self.parser = FrameParser(streams, prices=feed.prices)
        self.carries_bars = route == "market"
        self._feed = feed
        self._log = log.bind(conn=name)
        self.backoff = Backoff(lambda: feed.settings)
        self.connected = False
        self.stalled = False
        # A frame arrived since the socket was (re)opened: an open socket alone proves nothing
        # (a venue that accepts and then sends nothing looks exactly like that).
        self.receiving = False
        self.connected_at = 0.0
        self.last_message = 0.0
        self.sessions = 0
        self.reconnects = 0
        self.rotations = 0
        self.last_error: str | None = None
        # Per-stream frame counts (updated by the parser) and when each last changed.
        self._seen_count = [0] * len(streams)
        self._seen_at = [0.0] * len(streams)
        self.silent: set[str] = set()
        self._cm: asyncio.Timeout | None = None
        self._end_reason = ""

    # ---- the session loop ---------------------------------------------------------------

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                ws = await self._connect(session)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._feed.metrics.feed_connect_failures.labels(self.name).inc()
                delay = self.backoff.next()
                self._log.warning("feed.connect_failed", error=self.last_error,
                                  retry_in_s=round(delay, 3), attempt=self.backoff.attempt)
                await asyncio.sleep(delay)
                continue
            reason = await self._serve(session, ws)
            self._session_lost(reason)
            delay = self.backoff.next()
            self._log.warning("feed.reconnect", reason=reason, retry_in_s=round(delay, 3),
                              attempt=self.backoff.attempt)
            await asyncio.sleep(delay)

    async def _connect(self, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        cfg = self._feed.settings
        url = stream_url(cfg.ws_base_url, self.route, self.streams)
        async with asyncio.timeout(cfg.connect_timeout_s):
            ws = await session.ws_connect(
                url, heartbeat=cfg.heartbeat_s, autoping=True, compress=0, ssl=self._feed.ssl,
                max_msg_size=16 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0))
        self.sessions += 1
        now = time.monotonic()
        if not self.connected:
            # last_message stays: it is the last frame actually received, and a re-opened
            # socket is not data (the stall timer restarts from connected_at instead).
            self.connected_at = now
            self.receiving = False  # not while rotating: the old socket still delivers
        if self.sessions == 1:
            # Silence is measured from the first subscription and survives reconnects: a
            # stream on the wrong route stays silent however often the socket is renewed.
            self._seen_at = [now] * len(self.streams)
        self.connected = True
        self.stalled = False
        self._feed.metrics.feed_connected.labels(self.name).set(1)
        self._log.info("feed.connected", streams=len(self.streams), session=self.sessions)
        return ws

    async def _serve(self, session: aiohttp.ClientSession,
                     ws: aiohttp.ClientWebSocketResponse) -> str:
        """Read ``ws`` until it ends; rotate it when due. Returns why the data stopped."""
        try:
            while True:
                reason = await self._read(ws)
                if reason != "rotate":
                    return reason
                ws = await self._rotate(session, ws)
        finally:
            await _close(ws)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        feed = self._feed
        handle = feed.handle
        receive = ws.receive
        mono = time.monotonic
        timed = feed.metrics.feed_parse_seconds.observe
        perf = time.perf_counter
        latency = feed.latency_log
        n = 0
        self._end_reason = ""
        try:
            async with asyncio.timeout(None) as cm:
                self._cm = cm
                while True:
                    msg = await receive()
                    # Benchmark only: the clock starts when aiohttp hands the frame over.
                    t0 = perf() if latency is not None else 0.0
                    t = msg.type
                    if t is aiohttp.WSMsgType.TEXT or t is aiohttp.WSMsgType.BINARY:
                        if latency is not None:
                            handle(self, msg.data)
                            latency.append(perf() - t0)
                        elif n % _TIMED_EVERY:
                            handle(self, msg.data)
                        else:
                            t0 = perf()
                            handle(self, msg.data)
                            timed(perf() - t0)
                        n += 1
                        self.last_message = mono()
                        self.receiving = True
                    elif t is aiohttp.WSMsgType.ERROR:
                        self.last_error = f"{type(msg.data).__name__}: {msg.data}"
                        return "error"
                    else:  # CLOSE / CLOSING / CLOSED
                        exc = ws.exception()
                        if exc is not None:
                            self.last_error = f"{type(exc).__name__}: {exc}"
                            return "error"
                        self.last_error = f"closed by server (code {ws.close_code})"
                        return "closed"
        except TimeoutError:
            if self._end_reason:
                return self._end_reason
            raise
        finally:
            self._cm = None
            if n:
                self.backoff.reset()  # this session delivered data: the next failure is new

    def interrupt(self, reason: str) -> bool:
        """End the current read (called by the watchdog): ``stall``, ``rotate`` or
        ``requested`` (the control plane asked for a reconnect)."""
        cm = self._cm
        if cm is None or self._end_reason:
            return False
        self._end_reason = reason
        cm.reschedule(asyncio.get_running_loop().time())
        return True

    async def _rotate(self, session: aiohttp.ClientSession,
                      old: aiohttp.ClientWebSocketResponse) -> aiohttp.ClientWebSocketResponse:
        """Make-before-break: open a new socket and switch once it delivers a frame."""
        cfg = self._feed.settings
        try:
            new = await self._connect(session)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._log.warning("feed.rotate_failed", error=self.last_error)
            self.connected_at = time.monotonic() - cfg.rotate_after_s + self.backoff.next()
            return old
        drain = asyncio.create_task(self._drain(old), name=f"feed:{self.name}:drain")
        try:
            async with asyncio.timeout(cfg.stall_timeout_s):
                while True:
                    msg = await new.receive()
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        self._feed.handle(self, msg.data)
                        break
                    raise ConnectionError(f"new socket ended during rotation ({msg.type.name})")
        except (TimeoutError, ConnectionError) as exc:
            self._log.warning("feed.rotate_failed", error=str(exc) or "no frame on new socket")
            await _stop(drain)
            await _close(new)
            self.connected_at = time.monotonic() - cfg.rotate_after_s + self.backoff.next()
            return old
        except BaseException:
            await _stop(drain)
            await _close(new)
            raise
        await _stop(drain)
        await _close(old)
        self.rotations += 1
        self.connected_at = time.monotonic()
        self.last_message = self.connected_at
        self._feed.metrics.feed_reconnects.labels(self.name, "rotate").inc()
        self._log.info("feed.rotated", rotations=self.rotations)
        return new

    async def _drain(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Keep reading the old socket while the new one comes up (rotation overlap)."""
        async for msg in ws:
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self._feed.handle(self, msg.data)
                self.last_message = time.monotonic()

    def _session_lost(self, reason: str) -> None:
        m = self._feed.metrics
        self.connected = False
        self.reconnects += 1
        m.feed_connected.labels(self.name).set(0)
        m.feed_reconnects.labels(self.name, reason).inc()
        m.feed_gaps.labels(reason).inc()
        if self.carries_bars:
            self._feed.bars.mark_gap()
        self._log.warning("feed.gap", reason=reason, error=self.last_error)

    # ---- watchdog (every _WATCHDOG_S) ---------------------------------------------------

    def check(self, now: float) -> None:
        cfg = self._feed.settings
        seen = self.last_message or self.connected_at
        age = now - seen if seen else 0.0
        # Exported while disconnected too: the age keeps growing through a gap, and through
        # re-opened sockets that deliver nothing (what the guardian's exchange-lag check reads).
        self._feed.metrics.feed_last_message_age.labels(self.name).set(age)
        if not self.connected:
            return
        # A socket gets the whole stall timeout from its opening to deliver its first frame.
        silent = now - max(self.last_message, self.connected_at)
        if silent > cfg.stall_timeout_s and not self.stalled:
            self.stalled = True
            self._feed.metrics.feed_connected.labels(self.name).set(0)
            self._log.warning("feed.stalled", silent_s=round(silent, 3))
            self.interrupt("stall")
        elif now - self.connected_at > cfg.rotate_after_s:
            self.interrupt("rotate")
        self._check_streams(now, cfg.stream_grace_s)

    def _check_streams(self, now: float, grace: float) -> None:
        counts = self.parser.counts
        for i, c in enumerate(counts):
            if c != self._seen_count[i]:
                self._seen_count[i] = c
                self._seen_at[i] = now
                if self.streams[i] in self.silent:
                    self.silent.discard(self.streams[i])
                    self._log.info("feed.stream_resumed", stream=self.streams[i])
            elif now - self._seen_at[i] > grace and self.streams[i] not in self.silent:
                stream = self.streams[i]
                self.silent.add(stream)
                kind = stream_kind(stream) or "unknown"
                self._feed.metrics.feed_stream_silence_alarms.labels(kind).inc()
                self._log.warning("feed.stream_silent", stream=stream, grace_s=grace)
        self._feed.metrics.feed_silent_streams.labels(self.name).set(len(self.silent))

    @property
    def healthy(self) -> bool:
        return self.connected and self.receiving and not self.stalled

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"route": self.route, "streams": len(self.streams), "connected": self.connected,
                "receiving": self.receiving, "stalled": self.stalled, "sessions": self.sessions,
                "reconnects": self.reconnects, "rotations": self.rotations,
                "last_message_age_s": round(now - self.last_message, 3)
                if self.last_message else None,
                "age_s": round(now - self.connected_at, 3) if self.connected else None,
                "silent_streams": sorted(self.silent)[:20], "last_error": self.last_error}


async def _close(ws: aiohttp.ClientWebSocketResponse) -> None:
    try:
        await ws.close()
    except (aiohttp.ClientError, OSError, RuntimeError):
        pass  # the socket is gone either way


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves, not just the drain task
    except (aiohttp.ClientError, OSError) as exc:
        log.info("feed.drain_ended", error=str(exc))


class BinanceFeed:
    """A source stage: Binance WebSockets in, ``Bar`` events out, book features kept.

    Restart-safe: the bar and book state live on this object, so when the supervisor restarts
    ``run`` after a crash the bars continue with the same sequence.

    ``clock`` is the local wall clock that frames' event times are checked against (see
    ``FutureGuard``). ``reconnect_requests`` reads the control plane's reconnect generation
    counter (``Control.feed_reconnect_requests``); the watchdog polls it and, when it moved,
    re-opens every connection (reconnect reason ``requested``).
    """

    name = "feed"
    is_source = True

    def __init__(self, output: Channel[Bar], config: Callable[[], Config], health: Health,
                 metrics: Metrics, clock: Clock | None = None,
                 reconnect_requests: Callable[[], int] = lambda: 0) -> None:
        self.output = output
        self._config = config
        self._health = health
        self.metrics = metrics
        cfg = config()
        b = cfg.binance_feed
        self.symbols: tuple[str, ...] = tuple(b.symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.bars_from_trades = b.bar_source == "aggTrade"
        self.bars = BarBuilder(
            self.symbols, cfg.feed.bar_seconds, b.bar_close_delay_ms,
            lambda: self._config().feed.max_stale_bars, self._emit,
            on_late=self._on_late, on_skipped=self._on_skipped,
            max_jump_ms=max_jump_ms(cfg))
        self.book = BookState(self.symbols, lambda: self._config().book, cfg.feed.bar_seconds,
                              on_bad=self._bad_depth)
        self.prices = PriceCache()  # price strings -> float, shared by the connections' parsers
        self.connections: list[Connection] = []
        for route, streams in plan_streams(b).items():
            for k, group in enumerate(shard(streams, b.max_streams_per_conn)):
                self.connections.append(Connection(f"{route}-{k}", route, group, self))
        self._last_agg = [-1] * len(self.symbols)
        self.tickers: list[Any] = [None] * len(self.symbols)
        self._counts = {k: [0, 0] for k in KINDS}
        self._flushed = {k: [0, 0] for k in KINDS}
        self._dups = 0
        self._dups_flushed = 0
        self._late_flushed = 0
        self._lateness = metrics.feed_bar_lateness.labels()
        self.bad_frames: collections.Counter[str] = collections.Counter()
        self._pending: collections.deque[Bar] = collections.deque(
            maxlen=max(16, 4 * output.capacity))
        self._pending_ready = asyncio.Event()
        self.bars_dropped = 0
        self._next_close_ms = 0
        # Set by the benchmark: every frame's read-to-state time is appended here.
        self.latency_log: list[float] | None = None
        clock = clock or LiveClock()
        self._future = FutureGuard(lambda: clock.now_ns() // 1_000_000,
                                   lambda: int(self.settings.max_clock_skew_s * 1000))
        self._reconnect_requests = reconnect_requests
        self.ssl = tls_context(cfg)
        # Requests made before this feed existed are not for it.
        self._reconnect_seen = reconnect_requests()
        self.requested_reconnects = 0

    @property
    def settings(self) -> BinanceFeedConfig:
        return self._config().binance_feed

    @property
    def book_view(self) -> BookView:
        return self.book.view

    # ---- the hot path ---------------------------------------------------------------------

    def handle(self, conn: Connection, raw: str | bytes) -> None:
        """Parse one frame and apply it to the bar and book state; never raises for data."""
        try:
            kind, ev = conn.parser.parse(raw)
        except BadFrame as exc:
            self._bad(exc.reason, conn)
            return
        except Exception:  # the parser met input it did not foresee: drop, count, keep going
            log.exception("feed.parser_error", conn=conn.name)
            self._bad("parser_error", conn)
            return
        # One frame from a clock far ahead must not drag the bars and the book with it.
        if kind is MARK_PRICE:
            newest = max((mp.event_ms for mp in ev), default=0)  # type: ignore[union-attr]
        else:
            newest = ev.event_ms  # type: ignore[union-attr]
        if newest > self._future.horizon_ms and self._future.too_far(newest):
            self._bad("future_time", conn)
            return
        c = self._counts[kind]
        c[0] += 1
        c[1] += len(raw)
        if kind is AGG_TRADE:
            i = self.index[ev.symbol]  # type: ignore[union-attr]
            if ev.agg_id <= self._last_agg[i]:  # type: ignore[union-attr]
                self._dups += 1  # the same print from the other socket while rotating
                return
            self._last_agg[i] = ev.agg_id  # type: ignore[union-attr]
            self.bars.on_price(i, newest, ev.price, ev.qty)  # type: ignore[union-attr]
            t = newest
        elif kind is DEPTH5:
            self.book.on_depth(self.index[ev.symbol], ev)  # type: ignore[union-attr,arg-type]
            t = newest
            self.bars.observe(t)
        elif kind is MARK_PRICE:
            t = 0
            index = self.index
            for mp in ev:  # type: ignore[union-attr]
                i = index.get(mp.symbol)
                if i is None:
                    continue  # the all-market stream carries symbols outside the universe
                if self.bars_from_trades:
                    self.bars.observe(mp.event_ms)
                else:
                    self.bars.on_price(i, mp.event_ms, mp.price)
                t = mp.event_ms
        else:  # BOOK_TICKER
            self.tickers[self.index[ev.symbol]] = ev  # type: ignore[union-attr]
            t = newest
            self.bars.observe(t)
        if t >= self._next_close_ms:
            self.close_bars()

    def _bad(self, reason: str, conn: Connection | None) -> None:
        self.bad_frames[reason] += 1
        self.metrics.feed_bad_frames.labels(reason).inc()
        n = self.bad_frames[reason]
        if n & (n - 1) == 0:  # log the 1st, 2nd, 4th, 8th... of each reason, not a flood
            log.warning("feed.bad_frame", conn=conn.name if conn else "book", reason=reason,
                        count=n)

    def _bad_depth(self, reason: str) -> None:
        """A kept depth snapshot failed to decode when the book sampled it."""
        self._bad(reason, None)

    # ---- bars -----------------------------------------------------------------------------

    def close_bars(self) -> None:
        healthy = all(c.healthy for c in self.connections if c.carries_bars)
        self.bars.close_due(healthy)
        nxt = self.bars.next_start
        if nxt is not None:
            self._next_close_ms = nxt + self.bars.bar_ms + self.bars.close_delay_ms

    def _emit(self, bar: Bar) -> None:
        """A bar closed: sample the book at the same moment, then hand the bar over."""
        end_ms = bar.ts_ns // 1_000_000 + self.bars.bar_ms
        volume = self.bars.last_volume if self.bars_from_trades else None
        self.book.sample(bar.ts_ns, end_ms, volume)
        if not self._pending:
            try:
                if self.output.offer(bar):
                    self._health.beat(self.name)
                    return
            except ChannelClosed:
                return  # shutting down
        if len(self._pending) == self._pending.maxlen:
            self.bars_dropped += 1  # the consumer is minutes behind; MarketStage sees the gap
        self._pending.append(bar)
        self._pending_ready.set()

    def _on_late(self, lateness_s: float) -> None:
        # A lagging connection can bring thousands a second: the lock-free histogram here,
        # the counter from ``bars.late`` when the watchdog flushes.
        self._lateness.observe(lateness_s)

    def _on_skipped(self, n: int) -> None:
        self.metrics.feed_bars_skipped.inc(n)
        log.warning("feed.bars_skipped", bars=n, reason="feed gap with no data")

    async def _publisher(self) -> None:
        """Hands over bars the channel had no room for, in order, waiting for room."""
        while True:
            await self._pending_ready.wait()
            while self._pending:
                await self.output.put(self._pending[0])
                self._pending.popleft()
                self._health.beat(self.name)
            self._pending_ready.clear()

    # ---- the stage ------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.settings
        log.info("feed.starting", connections=len(self.connections), symbols=len(self.symbols),
                 bar_source=cfg.bar_source, base_url=cfg.ws_base_url)
        connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            try:
                async with asyncio.TaskGroup() as tg:
                    for conn in self.connections:
                        tg.create_task(conn.run(session), name=f"feed:{conn.name}")
                    tg.create_task(self._publisher(), name="feed:publisher")
                    await self._watchdog()
            finally:
                for conn in self.connections:
                    if conn.connected:
                        conn.connected = False
                        self.metrics.feed_connected.labels(conn.name).set(0)

    async def _watchdog(self) -> None:
        last_flush = 0.0
        while True:
            await asyncio.sleep(_WATCHDOG_S)
            now = time.monotonic()
            self._future.refresh()
            self.bars.max_jump_ms = max_jump_ms(self._config())  # reloadable inputs
            self.poll_reconnect_requests()
            for conn in self.connections:
                conn.check(now)
            self.close_bars()  # the clock path: bars close on time in a quiet market
            healthy = sum(c.healthy for c in self.connections)
            self._health.sensors["feed"] = healthy / max(1, len(self.connections))
            if healthy == len(self.connections):
                self._health.beat(self.name)
            if now - last_flush >= _FLUSH_S:
                last_flush = now
                self.flush_metrics()

    def poll_reconnect_requests(self) -> int:
        """Act on a reconnect the control plane asked for since the last poll.

        Several requests between two polls are one reconnect: the sockets are new either way.
        Returns how many connections were interrupted (a connection that is between sockets
        is already reconnecting and is left alone).
        """
        n = self._reconnect_requests()
        if n == self._reconnect_seen:
            return 0
        self._reconnect_seen = n
        self.requested_reconnects += 1
        log.warning("feed.reconnect_requested", request=n)
        interrupted = 0
        for conn in self.connections:
            if conn.interrupt("requested"):
                interrupted += 1
        return interrupted

    def flush_metrics(self) -> None:
        m = self.metrics
        for kind, (msgs, nbytes) in self._counts.items():
            done = self._flushed[kind]
            if msgs > done[0]:
                m.feed_messages.labels(kind).inc(msgs - done[0])
                m.feed_bytes.labels(kind).inc(nbytes - done[1])
                done[0], done[1] = msgs, nbytes
        if self._dups > self._dups_flushed:
            m.feed_duplicates.labels(AGG_TRADE).inc(self._dups - self._dups_flushed)
            self._dups_flushed = self._dups
        if self.bars.late > self._late_flushed:
            m.feed_late_frames.inc(self.bars.late - self._late_flushed)
            self._late_flushed = self.bars.late

    # ---- ops views --------------------------------------------------------------------------

    def readiness(self) -> str:
        """"ok" when every connection is up and receiving and a bar has been published."""
        return readiness_text(self.connections, self.bars.emitted)

    @property
    def ready(self) -> bool:
        return self.readiness() == "ok"

    def status(self) -> dict[str, Any]:
        macro = self.book.view.macro()
        return {
            "kind": "binance",
            "symbols": len(self.symbols),
            "bar_source": self.settings.bar_source,
            "bars_emitted": self.bars.emitted,
            "bars_skipped": self.bars.skipped,
            "bar_seq": self.bars.seq,
            "late_frames": self.bars.late,
            "bars_dropped": self.bars_dropped,
            "messages": {k: v[0] for k, v in self._counts.items() if v[0]},
            "bad_frames": dict(self.bad_frames),
            "duplicates": self._dups,
            "watermark_ms": self.bars.watermark_ms,
            "connections": {c.name: c.status() for c in self.connections},
            "book": None if macro is None else {
                "cascade_count": macro.cascade_count, "regime_signal": macro.regime_signal,
                "symbols_with_book": macro.symbols_with_book},
        }


def tls_context(cfg: Config) -> ssl.SSLContext | bool:
    """What wss:// connections verify the server with: the certificate authorities of
    ``binance_feed.ca_file`` (restart-only), or True for aiohttp's default, the system's."""
    ca_file = cfg.binance_feed.ca_file
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=cfg.resolve(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"binance_feed.ca_file: cannot load {ca_file!r} "
                           f"({getattr(exc, 'strerror', None) or exc})"]) from None


def readiness_text(connections: list[Connection], bars_emitted: int) -> str:
    """Why the feed is not ready, or "ok". A re-opened socket counts only once it delivered
    a frame: during a continuing outage the venue may accept connections and send nothing."""
    down = [c.name for c in connections if not c.connected or c.stalled]
    silent = [c.name for c in connections if c.connected and not c.stalled and not c.receiving]
    parts = []
    if down:
        parts.append("disconnected or stalled: " + ", ".join(down))
    if silent:
        parts.append("connected, no frame yet: " + ", ".join(silent))
    if parts:
        return "; ".join(parts)
    if bars_emitted == 0:
        return "no bar yet"
    return "ok"


def latencies_ms(log_: list[float]) -> tuple[float, float]:
    """p50 and p99 of a latency log in milliseconds (for the benchmark)."""
    arr = np.asarray(log_, dtype=np.float64) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))
