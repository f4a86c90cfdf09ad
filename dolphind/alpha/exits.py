"""Exit management (bible §7): fixed TP, stop, max hold, book-driven adjustments, forced exits.

Priority (§7.1, §7.3, §11.7), evaluated by ``evaluate_exit`` in this order:

1. SUBDAY_ACB_NORMALIZATION — an ACB update applied at the start of this bar dropped the boost
   from >= 1.25 to < 1.10 (§7.3; the pending update is applied before the bar is processed).
2. HIBERNATE_HALT — the posture is HIBERNATE (``_manage_position`` forces the exit, §11.7).
3. FIXED_TP — ``pnl_pct >= tp`` (0.0095, adjusted by the book, §7.2).
4. STOP_LOSS — ``pnl_pct <= -sl`` (1.0 = off; 0.10 under withdrawal stress).
5. (vel_div adverse-turn exits: disabled in the champion, ``vd_enabled=False``; not ported.)
6. MAX_HOLD — ``bars_held >= max_hold`` (120, adjusted by the book).

``pnl_pct`` is measured on the bar's reference price with no fees or slippage: both are the
venue's (SPEC §3 Friction; bible §7.4 is the venue's exit-slippage model, not ours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dolphind.alpha.params import StrategyParams

FIXED_TP = "FIXED_TP"
STOP_LOSS = "STOP_LOSS"
MAX_HOLD = "MAX_HOLD"
HIBERNATE_HALT = "HIBERNATE_HALT"
SUBDAY_ACB_NORMALIZATION = "SUBDAY_ACB_NORMALIZATION"

# §7.2 thresholds on the effective imbalance, written inline in the bible.
OPPOSING_IMB = -0.10
FAVOURABLE_CALM_IMB = 0.15


def pnl_pct(entry_price: float, price: float, direction: int) -> float:
    """Unlevered return of the position at ``price``: SHORT gains when the price falls."""
    return (price - entry_price) / entry_price * direction


@dataclass(frozen=True, slots=True)
class ExitLevels:
    """The take-profit, stop and max hold in force for this bar (after §7.2)."""

    tp_pct: float
    sl_pct: float
    max_hold_bars: int


@dataclass(frozen=True, slots=True)
class BookStress:
    """The book features §7.2 reads; ``None`` for the whole object when there is no book."""

    cascade_count: int
    regime_signal: int
    imbalance_ma5: float  # of the position's symbol (NaN when unknown)
    withdrawal_velocity: float  # of the position's symbol (NaN when unknown)


def dynamic_levels(
    p: StrategyParams, direction: int, pnl: float, book: BookStress | None
) -> ExitLevels:
    """OB-driven TP / SL / max hold (bible §7.2). No book -> the fixed champion levels."""
    tp = p.fixed_tp_pct
    sl = p.stop_pct
    hold = p.max_hold_bars
    if book is None:
        return ExitLevels(tp, sl, hold)
    imb = book.imbalance_ma5
    # Same sign convention as OB Sub-2: pressure in the position's favour is positive.
    eff_imb = (-imb if direction < 0 else imb) if math.isfinite(imb) else 0.0
    stressed = False
    if book.cascade_count > 0:
        tp *= p.cascade_tp_mult
        hold = int(p.max_hold_bars * p.cascade_hold_mult)
        stressed = True
    elif book.regime_signal == 1:
        sl = p.withdrawal_sl_pct
        if pnl > 0.0:
            tp *= p.withdrawal_tp_mult
        if eff_imb < OPPOSING_IMB:
            hold = int(p.max_hold_bars * p.opposing_hold_mult)
        stressed = True
    elif book.regime_signal == -1 and eff_imb > FAVOURABLE_CALM_IMB:
        hold = int(p.max_hold_bars * p.calm_hold_mult)
    wv = book.withdrawal_velocity
    if not stressed and math.isfinite(wv) and wv < p.asset_withdrawal_velocity:
        hold = min(hold, int(p.max_hold_bars * p.opposing_hold_mult))
        if pnl > 0.0:
            tp *= p.asset_withdrawal_tp_mult
    return ExitLevels(tp, sl, hold)


@dataclass(frozen=True, slots=True)
class ExitDecision:
    """Why the position closes, with the levels and pnl that decided it."""

    reason: str
    pnl_pct: float
    levels: ExitLevels


def evaluate_exit(
    p: StrategyParams,
    entry_price: float,
    price: float,
    direction: int,
    bars_held: int,
    book: BookStress | None,
    hibernate: bool = False,
    subday_acb_exit: bool = False,
) -> ExitDecision | None:
    """The exit due on this bar, or None (priority order in the module docstring).

    A non-finite ``price`` (the symbol had no price this bar) skips the price-based exits but
    not the forced ones or MAX_HOLD.
    """
    pnl = pnl_pct(entry_price, price, direction) if math.isfinite(price) else math.nan
    levels = dynamic_levels(p, direction, pnl if math.isfinite(pnl) else 0.0, book)
    if subday_acb_exit:
        return ExitDecision(SUBDAY_ACB_NORMALIZATION, pnl, levels)
    if hibernate:
        return ExitDecision(HIBERNATE_HALT, pnl, levels)
    if math.isfinite(pnl):
        if pnl >= levels.tp_pct:
            return ExitDecision(FIXED_TP, pnl, levels)
        if pnl <= -levels.sl_pct:
            return ExitDecision(STOP_LOSS, pnl, levels)
    if bars_held >= levels.max_hold_bars:
        return ExitDecision(MAX_HOLD, pnl, levels)
    return None
