"""Per-scan cost of publishing to the state bus: Hazelcast (a real member) vs the memory bus.

Each "scan" makes the puts the pipeline makes for one scan: ``latest_eigen_scan`` (the scan
record), ``latest_bar`` (540 prices) and the heartbeat. Measured on the event loop:

- ``put_us``: the caller's time per scan in ``put`` (what the bar/scan path pays: encode,
  local copy, mark dirty; it never awaits the cluster);
- ``loop_cpu_us``: the process CPU per scan, writer task included (the Hazelcast bus pushes
  on the same loop between scans), at a realistic pace (``--interval-ms`` between scans);
- ``outage_put_max_us`` / ``outage_lag_max_ms``: with the member killed mid-run, the slowest
  ``put`` and the loop's worst scheduling lag (a 1 ms ticker): an outage must not stall it.

The memory bus is the baseline, measured in the same process. Needs Java and the member jar
(``scripts/test.sh`` fetches it; tests/hazelcast fetches it with Maven when missing).

    .venv/bin/python bench/statebus.py [--scans 2000] [--interval-ms 2]

Last line: ``RESULT hz_put_us=... mem_put_us=... hz_loop_cpu_us=... mem_loop_cpu_us=...
outage_put_max_us=... outage_lag_max_ms=... up_put_max_us=... up_lag_max_ms=...`` (the
``up_`` figures: the same 6 s with the member up, the baseline of the outage figures)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, AsyncIterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dolphind.config import StateBusConfig, SupervisionConfig  # noqa: E402
from dolphind.supervisor import supervised  # noqa: E402
from dolphind.telemetry.health import Health  # noqa: E402
from dolphind.telemetry.metrics import Metrics  # noqa: E402
from dolphind.logs import configure  # noqa: E402
from dolphind.statebus.base import FEATURES, HEARTBEAT  # noqa: E402
from dolphind.statebus.hazelcast import HazelcastStateBus, client_options  # noqa: E402
from dolphind.statebus.memory import MemoryStateBus  # noqa: E402
from tests.hazelcast import Cluster  # noqa: E402

N_SYMBOLS = 540


def scan_payload(i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"scan_number": i, "timestamp_ns": i * 60_000_000_000,
                           "n_symbols": N_SYMBOLS, "vel_div": -0.01 - i * 1e-6,
                           "regime_signal": 0.0, "instability_composite": 0.3}
    for w in (50, 150, 300, 750):
        out[f"w{w}_lambda_max"] = 12.5 + i * 1e-3
        out[f"w{w}_velocity"] = 0.001 * w
        out[f"w{w}_instability"] = 0.2
    return out


PRICES = {f"SYM{k:03d}USDT": 100.0 + k for k in range(N_SYMBOLS)}


def one_scan(bus: Any, i: int) -> float:
    t = time.perf_counter()
    bus.put(FEATURES, "latest_eigen_scan", scan_payload(i))
    bus.put(FEATURES, "latest_bar", {"ts_ns": i, "seq": i, "prices": PRICES})
    bus.put(HEARTBEAT, "dolphind", {"ts": float(i), "pid": 1, "health": "GREEN"})
    return time.perf_counter() - t


async def run(bus: Any, scans: int, interval_s: float) -> tuple[float, float]:
    """(median put seconds per scan, process CPU seconds per scan)."""
    puts = []
    cpu0 = time.process_time()
    for i in range(scans):
        puts.append(one_scan(bus, i))
        await asyncio.sleep(interval_s)
    await asyncio.sleep(0.2)  # let the writer finish its last push
    cpu = time.process_time() - cpu0 - 0.0
    return statistics.median(puts), cpu / scans


async def idle_cpu(scans: int, interval_s: float) -> float:
    """The loop's own CPU for the same pace with no bus (subtracted from both)."""
    cpu0 = time.process_time()
    for _ in range(scans):
        await asyncio.sleep(interval_s)
    await asyncio.sleep(0.2)
    return (time.process_time() - cpu0) / scans


