"""The policy as pure functions: an order against the limits (pre-trade), the account against
the limits (after every fill and each tick). Each breach names its rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from dolphind_governor.settings import GovernorSettings

RULES = ("allowed_symbols", "max_leverage", "max_position_notional", "max_daily_loss",
         "max_drawdown")


@dataclass(frozen=True, slots=True)
class Breach:
    rule: str
    message: str
    value: float | str
    limit: float | str


@dataclass(frozen=True, slots=True)
class Account:
    """The account as the governor last saw it. None: not known yet."""

    equity_usdt: float | None = None
    gross_exposure_usdt: float | None = None
    drawdown: float | None = None
    # Signed notional per symbol (negative = short).
    positions_usdt: Mapping[str, float] = field(default_factory=dict)
    day_start_equity_usdt: float | None = None

    def position(self, symbol: str) -> float:
        return self.positions_usdt.get(symbol, 0.0)


def check_order(order: Any, acct: Account, s: GovernorSettings) -> Breach | None:
    """Would this order break the policy? Exits (reduce-only) always pass: refusing an exit can
    only keep risk on."""
    if getattr(order, "reduce_only", False):
        return None
    sym = order.symbol
    if s.allowed_symbols and sym not in s.allowed_symbols:
        return Breach("allowed_symbols", f"{sym} is not an allowed symbol", sym,
                      ",".join(s.allowed_symbols))
    if order.leverage > s.max_leverage:
        return Breach("max_leverage", f"order leverage {order.leverage:g} > {s.max_leverage:g}",
                      order.leverage, s.max_leverage)
    signed = order.notional_usdt if order.side == "BUY" else -order.notional_usdt
    before = acct.position(sym)
    after = abs(before + signed)
    if after > s.max_position_notional_usdt and after > abs(before):
        return Breach("max_position_notional",
                      f"{sym} position would be {after:.2f} > {s.max_position_notional_usdt:g} "
                      "USDT", after, s.max_position_notional_usdt)
    if acct.equity_usdt and acct.equity_usdt > 0 and acct.gross_exposure_usdt is not None:
        lev = (acct.gross_exposure_usdt + order.notional_usdt) / acct.equity_usdt
        if lev > s.max_leverage:
            return Breach("max_leverage", f"account leverage would be {lev:.3f} > "
                          f"{s.max_leverage:g}", lev, s.max_leverage)
    return None


def check_account(acct: Account, s: GovernorSettings) -> list[Breach]:
    """Every limit the account breaks now."""
    out = []
    for sym, notional in sorted(acct.positions_usdt.items()):
        if notional == 0:
            continue
        if s.allowed_symbols and sym not in s.allowed_symbols:
            out.append(Breach("allowed_symbols", f"position in {sym}, which is not allowed",
                              sym, ",".join(s.allowed_symbols)))
        if abs(notional) > s.max_position_notional_usdt:
            out.append(Breach("max_position_notional",
                              f"{sym} position {abs(notional):.2f} > "
                              f"{s.max_position_notional_usdt:g} USDT", abs(notional),
                              s.max_position_notional_usdt))
    eq = acct.equity_usdt
    if eq is not None and eq > 0:
        if acct.gross_exposure_usdt is not None:
            lev = acct.gross_exposure_usdt / eq
            if lev > s.max_leverage:
                out.append(Breach("max_leverage", f"account leverage {lev:.3f} > "
                                  f"{s.max_leverage:g}", lev, s.max_leverage))
        if acct.day_start_equity_usdt is not None:
            loss = acct.day_start_equity_usdt - eq
            if loss >= s.max_daily_loss_usdt:
                out.append(Breach("max_daily_loss", f"daily loss {loss:.2f} >= "
                                  f"{s.max_daily_loss_usdt:g} USDT", loss,
                                  s.max_daily_loss_usdt))
        if acct.drawdown is not None and acct.drawdown >= s.max_drawdown:
            out.append(Breach("max_drawdown", f"drawdown {acct.drawdown:.2%} >= "
                              f"{s.max_drawdown:.2%}", acct.drawdown, s.max_drawdown))
    return out
