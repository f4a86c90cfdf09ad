"""Maintenance-margin brackets: what the paper venue liquidates at, per symbol and size.

Binance sets the maintenance margin of a USDT-M position from the symbol's leverage brackets
(``GET /fapi/v1/leverageBracket``): the bracket whose ``[notionalFloor, notionalCap)`` holds the
position's notional gives ``maintenance margin = notional x maintMarginRatio - cum`` (``cum`` is
the bracket's maintenance amount, which makes the margin continuous across brackets). A bigger
position sits in a higher bracket and so is liquidated earlier.

Where no bracket table is given for a symbol (no ``execution.leverage_brackets`` file, or a
symbol it does not list) the documented default applies: one bracket at Binance's first-bracket
rate, 0.4 % for BTCUSDT and ETHUSDT and 0.5 % for every other symbol, with ``cum`` 0. That is
right for small positions and understates the margin (liquidates later) for large ones; give a
bracket file to model those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import orjson

DEFAULT_MAINTENANCE_MARGIN_RATE = 0.005
MAINTENANCE_MARGIN_RATES: dict[str, float] = {"BTCUSDT": 0.004, "ETHUSDT": 0.004}


class BracketError(ValueError):
    """A leverageBracket document that cannot be used (the message names symbol and field)."""


@dataclass(frozen=True, slots=True)
class Bracket:
    """One notional band of a symbol: ``[floor, cap)`` at ``rate``, maintenance amount ``cum``."""

    floor: float
    cap: float
    rate: float
    cum: float
    initial_leverage: int = 0


def default_brackets(symbol: str) -> tuple[Bracket, ...]:
    rate = MAINTENANCE_MARGIN_RATES.get(symbol, DEFAULT_MAINTENANCE_MARGIN_RATE)
    return (Bracket(0.0, math.inf, rate, 0.0),)


def maintenance_margin(notional: float, brackets: tuple[Bracket, ...]) -> float:
    """Binance's maintenance margin of a position of ``notional`` USDT (absolute)."""
    notional = abs(notional)
    for b in brackets:
        if notional < b.cap:
            return notional * b.rate - b.cum
    last = brackets[-1]  # beyond the table's last cap: its last band goes on
    return notional * last.rate - last.cum


def parse_leverage_brackets(doc: Any) -> dict[str, tuple[Bracket, ...]]:
    """The brackets per symbol from a ``GET /fapi/v1/leverageBracket`` answer (a list of
    ``{"symbol", "brackets": [...]}``, or one such object as the endpoint returns for a
    single symbol)."""
    items = [doc] if isinstance(doc, Mapping) else doc
    if not isinstance(items, list):
        raise BracketError("not a leverageBracket document (expected a list of symbols)")
    out: dict[str, tuple[Bracket, ...]] = {}
    for item in items:
        symbol = item.get("symbol") if isinstance(item, Mapping) else None
        raw = item.get("brackets") if isinstance(item, Mapping) else None
        if not isinstance(symbol, str) or not isinstance(raw, list) or not raw:
            raise BracketError("every entry needs a symbol and a non-empty brackets list")
        try:
            bands = sorted((Bracket(float(b["notionalFloor"]), float(b["notionalCap"]),
                                    float(b["maintMarginRatio"]), float(b.get("cum", 0.0)),
                                    int(b.get("initialLeverage", 0))) for b in raw),
                           key=lambda b: b.floor)
        except (KeyError, TypeError, ValueError) as exc:
            raise BracketError(f"{symbol}: bracket without a usable {exc}") from None
        for b in bands:
            if not (0.0 <= b.rate < 1.0 and b.floor < b.cap and math.isfinite(b.cum)):
                raise BracketError(f"{symbol}: bracket [{b.floor:g}, {b.cap:g}) rate {b.rate:g} "
                                   "is out of range")
        out[symbol] = tuple(bands)
    return out


def load_leverage_brackets(path: str | Path) -> dict[str, tuple[Bracket, ...]]:
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BracketError(f"{path}: not JSON ({exc})") from None
    return parse_leverage_brackets(doc)
