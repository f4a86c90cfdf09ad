"""EigenScanner: bars in, one ScanRecord out per bar (SPEC §2, bible §3/§27). Pure: no I/O, no clock.

Definitions (the choices a reader of the Arrow files needs to know):

* **Returns.** ``r_t = ln(p_t / p_{t-1})`` per symbol. A NaN, zero, negative or infinite close
  means the symbol is absent at that bar; no return is formed across an absence (the first
  return after a comeback needs two consecutive valid closes). Carrying stale prices forward is
  the feed's job (``max_stale_bars``); a carried price simply yields zero returns here.
* **Membership per window.** A symbol enters window ``w`` once it has ``w`` consecutive valid
  returns (its whole window is real data, so the correlation is a plain Pearson correlation over
  exactly ``w`` common bars: no pairwise-deletion, no imputation) and leaves at its first
  invalid return. ``N_used(w)`` = members of window ``w``; ``n_symbols`` in the record = symbols
  used by at least one window at this bar.
* **Constant price.** A symbol whose ``w`` returns are all identical (a pegged stablecoin: all
  exactly zero) has no defined correlation; it is excluded from that window (not counted in
  ``N_used``) rather than given a fake unit variance. It rejoins as soon as its price moves.
  The same holds for a *numerically* constant column, whose standard deviation is below
  ``kernels.REL_STD_FLOOR`` (1e-5) times its mean return: its deviations are rounding noise of
  the mean and no float64 method can give its correlations (condition number ~ mean / std).
* **Warm.** A window is warm when it has at least two members. Cold windows give NaN lambda,
  velocity and instability.
* **Absorption, velocity.** ``a_w = lambda_w / N_used(w)``; ``v_w(t) = a_w(t) - a_w(t-1)`` only
  when the member set of window ``w`` is the same at ``t-1`` and ``t``; on a bar where a symbol
  joined or left window ``w`` the velocity is NaN (the two ratios describe different universes and
  their difference would be a composition artefact, not a market move). ``instability_w = 1 - a_w``.
* **vel_div** ``= v_50 - v_750`` (NaN unless both are defined). ``instability_composite`` = mean
  of the four instabilities (NaN if any window is cold).
* **regime_signal.** The bible (§27.3) types it as float64 in {-1, 0, +1} without giving a
  formula; §1 and §4.1 define the regimes from vel_div: ``vel_div < -0.02`` is the instability
  onset the SHORT champion trades (``regime_direction = -1``), ``vel_div > +0.01`` is the LONG
  condition, anything in between is neutral. So ``regime_signal = -1 / +1 / 0`` by those
  thresholds (constructor parameters), NaN when vel_div is NaN (no signal from a cold scan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dolphind.events import WINDOWS, ScanRecord, frozen_array
from dolphind.scan import kernels as K

# Default certificate tolerance: lambda is certified within 1e-12 relative (contract: 1e-9).
DEFAULT_TOL = 1e-12
# Re-anchor a co-moment row when its a-priori rounding-error bound exceeds this fraction of S_ii.
DEFAULT_ETA = 1e-12
DEFAULT_MAXIT = 40
# Gram mode when w^2 < GRAM_FACTOR * N. Flop counts alone suggest ~8 (Gram ~w^2 N / 2 per bar vs
# cov ~3 N^2 + N^2 per iteration), but the cov loops are pure SIMD streams while the Gram build is
# w^2/2 short dot products; measured at N=540 (bench/eigenscan.py, forced modes) all-cov was as
# fast as Gram for w=50, so Gram only takes over for very wide universes (w=50 from N=1250).
GRAM_FACTOR = 2.0

VEL_DIV_SHORT_THRESHOLD = -0.02  # bible §4.1 VEL_DIV_THRESHOLD
VEL_DIV_LONG_THRESHOLD = 0.01  # bible §4.1 LONG_THRESHOLD


def choose_mode(window: int, n_symbols: int) -> int:
    """Pick the cheaper exact method for one window: ``K.MODE_GRAM`` or ``K.MODE_COV``.

    Gram rebuilds ``G = Z Z^T`` each bar (``~w^2 N / 2`` flops, no state); cov slides an N x N
    co-moment matrix (``~3 N^2`` per bar plus ``N^2`` per power iteration).
    """
    return K.MODE_GRAM if window * window < GRAM_FACTOR * n_symbols else K.MODE_COV


def regime_signal(vel_div: float, short_threshold: float, long_threshold: float) -> float:
    """-1 (instability onset, SHORT regime), +1 (LONG condition), 0 (neutral), NaN if no signal."""
    if not math.isfinite(vel_div):
        return math.nan
    if vel_div < short_threshold:
        return -1.0
    if vel_div > long_threshold:
        return 1.0
    return 0.0


@dataclass
class _Window:
    """Per-window view of the scanner's stacked state (slice ``[j]`` of each array)."""

    w: int
    mode: int
    member: np.ndarray
    v: np.ndarray
    s: np.ndarray  # cov: co-moment matrix, upper triangle maintained
    z: np.ndarray  # gram: standardised window z[:w, :k]
    g: np.ndarray  # gram: Gram matrix g[:w, :w]
    idx: np.ndarray  # gram: member indices
    absorption: float = math.nan


