"""Order-book features from depth5 snapshots (SPEC §1, bible §9 and §26.2).

The reader keeps only the latest depth5 snapshot per symbol (``BookState.on_depth``: one
comparison and one store per frame). Features are *sampled* once per bar, vectorised over the
universe, because the bible defines them per bar ("imbalance_ma5: 5-bar MA", "persistence:
fraction of the last N bars"); computing them per frame would cost the reader time for values
nobody reads.

Per symbol, from the latest snapshot at the bar close:

- ``imbalance`` = (bid_qty - ask_qty) / (bid_qty + ask_qty), quantities summed over the levels;
- ``imbalance_ma5``: mean imbalance of the last ``imbalance_ma_bars`` samples (5);
- ``imbalance_persistence``: fraction of the last ``persistence_bars`` samples whose imbalance
  has the current sign;
- ``spread_bps`` = (best_ask - best_bid) / mid * 1e4;
- ``depth_1pct_usd``: quote notional (price * qty) of the levels within 1 % of mid, both sides;
- ``depth_quality`` = depth_1pct_usd / the symbol's rolling median over ``depth_median_bars``
  samples (1 = typical for this symbol, 2 = twice as deep);
- ``withdrawal_velocity``: relative change of depth_1pct_usd per second over
  ``withdrawal_bars`` samples (negative = the book is thinning);
- ``fill_probability``: probability that a passive order at the touch fills within one bar,
  modelled as queue depletion by the bar's traded volume: 1 - exp(-traded_qty / touch_qty),
  touch_qty the mean best-level quantity. NaN when bars are not built from trades.

Market-wide:

- ``cascade_count``: symbols whose depth fell by more than ``cascade_drop`` from its highest
  value within the last ``cascade_window_bars`` samples;
- ``regime_signal``: +1 (withdrawal stress) when cascade_count >= ``stress_cascades`` or the
  median withdrawal velocity <= -``stress_velocity``; -1 (calm) when nothing cascades, the
  median depth quality >= ``calm_depth_quality`` and depth is not shrinking; 0 otherwise.

A symbol whose snapshot is older than ``stale_bars`` bars, or that never had one, has NaN
features. With no book data at all (replay of bars, depth disabled) ``BookView.absent`` is True
and consumers degrade as the bible says (no OB adjustments).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np

from dolphind.config import BookConfig
from dolphind.events import Depth5, Depth5Raw
from dolphind.feed.parse import BadFrame, decode_depth5

if TYPE_CHECKING:
    from dolphind.alpha.views import BookView as AlphaBookView
    from dolphind.alpha.views import SymbolBook

_LEVELS = 5
_BAND = 0.01  # depth within 1 % of mid (the name depth_1pct_usd says so)


@dataclass(frozen=True, slots=True)
class BookFeatures:
    """One symbol's book features at one bar close (NaN = unknown)."""

    symbol: str
    ts_ns: int
    best_bid: float
    best_ask: float
    imbalance: float
    imbalance_ma5: float
    imbalance_persistence: float
    spread_bps: float
    depth_1pct_usd: float
    depth_quality: float
    fill_probability: float
    withdrawal_velocity: float


@dataclass(frozen=True, slots=True)
class BookMacro:
    ts_ns: int
    cascade_count: int
    regime_signal: int
    symbols_with_book: int


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """Every feature for the whole universe at one sample; arrays are read-only."""

    ts_ns: int
    symbols: tuple[str, ...]
    features: dict[str, np.ndarray]
    macro: BookMacro


FEATURES = ("best_bid", "best_ask", "imbalance", "imbalance_ma5", "imbalance_persistence",
            "spread_bps", "depth_1pct_usd", "depth_quality", "fill_probability",
            "withdrawal_velocity")


class BookView:
    """Read-only access to the latest book features, for the alpha stage."""

    __slots__ = ("_state",)

    def __init__(self, state: "BookState") -> None:
        self._state = state

    @property
    def absent(self) -> bool:
        """True while there is no book data at all (consumers skip OB adjustments)."""
        snap = self._state.latest
        return snap is None or snap.macro.symbols_with_book == 0

    def snapshot(self) -> BookSnapshot | None:
        return self._state.latest

    def macro(self) -> BookMacro | None:
        snap = self._state.latest
        return None if snap is None else snap.macro

    def get(self, symbol: str) -> BookFeatures | None:
        """Features of ``symbol`` at the latest sample; None when it has no usable book."""
        snap = self._state.latest
        i = self._state.index.get(symbol)
        if snap is None or i is None or math.isnan(float(snap.features["imbalance"][i])):
            return None
        return BookFeatures(symbol, snap.ts_ns, *(float(snap.features[k][i]) for k in FEATURES))


