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
    # The candle interval, from the file name's timeframe or the raw timestamps (0: unknown).
    step_ns: int


# Candle times outside this range are bad clocks or mis-scaled epochs, not market data.
_EARLIEST_NS = 1_230_768_000 * 10**9  # 2009-01-01
_LATEST_NS = 4_102_444_800 * 10**9  # 2100-01-01
_TF_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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


def _name_step_ns(p: Path) -> int:
    """The timeframe in a freqtrade file name (``-1m-`` -> 60 s), else 0."""
    m = _FREQTRADE.match(_stem(p))
    if not m or m["tf"][-1] not in _TF_UNITS_S:
        return 0
    return int(m["tf"][:-1]) * _TF_UNITS_S[m["tf"][-1]] * 10**9


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


def _time_ns(table: pa.Table, p: Path) -> tuple[np.ndarray, np.ndarray]:
    """(epoch ns, valid mask): rows with a missing or implausible time are not valid."""
    col_name = next((c for c in _TIME_COLUMNS if c in table.column_names), None)
    if col_name is None:
        raise HistoryError(f"{p}: no time column (expected one of {', '.join(_TIME_COLUMNS)})")
    col = table.column(col_name)
    if pa.types.is_timestamp(col.type):
        ts = pc.cast(col, pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64())
    elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
        if pa.types.is_integer(col.type):
            raw = pc.fill_null(pc.cast(col, pa.int64()), 0).to_numpy(zero_copy_only=False)
            finite = valid
        else:
            raw = pc.fill_null(col, 0.0).to_numpy(zero_copy_only=False)
            finite = valid & np.isfinite(raw)
            raw = np.where(finite, raw, 0.0)
        mag = float(np.max(np.abs(raw[finite]))) if finite.any() else 0.0
        # Epoch unit from magnitude: seconds ~1e9, ms ~1e12, us ~1e15, ns ~1e18 (years 2001+).
        scale = 10**9 if mag < 1e11 else 10**6 if mag < 1e14 else 10**3 if mag < 1e17 else 1
        if pa.types.is_integer(col.type):
            out = np.where(finite, raw, 0).astype(np.int64) * scale  # exact integer math
        else:
            out = np.round(raw * scale).astype(np.int64)
        return out, finite & (out >= _EARLIEST_NS) & (out < _LATEST_NS)
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            ts = pc.cast(col, pa.timestamp("ns")).cast(pa.int64())
        except pa.ArrowInvalid as exc:
            raise HistoryError(f"{p}: column {col_name!r} is not a time ({exc})") from None
    else:
        raise HistoryError(f"{p}: column {col_name!r} has type {col.type}, not a time")
    valid = pc.is_valid(ts).to_numpy(zero_copy_only=False)
    out = pc.fill_null(ts, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return out, valid & (out >= _EARLIEST_NS) & (out < _LATEST_NS)


def _float_column(table: pa.Table, names: Sequence[str], p: Path) -> np.ndarray:
    name = next((n for n in names if n in table.column_names), None)
    if name is None:
        raise HistoryError(f"{p}: no {names[0]!r} column (columns: {', '.join(table.column_names)})")
    try:
        return pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise HistoryError(f"{p}: column {name!r} is not numeric ({exc})") from None


def _sorted_unique(ts: np.ndarray, values: np.ndarray, label: str, notes: list[str],
                   note_order: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Sort by time and drop duplicate timestamps (keeping the last row of each); say so."""
    if ts.size and np.any(np.diff(ts) < 0):
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
        if note_order:
            notes.append(f"{label}: rows were not in time order; sorted")
    if ts.size > 1:
        keep = np.ones(ts.size, dtype=bool)
        keep[:-1] = ts[1:] != ts[:-1]
        dups = int(ts.size - keep.sum())
        if dups:
            ts, values = ts[keep], values[keep]
            notes.append(f"{label}: {dups} duplicated timestamps; kept the last row of each")
    return ts, values


def _drop_bad(ts: np.ndarray, values: np.ndarray, label: str, notes: list[str],
              positive: bool) -> tuple[np.ndarray, np.ndarray]:
    bad = ~np.isfinite(values)
    if positive:
        bad |= values <= 0
    if bad.any():
        notes.append(f"{label}: {int(bad.sum())} rows with a missing or non-positive value dropped")
        ts, values = ts[~bad], values[~bad]
    return ts, values


def _valid_times(table: pa.Table, p: Path, label: str,
                 notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ts, valid = _time_ns(table, p)
    if not valid.all():
        notes.append(f"{label}: {int((~valid).sum())} rows with a missing or implausible time "
                     "(before 2009 or after 2100) dropped")
    return ts, valid


def _read_candles(p: Path, symbol: str | None, notes: list[str]) -> list[_Candles]:
    table = read_table(p)
    if table.num_rows == 0:
        notes.append(f"{symbol or p.name}: no usable rows; left out")
        return []
    ts, valid = _valid_times(table, p, p.name, notes)
    close = _float_column(table, ("close", "Close", "c"), p)
    name_step = _name_step_ns(p)
    if "symbol" in table.column_names:
        syms = np.asarray(table.column("symbol").to_pylist(), dtype=object)
        groups = [(str(s), syms == s) for s in sorted(set(syms[valid]))]
    elif symbol is None:
        raise HistoryError(f"{p}: cannot tell the symbol (no 'symbol' column, and the file "
                           "name is not like BTCUSDT.csv or BTC_USDT_USDT-1m-futures.feather)")
    else:
        groups = [(symbol, np.ones(ts.size, dtype=bool))]
    out = []
    for raw_sym, mask in groups:
        sym = raw_sym.replace("/", "").split(":")[0].upper()
        label = f"{p.name}[{raw_sym}]" if "symbol" in table.column_names else p.name
        t, c = _sorted_unique(ts[mask & valid], close[mask & valid], label, notes)
        # The interval comes from the timestamps before bad prices are dropped: a file with
        # many bad closes must not turn 1m candles into a 2m grid.
        step = name_step or _modal_step(t)
        t, c = _drop_bad(t, c, label, notes, positive=True)
        out.append(_Candles(sym, str(p), t, c, step))
    return out


def _read_funding(p: Path, symbol: str, notes: list[str]) -> FundingSeries:
    table = read_table(p)
    if table.num_rows == 0:
        return FundingSeries(np.zeros(0, dtype=np.int64), np.zeros(0))
    ts, valid = _valid_times(table, p, p.name, notes)
    # freqtrade stores the rate in `open`; other layouts name it.
    rate = _float_column(table, ("funding_rate", "fundingRate", "rate", "open"), p)
    ts, rate = _sorted_unique(ts[valid], rate[valid], p.name, notes)
    ts, rate = _drop_bad(ts, rate, p.name, notes, positive=False)
    return FundingSeries(ts, rate)


def load_history(paths: Iterable[str | Path], max_stale_bars: int = 12) -> History:
    """Load and align every candle file under ``paths``.

    A symbol's gap is filled with its last price for at most ``max_stale_bars`` of its own
    candle intervals; longer gaps, and the time before its first or after its last candle, are
    NaN (absent). Everything repaired or left out is described in ``History.notes``.
    """
    files = discover(paths)
    if not files:
        raise HistoryError("no data files found (looked for " + ", ".join(_EXTENSIONS) + ")")
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

    merged: dict[str, _Candles] = {}
    for symbol, parts in sorted(candles.items()):
        parts = _finest(symbol, parts, notes)
        if len(parts) > 1:
            notes.append(f"{symbol}: {len(parts)} files merged")
            ts, close = _sorted_unique(np.concatenate([c.ts_ns for c in parts]),
                                       np.concatenate([c.close for c in parts]),
                                       symbol, notes, note_order=False)
            parts = [_Candles(symbol, parts[0].source, ts, close, parts[0].step_ns)]
        if parts[0].ts_ns.size == 0:
            notes.append(f"{symbol}: no usable rows; left out")
            continue
        merged[symbol] = parts[0]
    if not merged:
        raise HistoryError("no usable candles in " + ", ".join(str(f) for f in files[:5]))

    interval_ns = _common_interval(merged, notes)
    axis = _time_axis(merged, interval_ns, notes)
    symbols = tuple(sorted(merged))
    closes = np.full((axis.size, len(symbols)), np.nan)
    for i, s in enumerate(symbols):
        c = merged[s]
        # Place every row in the bar that contains it (the grid is aligned to the interval).
        slot = ((c.ts_ns - axis[0]) // interval_ns).astype(np.int64)
        off_grid = int(np.count_nonzero((c.ts_ns - axis[0]) % interval_ns))
        if off_grid:
            notes.append(f"{s}: {off_grid} rows not on the {interval_ns / 1e9:g}s grid; "
                         "aligned to the bar that contains them")
        closes[slot, i] = c.close  # later rows in a slot win (data is time-sorted)
        own = max(1, (c.step_ns or interval_ns) // interval_ns)
        gaps = _carry_forward(closes[:, i], int(slot[0]), int(slot[-1]), max_stale_bars * own,
                              own)
        if gaps.count:
            notes.append(f"{s}: {gaps.count} gaps (longest {gaps.longest} bars); {gaps.carried} "
                         f"bars carried forward, {gaps.absent} left absent")
    _note_coverage(axis, symbols, closes, interval_ns, notes)
    return History(axis, symbols, closes, interval_ns / 1e9, funding, tuple(notes))


def _modal_step(ts: np.ndarray) -> int:
    """The most common positive step between rows (robust to a few holes), or 0."""
    d = np.diff(ts)
    d = d[d > 0]
    if not d.size:
        return 0
    values, counts = np.unique(d, return_counts=True)
    return int(values[np.argmax(counts)])


def _finest(symbol: str, parts: list[_Candles], notes: list[str]) -> list[_Candles]:
    """Of several candle files for one symbol, keep those with the finest interval: 1h and
    5m candles of the same market are two views of it, not two halves to interleave."""
    if len(parts) < 2:
        return parts
    finest = min((c.step_ns for c in parts if c.step_ns > 0), default=0)
    kept = [c for c in parts if c.step_ns in (finest, 0)]
    dropped = [Path(c.source).name for c in parts if c.step_ns not in (finest, 0)]
    if dropped:
        notes.append(f"{symbol}: coarser candle files not used ({', '.join(dropped)}); "
                     f"using the {finest / 1e9:g}s candles")
    return kept


def _common_interval(merged: dict[str, _Candles], notes: list[str]) -> int:
    steps = sorted({c.step_ns for c in merged.values() if c.step_ns > 0})
    if not steps:
        raise HistoryError("cannot tell the bar interval: every symbol has fewer than 2 rows")
    if len(steps) > 1:
        notes.append(f"symbols have different intervals ({', '.join(f'{s / 1e9:g}s' for s in steps)}); "
                     f"bars are {steps[0] / 1e9:g}s and coarser symbols are carried forward "
                     "between their candles")
    return steps[0]


def _time_axis(merged: dict[str, _Candles], interval_ns: int, notes: list[str]) -> np.ndarray:
    # Anchor the grid on whole intervals (UTC), so one symbol that is off the grid cannot
    # shift every other symbol's bars.
    start = min(int(c.ts_ns[0]) for c in merged.values())
    start -= start % interval_ns
    end = max(int(c.ts_ns[-1]) for c in merged.values())
    n_bars = (end - start) // interval_ns + 1
    longest = max(c.ts_ns.size for c in merged.values())
    if n_bars > 10 * longest + 1000:
        worst = max(merged.values(), key=lambda c: (int(c.ts_ns[-1]) - int(c.ts_ns[0])) / c.ts_ns.size)
        raise HistoryError(
            f"the data spans {n_bars} bars of {interval_ns / 1e9:g}s but the longest symbol has "
            f"{longest} rows: a bad timestamp? ({worst.symbol}: {worst.ts_ns.size} rows from "
            f"{iso(int(worst.ts_ns[0]))} to {iso(int(worst.ts_ns[-1]))})")
    starts = {int(c.ts_ns[0]) for c in merged.values()}
    if len(starts) > 1:
        notes.append(f"symbols start at {len(starts)} different times; each is absent until "
                     "its first candle")
    ends = {int(c.ts_ns[-1]) for c in merged.values()}
    if len(ends) > 1:
        notes.append(f"symbols end at {len(ends)} different times; each is absent after its "
                     "last candle")
    return start + interval_ns * np.arange(n_bars, dtype=np.int64)


def _note_coverage(axis: np.ndarray, symbols: tuple[str, ...], closes: np.ndarray,
                   interval_ns: int, notes: list[str]) -> None:
    present = (~np.isnan(closes)).sum(axis=1)
    empty = int((present == 0).sum())
    if empty:
        notes.append(f"{empty} bars have no price for any symbol")
    full = np.flatnonzero(present == len(symbols))
    if len(symbols) > 1 and full.size < axis.size:
        if full.size:
            notes.append(f"every symbol has a price from {iso(int(axis[full[0]]))} to "
                         f"{iso(int(axis[full[-1]]))} ({full.size} of {axis.size} bars)")
        else:
            notes.append("no bar has a price for every symbol")


def common_span(history: History) -> tuple[int, int]:
    """[start, stop) bar indices from the first to the last bar where every symbol has a
    price; (0, 0) when there is none."""
    full = np.flatnonzero((~np.isnan(history.closes)).all(axis=1))
    return (int(full[0]), int(full[-1]) + 1) if full.size else (0, 0)


def iso(ts_ns: int) -> str:
    return np.datetime_as_string(np.datetime64(ts_ns, "ns"), unit="s") + "Z"


@dataclass(frozen=True, slots=True)
class _Gaps:
    count: int
    longest: int
    carried: int
    absent: int


def _carry_forward(col: np.ndarray, first: int, last: int, limit: int, own: int) -> _Gaps:
    """Fill NaN gaps inside [first, last] with the previous price, at most ``limit`` bars.

    ``own`` is the symbol's candle interval in bars: the empty bars between two consecutive
    candles of a coarser symbol are its normal cadence, not gaps.
    """
    seg = col[first:last + 1]
    missing = np.isnan(seg)
    if not missing.any():
        return _Gaps(0, 0, 0, 0)
    idx = np.where(missing, 0, np.arange(seg.size))
    np.maximum.accumulate(idx, out=idx)
    age = np.arange(seg.size) - idx
    fill = missing & (age <= limit)
    carried = int(fill.sum())
    absent = int(missing.sum()) - carried
    # Runs of missing bars; a run shorter than the symbol's own interval is its cadence.
    edges = np.diff(np.concatenate(([0], missing.astype(np.int8), [0])))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    real = runs[runs >= own]
    seg[fill] = seg[idx[fill]]
    if limit <= 0:
        seg[fill] = np.nan
        carried, absent = 0, int(missing.sum())
    return _Gaps(int(real.size), int(real.max()) if real.size else 0,
                 carried if real.size else 0, absent if real.size else 0)


def iter_bars(history: History, start: int = 0, stop: int | None = None,
              first_seq: int = 0) -> Iterator[Bar]:
    """Bars ``start..stop`` of ``history`` as events (all sharing one ``symbols`` tuple)."""
    stop = len(history) if stop is None else min(stop, len(history))
    symbols = history.symbols
    for k, t in enumerate(range(start, stop)):
        yield Bar(int(history.ts_ns[t]), symbols, frozen_array(history.closes[t]),
                  history.interval_s, first_seq + k)
