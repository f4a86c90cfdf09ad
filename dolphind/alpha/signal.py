"""The entry signal: vel_div gate, confidence, direction confirmation, book confirmation.

Bible §4. Everything here is a pure function of numbers; the engine decides the order.

LONG path (bible §4.1 gives only its gate, ``vel_div > 0.01``): it is the SHORT geometry
mirrored about the LONG threshold. ``short_equivalent`` maps a LONG bar's vel_div onto the
SHORT axis (``vel_div = +0.04`` -> ``-0.05``) so confidence, strength, buckets and sizing are
the same formulas with no second set of constants. This is our reading; it is off in the champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

DcResult = Literal["CONFIRM", "CONTRADICT", "NEUTRAL"]

SHORT = -1
LONG = 1

# §4.1: confidence = 0.50 + ratio * 0.40, range [0.50, 0.90].
CONFIDENCE_BASE = 0.50
CONFIDENCE_SPAN = 0.40

# §4.3 OB Sub-2 constants, written inline in the bible's formula.
OB_CONFIRM_IMB = 0.10
OB_CONFIRM_MAX_BOOST = 0.15
OB_CONFIRM_SLOPE = 0.5
OB_HARD_SKIP_IMB = -0.15
OB_HARD_SKIP_PERSISTENCE = 0.60
OB_DAMPEN_IMB = -0.10
OB_DAMPEN_FLOOR = 0.85
OB_DAMPEN_SLOPE = 0.4


def signal_direction(
    vel_div: float, threshold: float, long_enabled: bool, long_threshold: float
) -> int:
    """The side a bar's vel_div calls for: -1 SHORT, +1 LONG, 0 none (bible §4.1).

    SHORT when ``vel_div < threshold`` (strict); LONG when enabled and ``vel_div >
    long_threshold`` (strict). NaN (a cold scan) compares false and gives no signal.
    """
    if vel_div < threshold:
        return SHORT
    if long_enabled and vel_div > long_threshold:
        return LONG
    return 0


def short_equivalent(vel_div: float, direction: int, threshold: float, long_threshold: float) -> float:
    """vel_div on the SHORT axis: itself for SHORT, mirrored about the LONG gate for LONG.

    Mirroring keeps the distance past the gate: LONG ``long_threshold + d`` -> ``threshold - d``.
    """
    if direction == LONG:
        return threshold - (vel_div - long_threshold)
    return vel_div


def signal_ratio(vel_div: float, threshold: float, extreme: float) -> float:
    """clamp((threshold - vel_div) / (threshold - extreme), 0, 1) (bible §4.1, §6.1, §10.4)."""
    ratio = (threshold - vel_div) / (threshold - extreme)
    if ratio < 0.0:
        return 0.0
    if ratio > 1.0:
        return 1.0
    return ratio


def short_confidence(vel_div: float, threshold: float, extreme: float) -> float:
    """Confidence 0.50–0.90 by the signal ratio (bible §4.1).

    -0.02 -> 0.50, -0.035 -> 0.70, -0.05 (and beyond) -> 0.90.
    """
    return CONFIDENCE_BASE + signal_ratio(vel_div, threshold, extreme) * CONFIDENCE_SPAN


def is_extreme(vel_div: float, extreme: float) -> bool:
    """``vel_div <= extreme`` (-0.05) (bible §4.1)."""
    return vel_div <= extreme


def direction_confirmation(
    prices: np.ndarray, lookback_bars: int, min_magnitude_bps: float, direction: int
) -> DcResult:
    """Direction confirmation on the selected asset's prices (bible §4.2, ``check_dc_nb``).

    ``p0 = price[n - lookback - 1]``, ``p1 = price[n - 1]``, change in bps; for SHORT a fall of
    more than ``min_magnitude_bps`` confirms and a rise of more than it contradicts. LONG is the
    mirror (the bible writes only the SHORT branch). Too little history is NEUTRAL, as is a
    non-positive or non-finite reference price (no reading, not a contradiction).
    """
    n = prices.shape[0]
    if n < lookback_bars + 1:
        return "NEUTRAL"
    p0 = float(prices[n - lookback_bars - 1])
    p1 = float(prices[n - 1])
    if not (p0 > 0.0 and math.isfinite(p1)):
        return "NEUTRAL"
    chg_bps = (p1 - p0) / p0 * 10000.0
    # For SHORT a falling price agrees; flip the sign for LONG so one comparison serves both.
    agreeing = -chg_bps if direction == SHORT else chg_bps
    if agreeing > min_magnitude_bps:
        return "CONFIRM"
    if agreeing < -min_magnitude_bps:
        return "CONTRADICT"
    return "NEUTRAL"


@dataclass(frozen=True, slots=True)
class BookConfirmation:
    """Result of OB Sub-2: the confidence multiplier, or a hard skip."""

    skip: bool
    confidence_mult: float
    effective_imbalance: float


def book_confirmation(imbalance_ma5: float, persistence: float, direction: int) -> BookConfirmation:
    """Per-asset imbalance confirmation, OB Sub-2 (bible §4.3).

    ``eff_imb = -imbalance_ma5`` for SHORT (sell pressure is positive), ``+imbalance_ma5`` for
    LONG. > 0.10 boosts confidence by ``min(0.15, eff_imb * persistence * 0.5)``; < -0.15 with
    persistence > 0.60 is a hard skip; < -0.10 dampens by ``max(0.85, 1 - |eff_imb| *
    persistence * 0.4)``. Non-finite features (no book for this symbol) change nothing.
    """
    if not (math.isfinite(imbalance_ma5) and math.isfinite(persistence)):
        return BookConfirmation(False, 1.0, 0.0)
    eff_imb = -imbalance_ma5 if direction == SHORT else imbalance_ma5
    if eff_imb > OB_CONFIRM_IMB:
        mult = 1.0 + min(OB_CONFIRM_MAX_BOOST, eff_imb * persistence * OB_CONFIRM_SLOPE)
        return BookConfirmation(False, mult, eff_imb)
    if eff_imb < OB_HARD_SKIP_IMB and persistence > OB_HARD_SKIP_PERSISTENCE:
        return BookConfirmation(True, 1.0, eff_imb)
    if eff_imb < OB_DAMPEN_IMB:
        mult = max(OB_DAMPEN_FLOOR, 1.0 - abs(eff_imb) * persistence * OB_DAMPEN_SLOPE)
        return BookConfirmation(False, mult, eff_imb)
    return BookConfirmation(False, 1.0, eff_imb)


def vel_div_trend(history: np.ndarray | Sequence[float], span: int = 10) -> float:
    """``vel_div_history[-1] - vel_div_history[-10]`` (bible §6.4 get_trend_mult_nb).

    With fewer than ``span`` values there is no trend: 0.0 (multiplier 1.0).
    """
    if len(history) < span:
        return 0.0
    return float(history[-1]) - float(history[-span])


def rolling_vol(prices: np.ndarray, window: int) -> float:
    """Std of the last ``window`` simple returns (bible §25.6 "Rolling 50-bar dvol").

    NaN when there are fewer than ``window + 1`` prices. Population std (ddof=0).
    """
    if prices.shape[0] < window + 1:
        return math.nan
    p = prices[-(window + 1):]
    returns = np.diff(p) / p[:-1]
    return float(np.std(returns))


def vol_regime_ok(dvol: float, threshold: float | None) -> bool:
    """Volatility regime gate (bible §13.1 vol_ok, §25.6 VOL_P60_THRESHOLD).

    ``threshold is None`` -> True (the bible's fallback: warm-up only). Otherwise trade only
    when the rolling vol is above the threshold (the 60th-percentile name says "the upper 40%
    of volatility", where the instability thesis lives); an unknown vol (NaN) is not ok.
    """
    if threshold is None:
        return True
    return dvol > threshold
