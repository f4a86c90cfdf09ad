"""TOML tables -> frozen dataclasses, collecting every problem instead of stopping at one.

Generic: nothing here knows the daemon's sections, so whoever owns a table (the strategy's
``[strategy.params]``, a plugin's ``[plugins.<name>]``) checks it with the same rules and the
same one-line problems ("key.path: reason") as the daemon's own keys.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from typing import Any, Literal, Mapping, TypeGuard

# Deeper values are refused while loading: nothing in a config needs them, and deep nesting
# overflows the stack of the TOML parser, of comparisons and of JSON encoding later on.
MAX_NESTING = 32


def is_dataclass_type(tp: Any) -> TypeGuard[type[Any]]:
    """A dataclass class (a section, a settings table), not an instance of one."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def build_dataclass(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    """An instance of dataclass ``cls`` from the table ``raw`` at ``path``; every wrong key,
    type or value is appended to ``problems`` (the default stands in for it)."""
    if not isinstance(raw, Mapping):
        problems.append(f"{path or '<root>'}: expected a table, got {_tname(raw)}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for name, f in list(fields.items()):
        hint = f.metadata.get("extra_tables")
        if hint:
            # The section's undeclared sub-tables belong to someone else, who checks them
            # (the plugins validate their [plugins.<name>] tables when they load).
            del fields[name]
            kwargs[name] = _extra_tables(raw, fields, path, hint, problems)
            raw = {k: v for k, v in raw.items() if k in fields}
    for name, f in fields.items():
        if f.metadata.get("raw_table") and name in raw:
            # Kept as read: its owner checks it key by key ([strategy.params]: the strategy).
            if isinstance(raw[name], Mapping):
                kwargs[name] = dict(raw[name])
            else:
                problems.append(f"{join_key(path, name)}: expected a table "
                                f"[{join_key(path, name)}]")
            raw = {k: v for k, v in raw.items() if k != name}
    for key in raw:
        if key not in fields:
            problems.append(f"{join_key(path, key)}: unknown key")
    for name in fields:
        if name in raw:
            kwargs[name] = coerce(hints[name], raw[name], join_key(path, name), problems)
    return cls(**kwargs)


def _extra_tables(raw: Mapping[str, Any], fields: Mapping[str, Any], path: str, hint: str,
                  problems: list[str]) -> dict[str, Any]:
    tables = {}
    for key in [k for k in raw if k not in fields]:
        if isinstance(raw[key], Mapping):
            tables[key] = dict(raw[key])
        else:
            problems.append(f"{join_key(path, key)}: unknown key ({hint})")
    return tables


def coerce(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    """``value`` as type ``tp`` (a dataclass, Literal, tuple, Mapping or scalar), or a problem."""
    origin = typing.get_origin(tp)
    if is_dataclass_type(tp):
        return build_dataclass(tp, value, path, problems)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            problems.append(f"{path}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {_tname(value)}")
            return ()
        return tuple(coerce(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value))
    if origin is collections.abc.Mapping:
        # A TOML table of per-symbol values ({ BTCUSDT = 3 }); TOML keys are always strings.
        (_, value_tp) = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table like {{ BTCUSDT = ... }}, got {_tname(value)}")
            return {}
        return {k: coerce(value_tp, v, join_key(path, k), problems) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected true or false, got {_tname(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {_tname(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path}: expected a number, got {_tname(value)}")
            return value
        if value != value or value in (float("inf"), float("-inf")):
            problems.append(f"{path}: must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {_tname(value)}")
        elif "\x00" in value:  # no path, URL or name holds one; the OS refuses it late
            problems.append(f"{path}: contains a NUL character")
        return value
    return value


def join_key(path: str, key: str) -> str:
    """``path.key``, with a key that would break a one-line problem shown quoted."""
    if not (key.isprintable() and key.strip() == key and key):
        key = repr(key)  # a key with a newline or NUL must not break the one-line problem
    return f"{path}.{key}" if path else key


def _tname(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def nesting_problems(raw: Any) -> list[str]:
    """Values nested deeper than MAX_NESTING (iterative: the check itself must not recurse)."""
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_NESTING:
            return [f"{path.split('.')[0] or '<root>'}: nested more than {MAX_NESTING} levels"]
        if isinstance(value, Mapping):
            stack.extend((v, join_key(path, str(k)), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, path, depth + 1) for v in value)
    return []
