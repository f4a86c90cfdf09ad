"""``[plugins.scheduler]``: calibration parameters, and the rules as an array of tables
(``[[plugins.scheduler.rules]]``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from dolphind.plugins.settings import parse_settings, require

ACTIONS = ("recalibrate", "halt", "resume")
# What a rule may look at (see plugin.SchedulerPlugin.kpis).
KPIS = ("drawdown", "feed_age_s", "account_leverage", "incidents_last_hour",
        "scans_since_recalibration", "seconds_since_recalibration")


@dataclass(frozen=True, slots=True)
class Rule:
    name: str = ""
    action: Literal["recalibrate", "halt", "resume"] = "recalibrate"
    kpi: str = ""
    op: Literal[">=", "<="] = ">="
    threshold: float = 0.0
    # The condition must hold this long (wall seconds) before the rule fires.
    for_s: float = 0.0
    cooldown_s: float = 3600.0
    # When halt and resume both qualify in one tick, the higher priority wins.
    priority: int = 0


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("halt_on_drawdown", "halt", "drawdown", ">=", 0.15, 0.0, 300.0, 100),
    Rule("resume_after_recovery", "resume", "drawdown", "<=", 0.08, 600.0, 300.0, 50),
    Rule("halt_on_incident_storm", "halt", "incidents_last_hour", ">=", 20.0, 0.0, 900.0, 90),
    Rule("recalibrate_daily", "recalibrate", "seconds_since_recalibration", ">=", 86_400.0,
         0.0, 3600.0, 10),
)


@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    """The ACB w750 threshold: this percentile of the recent warm w750 velocities (bible §10.3)."""

    percentile: float = 60.0
    # Recent warm scans kept (and persisted) for the percentile.
    window_scans: int = 5000
    # No recalibration from fewer samples than this.
    min_samples: int = 100


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    tick_interval_s: float = 5.0
    # The state file is rewritten at most this often while only samples change (an action
    # always writes it at once).
    persist_interval_s: float = 60.0
    calibration: CalibrationSettings = CalibrationSettings()
    rules: tuple[Rule, ...] = DEFAULT_RULES


def load_settings(raw: Mapping[str, Any]) -> tuple[SchedulerSettings, list[str]]:
    s, problems = parse_settings(SchedulerSettings, raw)
    if problems:
        return s, problems
    require(problems, s.tick_interval_s >= 0.05, "tick_interval_s", "must be >= 0.05")
    require(problems, s.persist_interval_s > 0, "persist_interval_s", "must be > 0")
    c = s.calibration
    require(problems, 0 <= c.percentile <= 100, "calibration.percentile", "must be in [0, 100]")
    require(problems, c.min_samples >= 2, "calibration.min_samples", "must be >= 2")
    require(problems, c.window_scans >= c.min_samples, "calibration.window_scans",
            "must be >= calibration.min_samples")
    seen: set[str] = set()
    for i, r in enumerate(s.rules):
        key = f"rules[{i}]"
        require(problems, bool(r.name), f"{key}.name", "is required")
        require(problems, r.name not in seen, f"{key}.name", f"{r.name!r} is used twice")
        seen.add(r.name)
        require(problems, r.kpi in KPIS, f"{key}.kpi",
                f"must be one of {', '.join(KPIS)}, got {r.kpi!r}")
        require(problems, r.for_s >= 0, f"{key}.for_s", "must be >= 0")
        require(problems, r.cooldown_s >= 0, f"{key}.cooldown_s", "must be >= 0")
    return s, problems
