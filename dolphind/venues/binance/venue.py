"""The Binance USDT-M futures venue (SPEC §5): ccxt for signed REST, aiohttp for the user stream.

What a trader who has lost money to a flaky exchange client insists on, and where it lives:

- **Never a blind resubmit.** ``submit`` sends an order once. No answer (timeout, 5xx, -1006,
  -1007, a dropped connection) leaves it *unknown*: ``VenueUnavailable``, and the execution
  stage queries by client id before anything else. An unknown order is declared "never
  arrived" only once Binance itself would refuse it (its ``recvWindow`` has passed, plus
  ``unknown_grace_s``); until then a "does not exist" answer stays "not settled yet".
- **Fills are counted once.** A fill's id is ``<symbol>:<trade id>``, the same from the user
  stream (ORDER_TRADE_UPDATE ``t``) and from REST (userTrades ``id``); each id is emitted once
  here, and the stage drops ids it has already committed (so a restart is safe too).
- **A terminal state never overtakes its fills.** A cancelled / expired / filled report is held
  back until the fills it implies have been emitted; REST fetches the missing trades.
- **The user stream is not trusted to be complete.** While it is down REST polling takes over;
  after every (re)connect (and a lease takeover) the working orders are re-read by REST
  (catching the outage's fills), open orders nobody here sent are tracked and reported for the
  audit, and then the book's positions are compared with the venue's (the execution stage's
  ``check_positions``: differences audited, adopted once no order is working). New entries
  wait until both succeeded (``reconciled``), retried every ``poll_interval_s``; even with the
  stream up, a working order with no news for ``order_check_s`` is queried.
- **Rate limits come from Binance's answers.** ``X-MBX-USED-WEIGHT-1M`` and
  ``X-MBX-ORDER-COUNT-10S/1M`` feed a budget that paces requests past ``weight_slow_fraction``
  of the limit and holds them past ``weight_stop_fraction`` until the window rolls; a 429 /
  -1003 holds everything for ``Retry-After``; a 418 holds everything until the ban ends (no
  request at all leaves the process). An order that would wait longer than
  ``max_order_delay_s`` is refused, never sent late.
- **Error mapping.** -1021: re-measure the clock offset, retry once. -1003/429: back off.
  418: stop until the ban ends. -2019 (margin): reject, no retry. -2011/-2013 on cancel: ask
  what became of the order (it may have filled). -4116 (client order id duplicated): an order
  with that id is at the venue, so it is queried by client id, never called rejected.
  5xx/timeouts: unknown (see above).
- **One account, one trader.** Orders and cancels need the account lease (lease.py: a host-wide
  ``flock`` in ``lease_dir``, plus a state-bus lease when the bus is shared).
- **Keys** come only from the environment or a secrets file; they are never logged, never in
  ``status()``; the account is named by a hash of the key. listenKeys (aiohttp's handshake
  errors carry the URL) are redacted from ``last_error`` and the log as well. ccxt talks only
  to the configured base URL: every other API family is removed from its URL table, and
  markets are never loaded through ccxt (filters come from our own exchangeInfo call).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import os
import re
import ssl
import time
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping

import aiohttp
import ccxt.async_support as ccxt_async
import numpy as np
import orjson
import structlog
from ccxt.base import errors as ccxt_errors

from dolphind.backoff import backoff_delay
from dolphind.channels import Channel, Overflow
from dolphind.config import BinanceVenueConfig
from dolphind.events import Fill, Order
from dolphind.orders.filters import SymbolFilters, parse_exchange_info
from dolphind.venues.binance.lease import Lease, account_id
from dolphind.orders.portfolio import split_foreign
from dolphind.orders.router import TERMINAL, OrderState
from dolphind.venues.venue import (Venue, VenuePosition, VenueRejected, VenueStartupError,
                                      VenueUnavailable)
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.statebus.base import StateBus

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
_W_ORDER, _W_QUERY, _W_OPEN_ALL, _W_ACCOUNT, _W_TRADES, _W_INFO = 0, 1, 40, 5, 5, 1
# Binance answers that leave the outcome of the request unknown ("execution status unknown").
_UNKNOWN_CODES = frozenset({-1000, -1001, -1006, -1007})
_EVENTS_CAPACITY = 4096
# A listenKey in a URL (path segment after /ws/, or the listenKey= parameter).
_LISTEN_KEY_RE = re.compile(r"(/ws/|listenKey=)[A-Za-z0-9]{16,}")
_QTY_EPS = 1e-12
_READ_MAX_WAIT_S = 65.0
# Start-up calls: a network error is retried this many times (with back-off) before giving up.
_START_ATTEMPTS = 4
_CANCEL_MAX_WAIT_S = 10.0

# ccxt logs request headers (with the API key) at DEBUG: never let that through.
logging.getLogger("ccxt").setLevel(logging.WARNING)

_STATUS = {"NEW": OrderState.ACKED, "PARTIALLY_FILLED": OrderState.PARTIALLY_FILLED,
           "FILLED": OrderState.FILLED, "CANCELED": OrderState.CANCELLED,
           "EXPIRED": OrderState.EXPIRED, "EXPIRED_IN_MATCH": OrderState.EXPIRED,
           "REJECTED": OrderState.REJECTED, "NEW_INSURANCE": OrderState.ACKED,
           "NEW_ADL": OrderState.ACKED}


# ---- credentials ------------------------------------------------------------------------------


class CredentialsError(VenueStartupError):
    """No usable API key / secret (the message names where they were looked for, never them)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    source: str = ""

    @property
    def account(self) -> str:
        return account_id("binance-usdm", self.api_key)

    def __repr__(self) -> str:
        return f"Credentials(source={self.source!r}, account={self.account!r})"


def load_credentials(cfg: BinanceVenueConfig, resolve: Callable[[str], Path],
                     environ: Mapping[str, str] = os.environ) -> Credentials:
    """The environment first (both variables set), else the TOML ``secrets_file`` with
    ``api_key`` and ``api_secret``. Blocking (reads a file): call off the loop."""
    key = environ.get(cfg.api_key_env, "").strip()
    secret = environ.get(cfg.api_secret_env, "").strip()
    if key and secret:
        return Credentials(key, secret, f"env:{cfg.api_key_env}")
    if cfg.secrets_file:
        path = resolve(cfg.secrets_file)
        try:
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            raise CredentialsError(f"execution.binance.secrets_file {path}: cannot read "
                                   f"({exc.strerror or type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise CredentialsError(f"execution.binance.secrets_file {path}: not UTF-8 text"
                                   ) from None
        except tomllib.TOMLDecodeError:
            raise CredentialsError(f"execution.binance.secrets_file {path}: not valid TOML "
                                   "(expected api_key = \"...\" and api_secret = \"...\")"
                                   ) from None
        key, secret = str(doc.get("api_key", "")).strip(), str(doc.get("api_secret", "")).strip()
        if key and secret:
            return Credentials(key, secret, f"file:{path}")
        raise CredentialsError(f"execution.binance.secrets_file {path}: needs both api_key "
                               "and api_secret")
    raise CredentialsError(f"no Binance credentials: set {cfg.api_key_env} and "
                           f"{cfg.api_secret_env}, or name execution.binance.secrets_file")


# ---- errors -------------------------------------------------------------------------------


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


