"""Signed REST to Binance USDT-M futures through ccxt: one request path for every call.

Every request goes through ``RestClient.request``: the rate budget first (rate.py), then the
call, then the answer's bookkeeping.

- **Rate limits come from Binance's answers.** An order that would wait longer than
  ``max_order_delay_s`` is refused (``NotSent``), never sent late; while banned (418) no
  request at all leaves the process.
- **Error mapping.** -1021: re-measure the clock offset, retry once. -1003/429: back off.
  418: stop until the ban ends. No answer (timeout, a dropped connection): ``NoAnswer``, the
  outcome is unknown; an error answer: ``BinanceAPIError`` (``outcome_unknown`` for 5xx and
  the "execution status unknown" codes).
- **One host.** ccxt talks only to the configured base URL: every other API family is removed
  from its URL table, and markets are never loaded through ccxt (filters come from our own
  exchangeInfo call, filters.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from typing import Any, Callable, Mapping

import aiohttp
import ccxt.async_support as ccxt_async
import structlog
from ccxt.base import errors as ccxt_errors

from dolphind.config import BinanceVenueConfig
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.venues.binance.credentials import Credentials, Redactor
from dolphind.venues.binance.rate import RateBudget

log = structlog.get_logger("dolphind.venues.binance")

NETWORKS = {
    "mainnet": ("https://fapi.binance.com", "wss://fstream.binance.com"),
    "testnet": ("https://demo-fapi.binance.com", "wss://fstream.binancefuture.com"),
}
# The only ccxt API families this venue uses; every other family is removed from ccxt's URL
# table so that nothing can reach another host (a call to one raises NotSupported locally).
_API_FAMILIES = {"fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2",
                 "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2"}
# IP request weight of the endpoints used (USDT-M docs); orders weigh on the order counts.
W_ORDER, W_QUERY, W_OPEN_ALL, W_ACCOUNT, W_TRADES, W_INFO = 0, 1, 40, 5, 5, 1
# Binance answers that leave the outcome of the request unknown ("execution status unknown").
_UNKNOWN_CODES = frozenset({-1000, -1001, -1006, -1007})
_READ_MAX_WAIT_S = 65.0
_CANCEL_MAX_WAIT_S = 10.0

# ccxt logs request headers (with the API key) at DEBUG: never let that through.
logging.getLogger("ccxt").setLevel(logging.WARNING)


class BinanceAPIError(Exception):
    """An error answer from Binance: HTTP ``status``, Binance ``code`` (or None), ``msg``."""

    def __init__(self, status: int, code: int | None, msg: str,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"binance http {status} code {code}: {msg}")
        self.status, self.code, self.msg, self.retry_after_s = status, code, msg, retry_after_s

    @property
    def label(self) -> str:
        return str(self.code) if self.code is not None else f"http_{self.status}"

    @property
    def outcome_unknown(self) -> bool:
        """True when Binance may or may not have executed the request."""
        return self.status >= 500 or self.code in _UNKNOWN_CODES

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or self.code == -1003

    @property
    def banned(self) -> bool:
        return self.status == 418 or (self.code == -1003 and "banned" in self.msg.lower())


class NotSent(Exception):
    """The request was not sent (budget, back-off, ban): a definite outcome."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoAnswer(Exception):
    """Sent, but no answer (timeout, connection lost): the outcome is unknown."""


# What a REST call may raise besides BinanceAPIError (the callers' "no usable answer").
NOT_ANSWERED = (NotSent, NoAnswer)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return None
    return None


class _Exchange(ccxt_async.binanceusdm):
    """ccxt's binanceusdm with every answer's headers reported and errors left to us."""

    def __init__(self, config: dict[str, Any],
                 on_response: Callable[[int, Mapping[str, str]], None]) -> None:
        super().__init__(config)
        self._dd_on_response = on_response

    def on_rest_response(self, code: int, reason: str, url: str, method: str,
                         response_headers: Any, response_body: Any, request_headers: Any,
                         request_body: Any) -> Any:
        self._dd_on_response(int(code), response_headers or {})
        return response_body

    def handle_errors(self, code: int, reason: str, url: str, method: str, headers: Any,
                      body: Any, response: Any, request_headers: Any,
                      request_body: Any) -> None:
        bcode: int | None = None
        msg = ""
        if isinstance(response, dict):
            raw = response.get("code")
            if isinstance(raw, int) or (isinstance(raw, str) and raw.lstrip("-").isdigit()):
                bcode = int(raw)
            msg = str(response.get("msg", ""))
        if code >= 400 or (bcode is not None and bcode < 0):
            if not msg:
                msg = (body or reason or "")[:200] if isinstance(body, str) else str(reason)
            raise BinanceAPIError(int(code), bcode if bcode is not None and bcode < 0 else None,
                                  msg, _retry_after(headers or {}))
        return None


