"""Scheduler (M19): the w750 percentile, rule priorities / cooldowns / safeguards as pure
decisions, and the plugin's state surviving a restart."""

from __future__ import annotations

import asyncio
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from dolphind.alpha.acb import W750Beta
from dolphind.alpha.params import StrategyParams
from dolphind.statebus.base import FEATURES
from dolphind_scheduler import SchedulerPlugin
from dolphind_scheduler.rules import decide, holds, track_since, w750_threshold
from dolphind_scheduler.settings import Rule, load_settings
from dolphind.alpha.warmup import warmup
from tests.unit.alpha.test_stage import StageRig, running
from tests.unit.plugins.conftest import Rig

HALT = Rule("halt_dd", "halt", "drawdown", ">=", 0.10, 0.0, 300.0, 100)
RESUME = Rule("resume_dd", "resume", "drawdown", "<=", 0.05, 60.0, 300.0, 50)
RECAL = Rule("recal", "recalibrate", "scans_since_recalibration", ">=", 100, 0.0, 3600.0, 10)


def test_w750_threshold_is_the_alpha_engines_percentile() -> None:
    rng = np.random.default_rng(7)
    vels = rng.normal(0.0, 0.01, 500).tolist()
    assert w750_threshold(vels, 60.0) == pytest.approx(float(np.percentile(vels, 60)), rel=1e-15)
    # The same number the ACB's own streaming beta computes from the same velocities.
    beta = W750Beta(StrategyParams(), min_samples=100)
    for i, v in enumerate(vels):
        beta.observe(i, v)  # one UTC day: decided once at 100 samples
    beta._day = -1
    beta.observe(len(vels), vels[-1])  # a new day: decide from all of them
    vels.append(vels[-1])
    assert w750_threshold(vels, 60.0) == pytest.approx(beta.threshold, rel=1e-12)
    assert w750_threshold([1.0, math.nan, 3.0], 50.0) == 2.0  # cold (NaN) scans are skipped
    with pytest.raises(ValueError):
        w750_threshold([math.nan], 60.0)


def test_settings_problems_name_the_key() -> None:
    _, problems = load_settings({"rules": [{"name": "a", "action": "halt", "kpi": "mood"},
                                           {"name": "a", "action": "resume", "kpi": "drawdown"}],
                                 "calibration": {"percentile": 101}})
    assert problems == ["calibration.percentile: must be in [0, 100]",
                        "rules[0].kpi: must be one of drawdown, feed_age_s, account_leverage, "
                        "incidents_last_hour, scans_since_recalibration, "
                        "seconds_since_recalibration, got 'mood'",
                        "rules[1].name: 'a' is used twice"]
    _, problems = load_settings({"rules": [{"name": "a", "action": "explode"}]})
    assert problems == ["rules[0].action: must be one of 'recalibrate', 'halt', 'resume', "
                        "got 'explode'"]


def test_conditions_and_for_s() -> None:
    assert holds(HALT, {"drawdown": 0.10}) and not holds(HALT, {"drawdown": 0.09})
    assert not holds(HALT, {"drawdown": None}) and not holds(HALT, {})
    since = track_since([HALT, RESUME], {"drawdown": 0.01}, {}, now=10.0)
    assert since == {"resume_dd": 10.0}
    since = track_since([HALT, RESUME], {"drawdown": 0.02}, since, now=50.0)
    assert since == {"resume_dd": 10.0}  # still holding since 10
    kw = dict(holding_halt=True, can_recalibrate=False)
    assert decide([RESUME], {"drawdown": 0.02}, since, {}, 69.0, **kw) == []
    assert decide([RESUME], {"drawdown": 0.02}, since, {}, 70.0, **kw) == [RESUME]
    # A break resets the clock.
    assert track_since([RESUME], {"drawdown": 0.07}, since, now=71.0) == {}


def test_priorities_cooldowns_and_safeguards() -> None:
    rules = [RECAL, RESUME, HALT]
    since = {"halt_dd": 0.0, "resume_dd": 0.0, "recal": 0.0}
    both = dict(can_recalibrate=True)
    # Halt and resume both "hold" (say two KPIs disagree): the higher priority alone acts.
    halt_first = Rule("halt2", "halt", "drawdown", "<=", 1.0, 0.0, 0.0, 100)
    got = decide([RESUME, halt_first, RECAL], {"drawdown": 0.0, "scans_since_recalibration": 500},
                 {"resume_dd": 0.0, "halt2": 0.0, "recal": 0.0}, {}, 100.0,
                 holding_halt=False, **both)
    assert got == [halt_first, RECAL]
    # Safeguards: no second halt while holding one, no resume of a halt we do not hold,
    # no recalibration without enough samples.
    assert decide(rules, {"drawdown": 0.2}, since, {}, 100.0, holding_halt=True,
                  can_recalibrate=False) == []
    assert decide([RESUME], {"drawdown": 0.0}, since, {}, 100.0, holding_halt=False,
                  can_recalibrate=False) == []
    # Cooldown.
    assert decide([HALT], {"drawdown": 0.2}, since, {"halt_dd": 0.0}, 299.0,
                  holding_halt=False, can_recalibrate=False) == []
    assert decide([HALT], {"drawdown": 0.2}, since, {"halt_dd": 0.0}, 300.0,
                  holding_halt=False, can_recalibrate=False) == [HALT]


def _scan(n: int, w750: float) -> SimpleNamespace:
    return SimpleNamespace(scan_number=n, velocity=(0.0, 0.0, 0.0, w750), vel_div=0.0)


