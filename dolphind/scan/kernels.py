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
  ``C = Z^T Z``. Gram costs ``w^2 k / 2`` per bar, cov ``~3 N^2`` (one fused pass over the
  half matrix) plus ``N^2`` per further Krylov step on the state; the scanner picks per window
  (see ``choose_mode``).
* **Sliding update (cov).** With ``a = x_new - m``, ``b = x_old - m`` (old mean ``m``) and
  ``d = a - b``: ``m' = m + d / w`` and ``S' = S + a a^T - b b^T - d d^T / w``. Every term is
  centred (no naive ``sum x x^T - w m m^T``), so there is no catastrophic cancellation between two
  large running sums. The kernels apply it in the equivalent rank-2 form
  ``S' = S + a ap^T - b bp^T`` with ``ap = x_new - m' = a - d / w`` and ``bp = x_old - m' =
  b - d / w`` (2 FMAs an entry instead of 3); only the upper triangle is stored, so every entry
  is slid once by one expression and the stored matrix stays symmetric. One update of entry
  ``(i, j)`` errs by at most ``2u |S_ij| + 7u (|a_i| |a_j| + |b_i| |b_j| + (|a_i| + |b_i|)
  |d_j| / w)`` (two products and two sums in any order, plus the rounding of ``ap, bp``, with
  ``|ap_j| <= |a_j| + |d_j| / w``); with ``|S_ij| <= sqrt(S_ii S_jj)`` and Cauchy-Schwarz this is
  at most ``sqrt(inc_i inc_j)`` for the per-symbol increment ``inc_i = 4u |S_ii| + 7u ((1 + 1/w)
  (a_i^2 + b_i^2) + 2 d_i^2 / w) + 2 |d_i| em_i`` (``em``: the accumulated error of the rolling
  mean; its term is the one of the rank-3 form). The kernel accumulates ``eb_i = sum inc_i`` and
  **re-anchors** a symbol's row from the raw window (two-pass, exact to ~w ulps) as soon as
  ``eb_i > eta * S_ii``. This is a worst-case (linear) bound, so in steady state a row is
  re-anchored every few thousand bars, and immediately when cancellation threatens (a symbol
  whose variance collapses after a spike leaves). Off-diagonal errors are bounded by
  ``sqrt(eb_i eb_j)`` (Cauchy-Schwarz over the bars), so every correlation entry is within
  ``eta`` of the exact one.
* **Storage and passes (cov).** Only the upper triangle of ``S`` is maintained, and all four
  windows are advanced by one call (:func:`scan_bar`). At N ~ 500 a state is 2.3 MB (1.2 MB
  touched per pass; the four states sit in L3). Measured on the target machine the passes are
  bound by floating-point issue, not by memory traffic: a read-only sweep of a half state costs
  well under half of a fused pass. So the cost of a pass is its work per entry: 2 FMAs for the
  slide, 2 for ``F^2``, 2 per vector whose image it forms; the kernels take rows four at a time
  so the column vectors are loaded and stored once for four rows. Per bar and window there is
  one fused pass (slide + ``F^2`` + the first images), then one read-only pass per further
  Krylov step on the state.
