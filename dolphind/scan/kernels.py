"""Numba kernels for the eigenscan: rolling co-moments and certified top eigenvalues.

Everything here is a pure function of arrays (no globals, no I/O); the state lives in arrays owned
by :class:`dolphind.scan.scanner.EigenScanner`. All kernels are compiled with ``cache=True``;
:func:`warmup` compiles them on tiny inputs before the daemon reports ready.

Numerical choices (why this is accurate to ~1e-11 relative, well inside the 1e-9 contract):

* **Returns** ``r = log(p_t / p_{t-1})``: one rounding in the division, then ``log`` (absolute error
  ~1 ulp of 1.0). A constant price gives exactly ``0.0``.
* **Two modes per window.** ``MODE_COV`` keeps the centred co-moment matrix ``S`` (N x N, upper
  triangle) of the window and slides it by one return in / one out in O(N^2). ``MODE_GRAM`` keeps
  no rolling state: it standardises the raw window ``Z`` (w x k, k members) and works on the
  w x w Gram matrix ``G = Z Z^T``, which has the same non-zero eigenvalues as the correlation matrix
  ``C = Z^T Z``. Gram costs ``w^2 k / 2`` per bar, cov ``~3 N^2`` plus ``N^2`` per power iteration;
  the scanner picks per window (see ``choose_mode``).
* **Sliding update (cov).** With ``a = x_new - m``, ``b = x_old - m`` (old mean ``m``) and
  ``d = a - b``: ``m' = m + d / w`` and ``S' = S + a a^T - b b^T - d d^T / w``. Every term is
  centred (no naive ``sum x x^T - w m m^T``), so there is no catastrophic cancellation between two
  large running sums. Each update adds a rounding error of a few ulps of ``|S_ii| + a_i^2 + b_i^2``;
  the kernel accumulates that a-priori bound per symbol (``eb``) and **re-anchors** a symbol's row
  from the raw window (two-pass, exact to ~w ulps) as soon as ``eb_i > eta * S_ii``. This is a
  worst-case (linear) bound, so in steady state a row is re-anchored every few thousand bars, and
  immediately when cancellation threatens (a symbol whose variance collapses after a spike leaves).
  Off-diagonal errors are bounded by ``sqrt(eb_i eb_j)`` (Cauchy-Schwarz on the same terms), so
  every correlation entry is within ``eta`` of the exact one.
* **Storage and passes (cov).** Only the upper triangle of ``S`` is maintained, and all four
  windows are advanced by one call (:func:`scan_bar`). At N ~ 500 a state is 2.3 MB and the cost
  is the number of half-matrix passes: one fused slide + first products, then one per further
  Krylov step. Extra vectors in a pass are nearly free (the loops are bound by load/store issue
  and memory traffic, so the fused passes take two rows at a time to share the column loads).
* **Block start (cov).** The slide changes ``S`` by the rank-3 term ``a a^T - b b^T - e e^T``
  only, so the image under the *new* matrix of last bar's certified vector ``z = D x`` is known
  before this bar's pass: ``S' z = S z + a (a.z) - b (b.z) - e (e.z)`` (``S z`` kept from last
  bar's fresh product). With ``u = D'^-1 z`` this gives ``C' u`` and the Ritz residual of ``u``
  before the pass, so the single fused pass forms the images of the block ``[u, q1]`` (``q1`` =
  that residual, orthonormalised), i.e. the Krylov space one step deeper than before; for short
  windows (``4 w <= k`` members) a third direction ``~ C' q1`` is formed from the raw window
  at ``2 w N`` flops and added to the block, which then spans the Krylov space up to ``C'^2 u``
  after one pass.
  Carried and raw-window products only *choose* directions: the Rayleigh-Ritz step and the
  certificate use the images computed by this bar's pass, so their rounding never enters a
  certificate. After a slow bar (re-anchor, join, leave), a membership change or a bar that was
  not certified, the carry is dropped and the start is the single vector as before.
* **Top eigenvalue.** Cov mode: Rayleigh-Ritz on the Krylov space grown from the previous bar's
  top eigenvector (Lanczos with an explicit, twice-orthogonalised basis and the stored images
  ``C q``, started from the block above when the carry is valid; for a new member the "market
  mode" value). Gram mode: warm-started power iteration.
  For the vector ``v`` returned (``|v| = 1``) with image ``y = C v`` computed explicitly, we have
  the Rayleigh quotient ``rho = v.y`` and residual ``res = |y - rho v|``. The kernel **certifies** the
  result a posteriori, without trusting convergence heuristics:

  - some eigenvalue lies in ``[rho - res, rho + res]``;
  - all other eigenvalues are bounded above by ``alpha``, derived from the exact trace ``T``
    (= number of members), the Frobenius norm ``F^2 = sum lambda^2`` (accumulated in the same
    pass) and the rank bound ``min(k, w - 1)`` (centred window) through Samuelson's inequality
    (max of M reals with given sum and sum of squares) and positive semi-definiteness;
  - if ``alpha < rho - res``, that eigenvalue is the largest one, and by the Kato-Temple
    inequality ``rho <= lambda_max <= rho + res^2 / (rho - alpha)``.

  We stop when that bound is below ``tol * rho`` (``tol = 1e-12``). When two top eigenvalues are
  close, ``alpha`` reaches ``rho`` and no certificate is possible; when the spectrum is flat or the
  iteration stalls (residual ratio ~ lambda_2 / lambda_1 near 1, or the predicted number of
  iterations exceeds the cap, or the certified relative gap is below ``MIN_REL_GAP``) the kernel
  returns ``STATUS_FALLBACK`` and the caller runs LAPACK
  (``numpy.linalg.eigh``) on the compact matrix. So a value is either certified or recomputed by a
  backward-stable dense solver: never returned silently wrong.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

MODE_COV = 0
MODE_GRAM = 1

STATUS_COLD = 0  # fewer than two usable symbols: no value
STATUS_OK = 1  # certified by the kernel
STATUS_FALLBACK = 2  # not certifiable: the caller must run the dense LAPACK solver

# Unit roundoff of float64.
_U = 2.0**-53
# A column whose standard deviation is below this fraction of its mean return is numerically
# constant: its deviations are at the rounding level of the mean, so its correlations would be
# rounding noise (condition number ~ |mean| / std). Such a column is excluded like a flat one.
# Centring costs ~ u |mean| / std of relative accuracy in every correlation (any method: numpy's
# corrcoef as well), so the floor must keep u / floor well below the 1e-9 contract: at 1e-9 a
# column of identical returns plus last-ulp noise (std / mean ~ 3e-9) gave 5e-9 disagreement with
# corrcoef (found by test_scanner_matches_dense_reference). 1e-5 bounds it by ~1e-11.
REL_STD_FLOOR = 1e-5
# Krylov (cov mode) can certify a top eigenvalue that is separated from the bound on the rest of
# the spectrum by far less than power iteration ever could (it converges on a few distinct
# eigenvalues exactly). Below this relative gap the top eigenvector is ill-conditioned (its
# sensitivity is ~ 1 / gap), the warm start carries no information and the value goes to LAPACK,
# as it did with power iteration (which stalls there).
MIN_REL_GAP = 1e-3
# Re-associating the inner reductions lets LLVM vectorise them; it changes rounding order only
# (vectorised partial sums are, if anything, more accurate). No 'nnan'/'ninf': NaN tests stay valid.
_FAST = {"reassoc", "contract"}


@njit(cache=True)
def ingest_bar(
    closes: np.ndarray,
    prev_close: np.ndarray,
    ring: np.ndarray,
    row: int,
    run: np.ndarray,
    same: np.ndarray,
) -> None:
    """Write the bar's log returns into ``ring[row]`` and advance the per-symbol run counters.

    ``run[i]``: consecutive valid returns ending now. ``same[i]``: length of the current run of
    bit-identical consecutive returns (a constant price gives a run of exact zeros). A return is
    valid only when both closes are finite and positive; a return across a gap is not formed.
    """
    n = closes.shape[0]
    for i in range(n):
        c = closes[i]
        p = prev_close[i]
        c_ok = math.isfinite(c) and c > 0.0
        if c_ok and math.isfinite(p):
            r = math.log(c / p)
            if run[i] > 0 and r == ring[row - 1 if row > 0 else ring.shape[0] - 1, i]:
                same[i] += 1
            else:
                same[i] = 1
            ring[row, i] = r
            run[i] += 1
        else:
            ring[row, i] = np.nan
            run[i] = 0
            same[i] = 0
        prev_close[i] = c if c_ok else np.nan


@njit(cache=True)
def certify(rho: float, res: float, trace: float, f2: float, rank: int) -> tuple[float, float]:
    """Return ``(alpha, bound)`` for a Rayleigh pair of a PSD matrix (see module docstring).

    ``alpha`` is an upper bound on every eigenvalue other than the one within ``res`` of ``rho``;
    ``bound`` bounds ``lambda_max - rho`` (``inf`` when ``alpha >= rho - res``: not certified).
    """
    lo = rho - res
    if lo <= 0.0:
        return np.inf, np.inf
    s_lo = trace - (rho + res)
    s_hi = trace - lo
    q_hi = f2 - lo * lo
    if q_hi < 0.0:
        q_hi = 0.0
    m = rank - 1  # eigenvalues other than the certified one that can be non-zero
    if m <= 0:
        alpha = 0.0
    elif m == 1:
        alpha = min(s_hi, math.sqrt(q_hi))
    else:
        # Samuelson: x_max <= (s + sqrt((m-1)(m q - s^2))) / m for m reals with sum s, squares q.
        disc = (m - 1) * (m * q_hi - s_lo * s_lo)
        sam = (s_lo + math.sqrt(disc if disc > 0.0 else 0.0)) / m
        alpha = min(sam, s_lo)
        r2 = math.sqrt(q_hi)
        if r2 >= s_lo:  # the other mass may sit in a single eigenvalue
            alpha = max(alpha, min(r2, s_hi))
    # Slack for rounding in trace/F^2 and for O(eps) eigenvalues beyond the rank bound.
    alpha += 1e-9 * trace
    if alpha < 0.0:
        alpha = 0.0
    if alpha >= lo:
        return alpha, np.inf
    return alpha, res * res / (rho - alpha)


@njit(cache=True)
def _decide(
    it: int, rho: float, res: float, res_prev: float, trace: float, f2: float, rank: int,
    tol: float, maxit: int,
) -> tuple[int, float]:
    """Return ``(decision, shift)``; decision 0: iterate again, 1: certified, 2: fallback.

    ``shift`` is the spectral shift for the next power step: half the certified upper bound on
    the rest of the spectrum, so the bulk [0, alpha] maps to [-alpha/2, alpha/2] and the
    convergence ratio drops from lambda_2/lambda_1 to about (alpha/2)/(lambda_1 - alpha/2).
    The shift never exceeds rho/2, so the top eigenvalue stays dominant in modulus.
    """
    alpha, bound = certify(rho, res, trace, f2, rank)
    if bound <= tol * rho:
        return 1, 0.0
    if it + 1 >= maxit:
        return 2, 0.0
    alpha0, _ = certify(rho, 0.0, trace, f2, rank)
    shift = 0.5 * alpha0 if alpha0 < rho else 0.0
    if it >= 2:
        if alpha0 >= rho:
            return 2, 0.0  # flat or (near-)degenerate top: no certificate can ever be issued
        if res_prev > 0.0 and res > 0.0:
            kappa = res / res_prev  # observed convergence ratio (~ lambda_2 / lambda_1)
            if kappa >= 0.95:
                return 2, 0.0  # stalled
            need = tol * rho * (rho - alpha0)  # res^2 must fall below this
            if need > 0.0 and kappa > 0.0:
                more = math.log(need / (res * res)) / (2.0 * math.log(kappa))
                if it + more > maxit:
                    return 2, 0.0
    return 0, shift


# ---------------------------------------------------------------------------------------------
# cov mode
# ---------------------------------------------------------------------------------------------
# Storage: only the upper triangle ``s[i, j], j >= i`` of the co-moment matrix is maintained (the
# lower triangle is scratch). The state does not fit in cache at N ~ 500 (2.3 MB per window), so
# every pass over it is bound by memory traffic: touching half the matrix halves the cost. The
# row loops below are streams over ``j > i`` with a dot product (``y_i += s_ij w_j``) and an axpy
# (``y_j += s_ij w_i``) in the same loop; both vectorise.


@njit(cache=True, fastmath=_FAST)
def _tri_fused(
    s: np.ndarray, a: np.ndarray, b: np.ndarray, e: np.ndarray, dd: np.ndarray, wv: np.ndarray,
    rows: np.ndarray, nrows: int, y: np.ndarray,
) -> float:
    """Slide the listed rows' strict upper triangle (S' = S + a a^T - b b^T - e e^T; diagonals
    are already updated) and, in the same pass, y = S' wv and ``||C'||_F^2 = sum S'_ij^2 dd_i dd_j``.
    One read and one write of the (half) matrix per bar."""
    n = s.shape[0]
    for j in range(n):
        y[j] = 0.0
    f2 = 0.0
    for p in range(nrows):
        i = rows[p]
        ai = a[i]
        bi = b[i]
        ei = e[i]
        wi = wv[i]
        sii = s[i, i]
        # slices starting at i + 1: loops from 0 let numba drop the negative-index wraparound,
        # which is what allows LLVM to vectorise them (with runtime alias checks)
        sr = s[i, i + 1 :]
        ar = a[i + 1 :]
        br = b[i + 1 :]
        er = e[i + 1 :]
        wr = wv[i + 1 :]
        yr = y[i + 1 :]
        dr = dd[i + 1 :]
        acc = 0.0
        frow = 0.0
        for j in range(sr.shape[0]):
            sij = sr[j] + ai * ar[j] - bi * br[j] - ei * er[j]
            sr[j] = sij
            acc += sij * wr[j]
            yr[j] += sij * wi
            frow += sij * sij * dr[j]
        y[i] += acc + sii * wi
        f2 += (2.0 * frow + sii * sii * dd[i]) * dd[i]
    return f2


@njit(cache=True, fastmath=_FAST)
def _fz3_seg(s: np.ndarray, i: int, j0: int, j1: int, a: np.ndarray, b: np.ndarray,
             e: np.ndarray, wv: np.ndarray, y: np.ndarray,
             dd: np.ndarray) -> tuple[float, float, float, float]:
    """Columns ``[j0, j1)`` of row ``i``: slide, then the three products (``wv[q]`` -> ``y[q]``)
    and the row's F^2 part."""
    ai = a[i]
    bi = b[i]
    ei = e[i]
    wi0 = wv[0, i]
    wi1 = wv[1, i]
    wi2 = wv[2, i]
    sr = s[i, j0:j1]
    ar = a[j0:j1]
    br = b[j0:j1]
    er = e[j0:j1]
    wr0 = wv[0, j0:j1]
    wr1 = wv[1, j0:j1]
    wr2 = wv[2, j0:j1]
    yr0 = y[0, j0:j1]
    yr1 = y[1, j0:j1]
    yr2 = y[2, j0:j1]
    dr = dd[j0:j1]
    c0 = 0.0
    c1 = 0.0
    c2 = 0.0
    frow = 0.0
    for j in range(sr.shape[0]):
        sij = sr[j] + ai * ar[j] - bi * br[j] - ei * er[j]
        sr[j] = sij
        c0 += sij * wr0[j]
        c1 += sij * wr1[j]
        c2 += sij * wr2[j]
        yr0[j] += sij * wi0
        yr1[j] += sij * wi1
        yr2[j] += sij * wi2
        frow += sij * sij * dr[j]
    return c0, c1, c2, frow


