"""Whole-pipeline backtest throughput: symbol-bars per second (issue 9).

Runs `dolphind backtest` (the daemon's own pipeline: replay -> market -> scan -> alpha ->
rails -> router -> paper venue -> portfolio -> SQLite store and audit log) in this process on
the real 14-symbol 1m set and the real 40-symbol 5m set, and times the pipeline from the first
bar to the last (start-up and report writing are reported separately). For a same-run
baseline it also times the replay feed alone feeding a consumer that only counts bars, which
is the floor any pipeline built on these channels pays.

Usage: .venv/bin/python bench/backtest.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from dolphind import logs  # noqa: E402

from dolphind.backtest import backtest_config  # noqa: E402
from dolphind.channels import Channel, Overflow  # noqa: E402
from dolphind.config import config_from_dict  # noqa: E402
from dolphind.app import build_daemon  # noqa: E402
from dolphind.daemon import Daemon  # noqa: E402
from dolphind.feed.history import load_history  # noqa: E402
from dolphind.feed.replay import ReplayFeed  # noqa: E402
from dolphind.telemetry.health import Health  # noqa: E402
from dolphind.telemetry.metrics import Metrics  # noqa: E402

SHARED = ROOT / "tests" / "data"  # the real candle sets, copied into the repository
SETS = {
    "1m x14": (SHARED / "binance-um-futures-1m-2025-05_typhonun-DcaTpStrategy",
               "2025-05-04T15:37", "2025-06-03T15:31"),
    "5m x40": (SHARED / "binance-um-futures-5m-2023-07_alpergulsen-freqtrade", "", ""),
}


async def _timed_pipeline(daemon: Daemon) -> tuple[int, float, float]:
    """(exit code, seconds from first bar to the end, start-up seconds)."""
    t0 = time.perf_counter()
    task = asyncio.create_task(daemon.serve())
    while daemon.pipeline is None or not daemon.pipeline.feed.seq:
        if task.done():
            break
        await asyncio.sleep(0.001)
    t_first = time.perf_counter()
    code = await task
    return code, time.perf_counter() - t_first, t_first - t0


def run_pipeline(data: Path, start: str, end: str) -> tuple[int, int, float, float, int]:
    out = Path(tempfile.mkdtemp(prefix="dolphind-bench-"))
    try:
        cfg = backtest_config(config_from_dict({}), [str(data)], out, start or None,
                              end or None, None)
        daemon = build_daemon(cfg, exit_when_done=True, record_equity=True)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code, seconds, startup = runner.run(_timed_pipeline(daemon))
        assert code == 0, f"pipeline exit {code}"
        st = daemon.pipeline.feed.status()
        return int(st["bars_emitted"]), len(st["symbols"]), seconds, startup, \
            len(daemon.pipeline.ledger.closed)
    finally:
        shutil.rmtree(out, ignore_errors=True)


async def _feed_only(data: Path, start: str, end: str) -> tuple[int, float]:
    cfg = backtest_config(config_from_dict({}), [str(data)], Path(tempfile.gettempdir()),
                          start or None, end or None, None)
    metrics = Metrics()
    health = Health(metrics, lambda: 30.0)
    health.register("feed")
    history = await asyncio.to_thread(load_history, [str(data)], cfg.feed.max_stale_bars)
    ch: Channel = Channel("bars", cfg.channels.bars, Overflow.BLOCK, metrics.channels)
    feed = ReplayFeed(history, ch, lambda: cfg, health, metrics)
    n = 0

    async def consume() -> None:
        nonlocal n
        async for _ in ch:
            n += 1

    t0 = time.perf_counter()
    consumer = asyncio.create_task(consume())
    await feed.run()
    ch.close()
    await consumer
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only the 5m set")
    args = ap.parse_args()
    logs.configure(level="warning", fmt="console")
    total_sb = 0
    total_s = 0.0
    for name, (data, start, end) in SETS.items():
        if args.quick and name != "5m x40":
            continue
        bars, n_sym, seconds, startup, trades = run_pipeline(data, start, end)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            base_bars, base_s = runner.run(_feed_only(data, start, end))
        sb = bars * n_sym
        total_sb += sb
        total_s += seconds
        print(f"{name}: {bars} bars x {n_sym} symbols, {trades} trades; pipeline {seconds:.2f} s "
              f"= {sb / seconds:,.0f} symbol-bars/s ({seconds / bars * 1e6:.0f} us/bar); "
              f"start-up {startup:.2f} s | baseline feed->count {base_bars / base_s:,.0f} bars/s "
              f"= {base_bars * n_sym / base_s:,.0f} symbol-bars/s; pipeline/baseline "
              f"{(sb / seconds) / (base_bars * n_sym / base_s):.3f}")
    print("reference: nautilus_trader 1.221 BacktestEngine, trivial strategy, one instrument: "
          "60k-87k bars/s (measured elsewhere, not in this run)")
    print(f"RESULT symbol_bars_per_s={total_sb / total_s:.0f}")


if __name__ == "__main__":
    main()
