"""The typed messages that flow between stages.

Events are immutable once published: a stage that wants to change something publishes a new
event. Array payloads are numpy arrays that the producer hands over and never touches again
(they are marked read-only so an accidental write fails loudly instead of corrupting a consumer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


def frozen_array(values: np.ndarray) -> np.ndarray:
    """Return ``values`` as a read-only float64 array (a copy only when the dtype differs)."""
    arr = np.asarray(values, dtype=np.float64)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar for the whole universe: the close of every symbol at ``ts_ns`` (bar open time).

    ``closes[i]`` belongs to ``symbols[i]``; NaN means the symbol has no price yet (it has not
    started trading in the data, or it has been stale for longer than the feed carries prices).
    ``symbols`` is the same tuple object from bar to bar while the universe does not change, so
    consumers can detect a universe change with an identity check.
    """

    ts_ns: int
    symbols: tuple[str, ...]
    closes: np.ndarray
    # How many seconds of market time this bar covers (the data's interval in replay).
    interval_s: float
    # Monotonic sequence number assigned by the feed; a gap means bars were lost upstream.
    seq: int


@dataclass(frozen=True, slots=True)
class FundingRate:
    """A funding-rate print for one symbol (kept for the ACB funding factor)."""

    ts_ns: int
    symbol: str
    rate: float


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """One eigenscan result for one bar (SPEC §2). Cold windows carry NaN.

    ``lambda_max``, ``velocity`` and ``instability`` are indexed like ``WINDOWS``.
    """

    scan_number: int
    ts_ns: int
    n_symbols: int
    symbols: tuple[str, ...]
    prices: np.ndarray
    lambda_max: tuple[float, float, float, float]
    velocity: tuple[float, float, float, float]
    instability: tuple[float, float, float, float]
    vel_div: float
    regime_signal: float
    instability_composite: float

    @property
    def warm(self) -> bool:
        """True when every window is warm, i.e. vel_div is a usable signal."""
        return self.vel_div == self.vel_div  # NaN-safe: NaN != NaN


WINDOWS: tuple[int, int, int, int] = (50, 150, 300, 750)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What the alpha engine wants done; the risk rails and router decide how (or whether).

    ``intent_id`` is deterministic (derived from the decision that produced it) so that a
    re-submitted intent after a crash maps to the same client order id.
    ``side`` is "SELL" or "BUY"; ``reduce_only`` is True for exits.
    ``gates`` carries the values that led to the decision, for the audit log and /status.
    """

    intent_id: str
    ts_ns: int
    symbol: str
    side: str
    notional_usdt: float
    leverage: float
    reduce_only: bool
    reason: str
    ref_price: float
    gates: tuple[tuple[str, float | str | bool], ...] = ()


# ---- live market data (dolphind.feed.parse -> bars / book) ---------------------------------
# NamedTuples rather than dataclasses: the WebSocket reader makes one per frame, and a tuple is
# the cheapest typed record Python has. Times are the venue's milliseconds since the epoch.


class AggTrade(NamedTuple):
    """One `<sym>@aggTrade` print."""

    symbol: str
    event_ms: int
    trade_ms: int
    agg_id: int
    price: float
    qty: float
    buyer_maker: bool


class MarkPrice(NamedTuple):
    """One symbol's entry of `!markPrice@arr@1s` (or `<sym>@markPrice`)."""

    symbol: str
    event_ms: int
    price: float


class Depth5(NamedTuple):
    """A `<sym>@depth5@500ms` snapshot: the top 5 levels each side, best first."""

    symbol: str
    event_ms: int
    bid_px: list[float]
    bid_qty: list[float]
    ask_px: list[float]
    ask_qty: list[float]


class Depth5Raw(NamedTuple):
    """A depth5 snapshot as the reader keeps it: best prices checked, levels still strings.

    Most snapshots are replaced by the next one before anything reads them (the book is
    sampled once per bar), so the 20 level strings are converted only for the snapshot that
    is used (``dolphind.feed.parse.decode_depth5``).
    """

    symbol: str
    event_ms: int
    best_bid: float
    best_ask: float
    bids: list[list[str]]
    asks: list[list[str]]


class BookTicker(NamedTuple):
    """A `<sym>@bookTicker` best bid/ask update."""

    symbol: str
    event_ms: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


# ---- Execution events (orders, fills, positions) ------------------------------------------
# Quantities are base-asset units on the venue's step grid; prices and money are in USDT.


@dataclass(frozen=True, slots=True)
class Order:
    """One immutable snapshot of an order; every state change publishes a new snapshot.

    ``client_id`` is derived from ``intent_id`` (see execution.router.client_order_id), so the
    same intent always maps to the same order. ``state`` is an execution.router.OrderState
    value. ``price`` is 0.0 for a market order.
    """

    client_id: str
    intent_id: str
    symbol: str
    side: str
    qty: float
    order_type: str
    price: float
    reduce_only: bool
    reason: str
    state: str
    filled_qty: float = 0.0
    avg_fill_price: float = 0.0
    venue_order_id: str = ""
    created_ns: int = 0
    updated_ns: int = 0
    # Why the order was refused ("risk:max_leverage", "venue:...", "router:below_min_notional").
    reject_reason: str = ""
    # The price the decision was taken at (the intent's ref_price); slippage is measured to it.
    ref_price: float = 0.0


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of (part of) an order. ``fill_id`` is unique per venue (trade id)."""

    fill_id: str
    client_id: str
    symbol: str
    side: str
    qty: float
    price: float
    fee_usdt: float
    liquidity: str  # "MAKER" | "TAKER"
    ts_ns: int
    # Fill price against the order's reference price, in bps, positive = against us.
    slippage_bps: float = 0.0
    reduce_only: bool = False


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    """A position after a fill: signed ``qty`` (negative = short), average entry price."""

    symbol: str
    qty: float
    avg_price: float
    realised_pnl_usdt: float
    ts_ns: int
