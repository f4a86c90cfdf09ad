"""Stage heartbeats and the daemon's weighted health score (SPEC §9, bible §24.5 idea).

A stage beats whenever it makes progress. Silence alone is not a fault (a stage waiting for the
next bar of a slow replay is healthy); a stage is *stalled* when work is waiting in its input
channel and it has not beaten for ``heartbeat_timeout_s``.

The score is a weighted *sum* of sensor values in [0, 1], never a product, so one degraded
sensor lowers the score instead of zeroing it; only the process-level invariant (all stages
dead) gives DEAD.

Until the first stage runs the level is STARTING: alive, not yet measured. A first start spends
tens of seconds compiling the numba kernels before any stage runs; a liveness probe must not
take that for DEAD and kill the daemon (``/healthz`` answers 200 for it, ``/readyz`` 503).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable

from dolphind.telemetry.metrics import Metrics


class HealthLevel(enum.Enum):
    STARTING = "STARTING"
    GREEN = "GREEN"
    DEGRADED = "DEGRADED"
    CRITICAL = "CRITICAL"
    DEAD = "DEAD"


@dataclass(slots=True)
class StageState:
    name: str
    running: bool = False
    restarts: int = 0
    last_beat_mono: float | None = None
    exported_mono: float = float("-inf")
    last_error: str | None = None
    finished: bool = False
    # How much work waits for this stage (its input channel depth); 0 when it has none.
    backlog: Callable[[], int] = field(default=lambda: 0)


# Weights of the sensors in the score; they sum to 1.
_WEIGHTS = {"stages_running": 0.5, "stages_progressing": 0.3, "statebus": 0.1, "feed": 0.1}


class Health:
    def __init__(self, metrics: Metrics, heartbeat_timeout_s: Callable[[], float],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._timeout = heartbeat_timeout_s
        self._mono = monotonic
        self.stages: dict[str, StageState] = {}
        # External sensors in [0, 1], set by their owners (feed connected, bus healthy).
        self.sensors: dict[str, float] = {"statebus": 1.0, "feed": 1.0}
        self.started = False  # a stage has run: the level is measured from then on

    def register(self, name: str, backlog: Callable[[], int] | None = None) -> StageState:
        state = StageState(name=name)
        if backlog is not None:
            state.backlog = backlog
        self.stages[name] = state
        # 0 from the start: an alert's increase() sees the first restart or error.
        self._metrics.stage_restarts.labels(name)
        self._metrics.stage_errors.labels(name)
        return state

    def beat(self, name: str) -> None:
        now = self._mono()
        st = self.stages[name]
        st.last_beat_mono = now
        # The exported timestamp has second resolution for a scraper; at backtest speed a
        # stage beats thousands of times a second, so the gauge is refreshed at most 4x/s.
        if now - st.exported_mono >= 0.25:
            st.exported_mono = now
            self._metrics.stage_heartbeat.labels(name).set(time.time())

    def set_running(self, name: str, running: bool, error: str | None = None) -> None:
        st = self.stages[name]
        st.running = running
        self.started = self.started or running
        if error is not None:
            st.last_error = error
        self._metrics.stage_up.labels(name).set(1 if running else 0)

    def stalled(self, st: StageState) -> bool:
        if not st.running or st.backlog() == 0:
            return False
        last = st.last_beat_mono
        return last is None or self._mono() - last > self._timeout()

    def score(self) -> tuple[float, HealthLevel]:
        if not self.started:
            return 1.0, HealthLevel.STARTING  # not measured yet; the gauge is left alone
        live = [s for s in self.stages.values() if not s.finished]
        if live and not any(s.running for s in live):
            return 0.0, HealthLevel.DEAD
        n = len(live) or 1
        running = sum(s.running for s in live) / n
        progressing = sum(not self.stalled(s) for s in live) / n
        values = {"stages_running": running if live else 1.0,
                  "stages_progressing": progressing if live else 1.0, **self.sensors}
        score = sum(_WEIGHTS[k] * min(1.0, max(0.0, values[k])) for k in _WEIGHTS)
        self._metrics.health_score.set(score)
        if score >= 0.8:
            return score, HealthLevel.GREEN
        if score >= 0.5:
            return score, HealthLevel.DEGRADED
        return score, HealthLevel.CRITICAL

    def snapshot(self) -> dict[str, dict[str, object]]:
        now = self._mono()
        return {
            s.name: {
                "running": s.running,
                "finished": s.finished,
                "restarts": s.restarts,
                "stalled": self.stalled(s),
                "backlog": s.backlog(),
                "last_beat_age_s": None if s.last_beat_mono is None
                else round(now - s.last_beat_mono, 3),
                "last_error": s.last_error,
            }
            for s in self.stages.values()
        }
