"""A terminal progress bar for long backtests: bars done, bars per second, ETA.

It writes to stderr only when stderr is a terminal, so logs, pipes, CI and supervisord never
see carriage-return noise; stdout is never touched (it carries the JSON logs). ``update`` is
meant to be called on every bar: when disabled it returns at once, and when enabled it reads
a monotonic clock and redraws at most every ``min_interval_s`` seconds.
"""

from __future__ import annotations

import shutil
import sys
import time
from types import TracebackType
from typing import Callable, TextIO


def _count(n: float) -> str:
    """12345 -> '12.3k', 2_500_000 -> '2.50M' (three significant figures from 1000 up)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            v = n / div
            return f"{v:.2f}{suffix}" if v < 10 else f"{v:.1f}{suffix}" if v < 100 \
                else f"{v:.0f}{suffix}"
    return f"{n:.0f}"


def _clock_text(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_line(done: int, total: int | None, elapsed_s: float, columns: int = 80,
                unit: str = "bars") -> str:
    """One progress line that fits in ``columns`` characters.

    With a total: ``[#####-----]  45.2%  12,345/27,360 bars  45.1k bars/s  ETA 0:00:12``;
    without one: ``12,345 bars  45.1k bars/s  0:00:03 elapsed``. The rate is the average
    since the start, which gives a steadier ETA than an instantaneous rate.
    """
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    rate_text = f"{_count(rate)} {unit}/s"
    if not total:
        return f"{done:,} {unit}  {rate_text}  {_clock_text(elapsed_s)} elapsed"[:columns]
    frac = min(max(done / total, 0.0), 1.0)
    eta = _clock_text((total - done) / rate) if rate > 0 and done < total else (
        "0:00:00" if done >= total else "--:--:--")
    # Fixed-width fields, so the bar keeps its length from one redraw to the next.
    text = (f"{100 * frac:5.1f}%  {done:>{len(f'{total:,}')},}/{total:,} {unit}  "
            f"{rate_text:>{len(unit) + 8}}  ETA {eta}")
    bar_width = columns - len(text) - 4  # "[", "]" and two spaces
    if bar_width < 10:
        return text[:columns]
    filled = int(frac * bar_width)
    return f"[{'#' * filled}{'-' * (bar_width - filled)}]  {text}"


class ProgressBar:
    """``with ProgressBar(total=n_bars) as bar: ... bar.update(i + 1)``.

    ``enabled=None`` (the default) means "only if ``stream`` is a terminal". ``clock`` is
    injectable so tests can drive the redraw limit; it defaults to ``time.monotonic`` because
    throughput is about real time, not the simulated clock of the backtest.
    """

    def __init__(self, total: int | None, *, unit: str = "bars", stream: TextIO | None = None,
                 enabled: bool | None = None, min_interval_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic, columns: int | None = None) -> None:
        self.total = total
        self.unit = unit
        self._stream = sys.stderr if stream is None else stream
        self.enabled = _is_tty(self._stream) if enabled is None else enabled
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._columns = columns or shutil.get_terminal_size(fallback=(80, 24)).columns - 1
        self._start = clock()
        self._next_draw = self._start  # draw on the first update
        self._done = 0
        self._last_len = 0
        self._closed = False

    @property
    def done(self) -> int:
        return self._done

    def update(self, done: int) -> None:
        """Set the number of units done; redraws when the rate limit allows."""
        self._done = done
        if not self.enabled:
            return
        now = self._clock()
        if now >= self._next_draw:
            self._next_draw = now + self._min_interval_s
            self._draw(now)

    def advance(self, n: int = 1) -> None:
        self.update(self._done + n)

    def close(self) -> None:
        """Draw the final state and end the line (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(self._clock())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        line = format_line(self._done, self.total, now - self._start, self._columns, self.unit)
        # Pad over the previous line's tail instead of an ANSI erase: works on dumb terminals.
        self._stream.write("\r" + line.ljust(self._last_len))
        self._stream.flush()
        self._last_len = len(line)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
