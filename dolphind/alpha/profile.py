"""The strategy profile a config names: its parameters, and the checks of ``[strategy.params]``.

Config sits below alpha and keeps ``[strategy.params]`` as read; the strategy checks it here,
with config's own coercion rules, and hands the check to the loader. ``load_config``,
``config_from_dict`` and ``validate`` below are config's, with the strategy's check added:
every entry point that starts or reloads a daemon (``run``, ``check-config``, reload,
``backtest``) loads through them, so a changed champion parameter is refused with the rest of
the file's problems. The wiring's ``strategy_params`` raises on the same problems, so a config
built any other way still cannot start a strategy it would have refused.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from dolphind import config
from dolphind.alpha.params import CHAMPION, DERIVED_FIELDS, StrategyParams, check_profile
from dolphind.config import Config, ConfigError
from dolphind.config.coerce import build_dataclass

# A duration longer than this is a typo, not a strategy (seconds).
_MAX_DURATION_S = 30 * 86_400.0


def strategy_params(cfg: Config) -> StrategyParams:
    """The strategy parameters the config asks for: the champion plus ``[strategy.params]``.

    Raises ConfigError with the problems ``strategy_problems`` reports."""
    problems: list[str] = []
    params = _merged(cfg, problems)
    if problems:
        raise ConfigError(problems)
    return params


def strategy_problems(cfg: Config) -> list[str]:
    """``[strategy.params]``'s problems, one line each (a ``SectionCheck`` for the loader).

    A changed champion parameter under ``profile = "champion"`` is a problem listing the keys."""
    problems: list[str] = []
    _merged(cfg, problems)
    return problems


def _merged(cfg: Config, found: list[str]) -> StrategyParams:
    overrides = dict(cfg.strategy.params)
    before = len(found)
    for bars_key, secs_key in DERIVED_FIELDS:  # durations are set in seconds (issue 16)
        if bars_key in overrides:
            found.append(f"strategy.params.{bars_key}: durations are defined in seconds and "
                         f"converted with the run's bar interval; set {secs_key} instead")
            overrides.pop(bars_key)
    merged: StrategyParams = build_dataclass(
        StrategyParams, {**CHAMPION.as_dict(), **overrides}, "strategy.params", found)
    for _, secs_key in (*DERIVED_FIELDS, ("", "validation_bar_s")):
        value = getattr(merged, secs_key)
        if not (isinstance(value, (int, float)) and 0.0 < value <= _MAX_DURATION_S):
            found.append(f"strategy.params.{secs_key}: must be > 0 and <= 30 days (seconds), "
                         f"got {value!r}")
    if len(found) == before:
        changed = check_profile(cfg.strategy.profile, merged)
        if changed:
            found.append("strategy.params: profile 'champion' is frozen; these keys differ from "
                         f"the champion: {', '.join(changed)} (name a new strategy.profile)")
    return merged


def load_config(path: str | os.PathLike[str]) -> Config:
    """``dolphind.config.load_config`` with ``[strategy.params]`` checked as well."""
    return config.load_config(path, checks=(strategy_problems,))


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """``dolphind.config.config_from_dict`` with ``[strategy.params]`` checked as well."""
    return config.config_from_dict(raw, checks=(strategy_problems,))


def validate(cfg: Config) -> list[str]:
    """``dolphind.config.validate`` with ``[strategy.params]`` checked as well."""
    return config.validate(cfg, checks=(strategy_problems,))
