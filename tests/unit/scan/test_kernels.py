"""The cov-mode pass kernels and the raw-window product against dense numpy, on states whose
tracked rows are any subset (the four-row grouping must handle gaps, short tails and every
remainder), and the rank-2 slide against the rank-3 centred update it replaces."""

from __future__ import annotations

import numpy as np
import pytest

from dolphind.scan import kernels as K


def _case(n: int, rows: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    on = np.zeros(n, bool)
    on[rows] = True
    x = rng.standard_normal((n + 3, n))
    s_full = x.T @ x  # a PSD co-moment matrix
    s = np.where(np.outer(on, on), np.triu(s_full), 0.0)
    s += np.tril(rng.standard_normal((n, n)), -1)  # the lower triangle is scratch: must be ignored
    vec = {k: np.where(on, rng.standard_normal(n), 0.0) for k in ("a", "b", "w", "w2")}
    vec["dd"] = np.where(on, rng.random(n) + 0.1, 0.0)
    inv_w = 1.0 / 37
    d = vec["a"] - vec["b"]
    vec["ap"] = vec["a"] - d * inv_w
    vec["bp"] = vec["b"] - d * inv_w
    vec["e"] = d * np.sqrt(inv_w)
    vec["s"] = s
    return vec


def _slid_dense(c: dict[str, np.ndarray]) -> np.ndarray:
    up = np.triu(c["s"], 1) + np.triu(np.outer(c["a"], c["a"]) - np.outer(c["b"], c["b"])
                                      - np.outer(c["e"], c["e"]), 1)
    up += np.diag(np.diag(c["s"]))
    return up + np.triu(up, 1).T


ROWS = [
    pytest.param(lambda n, rng: np.arange(n), id="all"),
    pytest.param(lambda n, rng: np.arange(n - 1), id="all-but-last"),
    pytest.param(lambda n, rng: np.sort(rng.choice(n, n // 2 + 3, replace=False)), id="gaps"),
    pytest.param(lambda n, rng: np.sort(rng.choice(n, 3, replace=False)), id="three"),
    pytest.param(lambda n, rng: np.array([0, n - 1]), id="two-far"),
]


@pytest.mark.parametrize("pick", ROWS)
@pytest.mark.parametrize("n", [9, 37, 64])
def test_passes_match_dense(pick, n: int) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(n)
    rows = pick(n, rng).astype(np.int64)
    c = _case(n, rows, seed=n + len(rows))
    full = _slid_dense(c)
    on = np.zeros(n, bool)
    on[rows] = True
    f2_ref = float(np.sum(full**2 * np.outer(c["dd"], c["dd"])))
    scale = np.abs(full).max() * (1 + np.abs(c["w"]).sum())

    s1 = c["s"].copy()
    y = np.zeros(n)
    f2 = K._pass1(s1, c["a"], c["ap"], c["b"], c["bp"], c["dd"], c["w"], rows, len(rows), y)
    assert np.allclose(np.triu(s1), np.triu(full), rtol=0, atol=1e-12 * np.abs(full).max())
    assert np.allclose(np.tril(s1, -1), np.tril(c["s"], -1), rtol=0, atol=0)  # scratch untouched
    assert np.max(np.abs(y - full @ c["w"])) <= 1e-13 * scale
    assert abs(f2 - f2_ref) <= 1e-13 * f2_ref

    s2 = c["s"].copy()
    y1, y2 = np.zeros(n), np.zeros(n)
    f2b = K._pass2(s2, c["a"], c["ap"], c["b"], c["bp"], c["dd"], c["w"], c["w2"], rows, len(rows), y1, y2)
    assert np.array_equal(s1, s2)  # the same slide expression, entry by entry
    assert np.max(np.abs(y1 - full @ c["w"])) <= 1e-13 * scale
    assert np.max(np.abs(y2 - full @ c["w2"])) <= 1e-13 * scale * (1 + np.abs(c["w2"]).sum())
    assert abs(f2b - f2_ref) <= 1e-13 * f2_ref

    s3 = c["s"].copy()
    K._slide(s3, c["a"], c["ap"], c["b"], c["bp"], rows, len(rows))
    assert np.array_equal(np.triu(s3, 1), np.triu(s1, 1))

    ym = np.zeros(n)
    K._mv(s1, c["w"], rows, len(rows), ym)
    assert np.max(np.abs(ym - full @ c["w"])) <= 1e-13 * scale
    # with a = b = 0 the sliding pass is a product with F^2 that leaves the state as it is
    z = np.zeros(n)
    s4 = s1.copy()
    f2c = K._pass1(s4, z, z, z, z, c["dd"], c["w"], rows, len(rows), y)
    assert np.array_equal(s4, s1) and abs(f2c - f2_ref) <= 1e-13 * f2_ref


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("w", [5, 6, 40])
def test_window_product_matches_dense(w: int, masked: bool) -> None:
    rng = np.random.default_rng(w)
    cap, n, t = 50, 30, 77
    ring = 1e-3 * rng.standard_normal((cap, n)) + 2e-4
    mem = rng.random(n) < 0.7
    if masked:
        ring[(t - 2) % cap, ~mem] = np.nan  # non-members may hold NaN: must not leak
    rows = [(t - w + k) % cap for k in range(w)]
    x = ring[rows][:, mem]
    mean = np.zeros(n)
    mean[mem] = x.mean(axis=0) + 1e-9  # rolling means are close to, not equal to, the exact ones
    d = np.zeros(n)
    d[mem] = 1.0 / np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=0))
    dd = d * d
    q = rng.standard_normal(n)
    pz, g = np.zeros(n), np.zeros(n)
    K._wprod(ring, t, w, mean, d, dd, q, masked, pz, g)
    xc = x - mean[mem]
    ref = np.zeros(n)
    ref[mem] = d[mem] * (xc.T @ (xc @ (d[mem] * q[mem])))
    assert np.all(np.isfinite(g)) and np.all(g[~mem] == 0.0)
    assert np.max(np.abs(g - ref)) <= 1e-12 * np.abs(ref).max()
