"""A loopback Binance USDT-M futures account: the REST endpoints ccxt calls and the user stream.

Built on real payloads (tests/data, see their PROVENANCE.md): the exchangeInfo document is
the nautilus_trader capture of 2022-02-19 (or the cryptofeed one of 2021-07-21); order, trade,
position, balance and user-stream answers are the nautilus fixtures used as templates (every
field Binance sends is there, in Binance's spelling), with the values of this fake account.

What it does, as Binance does it:
- signed endpoints check ``X-MBX-APIKEY`` (-2015), the HMAC-SHA256 signature (-1022) and the
  timestamp against ``recvWindow`` in server time (-1021; shift server time with ``skew_ms``);
- every answer carries ``X-MBX-USED-WEIGHT-1M`` (this minute's weight, plus ``extra_weight``)
  and order answers ``X-MBX-ORDER-COUNT-10S`` / ``-1M``;
- MARKET orders fill at once at ``marks[symbol]`` (in ``market_trades`` trades), LIMIT orders
  (and MARKET ones with ``hold_market``) rest until the test calls ``fill()``;
  reduce-only orders that would not reduce: -2022;
  a client order id used before: -4116; unknown orders: -2013 (query) / -2011 (cancel);
- the user stream (``/private/ws/<listenKey>`` or ``/private/ws?listenKey=``) carries
  ORDER_TRADE_UPDATE and ACCOUNT_UPDATE; ``fill_mode = "rest"`` keeps order events off the
  stream (fills only visible through REST); a listenKey lives until ``expire_listen_key()``
  (which sends ``listenKeyExpired``) or DELETE.

Faults (``fault(route, ...)``, consumed ``times`` times; route like ``"POST /fapi/v1/order"`` or
``"*"``): an error answer (``status``, ``code``, ``msg``, ``retry_after``); ``delay_s`` before
answering; ``process=True`` to execute the order before a 5xx or a delayed answer (the
"execution status unknown" case). ``ban(seconds)`` answers 418 to everything until it ends.
``drop_streams()`` closes every user-stream socket; ``refuse_streams = True`` answers new ones 503.
-4116 (duplicate client order id) comes from sending an id used before (``place()`` one), or as a
fault after execution: ``fault("POST /fapi/v1/order", process=True, status=400, code=-4116)``.

``requests`` lists every request (method, path, host); anything outside the routes above is
answered 404 and listed in ``unexpected``. ``install(app)`` adds the routes to another aiohttp
app (e.g. the market-data fake's) so one loopback server can play both.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import time
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from tests.data_paths import CRYPTOFEED_INFO, NAUTILUS

_HTTP = NAUTILUS / "crates" / "adapters" / "binance" / "test_data" / "futures" / "http_json"
_USER = NAUTILUS / "crates" / "adapters" / "binance" / "test_data" / "futures" / "user_data_json"
_RES = (NAUTILUS / "tests" / "integration_tests" / "adapters" / "binance" / "resources"
        / "http_responses")
EXCHANGE_INFO_2022 = _RES / "http_futures_market_exchange_info.json"
EXCHANGE_INFO_2021 = CRYPTOFEED_INFO

# Prices near the exchangeInfo capture's day (2022-02-19).
DEFAULT_MARKS = {"BTCUSDT": 40_000.0, "ETHUSDT": 2_780.0}
TAKER_FEE = 0.0004
MAKER_FEE = 0.0002

# IP weight of each endpoint (USDT-M docs).
_WEIGHTS = {"GET /fapi/v1/time": 1, "GET /fapi/v1/exchangeInfo": 1,
            "POST /fapi/v1/listenKey": 1, "PUT /fapi/v1/listenKey": 1,
            "DELETE /fapi/v1/listenKey": 1, "POST /fapi/v1/order": 0, "GET /fapi/v1/order": 1,
            "DELETE /fapi/v1/order": 1, "GET /fapi/v1/openOrders": 40,
            "GET /fapi/v1/userTrades": 5, "GET /fapi/v2/positionRisk": 5,
            "GET /fapi/v2/balance": 5, "GET /fapi/v2/account": 5, "POST /fapi/v1/leverage": 1,
            "POST /fapi/v1/marginType": 1, "GET /fapi/v1/positionSide/dual": 30}
_UNSIGNED = {"GET /fapi/v1/time", "GET /fapi/v1/exchangeInfo"}
# Market history (issue 18): public, weight 20 (USDT-M docs).
_WEIGHTS["GET /fapi/v1/aggTrades"] = 20
_UNSIGNED.add("GET /fapi/v1/aggTrades")
_KEY_ONLY = {"POST /fapi/v1/listenKey", "PUT /fapi/v1/listenKey", "DELETE /fapi/v1/listenKey"}


def agg_trades_rows(trades: list[dict[str, Any]], q: Any) -> list[dict[str, Any]]:
    """GET /fapi/v1/aggTrades as Binance answers it: by fromId, else within [startTime,
    endTime] (under one hour apart), else the most recent; at most ``limit`` (default 500, max
    1000), oldest first. ``trades``: the symbol's trades in the REST shape, ascending."""
    if not q.get("symbol", ""):
        raise BinanceError(400, -1102, "Mandatory parameter 'symbol' was not sent, was "
                           "empty/null, or malformed.")
    try:
        limit = min(int(q.get("limit", "500")), 1000)
        from_id = int(q["fromId"]) if "fromId" in q else None
        start = int(q["startTime"]) if "startTime" in q else None
        end = int(q["endTime"]) if "endTime" in q else None
    except ValueError:
        raise BinanceError(400, -1100, "Illegal characters found in a parameter.") from None
    if start is not None and end is not None and end - start >= 3_600_000:
        raise BinanceError(400, -1127, "More than 1 hours between startTime and endTime.")
    if from_id is not None:
        rows = [t for t in trades if t["a"] >= from_id]
    elif start is not None or end is not None:
        lo = start if start is not None else (end or 0) - 3_600_000
        hi = end if end is not None else lo + 3_600_000
        rows = [t for t in trades if lo <= t["T"] <= hi]
    else:
        rows = trades[-limit:]
    return rows[:limit]


