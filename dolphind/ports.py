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

from typing import Protocol

from dolphind.events import Fill, Order, PositionUpdate


class FundingSettlement(Protocol):
    """A funding payment on an open position (the paper venue's ``FundingPayment``)."""

    @property
    def ts_ns(self) -> int: ...

    @property
    def symbol(self) -> str: ...

    @property
    def amount_usdt(self) -> float: ...


class ExecutionEvents(Protocol):
    """A listener of the execution stage's events."""

    def on_order(self, order: Order) -> None: ...

    def on_fill(self, fill: Fill) -> None: ...

    def on_position(self, update: PositionUpdate) -> None: ...

    def on_funding(self, payment: FundingSettlement) -> None: ...


class NoExecutionEvents:
    """The listener of an execution stage nobody listens to (a bench, a unit test)."""

    def on_order(self, order: Order) -> None:
        pass

    def on_fill(self, fill: Fill) -> None:
        pass

    def on_position(self, update: PositionUpdate) -> None:
        pass

    def on_funding(self, payment: FundingSettlement) -> None:
        pass


class ExecutionEventFanout:
    """Every execution event to every listener, in the order the listeners were added."""

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
