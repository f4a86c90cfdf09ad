"""The user stream: order and account updates pushed by Binance over a websocket.

A listenKey is created by REST, kept alive every ``listen_key_keepalive_s``, and re-created
when Binance says it expired. Each connection first reconciles (reconcile.py) so that nothing
falls between the stream and REST; a connection that fails is retried with back-off, and REST
polling covers the orders while it is down. listenKeys are secrets (redacted from every error
line: aiohttp's handshake errors carry the URL).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable

import aiohttp
import orjson
import structlog

from dolphind.backoff import backoff_delay
from dolphind.config import BinanceVenueConfig
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.venues.binance.credentials import Redactor
from dolphind.venues.binance.lease import Lease
from dolphind.venues.binance.reconcile import Reconciler
from dolphind.venues.binance.reports import num, report_from_stream, trade_from_stream
from dolphind.venues.binance.rest import NETWORKS, BinanceAPIError, NoAnswer, NotSent, RestClient
from dolphind.venues.binance.tracking import OrderTracker

log = structlog.get_logger("dolphind.venues.binance")


class _Restart(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UserStream:
    """The websocket, its listenKey, and what it last said about balances and positions."""

    def __init__(self, config: Callable[[], BinanceVenueConfig], rest: RestClient,
                 book: OrderTracker, reconciler: Reconciler, lease: Lease,
                 metrics: VenueMetrics, redact: Redactor, note_error: Callable[[str], None],
                 monotonic: Callable[[], float]) -> None:
        self._cfg = config
        self._rest = rest
        self._book = book
        self._reconciler = reconciler
        self._lease = lease
        self._m = metrics
        self._redact = redact
        self._note_error = note_error
        self._mono = monotonic
        self.connected = False
        self.kick = asyncio.Event()  # reconnect now (lease change, listenKey gone)
        self.connects = 0
        self._listen_key: str | None = None
        self._listen_key_at = 0.0
        self.positions: dict[str, float] = {}
        self.balances: dict[str, float] = {}
        reconciler.bind_stream(lambda: self.connected, self.kick)

    @property
    def ws_base(self) -> str:
        c = self._cfg()
        return c.ws_base_url or NETWORKS[c.network][1]

    def listen_key_age_s(self) -> float | None:
        return round(self._mono() - self._listen_key_at, 1) if self._listen_key else None

    def set_connected(self, up: bool) -> None:
        self.connected = up
        self._m.user_stream_connected.set(1 if up else 0)
        if not up:
            self._reconciler.lost("user stream down")

    async def close(self) -> None:
        """Delete the listenKey: polite, and only by the holder (a fenced daemon must not
        close the holder's stream)."""
        if self._listen_key and self._lease.held and self._rest.ex is not None:
            with contextlib.suppress(Exception):  # best effort: it expires on its own anyway
                async with asyncio.timeout(2.0):
                    await self._rest.request("stream", "fapiPrivateDeleteListenKey", {}, 1)
        self.set_connected(False)

    async def _listen_key_create(self) -> str:
        res = await self._rest.request("stream", "fapiPrivatePostListenKey", {}, 1)
        self._listen_key = str(res["listenKey"])
        self._redact.remember(self._listen_key)
        self._listen_key_at = self._mono()
        self._m.listen_key_renewals.labels("created").inc()
        return self._listen_key

    async def run(self) -> None:
        """Connect, reconcile, read; reconnect with back-off when the connection ends."""
        cfg = self._cfg()
        attempt = 0  # failed connections in a row (back-off_delay's exponent)
        reason = "start"
        while True:
            if not self._lease.held:
                self.kick.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self.kick.wait()
                continue
            cfg = self._cfg()
            try:
                key = await self._listen_key_create()
                url = self.ws_base + cfg.user_stream_path.format(listen_key=key)
                assert self._rest.session is not None
                async with self._rest.session.ws_connect(
                        url, heartbeat=cfg.heartbeat_s,
                        timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                        max_msg_size=1 << 22) as ws:
                    self.connects += 1
                    self._m.user_stream_reconnects.labels(reason).inc()
                    self.set_connected(True)
                    log.info("venue.user_stream_connected", reason=reason)
                    self.kick.clear()
                    reader = asyncio.create_task(self._read_stream(ws))
                    try:
                        reason = await self._reconciler.while_connected(
                            reader, f"user_stream:{reason}")
                        attempt = 0
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await reader
            except (aiohttp.ClientError, OSError, TimeoutError, NotSent, NoAnswer,
                    BinanceAPIError, ValueError) as exc:
                reason = "error"
                # aiohttp's handshake errors carry the URL, i.e. the listenKey: never shown.
                error = self._redact(f"user stream: {type(exc).__name__}: {exc}")
                self._note_error(error)
                log.warning("venue.user_stream_error", error=error)
            finally:
                self.set_connected(False)
            log.warning("venue.user_stream_down", reason=reason, attempt=attempt)
            await asyncio.sleep(backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s))
            attempt += 1

    async def _read_stream(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    await self._on_stream_text(msg.data)
                except _Restart as exc:
                    return exc.reason
                except (ValueError, KeyError, TypeError) as exc:
                    self._m.errors.labels("bad_stream_frame").inc()
                    log.warning("venue.bad_stream_frame", error=f"{type(exc).__name__}: {exc}")
            elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE,
                              aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
        return "closed"

    async def _on_stream_text(self, text: str) -> None:
        msg = orjson.loads(text)
        if isinstance(msg, dict) and "data" in msg and "stream" in msg:
            msg = msg["data"]
        kind = msg.get("e")
        if kind == "ORDER_TRADE_UPDATE":
            rep = report_from_stream(msg)
            tr = trade_from_stream(msg)
            await self._book.apply(rep, [tr] if tr else [], "stream")
        elif kind == "ACCOUNT_UPDATE":
            a = msg.get("a", {})
            for b in a.get("B", []):
                self.balances[str(b["a"])] = num(b.get("wb"))
            for p in a.get("P", []):
                if p.get("ps", "BOTH") == "BOTH":
                    self.positions[str(p["s"])] = num(p.get("pa"))
        elif kind == "listenKeyExpired":
            self._m.listen_key_renewals.labels("expired").inc()
            log.warning("venue.listen_key_expired")
            self._listen_key = None
            raise _Restart("listen_key_expired")

    async def keep_alive(self) -> None:
        """Keep the listenKey alive (Binance expires it after an hour without)."""
        while True:
            await asyncio.sleep(self._cfg().listen_key_keepalive_s)
            if not (self._listen_key and self.connected and self._lease.held):
                continue
            try:
                await self._rest.request("stream", "fapiPrivatePutListenKey", {}, 1)
                self._m.listen_key_renewals.labels("kept_alive").inc()
            except BinanceAPIError as exc:
                self._m.listen_key_renewals.labels("failed").inc()
                log.warning("venue.listen_key_keepalive_failed", code=exc.code, msg=exc.msg)
                if exc.code == -1125 or exc.status < 500:  # "This listenKey does not exist."
                    self._listen_key = None
                    self.kick.set()  # re-create it and reconnect
            except (NotSent, NoAnswer) as exc:
                self._m.listen_key_renewals.labels("failed").inc()
                log.warning("venue.listen_key_keepalive_failed", error=str(exc))
