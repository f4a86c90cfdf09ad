"""Guardian (M20): each playbook's threshold and cooldown as pure decisions, then the plugin
acting on real figures through the real control plane, writing its JSONL logs."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from dolphind_guardian import GuardianPlugin
from dolphind_guardian.instability import flip_rate, signal_state, stdev
from dolphind_guardian.playbooks import Observation, evaluate, recovery_for
from dolphind_guardian.settings import GuardianSettings, load_settings
from tests.unit.plugins.conftest import Rig, jsonl

S = GuardianSettings()


# ---- settings ------------------------------------------------------------------------------


def test_settings_problems_name_the_key() -> None:
    _, problems = load_settings({"drawdown": {"threshold": 2.0, "colour": "red"},
                                 "entropy": {"window": 10, "min_scans": 11},
                                 "rejections": {"threshold": "many"}})
    assert problems == ["drawdown.colour: unknown key",
                        "rejections.threshold: expected an integer, got a string"]
    _, problems = load_settings({"drawdown": {"threshold": 2.0},
                                 "entropy": {"window": 10, "min_scans": 11}})
    assert problems == ["drawdown.threshold: must be in (0, 1)",
                        "entropy.min_scans: must be >= 2 and <= entropy.window"]
    assert load_settings({})[1] == []


# ---- pure playbooks ------------------------------------------------------------------------


@pytest.mark.parametrize("obs, fires", [
    (Observation(drawdown=0.0499), []),
    (Observation(drawdown=0.05), ["drawdown"]),
    (Observation(rejections_in_window=9), []),
    (Observation(rejections_in_window=10), ["rejections"]),
    (Observation(feed_age_s=29.9), []),
    (Observation(feed_age_s=30.0), ["exchange_lag"]),
    (Observation(feed_gaps_in_window=3), ["exchange_lag"]),
    (Observation(venue_latency_s=2.5), ["exchange_lag"]),
    (Observation(signal_flip_rate=0.29), []),
    (Observation(signal_flip_rate=0.3), ["entropy"]),
    (Observation(confidence_std=0.2), ["entropy"]),
    (Observation(), []),  # nothing known: nothing fires
    (Observation(drawdown=0.2, feed_age_s=100.0), ["drawdown", "exchange_lag"]),
])
def test_each_playbook_fires_at_its_threshold(obs: Observation, fires: list[str]) -> None:
    assert [i.playbook for i in evaluate(obs, S, {}, now=0.0)] == fires


def test_a_playbook_fires_once_per_cooldown() -> None:
    obs = Observation(drawdown=0.2)
    cooldown = S.drawdown.cooldown_s
    assert evaluate(obs, S, {"drawdown": 100.0}, now=100.0 + cooldown - 0.001) == []
    assert [i.playbook for i in evaluate(obs, S, {"drawdown": 100.0},
                                         now=100.0 + cooldown)] == ["drawdown"]
    # Cooldowns are per playbook.
    both = Observation(drawdown=0.2, rejections_in_window=50)
    assert [i.playbook for i in evaluate(both, S, {"drawdown": 100.0}, now=101.0)] == \
        ["rejections"]


def test_a_disabled_playbook_never_fires() -> None:
    s = dataclasses.replace(S, drawdown=dataclasses.replace(S.drawdown, enabled=False))
    assert evaluate(Observation(drawdown=0.9), s, {}, now=0.0) == []


def test_recovery_actions() -> None:
    assert dataclasses.astuple(recovery_for("drawdown", S)) == ("risk_multiplier", 0.5, 1800.0)
    assert dataclasses.astuple(recovery_for("rejections", S)) == ("throttle", 0.5, 600.0)
    assert dataclasses.astuple(recovery_for("exchange_lag", S)) == ("reconnect_feed", None, None)
    assert dataclasses.astuple(recovery_for("entropy", S)) == ("risk_multiplier", 0.5, 900.0)


def test_signal_instability_measures() -> None:
    assert [signal_state(v, -0.02, 0.01) for v in (-0.03, -0.02, 0.0, 0.01, 0.02)] == \
        [-1, 0, 0, 0, 1]
    assert flip_rate([0, 0, 0, 0]) == 0.0
    assert flip_rate([0, -1, 0, -1, 0]) == 1.0
    assert flip_rate([0, 0, -1, -1, 0]) == 0.5
    assert flip_rate([0]) is None
    assert stdev([0.5, 0.5]) == 0.0
    assert stdev([0.5, 0.9]) == pytest.approx(0.2)


# ---- the plugin on real parts --------------------------------------------------------------


async def _guardian(rig: Rig, settings: dict | None = None) -> GuardianPlugin:
    g = GuardianPlugin()
    assert g.validate(settings or {}) == []
    await g.start(rig.ctx("guardian", settings or {}))
    return g


async def test_drawdown_halves_risk_once_per_cooldown_and_logs(rig: Rig) -> None:
    g = await _guardian(rig, {"drawdown": {"threshold": 0.05, "duration_s": 600,
                                           "cooldown_s": 300}})
    ex = rig.metrics.execution
    ex.equity.set(9400.0)
    ex.peak_equity.set(10_000.0)
    ex.drawdown.set(0.06)
    await g.on_tick(rig.clock.tick())
    assert rig.control.risk_multiplier() == 0.5
    assert rig.control.overrides()[0]["cause"] == "guardian"
    assert rig.sample("dolphind_m20_incidents_total", {"playbook": "drawdown"}) == 1
    for _ in range(5):  # the drawdown persists; the cooldown holds the playbook back
        rig.clock.advance(59)
        await g.on_tick(rig.clock.tick())
    assert rig.sample("dolphind_m20_incidents_total", {"playbook": "drawdown"}) == 1
    rig.clock.advance(5)  # 300 s after the first firing
    await g.on_tick(rig.clock.tick())
    assert rig.sample("dolphind_m20_incidents_total", {"playbook": "drawdown"}) == 2
    folder = rig.tmp / "var" / "plugins" / "guardian"
    incidents = jsonl(folder / "incidents.jsonl")
    actions = jsonl(folder / "recovery_actions.jsonl")
    assert [i["playbook"] for i in incidents] == ["drawdown", "drawdown"]
    assert incidents[0]["value"] == 0.06 and incidents[0]["threshold"] == 0.05
    assert incidents[1]["ts"] - incidents[0]["ts"] == pytest.approx(300.0)
    assert actions[0] == {"ts": incidents[0]["ts"], "playbook": "drawdown",
                          "action": "risk_multiplier", "factor": 0.5, "duration_s": 600.0}
    # Every firing is also an incident on the control plane (comms and the audit log see it).
    kinds = [a.detail.get("kind") for a in rig.control.recent if a.action == "incident"]
    assert kinds == ["drawdown", "drawdown"]
    assert g.status()["playbooks"]["drawdown"]["fired"] == 2


async def test_no_account_yet_means_no_drawdown_judgement(rig: Rig) -> None:
    g = await _guardian(rig)
    rig.metrics.execution.drawdown.set(0.5)  # but equity is unknown (0): not trading yet
    await g.on_tick(rig.clock.tick())
    assert g.last_observation.drawdown is None
    assert rig.control.risk_multiplier() == 1.0


async def test_rejection_spike_throttles(rig: Rig) -> None:
    g = await _guardian(rig, {"rejections": {"threshold": 5, "window_s": 10,
                                             "rate_factor": 0.2, "duration_s": 60}})
    rej = rig.metrics.execution.risk_rejections
    rej.labels("max_notional").inc(1)
    await g.on_tick(rig.clock.tick())
    rej.labels("kill_switch").inc(100)  # a halt rejecting entries is not a spike
    rig.clock.advance(1)
    await g.on_tick(rig.clock.tick())
    assert rig.control.order_rate_factor() == 1.0
    rej.labels("max_leverage").inc(3)
    rej.labels("symbol_exposure").inc(2)
    rig.clock.advance(1)
    await g.on_tick(rig.clock.tick())
    assert g.last_observation.rejections_in_window == 5
    assert rig.control.order_rate_factor() == 0.2
    assert rig.sample("dolphind_m20_recovery_actions_total", {"action": "throttle"}) == 1
    # Rejections older than the window no longer count.
    rig.clock.advance(11)
    await g.on_tick(rig.clock.tick())
    assert g.last_observation.rejections_in_window == 0


async def test_exchange_lag_requests_a_feed_reconnect(rig: Rig) -> None:
    g = await _guardian(rig, {"exchange_lag": {"max_feed_age_s": 10, "cooldown_s": 30}})
    rig.metrics.stage_heartbeat.labels("feed").set(rig.clock.wall - 5)
    await g.on_tick(rig.clock.tick())
    assert rig.control.feed_reconnect_requests == 0
    rig.clock.advance(6)  # 11 s of feed silence
    await g.on_tick(rig.clock.tick())
    assert rig.control.feed_reconnect_requests == 1
    assert rig.control.recent[-1].action == "reconnect_feed"
    assert rig.control.recent[-1].cause == "guardian"
    rig.clock.advance(29)
    await g.on_tick(rig.clock.tick())
    assert rig.control.feed_reconnect_requests == 1
    rig.clock.advance(1)
    await g.on_tick(rig.clock.tick())
    assert rig.control.feed_reconnect_requests == 2


async def test_venue_latency_counts_as_exchange_lag(rig: Rig) -> None:
    g = await _guardian(rig, {"exchange_lag": {"max_venue_latency_s": 1.0, "window_s": 60}})
    ack = rig.metrics.execution.intent_to_ack
    ack.observe(0.01)
    await g.on_tick(rig.clock.tick())
    for _ in range(3):
        ack.observe(2.5)
    rig.clock.advance(1)
    await g.on_tick(rig.clock.tick())
    assert g.last_observation.venue_latency_s == pytest.approx(2.5)
    assert rig.control.feed_reconnect_requests == 1


async def test_noisy_signal_reduces_exposure(rig: Rig) -> None:
    g = await _guardian(rig, {"entropy": {"window": 20, "min_scans": 10, "max_flip_rate": 0.5,
                                          "risk_multiplier": 0.6, "duration_s": 120}})
    for _ in range(20):  # a steady, quiet signal
        await g.on_scan(SimpleNamespace(vel_div=-0.001))
    await g.on_scan(SimpleNamespace(vel_div=float("nan")))  # a cold scan is ignored
    await g.on_tick(rig.clock.tick())
    assert g.last_observation.signal_flip_rate == 0.0
    for i in range(20):  # jitter across the SHORT gate on every scan
        await g.on_scan(SimpleNamespace(vel_div=-0.03 if i % 2 else -0.01))
    rig.clock.advance(1)
    await g.on_tick(rig.clock.tick())
    assert g.last_observation.signal_flip_rate == 1.0
    assert rig.control.risk_multiplier() == 0.6
    assert rig.sample("dolphind_m20_incidents_total", {"playbook": "entropy"}) == 1


async def test_unstable_confidence_reduces_exposure(rig: Rig) -> None:
    g = await _guardian(rig, {"entropy": {"window": 10, "min_scans": 4,
                                          "max_confidence_std": 0.1}})
    for c in (0.5, 0.9, 0.5, 0.9):
        await g.on_intent(SimpleNamespace(reduce_only=False, gates=(("confidence", c),)))
    await g.on_intent(SimpleNamespace(reduce_only=True, gates=(("confidence", 0.0),)))
    await g.on_tick(rig.clock.tick())
    assert g.last_observation.confidence_std == pytest.approx(0.2)
    assert rig.control.risk_multiplier() == 0.5


async def test_reload_changes_a_threshold(rig: Rig) -> None:
    g = await _guardian(rig)
    rig.metrics.stage_heartbeat.labels("feed").set(rig.clock.wall - 12)
    await g.on_tick(rig.clock.tick())
    assert rig.control.feed_reconnect_requests == 0  # 12 s < 30 s default
    await g.reload({"exchange_lag": {"max_feed_age_s": 10}})
    assert ("info", "guardian.reloaded",
            {"changed": {"exchange_lag.max_feed_age_s": [30.0, 10.0]}}) in rig.log.records
    rig.clock.advance(1)
    await g.on_tick(rig.clock.tick())
    assert rig.control.feed_reconnect_requests == 1
    assert g.status()["thresholds"]["exchange_lag.max_feed_age_s"] == 10.0


async def test_feed_gaps_of_every_reason_count(rig: Rig) -> None:
    g = await _guardian(rig, {"exchange_lag": {"max_feed_gaps": 3, "window_s": 60}})
    gaps = rig.metrics.feed_gaps  # dolphind_feed_gaps_total{reason}
    gaps.labels("stall").inc(0)
    await g.on_tick(rig.clock.tick())
    gaps.labels("stall").inc(2)
    gaps.labels("closed").inc(1)
    rig.clock.advance(1)
    await g.on_tick(rig.clock.tick())
    assert g.last_observation.feed_gaps_in_window == 3
    assert rig.control.feed_reconnect_requests == 1
