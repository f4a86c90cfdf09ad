"""A backtest commits its per-bar equity snapshots in batches; live and paper write each one.

The rows must be the same, in the same order, as when each snapshot is written at once: the
batch goes to the store before a fill writes its own snapshot, and at the end of the run.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from dolphind.config import Config, config_from_dict
from dolphind.execution import equity as equity_module
from tests.conftest import eventually
from tests.unit.execution.test_stage import bar, intent, metrics_factory, rig  # noqa: F401

_SELECT = "SELECT ts_ns, equity_usdt, cash_usdt, unrealised_pnl_usdt, peak_equity_usdt, " \
          "drawdown, gross_exposure_usdt FROM equity_snapshots ORDER BY rowid"


def _config(mode: str) -> Config:
    # Snapshots every 5 s of market time: one per test bar.
    return config_from_dict({"mode": mode, "execution": {
        "fee_model": "blended", "equity_snapshot_interval_s": 5.0}})


async def _rows(store: Any) -> list[tuple[Any, ...]]:
    await eventually(lambda: store.pending == 0, what="store drained")
    return await store.read(lambda c: c.execute(_SELECT).fetchall())


async def _run(tmp_path, info, metrics, name: str) -> tuple[list[Any], list[Any], float]:
    """A backtest of bars, an entry, more bars, an exit, more bars; the equity rows seen
    mid-run and at the end, and the account's peak."""
    d = tmp_path / name
    d.mkdir()
    async with rig(d, info, metrics, _config("backtest")) as r:
        await r.feed(bar(1, 40_000.0), bar(2, 40_100.0))
        await r.settle()
        mid = await _rows(r.store)
        await r.feed(intent("e1", "SELL", 2000.0, ts=bar(2, 0).ts_ns, ref=40_100.0),
                     bar(3, 39_800.0), bar(4, 39_500.0), bar(5, 39_900.0),
                     intent("x1", "BUY", 2000.0, True, "FIXED_TP", ts=bar(5, 0).ts_ns,
                            ref=39_900.0),
                     bar(6, 39_950.0), bar(7, 40_000.0))
        await r.settle()
    # The stage has finished and the store is closed: read the file.
    conn = sqlite3.connect(d / "dolphind.sqlite")
    try:
        rows = conn.execute(_SELECT).fetchall()
        peak = conn.execute("SELECT peak_equity_usdt FROM account").fetchone()[0]
    finally:
        conn.close()
    return mid, rows, peak


async def test_backtest_rows_equal_the_unbatched_rows_in_order(tmp_path, info_2021,
                                                                metrics_factory,  # noqa: F811
                                                                monkeypatch):
    monkeypatch.setattr(equity_module, "EQUITY_BATCH", 1)  # each snapshot written at once
    one_mid, one_rows, one_peak = await _run(tmp_path, info_2021, metrics_factory(), "one")
    monkeypatch.setattr(equity_module, "EQUITY_BATCH", 256)
    bt_mid, bt_rows, bt_peak = await _run(tmp_path, info_2021, metrics_factory(), "batched")
    # Written at once, each bar's snapshot is there mid-run; batched, they are held (no fill).
    assert [r[0] for r in one_mid] == [bar(1, 0).ts_ns, bar(2, 0).ts_ns]
    assert bt_mid == []
    # 7 bar snapshots, 2 fill snapshots and the end of the run, the same values in order.
    assert len(one_rows) == 10
    assert bt_rows == one_rows
    assert bt_peak == one_peak


async def test_a_backtest_books_the_fills_before_the_next_bar(tmp_path, info_2021,
                                                              metrics_factory):  # noqa: F811
    """The paper venue fills an order at once, but the fill reaches the books through the
    venue's event stream. A backtest books it before it marks the next bar already queued,
    so that bar's snapshot holds the position whatever the task scheduling; and the books end
    at the last bar's time, not at the wall-clock moment the run finished."""
    _, rows, _ = await _run(tmp_path, info_2021, metrics_factory(), "bt")
    ts = [r[0] for r in rows]
    entry, bar3 = ts.index(bar(2, 0).ts_ns, 2), ts.index(bar(3, 0).ts_ns)
    assert entry < bar3  # the entry's fill snapshot (stamped at bar 2) comes first
    gross = {r[0]: r[6] for r in rows}
    assert gross[bar(3, 0).ts_ns] > 0  # bar 3 marks the open short
    assert gross[bar(6, 0).ts_ns] == 0  # closed at bar 5
    assert ts[-1] == bar(7, 0).ts_ns


async def test_a_full_batch_is_committed_without_waiting_for_a_fill(
        tmp_path, info_2021, metrics_factory, monkeypatch):  # noqa: F811
    monkeypatch.setattr(equity_module, "EQUITY_BATCH", 3)
    async with rig(tmp_path, info_2021, metrics_factory(), _config("backtest")) as r:
        await r.feed(bar(1, 40_000.0), bar(2, 40_000.0))
        await r.settle()
        assert await _rows(r.store) == []
        await r.feed(bar(3, 40_000.0))
        await r.settle()
        rows = await _rows(r.store)
        assert [row[0] for row in rows] == [bar(i, 0).ts_ns for i in (1, 2, 3)]
        assert r.stage.equity.batch == []


async def test_a_new_peak_in_a_backtest_is_committed_with_the_next_batch(
        tmp_path, info_2021, metrics_factory, monkeypatch):  # noqa: F811
    monkeypatch.setattr(equity_module, "EQUITY_BATCH", 2)
    cfg = config_from_dict({"mode": "backtest", "execution": {
        "fee_model": "blended", "equity_snapshot_interval_s": 3600.0}})
    async with rig(tmp_path, info_2021, metrics_factory(), cfg) as r:
        await r.feed(bar(1, 40_000.0), intent("p1", "SELL", 2000.0, ts=bar(1, 0).ts_ns))
        await r.settle()
        await r.feed(bar(2, 39_000.0))  # short: a new peak from the marks, no snapshot due
        await r.settle()
        assert r.stage.equity.account_behind
        shown = r.stage.capital_view().peak_equity_usdt
        await r.feed(bar(800, 39_500.0))  # an hour later: a snapshot, and the batch is full
        await r.feed(bar(1600, 39_500.0))
        await r.settle()
        await eventually(lambda: r.store.pending == 0, what="store drained")
        state = await r.store.load_state()
        assert state.account.peak_equity_usdt == shown
        assert not r.stage.equity.account_behind