def install_agg_trades(app: web.Application, source: Any) -> dict[str, int]:
    """Serve only GET /fapi/v1/aggTrades (from ``source(symbol)``) on ``app``, with the weight
    header, for a market-data fake that has no account; returns its live counters."""
    counters = {"requests": 0, "weight": 0}
    per_minute: dict[int, int] = {}

    async def handler(request: web.Request) -> web.Response:
        minute = int(time.time() // 60)
        per_minute[minute] = per_minute.get(minute, 0) + _WEIGHTS["GET /fapi/v1/aggTrades"]
        counters["requests"] += 1
        counters["weight"] += _WEIGHTS["GET /fapi/v1/aggTrades"]
        headers = {"X-MBX-USED-WEIGHT-1M": str(per_minute[minute])}
        try:
            rows = agg_trades_rows(list(source(request.query.get("symbol", ""))), request.query)
        except BinanceError as exc:
            return web.json_response({"code": exc.code, "msg": exc.msg}, status=exc.status,
                                     headers=headers)
        return web.json_response(rows, headers=headers)

    app.router.add_get("/fapi/v1/aggTrades", handler)
    return counters


def _load(path: Path) -> Any:
    raw = path.read_bytes()
    if not raw.lstrip().startswith((b"{", b"[")):  # cryptofeed "<url> -> <ts>: <json>" line
        line = raw.split(b"\n", 1)[0]
        raw = line[line.find(b": {") + 2:]
    return orjson.loads(raw)


def _num(x: float) -> str:
    s = format(Decimal(repr(float(x))), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


class BinanceError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class Fault:
    route: str
    times: int = 1
    status: int = 0
    code: int | None = None
    msg: str = ""
    retry_after: float | None = None
    delay_s: float = 0.0
    process: bool = False


@dataclass
class FakeOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    qty: float
    price: float
    reduce_only: bool
    status: str = "NEW"
    executed: float = 0.0
    cum_quote: float = 0.0
    time_ms: int = 0
    update_ms: int = 0
    trades: list[dict[str, Any]] = field(default_factory=list)

    @property
    def avg_price(self) -> float:
        return self.cum_quote / self.executed if self.executed else 0.0


@dataclass
class Request:
    method: str
    path: str
    host: str
    params: dict[str, str]
    status: int = 0


class FakeBinanceRest:
    def __init__(self, *, api_key: str = "fake-api-key-0001", secret: str = "fake-secret-0001",
                 exchange_info: Path = EXCHANGE_INFO_2022,
                 marks: dict[str, float] | None = None, balance_usdt: float = 10_000.0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key, self.secret = api_key, secret
        self.host, self.port = host, port
        self.exchange_info = _load(exchange_info)
        self.marks = dict(DEFAULT_MARKS if marks is None else marks)
        self.balance_usdt = balance_usdt
        # Real payloads as templates.
        self._t_order = _load(_HTTP / "order_response.json")
        self._t_position = _load(_HTTP / "position_risk.json")[0]
        self._t_balance = _load(_HTTP / "balance.json")[0]
        self._t_trade = _load(_RES / "http_futures_account_trades.json")[0]
        self._t_update = _load(_USER / "order_update_trade.json")
        self._t_account = _load(_USER / "account_update.json")
        self.skew_ms = 0
        # Where the tests put the venue's account-lease lock files (per test, never the host's).
        self.lease_dir = ""
        # MARKET orders rest (NEW) until fill(), like a LIMIT order: an order that stays working.
        self.hold_market = False
        self.fill_mode = "stream"  # or "rest": no order events on the user stream
        self.market_trades = 1
        self.extra_weight = 0
        # GET /fapi/v1/aggTrades answers from this: symbol -> that symbol's trades so far, in
        # the REST shape ({"a","p","q","f","l","T","m"}), ascending; e.g. the market-data
        # fake's FakeBinance.agg_trades_rest, so history and the stream tell the same story.
        self.agg_trades_source: Any = None
        self.orders: dict[int, FakeOrder] = {}
        self.by_client: dict[tuple[str, str], FakeOrder] = {}
        self.positions: dict[str, tuple[float, float]] = {}  # symbol -> (amt, entry)
        self.leverage: dict[str, int] = {}
        self.margin_type: dict[str, str] = {}
        self.dual_side = False
        self.listen_keys: dict[str, float] = {}  # key -> created at
        self.streams: dict[str, set[web.WebSocketResponse]] = {}
        self.faults: list[Fault] = []
        self.refuse_streams = False  # user-stream connections answered 503
        self.banned_until = 0.0
        self.requests: list[Request] = []
        self.unexpected: list[Request] = []
        self.stream_sent: list[dict[str, Any]] = []
        self._weight: dict[int, int] = {}
        self._orders_count: dict[tuple[str, int], int] = {}
        self._order_ids = itertools.count(8886774)
        self._trade_ids = itertools.count(12345678)
        self._key_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.install(self.app)

    # ---- server ----------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._middleware)
        r = app.router
        r.add_get("/fapi/v1/time", self._time)
        r.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        r.add_get("/fapi/v1/aggTrades", self._agg_trades)
        r.add_route("*", "/fapi/v1/listenKey", self._listen_key)
        r.add_route("*", "/fapi/v1/order", self._order)
        r.add_get("/fapi/v1/openOrders", self._open_orders)
        r.add_get("/fapi/v1/userTrades", self._user_trades)
        r.add_get("/fapi/v2/positionRisk", self._position_risk)
        r.add_get("/fapi/v2/balance", self._balance)
        r.add_get("/fapi/v2/account", self._account)
        r.add_post("/fapi/v1/leverage", self._leverage)
        r.add_post("/fapi/v1/marginType", self._margin_type)
        r.add_get("/fapi/v1/positionSide/dual", self._dual)
        r.add_get("/private/ws/{key}", self._ws)
        r.add_get("/private/ws", self._ws)

    async def start(self) -> "FakeBinanceRest":
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        await self.drop_streams()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> "FakeBinanceRest":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # ---- test controls ---------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.skew_ms

    def fault(self, route: str, **kw: Any) -> Fault:
        f = Fault(route, **kw)
        self.faults.append(f)
        return f

    def ban(self, seconds: float) -> None:
        self.banned_until = time.time() + seconds

    def count(self, route: str) -> int:
        method, path = route.split(" ", 1)
        return sum(1 for r in self.requests if r.method == method and r.path == path)

    def orders_with_client_id(self, client_id: str) -> list[FakeOrder]:
        return [o for o in self.orders.values() if o.client_id == client_id]

    async def drop_streams(self) -> int:
        socks = [ws for s in self.streams.values() for ws in s]
        for ws in socks:
            await ws.close()
        return len(socks)

    async def expire_listen_key(self) -> None:
        for key in list(self.listen_keys):
            await self._push(key, {"e": "listenKeyExpired", "E": self.now_ms(),
                                   "listenKey": key})
            del self.listen_keys[key]

    def place(self, symbol: str, side: str, qty: float, price: float, client_id: str,
              order_type: str = "LIMIT", reduce_only: bool = False) -> FakeOrder:
        """An order placed on the account by someone else (or before a lost store)."""
        return self._new_order(symbol, side, order_type, qty, price, client_id, reduce_only)

    def set_position(self, symbol: str, amt: float, entry: float) -> None:
        self.positions[symbol] = (amt, entry)

    async def fill(self, client_id: str, qty: float | None = None,
                   price: float | None = None, symbol: str | None = None) -> None:
        """Execute (part of) a resting order, as the matching engine would."""
        o = next(o for o in self.orders.values() if o.client_id == client_id
                 and (symbol is None or o.symbol == symbol))
        q = o.qty - o.executed if qty is None else qty
        await self._trade(o, q, price if price is not None else (o.price or self.marks[o.symbol]),
                          maker=o.type == "LIMIT")

    # ---- plumbing --------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = f"{request.method} {request.path}"
        params: dict[str, str] = dict(request.query)
        body = b""
        if request.method in ("POST", "PUT") and request.can_read_body:
            body = await request.read()
            params.update(dict(urllib.parse.parse_qsl(body.decode())))
        rec = Request(request.method, request.path, request.host, params)
        self.requests.append(rec)
        if request.path.startswith("/private/ws"):
            return await handler(request)
        if route not in _WEIGHTS:
            self.unexpected.append(rec)
            rec.status = 404
            return web.json_response({"code": -5000, "msg": "Path not found"}, status=404)
        now = time.time()
        if now < self.banned_until:
            rec.status = 418
            until_ms = int(self.banned_until * 1000)
            return self._error(418, -1003, f"Way too many requests; IP(127.0.0.1) banned until "
                               f"{until_ms}. Please use the websocket for live updates to avoid "
                               "bans.", retry_after=max(1, int(self.banned_until - now + 0.999)))
        minute = int(now // 60)
        self._weight[minute] = self._weight.get(minute, 0) + _WEIGHTS[route]
        fault = self._take_fault(route)
        try:
            if fault is not None and fault.delay_s and not fault.process:
                await asyncio.sleep(fault.delay_s)
            if fault is not None and fault.status and not fault.process:
                raise BinanceError(fault.status, fault.code or 0, fault.msg or "fault")
            self._check_auth(route, request, params, body)
            if route == "POST /fapi/v1/order":
                self._count_order(now)
            resp = await handler(request)
            if fault is not None and fault.process:
                # The venue executed it; the answer is lost or says "unknown".
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.status:
                    raise BinanceError(fault.status, fault.code or -1007,
                                       fault.msg or "Timeout waiting for response from backend "
                                       "server. Send status unknown; execution status unknown.")
        except BinanceError as exc:
            resp = self._error(exc.status, exc.code, exc.msg,
                               retry_after=fault.retry_after if fault else None)
        rec.status = resp.status
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(self._weight[minute] + self.extra_weight)
        if route == "POST /fapi/v1/order":
            resp.headers["X-MBX-ORDER-COUNT-10S"] = str(self._orders_count.get(
                ("10s", int(now // 10)), 0))
            resp.headers["X-MBX-ORDER-COUNT-1M"] = str(self._orders_count.get(("1m", minute), 0))
        return resp

    def _take_fault(self, route: str) -> Fault | None:
        for f in self.faults:
            if f.times > 0 and (f.route == route or f.route == "*"):
                f.times -= 1
                return f
        return None

    def _count_order(self, now: float) -> None:
        for key in (("10s", int(now // 10)), ("1m", int(now // 60))):
            self._orders_count[key] = self._orders_count.get(key, 0) + 1

    @staticmethod
    def _error(status: int, code: int, msg: str,
               retry_after: float | None = None) -> web.Response:
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
        return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)

    def _check_auth(self, route: str, request: web.Request, params: dict[str, str],
                    body: bytes) -> None:
        if route in _UNSIGNED:
            return
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if route in _KEY_ONLY:
            return
        raw = (body.decode() if request.method in ("POST", "PUT") and body
               else request.query_string)
        payload, sep, signature = raw.rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not sep or not hmac.compare_digest(signature, expected):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        ts = int(params.get("timestamp", "0"))
        window = int(params.get("recvWindow", "5000"))
        server = self.now_ms()
        if ts >= server + 1000 or server - ts > window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the "
                               "recvWindow.")

    # ---- public ----------------------------------------------------------------------------

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.now_ms()})

    async def _agg_trades(self, request: web.Request) -> web.Response:
        trades = list(self.agg_trades_source(request.query.get("symbol", "")) if
                      self.agg_trades_source else [])
        return web.json_response(agg_trades_rows(trades, request.query))

    async def _exchange_info(self, request: web.Request) -> web.Response:
        doc = dict(self.exchange_info)
        doc["serverTime"] = self.now_ms()
        return web.json_response(doc)

    # ---- user stream -----------------------------------------------------------------------

    async def _listen_key(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            if not self.listen_keys:
                key = f"fakeListenKey{next(self._key_ids):04d}" + "x" * 47
                self.listen_keys[key] = time.time()
            key = next(iter(self.listen_keys))
            return web.json_response({"listenKey": key})
        if request.method == "PUT":
            if not self.listen_keys:
                raise BinanceError(400, -1125, "This listenKey does not exist.")
            return web.json_response({})
        if request.method == "DELETE":
            for key in list(self.listen_keys):
                del self.listen_keys[key]
                for ws in list(self.streams.get(key, ())):
                    await ws.close()
            return web.json_response({})
        raise BinanceError(405, -1000, "method")

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info.get("key") or request.query.get("listenKey", "")
        if self.refuse_streams:
            return web.Response(status=503, text="stream service unavailable")
        if key not in self.listen_keys:
            return web.Response(status=400, text="invalid listenKey")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.streams.setdefault(key, set()).add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.streams.get(key, set()).discard(ws)
        return ws

    async def _push(self, key: str, event: dict[str, Any]) -> None:
        text = orjson.dumps(event).decode()
        for ws in list(self.streams.get(key, ())):
            if not ws.closed:
                self.stream_sent.append(event)
                await ws.send_str(text)

    async def _push_all(self, event: dict[str, Any]) -> None:
        for key in list(self.listen_keys):
            await self._push(key, event)

    # ---- orders ----------------------------------------------------------------------------

    def _new_order(self, symbol: str, side: str, otype: str, qty: float, price: float,
                   client_id: str, reduce_only: bool) -> FakeOrder:
        now = self.now_ms()
        o = FakeOrder(next(self._order_ids), client_id, symbol, side, otype, qty, price,
                      reduce_only, time_ms=now, update_ms=now)
        self.orders[o.order_id] = o
        self.by_client[(symbol, client_id)] = o
        return o

    async def _order(self, request: web.Request) -> web.Response:
        p = dict(request.query)
        if request.method == "POST":
            p.update(dict(urllib.parse.parse_qsl((await request.read()).decode())))
            return await self._place(p)
        o = self._find(p)
        if request.method == "GET":
            if o is None:
                raise BinanceError(400, -2013, "Order does not exist.")
            return web.json_response(self._order_json(o))
        if request.method == "DELETE":
            if o is None or o.status not in ("NEW", "PARTIALLY_FILLED"):
                raise BinanceError(400, -2011, "Unknown order sent.")
            o.status, o.update_ms = "CANCELED", self.now_ms()
            await self._order_event(o, "CANCELED", None)
            return web.json_response(self._order_json(o))
        raise BinanceError(405, -1000, "method")

    def _find(self, p: dict[str, str]) -> FakeOrder | None:
        if "orderId" in p:
            o = self.orders.get(int(p["orderId"]))
            return o if o is not None and o.symbol == p.get("symbol") else None
        return self.by_client.get((p.get("symbol", ""), p.get("origClientOrderId", "")))

    async def _place(self, p: dict[str, str]) -> web.Response:
        symbol, side, otype = p["symbol"], p["side"], p["type"]
        if symbol not in {s["symbol"] for s in self.exchange_info["symbols"]}:
            raise BinanceError(400, -1121, "Invalid symbol.")
        cid = p.get("newClientOrderId") or f"x-{next(self._order_ids)}"
        if any(o.client_id == cid for o in self.orders.values()):
            raise BinanceError(400, -4116, "ClientOrderId is duplicated.")
        qty = float(p["quantity"])
        reduce_only = p.get("reduceOnly", "false") == "true"
        if reduce_only:
            amt = self.positions.get(symbol, (0.0, 0.0))[0]
            reduces = (side == "BUY" and amt < 0) or (side == "SELL" and amt > 0)
            if not reduces or qty > abs(amt) + 1e-12:
                raise BinanceError(400, -2022, "ReduceOnly Order is rejected.")
        price = float(p.get("price", 0) or 0)
        o = self._new_order(symbol, side, otype, qty, price, cid, reduce_only)
        await self._order_event(o, "NEW", None)
        if otype == "MARKET" and not self.hold_market:
            mark = self.marks[symbol]
            n = max(1, self.market_trades)
            step = Decimal(_num(qty)) / n
            done = Decimal(0)
            for i in range(n):
                part = Decimal(_num(qty)) - done if i == n - 1 else step
                done += part
                await self._trade(o, float(part), mark, maker=False)
        return web.json_response(self._order_json(o))

    async def _trade(self, o: FakeOrder, qty: float, price: float, maker: bool) -> None:
        now = self.now_ms()
        tid = next(self._trade_ids)
        o.executed = round(o.executed + qty, 12)
        o.cum_quote += qty * price
        o.status = "FILLED" if o.executed >= o.qty - 1e-12 else "PARTIALLY_FILLED"
        o.update_ms = now
        fee = qty * price * (MAKER_FEE if maker else TAKER_FEE)
        signed = qty if o.side == "BUY" else -qty
        amt, entry = self.positions.get(o.symbol, (0.0, 0.0))
        realised = 0.0
        new_amt = round(amt + signed, 12)
        if amt == 0 or (amt > 0) == (signed > 0):
            entry = (abs(amt) * entry + qty * price) / abs(new_amt)
        else:
            closed = min(abs(amt), qty)
            realised = closed * (price - entry) * (1 if amt > 0 else -1)
            if abs(new_amt) > 1e-12 and (new_amt > 0) != (amt > 0):
                entry = price
        self.positions[o.symbol] = (new_amt, entry if abs(new_amt) > 1e-12 else 0.0)
        self.balance_usdt += realised - fee
        trade = copy.deepcopy(self._t_trade)
        trade.update({"symbol": o.symbol, "id": tid, "orderId": o.order_id, "side": o.side,
                      "price": _num(price), "qty": _num(qty), "realizedPnl": _num(realised),
                      "quoteQty": _num(qty * price), "commission": _num(fee),
                      "commissionAsset": "USDT", "time": now, "buyer": o.side == "BUY",
                      "maker": maker})
        o.trades.append(trade)
        await self._order_event(o, "TRADE", {"t": tid, "l": qty, "L": price, "n": fee,
                                             "m": maker, "rp": realised})
        await self._account_event(o.symbol)

    async def _order_event(self, o: FakeOrder, exec_type: str,
                           trade: dict[str, Any] | None) -> None:
        if self.fill_mode != "stream":
            return
        ev = copy.deepcopy(self._t_update)
        now = self.now_ms()
        ev["E"] = ev["T"] = now
        x = ev["o"]
        x.update({"s": o.symbol, "c": o.client_id, "S": o.side, "o": o.type, "ot": o.type,
                  "f": "GTC" if o.type == "LIMIT" else "GTC", "q": _num(o.qty),
                  "p": _num(o.price), "ap": _num(o.avg_price), "x": exec_type, "X": o.status,
                  "i": o.order_id, "z": _num(o.executed), "T": now, "R": o.reduce_only,
                  "ps": "BOTH", "l": "0", "L": "0", "n": "0", "t": 0, "m": False, "rp": "0"})
        if trade is not None:
            x.update({"t": trade["t"], "l": _num(trade["l"]), "L": _num(trade["L"]),
                      "n": _num(trade["n"]), "N": "USDT", "m": trade["m"],
                      "rp": _num(trade["rp"])})
        await self._push_all(ev)

    async def _account_event(self, symbol: str) -> None:
        if self.fill_mode != "stream":
            return
        ev = copy.deepcopy(self._t_account)
        ev["E"] = ev["T"] = self.now_ms()
        amt, entry = self.positions.get(symbol, (0.0, 0.0))
        ev["a"]["m"] = "ORDER"
        ev["a"]["B"] = [{"a": "USDT", "wb": _num(self.balance_usdt),
                         "cw": _num(self.balance_usdt), "bc": "0"}]
        ev["a"]["P"] = [{**ev["a"]["P"][0], "s": symbol, "pa": _num(amt), "ep": _num(entry),
                         "bep": _num(entry), "mt": "cross", "ps": "BOTH"}]
        await self._push_all(ev)

    def _order_json(self, o: FakeOrder) -> dict[str, Any]:
        d = copy.deepcopy(self._t_order)
        d.update({"orderId": o.order_id, "symbol": o.symbol, "status": o.status,
                  "clientOrderId": o.client_id, "price": _num(o.price),
                  "avgPrice": _num(o.avg_price), "origQty": _num(o.qty),
                  "executedQty": _num(o.executed), "cumQuote": _num(o.cum_quote),
                  "type": o.type, "origType": o.type, "reduceOnly": o.reduce_only,
                  "side": o.side, "time": o.time_ms, "updateTime": o.update_ms,
                  "timeInForce": "GTC"})
        return d

    async def _open_orders(self, request: web.Request) -> web.Response:
        sym = request.query.get("symbol")
        return web.json_response([self._order_json(o) for o in self.orders.values()
                                  if o.status in ("NEW", "PARTIALLY_FILLED")
                                  and (sym is None or o.symbol == sym)])

    async def _user_trades(self, request: web.Request) -> web.Response:
        sym = request.query["symbol"]
        oid = request.query.get("orderId")
        out = [t for o in self.orders.values() if o.symbol == sym
               and (oid is None or str(o.order_id) == oid) for t in o.trades]
        return web.json_response(sorted(out, key=lambda t: t["id"]))

    # ---- account ---------------------------------------------------------------------------

    async def _position_risk(self, request: web.Request) -> web.Response:
        out = []
        symbols = {s["symbol"] for s in self.exchange_info["symbols"]}
        for sym in sorted(symbols | set(self.positions)):
            amt, entry = self.positions.get(sym, (0.0, 0.0))
            d = copy.deepcopy(self._t_position)
            mark = self.marks.get(sym, entry)
            d.update({"symbol": sym, "positionAmt": _num(amt), "entryPrice": _num(entry),
                      "markPrice": _num(mark), "unRealizedProfit": _num(amt * (mark - entry)),
                      "leverage": str(self.leverage.get(sym, 20)),
                      "marginType": self.margin_type.get(sym, "cross").lower()
                      .replace("crossed", "cross"), "notional": _num(amt * mark),
                      "positionSide": "BOTH", "updateTime": self.now_ms()})
            out.append(d)
        return web.json_response(out)

    async def _balance(self, request: web.Request) -> web.Response:
        d = copy.deepcopy(self._t_balance)
        d.update({"balance": _num(self.balance_usdt), "crossWalletBalance": _num(self.balance_usdt),
                  "availableBalance": _num(self.balance_usdt), "updateTime": self.now_ms()})
        return web.json_response([d])

    async def _account(self, request: web.Request) -> web.Response:
        return web.json_response({"totalWalletBalance": _num(self.balance_usdt),
                                  "assets": [], "positions": []})

    async def _leverage(self, request: web.Request) -> web.Response:
        p = dict(urllib.parse.parse_qsl((await request.read()).decode()))
        self.leverage[p["symbol"]] = int(p["leverage"])
        return web.json_response({"leverage": int(p["leverage"]), "maxNotionalValue": "1000000",
                                  "symbol": p["symbol"]})

    async def _margin_type(self, request: web.Request) -> web.Response:
        p = dict(urllib.parse.parse_qsl((await request.read()).decode()))
        if self.margin_type.get(p["symbol"], "CROSSED") == p["marginType"]:
            raise BinanceError(400, -4046, "No need to change margin type.")
        self.margin_type[p["symbol"]] = p["marginType"]
        return web.json_response({"code": 200, "msg": "success"})

    async def _dual(self, request: web.Request) -> web.Response:
        return web.json_response({"dualSidePosition": self.dual_side})
