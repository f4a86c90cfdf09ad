"""The guardian plugin: reads live figures each tick, runs the playbooks, acts, writes logs.

Inputs: the daemon's metrics registry (drawdown, risk rejections, feed age and gaps, venue
acknowledgement latency), ``on_scan`` (the signal, for its instability) and ``on_intent`` (the
confidence). Outputs: control-plane actions with cause ``guardian``, an incident per firing,
``incidents.jsonl`` and ``recovery_actions.jsonl`` in its data dir, and
``dolphind_m20_incidents_total{playbook}``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

from prometheus_client import Counter, Gauge

from dolphind.plugins import API_VERSION, Figures, OrderIntent, PluginContext, ScanRecord, Tick
from dolphind.plugins.files import append_jsonl
from dolphind.plugins.windows import CounterWindow, RatioWindow
from dolphind_guardian import instability
from dolphind_guardian.playbooks import (
    PLAYBOOKS,
    Incident,
    Observation,
    Recovery,
    cooldown_left,
    evaluate,
    recovery_for,
)
from dolphind_guardian.settings import GuardianSettings, load_settings

# The one place the version is written (pyproject reads it from here).
VERSION = "1.0.0"

CAUSE = "guardian"
INCIDENTS_FILE = "incidents.jsonl"
RECOVERY_FILE = "recovery_actions.jsonl"


class GuardianPlugin:
    API_VERSION = API_VERSION
    name = "guardian"
    version = VERSION

    def __init__(self) -> None:
        self.settings = GuardianSettings()
        self._ctx: Any = None
        self._dir: Path | None = None
        self._last_fired: dict[str, float] = {}
        self._fired_total: collections.Counter[str] = collections.Counter()
        self._states: collections.deque[int] = collections.deque(
            maxlen=self.settings.entropy.window)
        self._confidences: collections.deque[float] = collections.deque(
            maxlen=self.settings.entropy.window)
        self._windows()
        self.last_observation = Observation()
        self._last_tick_mono: float | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        return load_settings(settings)[1]

    async def start(self, ctx: PluginContext) -> None:
        settings, problems = load_settings(ctx.settings)
        if problems:  # the host validated already; this is a programming error
            raise ValueError("; ".join(problems))
        self._ctx = ctx
        self._apply_settings(settings)
        self._dir = Path(ctx.data_dir)
        await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
        reg = ctx.metrics_registry
        self._m_incidents = Counter("dolphind_m20_incidents_total",
                                    "Guardian playbook firings (incidents), by playbook.",
                                    ["playbook"], registry=reg)
        self._m_actions = Counter("dolphind_m20_recovery_actions_total",
                                  "Recovery actions the guardian took, by action.", ["action"],
                                  registry=reg)
        self._m_last = Gauge("dolphind_m20_last_incident_timestamp_seconds",
                             "Unix time of each playbook's last firing.", ["playbook"],
                             registry=reg)
        for p in PLAYBOOKS:
            self._m_incidents.labels(p)
        ctx.log.info("guardian.started", data_dir=str(self._dir), **self._thresholds())

    async def reload(self, settings: Mapping[str, Any]) -> None:
        new, problems = load_settings(settings)
        if problems:
            raise ValueError("; ".join(problems))
        old = self._thresholds()
        self._apply_settings(new)
        now = self._thresholds()
        changed = {k: [old.get(k), v] for k, v in now.items() if old.get(k) != v}
        self._ctx.log.info("guardian.reloaded", changed=changed)

    async def stop(self) -> None:
        if self._ctx is not None:
            self._ctx.log.info("guardian.stopped", fired=dict(self._fired_total))

    @property
    def tick_interval_s(self) -> float:
        return self.settings.tick_interval_s

    def _apply_settings(self, new: GuardianSettings) -> None:
        old = self.settings
        self.settings = new
        if new.entropy.window != old.entropy.window:
            self._states = collections.deque(self._states, maxlen=new.entropy.window)
            self._confidences = collections.deque(self._confidences, maxlen=new.entropy.window)
        if (new.rejections.window_s, new.exchange_lag.window_s) != \
                (old.rejections.window_s, old.exchange_lag.window_s):
            self._windows()

    def _windows(self) -> None:
        self._rejections = CounterWindow(self.settings.rejections.window_s)
        self._gaps = CounterWindow(self.settings.exchange_lag.window_s)
        self._latency = RatioWindow(self.settings.exchange_lag.window_s)

    # ---- events ------------------------------------------------------------------------

    async def on_scan(self, scan: ScanRecord) -> None:
        vel_div = getattr(scan, "vel_div", math.nan)
        if vel_div is None or not math.isfinite(vel_div):
            return  # a cold scan carries no signal
        e = self.settings.entropy
        self._states.append(instability.signal_state(vel_div, e.short_threshold,
                                                     e.long_threshold))

    async def on_intent(self, intent: OrderIntent) -> None:
        if getattr(intent, "reduce_only", False):
            return
        confidence = dict(getattr(intent, "gates", ()) or ()).get("confidence")
        if isinstance(confidence, (int, float)) and math.isfinite(confidence):
            self._confidences.append(float(confidence))

    async def on_tick(self, tick: Tick) -> None:
        """Read the figures, run the playbooks, act on what fires."""
        now, wall = tick.mono, tick.wall
        self._last_tick_mono = now
        obs = self.observe(self._ctx.figures(), now, wall)
        self.last_observation = obs
        incidents = evaluate(obs, self.settings, self._last_fired, now)
        if not incidents:
            return
        incident_lines, action_lines = [], []
        for inc in incidents:
            self._last_fired[inc.playbook] = now
            self._fired_total[inc.playbook] += 1
            recovery = recovery_for(inc.playbook, self.settings)
            self._act(inc, recovery)
            self._m_incidents.labels(inc.playbook).inc()
            self._m_actions.labels(recovery.action).inc()
            self._m_last.labels(inc.playbook).set(wall)
            incident_lines.append({"ts": wall, **dataclasses.asdict(inc)})
            action_lines.append({"ts": wall, "playbook": inc.playbook,
                                 **{k: v for k, v in dataclasses.asdict(recovery).items()
                                    if v is not None}})
        assert self._dir is not None
        await asyncio.to_thread(self._write, self._dir, incident_lines, action_lines)

    # ---- the work ----------------------------------------------------------------------

    def observe(self, f: Figures, now: float, wall: float) -> Observation:
        """Turn cumulative figures into the windowed ones the playbooks judge."""
        r = self.settings.rejections
        rejected = sum(v for rule, v in f.risk_rejections.items() if rule not in r.ignore_rules)
        in_window = self._rejections.observe(now, rejected) if f.risk_rejections else None
        gaps = (self._gaps.observe(now, f.feed_gaps_total)
                if f.feed_gaps_total is not None else None)
        latency = (self._latency.observe(now, f.ack_seconds_sum, f.ack_count)
                   if f.ack_seconds_sum is not None and f.ack_count is not None else None)
        e = self.settings.entropy
        states = list(self._states)
        flips = instability.flip_rate(states) if len(states) >= e.min_scans else None
        confs = list(self._confidences)
        conf_std = instability.stdev(confs) if len(confs) >= e.min_scans else None
        return Observation(drawdown=f.drawdown if f.account_known else None,
                           rejections_in_window=in_window, feed_age_s=f.feed_age_s(wall),
                           feed_gaps_in_window=gaps, venue_latency_s=latency,
                           signal_flip_rate=flips, confidence_std=conf_std)

    def _act(self, inc: Incident, rec: Recovery) -> None:
        control = self._ctx.control
        control.raise_incident(CAUSE, inc.playbook, inc.message,
                               severity="warning", figure=inc.figure, value=inc.value,
                               threshold=inc.threshold)
        reason = f"{inc.playbook}: {inc.message}"
        if rec.action == "risk_multiplier":
            control.set_risk_multiplier(CAUSE, rec.factor, rec.duration_s, reason=reason,
                                        key=inc.playbook)
        elif rec.action == "throttle":
            control.throttle(CAUSE, rec.factor, rec.duration_s, reason=reason, key=inc.playbook)
        elif rec.action == "reconnect_feed":
            control.reconnect_feed(CAUSE, reason=reason)
        self._ctx.log.warning("guardian.incident", playbook=inc.playbook, figure=inc.figure,
                              value=inc.value, threshold=inc.threshold, action=rec.action)

    @staticmethod
    def _write(folder: Path, incidents: list[dict[str, Any]],
               actions: list[dict[str, Any]]) -> None:
        append_jsonl(folder / INCIDENTS_FILE, incidents)
        append_jsonl(folder / RECOVERY_FILE, actions)

    # ---- views -------------------------------------------------------------------------

    def _thresholds(self) -> dict[str, Any]:
        s = self.settings
        return {"drawdown.threshold": s.drawdown.threshold,
                "rejections.threshold": s.rejections.threshold,
                "exchange_lag.max_feed_age_s": s.exchange_lag.max_feed_age_s,
                "exchange_lag.max_feed_gaps": s.exchange_lag.max_feed_gaps,
                "exchange_lag.max_venue_latency_s": s.exchange_lag.max_venue_latency_s,
                "entropy.max_flip_rate": s.entropy.max_flip_rate,
                "entropy.max_confidence_std": s.entropy.max_confidence_std}

    def status(self) -> dict[str, Any]:
        """For /status: thresholds, what each playbook last saw, and its cooldown."""
        now = self._last_tick_mono
        playbooks = {}
        for p in PLAYBOOKS:
            cfg = getattr(self.settings, p)
            last = self._last_fired.get(p)
            playbooks[p] = {"enabled": cfg.enabled, "fired": self._fired_total[p],
                            "cooldown_s": cfg.cooldown_s,
                            "cooldown_left_s": None if now is None or last is None
                            else round(cooldown_left(last, now, cfg.cooldown_s), 3)}
        return {"thresholds": self._thresholds(), "playbooks": playbooks,
                "observation": dataclasses.asdict(self.last_observation)}
