"""``[plugins.guardian]``: one table per playbook, each with its thresholds and cooldown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dolphind.plugins.settings import parse_settings, require


@dataclass(frozen=True, slots=True)
class DrawdownPlaybook:
    """Drawdown -> cut the risk multiplier for a while."""

    enabled: bool = True
    # Drawdown ratio (1 - equity / peak) at which the playbook fires.
    threshold: float = 0.05
    risk_multiplier: float = 0.5
    duration_s: float = 1800.0
    cooldown_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class RejectionsPlaybook:
    """A spike of risk-rail rejections -> throttle the order rate for a while."""

    enabled: bool = True
    # Rejections within the window at which the playbook fires.
    threshold: int = 10
    window_s: float = 60.0
    # A halt rejects every entry on purpose (kill_switch): that is not a spike to throttle.
    ignore_rules: tuple[str, ...] = ("kill_switch",)
    rate_factor: float = 0.5
    duration_s: float = 600.0
    cooldown_s: float = 900.0


@dataclass(frozen=True, slots=True)
class ExchangeLagPlaybook:
    """Feed silence, feed gaps or slow venue acknowledgements -> reconnect the feed."""

    enabled: bool = True
    # Seconds without a feed message (live) or a bar (replay) that count as a stall. Keep it
    # above the bar interval of a replay: a replay feed is silent between bars.
    max_feed_age_s: float = 30.0
    # Feed gaps (reconnects, stalls) within the window.
    max_feed_gaps: int = 3
    window_s: float = 300.0
    # Mean intent -> acknowledgement latency over the window.
    max_venue_latency_s: float = 2.0
    cooldown_s: float = 120.0


@dataclass(frozen=True, slots=True)
class EntropyPlaybook:
    """An unstable signal (its state flipping) or an unstable confidence -> reduce exposure."""

    enabled: bool = True
    # Scans (and intents) the instability is measured over; none is judged before min_scans.
    window: int = 50
    min_scans: int = 20
    # The signal's state per scan: SHORT below short_threshold, LONG above long_threshold.
    short_threshold: float = -0.02
    long_threshold: float = 0.01
    # Fraction of consecutive scans whose state changed.
    max_flip_rate: float = 0.3
    # Standard deviation of the intents' confidence within the window.
    max_confidence_std: float = 0.15
    risk_multiplier: float = 0.5
    duration_s: float = 900.0
    cooldown_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class GuardianSettings:
    # How often the live figures are read and the playbooks evaluated.
    tick_interval_s: float = 1.0
    drawdown: DrawdownPlaybook = DrawdownPlaybook()
    rejections: RejectionsPlaybook = RejectionsPlaybook()
    exchange_lag: ExchangeLagPlaybook = ExchangeLagPlaybook()
    entropy: EntropyPlaybook = EntropyPlaybook()


def load_settings(raw: Mapping[str, Any]) -> tuple[GuardianSettings, list[str]]:
    s, problems = parse_settings(GuardianSettings, raw)
    if problems:
        return s, problems
    require(problems, s.tick_interval_s >= 0.05, "tick_interval_s", "must be >= 0.05")
    d, r, x, e = s.drawdown, s.rejections, s.exchange_lag, s.entropy
    require(problems, 0 < d.threshold < 1, "drawdown.threshold", "must be in (0, 1)")
    for key, pb in (("drawdown", d), ("entropy", e)):
        require(problems, 0 < pb.risk_multiplier <= 1, f"{key}.risk_multiplier",
                "must be in (0, 1]")
    require(problems, 0 < r.rate_factor <= 1, "rejections.rate_factor", "must be in (0, 1]")
    require(problems, r.threshold >= 1, "rejections.threshold", "must be >= 1")
    require(problems, x.max_feed_gaps >= 1, "exchange_lag.max_feed_gaps", "must be >= 1")
    for key, value in (("drawdown.duration_s", d.duration_s), ("drawdown.cooldown_s", d.cooldown_s),
                       ("rejections.window_s", r.window_s),
                       ("rejections.duration_s", r.duration_s),
                       ("rejections.cooldown_s", r.cooldown_s),
                       ("exchange_lag.max_feed_age_s", x.max_feed_age_s),
                       ("exchange_lag.window_s", x.window_s),
                       ("exchange_lag.max_venue_latency_s", x.max_venue_latency_s),
                       ("exchange_lag.cooldown_s", x.cooldown_s),
                       ("entropy.duration_s", e.duration_s), ("entropy.cooldown_s", e.cooldown_s),
                       ("entropy.max_confidence_std", e.max_confidence_std)):
        require(problems, value > 0, key, "must be > 0")
    require(problems, e.window >= 2, "entropy.window", "must be >= 2")
    require(problems, 2 <= e.min_scans <= e.window, "entropy.min_scans",
            "must be >= 2 and <= entropy.window")
    require(problems, e.short_threshold < e.long_threshold, "entropy.short_threshold",
            "must be below entropy.long_threshold")
    require(problems, 0 < e.max_flip_rate <= 1, "entropy.max_flip_rate", "must be in (0, 1]")
    return s, problems
