"""The Command Center: the operator's page at ``GET /`` and its live data (bible §28).

Three routes join the ops HTTP app (``mount``):

- ``GET /`` and ``GET /static/...``: the page, shipped in the package (``ops/static``), no build
  step, no network: its charting library is the uPlot vendored for the backtest report
  (``report/vendor/uplot``).
- ``GET /ui/snapshot``: everything the page shows, as one JSON object (``CommandCenter.snapshot``).
- ``GET /ui/events``: Server-Sent Events. A ``hello`` event first (snapshot, the vel_div history
  and the recent feed), then a ``tick`` about twice a second (fresh snapshot, new vel_div points,
  new feed items) and a ``feed`` event at once for every control action (halt, resume, flatten,
  incident, ...), pushed by the control plane's subscriber.

Halt / resume / flatten are not here: the page posts to the token-protected ``/kill`` and
``/flatten`` of ``ops/http.py``, so the control plane has one door. The page is read-only until
the operator types the token in; it is kept in the tab's memory only.

Nothing runs while nobody looks: the poller that turns the pipeline's state into vel_div points
and feed items is started by the first SSE client and stops with the last one. It reads the same
views /status reads (on the loop, no locks) and never blocks a stage. A tick that fails is
logged and the next one tried; should the poller itself crash, the crash is logged and counted
(``dolphind_task_crashes_total{task="command-center"}``, ``dolphind.stage.start_watched``), its
clients' streams end (the page reconnects) and the next client starts a new poller.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import time
from importlib import resources
from typing import Any, Callable, Iterable

import orjson
import structlog
from aiohttp import web

import dolphind
from dolphind.control import ControlAction
from dolphind.stage import start_watched

log = structlog.get_logger("dolphind.ops.command_center")

STATIC_DIR = resources.files("dolphind.ops") / "static"
# One vendored uPlot for the whole package: the backtest report's (licence and provenance there).
UPLOT_DIR = resources.files("dolphind.report") / "vendor" / "uplot"
UPLOT_FILES = ("uPlot.iife.min.js", "uPlot.min.css")
TICK_S = 0.5  # the page's refresh period: fast enough to look live, cheap for the loop
CHART_POINTS = 720  # vel_div points kept for a newcomer's chart (an hour of 5 s bars)
FEED_ITEMS = 200  # feed items kept for a newcomer
CLIENT_QUEUE = 64  # messages a slow client may fall behind before it is dropped
_RECENT_ORDERS = 15
_RECENT_TRADES = 10


def _num(x: Any) -> float | None:
    """JSON has no NaN: a cold value travels as null."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_jsonable,
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def sse_message(event: str, data: Any) -> bytes:
    """One Server-Sent Events message (orjson never emits a raw newline inside the data)."""
    return b"event: " + event.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


def intent_item(intent: dict[str, Any]) -> dict[str, Any]:
    """A feed item for an alpha decision (an entry or an exit intent)."""
    kind = "exit" if intent.get("reduce_only") else "entry"
    notional = intent.get("notional_usdt") or 0.0
    text = (f"{kind.upper()} {intent.get('side', '?')} {intent.get('symbol', '?')} "
            f"{notional:,.0f} USDT ({intent.get('reason', '')})")
    item = {"kind": "decision", "sub": kind, "ts": (intent.get("ts_ns") or 0) / 1e9,
            "text": text, "id": intent.get("intent_id")}
    # The chart marks entries at their own scan (the page's ticks may sample the scans).
    scan, _, _ = str(intent.get("intent_id", "")).partition("-")
    vel_div = (intent.get("gates") or {}).get("vel_div")
    if kind == "entry" and scan.isdigit() and vel_div is not None:
        item["scan"], item["vel_div"] = int(scan), _num(vel_div)
    return item


def action_item(a: ControlAction) -> dict[str, Any]:
    """A feed item for a control-plane action; incidents keep their severity."""
    if a.action == "incident":
        sev = a.detail.get("severity", "warning")
        text = f"{a.detail.get('kind', 'incident')}: {a.detail.get('message', '')}"
        return {"kind": "incident", "sub": sev, "ts": a.ts, "text": text, "cause": a.cause}
    extra = a.detail.get("reason") or ""
    if a.action == "resume" and a.detail.get("lifted"):
        extra = "lifted " + ", ".join(a.detail["lifted"])
    text = f"{a.action.replace('_', ' ')} by {a.cause}" + (f": {extra}" if extra else "")
    return {"kind": "control", "sub": a.action, "ts": a.ts, "text": text, "cause": a.cause}