class BookState:
    """Latest depth5 snapshot per symbol; per-bar feature samples."""

    def __init__(self, symbols: tuple[str, ...], settings: Callable[[], BookConfig],
                 bar_seconds: float, on_bad: Callable[[str], None] = lambda reason: None) -> None:
        self.symbols = symbols
        # A kept snapshot whose levels turn out unusable when decoded is counted here.
        self._on_bad = on_bad
        self.index = {s: i for i, s in enumerate(symbols)}
        self._settings = settings
        self.bar_seconds = bar_seconds
        n = len(symbols)
        self._latest: list[Depth5 | Depth5Raw | None] = [None] * n
        self._latest_ms: list[int] = [0] * n
        self._imb_hist: collections.deque[np.ndarray] = collections.deque(maxlen=1)
        self._depth_hist: collections.deque[np.ndarray] = collections.deque(maxlen=1)
        self.latest: BookSnapshot | None = None
        self.updates = 0
        self.view = BookView(self)

    def on_depth(self, i: int, ev: Depth5 | Depth5Raw) -> None:
        """Keep ``ev`` if it is the newest snapshot of symbol index ``i`` (hot path)."""
        if ev.event_ms >= self._latest_ms[i]:
            self._latest[i] = ev
            self._latest_ms[i] = ev.event_ms
            self.updates += 1

    def sample(self, ts_ns: int, now_ms: int, traded_qty: Sequence[float] | None) -> BookSnapshot:
        """Compute every feature from the latest snapshots (called once per bar close)."""
        cfg = self._settings()
        n = len(self.symbols)
        shape = (n, _LEVELS)
        bp, bq = np.full(shape, np.nan), np.full(shape, np.nan)
        ap, aq = np.full(shape, np.nan), np.full(shape, np.nan)
        stale_ms = cfg.stale_bars * self.bar_seconds * 1000
        for i, ev in enumerate(self._latest):
            if ev is None or now_ms - ev.event_ms > stale_ms:
                continue
            if type(ev) is Depth5Raw:
                try:
                    ev = decode_depth5(ev)
                except BadFrame as exc:
                    self._on_bad(exc.reason)
                    self._latest[i] = None  # dropped: the symbol has no book until the next
                    continue
                self._latest[i] = ev  # decoded once, even if it is sampled again
            assert isinstance(ev, Depth5)
            k, m = min(len(ev.bid_px), _LEVELS), min(len(ev.ask_px), _LEVELS)
            bp[i, :k], bq[i, :k] = ev.bid_px[:k], ev.bid_qty[:k]
            ap[i, :m], aq[i, :m] = ev.ask_px[:m], ev.ask_qty[:m]
        f = book_features(bp, bq, ap, aq)
        imb, depth = f["imbalance"], f["depth_1pct_usd"]

        hist_len = max(cfg.imbalance_ma_bars, cfg.persistence_bars)
        if self._imb_hist.maxlen != hist_len:
            self._imb_hist = collections.deque(self._imb_hist, maxlen=hist_len)
        depth_len = max(cfg.depth_median_bars, cfg.withdrawal_bars + 1,
                        cfg.cascade_window_bars + 1)
        if self._depth_hist.maxlen != depth_len:
            self._depth_hist = collections.deque(self._depth_hist, maxlen=depth_len)
        self._imb_hist.append(imb)
        self._depth_hist.append(depth)
        imb_h = np.array(self._imb_hist)
        depth_h = np.array(self._depth_hist)

        f["imbalance_ma5"] = _nanmean(imb_h[-cfg.imbalance_ma_bars:])
        f["imbalance_persistence"] = _persistence(imb_h[-cfg.persistence_bars:], imb)
        f["depth_quality"] = _safe_div(depth, _nanmedian(depth_h[-cfg.depth_median_bars:]))
        if len(depth_h) > cfg.withdrawal_bars:
            before = depth_h[-1 - cfg.withdrawal_bars]
            f["withdrawal_velocity"] = _safe_div(depth - before, before) / (
                cfg.withdrawal_bars * self.bar_seconds)
        else:
            f["withdrawal_velocity"] = np.full(n, np.nan)
        f["fill_probability"] = _fill_probability(bp, bq, aq, traded_qty)

        recent = depth_h[-(cfg.cascade_window_bars + 1):]
        peak = _nanmax(recent)
        drop = 1.0 - _safe_div(depth, peak)
        cascade = int(np.count_nonzero(drop > cfg.cascade_drop))
        present = int(np.count_nonzero(~np.isnan(imb)))
        regime = _regime(cascade, f["withdrawal_velocity"], f["depth_quality"], cfg)
        for arr in f.values():
            arr.flags.writeable = False
        snap = BookSnapshot(ts_ns, self.symbols, f, BookMacro(ts_ns, cascade, regime, present))
        self.latest = snap
        return snap