async def outage(bus: HazelcastStateBus, cluster: Cluster | None,
                 interval_s: float) -> tuple[float, float]:
    """Slowest put and worst loop lag over 6 s of scans; the member is killed after 200
    scans when ``cluster`` is given (else: the same run with the member up, the baseline)."""
    worst_lag = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal worst_lag
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst_lag = max(worst_lag, time.perf_counter() - t - 0.001)

    tick = asyncio.create_task(ticker())
    worst_put = 0.0
    killed = False
    t_end = time.monotonic() + 6.0
    i = 0
    while time.monotonic() < t_end:
        worst_put = max(worst_put, one_scan(bus, 10_000_000 + i))
        i += 1
        if not killed and i == 200:
            if cluster is not None:
                cluster.members[0].kill()  # blocks this loop a moment: not counted
            worst_lag = worst_put = 0.0
            killed = True
        await asyncio.sleep(interval_s)
    stop = True
    await tick
    if cluster is not None:
        assert not bus.healthy(), "the breaker should be open with the member gone"
    return worst_put, worst_lag


@contextlib.asynccontextmanager
async def running(bus: HazelcastStateBus) -> AsyncIterator[HazelcastStateBus]:
    """The bus as the daemon runs it: its loops supervised, the client closed after them."""
    metrics = Metrics()
    try:
        async with supervised(Health(metrics, lambda: 5.0), metrics, SupervisionConfig) as loops:
            loops.start(bus.stages())
            yield bus
    finally:
        await bus.close()


async def main(scans: int, interval_s: float) -> None:
    configure("warning", "console")
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp) / "hz", size=1).start()
        stack = contextlib.AsyncExitStack()
        try:
            cfg = dataclasses.replace(StateBusConfig(), kind="hazelcast",
                                      cluster_name=cluster.name,
                                      members=tuple(cluster.addresses),
                                      invocation_timeout_s=1.0, breaker_failures=2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                hz = HazelcastStateBus(cfg, Path(tmp) / "files", client_options(cfg))
            await stack.enter_async_context(running(hz))
            deadline = time.monotonic() + 60
            while not hz.healthy():
                if time.monotonic() > deadline:
                    raise SystemExit("the bus did not connect to the member")
                await asyncio.sleep(0.05)
            mem = MemoryStateBus()
            idle = await idle_cpu(scans, interval_s)
            # Alternate, so both see the same machine.
            hz_put, hz_cpu, mem_put, mem_cpu = [], [], [], []
            for _ in range(2):
                p, c = await run(mem, scans // 2, interval_s)
                mem_put.append(p)
                mem_cpu.append(c)
                p, c = await run(hz, scans // 2, interval_s)
                hz_put.append(p)
                hz_cpu.append(c)
            pushed = hz.counts["push_ok"]
            base_put, base_lag = await outage(hz, None, interval_s)
            out_put, out_lag = await outage(hz, cluster, interval_s)
        finally:
            await stack.aclose()  # the bus's loops stop, then its client shuts down
            cluster.stop()
    hp, mp = min(hz_put) * 1e6, min(mem_put) * 1e6
    hc, mc = (min(hz_cpu) - idle) * 1e6, (min(mem_cpu) - idle) * 1e6
    print(f"scans: {scans} at {interval_s * 1e3:.1f} ms intervals, {N_SYMBOLS} prices per bar")
    print(f"put per scan (caller's time)  : hazelcast {hp:8.1f} us   memory {mp:8.1f} us   "
          f"ratio {hp / mp:.2f}")
    print(f"loop CPU per scan (all tasks) : hazelcast {hc:8.1f} us   memory {mc:8.1f} us   "
          f"ratio {hc / max(mc, 1e-9):.2f}   (idle loop {idle * 1e6:.1f} us subtracted)")
    print(f"values pushed to the member   : {pushed} (latest values only: coalesced)")
    print(f"member up (baseline, 6 s)     : slowest put {base_put * 1e6:.1f} us, worst loop lag "
          f"{base_lag * 1e3:.2f} ms")
    print(f"member killed mid-run (6 s)   : slowest put {out_put * 1e6:.1f} us, worst loop lag "
          f"{out_lag * 1e3:.2f} ms")
    print(f"RESULT hz_put_us={hp:.1f} mem_put_us={mp:.1f} hz_loop_cpu_us={hc:.1f} "
          f"mem_loop_cpu_us={mc:.1f} outage_put_max_us={out_put * 1e6:.1f} "
          f"outage_lag_max_ms={out_lag * 1e3:.2f} up_put_max_us={base_put * 1e6:.1f} "
          f"up_lag_max_ms={base_lag * 1e3:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=2000)
    ap.add_argument("--interval-ms", type=float, default=2.0)
    args = ap.parse_args()
    asyncio.run(main(args.scans, args.interval_ms / 1e3))
