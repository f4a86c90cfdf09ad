"""Execution benchmark: intent-to-paper-fill latency and sustained fills/s with the store writing.

Everything real and in-process: the execution stage, a Channel, the paper venue, the SQLite
store (WAL, one writer thread) and the audit log in a temporary folder, on uvloop.

1. Latency: one intent at a time; the clock runs from putting the intent into the channel to
   the stage reporting the fill (after the fill, order, position and account are committed).
2. Throughput: intents back to back through the bounded channel; fills/s, and the store's
   queue depth sampled all along (it must not grow: group commit keeps up).

Both run twice, each time in a fresh process: pinned to one CPU (``cpu_affinity = [n]`` in the
config, which the daemon applies with the same function) and left to the OS. The loop and the
store thread hand every order back and forth; on a VM a wake-up across vCPUs costs more than
the commit it waits for, and whether the OS puts the two threads on one CPU changes from run
to run, so the unpinned figures are bimodal.

Last line: ``RESULT intent_to_fill_p99_ms=... fills_per_s=... unpinned_p99_ms=...`` (the
first two pinned).

    .venv/bin/python bench/execution.py [--latency-n 2000] [--throughput-n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from dolphind.affinity import pin_process
from dolphind.channels import Channel, Overflow
from dolphind.config import config_from_dict
from dolphind.events import Bar, Fill, OrderIntent, frozen_array
from dolphind.ports import NoExecutionEvents
from dolphind.orders.filters import load_exchange_info
from dolphind.venues.paper import PaperVenue
from dolphind.app.execution import build_execution
from dolphind.execution.state import ExecutionServices
from dolphind.logs import configure
from dolphind.control import Control
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.store.audit import AuditLog, verify
from dolphind.store.sqlite import Store

INFO = (Path(__file__).resolve().parents[1] / "tests" / "data"
        / "binance-um-ws-capture-2021-07-22_cryptofeed" / "BINANCE_FUTURES.0")


def _intent(i: int) -> OrderIntent:
    entry = i % 2 == 0  # alternate: short entry, then its take-profit exit
    return OrderIntent(intent_id=f"bench:{i}", ts_ns=1, symbol="BTCUSDT",
                       side="SELL" if entry else "BUY", notional_usdt=1000.0, leverage=1.0,
                       reduce_only=not entry, reason="ENTRY" if entry else "FIXED_TP",
                       ref_price=0.0)


async def bench(latency_n: int, throughput_n: int, folder: Path) -> dict[str, Any]:
    metrics = await asyncio.to_thread(Metrics)
    cfg = config_from_dict({"risk": {"max_orders_per_minute": 1e12, "order_burst": 10**9},
                            "execution": {"fee_model": "draw"}})
    info = await asyncio.to_thread(load_exchange_info, INFO)
    store = await Store.open(folder / "bench.sqlite", metrics.execution, metrics.channels)
    audit = await AuditLog.open(folder / "audit.jsonl", metrics.execution)
    venue = PaperVenue(info, lambda: cfg.execution)
    control = Control(metrics, lambda cause: None)
    health = Health(metrics, lambda: 30.0)
    health.register("execution")
    intents: Channel[Any] = Channel("intents", 256, Overflow.BLOCK, metrics.channels)
    filled: dict[str, float] = {}
    fill_event = asyncio.Event()

    class FillClock(NoExecutionEvents):
        def on_fill(self, fill: Fill) -> None:
            filled[fill.client_id] = time.perf_counter()
            fill_event.set()

    async with store, audit:
        stage = build_execution(intents, ExecutionServices(venue, store, audit, control, health,
                                                           metrics, lambda: cfg, FillClock()))
        task = asyncio.create_task(stage.run())
        while not stage.ready:
            await asyncio.sleep(0.001)
        await intents.put(Bar(1, ("BTCUSDT",), frozen_array(np.array([40_000.0])), 5.0, 1))

        # 1. latency, one at a time
        lat = []
        for i in range(latency_n):
            it = _intent(i)
            fill_event.clear()
            n0 = len(filled)
            t0 = time.perf_counter()
            await intents.put(it)
            while len(filled) == n0:
                await fill_event.wait()
                fill_event.clear()
            lat.append(time.perf_counter() - t0)

        # 2. sustained throughput, back to back, sampling the store queue
        depth_samples: list[int] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                depth_samples.append(store.backlog)
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        n_before = len(filled)
        t0 = time.perf_counter()
        for i in range(latency_n, latency_n + throughput_n):
            await intents.put(_intent(i))
        while len(filled) - n_before < throughput_n:
            fill_event.clear()
            await fill_event.wait()
        elapsed = time.perf_counter() - t0
        stop.set()
        await sampler
        intents.close()
        await task
        commits, writes = store.commits, store.writes
        integrity = await store.integrity_check()
    chain = await asyncio.to_thread(verify, folder / "audit.jsonl")
    lat_ms = sorted(x * 1e3 for x in lat)
    half = len(depth_samples) // 2
    return {
        "p50_ms": statistics.median(lat_ms),
        "p99_ms": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))],
        "max_ms": lat_ms[-1],
        "fills_per_s": throughput_n / elapsed,
        "throughput_s": elapsed,
        "store_depth_max": max(depth_samples, default=0),
        "store_depth_mean_first_half": statistics.fmean(depth_samples[:half] or [0]),
        "store_depth_mean_second_half": statistics.fmean(depth_samples[half:] or [0]),
        "writes_per_commit": writes / max(commits, 1),
        "integrity": integrity,
        "audit_ok": chain.ok, "audit_lines": chain.lines,
        "equity": stage.portfolio.equity(),
    }


def run_one(latency_n: int, throughput_n: int, cpus: list[int]) -> dict[str, Any]:
    if cpus:
        pin_process(cpus)
    configure("warning", "console")
    with tempfile.TemporaryDirectory(prefix="dolphind-bench-") as tmp:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(bench(latency_n, throughput_n, Path(tmp)))


def report(label: str, r: dict[str, Any], latency_n: int, throughput_n: int) -> None:
    print(f"[{label}]")
    print(f"  latency  (n={latency_n}, one intent at a time, put -> fill committed): "
          f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  max {r['max_ms']:.3f} ms")
    print(f"  throughput (n={throughput_n} back to back): {r['fills_per_s']:.0f} fills/s "
          f"({r['throughput_s']:.2f} s)")
    print(f"  store queue depth: max {r['store_depth_max']}, mean first half "
          f"{r['store_depth_mean_first_half']:.1f}, second half "
          f"{r['store_depth_mean_second_half']:.1f}; {r['writes_per_commit']:.1f} writes/commit")
    print(f"  integrity_check {r['integrity']}, audit chain ok={r['audit_ok']} "
          f"({r['audit_lines']} lines), final equity {r['equity']:.2f} USDT")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-n", type=int, default=2000)
    ap.add_argument("--throughput-n", type=int, default=20000)
    ap.add_argument("--one", metavar="CPUS", help=argparse.SUPPRESS)  # a child's run: "" = none
    args = ap.parse_args()
    if args.one is not None:
        cpus = [int(c) for c in args.one.split(",") if c]
        r = run_one(args.latency_n, args.throughput_n, cpus)
        print("CHILD " + json.dumps(r))
        return 0
    one_cpu = max(os.sched_getaffinity(0))
    results = {}
    for label, cpus in ((f"pinned to CPU {one_cpu}", str(one_cpu)), ("unpinned", "")):
        out = subprocess.run([sys.executable, __file__, "--latency-n", str(args.latency_n),
                              "--throughput-n", str(args.throughput_n), "--one", cpus],
                             check=True, capture_output=True, text=True).stdout
        results[label] = json.loads(out.split("CHILD ", 1)[1])
    print(f"python {sys.version.split()[0]}, uvloop, SQLite WAL synchronous=NORMAL; "
          f"{os.cpu_count()} CPUs")
    for label, r in results.items():
        report(label, r, args.latency_n, args.throughput_n)
    pinned, free = results[f"pinned to CPU {one_cpu}"], results["unpinned"]
    print(f"RESULT intent_to_fill_p99_ms={pinned['p99_ms']:.3f} "
          f"fills_per_s={pinned['fills_per_s']:.0f} unpinned_p99_ms={free['p99_ms']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
