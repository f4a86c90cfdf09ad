"""Funding (issue 16): replay prints feed the ACB funding factor at bar time, and the paper
venue books a payment on each open position at every funding time the bars cross."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dolphind.alpha.acb import ExternalFactors
from dolphind.config import ExecutionConfig
from dolphind.venues.paper import PaperVenue
from dolphind.orders.portfolio import Position
from dolphind.feed.funding import (ReplayFunding, funding_payment, latest_print,
                                   prints_between)
from dolphind.feed.history import FundingSeries

H8 = 8 * 3600 * 1_000_000_000
T0 = 1_746_835_200_000_000_000  # 2025-05-10 00:00 UTC, a funding time


def series(*rates: float) -> FundingSeries:
    return FundingSeries(np.array([T0 + k * H8 for k in range(len(rates))], dtype=np.int64),
                         np.array(rates, dtype=np.float64))


def test_prints_are_read_at_market_time() -> None:
    s = series(1e-4, -2e-4, 3e-4)
    assert latest_print(s, T0 - 1) is None
    assert latest_print(s, T0) == (T0, 1e-4)
    assert latest_print(s, T0 + H8 + 5) == (T0 + H8, -2e-4)
    assert prints_between(s, T0, T0 + 2 * H8) == [(T0 + H8, -2e-4), (T0 + 2 * H8, 3e-4)]
    assert prints_between(s, T0 + 1, T0 + H8 - 1) == []


def test_longs_pay_a_positive_rate_and_shorts_receive_it() -> None:
    assert funding_payment(2.0, 100.0, 1e-4) == pytest.approx(-0.02)
    assert funding_payment(-2.0, 100.0, 1e-4) == pytest.approx(0.02)
    assert funding_payment(-2.0, 100.0, -1e-4) == pytest.approx(-0.02)


def test_the_acb_funding_factor_comes_from_btc_prints_only() -> None:
    f = ReplayFunding({"BTCUSDT": series(1e-4, -2e-4), "ETHUSDT": series(-9e-4)})
    assert f.factors_at(T0 - 1) is None  # before the first print: absent, never invented
    assert f.factors_at(T0 + H8) == ExternalFactors(funding_btc=-2e-4)
    assert ReplayFunding({"ETHUSDT": series(-9e-4)}).factors_at(T0 + H8) is None
    assert not ReplayFunding({})


def test_the_paper_venue_books_funding_on_open_positions() -> None:
    venue = PaperVenue({}, lambda: ExecutionConfig())
    venue.restore([], [Position("ETHUSDT", qty=-2.0, avg_price=100.0),
                       Position("SOLUSDT", qty=0.0)], 1000.0)
    venue.set_funding(ReplayFunding({"ETHUSDT": series(5e-4, 1e-4, -3e-4),
                                     "SOLUSDT": series(1.0)}))
    index = {"ETHUSDT": 0, "SOLUSDT": 1}
    venue.mark_bar(index, np.array([100.0, 10.0]), T0 - 60_000_000_000)  # first bar: no print
    venue.mark_bar(index, np.array([110.0, 10.0]), T0 + H8)  # crosses T0 and T0 + 8h
    paid = [(p.ts_ns, p.symbol, p.amount_usdt) for p in venue.funding_payments]
    assert paid == [(T0, "ETHUSDT", pytest.approx(2 * 110.0 * 5e-4)),
                    (T0 + H8, "ETHUSDT", pytest.approx(2 * 110.0 * 1e-4))]
    assert venue.funding_paid_usdt == pytest.approx(-2 * 110.0 * 6e-4)  # the short received
    balance = asyncio.run(venue.balances())["USDT"]
    assert balance == pytest.approx(1000.0 + 2 * 110.0 * 6e-4)
    venue.mark_bar(index, np.array([110.0, 10.0]), T0 + H8 + 60_000_000_000)
    assert len(venue.funding_payments) == 2  # no print in between: nothing more
