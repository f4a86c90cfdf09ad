"""What the alpha engine reads each bar besides the scan: the book and the portfolio.

Both are small frozen snapshots built by the stage that owns the data (the book layer, the
portfolio). The engine never mutates them and never assumes its own intents were filled: the
portfolio view is the only truth about the open position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np

PositionSide = Literal["SHORT", "LONG"]


@dataclass(frozen=True, slots=True)
class SymbolBook:
    """Book features of one symbol (SPEC §1, bible §9.1, §9.3, §26.2)."""

    imbalance: float = math.nan
    imbalance_ma5: float = math.nan
    imbalance_persistence: float = math.nan
    spread_bps: float = math.nan
    depth_1pct_usd: float = math.nan
    depth_quality: float = math.nan
    fill_probability: float = math.nan
    withdrawal_velocity: float = math.nan


@dataclass(frozen=True, slots=True)
class BookView:
    """Book features for the universe plus the market-wide readings (bible §9.2).

    Build it with ``BookView.from_symbols``. The features the hot path reads for every symbol
    (depth gate, OB Sub-1 and Sub-3, survival Cat3) are float64 arrays aligned with
    ``symbols``; every feature of a symbol is in ``per_symbol``. NaN means "no reading".
    ``stale`` says the book layer is wired but its data is late (survival Cat3 reads 0.5).
    Keep ``symbols`` the same tuple object from bar to bar while the universe is unchanged: the
    engine maps it onto its own rows once per tuple.
    """

    symbols: tuple[str, ...]
    depth_quality: np.ndarray
    fill_probability: np.ndarray
    imbalance_ma5: np.ndarray
    imbalance_persistence: np.ndarray
    withdrawal_velocity: np.ndarray
    cascade_count: int = 0
    regime_signal: int = 0
    stale: bool = False
    per_symbol: Mapping[str, SymbolBook] = field(default_factory=dict)
    _index: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_symbols(
        cls,
        books: Mapping[str, SymbolBook],
        cascade_count: int = 0,
        regime_signal: int = 0,
        stale: bool = False,
    ) -> BookView:
        """Build the view from per-symbol features (the order of ``books`` is kept)."""
        symbols = tuple(books)
        def col(name: str) -> np.ndarray:
            arr = np.fromiter((getattr(books[s], name) for s in symbols), np.float64, len(symbols))
            arr.flags.writeable = False
            return arr
        return cls(
            symbols=symbols,
            depth_quality=col("depth_quality"),
            fill_probability=col("fill_probability"),
            imbalance_ma5=col("imbalance_ma5"),
            imbalance_persistence=col("imbalance_persistence"),
            withdrawal_velocity=col("withdrawal_velocity"),
            cascade_count=int(cascade_count),
            regime_signal=int(regime_signal),
            stale=stale,
            per_symbol=dict(books),
            _index={s: i for i, s in enumerate(symbols)},
        )

    def get(self, symbol: str) -> SymbolBook | None:
        """The features of ``symbol``, or None when the book has no entry for it."""
        return self.per_symbol.get(symbol)

    def index_of(self, symbol: str) -> int:
        """Column index of ``symbol``, or -1."""
        return self._index.get(symbol, -1)


@dataclass(frozen=True, slots=True)
class PositionView:
    """The open position as the portfolio knows it (after fills)."""

    symbol: str
    side: PositionSide
    entry_price: float
    notional: float
    # Bars since the entry bar: 0 on the bar the position was opened.
    bars_held: int
    # scan_number of the entry intent that opened it (-1 when the engine did not open it).
    entry_scan: int
    leverage: float = 1.0

    @property
    def direction(self) -> int:
        return -1 if self.side == "SHORT" else 1


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """The latest closed trade; ``seq`` increases by one per closed trade (dedup key)."""

    seq: int
    symbol: str
    entry_scan: int
    pnl_usdt: float


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """Capital and the open position, as of the start of this bar."""

    capital: float
    equity: float
    drawdown: float = 0.0
    position: PositionView | None = None
    last_closed: ClosedTrade | None = None
