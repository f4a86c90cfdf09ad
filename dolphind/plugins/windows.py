"""How much a cumulative counter grew over the last ``window_s`` seconds (time injected).

Cumulative figures only go up; a playbook wants "rejections in the last minute". Keep the
samples of the window and subtract the oldest from the newest. A counter that goes down (the
daemon restarted, or a metric was reset) restarts the window rather than reporting a negative.
"""

from __future__ import annotations

import collections


class CounterWindow:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    def observe(self, now: float, cumulative: float) -> float:
        """Record the counter's value at ``now``; returns the increase over the window."""
        if self._samples and cumulative < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now, cumulative))
        # Keep one sample at or before the window's start as the baseline.
        while len(self._samples) >= 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        return self.increase()

    def increase(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        return self._samples[-1][1] - self._samples[0][1]

    def reset(self) -> None:
        self._samples.clear()


class RatioWindow:
    """sum/count of a histogram over the window: the mean of what was observed in it."""

    def __init__(self, window_s: float) -> None:
        self._sum = CounterWindow(window_s)
        self._count = CounterWindow(window_s)

    def observe(self, now: float, total: float, count: float) -> float | None:
        d_sum = self._sum.observe(now, total)
        d_count = self._count.observe(now, count)
        return d_sum / d_count if d_count > 0 else None
