"""The control plane: holds, temporary risk reductions that expire by themselves, requests,
incidents, and subscribers that cannot break an action."""

from __future__ import annotations

import orjson
import pytest

from dolphind.control import ControlAction
from tests.unit.plugins.conftest import Rig


def test_each_cause_holds_its_own_halt_and_only_the_operator_lifts_all(rig: Rig) -> None:
    c = rig.control
    c.halt("scheduler", "drawdown")
    c.halt("governor", "max_drawdown breached")
    c.release_halt("scheduler")
    assert c.halted and c.halt_holds == {"governor": "max_drawdown breached"}
    assert rig.sample("dolphind_trading_halted") == 1
    c.resume("http:127.0.0.1")
    assert not c.halted and c.halt_holds == {}
    assert rig.sample("dolphind_trading_halted") == 0
    assert c.recent[-1].detail["lifted"] == ["governor"]
    # Releasing the last hold resumes trading.
    c.halt("scheduler", "x")
    c.release_halt("scheduler")
    assert not c.halted


def test_risk_multiplier_smallest_wins_and_expires_by_itself(rig: Rig) -> None:
    c = rig.control
    assert c.risk_multiplier() == 1.0
    c.set_risk_multiplier("guardian", 0.5, 60, key="drawdown")
    c.set_risk_multiplier("guardian", 0.7, 120, key="entropy")
    assert c.risk_multiplier() == 0.5
    assert rig.sample("dolphind_risk_multiplier") == 0.5
    rig.clock.advance(60)
    assert c.risk_multiplier() == 0.7  # the drawdown cut ran out, the entropy one did not
    assert c.recent[-1].action == "risk_multiplier_expired"
    assert c.recent[-1].detail == {"key": "drawdown", "factor": 0.5, "effective": 0.7}
    rig.clock.advance(60)
    assert c.risk_multiplier() == 1.0
    assert rig.sample("dolphind_risk_multiplier") == 1.0
    # The same cause and key replaces its own setting.
    c.set_risk_multiplier("guardian", 0.5, 10, key="drawdown")
    c.set_risk_multiplier("guardian", 0.9, 10, key="drawdown")
    assert c.risk_multiplier() == 0.9


def test_overrides_only_reduce_risk(rig: Rig) -> None:
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="factor must be in"):
            rig.control.set_risk_multiplier("x", bad, 10)
    with pytest.raises(ValueError, match="duration_s"):
        rig.control.throttle("x", 0.5, 0)


def test_requests_and_incidents_reach_subscribers_with_their_cause(rig: Rig) -> None:
    c = rig.control
    seen: list[ControlAction] = []
    c.subscribe(seen.append)
    c.reconnect_feed("guardian", "feed silent")
    c.flatten("http:127.0.0.1", "end of day")
    c.raise_incident("guardian", "drawdown", "drawdown 6% >= 5%", severity="warning", value=0.06)
    assert c.feed_reconnect_requests == 1 and c.flatten_requests == 1 and c.incidents_total == 1
    assert [(a.action, a.cause) for a in seen] == [
        ("reconnect_feed", "guardian"), ("flatten", "http:127.0.0.1"), ("incident", "guardian")]
    assert seen[-1].detail == {"kind": "drawdown", "severity": "warning",
                               "message": "drawdown 6% >= 5%", "value": 0.06}
    assert rig.sample("dolphind_control_actions_total", {"action": "incident"}) == 1
    with pytest.raises(ValueError, match="severity"):
        c.raise_incident("x", "k", "m", severity="apocalyptic")
    c.unsubscribe(seen.append)
    c.halt("x")
    assert len(seen) == 3


def test_a_failing_subscriber_does_not_stop_the_action(rig: Rig) -> None:
    c = rig.control
    after: list[str] = []

    def broken(a: ControlAction) -> None:
        raise RuntimeError("audit disk full")

    c.subscribe(broken)
    c.subscribe(lambda a: after.append(a.action))
    c.halt("http:127.0.0.1", "test")
    assert c.halted and after == ["halt"]
    assert rig.sample("dolphind_control_listener_failures_total") == 1


def test_status_is_json(rig: Rig) -> None:
    c = rig.control
    c.halt("governor", "x")
    c.throttle("guardian", 0.5, 30, reason="spike", key="rejections")
    st = orjson.loads(orjson.dumps(c.status()))
    assert st["halted_by"] == {"governor": "x"}
    assert st["order_rate_factor"] == 0.5
    assert st["overrides"] == [{"kind": "throttle", "cause": "guardian", "key": "rejections",
                                "factor": 0.5, "remaining_s": 30.0, "reason": "spike"}]
