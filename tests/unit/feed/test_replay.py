"""The replay feed's market time (issues 15, 18): resume after a restart, loops that never go
back in time and flatten first, and the pre-roll at full speed until the scan is warm."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from dolphind.channels import Channel, Overflow
from dolphind.config import config_from_dict
from dolphind.events import Bar
from dolphind.feed.history import History
from dolphind.feed.replay import ReplayFeed
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics

MIN = 60 * 10**9
T0 = 1_746_835_200 * 10**9


def history(n: int = 10) -> History:
    ts = T0 + MIN * np.arange(n, dtype=np.int64)
    closes = 100.0 + np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return History(ts, ("AAAUSDT", "BBBUSDT"), closes, 60.0)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def feed(metrics: Metrics, out: Channel[Bar], speed: float = 0.0, loop: bool = False,
         preroll: bool = False, **kw: Any) -> ReplayFeed:
    cfg = config_from_dict({"replay": {"speed": speed, "loop": loop, "preroll": preroll}})
    health = Health(metrics, lambda: 5.0)
    health.register("feed")
    return ReplayFeed(history(), out, lambda: cfg, health, metrics, **kw)


async def take(out: Channel[Bar], n: int) -> list[Bar]:
    return [await asyncio.wait_for(out.get(), 5) for _ in range(n)]


async def test_a_restart_continues_after_the_checkpointed_bar(metrics: Metrics) -> None:
    out: Channel[Bar] = Channel("bars", 100, Overflow.BLOCK)
    f = feed(metrics, out, resume_after_ns=T0 + 4 * MIN)
    task = asyncio.create_task(f.run())
    bars = await take(out, 5)
    await task
    assert [b.ts_ns for b in bars] == [T0 + k * MIN for k in range(5, 10)]
    assert f.resumed == {"after_ts_ns": T0 + 4 * MIN, "position": 5, "loops": 0}


async def test_a_checkpoint_older_than_the_data_starts_from_the_beginning(
        metrics: Metrics) -> None:
    out: Channel[Bar] = Channel("bars", 100, Overflow.BLOCK)
    f = feed(metrics, out, resume_after_ns=T0 - 10 * MIN)
    assert f.position == 0 and f.resumed is None


async def test_a_loop_flattens_first_and_market_time_keeps_going_forward(
        metrics: Metrics) -> None:
    out: Channel[Bar] = Channel("bars", 100, Overflow.BLOCK)
    flattened: list[int] = []

    async def flatten() -> int:
        flattened.append(len(flattened))
        return 1

    f = feed(metrics, out, loop=True, flatten=flatten)
    task = asyncio.create_task(f.run())
    bars = await take(out, 25)
    task.cancel()
    ts = [b.ts_ns for b in bars]
    assert all(b > a for a, b in zip(ts, ts[1:])), "market time ran backwards"
    assert ts[10] == T0 + 10 * MIN  # pass 1 follows pass 0 by one bar, prices start over
    assert bars[10].closes.tolist() == bars[0].closes.tolist()
    assert len(flattened) == f.loops >= 2  # once per start-over, before its first bar
    # a restart inside pass 1 continues in pass 1, not back in pass 0
    out2: Channel[Bar] = Channel("bars", 100, Overflow.BLOCK)
    g = feed(metrics, out2, loop=True, resume_after_ns=ts[13])
    task = asyncio.create_task(g.run())
    nxt = await take(out2, 2)
    task.cancel()
    assert [b.ts_ns for b in nxt] == [ts[14], ts[15]] and g.resumed is not None
    assert g.resumed["loops"] == 1


async def test_preroll_runs_at_full_speed_until_the_scan_is_warm(metrics: Metrics) -> None:
    out: Channel[Bar] = Channel("bars", 100, Overflow.BLOCK)
    asked: list[int] = []

    async def still_cold(emitted: int) -> bool:
        asked.append(emitted)
        return emitted < 4

    # 1e-9 x market time: a paced bar would wait about 2000 years.
    f = feed(metrics, out, speed=1e-9, preroll=True, still_cold=still_cold)
    task = asyncio.create_task(f.run())
    # four pre-rolled bars, then the paced play starts with a bar due at once ...
    bars = await take(out, 5)
    await asyncio.sleep(0.2)
    assert len(out) == 0, "after the pre-roll the bars are paced again"
    task.cancel()
    # bar 0 is due at once anyway; 1..3 pre-rolled; asked at 4, then never again
    assert [b.seq for b in bars] == [0, 1, 2, 3, 4] and f.prerolled == 3
    assert asked == [1, 2, 3, 4]


async def test_without_preroll_the_pace_holds_from_the_first_bar(metrics: Metrics) -> None:
    out: Channel[Bar] = Channel("bars", 100, Overflow.BLOCK)

    async def still_cold(emitted: int) -> bool:
        return True

    f = feed(metrics, out, speed=1e-9, preroll=False, still_cold=still_cold)
    task = asyncio.create_task(f.run())
    await take(out, 1)  # the first bar is due at once
    await asyncio.sleep(0.2)
    task.cancel()
    assert len(out) == 0 and f.prerolled == 0


async def test_the_gap_of_a_resumed_replay_comes_from_its_data(metrics: Metrics) -> None:
    out: Channel[Bar] = Channel("bars", 100, Overflow.BLOCK)
    f = feed(metrics, out, loop=True)
    h = f.history
    prev = np.array([1.0, 2.0])
    closes, found, carried, problems = f.closes_at(h.symbols, T0 + 3 * MIN, 4, MIN, prev)
    np.testing.assert_array_equal(closes, h.closes[3:7])
    assert (found, carried, problems) == (8, 0, [])
    # a later pass's (shifted) times map back onto the data
    closes, *_ = f.closes_at(h.symbols, T0 + 3 * MIN + f.period_ns, 2, MIN, prev)
    np.testing.assert_array_equal(closes, h.closes[3:5])
    # a symbol the data does not have keeps its previous close (carried, counted)
    closes, found, carried, _ = f.closes_at(("AAAUSDT", "ZZZUSDT"), T0, 2, MIN, prev)
    assert closes[:, 1].tolist() == [2.0, 2.0] and closes[:, 0].tolist() == [100.0, 102.0]
    assert (found, carried) == (2, 2)