class _NotSent(Exception):
    """The request was not sent (budget, back-off, ban): a definite outcome."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NoAnswer(Exception):
    """Sent, but no answer (timeout, connection lost): the outcome is unknown."""


class _StreamRestart(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return None
    return None


class _Exchange(ccxt_async.binanceusdm):  # type: ignore[misc]
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


# ---- the request budget -----------------------------------------------------------------


class RateBudget:
    """Binance's own counts (response headers) against its limits (exchangeInfo).

    Pure bookkeeping, clock injected: ``wait_time`` says how long a request of ``weight`` (and
    ``orders``) should wait now, and why. Windows are Binance's fixed windows (the minute, the
    10 seconds) in venue time.
    """

    _ORDER_WINDOWS = {"10s": 10.0, "1m": 60.0}

    def __init__(self, cfg: Callable[[], BinanceVenueConfig]) -> None:
        self._cfg = cfg
        self.weight_limit = 2400
        self.order_limits = {"10s": 300, "1m": 1200}
        self._weight = (0.0, -1)  # (used, minute index)
        self._orders = {k: (0.0, -1) for k in self._ORDER_WINDOWS}
        self.backoff_until = 0.0
        self.banned_until = 0.0
        self._last_sent = -math.inf

    @property
    def limit(self) -> float:
        return float(self._cfg().weight_limit_1m or self.weight_limit)

    def set_limits(self, rate_limits: Iterable[Mapping[str, Any]]) -> None:
        for rl in rate_limits:
            kind, interval = rl.get("rateLimitType"), rl.get("interval")
            n, limit = int(rl.get("intervalNum", 1)), int(rl.get("limit", 0))
            if limit <= 0:
                continue
            if kind == "REQUEST_WEIGHT" and interval == "MINUTE" and n == 1:
                self.weight_limit = limit
            elif kind == "ORDERS" and interval == "SECOND" and n == 10:
                self.order_limits["10s"] = limit
            elif kind == "ORDERS" and interval == "MINUTE" and n == 1:
                self.order_limits["1m"] = limit

    def used_weight(self, now: float) -> float:
        used, idx = self._weight
        return used if idx == int(now // 60) else 0.0

    def used_orders(self, window: str, now: float) -> float:
        used, idx = self._orders[window]
        return used if idx == int(now // self._ORDER_WINDOWS[window]) else 0.0

    def observe(self, headers: Mapping[str, str], now: float) -> None:
        for k, v in headers.items():
            lk = k.lower()
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            if lk == "x-mbx-used-weight-1m":
                self._weight = (value, int(now // 60))
            elif lk.startswith("x-mbx-order-count-"):
                window = lk.rsplit("-", 1)[1]
                if window in self._ORDER_WINDOWS:
                    self._orders[window] = (value, int(now // self._ORDER_WINDOWS[window]))

    def charge(self, weight: float, orders: int, now: float) -> None:
        """Count a request about to be sent (the next answer's headers correct it)."""
        self._last_sent = now
        if weight:
            self._weight = (self.used_weight(now) + weight, int(now // 60))
        if orders:
            for w, secs in self._ORDER_WINDOWS.items():
                self._orders[w] = (self.used_orders(w, now) + orders, int(now // secs))

    def back_off(self, seconds: float, now: float) -> None:
        self.backoff_until = max(self.backoff_until, now + seconds)

    def ban(self, until: float) -> None:
        self.banned_until = max(self.banned_until, until)

    def wait_time(self, weight: float, orders: int, now: float) -> tuple[float, str]:
        """(seconds to wait, reason); ``inf`` while banned."""
        if now < self.banned_until:
            return math.inf, "banned"
        if now < self.backoff_until:
            return self.backoff_until - now, "backoff"
        cfg = self._cfg()
        delay, reason = 0.0, ""
        checks = []
        if weight > 0:
            checks.append((self.used_weight(now), weight, self.limit, 60.0, "weight"))
        if orders > 0:
            for w, secs in self._ORDER_WINDOWS.items():
                checks.append((self.used_orders(w, now), float(orders),
                               float(self.order_limits[w]), secs, f"orders_{w}"))
        for used, cost, limit, secs, name in checks:
            to_end = secs - (now % secs)
            after = used + cost
            if after > cfg.weight_stop_fraction * limit:
                d = to_end + 0.05
            elif after > cfg.weight_slow_fraction * limit:
                # Spread what is left of the budget evenly over what is left of the window:
                # requests are spaced at least this far apart.
                left = max(cfg.weight_stop_fraction * limit - used, cost)
                d = max(0.0, to_end * cost / left - (now - self._last_sent))
            else:
                continue
            if d > delay:
                delay, reason = d, name
        return delay, reason


# ---- wire format --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """One order as Binance reports it (REST order object or ORDER_TRADE_UPDATE ``o``)."""

    client_id: str
    symbol: str
    side: str
    qty: float
    order_type: str
    price: float
    reduce_only: bool
    state: OrderState
    executed_qty: float
    avg_price: float
    venue_order_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    fee_asset: str
    maker: bool
    ts_ns: int

    @property
    def fill_id(self) -> str:
        return f"{self.symbol}:{self.trade_id}"


def _f(x: Any) -> float:
    try:
        return float(x) if x not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def report_from_rest(d: Mapping[str, Any]) -> Report:
    ts = int(d.get("updateTime") or d.get("time") or 0) * 1_000_000
    return Report(client_id=str(d.get("clientOrderId", "")), symbol=str(d["symbol"]),
                  side=str(d.get("side", "")), qty=_f(d.get("origQty")),
                  order_type=str(d.get("type", d.get("origType", ""))), price=_f(d.get("price")),
                  reduce_only=bool(d.get("reduceOnly", False)),
                  state=_STATUS.get(str(d.get("status")), OrderState.ACKED),
                  executed_qty=_f(d.get("executedQty")), avg_price=_f(d.get("avgPrice")),
                  venue_order_id=str(d.get("orderId", "")), ts_ns=ts or time.time_ns())


def report_from_stream(msg: Mapping[str, Any]) -> Report:
    o = msg["o"]
    return Report(client_id=str(o.get("c", "")), symbol=str(o["s"]), side=str(o.get("S", "")),
                  qty=_f(o.get("q")), order_type=str(o.get("o", "")), price=_f(o.get("p")),
                  reduce_only=bool(o.get("R", False)),
                  state=_STATUS.get(str(o.get("X")), OrderState.ACKED),
                  executed_qty=_f(o.get("z")), avg_price=_f(o.get("ap")),
                  venue_order_id=str(o.get("i", "")),
                  ts_ns=int(o.get("T") or msg.get("T") or msg.get("E") or 0) * 1_000_000)


def trade_from_stream(msg: Mapping[str, Any]) -> Trade | None:
    o = msg["o"]
    if o.get("x") != "TRADE" or _f(o.get("l")) <= 0:
        return None
    return Trade(trade_id=str(o["t"]), symbol=str(o["s"]), side=str(o.get("S", "")),
                 qty=_f(o["l"]), price=_f(o["L"]), fee=_f(o.get("n")),
                 fee_asset=str(o.get("N") or "USDT"), maker=bool(o.get("m", False)),
                 ts_ns=int(o.get("T") or msg.get("E") or 0) * 1_000_000)


def trade_from_rest(d: Mapping[str, Any]) -> Trade:
    return Trade(trade_id=str(d["id"]), symbol=str(d["symbol"]), side=str(d.get("side", "")),
                 qty=_f(d["qty"]), price=_f(d["price"]), fee=_f(d.get("commission")),
                 fee_asset=str(d.get("commissionAsset") or "USDT"),
                 maker=bool(d.get("maker", False)), ts_ns=int(d.get("time", 0)) * 1_000_000)


def decimal_str(x: float) -> str:
    """A quantity or price as Binance wants it: plain decimal, no exponent."""
    d = Decimal(repr(float(x)))
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


# ---- the venue ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Tracked:
    order: Order  # the latest snapshot (our own fields kept: intent id, reason, ref price)
    fill_ids: set[str] = field(default_factory=set)
    filled_qty: float = 0.0  # emitted fills
    executed_qty: float = 0.0  # what the venue last said
    emitted_state: str = ""
    venue_state: OrderState = OrderState.NEW
    sent_at: float | None = None  # wall time the submit went out (unknown-outcome grace)
    unknown: bool = False
    gone: bool = False  # the venue does not know it
    baseline_left: float = 0.0  # fills already in the venue's position when adopted
    last_news: float = 0.0  # monotonic

    @property
    def settled(self) -> bool:
        return self.gone or (self.venue_state in TERMINAL
                             and self.filled_qty >= self.executed_qty - _QTY_EPS
                             and self.emitted_state == str(self.venue_state))


class BinanceVenue(Venue):
    """A ``Venue`` on Binance USDT-M futures. Use as an async context manager, then call
    ``start_streams()`` once the store's orders are tracked (see ``reconcile_store``)."""

    name = "binance"

    def __init__(self, config: Callable[[], BinanceVenueConfig], bus: StateBus | None,
                 metrics: VenueMetrics, credentials: Credentials,
                 symbols: Callable[[], Iterable[str]] = lambda: (),
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 lease_dir: Path | None = None,
                 owns: Callable[[str], bool] = lambda client_id: True,
                 foreign_policy: Callable[[], str] = lambda: "adopt") -> None:
        self._cfg = config
        # Ownership (issue #15): an order is ours when its client id carries our prefix (or
        # we track it: the store knows it). Under any policy but "adopt", others' orders are
        # reported in ``foreign_orders`` and left alone: never tracked, their fills never
        # emitted (they would move our book).
        self._owns = owns
        self._foreign_policy = foreign_policy
        self.foreign_orders: dict[str, Order] = {}
        self._m = metrics
        self._creds = credentials
        self._symbols = symbols
        self._wall = wall
        self._mono = monotonic
        self.account = credentials.account
        self.budget = RateBudget(config)
        self.lease = Lease(self.account, lease_dir or Path(config().lease_dir), bus,
                           lambda: self._cfg().lease_ttl_s, wall=wall,
                           on_change=self._on_lease_change)
        self._filters: dict[str, SymbolFilters] = {}
        self._orders: dict[str, _Tracked] = {}
        self._skip_fill_ids: set[str] = set()
        self._events: Channel[Order | Fill] = Channel("binance_venue_events", _EVENTS_CAPACITY,
                                                      Overflow.BLOCK)
        self._apply_lock = asyncio.Lock()
        self._marks: dict[str, tuple[float, int]] = {}
        self._bar: tuple[dict[str, int], np.ndarray, int] | None = None
        self._ex: _Exchange | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._offset_s = 0.0
        self._stream_connected = False
        self._stream_kick = asyncio.Event()
        self._listen_key: str | None = None
        self._listen_keys: collections.deque[str] = collections.deque(maxlen=16)  # redacted
        self._listen_key_at = 0.0
        self._reconciled = False
        self._position_check: Callable[[str], Awaitable[bool]] | None = None
        self._found: list[Order] = []  # open orders found by a resync that nobody sent here
        self._account_ready = False
        self.stream_positions: dict[str, float] = {}
        self.stream_balances: dict[str, float] = {}
        self.last_error = ""
        self.connects = 0
        self.loop_crashes: dict[str, int] = {}  # background loop -> crashes (supervised)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def rest_base(self) -> str:
        c = self._cfg()
        return c.rest_base_url or NETWORKS[c.network][0]

    @property
    def ws_base(self) -> str:
        c = self._cfg()
        return c.ws_base_url or NETWORKS[c.network][1]

    async def __aenter__(self) -> "BinanceVenue":
        try:
            await self._open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _open(self) -> None:
        cfg = self._cfg()
        ssl_ctx = await asyncio.to_thread(ssl.create_default_context)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx))
        ex = _Exchange({"apiKey": self._creds.api_key, "secret": self._creds.secret,
                        "enableRateLimit": False, "timeout": int(cfg.request_timeout_s * 1000),
                        "session": self._session, "verify": True,
                        "options": {"recvWindow": cfg.recv_window_ms, "timeDifference": 0,
                                    "adjustForTimeDifference": False,
                                    "fetchCurrencies": False,
                                    "warnOnFetchOpenOrdersWithoutSymbol": False}},
                       self._on_response)
        ex.ssl_context = ssl_ctx
        base = self.rest_base
        ex.urls["api"] = {name: base + suffix for name, suffix in _API_FAMILIES.items()}
        ex.urls["test"] = {}
        ex.urls["demo"] = {}
        self._ex = ex
        log.info("venue.opening", venue=self.name, network=cfg.network, rest=base,
                 ws=self.ws_base, account=self.account, credentials=self._creds.source)
        await self._start_calls(base)
        self._spawn("lease", self._lease_loop)
        self._spawn("maintenance", self._maintenance_loop)

    async def _start_calls(self, base: str) -> None:
        """Clock, filters, lease, account setup. A network error (no answer) is retried with
        back-off ``_START_ATTEMPTS`` times, each said in the log; then, and for any answer
        that refuses us (-2015 key, -1022 signature, hedge mode...), VenueStartupError: one
        line for the operator, exit 2."""
        cfg = self._cfg()
        for attempt in range(_START_ATTEMPTS):
            try:
                await self.sync_clock("start")
                await self.refresh_filters()
                if await self.lease.acquire():
                    await self._setup_account()
                else:
                    log.error("venue.fenced", account=self.account, reason=self.lease.reason)
                return
            except (_NoAnswer, _NotSent) as exc:
                if attempt + 1 >= _START_ATTEMPTS:
                    raise VenueStartupError(
                        f"venue REST {base} unreachable after {_START_ATTEMPTS} attempts: "
                        f"{self._redact(str(exc))}") from None
                delay = backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s)
                log.warning("venue.start_retry", rest=base, attempt=attempt + 1,
                            of=_START_ATTEMPTS, retry_in_s=round(delay, 3),
                            error=self._redact(str(exc)))
                await asyncio.sleep(delay)
            except BinanceAPIError as exc:
                raise VenueStartupError(_start_refusal(exc, base)) from None

    def _spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervised(name, loop),
                                               name=f"binance:{name}"))

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop for the venue's life: a crash is logged, counted
        (``dolphind_venue_loop_crashes_total``) and shown in /status, and the loop restarted
        after a back-off; never swallowed."""
        crashes = 0
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                crashes += 1
                self.loop_crashes[name] = self.loop_crashes.get(name, 0) + 1
                self._m.loop_crashes.labels(name).inc()
                self.last_error = self._redact(f"{name} loop: {type(exc).__name__}: {exc}")
                cfg = self._cfg()
                delay = backoff_delay(crashes - 1, cfg.backoff_initial_s, cfg.backoff_max_s)
                log.error("venue.loop_crashed", loop=name, error=self.last_error,
                          restart_in_s=round(delay, 3), exc_info=exc)
                await asyncio.sleep(delay)

    def start_streams(self) -> None:
        """Start the user stream and REST polling (after the store's orders are tracked)."""
        self._spawn("user_stream", self._stream_loop)
        self._spawn("listen_key", self._keepalive_loop)
        self._spawn("poll", self._poll_loop)

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # supervised loops do not end like this; say so if one did
                log.error("venue.loop_failed_at_close", task=t.get_name(), error=repr(exc))
        self._tasks.clear()
        if self._listen_key and self.lease.held and self._ex is not None:
            # Polite, and only by the holder: a fenced daemon must not close the holder's stream.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._request("stream", "fapiPrivateDeleteListenKey", {}, 1)
        await self.lease.release()
        self._m.lease_held.set(0)
        self._set_stream(False)
        self._m.rest_polling.set(0)
        if self._ex is not None:
            with contextlib.suppress(Exception):
                await self._ex.close()
            self._ex.session = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._events.close()

    # ---- requests --------------------------------------------------------------------------

    def _now(self) -> float:
        """Venue time (local wall time plus the measured offset)."""
        return self._wall() + self._offset_s

    def _on_response(self, status: int, headers: Mapping[str, str]) -> None:
        self.budget.observe(headers, self._now())
        self._m.weight_used.set(self.budget.used_weight(self._now()))
        for w in ("10s", "1m"):
            self._m.order_count.labels(w).set(self.budget.used_orders(w, self._now()))

    async def _gate(self, kind: str, weight: float, orders: int) -> None:
        max_wait = (self._cfg().max_order_delay_s if kind == "submit"
                    else _CANCEL_MAX_WAIT_S if kind == "cancel" else _READ_MAX_WAIT_S)
        while True:
            now = self._now()
            delay, reason = self.budget.wait_time(weight, orders, now)
            if delay <= 0:
                self.budget.charge(weight, orders, now)
                return
            if delay > max_wait:
                self._m.rate_refusals.labels(reason).inc()
                if reason == "banned":
                    raise _NotSent(f"ip_banned: no requests until "
                                   f"{time.strftime('%H:%M:%S', time.gmtime(self.budget.banned_until))}Z")
                raise _NotSent(f"rate_limited:{reason}: would wait {delay:.1f}s")
            self._m.rate_delay.inc(delay)
            log.info("venue.rate_wait", kind=kind, reason=reason, delay_s=round(delay, 3),
                     weight_used=self.budget.used_weight(now))
            await asyncio.sleep(delay)

    async def _request(self, kind: str, method: str, params: Mapping[str, Any], weight: float,
                       orders: int = 0) -> Any:
        """One REST call through ccxt, with the budget, the error bookkeeping and the -1021
        retry. Raises _NotSent, _NoAnswer or BinanceAPIError."""
        assert self._ex is not None
        fn = getattr(self._ex, method)
        for attempt in (0, 1):
            await self._gate(kind, weight, orders)
            try:
                result = await fn(dict(params))
            except BinanceAPIError as exc:
                self._m.requests.labels(kind, "error").inc()
                self._m.errors.labels(exc.label).inc()
                self.last_error = self._redact(f"{method}: {exc}")
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
                self.last_error = f"{method}: {label}"
                log.warning("venue.no_answer", method=method, error=label)
                raise _NoAnswer(f"{method}: {label}") from exc
            self._m.requests.labels(kind, "ok").inc()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _on_error(self, exc: BinanceAPIError) -> None:
        cfg, now = self._cfg(), self._now()
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
        assert self._ex is not None
        t0 = self._wall()
        res = await self._request("read", "fapiPublicGetTime", {}, _W_INFO)
        t1 = self._wall()
        server = int(res["serverTime"]) / 1000.0
        self._offset_s = server - (t0 + t1) / 2.0
        # ccxt signs with milliseconds() - timeDifference.
        self._ex.options["timeDifference"] = int(round(-self._offset_s * 1000))
        self._m.clock_offset.set(self._offset_s)
        self._m.clock_resyncs.labels(cause).inc()
        log.info("venue.clock", cause=cause, offset_ms=round(self._offset_s * 1000, 1),
                 rtt_ms=round((t1 - t0) * 1000, 1))

    async def refresh_filters(self) -> None:
        doc = await self._request("read", "fapiPublicGetExchangeInfo", {}, _W_INFO)
        self._filters = parse_exchange_info(doc)
        self.budget.set_limits(doc.get("rateLimits", []))
        self._m.weight_limit.set(self.budget.limit)
        for w, lim in self.budget.order_limits.items():
            self._m.order_limit.labels(w).set(lim)
        log.info("venue.filters", symbols=len(self._filters), weight_limit=self.budget.limit)

    async def _setup_account(self) -> None:
        """One-way position mode is required; leverage and margin type per symbol."""
        cfg = self._cfg()
        dual = await self._request("read", "fapiPrivateGetPositionSideDual", {}, 30)
        if str(dual.get("dualSidePosition")).lower() == "true":
            raise VenueSetupError("the account is in hedge mode (dualSidePosition); dolphind "
                                  "trades one-way positions only")
        for sym in list(cfg.symbols or self._symbols()):
            mt = dict(cfg.margin_type).get(sym, cfg.default_margin_type)
            if mt:
                try:
                    await self._request("read", "fapiPrivatePostMarginType",
                                        {"symbol": sym, "marginType": mt}, 1)
                except BinanceAPIError as exc:
                    if exc.code != -4046:  # "No need to change margin type."
                        log.warning("venue.margin_type_failed", symbol=sym, code=exc.code,
                                    msg=exc.msg)
            lev = dict(cfg.leverage).get(sym, cfg.default_leverage)
            if lev:
                await self._request("read", "fapiPrivatePostLeverage",
                                    {"symbol": sym, "leverage": int(lev)}, 1)
            if mt or lev:
                log.info("venue.symbol_setup", symbol=sym, leverage=lev or None,
                         margin_type=mt or None)
        self._account_ready = True

    def _on_lease_change(self, held: bool) -> None:
        self._m.lease_held.set(1 if held else 0)
        if not held:
            self._reconciled = False
            self._m.reconciled.set(0)
        self._stream_kick.set()

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cfg().lease_renew_s)
            await self.lease.acquire()
            if self.lease.held and not self._account_ready:
                with contextlib.suppress(VenueSetupError, _NotSent, _NoAnswer, BinanceAPIError):
                    await self._setup_account()

    async def _maintenance_loop(self) -> None:
        """Clock offset and exchangeInfo refreshed on their intervals."""
        cfg = self._cfg()
        next_clock = self._mono() + cfg.clock_sync_s
        next_filters = self._mono() + cfg.filters_refresh_s
        while True:
            await asyncio.sleep(min(5.0, cfg.clock_sync_s, cfg.filters_refresh_s))
            cfg, now = self._cfg(), self._mono()
            try:
                if now >= next_clock:
                    next_clock = now + cfg.clock_sync_s
                    await self.sync_clock("periodic")
                if now >= next_filters:
                    next_filters = now + cfg.filters_refresh_s
                    await self.refresh_filters()
            except (_NotSent, _NoAnswer, BinanceAPIError) as exc:
                log.warning("venue.maintenance_failed", error=str(exc))

    # ---- the Venue interface: orders -------------------------------------------------------

    def filters_for(self, symbol: str) -> SymbolFilters | None:
        return self._filters.get(symbol)

    async def symbol_filters(self) -> Mapping[str, SymbolFilters]:
        return dict(self._filters)

    def track(self, order: Order) -> None:
        """Know an order sent before this process started (its symbol, our fields)."""
        if order.client_id not in self._orders:
            # Fills start from zero: REST re-reads them all and the stage drops the ids it
            # has already committed (its store is the judge of what is booked).
            self._orders[order.client_id] = _Tracked(
                order, emitted_state=order.state, unknown=order.state == OrderState.UNKNOWN,
                sent_at=order.created_ns / 1e9 if order.state == OrderState.UNKNOWN else None,
                last_news=self._mono())

    async def submit(self, order: Order) -> Order:
        # The lease's fencing token stamps the order (logged with its client id); None: the
        # lease is not held, e.g. a stale holder whose CP session ran out: it must not send.
        if self.lease.fence_for(order.client_id) is None:
            self._m.fenced.inc()
            log.error("venue.fenced_order", client_id=order.client_id, reason=self.lease.reason)
            raise VenueRejected(f"fenced: {self.lease.reason}", local=True)
        if not order.reduce_only and not self._reconciled:
            raise VenueRejected("not_reconciled: only reduce-only orders until the venue is "
                                "reconciled", local=True)
        if order.client_id in self._orders:
            raise VenueRejected(f"duplicate client order id {order.client_id}", local=True)
        if order.symbol not in self._filters:
            raise VenueRejected(f"unknown symbol {order.symbol}", local=True)
        params: dict[str, Any] = {"symbol": order.symbol, "side": order.side,
                                  "type": order.order_type, "quantity": decimal_str(order.qty),
                                  "newClientOrderId": order.client_id,
                                  "newOrderRespType": "RESULT"}
        if order.reduce_only:
            params["reduceOnly"] = "true"
        if order.order_type == "LIMIT":
            params["price"] = decimal_str(order.price)
            params["timeInForce"] = "GTC"
        t = _Tracked(order, sent_at=self._now(), last_news=self._mono())
        self._orders[order.client_id] = t
        try:
            res = await self._request("submit", "fapiPrivatePostOrder", params, _W_ORDER, 1)
        except _NotSent as exc:
            self._orders.pop(order.client_id, None)
            raise VenueRejected(exc.reason, local=True) from None
        except (_NoAnswer, BinanceAPIError) as exc:
            if isinstance(exc, _NoAnswer) or exc.outcome_unknown:
                if t.venue_state is not OrderState.NEW or t.fill_ids:
                    # No answer, but the user stream has already shown the order at the venue.
                    log.info("venue.submit_answer_lost", client_id=order.client_id,
                             state=str(t.venue_state))
                    return dataclasses.replace(order, state=str(OrderState.ACKED),
                                               venue_order_id=t.order.venue_order_id,
                                               updated_ns=t.order.updated_ns)
                t.unknown = True
                raise VenueUnavailable(f"submit {order.client_id}: {exc}; state unknown, "
                                       "query by client id") from None
            assert isinstance(exc, BinanceAPIError)
            if exc.code == -4116:
                return await self._duplicate_submit(order, t)
            t.gone, t.venue_state, t.emitted_state = True, OrderState.REJECTED, "rejected"
            raise VenueRejected(_reject_reason(exc)) from None
        rep = report_from_rest(res)
        ack = dataclasses.replace(order, state=str(OrderState.ACKED),
                                  venue_order_id=rep.venue_order_id, updated_ns=rep.ts_ns)
        t.order = ack
        t.emitted_state = str(OrderState.ACKED)
        # Fills come from the stream (or REST); a final state follows its fills.
        await self._apply(rep, [], "submit")
        return ack

    async def _duplicate_submit(self, order: Order, t: _Tracked) -> Order:
        """-4116 "ClientOrderId is duplicated": an order with this id *is* at the venue (this
        one, sent before and its answer lost, or left from before a restart). Not a rejection:
        ask what it is by client id; until that answer, its state is unknown."""
        cid = order.client_id
        log.warning("venue.duplicate_client_id", client_id=cid, symbol=order.symbol)
        t.unknown = True
        try:
            seen = await self.query(cid)
        except VenueUnavailable as exc:
            raise VenueUnavailable(f"submit {cid}: client order id already at the venue "
                                   f"(-4116); state unknown, query by client id ({exc})"
                                   ) from None
        if seen is None:  # Binance said it exists, then that it does not: keep asking
            t.gone, t.unknown = False, True
            raise VenueUnavailable(f"submit {cid}: -4116 but not found by client id; state "
                                   "unknown, query by client id")
        # Its fills and any final state were emitted by the query; the submit is an ack.
        return dataclasses.replace(seen, state=str(OrderState.ACKED))

    async def cancel(self, client_id: str) -> Order | None:
        t = self._orders.get(client_id)
        if not self.lease.held:
            self._m.fenced.inc()
            log.error("venue.fenced_cancel", client_id=client_id, reason=self.lease.reason)
            return await self.query(client_id)
        if t is None:
            return await self.query(client_id)
        try:
            res = await self._request("cancel", "fapiPrivateDeleteOrder",
                                      {"symbol": t.order.symbol,
                                       "origClientOrderId": client_id}, _W_QUERY)
        except BinanceAPIError as exc:
            if exc.code in (-2011, -2013):
                # Unknown order on cancel: already final (filled?) or never there. Ask.
                return await self.query(client_id)
            raise VenueUnavailable(f"cancel {client_id}: {exc}") from None
        except (_NotSent, _NoAnswer) as exc:
            raise VenueUnavailable(f"cancel {client_id}: {exc}") from None
        rep = report_from_rest(res)
        trades = await self._missing_trades(t, rep)
        return await self._apply(rep, trades, "rest")

    async def query(self, client_id: str) -> Order | None:
        t = self._orders.get(client_id)
        symbols = [t.order.symbol] if t is not None else list(self._cfg().symbols
                                                               or self._symbols())
        if not symbols:
            raise VenueUnavailable(f"query {client_id}: symbol unknown")
        for sym in symbols:
            try:
                res = await self._request("read", "fapiPrivateGetOrder",
                                          {"symbol": sym, "origClientOrderId": client_id},
                                          _W_QUERY)
            except BinanceAPIError as exc:
                if exc.code == -2013:
                    continue
                raise VenueUnavailable(f"query {client_id}: {exc}") from None
            except (_NotSent, _NoAnswer) as exc:
                raise VenueUnavailable(f"query {client_id}: {exc}") from None
            rep = report_from_rest(res)
            if t is None and self.is_foreign(client_id):
                return self._note_foreign(rep)
            if t is None:
                t = self._adopt(rep)
            t.unknown = False
            trades = await self._missing_trades(t, rep)
            return await self._apply(rep, trades, "rest")
        # Not at the venue. If our submit got no answer, Binance may still act on it until
        # its recvWindow has passed: only then is "does not exist" final.
        if t is not None and t.unknown and t.sent_at is not None:
            settle_at = t.sent_at + self._cfg().recv_window_ms / 1000 + self._cfg().unknown_grace_s
            if self._now() < settle_at:
                raise VenueUnavailable(f"query {client_id}: not at the venue yet; final in "
                                       f"{settle_at - self._now():.1f}s")
        if t is not None:
            t.gone = True
        return None

    async def open_orders(self) -> list[Order]:
        try:
            res = await self._request("read", "fapiPrivateGetOpenOrders", {}, _W_OPEN_ALL)
        except (BinanceAPIError, _NotSent, _NoAnswer) as exc:
            raise VenueUnavailable(f"open orders: {exc}") from None
        out = []
        for d in res:
            rep = report_from_rest(d)
            t = self._orders.get(rep.client_id)
            out.append(self._snapshot(t.order if t else self._foreign(rep), rep))
        return out

    async def positions(self) -> dict[str, VenuePosition]:
        try:
            res = await self._request("read", "fapiPrivateV2GetPositionRisk", {}, _W_ACCOUNT)
        except (BinanceAPIError, _NotSent, _NoAnswer) as exc:
            raise VenueUnavailable(f"positions: {exc}") from None
        out: dict[str, VenuePosition] = {}
        for d in res:
            qty = _f(d.get("positionAmt"))
            if abs(qty) > _QTY_EPS:
                sym = str(d["symbol"])
                out[sym] = VenuePosition(sym, qty, _f(d.get("entryPrice")))
        return out

    async def balances(self) -> dict[str, float]:
        try:
            res = await self._request("read", "fapiPrivateV2GetBalance", {}, _W_ACCOUNT)
        except (BinanceAPIError, _NotSent, _NoAnswer) as exc:
            raise VenueUnavailable(f"balances: {exc}") from None
        return {str(d["asset"]): _f(d.get("balance")) for d in res}

    def events(self) -> AsyncIterator[Order | Fill]:
        return self._events.__aiter__()

    # ---- marks (the router's reference price) ----------------------------------------------

    def mark(self, symbol: str, price: float, ts_ns: int) -> None:
        if price > 0:
            prev = self._marks.get(symbol)
            if prev is None or ts_ns >= prev[1]:
                self._marks[symbol] = (price, ts_ns)

    def mark_bar(self, index: dict[str, int], closes: np.ndarray, ts_ns: int) -> None:
        if self._bar is None or ts_ns >= self._bar[2]:
            self._bar = (index, closes, ts_ns)

    def last_mark(self, symbol: str) -> tuple[float, int] | None:
        own = self._marks.get(symbol)
        if self._bar is not None:
            index, closes, ts = self._bar
            j = index.get(symbol)
            if j is not None and (own is None or ts >= own[1]):
                px = float(closes[j])
                if px > 0:
                    return (px, ts)
        return own

    # ---- reports -> events -----------------------------------------------------------------

    def _foreign(self, rep: Report) -> Order:
        """An order this process did not send (placed by hand, before a lost store, ...)."""
        return Order(client_id=rep.client_id, intent_id=f"venue:{rep.client_id}",
                     symbol=rep.symbol, side=rep.side, qty=rep.qty, order_type=rep.order_type,
                     price=rep.price, reduce_only=rep.reduce_only, reason="VENUE",
                     state=str(OrderState.NEW), created_ns=rep.ts_ns, updated_ns=rep.ts_ns,
                     venue_order_id=rep.venue_order_id)

    def _adopt(self, rep: Report) -> _Tracked:
        t = _Tracked(self._foreign(rep), emitted_state=str(OrderState.NEW),
                     last_news=self._mono())
        self._orders[rep.client_id] = t
        log.warning("venue.foreign_order", client_id=rep.client_id, symbol=rep.symbol,
                    state=str(rep.state))
        return t

    def adopt_at_start(self, order: Order) -> None:
        """An open order found at start that the store does not know: its fills so far are
        already in the venue's position (which the stage adopts), so they are not emitted."""
        self.track(order)
        t = self._orders[order.client_id]
        t.filled_qty = t.executed_qty = t.baseline_left = order.filled_qty
        t.unknown, t.sent_at = False, None

    @staticmethod
    def _snapshot(base: Order, rep: Report) -> Order:
        return dataclasses.replace(base, state=str(rep.state), filled_qty=rep.executed_qty,
                                   avg_fill_price=rep.avg_price,
                                   venue_order_id=rep.venue_order_id or base.venue_order_id,
                                   updated_ns=max(rep.ts_ns, base.updated_ns))

    async def _missing_trades(self, t: _Tracked, rep: Report) -> list[Trade]:
        if rep.executed_qty <= t.filled_qty + _QTY_EPS:
            return []
        try:
            res = await self._request("read", "fapiPrivateGetUserTrades",
                                      {"symbol": rep.symbol, "orderId": rep.venue_order_id},
                                      _W_TRADES)
        except (BinanceAPIError, _NotSent, _NoAnswer) as exc:
            log.warning("venue.trades_failed", client_id=rep.client_id, error=str(exc))
            return []
        return [trade_from_rest(d) for d in res
                if str(d.get("orderId")) == rep.venue_order_id or "orderId" not in d]

    def is_foreign(self, client_id: str) -> bool:
        """An order this process must leave alone: not tracked, not ours, policy not adopt."""
        return (self._foreign_policy() != "adopt" and client_id not in self._orders
                and not self._owns(client_id))

    def _note_foreign(self, rep: Report) -> Order:
        """Remember (or forget, once final) an order somebody else placed; nothing emitted."""
        snap = self._snapshot(self._foreign(rep), rep)
        if rep.state in TERMINAL:
            self.foreign_orders.pop(rep.client_id, None)
        else:
            if rep.client_id not in self.foreign_orders:
                log.warning("venue.foreign_order", client_id=rep.client_id, symbol=rep.symbol,
                            side=rep.side, qty=rep.qty, state=str(rep.state),
                            action="left alone")
            self.foreign_orders[rep.client_id] = snap
        return snap

    async def _apply(self, rep: Report, trades: list[Trade], source: str) -> Order:
        """Emit the new fills of ``rep``'s order, then its state (never before its fills)."""
        if self.is_foreign(rep.client_id):
            return self._note_foreign(rep)
        async with self._apply_lock:
            t = self._orders.get(rep.client_id) or self._adopt(rep)
            t.last_news = self._mono()
            t.executed_qty = max(t.executed_qty, rep.executed_qty)
            t.venue_state = rep.state
            t.unknown = False
            t.gone = False
            for tr in sorted(trades, key=lambda x: (x.ts_ns, x.trade_id)):
                if tr.fill_id in t.fill_ids:
                    self._m.duplicate_fills.inc()
                    continue
                t.fill_ids.add(tr.fill_id)
                if t.baseline_left > _QTY_EPS:
                    # Adopted at start with these fills already in the venue's position.
                    t.baseline_left = round(t.baseline_left - tr.qty, 12)
                    continue
                t.filled_qty = round(t.filled_qty + tr.qty, 12)
                t.executed_qty = max(t.executed_qty, t.filled_qty)
                if source != "stream":
                    self._m.fills_recovered.inc()
                    log.info("venue.fill_recovered", client_id=rep.client_id,
                             fill_id=tr.fill_id, source=source)
                await self._events.put(self._fill(t.order, tr))
            snap = self._snapshot(t.order, rep)
            t.order = snap
            state = str(rep.state)
            fills_done = t.filled_qty >= t.executed_qty - _QTY_EPS
            if state != t.emitted_state and (rep.state not in TERMINAL or fills_done):
                if rep.state not in (OrderState.FILLED, OrderState.PARTIALLY_FILLED):
                    await self._events.put(snap)
                t.emitted_state = state
            return snap

    def _fill(self, order: Order, tr: Trade) -> Fill:
        fee = tr.fee if tr.fee_asset in ("USDT", "BNFCR", "USDC", "FDUSD") else 0.0
        if fee == 0.0 and tr.fee > 0:
            log.warning("venue.fee_not_in_usdt", asset=tr.fee_asset, fee=tr.fee,
                        fill_id=tr.fill_id)
        ref = order.ref_price
        slip = ((tr.price / ref - 1.0) * 1e4 * (1.0 if tr.side == "BUY" else -1.0)
                if ref > 0 else 0.0)
        return Fill(fill_id=tr.fill_id, client_id=order.client_id, symbol=tr.symbol,
                    side=tr.side or order.side, qty=tr.qty, price=tr.price, fee_usdt=fee,
                    liquidity="MAKER" if tr.maker else "TAKER", ts_ns=tr.ts_ns,
                    slippage_bps=slip, reduce_only=order.reduce_only)

    # ---- user stream, keep-alive, polling --------------------------------------------------

    def _set_stream(self, up: bool) -> None:
        self._stream_connected = up
        self._m.user_stream_connected.set(1 if up else 0)
        if not up:
            if self._reconciled:
                log.warning("venue.unreconciled", reason="user stream down")
            self._reconciled = False
            self._m.reconciled.set(0)

    @property
    def reconciled(self) -> bool:
        return self._reconciled

    async def resync(self, cause: str) -> bool:
        """Re-read every unsettled order by REST (fills missed by the stream are emitted) and
        look for open orders this process does not know. True when all of it succeeded."""
        ok = True
        for cid, t in list(self._orders.items()):
            if t.settled:
                continue
            try:
                await self.query(cid)
            except VenueUnavailable as exc:
                ok = False
                log.warning("venue.resync_query_failed", client_id=cid, error=str(exc))
        try:
            open_now = await self.open_orders()
            for cid in set(self.foreign_orders) - {o.client_id for o in open_now}:
                self.foreign_orders.pop(cid, None)  # gone (filled, cancelled by its owner)
            for o in open_now:
                if self.is_foreign(o.client_id):
                    if o.client_id not in self.foreign_orders:
                        log.warning("venue.foreign_order", cause=cause, client_id=o.client_id,
                                    symbol=o.symbol, side=o.side, qty=o.qty, state=o.state,
                                    action="left alone")
                    self.foreign_orders[o.client_id] = o
                    continue
                if o.client_id not in self._orders:
                    self.track(o)  # appeared while we were not listening: its fills are news
                    log.warning("venue.unknown_open_order", cause=cause, client_id=o.client_id,
                                symbol=o.symbol, side=o.side, qty=o.qty, state=o.state,
                                filled_qty=o.filled_qty)
                    self._found.append(o)  # for the book's audit (take_found_orders)
                    await self.query(o.client_id)
        except VenueUnavailable as exc:
            ok = False
            log.warning("venue.resync_open_orders_failed", error=str(exc))
        log.info("venue.resynced", cause=cause, ok=ok,
                 working=sum(1 for t in self._orders.values() if not t.settled))
        return ok

    def _redact(self, text: str) -> str:
        """``text`` without the listenKeys, the API key or the secret (for logs, /status)."""
        for secret in (*self._listen_keys, self._creds.api_key, self._creds.secret):
            if secret:
                text = text.replace(secret, "<redacted>")
        return _LISTEN_KEY_RE.sub(r"\1<redacted>", text)

    async def _listen_key_create(self) -> str:
        res = await self._request("stream", "fapiPrivatePostListenKey", {}, 1)
        self._listen_key = str(res["listenKey"])
        self._listen_keys.append(self._listen_key)
        self._listen_key_at = self._mono()
        self._m.listen_key_renewals.labels("created").inc()
        return self._listen_key

    async def _stream_loop(self) -> None:
        cfg = self._cfg()
        attempt = 0  # failed connections in a row (back-off_delay's exponent)
        reason = "start"
        while True:
            if not self.lease.held:
                self._stream_kick.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._stream_kick.wait()
                continue
            cfg = self._cfg()
            try:
                key = await self._listen_key_create()
                url = self.ws_base + cfg.user_stream_path.format(listen_key=key)
                assert self._session is not None
                async with self._session.ws_connect(
                        url, heartbeat=cfg.heartbeat_s,
                        timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                        max_msg_size=1 << 22) as ws:
                    self.connects += 1
                    self._m.user_stream_reconnects.labels(reason).inc()
                    self._set_stream(True)
                    log.info("venue.user_stream_connected", reason=reason)
                    self._stream_kick.clear()
                    reader = asyncio.create_task(self._read_stream(ws))
                    try:
                        reason = await self._reconcile_while_connected(
                            reader, f"user_stream:{reason}")
                        attempt = 0
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await reader
            except (aiohttp.ClientError, OSError, TimeoutError, _NotSent, _NoAnswer,
                    BinanceAPIError, ValueError) as exc:
                reason = "error"
                # aiohttp's handshake errors carry the URL, i.e. the listenKey: never shown.
                self.last_error = self._redact(f"user stream: {type(exc).__name__}: {exc}")
                log.warning("venue.user_stream_error", error=self.last_error)
            finally:
                self._set_stream(False)
            log.warning("venue.user_stream_down", reason=reason, attempt=attempt)
            await asyncio.sleep(backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s))
            attempt += 1

    async def _reconcile_while_connected(self, reader: asyncio.Task[str], cause: str) -> str:
        """With the stream connected (first, so nothing falls between it and REST): re-read
        the orders, then have the positions checked; until both succeed, try again every
        ``poll_interval_s``. Returns why the connection ended (the reader's reason, or
        "restart" when kicked)."""
        synced = False
        while True:
            if not self._reconciled and self._stream_connected and self.lease.held:
                if not synced:
                    synced = await self.resync(cause)
                if synced and await self._positions_confirmed(cause) \
                        and self._stream_connected and self.lease.held \
                        and not reader.done():
                    self._reconciled = True
                    self._m.reconciled.set(1)
                    log.info("venue.reconciled", cause=cause)
            kick = asyncio.create_task(self._stream_kick.wait())
            done, _ = await asyncio.wait(
                {reader, kick}, return_when=asyncio.FIRST_COMPLETED,
                timeout=None if self._reconciled else self._cfg().poll_interval_s)
            kick.cancel()
            if reader in done:
                return reader.result()
            if kick in done:
                return "restart"

    def take_found_orders(self) -> list[Order]:
        """Open orders that a resync found at the venue and this process did not send (placed
        by hand, or by the previous holder of the lease), once each, for the audit."""
        found, self._found = self._found, []
        return found

    def set_position_check(self, check: Callable[[str], Awaitable[bool]]) -> None:
        """The book's position check (the execution stage's): after each reconnect the
        venue is reconciled only once it returns True."""
        self._position_check = check

    async def _positions_confirmed(self, cause: str) -> bool:
        check = self._position_check
        if check is None:
            return True  # no book to compare with (the venue used on its own)
        # Every fill emitted so far must be booked before positions are compared.
        deadline = self._mono() + 5.0
        while len(self._events) and self._mono() < deadline:
            await asyncio.sleep(0.01)
        if len(self._events):
            return False
        try:
            ok = await check(cause)
        except VenueUnavailable as exc:
            log.warning("venue.position_check_failed", cause=cause, error=str(exc))
            return False
        return ok

    async def _read_stream(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    await self._on_stream_text(msg.data)
                except _StreamRestart as exc:
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
            await self._apply(rep, [tr] if tr else [], "stream")
        elif kind == "ACCOUNT_UPDATE":
            a = msg.get("a", {})
            for b in a.get("B", []):
                self.stream_balances[str(b["a"])] = _f(b.get("wb"))
            for p in a.get("P", []):
                if p.get("ps", "BOTH") == "BOTH":
                    self.stream_positions[str(p["s"])] = _f(p.get("pa"))
        elif kind == "listenKeyExpired":
            self._m.listen_key_renewals.labels("expired").inc()
            log.warning("venue.listen_key_expired")
            self._listen_key = None
            raise _StreamRestart("listen_key_expired")

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cfg().listen_key_keepalive_s)
            if not (self._listen_key and self._stream_connected and self.lease.held):
                continue
            try:
                await self._request("stream", "fapiPrivatePutListenKey", {}, 1)
                self._m.listen_key_renewals.labels("kept_alive").inc()
            except BinanceAPIError as exc:
                self._m.listen_key_renewals.labels("failed").inc()
                log.warning("venue.listen_key_keepalive_failed", code=exc.code, msg=exc.msg)
                if exc.code == -1125 or exc.status < 500:  # "This listenKey does not exist."
                    self._listen_key = None
                    self._stream_kick.set()  # re-create it and reconnect
            except (_NotSent, _NoAnswer) as exc:
                self._m.listen_key_renewals.labels("failed").inc()
                log.warning("venue.listen_key_keepalive_failed", error=str(exc))

    async def _poll_loop(self) -> None:
        """REST polling while the stream is down; with it up, orders with no news for long."""
        while True:
            cfg = self._cfg()
            await asyncio.sleep(cfg.poll_interval_s)
            polling = not self._stream_connected and self.lease.held
            self._m.rest_polling.set(1 if polling else 0)
            if not self.lease.held:
                continue
            now = self._mono()
            for cid, t in list(self._orders.items()):
                if t.settled:
                    continue
                stale = now - t.last_news >= cfg.order_check_s
                behind = t.venue_state in TERMINAL  # a final state waiting for its fills
                if not (polling or stale or behind):
                    continue
                try:
                    await self.query(cid)
                except VenueUnavailable as exc:
                    t.last_news = now  # do not hammer a failing query
                    log.info("venue.poll_failed", client_id=cid, error=str(exc))
                    if "rate_limited" in str(exc) or "ip_banned" in str(exc):
                        break

    # ---- views -----------------------------------------------------------------------------

    def retry_after_s(self) -> float:
        """Seconds until the venue takes requests again (a 429's Retry-After, a 418 ban)."""
        now = self._now()
        return max(0.0, self.budget.backoff_until - now, self.budget.banned_until - now)

    def readiness(self) -> str:
        if not self.lease.held:
            return f"fenced: {self.lease.reason}"
        now = self._now()
        if now < self.budget.banned_until:
            return f"venue ban (418) for another {self.budget.banned_until - now:.0f}s"
        if not self._reconciled:
            return "not reconciled with the venue yet (reduce-only orders only)"
        return "ok"

    def status(self) -> dict[str, Any]:
        now = self._now()
        cfg = self._cfg()
        return {
            "venue": self.name, "network": cfg.network, "rest_base_url": self.rest_base,
            "ws_base_url": self.ws_base, "account": self.account,
            "credentials": self._creds.source.split(":", 1)[0],
            "lease": self.lease.status(), "reconciled": self._reconciled,
            "user_stream": {"connected": self._stream_connected, "connects": self.connects,
                            "listen_key_age_s": (round(self._mono() - self._listen_key_at, 1)
                                                 if self._listen_key else None)},
            "rest_polling": not self._stream_connected,
            "budget": {"weight_used": self.budget.used_weight(now),
                       "weight_limit": self.budget.limit,
                       "orders_10s": self.budget.used_orders("10s", now),
                       "orders_1m": self.budget.used_orders("1m", now),
                       "backoff_s": max(0.0, self.budget.backoff_until - now),
                       "banned_s": max(0.0, self.budget.banned_until - now)},
            "clock_offset_ms": round(self._offset_s * 1000, 1),
            "tracked_orders": sum(1 for t in self._orders.values() if not t.settled),
            "loop_crashes": dict(self.loop_crashes),
            "last_error": self._redact(self.last_error),
        }


