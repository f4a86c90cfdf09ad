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
* **Top eigenvalue.** Warm-started power iteration (the previous bar's top eigenvector; for a new
  window the all-ones "market mode"). After each matvec ``y = C v`` (``|v| = 1``) we have the
  Rayleigh quotient ``rho = v.y`` and residual ``res = |y - rho v|``. The kernel **certifies** the
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
  iterations exceeds the cap) the kernel returns ``STATUS_FALLBACK`` and the caller runs LAPACK
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
REL_STD_FLOOR = 1e-9
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


@njit(cache=True, fastmath=_FAST)
def _sym_matvec(s: np.ndarray, wv: np.ndarray, rows: np.ndarray, nrows: int, y: np.ndarray) -> None:
    """y = S wv over the listed rows (S stored in full; wv is zero outside the members).

    Full storage with one dot product per row is a pure streaming reduction that LLVM vectorises;
    the triangle-with-scatter variant halves the bytes but measured 6x slower (no SIMD).
    """
    n = s.shape[0]
    for p in range(nrows):
        i = rows[p]
        acc = 0.0
        for j in range(n):
            acc += s[i, j] * wv[j]
        y[i] = acc


@njit(cache=True, fastmath=_FAST)
def _fused_slide_matvec(
    s: np.ndarray, a: np.ndarray, b: np.ndarray, e: np.ndarray, dd: np.ndarray, wv: np.ndarray,
    rows: np.ndarray, nrows: int, y: np.ndarray,
) -> float:
    """Slide the listed rows (S' = S + a a^T - b b^T - e e^T) and, in the same pass, y = S' wv
    and ``||C'||_F^2 = sum_ij S'_ij^2 dd_i dd_j``. One read and one write of the matrix per bar.

    Every term is a product of two vector entries, so entry (i, j) and (j, i) are computed by the
    same operations on swapped operands and S stays bitwise symmetric.
    """
    f2 = 0.0
    n = s.shape[0]
    for p in range(nrows):
        i = rows[p]
        ai = a[i]
        bi = b[i]
        ei = e[i]
        acc = 0.0
        frow = 0.0
        for j in range(n):
            sij = s[i, j] + ai * a[j] - bi * b[j] - ei * e[j]
            s[i, j] = sij
            acc += sij * wv[j]
            frow += sij * sij * dd[j]
        y[i] = acc
        f2 += frow * dd[i]
    return f2


@njit(cache=True, fastmath=_FAST)
def _slide_only(
    s: np.ndarray, a: np.ndarray, b: np.ndarray, e: np.ndarray, rows: np.ndarray, nrows: int
) -> None:
    n = s.shape[0]
    for p in range(nrows):
        i = rows[p]
        ai = a[i]
        bi = b[i]
        ei = e[i]
        for j in range(n):
            s[i, j] += ai * a[j] - bi * b[j] - ei * e[j]


