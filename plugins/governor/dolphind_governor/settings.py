"""``[plugins.governor]``: the hard limits. They sit above the risk rails: the rails shape
normal trading, the governor is the line that, once crossed, stops it until a human looks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dolphind.plugins.settings import parse_settings, require


@dataclass(frozen=True, slots=True)
class GovernorSettings:
    # Both the leverage an order asks for and the account's gross exposure / equity.
    max_leverage: float = 5.0
    # Equity below the UTC day's first equity reading, in USDT.
    max_daily_loss_usdt: float = 1000.0
    # 1 - equity / peak equity.
    max_drawdown: float = 0.20
    # |position notional| per symbol, in USDT.
    max_position_notional_usdt: float = 15000.0
    # Symbols that may be traded at all; empty means any.
    allowed_symbols: tuple[str, ...] = ()
    # How often the account figures are re-checked between fills.
    tick_interval_s: float = 1.0


def load_settings(raw: Mapping[str, Any]) -> tuple[GovernorSettings, list[str]]:
    s, problems = parse_settings(GovernorSettings, raw)
    if problems:
        return s, problems
    for key in ("max_leverage", "max_daily_loss_usdt", "max_position_notional_usdt"):
        require(problems, getattr(s, key) > 0, key, "must be > 0")
    require(problems, 0 < s.max_drawdown < 1, "max_drawdown", "must be in (0, 1)")
    require(problems, s.tick_interval_s >= 0.05, "tick_interval_s", "must be >= 0.05")
    for i, sym in enumerate(s.allowed_symbols):
        require(problems, sym.isalnum() and sym.isupper(), f"allowed_symbols[{i}]",
                f"{sym!r} is not a venue symbol like 'BTCUSDT'")
    return s, problems
