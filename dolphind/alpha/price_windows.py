"""The price windows the alpha reads: the last ``HISTORY_BARS`` prices of every symbol.

IRP ranks assets on them (``alpha.irp``); the direction confirmation and the volatility gate read
their tails too. One 2-D ring buffer, written by a numba kernel once per bar.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# How many prices each symbol keeps: IRP needs 50, DC 8, the vol gate 51; 64 covers them all.
HISTORY_BARS = 64


@numba.njit(cache=True, nogil=True)
def push_prices_nb(
    buf: np.ndarray,
    head: np.ndarray,
    count: np.ndarray,
    seen: np.ndarray,
    rows: np.ndarray,
    prices: np.ndarray,
    bar: int,
    width: int,
) -> None:
    """Append this bar's prices to each row's ring (only finite, positive prices, §13.1).

    Every price is written twice, at ``head`` and ``head + width``, so the last ``width``
    prices are always the contiguous slice ``buf[r, head:head+width]``.
    """
    for j in range(prices.shape[0]):
        p = prices[j]
        if not (p > 0.0) or p == np.inf:
            continue
        r = rows[j]
        h = head[r]
        buf[r, h] = p
        buf[r, h + width] = p
        head[r] = (h + 1) % width
        count[r] += 1
        seen[r] = bar


class PriceWindows:
    """The last ``HISTORY_BARS`` prices of every symbol ever seen, as one 2-D ring buffer.

    Rows are assigned in first-seen order and never reused, so the ranking order is stable.
    The scan's symbol tuple maps to rows once per universe (an identity check per bar).
    """

    def __init__(self, width: int = HISTORY_BARS, capacity: int = 64) -> None:
        self.width = width
        self._rows: dict[str, int] = {}
        self.symbols: list[str] = []
        self._alloc(capacity)
        self._last_symbols: tuple[str, ...] | None = None
        self._last_rows = np.zeros(0, dtype=np.int64)
        self.bar = 0

    def _alloc(self, capacity: int) -> None:
        self.buf = np.full((capacity, 2 * self.width), np.nan)
        self.head = np.zeros(capacity, dtype=np.int64)
        self.count = np.zeros(capacity, dtype=np.int64)
        self.seen = np.full(capacity, -1, dtype=np.int64)

    def _grow(self, needed: int) -> None:
        old_buf, old_head, old_count, old_seen = self.buf, self.head, self.count, self.seen
        capacity = old_buf.shape[0]
        while capacity < needed:
            capacity *= 2
        self._alloc(capacity)
        n = old_buf.shape[0]
        self.buf[:n] = old_buf
        self.head[:n] = old_head
        self.count[:n] = old_count
        self.seen[:n] = old_seen

    @property
    def n_rows(self) -> int:
        return len(self.symbols)

    def row(self, symbol: str) -> int:
        """The row of ``symbol``, or -1 when it was never seen."""
        return self._rows.get(symbol, -1)

    def rows_for(self, symbols: tuple[str, ...]) -> np.ndarray:
        """Rows for a scan's symbols (cached while the tuple object is unchanged)."""
        if symbols is self._last_symbols:
            return self._last_rows
        rows = np.empty(len(symbols), dtype=np.int64)
        for j, sym in enumerate(symbols):
            r = self._rows.get(sym)
            if r is None:
                r = len(self.symbols)
                if r >= self.buf.shape[0]:
                    self._grow(r + 1)
                self._rows[sym] = r
                self.symbols.append(sym)
            rows[j] = r
        self._last_symbols = symbols
        self._last_rows = rows
        return rows

    def push(self, symbols: tuple[str, ...], prices: np.ndarray) -> None:
        """Record one bar: each symbol's price (NaN or non-positive prices are skipped)."""
        self.bar += 1
        rows = self.rows_for(symbols)
        p = np.asarray(prices, dtype=np.float64)
        push_prices_nb(self.buf, self.head, self.count, self.seen, rows, p, self.bar, self.width)

    def window(self, row: int, n: int) -> np.ndarray:
        """The last ``min(n, count)`` prices of ``row``, oldest first (a view)."""
        k = min(n, int(self.count[row]), self.width)
        end = int(self.head[row]) + self.width
        return self.buf[row, end - k:end]

    def last_price(self, row: int) -> float:
        """The most recent price of ``row`` (NaN when it has none)."""
        if row < 0 or self.count[row] == 0:
            return math.nan
        return float(self.buf[row, int(self.head[row]) + self.width - 1])

    def priced_now(self, row: int) -> bool:
        """True when ``row`` received a price on the latest bar."""
        return row >= 0 and int(self.seen[row]) == self.bar
