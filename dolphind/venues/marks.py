"""The latest market prices a venue holds: each symbol's own marks and the last bar's closes.

The paper venue fills at them; the Binance venue only hands them to the router as its reference
price (its fills come from the exchange)."""

from __future__ import annotations

import numpy as np


class Marks:
    """Per-symbol marks and the last bar's closes: whichever is newer wins.

    The latest bar is kept by reference: marking every symbol of every bar one by one would
    cost O(N) Python work per bar for prices that are almost never traded."""

    def __init__(self) -> None:
        self._marks: dict[str, tuple[float, int]] = {}
        self._bar: tuple[dict[str, int], np.ndarray, int] | None = None

    def mark(self, symbol: str, price: float, ts_ns: int) -> None:
        """The latest price of ``symbol``; an older mark never replaces a newer one."""
        if price > 0:  # NaN (absent) fails this too
            prev = self._marks.get(symbol)
            if prev is None or ts_ns >= prev[1]:
                self._marks[symbol] = (price, ts_ns)

    def mark_bar(self, index: dict[str, int], closes: np.ndarray, ts_ns: int) -> bool:
        """Every symbol's close of one bar (``index`` maps venue symbols to columns). False
        when the bar is older than the one held, which stays."""
        if self._bar is not None and ts_ns < self._bar[2]:
            return False
        self._bar = (index, closes, ts_ns)
        return True

    def last(self, symbol: str) -> tuple[float, int] | None:
        """The newest of the symbol's own mark and its close in the latest bar."""
        own = self._marks.get(symbol)
        if self._bar is not None:
            index, closes, ts = self._bar
            j = index.get(symbol)
            if j is not None and (own is None or ts >= own[1]):
                px = float(closes[j])
                if px > 0:  # NaN (absent) fails this too
                    return (px, ts)
        return own

    def stale(self, symbol: str) -> bool:
        """True when the latest bar lists ``symbol`` as absent and no newer own mark exists."""
        if self._bar is None:
            return False
        index, closes, ts = self._bar
        j = index.get(symbol)
        if j is None or float(closes[j]) > 0:
            return False
        own = self._marks.get(symbol)
        return own is None or own[1] < ts
