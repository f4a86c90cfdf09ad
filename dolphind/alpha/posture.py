"""The survival stack: five sensors -> risk multiplier Rm -> posture (bible §11, §19.3).

Pure functions for each sensor and for the combination, and one small state machine
(``SurvivalStack``) for the two pieces of memory the bible has: the bounded recovery of Rm and
the posture hysteresis. Time enters only as ``dt_min`` (minutes since the previous step),
passed in by the caller; the stack has no clock.

Readings where the bible is silent or ambiguous:

* Cat1 (SPEC §3): in one process "system alive" is the daemon's own health, an input number
  (1 = healthy), not a Hazelcast node count; the bible's test ``hz_nodes < 1`` becomes
  ``system_alive < 1``.
* Cat2: §12 names the statuses OK/ORANGE/RED, §28.6's payload GREEN/ORANGE/RED; GREEN is OK.
  The no-model MC fallback (SPEC §3: ORANGE, scale 0.5) is *not* a forewarner reading: it is
  passed as ``mc_status=None`` and Cat2 reads 1.0 (decayed by staleness as usual). Feeding it
  as ORANGE would pin Rm at <= 0.5 (TURTLE: no entries, ever) and make the fallback's own
  scale of 0.5 meaningless; the sizing already carries the 0.5.
* Cat3: ``ob_stale`` (the book layer is wired but late) -> 0.5 as written. A book layer that is
  absent altogether (replay of bars only) reads 1.0: SPEC §1 says every consumer then degrades
  to "no OB adjustments", and 0.5 would halt all entries.
* Cat5: the bible's sigmoid gives 0.891 at 5% drawdown, not "≈ 1.0"; 0.5 at 12% and 0.083 at
  20% match its other numbers. The formula is authoritative.
* Initial state: with no previous Rm the first step takes the target as is (nothing to recover
  from) and the posture starts at its mapped level without hysteresis.
* Hysteresis: a move needs ``hysteresis_down`` (2) / ``hysteresis_up`` (5) consecutive steps
  whose mapped posture is below / above the current one; the move goes to the level mapped on
  the last of those steps (which is, by construction, on the confirmed side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from dolphind.alpha.params import StrategyParams

Posture = Literal["APEX", "STALKER", "TURTLE", "HIBERNATE"]
# Severity order: a higher rank is a safer (more restrictive) posture.
POSTURE_RANK: dict[str, int] = {"APEX": 0, "STALKER": 1, "TURTLE": 2, "HIBERNATE": 3}
POSTURES: tuple[Posture, ...] = ("APEX", "STALKER", "TURTLE", "HIBERNATE")

# §11.2 constants, written inline in the bible's sensor code.
HEARTBEAT_MAX_AGE_S = 30.0
MC_BASE: dict[str, float] = {"OK": 1.0, "GREEN": 1.0, "ORANGE": 0.5, "RED": 0.1}
MC_STALE_GRACE_H = 6.0
MC_STALE_TAU_H = 3.0
MICRO_STALE = 0.5
MICRO_FLOOR = 0.3
MICRO_SLOPE = 0.7
ENV_SPIKE_FLOOR = 0.3
ENV_RECOVERY_TAU_MIN = 60.0
CAPITAL_STEEPNESS = 30.0
CAPITAL_MIDPOINT_DD = 0.12
# §11.3 correlated collapse: two or more of Cat2/3/4 below 0.8 halves the target.
DEGRADED_BELOW = 0.8
COLLAPSE_MIN_DEGRADED = 2
COLLAPSE_PENALTY = 0.5
# §11.4 bounded recovery: alpha = min(1, 0.02 * dt), step capped at 0.05 per minute.
RECOVERY_ALPHA_PER_MIN = 0.02
RECOVERY_MAX_STEP_PER_MIN = 0.05


# SPEC §3/§9: the daemon's health level -> Cat1's "system alive". Cat1 is a kill switch
# (0 -> HIBERNATE, positions closed), so only a daemon that has lost most of its stages
# (CRITICAL) or all of them (DEAD) counts as not alive; DEGRADED still trades, the other
# sensors and the rails take risk down.
SYSTEM_ALIVE_BY_HEALTH: dict[str, float] = {"GREEN": 1.0, "DEGRADED": 1.0, "CRITICAL": 0.0,
                                            "DEAD": 0.0}


def system_alive(health_level: str) -> float:
    """Cat1's input for a health level (GREEN/DEGRADED/CRITICAL/DEAD); unknown -> 0 (safe)."""
    return SYSTEM_ALIVE_BY_HEALTH.get(health_level, 0.0)


def cat1_invariant(system_alive: float, heartbeat_age_s: float) -> float:
    """Kill switch: 0 when the daemon is unhealthy or its heartbeat is older than 30 s (§11.2)."""
    if system_alive < 1 or heartbeat_age_s > HEARTBEAT_MAX_AGE_S:
        return 0.0
    return 1.0


def cat2_structural(mc_status: str | None, staleness_hours: float) -> float:
    """MC-forewarner status times an exponential decay after 6 h of staleness (§11.2).

    ``mc_status=None``: no forewarner model is installed (base 1.0; see the module notes).
    """
    base = 1.0 if mc_status is None else MC_BASE[mc_status]
    decay = math.exp(-max(0.0, staleness_hours - MC_STALE_GRACE_H) / MC_STALE_TAU_H)
    return base * decay


def cat3_micro(book_present: bool, ob_stale: bool, depth_quality: float, fill_probability: float) -> float:
    """Order-book depth / fill quality, clamp(0.3 + 0.7 * min(dq, fp), 0.3, 1.0) (§11.2)."""
    if not book_present:
        return 1.0
    if ob_stale:
        return MICRO_STALE
    score = min(depth_quality, fill_probability)
    if not math.isfinite(score):
        return MICRO_STALE  # wired but unreadable is the same as stale
    return min(1.0, max(MICRO_FLOOR, MICRO_FLOOR + MICRO_SLOPE * score))


