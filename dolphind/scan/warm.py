"""The scan's windows across restarts: a compact checkpoint, gap fills, and the warm-up report.

The scan needs the universe's last ``max(WINDOWS) + 1`` (751) closes to be warm. Those are
kept in a ring (``RecentBars``) and written to ``data.dir/scans/windows.npz`` at most every
``warm_start.checkpoint_every_s`` and at a clean stop (atomically: a crash mid-write leaves
the previous file). At start, ``WarmStart`` puts them back into the scanner (and the alpha
engine's own history) before the first new bar, filling the bars between the checkpoint and
that bar from Binance REST or by carrying the last prices forward; every filled bar is
counted by source. A gap longer than ``max_gap_s``, or a checkpoint that does not fit the
data (another bar length, a time after the first new bar) leaves the scan cold, and
``status()`` says why.
"""

from __future__ import annotations

import collections
import math
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import structlog

from dolphind.events import Bar, ScanRecord, frozen_array

log = structlog.get_logger("dolphind.scan.warm")

CHECKPOINT_FILE = "windows.npz"
_FORMAT = 1


class CheckpointError(Exception):
    """A checkpoint file that cannot be used (the message says why)."""


@dataclass(frozen=True, slots=True)
class WindowHistory:
    """Closes of the last bars on one universe: ``closes[t, i]`` for ``symbols[i]``."""

    ts_ns: np.ndarray
    symbols: tuple[str, ...]
    closes: np.ndarray
    interval_ns: int

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    @property
    def last_ts_ns(self) -> int:
        return int(self.ts_ns[-1])


class RecentBars:
    """The last ``capacity`` bars as given (references to the bars' frozen arrays: no copy)."""

    def __init__(self, capacity: int) -> None:
        self._bars: collections.deque[tuple[int, tuple[str, ...], np.ndarray, float]] = (
            collections.deque(maxlen=capacity))

    def __len__(self) -> int:
        return len(self._bars)

    def append(self, ts_ns: int, symbols: tuple[str, ...], closes: np.ndarray,
               interval_s: float) -> None:
        self._bars.append((ts_ns, symbols, closes, interval_s))

    def take(self) -> list[tuple[int, tuple[str, ...], np.ndarray, float]]:
        """A snapshot to build the checkpoint from off the loop (the list is the caller's)."""
        return list(self._bars)


def history_of(bars: list[tuple[int, tuple[str, ...], np.ndarray, float]]) -> WindowHistory:
    """Align a snapshot on the newest bar's universe (a symbol that was not there is NaN)."""
    symbols = bars[-1][1]
    closes = np.full((len(bars), len(symbols)), np.nan)
    for t, (_, syms, c, _) in enumerate(bars):
        if syms is symbols or syms == symbols:
            closes[t] = c
        else:
            pos = {s: i for i, s in enumerate(syms)}
            for j, s in enumerate(symbols):
                if s in pos:
                    closes[t, j] = c[pos[s]]
    ts = np.array([b[0] for b in bars], np.int64)
    return WindowHistory(ts, symbols, closes, int(round(bars[-1][3] * 1e9)))


