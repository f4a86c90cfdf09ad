"""Reload: what a new config changes, and what it cannot change under a running daemon.

Fields whose change cannot be applied to a running daemon carry ``metadata={"restart": True}``
(directly, or inherited from their section). A reload keeps the running value of those fields,
applies everything else in one assignment, and reports the restart-only keys it did not apply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from dolphind.config.coerce import join_key
from dolphind.config.schema import Config


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload would do: the config to swap in, what it changes, what it cannot."""

    config: Config
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """Keep restart-only fields from ``running``; take every other field from ``new``."""
    applied: list[str] = []
    restart: list[str] = []
    merged = _merge(running, new, "", False, applied, restart)
    return ReloadPlan(merged, tuple(applied), tuple(restart))


def _merge(old: Any, new: Any, path: str, restart_only: bool,
           applied: list[str], restart: list[str]) -> Any:
    if dataclasses.is_dataclass(old) and not isinstance(old, type):
        changes = {}
        for f in dataclasses.fields(old):
            o, n = getattr(old, f.name), getattr(new, f.name)
            if f.metadata.get("internal"):
                changes[f.name] = n
                continue
            sub_restart = restart_only or bool(f.metadata.get("restart"))
            changes[f.name] = _merge(o, n, join_key(path, f.name), sub_restart, applied, restart)
        return dataclasses.replace(old, **changes)
    if isinstance(old, Mapping) and isinstance(new, Mapping) and old != new:
        # Report plugin sections one by one ("plugins.settings.guardian"), not as a blob.
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                (restart if restart_only else applied).append(join_key(path, str(key)))
        return old if restart_only else new
    if old == new:
        return old
    (restart if restart_only else applied).append(path)
    return old if restart_only else new
