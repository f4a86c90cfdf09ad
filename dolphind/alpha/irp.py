"""Asset selection by Impulse Response Profiling (bible §5) over the price windows.

Per asset, over the last ``irp_lookback`` (50) prices, in both directions (bible §5.2–§5.4):

    dir_returns[i] = (price[i+1] - price[i]) * direction
    cumulative     = cumsum(dir_returns)
    mfe            = max(cumulative)
    mae            = abs(min(cumulative, 0))
    efficiency     = mfe / (mae + 1e-6)
    alignment      = count(dir_returns > 0) / n_ret
    noise          = variance(dir_returns)
    latency        = bars to reach 10% of mfe (50 when mfe == 0)
    ARS            = 0.5 * log1p(efficiency) + 0.35 * alignment - 0.15 * noise * 1000

keep the direction with the higher ARS, drop the asset when noise > 500, latency > 20 or
alignment < 0.20, adjust ARS by book depth (OB Sub-1), sort descending, then walk the list to
the first asset with alignment >= 0.45, the expected direction and depth_quality >= 0.20
(bible §5.5). No match means no trade: there is no fallback asset.

Readings we chose where the bible is silent or ambiguous (each also noted at its line):

* Returns are *price differences*, as the bible writes them, not relative returns. Its own
  numbers only make sense that way: ``noise > 500`` can never fire on relative returns. The
  consequence is that noise (and so ARS) is in price units squared and strongly favours
  low-priced assets; that is the champion's behaviour as written, so we keep it.
* ``noise`` is the population variance (ddof=0, numpy's and numba's ``var`` default).
* ``latency`` counts bars: reaching the target on the first return is latency 1. When
  ``mfe <= 0`` the asset never moved favourably; latency is the default 50 (the bible states
  the default for ``mfe == 0``; a negative mfe is the same "never reached" case).
* Ties: ``>=`` keeps the DIRECT direction on equal ARS; equal ARS across assets keep the
  universe order (a stable sort, as the bible's bubble sort is).
* OB Sub-1 (bible §5.5/§9.4: "ARS adjusted ±5%/10% by per-asset OB depth quality") gives only
  the sizes. Reading: a deep book (depth_quality > 1.0, "> 1 = deep book" in §9.3) earns +5%,
  a thin one (< 0.5, the §8.3 OB-edge quality bar) loses 10%. The adjustment is applied to
  ``|ARS|`` so that a bonus always raises the score even when ARS is negative.
* Candidates are the assets with at least ``irp_lookback`` prices that also have a price on
  the current bar (the bible ranks every history of length >= 50 but then reads
  ``prices[trade_asset]``, which exists only for assets priced on this bar).
* A symbol with no book features (NaN depth) gets no OB adjustment and passes the depth gate:
  the bible's degradation rule for an absent book, applied per symbol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from dolphind.alpha.price_windows import PriceWindows

# §5.2–§5.3 constants, written inline in the bible's kernels.
EFFICIENCY_EPS = 1e-6
LATENCY_MFE_FRACTION = 0.10
LATENCY_DEFAULT = 50.0
ARS_W_EFFICIENCY = 0.5
ARS_W_ALIGNMENT = 0.35
ARS_W_NOISE = 0.15
ARS_NOISE_SCALE = 1000.0
# OB Sub-1 (our reading of "±5%/10%", see the module docstring).
OB1_DEEP_DEPTH = 1.0
OB1_DEEP_BONUS = 0.05
OB1_THIN_DEPTH = 0.5
OB1_THIN_PENALTY = 0.10


@dataclass(frozen=True, slots=True)
class IrpMetrics:
    """The IRP profile of one asset in one direction (bible §5.2)."""

    mfe: float
    mae: float
    efficiency: float
    alignment: float
    noise: float
    latency: float


@dataclass(frozen=True, slots=True)
class Ranking:
    """One ranked asset: the winning direction (``action``) and its metrics."""

    index: int
    action: int
    ars: float
    metrics: IrpMetrics


@dataclass(frozen=True, slots=True)
class IrpGates:
    """The filter gates and walk gates (bible §5.4, §5.5; thresholds from StrategyParams)."""

    max_noise: float = 500.0
    max_latency: float = 20.0
    min_alignment_filter: float = 0.20
    min_irp_alignment: float = 0.45
    min_depth_quality: float = 0.20


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _latency(prices: np.ndarray, start: int, n_ret: int, direction: float, mfe: float) -> float:
    if mfe <= 0.0:
        return LATENCY_DEFAULT
    target = LATENCY_MFE_FRACTION * mfe
    cum = 0.0
    for i in range(n_ret):
        cum += (prices[start + i + 1] - prices[start + i]) * direction
        if cum >= target:
            return float(i + 1)
    return LATENCY_DEFAULT  # unreachable when mfe > 0 (mfe itself is reached), kept for safety


@numba.njit(cache=True, nogil=True)
def ars_nb(efficiency: float, alignment: float, noise: float) -> float:
    """ARS = 0.5 * log1p(efficiency) + 0.35 * alignment - 0.15 * noise * 1000 (bible §5.3)."""
    return (
        ARS_W_EFFICIENCY * math.log1p(efficiency)
        + ARS_W_ALIGNMENT * alignment
        - ARS_W_NOISE * noise * ARS_NOISE_SCALE
    )


@numba.njit(cache=True, nogil=True)
def irp_nb(prices: np.ndarray, start: int, length: int, direction: float) -> tuple[
    float, float, float, float, float, float
]:
    """IRP metrics of ``prices[start:start+length]`` in ``direction`` (bible §5.2)."""
    n_ret = length - 1
    cum = 0.0
    cmax = -np.inf
    cmin = np.inf
    positive = 0
    total = 0.0
    for i in range(n_ret):
        r = (prices[start + i + 1] - prices[start + i]) * direction
        cum += r
        total += r
        if cum > cmax:
            cmax = cum
        if cum < cmin:
            cmin = cum
        if r > 0.0:
            positive += 1
    mean = total / n_ret
    # Two-pass variance: no cancellation between a large sum of squares and a large mean.
    ss = 0.0
    for i in range(n_ret):
        d = (prices[start + i + 1] - prices[start + i]) * direction - mean
        ss += d * d
    noise = ss / n_ret
    mfe = cmax
    mae = abs(min(cmin, 0.0))
    efficiency = mfe / (mae + EFFICIENCY_EPS)
    alignment = positive / n_ret
    latency = _latency(prices, start, n_ret, direction, mfe)
    return mfe, mae, efficiency, alignment, noise, latency


# Layout of the per-asset output rows: the six metrics, then ARS, action and the filter verdict.
COL_MFE, COL_MAE, COL_EFF, COL_ALIGN, COL_NOISE, COL_LATENCY, COL_ARS, COL_ACTION, COL_PASS = range(9)
OUT_COLS = 9


@numba.njit(cache=True, nogil=True, fastmath=True)
def _reductions(row: np.ndarray, s: int, n_ret: int) -> tuple[float, float, int, int, float]:
    """Max and min price after the first, up / down move counts, and the sum of squared
    deviations of the moves from their mean (two-pass variance; the mean telescopes).

    fastmath lets LLVM vectorise these reductions. It is safe here because the rows it sees
    hold only finite, positive prices (``push_prices_nb`` and ``_score_matrix`` guarantee it);
    the reassociation changes the last bits of the sum of squares only.
    """
    p0 = row[s]
    mean = (row[s + n_ret] - p0) / n_ret
    pmax = -np.inf
    pmin = np.inf
    up = 0
    down = 0
    ss = 0.0
    for i in range(n_ret):
        a = row[s + i]
        b = row[s + i + 1]
        pmax = max(pmax, b)
        pmin = min(pmin, b)
        d = b - a
        up += d > 0.0
        down += d < 0.0
        dev = d - mean
        ss += dev * dev
    return pmax, pmin, up, down, ss


@numba.njit(cache=True, nogil=True)
def _score_row(
    row: np.ndarray,
    s: int,
    n_ret: int,
    direction: float,
    dq: float,
    max_noise: float,
    max_latency: float,
    min_alignment_filter: float,
    out: np.ndarray,
    r: int,
    prune_min_alignment: float,
    prune_min_depth: float,
) -> None:
    """Score one asset (bible §5.4 steps 1–4 and OB Sub-1) into ``out[r]``.

    The bible's ``cumulative = cumsum(price[i+1] - price[i])`` telescopes to ``price[i+1] -
    price[0]``; we use that form: equal in exact arithmetic, closer to it in floating point (no
    rounding accumulates along the sum), and it removes the serial add chain that made this
    loop latency-bound. Both directions come from the same numbers: the inverse direction's
    returns are the exact negation of the direct ones. ``irp_nb`` is the literal reference
    and a test holds the two together to 1e-9.

    Pruning (selection only; ``prune_min_alignment < 0`` disables it): an asset whose DIRECT
    profile fails a gate can never be selected (if the direct side wins, that gate drops it;
    if the inverse side wins, the direction gate does), so its ARS is not computed (two
    log1p per asset are most of the kernel's cost). The selected asset is unchanged.
    """
    p0 = row[s]
    pmax, pmin, up, down, ss = _reductions(row, s, n_ret)
    cmax = pmax - p0  # max over i of cumulative, rounding is monotonic so the argmax holds
    cmin = pmin - p0
    noise = ss / n_ret
    if prune_min_alignment >= 0.0:
        al_direct = (up if direction > 0.0 else down) / n_ret
        if (
            noise > max_noise
            or al_direct < min_alignment_filter
            or al_direct < prune_min_alignment
            or (dq == dq and dq < prune_min_depth)
        ):
            out[r, COL_PASS] = 0.0
            return
    # Latency of both directions: a short pass that stops once both are known.
    lat_up = LATENCY_DEFAULT
    lat_down = LATENCY_DEFAULT
    target_up = LATENCY_MFE_FRACTION * cmax
    target_down = LATENCY_MFE_FRACTION * (-cmin)
    need_up = cmax > 0.0
    need_down = -cmin > 0.0
    i = 0
    while (need_up or need_down) and i < n_ret:
        c = row[s + i + 1] - p0
        if need_up and c >= target_up:
            lat_up = float(i + 1)
            need_up = False
        if need_down and -c >= target_down:
            lat_down = float(i + 1)
            need_down = False
        i += 1
    # +1 is "up", -1 is "down"; map to direct / inverse by ``direction``.
    mfe_up = cmax
    mae_up = abs(min(cmin, 0.0))
    mfe_dn = -cmin
    mae_dn = abs(min(-cmax, 0.0))
    eff_up = mfe_up / (mae_up + EFFICIENCY_EPS)
    eff_dn = mfe_dn / (mae_dn + EFFICIENCY_EPS)
    al_up = up / n_ret
    al_dn = down / n_ret
    ars_up = ars_nb(eff_up, al_up, noise)
    ars_dn = ars_nb(eff_dn, al_dn, noise)
    if direction > 0.0:
        take_up = ars_up >= ars_dn  # ties keep the DIRECT direction
    else:
        take_up = ars_up > ars_dn
    if take_up:
        ars, action, mfe, mae, eff, al, lat = ars_up, 1.0, mfe_up, mae_up, eff_up, al_up, lat_up
    else:
        ars, action, mfe, mae, eff, al, lat = ars_dn, -1.0, mfe_dn, mae_dn, eff_dn, al_dn, lat_down
    out[r, COL_MFE] = mfe
    out[r, COL_MAE] = mae
    out[r, COL_EFF] = eff
    out[r, COL_ALIGN] = al
    out[r, COL_NOISE] = noise
    out[r, COL_LATENCY] = lat
    out[r, COL_ACTION] = action
    out[r, COL_PASS] = 0.0
    out[r, COL_ARS] = ars
    if not (ars == ars):  # NaN ARS (non-finite prices) is never a candidate
        return
    if noise > max_noise or lat > max_latency or al < min_alignment_filter:
        return
    if dq == dq:  # OB Sub-1, only where the symbol has book features
        if dq > OB1_DEEP_DEPTH:
            ars = ars + OB1_DEEP_BONUS * abs(ars)
        elif dq < OB1_THIN_DEPTH:
            ars = ars - OB1_THIN_PENALTY * abs(ars)
    out[r, COL_ARS] = ars
    out[r, COL_PASS] = 1.0


@numba.njit(cache=True, nogil=True)
def score_assets_nb(
    buf: np.ndarray,
    starts: np.ndarray,
    valid: np.ndarray,
    length: int,
    direction: float,
    depth_quality: np.ndarray,
    max_noise: float,
    max_latency: float,
    min_alignment_filter: float,
    out: np.ndarray,
) -> None:
    """Score every row of ``buf``; row ``r`` reads ``buf[r, starts[r]:starts[r]+length]``."""
    for r in range(buf.shape[0]):
        if not valid[r]:
            out[r, COL_PASS] = 0.0
            continue
        _score_row(buf[r], starts[r], length - 1, direction, depth_quality[r],
                   max_noise, max_latency, min_alignment_filter, out, r, -1.0, 0.0)


@numba.njit(cache=True, nogil=True)
def select_nb(
    out: np.ndarray,
    n: int,
    depth_quality: np.ndarray,
    expected_action: float,
    min_irp_alignment: float,
    min_depth_quality: float,
) -> int:
    """The row the bible's walk over the ranked list would pick, or -1 (bible §5.5).

    Walking a stably sorted list to the first row passing the walk gates is the same as taking
    the highest ARS among rows passing them, lowest row on ties; this is O(N), no sort.
    """
    best = -1
    best_ars = -np.inf
    for r in range(n):
        if out[r, COL_PASS] == 0.0:
            continue
        if min_irp_alignment > 0.0 and out[r, COL_ALIGN] < min_irp_alignment:
            continue
        if out[r, COL_ACTION] != expected_action:
            continue
        dq = depth_quality[r]
        if dq == dq and dq < min_depth_quality:
            continue
        if best == -1 or out[r, COL_ARS] > best_ars:
            best = r
            best_ars = out[r, COL_ARS]
    return best


@numba.njit(cache=True, nogil=True)
def select_windows_nb(
    buf: np.ndarray,
    head: np.ndarray,
    count: np.ndarray,
    seen: np.ndarray,
    n: int,
    bar: int,
    width: int,
    length: int,
    direction: float,
    depth_quality: np.ndarray,
    max_noise: float,
    max_latency: float,
    min_alignment_filter: float,
    min_irp_alignment: float,
    min_depth_quality: float,
    out: np.ndarray,
) -> int:
    """Score the ring-buffer rows priced on ``bar`` with >= ``length`` prices, then select.

    One call per bar (numba's per-call argument checks cost more than the loop at N=540).
    """
    for r in range(n):
        if count[r] < length or seen[r] != bar:
            out[r, COL_PASS] = 0.0
            continue
        _score_row(buf[r], head[r] + width - length, length - 1, direction, depth_quality[r],
                   max_noise, max_latency, min_alignment_filter, out, r,
                   max(0.0, min_irp_alignment), min_depth_quality)
    return select_nb(out, n, depth_quality, direction, min_irp_alignment, min_depth_quality)


# ---------------------------------------------------------------------------------------------
# Python entry points
# ---------------------------------------------------------------------------------------------


class IrpScorer:
    """A reusable output buffer for scoring a ``PriceWindows`` every bar without allocating."""

    def __init__(self) -> None:
        self.out = np.zeros((64, OUT_COLS))

    def select(
        self,
        windows: PriceWindows,
        length: int,
        direction: int,
        depth_quality: np.ndarray,
        gates: IrpGates,
        eligible: np.ndarray | None = None,
    ) -> Ranking | None:
        """Rank the symbols priced on the latest bar and pick the trade asset (bible §5.4–§5.5).

        ``depth_quality`` is indexed by row (NaN where a symbol has no book features).
        ``eligible`` (by row; None: every row) says which assets may be traded at all (the
        risk allowlist, the venue's symbols): the walk skips the others and goes on to the
        next ranked asset, as it does for any other walk gate.
        """
        n = windows.n_rows
        if n > self.out.shape[0]:
            self.out = np.zeros((max(n, 2 * self.out.shape[0]), OUT_COLS))
        best = select_windows_nb(
            windows.buf, windows.head, windows.count, windows.seen, n, windows.bar,
            windows.width, length, float(direction), depth_quality,
            gates.max_noise, gates.max_latency, gates.min_alignment_filter,
            gates.min_irp_alignment, gates.min_depth_quality, self.out,
        )
        if best >= 0 and eligible is not None and not eligible[best]:
            self.out[:n][~eligible[:n], COL_PASS] = 0.0
            best = select_nb(self.out, n, depth_quality, float(direction),
                             gates.min_irp_alignment, gates.min_depth_quality)
        return None if best < 0 else _ranking(best, self.out)


def _ranking(r: int, out: np.ndarray) -> Ranking:
    m = out[r]
    return Ranking(
        index=int(r),
        action=int(m[COL_ACTION]),
        ars=float(m[COL_ARS]),
        metrics=IrpMetrics(
            mfe=float(m[COL_MFE]), mae=float(m[COL_MAE]), efficiency=float(m[COL_EFF]),
            alignment=float(m[COL_ALIGN]), noise=float(m[COL_NOISE]),
            latency=float(m[COL_LATENCY]),
        ),
    )


def compute_irp(prices: np.ndarray, direction: int) -> IrpMetrics:
    """IRP metrics of a price segment in ``direction`` (bible §5.2)."""
    p = np.ascontiguousarray(prices, dtype=np.float64)
    if p.shape[0] < 2:
        raise ValueError("IRP needs at least two prices")
    mfe, mae, eff, al, noise, lat = irp_nb(p, 0, p.shape[0], float(direction))
    return IrpMetrics(mfe, mae, eff, al, noise, lat)


def compute_ars(m: IrpMetrics) -> float:
    """ARS of a metrics record (bible §5.3)."""
    return float(ars_nb(m.efficiency, m.alignment, m.noise))


def _score_matrix(
    prices_2d: np.ndarray, direction: int, depth_quality: np.ndarray | None, gates: IrpGates
) -> tuple[np.ndarray, np.ndarray]:
    p = np.ascontiguousarray(prices_2d, dtype=np.float64)
    n, length = p.shape
    if length < 2:
        raise ValueError("IRP needs at least two prices per asset")
    dq = np.full(n, np.nan) if depth_quality is None else np.asarray(depth_quality, np.float64)
    valid = np.all(np.isfinite(p) & (p > 0.0), axis=1)
    out = np.zeros((n, OUT_COLS))
    score_assets_nb(
        p, np.zeros(n, dtype=np.int64), valid, length, float(direction), dq,
        gates.max_noise, gates.max_latency, gates.min_alignment_filter, out,
    )
    return out, dq


def rank_assets(
    prices_2d: np.ndarray,
    direction: int,
    depth_quality: np.ndarray | None = None,
    gates: IrpGates = IrpGates(),
) -> list[Ranking]:
    """Every asset passing the filter gates, ARS descending (bible §5.4; stable on ties).

    ``prices_2d[i]`` is asset ``i``'s last prices (a row with any NaN is not a candidate).
    """
    out, _ = _score_matrix(prices_2d, direction, depth_quality, gates)
    idx = np.flatnonzero(out[:, COL_PASS] != 0.0)
    order = idx[np.argsort(-out[idx, COL_ARS], kind="stable")]
    return [_ranking(int(r), out) for r in order]


def select_asset(
    prices_2d: np.ndarray,
    direction: int,
    depth_quality: np.ndarray | None = None,
    gates: IrpGates = IrpGates(),
) -> Ranking | None:
    """The trade asset: first ranked asset passing alignment, direction and depth gates (§5.5)."""
    out, dq = _score_matrix(prices_2d, direction, depth_quality, gates)
    best = select_nb(
        out, out.shape[0], dq, float(direction), gates.min_irp_alignment, gates.min_depth_quality,
    )
    return None if best < 0 else _ranking(best, out)