def cat4_environment(minutes_since_dvol_spike: float | None) -> float:
    """DVOL spike impulse: 0.3 at the spike, recovering with a 60-minute tau (§11.2).

    None means no spike on record: 1.0.
    """
    if minutes_since_dvol_spike is None:
        return 1.0
    t = max(0.0, minutes_since_dvol_spike)
    if t == 0.0:
        return ENV_SPIKE_FLOOR
    return ENV_SPIKE_FLOOR + (1.0 - ENV_SPIKE_FLOOR) * (1.0 - math.exp(-t / ENV_RECOVERY_TAU_MIN))


def cat5_capital(drawdown: float) -> float:
    """Sigmoid drawdown constraint 1 / (1 + exp(30 * (dd - 0.12))) (§11.2): 0.5 at 12%."""
    x = CAPITAL_STEEPNESS * (drawdown - CAPITAL_MIDPOINT_DD)
    if x > 700.0:  # exp overflow guard; the value is 0 to double precision anyway
        return 0.0
    return 1.0 / (1.0 + math.exp(x))


@dataclass(frozen=True, slots=True)
class SensorReadings:
    """The inputs of one survival-stack step (all already measured by the caller)."""

    system_alive: float = 1.0
    heartbeat_age_s: float = 0.0
    mc_status: str | None = None
    mc_staleness_hours: float = 0.0
    book_present: bool = False
    ob_stale: bool = False
    depth_quality: float = 1.0
    fill_probability: float = 1.0
    minutes_since_dvol_spike: float | None = None
    drawdown: float = 0.0


@dataclass(frozen=True, slots=True)
class SensorValues:
    """The five category values and the combined target."""

    cat1: float
    cat2: float
    cat3: float
    cat4: float
    cat5: float
    degraded: int
    r_target: float


def combine(r: SensorReadings) -> SensorValues:
    """Hierarchical combination with the correlated-collapse penalty (§11.3)."""
    c1 = cat1_invariant(r.system_alive, r.heartbeat_age_s)
    c2 = cat2_structural(r.mc_status, r.mc_staleness_hours)
    c3 = cat3_micro(r.book_present, r.ob_stale, r.depth_quality, r.fill_probability)
    c4 = cat4_environment(r.minutes_since_dvol_spike)
    c5 = cat5_capital(r.drawdown)
    f_environment = min(c2, c4)
    target = c1 * c5 * f_environment * c3
    degraded = (c2 < DEGRADED_BELOW) + (c3 < DEGRADED_BELOW) + (c4 < DEGRADED_BELOW)
    if degraded >= COLLAPSE_MIN_DEGRADED:
        target *= COLLAPSE_PENALTY
    return SensorValues(c1, c2, c3, c4, c5, int(degraded), min(1.0, max(0.0, target)))


def bounded_recovery(last: float, target: float, dt_min: float) -> float:
    """Fast attack, slow recovery (§11.4): drops are immediate, rises at most 5% per minute."""
    if target < last:
        return target
    alpha = min(1.0, RECOVERY_ALPHA_PER_MIN * dt_min)
    step = min(alpha * (target - last), RECOVERY_MAX_STEP_PER_MIN * dt_min)
    return last + step


def posture_for(rm: float, p: StrategyParams) -> Posture:
    """APEX >= 0.90, STALKER >= 0.75, TURTLE >= 0.50, else HIBERNATE (§11.5, §19.3)."""
    if rm >= p.apex_rm:
        return "APEX"
    if rm >= p.stalker_rm:
        return "STALKER"
    if rm >= p.turtle_rm:
        return "TURTLE"
    return "HIBERNATE"


@dataclass(frozen=True, slots=True)
class PostureState:
    """The stack's output after a step: Rm, the posture in force and the sensor breakdown."""

    rm: float
    posture: Posture
    candidate: Posture
    sensors: SensorValues


class SurvivalStack:
    """Rm with bounded recovery and a posture with hysteresis (§11.4–§11.6)."""

    def __init__(self, p: StrategyParams) -> None:
        self._p = p
        self._rm: float | None = None
        self._posture: Posture = "APEX"
        self._down = 0
        self._up = 0

    @property
    def posture(self) -> Posture:
        return self._posture

    @property
    def rm(self) -> float:
        return 1.0 if self._rm is None else self._rm

    def step(self, readings: SensorReadings, dt_min: float) -> PostureState:
        """Advance by one observation ``dt_min`` minutes after the previous one."""
        sensors = combine(readings)
        if self._rm is None:
            self._rm = sensors.r_target
            self._posture = posture_for(self._rm, self._p)
            return PostureState(self._rm, self._posture, self._posture, sensors)
        self._rm = bounded_recovery(self._rm, sensors.r_target, max(0.0, dt_min))
        candidate = posture_for(self._rm, self._p)
        self._apply_hysteresis(candidate)
        return PostureState(self._rm, self._posture, candidate, sensors)

    def _apply_hysteresis(self, candidate: Posture) -> None:
        cur = POSTURE_RANK[self._posture]
        new = POSTURE_RANK[candidate]
        if new > cur:  # more restrictive
            self._down += 1
            self._up = 0
            if self._down >= self._p.hysteresis_down:
                self._posture = candidate
                self._down = 0
        elif new < cur:  # less restrictive
            self._up += 1
            self._down = 0
            if self._up >= self._p.hysteresis_up:
                self._posture = candidate
                self._up = 0
        else:
            self._down = 0
            self._up = 0
