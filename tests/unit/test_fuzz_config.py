"""Fuzz: any config file gets a usable config or one-line problems, never another exception.

Hypothesis writes TOML files from the real schema's section and key names with values of every
shape (huge and non-finite numbers, NUL and non-ASCII strings, deep nesting, wrong types), and
raw bytes. Each goes through what ``check-config``, ``run`` and a reload do with a file:
``load_config``, ``preflight``, ``plan_reload`` and the /status rendering.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import typing
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dolphind.config import Config, ConfigError, config_to_jsonable, load_config, plan_reload
from dolphind.preflight import preflight


def _schema() -> tuple[list[str], list[str]]:
    hints = typing.get_type_hints(Config)
    sections, keys = [], []
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(hints[f.name]):
            sections.append(f.name)
            keys += [g.name for g in dataclasses.fields(hints[f.name])]
        else:
            keys.append(f.name)
    # ops.listen would make preflight resolve a random host name (DNS: not on loopback).
    return sections, sorted(set(keys) - {"listen", "internal"})


SECTIONS, KEYS = _schema()

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, -1e308, 1e15, 5e-324, 10**19]),
    st.text(max_size=12),
    st.sampled_from(["", "a\x00b", "١", "../..", "/", "/dev/null", "testnet", "BTCUSDT"]),
)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=8)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # \uXXXX escapes are TOML basic-string escapes too
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


documents = st.dictionaries(
    st.one_of(st.sampled_from(SECTIONS + KEYS), st.text(min_size=1, max_size=6)),
    st.one_of(values, st.dictionaries(st.sampled_from(KEYS), values, max_size=6)),
    max_size=6)


def _exercise(path: Path) -> None:
    try:
        cfg = load_config(path)
        problems = preflight(cfg)
        plan_reload(cfg, cfg)
        config_to_jsonable(cfg)
    except ConfigError as exc:
        problems = exc.problems
    for p in problems:
        assert isinstance(p, str) and p and "\n" not in p and "Traceback" not in p, p


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.one_of(st.just(0), st.integers(min_value=20, max_value=1500)))
def test_any_toml_document_is_a_config_or_one_line_problems(doc: dict, nesting: int) -> None:
    text = "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items())
    if nesting:  # deep nesting, in a plugin's table where the schema allows any value
        text += f"\n[plugins.fuzz]\nv = {deep(nesting)}\n"
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "dolphind.toml"
        p.write_text(text)
        _exercise(p)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_config_or_one_line_problems(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "dolphind.toml"
        p.write_bytes(raw)
        _exercise(p)
