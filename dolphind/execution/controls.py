"""The execution stage's control loop: what the control plane asks of it, and the housekeeping
that runs between intents.

- ``flatten`` (POST /flatten, plugins): a reduce-only order for every open position;
- an operator's halt or resume is saved in the store, so it survives a restart (a shutdown
  halt is not an operator's decision and is not saved);
- exits that did not get through are sent again when due (``exits.py``);
- orders whose submit got no answer are resolved with the venue by client id;
- a live venue's positions are compared with the book every ``positions_check_s``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Awaitable, Callable

import structlog

from dolphind.control import ControlAction
from dolphind.events import OrderIntent
from dolphind.execution.exits import ExitRetries, closing_intent
from dolphind.execution.reconcile import Reconciler
from dolphind.execution.state import ExecutionServices, WorkingBook
from dolphind.execution.views import ExecutionViews

log = structlog.get_logger("dolphind.execution")


class ControlHandling:
    """Subscribed to the control plane; ``loop`` runs beside the stage's intent loop."""

    def __init__(self, services: ExecutionServices, book: WorkingBook, exits: ExitRetries,
                 reconciler: Reconciler, views: ExecutionViews,
                 send: Callable[[OrderIntent], Awaitable[None]]) -> None:
        self._s = services
        self._book = book
        self._exits = exits
        self._reconciler = reconciler
        self._views = views
        self._send = send
        self._flatten_requests: collections.deque[ControlAction] = collections.deque()
        self._dirty = False  # a halt or resume not yet saved in the store
        services.control.subscribe(self.on_control)

    def on_control(self, action: ControlAction) -> None:
        if action.action == "flatten":
            self._flatten_requests.append(action)
        elif action.action in ("halt", "resume") and action.cause not in ("shutdown",
                                                                           "store:restore"):
            # A shutdown halt is not an operator's decision: it must not survive the restart.
            self._dirty = True
        self._book.wake.set()

    async def loop(self) -> None:
        s, wake = self._s, self._book.wake
        while True:
            try:
                async with asyncio.timeout(self._exits.next_retry_in()):
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()
            self._views.foreign_view()  # keeps dolphind_foreign_orders current
            await self._reconciler.periodic_position_check()
            if self._exits.pending:
                await self._exits.retry()
            if self._dirty:
                self._dirty = False
                await s.store.save_control(s.control.halted, s.control.halt_reason or "")
                s.audit.record("control.halt_state", halted=s.control.halted,
                               reason=s.control.halt_reason or "")
            while self._flatten_requests:
                await self._flatten(self._flatten_requests.popleft())
            async with self._book.lock:
                await self._reconciler.resolve_unknown()

    async def _flatten(self, action: ControlAction) -> None:
        portfolio = self._book.portfolio
        positions = list(portfolio.positions.values())
        self._s.audit.record("execution.flatten", cause=action.cause,
                             positions={p.symbol: p.qty for p in positions})
        log.info("execution.flatten", cause=action.cause, positions=len(positions))
        for pos in positions:
            await self._send(closing_intent(portfolio, pos,
                                            f"flatten:{action.ts:.6f}:{pos.symbol}",
                                            time.time_ns(), "FLATTEN"))
