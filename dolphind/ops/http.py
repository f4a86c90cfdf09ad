"""The ops HTTP surface (SPEC §9): metrics, health, status, and token-protected control.

Read-only endpoints are open (bind to loopback by default). Control endpoints need the
``X-Dolphind-Token`` header, compared in constant time; when no token is configured they are
disabled (403), never open.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any, Awaitable, Callable, Protocol

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dolphind.control import Control
from dolphind.telemetry.metrics import Metrics
from dolphind.ops.trades import daily_document, profit_document, trades_document

TOKEN_HEADER = "X-Dolphind-Token"
_MAX_BODY_BYTES = 64 * 1024  # larger bodies: 413
# Deeper JSON bodies: 400. A control body is a flat object; nesting this deep is an attack.
MAX_BODY_DEPTH = 32
# A connection that has not sent a whole request head this long after it opened (or after its
# last response) is closed: an idle or trickling socket must not hold a slot forever.
HEADER_TIMEOUT_S = 10.0
# aiohttp's own loggers: their records can carry request lines and header values (a malformed
# token header in a parser error), so they are reduced to the message and the error's type.
_AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal")

log = structlog.get_logger("dolphind.ops.http")


class DaemonView(Protocol):
    """What the HTTP layer needs from the daemon."""

    control: Control
    metrics: Metrics

    def status(self) -> dict[str, Any]: ...

    def readiness(self) -> tuple[bool, dict[str, str]]: ...

    def health_summary(self) -> dict[str, Any]: ...

    async def reload_now(self, cause: str) -> dict[str, Any]: ...


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY
                                          | orjson.OPT_NON_STR_KEYS),
                        status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(daemon: DaemonView, token: str | None) -> web.Application:
    metrics = daemon.metrics
    token_bytes = token.encode() if token else None

    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            metrics.http_requests.labels(name, str(exc.status)).inc()
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler bug is a counted 500, not a crash
            # The route and the error's type only: its message may quote request data.
            log.error("http.handler_failed", route=name, error=type(exc).__name__)
            resp = _error(500, "internal error (see the daemon log)")
        metrics.http_requests.labels(name, str(resp.status)).inc()
        return resp

    def protected(handler: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            if token_bytes is None:
                return _error(403, "control endpoints are disabled: no ops token configured "
                                   "(set DOLPHIND_OPS_TOKEN or ops.token_file)")
            # aiohttp keeps undecodable header bytes as surrogates: give them back as bytes so
            # a malformed token is a 401 like any wrong one, not a 500.
            given = request.headers.get(TOKEN_HEADER, "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, token_bytes):
                return _error(401, f"missing or wrong {TOKEN_HEADER} header")
            return await handler(request)
        return wrapper

    async def read_json(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        raw = await request.read()  # over client_max_size: 413
        if not raw.strip():
            return {}
        try:
            body = orjson.loads(raw)
        except (orjson.JSONDecodeError, RecursionError) as exc:
            raise web.HTTPBadRequest(text=orjson.dumps({"error": f"body is not JSON: {exc}"})
                                     .decode(), content_type="application/json") from None
        if json_depth(body) > MAX_BODY_DEPTH:
            raise web.HTTPBadRequest(text=orjson.dumps(
                {"error": f"body nested more than {MAX_BODY_DEPTH} levels"}).decode(),
                content_type="application/json")
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}',
                                     content_type="application/json")
        return body

    async def metrics_handler(request: web.Request) -> web.Response:
        # Collectors read /proc; keep that file I/O off the event loop.
        body = await asyncio.to_thread(generate_latest, metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        h = daemon.health_summary()
        return _json(h, 200 if h["level"] != "DEAD" else 503)

    async def readyz(request: web.Request) -> web.Response:
        ok, checks = daemon.readiness()
        return _json({"ready": ok, "checks": checks}, 200 if ok else 503)

    async def status(request: web.Request) -> web.Response:
        return _json(daemon.status())

    async def kill(request: web.Request) -> web.Response:
        body = await read_json(request)
        action = body.get("action", "halt")
        reason = body.get("reason", "")
        if action not in ("halt", "resume") or not isinstance(reason, str):
            return _error(400, "expected {\"action\": \"halt\"|\"resume\", \"reason\": str}")
        cause = f"http:{request.remote}"
        if action == "halt":
            daemon.control.halt(cause, reason)
        else:
            daemon.control.resume(cause)
        return _json(daemon.control.status())

    async def reload(request: web.Request) -> web.Response:
        result = await daemon.reload_now(f"http:{request.remote}")
        return _json(result, 200 if result.get("ok") else 422)

    def execution() -> Any | None:
        """The execution stage, once the pipeline has one (``pipeline.execution``)."""
        return getattr(getattr(daemon, "pipeline", None), "execution", None)

    async def positions(request: web.Request) -> web.Response:
        stage = execution()
        if stage is None:
            return _error(503, "the execution stage is not running")
        return _json(stage.positions_view())

    async def orders(request: web.Request) -> web.Response:
        stage = execution()
        if stage is None:
            return _error(503, "the execution stage is not running")
        return _json(stage.orders_view())

    async def flatten(request: web.Request) -> web.Response:
        body = await read_json(request)
        halt = body.get("halt", True)
        reason = body.get("reason", "")
        if not isinstance(halt, bool) or not isinstance(reason, str):
            return _error(400, "expected {\"halt\": bool (default true), \"reason\": str}")
        cause = f"http:{request.remote}"
        if halt:
            # Halt first, so the alpha engine cannot re-enter what is being closed.
            daemon.control.halt(cause, reason or "flatten")
        daemon.control.flatten(cause, reason)
        return _json({"flatten_requested": True, **daemon.control.status()})

    def closed_trades() -> list[Any] | None:
        """The ledger's closed trades, once the pipeline has one."""
        ledger = getattr(getattr(daemon, "pipeline", None), "ledger", None)
        return None if ledger is None else list(ledger.closed)

    def count_param(request: web.Request, name: str, default: int) -> int:
        raw = request.query.get(name, str(default))
        if not raw.isdigit() or not 0 < int(raw) <= 10_000:
            raise web.HTTPBadRequest(
                text=orjson.dumps({"error": f"{name}: expected a whole number in 1..10000, "
                                            f"got {raw[:40]!r}"}).decode(),
                content_type="application/json")
        return int(raw)

    async def trades(request: web.Request) -> web.Response:
        closed = closed_trades()
        if closed is None:
            return _error(503, "the pipeline is not running")
        return _json(trades_document(closed, count_param(request, "limit", 20)))

    async def profit(request: web.Request) -> web.Response:
        closed, stage = closed_trades(), execution()
        if closed is None or stage is None:
            return _error(503, "the pipeline is not running")
        return _json(profit_document(closed, stage.status()))

    async def daily(request: web.Request) -> web.Response:
        closed = closed_trades()
        if closed is None:
            return _error(503, "the pipeline is not running")
        return _json(daily_document(closed, count_param(request, "days", 7)))

    app = web.Application(middlewares=[count_requests], client_max_size=_MAX_BODY_BYTES)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_post("/kill", protected(kill))
    app.router.add_post("/reload", protected(reload))
    app.router.add_get("/positions", positions)
    app.router.add_get("/orders", orders)
    app.router.add_post("/flatten", protected(flatten))
    app.router.add_get("/trades", trades)
    app.router.add_get("/profit", profit)
    app.router.add_get("/daily", daily)
    # The operator's page (GET /, its static files, /ui/snapshot and the /ui/events stream).
    from dolphind.ops.command_center import mount as mount_command_center
    mount_command_center(app, daemon)
    return app


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursing."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in v)
    return deepest