@dataclass
class ScanCounters:
    """Counters the scan stage exports as metrics (cumulative unless named ``last_``)."""

    last_iterations: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    # passes over each window's state at the last bar (cov mode: the fused slide pass + one per
    # further Krylov product; the cost driver at large N)
    last_passes: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    last_n_used: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    # cov mode, short windows: products taken from the raw window at the last bar (included in
    # last_iterations, not in last_passes)
    last_window_products: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    fallbacks_total: int = 0
    rows_anchored_total: int = 0
    membership_changes_total: int = 0


class EigenScanner:
    """Incremental multi-window eigenscan over a universe of symbols.

    ``update()`` takes the closes of every symbol at one bar (NaN = absent) and returns the
    ScanRecord. ``start_scan_number`` is the number given to the first record (pass
    ``last_persisted + 1`` after a restart). ``window_krylov`` (cov mode): take the Krylov steps
    from the raw window where that is cheaper (``None``, the default), always (``True``, for
    tests) or never (``False``); the certificate is the same either way.
    """

    def __init__(
        self,
        start_scan_number: int = 0,
        *,
        windows: tuple[int, ...] = WINDOWS,
        modes: tuple[int, ...] | None = None,
        tol: float = DEFAULT_TOL,
        eta: float = DEFAULT_ETA,
        maxit: int = DEFAULT_MAXIT,
        window_krylov: bool | None = None,
        short_threshold: float = VEL_DIV_SHORT_THRESHOLD,
        long_threshold: float = VEL_DIV_LONG_THRESHOLD,
    ) -> None:
        if len(windows) != 4 or any(w < 3 for w in windows):
            raise ValueError(f"need four windows >= 3, got {windows}")
        self._windows = tuple(int(w) for w in windows)
        self._forced_modes = modes
        self._tol = tol
        self._eta = eta
        self._maxit = maxit
        # cov mode: Krylov steps on the raw window (None: where cheaper, kernels.WK_FACTOR)
        self._wk = 1 if window_krylov is None else (2 if window_krylov else 0)
        self._short = short_threshold
        self._long = long_threshold
        self._next_scan = int(start_scan_number)
        self._symbols: tuple[str, ...] | None = None
        self._t = 0  # returns stored so far
        self._have_prev = False
        self.counters = ScanCounters()
        self._alloc(0)

    # -- state ------------------------------------------------------------------------------

    def _alloc(self, n: int) -> None:
        cap = max(self._windows) + 1
        nw = len(self._windows)
        self._n = n
        self._ring = np.full((cap, n), np.nan)
        self._prev = np.full(n, np.nan)
        self._run = np.zeros(n, np.int64)
        self._same = np.zeros(n, np.int64)
        modes = self._forced_modes or tuple(choose_mode(w, n) for w in self._windows)
        self._modes_arr = np.array(modes, np.int64)
        self._win_arr = np.array(self._windows, np.int64)
        # stacked per-window state: all four windows are advanced by one numba call per bar
        ncov = n if K.MODE_COV in modes else 1
        wz = max([w for w, m in zip(self._windows, modes, strict=True) if m == K.MODE_GRAM] or [1])
        self._S = np.zeros((nw, ncov, ncov))
        self._mean = np.zeros((nw, n))
        self._eb = np.zeros((nw, n))
        self._em = np.zeros((nw, n))
        self._tracked = np.zeros((nw, n), np.bool_)
        self._flat = np.zeros((nw, n), np.bool_)
        self._member = np.zeros((nw, n), np.bool_)
        self._v = np.zeros((nw, n))
        self._idx = np.zeros((nw, n), np.int64)
        self._gmean = np.zeros((nw, n))
        self._Z = np.zeros((nw, wz, max(n, 1)))
        self._G = np.zeros((nw, wz, wz))
        self._U = np.zeros((nw, wz))
        self._UY = np.zeros((nw, wz))
        self._wins = [
            _Window(w=w, mode=m, member=self._member[j], v=self._v[j], s=self._S[j],
                    z=self._Z[j], g=self._G[j], idx=self._idx[j])
            for j, (w, m) in enumerate(zip(self._windows, modes, strict=True))
        ]
        self._a, self._b = np.zeros(n), np.zeros(n)
        self._ap, self._bp = np.zeros(n), np.zeros(n)
        self._d, self._dd, self._wv = np.zeros(n), np.zeros(n), np.zeros(n)
        self._y, self._acc = np.zeros(n), np.zeros(n)
        self._rows = np.zeros(n, np.int64)
        self._mrows = np.zeros(n, np.int64)
        self._targets = np.zeros(n, np.int64)
        self._fb = np.zeros((n, n))
        kb = self._maxit + 1
        self._qb, self._yb = np.zeros((kb, n)), np.zeros((kb, n))
        self._h, self._ha, self._hv = np.zeros((kb, kb)), np.zeros((kb, kb)), np.zeros((kb, kb))
        self._svec, self._x, self._cx = np.zeros(kb), np.zeros(n), np.zeros(n)
        self._lam = np.zeros(nw)
        # cov mode: last certified vector z = D x in S-space, its image S z, and whether valid
        self._zc, self._szc = np.zeros((nw, n)), np.zeros((nw, n))
        self._okc = np.zeros(nw, np.int64)
        self._blk = np.zeros((2, n))  # cov mode: scratch
        self._fw = np.zeros(nw)  # cov mode: ||C||_F^2 at the last pass (guides the window Krylov)
        self._wkm = np.full(nw, self._wk, np.int64)
        self._iout = np.zeros((nw, 7), np.int64)

    def _remap(self, symbols: tuple[str, ...]) -> None:
        """Universe changed: carry over the raw data of surviving symbols and rebuild the rest.

        Rolling state is rebuilt from the raw window (every tracked symbol re-joins), so the
        result is identical to a scanner that had always used the new column order.
        """
        old_syms = self._symbols or ()
        old_pos = {s: i for i, s in enumerate(old_syms)}
        ring, prev, run, same = self._ring, self._prev, self._run, self._same
        old_wins = self._wins
        self._alloc(len(symbols))
        for new_i, sym in enumerate(symbols):
            oi = old_pos.get(sym)
            if oi is None:
                continue
            self._ring[:, new_i] = ring[:, oi]
            self._prev[new_i] = prev[oi]
            self._run[new_i] = run[oi]
            self._same[new_i] = same[oi]
            for nw, ow in zip(self._wins, old_wins, strict=True):
                nw.member[new_i] = ow.member[oi]
                nw.v[new_i] = ow.v[oi]
        for nw, ow in zip(self._wins, old_wins, strict=True):
            nw.absorption = ow.absorption
        self._symbols = symbols

    @property
    def modes(self) -> tuple[int, ...]:
        """The method used per window (``kernels.MODE_COV`` or ``kernels.MODE_GRAM``)."""
        return tuple(w.mode for w in self._wins)

    @property
    def next_scan_number(self) -> int:
        return self._next_scan

    @property
    def windows(self) -> tuple[int, ...]:
        return self._windows

    def window_progress(self) -> list[tuple[int, int]]:
        """(returns in hand, returns needed) per window: a window is warm once two symbols have
        ``w`` consecutive valid returns, so "in hand" is the second-longest run, capped at w."""
        runs = np.sort(self._run)[-2:] if self._n >= 2 else np.zeros(2, np.int64)
        have = int(runs[0]) if runs.size == 2 else 0
        return [(min(have, w), w) for w in self._windows]

    def fresh(self) -> "EigenScanner":
        """A cold scanner with this one's settings that goes on with the same scan number."""
        return EigenScanner(self._next_scan, windows=self._windows, modes=self._forced_modes,
                            tol=self._tol, eta=self._eta, maxit=self._maxit,
                            window_krylov=None if self._wk == 1 else self._wk == 2,
                            short_threshold=self._short, long_threshold=self._long)

    def prime(self, ts_ns: int, symbols: tuple[str, ...], closes: np.ndarray) -> ScanRecord:
        """Consume a bar of history (a restored checkpoint, a filled gap, a backfill) without
        using up a scan number: the windows advance exactly as in ``update``, and the next
        record keeps the number it would have had."""
        nxt = self._next_scan
        rec = self.update(ts_ns, symbols, closes)
        self._next_scan = nxt
        return rec

    # -- per bar ----------------------------------------------------------------------------

    def update(self, ts_ns: int, symbols: tuple[str, ...], closes: np.ndarray) -> ScanRecord:
        """Consume one bar and return its ScanRecord."""
        closes = np.ascontiguousarray(closes, dtype=np.float64)
        if closes.shape != (len(symbols),):
            raise ValueError(f"closes shape {closes.shape} does not match {len(symbols)} symbols")
        if symbols is not self._symbols and symbols != self._symbols:
            self._remap(symbols)
        self._symbols = symbols
        lam = [math.nan] * 4
        vel = [math.nan] * 4
        inst = [math.nan] * 4
        n_used = 0
        if self._have_prev:
            n_used = K.scan_bar(
                closes, self._prev, self._ring, self._t, self._run, self._same,
                self._win_arr, self._modes_arr,
                self._S, self._mean, self._eb, self._em, self._tracked, self._flat,
                self._member, self._v, self._idx, self._gmean, self._Z, self._G, self._U, self._UY,
                self._a, self._b, self._ap, self._d, self._dd, self._wv,
                self._y, self._acc, self._rows, self._mrows, self._targets,
                self._qb, self._yb, self._h, self._ha, self._hv, self._svec, self._x, self._cx,
                self._eta, self._tol, self._maxit, self._lam, self._iout,
                self._zc, self._szc, self._okc, self._blk, self._bp, self._fw, self._wkm,
            )
            self._t += 1
            lam_arr = self._lam.tolist()
            iout = self._iout.tolist()
            counters = self.counters
            for j, win in enumerate(self._wins):
                k, its, status, changed, anchored, passes, wprods = iout[j]
                lam_j = lam_arr[j]
                if status == K.STATUS_FALLBACK:
                    lam_j = self._fallback(win, k)
                    status = K.STATUS_OK
                counters.last_iterations[j] = its
                counters.last_passes[j] = passes
                counters.last_window_products[j] = wprods
                counters.last_n_used[j] = k
                counters.rows_anchored_total += anchored
                counters.membership_changes_total += changed
                prev_a = win.absorption
                if status == K.STATUS_COLD:
                    win.absorption = math.nan
                    continue
                a_w = lam_j / k
                lam[j] = lam_j
                inst[j] = 1.0 - a_w
                if not changed:
                    vel[j] = a_w - prev_a  # NaN if the previous bar was cold
                win.absorption = a_w
        else:
            # first bar: no return yet; remember the closes
            for i in range(self._n):
                c = closes[i]
                self._prev[i] = c if math.isfinite(c) and c > 0.0 else math.nan
            self._have_prev = True
        vel_div = vel[0] - vel[3]
        rec = ScanRecord(
            scan_number=self._next_scan,
            ts_ns=int(ts_ns),
            n_symbols=int(n_used),
            symbols=symbols,
            prices=frozen_array(closes.copy()),
            lambda_max=(lam[0], lam[1], lam[2], lam[3]),
            velocity=(vel[0], vel[1], vel[2], vel[3]),
            instability=(inst[0], inst[1], inst[2], inst[3]),
            vel_div=vel_div,
            regime_signal=regime_signal(vel_div, self._short, self._long),
            instability_composite=(inst[0] + inst[1] + inst[2] + inst[3]) / 4.0,
        )
        self._next_scan += 1
        return rec

    def _fallback(self, win: _Window, k: int) -> float:
        """LAPACK (``eigh``) on the compact matrix of a window the kernel could not certify."""
        self.counters.fallbacks_total += 1
        if win.mode == K.MODE_COV:
            k = K.cov_corr_compact(win.s, self._d, win.member, self._fb)
            evals, evecs = np.linalg.eigh(self._fb[:k, :k])
            win.v[win.member] = evecs[:, -1]
            return float(evals[-1])
        evals, evecs = np.linalg.eigh(win.g[: win.w, : win.w])
        u = np.ascontiguousarray(evecs[:, -1])
        K.gram_set_vector(win.z, win.w, k, win.idx, u, win.v)
        return float(evals[-1])

    def correlation_matrix(self, window_index: int) -> tuple[tuple[str, ...], np.ndarray]:
        """The members and correlation matrix window ``window_index`` used at the last bar.

        Built from the rolling state (cov mode) or the standardised window (Gram mode); meant for
        checks and diagnostics (tests prove the rolling state does not drift with it).
        """
        win = self._wins[window_index]
        syms = tuple(s for s, m in zip(self._symbols or (), win.member, strict=True) if m)
        k = len(syms)
        if win.mode == K.MODE_COV:
            full = np.triu(win.s) + np.triu(win.s, 1).T
            sub = full[np.ix_(win.member, win.member)]
            sd = np.sqrt(np.diag(sub))
            return syms, sub / np.outer(sd, sd)
        z = win.z[: win.w, :k]
        return syms, z.T @ z


def warmup(readonly_only: bool = False) -> None:
    """Compile (or load from the numba cache) every kernel on tiny inputs, both modes and the
    fallback path, so the first live bar pays no compilation. Call before reporting ready.

    ``readonly_only``: only the signature for read-only closes, the only kind the daemon
    passes (bars and restored history are frozen arrays); the writable one is a second full
    compile of the bar kernel that a first start need not wait for (bench/kernel_compile.py)."""
    rng = np.random.default_rng(0)
    px = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((12, 4)), axis=0))
    px[:, 3] = 1.0  # a constant price: exercises the flat-symbol path
    px[7, 2] = np.nan  # an absence: exercises leave/join
    syms = ("A", "B", "C", "D")
    for modes in ((K.MODE_COV,) * 4, (K.MODE_GRAM,) * 4):
        for maxit in (40, 1):  # maxit=1 forces the fallback path
            # Bars carry read-only arrays, which numba compiles as a separate signature.
            for readonly in ((True,) if readonly_only else (False, True)):
                sc = EigenScanner(windows=(3, 4, 5, 6), modes=modes, maxit=maxit)
                for t in range(px.shape[0]):
                    sc.update(t, syms, frozen_array(px[t]) if readonly else px[t].copy())
