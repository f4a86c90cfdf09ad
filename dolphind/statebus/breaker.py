"""The state bus's circuit breaker (bible §15.6): pure state, no I/O, no clock of its own.

Closed: writes go to the cluster. After ``threshold`` consecutive failed pushes it opens:
file-only mode (the latest values as JSON files), while recovery retries with exponential
back-off; the first push that succeeds closes it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from dolphind.backoff import backoff_ceiling


@dataclass(slots=True)
class Breaker:
    threshold: int
    initial_s: float
    max_s: float
    failures: int = 0
    open: bool = True  # "not connected yet" counts as open: nothing reached the cluster
    opened: int = 0  # times it went from closed to open (the metric)
    _attempt: int = 0  # recovery attempts since the last success

    def success(self) -> bool:
        """A push reached the cluster. True when this closed the breaker."""
        self.failures = 0
        self._attempt = 0
        was, self.open = self.open, False
        return was

    def failure(self) -> bool:
        """A push failed. True when this opened the breaker."""
        self.failures += 1
        if not self.open and self.failures >= self.threshold:
            return self.trip()
        return False

    def trip(self) -> bool:
        """Open now (the client reported the cluster gone). True when it was closed."""
        was_closed = not self.open
        self.open = True
        if was_closed:
            self.opened += 1
        return was_closed

    def next_delay(self) -> float:
        """The longest wait before the next recovery attempt: initial, doubling, capped at max
        (the schedule; the caller jitters it, ``dolphind.backoff.jittered``)."""
        delay = backoff_ceiling(self._attempt, self.initial_s, self.max_s)
        self._attempt += 1
        return delay
