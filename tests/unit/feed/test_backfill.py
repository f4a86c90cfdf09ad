"""History bars from REST aggTrades (issue 18): closes, paging, the weight budget, failures.

The server is the loopback fake's aggTrades route (tests/fakes/binance_rest.py) serving the
real 2021-07-22 aggTrade frames (tests/data/ws) as REST rows, played in passes as the
market-data fake plays them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from dolphind.feed.backfill import (
    AGG_TRADES_WEIGHT,
    AggTradesClient,
    Progress,
    WeightBudget,
    bar_closes,
    fetch_bars,
)
from tests.fakes.binance import FakeBinance, load_recording
from tests.fakes.binance_rest import install_agg_trades

REST_FIXTURE = Path(__file__).resolve().parents[2] / "data" / "rest" / \
    "http_futures_market_agg_trades.json"
PLAYED_MS = 30 * 60 * 1000  # 30 minutes of the timeline: 60 passes, ~2400 SUSHIUSDT trades


def test_bar_closes_take_the_last_trade_of_each_bar_and_carry_forward() -> None:
    t = np.array([1000, 1400, 1999, 3500, 3600], np.int64)
    p = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    closes, traded = bar_closes(t, p, start_ms=0, n_bars=5, bar_ms=1000, prev_close=9.0)
    # bar 0 empty (previous close), bar 1 last trade 12, bar 2 carried, bar 3 last 14, bar 4
    assert closes.tolist() == [9.0, 12.0, 12.0, 14.0, 14.0]
    assert traded == 2
    closes, _ = bar_closes(t, p, 0, 2, 1000, math.nan)
    assert math.isnan(closes[0]) and closes[1] == 12.0  # no price yet: absent, not invented


def test_budget_keeps_to_its_share_of_the_minute() -> None:
    now = [0.0]
    b = WeightBudget(limit_1m=200, share=0.2, monotonic=lambda: now[0])  # 40 a minute
    assert b.wait_s(AGG_TRADES_WEIGHT) == 0
    b.spend(AGG_TRADES_WEIGHT)
    b.spend(AGG_TRADES_WEIGHT)
    wait = b.wait_s(AGG_TRADES_WEIGHT)
    assert 59.0 < wait <= 60.0
    now[0] = 60.5  # the first spends have left the rolling minute
    assert b.wait_s(AGG_TRADES_WEIGHT) == 0
    b.used_header = 190  # the IP's minute (other users of the key) is nearly spent
    assert b.wait_s(AGG_TRADES_WEIGHT) > 0


@pytest.fixture
def timeline() -> FakeBinance:
    fake = FakeBinance(load_recording(), speed=1.0, loop=True)
    fake.virtual_ms = lambda: float(PLAYED_MS)  # type: ignore[method-assign]
    return fake


@pytest.fixture
async def server(timeline: FakeBinance) -> AsyncIterator[tuple[str, dict[str, int]]]:
    app = web.Application()
    counters = install_agg_trades(app, timeline.agg_trades_rest)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", counters
    await runner.cleanup()


def test_fake_rows_have_the_shape_of_binances_answer(timeline: FakeBinance) -> None:
    real = json.loads(REST_FIXTURE.read_text())
    rows = timeline.agg_trades_rest("SUSHIUSDT")
    assert len(rows) > 2000
    assert all(set(r) == set(real[0]) for r in rows)
    assert all(type(r[k]) is type(real[0][k]) for r in rows[:50] for k in real[0])
    ids = [r["a"] for r in rows]
    times = [r["T"] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and times == sorted(times)


async def test_fetch_pages_through_every_trade_within_the_budget(
        server: tuple[str, dict[str, int]], timeline: FakeBinance) -> None:
    url, counters = server
    rows = timeline.agg_trades_rest("SUSHIUSDT")
    start_ms = rows[0]["T"] - rows[0]["T"] % 1000
    n_bars = 25 * 60  # 25 minutes of 1 s bars: more than 1000 trades, so it must page
    weights: list[int] = []
    budget = WeightBudget(limit_1m=2400, share=0.25)
    async with aiohttp.ClientSession() as session:
        client = AggTradesClient(session, url, budget, on_weight=weights.append)
        progress = Progress(2)
        fill = await fetch_bars(client, ("SUSHIUSDT", "CTKUSDT"), start_ms, n_bars, 1000,
                                np.array([math.nan, math.nan]), max_requests=50,
                                progress=progress)
    for j, sym in enumerate(("SUSHIUSDT", "CTKUSDT")):
        trades = [r for r in timeline.agg_trades_rest(sym)
                  if start_ms <= r["T"] < start_ms + n_bars * 1000]
        want, _ = bar_closes(np.array([r["T"] for r in trades]),
                             np.array([float(r["p"]) for r in trades]), start_ms, n_bars, 1000,
                             math.nan)
        np.testing.assert_array_equal(fill.closes[:, j], want)
    assert fill.carried_bars == 0 and fill.fetched_bars == 2 * n_bars and not fill.problems
    assert fill.requests >= 3  # SUSHIUSDT alone has > 1000 trades in the span: paged by fromId
    assert fill.requests == counters["requests"] and sum(weights) == counters["weight"]
    assert fill.weight == fill.requests * AGG_TRADES_WEIGHT
    assert budget.total <= budget.allowance  # within the share of this minute
    assert progress.as_dict()["state"] == "done" and progress.as_dict()["fraction"] == 1.0


async def test_a_failing_symbol_is_carried_forward_and_counted(
        server: tuple[str, dict[str, int]]) -> None:
    url, _ = server
    budget = WeightBudget(limit_1m=2400, share=0.25)
    async with aiohttp.ClientSession() as session:
        client = AggTradesClient(session, url, budget)
        # No symbol: the fake answers -1102 as Binance does; the fill goes on without it.
        fill = await fetch_bars(client, ("",), 1_626_992_741_000, 10, 1000, np.array([5.0]),
                                max_requests=5)
    assert fill.closes[:, 0].tolist() == [5.0] * 10
    assert fill.carried_bars == 10 and fill.fetched_bars == 0
    assert len(fill.problems) == 1 and "400" in fill.problems[0]


async def test_without_rest_every_gap_bar_is_carried() -> None:
    fill = await fetch_bars(None, ("A", "B"), 0, 4, 1000, np.array([1.0, 2.0]), max_requests=5)
    assert fill.closes.tolist() == [[1.0, 2.0]] * 4
    assert fill.carried_bars == 8 and fill.fetched_bars == 0 and fill.requests == 0
