"""What the parts of the execution stage share: the services they use and the book they keep.

``ExecutionServices`` is the stage's outside world (venue, store, audit log, control plane,
health, metrics, config, plugin hooks, clock), handed to every part at once instead of one
constructor argument each. ``WorkingBook`` is the state the parts read and change together:
the portfolio, the working and recent orders, the ids already used, the positions that are
not ours, and the events that wake whoever waits on them. One event loop, one book: the parts
change it only between awaits, and ``lock`` serialises the handling of intents.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from dolphind.config import Config
from dolphind.control import Control
from dolphind.events import Order
from dolphind.ports import ExecutionEvents, NoExecutionEvents
from dolphind.orders.portfolio import Portfolio
from dolphind.store.audit import AuditLog
from dolphind.store.sqlite import RestoredState, Store
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import ExecutionMetrics, Metrics
from dolphind.venues.venue import Venue

STAGE = "execution"  # the stage's name (health beats, logs)
QTY_EPS = 1e-12  # a quantity below this is zero


def now_ns() -> int:
    # Wall time, for bookkeeping of venue-side events only: order and fill times that matter
    # for a backtest come from the data (intent ts, the paper venue's mark time).
    return time.time_ns()


@dataclass(frozen=True, slots=True)
class ExecutionServices:
    """The execution stage's collaborators, built by the app and shared by its parts."""

    venue: Venue
    store: Store
    audit: AuditLog
    control: Control
    health: Health
    metrics: Metrics
    config: Callable[[], Config]
    # Who hears every order, fill, position and funding (ledger, trade log, plugins).
    events: ExecutionEvents = field(default_factory=NoExecutionEvents)
    monotonic: Callable[[], float] = time.monotonic
    # A backtest batches its equity snapshots and books each bar's fills before the next bar
    # (the mode is read once: a reload cannot change it).
    backtest: bool = False

    @property
    def m(self) -> ExecutionMetrics:
        return self.metrics.execution


@dataclass(slots=True, eq=False)
class WorkingBook:
    """The execution stage's state: money, orders and what wakes the loops."""

    portfolio: Portfolio
    orders: dict[str, Order] = field(default_factory=dict)  # working (not in a final state)
    recent_orders: collections.deque[Order] = field(
        default_factory=lambda: collections.deque(maxlen=50))
    known_ids: set[str] = field(default_factory=set)  # client ids ever used (never resent)
    fill_ids: set[str] = field(default_factory=set)  # fills booked (a repeat is ignored)
    # Venue positions that are not ours (symbol -> (qty, entry price)), left alone.
    foreign_positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    restored: RestoredState | None = None
    ready: bool = False  # restored from the store and reconciled at least once
    starts: int = 0
    # Serialises intent handling (the intent loop, flatten, exit retries, reconciliation).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set on every change of the working orders (``settle`` waits on it).
    order_changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when an item of the input is handled or an order changes (``settled`` waits on it).
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    # Wakes the control loop (a control action, an exit retry scheduled).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # The latest intents and what became of them (for /status).
    last_intents: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=20))
