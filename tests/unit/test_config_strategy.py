"""`[strategy.params]` belongs to the strategy: config keeps it as read, alpha checks it, and the
daemon's entry points load through the strategy's check (issue 14: config imports no alpha)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dolphind.alpha import profile
from dolphind.alpha.params import CHAMPION
from dolphind.config import Config, ConfigError, config_from_dict, validate

TWEAKED = {"strategy": {"params": {"fixed_tp_pct": 0.012}}}


def test_config_alone_keeps_the_strategy_table_as_read() -> None:
    cfg = config_from_dict(TWEAKED)
    assert cfg.strategy.profile == "champion"
    assert dict(cfg.strategy.params) == {"fixed_tp_pct": 0.012}
    assert validate(cfg) == []


def test_the_strategy_check_refuses_a_changed_champion_through_every_entry_point() -> None:
    line = ("strategy.params: profile 'champion' is frozen; these keys differ from the "
            "champion: fixed_tp_pct (name a new strategy.profile)")
    with pytest.raises(ConfigError) as err:
        profile.config_from_dict(TWEAKED)
    assert err.value.problems == [line]
    cfg = config_from_dict(TWEAKED)
    assert profile.strategy_problems(cfg) == [line]
    assert profile.validate(cfg) == [line]
    with pytest.raises(ConfigError, match="profile 'champion' is frozen"):
        profile.strategy_params(cfg)  # the wiring refuses it even when loaded without the check


def test_the_owners_problems_come_first_in_one_list_with_the_files_own() -> None:
    with pytest.raises(ConfigError) as err:
        profile.config_from_dict({"strategy": {"profile": "r", "params": {"max_hold_bars": 60}},
                                  "scan": {"min_symbols": -1}})
    problems = err.value.problems
    assert problems[0].startswith("strategy.params.max_hold_bars: durations are defined in seconds")
    assert "scan.min_symbols: must be 0-10000" in problems


def test_strategy_parameters_are_coerced_with_configs_rules() -> None:
    with pytest.raises(ConfigError) as err:
        profile.config_from_dict({"strategy": {"profile": "r",
                                               "params": {"fixed_tp_pct": "1%", "nope": 1}}})
    assert set(err.value.problems) == {
        "strategy.params.fixed_tp_pct: expected a number, got a string",
        "strategy.params.nope: unknown key"}
    with pytest.raises(ConfigError) as err:
        config_from_dict({"strategy": {"params": 3}})
    assert err.value.problems == ["strategy.params: expected a table [strategy.params]"]


def test_a_named_profile_gets_its_overrides_and_the_champion_elsewhere() -> None:
    cfg = profile.config_from_dict({"strategy": {"profile": "research", "params": {
        "fixed_tp_pct": 0.012, "max_hold_s": 300}}})
    params = profile.strategy_params(cfg)
    assert params.fixed_tp_pct == 0.012 and params.max_hold_s == 300.0
    assert params.stop_pct == CHAMPION.stop_pct
    assert profile.strategy_params(Config()) == CHAMPION


def test_importing_config_loads_nothing_above_the_base() -> None:
    code = ("import json, sys, dolphind.config\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('dolphind.'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                       text=True, check=True).stdout)
    base = ("dolphind.config", "dolphind.affinity")
    assert loaded and all(m.startswith(base) for m in loaded), loaded
