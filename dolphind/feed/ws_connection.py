"""One routed, sharded group of Binance streams and the socket that carries it.

Each ``Connection`` owns one socket at a time and re-establishes it

- on close or error, with capped exponential back-off and jitter (``dolphind.backoff``; reset
  once a session delivered data, so a server that accepts and drops at once is not hammered);
- on a stall: no frame at all for ``stall_timeout_s`` (the feed's watchdog interrupts it);
- before Binance's 24 h cut-off (``rotate_after_s``): make-before-break, the new socket is
  read together with the old one until it delivers its first frame, so rotation loses nothing
  (aggTrade duplicates from the overlap are dropped by aggregate id, depth by event time);
- when the control plane asks (``Control.reconnect_feed``, e.g. the guardian's exchange-lag
  playbook): every connection, reason ``requested``.

A connection is healthy (for readiness and the bar gap logic) only once its current socket has
delivered a frame: during a continuing outage a venue may accept sockets and send nothing.

A subscribed stream that delivers nothing for ``stream_grace_s`` raises an alarm (log, counter,
gauge): that is how a wrong route or a delisted symbol shows up.

The connection hands every frame to its ``FeedHost`` (the feed), which parses it inline.
"""

from __future__ import annotations

import asyncio
import time
from ssl import SSLContext
from typing import Any, Protocol

import aiohttp
import structlog

from dolphind.backoff import Backoff
from dolphind.config import BinanceFeedConfig
from dolphind.feed.parse import FrameParser, PriceCache, stream_kind
from dolphind.feed.streams import stream_url
from dolphind.telemetry.metrics import Metrics

log = structlog.get_logger("dolphind.feed.binance")

_TIMED_EVERY = 64  # one frame in this many is timed for dolphind_feed_parse_seconds


class GapMarker(Protocol):
    def mark_gap(self) -> None: ...


class FeedHost(Protocol):
    """What a connection needs from the feed that owns it."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def prices(self) -> PriceCache:
        """Price strings -> float, shared by every connection's parser."""

    @property
    def latency_log(self) -> list[float] | None:
        """Set by the benchmark: every frame's read-to-state time is appended here."""

    @property
    def ssl(self) -> SSLContext | bool: ...

    @property
    def bars(self) -> GapMarker:
        """Told when a connection that carries bars lost its session."""

    @property
    def settings(self) -> BinanceFeedConfig: ...

    def handle(self, conn: "Connection", raw: str | bytes) -> None: ...


class Connection:
    """One routed, sharded stream group; keeps one socket open (two while rotating)."""

    def __init__(self, name: str, route: str, streams: list[str], feed: FeedHost) -> None:
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
