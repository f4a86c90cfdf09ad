"""Building the execution stage: its risk rails, the control plane's overrides, and the stage
itself from its services. Wiring, so it lives in the app package.

The rails run on a clock: the services' monotonic clock live and on paper; in a backtest the
market time of the latest bar the stage has marked, so that a replay at full speed makes the
same decisions on every run. That clock is the stage's own, which is why the rails are built
before the stage they read it from (they first read it on the first intent, when the stage
exists).
"""

from __future__ import annotations

from typing import Callable

from dolphind.channels import Channel
from dolphind.events import Bar, OrderIntent
from dolphind.execution.stage import ExecutionStage
from dolphind.execution.state import ExecutionServices
from dolphind.risk.overrides import RiskOverrides
from dolphind.risk.rails import RiskRails, Veto


def build_execution(intents: Channel[OrderIntent | Bar], services: ExecutionServices,
                    veto: Veto | None = None) -> ExecutionStage:
    """The execution stage reading ``intents``, its rails checking against the risk config with
    the control plane's overrides applied, and ``veto`` (the plugins' hook) asked last."""
    config = services.config
    overrides = RiskOverrides(services.control, lambda: config().risk)
    stage: ExecutionStage
    clock: Callable[[], float] = ((lambda: stage.market_time_s) if services.backtest
                                  else services.monotonic)
    rails = RiskRails(overrides.risk_config, veto, lambda: config().plugins.veto_budget_ms,
                      clock, on_veto_overrun=services.m.veto_overruns.inc)
    stage = ExecutionStage(intents, services, rails, overrides)
    # A live venue is not reconciled until its positions match the stage's book: it asks
    # after every user-stream reconnect and lease takeover.
    services.venue.set_position_check(stage.check_positions)
    return stage
