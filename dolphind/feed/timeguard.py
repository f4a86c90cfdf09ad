"""Event times the feed does not trust: frames stamped ahead of the local clock, and how far a
frame may lead the bar clock before the time in between counts as stale."""

from __future__ import annotations

from typing import Callable

from dolphind.config import Config


def is_future(event_ms: int, now_ms: int, skew_ms: int) -> bool:
    """True when ``event_ms`` is more than ``skew_ms`` ahead of the local clock ``now_ms``."""
    return event_ms - now_ms > skew_ms


def max_jump_ms(cfg: Config) -> int:
    """How far a frame may lead the bar clock before the time so far counts as stale (the
    past guard, ``BarBuilder``): the clock-skew tolerance, and at least as many bars as carry
    a price forward (after ``max_stale_bars`` empty windows every symbol is absent anyway, so
    skipping them loses nothing even when the leap was real, e.g. a replay run faster than
    real time through a pause)."""
    bar_ms = int(cfg.feed.bar_seconds * 1000)
    return max(int(cfg.binance_feed.max_clock_skew_s * 1000),
               bar_ms * (cfg.feed.max_stale_bars + 1))


class FutureGuard:
    """Rejects event times too far ahead of the local wall clock without a clock read per frame.

    A frame an hour ahead would move the bar clock an hour on (720 carried-forward 5 s bars,
    then every real price is late); one years ahead would keep ``close_due`` busy for good. The
    horizon (clock + tolerance) cached at the last read is never later than the current one
    while the clock moves forward, so a time at or below it is accepted without reading the
    clock; only a time beyond it re-reads the clock (real data crosses it about once per
    ``max_clock_skew_s`` of venue time). The watchdog refreshes it too, which picks up a config
    reload and bounds how long a wall clock stepped backwards is trusted.
    """

    __slots__ = ("_now_ms", "_skew_ms", "horizon_ms")

    def __init__(self, now_ms: Callable[[], int], skew_ms: Callable[[], int]) -> None:
        self._now_ms = now_ms
        self._skew_ms = skew_ms
        self.horizon_ms = 0  # the first frame reads the clock

    def refresh(self) -> None:
        self.horizon_ms = self._now_ms() + self._skew_ms()

    def too_far(self, event_ms: int) -> bool:
        """Re-read the clock and judge ``event_ms``; the caller first checks ``horizon_ms``."""
        now, skew = self._now_ms(), self._skew_ms()
        self.horizon_ms = now + skew
        return is_future(event_ms, now, skew)