@njit(cache=True, fastmath=_FAST)
def _tri_fused3(
    s: np.ndarray, a: np.ndarray, b: np.ndarray, e: np.ndarray, dd: np.ndarray, wv: np.ndarray,
    rows: np.ndarray, nrows: int, y: np.ndarray,
) -> float:
    """:func:`_tri_fused` for a block of three vectors ``wv[0:3]`` (images into ``y[0:3]``):
    one pass slides the rows and forms the three products and ``||C'||_F^2``. Rows two at a
    time, as in :func:`_tri_fused2`."""
    n = s.shape[0]
    for q in range(3):
        for j in range(n):
            y[q, j] = 0.0
    f2 = 0.0
    p = 0
    while p + 2 <= nrows:
        i0 = rows[p]
        i1 = rows[p + 1]
        j0 = i1 + 1
        h0, h1, h2, g0 = _fz3_seg(s, i0, i0 + 1, j0, a, b, e, wv, y, dd)
        a0 = a[i0]
        b0 = b[i0]
        e0 = e[i0]
        a1 = a[i1]
        b1 = b[i1]
        e1 = e[i1]
        u00 = wv[0, i0]
        u01 = wv[0, i1]
        u10 = wv[1, i0]
        u11 = wv[1, i1]
        u20 = wv[2, i0]
        u21 = wv[2, i1]
        f0 = dd[i0]
        f1 = dd[i1]
        s0 = s[i0, j0:]
        s1 = s[i1, j0:]
        ar = a[j0:]
        br = b[j0:]
        er = e[j0:]
        wr0 = wv[0, j0:]
        wr1 = wv[1, j0:]
        wr2 = wv[2, j0:]
        yr0 = y[0, j0:]
        yr1 = y[1, j0:]
        yr2 = y[2, j0:]
        dr = dd[j0:]
        p00 = 0.0
        p01 = 0.0
        p10 = 0.0
        p11 = 0.0
        p20 = 0.0
        p21 = 0.0
        gg = 0.0
        for j in range(s0.shape[0]):
            aj = ar[j]
            bj = br[j]
            ej = er[j]
            x0 = s0[j] + a0 * aj - b0 * bj - e0 * ej
            x1 = s1[j] + a1 * aj - b1 * bj - e1 * ej
            s0[j] = x0
            s1[j] = x1
            w0 = wr0[j]
            w1 = wr1[j]
            w2 = wr2[j]
            p00 += x0 * w0
            p01 += x1 * w0
            p10 += x0 * w1
            p11 += x1 * w1
            p20 += x0 * w2
            p21 += x1 * w2
            yr0[j] += x0 * u00 + x1 * u01
            yr1[j] += x0 * u10 + x1 * u11
            yr2[j] += x0 * u20 + x1 * u21
            gg += (x0 * x0 * f0 + x1 * x1 * f1) * dr[j]
        d0 = s[i0, i0]
        d1 = s[i1, i1]
        y[0, i0] += p00 + h0 + d0 * u00
        y[0, i1] += p01 + d1 * u01
        y[1, i0] += p10 + h1 + d0 * u10
        y[1, i1] += p11 + d1 * u11
        y[2, i0] += p20 + h2 + d0 * u20
        y[2, i1] += p21 + d1 * u21
        f2 += 2.0 * (gg + g0 * f0) + d0 * d0 * f0 * f0 + d1 * d1 * f1 * f1
        p += 2
    while p < nrows:
        i = rows[p]
        h0, h1, h2, g = _fz3_seg(s, i, i + 1, n, a, b, e, wv, y, dd)
        sii = s[i, i]
        y[0, i] += h0 + sii * wv[0, i]
        y[1, i] += h1 + sii * wv[1, i]
        y[2, i] += h2 + sii * wv[2, i]
        f2 += (2.0 * g + sii * sii * dd[i]) * dd[i]
        p += 1
    return f2


