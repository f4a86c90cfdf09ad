"""Typed ports between stages: what one side hands the other, as a Protocol both can name.

Base module: it names only base types (``dolphind.events``). A port whose values belong to one
layer lives with its consumer (the alpha stage's book and portfolio ports are in
``dolphind.alpha.stage``, next to the views they carry).

``ExecutionEvents`` is the listener port of the execution stage: every order snapshot, fill,
position update and funding settlement, in the order execution publishes them. The ledger, the
trade log and the plugins listen; ``ExecutionEventFanout`` hands each event to every listener
in the order they were given (the trade log reads the trade the ledger has just closed, so the
ledger goes first).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from dolphind.events import Fill, Order, PositionUpdate


class FundingSettlement(Protocol):
    """A funding payment on an open position (the paper venue's ``FundingPayment``)."""

    ts_ns: int
    symbol: str
    amount_usdt: float


class ExecutionEvents(Protocol):
    """A listener of the execution stage's events."""

    def on_order(self, order: Order) -> None: ...

    def on_fill(self, fill: Fill) -> None: ...

    def on_position(self, update: PositionUpdate) -> None: ...

    def on_funding(self, payment: FundingSettlement) -> None: ...


# The execution stage still reports through ``emit(hook, event)``; these are its hooks.
EXECUTION_HOOKS = ("on_order", "on_fill", "on_position", "on_funding")


class HookListener:
    """``ExecutionEvents`` over a component that observes by hook name (``observe(hook, event)``,
    the ledger's and the trade log's form today, and the plugin host's ``emit``)."""

    def __init__(self, observe: Callable[[str, Any], None]) -> None:
        self._observe = observe

    def on_order(self, order: Order) -> None:
        self._observe("on_order", order)

    def on_fill(self, fill: Fill) -> None:
        self._observe("on_fill", fill)

    def on_position(self, update: PositionUpdate) -> None:
        self._observe("on_position", update)

    def on_funding(self, payment: FundingSettlement) -> None:
        self._observe("on_funding", payment)


class ExecutionEventFanout:
    """Every execution event to every listener, in order; also callable as execution's
    ``emit(hook, event)``. An unknown hook is a wiring bug: it raises, never vanishes."""

    def __init__(self, *listeners: ExecutionEvents) -> None:
        self._listeners = list(listeners)

    def add(self, listener: ExecutionEvents) -> None:
        """One more listener, after those already there (wiring: before the first event)."""
        self._listeners.append(listener)

    def on_order(self, order: Order) -> None:
        for listener in self._listeners:
            listener.on_order(order)

    def on_fill(self, fill: Fill) -> None:
        for listener in self._listeners:
            listener.on_fill(fill)

    def on_position(self, update: PositionUpdate) -> None:
        for listener in self._listeners:
            listener.on_position(update)

    def on_funding(self, payment: FundingSettlement) -> None:
        for listener in self._listeners:
            listener.on_funding(payment)

    def __call__(self, hook: str, event: Any) -> None:
        if hook not in EXECUTION_HOOKS:
            raise ValueError(f"not an execution event: {hook!r} (one of {EXECUTION_HOOKS})")
        getattr(self, hook)(event)
