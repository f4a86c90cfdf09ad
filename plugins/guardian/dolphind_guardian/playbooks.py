"""The four playbooks as pure decisions: figures + settings + last firing times + now.

Each playbook looks at one or more figures, fires when one crosses its threshold, and then stays
quiet for its cooldown even if the condition persists (the recovery action it took needs time
to work; firing again every tick would only stack the same action). Time is an argument, so
the tests drive the cooldowns with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from dolphind_guardian.settings import GuardianSettings

DRAWDOWN = "drawdown"
REJECTIONS = "rejections"
EXCHANGE_LAG = "exchange_lag"
ENTROPY = "entropy"
PLAYBOOKS = (DRAWDOWN, REJECTIONS, EXCHANGE_LAG, ENTROPY)


@dataclass(frozen=True, slots=True)
class Observation:
    """What the guardian sees at one tick. None: the figure is not available (yet)."""

    drawdown: float | None = None
    rejections_in_window: float | None = None
    feed_age_s: float | None = None
    feed_gaps_in_window: float | None = None
    venue_latency_s: float | None = None
    signal_flip_rate: float | None = None
    confidence_std: float | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    playbook: str
    figure: str
    value: float
    threshold: float
    message: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """The control-plane action a playbook takes."""

    action: str  # "risk_multiplier" | "throttle" | "reconnect_feed"
    factor: float | None = None
    duration_s: float | None = None


def drawdown(obs: Observation, s: GuardianSettings) -> Incident | None:
    p = s.drawdown
    if obs.drawdown is not None and obs.drawdown >= p.threshold:
        return Incident(DRAWDOWN, "drawdown", obs.drawdown, p.threshold,
                        f"drawdown {obs.drawdown:.2%} >= {p.threshold:.2%}")
    return None


def rejections(obs: Observation, s: GuardianSettings) -> Incident | None:
    p = s.rejections
    n = obs.rejections_in_window
    if n is not None and n >= p.threshold:
        return Incident(REJECTIONS, "risk_rejections", n, p.threshold,
                        f"{n:g} risk rejections in {p.window_s:g}s >= {p.threshold}")
    return None


def exchange_lag(obs: Observation, s: GuardianSettings) -> Incident | None:
    """The first lag figure over its limit: feed silence, then feed gaps, then venue latency."""
    p = s.exchange_lag
    if obs.feed_age_s is not None and obs.feed_age_s >= p.max_feed_age_s:
        return Incident(EXCHANGE_LAG, "feed_age_s", obs.feed_age_s, p.max_feed_age_s,
                        f"no feed data for {obs.feed_age_s:.1f}s >= {p.max_feed_age_s:g}s")
    if obs.feed_gaps_in_window is not None and obs.feed_gaps_in_window >= p.max_feed_gaps:
        return Incident(EXCHANGE_LAG, "feed_gaps", obs.feed_gaps_in_window, p.max_feed_gaps,
                        f"{obs.feed_gaps_in_window:g} feed gaps in {p.window_s:g}s "
                        f">= {p.max_feed_gaps}")
    if obs.venue_latency_s is not None and obs.venue_latency_s >= p.max_venue_latency_s:
        return Incident(EXCHANGE_LAG, "venue_latency_s", obs.venue_latency_s,
                        p.max_venue_latency_s,
                        f"venue acknowledgements take {obs.venue_latency_s:.3f}s on average "
                        f">= {p.max_venue_latency_s:g}s")
    return None


def entropy(obs: Observation, s: GuardianSettings) -> Incident | None:
    p = s.entropy
    if obs.signal_flip_rate is not None and obs.signal_flip_rate >= p.max_flip_rate:
        return Incident(ENTROPY, "signal_flip_rate", obs.signal_flip_rate, p.max_flip_rate,
                        f"signal state flips on {obs.signal_flip_rate:.0%} of scans "
                        f">= {p.max_flip_rate:.0%}")
    if obs.confidence_std is not None and obs.confidence_std >= p.max_confidence_std:
        return Incident(ENTROPY, "confidence_std", obs.confidence_std, p.max_confidence_std,
                        f"signal confidence std {obs.confidence_std:.3f} "
                        f">= {p.max_confidence_std:g}")
    return None


_CHECKS: dict[str, Callable[[Observation, GuardianSettings], Incident | None]] = {
    DRAWDOWN: drawdown, REJECTIONS: rejections, EXCHANGE_LAG: exchange_lag, ENTROPY: entropy}


def _playbook_settings(s: GuardianSettings, playbook: str) -> object:
    return getattr(s, playbook)


def cooldown_left(last_fired: float | None, now: float, cooldown_s: float) -> float:
    """Seconds until a playbook that fired at ``last_fired`` may fire again (0: it may)."""
    if last_fired is None:
        return 0.0
    return max(0.0, last_fired + cooldown_s - now)


def evaluate(obs: Observation, s: GuardianSettings, last_fired: Mapping[str, float],
             now: float) -> list[Incident]:
    """The incidents to act on now: enabled playbooks whose condition holds and whose
    cooldown has passed, in the fixed order of PLAYBOOKS."""
    out = []
    for name in PLAYBOOKS:
        p = _playbook_settings(s, name)
        if not p.enabled:  # type: ignore[attr-defined]
            continue
        if cooldown_left(last_fired.get(name), now, p.cooldown_s) > 0:  # type: ignore[attr-defined]
            continue
        incident = _CHECKS[name](obs, s)
        if incident is not None:
            out.append(incident)
    return out


def recovery_for(playbook: str, s: GuardianSettings) -> Recovery:
    """drawdown -> halve risk; rejections -> throttle; exchange lag -> reconnect the feed;
    entropy -> reduce exposure (a risk multiplier, which also scales the exposure caps)."""
    if playbook == DRAWDOWN:
        return Recovery("risk_multiplier", s.drawdown.risk_multiplier, s.drawdown.duration_s)
    if playbook == REJECTIONS:
        return Recovery("throttle", s.rejections.rate_factor, s.rejections.duration_s)
    if playbook == EXCHANGE_LAG:
        return Recovery("reconnect_feed")
    if playbook == ENTROPY:
        return Recovery("risk_multiplier", s.entropy.risk_multiplier, s.entropy.duration_s)
    raise ValueError(f"unknown playbook {playbook!r}")