class RestClient:
    """The HTTP session, ccxt, the venue clock offset and the request budget's gate.

    ``note_error`` receives a redacted line for every failed request (the venue's
    ``last_error`` in /status)."""

    def __init__(self, config: Callable[[], BinanceVenueConfig], metrics: VenueMetrics,
                 credentials: Credentials, budget: RateBudget, redact: Redactor,
                 note_error: Callable[[str], None],
                 wall: Callable[[], float] = time.time) -> None:
        self._cfg = config
        self._m = metrics
        self._creds = credentials
        self.budget = budget
        self._redact = redact
        self._note_error = note_error
        self._wall = wall
        self.offset_s = 0.0
        self.ex: _Exchange | None = None
        self.session: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        c = self._cfg()
        return c.rest_base_url or NETWORKS[c.network][0]

    def now(self) -> float:
        """Venue time (local wall time plus the measured offset)."""
        return self._wall() + self.offset_s

    async def open(self) -> None:
        cfg = self._cfg()
        ssl_ctx = await asyncio.to_thread(ssl.create_default_context)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx))
        ex = _Exchange({"apiKey": self._creds.api_key, "secret": self._creds.secret,
                        "enableRateLimit": False, "timeout": int(cfg.request_timeout_s * 1000),
                        "session": self.session, "verify": True,
                        "options": {"recvWindow": cfg.recv_window_ms, "timeDifference": 0,
                                    "adjustForTimeDifference": False,
                                    "fetchCurrencies": False,
                                    "warnOnFetchOpenOrdersWithoutSymbol": False}},
                       self._on_response)
        ex.ssl_context = ssl_ctx
        base = self.base
        ex.urls["api"] = {name: base + suffix for name, suffix in _API_FAMILIES.items()}
        ex.urls["test"] = {}
        ex.urls["demo"] = {}
        self.ex = ex

    async def close(self) -> None:
        if self.ex is not None:
            with contextlib.suppress(Exception):  # closing: the session goes next anyway
                await self.ex.close()
            self.ex.session = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _on_response(self, status: int, headers: Mapping[str, str]) -> None:
        self.budget.observe(headers, self.now())
        self._m.weight_used.set(self.budget.used_weight(self.now()))
        for w in ("10s", "1m"):
            self._m.order_count.labels(w).set(self.budget.used_orders(w, self.now()))

    async def _gate(self, kind: str, weight: float, orders: int) -> None:
        max_wait = (self._cfg().max_order_delay_s if kind == "submit"
                    else _CANCEL_MAX_WAIT_S if kind == "cancel" else _READ_MAX_WAIT_S)
        while True:
            now = self.now()
            delay, reason = self.budget.wait_time(weight, orders, now)
            if delay <= 0:
                self.budget.charge(weight, orders, now)
                return
            if delay > max_wait:
                self._m.rate_refusals.labels(reason).inc()
                if reason == "banned":
                    until = time.strftime('%H:%M:%S', time.gmtime(self.budget.banned_until))
                    raise NotSent(f"ip_banned: no requests until {until}Z")
                raise NotSent(f"rate_limited:{reason}: would wait {delay:.1f}s")
            self._m.rate_delay.inc(delay)
            log.info("venue.rate_wait", kind=kind, reason=reason, delay_s=round(delay, 3),
                     weight_used=self.budget.used_weight(now))
            await asyncio.sleep(delay)

    async def request(self, kind: str, method: str, params: Mapping[str, Any], weight: float,
                      orders: int = 0) -> Any:
        """One REST call through ccxt, with the budget, the error bookkeeping and the -1021
        retry. Raises NotSent, NoAnswer or BinanceAPIError."""
        assert self.ex is not None
        fn = getattr(self.ex, method)
        for attempt in (0, 1):
            await self._gate(kind, weight, orders)
            try:
                result = await fn(dict(params))
            except BinanceAPIError as exc:
                self._m.requests.labels(kind, "error").inc()
                self._m.errors.labels(exc.label).inc()
                self._note_error(self._redact(f"{method}: {exc}"))
                self._on_error(exc)
                if exc.code == -1021 and attempt == 0:
                    log.warning("venue.timestamp_rejected", method=method, msg=exc.msg)
                    await self.sync_clock("timestamp_error")
                    continue
                raise
            except (ccxt_errors.BaseError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                label = "timeout" if isinstance(exc, (ccxt_errors.RequestTimeout,
                                                      TimeoutError)) else "network"
                self._m.requests.labels(kind, "no_answer").inc()
                self._m.errors.labels(label).inc()
                self._note_error(f"{method}: {label}")
                log.warning("venue.no_answer", method=method, error=label)
                raise NoAnswer(f"{method}: {label}") from exc
            self._m.requests.labels(kind, "ok").inc()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _on_error(self, exc: BinanceAPIError) -> None:
        cfg, now = self._cfg(), self.now()
        if exc.banned:
            until = now + (exc.retry_after_s or cfg.default_ban_s)
            m = re.search(r"banned until (\d{12,})", exc.msg)
            if m:
                until = int(m.group(1)) / 1000.0
            self.budget.ban(until)
            self._m.banned_until.set(until)
            log.error("venue.banned", until=until, status=exc.status, msg=exc.msg)
        elif exc.rate_limited:
            self.budget.back_off(exc.retry_after_s or cfg.default_retry_after_s, now)
            self._m.backoff_until.set(self.budget.backoff_until)
            log.warning("venue.backoff", seconds=exc.retry_after_s or cfg.default_retry_after_s,
                        status=exc.status, code=exc.code)

    async def sync_clock(self, cause: str) -> None:
        """Measure venue time minus local time from GET /fapi/v1/time (mid-point of the call)."""
        assert self.ex is not None
        t0 = self._wall()
        res = await self.request("read", "fapiPublicGetTime", {}, W_INFO)
        t1 = self._wall()
        server = int(res["serverTime"]) / 1000.0
        self.offset_s = server - (t0 + t1) / 2.0
        # ccxt signs with milliseconds() - timeDifference.
        self.ex.options["timeDifference"] = int(round(-self.offset_s * 1000))
        self._m.clock_offset.set(self.offset_s)
        self._m.clock_resyncs.labels(cause).inc()
        log.info("venue.clock", cause=cause, offset_ms=round(self.offset_s * 1000, 1),
                 rtt_ms=round((t1 - t0) * 1000, 1))
