"""The per-bar views of the money: Portfolio.view and ExecutionStage.settled."""

from __future__ import annotations

import asyncio
import time

import pytest

from dolphind.events import Fill
from dolphind.orders.portfolio import Portfolio
from tests.unit.execution.test_stage import bar, config, intent, metrics_factory, rig  # noqa: F401


def _fill(symbol: str, side: str, qty: float, price: float, fee: float = 0.1) -> Fill:
    return Fill(fill_id=f"{symbol}-{side}-{qty}", client_id="c", symbol=symbol, side=side,
                qty=qty, price=price, fee_usdt=fee, liquidity="TAKER", ts_ns=1,
                slippage_bps=0.0, reduce_only=False)


def test_view_agrees_with_the_single_figures() -> None:
    p = Portfolio(10_000.0)
    flat = p.view()
    assert (flat.equity_usdt, flat.gross_exposure_usdt, flat.positions) == (10_000.0, 0, ())
    p.apply_fill(_fill("BTCUSDT", "SELL", 0.05, 40_000.0))
    p.apply_fill(_fill("ETHUSDT", "BUY", 1.5, 2_500.0))
    p.mark("BTCUSDT", 39_000.0)
    p.mark("ETHUSDT", 2_600.0)
    p.update_peak()
    v = p.view()
    assert v.equity_usdt == p.equity() == v.capital_usdt
    assert v.unrealised_pnl_usdt == p.equity() - p.cash_usdt
    assert v.unrealised_pnl_usdt == pytest.approx(0.05 * 1000 + 1.5 * 100)
    assert v.gross_exposure_usdt == p.gross_exposure() == pytest.approx(0.05 * 39_000 + 1.5 * 2_600)
    assert v.drawdown == p.drawdown()
    assert v.peak_equity_usdt == p.peak_equity_usdt
    # Positions are frozen: the view shares them, and later fills do not change it.
    assert v.positions == tuple(p.positions.values())
    p.apply_fill(_fill("BTCUSDT", "BUY", 0.05, 39_000.0))
    assert [x.symbol for x in v.positions] == ["BTCUSDT", "ETHUSDT"]
    assert [x.symbol for x in p.view().positions] == ["ETHUSDT"]


async def test_settled_answers_at_once_or_times_out(tmp_path, info_2021,
                                                    metrics_factory):  # noqa: F811
    async with rig(tmp_path, info_2021, metrics_factory(), config()) as r:
        assert await r.stage.settled(0, 5.0)
        t0 = time.monotonic()
        assert not await r.stage.settled(1, 0.05)  # nothing was sent: it cannot settle
        assert 0.04 <= time.monotonic() - t0 < 1.0
        waiter = asyncio.create_task(r.stage.settled(2, 5.0))
        await r.feed(bar(1, 40_000.0), intent("e1", "SELL", 2000.0, ts=bar(1, 0).ts_ns))
        assert await asyncio.wait_for(waiter, 5.0)
        assert r.stage.processed == 2 and not r.stage.orders