@njit(cache=True, fastmath=_FAST)
def _window_product(
    ring: np.ndarray, t: int, w: int, mean: np.ndarray, d: np.ndarray, dd: np.ndarray,
    q: np.ndarray, pz: np.ndarray, g: np.ndarray,
) -> None:
    """``g ~= C q`` from the raw window (``C = D X_c^T X_c D``, ``X_c`` the window centred with
    the rolling means; members are the columns with ``dd > 0``). Costs ``2 w N`` flops instead of
    a pass over the N x N state; it only chooses a search direction, whose exact image the state
    pass then computes, so its rounding never enters a certificate."""
    cap, n = ring.shape
    mp = 0.0
    for i in range(n):
        pz[i] = d[i] * q[i] if dd[i] > 0.0 else 0.0
        g[i] = 0.0
        mp += mean[i] * pz[i]
    ssum = 0.0
    for k in range(w):
        xr = ring[(t - w + k) % cap]
        st = 0.0
        for i in range(n):
            xi = xr[i] if dd[i] > 0.0 else 0.0
            st += xi * pz[i]
        st -= mp
        ssum += st
        for i in range(n):
            xi = xr[i] if dd[i] > 0.0 else 0.0
            g[i] += xi * st
    for i in range(n):
        g[i] = d[i] * (g[i] - mean[i] * ssum) if dd[i] > 0.0 else 0.0


