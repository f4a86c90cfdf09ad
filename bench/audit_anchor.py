"""Cost of the audit anchor (issue #15): each store commit also writes kv ``audit_anchor``.

The real Store (WAL, its writer thread) on uvloop, two databases in one temporary folder, in
the same process and alternating: one with ``audit_tip`` set (the anchor row goes into every
commit), one without (the baseline). Each write is one order row committed with ``wait=True``,
the execution stage's write-ahead before an order is sent.

    .venv/bin/python bench/audit_anchor.py [--n 3000]

Last line: ``RESULT anchored_p50_us=... baseline_p50_us=... ratio_p50=... ratio_p99=...``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from dolphind.events import Order
from dolphind.store.sqlite import Store, order_op


def _order(k: int) -> Order:
    return Order(f"dd-{k:032d}", f"i{k}", "BTCUSDT", "SELL", 0.05, "MARKET", 0.0, False,
                 "ENTRY", "new", created_ns=k, updated_ns=k)


async def _run(n: int, folder: Path) -> dict[str, list[float]]:
    stores = {"anchored": await Store.open(folder / "a.sqlite"),
              "baseline": await Store.open(folder / "b.sqlite")}
    tip = [0, "0" * 64]
    stores["anchored"].audit_tip = lambda: (tip[0], tip[1])
    times: dict[str, list[float]] = {k: [] for k in stores}
    for s in stores.values():
        await s.__aenter__()
    try:
        for k in range(n):
            tip[0] = k + 1  # as if one audit line was written per order
            for name in (("anchored", "baseline") if k % 2 else ("baseline", "anchored")):
                t0 = time.perf_counter()
                await stores[name].write(order_op(_order(k)), wait=True)
                times[name].append((time.perf_counter() - t0) * 1e6)
    finally:
        for s in stores.values():
            await s.close()
    return times


def _p(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        times = uvloop.run(_run(args.n, Path(d)))
    a, b = times["anchored"][100:], times["baseline"][100:]  # after warm-up
    for name, xs in (("anchored", a), ("baseline", b)):
        print(f"{name:9s} p50 {statistics.median(xs):8.1f} us  p99 {_p(xs, 99):8.1f} us")
    print(f"RESULT anchored_p50_us={statistics.median(a):.1f} "
          f"baseline_p50_us={statistics.median(b):.1f} "
          f"ratio_p50={statistics.median(a) / statistics.median(b):.3f} "
          f"ratio_p99={_p(a, 99) / _p(b, 99):.3f}")


if __name__ == "__main__":
    main()