def book_features(bp: np.ndarray, bq: np.ndarray, ap: np.ndarray,
                  aq: np.ndarray) -> dict[str, np.ndarray]:
    """Instantaneous features from (n, 5) level arrays (NaN-padded); see the module doc."""
    bid_tot = np.nansum(bq, axis=1)
    ask_tot = np.nansum(aq, axis=1)
    has = ~(np.isnan(bp[:, 0]) | np.isnan(ap[:, 0]))
    best_bid = np.where(has, np.where(np.isnan(bp), -np.inf, bp).max(axis=1), np.nan)
    best_ask = np.where(has, np.where(np.isnan(ap), np.inf, ap).min(axis=1), np.nan)
    mid = (best_bid + best_ask) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        imbalance = np.where(has, (bid_tot - ask_tot) / (bid_tot + ask_tot), np.nan)
        spread_bps = (best_ask - best_bid) / mid * 1e4
        band = _BAND * mid[:, None]
        bid_in = np.abs(bp - mid[:, None]) <= band
        ask_in = np.abs(ap - mid[:, None]) <= band
        depth = (np.where(bid_in, bp * bq, 0.0).sum(axis=1)
                 + np.where(ask_in, ap * aq, 0.0).sum(axis=1))
    depth = np.where(has, depth, np.nan)
    return {"best_bid": best_bid, "best_ask": best_ask, "imbalance": imbalance,
            "spread_bps": spread_bps, "depth_1pct_usd": depth}


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = a / b
    return np.where(np.isfinite(out), out, np.nan)


def _nanmean(h: np.ndarray) -> np.ndarray:
    """Column mean over the valid values, NaN where none (no RuntimeWarning)."""
    valid = ~np.isnan(h)
    count = valid.sum(axis=0)
    total = np.where(valid, h, 0.0).sum(axis=0)
    return _safe_div(total, count.astype(np.float64))