def save_checkpoint(path: Path, hist: WindowHistory) -> None:
    """Write atomically: the new file replaces the old one whole, or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, format=np.int64(_FORMAT), ts_ns=hist.ts_ns,
                 symbols=np.array(hist.symbols, dtype=str), closes=hist.closes,
                 interval_ns=np.int64(hist.interval_ns))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> WindowHistory | None:
    """The checkpoint at ``path``; None when there is none; CheckpointError when unusable."""
    if not path.exists():
        return None
    try:
        # np.load given a path leaks the file when the zip is broken: hand it an open file.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            fmt = int(z["format"])
            if fmt != _FORMAT:
                raise CheckpointError(f"{path}: format {fmt}, expected {_FORMAT}")
            ts = np.asarray(z["ts_ns"], np.int64)
            symbols = tuple(str(s) for s in z["symbols"].tolist())
            closes = np.asarray(z["closes"], np.float64)
            interval = int(z["interval_ns"])
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if (ts.ndim != 1 or closes.shape != (ts.size, len(symbols)) or ts.size == 0
            or interval <= 0 or np.any(np.diff(ts) <= 0)):
        raise CheckpointError(f"{path}: inconsistent arrays (ts {ts.shape}, closes "
                              f"{closes.shape}, {len(symbols)} symbols)")
    return WindowHistory(ts, symbols, closes, interval)


def last_scan_ts(scan_dir: Path) -> int | None:
    """Market time of the newest scan record in the Arrow files (they are flushed every
    second, so after a crash this can be newer than the windows' checkpoint)."""
    from dolphind.scan.arrow_sink import read_scans  # pyarrow: only when there are files

    for f in sorted(scan_dir.glob("scans-*.arrow"), reverse=True):  # day files, newest first
        table = read_scans([f])
        if table.num_rows:
            return int(max(table.column("timestamp_ns").to_pylist()))
    return None


# A function that fetches the closes of ``n`` bars from ``start_ns`` (one row per bar, one
# column per symbol, the previous closes given for carrying): returns (closes, fetched
# symbol-bars, carried symbol-bars, problems).
GapFiller = Callable[[tuple[str, ...], int, int, int, np.ndarray],
                     Any]  # awaitable of tuple[np.ndarray, int, int, list[str]]


class WarmStart:
    """Restores the windows before the first new bar; reports the warm-up on /status.

    ``prime`` takes one bar of history into the scanner (and the alpha engine) and returns
    its record; ``fill`` (optional) fetches missing bars (live: REST aggTrades).
    """

    def __init__(self, checkpoint: WindowHistory | None, checkpoint_problem: str | None,
                 max_gap_s: float, backfill_bars: int, fill: GapFiller | None,
                 prime: Callable[[int, tuple[str, ...], np.ndarray, float], ScanRecord],
                 count: Callable[[str, int], None], fill_source: str = "rest") -> None:
        self._ck = checkpoint
        self._fill_source = fill_source
        self._max_gap_s = max_gap_s
        self._backfill_bars = backfill_bars
        self._fill = fill
        self._prime = prime
        self._count = count
        self.state = "waiting for the first bar"
        # The last prices of the restored history, for the seam (see SeamCarry); None: cold.
        self.seam_from: np.ndarray | None = None
        self._filled_last = np.zeros(0)
        self.reason: str | None = checkpoint_problem
        self.detail: dict[str, Any] = {}
        self.progress: Callable[[], dict[str, Any] | None] = lambda: None

    async def restore(self, first: Bar) -> None:
        t0 = time.monotonic()
        ck = self._ck
        interval_ns = int(round(first.interval_s * 1e9))
        if ck is None:
            if self._backfill_bars > 0 and self._fill is not None:
                self.state = "backfilling"
                n = self._backfill_bars
                start = first.ts_ns - n * interval_ns
                prev = np.full(len(first.symbols), np.nan)
                await self._gap(first.symbols, start, n, interval_ns, prev, "backfill")
                self.state = "warm"
                self.seam_from = self._filled_last
                self.detail["source"] = "backfill"
            else:
                self.state = "cold"
                self.reason = self.reason or "no checkpoint (first start)"
            self._done(t0)
            return
        gap_bars, rem = divmod(first.ts_ns - ck.last_ts_ns, interval_ns)
        gap_s = (first.ts_ns - ck.last_ts_ns) / 1e9
        self.detail.update(checkpoint_bars=len(ck), checkpoint_last_ts_ns=ck.last_ts_ns,
                           gap_s=round(gap_s, 3), gap_bars=max(0, int(gap_bars) - 1))
        if ck.interval_ns != interval_ns or rem != 0:
            self.state, self.reason = "cold", (
                f"checkpoint bars are {ck.interval_ns / 1e9:g}s on another grid; the feed's "
                f"are {interval_ns / 1e9:g}s")
        elif gap_bars < 1:
            self.state, self.reason = "cold", (
                "the checkpoint is newer than the first bar (market time would run backwards)")
        elif gap_s > self._max_gap_s:
            self.state, self.reason = "cold", (
                f"gap of {gap_s:.0f}s since the checkpoint is over warm_start.max_gap_s "
                f"({self._max_gap_s:g}s)")
        if self.state == "cold":
            log.warning("warm_start.cold", reason=self.reason)
            self._done(t0)
            return
        self.state = "restoring"
        for t in range(len(ck)):
            self._prime(int(ck.ts_ns[t]), ck.symbols, frozen_array(ck.closes[t]), first.interval_s)
        self._count("checkpoint", len(ck))
        missing = int(gap_bars) - 1
        if missing > 0:
            self.state = "filling the gap"
            last = _last_closes(ck, first.symbols)
            await self._gap(first.symbols, ck.last_ts_ns + interval_ns, missing, interval_ns,
                            last, "gap")
        self.state = "warm"
        self.detail["source"] = "checkpoint"
        self.seam_from = _last_closes(ck, first.symbols) if missing <= 0 else self._filled_last
        self._done(t0)

    async def _gap(self, symbols: tuple[str, ...], start_ns: int, n: int, interval_ns: int,
                   prev: np.ndarray, what: str) -> None:
        if self._fill is not None:
            closes, fetched, carried, problems = await self._fill(symbols, start_ns, n,
                                                                  interval_ns, prev)
        else:
            closes = np.tile(prev, (n, 1))
            fetched, carried, problems = 0, n * len(symbols), []
        for t in range(n):
            self._prime(start_ns + t * interval_ns, symbols, frozen_array(closes[t]),
                        interval_ns / 1e9)
        self._filled_last = np.asarray(closes[-1], np.float64) if n else prev
        self._count(self._fill_source, fetched)
        self._count("carried", carried)
        self.detail.update({f"{what}_bars": n, f"{what}_symbol_bars_fetched": fetched,
                            f"{what}_symbol_bars_carried": carried})
        if problems:
            self.detail[f"{what}_problems"] = problems[:10]
        log.info("warm_start.filled", what=what, bars=n, symbol_bars_fetched=fetched,
                 symbol_bars_carried=carried, problems=len(problems))

    def _done(self, t0: float) -> None:
        self.detail["seconds"] = round(time.monotonic() - t0, 3)
        log.info("warm_start.done", state=self.state, reason=self.reason, **self.detail)

    def fail(self, reason: str) -> None:
        """The restore broke half-way: the scan starts cold (its state is discarded)."""
        self.state, self.reason, self.seam_from = "cold", reason, None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "reason": self.reason, **self.detail}
        prog = self.progress()
        if prog is not None:
            out["progress"] = prog
        return out


