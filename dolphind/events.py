"""The typed messages that flow between stages.

Events are immutable once published: a stage that wants to change something publishes a new
event. Array payloads are numpy arrays that the producer hands over and never touches again
(they are marked read-only so an accidental write fails loudly instead of corrupting a consumer).
"""

from __future__ import annotations

from dataclasses import dataclass

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
