"""Which assets IRP's walk may take: the allowlist (risk, the venue's symbols) and, on the
current bar, the assets the venue turned away (not listed, or the sized order too small)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from dolphind.alpha.price_windows import PriceWindows

# (symbol, notional, price) -> "" when the venue can take the entry, else the gate's name.
VenueCheck = Callable[[str, float, float], str]


class Eligibility:
    """The walk's eligibility mask over the price-window rows."""

    def __init__(self, windows: PriceWindows) -> None:
        self._windows = windows
        # Which symbols may be traded (risk allowlist, venue symbols); None: all.
        self.symbols: frozenset[str] | None = None
        self._rows = np.zeros(0, dtype=np.bool_)
        # Could the venue take an entry? Rows it turned away on this bar, and why.
        self.venue_check: VenueCheck | None = None
        self.venue_excluded: dict[int, str] = {}

    def set_symbols(self, symbols: frozenset[str] | None) -> None:
        self.symbols = symbols
        self._rows = np.zeros(0, dtype=np.bool_)

    def new_walk(self) -> None:
        """A new entry attempt: the venue's exclusions of an earlier bar no longer hold."""
        self.venue_excluded = {}

    def mask(self) -> np.ndarray | None:
        """Eligible rows (None: every row)."""
        n = self._windows.n_rows
        if self.symbols is None:
            base = None
        else:
            if self._rows.shape[0] != n:
                self._rows = np.fromiter(
                    (s in self.symbols for s in self._windows.symbols), np.bool_, n)
            base = self._rows
        if not self.venue_excluded:
            return base
        mask = np.ones(n, dtype=np.bool_) if base is None else base.copy()
        mask[list(self.venue_excluded)] = False
        return mask
