"""``dolphind.toml`` -> ``Config``, or every problem in the file at once.

Loading collects every problem (not just the first) as ``ConfigError`` lines that name the key
path and the reason, so `dolphind check-config` can print them all at once. Unknown keys are
errors: a typo in a risk limit must not silently fall back to a default.

Tables whose schema belongs to a layer above config (``[strategy.params]``: the strategy's) are
checked by that layer's ``SectionCheck``, which the caller passes in ``checks``
(``dolphind.alpha.profile.load_config`` passes the strategy's): config imports nothing above
the base, and there is no registry to forget to fill.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dolphind.config.checks import cross_checks
from dolphind.config.coerce import build_dataclass, nesting_problems
from dolphind.config.ranges import range_problems
from dolphind.config.schema import Config, ConfigError

# One line per problem with a built config, in the "key.path: reason" form.
SectionCheck = Callable[[Config], list[str]]


def load_config(path: str | os.PathLike[str], checks: Iterable[SectionCheck] = ()) -> Config:
    """Read and validate ``path``; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        raw_bytes = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read ({exc.strerror or exc})"]) from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: not valid TOML ({exc})"]) from None
    except RecursionError:  # tomllib recurses per nested array/table
        raise ConfigError([f"{p}: not valid TOML (nested too deeply)"]) from None
    cfg = config_from_dict(raw, checks)
    return dataclasses.replace(
        cfg, source=str(p.resolve()), sha256=hashlib.sha256(raw_bytes).hexdigest()
    )


def config_from_dict(raw: Mapping[str, Any], checks: Iterable[SectionCheck] = ()) -> Config:
    """A config from already-parsed TOML; raise ConfigError listing every problem."""
    problems: list[str] = nesting_problems(raw)
    if problems:  # a value this deep would blow the stack of every later deep comparison
        raise ConfigError(problems)
    cfg = build_dataclass(Config, raw, "", problems)
    if not problems:
        problems.extend(validate(cfg, checks))
        named = {p.split(":", 1)[0] for p in problems}
        problems.extend(p for p in range_problems(cfg) if p.split(":", 1)[0] not in named)
    if problems:
        raise ConfigError(problems)
    return cfg


def validate(cfg: Config, checks: Iterable[SectionCheck] = ()) -> list[str]:
    """Problems with a config built in code (e.g. a backtest's overrides of a loaded one):
    the owners' ``checks`` first, then config's own cross checks."""
    problems = [p for check in checks for p in check(cfg)]
    return problems + cross_checks(cfg)
