"""Leverage: the caps, who owns each, and the rail's arithmetic.

Four limits bound the leverage of a position, each with one owner:

1. the strategy's ceiling (bible §6.5): ``min(max_leverage x regime size mult x market OB
   mult, abs_max_leverage)``, at most ``stalker_max_leverage`` in STALKER posture. Owned by the
   strategy (``alpha/sizing.leverage_ceiling`` on ``alpha/params``): it shapes the intent's
   leverage, which the alpha layer computes without knowing the rails;
2. the risk rail (``risk.max_leverage``, owned here): the intent's leverage and the account's
   leverage after the order (gross exposure / equity) are both at most the cap. It is checked
   after the strategy's ceiling, so a strategy that asks for more is refused, never silently
   trimmed;
3. the venue account's leverage per symbol (``execution.binance.leverage`` /
   ``default_leverage``): ``symbol_leverage`` here says which applies, and the Binance
   account's setup (``venues/binance/account.py``) sets the account to it at start;
4. Binance's leverage brackets (``risk/brackets.py``): the maintenance margin of a notional,
   which decides liquidation in the paper venue.
"""

from __future__ import annotations

from typing import Mapping

def account_leverage(gross_after_usdt: float, equity_usdt: float) -> float:
    """The account's leverage once an order of the account's gross exposure is filled."""
    return gross_after_usdt / equity_usdt


def leverage_refusal(intent_leverage: float, gross_after_usdt: float, equity_usdt: float,
                     cap: float) -> str | None:
    """Why an entry breaks the rail's leverage cap, or None: the intent's own leverage first,
    then the account's after the order."""
    if intent_leverage > cap:
        return f"intent leverage {intent_leverage:g} > {cap:g}"
    if equity_usdt <= 0:
        return "equity is not positive"
    lev = account_leverage(gross_after_usdt, equity_usdt)
    if lev > cap:
        return f"account leverage would be {lev:.3f} > {cap:g}"
    return None


def symbol_leverage(per_symbol: Mapping[str, int], default: int, symbol: str) -> int:
    """The leverage the venue account is set to for ``symbol`` at start (0: leave it as the
    account has it)."""
    return int(dict(per_symbol).get(symbol, default))
