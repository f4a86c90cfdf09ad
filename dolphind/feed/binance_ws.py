"""The live feed: Binance USDT-M futures combined-stream WebSockets -> bars and book (SPEC §1).

Every stream kind goes to its own routed connections (``feed.streams``); each connection keeps
its socket alive, backs off, rotates before Binance's 24 h cut-off and reconnects on request
(``feed.ws_connection``). This module is the stage that owns them: it parses every frame
inline and applies it to the bar and book state.

A frame stamped more than ``max_clock_skew_s`` ahead of the local clock is dropped and counted
(``future_time``) before it can move the bar clock or the book (``feed.timeguard``).

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
import ssl
import time
from typing import Any, Callable, cast

import aiohttp
import numpy as np
import structlog

from dolphind.channels import Channel, ChannelClosed
from dolphind.clock import Clock, LiveClock
from dolphind.config import BinanceFeedConfig, Config, ConfigError
from dolphind.events import Bar, MarkPrice
from dolphind.feed.bars import BarBuilder
from dolphind.feed.book import BookState, BookView
from dolphind.feed.parse import (
    AGG_TRADE,
    DEPTH5,
    KINDS,
    MARK_PRICE,
    BadFrame,
    PriceCache,
)
from dolphind.feed.streams import plan_streams, shard
from dolphind.feed.timeguard import FutureGuard, max_jump_ms
from dolphind.feed.ws_connection import Connection, readiness_text
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics

log = structlog.get_logger("dolphind.feed.binance")

_WATCHDOG_S = 0.1
_FLUSH_S = 1.0


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
            for mp in cast("list[MarkPrice]", ev):
                row = index.get(mp.symbol)
                if row is None:
                    continue  # the all-market stream carries symbols outside the universe
                if self.bars_from_trades:
                    self.bars.observe(mp.event_ms)
                else:
                    self.bars.on_price(row, mp.event_ms, mp.price)
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


def latencies_ms(log_: list[float]) -> tuple[float, float]:
    """p50 and p99 of a latency log in milliseconds (for the benchmark)."""
    arr = np.asarray(log_, dtype=np.float64) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))
