"""The daemon's live figures, read from its Prometheus registry (``ctx.metrics_registry``).

The metrics are the daemon's public, documented surface (SPEC §1, §4, §6, §9): watching them
is what an operator's alerting does, and what M20 did. Reading them keeps the watchers
decoupled from the stages' internals, so a figure appears as soon as its stage exports it.
A figure whose metric is not exported (yet) is None and the rules that need it stay quiet.

Only the named metrics are collected (``restricted_registry``), never the process collector
(which reads /proc): a read is in-memory work and cheap enough to do on the loop each tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

EQUITY = "dolphind_equity_usdt"
PEAK_EQUITY = "dolphind_peak_equity_usdt"
DRAWDOWN = "dolphind_drawdown_ratio"
GROSS_EXPOSURE = "dolphind_gross_exposure_usdt"
POSITION_NOTIONAL = "dolphind_position_notional_usdt"
RISK_REJECTIONS = "dolphind_risk_rejections_total"
ACK_SUM = "dolphind_intent_to_ack_seconds_sum"
ACK_COUNT = "dolphind_intent_to_ack_seconds_count"
FEED_AGE = "dolphind_feed_last_message_age_seconds"
FEED_GAPS = "dolphind_feed_gaps_total"
HEARTBEAT = "dolphind_stage_heartbeat_timestamp_seconds"
HALTED = "dolphind_trading_halted"
BARS = "dolphind_bars_total"

_NAMES = (EQUITY, PEAK_EQUITY, DRAWDOWN, GROSS_EXPOSURE, POSITION_NOTIONAL, RISK_REJECTIONS,
          ACK_SUM, ACK_COUNT, FEED_AGE, FEED_GAPS, HEARTBEAT, HALTED, BARS)


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """One consistent read of the figures the M-series watch. None: not exported."""

    equity_usdt: float | None = None
    peak_equity_usdt: float | None = None
    drawdown: float | None = None
    gross_exposure_usdt: float | None = None
    position_notional_usdt: Mapping[str, float] = field(default_factory=dict)
    # Cumulative, by rule.
    risk_rejections: Mapping[str, float] = field(default_factory=dict)
    # Cumulative sum and count of intent -> venue acknowledgement latency.
    ack_seconds_sum: float | None = None
    ack_count: float | None = None
    # The live feed's worst connection: seconds since its last message.
    feed_message_age_s: float | None = None
    feed_gaps_total: float | None = None
    # Wall time of the feed stage's last heartbeat (any feed: replay or live).
    feed_heartbeat_ts: float | None = None
    halted: bool | None = None
    bars_total: float | None = None

    @property
    def account_known(self) -> bool:
        """True once the execution stage reports a positive equity."""
        return self.equity_usdt is not None and self.equity_usdt > 0

    @property
    def account_leverage(self) -> float | None:
        if not self.account_known or self.gross_exposure_usdt is None:
            return None
        return self.gross_exposure_usdt / self.equity_usdt  # type: ignore[operator]

    def feed_age_s(self, wall_now: float) -> float | None:
        """Seconds the feed has been silent: the live feed's own figure when it exports one,
        else the time since the feed stage's last heartbeat (a replay feed beats per bar)."""
        if self.feed_message_age_s is not None:
            return self.feed_message_age_s
        if self.feed_heartbeat_ts is not None and self.feed_heartbeat_ts > 0:
            return max(0.0, wall_now - self.feed_heartbeat_ts)
        return None


def read_figures(registry: Any) -> LiveFigures:
    """Collect the named metrics from ``registry`` (a prometheus CollectorRegistry)."""
    scalars: dict[str, float] = {}
    positions: dict[str, float] = {}
    rejections: dict[str, float] = {}
    feed_ages: list[float] = []
    heartbeat: float | None = None
    for family in registry.restricted_registry(_NAMES).collect():
        for s in family.samples:
            if s.name == POSITION_NOTIONAL:
                positions[s.labels.get("symbol", "")] = s.value
            elif s.name == RISK_REJECTIONS:
                rule = s.labels.get("rule", "")
                rejections[rule] = rejections.get(rule, 0.0) + s.value
            elif s.name == FEED_AGE:
                feed_ages.append(s.value)
            elif s.name == FEED_GAPS:  # labelled by reason: the total is what counts here
                scalars[FEED_GAPS] = scalars.get(FEED_GAPS, 0.0) + s.value
            elif s.name == HEARTBEAT:
                if s.labels.get("stage") == "feed":
                    heartbeat = s.value
            elif s.name in _NAMES:
                scalars[s.name] = s.value
    halted = scalars.get(HALTED)
    return LiveFigures(
        equity_usdt=scalars.get(EQUITY), peak_equity_usdt=scalars.get(PEAK_EQUITY),
        drawdown=scalars.get(DRAWDOWN), gross_exposure_usdt=scalars.get(GROSS_EXPOSURE),
        position_notional_usdt=positions, risk_rejections=rejections,
        ack_seconds_sum=scalars.get(ACK_SUM), ack_count=scalars.get(ACK_COUNT),
        feed_message_age_s=max(feed_ages) if feed_ages else None,
        feed_gaps_total=scalars.get(FEED_GAPS), feed_heartbeat_ts=heartbeat,
        halted=None if halted is None else halted >= 1.0, bars_total=scalars.get(BARS))
