"""Rounding onto the venue's grid with the real exchangeInfo filters (hand-checked values)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dolphind.orders.filters import (
    FilterError,
    load_exchange_info,
    parse_exchange_info,
    to_decimal,
)

from .conftest import CRYPTOFEED_INFO


def test_parses_the_real_2021_exchange_info(info_2021):
    assert len(info_2021) == 122
    btc = info_2021["BTCUSDT"]
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.min_notional) == (
        Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal("5"))
    assert info_2021["XRPUSDT"].step_size == Decimal("0.1")
    assert info_2021["ADAUSDT"].market_max_qty == Decimal("3000000")  # MARKET_LOT_SIZE differs
    assert info_2021["BTCUSDT_210924"].tick_size == Decimal("0.1")


def test_parses_the_real_2022_exchange_info(info_2022):
    assert sorted(info_2022) == ["BTCUSDT", "BTCUSDT_220325", "ETHUSDT"]
    btc = info_2022["BTCUSDT"]
    assert (btc.tick_size, btc.min_price, btc.min_notional) == (
        Decimal("0.10"), Decimal("402"), Decimal("10"))


# (symbol, notional USDT, price, expected qty) -- worked by hand: floor(notional/price/step)*step
HAND_2021 = [
    ("BTCUSDT", 1000.0, 32123.45, 0.031),      # 0.03112... -> 0.031 (995.83 USDT)
    ("BTCUSDT", 50.0, 50000.0, 0.001),         # exactly one step
    ("ETHUSDT", 2000.0, 1987.65, 1.006),       # 1.00621... -> 1.006
    ("XRPUSDT", 250.0, 0.5893, 424.2),         # 424.232... -> 424.2 (step 0.1)
    ("XRPUSDT", 0.3, 1.0, 0.3),                # float 0.3/0.1 = 2.999..; the grid says 3 steps
    ("ADAUSDT", 100.0, 1.2345, 81.0),          # 81.004... -> 81 (step 1)
    ("BNBUSDT", 999.99, 300.123, 3.33),        # 3.3319... -> 3.33 (step 0.01)
    ("1000SHIBUSDT", 20.0, 0.007123, 2807.0),  # 2807.80... -> 2807
    ("BTCUSDT", 1e9, 1000.0, 1000.0),          # capped at MARKET_LOT_SIZE maxQty 1000
]


@pytest.mark.parametrize("symbol,notional,price,qty", HAND_2021)
def test_qty_for_notional_2021(info_2021, symbol, notional, price, qty):
    f = info_2021[symbol]
    got = f.qty_for_notional(notional, price)
    assert got == qty
    assert to_decimal(got) * to_decimal(price) <= to_decimal(notional)


HAND_2022 = [
    ("BTCUSDT", 1000.0, 40123.4, 0.024, None),                 # 962.96 USDT
    ("BTCUSDT", 45.0, 40123.4, 0.001, None),                   # 40.12 >= 10
    ("BTCUSDT", 12.0, 40123.4, 0.0, "below_min_qty"),          # not one step fits
    ("BTCUSDT", 9.5, 9000.0, 0.001, "below_min_notional"),     # 9.00 < 10
    ("ETHUSDT", 333.0, 2612.37, 0.127, None),                  # 0.12747... -> 0.127
]


@pytest.mark.parametrize("symbol,notional,price,qty,problem", HAND_2022)
def test_qty_and_check_2022(info_2022, symbol, notional, price, qty, problem):
    f = info_2022[symbol]
    got = f.qty_for_notional(notional, price)
    assert got == qty
    assert f.check(got, price) == problem


def test_min_notional_does_not_apply_to_reduce_only(info_2021):
    f = info_2021["DOGEUSDT"]
    qty = f.qty_for_notional(5.0, 0.19234)  # 25.99 -> 25 DOGE = 4.81 USDT
    assert qty == 25.0
    assert f.check(qty, 0.19234) == "below_min_notional"
    assert f.check(qty, 0.19234, reduce_only=True) is None


def test_off_grid_quantities_are_refused(info_2021):
    f = info_2021["BTCUSDT"]
    assert f.check(0.0015, 40000.0) == "off_step_grid"
    assert f.check(1001.0, 40000.0) == "above_max_qty"


def test_floor_qty_forgives_float_drift(info_2021):
    xrp = info_2021["XRPUSDT"]
    assert xrp.floor_qty(0.1 + 0.2) == 0.3           # 0.30000000000000004
    assert xrp.floor_qty(0.29999999999999993) == 0.3  # drift below the grid point
    assert xrp.floor_qty(-424.25) == 424.2           # sign dropped, floored


def test_round_price_goes_to_the_passive_side(info_2021, info_2022):
    btc21, btc22 = info_2021["BTCUSDT"], info_2022["BTCUSDT"]
    assert btc21.round_price(32123.456, "BUY") == 32123.45
    assert btc21.round_price(32123.451, "SELL") == 32123.46
    assert btc21.round_price(32123.45, "SELL") == 32123.45  # already on the grid
    assert btc22.round_price(41234.56, "BUY") == 41234.5
    assert btc22.round_price(41234.51, "SELL") == 41234.6
    assert btc22.check(0.001, 41234.55, market=False) == "off_tick_grid"
    assert btc22.check(0.001, 41234.5, market=False) is None


def test_bad_documents_are_refused(tmp_path):
    with pytest.raises(FilterError, match="symbols"):
        parse_exchange_info({})
    with pytest.raises(FilterError, match="XUSDT"):
        parse_exchange_info({"symbols": [{"symbol": "XUSDT", "filters": []}]})
    bad = tmp_path / "x.json"
    bad.write_text("garbage")
    with pytest.raises(FilterError):
        load_exchange_info(bad)


def test_loads_the_recorded_capture_format():
    # The capture file is "<url> -> <ts>: <json>"; the loader takes the JSON part.
    assert "SUSHIUSDT" in load_exchange_info(CRYPTOFEED_INFO)


# ---- properties ----------------------------------------------------------------------------

# Loaded at import (not a fixture): hypothesis prints its arguments on failure, and the
# whole exchangeInfo would drown the falsifying example.
_INFO = load_exchange_info(CRYPTOFEED_INFO) if CRYPTOFEED_INFO.exists() else {}
_SYMBOLS = ["BTCUSDT", "ETHUSDT", "XRPUSDT", "ADAUSDT", "BNBUSDT", "DOGEUSDT", "SUSHIUSDT",
            "1000SHIBUSDT"]
prices = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
notionals = st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None)
@given(symbol=st.sampled_from(_SYMBOLS), notional=notionals, price=prices)
def test_property_qty_never_exceeds_notional_and_is_on_grid(symbol, notional, price):
    f = _INFO[symbol]
    qty = f.qty_for_notional(notional, price)
    q, p, n = to_decimal(qty), to_decimal(price), to_decimal(notional)
    assert q >= 0
    assert q * p <= n                                   # never above the intended notional
    assert q % f.market_step_size == 0                  # on the step grid
    assert q <= f.market_max_qty
    if q < f.market_max_qty:
        assert (q + f.market_step_size) * p > n         # and the largest such quantity


@settings(max_examples=400, deadline=None)
@given(symbol=st.sampled_from(_SYMBOLS), price=prices, side=st.sampled_from(["BUY", "SELL"]))
def test_property_price_on_tick_grid_and_passive(symbol, price, side):
    f = _INFO[symbol]
    r = to_decimal(f.round_price(price, side))
    p = to_decimal(price)
    assert (r - f.min_price) % f.tick_size == 0
    assert abs(r - p) < f.tick_size
    assert (r <= p) if side == "BUY" else (r >= p)


@settings(max_examples=300, deadline=None)
@given(symbol=st.sampled_from(_SYMBOLS), steps=st.integers(min_value=0, max_value=10**6),
       drift=st.floats(min_value=-1e-13, max_value=1e-13))
def test_property_floor_qty_keeps_grid_points(symbol, steps, drift):
    f = _INFO[symbol]
    exact = float(steps * f.market_step_size)
    if exact > f.market_max_qty:
        return
    assert f.floor_qty(exact * (1 + drift)) == exact
