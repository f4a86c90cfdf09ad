"""Liquidation in the paper venue (issue 16): cross margin as Binance computes it, with the
documented default maintenance-margin rates; the ledger reports the exit as LIQUIDATION."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dolphind.config import ExecutionConfig
from dolphind.events import Fill, PositionUpdate
from dolphind.execution.ledger import Ledger
from dolphind.execution.paper import (DEFAULT_MAINTENANCE_MARGIN_RATE, PaperVenue,
                                      maintenance_margin_rate)
from dolphind.execution.portfolio import Position

T = 1_746_835_200_000_000_000
INDEX = {"SOLUSDT": 0, "ETHUSDT": 1}


def venue_with_short(balance: float) -> PaperVenue:
    venue = PaperVenue({}, lambda: ExecutionConfig())
    venue.restore([], [Position("SOLUSDT", qty=-100.0, avg_price=100.0)], balance)
    return venue


def test_default_brackets_are_documented_values() -> None:
    assert maintenance_margin_rate("BTCUSDT") == 0.004
    assert maintenance_margin_rate("SOLUSDT") == DEFAULT_MAINTENANCE_MARGIN_RATE == 0.005


def test_a_position_is_liquidated_when_margin_falls_to_maintenance() -> None:
    venue = venue_with_short(1000.0)  # 10k notional short on 1k of wallet: ~10x
    venue.mark_bar(INDEX, np.array([105.0, 2000.0]), T)
    # equity 1000 - 500 = 500 > maintenance 100 * 105 * 0.005 = 52.5: still open
    assert venue.liquidations == [] and venue.margin() == pytest.approx((500.0, 52.5))
    venue.mark_bar(INDEX, np.array([109.5, 2000.0]), T + 60_000_000_000)
    # equity 1000 - 950 = 50 <= maintenance 54.75: the venue calls the liquidation
    assert venue.liquidations == [(T + 60_000_000_000, ("SOLUSDT",), pytest.approx(50.0),
                                   pytest.approx(54.75))]
    assert venue.take_liquidations() == ["SOLUSDT"] and venue.take_liquidations() == []
    # (the execution stage closes it: tests/unit/execution/test_stage.py)


def test_the_ledger_names_the_exit_liquidation() -> None:
    ledger = Ledger(lambda: None)  # type: ignore[arg-type,return-value]
    entry = Fill(fill_id="e-1", client_id="dd-1", symbol="SOLUSDT", side="SELL", qty=100.0,
                 price=100.0, fee_usdt=1.0, liquidity="TAKER", ts_ns=T, slippage_bps=0.0)
    ledger.observe("on_fill", entry)
    ledger.observe("on_position", PositionUpdate("SOLUSDT", -100.0, 100.0, 0.0, T))
    liq = Fill(fill_id="liquidation-SOLUSDT-1-1", client_id="liquidation-SOLUSDT-1",
               symbol="SOLUSDT", side="BUY", qty=100.0, price=109.5, fee_usdt=0.0,
               liquidity="TAKER", ts_ns=T + 1, slippage_bps=0.0, reduce_only=True)
    ledger.observe("on_fill", liq)
    ledger.observe("on_position", PositionUpdate("SOLUSDT", 0.0, 0.0, -950.0, T + 1))
    (trade,) = ledger.closed
    assert trade.exit_reason == "LIQUIDATION" and trade.pnl_usdt == pytest.approx(-951.0)


def test_no_fill_at_a_stale_price_and_the_exit_fills_at_the_first_fresh_one() -> None:
    """Issue 16: once the feed marks a symbol absent (older than feed.max_stale_bars), the paper
    venue refuses to fill at its last, hours-old price; the retried exit fills when it trades."""
    from dolphind.events import Order
    from dolphind.execution.venue import VenueRejected

    venue = venue_with_short(100_000.0)

    def exit_order(cid: str) -> Order:
        return Order(cid, f"intent:{cid}", "SOLUSDT", "BUY", 100.0, "MARKET", 0.0, True,
                     "MAX_HOLD", "new", created_ns=T)

    venue.mark_bar(INDEX, np.array([101.0, 2000.0]), T)
    venue.mark_bar(INDEX, np.array([np.nan, 2000.0]), T + 60_000_000_000)  # SOL absent now
    with pytest.raises(VenueRejected, match="no fresh price for SOLUSDT"):
        asyncio.run(venue.submit(exit_order("x1")))
    assert venue.stale_positions() == ["SOLUSDT"]
    venue.mark_bar(INDEX, np.array([99.0, 2000.0]), T + 120_000_000_000)
    asyncio.run(venue.submit(exit_order("x2")))
    assert asyncio.run(venue.positions()) == {} and venue.stale_positions() == []
