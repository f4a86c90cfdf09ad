"""The latest market prices the router reads as its reference (live fills ignore them)."""

from __future__ import annotations

import numpy as np


class Marks:
    """Per-symbol marks and the last bar's closes: whichever is newer wins."""

    def __init__(self) -> None:
        self._marks: dict[str, tuple[float, int]] = {}
        self._bar: tuple[dict[str, int], np.ndarray, int] | None = None

    def mark(self, symbol: str, price: float, ts_ns: int) -> None:
        if price > 0:
            prev = self._marks.get(symbol)
            if prev is None or ts_ns >= prev[1]:
                self._marks[symbol] = (price, ts_ns)

    def mark_bar(self, index: dict[str, int], closes: np.ndarray, ts_ns: int) -> None:
        if self._bar is None or ts_ns >= self._bar[2]:
            self._bar = (index, closes, ts_ns)

    def last(self, symbol: str) -> tuple[float, int] | None:
        own = self._marks.get(symbol)
        if self._bar is not None:
            index, closes, ts = self._bar
            j = index.get(symbol)
            if j is not None and (own is None or ts >= own[1]):
                px = float(closes[j])
                if px > 0:
                    return (px, ts)
        return own
