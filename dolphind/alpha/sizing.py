"""Position sizing: strength, cubic leverage, alpha layers, fraction, ceiling (bible §6, §13.3).

All functions take the SHORT-axis vel_div (see ``signal.short_equivalent`` for LONG).

Notes on the bible's text:

* §6.4's "Effective Fraction" uses its *own* confidence, ``0.70 if is_extreme else 0.55``,
  not the 0.50–0.90 signal confidence of §4.1 (which OB Sub-2 adjusts). We port that as
  written: the signal confidence is reported in the intent's gates but does not size.
* Bucket boost (§6.4) names the win-rate tiers but no minimum sample; a bucket with no closed
  trades has no win rate, and we give it 1.0. One closed trade is already a win rate.
* Streak (§6.4) counts losses among the *last five* trades; with fewer than five trades we
  count what there is (so an empty history has 0 losses -> 1.1x, as the rule reads).
* Leverage clamp (§6.5): ``clamp(raw, min_leverage, ceiling)``; should the ceiling ever fall
  below the floor (it cannot with base_boost >= 1, mc_scale >= 0.5, market_ob_mult >= 0.85)
  the ceiling wins, because it is the safety bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from dolphind.alpha.params import StrategyParams

BUCKET_EXTREME = 0
BUCKET_STRONG = 1
BUCKET_MODERATE = 2
BUCKET_WEAK = 3
BUCKET_NAMES = ("extreme", "strong", "moderate", "weak")

# §6.4 "confidence = 0.70 if is_extreme else 0.55; conf_mult = confidence / 0.95".
SIZER_CONFIDENCE_EXTREME = 0.70
SIZER_CONFIDENCE_NORMAL = 0.55
SIZER_CONFIDENCE_REF = 0.95
EXTREME_FRACTION_BOOST = 2.0

# §6.4 trend: vd_trend < -0.01 -> 1.3x, > 0.01 -> 0.7x.
TREND_DEEPENING = -0.01
TREND_RECOVERING = 0.01
TREND_DEEPENING_MULT = 1.3
TREND_RECOVERING_MULT = 0.7

# §6.5 / OB Sub-3 bounds (§9.4: "±20%/15%").
MARKET_OB_MAX_BOOST = 0.20
MARKET_OB_MAX_DAMPEN = 0.15

STREAK_WINDOW = 5


def strength_score(vel_div: float, threshold: float, extreme: float) -> float:
    """Signal strength in [0, 1] (bible §6.1): 1 at or past extreme, linear in between."""
    if vel_div <= extreme:
        return 1.0
    s = (threshold - vel_div) / (threshold - extreme)
    return min(1.0, max(0.0, s))


def dynamic_leverage(strength: float, p: StrategyParams) -> float:
    """min + strength**convexity * (max - min) (bible §6.2): 0.5 at 0, 1.0625 at 0.5, 5.0 at 1."""
    scaled = strength ** p.leverage_convexity
    return p.min_leverage + scaled * (p.max_leverage - p.min_leverage)


def signal_bucket(vel_div: float, threshold: float, extreme: float) -> int:
    """0 extreme (<= 1.5 x extreme), 1 strong (<= extreme), 2 moderate (<= midpoint), 3 weak.

    Bible §6.3 ``get_signal_bucket_nb``; the edges are computed exactly as the bible writes
    them (so the extreme edge is the float ``-0.05 * 1.5 = -0.07500000000000001``).
    """
    if vel_div <= extreme * 1.5:
        return BUCKET_EXTREME
    if vel_div <= extreme:
        return BUCKET_STRONG
    if vel_div <= (threshold + extreme) / 2:
        return BUCKET_MODERATE
    return BUCKET_WEAK


def bucket_boost(wins: int, trades: int) -> float:
    """Win-rate feedback per bucket (bible §6.4 get_bucket_boost_nb).

    wr > 0.60 -> 1.3, > 0.55 -> 1.1, < 0.40 -> 0.7, < 0.45 -> 0.85, else 1.0; no trades -> 1.0.
    """
    if trades <= 0:
        return 1.0
    wr = wins / trades
    if wr > 0.60:
        return 1.3
    if wr > 0.55:
        return 1.1
    if wr < 0.40:
        return 0.7
    if wr < 0.45:
        return 0.85
    return 1.0


def streak_mult(recent_wins: Sequence[bool]) -> float:
    """Losses among the last 5 trades: >= 4 -> 0.5, >= 3 -> 0.7, <= 1 -> 1.1 (bible §6.4)."""
    last = recent_wins[-STREAK_WINDOW:]
    losses = sum(1 for w in last if not w)
    if losses >= 4:
        return 0.5
    if losses >= 3:
        return 0.7
    if losses <= 1:
        return 1.1
    return 1.0


def trend_mult(vd_trend: float) -> float:
    """vel_div acceleration (bible §6.4): deepening (< -0.01) 1.3x, recovering (> 0.01) 0.7x."""
    if vd_trend < TREND_DEEPENING:
        return TREND_DEEPENING_MULT
    if vd_trend > TREND_RECOVERING:
        return TREND_RECOVERING_MULT
    return 1.0


def effective_fraction(
    strength: float,
    extreme: bool,
    trend: float,
    bucket: float,
    streak: float,
    p: StrategyParams,
) -> float:
    """Capital fraction per trade, clamped to [0.02, 0.20] (bible §6.4)."""
    confidence = SIZER_CONFIDENCE_EXTREME if extreme else SIZER_CONFIDENCE_NORMAL
    conf_mult = confidence / SIZER_CONFIDENCE_REF
    extreme_boost = EXTREME_FRACTION_BOOST if extreme else 1.0
    base_frac = p.min_fraction + strength * (p.fraction - p.min_fraction)
    frac = base_frac * conf_mult * extreme_boost * trend * bucket * streak
    return min(p.fraction, max(p.min_fraction, frac))


def regime_size_mult(
    vel_div: float, base_boost: float, beta: float, mc_scale: float, p: StrategyParams
) -> float:
    """ACB scale-2 meta-boost (bible §10.4 / §6.5), recomputed every bar.

    ``base_boost * (1 + beta * strength_cubic) * mc_scale`` when beta > 0, else
    ``base_boost * mc_scale``; strength_cubic = clamp(ratio, 0, 1) ** convexity.
    """
    if beta > 0.0:
        ratio = (p.vel_div_threshold - vel_div) / (p.vel_div_threshold - p.vel_div_extreme)
        if not math.isfinite(ratio):
            ratio = 0.0
        ratio = min(1.0, max(0.0, ratio))
        return base_boost * (1.0 + beta * ratio ** p.leverage_convexity) * mc_scale
    return base_boost * mc_scale


def market_ob_mult(market_eff_imbalance: float) -> float:
    """OB Sub-3: market-wide imbalance multiplier on leverage, within +20% / -15% (§9.4).

    The bible gives only the bounds ("±20%/15%") and where it applies. Reading: the multiplier
    is ``1 + eff_imb`` clamped to [0.85, 1.20], where ``eff_imb`` is the market's mean
    imbalance_ma5 signed so that pressure in the trade's direction is positive (the same sign
    convention as OB Sub-2). No book (NaN) -> 1.0.
    """
    if not math.isfinite(market_eff_imbalance):
        return 1.0
    return min(1.0 + MARKET_OB_MAX_BOOST, max(1.0 - MARKET_OB_MAX_DAMPEN, 1.0 + market_eff_imbalance))


def leverage_ceiling(rsm: float, ob_mult: float, stalker: bool, p: StrategyParams) -> float:
    """min(max_leverage * regime_size_mult * market_ob_mult, abs_max), STALKER cap 2.0 (§6.5)."""
    ceiling = min(p.max_leverage * rsm * ob_mult, p.abs_max_leverage)
    if stalker:
        ceiling = min(ceiling, p.stalker_max_leverage)
    return ceiling


def final_leverage(
    base_leverage: float, dc_mult: float, rsm: float, ob_mult: float, ceiling: float,
    p: StrategyParams,
) -> float:
    """clamp(leverage * dc_mult * regime_size_mult * market_ob_mult, min, ceiling) (§6.5)."""
    raw = base_leverage * dc_mult * rsm * ob_mult
    return min(ceiling, max(p.min_leverage, raw))


@dataclass(frozen=True, slots=True)
class SizeResult:
    """Everything sizing decided, for the order and for the audit trail."""

    strength: float
    bucket: int
    base_leverage: float
    fraction: float
    trend_mult: float
    bucket_boost: float
    streak_mult: float
    ceiling: float
    leverage: float
    notional: float


def size_position(
    capital: float,
    vel_div: float,
    vd_trend: float,
    bucket_wins: int,
    bucket_trades: int,
    recent_wins: Sequence[bool],
    rsm: float,
    ob_mult: float,
    stalker: bool,
    p: StrategyParams,
    bucket: int | None = None,
    dc_mult: float = 1.0,
) -> SizeResult:
    """The whole sizing chain of §6 and §13.3 steps 3–6: notional = capital * fraction * leverage.

    ``vel_div`` and ``vd_trend`` are on the SHORT axis; the caller supplies the bucket's
    win/trade counts (it knows the bucket from ``signal_bucket``) and the recent outcomes.
    ``dc_mult`` is ``dc_leverage_boost`` on a DC CONFIRM, else 1.0 (§4.2; 1.0 in the champion).
    """
    thr, ext = p.vel_div_threshold, p.vel_div_extreme
    strength = strength_score(vel_div, thr, ext)
    if bucket is None:
        bucket = signal_bucket(vel_div, thr, ext)
    lev = dynamic_leverage(strength, p)
    tm = trend_mult(vd_trend)
    bb = bucket_boost(bucket_wins, bucket_trades)
    sm = streak_mult(recent_wins)
    frac = effective_fraction(strength, vel_div <= ext, tm, bb, sm, p)
    ceiling = leverage_ceiling(rsm, ob_mult, stalker, p)
    final = final_leverage(lev, dc_mult, rsm, ob_mult, ceiling, p)
    return SizeResult(
        strength=strength, bucket=bucket, base_leverage=lev, fraction=frac, trend_mult=tm,
        bucket_boost=bb, streak_mult=sm, ceiling=ceiling, leverage=final,
        notional=capital * frac * final,
    )
