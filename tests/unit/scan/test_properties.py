"""Property tests (hypothesis) for the scan kernels."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dolphind.scan import kernels as K
from dolphind.scan.scanner import EigenScanner

from .conftest import usable_columns

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    n=st.integers(2, 7),
    seed=st.integers(0, 2**32 - 1),
    noise=st.floats(1e-3, 1.0),
    spread=st.floats(0.0, 3.0),
)
def test_certificate_is_sound(n: int, seed: int, noise: float, spread: float) -> None:
    """Whenever certify() issues a bound, lambda_max lies in [rho, rho + bound] and alpha >= lambda_2."""
    rng = np.random.default_rng(seed)
    ev = np.sort(rng.random(n) * spread)[::-1] + 1e-3
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    c = (q * ev) @ q.T
    v = q[:, 0] + noise * rng.standard_normal(n)
    v /= np.linalg.norm(v)
    y = c @ v
    rho = float(v @ y)
    res = float(np.linalg.norm(y - rho * v))
    alpha, bound = K.certify(rho, res, float(np.trace(c)), float(np.sum(c * c)), n)
    if math.isfinite(bound):
        assert rho - 1e-12 <= ev[0] <= rho + bound + 1e-12
        assert alpha >= ev[1] - 1e-12


@FAST
@given(
    data=arrays(np.float64, (40, 4), elements=st.floats(-0.05, 0.05, allow_nan=False, width=64)),
    holes=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 3)), max_size=6),
    flat=st.booleans(),
    mode=st.sampled_from([K.MODE_COV, K.MODE_GRAM]),
    window_krylov=st.sampled_from([None, True]),
)
def test_scanner_matches_dense_reference(
    data: np.ndarray, holes: list[tuple[int, int]], flat: bool, mode: int,
    window_krylov: bool | None,
) -> None:
    """Arbitrary returns with holes and a possibly flat symbol: certified value or NaN, never wrong
    (cov mode also with its Krylov steps forced onto the raw window)."""
    px = 10.0 * np.exp(np.cumsum(data, axis=0))
    if flat:
        px[:, 1] = 3.0
    for t, i in holes:
        px[t, i] = np.nan
    wins = (4, 7, 11, 16)
    sc = EigenScanner(windows=wins, modes=(mode,) * 4, window_krylov=window_krylov)
    syms = ("A", "B", "C", "D")
    with np.errstate(invalid="ignore"):
        r = np.log(px[1:] / px[:-1])
    for t in range(px.shape[0]):
        rec = sc.update(t, syms, px[t])
        for j, w in enumerate(wins):
            if t < w:
                assert math.isnan(rec.lambda_max[j])
                continue
            use = usable_columns(r[t - w : t])
            if use.sum() < 2:
                assert math.isnan(rec.lambda_max[j])
                continue
            ref = np.linalg.eigvalsh(np.corrcoef(r[t - w : t][:, use].T))[-1]
            assert abs(rec.lambda_max[j] - ref) <= 1e-9 * ref, (t, w)
        assert not (math.isfinite(rec.vel_div) and math.isnan(rec.velocity[0]))


@FAST
@given(
    steps=st.integers(1, 60),
    w=st.integers(3, 12),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-6, 1e-3, 1.0]),
)
def test_sliding_comoments_equal_recompute(steps: int, w: int, seed: int, scale: float) -> None:
    """The centred sliding update reproduces the two-pass co-moment matrix of the window."""
    rng = np.random.default_rng(seed)
    n = 4
    r = scale * rng.standard_normal((w + steps, n)) + scale * 5.0  # non-zero mean on purpose
    px = np.exp(np.vstack([np.zeros((1, n)), np.cumsum(r, axis=0)]))
    rr = np.log(px[1:] / px[:-1])
    sc = EigenScanner(windows=(w, w + 100, w + 200, w + 300), modes=(K.MODE_COV,) * 4)
    for t in range(px.shape[0]):
        sc.update(t, ("A", "B", "C", "D"), px[t])
    _, c = sc.correlation_matrix(0)
    ref = np.corrcoef(rr[-w:].T)
    assert np.max(np.abs(c - ref)) <= 1e-10
