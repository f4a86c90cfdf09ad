"""Ingest benchmark: the fake Binance floods real-shaped frames over loopback from another
process; the live feed parses them all the way into bar and book state.

    .venv/bin/python bench/ingest.py [--frames 300000] [--symbols 200]

Two connections are flooded at once (``/market``: aggTrade, ``/public``: depth5@500ms; the
frame values are those of the 2021-07-22 capture, event times advance so bars keep closing).
Reported for the pipeline as shipped (orjson, parse and state update inline in the socket
reader, bounded bars channel) and, in the same run, for a baseline of the same pipeline with
stdlib ``json`` and an unbounded ``asyncio.Queue`` between the socket reader and the parser:

- messages/s from the first to the last frame, parsed into bar/book state;
- client CPU (user + system) per 1000 messages;
- p50/p99 latency per frame, measured the same way in both pipelines: the clock starts the
  moment aiohttp hands the frame to the socket-reading loop (``ws.receive()`` returns; it is
  the first thing the loop iteration does) and stops after the frame's state update (parse,
  bar/book update, and any bar close plus book sample that the frame triggers). In the
  shipped pipeline nothing sits between those two points but the parse and the update; in the
  baseline they also span the frame's wait in the unbounded queue.

  Not in either number: the time a frame spends in aiohttp's own receive buffer after the
  kernel socket read and before ``receive()`` returns it. aiohttp's frame reader is compiled
  and has no hook to stamp the read; that buffer holds at most ~128 KiB (then aiohttp stops
  reading the socket), and both pipelines drain it through the same ``receive()``. Under
  flood the true socket-to-state latency is therefore higher than reported, by the time it
  takes the reader to work through that buffer.

The last line is ``RESULT msgs_per_s=... baseline_ratio=... p99_ms=...`` (shipped pipeline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dolphind.channels import Channel, Overflow  # noqa: E402
from dolphind.config import config_from_dict  # noqa: E402
from dolphind.events import Bar  # noqa: E402
from dolphind.feed.binance_ws import BinanceFeed, latencies_ms  # noqa: E402
from dolphind.feed.ws_connection import Connection  # noqa: E402
from dolphind.feed.parse import FrameParser  # noqa: E402
from dolphind.telemetry.health import Health  # noqa: E402
from dolphind.telemetry.metrics import Metrics  # noqa: E402


class BaselineConnection(Connection):
    """The same connection with stdlib json and an unbounded queue between read and parse."""

    def __init__(self, conn: Connection, feed: BinanceFeed) -> None:
        super().__init__(conn.name, conn.route, conn.streams, feed)
        self.parser = FrameParser(conn.streams, loads=json.loads, prices=feed.prices)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()  # unbounded, on purpose
        feed = self._feed
        latency = feed.latency_log
        assert latency is not None
        perf = time.perf_counter

        async def consume() -> None:
            while True:
                t0, data = await queue.get()
                feed.handle(self, data)
                latency.append(perf() - t0)  # state updated: the same end point as shipped

        consumer = asyncio.create_task(consume())
        try:
            async for msg in ws:
                t0 = perf()  # aiohttp handed the frame over: the same start point as shipped
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    queue.put_nowait((t0, msg.data))
                    self.last_message = time.monotonic()
                    self.receiving = True
            while not queue.empty():
                await asyncio.sleep(0.001)
            return "closed"
        finally:
            consumer.cancel()
            try:
                await consumer
            except asyncio.CancelledError:
                # Swallowing this when the reader itself is being cancelled (the run's end
                # arriving while the consumer is awaited) would keep the connection
                # reconnecting forever and the benchmark waiting for it.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_pipeline(url: str, symbols: list[str], total: int, baseline: bool) -> dict[str, Any]:
    cfg = config_from_dict({
        "feed": {"kind": "binance", "bar_seconds": 1},
        "binance_feed": {"ws_base_url": url, "symbols": symbols, "stall_timeout_s": 30.0,
                         "backoff_initial_s": 5.0, "backoff_max_s": 5.0,
                         "bar_close_delay_ms": 100}})
    metrics = Metrics()
    health = Health(metrics, lambda: 30.0)
    health.register("feed")
    out: Channel[Bar] = Channel("bars", 1024, Overflow.BLOCK)
    feed = BinanceFeed(out, lambda: cfg, health, metrics)
    feed.latency_log = []
    if baseline:
        feed.connections = [BaselineConnection(c, feed) for c in feed.connections]

    bars = 0

    async def consume_bars() -> None:
        nonlocal bars
        async for _ in out:
            bars += 1

    def handled() -> int:
        return sum(c[0] for c in feed._counts.values()) + sum(feed.bad_frames.values())

    consumer = asyncio.create_task(consume_bars())
    task = asyncio.create_task(feed.run())
    while handled() == 0:
        await asyncio.sleep(0.0005)
    t0, c0, n0 = time.perf_counter(), cpu_s(), handled()
    lat_start = len(feed.latency_log)
    while handled() < total:
        await asyncio.sleep(0.005)
        if task.done():
            task.result()
    elapsed, cpu, n = time.perf_counter() - t0, cpu_s() - c0, handled() - n0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    out.close()
    await consumer
    p50, p99 = latencies_ms(feed.latency_log[lat_start:])
    return {"msgs_per_s": n / elapsed, "cpu_ms_per_1000": cpu / n * 1000 * 1000,
            "p50_ms": p50, "p99_ms": p99, "messages": n, "seconds": elapsed,
            "bars": bars, "late": feed.bars.late, "bad": dict(feed.bad_frames),
            "book_updates": feed.book.updates}


def start_server(frames: int, symbols: int) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.binance", "--port", "0",
                             "--flood", str(frames), "--flood-symbols", str(symbols)],
                            cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise SystemExit(f"flood server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300_000, help="frames per connection")
    ap.add_argument("--symbols", type=int, default=200)
    args = ap.parse_args()
    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    total = 2 * args.frames
    proc, url = start_server(args.frames, args.symbols)
    try:
        import structlog
        import logging

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        results = {}
        for name, baseline in (("orjson+inline", False), ("json+unbounded queue", True)):
            results[name] = uvloop.run(run_pipeline(url, symbols, total, baseline))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"load average {os.getloadavg()[0]:.2f} (a shared machine: msgs/s is bounded by the "
          f"CPU share the client gets; msgs per CPU-second is what one core would do)")
    print(f"cpu: {os.cpu_count()} cores; server in another process (pid {proc.pid}); "
          f"{args.symbols} symbols, {args.frames} frames per connection, 2 connections "
          f"(aggTrade ~170 B, depth5 ~330 B)")
    for name, r in results.items():
        print(f"{name:>22}: {r['msgs_per_s']:>9.0f} msgs/s  "
              f"{1e6 / r['cpu_ms_per_1000']:>9.0f} msgs/cpu-s  cpu {r['cpu_ms_per_1000']:.2f} ms/1000 "
              f"msgs  p50 {r['p50_ms']:.4f} ms  p99 {r['p99_ms']:.4f} ms  "
              f"({r['messages']} msgs in {r['seconds']:.2f} s, {r['bars']} bars, "
              f"{r['late']} late, {r['book_updates']} book updates, bad={r['bad']})")
    ours, base = results["orjson+inline"], results["json+unbounded queue"]
    ratio = ours["msgs_per_s"] / base["msgs_per_s"]
    print(f"baseline ratio: wall {ratio:.2f}x, cpu {base['cpu_ms_per_1000'] / ours['cpu_ms_per_1000']:.2f}x")
    print(f"RESULT msgs_per_s={ours['msgs_per_s']:.0f} baseline_ratio={ratio:.2f} "
          f"p99_ms={ours['p99_ms']:.3f}")


if __name__ == "__main__":
    main()
