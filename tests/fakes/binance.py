"""A loopback Binance USDT-M futures WebSocket server for tests and benchmarks (aiohttp).

It serves real recorded frames (tests/data/ws, see its PROVENANCE.md) on Binance's routed
combined-stream endpoints, ``/public/stream?streams=a/b/c`` and ``/market/stream?...``, the way
the venue does: one market timeline played at ``speed`` x the recorded pace, which every
connection joins at "now" (a client that was disconnected misses what was sent meanwhile),
only the subscribed streams, nothing at all for a stream asked on the wrong route. Played in a
loop, later passes shift event times and trade ids forward so the data stays monotonic.

Event times: by default the recorded ones (2021, far in the past: a client accepts them and
builds bars on the data). With ``rebase`` the timeline is moved to start ``rebase_lead_s``
(3 h) before the server started, and still runs at ``speed`` x: recent times, bars as fast as
the speed makes them. It must not start at "now": at ``speed`` 8 every frame after the first
second would be stamped in the future, which a client rightly drops (``future_time``). With the
lead the times stay in the past for ``rebase_lead_s / (speed - 1)`` seconds of wall time (about
25 minutes at speed 8), longer than any test.

Faults (``server.faults`` in-process, or ``POST /_fault/<name>?...`` from another process):

- ``close(abort=False)``: close every open socket (abort: drop TCP without a close frame);
- ``stall(seconds)``: keep sockets open (pings still answered) but send no frame;
- ``deaf(seconds)``: as ``stall``, and pings go unanswered too;
- ``refuse(seconds)``: answer new connections with HTTP 503;
- ``wrong_route(route, seconds)``: behave as if ``route`` did not carry its streams;
- ``garbage(n)``: send n frames that are broken in every way the parser must survive;
- ``crossed(n)``: send n depth5 frames whose best ask is below the best bid.

Subprocess use (prints ``LISTENING ws://127.0.0.1:PORT`` once ready; stops on SIGTERM):

    python -m tests.fakes.binance --data tests/data/ws --port 0 --speed 1
    python -m tests.fakes.binance --flood 1000000 --port 0      # the benchmark's flood mode

In flood mode each connection receives ``--flood`` real-shaped frames (aggTrade on /market,
depth5 on /public, for the symbols it subscribed) written straight to the socket as fast as
the client reads them, then a close frame.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import os
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "ws"
DEFAULT_FILES = ("um_2021-07-22_aggTrade.txt", "um_2021-07-22_depth5_500ms.derived.txt")

PUBLIC_KINDS = ("depth", "bookTicker")
MARKET_KINDS = ("aggTrade", "kline", "markPrice")


def route_of(stream: str) -> str:
    kind = stream.split("@")[1] if "@" in stream else ""
    if kind.startswith(PUBLIC_KINDS):
        return "public"
    if kind.startswith(MARKET_KINDS):
        return "market"
    return "private"


@dataclasses.dataclass(slots=True)
class Frame:
    offset_ms: int  # event time minus the recording's first event time
    stream: str
    route: str
    raw: str  # as recorded
    obj: dict[str, Any]


@dataclasses.dataclass(slots=True)
class Recording:
    frames: list[Frame]
    first_ms: int
    span_ms: int

    @property
    def offsets(self) -> list[int]:
        return [f.offset_ms for f in self.frames]


def _event_ms(obj: dict[str, Any]) -> int:
    data = obj["data"]
    return int(data[0]["E"] if isinstance(data, list) else data["E"])


def load_recording(folder: Path = DATA_DIR, files: tuple[str, ...] = DEFAULT_FILES) -> Recording:
    """Frames of ``files`` (cryptofeed line format) merged in event-time order."""
    rows = []
    for name in files:
        for line in (folder / name).read_text().splitlines():
            if not line.strip():
                continue
            _, raw = line.split(": ", 1)
            obj = orjson.loads(raw)
            rows.append((_event_ms(obj), obj["stream"], raw, obj))
    rows.sort(key=lambda r: r[0])
    first = rows[0][0]
    frames = [Frame(e - first, s, route_of(s), raw, obj) for e, s, raw, obj in rows]
    return Recording(frames, first, frames[-1].offset_ms)


def read_frames(folder: Path = DATA_DIR, files: tuple[str, ...] = DEFAULT_FILES) -> list[str]:
    """The raw frame texts of ``files`` in event-time order (for tests that skip the socket)."""
    return [f.raw for f in load_recording(folder, files).frames]


# Frames the parser must count and drop; (reason the client should count, frame).
GARBAGE: tuple[tuple[str, str | bytes], ...] = (
    ("invalid_json", '{"stream":"x@aggTrade","data":{'),
    ("invalid_json", b"\xff\xfe\x00garbage"),
    ("control_message", '{"result":null,"id":1}'),
    ("not_envelope", "[1,2,3]"),
    ("unknown_stream", '{"stream":"nosuchusdt@aggTrade","data":{}}'),
)


def _garbage_for(stream: str, e_ms: int) -> list[tuple[str, str]]:
    """Broken frames on a stream the client did subscribe to."""
    if "@aggTrade" in stream:
        ok = {"e": "aggTrade", "E": e_ms, "a": 1, "s": stream.split("@")[0].upper(),
              "p": "1.0", "q": "1", "f": 1, "l": 1, "T": e_ms, "m": False}
        cases = [("missing_field", {k: v for k, v in ok.items() if k != "p"}),
                 ("wrong_type", {**ok, "p": 1.5}),
                 ("non_numeric", {**ok, "p": "abc"}),
                 ("non_numeric", {**ok, "p": "NaN"}),
                 ("bad_time", {**ok, "E": 5})]
    else:
        ok = {"e": "depthUpdate", "E": e_ms, "T": e_ms, "s": stream.split("@")[0].upper(),
              "b": [["1.0", "1"]], "a": [["1.1", "1"]]}
        cases = [("missing_field", {k: v for k, v in ok.items() if k != "b"}),
                 ("wrong_type", {**ok, "b": "1.0"}),
                 ("non_numeric", {**ok, "a": [["x", "1"]]}),
                 ("empty_book", {**ok, "a": []})]
    return [(r, orjson.dumps({"stream": stream, "data": d}).decode()) for r, d in cases]


@dataclasses.dataclass
class Faults:
    """Fault switches; times are time.monotonic() deadlines."""

    stall_until: float = 0.0
    deaf_until: float = 0.0
    refuse_until: float = 0.0
    muted: dict[str, float] = dataclasses.field(default_factory=dict)
    garbage_pending: int = 0
    crossed_pending: int = 0

    def stalled(self, now: float) -> bool:
        return now < self.stall_until or now < self.deaf_until

    def deaf(self, now: float) -> bool:
        return now < self.deaf_until

    def is_muted(self, route: str, now: float) -> bool:
        return now < self.muted.get(route, 0.0)


class _Client:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request, route: str,
                 streams: set[str]) -> None:
        self.ws = ws
        self.request = request
        self.route = route
        self.streams = streams
        self.garbage_sent = 0
        self.crossed_sent = 0


class FakeBinance:
    """The server. ``async with FakeBinance(load_recording()) as fake: fake.url ...``."""

    def __init__(self, recording: Recording | None = None, *, speed: float = 1.0,
                 loop: bool = True, rebase: bool = False, host: str = "127.0.0.1",
                 port: int = 0, flood: int = 0, rebase_lead_s: float = 3 * 3600.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.rec = recording if recording is not None or flood else load_recording()
        self.ssl_context = ssl_context  # given: the server speaks wss:// (TLS) only
        self.speed = speed
        self.loop = loop
        self.host = host
        self.port = port
        self.flood = flood
        self.faults = Faults()
        self.clients: set[_Client] = set()
        self.accepted = 0
        self.refused = 0
        self.sent: dict[str, int] = {"public": 0, "market": 0}
        self.injected: dict[str, int] = {}
        self._t0 = time.monotonic()
        self.rebase = rebase and self.rec is not None
        self.rebase_lead_ms = int(rebase_lead_s * 1000)
        self._wall0_ms = int(time.time() * 1000)  # the wall time of virtual time 0
        self._offsets = self.rec.offsets if self.rec is not None else []
        # Pre-built flood payloads by subscribed streams (see flood_chunks).
        self.flood_chunks: dict[tuple[str, ...], list[bytes]] = {}
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/{route}/stream", self._handle)
        self.app.router.add_post("/_fault/{name}", self._fault_http)
        self.app.router.add_get("/_stats", self._stats_http)

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self._t0 = time.monotonic()
        self._wall0_ms = int(time.time() * 1000)

    async def stop(self) -> None:
        await self.close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> "FakeBinance":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        scheme = "ws" if self.ssl_context is None else "wss"
        return f"{scheme}://{self.host}:{self.port}"

    # ---- faults -----------------------------------------------------------------------------

    async def close_all(self, abort: bool = False) -> int:
        clients = list(self.clients)
        for c in clients:
            if abort:
                if c.request.transport is not None:
                    c.request.transport.abort()
            else:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await c.ws.close(code=1001, message=b"going away")
        return len(clients)

    def stall(self, seconds: float) -> None:
        self.faults.stall_until = time.monotonic() + seconds

    def deaf(self, seconds: float) -> None:
        """Like ``stall``, and pings go unanswered too (a peer that hangs, or a dead path)."""
        self.faults.deaf_until = time.monotonic() + seconds

    def refuse(self, seconds: float) -> None:
        self.faults.refuse_until = time.monotonic() + seconds

    def wrong_route(self, route: str, seconds: float) -> None:
        self.faults.muted[route] = time.monotonic() + seconds

    def garbage(self, n: int = 1) -> None:
        self.faults.garbage_pending += n

    def crossed(self, n: int = 1) -> None:
        self.faults.crossed_pending += n

    def clear(self) -> None:
        self.faults = Faults()

    # ---- the market timeline ----------------------------------------------------------------

    def virtual_ms(self) -> float:
        return (time.monotonic() - self._t0) * 1000.0 * self.speed

    def _period(self) -> int:
        assert self.rec is not None
        return self.rec.span_ms + 1000  # one quiet second between passes

    def event_ms(self, recorded_ms: int, loop_no: int) -> int:
        """The time a recorded event time is sent with in pass ``loop_no`` (see the module doc)."""
        assert self.rec is not None
        virtual = loop_no * self._period() + recorded_ms - self.rec.first_ms
        if self.rebase:
            return self._wall0_ms - self.rebase_lead_ms + virtual
        return self.rec.first_ms + virtual

    def _frame_text(self, frame: Frame, loop_no: int) -> str:
        if loop_no == 0 and not self.rebase:
            return frame.raw  # the recorded bytes, untouched
        data = frame.obj["data"]
        items = data if isinstance(data, list) else [data]
        new_items = []
        for item in items:
            item = dict(item)
            for key in ("E", "T"):
                if isinstance(item.get(key), int):
                    item[key] = self.event_ms(item[key], loop_no)
            if item.get("e") == "aggTrade":
                # Trade ids move on too, so that de-duplication by id stays meaningful.
                for key in ("a", "f", "l"):
                    item[key] += loop_no * 10_000_000
            new_items.append(item)
        new = new_items if isinstance(data, list) else new_items[0]
        return orjson.dumps({"stream": frame.stream, "data": new}).decode()

    def agg_trades_rest(self, symbol: str) -> list[dict[str, Any]]:
        """Every aggTrade of ``symbol`` this timeline has played so far (all passes, up to the
        virtual now), in the REST ``/fapi/v1/aggTrades`` shape: the stream's fields without
        ``e``/``E``/``s``, times and ids moved on per pass exactly as the stream sends them."""
        assert self.rec is not None
        now = self.virtual_ms()
        out: list[dict[str, Any]] = []
        stream = f"{symbol.lower()}@aggTrade"
        frames = [f for f in self.rec.frames if f.stream == stream]
        loop_no = 0
        while frames and loop_no * self._period() <= now:
            for f in frames:
                if loop_no * self._period() + f.offset_ms > now:
                    break
                d = orjson.loads(self._frame_text(f, loop_no))["data"]
                out.append({k: d[k] for k in ("a", "p", "q", "f", "l", "T", "m")})
            if not self.loop:
                break
            loop_no += 1
        return out

    def _crossed_frame(self, stream: str) -> str | None:
        assert self.rec is not None
        vms = self.virtual_ms()
        loop_no, pos = divmod(int(vms), self._period())
        for f in self.rec.frames:
            if f.stream == stream:
                d = dict(orjson.loads(self._frame_text(f, loop_no))["data"])
                best_bid = d["b"][0][0]
                d["a"] = [[best_bid, "1"]] + d["a"][1:]  # ask == bid: crossed (ask <= bid)
                d["E"] = self.event_ms(self.rec.first_ms + pos, loop_no)
                return orjson.dumps({"stream": stream, "data": d}).decode()
        return None

    # ---- connections ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info["route"]
        now = time.monotonic()
        if now < self.faults.refuse_until:
            self.refused += 1
            return web.Response(status=503, text="Service Unavailable (fault: refuse)")
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        # Pings are answered below (unless the server is deaf), not by aiohttp.
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        self.accepted += 1
        # Binance answers nothing for streams asked on the wrong route.
        client = _Client(ws, request, route, {s for s in streams if route_of(s) == route})
        self.clients.add(client)
        sender = asyncio.create_task(self._flood(client) if self.flood else self._play(client))
        try:
            async for msg in ws:  # notices the client's close
                if msg.type == WSMsgType.PING and not self.faults.deaf(time.monotonic()):
                    await ws.pong(msg.data)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            self.clients.discard(client)
        return ws

    async def _play(self, client: _Client) -> None:
        assert self.rec is not None
        frames, offsets, period = self.rec.frames, self._offsets, self._period()
        loop_no, pos = divmod(self.virtual_ms(), period)
        i = bisect.bisect_right(offsets, pos)
        ws = client.ws
        while not ws.closed:
            await self._inject(client)
            if i >= len(frames):
                if not self.loop:
                    await asyncio.sleep(0.05)
                    continue
                loop_no, i = loop_no + 1, 0
            due_ms = loop_no * period + frames[i].offset_ms
            wait = (due_ms - self.virtual_ms()) / 1000.0 / self.speed
            if wait > 0:
                await asyncio.sleep(min(wait, 0.05))
                continue
            f = frames[i]
            i += 1
            now = time.monotonic()
            if f.stream not in client.streams or self.faults.stalled(now) \
                    or self.faults.is_muted(client.route, now):
                continue
            await ws.send_str(self._frame_text(f, int(loop_no)))
            self.sent[client.route] = self.sent.get(client.route, 0) + 1

    async def _inject(self, client: _Client) -> None:
        f = self.faults
        if f.garbage_pending > 0 and client.streams:
            stream = sorted(client.streams)[0]
            e_ms = int(time.time() * 1000)
            if self.rec is not None:
                loop_no, pos = divmod(int(self.virtual_ms()), self._period())
                e_ms = self.event_ms(self.rec.first_ms + pos, loop_no)
            for reason, text in list(GARBAGE) + _garbage_for(stream, e_ms):
                if isinstance(text, bytes):
                    await client.ws.send_bytes(text)
                else:
                    await client.ws.send_str(text)
                self.injected[reason] = self.injected.get(reason, 0) + 1
            # Taken off only once sent: a socket that dies mid-way leaves it for the next one.
            f.garbage_pending -= 1
        if f.crossed_pending > 0:
            depth = sorted(s for s in client.streams if "@depth5" in s)
            text = self._crossed_frame(depth[0]) if depth else None
            if text is not None:
                await client.ws.send_str(text)
                f.crossed_pending -= 1
                self.injected["crossed_book"] = self.injected.get("crossed_book", 0) + 1

    # ---- flood (benchmark) ------------------------------------------------------------------

    async def _flood(self, client: _Client) -> None:
        transport = client.request.transport
        assert transport is not None
        streams = sorted(client.streams)
        if not streams:
            return
        chunks = self.flood_chunks.get(tuple(streams)) or flood_chunks(streams, self.flood)
        for chunk in chunks:
            if client.ws.closed:
                return
            transport.write(chunk)
            while transport.get_write_buffer_size() > 4 << 20:
                await asyncio.sleep(0.0005)
        self.sent[client.route] = self.sent.get(client.route, 0) + self.flood
        while transport.get_write_buffer_size() > 0 and not client.ws.closed:
            await asyncio.sleep(0.001)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await client.ws.close()

    # ---- control over HTTP (subprocess use) -------------------------------------------------

    async def _fault_http(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        q = request.query
        seconds = float(q.get("seconds", "1"))
        n = int(q.get("n", "1"))
        if name == "close":
            closed = await self.close_all(abort=q.get("abort") == "1")
            return web.json_response({"closed": closed})
        if name == "stall":
            self.stall(seconds)
        elif name == "deaf":
            self.deaf(seconds)
        elif name == "refuse":
            self.refuse(seconds)
        elif name == "wrong_route":
            self.wrong_route(q.get("route", "market"), seconds)
        elif name == "garbage":
            self.garbage(n)
        elif name == "crossed":
            self.crossed(n)
        elif name == "clear":
            self.clear()
        else:
            return web.json_response({"error": f"unknown fault {name}"}, status=404)
        return web.json_response({"ok": True})

    async def _stats_http(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def stats(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": self.refused, "sent": self.sent,
                "injected": self.injected, "open": len(self.clients)}


# ---- flood frames: real shapes and values (the 2021-07-22 capture), synthetic times --------

_AGG = ('{"stream":"%s","data":{"e":"aggTrade","E":%d,"a":%d,"s":"%s","p":"%s","q":"%s",'
        '"f":%d,"l":%d,"T":%d,"m":%s}}')
_DEPTH = ('{"stream":"%s","data":{"e":"depthUpdate","E":%d,"T":%d,"s":"%s","U":%d,"u":%d,'
          '"pu":%d,"b":[["7.6110","6"],["7.6080","161"],["7.6070","285"],["7.6060","581"],'
          '["7.6050","1234"]],"a":[["7.6120","297"],["7.6130","640"],["7.6140","310"],'
          '["7.6150","1563"],["7.6160","898"]]}}')
_PRICES = ("7.6110", "7.6120", "7.6100", "7.6130")
_FRAMES_PER_MS = 20


def flood_start_ms(frames: int, now_ms: int | None = None) -> int:
    """The first event time of a flood of ``frames``: chosen so that its last frame is stamped
    "now". The flood's event time runs faster than the wall clock, so starting at "now" would
    send frames seconds in the future, which the client drops as ``future_time``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return now - frames // _FRAMES_PER_MS - 1


