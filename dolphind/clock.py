"""Clocks, injected so the core never calls time.time() itself.

``LiveClock`` is wall time. ``SimClock`` is moved by the data (backtest, fast replay): time
stands still between bars and jumps to each bar's time, so a replay at full speed and a live
run see the same durations.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Current time, Unix epoch nanoseconds."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for durations)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class LiveClock:
    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SimClock:
    """A clock set by the data. ``sleep`` returns at once: simulated time has no waiting."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns

    def set(self, now_ns: int) -> None:
        if now_ns < self._now_ns:
            raise ValueError("simulated time cannot go backwards")
        self._now_ns = now_ns

    def now_ns(self) -> int:
        return self._now_ns

    def monotonic(self) -> float:
        return self._now_ns / 1e9

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