def _last_closes(ck: WindowHistory, symbols: tuple[str, ...]) -> np.ndarray:
    """Each symbol's last finite close in the checkpoint (NaN if none), in ``symbols`` order."""
    pos = {s: i for i, s in enumerate(ck.symbols)}
    out = np.full(len(symbols), np.nan)
    for j, s in enumerate(symbols):
        i = pos.get(s)
        if i is None:
            continue
        col = ck.closes[:, i]
        ok = np.flatnonzero(np.isfinite(col))
        if ok.size:
            out[j] = col[ok[-1]]
    return out


class SeamCarry:
    """The seam after a restore: the live feed knows no price from before the restart, so a
    symbol is absent (NaN) in its bars until its first new trade, and an absence would empty
    every window it was in. Until then its last restored price stands in, as the feed itself
    carries a quiet symbol: for at most ``max_stale`` bars. Every stand-in is counted."""

    def __init__(self, symbols: tuple[str, ...], last: np.ndarray, max_stale: int) -> None:
        self._last = dict(zip(symbols, last.tolist(), strict=True))
        self._max_stale = max_stale
        self._bars = 0
        self.active = any(math.isfinite(v) for v in self._last.values())
        self.carried = 0

    def apply(self, symbols: tuple[str, ...], closes: np.ndarray) -> np.ndarray:
        """``closes`` with stand-ins for absent symbols (the same array when none is needed)."""
        self._bars += 1
        if self._bars > self._max_stale:
            self.active = False
            return closes
        missing = np.flatnonzero(~np.isfinite(closes))
        out = closes
        for i in missing.tolist():
            px = self._last.get(symbols[i], math.nan)
            if math.isfinite(px):
                if out is closes:
                    out = closes.copy()
                out[i] = px
                self.carried += 1
        for i in np.flatnonzero(np.isfinite(closes)).tolist():
            self._last.pop(symbols[i], None)  # has its own price now: no stand-in again
        if not any(math.isfinite(v) for v in self._last.values()):
            self.active = False
        return out if out is closes else frozen_array(out)


# ---- the warm-up report -------------------------------------------------------------------


class WarmupTracker:
    """Whether the strategy can trade and, while warming, how far along each window is and
    when the first entry becomes possible (wall-clock estimate from the observed bar pace)."""

    def __init__(self, windows: tuple[int, ...], pace_bars: int = 20,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=pace_bars)
        self._mono = monotonic
        self.can_trade = False
        self.bars_seen = 0
        self.windows: list[tuple[int, int]] = [(0, w) for w in windows]
        self.became_tradable_at: float | None = None

    def tick(self) -> None:
        self._times.append(self._mono())
        self.bars_seen += 1

    def observe(self, progress: list[tuple[int, int]], all_warm: bool) -> None:
        self._times.append(self._mono())
        self.bars_seen += 1
        self.windows = progress
        if all_warm and not self.can_trade:
            self.became_tradable_at = self._mono()
        self.can_trade = all_warm

    def bars_to_go(self) -> int:
        """Bars until the slowest window is warm, plus one for its first velocity."""
        if self.can_trade:
            return 0
        # Before the first bar there is not even a price: one bar more than the returns.
        first = 1 if self.bars_seen == 0 else 0
        return max(need - have for have, need in self.windows) + 1 + first

    def seconds_per_bar(self) -> float:
        if len(self._times) < 2:
            return math.nan
        return (self._times[-1] - self._times[0]) / (len(self._times) - 1)

    def eta_s(self) -> float:
        if self.can_trade:
            return 0.0
        return self.bars_to_go() * self.seconds_per_bar()

    def status(self) -> dict[str, Any]:
        eta = self.eta_s()
        return {
            "can_trade": self.can_trade,
            "reason": None if self.can_trade else
            "scan windows still warming" if self.bars_seen else "no bar yet",
            "windows": [{"window": need, "returns": have, "needed": need,
                         "warm": have >= need} for have, need in self.windows],
            "bars_to_first_entry": self.bars_to_go(),
            "first_entry_eta_s": None if math.isnan(eta) else round(eta, 1),
        }
