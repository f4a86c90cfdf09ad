"""Loading historical OHLCV for many symbols and aligning it on one time axis.

Accepted inputs: Feather/Arrow IPC, Parquet and CSV files, given one by one or as folders.
In a folder, candle files are told apart from mark-price and funding-rate files by name
(freqtrade layout ``ADA_USDT_USDT-1m-futures.feather`` -> ADAUSDT candles,
``ADA_USDT_USDT-8h-funding_rate.feather`` -> ADAUSDT funding, ``...-8h-mark.feather`` -> not
used for bars). Files with a ``symbol`` column may hold many symbols.

Everything that is not used as given (duplicates, unsorted rows, bad prices, unknown files) is
described in ``History.notes``: the loader repairs what it safely can and says so; it refuses
(``HistoryError``) what it cannot use, naming the file and the reason.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

from dolphind.events import Bar, frozen_array

_EXTENSIONS = (".feather", ".arrow", ".ipc", ".parquet", ".csv", ".csv.gz")
_TIME_COLUMNS = ("date", "timestamp", "time", "open_time", "ts", "timestamp_ns", "datetime")
# freqtrade: BASE_QUOTE[_SETTLE]-TIMEFRAME[-KIND].ext
_FREQTRADE = re.compile(
    r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)(?:_(?P<settle>[A-Za-z0-9]+))?"
    r"-(?P<tf>\d+[smhdwM])(?:-(?P<kind>[a-z_]+))?$")
_PLAIN = re.compile(r"^(?P<symbol>[A-Z0-9]{2,30})(?:[-_.].*)?$")
_CANDLE_KINDS = {None, "futures", "spot", "candles", "klines"}
_SKIPPED_KINDS = {"mark", "index", "premiumIndex", "premium_index"}


class HistoryError(Exception):
    """Input that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class FundingSeries:
    ts_ns: np.ndarray
    rate: np.ndarray


@dataclass(frozen=True, slots=True)
class History:
    """Closes of every symbol on one time axis: ``closes[t, i]`` for ``symbols[i]``.

    NaN where a symbol has no price: before its first candle, after its last one, and in a gap
    longer than the carry-forward limit.
    """

    ts_ns: np.ndarray
    symbols: tuple[str, ...]
    closes: np.ndarray
    interval_s: float
    funding: dict[str, FundingSeries] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


@dataclass(frozen=True, slots=True)
class _Candles:
    symbol: str
    source: str
    ts_ns: np.ndarray
    close: np.ndarray


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Files under ``paths`` (files as given, folders searched recursively), sorted."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and _is_data(f)))
        elif p.is_file():
            found.append(p)
        else:
            raise HistoryError(f"{p}: no such file or folder")
    return found


def _is_data(p: Path) -> bool:
    return p.name.lower().endswith(_EXTENSIONS)


def _stem(p: Path) -> str:
    name = p.name
    for ext in _EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return p.stem


def classify(p: Path) -> tuple[str, str | None]:
    """(kind, symbol from the name) with kind in {"candles", "funding", "skip"}."""
    stem = _stem(p)
    m = _FREQTRADE.match(stem)
    if m:
        kind = m["kind"]
        symbol = (m["base"] + m["quote"]).upper()
        if kind == "funding_rate":
            return "funding", symbol
        if kind in _SKIPPED_KINDS:
            return "skip", symbol
        if kind in _CANDLE_KINDS:
            return "candles", symbol
        return "skip", symbol
    m = _PLAIN.match(stem)
    return "candles", (m["symbol"] if m else None)


def read_table(p: Path) -> pa.Table:
    name = p.name.lower()
    try:
        if name.endswith(".parquet"):
            return pq.read_table(p)
        if name.endswith((".csv", ".csv.gz")):
            return pacsv.read_csv(p)
        return feather.read_table(p)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise HistoryError(f"{p}: cannot read ({exc})") from None


def _time_ns(table: pa.Table, p: Path) -> np.ndarray:
    col_name = next((c for c in _TIME_COLUMNS if c in table.column_names), None)
    if col_name is None:
        raise HistoryError(f"{p}: no time column (expected one of {', '.join(_TIME_COLUMNS)})")
    col = table.column(col_name)
    if pa.types.is_timestamp(col.type):
        return pc.cast(col, pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64()).to_numpy(
            zero_copy_only=False)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        raw = col.to_numpy(zero_copy_only=False).astype(np.float64)
        if raw.size == 0:
            return raw.astype(np.int64)
        # Epoch unit from magnitude: seconds ~1e9, ms ~1e12, us ~1e15, ns ~1e18 (years 2001+).
        mag = np.nanmax(np.abs(raw))
        scale = 1e9 if mag < 1e11 else 1e6 if mag < 1e14 else 1e3 if mag < 1e17 else 1.0
        return (raw * scale).astype(np.int64)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            ts = pc.cast(col, pa.timestamp("ns"))
        except pa.ArrowInvalid as exc:
            raise HistoryError(f"{p}: column {col_name!r} is not a time ({exc})") from None
        return ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
    raise HistoryError(f"{p}: column {col_name!r} has type {col.type}, not a time")


