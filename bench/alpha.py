"""Time per bar of AlphaEngine.on_scan (scan record in -> decision out).

Synthetic universe of N symbols (geometric random walks over a wide range of price levels),
vel_div below the -0.02 gate on two bars of three, a book for every symbol, and a portfolio
that never shows a fill: the entry path (IRP over all N assets, DC, OB, sizing) runs on every
other bar, which makes the p99 the cost of a full entry decision, not of a quiet bar.

Each configuration runs ``--repeat`` times on the same inputs with a fresh engine. "raw" is
p50/p99 of the first pass. "min" takes, for every bar, the fastest of the passes before the
percentiles: the engine's own cost per bar, without the ~4 ms scheduler time slices that other
processes on a shared machine steal from some bars (the per-bar work is deterministic, so the
minimum is the honest cost; a quiet machine gives raw == min). The RESULT line reports "min";
the raw figures are printed on the lines above it.

Usage: .venv/bin/python bench/alpha.py [--bars 3000] [--repeat 3]
Last line: RESULT n540_p50_us=... n540_p99_us=...
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import Counter

import numpy as np

from dolphind.alpha.engine import AlphaEngine
from dolphind.alpha.views import BookView, PortfolioView, SymbolBook
from dolphind.events import ScanRecord

BAR_NS = 5_000_000_000
WARMUP_BARS = 160


def make_inputs(n: int, bars: int, seed: int = 1) -> tuple[list[ScanRecord], list[BookView]]:
    rng = np.random.default_rng(seed)
    symbols = tuple(f"S{i:03d}USDT" for i in range(n))
    prices = np.exp(rng.uniform(np.log(0.001), np.log(60_000.0), n))
    drift = rng.normal(0.0, 3e-4, n)
    scans: list[ScanRecord] = []
    for b in range(bars):
        prices = prices * np.exp(drift + rng.normal(0.0, 1e-3, n))
        vd = -0.03 if b % 3 else -0.01
        p = prices.copy()
        p.flags.writeable = False
        scans.append(ScanRecord(
            scan_number=b, ts_ns=1_700_000_000_000_000_000 + b * BAR_NS, n_symbols=n,
            symbols=symbols, prices=p, lambda_max=(1.0,) * 4,
            velocity=(0.0, 0.0, 0.0, float(rng.normal(0, 1e-3))), instability=(0.0,) * 4,
            vel_div=vd, regime_signal=0.0, instability_composite=0.0,
        ))
    # The book layer publishes less often than bars; a handful of snapshots, reused.
    books = []
    for _ in range(8):
        feats = {
            s: SymbolBook(
                imbalance_ma5=float(rng.uniform(-0.1, 0.1)),
                imbalance_persistence=float(rng.uniform(0, 1)),
                depth_quality=float(rng.uniform(0.3, 2.0)),
                fill_probability=float(rng.uniform(0.6, 1.0)),
                withdrawal_velocity=float(rng.uniform(-0.1, 0.1)),
            )
            for s in symbols
        }
        books.append(BookView.from_symbols(feats))
    return scans, books


def run_once(scans: list[ScanRecord], books: list[BookView], with_book: bool) -> tuple[np.ndarray, Counter[str]]:
    engine = AlphaEngine()
    portfolio = PortfolioView(capital=10_000.0, equity=10_000.0)
    times = np.empty(len(scans) - WARMUP_BARS)
    outcomes: Counter[str] = Counter()
    gc.collect()
    for i, scan in enumerate(scans):
        book = books[(i // 12) % len(books)] if with_book else None
        t0 = time.perf_counter_ns()
        d = engine.on_scan(scan, book, portfolio)
        t1 = time.perf_counter_ns()
        if i >= WARMUP_BARS:
            times[i - WARMUP_BARS] = (t1 - t0) / 1000.0
            outcomes[d.outcome] += 1
    return times, outcomes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warm_scans, warm_books = make_inputs(14, 300)
    run_once(warm_scans, warm_books, True)  # compile / load the numba cache outside the timing
    result = (0.0, 0.0)
    for n in (14, 40, 540):
        scans, books = make_inputs(n, args.bars + WARMUP_BARS)
        for with_book in (False, True):
            passes = [run_once(scans, books, with_book) for _ in range(max(1, args.repeat))]
            raw = passes[0][0]
            best = np.min(np.vstack([t for t, _ in passes]), axis=0)
            assert all(o == passes[0][1] for _, o in passes)  # deterministic decisions
            r50, r99 = np.percentile(raw, [50, 99])
            m50, m99 = np.percentile(best, [50, 99])
            label = "book" if with_book else "no-book"
            print(
                f"N={n:4d} {label:8s} raw p50={r50:7.1f} p99={r99:7.1f} us | "
                f"min p50={m50:7.1f} p99={m99:7.1f} us  {dict(passes[0][1])}"
            )
            if n == 540 and with_book:
                result = (float(m50), float(m99))
    print(f"RESULT n540_p50_us={result[0]:.1f} n540_p99_us={result[1]:.1f}")


if __name__ == "__main__":
    main()
