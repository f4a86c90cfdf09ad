"""The config reference, generated from the dataclasses in ``config.py``.

Each key's description is the comment block right above its field (or the class docstring's
first line for a section), so the reference in README.md cannot drift from the code: a test
regenerates it and compares. Run ``dolphind config-reference`` to print it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from dolphind.config import Config

_FIELD = re.compile(r"^\s{4}(\w+)\s*:")


def _field_comments(cls: type) -> dict[str, str]:
    """Comment lines directly above each field of ``cls`` (joined), by field name."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        m = _FIELD.match(line)
        if m:
            out[m.group(1)] = " ".join(pending)
        pending = []
    return out


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{...}"
    return repr(value)


def reference_markdown() -> str:
    lines = ["| key | default | restart | what it is |", "|---|---|---|---|"]
    hints = typing.get_type_hints(Config)
    top = _field_comments(Config)
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            doc = (inspect.getdoc(tp) or "").split("\n\n")[0].replace("\n", " ")
            lines.append(f"| **[{f.name}]** | | | {doc} |")
            comments = _field_comments(tp)
            for sf in dataclasses.fields(tp):
                if sf.metadata.get("internal") or sf.name == "settings":
                    continue
                restart = "yes" if sf.metadata.get("restart") else ""
                lines.append(f"| `{f.name}.{sf.name}` | `{_toml(_default(sf))}` | {restart} | "
                             f"{comments.get(sf.name, '')} |")
        else:
            restart = "yes" if f.metadata.get("restart") else ""
            lines.append(f"| `{f.name}` | `{_toml(_default(f))}` | {restart} | "
                         f"{top.get(f.name, '')} |")
    return "\n".join(lines) + "\n"


__all__ = ["reference_markdown"]


def metrics_markdown() -> str:
    """Every metric the daemon itself registers (plugins add their own), from the objects."""
    from prometheus_client.metrics import MetricWrapperBase

    from dolphind.ops.metrics import Metrics, WaitHistogram

    found: dict[str, MetricWrapperBase | WaitHistogram] = {}

    def walk(obj: Any, depth: int = 0) -> None:
        for value in vars(obj).values():
            if isinstance(value, (MetricWrapperBase, WaitHistogram)):
                found.setdefault(value._name, value)
            elif depth < 2 and hasattr(value, "__dict__") and type(value).__module__ == \
                    "dolphind.ops.metrics":
                walk(value, depth + 1)

    walk(Metrics())
    lines = ["| metric | type | labels | what it is |", "|---|---|---|---|"]
    for name, metric in found.items():
        suffix = "_total" if metric._type == "counter" else ""
        lines.append(f"| `{name}{suffix}` | {metric._type} | {', '.join(metric._labelnames)} | "
                     f"{metric._documentation} |")
    lines.append("| `process_*`, `python_info` | | | process and interpreter metrics |")
    return "\n".join(lines) + "\n"