def _flood_frame(stream: str, k: int, t0_ms: int) -> bytes:
    # Event time advances 1 ms every 20 frames, so bars keep closing during the flood.
    e = t0_ms + k // _FRAMES_PER_MS
    sym = stream.split("@")[0].upper()
    if "@aggTrade" in stream:
        return (_AGG % (stream, e, k, sym, _PRICES[k & 3], "12", k, k, e,
                        "true" if k & 1 else "false")).encode()
    return (_DEPTH % (stream, e, e, sym, k, k, k - 1)).encode()


def flood_chunks(streams: list[str], frames: int, t0_ms: int | None = None) -> list[bytes]:
    """``frames`` WebSocket frames cycling over ``streams``, in chunks of 2000 frames."""
    t0 = flood_start_ms(frames) if t0_ms is None else t0_ms
    return [b"".join(_ws_frame(_flood_frame(streams[k % len(streams)], k, t0))
                     for k in range(start, min(start + 2000, frames)))
            for start in range(0, frames, 2000)]


def _ws_frame(payload: bytes) -> bytes:
    """An unmasked server-to-client text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


# ---- subprocess entry point ---------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    files = tuple(args.files) if args.files else DEFAULT_FILES
    rec = None if args.flood else load_recording(Path(args.data), files)
    fake = FakeBinance(rec, speed=args.speed, loop=True, rebase=args.rebase, port=args.port,
                       flood=args.flood)
    if args.flood and args.flood_symbols:
        # Build the payloads before listening, so that no client waits for their generation.
        syms = [f"s{i:03d}usdt" for i in range(args.flood_symbols)]
        t0 = flood_start_ms(args.flood)
        for kind in ("@aggTrade", "@depth5@500ms"):
            streams = sorted(s + kind for s in syms)
            fake.flood_chunks[tuple(streams)] = flood_chunks(streams, args.flood, t0)
    if args.rest_history:
        from tests.fakes.binance_rest import install_agg_trades

        counters = install_agg_trades(fake.app, fake.agg_trades_rest)
        fake.app.router.add_get(
            "/_history_stats", lambda request: web.json_response(counters))
    await fake.start()
    sys.stdout.write(f"LISTENING {fake.url}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data", default=str(DATA_DIR))
    ap.add_argument("--files", nargs="*")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--rebase", action="store_true",
                    help="move event times to 3 h before now (they still run at --speed)")
    ap.add_argument("--rest-history", action="store_true",
                    help="also serve GET /fapi/v1/aggTrades of the same timeline (issue 18)")
    ap.add_argument("--flood", type=int, default=0, help="frames per connection (benchmark)")
    ap.add_argument("--flood-symbols", type=int, default=0,
                    help="pre-build the flood for symbols S000USDT.. (as bench/ingest.py uses)")
    args = ap.parse_args(argv)
    if os.environ.get("DOLPHIND_FAKE_UVLOOP", "1") == "1":
        import uvloop

        uvloop.run(_serve(args))
    else:
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
