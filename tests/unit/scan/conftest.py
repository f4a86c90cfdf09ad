"""Shared fixtures for the eigenscan tests: the real candle sets and a from-scratch reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.feather as pf
import pytest

from dolphind.scan.kernels import REL_STD_FLOOR
from dolphind.scan.scanner import warmup

from tests.data_paths import SET_1M, SET_5M  # noqa: F401 (re-exported to the scan tests)


def load_closes(folder: Path, tf: str) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Closes of every ``*-{tf}-futures.feather`` in ``folder`` on their common timestamps."""
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for f in sorted(folder.glob(f"*-{tf}-futures.feather")):
        t = pf.read_table(f, columns=["date", "close"])
        ts = t.column("date").cast("int64").to_numpy()
        series[f.name.split("_")[0] + "USDT"] = (ts, t.column("close").to_numpy())
    common = None
    for ts, _ in series.values():
        common = ts if common is None else np.intersect1d(common, ts)
    assert common is not None
    syms = tuple(sorted(series))
    px = np.empty((common.shape[0], len(syms)))
    for j, s in enumerate(syms):
        ts, c = series[s]
        px[:, j] = c[np.searchsorted(ts, common)]
    return common, syms, px


def usable_columns(x: np.ndarray) -> np.ndarray:
    """Columns with every return finite and not (numerically) constant: the documented membership."""
    fin = np.all(np.isfinite(x), axis=0)
    out = np.zeros(x.shape[1], dtype=bool)
    for j in np.flatnonzero(fin):
        col = x[:, j]
        out[j] = bool(np.any(col != col[0])) and col.std() > REL_STD_FLOOR * abs(col.mean())
    return out


def reference_lambdas(returns: np.ndarray, w: int, ends: np.ndarray) -> np.ndarray:
    """lambda_max of corrcoef(window) for windows ending (exclusive) at ``ends``, from scratch.

    Batched exactly like ``numpy.corrcoef`` (two-pass centred covariance, divide by the outer
    product of the standard deviations, clip to [-1, 1]) + ``numpy.linalg.eigvalsh``; the test
    also checks it against literal ``np.corrcoef`` on sampled bars. Requires full membership.
    """
    out = np.empty(ends.shape[0])
    view = np.lib.stride_tricks.sliding_window_view(returns, w, axis=0)  # (T-w+1, N, w)
    for lo in range(0, ends.shape[0], 2048):
        e = ends[lo : lo + 2048]
        x = view[e - w]  # (B, N, w)
        xc = x - x.mean(axis=2, keepdims=True)
        cov = xc @ xc.transpose(0, 2, 1)
        d = np.sqrt(np.einsum("bii->bi", cov))
        c = np.clip(cov / (d[:, :, None] * d[:, None, :]), -1.0, 1.0)
        out[lo : lo + 2048] = np.linalg.eigvalsh(c)[:, -1]
    return out


@pytest.fixture(scope="session", autouse=True)
def _compiled() -> None:
    warmup()
