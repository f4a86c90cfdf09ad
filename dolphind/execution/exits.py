"""Exits that never give up, and the exits the stage makes itself (flatten, liquidation).

A reduce-only order that ended without its fill is sent again, after a back-off, when its
cause may pass (rate limit, ban, the venue breaker, a 5xx or timeout resolved as "never
arrived", a venue cancel or expiry), until the position is closed. One retry record per
symbol; past ``exit_stuck_after_s`` the exit is declared stuck (a critical incident) and still
retried.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Awaitable, Callable

import structlog

from dolphind.backoff import backoff_delay
from dolphind.events import Order, OrderIntent
from dolphind.execution.state import QTY_EPS, ExecutionServices, WorkingBook
from dolphind.orders.portfolio import Portfolio, Position
from dolphind.orders.router import OrderState
from dolphind.venues.venue import is_transient

log = structlog.get_logger("dolphind.execution")

_CONTROL_TICK_S = 1.0  # the control loop's longest sleep
# Final states of an order that did not fill (an exit in one of them may be retried).
NOT_THROUGH = frozenset({OrderState.REJECTED, OrderState.EXPIRED, OrderState.CANCELLED})


@dataclasses.dataclass(slots=True)
class ExitRetry:
    """An exit that has not got through yet (one per symbol)."""

    symbol: str
    intent_id: str  # the first exit's; its retries are "<intent_id>:retry<n>"
    reason: str  # the exit's reason (FLATTEN, STOP_LOSS, ...), kept by its retries
    since: float  # monotonic time of the first refusal
    attempts: int = 0
    due: float = 0.0
    last_error: str = ""
    stuck: bool = False

    def view(self, now: float) -> dict[str, Any]:
        return {"attempts": self.attempts, "since_s": round(now - self.since, 3),
                "next_in_s": round(max(0.0, self.due - now), 3),
                "last_error": self.last_error, "stuck": self.stuck, "reason": self.reason}


def closing_intent(portfolio: Portfolio, pos: Position, intent_id: str, ts_ns: int, reason: str,
                   gates: tuple[tuple[str, Any], ...] = ()) -> OrderIntent:
    """A reduce-only intent that closes the whole of ``pos`` at its mark."""
    mark = portfolio.mark_of(pos.symbol)
    return OrderIntent(
        intent_id=intent_id, ts_ns=ts_ns, symbol=pos.symbol,
        side="BUY" if pos.qty < 0 else "SELL", notional_usdt=abs(pos.qty) * mark, leverage=0.0, reduce_only=True, reason=reason,
        ref_price=mark, gates=gates)


def liquidation_intent(portfolio: Portfolio, symbol: str, ts_ns: int) -> OrderIntent:
    """The exit of a position the (paper) venue liquidated at this bar's marks."""
    return closing_intent(portfolio, portfolio.positions[symbol],
                          f"liquidation:{ts_ns}:{symbol}", ts_ns, "LIQUIDATION")


class ExitRetries:
    """The exits being retried, by symbol; ``send`` hands an intent to the stage (under its
    lock, as any other intent)."""

    def __init__(self, services: ExecutionServices, book: WorkingBook,
                 send: Callable[[OrderIntent], Awaitable[None]]) -> None:
        self._s = services
        self._book = book
        self._send = send
        self.pending: dict[str, ExitRetry] = {}

    def not_through(self, order: Order) -> None:
        """A reduce-only order ended without its fill: schedule it again when its cause may
        pass (see the module docstring)."""
        reason = order.reject_reason or str(order.state)
        if order.state == OrderState.REJECTED and not is_transient(reason):
            return  # a final "no" (fenced, reduce-only refused, filters): retrying cannot help
        if self._s.backtest or not self._book.ready:
            # A backtest's paper venue never refuses for a while; at restore, the alpha engine
            # decides again on the restored position.
            return
        x = self._s.config().execution
        now = self._s.monotonic()
        r = self.pending.get(order.symbol)
        if r is None:
            r = ExitRetry(order.symbol, order.intent_id, order.reason, now)
            self.pending[order.symbol] = r
        r.last_error = reason
        wait = max(backoff_delay(r.attempts, x.exit_retry_initial_s, x.exit_retry_max_s),
                   self._s.venue.retry_after_s())
        r.due = now + wait
        log.warning("execution.exit_retry_scheduled", symbol=order.symbol,
                    client_id=order.client_id, reason=reason, attempt=r.attempts + 1,
                    in_s=round(wait, 3))
        self._book.wake.set()

    def next_retry_in(self) -> float:
        """How long the control loop may sleep before the next retry is due."""
        if not self.pending:
            return _CONTROL_TICK_S
        soonest = min(r.due for r in self.pending.values())
        return min(_CONTROL_TICK_S, max(0.0, soonest - self._s.monotonic()))

    def views(self) -> dict[str, dict[str, Any]]:
        now = self._s.monotonic()
        return {s: r.view(now) for s, r in self.pending.items()}

    def _count_stuck(self) -> None:
        self._s.m.exits_stuck.set(sum(1 for e in self.pending.values() if e.stuck))

    async def retry(self) -> None:
        """Send every exit that is due again; forget those whose position is closed."""
        x = self._s.config().execution
        audit, portfolio = self._s.audit, self._book.portfolio
        for sym, r in list(self.pending.items()):
            now = self._s.monotonic()
            pos = portfolio.positions.get(sym)
            if pos is None or abs(pos.qty) <= QTY_EPS:
                del self.pending[sym]
                log.info("execution.exit_through", symbol=sym, attempts=r.attempts,
                         seconds=round(now - r.since, 3))
                if r.stuck:
                    audit.record("execution.exit_unstuck", symbol=sym,
                                 attempts=r.attempts, seconds=now - r.since)
                self._count_stuck()
                continue
            if not r.stuck and now - r.since >= x.exit_stuck_after_s:
                r.stuck = True
                self._count_stuck()
                log.error("execution.exit_stuck", symbol=sym, attempts=r.attempts,
                          last_error=r.last_error, qty=pos.qty)
                audit.record("execution.exit_stuck", symbol=sym, attempts=r.attempts,
                             last_error=r.last_error, qty=pos.qty, seconds=now - r.since)
                self._s.control.raise_incident(
                    "execution", "exit_stuck",
                    f"exit of {sym} ({pos.qty:g}) not through after {now - r.since:.0f}s and "
                    f"{r.attempts} retries: {r.last_error}; still retrying",
                    severity="critical", symbol=sym)
            if now < r.due or any(o.symbol == sym and o.reduce_only
                                  for o in self._book.orders.values()):
                continue  # not yet, or an exit is in flight (its outcome reschedules)
            r.attempts += 1
            # Until this attempt's outcome is known; a refusal reschedules it with back-off.
            r.due = now + backoff_delay(r.attempts, x.exit_retry_initial_s, x.exit_retry_max_s)
            intent = closing_intent(portfolio, pos, f"{r.intent_id}:retry{r.attempts}",
                                    time.time_ns(), r.reason,
                                    gates=(("retry_of", r.intent_id), ("attempt", r.attempts)))
            self._s.m.exit_retries.inc()
            log.info("execution.exit_retry", symbol=sym, attempt=r.attempts, qty=pos.qty,
                     last_error=r.last_error)
            await self._send(intent)
