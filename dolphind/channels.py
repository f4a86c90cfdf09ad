"""Bounded channels between stages, each with a declared overflow policy.

- ``Overflow.BLOCK``: the producer waits for room. For intents, orders, fills and bars: losing
  one of these is never acceptable, and back-pressure reaches the producer instead.
- ``Overflow.DROP_OLDEST``: the oldest item is replaced and counted. For market-data snapshots
  where only the latest value matters.

A consumer iterates with ``async for item in channel`` and ends when the channel is closed and
drained: no sentinel values mixed into the data. Depth, drops and the time an item waited are
exported through the metrics passed in.

A producer blocked on a full channel resumes once the consumer has taken it down to half its
capacity (not after every single item): a busy pipeline then hands items over in runs instead
of switching tasks for each one, and nothing changes for a channel that is never full.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
from typing import AsyncIterator, Generic, TypeVar

from dolphind.telemetry.metrics import ChannelMetrics

T = TypeVar("T")


class Overflow(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class ChannelClosed(Exception):
    """Raised by ``put`` on a closed channel and by ``get`` on a closed, drained one."""


class Channel(Generic[T]):
    def __init__(self, name: str, capacity: int, overflow: Overflow,
                 metrics: ChannelMetrics | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.name = name
        self.capacity = capacity
        self.overflow = overflow
        self._items: collections.deque[tuple[float, T]] = collections.deque()
        self._closed = False
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        # A blocked producer is woken at this depth (see the module docstring).
        self._resume_at = capacity // 2
        self._metrics = metrics.labels(name) if metrics else None
        if metrics:
            metrics.capacity.labels(name).set(capacity)
            # Read at scrape time: no per-item cost on the hot path.
            metrics.depth.labels(name).set_function(lambda: len(self._items))
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, item: T) -> bool:
        """Put without waiting. A drop-oldest channel always accepts (replacing its oldest
        item when full); a blocking channel returns False when full."""
        if self._closed:
            raise ChannelClosed(self.name)
        if len(self._items) >= self.capacity:
            if self.overflow is not Overflow.DROP_OLDEST:
                return False
            self._items.popleft()
            self.dropped += 1
            if self._metrics:
                self._metrics.dropped.inc()
        self._items.append((time.perf_counter(), item))
        self._not_empty.set()
        if len(self._items) >= self.capacity:
            self._not_full.clear()
        return True

    async def put(self, item: T) -> None:
        """Put, waiting for room when the channel blocks on overflow."""
        while not self.offer(item):
            self._not_full.clear()
            await self._not_full.wait()

    async def get(self) -> T:
        while not self._items:
            if self._closed:
                raise ChannelClosed(self.name)
            self._not_empty.clear()
            await self._not_empty.wait()
        return self._take()

    def _take(self) -> T:
        items = self._items
        put_at, item = items.popleft()
        left = len(items)
        if not left:
            self._not_empty.clear()
        if left <= self._resume_at:
            self._not_full.set()
        if self._metrics:
            self._metrics.wait.observe(time.perf_counter() - put_at)
        return item

    def close(self) -> None:
        """No more puts; consumers drain what is queued and then stop."""
        self._closed = True
        self._not_empty.set()
        self._not_full.set()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        items = self._items
        while True:
            if items:
                yield self._take()  # queued: no wait, no extra coroutine
                continue
            try:
                yield await self.get()
            except ChannelClosed:
                return
