"""Every bar, every window of the real candle sets against a from-scratch eigvalsh(corrcoef)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dolphind.events import WINDOWS
from dolphind.scan.scanner import EigenScanner

from .conftest import SET_1M, SET_5M, load_closes, reference_lambdas, usable_columns

CASES = [pytest.param(SET_1M, "1m", 14, id="1m-14sym"), pytest.param(SET_5M, "5m", 40, id="5m-40sym")]


@pytest.mark.parametrize("window_krylov", [None, True], ids=["default", "window-krylov"])
@pytest.mark.parametrize(("folder", "tf", "n_sym"), CASES)
def test_every_bar_every_window_matches_eigvalsh(  # type: ignore[no-untyped-def]
    folder, tf, n_sym, window_krylov
) -> None:
    """Also with the Krylov steps forced onto the raw window for every window (on 14 and 40
    symbols the default takes them from the state: the window path needs 4 w <= members)."""
    ts, syms, px = load_closes(folder, tf)
    assert len(syms) == n_sym and ts.shape[0] > 1000
    sc = EigenScanner(window_krylov=window_krylov)
    recs = [sc.update(int(ts[t]), syms, px[t]) for t in range(ts.shape[0])]
    r = np.log(px[1:] / px[:-1])
    # the data has full membership in every window (no flat run as long as a window)
    lam = np.array([rec.lambda_max for rec in recs])
    a_ref = np.full((len(recs), 4), np.nan)
    for j, w in enumerate(WINDOWS):
        ends = np.arange(w, r.shape[0] + 1)  # returns r[e-w:e] are the window of record e
        assert all(usable_columns(r[e - w : e]).all() for e in ends[:: max(1, len(ends) // 50)])
        ref = reference_lambdas(r, w, ends)
        got = lam[ends, j]
        rel = np.abs(got - ref) / ref
        assert np.all(np.isfinite(got)), f"w{w}: NaN lambda on a warm bar"
        assert rel.max() <= 1e-9, f"w{w}: max rel err {rel.max():.3e} at bar {ends[rel.argmax()]}"
        assert np.all(np.isnan(lam[: w, j])), f"w{w}: cold bars must be NaN"
        a_ref[ends, j] = ref / len(syms)
        # the batched reference is the same thing as literal np.corrcoef
        for e in ends[:: max(1, len(ends) // 25)]:
            lit = np.linalg.eigvalsh(np.corrcoef(r[e - w : e].T))[-1]
            assert abs(lit - ref[e - w]) <= 1e-12 * lit
    vel_ref = np.diff(a_ref, axis=0, prepend=np.nan)
    vd_ref = vel_ref[:, 0] - vel_ref[:, 3]
    vd = np.array([rec.vel_div for rec in recs])
    warm = np.isfinite(vd_ref)
    assert np.array_equal(np.isfinite(vd), warm)
    assert np.max(np.abs(vd[warm] - vd_ref[warm])) <= 1e-9
    assert warm.sum() == r.shape[0] - WINDOWS[3]
    inst = np.array([rec.instability for rec in recs])
    comp = np.array([rec.instability_composite for rec in recs])
    assert np.allclose(comp[warm], inst[warm].mean(axis=1), rtol=0, atol=1e-15)
    assert all(rec.n_symbols == len(syms) for rec in recs[WINDOWS[0] + 1 :])
    assert all(math.isnan(rec.regime_signal) for rec in recs[: WINDOWS[3]])
    assert sc.counters.fallbacks_total == 0  # a strong market mode: always certified