@njit(cache=True, fastmath=_FAST)
def _tri_slide(
    s: np.ndarray, a: np.ndarray, b: np.ndarray, e: np.ndarray, rows: np.ndarray, nrows: int
) -> None:
    n = s.shape[0]
    for p in range(nrows):
        i = rows[p]
        ai = a[i]
        bi = b[i]
        ei = e[i]
        sr = s[i, i + 1 :]
        ar = a[i + 1 :]
        br = b[i + 1 :]
        er = e[i + 1 :]
        for j in range(sr.shape[0]):
            sr[j] += ai * ar[j] - bi * br[j] - ei * er[j]


@njit(cache=True, fastmath=_FAST)
def _tri_matvec(
    s: np.ndarray, wv: np.ndarray, rows: np.ndarray, nrows: int, y: np.ndarray, dd: np.ndarray,
    want_f2: bool,
) -> float:
    """y = S wv over the listed rows (wv is zero outside them); optionally also ``||C||_F^2``."""
    n = s.shape[0]
    for j in range(n):
        y[j] = 0.0
    f2 = 0.0
    for p in range(nrows):
        i = rows[p]
        wi = wv[i]
        sii = s[i, i]
        sr = s[i, i + 1 :]
        wr = wv[i + 1 :]
        yr = y[i + 1 :]
        acc = 0.0
        if want_f2:
            dr = dd[i + 1 :]
            frow = 0.0
            for j in range(sr.shape[0]):
                sij = sr[j]
                acc += sij * wr[j]
                yr[j] += sij * wi
                frow += sij * sij * dr[j]
            f2 += (2.0 * frow + sii * sii * dd[i]) * dd[i]
        else:
            for j in range(sr.shape[0]):
                sij = sr[j]
                acc += sij * wr[j]
                yr[j] += sij * wi
        y[i] += acc + sii * wi
    return f2


@njit(cache=True, fastmath=_FAST)
def _fz_seg(s: np.ndarray, i: int, j0: int, j1: int, a: np.ndarray, b: np.ndarray,
            e: np.ndarray, wv: np.ndarray, wv2: np.ndarray, y: np.ndarray, y2: np.ndarray,
            dd: np.ndarray) -> tuple[float, float, float]:
    """Columns ``[j0, j1)`` of row ``i``: slide, then both products and the row's F^2 part."""
    ai = a[i]
    bi = b[i]
    ei = e[i]
    wi = wv[i]
    wi2 = wv2[i]
    sr = s[i, j0:j1]
    ar = a[j0:j1]
    br = b[j0:j1]
    er = e[j0:j1]
    wr = wv[j0:j1]
    wr2 = wv2[j0:j1]
    yr = y[j0:j1]
    yr2 = y2[j0:j1]
    dr = dd[j0:j1]
    acc = 0.0
    acc2 = 0.0
    frow = 0.0
    for j in range(sr.shape[0]):
        sij = sr[j] + ai * ar[j] - bi * br[j] - ei * er[j]
        sr[j] = sij
        acc += sij * wr[j]
        acc2 += sij * wr2[j]
        yr[j] += sij * wi
        yr2[j] += sij * wi2
        frow += sij * sij * dr[j]
    return acc, acc2, frow


@njit(cache=True, fastmath=_FAST)
def _tri_fused2(
    s: np.ndarray, a: np.ndarray, b: np.ndarray, e: np.ndarray, dd: np.ndarray, wv: np.ndarray,
    wv2: np.ndarray, rows: np.ndarray, nrows: int, y: np.ndarray, y2: np.ndarray,
) -> float:
    """:func:`_tri_fused` for a block of two vectors: slides the rows and, in the same single
    pass, forms ``y = S' wv``, ``y2 = S' wv2`` and ``||C'||_F^2``. Rows two at a time (shared
    loads and stores of the column vectors, as in :func:`_tri_matvec`); every entry is slid by
    the same expression as in :func:`_tri_slide`."""
    n = s.shape[0]
    for j in range(n):
        y[j] = 0.0
        y2[j] = 0.0
    f2 = 0.0
    p = 0
    while p + 2 <= nrows:
        i0 = rows[p]
        i1 = rows[p + 1]
        j0 = i1 + 1
        c0, k0, g0 = _fz_seg(s, i0, i0 + 1, j0, a, b, e, wv, wv2, y, y2, dd)
        a0 = a[i0]
        b0 = b[i0]
        e0 = e[i0]
        a1 = a[i1]
        b1 = b[i1]
        e1 = e[i1]
        w0 = wv[i0]
        w1 = wv[i1]
        v0 = wv2[i0]
        v1 = wv2[i1]
        f0 = dd[i0]
        f1 = dd[i1]
        s0 = s[i0, j0:]
        s1 = s[i1, j0:]
        ar = a[j0:]
        br = b[j0:]
        er = e[j0:]
        wr = wv[j0:]
        wr2 = wv2[j0:]
        yr = y[j0:]
        yr2 = y2[j0:]
        dr = dd[j0:]
        p0 = 0.0
        p1 = 0.0
        q0 = 0.0
        q1 = 0.0
        gg = 0.0
        for j in range(s0.shape[0]):
            aj = ar[j]
            bj = br[j]
            ej = er[j]
            x0 = s0[j] + a0 * aj - b0 * bj - e0 * ej
            x1 = s1[j] + a1 * aj - b1 * bj - e1 * ej
            s0[j] = x0
            s1[j] = x1
            wj = wr[j]
            uj = wr2[j]
            p0 += x0 * wj
            p1 += x1 * wj
            q0 += x0 * uj
            q1 += x1 * uj
            yr[j] += x0 * w0 + x1 * w1
            yr2[j] += x0 * v0 + x1 * v1
            gg += (x0 * x0 * f0 + x1 * x1 * f1) * dr[j]
        d0 = s[i0, i0]
        d1 = s[i1, i1]
        y[i0] += p0 + c0 + d0 * w0
        y[i1] += p1 + d1 * w1
        y2[i0] += q0 + k0 + d0 * v0
        y2[i1] += q1 + d1 * v1
        f2 += 2.0 * (gg + g0 * f0) + d0 * d0 * f0 * f0 + d1 * d1 * f1 * f1
        p += 2
    while p < nrows:
        i = rows[p]
        c, k, g = _fz_seg(s, i, i + 1, n, a, b, e, wv, wv2, y, y2, dd)
        sii = s[i, i]
        y[i] += c + sii * wv[i]
        y2[i] += k + sii * wv2[i]
        f2 += (2.0 * g + sii * sii * dd[i]) * dd[i]
        p += 1
    return f2


@njit(cache=True)
def _zero_row(s: np.ndarray, i: int) -> None:
    n = s.shape[0]
    for j in range(n):
        s[i, j] = 0.0
        s[j, i] = 0.0


