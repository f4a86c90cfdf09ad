"""The champion parameter set: values from bible §19, fingerprint, profile check."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from dolphind.alpha.params import CHAMPION, StrategyParams, changed_keys, check_profile, params_hash


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
    blob = json.dumps(dataclasses.asdict(CHAMPION), sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert params_hash(CHAMPION) == expected
    assert len(expected) == 16


def test_hash_is_stable_and_equal_for_equal_params() -> None:
    assert params_hash(StrategyParams()) == params_hash(CHAMPION)
    assert params_hash(CHAMPION) == params_hash(CHAMPION)


def test_hash_changes_with_any_field() -> None:
    base = params_hash(CHAMPION)
    for f in dataclasses.fields(StrategyParams):
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
    other = dataclasses.replace(CHAMPION, max_hold_bars=60, fixed_tp_pct=0.01)
    assert changed_keys(CHAMPION, other) == ["fixed_tp_pct", "max_hold_bars"]
    assert changed_keys(CHAMPION, CHAMPION) == []


def test_int_to_float_is_a_change() -> None:
    other = dataclasses.replace(CHAMPION, max_hold_bars=120.0)  # type: ignore[arg-type]
    assert changed_keys(CHAMPION, other) == ["max_hold_bars"]


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
CHAMPION_HASH = "0d2f8b2ac52e609c"


def test_champion_golden_hash_is_pinned() -> None:
    assert params_hash(CHAMPION) == CHAMPION_HASH
    assert params_hash(StrategyParams()) == CHAMPION_HASH
    # The golden value is not a tautology: one changed default moves it.
    assert params_hash(dataclasses.replace(CHAMPION, fixed_tp_pct=0.0096)) != CHAMPION_HASH
