"""The config reference, generated from the dataclasses in ``dolphind/config/schema.py``.

Each key's description is the comment block right above its field (or the class docstring's
first line for a section), so docs/config-reference.md cannot drift from the code: a test
regenerates it and compares. Run ``dolphind config-reference`` to print it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from dolphind.alpha.params import StrategyParams
from dolphind.config import Config
from dolphind.config.coerce import is_dataclass_type

__all__ = ["metrics_markdown", "reference_markdown", "settings_markdown", "strategy_markdown"]

_FIELD = re.compile(r"^\s{4}(\w+)\s*:")


def _field_comments(cls: type) -> dict[str, str]:
    """Comment lines directly above each field of ``cls`` (joined), by field name."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if not text.startswith("---"):  # a "--- group ---" rule, not a description
                pending.append(text)
            continue
        m = _FIELD.match(line)
        if m:
            out[m.group(1)] = " ".join(pending)
        pending = []
    return out


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        if value and all(dataclasses.is_dataclass(v) for v in value):
            return f"{len(value)} tables (see below)"
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{...}"
    if dataclasses.is_dataclass(value):
        return "{...}"
    return repr(value)


def _section(prefix: str, tp: type, lines: list[str], restart_all: bool = False) -> None:
    """A table's heading row and one row per key; a nested table (e.g. ``execution.binance``)
    gets its own heading and rows, so every key has a row of its own."""
    doc = (inspect.getdoc(tp) or "").split("\n\n")[0].replace("\n", " ")
    if doc.startswith(f"{tp.__name__}("):  # no docstring: the dataclass signature
        doc = ""
    heading = f"[{prefix[:-2]}]" if prefix.endswith("[]") else prefix  # [[array of tables]]
    lines.append(f"| **[{heading}]** | | | {doc} |")
    comments = _field_comments(tp)
    hints = typing.get_type_hints(tp)
    nested: list[tuple[str, type, bool]] = []
    for sf in dataclasses.fields(tp):
        if sf.metadata.get("internal") or sf.metadata.get("extra_tables"):
            continue
        hint = hints.get(sf.name)
        restart_sub = restart_all or bool(sf.metadata.get("restart"))
        if is_dataclass_type(hint):
            nested.append((f"{prefix}.{sf.name}", hint, restart_sub))
            continue
        args = typing.get_args(hint)
        if typing.get_origin(hint) is tuple and args and is_dataclass_type(args[0]):
            nested.append((f"{prefix}.{sf.name}[]", args[0], restart_sub))
        restart = "yes" if restart_all or sf.metadata.get("restart") else ""
        lines.append(f"| `{prefix}.{sf.name}` | `{_toml(_default(sf))}` | {restart} | "
                     f"{comments.get(sf.name, '')} |")
    for sub_prefix, sub_tp, sub_restart in nested:  # after the table's own keys, as in TOML
        _section(sub_prefix, sub_tp, lines, sub_restart)


def reference_markdown() -> str:
    lines = ["| key | default | restart | what it is |", "|---|---|---|---|"]
    hints = typing.get_type_hints(Config)
    top = _field_comments(Config)
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if is_dataclass_type(tp):
            _section(f.name, tp, lines)
        else:
            restart = "yes" if f.metadata.get("restart") else ""
            lines.append(f"| `{f.name}` | `{_toml(_default(f))}` | {restart} | "
                         f"{top.get(f.name, '')} |")
    return "\n".join(lines) + "\n"


def settings_markdown(cls: type, prefix: str) -> str:
    """A plugin's ``[plugins.<name>]`` table (or any settings dataclass) in the same layout;
    the comments above its fields are the descriptions."""
    lines = ["| key | default | restart | what it is |", "|---|---|---|---|"]
    _section(prefix, cls, lines)
    return "\n".join(lines) + "\n"


def strategy_markdown() -> str:
    """Every strategy parameter ``[strategy.params]`` can override, with the champion's value.
    Overriding any of them needs a profile name other than "champion"."""
    comments = _field_comments(StrategyParams)
    lines = ["| key | champion | what it is |", "|---|---|---|"]
    for f in dataclasses.fields(StrategyParams):
        lines.append(f"| `strategy.params.{f.name}` | `{_toml(_default(f))}` | "
                     f"{comments.get(f.name, '')} |")
    return "\n".join(lines) + "\n"


def metrics_markdown() -> str:
    """Every metric the daemon itself registers (plugins add their own), from the objects."""
    from prometheus_client.metrics import MetricWrapperBase

    from dolphind.telemetry.metrics import Metrics, WaitHistogram

    found: dict[str, MetricWrapperBase | WaitHistogram] = {}

    def walk(obj: Any, depth: int = 0) -> None:
        for value in vars(obj).values():
            if isinstance(value, (MetricWrapperBase, WaitHistogram)):
                found.setdefault(value._name, value)
            elif depth < 2 and hasattr(value, "__dict__") and type(value).__module__ == \
                    "dolphind.telemetry.metrics":
                walk(value, depth + 1)

    walk(Metrics())
    lines = ["| metric | type | labels | what it is |", "|---|---|---|---|"]
    for name, metric in found.items():
        suffix = "_total" if metric._type == "counter" else ""
        lines.append(f"| `{name}{suffix}` | {metric._type} | {', '.join(metric._labelnames)} | "
                     f"{metric._documentation} |")
    lines.append("| `process_*`, `python_info` | | | process and interpreter metrics |")
    return "\n".join(lines) + "\n"
