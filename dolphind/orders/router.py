"""Intent -> venue order: symbol mapping, the venue's filters, idempotent client ids, and the
order state machine.

Idempotency: the client order id is a pure function of the intent id. The execution stage
records every client id in the store *before* the order is sent, and refuses an intent whose
id is already there, so an intent re-submitted after a crash (or twice by mistake) can never
create a second order; a venue that sees the same client id twice refuses it as well.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass
from typing import Callable, Mapping

from dolphind.events import Order, OrderIntent
from dolphind.orders.filters import SymbolFilters


class OrderState(enum.StrEnum):
    NEW = "new"  # recorded in the store, not yet acknowledged by the venue
    ACKED = "acked"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # the venue did not answer: query by client id before anything else


TERMINAL = frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED,
                      OrderState.EXPIRED})

# Allowed transitions. A market order may be reported filled before its ack is seen (NEW ->
# FILLED); an order the venue never saw before a crash ends EXPIRED; UNKNOWN resolves to
# whatever the venue says when queried. Final states have no way out.
_ALLOWED: dict[OrderState, frozenset[OrderState]] = {
    OrderState.NEW: frozenset({OrderState.ACKED, OrderState.PARTIALLY_FILLED, OrderState.FILLED,
                               OrderState.CANCELLED, OrderState.REJECTED, OrderState.EXPIRED,
                               OrderState.UNKNOWN}),
    OrderState.ACKED: frozenset({OrderState.PARTIALLY_FILLED, OrderState.FILLED,
                                 OrderState.CANCELLED, OrderState.EXPIRED, OrderState.UNKNOWN}),
    OrderState.PARTIALLY_FILLED: frozenset({OrderState.PARTIALLY_FILLED, OrderState.FILLED,
                                            OrderState.CANCELLED, OrderState.EXPIRED,
                                            OrderState.UNKNOWN}),
    OrderState.UNKNOWN: frozenset({OrderState.ACKED, OrderState.PARTIALLY_FILLED,
                                   OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED,
                                   OrderState.EXPIRED, OrderState.UNKNOWN}),
    **{s: frozenset() for s in TERMINAL},
}


class IllegalTransition(Exception):
    """An order update that the state machine refuses (e.g. filled -> acked)."""

    def __init__(self, client_id: str, old: str, new: str) -> None:
        super().__init__(f"order {client_id}: {old} -> {new} is not a legal transition")
        self.old, self.new = old, new


# A state's name -> the state. A StrEnum hashes and compares as its value, so this is also a
# cheaper OrderState(name) (the enum's own lookup is a few µs; transitions are on every fill).
_STATES: dict[str, OrderState] = {s.value: s for s in OrderState}
_ORDER_FIELDS = tuple(f.name for f in dataclasses.fields(Order))
_ORDER_FIELDS_SET = frozenset(_ORDER_FIELDS)


def order_state(name: str) -> OrderState:
    """The state named ``name`` (ValueError for no such state)."""
    try:
        return _STATES[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a valid OrderState") from None


def can_transition(old: str, new: str) -> bool:
    return order_state(new) in _ALLOWED[order_state(old)]


def transition(order: Order, new: OrderState | str, ts_ns: int, **changes: object) -> Order:
    """A new snapshot of ``order`` in state ``new``; raises IllegalTransition when refused."""
    if not can_transition(order.state, new):
        raise IllegalTransition(order.client_id, order.state, str(new))
    if not changes.keys() <= _ORDER_FIELDS_SET:
        raise TypeError(f"Order has no field {sorted(changes.keys() - _ORDER_FIELDS_SET)}")
    changes["state"] = _STATES[new].value  # the plain string, as stored
    changes["updated_ns"] = ts_ns
    # dataclasses.replace, without its per-call field introspection.
    return Order(*[changes[f] if f in changes else getattr(order, f)  # type: ignore[arg-type]
                   for f in _ORDER_FIELDS])


def is_open(order: Order) -> bool:
    return order_state(order.state) not in TERMINAL


def client_order_id(intent_id: str, prefix: str = "dd") -> str:
    """Deterministic client order id: ``<prefix>-<32 hex of sha256(intent_id)>``.

    36 characters at most (Binance's limit; only ``[A-Za-z0-9-]`` are used).
    """
    return f"{prefix}-{hashlib.sha256(intent_id.encode()).hexdigest()[:32]}"


def venue_symbol(symbol: str, mapping: Mapping[str, str] | None = None) -> str:
    """The venue's name for a symbol: an explicit mapping first, else ccxt-style
    ``BTC/USDT:USDT`` and ``BTC_USDT`` folded to Binance's ``BTCUSDT``."""
    if mapping and symbol in mapping:
        return mapping[symbol]
    base = symbol.split(":", 1)[0]
    return base.replace("/", "").replace("_", "").upper()


@dataclass(frozen=True, slots=True)
class RouteRejection:
    """The router could not make an order; ``reason`` is a metric label value."""

    reason: str
    detail: str = ""


class Router:
    """Turns an intent into an ``Order`` in state NEW (nothing is sent from here).

    ``filters(symbol)`` returns the venue's filters or None; ``position_qty(symbol)`` the
    signed position the store and venue agree on, ``working_reduce_qty(symbol)`` the quantity
    already being closed by working reduce-only orders.
    """

    def __init__(self, filters: Callable[[str], SymbolFilters | None],
                 position_qty: Callable[[str], float],
                 working_reduce_qty: Callable[[str], float],
                 prefix: Callable[[], str] = lambda: "dd") -> None:
        self._filters = filters
        self._position_qty = position_qty
        self._working_reduce_qty = working_reduce_qty
        self._prefix = prefix

    def build(self, intent: OrderIntent, price: float, ts_ns: int) -> Order | RouteRejection:
        """The order for ``intent`` at the reference ``price`` (the latest mark)."""
        if intent.side not in ("BUY", "SELL"):
            return RouteRejection("bad_side", f"side {intent.side!r}")
        if not price > 0 or price != price:
            return RouteRejection("no_price", f"no usable price for {intent.symbol}")
        symbol = venue_symbol(intent.symbol)
        f = self._filters(symbol)
        if f is None:
            return RouteRejection("unknown_symbol", f"no venue filters for {symbol}")
        if intent.reduce_only:
            qty = self._close_qty(symbol, intent.side, f)
            if qty <= 0:
                return RouteRejection("nothing_to_reduce",
                                      f"no {('short' if intent.side == 'BUY' else 'long')} "
                                      f"position in {symbol} left to close")
        else:
            if not intent.notional_usdt > 0:
                return RouteRejection("bad_notional", f"notional {intent.notional_usdt}")
            qty = f.qty_for_notional(intent.notional_usdt, price, market=True)
        problem = f.check(qty, price, market=True, reduce_only=intent.reduce_only)
        if problem is not None:
            return RouteRejection(problem, f"{symbol} qty {qty} at {price}: {problem}")
        return Order(
            client_id=client_order_id(intent.intent_id, self._prefix()),
            intent_id=intent.intent_id, symbol=symbol, side=intent.side, qty=qty,
            order_type="MARKET", price=0.0, reduce_only=intent.reduce_only,
            reason=intent.reason, state=str(OrderState.NEW), created_ns=ts_ns, updated_ns=ts_ns,
            ref_price=price)

    def _close_qty(self, symbol: str, side: str, f: SymbolFilters) -> float:
        """Reduce-only closes the whole remaining position (exits in the bible are full exits):
        the position on the opposite side, less what working exits already close."""
        pos = self._position_qty(symbol)
        if (side == "BUY" and pos >= 0) or (side == "SELL" and pos <= 0):
            return 0.0
        remaining = abs(pos) - self._working_reduce_qty(symbol)
        return f.floor_qty(remaining, market=True) if remaining > 0 else 0.0
