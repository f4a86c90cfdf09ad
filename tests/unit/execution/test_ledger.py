"""The trade ledger's restart path (``Ledger.restore``) without a running stage."""

from __future__ import annotations

import math

import pytest

from dolphind.events import Fill, Order, PositionUpdate
from dolphind.execution.ledger import Ledger
from dolphind.orders.portfolio import Portfolio, Position
from dolphind.store.sqlite import OpenTrade


def _ledger(positions: tuple[Position, ...]) -> Ledger:
    book = Portfolio(10_000.0, positions=positions)
    return Ledger(book.view)


def test_a_position_without_its_fills_is_restored_from_the_position():
    # Adopted from the venue at a reconciliation: the fills do not add up to the position.
    pos = Position("BTCUSDT", -0.05, 40_000.0, 0.0, 0.7, 11, 12)
    fill = Fill("f1", "c1", "BTCUSDT", "SELL", 0.02, 41_000.0, 0.3, "TAKER", 5)
    order = Order("c1", "3-BTCUSDT-entry", "BTCUSDT", "SELL", 0.02, "MARKET", 0.0, False,
                  "ENTRY", "filled")
    ledger = _ledger((pos,))
    ledger.restore([OpenTrade(pos, (fill,), (order,), {"c1": 2.0})], next_scan=50)
    view = ledger.portfolio_view().position
    assert (view.entry_scan, view.bars_held, view.entry_price) == (-1, 0, 40_000.0)
    ledger.on_fill(Fill("f2", "c2", "BTCUSDT", "BUY", 0.05, 39_000.0, 0.5,
                                   "TAKER", 20))
    ledger.on_position(PositionUpdate("BTCUSDT", 0.0, 0.0, 0.0, 20))
    [trade] = ledger.closed
    assert trade.entry_ts_ns == 11 and math.isnan(trade.leverage)
    assert trade.pnl_usdt == pytest.approx(0.05 * 1_000.0 - (0.7 + 0.5), abs=1e-9)


def test_bars_held_continues_from_the_entry_scan():
    pos = Position("ETHUSDT", 0.4, 2500.0, 0.0, 0.4, 1, 1)
    fill = Fill("f1", "c1", "ETHUSDT", "BUY", 0.4, 2500.0, 0.4, "TAKER", 1)
    order = Order("c1", "120-ETHUSDT-entry", "ETHUSDT", "BUY", 0.4, "MARKET", 0.0, False,
                  "ENTRY", "filled")
    ledger = _ledger((pos,))
    ledger.restore([OpenTrade(pos, (fill,), (order,), {"c1": 3.0})], next_scan=130)
    view = ledger.portfolio_view().position
    assert (view.entry_scan, view.bars_held, view.leverage) == (120, 9, 3.0)
    ledger.on_bar(0)  # scan 130
    assert ledger.portfolio_view().position.bars_held == 10
