"""The control plane's temporary risk reductions, applied: the one place that says what a risk
multiplier and an order-rate throttle do to trading.

The control plane (``dolphind.control``) holds the overrides (who set them, for how long, the
smallest in force); it does not interpret them. Here they take effect:

- the rails read the risk config with the overrides applied (``overridden``): the order rate
  times the throttle; the exposure caps and the largest order notional times the multiplier;
- a new entry is shrunk by the multiplier before it is routed (``shrunk_entry``), and says so in
  its gates; an exit never is: it closes the whole position, and shrinking it would leave part
  of the position open.

Both factors are in (0, 1]: an override only ever lowers risk.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

from dolphind.config import RiskConfig
from dolphind.events import OrderIntent


class OverrideSource(Protocol):
    """What holds the overrides in force (the control plane)."""

    def risk_multiplier(self) -> float: ...

    def order_rate_factor(self) -> float: ...


def overridden(base: RiskConfig, risk_multiplier: float, rate_factor: float) -> RiskConfig:
    """``base`` with the overrides applied (``base`` itself when none is in force)."""
    if risk_multiplier == 1.0 and rate_factor == 1.0:
        return base
    return dataclasses.replace(
        base,
        max_orders_per_minute=base.max_orders_per_minute * rate_factor,
        max_order_notional_usdt=base.max_order_notional_usdt * risk_multiplier,
        max_symbol_exposure_usdt=base.max_symbol_exposure_usdt * risk_multiplier,
        max_gross_exposure_usdt=base.max_gross_exposure_usdt * risk_multiplier)


def shrunk_entry(intent: OrderIntent, risk_multiplier: float) -> OrderIntent:
    """A new entry's notional times the multiplier (recorded in its gates); exits unchanged."""
    if intent.reduce_only or risk_multiplier >= 1.0:
        return intent
    return dataclasses.replace(intent, notional_usdt=intent.notional_usdt * risk_multiplier,
                               gates=intent.gates + (("risk_multiplier", risk_multiplier),))


class RiskOverrides:
    """The overrides in force, applied to the current risk config and to intents."""

    def __init__(self, source: OverrideSource, config: Callable[[], RiskConfig]) -> None:
        self._source = source
        self._config = config

    def risk_config(self) -> RiskConfig:
        """What the rails check against (a guardian "halve risk" or a throttle scales the caps
        and the order rate until it expires)."""
        return overridden(self._config(), self._source.risk_multiplier(),
                          self._source.order_rate_factor())

    def intent(self, intent: OrderIntent) -> OrderIntent:
        """``intent`` as it may be traded now (a new entry shrunk by the risk multiplier)."""
        if intent.reduce_only:
            return intent
        return shrunk_entry(intent, self._source.risk_multiplier())