class _NoRequestData(logging.Filter):
    """Reduce aiohttp's records to their fixed message and the error's type: the formatted
    arguments and the exception text may quote request lines and header values (tokens)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        detail = f" ({type(exc).__name__})" if exc is not None else ""
        msg = record.msg if isinstance(record.msg, str) else "aiohttp"
        if record.args:  # the template stays, each argument becomes "-"
            msg = msg.replace("%r", "%s").replace("%d", "%s")
            try:
                msg = msg % tuple("-" for _ in (record.args if isinstance(record.args, tuple)
                                                else (record.args,)))
            except (TypeError, ValueError):
                pass
        record.msg = f"{msg}{detail}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def hide_request_data_in_aiohttp_logs() -> None:
    for name in _AIOHTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoRequestData) for f in logger.filters):
            logger.addFilter(_NoRequestData())


class HttpServer:
    """The ops server as an async context manager (bound on enter, closed on exit)."""

    def __init__(self, app: web.Application, host: str, port: int,
                 header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
        hide_request_data_in_aiohttp_logs()
        # keepalive_timeout runs from the connection's start too (aiohttp >= 3.10): it is the
        # header-read timeout of a connection that never completes a request head.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     keepalive_timeout=header_timeout_s)
        self._host, self._port = host, port
        self.bound: tuple[str, int] | None = None

    async def __aenter__(self) -> "HttpServer":
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(exc.errno, f"ops.listen {self._host}:{self._port}: {exc.strerror}") \
                from None
        addresses = self._runner.addresses  # the bound sockets' names (port 0 -> the real one)
        self.bound = tuple(addresses[0][:2]) if addresses else (self._host, self._port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
