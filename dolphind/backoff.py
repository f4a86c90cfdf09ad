"""Capped exponential back-off with jitter: the one formula every retry loop uses.

``backoff_ceiling`` is the schedule (``initial_s * 2**attempt`` capped at ``max_s``);
``backoff_delay`` draws the actual wait in [ceiling/2, ceiling] so that many retriers that
failed together (every feed socket, every daemon behind one cluster) do not retry in step.
``Backoff`` is the same formula with its attempt counter, for loops that reset it on success.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Protocol


def backoff_ceiling(attempt: int, initial_s: float, max_s: float) -> float:
    """The longest wait before retry number ``attempt`` (0 = the first), without jitter."""
    return min(max_s, initial_s * 2 ** min(max(attempt, 0), 30))


def jittered(ceiling_s: float, rng: random.Random | None = None) -> float:
    """A wait drawn uniformly in [ceiling/2, ceiling]: never longer than the schedule says,
    never so short that a retrier hammers the other side."""
    return (rng or random).uniform(ceiling_s / 2, ceiling_s)


def backoff_delay(attempt: int, initial_s: float, max_s: float,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = the first), jittered."""
    return jittered(backoff_ceiling(attempt, initial_s, max_s), rng)


class BackoffLimits(Protocol):
    """The two settings every back-off reads (named so in each config section that has one)."""

    @property
    def backoff_initial_s(self) -> float: ...

    @property
    def backoff_max_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """``BackoffLimits`` for a caller whose settings use other names."""

    backoff_initial_s: float
    backoff_max_s: float


class Backoff:
    """A retry loop's attempt counter over ``backoff_delay``.

    ``settings`` is read at every ``next()``, so a reloaded config applies to the next wait.
    """

    def __init__(self, settings: Callable[[], BackoffLimits],
                 rng: random.Random | None = None) -> None:
        self._settings = settings
        self._rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        """The wait before the next retry; counts the attempt."""
        cfg = self._settings()
        delay = backoff_delay(self.attempt, cfg.backoff_initial_s, cfg.backoff_max_s, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """The other side answered: the next failure starts the schedule over."""
        self.attempt = 0
