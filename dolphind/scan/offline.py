"""Run the eigenscan over historical bars and write the Arrow scan files (research / checks)."""

from __future__ import annotations

import os

import numpy as np

from dolphind.scan.arrow_sink import ArrowScanSink, last_scan_number
from dolphind.scan.scanner import EigenScanner

OFFLINE_FLUSH_EVERY = 4096


def scan_history(
    timestamps_ns: np.ndarray,
    symbols: tuple[str, ...],
    closes: np.ndarray,
    out_dir: str | os.PathLike[str],
) -> int:
    """Scan ``closes[T, N]`` (NaN = absent) bar by bar into ``out_dir``; return the number of scans.

    Scan numbers continue after the highest one already persisted in ``out_dir``.
    """
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    px = np.asarray(closes, dtype=np.float64)
    if px.ndim != 2 or px.shape != (ts.shape[0], len(symbols)):
        raise ValueError(f"closes shape {px.shape} != ({ts.shape[0]}, {len(symbols)})")
    last = last_scan_number(out_dir)
    scanner = EigenScanner(start_scan_number=0 if last is None else last + 1)
    with ArrowScanSink(out_dir, flush_every=OFFLINE_FLUSH_EVERY) as sink:
        for t in range(ts.shape[0]):
            sink.append(scanner.update(int(ts[t]), symbols, px[t]))
    return int(ts.shape[0])