class VenueSetupError(VenueStartupError):
    """The account cannot be traded as configured (hedge mode, ...)."""


def _start_refusal(exc: BinanceAPIError, base: str) -> str:
    """One line for an answer that refuses us at start."""
    if exc.code in (-2014, -2015):
        why = "the API key is refused (invalid key, IP not whitelisted or no futures permission)"
    elif exc.code == -1022:
        why = "the signature is refused (wrong API secret)"
    elif exc.banned:
        why = "this IP is banned (418)"
    else:
        why = "the venue refused the start-up request"
    return f"venue {base}: {why}: binance http {exc.status} code {exc.code}: {exc.msg[:120]}"


def _reject_reason(exc: BinanceAPIError) -> str:
    if exc.code == -2019:
        return "margin_insufficient"
    if exc.code == -2022:
        return "reduce_only_rejected"
    if exc.banned:
        return "ip_banned"
    if exc.rate_limited:
        return "rate_limited"
    if exc.code == -1021:
        return "timestamp_outside_recv_window"
    return f"binance_{exc.code if exc.code is not None else exc.status}:{exc.msg[:80]}"


# ---- start-up reconciliation with the store ---------------------------------------------


class ForeignHoldings(VenueSetupError):
    """execution.foreign = "refuse" and the account holds positions or orders not ours."""


