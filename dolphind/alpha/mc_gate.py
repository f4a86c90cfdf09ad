"""The MC-forewarner envelope gate: the model interface and the no-model fallback (bible §12).

The forewarner assesses the day's configuration (``max_leverage = base_max_leverage *
day_base_boost``) and returns a catastrophic probability and an envelope score. Classification:

    RED    = catastrophic_probability > 0.25 or envelope_score < -1.0   -> no new entries
    ORANGE = not RED and (envelope_score < 0 or catastrophic_probability > 0.10)   -> scale 0.5
    OK     = otherwise                                                    -> scale 1.0

With no model installed the gate reports ORANGE with scale 0.5 (SPEC §3): conservative and
deterministic. It never draws a random number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Protocol, runtime_checkable

McStatus = Literal["OK", "ORANGE", "RED"]

RED_CATASTROPHIC_PROB = 0.25
RED_ENVELOPE_SCORE = -1.0
ORANGE_CATASTROPHIC_PROB = 0.10
ORANGE_ENVELOPE_SCORE = 0.0
ORANGE_SCALE = 0.5

SOURCE_MODEL = "REAL_MODEL"
SOURCE_NO_MODEL = "FALLBACK_NO_MODEL"


@dataclass(frozen=True, slots=True)
class McReport:
    """What a forewarner model returns for one configuration."""

    catastrophic_probability: float
    envelope_score: float


@dataclass(frozen=True, slots=True)
class McGateResult:
    """The gate's verdict: status, the size scale it implies and where it came from."""

    status: McStatus
    scale: float
    source: str
    catastrophic_probability: float | None = None
    envelope_score: float | None = None

    @property
    def from_model(self) -> bool:
        """True when a real model produced the status (the survival stack's Cat2 reads it)."""
        return self.source == SOURCE_MODEL


@runtime_checkable
class McForewarner(Protocol):
    """A forewarner model: assesses a strategy configuration (bible §12)."""

    def assess_config_dict(self, config: Mapping[str, float]) -> McReport: ...


def classify(report: McReport) -> McStatus:
    """RED / ORANGE / OK from a report (bible §12)."""
    cp, env = report.catastrophic_probability, report.envelope_score
    if cp > RED_CATASTROPHIC_PROB or env < RED_ENVELOPE_SCORE:
        return "RED"
    if env < ORANGE_ENVELOPE_SCORE or cp > ORANGE_CATASTROPHIC_PROB:
        return "ORANGE"
    return "OK"


def scale_for(status: McStatus) -> float:
    """day_mc_scale: 0.5 when ORANGE, else 1.0 (RED halts entries instead) (bible §12)."""
    return ORANGE_SCALE if status == "ORANGE" else 1.0


NO_MODEL_RESULT = McGateResult(status="ORANGE", scale=ORANGE_SCALE, source=SOURCE_NO_MODEL)


def assess(
    forewarner: McForewarner | None, config: Mapping[str, float]
) -> McGateResult:
    """Run the gate once (daily): the model's verdict, or the no-model fallback."""
    if forewarner is None:
        return NO_MODEL_RESULT
    report = forewarner.assess_config_dict(config)
    status = classify(report)
    return McGateResult(
        status=status, scale=scale_for(status), source=SOURCE_MODEL,
        catastrophic_probability=report.catastrophic_probability,
        envelope_score=report.envelope_score,
    )