@njit(cache=True)
def _anchor_rows(
    s: np.ndarray, mean: np.ndarray, eb: np.ndarray, em: np.ndarray, tracked: np.ndarray,
    flat: np.ndarray,
    targets: np.ndarray, ntarget: int, ring: np.ndarray, t: int, w: int, acc: np.ndarray,
) -> None:
    """Recompute the means and rows of ``targets`` from the raw window (two-pass, no drift).

    Rows of other tracked symbols keep their rolling means: the row sum ``sum_t (x_ti - m_i)``
    vanishes for the exactly re-computed ``m_i``, so the partner's mean enters only at second order.
    Both ``s[i, :]`` and ``s[:, i]`` are written, so the upper triangle is exact whichever of the
    pair is the target.
    """
    cap, n = ring.shape
    for q in range(ntarget):
        i = targets[q]
        tot = 0.0
        for k in range(w):
            tot += ring[(t - w + k) % cap, i]
        m = tot / w
        corr = 0.0
        dev = 0.0
        for k in range(w):
            e = ring[(t - w + k) % cap, i] - m
            corr += e
            dev += abs(e)
        mean[i] = m + corr / w
        em[i] = 2.0 * _U * (abs(mean[i]) + dev)
    for q in range(ntarget):
        i = targets[q]
        for j in range(n):
            acc[j] = 0.0
        if flat[i]:
            # constant window: the exact mean is the constant, the row is exactly zero
            mean[i] = ring[(t - 1) % cap, i]
            _zero_row(s, i)
            eb[i] = 0.0
            em[i] = 0.0
            continue
        mi = mean[i]
        for k in range(w):
            row = (t - w + k) % cap
            xi = ring[row, i] - mi
            for j in range(n):
                if tracked[j] and not flat[j]:
                    acc[j] += xi * (ring[row, j] - mean[j])
        for j in range(n):
            s[i, j] = acc[j]
            s[j, i] = acc[j]
        eb[i] = 2.0 * w * _U * abs(acc[i])


@njit(cache=True)
def _top_eigpair(h: np.ndarray, m: int, a: np.ndarray, vm: np.ndarray, svec: np.ndarray) -> float:
    """Largest eigenvalue of the small symmetric ``h[:m, :m]`` and its eigenvector (cyclic Jacobi).

    Only used to pick the Ritz vector: the value returned by the kernel is the Rayleigh quotient
    recomputed from that vector and its image, and its certificate uses the explicit residual, so
    the accuracy of this solver affects the speed of convergence, never the correctness.
    """
    for p in range(m):
        for q in range(m):
            a[p, q] = h[p, q]
            vm[p, q] = 1.0 if p == q else 0.0
    for _sweep in range(60):
        off = 0.0
        dg = 0.0
        for p in range(m):
            dg += a[p, p] * a[p, p]
            for q in range(p + 1, m):
                off += a[p, q] * a[p, q]
        if off <= 1e-34 * dg or off == 0.0:
            break
        for p in range(m):
            for q in range(p + 1, m):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                tau = (a[q, q] - a[p, p]) / (2.0 * apq)
                tt = (1.0 if tau >= 0.0 else -1.0) / (abs(tau) + math.sqrt(1.0 + tau * tau))
                c = 1.0 / math.sqrt(1.0 + tt * tt)
                sn = tt * c
                for r in range(m):
                    arp = a[r, p]
                    arq = a[r, q]
                    a[r, p] = c * arp - sn * arq
                    a[r, q] = sn * arp + c * arq
                for r in range(m):
                    apr = a[p, r]
                    aqr = a[q, r]
                    a[p, r] = c * apr - sn * aqr
                    a[q, r] = sn * apr + c * aqr
                for r in range(m):
                    vrp = vm[r, p]
                    vrq = vm[r, q]
                    vm[r, p] = c * vrp - sn * vrq
                    vm[r, q] = sn * vrp + c * vrq
    best = 0
    for p in range(1, m):
        if a[p, p] > a[best, best]:
            best = p
    for p in range(m):
        svec[p] = vm[p, best]
    return a[best, best]


