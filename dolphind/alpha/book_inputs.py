"""The order book as the alpha engine reads it (bible §8, §9).

Three readings, each cached per book object (the book layer publishes less often than bars
arrive): depth quality aligned with the price-window rows (IRP's OB Sub-1 adjustment and depth
gate), the market-wide depth quality and fill probability the survival stack's Cat3 reads, and
the mean imbalance OB Sub-3 sizes with.
"""

from __future__ import annotations

import math

import numpy as np

from dolphind.alpha.price_windows import PriceWindows
from dolphind.alpha.signal import SHORT
from dolphind.alpha.views import BookView


class BookInputs:
    """Book readings for one engine, aligned with its ``PriceWindows`` rows."""

    def __init__(self, windows: PriceWindows) -> None:
        self._windows = windows
        self._book_symbols: tuple[str, ...] | None = None
        self._book_rows = np.zeros(0, dtype=np.int64)
        self._book_rows_n = -1
        self._book_market: tuple[object, float, float] | None = None
        self._nan_rows = np.zeros(0)
        self._depth_cache: tuple[BookView, np.ndarray] | None = None

    def depth_by_row(self, book: BookView | None) -> np.ndarray:
        """Book depth quality aligned with the price-window rows (NaN: no reading)."""
        n = self._windows.n_rows
        if book is None:
            if self._nan_rows.shape[0] != n:
                self._nan_rows = np.full(n, np.nan)
            return self._nan_rows
        cached = self._depth_cache
        if cached is not None and cached[0] is book and cached[1].shape[0] == n:
            return cached[1]
        if self._book_rows_n != n or (
            book.symbols is not self._book_symbols and book.symbols != self._book_symbols
        ):
            # Re-map when the book's universe changes or new symbols got rows.
            self._book_symbols = book.symbols
            self._book_rows_n = n
            self._book_rows = np.fromiter(
                (self._windows.row(s) for s in book.symbols), np.int64, len(book.symbols)
            )
        rows = self._book_rows
        out = np.full(n, np.nan)
        mask = (rows >= 0) & (rows < n)
        out[rows[mask]] = book.depth_quality[mask]
        self._depth_cache = (book, out)
        return out

    def market_quality(self, book: BookView | None) -> tuple[float, float]:
        """Market-wide depth quality and fill probability for Cat3: medians over the book.

        The survival stack is system-wide, so Cat3 reads the market, not one asset; medians
        keep one broken symbol from moving it.
        """
        if book is None:
            return 1.0, 1.0
        cached = self._book_market
        if cached is not None and cached[0] is book:
            return cached[1], cached[2]
        dq = _nanmedian(book.depth_quality)
        fp = _nanmedian(book.fill_probability)
        self._book_market = (book, dq, fp)
        return dq, fp

    @staticmethod
    def market_eff_imbalance(book: BookView | None, direction: int) -> float:
        """Mean imbalance_ma5 over the book, signed so pressure in the trade's favour is > 0."""
        if book is None:
            return math.nan
        m = _nanmean(book.imbalance_ma5)
        return -m if direction == SHORT else m


def _nanmedian(a: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    return float(np.median(finite)) if finite.size else math.nan


def _nanmean(a: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    return float(finite.mean()) if finite.size else math.nan
