"""What a first start pays for numba: compiling the scan and alpha kernels, against loading
them from the cache.

Each figure is measured in a fresh Python process with its own empty ``NUMBA_CACHE_DIR`` (a
fresh clone, or a new version), then again in a fresh process on the cache the first one left
(every later start). Measured: the scan kernels as the daemon warms them (read-only closes
only), the scan kernels with both signatures (what ``scanner.warmup()`` did before), and the
alpha kernels. Import time is excluded (it is the same either way).

Usage: .venv/bin/python bench/kernel_compile.py
Last line: RESULT scan_cold_s=... scan_both_cold_s=... alpha_cold_s=... scan_cached_s=...
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

_CHILD = """
import time, sys
import dolphind.scan.scanner as S
from dolphind.alpha.warmup import warmup as warm_alpha
what = sys.argv[1]
t0 = time.perf_counter()
if what == "scan":
    S.warmup(readonly_only=True)
elif what == "scan_both":
    S.warmup()
else:
    warm_alpha()
print(f"{time.perf_counter() - t0:.3f}")
"""


def timed(what: str, cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _CHILD, what], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    results: dict[str, float] = {}
    for what in ("scan", "scan_both", "alpha"):
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            cold = timed(what, cache)
            cached = timed(what, cache)
        results[f"{what}_cold_s"] = cold
        results[f"{what}_cached_s"] = cached
        print(f"{what:10s} compile {cold:7.2f} s   from cache {cached:6.2f} s   "
              f"ratio {cold / cached:5.1f}x")
    print(f"read-only signature only saves {results['scan_both_cold_s'] - results['scan_cold_s']:.2f}"
          f" s of a first start ({results['scan_both_cold_s'] / results['scan_cold_s']:.2f}x)")
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