@njit(cache=True)
def cov_step(
    w: int, t: int, ring: np.ndarray, run: np.ndarray, same: np.ndarray,
    s: np.ndarray, mean: np.ndarray, eb: np.ndarray, em: np.ndarray, tracked: np.ndarray,
    flat: np.ndarray, member: np.ndarray, v: np.ndarray,
    a: np.ndarray, b: np.ndarray, dl: np.ndarray, d: np.ndarray, dd: np.ndarray, wv: np.ndarray,
    y: np.ndarray, acc: np.ndarray, rows: np.ndarray, mrows: np.ndarray, targets: np.ndarray,
    qb: np.ndarray, yb: np.ndarray, h: np.ndarray, ha: np.ndarray, hv: np.ndarray,
    svec: np.ndarray, x: np.ndarray, cx: np.ndarray,
    eta: float, tol: float, maxit: int,
    zc: np.ndarray, szc: np.ndarray, okc: np.ndarray, blk: np.ndarray,
) -> tuple[float, int, int, int, int, int, int]:
    """One bar for a cov-mode window. ``t`` = number of returns stored (current is ``t - 1``).

    Returns ``(lambda, n_used, iterations, status, membership_changed, rows_anchored, passes)``
    (``passes``: passes over the state this bar, the slide included).
    A symbol is *tracked* once it has ``w`` consecutive valid returns (its whole window is
    valid); it is a *member* (enters C) when tracked, not flat (not all ``w`` returns identical)
    and with positive variance.

    Eigenvalue: Rayleigh-Ritz on the Krylov space ``span{v, Cv, C^2 v, ...}`` grown from the
    previous bar's eigenvector (Lanczos with an explicit orthonormal basis ``qb`` and images
    ``yb = C qb``; ``iterations`` = number of products with C). The first products are fused
    with the slide: one (single-vector start) or the two or three of the block start (module
    docstring), so after that pass ``iterations`` is 1, 2 or 3. The Ritz vector ``x`` and its
    image ``cx = yb s`` give ``rho = x.cx`` and the residual ``|cx - rho x|`` explicitly (no
    reliance on Lanczos orthogonality), which are certified exactly as before
    (:func:`certify`, :func:`_decide`).
    """
    cap, n = ring.shape
    cur = (t - 1) % cap
    old = (t - 1 - w) % cap
    inv_w = 1.0 / w
    sq_inv_w = math.sqrt(inv_w)
    slow = False
    nrows = 0
    ntarget = 0
    for i in range(n):
        now = run[i] >= w
        a[i] = 0.0
        b[i] = 0.0
        dl[i] = 0.0
        is_flat = same[i] >= w
        if tracked[i] and now:
            mi = mean[i]
            ai = ring[cur, i] - mi
            bi = ring[old, i] - mi
            di = ai - bi
            a[i] = ai
            b[i] = bi
            dl[i] = di * sq_inv_w  # e = d / sqrt(w): the d d^T / w term as the product e e^T
            m_new = mi + di * inv_w
            mean[i] = m_new
            # rounding of the mean update; a mean error e injects -(d e + e d) into S
            em[i] += _U * (abs(m_new) + abs(di * inv_w))
            sii = s[i, i] + ai * ai - bi * bi - dl[i] * dl[i]
            s[i, i] = sii  # the row passes slide only the strict upper triangle
            eb[i] += 4.0 * _U * (abs(sii) + ai * ai + bi * bi + di * di * inv_w) + 2.0 * abs(di) * em[i]
            rows[nrows] = i
            nrows += 1
            if is_flat and not flat[i]:
                flat[i] = True  # becomes constant: reset its row to the exact zeros
                targets[ntarget] = i
                ntarget += 1
                slow = True
            elif not is_flat:
                flat[i] = False
                if not (eb[i] + w * em[i] * em[i] <= eta * sii):  # also sii <= 0 and NaN
                    targets[ntarget] = i
                    ntarget += 1
                    slow = True
        elif tracked[i]:  # leaves: its window now contains an invalid return
            tracked[i] = False
            flat[i] = False
            _zero_row(s, i)
            mean[i] = 0.0
            eb[i] = 0.0
            em[i] = 0.0
            slow = True
        elif now:  # joins: w valid returns for the first time
            tracked[i] = True
            flat[i] = is_flat
            targets[ntarget] = i
            ntarget += 1
            slow = True
    if slow:
        _tri_slide(s, a, b, dl, rows, nrows)
        _anchor_rows(s, mean, eb, em, tracked, flat, targets, ntarget, ring, t, w, acc)
    # membership, scaling and warm start (only the new diagonal is needed)
    k = 0
    changed = 0
    vsum = 0.0
    for i in range(n):
        sii = s[i, i]
        floor = REL_STD_FLOOR * mean[i]
        is_mem = tracked[i] and (not flat[i]) and sii > w * floor * floor
        if is_mem != member[i]:
            changed = 1
        member[i] = is_mem
        if is_mem:
            d[i] = 1.0 / math.sqrt(sii)
            dd[i] = d[i] * d[i]
            vsum += abs(v[i])
            mrows[k] = i
            k += 1
        else:
            d[i] = 0.0
            dd[i] = 0.0
            v[i] = 0.0
            wv[i] = 0.0
    fill = vsum / k if vsum > 0.0 else 1.0
    vnorm2 = 0.0
    for p in range(k):
        i = mrows[p]
        if v[i] == 0.0:
            v[i] = fill  # new member: start it on the market mode
        vnorm2 += v[i] * v[i]
    if k > 0:
        inv = 1.0 / math.sqrt(vnorm2)
        for p in range(k):
            i = mrows[p]
            v[i] *= inv
            wv[i] = d[i] * v[i]
    carry = okc[0] == 1 and (not slow) and changed == 0 and k >= 2
    okc[0] = 0  # set again only when this bar certifies
    block = False
    if carry:
        # Last bar's certified vector in S-space, z = D x, and its image S z (computed from a
        # fresh product then). The slide changes S by the rank-3 term exactly, so the image of z
        # under the slid matrix is known *before* this bar's pass: S' z = S z + a (a.z) - b (b.z)
        # - e (e.z). In C' = D' S' D' that gives u = D'^-1 z / |.| and C' u, hence the Ritz
        # residual of u; the single pass below then forms the images of both u and that residual
        # (one Krylov step more per pass). These carried values only choose the directions: the
        # certificate below uses the images computed in this bar's pass, never carried ones.
        za = 0.0
        zb = 0.0
        ze = 0.0
        nu2 = 0.0
        for i in range(n):
            x[i] = 0.0
            cx[i] = 0.0
        for p in range(k):
            i = mrows[p]
            zi = zc[i]
            za += a[i] * zi
            zb += b[i] * zi
            ze += dl[i] * zi
            ui = zi / d[i]
            x[i] = ui
            nu2 += ui * ui
        if nu2 > 0.0 and math.isfinite(nu2):
            inv = 1.0 / math.sqrt(nu2)
            rho0 = 0.0
            for p in range(k):
                i = mrows[p]
                x[i] *= inv
                cx[i] = d[i] * (szc[i] + a[i] * za - b[i] * zb - dl[i] * ze) * inv
                rho0 += x[i] * cx[i]
            for i in range(n):
                acc[i] = cx[i] - rho0 * x[i]
            for _rep in range(2):
                cp = 0.0
                for i in range(n):
                    cp += x[i] * acc[i]
                for i in range(n):
                    acc[i] -= cp * x[i]
            nr = 0.0
            for i in range(n):
                nr += acc[i] * acc[i]
            nr = math.sqrt(nr)
            if nr > 1e-15 * abs(rho0) and math.isfinite(nr):
                block = True
                inv = 1.0 / nr
                for i in range(n):
                    v[i] = x[i]
                    wv[i] = d[i] * x[i]
                    qb[0, i] = x[i]
                    qb[1, i] = acc[i] * inv
                    x[i] = d[i] * qb[1, i]  # x, cx: scratch for the second vector and image
    third = False
    if block and 4 * w <= k and qb.shape[0] >= 3:
        # A third direction ~ C' q1 (so the block spans the Krylov space of u up to C'^2 u),
        # formed from the raw window at 2 w N flops: cheaper than a pass over the state when
        # the window is short. Only a direction: its exact image comes from the pass.
        _window_product(ring, t, w, mean, d, dd, qb[1], blk[6], blk[7])
        g = blk[7]
        g0 = 0.0
        for i in range(n):
            g0 += g[i] * g[i]
        for _rep in range(2):
            for p in range(2):
                cp = 0.0
                for i in range(n):
                    cp += qb[p, i] * g[i]
                for i in range(n):
                    g[i] -= cp * qb[p, i]
        ng = 0.0
        for i in range(n):
            ng += g[i] * g[i]
        if ng > 1e-24 * g0 and math.isfinite(ng):
            third = True
            inv = 1.0 / math.sqrt(ng)
            for i in range(n):
                qb[2, i] = g[i] * inv
                blk[0, i] = wv[i]
                blk[1, i] = x[i]
                blk[2, i] = d[i] * qb[2, i]
    if slow:
        if k < 2:
            return np.nan, k, 0, STATUS_COLD, changed, ntarget, 1
        f2 = _tri_matvec(s, wv, mrows, k, y, dd, True)
    elif third:
        f2 = _tri_fused3(s, a, b, dl, dd, blk[0:3], rows, nrows, blk[3:6])
        for i in range(n):
            y[i] = blk[3, i]
            cx[i] = blk[4, i]
    elif block:
        f2 = _tri_fused2(s, a, b, dl, dd, wv, x, rows, nrows, y, cx)
    else:
        # every continuing tracked row must slide, members or not (flat rows stay exact zeros)
        f2 = _tri_fused(s, a, b, dl, dd, wv, rows, nrows, y)
        if k < 2:
            return np.nan, k, 0, STATUS_COLD, changed, ntarget, 1
    trace = 0.0
    for p in range(k):
        i = mrows[p]
        trace += s[i, i] * dd[i]
    rank = k if k < w - 1 else w - 1
    # Krylov basis in full length n (zero outside the members): qb[0] = v, yb[0] = C v
    # (block start: qb[1] = the carried residual direction, yb[1] its image from the same pass)
    m = 1
    for i in range(n):
        qb[0, i] = v[i]
        yb[0, i] = d[i] * y[i]
    if block:
        m = 2
        for i in range(n):
            yb[1, i] = d[i] * cx[i]
    if third:
        m = 3
        for i in range(n):
            yb[2, i] = d[i] * blk[5, i]
    res_prev = 0.0
    status = STATUS_FALLBACK
    rho = np.nan
    hfill = 0
    m0 = m
    while True:
        for c in range(hfill, m):
            for p in range(c + 1):
                h1 = 0.0
                h2 = 0.0
                for i in range(n):
                    h1 += qb[p, i] * yb[c, i]
                    h2 += qb[c, i] * yb[p, i]
                h[p, c] = 0.5 * (h1 + h2)
                h[c, p] = h[p, c]
        hfill = m
        _top_eigpair(h, m, ha, hv, svec)
        xx = 0.0
        for i in range(n):
            xi = 0.0
            ci = 0.0
            for p in range(m):
                xi += svec[p] * qb[p, i]
                ci += svec[p] * yb[p, i]
            x[i] = xi
            cx[i] = ci
            xx += xi * xi
        if not xx > 0.0:
            status = STATUS_FALLBACK
            break
        inv = 1.0 / math.sqrt(xx)
        rho = 0.0
        for i in range(n):
            x[i] *= inv
            cx[i] *= inv
            rho += x[i] * cx[i]
        res2 = 0.0
        for i in range(n):
            r = cx[i] - rho * x[i]
            res2 += r * r
        res = math.sqrt(res2)
        dec, _shift = _decide(m - 1, rho, res, res_prev, trace, f2, rank, tol, maxit)
        if dec == 1 or m >= 3:
            alpha0, _ = certify(rho, 0.0, trace, f2, rank)
            if rho - alpha0 < MIN_REL_GAP * rho:
                dec = 2  # (near-)degenerate top: refuse the certificate, LAPACK decides
        if dec == 1:
            status = STATUS_OK
            for i in range(n):
                v[i] = x[i]
                zc[i] = d[i] * x[i]
                szc[i] = cx[i] / d[i] if d[i] != 0.0 else 0.0
            okc[0] = 1
            break
        if dec == 2 or m >= qb.shape[0]:
            status = STATUS_FALLBACK
            break
        res_prev = res
        # next basis vector: the Ritz residual, orthogonalised twice against the basis (CGS2)
        for i in range(n):
            acc[i] = cx[i] - rho * x[i]
        for _rep in range(2):
            for p in range(m):
                cp = 0.0
                for i in range(n):
                    cp += qb[p, i] * acc[i]
                for i in range(n):
                    acc[i] -= cp * qb[p, i]
        nr = 0.0
        for i in range(n):
            nr += acc[i] * acc[i]
        nr = math.sqrt(nr)
        if not nr > 1e-3 * res:  # the Krylov space is numerically invariant but uncertified
            status = STATUS_FALLBACK
            break
        inv = 1.0 / nr
        for i in range(n):
            qb[m, i] = acc[i] * inv
            wv[i] = d[i] * qb[m, i]
        _tri_matvec(s, wv, mrows, k, y, dd, False)
        for i in range(n):
            yb[m, i] = d[i] * y[i]
        m += 1
    return rho, k, m, status, changed, ntarget, (2 if slow else 1) + m - m0


