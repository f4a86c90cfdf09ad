"""A plugin's ``[plugins.<name>]`` table -> a typed frozen dataclass.

Uses the same coercion as the daemon's own config (unknown keys rejected, types checked, each
problem naming its key path), so a plugin section reads and fails like any other section.
Problems are relative to the plugin's table (``drawdown.threshold: ...``); the plugin host
prefixes ``plugins.<name>.``.
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from dolphind.config import build_dataclass as _build  # the daemon's own table -> dataclass coercion

T = TypeVar("T")


def parse_settings(cls: type[T], raw: Mapping[str, Any]) -> tuple[T, list[str]]:
    """Build ``cls`` from ``raw``; returns (settings, problems). Use the settings only when
    there are no problems (a wrongly typed field keeps the raw value)."""
    problems: list[str] = []
    obj = _build(cls, raw, "", problems)
    return obj, problems


def require(problems: list[str], ok: bool, key: str, message: str) -> None:
    """Append ``key: message`` when ``ok`` is false (range checks after parsing)."""
    if not ok:
        problems.append(f"{key}: {message}")