def trade_item(t: Any, seen_ts: float | None) -> dict[str, Any]:
    """A feed item for a closed trade, stamped with the market time it was seen at (the
    ledger's own exit_ts_ns is not the exit bar's time in the daemon, see the issue's note)."""
    d = _jsonable(t)
    pnl = d.get("pnl_usdt") or 0.0
    return {"kind": "trade", "sub": "win" if pnl > 0 else "loss" if pnl < 0 else "flat",
            "ts": seen_ts,
            "text": f"closed {d.get('side', '')} {d.get('symbol', '?')} "
                    f"PnL {pnl:+,.2f} USDT ({d.get('exit_reason', '')})"}


class CommandCenter:
    """Reads the daemon's views into what the page shows; fans live updates out to clients."""

    def __init__(self, daemon: Any, wall: Callable[[], float] = time.time) -> None:
        self._d = daemon
        self._wall = wall
        self.points: collections.deque[tuple[float, int, float | None]] = \
            collections.deque(maxlen=CHART_POINTS)
        self.feed: collections.deque[dict[str, Any]] = collections.deque(maxlen=FEED_ITEMS)
        self._seq = 0
        self._last_scan: int | None = None
        self._seen_intents: collections.deque[str] = collections.deque(maxlen=256)
        self._trades_seen: int | None = None
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._poller: asyncio.Task[None] | None = None
        daemon.control.subscribe(self._on_action)
        for a in list(daemon.control.recent)[-20:]:
            self._add(action_item(a))

    # ---- what the page shows -------------------------------------------------------------

    def _pipeline_part(self, name: str) -> dict[str, Any]:
        p = getattr(self._d, "pipeline", None)
        if p is None:
            return {}
        part = p.status_parts.get(name)
        return part() if part is not None else {}

    def threshold(self) -> float | None:
        from dolphind.alpha.profile import strategy_params
        try:
            return float(strategy_params(self._d.config).vel_div_threshold)
        except Exception:  # an unknown profile cannot be drawn, the rest of the page still can
            return None

    def snapshot(self) -> dict[str, Any]:
        d = self._d
        cfg = d.config
        ready, checks = d.readiness()
        control = d.control.status()
        alpha = self._pipeline_part("alpha")
        scan = self._pipeline_part("scan")
        ex = getattr(getattr(d, "pipeline", None), "execution", None)
        ledger = getattr(getattr(d, "pipeline", None), "ledger", None)
        money = ex.positions_view() if ex is not None else {}
        orders = ex.orders_view() if ex is not None else {"working": [], "recent": []}
        ex_status = self._pipeline_part("execution")
        venue = cfg.execution.venue
        last = scan.get("last") or {}
        return {
            "ts": self._wall(),
            "mode": cfg.mode, "venue": venue,
            "network": cfg.execution.binance.network if venue == "binance" else None,
            "feed_kind": cfg.feed.kind, "version": dolphind.__version__,
            "ready": ready, "readiness": checks,
            "can_trade": bool(ready and not control["halted"]),
            "halted": control["halted"], "halted_by": control["halted_by"],
            "halt_reason": control["halt_reason"],
            "risk_multiplier": control["risk_multiplier"],
            "health": d.health_summary(),
            "posture": alpha.get("posture"), "rm": _num(alpha.get("rm")),
            "decisions": alpha.get("decisions"),
            "equity": _num(money.get("equity_usdt")), "capital": _num(money.get("capital_usdt")),
            "peak_equity": _num(money.get("peak_equity_usdt")),
            "drawdown": _num(money.get("drawdown")),
            "exposure": _num(money.get("gross_exposure_usdt")),
            "realised": _num(money.get("realised_pnl_usdt")),
            "unrealised": _num(money.get("unrealised_pnl_usdt")),
            "fees": _num(money.get("fees_usdt")),
            "positions": money.get("positions", []),
            "working_orders": orders["working"],
            "orders": orders["recent"][:_RECENT_ORDERS],
            "trades": [_jsonable(t) for t in
                       (ledger.closed[-_RECENT_TRADES:] if ledger is not None else [])][::-1],
            "scan": {"scans": scan.get("scans"), "warm": scan.get("warm"),
                     "windows_warm": scan.get("windows_warm", []),
                     "fallbacks": scan.get("fallbacks_total"),
                     "scan_number": last.get("scan_number"),
                     "timestamp_ns": last.get("timestamp_ns"),
                     "n_symbols": last.get("n_symbols"), "vel_div": last.get("vel_div")},
            "threshold": self.threshold(),
            "venue_breaker": ex_status.get("venue_breaker"),
            "audit_backlog": (ex_status.get("audit") or {}).get("backlog"),
            "stages": d.health.snapshot(),
            "plugins": d.plugins.status(),
        }

    # ---- the live feed -------------------------------------------------------------------

    def _add(self, item: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        item = {"seq": self._seq, **item}
        self.feed.append(item)
        return item

    def _on_action(self, a: ControlAction) -> None:
        item = self._add(action_item(a))
        self._broadcast(sse_message("feed", [item]))

    def poll(self) -> tuple[list[tuple[float, int, float | None]], list[dict[str, Any]]]:
        """New vel_div points and new feed items since the last poll (decisions, trades)."""
        points: list[tuple[float, int, float | None]] = []
        items: list[dict[str, Any]] = []
        pipeline = getattr(self._d, "pipeline", None)
        if pipeline is None:
            return points, items
        last = (self._pipeline_part("scan").get("last") or {})
        n = last.get("scan_number")
        if n is not None and n != self._last_scan:
            self._last_scan = n
            pt = (last["timestamp_ns"] / 1e9, n, _num(last.get("vel_div")))
            self.points.append(pt)
            points.append(pt)
        for intent in self._pipeline_part("alpha").get("last_intents", []):
            iid = intent.get("intent_id")
            if iid is None or iid in self._seen_intents:
                continue
            self._seen_intents.append(iid)
            items.append(self._add(intent_item(intent)))
        ledger = getattr(pipeline, "ledger", None)
        if ledger is not None:
            count = len(ledger.closed)
            if self._trades_seen is not None and count > self._trades_seen:
                seen_ts = last["timestamp_ns"] / 1e9 if last.get("timestamp_ns") else None
                for t in ledger.closed[self._trades_seen:][-_RECENT_TRADES:]:
                    items.append(self._add(trade_item(t, seen_ts)))
            self._trades_seen = count
        return points, items

    # ---- clients -------------------------------------------------------------------------

    def _broadcast(self, message: bytes) -> None:
        for q in list(self._clients):
            try:
                q.put_nowait(message)
            except asyncio.QueueFull:  # a client that does not read is dropped, not waited on
                self._clients.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)

    def hello(self) -> bytes:
        return sse_message("hello", {"snapshot": self.snapshot(), "points": list(self.points),
                                     "feed": list(self.feed)})

    async def _poll_loop(self) -> None:
        while self._clients:
            try:
                points, items = self.poll()
                self._broadcast(sse_message("tick", {"snapshot": self.snapshot(),
                                                     "points": points, "feed": items}))
            except Exception as exc:  # the page must never take a stage down with it
                log.error("command_center.poll_failed", error=repr(exc))
            await asyncio.sleep(TICK_S)
        self._poller = None

    def connect(self) -> asyncio.Queue[bytes | None]:
        q: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(q)
        if self._poller is None:
            self.poll()  # catch up (points, decisions) before the hello
            self._poller = start_watched(self._poll_loop(), "command-center",
                                         crashes=self._d.metrics.task_crashes,
                                         on_crash=self._poller_crashed)
        return q

    def _poller_crashed(self, exc: BaseException) -> None:
        self._poller = None  # the next client starts a new one
        self._end_streams()  # the pages reconnect (EventSource does) and so start it

    def _end_streams(self) -> None:
        for q in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        self._clients.clear()

    def disconnect(self, q: asyncio.Queue[bytes | None]) -> None:
        self._clients.discard(q)

    async def close(self) -> None:
        self._end_streams()
        self._d.control.unsubscribe(self._on_action)
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.wait([self._poller])  # it ends by the cancel (a crash was seen)


