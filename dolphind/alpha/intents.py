"""The engine's orders: entry and exit intents with the gate values that led to them.

The gates travel with the intent into the audit trail (``OrderIntent.gates``), in a fixed
order: they are the record of why the engine did what it did.
"""

from __future__ import annotations

from dolphind.alpha.exits import ExitDecision
from dolphind.alpha.irp import Ranking
from dolphind.alpha.posture import PostureState
from dolphind.alpha.signal import SHORT
from dolphind.alpha.sizing import SizeResult
from dolphind.alpha.views import PositionView
from dolphind.events import OrderIntent, ScanRecord

GateValue = float | str | bool


def exit_intent(scan: ScanRecord, pos: PositionView, decision: ExitDecision, ref_price: float,
                posture: str, acb_boost: float) -> OrderIntent:
    """Close ``pos`` (reduce-only, its whole notional) for ``decision.reason``."""
    lv = decision.levels
    return OrderIntent(
        intent_id=f"{scan.scan_number}-{pos.symbol}-exit",
        ts_ns=scan.ts_ns,
        symbol=pos.symbol,
        side="BUY" if pos.direction == SHORT else "SELL",
        notional_usdt=pos.notional,
        leverage=pos.leverage,
        reduce_only=True,
        reason=decision.reason,
        ref_price=ref_price,
        gates=(
            ("pnl_pct", decision.pnl_pct),
            ("tp_pct", lv.tp_pct),
            ("sl_pct", lv.sl_pct),
            ("max_hold_bars", float(lv.max_hold_bars)),
            ("bars_held", float(pos.bars_held)),
            ("posture", posture),
            ("acb_boost", acb_boost),
            ("entry_scan", float(pos.entry_scan)),
        ),
    )


def entry_intent(
    scan: ScanRecord, symbol: str, direction: int, ref_price: float, size: SizeResult,
    irp: Ranking | None, state: PostureState, *, confidence: float, bucket: int, dc: str,
    ob_conf_mult: float, ob_mult: float, rsm: float, acb_boost: float, acb_beta: float,
    mc_status: str,
) -> OrderIntent:
    """Open a position in ``symbol`` (§13.3), sized by ``size``."""
    gates: list[tuple[str, GateValue]] = [
        ("vel_div", scan.vel_div),
        ("direction", float(direction)),
        ("confidence", confidence),
        ("strength", size.strength),
        ("bucket", float(bucket)),
        ("dc", dc),
        ("ob_confidence_mult", ob_conf_mult),
    ]
    if irp is not None:
        m = irp.metrics
        gates += [
            ("irp_ars", irp.ars),
            ("irp_alignment", m.alignment),
            ("irp_efficiency", m.efficiency),
            ("irp_noise", m.noise),
            ("irp_latency", m.latency),
        ]
    gates += [
        ("fraction", size.fraction),
        ("base_leverage", size.base_leverage),
        ("trend_mult", size.trend_mult),
        ("bucket_boost", size.bucket_boost),
        ("streak_mult", size.streak_mult),
        ("market_ob_mult", ob_mult),
        ("regime_size_mult", rsm),
        ("leverage_ceiling", size.ceiling),
        ("acb_boost", acb_boost),
        ("acb_beta", acb_beta),
        ("mc_status", mc_status),
        ("posture", state.posture),
        ("rm", state.rm),
    ]
    return OrderIntent(
        intent_id=f"{scan.scan_number}-{symbol}-entry",
        ts_ns=scan.ts_ns,
        symbol=symbol,
        side="SELL" if direction == SHORT else "BUY",
        notional_usdt=size.notional,
        leverage=size.leverage,
        reduce_only=False,
        reason="VEL_DIV_SHORT" if direction == SHORT else "VEL_DIV_LONG",
        ref_price=ref_price,
        gates=tuple(gates),
    )
