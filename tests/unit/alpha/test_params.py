"""The champion parameter set: values from bible §19, fingerprint, profile check."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from dolphind.alpha.params import (CHAMPION, StrategyParams, at_interval, bars_for, changed_keys,
                                   check_profile, effective_durations, params_hash)


def test_champion_values_match_bible_19_1() -> None:
    p = CHAMPION
    assert (p.vel_div_threshold, p.vel_div_extreme) == (-0.02, -0.05)
    assert (p.min_leverage, p.max_leverage, p.abs_max_leverage) == (0.5, 5.0, 6.0)
    assert (p.leverage_convexity, p.fraction) == (3.0, 0.20)
    assert (p.fixed_tp_pct, p.stop_pct, p.max_hold_bars) == (0.0095, 1.0, 120)
    assert (p.dc_lookback_bars, p.dc_min_magnitude_bps, p.dc_skip_contradicts) == (7, 0.75, True)
    assert (p.min_irp_alignment, p.lookback, p.seed) == (0.45, 100, 42)
    assert (p.sp_maker_entry_rate, p.sp_maker_exit_rate) == (0.62, 0.50)
    assert p.direction == -1 and p.long_enabled is False


def test_acb_and_survival_values_match_bible_19_2_and_19_3() -> None:
    p = CHAMPION
    assert (p.beta_high, p.beta_low, p.w750_threshold_pct) == (0.8, 0.2, 60.0)
    assert (p.funding_very_bearish, p.dvol_extreme, p.fng_extreme_fear, p.taker_selling) == (
        -0.0001, 80.0, 25.0, 0.8,
    )
    assert (p.apex_rm, p.stalker_rm, p.turtle_rm) == (0.90, 0.75, 0.50)
    assert (p.hysteresis_down, p.hysteresis_up) == (2, 5)


def test_hash_is_sha256_of_sorted_key_json_first_16_hex() -> None:
    # The profile: every field except the bar counts derived from seconds (issue 16).
    profile = {k: v for k, v in dataclasses.asdict(CHAMPION).items()
               if k not in ("lookback", "max_hold_bars", "dc_lookback_bars")}
    assert {"max_hold_s", "lookback_s", "dc_lookback_s", "validation_bar_s"} <= set(profile)
    blob = json.dumps(profile, sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert params_hash(CHAMPION) == expected
    assert len(expected) == 16


def test_hash_is_stable_and_equal_for_equal_params() -> None:
    assert params_hash(StrategyParams()) == params_hash(CHAMPION)
    assert params_hash(CHAMPION) == params_hash(CHAMPION)


def test_hash_changes_with_any_field() -> None:
    base = params_hash(CHAMPION)
    for f in dataclasses.fields(StrategyParams):
        if f.metadata.get("derived"):
            continue  # a bar count computed from a duration in seconds: not the profile
        value = getattr(CHAMPION, f.name)
        if isinstance(value, bool):
            new = not value
        elif isinstance(value, int):
            new = value + 1
        elif isinstance(value, float):
            new = value * 1.5 + 0.001
        elif value is None:
            new = 0.001
        else:
            new = value + "X"
        changed = dataclasses.replace(CHAMPION, **{f.name: new})
        assert params_hash(changed) != base, f.name
        assert changed_keys(CHAMPION, changed) == [f.name]


def test_changed_keys_lists_every_difference_sorted() -> None:
    other = dataclasses.replace(CHAMPION, max_hold_s=300.0, fixed_tp_pct=0.01)
    assert changed_keys(CHAMPION, other) == ["fixed_tp_pct", "max_hold_s"]
    assert changed_keys(CHAMPION, CHAMPION) == []


def test_int_to_float_is_a_change() -> None:
    other = dataclasses.replace(CHAMPION, hysteresis_up=5.0)  # type: ignore[arg-type]
    assert changed_keys(CHAMPION, other) == ["hysteresis_up"]


@pytest.mark.parametrize("profile", ["champion"])
def test_champion_profile_with_changes_is_refused(profile: str) -> None:
    tweaked = dataclasses.replace(CHAMPION, fixed_tp_pct=0.012)
    assert check_profile(profile, tweaked) == ["fixed_tp_pct"]
    assert check_profile(profile, CHAMPION) == []


def test_other_profile_may_change_parameters() -> None:
    tweaked = dataclasses.replace(CHAMPION, fixed_tp_pct=0.012)
    assert check_profile("research-tp120", tweaked) == []


# The champion's fingerprint, pinned. An edit of any CHAMPION default in code changes it and
# fails here: the champion is frozen (bible §1), so such an edit needs a new profile instead.
# Issue 16 moved it: durations are now defined in seconds (max_hold_s, lookback_s, ...).
CHAMPION_HASH = "5495f97574e096ee"


def test_champion_golden_hash_is_pinned() -> None:
    assert params_hash(CHAMPION) == CHAMPION_HASH
    assert params_hash(StrategyParams()) == CHAMPION_HASH
    # The golden value is not a tautology: one changed default moves it.
    assert params_hash(dataclasses.replace(CHAMPION, fixed_tp_pct=0.0096)) != CHAMPION_HASH


def test_durations_are_seconds_converted_with_the_run_interval() -> None:
    # The champion's bar counts are its 5-second values; other intervals get the same time.
    assert (CHAMPION.max_hold_s, CHAMPION.lookback_s, CHAMPION.dc_lookback_s) == (600.0, 500.0, 35.0)
    five = at_interval(CHAMPION, 5.0)
    assert (five.max_hold_bars, five.lookback, five.dc_lookback_bars) == (120, 100, 7)
    minute = at_interval(CHAMPION, 60.0)
    assert (minute.max_hold_bars, minute.lookback, minute.dc_lookback_bars) == (10, 8, 1)
    five_min = at_interval(CHAMPION, 300.0)
    assert (five_min.max_hold_bars, five_min.lookback, five_min.dc_lookback_bars) == (2, 2, 1)
    # The conversion is not part of the profile: same hash at any interval.
    assert params_hash(minute) == params_hash(CHAMPION)
    eff = {d.name: (d.bars, d.effective_s) for d in effective_durations(CHAMPION, 60.0)}
    assert eff["max_hold_s"] == (10, 600.0) and eff["dc_lookback_s"] == (1, 60.0)
    with pytest.raises(ValueError):
        at_interval(CHAMPION, 0.0)


def test_bars_for_rounds_to_nearest_and_never_below_one() -> None:
    assert bars_for(600.0, 60.0) == 10 and bars_for(630.0, 60.0) == 11
    assert bars_for(35.0, 300.0) == 1 and bars_for(0.001, 5.0) == 1