SETTINGS = {"tick_interval_s": 1.0,
            "calibration": {"percentile": 60.0, "min_samples": 50, "window_scans": 200},
            "rules": [
                {"name": "halt_dd", "action": "halt", "kpi": "drawdown", "op": ">=",
                 "threshold": 0.10, "cooldown_s": 0, "priority": 100},
                {"name": "resume_dd", "action": "resume", "kpi": "drawdown", "op": "<=",
                 "threshold": 0.05, "for_s": 60, "cooldown_s": 0, "priority": 50},
                {"name": "recal", "action": "recalibrate", "kpi": "scans_since_recalibration",
                 "threshold": 100, "cooldown_s": 600, "priority": 10}]}


async def _scheduler(rig: Rig) -> SchedulerPlugin:
    p = SchedulerPlugin()
    assert p.validate(SETTINGS) == []
    await p.start(rig.ctx("scheduler", SETTINGS))
    return p


async def test_recalibrates_from_recent_scans_and_publishes_on_the_bus(rig: Rig) -> None:
    p = await _scheduler(rig)
    await p.on_scan(_scan(0, math.nan))  # cold w750
    vels = [0.001 * ((i * 37) % 101 - 50) for i in range(120)]
    for i, v in enumerate(vels):
        await p.on_scan(_scan(i + 1, v))
    await p.on_tick(rig.clock.tick())
    published = rig.bus.get(FEATURES, "acb_w750_threshold")
    assert published["threshold"] == pytest.approx(float(np.percentile(vels, 60)))
    assert published["samples"] == 120 and published["scan_number"] == 120
    assert rig.sample("dolphind_m19_actions_total", {"action": "recalibrate"}) == 1
    assert rig.sample("dolphind_m19_acb_w750_threshold") == pytest.approx(published["threshold"])
    # Not again before 100 new scans (the KPI), nor before the cooldown.
    for i in range(100):
        await p.on_scan(_scan(200 + i, 0.01))
    rig.clock.advance(599)
    await p.on_tick(rig.clock.tick())
    assert rig.sample("dolphind_m19_actions_total", {"action": "recalibrate"}) == 1
    rig.clock.advance(1)
    await p.on_tick(rig.clock.tick())
    assert rig.sample("dolphind_m19_actions_total", {"action": "recalibrate"}) == 2
    assert rig.bus.get(FEATURES, "acb_w750_threshold")["samples"] == 200  # the window's cap


async def test_halt_persists_across_restart_and_resume_releases_only_its_own(rig: Rig) -> None:
    ex = rig.metrics.execution
    ex.equity.set(8800.0)
    ex.drawdown.set(0.12)
    p = await _scheduler(rig)
    await p.on_tick(rig.clock.tick())
    assert rig.control.halt_holds == {"scheduler": "rule halt_dd: drawdown=0.12 >= 0.1"}
    await p.stop()
    state = json.loads((rig.tmp / "var/plugins/scheduler/scheduler_state.json").read_text())
    assert state["holding_halt"] is True and "halt_dd" in state["last_fired"]

    # Restart: a new control plane (nothing halted), the same data dir.
    await rig.restart()
    ex = rig.metrics.execution
    ex.equity.set(8800.0)
    p = await _scheduler(rig)
    assert rig.control.halt_holds["scheduler"].endswith("(restored after restart)")
    rig.control.halt("governor", "max_drawdown")  # someone else halts too
    ex.drawdown.set(0.03)
    await p.on_tick(rig.clock.tick())
    rig.clock.advance(59)
    await p.on_tick(rig.clock.tick())
    assert "scheduler" in rig.control.halt_holds  # recovered for 59 s < for_s
    rig.clock.advance(1)
    await p.on_tick(rig.clock.tick())
    assert rig.control.halt_holds == {"governor": "max_drawdown"}  # ours released, not theirs
    assert rig.control.halted
    assert rig.sample("dolphind_m19_actions_total", {"action": "resume"}) == 1


async def test_samples_and_calibration_survive_a_restart(rig: Rig) -> None:
    p = await _scheduler(rig)
    for i in range(60):
        await p.on_scan(_scan(i, 0.001 * i))
    await p.on_tick(rig.clock.tick())
    first = rig.bus.get(FEATURES, "acb_w750_threshold")
    await p.stop()
    await rig.restart()  # the embedded bus starts empty
    p2 = await _scheduler(rig)
    assert len(p2.velocities) == 60
    assert rig.bus.get(FEATURES, "acb_w750_threshold") == first  # re-published at start


async def test_the_alpha_stage_applies_the_recalibrated_threshold(rig: Rig) -> None:
    """Scheduler -> bus -> alpha stage -> engine: the published threshold decides ACB beta
    and /status shows it (the engine's own percentile needs 100 samples it has not got)."""
    await asyncio.to_thread(warmup)  # numba kernels compiled off the loop, as the daemon does
    p = await _scheduler(rig)
    vels = [0.001 * ((i * 37) % 101 - 50) for i in range(120)]
    for i, v in enumerate(vels):
        await p.on_scan(_scan(i + 1, v))
    await p.on_tick(rig.clock.tick())
    published = rig.bus.get(FEATURES, "acb_w750_threshold")["threshold"]
    async with running(StageRig(rig.metrics, bus=rig.bus)) as stage:
        await stage.bars(2, w750=published + 0.001)
        st = stage.status()
        assert st["acb_w750_threshold"] == pytest.approx(published)
        assert st["acb_w750_source"] == "recalibrated"
        assert st["acb_beta"] == StrategyParams().beta_high
        await stage.bars(1, w750=published - 0.001)  # beta holds for the day once decided
        assert stage.status()["acb_beta"] == StrategyParams().beta_high