* **Block start (long windows, cov).** The slide changes ``S`` by the rank-2 term
  ``a ap^T - b bp^T`` only, so the image under the *new* matrix of last bar's certified vector
  ``z = D x`` is known before this bar's pass: ``S' z = S z + a (ap.z) - b (bp.z)`` (``S z``
  kept from last bar's fresh product). With ``u = D'^-1 z`` this gives ``C' u`` and the Ritz
  residual of ``u`` before the pass, so the single fused pass forms the images of the block
  ``[u, q1]`` (``q1`` = that residual, orthonormalised), i.e. the Krylov space one step deeper
  than before. After a slow bar (re-anchor, join, leave), a membership change or a bar that was
  not certified, the carry is dropped and the start is the single vector.
* **Window Krylov (short windows, cov).** A product ``C q = D X_c^T (X_c D q)`` from the raw
  window (``X_c``: w x N, centred with the rolling means) costs ``2 w N`` FMAs against ``N^2``
  for one more vector in a pass over the state. When ``WK_FACTOR * w <= k`` (k members) the
  Krylov steps are therefore taken on the raw window (:func:`_window_krylov`, started from the
  carried ``u, q1, C' u`` when the carry is valid, else from the previous vector) until the
  Kato-Temple bound *predicted* with last bar's ``F^2`` is 20 times below the tolerance, and the
  single fused pass then forms the exact image of the resulting Ritz vector only (one vector:
  the cheapest pass). If that vector does not certify, the Krylov loop continues on the state
  as for long windows; its stall and degeneracy tests count the window products, so a
  (near-)degenerate top goes to LAPACK right after that pass. The scanner reports the window
  products per window (``last_window_products``, included in the iterations).
  Carried and raw-window products only *choose* directions: the Rayleigh-Ritz step and the
  certificate use the images computed by this bar's passes over the state, so their rounding
  never enters a certificate.
* **Top eigenvalue.** Cov mode: Rayleigh-Ritz on the Krylov space grown from the previous bar's
  top eigenvector (Lanczos with an explicit, twice-orthogonalised basis and the stored images
  ``C q``, started from the block above when the carry is valid, or from the window-Krylov Ritz
  vector; for a new member the "market mode" value). Gram mode: warm-started power iteration.
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
# Short windows (cov mode) take their Krylov steps on the raw window (2 w N FMAs a product)
# instead of the N x N state (~N^2 FMAs for a vector in a pass) when WK_FACTOR * w <= members;
# at most WK_MAX window products per bar before the certifying pass. Measured at N=540 (same
# window four times, both paths in the same run): the window path wins clearly at w=50, breaks
# even near w=100 and loses at w=150 (its bookkeeping and the second window product), hence 4.
WK_FACTOR = 4
WK_MAX = 6
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
# lower triangle is scratch). At N ~ 500 a state is 2.3 MB (1.2 MB touched) and the four states
# sit in L3; measured on the target machine (AVX-512), the passes are bound by instruction issue,
# not by memory traffic (a read-only sweep of a half state costs well under half a fused pass). So
# the kernels below minimise work per entry: the slide is the rank-2 form ``a ap^T - b bp^T``
# (2 FMAs, not 3), rows are taken four at a time (the column vectors are loaded and stored once
# for four rows), and every vector in a pass costs 2 FMAs per entry (a dot ``y_i += s_ij w_j``
# and an axpy ``y_j += s_ij w_i``); ``F^2`` costs 2 more.
# Each kernel walks the listed rows in groups ``i0 < i1 < i2 < i3``: the triangle between them
# entry by entry (columns up to ``i3``), then all four rows in one stream over ``j > i3``.


@njit(cache=True, fastmath=_FAST)
def _slide(
    s: np.ndarray, a: np.ndarray, ap: np.ndarray, b: np.ndarray, bp: np.ndarray,
    rows: np.ndarray, nrows: int,
) -> None:
    """Slide the listed rows' strict upper triangle: ``S'_ij = S_ij + a_i ap_j - b_i bp_j``
    (diagonals are updated by the caller). Same expression as in :func:`_pass1` and
    :func:`_pass2`."""
    for p in range(nrows):
        i = rows[p]
        ai = a[i]
        bi = b[i]
        sr = s[i, i + 1 :]
        apr = ap[i + 1 :]
        bpr = bp[i + 1 :]
        for j in range(sr.shape[0]):
            sr[j] = sr[j] + ai * apr[j] - bi * bpr[j]


@njit(cache=True, fastmath=_FAST)
def _pass1(
    s: np.ndarray, a: np.ndarray, ap: np.ndarray, b: np.ndarray, bp: np.ndarray,
    dd: np.ndarray, wv: np.ndarray, rows: np.ndarray, nrows: int, y: np.ndarray,
) -> float:
    """One pass over the listed rows: slide them as in :func:`_slide` and form ``y = S' wv`` and
    ``||C'||_F^2 = sum S'_ij^2 dd_i dd_j``. ``wv`` and ``dd`` must be zero outside the listed
    rows. (With ``a = b = 0`` it is a product with ``F^2`` that leaves finite entries as they
    are.) Rows four at a time: the triangle between the four rows entry by entry, then one
    vectorised stream over the columns beyond them."""
    n = s.shape[0]
    for j in range(n):
        y[j] = 0.0
    f2 = 0.0
    p = 0
    while p + 4 <= nrows:
        i0 = rows[p]
        i1 = rows[p + 1]
        i2 = rows[p + 2]
        i3 = rows[p + 3]
        j0 = i3 + 1
        for r in range(3):
            i = rows[p + r]
            ai = a[i]
            bi = b[i]
            ui = wv[i]
            hi = 0.0
            gi = 0.0
            for j in range(i + 1, j0):
                x = s[i, j] + ai * ap[j] - bi * bp[j]
                s[i, j] = x
                hi += x * wv[j]
                y[j] += x * ui
                gi += x * x * dd[j]
            y[i] += hi
            f2 += 2.0 * gi * dd[i]
        a0 = a[i0]
        a1 = a[i1]
        a2 = a[i2]
        a3 = a[i3]
        b0 = b[i0]
        b1 = b[i1]
        b2 = b[i2]
        b3 = b[i3]
        u0 = wv[i0]
        u1 = wv[i1]
        u2 = wv[i2]
        u3 = wv[i3]
        s0 = s[i0, j0:]
        s1 = s[i1, j0:]
        s2 = s[i2, j0:]
        s3 = s[i3, j0:]
        apr = ap[j0:]
        bpr = bp[j0:]
        wr = wv[j0:]
        yr = y[j0:]
        dr = dd[j0:]
        p0 = 0.0
        p1 = 0.0
        p2 = 0.0
        p3 = 0.0
        q0 = 0.0
        q1 = 0.0
        q2 = 0.0
        q3 = 0.0
        for j in range(s0.shape[0]):
            aj = apr[j]
            bj = bpr[j]
            x0 = s0[j] + a0 * aj - b0 * bj
            x1 = s1[j] + a1 * aj - b1 * bj
            x2 = s2[j] + a2 * aj - b2 * bj
            x3 = s3[j] + a3 * aj - b3 * bj
            s0[j] = x0
            s1[j] = x1
            s2[j] = x2
            s3[j] = x3
            wj = wr[j]
            p0 += x0 * wj
            p1 += x1 * wj
            p2 += x2 * wj
            p3 += x3 * wj
            yr[j] += x0 * u0 + x1 * u1 + x2 * u2 + x3 * u3
            dj = dr[j]
            q0 += x0 * x0 * dj
            q1 += x1 * x1 * dj
            q2 += x2 * x2 * dj
            q3 += x3 * x3 * dj
        c0 = s[i0, i0]
        c1 = s[i1, i1]
        c2 = s[i2, i2]
        c3 = s[i3, i3]
        f0 = dd[i0]
        f1 = dd[i1]
        e2 = dd[i2]
        e3 = dd[i3]
        y[i0] += p0 + c0 * u0
        y[i1] += p1 + c1 * u1
        y[i2] += p2 + c2 * u2
        y[i3] += p3 + c3 * u3
        f2 += (2.0 * (q0 * f0 + q1 * f1 + q2 * e2 + q3 * e3)
               + c0 * c0 * f0 * f0 + c1 * c1 * f1 * f1 + c2 * c2 * e2 * e2 + c3 * c3 * e3 * e3)
        p += 4
    while p < nrows:
        i = rows[p]
        ai = a[i]
        bi = b[i]
        ui = wv[i]
        sr = s[i, i + 1 :]
        apr = ap[i + 1 :]
        bpr = bp[i + 1 :]
        wr = wv[i + 1 :]
        yr = y[i + 1 :]
        dr = dd[i + 1 :]
        hi = 0.0
        gi = 0.0
        for j in range(sr.shape[0]):
            x = sr[j] + ai * apr[j] - bi * bpr[j]
            sr[j] = x
            hi += x * wr[j]
            yr[j] += x * ui
            gi += x * x * dr[j]
        c = s[i, i]
        f = dd[i]
        y[i] += hi + c * ui
        f2 += (2.0 * gi + c * c * f) * f
        p += 1
    return f2


@njit(cache=True, fastmath=_FAST)
def _pass2(
    s: np.ndarray, a: np.ndarray, ap: np.ndarray, b: np.ndarray, bp: np.ndarray,
    dd: np.ndarray, wv: np.ndarray, wv2: np.ndarray, rows: np.ndarray, nrows: int,
    y: np.ndarray, y2: np.ndarray,
) -> float:
    """:func:`_pass1` for a block of two vectors: one pass slides the rows and forms
    ``y = S' wv``, ``y2 = S' wv2`` and ``||C'||_F^2``."""
    n = s.shape[0]
    for j in range(n):
        y[j] = 0.0
        y2[j] = 0.0
    f2 = 0.0
    p = 0
    while p + 4 <= nrows:
        i0 = rows[p]
        i1 = rows[p + 1]
        i2 = rows[p + 2]
        i3 = rows[p + 3]
        j0 = i3 + 1
        for r in range(3):
            i = rows[p + r]
            ai = a[i]
            bi = b[i]
            ui = wv[i]
            vi = wv2[i]
            hi = 0.0
            ki = 0.0
            gi = 0.0
            for j in range(i + 1, j0):
                x = s[i, j] + ai * ap[j] - bi * bp[j]
                s[i, j] = x
                hi += x * wv[j]
                ki += x * wv2[j]
                y[j] += x * ui
                y2[j] += x * vi
                gi += x * x * dd[j]
            y[i] += hi
            y2[i] += ki
            f2 += 2.0 * gi * dd[i]
        a0 = a[i0]
        a1 = a[i1]
        a2 = a[i2]
        a3 = a[i3]
        b0 = b[i0]
        b1 = b[i1]
        b2 = b[i2]
        b3 = b[i3]
        u0 = wv[i0]
        u1 = wv[i1]
        u2 = wv[i2]
        u3 = wv[i3]
        v0 = wv2[i0]
        v1 = wv2[i1]
        v2 = wv2[i2]
        v3 = wv2[i3]
        s0 = s[i0, j0:]
        s1 = s[i1, j0:]
        s2 = s[i2, j0:]
        s3 = s[i3, j0:]
        apr = ap[j0:]
        bpr = bp[j0:]
        wr = wv[j0:]
        vr = wv2[j0:]
        yr = y[j0:]
        zr = y2[j0:]
        dr = dd[j0:]
        p0 = 0.0
        p1 = 0.0
        p2 = 0.0
        p3 = 0.0
        r0 = 0.0
        r1 = 0.0
        r2 = 0.0
        r3 = 0.0
        q0 = 0.0
        q1 = 0.0
        q2 = 0.0
        q3 = 0.0
        for j in range(s0.shape[0]):
            aj = apr[j]
            bj = bpr[j]
            x0 = s0[j] + a0 * aj - b0 * bj
            x1 = s1[j] + a1 * aj - b1 * bj
            x2 = s2[j] + a2 * aj - b2 * bj
            x3 = s3[j] + a3 * aj - b3 * bj
            s0[j] = x0
            s1[j] = x1
            s2[j] = x2
            s3[j] = x3
            wj = wr[j]
            vj = vr[j]
            p0 += x0 * wj
            p1 += x1 * wj
            p2 += x2 * wj
            p3 += x3 * wj
            r0 += x0 * vj
            r1 += x1 * vj
            r2 += x2 * vj
            r3 += x3 * vj
            yr[j] += x0 * u0 + x1 * u1 + x2 * u2 + x3 * u3
            zr[j] += x0 * v0 + x1 * v1 + x2 * v2 + x3 * v3
            dj = dr[j]
            q0 += x0 * x0 * dj
            q1 += x1 * x1 * dj
            q2 += x2 * x2 * dj
            q3 += x3 * x3 * dj
        c0 = s[i0, i0]
        c1 = s[i1, i1]
        c2 = s[i2, i2]
        c3 = s[i3, i3]
        f0 = dd[i0]
        f1 = dd[i1]
        e2 = dd[i2]
        e3 = dd[i3]
        y[i0] += p0 + c0 * u0
        y[i1] += p1 + c1 * u1
        y[i2] += p2 + c2 * u2
        y[i3] += p3 + c3 * u3
        y2[i0] += r0 + c0 * v0
        y2[i1] += r1 + c1 * v1
        y2[i2] += r2 + c2 * v2
        y2[i3] += r3 + c3 * v3
        f2 += (2.0 * (q0 * f0 + q1 * f1 + q2 * e2 + q3 * e3)
               + c0 * c0 * f0 * f0 + c1 * c1 * f1 * f1 + c2 * c2 * e2 * e2 + c3 * c3 * e3 * e3)
        p += 4
    while p < nrows:
        i = rows[p]
        ai = a[i]
        bi = b[i]
        ui = wv[i]
        vi = wv2[i]
        sr = s[i, i + 1 :]
        apr = ap[i + 1 :]
        bpr = bp[i + 1 :]
        wr = wv[i + 1 :]
        vr = wv2[i + 1 :]
        yr = y[i + 1 :]
        zr = y2[i + 1 :]
        dr = dd[i + 1 :]
        hi = 0.0
        ki = 0.0
        gi = 0.0
        for j in range(sr.shape[0]):
            x = sr[j] + ai * apr[j] - bi * bpr[j]
            sr[j] = x
            hi += x * wr[j]
            ki += x * vr[j]
            yr[j] += x * ui
            zr[j] += x * vi
            gi += x * x * dr[j]
        c = s[i, i]
        f = dd[i]
        y[i] += hi + c * ui
        y2[i] += ki + c * vi
        f2 += (2.0 * gi + c * c * f) * f
        p += 1
    return f2


@njit(cache=True, fastmath=_FAST)
def _mv(s: np.ndarray, wv: np.ndarray, rows: np.ndarray, nrows: int, y: np.ndarray) -> None:
    """``y = S wv`` over the listed rows (``wv`` is zero outside them): a read-only pass, rows
    four at a time as in :func:`_pass1`."""
    n = s.shape[0]
    for j in range(n):
        y[j] = 0.0
    p = 0
    while p + 4 <= nrows:
        i0 = rows[p]
        i1 = rows[p + 1]
        i2 = rows[p + 2]
        i3 = rows[p + 3]
        j0 = i3 + 1
        for r in range(3):
            i = rows[p + r]
            ui = wv[i]
            hi = 0.0
            for j in range(i + 1, j0):
                x = s[i, j]
                hi += x * wv[j]
                y[j] += x * ui
            y[i] += hi
        u0 = wv[i0]
        u1 = wv[i1]
        u2 = wv[i2]
        u3 = wv[i3]
        s0 = s[i0, j0:]
        s1 = s[i1, j0:]
        s2 = s[i2, j0:]
        s3 = s[i3, j0:]
        wr = wv[j0:]
        yr = y[j0:]
        p0 = 0.0
        p1 = 0.0
        p2 = 0.0
        p3 = 0.0
        for j in range(s0.shape[0]):
            x0 = s0[j]
            x1 = s1[j]
            x2 = s2[j]
            x3 = s3[j]
            wj = wr[j]
            p0 += x0 * wj
            p1 += x1 * wj
            p2 += x2 * wj
            p3 += x3 * wj
            yr[j] += x0 * u0 + x1 * u1 + x2 * u2 + x3 * u3
        y[i0] += p0 + s[i0, i0] * u0
        y[i1] += p1 + s[i1, i1] * u1
        y[i2] += p2 + s[i2, i2] * u2
        y[i3] += p3 + s[i3, i3] * u3
        p += 4
    while p < nrows:
        i = rows[p]
        ui = wv[i]
        sr = s[i, i + 1 :]
        wr = wv[i + 1 :]
        yr = y[i + 1 :]
        hi = 0.0
        for j in range(sr.shape[0]):
            x = sr[j]
            hi += x * wr[j]
            yr[j] += x * ui
        y[i] += hi + s[i, i] * ui
        p += 1


@njit(cache=True, fastmath=_FAST)
def _wprod(
    ring: np.ndarray, t: int, w: int, mean: np.ndarray, d: np.ndarray, dd: np.ndarray,
    q: np.ndarray, masked: bool, pz: np.ndarray, g: np.ndarray,
) -> None:
    """``g ~= C q`` from the raw window (``C = D X_c^T X_c D``, ``X_c`` the window centred with
    the rolling means; members are the columns with ``dd > 0``), two ring rows at a time. Costs
    ``2 w N`` FMAs instead of ``N^2`` for a vector in a pass over the state. Only a search
    direction: its rounding never enters a certificate (the state pass recomputes the image).
    ``masked``: some non-member column may hold a non-finite return in the window (then every
    non-member entry is replaced by zero; otherwise they meet ``pz = 0`` and are ignored)."""
    cap, n = ring.shape
    mp = 0.0
    for i in range(n):
        pz[i] = d[i] * q[i] if dd[i] > 0.0 else 0.0
        g[i] = 0.0
        mp += mean[i] * pz[i]
    ssum = 0.0
    k = 0
    while k < w:
        r0 = (t - w + k) % cap
        two = k + 1 < w
        r1 = (t - w + k + 1) % cap if two else r0
        x0 = ring[r0]
        x1 = ring[r1]
        s0 = 0.0
        s1 = 0.0
        if masked:
            for i in range(n):
                m = dd[i] > 0.0
                s0 += (x0[i] if m else 0.0) * pz[i]
                s1 += (x1[i] if m else 0.0) * pz[i]
        else:
            for i in range(n):
                s0 += x0[i] * pz[i]
                s1 += x1[i] * pz[i]
        s0 -= mp
        s1 = s1 - mp if two else 0.0
        ssum += s0 + s1
        if masked:
            for i in range(n):
                m = dd[i] > 0.0
                g[i] += (x0[i] if m else 0.0) * s0 + (x1[i] if m else 0.0) * s1
        else:
            for i in range(n):
                g[i] += x0[i] * s0 + x1[i] * s1
        k += 2
    for i in range(n):
        g[i] = d[i] * (g[i] - mean[i] * ssum) if dd[i] > 0.0 else 0.0


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


# Small vector helpers for the Krylov bookkeeping (O(N) per call). Compiled with the same
# reassociation flags as the passes so their reductions vectorise: they only choose directions
# or evaluate Rayleigh quotients and residual norms, whose rounding (~1e-16 relative) is far
# below the certificate tolerance.


@njit(cache=True, fastmath=_FAST)
def _dot(x: np.ndarray, y: np.ndarray) -> float:
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i] * y[i]
    return acc


@njit(cache=True, fastmath=_FAST)
def _fill_h(qb: np.ndarray, yb: np.ndarray, h: np.ndarray, c0: int, m: int) -> None:
    """Columns ``c0 .. m-1`` of the projected matrix ``h = sym(qb^T yb)``."""
    for c in range(c0, m):
        for p in range(c + 1):
            hv = 0.5 * (_dot(qb[p], yb[c]) + _dot(qb[c], yb[p]))
            h[p, c] = hv
            h[c, p] = hv


@njit(cache=True, fastmath=_FAST)
def _ritz_pair(
    qb: np.ndarray, yb: np.ndarray, svec: np.ndarray, m: int, x: np.ndarray, cx: np.ndarray,
    r: np.ndarray,
) -> tuple[float, float]:
    """``x = qb[:m]^T svec`` normalised, ``cx`` the same combination of the images, ``r`` the
    residual ``cx - rho x``; returns ``(rho, |r|^2)`` (NaN when ``x`` vanishes)."""
    n = x.shape[0]
    s0 = svec[0]
    q0 = qb[0]
    y0 = yb[0]
    for i in range(n):
        x[i] = s0 * q0[i]
        cx[i] = s0 * y0[i]
    for p in range(1, m):
        sp = svec[p]
        qp = qb[p]
        yp = yb[p]
        for i in range(n):
            x[i] += sp * qp[i]
            cx[i] += sp * yp[i]
    xx = _dot(x, x)
    if not (xx > 0.0 and math.isfinite(xx)):
        return np.nan, np.nan
    inv = 1.0 / math.sqrt(xx)
    for i in range(n):
        x[i] *= inv
        cx[i] *= inv
    rho = _dot(x, cx)
    for i in range(n):
        r[i] = cx[i] - rho * x[i]
    return rho, _dot(r, r)


@njit(cache=True, fastmath=_FAST)
def _cgs2(qb: np.ndarray, m: int, r: np.ndarray) -> float:
    """Orthogonalise ``r`` twice against ``qb[:m]`` (classical Gram-Schmidt, twice); returns
    its norm."""
    n = r.shape[0]
    for _rep in range(2):
        for p in range(m):
            qp = qb[p]
            cp = _dot(qp, r)
            for i in range(n):
                r[i] -= cp * qp[i]
    return math.sqrt(_dot(r, r))


@njit(cache=True, fastmath=_FAST)
def _carry_start(
    zc: np.ndarray, szc: np.ndarray, a: np.ndarray, b: np.ndarray, ap: np.ndarray,
    bp: np.ndarray, d: np.ndarray, x: np.ndarray, cx: np.ndarray, r: np.ndarray,
) -> float:
    """Block start from last bar's certified ``z = zc`` (S-space) and its image ``szc = S z``
    (module docstring): ``x = u = D'^-1 z / |.|``, ``cx = C' u`` via ``S' z = S z + a (ap.z)
    - b (bp.z)``, and ``r`` the Ritz residual of ``u`` orthogonalised against it. Returns
    ``|r|`` relative to ``|rho0|`` (0 when unusable). ``zc`` is zero outside the members."""
    n = x.shape[0]
    za = _dot(ap, zc)
    zb = _dot(bp, zc)
    for i in range(n):
        x[i] = zc[i] / d[i] if d[i] != 0.0 else 0.0
    nu2 = _dot(x, x)
    if not (nu2 > 0.0 and math.isfinite(nu2)):
        return 0.0
    inv = 1.0 / math.sqrt(nu2)
    for i in range(n):
        x[i] *= inv
        cx[i] = d[i] * (szc[i] + a[i] * za - b[i] * zb) * inv
    rho0 = _dot(x, cx)
    for i in range(n):
        r[i] = cx[i] - rho0 * x[i]
    for _rep in range(2):
        cp = _dot(x, r)
        for i in range(n):
            r[i] -= cp * x[i]
    nr = math.sqrt(_dot(r, r))
    if not (math.isfinite(nr) and rho0 != 0.0):
        return 0.0
    return nr / abs(rho0)


@njit(cache=True)
def _window_krylov(
    w: int, t: int, ring: np.ndarray, run: np.ndarray, mean: np.ndarray, d: np.ndarray,
    dd: np.ndarray, k: int, m: int, known: int, qb: np.ndarray, yb: np.ndarray, h: np.ndarray,
    ha: np.ndarray, hv: np.ndarray, svec: np.ndarray, x: np.ndarray, cx: np.ndarray,
    acc: np.ndarray, pz: np.ndarray, f2_prev: float, tol: float,
) -> int:
    """Lanczos (Rayleigh-Ritz on an explicit, twice-orthogonalised basis) with products from the
    raw window (:func:`_wprod`), for a window short enough that such a product costs less than
    a vector in a pass over the state. ``qb[:m]`` holds the starting basis, ``yb[:known]``
    estimates of its images. Leaves in ``x`` the unit Ritz vector to be certified by the state
    pass (zero outside the members) and returns the number of window products, or ``-1`` if no
    finite Ritz pair came out (the caller keeps its own start vector).

    Nothing computed here is trusted: it only chooses the vector whose image the pass computes
    exactly, and the certificate (residual, trace, F^2) uses only that image. It stops when the
    Kato-Temple bound *predicted* with last bar's ``||C||_F^2`` is 20 times below the tolerance,
    when the residual stops falling, or after ``WK_MAX`` products."""
    n = ring.shape[1]
    masked = False
    for i in range(n):
        if dd[i] == 0.0 and run[i] < w:  # a non-member column may hold a NaN in the window
            masked = True
            break
    rank = k if k < w - 1 else w - 1
    nprod = 0
    res_prev = np.inf
    ok = False
    hfill = 0
    while True:
        for c in range(known, m):
            _wprod(ring, t, w, mean, d, dd, qb[c], masked, pz, yb[c])
            nprod += 1
        known = m
        _fill_h(qb, yb, h, hfill, m)
        hfill = m
        _top_eigpair(h, m, ha, hv, svec)
        rho, res2 = _ritz_pair(qb, yb, svec, m, x, cx, acc)
        res = math.sqrt(res2)
        if not (math.isfinite(rho) and rho > 0.0 and math.isfinite(res)):
            break
        ok = True
        if f2_prev > 0.0:
            alpha0, _ = certify(rho, 0.0, float(k), f2_prev, rank)
            if alpha0 < rho and res2 <= 0.05 * tol * rho * (rho - alpha0):
                break
        elif res <= 1e-8 * rho:
            break
        if m >= WK_MAX or m >= qb.shape[0] or not res < 0.5 * res_prev:
            break
        res_prev = res
        # next basis vector: the Ritz residual (in acc), orthogonalised twice (CGS2)
        nr = _cgs2(qb, m, acc)
        if not nr > 1e-3 * res:  # numerically invariant: the Ritz pair is as good as it gets
            break
        inv = 1.0 / nr
        qm = qb[m]
        for i in range(n):
            qm[i] = acc[i] * inv
        m += 1
    return nprod if ok else -1


@njit(cache=True)
def cov_step(
    w: int, t: int, ring: np.ndarray, run: np.ndarray, same: np.ndarray,
    s: np.ndarray, mean: np.ndarray, eb: np.ndarray, em: np.ndarray, tracked: np.ndarray,
    flat: np.ndarray, member: np.ndarray, v: np.ndarray,
    a: np.ndarray, b: np.ndarray, ap: np.ndarray, bp: np.ndarray, d: np.ndarray, dd: np.ndarray,
    wv: np.ndarray, y: np.ndarray, acc: np.ndarray, rows: np.ndarray, mrows: np.ndarray,
    targets: np.ndarray, qb: np.ndarray, yb: np.ndarray, h: np.ndarray, ha: np.ndarray,
    hv: np.ndarray, svec: np.ndarray, x: np.ndarray, cx: np.ndarray,
    eta: float, tol: float, maxit: int,
    zc: np.ndarray, szc: np.ndarray, okc: np.ndarray, blk: np.ndarray, fw: np.ndarray, wkm: int,
) -> tuple[float, int, int, int, int, int, int, int]:
    """One bar for a cov-mode window. ``t`` = number of returns stored (current is ``t - 1``).

    Returns ``(lambda, n_used, iterations, status, membership_changed, rows_anchored, passes,
    window_products)`` (``passes``: passes over the state this bar, the slide included;
    ``iterations``: products with C, from the state or from the raw window; ``window_products``:
    those from the raw window).
    A symbol is *tracked* once it has ``w`` consecutive valid returns (its whole window is
    valid); it is a *member* (enters C) when tracked, not flat (not all ``w`` returns identical)
    and with positive variance.

    Eigenvalue: Rayleigh-Ritz on the Krylov space ``span{v, Cv, C^2 v, ...}`` grown from the
    previous bar's eigenvector (Lanczos with an explicit orthonormal basis ``qb`` and images
    ``yb = C qb``). Long windows: the first products are fused with the slide, one
    (single-vector start) or the two of the block start (module docstring). Short windows
    (``wkm``: 0 never, 1 when ``WK_FACTOR * w <= k``, 2 always): the Krylov steps run on the raw
    window (:func:`_window_krylov`) and the single fused pass computes the image of the Ritz
    vector found there. Either way the Ritz vector ``x`` and its image ``cx`` from the state
    give ``rho = x.cx`` and the residual ``|cx - rho x|`` explicitly (no reliance on Lanczos
    orthogonality), which are certified (:func:`certify`, :func:`_decide`); further products,
    if needed, are passes over the state. ``fw[0]`` keeps ``||C||_F^2`` of the last pass.
    """
    cap, n = ring.shape
    cur = (t - 1) % cap
    old = (t - 1 - w) % cap
    inv_w = 1.0 / w
    slow = False
    nrows = 0
    ntarget = 0
    for i in range(n):
        now = run[i] >= w
        a[i] = 0.0
        b[i] = 0.0
        ap[i] = 0.0
        bp[i] = 0.0
        is_flat = same[i] >= w
        if tracked[i] and now:
            mi = mean[i]
            ai = ring[cur, i] - mi
            bi = ring[old, i] - mi
            di = ai - bi
            dw = di * inv_w
            a[i] = ai
            b[i] = bi
            # rank-2 slide S' = S + a ap^T - b bp^T with ap = x_new - m', bp = x_old - m'
            # (= S + a a^T - b b^T - d d^T / w)
            api = ai - dw
            bpi = bi - dw
            ap[i] = api
            bp[i] = bpi
            m_new = mi + dw
            mean[i] = m_new
            # rounding of the mean update; a mean error e injects -(d e + e d) into S
            em[i] += _U * (abs(m_new) + abs(dw))
            sii = s[i, i] + ai * api - bi * bpi
            s[i, i] = sii  # the row passes slide only the strict upper triangle
            # one update of entry (i, j) errs by <= 2u |S_ij| + 7u (|a_i| |a_j| + |b_i| |b_j|
            # + (|a_i| + |b_i|) |d_j| / w) (module docstring): <= sqrt(inc_i inc_j) for the
            # increment below (Cauchy-Schwarz)
            eb[i] += (4.0 * _U * abs(sii) + 7.0 * _U * ((1.0 + inv_w) * (ai * ai + bi * bi) + 2.0 * di * dw)
                      + 2.0 * abs(di) * em[i])
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
        _slide(s, a, ap, b, bp, rows, nrows)
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
    use_wk = k >= 2 and (wkm == 2 or (wkm == 1 and WK_FACTOR * w <= k))
    block = False
    if carry:
        # Last bar's certified vector in S-space, z = D x, and its image S z (computed from a
        # fresh product then). The slide changes S by the rank-2 term exactly, so the image of z
        # under the slid matrix is known *before* this bar's pass: S' z = S z + a (ap.z)
        # - b (bp.z). In C' = D' S' D' that gives u = D'^-1 z / |.| and C' u, hence the Ritz
        # residual of u; the single pass below then forms the images of both u and that residual
        # (one Krylov step more per pass). These carried values only choose the directions: the
        # certificate below uses the images computed in this bar's pass, never carried ones.
        if _carry_start(zc, szc, a, b, ap, bp, d, x, cx, acc) > 1e-15:
            block = True
            nr = math.sqrt(_dot(acc, acc))
            inv = 1.0 / nr
            for i in range(n):
                v[i] = x[i]
                wv[i] = d[i] * x[i]
                qb[0, i] = x[i]
                qb[1, i] = acc[i] * inv
                yb[0, i] = cx[i]  # estimate of C' u (window Krylov start)
                x[i] = d[i] * qb[1, i]  # x, cx: scratch for the second vector and image
    nwin = 0
    if use_wk:
        # Krylov steps on the raw window; the pass then certifies the Ritz vector found there.
        if block:
            nw = _window_krylov(w, t, ring, run, mean, d, dd, k, 2, 1, qb, yb, h, ha, hv, svec,
                                x, cx, acc, blk[0], fw[0], tol)
        else:
            for i in range(n):
                qb[0, i] = v[i]
            nw = _window_krylov(w, t, ring, run, mean, d, dd, k, 1, 0, qb, yb, h, ha, hv, svec,
                                x, cx, acc, blk[0], fw[0], tol)
        if nw >= 0:
            nwin = nw
            for i in range(n):
                v[i] = x[i]
                wv[i] = d[i] * x[i]
        else:  # no usable Ritz pair from the window: certify the plain start vector
            nwin = 0
            if block:
                for i in range(n):
                    wv[i] = d[i] * v[i]
        block = False
    if slow:
        if k < 2:
            return np.nan, k, 0, STATUS_COLD, changed, ntarget, 1, 0
        for i in range(n):  # already slid and re-anchored: a product with F^2, no slide
            a[i] = 0.0
            ap[i] = 0.0
            b[i] = 0.0
            bp[i] = 0.0
        f2 = _pass1(s, a, ap, b, bp, dd, wv, mrows, k, y)
    elif block:
        f2 = _pass2(s, a, ap, b, bp, dd, wv, x, rows, nrows, y, cx)
    else:
        # every continuing tracked row must slide, members or not (flat rows stay exact zeros)
        f2 = _pass1(s, a, ap, b, bp, dd, wv, rows, nrows, y)
        if k < 2:
            return np.nan, k, 0, STATUS_COLD, changed, ntarget, 1, 0
    fw[0] = f2 if math.isfinite(f2) else 0.0
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
    res_prev = 0.0
    status = STATUS_FALLBACK
    rho = np.nan
    hfill = 0
    m0 = m
    while True:
        _fill_h(qb, yb, h, hfill, m)
        hfill = m
        _top_eigpair(h, m, ha, hv, svec)
        rho, res2 = _ritz_pair(qb, yb, svec, m, x, cx, acc)
        if not res2 >= 0.0:  # NaN: no usable Ritz pair
            status = STATUS_FALLBACK
            break
        res = math.sqrt(res2)
        # products so far (window ones included) drive the stall / degeneracy tests
        it = m - 1 + nwin
        dec, _shift = _decide(it, rho, res, res_prev, trace, f2, rank, tol, maxit)
        if dec == 1 or it >= 2:
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
        # next basis vector: the Ritz residual (in acc), orthogonalised twice (CGS2)
        nr = _cgs2(qb, m, acc)
        if not nr > 1e-3 * res:  # the Krylov space is numerically invariant but uncertified
            status = STATUS_FALLBACK
            break
        inv = 1.0 / nr
        for i in range(n):
            qb[m, i] = acc[i] * inv
            wv[i] = d[i] * qb[m, i]
        _mv(s, wv, mrows, k, y)
        for i in range(n):
            yb[m, i] = d[i] * y[i]
        m += 1
    return rho, k, m + nwin, status, changed, ntarget, (2 if slow else 1) + m - m0, nwin


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
) -> tuple[float, int, int, int, int, int, int, int]:
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
        return np.nan, k, 0, STATUS_COLD, changed, 0, 0, 0
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
    return rho, k, it, status, changed, 0, it, 0


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
    a: np.ndarray, b: np.ndarray, ap: np.ndarray, d: np.ndarray, dd: np.ndarray, wv: np.ndarray,
    y: np.ndarray, acc: np.ndarray, rows: np.ndarray, mrows: np.ndarray, targets: np.ndarray,
    qb: np.ndarray, yb: np.ndarray, h: np.ndarray, ha: np.ndarray, hv: np.ndarray,
    svec: np.ndarray, x: np.ndarray, cx: np.ndarray,
    eta: float, tol: float, maxit: int, lam_out: np.ndarray, int_out: np.ndarray,
    zc2: np.ndarray, szc2: np.ndarray, okc2: np.ndarray, blk: np.ndarray, bp: np.ndarray,
    fw: np.ndarray, wkm: np.ndarray,
) -> int:
    """One bar for all windows in one call: ingest the closes as return number ``t`` and run
    :func:`cov_step` / :func:`gram_step` per window (state of window ``j`` in slice ``[j]`` of
    the stacked arrays). Writes ``lam_out[j]`` and ``int_out[j] = (n_used, iterations, status,
    membership_changed, rows_anchored, passes, window_products)``; returns the number of symbols
    used by at least one warm window. A window with ``STATUS_FALLBACK`` still needs the caller's
    LAPACK solve. ``a, b, ap, bp``: slide vectors (scratch); ``fw[j]``: ``||C||_F^2`` of window ``j`` at its
    last pass; ``wkm[j]``: Krylov on the raw window for window ``j`` (0 never, 1 auto, 2 always)."""
    cap, n = ring.shape
    ingest_bar(closes, prev_close, ring, t % cap, run, same)
    t += 1
    for j in range(windows.shape[0]):
        w = windows[j]
        if modes[j] == MODE_COV:
            out = cov_step(
                w, t, ring, run, same, s3[j], mean2[j], eb2[j], em2[j], tracked2[j], flat2[j],
                member2[j], v2[j], a, b, ap, bp, d, dd, wv, y, acc, rows, mrows, targets,
                qb, yb, h, ha, hv, svec, x, cx, eta, tol, maxit, zc2[j], szc2[j], okc2[j : j + 1],
                blk, fw[j : j + 1], wkm[j],
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
        int_out[j, 6] = out[7]
    used = 0
    for i in range(n):
        for j in range(windows.shape[0]):
            if int_out[j, 2] != STATUS_COLD and member2[j, i]:
                used += 1
                break
    return used
