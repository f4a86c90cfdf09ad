"""The backtest's progress display on stderr: tqdm's bar (percent, bars done, bars/s, ETA).

It draws only when stderr is a terminal, so logs, pipes, CI and supervisord never see
carriage-return noise; stdout is never touched (it carries the report's tables and the JSON
logs). ``update`` is meant to be called often: when disabled it returns at once, and tqdm
itself redraws at most every ``min_interval_s``. ``close`` draws the final state, so a run that
replayed every bar ends on 100 %.

tqdm is imported only when a bar is drawn: nothing off a terminal depends on it.
"""

from __future__ import annotations

import shutil
import sys
from types import TracebackType
from typing import Any, TextIO


class ProgressBar:
    """``with ProgressBar(total=n_bars) as bar: ... bar.update(i + 1)``.

    ``enabled=None`` (the default) means "only if ``stream`` is a terminal".
    """

    def __init__(self, total: int | None, *, unit: str = "bars", stream: TextIO | None = None,
                 enabled: bool | None = None, min_interval_s: float = 0.2) -> None:
        self.total = total
        self.unit = unit
        self._stream = sys.stderr if stream is None else stream
        self.enabled = _is_tty(self._stream) if enabled is None else enabled
        self._done = 0
        self._closed = False
        self._bar: Any = None
        if self.enabled:
            from tqdm import tqdm

            # A terminal that reports no size (a bare pty: 0 x 0) would get no bar at all:
            # tqdm hides bars below the screen's last row.
            columns, rows = shutil.get_terminal_size(fallback=(100, 24))
            self._bar = tqdm(total=total or None, unit=f" {unit}", unit_scale=True,
                             file=self._stream, mininterval=min_interval_s,
                             ncols=columns if columns >= 40 else 100,
                             nrows=rows if rows >= 2 else 24, leave=True, desc="backtest")

    @property
    def done(self) -> int:
        return self._done

    def update(self, done: int) -> None:
        """Set the number of units done (absolute, not an increment)."""
        if done == self._done:
            return
        step, self._done = done - self._done, done
        if self._bar is not None:
            self._bar.update(step)

    def advance(self, n: int = 1) -> None:
        self.update(self._done + n)

    def close(self) -> None:
        """Draw the final state and end the line (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.refresh()
            self._bar.close()

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
