"""The backtest's progress display ends where the feed ended (it used to stop at the last
0.2 s tick, e.g. 95.4 %, when the pipeline finished between two ticks)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from dolphind import backtest


class _Bar:
    made: list["_Bar"] = []

    def __init__(self, total: int) -> None:
        self.total, self.done, self.closed = total, 0, False
        _Bar.made.append(self)

    def update(self, done: int) -> None:
        self.done = done

    def close(self) -> None:
        self.closed = True


async def test_the_bar_is_closed_at_the_final_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backtest, "ProgressBar", _Bar)
    feed = SimpleNamespace(pos=100)
    feed.status = lambda: {"bars_total": 1000, "position": feed.pos}
    daemon: Any = SimpleNamespace(pipeline=SimpleNamespace(feed=feed))
    task = asyncio.create_task(backtest._watch_progress(daemon))
    await asyncio.sleep(0.05)
    feed.pos = 1000  # the replay finishes between two polls...
    task.cancel()  # ...and the run ends before the next one
    with pytest.raises(asyncio.CancelledError):
        await task
    bar = _Bar.made[-1]
    assert bar.done == 1000 and bar.total == 1000 and bar.closed
