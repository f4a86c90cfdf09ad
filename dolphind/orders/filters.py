"""Symbol filters from Binance USDT-M ``exchangeInfo``, and rounding onto the venue's grid.

Why Decimal here (and float64 elsewhere): the venue accepts a quantity only when it is an exact
multiple of ``stepSize`` and a price only on the ``tickSize`` grid. Grid arithmetic in float64
goes wrong at the edges (``0.3 / 0.1 == 2.9999999999999996`` floors to 2 steps), so rounding
works in integer numbers of steps computed with ``Decimal`` from the shortest ``repr`` of the
float. The result is handed back as the float nearest to that exact decimal, whose repr is the
decimal itself (the grid values have far fewer than 15 significant digits).

Rounding rules:
- quantity for a notional: floor to the step, so ``qty * price <= notional`` holds exactly in
  decimal arithmetic (the order never exceeds the notional the alpha engine sized);
- quantity to close a position: floor to the step after forgiving float drift (1e-12 of the
  quantity, at least 1e-9 of a step: a position of 0.29999999999999993 is 3 steps of 0.1);
- limit price: round toward the passive side (BUY down, SELL up), never paying more than asked.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any, Mapping

import orjson

_CTX = decimal.Context(prec=34)
# Float drift forgiven when snapping an existing quantity (not a notional) to the grid.
_DRIFT_STEPS = Decimal("1e-9")
_DRIFT_RELATIVE = Decimal("1e-12")


def to_decimal(x: float | str | Decimal) -> Decimal:
    """The decimal a float *means* (its shortest repr), not its binary expansion."""
    if isinstance(x, Decimal):
        return x
    return Decimal(x) if isinstance(x, str) else Decimal(repr(float(x)))


class FilterError(ValueError):
    """An exchangeInfo document that cannot be used (the message names the symbol/field)."""


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    """The trading rules of one symbol (``PRICE_FILTER``, ``LOT_SIZE``, ``MARKET_LOT_SIZE``,
    ``MIN_NOTIONAL``). Market orders use the market lot size (Binance checks them against it)."""

    symbol: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    status: str = "TRADING"

    def lot(self, market: bool) -> tuple[Decimal, Decimal, Decimal]:
        """(step, min qty, max qty) for a market or a limit order."""
        if market:
            return self.market_step_size, self.market_min_qty, self.market_max_qty
        return self.step_size, self.min_qty, self.max_qty

    def qty_for_notional(self, notional_usdt: float, price: float, market: bool = True) -> float:
        """The largest quantity on the step grid with ``qty * price <= notional_usdt``
        (capped at the max quantity); 0.0 when not even one step fits."""
        step, _, max_qty = self.lot(market)
        n, p = to_decimal(notional_usdt), to_decimal(price)
        if n <= 0 or p <= 0:
            return 0.0
        steps = _CTX.divide(_CTX.divide(n, p), step).to_integral_value(ROUND_FLOOR)
        qty = min(steps * step, _floor_to(max_qty, step))
        return float(qty)

    def floor_qty(self, qty: float, market: bool = True) -> float:
        """An existing quantity (e.g. a position to close) floored onto the step grid."""
        step, _, max_qty = self.lot(market)
        q = abs(to_decimal(qty))
        exact = _CTX.divide(q, step)
        # Drift is relative in float64 (~1e-16 per operation): forgive 1e-12 of the quantity,
        # and at least 1e-9 of a step.
        slack = max(_DRIFT_STEPS, exact * _DRIFT_RELATIVE)
        steps = (exact + slack).to_integral_value(ROUND_FLOOR)
        return float(min(steps * step, _floor_to(max_qty, step)))

    def round_price(self, price: float, side: str) -> float:
        """A limit price on the tick grid, rounded toward the passive side."""
        p = to_decimal(price)
        ticks = _CTX.divide(p - self.min_price if self.min_price > 0 else p, self.tick_size)
        rounding = ROUND_FLOOR if side == "BUY" else ROUND_CEILING
        base = self.min_price if self.min_price > 0 else Decimal(0)
        return float(base + ticks.to_integral_value(rounding) * self.tick_size)

    def check(self, qty: float, price: float, market: bool = True,
              reduce_only: bool = False) -> str | None:
        """Why the venue would refuse (qty, price), or None. Names match Binance's filters.

        Binance does not apply MIN_NOTIONAL to reduce-only orders, so neither do we.
        """
        step, min_qty, max_qty = self.lot(market)
        q, p = to_decimal(qty), to_decimal(price)
        if self.status != "TRADING":
            return f"symbol_status:{self.status}"
        if q < min_qty:
            return "below_min_qty"
        if q > max_qty:
            return "above_max_qty"
        if _CTX.remainder(q, step) != 0:
            return "off_step_grid"
        if not market:
            if p < self.min_price or (self.max_price > 0 and p > self.max_price):
                return "price_out_of_range"
            base = self.min_price if self.min_price > 0 else Decimal(0)
            if _CTX.remainder(p - base, self.tick_size) != 0:
                return "off_tick_grid"
        if not reduce_only and q * p < self.min_notional:
            return "below_min_notional"
        return None


def entry_gate(filters: SymbolFilters | None, notional_usdt: float, price: float) -> str:
    """Why the venue could not take an entry of ``notional_usdt`` at ``price`` ("" = it can):
    ``venue_symbol`` when the venue does not list the symbol or it is not TRADING,
    ``min_notional`` when the size, floored to the lot step, falls below the min quantity or
    MIN_NOTIONAL. IRP uses it to rank only assets an order could actually be placed on."""
    if filters is None or filters.status != "TRADING":
        return "venue_symbol"
    if not (price > 0.0):
        return ""  # no price to size with: the router refuses it with its own reason
    qty = filters.qty_for_notional(notional_usdt, price)
    if qty <= 0.0 or filters.check(qty, price) in ("below_min_qty", "below_min_notional"):
        return "min_notional"
    return ""


def _floor_to(x: Decimal, step: Decimal) -> Decimal:
    return _CTX.divide(x, step).to_integral_value(ROUND_FLOOR) * step


def fallback_filters(symbol: str) -> SymbolFilters:
    """Generic filters for paper trading a symbol that the exchangeInfo file does not list."""
    return SymbolFilters(
        symbol=symbol, tick_size=Decimal("0.00001"), min_price=Decimal(0), max_price=Decimal(0),
        step_size=Decimal("0.001"), min_qty=Decimal("0.001"), max_qty=Decimal("1000000000"),
        market_step_size=Decimal("0.001"), market_min_qty=Decimal("0.001"),
        market_max_qty=Decimal("1000000000"), min_notional=Decimal("5"))


def parse_exchange_info(doc: Mapping[str, Any]) -> dict[str, SymbolFilters]:
    """Symbol filters from a ``GET /fapi/v1/exchangeInfo`` response body."""
    symbols = doc.get("symbols")
    if not isinstance(symbols, list):
        raise FilterError("exchangeInfo: no 'symbols' list")
    out: dict[str, SymbolFilters] = {}
    for entry in symbols:
        name = entry.get("symbol", "?")
        try:
            out[name] = _parse_symbol(entry)
        except (KeyError, TypeError, decimal.InvalidOperation) as exc:
            raise FilterError(f"exchangeInfo: symbol {name}: bad or missing filter "
                              f"field ({type(exc).__name__}: {exc})") from None
    return out


def _parse_symbol(entry: Mapping[str, Any]) -> SymbolFilters:
    f = {x["filterType"]: x for x in entry["filters"]}
    price, lot = f["PRICE_FILTER"], f["LOT_SIZE"]
    mlot = f.get("MARKET_LOT_SIZE", lot)
    # USDT-M calls the field "notional"; spot used "minNotional". No filter: no minimum.
    mn = f.get("MIN_NOTIONAL", {})
    min_notional = Decimal(str(mn.get("notional", mn.get("minNotional", "0"))))
    step, tick = Decimal(lot["stepSize"]), Decimal(price["tickSize"])
    if step <= 0 or tick <= 0:
        raise decimal.InvalidOperation("stepSize and tickSize must be > 0")
    mstep = Decimal(mlot["stepSize"])
    return SymbolFilters(
        symbol=entry["symbol"], tick_size=tick, min_price=Decimal(price["minPrice"]),
        max_price=Decimal(price["maxPrice"]), step_size=step, min_qty=Decimal(lot["minQty"]),
        max_qty=Decimal(lot["maxQty"]), market_step_size=mstep if mstep > 0 else step,
        market_min_qty=Decimal(mlot["minQty"]), market_max_qty=Decimal(mlot["maxQty"]),
        min_notional=min_notional, status=str(entry.get("status", "TRADING")))


def load_exchange_info(path: str | Path) -> dict[str, SymbolFilters]:
    """Read an exchangeInfo file: plain JSON, or a recorded ``<url> -> <ts>: <json>`` line
    (the capture format of cryptofeed, as in tests/data). Blocking: call off the loop."""
    raw = Path(path).read_bytes()
    text = raw.lstrip()
    if not text.startswith(b"{"):
        line = raw.split(b"\n", 1)[0]
        start = line.find(b": {")
        if start < 0:
            raise FilterError(f"{path}: neither JSON nor a recorded '<url> -> <ts>: <json>' line")
        text = line[start + 2:]
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FilterError(f"{path}: not valid JSON ({exc})") from None
    return parse_exchange_info(doc)