@njit(cache=True)
def cov_corr_compact(s: np.ndarray, d: np.ndarray, member: np.ndarray, out: np.ndarray) -> int:
    """Fill ``out[:k, :k]`` with the members' correlation matrix (for the LAPACK fallback).

    ``d`` is scratch: the scalings ``1 / sqrt(S_ii)`` are recomputed from ``s`` (the same
    expression as in :func:`cov_step`, so bitwise the same values)."""
    n = s.shape[0]
    for i in range(n):
        d[i] = 1.0 / math.sqrt(s[i, i]) if member[i] else 0.0
    k = 0
    for i in range(n):
        if member[i]:
            q = k
            for j in range(i, n):
                if member[j]:
                    c = s[i, j] * d[i] * d[j]
                    out[k, q] = c
                    out[q, k] = c
                    q += 1
            k += 1
    return k

# ---------------------------------------------------------------------------------------------
# Gram mode
# ---------------------------------------------------------------------------------------------


@njit(cache=True, fastmath=_FAST)
def _gram(z: np.ndarray, w: int, k: int, g: np.ndarray) -> None:
    for p in range(w):
        for q in range(p, w):
            acc = 0.0
            for j in range(k):
                acc += z[p, j] * z[q, j]
            g[p, q] = acc
            g[q, p] = acc


@njit(cache=True, fastmath=_FAST)
def _dense_matvec(g: np.ndarray, w: int, u: np.ndarray, y: np.ndarray) -> None:
    for p in range(w):
        acc = 0.0
        for q in range(w):
            acc += g[p, q] * u[q]
        y[p] = acc


@njit(cache=True)
def _col_stats(ring: np.ndarray, t: int, w: int, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray) -> None:
    """Per column of the window (the last ``w`` rows of the ring): ``c1`` = mean,
    ``c2`` = sum of deviations from it, ``c3`` = sum of squared deviations (two-pass)."""
    cap, n = ring.shape
    for i in range(n):
        c1[i] = 0.0
        c2[i] = 0.0
        c3[i] = 0.0
    for r in range(w):
        xr = ring[(t - w + r) % cap]
        for i in range(n):
            c1[i] += xr[i]
    for i in range(n):
        c1[i] = c1[i] / w
    for r in range(w):
        xr = ring[(t - w + r) % cap]
        for i in range(n):
            e = xr[i] - c1[i]
            c2[i] += e
            c3[i] += e * e


