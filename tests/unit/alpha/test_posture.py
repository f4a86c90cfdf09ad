"""Survival stack (bible §11, §19.3)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dolphind.alpha.params import CHAMPION
from dolphind.alpha.posture import (
    POSTURE_RANK,
    SensorReadings,
    SurvivalStack,
    bounded_recovery,
    cat1_invariant,
    cat2_structural,
    cat3_micro,
    cat4_environment,
    cat5_capital,
    combine,
    posture_for,
)

P = CHAMPION


def test_capital_sensor_bible_points() -> None:
    assert cat5_capital(0.12) == pytest.approx(0.5)
    assert cat5_capital(0.20) == pytest.approx(0.1, abs=0.02)  # 0.0832
    assert cat5_capital(0.05) == pytest.approx(1 / (1 + math.exp(-2.1)))  # 0.891, "~1.0"
    assert cat5_capital(0.05) > 0.85
    assert cat5_capital(0.0) > 0.97
    assert cat5_capital(1.0) < 1e-10
    assert cat5_capital(50.0) == 0.0


def test_cat1_kill_switch() -> None:
    assert cat1_invariant(1.0, 0.0) == 1.0
    assert cat1_invariant(0.0, 0.0) == 0.0
    assert cat1_invariant(1.0, 31.0) == 0.0
    assert cat1_invariant(1.0, 30.0) == 1.0


def test_cat2_base_and_staleness_decay() -> None:
    assert cat2_structural("OK", 0.0) == 1.0
    assert cat2_structural("GREEN", 6.0) == 1.0
    assert cat2_structural("ORANGE", 3.0) == 0.5
    assert cat2_structural("RED", 0.0) == 0.1
    assert cat2_structural("OK", 9.0) == pytest.approx(math.exp(-1.0))
    assert cat2_structural(None, 0.0) == 1.0


def test_cat3_micro() -> None:
    assert cat3_micro(True, True, 1.0, 1.0) == 0.5
    assert cat3_micro(True, False, 0.5, 0.9) == pytest.approx(0.3 + 0.7 * 0.5)
    assert cat3_micro(True, False, 2.0, 3.0) == 1.0
    assert cat3_micro(True, False, 0.0, 0.5) == 0.3
    assert cat3_micro(False, False, 0.0, 0.0) == 1.0  # no book layer at all: no OB adjustment


def test_cat4_dvol_spike() -> None:
    assert cat4_environment(None) == 1.0
    assert cat4_environment(0.0) == 0.3
    assert cat4_environment(60.0) == pytest.approx(0.3 + 0.7 * (1 - math.exp(-1)))


def test_combination_and_collapse_penalty() -> None:
    r = SensorReadings(mc_status="ORANGE", book_present=True, depth_quality=0.5,
                       fill_probability=0.5, drawdown=0.0)
    v = combine(r)
    micro = 0.3 + 0.7 * 0.5  # 0.65
    # two degraded (structural 0.5, micro 0.65) -> halved
    assert v.degraded == 2
    assert v.r_target == pytest.approx(cat5_capital(0.0) * 0.5 * micro * 0.5)
    one = combine(SensorReadings(mc_status="ORANGE"))
    assert one.degraded == 1
    assert one.r_target == pytest.approx(cat5_capital(0.0) * 0.5)
    assert combine(SensorReadings(system_alive=0.0)).r_target == 0.0


@pytest.mark.parametrize(
    ("rm", "posture"),
    [(1.0, "APEX"), (0.90, "APEX"), (0.8999, "STALKER"), (0.75, "STALKER"), (0.7499, "TURTLE"),
     (0.50, "TURTLE"), (0.4999, "HIBERNATE"), (0.0, "HIBERNATE")],
)
def test_posture_thresholds(rm: float, posture: str) -> None:
    assert posture_for(rm, P) == posture


def test_bounded_recovery_step_by_hand() -> None:
    # rise from 0.5 to 1.0 after 1 minute: alpha 0.02 -> step min(0.02*0.5, 0.05) = 0.01
    assert bounded_recovery(0.5, 1.0, 1.0) == pytest.approx(0.51)
    # after 60 minutes: alpha 1.0 -> step min(0.5, 3.0) = 0.5
    assert bounded_recovery(0.5, 1.0, 60.0) == pytest.approx(1.0)
    # 10 minutes: alpha 0.2 -> min(0.1, 0.5)
    assert bounded_recovery(0.5, 1.0, 10.0) == pytest.approx(0.6)
    # fast attack
    assert bounded_recovery(0.9, 0.2, 0.01) == 0.2


def _stack_at(drawdown: float) -> SurvivalStack:
    s = SurvivalStack(P)
    s.step(SensorReadings(drawdown=drawdown), 0.0)
    return s


def test_hysteresis_two_bars_down() -> None:
    s = _stack_at(0.0)
    assert s.posture == "APEX"
    bad = SensorReadings(drawdown=0.10)  # cat5 0.646 -> TURTLE
    assert s.step(bad, 1.0).posture == "APEX"
    assert s.step(bad, 1.0).posture == "TURTLE"


def test_hysteresis_interrupted_down_resets() -> None:
    s = _stack_at(0.0)
    bad, good = SensorReadings(drawdown=0.10), SensorReadings(drawdown=0.0)
    assert s.step(bad, 1.0).posture == "APEX"
    # a long gap lets Rm recover fully (bounded recovery, alpha = 1): the candidate is APEX
    # again, which breaks the run of lower readings
    assert s.step(good, 1000.0).candidate == "APEX"
    assert s.step(bad, 1.0).posture == "APEX"
    assert s.step(bad, 1.0).posture == "TURTLE"


def test_hysteresis_five_bars_up() -> None:
    s = _stack_at(0.10)  # starts at TURTLE
    assert s.posture == "TURTLE"
    good = SensorReadings(drawdown=0.0)
    postures = [s.step(good, 1000.0).posture for _ in range(6)]
    # Rm jumps back (dt large) but the posture waits for 5 consecutive bars above
    assert postures[:4] == ["TURTLE"] * 4
    assert postures[4] == "APEX"


def test_rm_recovery_is_bounded_in_real_time() -> None:
    s = _stack_at(0.12)  # Rm 0.5
    r = s.step(SensorReadings(drawdown=0.0), 1.0)
    assert r.rm == pytest.approx(0.5 + 0.02 * (cat5_capital(0.0) - 0.5))


readings_st = st.builds(
    SensorReadings,
    system_alive=st.sampled_from([0.0, 1.0, 1.0, 1.0]),
    heartbeat_age_s=st.floats(0, 60),
    mc_status=st.sampled_from([None, "OK", "ORANGE", "RED"]),
    mc_staleness_hours=st.floats(0, 48),
    book_present=st.booleans(),
    ob_stale=st.booleans(),
    depth_quality=st.floats(0, 3),
    fill_probability=st.floats(0, 1),
    minutes_since_dvol_spike=st.one_of(st.none(), st.floats(0, 600)),
    drawdown=st.floats(0, 1),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(readings_st, st.floats(0, 120)), min_size=1, max_size=40))
def test_rm_in_unit_interval_and_posture_rises_only_after_hysteresis(
    steps: list[tuple[SensorReadings, float]],
) -> None:
    s = SurvivalStack(P)
    candidates: list[str] = []
    postures: list[str] = []
    for readings, dt in steps:
        r = s.step(readings, dt)
        assert 0.0 <= r.rm <= 1.0
        assert 0.0 <= r.sensors.r_target <= 1.0
        candidates.append(r.candidate)
        postures.append(r.posture)
    for i in range(1, len(postures)):
        prev, cur = POSTURE_RANK[postures[i - 1]], POSTURE_RANK[postures[i]]
        if cur < prev:  # a rise: the last 5 candidates were all above the old posture
            window = candidates[i - P.hysteresis_up + 1: i + 1]
            assert len(window) == P.hysteresis_up
            assert all(POSTURE_RANK[c] < prev for c in window)
        if cur > prev:  # a fall: the last 2 candidates were both below
            window = candidates[i - P.hysteresis_down + 1: i + 1]
            assert len(window) == P.hysteresis_down
            assert all(POSTURE_RANK[c] > prev for c in window)


def test_custom_hysteresis_is_read_from_params() -> None:
    p = dataclasses.replace(P, hysteresis_down=1)
    s = SurvivalStack(p)
    s.step(SensorReadings(), 0.0)
    assert s.step(SensorReadings(drawdown=0.10), 1.0).posture == "TURTLE"