def _static(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


_TYPES = {".html": "text/html", ".js": "application/javascript", ".css": "text/css",
          ".txt": "text/plain", ".svg": "image/svg+xml"}


def static_names() -> Iterable[str]:
    return [p.name for p in STATIC_DIR.iterdir() if p.is_file()]


def mount(app: web.Application, daemon: Any) -> CommandCenter:
    """Add the page's routes to the ops app; the hub closes with the app."""
    cc = CommandCenter(daemon)
    files: dict[str, bytes] = {}  # read once, off the loop, at start-up; served from memory

    def read_files() -> None:
        files.update({name: _static(name) for name in static_names()})
        files.update({name: (UPLOT_DIR / name).read_bytes() for name in UPLOT_FILES})

    async def on_startup(app: web.Application) -> None:
        await asyncio.to_thread(read_files)

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=files["index.html"], content_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = files.get(name)
        if body is None:
            raise web.HTTPNotFound(text=f"no static file {name!r}")
        suffix = name[name.rfind("."):] if "." in name else ""
        return web.Response(body=body, content_type=_TYPES.get(suffix, "application/octet-stream"))

    async def snapshot(request: web.Request) -> web.Response:
        return web.Response(body=_dumps(cc.snapshot()), content_type="application/json")

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q = cc.connect()
        try:
            await resp.write(cc.hello())
            while True:
                msg = await q.get()
                if msg is None:
                    break
                await resp.write(msg)
        except ConnectionResetError:  # the tab went away
            pass
        finally:
            cc.disconnect(q)
        return resp

    async def on_cleanup(app: web.Application) -> None:
        await cc.close()

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/ui/snapshot", snapshot)
    app.router.add_get("/ui/events", events)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_cleanup)
    return cc