@njit(cache=True)
def gram_step(
    w: int, t: int, ring: np.ndarray, run: np.ndarray, same: np.ndarray,
    member: np.ndarray, v: np.ndarray, idx: np.ndarray, mean: np.ndarray, d: np.ndarray,
    z: np.ndarray, g: np.ndarray, u: np.ndarray, y: np.ndarray,
    tol: float, maxit: int, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray,
) -> tuple[float, int, int, int, int, int, int]:
    """One bar for a Gram-mode window: rebuilt from the raw window each bar, so nothing drifts.

    Same membership rule and return tuple as :func:`cov_step` (``rows_anchored`` is 0,
    ``passes`` = products with the Gram matrix).
    ``idx[:k]`` receives the member indices and ``z[:w, :k]`` the standardised window.
    ``c1``, ``c2``, ``c3`` are length-N scratch (per-column sums, accumulated row by row so the
    ring is read contiguously; per column the summation order is the same as column by column).
    """
    cap, n = ring.shape
    _col_stats(ring, t, w, c1, c2, c3)
    k = 0
    changed = 0
    for i in range(n):
        is_mem = False
        if run[i] >= w and same[i] < w:
            m = c1[i]
            corr = c2[i]
            ss = c3[i]
            m += corr / w
            ss -= corr * corr / w  # two-pass with correction (Bjorck)
            floor = REL_STD_FLOOR * m
            if ss > w * floor * floor and ss > 0.0:
                is_mem = True
                idx[k] = i
                mean[k] = m
                d[k] = 1.0 / math.sqrt(ss)
                k += 1
        if is_mem != member[i]:
            changed = 1
        member[i] = is_mem
        if not is_mem:
            v[i] = 0.0
    if k < 2:
        return np.nan, k, 0, STATUS_COLD, changed, 0, 0
    for r in range(w):
        row = (t - w + r) % cap
        for q in range(k):
            z[r, q] = (ring[row, idx[q]] - mean[q]) * d[q]
    _gram(z, w, k, g)
    trace = 0.0
    f2 = 0.0
    for p in range(w):
        trace += g[p, p]
        for q in range(w):
            f2 += g[p, q] * g[p, q]
    # warm start u0 = Z v_prev: half a power step of C from the previous top eigenvector
    vs = 0.0
    for q in range(k):
        vs += abs(v[idx[q]])
    fill = vs / k if vs > 0.0 else 1.0
    for r in range(w):
        acc = 0.0
        for q in range(k):
            vi = v[idx[q]]
            acc += z[r, q] * (vi if vi != 0.0 else fill)
        u[r] = acc
    nu = 0.0
    for r in range(w):
        nu += u[r] * u[r]
    if not nu > 0.0:
        for r in range(w):
            u[r] = 1.0
        nu = float(w)
    inv = 1.0 / math.sqrt(nu)
    for r in range(w):
        u[r] *= inv
    rank = k if k < w - 1 else w - 1
    _dense_matvec(g, w, u, y)
    res_prev = 0.0
    status = STATUS_FALLBACK
    rho = np.nan
    it = 0
    while True:
        rho = 0.0
        for r in range(w):
            rho += u[r] * y[r]
        res2 = 0.0
        ny2 = 0.0
        for r in range(w):
            e = y[r] - rho * u[r]
            res2 += e * e
            ny2 += y[r] * y[r]
        res = math.sqrt(res2)
        dec, shift = _decide(it, rho, res, res_prev, trace, f2, rank, tol, maxit)
        it += 1
        if dec == 1:
            status = STATUS_OK
            break
        if dec == 2 or ny2 <= 0.0:
            status = STATUS_FALLBACK
            break
        res_prev = res
        ny2 = 0.0
        for r in range(w):
            y[r] -= shift * u[r]
            ny2 += y[r] * y[r]
        inv = 1.0 / math.sqrt(ny2)
        for r in range(w):
            u[r] = y[r] * inv
        _dense_matvec(g, w, u, y)
    if status == STATUS_OK:
        gram_set_vector(z, w, k, idx, u, v)
    return rho, k, it, status, changed, 0, it


@njit(cache=True)
def gram_set_vector(
    z: np.ndarray, w: int, k: int, idx: np.ndarray, u: np.ndarray, v: np.ndarray
) -> None:
    """v = Z^T u normalised (the N-dim top eigenvector of C), scattered to universe indices."""
    nrm = 0.0
    for q in range(k):
        acc = 0.0
        for r in range(w):
            acc += z[r, q] * u[r]
        v[idx[q]] = acc
        nrm += acc * acc
    if nrm > 0.0:
        inv = 1.0 / math.sqrt(nrm)
        for q in range(k):
            v[idx[q]] *= inv


@njit(cache=True)
def scan_bar(
    closes: np.ndarray, prev_close: np.ndarray, ring: np.ndarray, t: int, run: np.ndarray,
    same: np.ndarray, windows: np.ndarray, modes: np.ndarray,
    s3: np.ndarray, mean2: np.ndarray, eb2: np.ndarray, em2: np.ndarray, tracked2: np.ndarray,
    flat2: np.ndarray, member2: np.ndarray, v2: np.ndarray,
    idx2: np.ndarray, gmean2: np.ndarray, z3: np.ndarray, g3: np.ndarray, u2: np.ndarray,
    uy2: np.ndarray,
    a: np.ndarray, b: np.ndarray, dl: np.ndarray, d: np.ndarray, dd: np.ndarray, wv: np.ndarray,
    y: np.ndarray, acc: np.ndarray, rows: np.ndarray, mrows: np.ndarray, targets: np.ndarray,
    qb: np.ndarray, yb: np.ndarray, h: np.ndarray, ha: np.ndarray, hv: np.ndarray,
    svec: np.ndarray, x: np.ndarray, cx: np.ndarray,
    eta: float, tol: float, maxit: int, lam_out: np.ndarray, int_out: np.ndarray,
    zc2: np.ndarray, szc2: np.ndarray, okc2: np.ndarray, blk: np.ndarray,
) -> int:
    """One bar for all windows in one call: ingest the closes as return number ``t`` and run
    :func:`cov_step` / :func:`gram_step` per window (state of window ``j`` in slice ``[j]`` of
    the stacked arrays). Writes ``lam_out[j]`` and ``int_out[j] = (n_used, iterations, status,
    membership_changed, rows_anchored, passes)``; returns the number of symbols used by at least one
    warm window. A window with ``STATUS_FALLBACK`` still needs the caller's LAPACK solve."""
    cap, n = ring.shape
    ingest_bar(closes, prev_close, ring, t % cap, run, same)
    t += 1
    for j in range(windows.shape[0]):
        w = windows[j]
        if modes[j] == MODE_COV:
            out = cov_step(
                w, t, ring, run, same, s3[j], mean2[j], eb2[j], em2[j], tracked2[j], flat2[j],
                member2[j], v2[j], a, b, dl, d, dd, wv, y, acc, rows, mrows, targets,
                qb, yb, h, ha, hv, svec, x, cx, eta, tol, maxit, zc2[j], szc2[j], okc2[j : j + 1], blk,
            )
        else:
            out = gram_step(
                w, t, ring, run, same, member2[j], v2[j], idx2[j], gmean2[j], d, z3[j], g3[j],
                u2[j], uy2[j], tol, maxit, a, b, acc,
            )
        lam_out[j] = out[0]
        int_out[j, 0] = out[1]
        int_out[j, 1] = out[2]
        int_out[j, 2] = out[3]
        int_out[j, 3] = out[4]
        int_out[j, 4] = out[5]
        int_out[j, 5] = out[6]
    used = 0
    for i in range(n):
        for j in range(windows.shape[0]):
            if int_out[j, 2] != STATUS_COLD and member2[j, i]:
                used += 1
                break
    return used


def warmup() -> None:
    """Compile (or load from the numba cache) every kernel on tiny inputs, both modes and the
    fallback path, so the first live bar pays no compilation. Call before reporting ready."""
    from dolphind.scan.scanner import EigenScanner  # local import: scanner imports this module

    rng = np.random.default_rng(0)
    px = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((12, 4)), axis=0))
    px[:, 3] = 1.0  # a constant price: exercises the flat-symbol path
    px[7, 2] = np.nan  # an absence: exercises leave/join
    syms = ("A", "B", "C", "D")
    from dolphind.events import frozen_array

    for modes in ((MODE_COV,) * 4, (MODE_GRAM,) * 4):
        for maxit in (40, 1):  # maxit=1 forces the fallback path
            # Bars carry read-only arrays, which numba compiles as a separate signature.
            for readonly in (False, True):
                sc = EigenScanner(windows=(3, 4, 5, 6), modes=modes, maxit=maxit)
                for t in range(px.shape[0]):
                    sc.update(t, syms, frozen_array(px[t]) if readonly else px[t].copy())
