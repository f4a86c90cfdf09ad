"""The engine's outside inputs between bars: ACB external factors and a recalibrated w750
threshold (SPEC §3, §8), read by the alpha stage and handed to the pure engine.

Sources, in order of precedence:

- external factors: the state bus ``DOLPHIN_FEATURES/exf_latest`` when present, else the
  ``strategy.external_factors_file`` (read by the stage at start and on every reload, off the
  loop), else none (boost 1.0, and the engine's reason says so);
- w750 threshold: ``DOLPHIN_FEATURES/acb_w750_threshold`` as published by the scheduler
  plugin's recalibration; absent -> the engine's own streaming percentile.
- ACB update: ``DOLPHIN_FEATURES/acb_boost`` ``{boost, beta}`` from an external ACB
  processor (bible §10.5), applied at the next bar; a later change of the external factors
  recomputes the boost (the latest input wins).

A bad payload never crashes the stage and never reaches the engine: it is logged once (per
distinct payload), its problem shown in /status, and the last good value stays in force (the
bus's own rule: reads fall back to the last value). Bus reads are dictionary look-ups on the
in-process bus and never block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from dolphind.alpha.acb import ExternalFactors, parse_external_factors, parse_w750_calibration
from dolphind.statebus.base import FEATURES, StateBus

log = structlog.get_logger("dolphind.alpha")

EXF_KEY = "exf_latest"
W750_KEY = "acb_w750_threshold"
ACB_KEY = "acb_boost"  # {boost, beta} from an external ACB processor (bible §15.1, §10.5)
ACB_BOOST_MAX = 5.0  # a boost above this is a broken processor, not a market reading


def parse_acb_update(payload: object) -> tuple[float, float | None]:
    """``(boost, beta)`` of an ``acb_boost`` payload; beta may be absent or null (the engine
    keeps its own). Raises ValueError naming the problem."""
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    boost, beta = payload.get("boost"), payload.get("beta")
    if isinstance(boost, bool) or not isinstance(boost, (int, float)) \
            or not 0 < boost <= ACB_BOOST_MAX:
        raise ValueError(f"boost: expected a number in (0, {ACB_BOOST_MAX:g}], got {boost!r}")
    if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, float))
                             or not 0 <= beta <= 1):
        raise ValueError(f"beta: expected a number in [0, 1] or null, got {beta!r}")
    return float(boost), None if beta is None else float(beta)


@dataclass(frozen=True, slots=True)
class InputState:
    """One input as /status shows it: where the value in force came from, and the latest
    problem (a rejected payload or an unreadable file), if any."""

    source: str = "none"  # "bus" | "file" | "none"
    problem: str | None = None
    detail: Any = None  # the accepted payload (JSON), for the operator


@dataclass(frozen=True, slots=True)
class FilePayload:
    """The external factors file as last read: its JSON, or why it could not be read."""

    path: str = ""
    payload: Any = None
    problem: str | None = None


def read_exf_file(path: Path) -> FilePayload:
    """Read and decode the external factors file (blocking: call it from a worker thread)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return FilePayload(str(path), None, f"{path}: cannot read ({exc.strerror or exc})")
    try:
        return FilePayload(str(path), orjson.loads(raw), None)
    except orjson.JSONDecodeError as exc:
        return FilePayload(str(path), None, f"{path}: not valid JSON ({exc})")


_UNSET: Any = object()


class ExternalInputs:
    """Tracks the bus / file inputs; ``poll_*`` return a new value to apply, or ``None`` for
    "nothing changed" (so the engine sees a change once, not every bar)."""

    def __init__(self, bus: StateBus | None) -> None:
        self._bus = bus
        self.file = FilePayload()
        self.exf = InputState()
        self.w750 = InputState()
        self._exf_seen: Any = _UNSET
        self._exf_applied: ExternalFactors | None = None
        self._w750_seen: Any = _UNSET
        self.acb = InputState()
        self._acb_seen: Any = _UNSET

    def set_file(self, file: FilePayload) -> None:
        if file.problem is not None:
            log.error("alpha.exf_file_unreadable", problem=file.problem)
        self.file = file

    def poll_exf(self) -> tuple[ExternalFactors | None] | None:
        """``(factors,)`` when the factors in force change (``(None,)``: none any more)."""
        raw = self._bus.get(FEATURES, EXF_KEY) if self._bus is not None else None
        source = "bus"
        if raw is None and (self.file.payload is not None or self.file.problem is not None):
            raw, source = self.file.payload, "file"
        seen = (source, raw, self.file.problem if source == "file" else None)
        if seen == self._exf_seen:
            return None
        self._exf_seen = seen
        if raw is None:
            problem = self.file.problem if source == "file" else None
            self.exf = InputState("none", problem)
            return self._apply_exf(None)
        try:
            factors = parse_external_factors(raw)
        except ValueError as exc:
            problem = f"{source} {EXF_KEY} rejected: {exc}; keeping the previous factors"
            log.error("alpha.exf_rejected", source=source, problem=str(exc))
            self.exf = InputState(self.exf.source, problem, self.exf.detail)
            return None
        self.exf = InputState(source, None, raw)
        return self._apply_exf(factors)

    def _apply_exf(self, factors: ExternalFactors | None) -> tuple[ExternalFactors | None] | None:
        if factors == self._exf_applied:
            return None
        self._exf_applied = factors
        return (factors,)

    def poll_w750(self) -> float | None:
        """A newly published, valid recalibrated threshold, else None."""
        raw = self._bus.get(FEATURES, W750_KEY) if self._bus is not None else None
        if raw is None or raw == self._w750_seen:
            return None  # nothing published (or gone from the bus): keep what is in force
        self._w750_seen = raw
        try:
            threshold = parse_w750_calibration(raw)
        except ValueError as exc:
            log.error("alpha.w750_threshold_rejected", problem=str(exc))
            self.w750 = InputState(self.w750.source, f"bus {W750_KEY} rejected: {exc}; "
                                   "keeping the threshold in force", self.w750.detail)
            return None
        self.w750 = InputState("bus", None, raw)
        return threshold

    def poll_acb(self) -> tuple[float, float | None] | None:
        """A newly published, valid ``(boost, beta)`` from an ACB processor, else None."""
        raw = self._bus.get(FEATURES, ACB_KEY) if self._bus is not None else None
        if raw is None or raw == self._acb_seen:
            return None
        self._acb_seen = raw
        try:
            update = parse_acb_update(raw)
        except ValueError as exc:
            log.error("alpha.acb_update_rejected", problem=str(exc))
            self.acb = InputState(self.acb.source, f"bus {ACB_KEY} rejected: {exc}; keeping "
                                  "the boost in force", self.acb.detail)
            return None
        self.acb = InputState("bus", None, raw)
        return update

    def status(self) -> dict[str, Any]:
        return {"external_factors": {"source": self.exf.source, "problem": self.exf.problem,
                                     "payload": self.exf.detail, "file": self.file.path or None},
                "w750_calibration": {"source": self.w750.source, "problem": self.w750.problem,
                                     "payload": self.w750.detail},
                "acb_update": {"source": self.acb.source, "problem": self.acb.problem,
                               "payload": self.acb.detail}}