async def reconcile_store(venue: BinanceVenue, store: Any, audit: Any,
                          reconcile_diffs: Any, policy: str = "adopt") -> None:
    """Before the execution stage restores: make the venue know the store's working orders
    (their symbols, for query by client id), and bring open orders the store does not know
    into it. Those are cancelled (a working order left from before a start is stale, the
    stage's own policy) and recorded with their state; their fills are already in the venue's
    positions, which the stage adopts. Orders and positions the store has and the venue does
    not are the stage's to correct (expired / adopted flat). Skipped while fenced."""
    from dolphind.store.sqlite import order_op

    state = await store.load_state()
    for o in state.open_orders:
        venue.track(o)
    if not venue.lease.held:
        log.warning("venue.reconcile_skipped", reason=venue.lease.reason)
        return
    known = set(state.client_ids)
    open_orders = await venue.open_orders()
    foreign_orders = [o for o in open_orders
                      if o.client_id not in known and venue.is_foreign(o.client_id)]
    foreign_positions = {}
    if policy != "adopt":
        ours = {p.symbol: p.qty for p in state.positions}
        for sym, vp in (await venue.positions()).items():
            rest = split_foreign(ours.get(sym, 0.0), vp.qty)[1]
            if rest:
                foreign_positions[sym] = rest
    if policy == "refuse" and (foreign_orders or foreign_positions):
        raise ForeignHoldings(
            f"the account holds what this daemon did not open (execution.foreign = "
            f"'refuse'): positions {foreign_positions or '{}'}, orders "
            f"{sorted(o.client_id for o in foreign_orders) or '[]'}")
    for o in foreign_orders:
        venue.foreign_orders[o.client_id] = o
        log.warning("venue.foreign_order", client_id=o.client_id, symbol=o.symbol,
                    side=o.side, qty=o.qty, state=o.state, action="left alone")
        audit.record("execution.foreign_order", client_id=o.client_id, symbol=o.symbol,
                     side=o.side, qty=o.qty, price=o.price, state=o.state,
                     venue_order_id=o.venue_order_id, action="left alone")
    for o in open_orders:
        if o.client_id in known or o.client_id in venue.foreign_orders:
            continue
        log.warning("venue.unknown_open_order", client_id=o.client_id, symbol=o.symbol,
                    side=o.side, qty=o.qty, state=o.state, filled_qty=o.filled_qty)
        reconcile_diffs.labels("venue_order_adopted").inc()
        adopted = dataclasses.replace(o, state=str(OrderState.ACKED)
                                      if o.state != OrderState.PARTIALLY_FILLED else o.state)
        venue.adopt_at_start(adopted)
        await store.write(order_op(adopted), wait=True)
        cancelled = await venue.cancel(o.client_id)
        final = cancelled if cancelled is not None else adopted
        if final.state in (OrderState.ACKED, OrderState.PARTIALLY_FILLED):
            log.error("venue.unknown_open_order_not_cancelled", client_id=o.client_id)
        else:
            await store.write(order_op(dataclasses.replace(
                final, intent_id=adopted.intent_id, reason=adopted.reason,
                reject_reason="unknown to the store at start")), wait=True)
        audit.record("execution.venue_order_adopted", client_id=o.client_id, symbol=o.symbol,
                     side=o.side, qty=o.qty, filled_qty=o.filled_qty,
                     venue_order_id=o.venue_order_id, action="cancelled",
                     final_state=final.state)


