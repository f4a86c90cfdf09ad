"""Paper fills and PnL on a hand-computed sequence of bars, fees and slippage included."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dolphind.config import ExecutionConfig
from dolphind.events import Fill, Order, OrderIntent
from dolphind.venues import paper as paper_module
from dolphind.venues.paper import PaperVenue, fee_for, maker_draw, slippage_bps
from dolphind.orders.portfolio import Portfolio, Position, apply_fill
from dolphind.orders.router import Router
from dolphind.orders.filters import SymbolFilters, load_exchange_info
from dolphind.venues.venue import Venue, VenueRejected
from tests.data_paths import CRYPTOFEED_INFO

BLENDED = ExecutionConfig(fee_model="blended")


@pytest.fixture(scope="module")
def info_2021() -> dict[str, SymbolFilters]:
    return load_exchange_info(CRYPTOFEED_INFO)


async def _trade(venue: PaperVenue, router: Router, book: Portfolio, intent: OrderIntent,
                 price: float) -> Fill:
    venue.mark(intent.symbol, price, intent.ts_ns)
    order = router.build(intent, price, intent.ts_ns)
    assert isinstance(order, Order), order
    ack = await venue.submit(order)
    assert ack.state == "acked"
    events = venue.events()
    fill = await anext(events)
    filled = await anext(events)
    assert isinstance(fill, Fill) and filled.state == "filled" and filled.filled_qty == fill.qty
    book.apply_fill(fill)
    return fill


def _intent(iid, symbol, side, notional, reduce_only, reason, ts):
    return OrderIntent(iid, ts, symbol, side, notional, 2.0, reduce_only, reason, 0.0)


async def test_hand_computed_sequence_blended_fees(info_2021):
    cfg = BLENDED
    venue = PaperVenue(info_2021, lambda: cfg)
    book = Portfolio(10_000.0)
    venue.restore([], [], 10_000.0)
    router = Router(venue.filters_for, book.position_qty, lambda s: 0.0)

    # Bar 1: short 2000 USDT of BTC at 40000 -> 0.05 BTC, no entry slippage.
    # Entry fee = 2000 * (0.62*2 + 0.38*5) bps = 2000 * 3.14e-4 = 0.628
    f1 = await _trade(venue, router, book, _intent("t1", "BTCUSDT", "SELL", 2000.0, False,
                                                   "ENTRY", 1), 40_000.0)
    assert (f1.qty, f1.price, f1.liquidity) == (0.05, 40_000.0, "BLENDED")
    assert f1.fee_usdt == pytest.approx(0.628, abs=1e-12)
    assert book.cash_usdt == pytest.approx(9_999.372, abs=1e-9)

    # Bar 2: BTC 39600 -> unrealised +0.05*400 = 20; equity 10019.372 is the peak.
    book.mark_many({"BTCUSDT": 39_600.0})
    assert book.unrealised() == pytest.approx(20.0, abs=1e-9)
    assert book.peak_equity_usdt == pytest.approx(10_019.372, abs=1e-9)

    # Take profit: cover at 39600 * (1 + 2 bps) = 39607.92.
    # Realised = 0.05 * (40000 - 39607.92) = 19.604; exit fee = 1980.396 * 3.5e-4 = 0.6931386
    f2 = await _trade(venue, router, book, _intent("t2", "BTCUSDT", "BUY", 1980.0, True,
                                                   "FIXED_TP", 2), 39_600.0)
    assert f2.price == pytest.approx(39_607.92, abs=1e-9)
    assert f2.slippage_bps == pytest.approx(2.0, abs=1e-9)
    assert f2.fee_usdt == pytest.approx(0.6931386, abs=1e-9)
    assert book.realised_pnl_usdt == pytest.approx(19.604, abs=1e-9)
    assert book.cash_usdt == pytest.approx(10_018.2828614, abs=1e-9)
    assert not book.positions
    # Drawdown from the peak 10019.372 to 10018.2828614.
    assert book.drawdown() == pytest.approx(1 - 10_018.2828614 / 10_019.372, abs=1e-12)

    # Long 1000 USDT of ETH at 2500 -> 0.4 ETH, fee 0.314; stopped out at 2400 with 5 bps:
    # sell at 2398.8, realised 0.4 * (2398.8 - 2500) = -40.48, fee 959.52 * 3.5e-4 = 0.335832.
    await _trade(venue, router, book, _intent("t3", "ETHUSDT", "BUY", 1000.0, False,
                                              "ENTRY", 3), 2500.0)
    f4 = await _trade(venue, router, book, _intent("t4", "ETHUSDT", "SELL", 960.0, True,
                                                   "STOP_LOSS", 4), 2400.0)
    assert f4.price == pytest.approx(2398.8, abs=1e-9)
    assert book.cash_usdt == pytest.approx(10_018.2828614 - 0.314 - 40.48 - 0.335832, abs=1e-9)
    assert book.fees_usdt == pytest.approx(0.628 + 0.6931386 + 0.314 + 0.335832, abs=1e-9)
    # The venue's own books agree with the portfolio (what reconciliation compares).
    assert await venue.positions() == {}
    assert (await venue.balances())["USDT"] == pytest.approx(book.cash_usdt, abs=1e-9)


def test_slippage_by_exit_reason():
    cfg = ExecutionConfig()
    assert slippage_bps(cfg, True, "FIXED_TP") == 2.0
    assert slippage_bps(cfg, True, "stop_loss") == 5.0
    assert slippage_bps(cfg, True, "MAX_HOLD") == 2.0
    assert slippage_bps(cfg, False, "ENTRY") == 0.0
    assert slippage_bps(dataclasses.replace(cfg, entry_slippage_bps=1.5), False, "X") == 1.5


def test_drawn_fees_are_seeded_and_match_the_maker_rates():
    cfg = ExecutionConfig(seed=7)
    ids = [f"dd-{i}" for i in range(4000)]
    entry = [fee_for(cfg, 10_000.0, False, cid) for cid in ids]
    assert entry == [fee_for(cfg, 10_000.0, False, cid) for cid in ids]  # deterministic
    for fee, liq in entry:
        assert (liq, fee) in (("MAKER", pytest.approx(2.0)), ("TAKER", pytest.approx(5.0)))
    maker_entry = sum(liq == "MAKER" for _, liq in entry) / len(ids)
    maker_exit = sum(fee_for(cfg, 1.0, True, cid)[1] == "MAKER" for cid in ids) / len(ids)
    assert 0.59 < maker_entry < 0.65 and 0.47 < maker_exit < 0.53
    other_seed = ExecutionConfig(seed=8)
    assert [fee_for(other_seed, 1.0, False, c)[1] for c in ids] != [liq for _, liq in entry]
    assert 0.0 <= maker_draw(7, "x") < 1.0


async def test_paper_refuses_what_a_venue_would(info_2021):
    venue = PaperVenue(info_2021, lambda: BLENDED, fallback=False)
    order = Order("dd-a", "a", "BTCUSDT", "SELL", 0.05, "MARKET", 0.0, False, "ENTRY", "new")
    with pytest.raises(VenueRejected, match="no market price"):
        await venue.submit(order)
    venue.mark("BTCUSDT", 40_000.0, 1)
    with pytest.raises(VenueRejected, match="duplicate client order id"):
        await venue.submit(order)  # the refused attempt used the id
    exit_order = dataclasses.replace(order, client_id="dd-b", reduce_only=True, side="BUY")
    with pytest.raises(VenueRejected, match="reduce_only_would_increase"):
        await venue.submit(exit_order)
    assert venue.filters_for("SUIUSDT") is None
    assert PaperVenue({}, lambda: BLENDED).filters_for("SUIUSDT") is not None  # fallback


def test_apply_fill_averages_realises_and_flips():
    p = Position("X")
    p, r = apply_fill(p, "BUY", 1.0, 100.0, 0.1, 1)
    p, r = apply_fill(p, "BUY", 1.0, 110.0, 0.1, 2)
    assert (p.qty, p.avg_price, r) == (2.0, 105.0, 0.0)
    p, r = apply_fill(p, "SELL", 0.5, 120.0, 0.1, 3)
    assert (p.qty, p.avg_price, r) == (1.5, 105.0, 7.5)
    p, r = apply_fill(p, "SELL", 2.5, 90.0, 0.1, 4)  # close 1.5 (-22.5), open short 1.0 at 90
    assert (p.qty, p.avg_price, r, p.opened_ns) == (-1.0, 90.0, -22.5, 4)
    assert p.realised_pnl_usdt == pytest.approx(-15.0) and p.fees_usdt == pytest.approx(0.4)
    p, r = apply_fill(p, "BUY", 1.0, 80.0, 0.0, 5)
    assert p.flat and r == 10.0
    # Float drift does not leave dust: 0.1 + 0.2 - 0.3 closes to exactly zero.
    q = Position("Y")
    for qty in (0.1, 0.2):
        q, _ = apply_fill(q, "SELL", qty, 1.0, 0.0, 1)
    q, _ = apply_fill(q, "BUY", 0.3, 1.0, 0.0, 2)
    assert q.flat


async def test_paper_remembers_working_orders_and_only_the_latest_final_ones(info_2021):
    """A long paper run must not grow without bound: working orders are all kept, final ones
    only the latest ``_KEPT_FINAL`` (the store keeps the history)."""
    venue = PaperVenue(info_2021, lambda: BLENDED)
    working = Order("w-1", "iw", "BTCUSDT", "SELL", 0.05, "MARKET", 0.0, False, "ENTRY",
                    "acked")
    venue.restore([working], [], 10_000.0)
    book = Portfolio(10_000.0)
    router = Router(venue.filters_for, book.position_qty, lambda s: 0.0)
    n = paper_module._KEPT_FINAL + 5
    for i in range(n):  # short then cover, one order each
        side, exit_ = ("SELL", False) if i % 2 == 0 else ("BUY", True)
        await _trade(venue, router, book, _intent(f"t{i}", "BTCUSDT", side, 2000.0, exit_,
                                                  "ENTRY" if not exit_ else "FIXED_TP", i + 1),
                     40_000.0)
    ids = [router.build(_intent(f"t{i}", "BTCUSDT", "SELL", 2000.0, False, "ENTRY", 0),
                        40_000.0, 0).client_id for i in (0, 4, 5, n - 1)]
    assert await venue.query(ids[0]) is None and await venue.query(ids[1]) is None
    assert (await venue.query(ids[2])).state == "filled"
    assert (await venue.query(ids[3])).state == "filled"
    assert (await venue.query("w-1")).state == "acked"  # working: kept however old
    assert len(venue._orders) == paper_module._KEPT_FINAL + 1


class _MarksOnly(Venue):
    """A venue with the required members only: every capability comes from the protocol."""

    name = "marks-only"

    def __init__(self) -> None:
        self.marked: list[tuple[str, float, int]] = []

    def mark(self, symbol: str, price: float, ts_ns: int) -> None:
        self.marked.append((symbol, price, ts_ns))


def test_a_venue_without_a_capability_inherits_the_protocols_no_op():
    v = _MarksOnly()
    assert not v.simulated and v.reconciled and dict(v.foreign_orders) == {}
    assert v.take_liquidations() == () and v.take_funding() == () and v.take_found_orders() == []
    assert v.last_mark("BTCUSDT") is None and v.retry_after_s() == 0.0
    assert v.readiness() == "ok" and v.status() is None
    assert v.stale_positions() == [] and v.funding_paid_usdt is None
    v.restore([], [], 1.0)  # nothing to rebuild
    # A bar's closes reach ``mark`` one by one, absent (NaN) closes skipped.
    v.mark_bar({"BTCUSDT": 0, "ETHUSDT": 1, "SOLUSDT": 2},
               np.array([100.0, np.nan, 3.0]), 7)
    assert v.marked == [("BTCUSDT", 100.0, 7), ("SOLUSDT", 3.0, 7)]


def test_paper_is_a_simulated_venue_that_overrides_its_capabilities(info_2021):
    venue = PaperVenue(info_2021, lambda: BLENDED)
    assert Venue in type(venue).__mro__ and venue.simulated
    venue.mark_bar({"BTCUSDT": 0}, np.array([100.0]), 5)
    assert venue.last_mark("BTCUSDT") == (100.0, 5)
    assert venue.funding_paid_usdt == 0.0  # paper models funding: none paid yet