def _float_column(table: pa.Table, names: Sequence[str], p: Path) -> np.ndarray:
    name = next((n for n in names if n in table.column_names), None)
    if name is None:
        raise HistoryError(f"{p}: no {names[0]!r} column (columns: {', '.join(table.column_names)})")
    try:
        return pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise HistoryError(f"{p}: column {name!r} is not numeric ({exc})") from None


def _clean(ts: np.ndarray, values: np.ndarray, label: str, notes: list[str],
           positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sort by time, drop duplicate timestamps (keep the last) and unusable values; say so."""
    if ts.size and np.any(np.diff(ts) < 0):
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
        notes.append(f"{label}: rows were not in time order; sorted")
    if ts.size > 1:
        keep = np.ones(ts.size, dtype=bool)
        keep[:-1] = ts[1:] != ts[:-1]
        dups = int(ts.size - keep.sum())
        if dups:
            ts, values = ts[keep], values[keep]
            notes.append(f"{label}: {dups} duplicated timestamps; kept the last row of each")
    bad = ~np.isfinite(values)
    if positive:
        bad |= values <= 0
    if bad.any():
        notes.append(f"{label}: {int(bad.sum())} rows with a missing or non-positive value dropped")
        ts, values = ts[~bad], values[~bad]
    return ts, values


def _read_candles(p: Path, symbol: str | None, notes: list[str]) -> list[_Candles]:
    table = read_table(p)
    ts = _time_ns(table, p)
    close = _float_column(table, ("close", "Close", "c"), p)
    if "symbol" in table.column_names:
        syms = np.asarray(table.column("symbol").to_pylist(), dtype=object)
        out = []
        for s in sorted(set(syms)):
            mask = syms == s
            t, c = _clean(ts[mask], close[mask], f"{p.name}[{s}]", notes, positive=True)
            out.append(_Candles(str(s).replace("/", "").split(":")[0].upper(), str(p), t, c))
        return out
    if symbol is None:
        raise HistoryError(f"{p}: cannot tell the symbol (no 'symbol' column, and the file "
                           "name is not like BTCUSDT.csv or BTC_USDT_USDT-1m-futures.feather)")
    t, c = _clean(ts, close, p.name, notes, positive=True)
    return [_Candles(symbol, str(p), t, c)]


def _read_funding(p: Path, symbol: str, notes: list[str]) -> FundingSeries:
    table = read_table(p)
    ts = _time_ns(table, p)
    # freqtrade stores the rate in `open`; other layouts name it.
    rate = _float_column(table, ("funding_rate", "fundingRate", "rate", "open"), p)
    ts, rate = _clean(ts, rate, p.name, notes, positive=False)
    return FundingSeries(ts, rate)


def load_history(paths: Iterable[str | Path], max_stale_bars: int = 12) -> History:
    """Load and align every candle file under ``paths``.

    A symbol's gap is filled with its last price for at most ``max_stale_bars`` bars; longer
    gaps, and the time before its first or after its last candle, are NaN (absent).
    """
    files = discover(paths)
    if not files:
        raise HistoryError("no data files found (looked for "
                           + ", ".join(_EXTENSIONS) + ")")
    notes: list[str] = []
    candles: dict[str, list[_Candles]] = defaultdict(list)
    funding: dict[str, FundingSeries] = {}
    skipped: list[str] = []
    for f in files:
        kind, symbol = classify(f)
        if kind == "skip":
            skipped.append(f.name)
        elif kind == "funding":
            funding[symbol or ""] = _read_funding(f, symbol or "", notes)
        else:
            for c in _read_candles(f, symbol, notes):
                candles[c.symbol].append(c)
    if skipped:
        notes.append(f"{len(skipped)} mark/index price files not used for bars")
    if not candles:
        raise HistoryError("no candle files among " + ", ".join(str(f) for f in files[:5]))

    merged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for symbol, parts in sorted(candles.items()):
        parts = _finest(symbol, parts, notes)
        if len(parts) > 1:
            notes.append(f"{symbol}: {len(parts)} files merged")
        ts = np.concatenate([c.ts_ns for c in parts])
        close = np.concatenate([c.close for c in parts])
        merged[symbol] = _clean(ts, close, symbol, notes, positive=True) if len(parts) > 1 \
            else (ts, close)
        if merged[symbol][0].size == 0:
            notes.append(f"{symbol}: no usable rows; left out")
            del merged[symbol]
    if not merged:
        raise HistoryError("no usable candles in " + ", ".join(str(f) for f in files[:5]))

    interval_ns = _common_interval(merged, notes)
    axis = _time_axis(merged, interval_ns, notes)
    symbols = tuple(sorted(merged))
    closes = np.full((axis.size, len(symbols)), np.nan)
    for i, s in enumerate(symbols):
        ts, close = merged[s]
        # Align every row onto the bar grid (floor to the interval) and place it.
        slot = ((ts - axis[0]) // interval_ns).astype(np.int64)
        off_grid = int(np.count_nonzero((ts - axis[0]) % interval_ns))
        if off_grid:
            notes.append(f"{s}: {off_grid} rows not on the {interval_ns / 1e9:g}s grid; "
                         "aligned to the bar that contains them")
        closes[slot, i] = close  # later rows in a slot win (data is time-sorted)
        _carry_forward(closes[:, i], int(slot[0]), int(slot[-1]), max_stale_bars)
    return History(axis, symbols, closes, interval_ns / 1e9, funding, tuple(notes))


def _median_step(ts: np.ndarray) -> int:
    d = np.diff(ts)
    d = d[d > 0]
    return int(np.median(d)) if d.size else 0


def _finest(symbol: str, parts: list[_Candles], notes: list[str]) -> list[_Candles]:
    """Of several candle files for one symbol, keep those with the finest interval: 1h and
    5m candles of the same market are two views of it, not two halves to interleave."""
    if len(parts) < 2:
        return parts
    steps = [_median_step(c.ts_ns) for c in parts]
    finest = min((s for s in steps if s > 0), default=0)
    kept = [c for c, s in zip(parts, steps) if s == finest or s == 0]
    dropped = [Path(c.source).name for c, s in zip(parts, steps) if not (s == finest or s == 0)]
    if dropped:
        notes.append(f"{symbol}: coarser candle files not used ({', '.join(dropped)}); "
                     f"using the {finest / 1e9:g}s candles")
    return kept


def _common_interval(merged: dict[str, tuple[np.ndarray, np.ndarray]], notes: list[str]) -> int:
    steps = [s for s in (_median_step(ts) for ts, _ in merged.values()) if s > 0]
    if not steps:
        raise HistoryError("cannot tell the bar interval: every symbol has fewer than 2 rows")
    interval = min(steps)
    if len(set(steps)) > 1:
        notes.append(f"symbols have different intervals ({sorted(set(steps))} ns); "
                     f"using the smallest, {interval / 1e9:g}s, and carrying prices forward")
    return interval


def _time_axis(merged: dict[str, tuple[np.ndarray, np.ndarray]], interval_ns: int,
               notes: list[str]) -> np.ndarray:
    start = min(int(ts[0]) for ts, _ in merged.values())
    end = max(int(ts[-1]) for ts, _ in merged.values())
    n_bars = (end - start) // interval_ns + 1
    starts = {int(ts[0]) for ts, _ in merged.values()}
    if len(starts) > 1:
        notes.append(f"symbols start at {len(starts)} different times; each is absent until "
                     "its first candle")
    return start + interval_ns * np.arange(n_bars, dtype=np.int64)


def _carry_forward(col: np.ndarray, first: int, last: int, limit: int) -> None:
    """Fill NaN gaps inside [first, last] with the previous price, at most ``limit`` bars."""
    if limit <= 0:
        return
    seg = col[first:last + 1]
    idx = np.where(np.isnan(seg), 0, np.arange(seg.size))
    np.maximum.accumulate(idx, out=idx)
    age = np.arange(seg.size) - idx
    fill = np.isnan(seg) & (age <= limit)
    seg[fill] = seg[idx[fill]]


def iter_bars(history: History, start: int = 0, stop: int | None = None,
              first_seq: int = 0) -> Iterator[Bar]:
    """Bars ``start..stop`` of ``history`` as events (all sharing one ``symbols`` tuple)."""
    stop = len(history) if stop is None else min(stop, len(history))
    symbols = history.symbols
    for k, t in enumerate(range(start, stop)):
        yield Bar(int(history.ts_ns[t]), symbols, frozen_array(history.closes[t]),
                  history.interval_s, first_seq + k)