async def _no_book_yet(cause: str) -> bool:
    return False


@contextlib.asynccontextmanager
async def open_binance_books(config: Callable[[], Any], metrics: Any,
                             bus: StateBus | None = None) -> AsyncIterator[tuple[Any, Any,
                                                                                  "BinanceVenue"]]:
    """Store, audit log and the binance venue, in the order a start needs them: the venue is
    opened (clock, filters, lease, leverage), the store's working orders are made known to it
    and unknown venue orders are brought into the store, then the user stream starts.
    Closing runs in reverse: venue (streams stopped, lease released), audit, store."""
    from dolphind.app.books import open_store_and_audit

    cfg = config()
    creds = await asyncio.to_thread(load_credentials, cfg.execution.binance, cfg.resolve)
    async with open_store_and_audit(config, metrics) as (store, audit):
        venue = BinanceVenue(lambda: config().execution.binance, bus, metrics.venue, creds,
                             symbols=lambda: config().binance_feed.symbols,
                             lease_dir=cfg.resolve(cfg.execution.binance.lease_dir),
                             owns=lambda cid: cid.startswith(
                                 config().execution.client_id_prefix + "-"),
                             foreign_policy=lambda: config().execution.foreign)
        async with venue:
            try:
                await reconcile_store(venue, store, audit, metrics.execution.reconcile_diffs,
                                      cfg.execution.foreign)
            except VenueUnavailable as exc:
                raise VenueStartupError(f"venue {venue.rest_base}: cannot read the account at "
                                        f"start: {exc}") from None
            # Not reconciled before the execution stage has its book to compare positions
            # with: the stage installs its own check when it is built.
            venue.set_position_check(_no_book_yet)
            venue.start_streams()
            yield store, audit, venue
