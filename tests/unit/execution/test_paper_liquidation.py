"""Liquidation in the paper venue (issue 16): cross margin as Binance computes it, with the
documented default maintenance-margin rates; the ledger reports the exit as LIQUIDATION."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest

from dolphind.config import ExecutionConfig
from dolphind.events import Fill, PositionUpdate
from dolphind.risk.brackets import (BracketError, load_leverage_brackets,
                                         maintenance_margin, parse_leverage_brackets)
from dolphind.execution.ledger import Ledger
from dolphind.venues.paper import (DEFAULT_MAINTENANCE_MARGIN_RATE, PaperVenue,
                                      maintenance_margin_rate)
from dolphind.orders.portfolio import Position

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
    ledger.on_fill(entry)
    ledger.on_position(PositionUpdate("SOLUSDT", -100.0, 100.0, 0.0, T))
    liq = Fill(fill_id="liquidation-SOLUSDT-1-1", client_id="liquidation-SOLUSDT-1",
               symbol="SOLUSDT", side="BUY", qty=100.0, price=109.5, fee_usdt=0.0,
               liquidity="TAKER", ts_ns=T + 1, slippage_bps=0.0, reduce_only=True)
    ledger.on_fill(liq)
    ledger.on_position(PositionUpdate("SOLUSDT", 0.0, 0.0, -950.0, T + 1))
    (trade,) = ledger.closed
    assert trade.exit_reason == "LIQUIDATION" and trade.pnl_usdt == pytest.approx(-951.0)


def test_no_fill_at_a_stale_price_and_the_exit_fills_at_the_first_fresh_one() -> None:
    """Issue 16: once the feed marks a symbol absent (older than feed.max_stale_bars), the paper
    venue refuses to fill at its last, hours-old price; the retried exit fills when it trades."""
    from dolphind.events import Order
    from dolphind.venues.venue import VenueRejected

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


BRACKETS = Path(__file__).resolve().parents[2] / "data" / "binance-leverage-brackets" / \
    "leverage_bracket.json"


def test_brackets_follow_binance_leverage_bracket_tables() -> None:
    """maintenance = notional x rate - cum in the bracket holding the notional: continuous at
    every cap, and a bigger position pays a higher rate."""
    table = load_leverage_brackets(BRACKETS)
    btc = table["BTCUSDT"]
    assert maintenance_margin(10_000.0, btc) == pytest.approx(40.0)        # 0.4 %, cum 0
    assert maintenance_margin(100_000.0, btc) == pytest.approx(450.0)      # 0.5 % - 50
    assert maintenance_margin(1_000_000.0, btc) == pytest.approx(7_450.0)  # 1 % - 2550
    for b in btc[1:]:  # continuous across the caps
        assert maintenance_margin(b.floor - 1e-6, btc) == pytest.approx(
            maintenance_margin(b.floor, btc), abs=1e-3)
    # the single-symbol answer of the endpoint (one object, not a list) is read as well
    one = parse_leverage_brackets(orjson.loads(BRACKETS.read_bytes())[2])
    assert list(one) == ["SOLUSDT"] and one["SOLUSDT"] == table["SOLUSDT"]
    with pytest.raises(BracketError, match="SOLUSDT"):
        parse_leverage_brackets([{"symbol": "SOLUSDT", "brackets": [{"notionalCap": 1}]}])


def test_the_venue_liquidates_earlier_with_the_symbols_brackets() -> None:
    """The same 10x short as above: with SOLUSDT's table (1 % to 5k, 2.5 % to 50k) the
    maintenance margin at mark 108.5 is 10850 x 0.025 - 75 = 196.25 against an equity of 150:
    liquidated, where the default (54.25) keeps it open."""
    venue = PaperVenue({}, lambda: ExecutionConfig(),
                       brackets=load_leverage_brackets(BRACKETS))
    venue.restore([], [Position("SOLUSDT", qty=-100.0, avg_price=100.0)], 1000.0)
    venue.mark_bar(INDEX, np.array([108.5, 2000.0]), T)
    equity, maint = venue.margin()
    assert equity == pytest.approx(150.0) and maint == pytest.approx(196.25)
    assert venue.take_liquidations() == ["SOLUSDT"]
    default = venue_with_short(1000.0)
    default.mark_bar(INDEX, np.array([108.5, 2000.0]), T)
    assert default.take_liquidations() == []  # 150 > 10850 x 0.005 = 54.25