@njit(cache=True, fastmath=_FAST)
def _frob2(s: np.ndarray, dd: np.ndarray, rows: np.ndarray, nrows: int) -> float:
    n = s.shape[0]
    f2 = 0.0
    for p in range(nrows):
        i = rows[p]
        frow = 0.0
        for j in range(n):
            sij = s[i, j]
            frow += sij * sij * dd[j]
        f2 += frow * dd[i]
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
def cov_step(
    w: int, t: int, ring: np.ndarray, run: np.ndarray, same: np.ndarray,
    s: np.ndarray, mean: np.ndarray, eb: np.ndarray, em: np.ndarray, tracked: np.ndarray,
    flat: np.ndarray, member: np.ndarray, v: np.ndarray,
    a: np.ndarray, b: np.ndarray, dl: np.ndarray, d: np.ndarray, dd: np.ndarray, wv: np.ndarray,
    y: np.ndarray, acc: np.ndarray, rows: np.ndarray, mrows: np.ndarray, targets: np.ndarray,
    eta: float, tol: float, maxit: int,
) -> tuple[float, int, int, int, int, int]:
    """One bar for a cov-mode window. ``t`` = number of returns stored (current is ``t - 1``).

    Returns ``(lambda, n_used, iterations, status, membership_changed, rows_anchored)``.
    A symbol is *tracked* once it has ``w`` consecutive valid returns (its whole window is
    valid); it is a *member* (enters C) when tracked, not flat (not all ``w`` returns identical)
    and with positive variance.
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
            acc[i] = sii  # new diagonal; the row pass stores it (same expression)
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
        _slide_only(s, a, b, dl, rows, nrows)
        _anchor_rows(s, mean, eb, em, tracked, flat, targets, ntarget, ring, t, w, acc)
    # membership, scaling and warm start (only the new diagonal is needed)
    k = 0
    changed = 0
    vsum = 0.0
    for i in range(n):
        sii = s[i, i] if slow else acc[i]
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
    if slow:
        if k < 2:
            return np.nan, k, 0, STATUS_COLD, changed, ntarget
        _sym_matvec(s, wv, mrows, k, y)
        f2 = _frob2(s, dd, mrows, k)
    else:
        # every continuing tracked row must slide, members or not (flat rows stay exact zeros)
        f2 = _fused_slide_matvec(s, a, b, dl, dd, wv, rows, nrows, y)
        if k < 2:
            return np.nan, k, 0, STATUS_COLD, changed, ntarget
    nrows = k
    rows = mrows
    trace = 0.0
    for p in range(nrows):
        i = rows[p]
        trace += s[i, i] * dd[i]
    rank = k if k < w - 1 else w - 1
    res_prev = 0.0
    status = STATUS_FALLBACK
    rho = np.nan
    it = 0
    while True:
        for p in range(nrows):
            i = rows[p]
            y[i] *= d[i]
        rho = 0.0
        for p in range(nrows):
            i = rows[p]
            rho += v[i] * y[i]
        res2 = 0.0
        ny2 = 0.0
        for p in range(nrows):
            i = rows[p]
            e = y[i] - rho * v[i]
            res2 += e * e
            ny2 += y[i] * y[i]
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
        for p in range(nrows):
            i = rows[p]
            y[i] -= shift * v[i]
            ny2 += y[i] * y[i]
        inv = 1.0 / math.sqrt(ny2)
        for p in range(nrows):
            i = rows[p]
            v[i] = y[i] * inv
            wv[i] = d[i] * v[i]
        _sym_matvec(s, wv, rows, nrows, y)
    return rho, k, it, status, changed, ntarget


@njit(cache=True)
def cov_corr_compact(s: np.ndarray, d: np.ndarray, member: np.ndarray, out: np.ndarray) -> int:
    """Fill ``out[:k, :k]`` with the members' correlation matrix (for the LAPACK fallback)."""
    n = s.shape[0]
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
def gram_step(
    w: int, t: int, ring: np.ndarray, run: np.ndarray, same: np.ndarray,
    member: np.ndarray, v: np.ndarray, idx: np.ndarray, mean: np.ndarray, d: np.ndarray,
    z: np.ndarray, g: np.ndarray, u: np.ndarray, y: np.ndarray,
    tol: float, maxit: int,
) -> tuple[float, int, int, int, int, int]:
    """One bar for a Gram-mode window: rebuilt from the raw window each bar, so nothing drifts.

    Same membership rule and return tuple as :func:`cov_step` (``rows_anchored`` is 0).
    ``idx[:k]`` receives the member indices and ``z[:w, :k]`` the standardised window.
    """
    cap, n = ring.shape
    k = 0
    changed = 0
    for i in range(n):
        is_mem = False
        if run[i] >= w and same[i] < w:
            tot = 0.0
            for r in range(w):
                tot += ring[(t - w + r) % cap, i]
            m = tot / w
            corr = 0.0
            ss = 0.0
            for r in range(w):
                e = ring[(t - w + r) % cap, i] - m
                corr += e
                ss += e * e
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
        return np.nan, k, 0, STATUS_COLD, changed, 0
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
    return rho, k, it, status, changed, 0


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
