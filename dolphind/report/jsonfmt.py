"""Deterministic JSON: the same values give the same bytes on every run and machine.

Floats are rounded to a fixed number of decimals (so float noise far below anything that
matters cannot flip a byte), ``-0.0`` becomes ``0.0``, NaN becomes null and infinities the
strings ``"inf"`` / ``"-inf"`` (strict JSON has no infinity; ``float("inf")`` reads them back).
Keys are sorted and the layout is fixed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

DECIMALS = 10


def to_jsonable(value: Any, decimals: int = DECIMALS) -> Any:
    """``value`` as plain JSON types (dataclasses and mappings become dicts with str keys)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _float(float(value), decimals)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), decimals)
                for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, decimals) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_jsonable(v, decimals) for v in value]
    raise TypeError(f"cannot write {type(value).__name__} to the report JSON: {value!r}")


def _float(x: float, decimals: int) -> float | str | None:
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    r = round(x, decimals)
    return 0.0 if r == 0 else r  # folds -0.0 into 0.0


def dumps(value: Any, decimals: int = DECIMALS) -> str:
    """Deterministic, strict JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(to_jsonable(value, decimals), sort_keys=True, indent=2,
                      ensure_ascii=True, allow_nan=False) + "\n"
