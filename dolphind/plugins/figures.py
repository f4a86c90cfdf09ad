"""The figures contract: the daemon state a plugin may read, as one frozen snapshot.

A plugin calls ``ctx.figures()`` and gets a ``Figures``; it never reads the daemon's metrics by
name (names are an operator surface that may change, this is the plugin contract). Adding a
field is compatible; renaming or removing one raises ``API_VERSION``.

The daemon fills the snapshot from its own telemetry objects (``figures_from_metrics``): the
stages already export exactly these figures, so a figure appears as soon as its stage exports
it, and one the daemon has not exported (yet) is None and the rules that need it stay quiet.
A read walks a dozen in-memory metric objects (never the process collector, which reads
/proc): cheap enough to do on the loop each tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.samples import Sample

from dolphind.telemetry.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Figures:
    """One consistent read of the daemon's figures. None: not exported (yet)."""

    # The account, from the execution stage (USDT).
    equity_usdt: float | None = None
    peak_equity_usdt: float | None = None
    drawdown: float | None = None  # 1 - equity / peak (0.12 = 12% below the peak)
    gross_exposure_usdt: float | None = None
    # Signed notional of each open position, by symbol (negative = short).
    position_notional_usdt: Mapping[str, float] = field(default_factory=dict)
    # Orders refused by the risk rails since the start, by rule (cumulative).
    risk_rejections: Mapping[str, float] = field(default_factory=dict)
    # Cumulative sum and count of intent -> venue acknowledgement latency.
    ack_seconds_sum: float | None = None
    ack_count: float | None = None
    # The live feed's worst connection: seconds since its last message.
    feed_message_age_s: float | None = None
    feed_gaps_total: float | None = None  # cumulative, all reasons
    # Wall time of the feed stage's last heartbeat (any feed: replay or live).
    feed_heartbeat_ts: float | None = None
    halted: bool | None = None  # the kill switch (no new entries)
    bars_total: float | None = None  # cumulative bars published by the feed

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


# The name the snapshot had before API version 2 (plugins written against it keep working).
LiveFigures = Figures


def _samples(metric: MetricWrapperBase, suffix: str = "") -> Iterator[Sample]:
    """The samples of ``metric`` named ``<family><suffix>`` (a counter's value is its
    ``_total`` sample, not ``_created``; a histogram has ``_sum`` and ``_count``)."""
    for family in metric.collect():
        for s in family.samples:
            if s.name == family.name + suffix:
                yield s


def _scalar(metric: MetricWrapperBase, suffix: str = "") -> float | None:
    """The value of an unlabelled metric, or None while it has no sample."""
    return next((s.value for s in _samples(metric, suffix)), None)


def _by_label(metric: MetricWrapperBase, label: str, suffix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for s in _samples(metric, suffix):
        key = s.labels.get(label, "")
        out[key] = out.get(key, 0.0) + s.value
    return out


def figures_from_metrics(m: Metrics) -> Figures:
    """The snapshot, from the daemon's telemetry objects (the host's side of the contract)."""
    x = m.execution
    feed_ages = _by_label(m.feed_last_message_age, "conn")
    gaps = _by_label(m.feed_gaps, "reason", "_total")
    halted = _scalar(m.trading_halted)
    return Figures(
        equity_usdt=_scalar(x.equity), peak_equity_usdt=_scalar(x.peak_equity),
        drawdown=_scalar(x.drawdown), gross_exposure_usdt=_scalar(x.gross_exposure),
        position_notional_usdt=_by_label(x.position_notional, "symbol"),
        risk_rejections=_by_label(x.risk_rejections, "rule", "_total"),
        ack_seconds_sum=_scalar(x.intent_to_ack, "_sum"),
        ack_count=_scalar(x.intent_to_ack, "_count"),
        feed_message_age_s=max(feed_ages.values()) if feed_ages else None,
        feed_gaps_total=sum(gaps.values()) if gaps else None,
        feed_heartbeat_ts=_by_label(m.stage_heartbeat, "stage").get("feed"),
        halted=None if halted is None else halted >= 1.0,
        bars_total=_scalar(m.bars, "_total"))
