"""Eigenscan benchmark: incremental scanner vs full recompute (corrcoef + eigvalsh), BLAS on 1 thread.

Synthetic one-factor returns with a regime change (loading 0.5 -> 1.5 half-way, volatility x3):
per N in (50, 200, 540) it times EigenScanner.update (all four windows, Python overhead
included) after warm-up, the full recompute on the same windows, checks every timed scan against
eigvalsh to get the max relative error, and reports iterations (products with C), passes over
the state, products taken from the raw window (short windows; included in the iterations) and
fallbacks.
Last line: RESULT n540_ms=... speedup_vs_recompute=... max_rel_err=... iters_p99=... fallbacks=...
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dolphind.events import WINDOWS  # noqa: E402
from dolphind.scan import kernels as K  # noqa: E402
from dolphind.scan.scanner import EigenScanner, warmup  # noqa: E402

MODE_NAME = {K.MODE_COV: "cov", K.MODE_GRAM: "gram"}


def synthetic_prices(n: int, bars: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(bars)[:, None]
    load = np.where(t < bars // 2, 0.5, 1.5) * (0.7 + 0.6 * rng.random((1, n)))
    vol = np.where(t < bars // 2, 1.0, 3.0)
    r = 0.001 * vol * (load * rng.standard_normal((bars, 1)) + rng.standard_normal((bars, n)))
    return 100.0 * np.exp(np.cumsum(r, axis=0))


def full_recompute(r: np.ndarray, t: int) -> list[float]:
    return [float(np.linalg.eigvalsh(np.corrcoef(r[t - w : t].T))[-1]) for w in WINDOWS]


def run(n: int, timed: int, modes: tuple[int, ...] | None = None) -> dict[str, float]:
    warm = WINDOWS[-1] + 60
    bars = warm + timed
    px = synthetic_prices(n, bars, seed=n)
    r = np.log(px[1:] / px[:-1])
    syms = tuple(f"S{i:03d}" for i in range(n))
    # the regime change falls inside the timed part
    sc = EigenScanner(modes=modes)
    for t in range(warm):
        sc.update(t, syms, px[t])
    fb0 = sc.counters.fallbacks_total
    times = np.empty(timed)
    lams = np.empty((timed, 4))
    its = np.empty((timed, 4))
    passes = np.empty((timed, 4))
    wprods = np.empty((timed, 4))
    for k in range(timed):
        t = warm + k
        t0 = time.perf_counter()
        rec = sc.update(t, syms, px[t])
        times[k] = time.perf_counter() - t0
        lams[k] = rec.lambda_max
        its[k] = sc.counters.last_iterations
        passes[k] = sc.counters.last_passes
        wprods[k] = sc.counters.last_window_products
    sample = range(0, timed, max(1, timed // 40))
    rt = []
    err = 0.0
    for k in range(timed):
        if k in sample:
            t0 = time.perf_counter()
        ref = full_recompute(r, warm + k)
        if k in sample:
            rt.append(time.perf_counter() - t0)
        err = max(err, float(np.max(np.abs(lams[k] - ref) / np.array(ref))))
    return {
        "scan_ms": 1e3 * float(np.mean(times)),
        "scan_p50_ms": 1e3 * float(np.median(times)),
        "recompute_ms": 1e3 * float(np.mean(rt)),
        "err": err,
        "it50": float(np.percentile(its, 50)),
        "it99": float(np.percentile(its, 99)),
        "passes": float(np.mean(passes.sum(axis=1))),
        "wprods": float(np.mean(wprods.sum(axis=1))),
        "fallbacks": float(sc.counters.fallbacks_total - fb0),
        "modes": "/".join(MODE_NAME[m] for m in sc.modes),
    }


def main() -> None:
    warmup()
    print(f"windows={WINDOWS} BLAS threads=1; times are per scan (all four windows)")
    out = {}
    for n, timed in ((50, 1500), (200, 800), (540, 400)):
        res = run(n, timed)
        out[n] = res
        print(
            f"N={n:4d} modes={res['modes']:15s} scan={res['scan_ms']:.3f} ms (p50 {res['scan_p50_ms']:.3f})"
            f"  recompute={res['recompute_ms']:.2f} ms  speedup={res['recompute_ms'] / res['scan_ms']:.0f}x"
            f"  max_rel_err={res['err']:.1e}  iters p50/p99={res['it50']:.0f}/{res['it99']:.0f}"
            f"  fallbacks={res['fallbacks']:.0f}  state passes/scan={res['passes']:.2f}"
            f"  window products/scan={res['wprods']:.2f}"
        )
    # per-window mode choice at N=540, measured: all-cov vs all-gram
    for modes in ((K.MODE_COV,) * 4, (K.MODE_GRAM, K.MODE_COV, K.MODE_COV, K.MODE_COV)):
        res = run(540, 150, modes)
        print(f"N= 540 forced modes={res['modes']:15s} scan={res['scan_ms']:.3f} ms")
    big = out[540]
    errs = max(v["err"] for v in out.values())
    fbs = sum(v["fallbacks"] for v in out.values())
    it99 = max(v["it99"] for v in out.values())
    print(
        f"RESULT n540_ms={big['scan_ms']:.3f} speedup_vs_recompute={big['recompute_ms'] / big['scan_ms']:.0f}"
        f" max_rel_err={errs:.1e} iters_p99={it99:.0f} fallbacks={fbs:.0f}"
    )


if __name__ == "__main__":
    main()