def _nanmax(h: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(h)
    out = np.where(valid, h, -np.inf).max(axis=0)
    return np.where(valid.any(axis=0), out, np.nan)


def _nanmedian(h: np.ndarray) -> np.ndarray:
    """Column median over the valid values, NaN where none (np.nanmedian warns on those)."""
    srt = np.sort(h, axis=0)  # NaN sorts last
    k = (~np.isnan(h)).sum(axis=0)
    lo = np.clip((k - 1) // 2, 0, None)
    hi = np.clip(k // 2, 0, None)
    cols = np.arange(h.shape[1])
    med = (srt[lo, cols] + srt[np.minimum(hi, len(h) - 1), cols]) / 2.0
    return np.where(k > 0, med, np.nan)


def _persistence(h: np.ndarray, current: np.ndarray) -> np.ndarray:
    sign = np.sign(current)
    same = (np.sign(h) == sign) & (sign != 0)
    valid = (~np.isnan(h)).sum(axis=0)
    out = _safe_div(same.sum(axis=0).astype(np.float64), valid.astype(np.float64))
    return np.where(np.isnan(current), np.nan, out)


def _fill_probability(bp: np.ndarray, bq: np.ndarray, aq: np.ndarray,
                      traded_qty: Sequence[float] | None) -> np.ndarray:
    n = len(bp)
    if traded_qty is None:
        return np.full(n, np.nan)
    # Level 0 is the best level in Binance's depth5 (bids descending, asks ascending).
    touch = (bq[:, 0] + aq[:, 0]) / 2.0
    traded = np.asarray(traded_qty, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        p = 1.0 - np.exp(-traded / touch)
    p = np.where(touch > 0, p, np.where(traded > 0, 1.0, 0.0))
    return np.where(np.isnan(touch), np.nan, p)


def _regime(cascade: int, velocity: np.ndarray, quality: np.ndarray, cfg: BookConfig) -> int:
    v = velocity[~np.isnan(velocity)]
    q = quality[~np.isnan(quality)]
    v_med = float(np.median(v)) if len(v) else 0.0
    if cascade >= cfg.stress_cascades or v_med <= -cfg.stress_velocity:
        return 1
    if cascade == 0 and len(q) and float(np.median(q)) >= cfg.calm_depth_quality and v_med >= 0:
        return -1
    return 0


class _LazySymbols(Mapping[str, "SymbolBook"]):
    """``per_symbol`` of the alpha view, built on access: the engine reads one symbol (the
    position's or the selected asset's) per bar, so materialising N records would be waste."""

    __slots__ = ("_snap", "_index")

    def __init__(self, snap: BookSnapshot, index: Mapping[str, int]) -> None:
        self._snap = snap
        self._index = index

    def __getitem__(self, symbol: str) -> "SymbolBook":
        from dolphind.alpha.views import SymbolBook

        i = self._index[symbol]
        f = self._snap.features
        if math.isnan(float(f["imbalance"][i])):
            raise KeyError(symbol)  # no usable book for this symbol: the engine sees None
        return SymbolBook(**{k: float(f[k][i]) for k in _ALPHA_FIELDS})

    def __iter__(self) -> Iterator[str]:
        return iter(self._snap.symbols)

    def __len__(self) -> int:
        return len(self._snap.symbols)


# The per-symbol features the alpha engine's SymbolBook carries (same names on both sides).
_ALPHA_FIELDS = ("imbalance", "imbalance_ma5", "imbalance_persistence", "spread_bps",
                 "depth_1pct_usd", "depth_quality", "fill_probability", "withdrawal_velocity")


def alpha_view(snap: BookSnapshot | None, stale: bool = False) -> "AlphaBookView | None":
    """The alpha engine's typed book view of one feed sample (None: no book data at all).

    The arrays are the sample's own read-only arrays (no copy); the view is built once per
    sample, so the engine's per-object caches (depth by row, market quality) hold per bar.
    """
    from dolphind.alpha.views import BookView as AlphaView

    if snap is None or snap.macro.symbols_with_book == 0:
        return None
    f = snap.features
    index = {s: i for i, s in enumerate(snap.symbols)}
    return AlphaView(
        symbols=snap.symbols, depth_quality=f["depth_quality"],
        fill_probability=f["fill_probability"], imbalance_ma5=f["imbalance_ma5"],
        imbalance_persistence=f["imbalance_persistence"],
        withdrawal_velocity=f["withdrawal_velocity"], cascade_count=snap.macro.cascade_count,
        regime_signal=snap.macro.regime_signal, stale=stale,
        per_symbol=_LazySymbols(snap, index), _index=index)


class BookSource:
    """What the alpha stage calls each bar: the latest sample as the engine's view.

    ``state`` is the feed's ``BookState`` (live, or a replay of recorded depth). The view is
    rebuilt only when a new sample exists. ``stale_after_ns``: a sample older than this, as
    seen from the newest bar, is reported stale (survival Cat3 reads it).
    """

    def __init__(self, state: "BookState", stale_after_ns: Callable[[], int]) -> None:
        self._state = state
        self._stale_after_ns = stale_after_ns
        self._built: tuple[BookSnapshot | None, "AlphaBookView | None"] = (None, None)
        self.views = 0

    def __call__(self, bar_ts_ns: int | None = None) -> "AlphaBookView | None":
        snap = self._state.latest
        if snap is None:
            return None
        stale = (bar_ts_ns is not None and bar_ts_ns - snap.ts_ns > self._stale_after_ns())
        if self._built[0] is not snap or (self._built[1] is not None
                                          and self._built[1].stale != stale):
            self._built = (snap, alpha_view(snap, stale))
            self.views += 1
        return self._built[1]
