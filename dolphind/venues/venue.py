"""The venue port: what the execution stage needs from paper trading or a real exchange.

The core never sees ccxt or an exchange's wire format; an adapter maps them onto this:

- ``submit`` sends one order (its ``client_id`` is the idempotency key) and returns the venue's
  first answer: a snapshot in state ``acked`` or ``rejected``. Fills arrive on ``events()``.
- ``cancel`` / ``query`` address orders by client id. ``query`` returning None means the venue
  has never seen that client id (so an order recorded locally as NEW never reached it).
- ``events()`` is the stream of ``Order`` snapshots (state changes) and ``Fill`` records, in
  the order the venue produced them. Fills drive the filled quantity and the filled /
  partially-filled states; order snapshots drive acked / cancelled / expired / rejected.
- ``positions`` / ``balances`` / ``open_orders`` are the venue's truth for reconciliation.

Errors: ``VenueRejected`` (the venue refused the order: final), ``VenueUnavailable`` (no answer
or an answer that leaves the outcome unknown: the order is UNKNOWN until queried).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Mapping, Protocol, Union

from dolphind.events import Fill, Order, PositionUpdate
from dolphind.orders.filters import SymbolFilters

__all__ = ["Fill", "Order", "PositionUpdate", "Venue", "VenueEvent", "VenueError",
           "VenuePosition", "VenueRejected", "VenueStartupError", "VenueUnavailable", "is_transient"]

VenueEvent = Union[Order, Fill]


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """A position as the venue reports it (signed qty: negative = short)."""

    symbol: str
    qty: float
    avg_price: float


class VenueError(Exception):
    """Base class of venue failures."""


class VenueStartupError(VenueError):
    """The venue cannot be traded as configured, found at start (unreachable, keys refused,
    hedge mode, foreign holdings refused): the daemon says why in one line and exits 2."""


class VenueRejected(VenueError):
    """The venue refused the order; ``reason`` says why (a final answer). ``local``: refused
    here, before anything was sent (fenced, not reconciled, the request budget): not a venue
    failure, so the venue breaker does not count it."""

    def __init__(self, reason: str, local: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.local = local


# Rejections that say "not now" rather than "never": an exit refused for one of these is
# sent again (with back-off) until the position is closed.
TRANSIENT_REJECTIONS = ("rate_limited", "ip_banned", "timestamp_outside_recv_window",
                        "binance_5", "binance_-1000", "binance_-1001", "binance_-1006",
                        "binance_-1007", "binance_429", "binance_418")


def is_transient(reason: str) -> bool:
    """True for a rejection reason (with or without its ``venue:`` / ``risk:`` prefix) that a
    later attempt may get past: rate limits, bans, the venue breaker, a venue in trouble."""
    bare = reason.split(":", 1)[1] if reason.startswith(("venue:", "risk:")) else reason
    return bare.startswith(TRANSIENT_REJECTIONS) or bare == "venue_breaker"


class VenueUnavailable(VenueError):
    """No usable answer (timeout, 5xx, disconnect): the outcome of the request is unknown."""


class Venue(Protocol):
    name: str

    async def submit(self, order: Order) -> Order: ...

    async def cancel(self, client_id: str) -> Order | None: ...

    async def query(self, client_id: str) -> Order | None: ...

    async def open_orders(self) -> list[Order]: ...

    async def positions(self) -> dict[str, VenuePosition]: ...

    async def balances(self) -> dict[str, float]: ...

    async def symbol_filters(self) -> Mapping[str, SymbolFilters]: ...

    def filters_for(self, symbol: str) -> SymbolFilters | None:
        """Filters of one symbol from the venue's cached exchangeInfo (no I/O)."""

    def events(self) -> AsyncIterator[VenueEvent]: ...

    def mark(self, symbol: str, price: float, ts_ns: int) -> None:
        """The latest market price of ``symbol`` (paper fills against it; live ignores it)."""
