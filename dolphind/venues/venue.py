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

Beyond these, a venue has capabilities only some venues fill in (the paper venue's marks,
funding and liquidations; a live venue's reconciliation, fencing and back-off). They are members
of the protocol with defaults that say "nothing of the kind here", so the execution stage calls
them directly instead of probing with ``getattr``: a venue that subclasses ``Venue`` inherits
the defaults and overrides what it has.

Errors: ``VenueRejected`` (the venue refused the order: final), ``VenueUnavailable`` (no answer
or an answer that leaves the outcome unknown: the order is UNKNOWN until queried).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, ClassVar, Iterable,
                    Mapping, Protocol, Sequence, Union)

import numpy as np

from dolphind.events import Fill, Order, PositionUpdate
from dolphind.orders.filters import SymbolFilters
from dolphind.orders.portfolio import Position

if TYPE_CHECKING:
    from dolphind.feed.funding import ReplayFunding

__all__ = ["Fill", "FundingPayment", "Order", "PositionUpdate", "Venue", "VenueEvent",
           "VenueError", "VenuePosition", "VenueRejected", "VenueStartupError",
           "VenueUnavailable", "is_transient"]

VenueEvent = Union[Order, Fill]


@dataclass(frozen=True, slots=True)
class VenuePosition:
    """A position as the venue reports it (signed qty: negative = short)."""

    symbol: str
    qty: float
    avg_price: float


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """One funding settlement on an open position (amount: cash to the account)."""

    ts_ns: int
    symbol: str
    qty: float
    mark: float
    rate: float
    amount_usdt: float


# The default of ``Venue.foreign_orders``: read-only, so no venue can fill the shared one.
_NO_ORDERS: Mapping[str, Order] = types.MappingProxyType({})


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
    """What the execution stage needs from a venue. The first group every venue implements;
    the rest have defaults for a venue without the capability (see the module docstring)."""

    name: str

    # True for a venue with no memory of its own (paper): it is rebuilt from the store at
    # start (``restore``), and there is no venue truth to compare the book's positions with.
    simulated: ClassVar[bool] = False

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

    # ---- marks -----------------------------------------------------------------------------

    def mark_bar(self, index: dict[str, int], closes: np.ndarray, ts_ns: int) -> None:
        """Every symbol's close of one bar (``index`` maps venue symbols to columns; NaN:
        absent). By default each present close is passed to ``mark``; a venue that keeps the
        bar by reference overrides this (one bar would otherwise cost O(symbols) calls)."""
        for symbol, j in index.items():
            price = float(closes[j])
            if price == price:
                self.mark(symbol, price, ts_ns)

    def last_mark(self, symbol: str) -> tuple[float, int] | None:
        """(price, time) of the newest mark the venue holds of ``symbol``; None: it keeps none
        (the stage then prices at its own marks)."""
        return None

    # ---- simulation: restart, funding, liquidation (the paper venue) -----------------------

    def restore(self, orders: Iterable[Order], positions: Iterable[Position],
                balance_usdt: float) -> None:
        """Rebuild the venue side from the store after a restart (``simulated`` venues only;
        a real venue remembers its own orders and positions)."""
        return None

    def set_funding(self, funding: ReplayFunding) -> None:
        """A replay's funding prints, to book funding payments on open positions (a real venue
        books its own, or a venue that does not model funding ignores them)."""
        return None

    def take_funding(self) -> Sequence[FundingPayment]:
        """Funding payments booked since the last call (the stage moves its cash by them)."""
        return ()

    # Every funding payment booked so far.
    funding_payments: Sequence[FundingPayment] = ()

    @property
    def funding_paid_usdt(self) -> float | None:
        """Net funding paid by the account (positive: paid); None: the venue does not model
        funding (said so, not zero)."""
        return None

    def take_liquidations(self) -> Sequence[str]:
        """Symbols the venue liquidated at the latest marks (the stage closes them at once)."""
        return ()

    def stale_positions(self) -> list[str]:
        """Symbols held whose price stopped updating (reported at the end of a backtest)."""
        return []

    # ---- live reconciliation and health ----------------------------------------------------

    @property
    def reconciled(self) -> bool:
        """False while the venue's own reconciliation runs (the stage's periodic check waits)."""
        return True

    # Working orders on the account that this process did not send (left alone).
    foreign_orders: Mapping[str, Order] = _NO_ORDERS

    def set_position_check(self, check: Callable[[str], Awaitable[bool]]) -> None:
        """Install the book's position check: a live venue calls it after each reconnect and
        counts as reconciled only once it returns True."""
        return None

    def take_found_orders(self) -> list[Order]:
        """Open orders a resync found at the venue that this process did not send, once each."""
        return []

    def retry_after_s(self) -> float:
        """Seconds until the venue takes requests again (rate limit, ban); 0: now."""
        return 0.0

    def readiness(self) -> str:
        """Why the venue cannot take new entries now (fenced, banned, unreconciled), or "ok"."""
        return "ok"

    def status(self) -> dict[str, Any] | None:
        """The venue's own view for /status (lease, stream, budget); None: nothing to add."""
        return None
