"""The scheduler plugin: KPIs each tick -> rules -> recalibrate / halt / resume; state on disk.

State (``scheduler_state.json`` in its data dir, replaced atomically) survives restarts: the
rules' last firings and how long their conditions have held, whether the scheduler holds a
halt (re-applied at start), the last calibration and the recent w750 velocities.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from pathlib import Path
from typing import Any, Mapping

from prometheus_client import Counter, Gauge

from dolphind.plugins import API_VERSION, ControlAction, PluginContext, ScanRecord, Tick
from dolphind.plugins.files import read_json, write_json_atomic
from dolphind_scheduler.rules import decide, track_since, w750_threshold
from dolphind_scheduler.settings import Rule, SchedulerSettings, load_settings

# The one place the version is written (pyproject reads it from here).
VERSION = "1.0.0"

CAUSE = "scheduler"
STATE_FILE = "scheduler_state.json"
STATE_VERSION = 1
BUS_KEY = "acb_w750_threshold"
_W750 = 3  # index of the 750-bar window in ScanRecord.velocity


class SchedulerPlugin:
    API_VERSION = API_VERSION
    name = "scheduler"
    version = VERSION

    def __init__(self) -> None:
        self.settings = SchedulerSettings()
        self._ctx: Any = None
        self._path: Path | None = None
        self.last_fired: dict[str, float] = {}
        self.since: dict[str, float] = {}
        self.holding_halt = False
        self.halt_reason = ""
        self.calibration: dict[str, Any] | None = None
        self.scans_since_recalibration = 0
        self.velocities: collections.deque[float] = collections.deque(
            maxlen=self.settings.calibration.window_scans)
        self._incidents: collections.deque[float] = collections.deque(maxlen=10_000)
        self._last_scan_number: int | None = None
        self._dirty = False
        self._persisted_at = 0.0
        self.kpis: dict[str, float | None] = {}

    # ---- lifecycle ---------------------------------------------------------------------

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        return load_settings(settings)[1]

    async def start(self, ctx: PluginContext) -> None:
        settings, problems = load_settings(ctx.settings)
        if problems:
            raise ValueError("; ".join(problems))
        self._ctx = ctx
        self._set(settings)
        reg = ctx.metrics_registry
        self._m_actions = Counter("dolphind_m19_actions_total",
                                  "Scheduler actions taken, by action.", ["action"],
                                  registry=reg)
        for a in ("recalibrate", "halt", "resume"):
            self._m_actions.labels(a)
        self._m_threshold = Gauge("dolphind_m19_acb_w750_threshold",
                                  "The ACB w750 velocity threshold last published.",
                                  registry=reg)
        self._m_samples = Gauge("dolphind_m19_calibration_samples",
                                "Warm w750 velocities held for the next recalibration.",
                                registry=reg)
        self._path = Path(ctx.data_dir) / STATE_FILE
        await asyncio.to_thread(Path(ctx.data_dir).mkdir, parents=True, exist_ok=True)
        self._restore(await asyncio.to_thread(read_json, self._path))
        if self.holding_halt:
            # The condition that halted us held when we stopped; keep trading halted until a
            # resume rule (or the operator) says otherwise.
            ctx.control.halt(CAUSE, f"{self.halt_reason} (restored after restart)")
        if self.calibration is not None:
            ctx.features(BUS_KEY, self.calibration)
            self._m_threshold.set(self.calibration["threshold"])
        ctx.log.info("scheduler.started", state=str(self._path), holding_halt=self.holding_halt,
                     samples=len(self.velocities), rules=[r.name for r in self.settings.rules])

    async def reload(self, settings: Mapping[str, Any]) -> None:
        new, problems = load_settings(settings)
        if problems:
            raise ValueError("; ".join(problems))
        self._set(new)
        # Forget "held since" for rules that no longer exist, so a renamed rule starts fresh.
        names = {r.name for r in new.rules}
        self.since = {k: v for k, v in self.since.items() if k in names}
        self._ctx.log.info("scheduler.reloaded", rules=[r.name for r in new.rules])

    async def stop(self) -> None:
        if self._path is not None:
            await self._persist()

    @property
    def tick_interval_s(self) -> float:
        return self.settings.tick_interval_s

    def _set(self, s: SchedulerSettings) -> None:
        if s.calibration.window_scans != self.velocities.maxlen:
            self.velocities = collections.deque(self.velocities,
                                                maxlen=s.calibration.window_scans)
        self.settings = s

    # ---- events ------------------------------------------------------------------------

    async def on_scan(self, scan: ScanRecord) -> None:
        velocity = getattr(scan, "velocity", None)
        if not velocity or len(velocity) <= _W750:
            return
        v = velocity[_W750]
        if v is None or not math.isfinite(v):
            return  # the w750 window is still cold
        self.velocities.append(float(v))
        self.scans_since_recalibration += 1
        self._last_scan_number = getattr(scan, "scan_number", None)
        self._dirty = True

    async def on_incident(self, incident: ControlAction) -> None:
        self._incidents.append(getattr(incident, "ts", time.time()))

    async def on_tick(self, tick: Tick) -> None:
        now = tick.wall  # persisted times are wall times: cooldowns must survive a restart
        self.kpis = self.measure(now)
        self.since = track_since(self.settings.rules, self.kpis, self.since, now)
        cal = self.settings.calibration
        fire = decide(self.settings.rules, self.kpis, self.since, self.last_fired, now,
                      holding_halt=self.holding_halt,
                      can_recalibrate=len(self.velocities) >= cal.min_samples)
        for rule in fire:
            self._act(rule, now)
            self.last_fired[rule.name] = now
            self._m_actions.labels(rule.action).inc()
        self._m_samples.set(len(self.velocities))
        if fire or (self._dirty and now - self._persisted_at >= self.settings.persist_interval_s):
            await self._persist(now)

    # ---- the work ----------------------------------------------------------------------

    def measure(self, now: float) -> dict[str, float | None]:
        """The KPIs the rules look at (None: not available yet)."""
        f = self._ctx.figures()
        while self._incidents and self._incidents[0] < now - 3600.0:
            self._incidents.popleft()
        last_cal = self.calibration["ts"] if self.calibration else None
        return {
            "drawdown": f.drawdown if f.account_known else None,
            "feed_age_s": f.feed_age_s(now),
            "account_leverage": f.account_leverage,
            "incidents_last_hour": float(len(self._incidents)),
            "scans_since_recalibration": float(self.scans_since_recalibration),
            "seconds_since_recalibration": math.inf if last_cal is None else now - last_cal,
        }

    def _act(self, rule: Rule, now: float) -> None:
        control = self._ctx.control
        value = self.kpis.get(rule.kpi)
        why = f"rule {rule.name}: {rule.kpi}={value:g} {rule.op} {rule.threshold:g}" \
            if value is not None else f"rule {rule.name}"
        if rule.action == "halt":
            control.halt(CAUSE, why)
            self.holding_halt, self.halt_reason = True, why
        elif rule.action == "resume":
            # Only our own hold: a governor's or an operator's halt stays in force.
            control.release_halt(CAUSE, why)
            self.holding_halt, self.halt_reason = False, ""
        elif rule.action == "recalibrate":
            self.recalibrate(now, why)
        self._ctx.log.info("scheduler.action", rule=rule.name, action=rule.action,
                           kpi=rule.kpi, value=value, threshold=rule.threshold)

    def recalibrate(self, now: float, why: str = "") -> dict[str, Any]:
        """Recompute the ACB w750 threshold from the recent scans and publish it on the bus
        (``DOLPHIN_FEATURES`` / ``acb_w750_threshold``) for the alpha engine's ACB."""
        pct = self.settings.calibration.percentile
        threshold = w750_threshold(list(self.velocities), pct)
        self.calibration = {"threshold": threshold, "percentile": pct,
                            "samples": len(self.velocities), "ts": now,
                            "scan_number": self._last_scan_number, "reason": why}
        self.scans_since_recalibration = 0
        self._ctx.features(BUS_KEY, self.calibration)
        self._m_threshold.set(threshold)
        self._dirty = True
        return self.calibration

    # ---- persistence -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "last_fired": dict(self.last_fired),
                "since": dict(self.since), "holding_halt": self.holding_halt,
                "halt_reason": self.halt_reason, "calibration": self.calibration,
                "scans_since_recalibration": self.scans_since_recalibration,
                "w750_velocities": list(self.velocities)}

    def _restore(self, state: Any) -> None:
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self._path}: state version {state.get('version')!r}, "
                             f"expected {STATE_VERSION}")
        self.last_fired = dict(state.get("last_fired", {}))
        self.since = dict(state.get("since", {}))
        self.holding_halt = bool(state.get("holding_halt", False))
        self.halt_reason = str(state.get("halt_reason", ""))
        self.calibration = state.get("calibration")
        self.scans_since_recalibration = int(state.get("scans_since_recalibration", 0))
        self.velocities.extend(float(v) for v in state.get("w750_velocities", []))

    async def _persist(self, now: float | None = None) -> None:
        assert self._path is not None
        await asyncio.to_thread(write_json_atomic, self._path, self.snapshot())
        self._dirty = False
        self._persisted_at = time.time() if now is None else now

    def status(self) -> dict[str, Any]:
        return {"holding_halt": self.holding_halt, "halt_reason": self.halt_reason,
                "calibration": self.calibration, "samples": len(self.velocities),
                "scans_since_recalibration": self.scans_since_recalibration,
                "kpis": {k: (None if v is None or math.isinf(v) else v)
                         for k, v in self.kpis.items()},
                "last_fired": dict(self.last_fired)}
