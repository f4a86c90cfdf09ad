"""Rule evaluation as pure functions of (rules, KPIs, what the scheduler remembers, now).

A rule fires when its condition has held for ``for_s`` and its cooldown has passed, and when
its action makes sense now (safeguards): halt only while the scheduler holds no halt, resume
only a halt the scheduler itself holds (never an operator's or the governor's), recalibrate
only with enough samples. Halt and resume exclude each other; the higher priority wins.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from dolphind_scheduler.settings import Rule


def w750_threshold(velocities: Sequence[float], percentile: float) -> float:
    """The ACB scale-3 threshold: ``percentile`` of the warm w750 velocities (bible §10.3),
    linear interpolation as numpy's default (the same as the alpha engine's own p60)."""
    values = np.asarray([v for v in velocities if math.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        raise ValueError("no finite w750 velocities")
    return float(np.percentile(values, percentile))


def holds(rule: Rule, kpis: Mapping[str, float | None]) -> bool:
    value = kpis.get(rule.kpi)
    if value is None or math.isnan(value):
        return False  # not available: no rule acts on a figure it cannot see
    return value >= rule.threshold if rule.op == ">=" else value <= rule.threshold


def track_since(rules: Sequence[Rule], kpis: Mapping[str, float | None],
                since: Mapping[str, float], now: float) -> dict[str, float]:
    """When each rule's condition started holding without a break (absent: it does not)."""
    out = {}
    for r in rules:
        if holds(r, kpis):
            out[r.name] = since.get(r.name, now)
    return out


def decide(rules: Sequence[Rule], kpis: Mapping[str, float | None], since: Mapping[str, float],
           last_fired: Mapping[str, float], now: float, *, holding_halt: bool,
           can_recalibrate: bool) -> list[Rule]:
    """The rules to act on now, highest priority first."""
    ready = []
    for r in rules:
        started = since.get(r.name)
        if not holds(r, kpis) or started is None or now - started < r.for_s:
            continue
        last = last_fired.get(r.name)
        if last is not None and now - last < r.cooldown_s:
            continue
        if r.action == "halt" and holding_halt:
            continue
        if r.action == "resume" and not holding_halt:
            continue
        if r.action == "recalibrate" and not can_recalibrate:
            continue
        ready.append(r)
    ready.sort(key=lambda r: -r.priority)
    out: list[Rule] = []
    gate_taken = recalibrated = False
    for r in ready:
        if r.action in ("halt", "resume"):
            if not gate_taken:
                out.append(r)
                gate_taken = True
        elif not recalibrated:
            out.append(r)
            recalibrated = True
    return out
