"""Client order ids, the order state machine, and intent -> order routing."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dolphind.events import Order, OrderIntent
from dolphind.orders.router import (
    TERMINAL,
    IllegalTransition,
    OrderState,
    RouteRejection,
    Router,
    can_transition,
    client_order_id,
    transition,
    venue_symbol,
)


def test_client_order_id_is_deterministic_short_and_venue_safe():
    a = client_order_id("scan:1234:BTCUSDT:entry")
    assert a == client_order_id("scan:1234:BTCUSDT:entry")
    assert a != client_order_id("scan:1235:BTCUSDT:entry")
    assert len(a) <= 36 and re.fullmatch(r"[A-Za-z0-9-]+", a)
    assert client_order_id("x", "abc").startswith("abc-") and len(client_order_id("x", "abc")) == 36


def _order(state: OrderState = OrderState.NEW) -> Order:
    return Order(client_id="dd-1", intent_id="i1", symbol="BTCUSDT", side="SELL", qty=0.05,
                 order_type="MARKET", price=0.0, reduce_only=False, reason="ENTRY",
                 state=str(state))


LEGAL = [
    ("new", "acked"), ("new", "filled"), ("new", "rejected"), ("new", "unknown"),
    ("new", "expired"), ("acked", "partially_filled"), ("acked", "filled"),
    ("acked", "cancelled"), ("partially_filled", "partially_filled"),
    ("partially_filled", "filled"), ("unknown", "filled"), ("unknown", "acked"),
    ("unknown", "expired"),
]
ILLEGAL = [
    ("filled", "acked"), ("filled", "cancelled"), ("cancelled", "filled"),
    ("rejected", "acked"), ("expired", "filled"), ("acked", "new"), ("acked", "rejected"),
    ("partially_filled", "acked"), ("filled", "filled"),
]


@pytest.mark.parametrize("old,new", LEGAL)
def test_legal_transitions(old, new):
    o = transition(_order(OrderState(old)), new, 5)
    assert o.state == new and o.updated_ns == 5


@pytest.mark.parametrize("old,new", ILLEGAL)
def test_illegal_transitions_are_refused(old, new):
    with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
        transition(_order(OrderState(old)), new, 5)


def test_a_transition_changes_only_what_it_is_told():
    o = dataclasses.replace(_order(OrderState.ACKED), venue_order_id="v1", ref_price=40_000.0)
    t = transition(o, OrderState.FILLED, 9, filled_qty=0.05, avg_fill_price=40_010.0)
    assert t == dataclasses.replace(o, state="filled", updated_ns=9, filled_qty=0.05,
                                    avg_fill_price=40_010.0)
    assert type(t.state) is str  # stored and compared as the plain name


def test_a_transition_to_no_state_or_with_no_such_field_is_an_error():
    with pytest.raises(ValueError, match="'done' is not a valid OrderState"):
        transition(_order(), "done", 5)
    with pytest.raises(ValueError, match="'sent' is not a valid OrderState"):
        transition(_order("sent"), "acked", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no field"):
        transition(_order(), "acked", 5, colour="red")


def test_final_states_have_no_way_out():
    for final in TERMINAL:
        assert not any(can_transition(final, s) for s in OrderState)


def test_venue_symbol_mapping():
    assert venue_symbol("BTC/USDT:USDT") == "BTCUSDT"
    assert venue_symbol("ETH_USDT") == "ETHUSDT"
    assert venue_symbol("SOLUSDT") == "SOLUSDT"
    assert venue_symbol("SHIBUSDT", {"SHIBUSDT": "1000SHIBUSDT"}) == "1000SHIBUSDT"


def _intent(side="SELL", notional=1000.0, reduce_only=False, symbol="BTCUSDT", iid="i-1"):
    return OrderIntent(intent_id=iid, ts_ns=7, symbol=symbol, side=side, notional_usdt=notional,
                       leverage=2.0, reduce_only=reduce_only, reason="FIXED_TP" if reduce_only
                       else "ENTRY", ref_price=32123.45)


def test_router_builds_an_entry_rounded_down(info_2021):
    r = Router(info_2021.get, lambda s: 0.0, lambda s: 0.0)
    o = r.build(_intent(), 32123.45, 7)
    assert isinstance(o, Order)
    assert (o.qty, o.side, o.state, o.order_type) == (0.031, "SELL", "new", "MARKET")
    assert o.client_id == client_order_id("i-1") and o.ref_price == 32123.45


def test_router_exit_closes_the_whole_position(info_2021):
    positions = {"BTCUSDT": -0.031}
    working = {"BTCUSDT": 0.0}
    r = Router(info_2021.get, lambda s: positions.get(s, 0.0), lambda s: working[s])
    o = r.build(_intent("BUY", notional=1.0, reduce_only=True), 31000.0, 7)
    assert isinstance(o, Order) and o.qty == 0.031 and o.reduce_only
    # Nothing left when working exits already close it, or on the wrong side.
    working["BTCUSDT"] = 0.031
    assert r.build(_intent("BUY", reduce_only=True), 31000.0, 7) == RouteRejection(
        "nothing_to_reduce", "no short position in BTCUSDT left to close")
    assert isinstance(r.build(_intent("SELL", reduce_only=True), 31000.0, 7), RouteRejection)


def test_router_refusals_are_named(info_2021):
    r = Router(info_2021.get, lambda s: 0.0, lambda s: 0.0)
    assert r.build(_intent(symbol="NOPEUSDT"), 1.0, 7).reason == "unknown_symbol"
    assert r.build(_intent(notional=4.0), 32123.45, 7).reason == "below_min_qty"
    assert r.build(_intent(symbol="DOGEUSDT", notional=5.0), 0.19234, 7).reason \
        == "below_min_notional"
    assert r.build(_intent(notional=0.0), 32123.45, 7).reason == "bad_notional"
    assert r.build(_intent(), float("nan"), 7).reason == "no_price"
    assert r.build(_intent(side="SHORT"), 1.0, 7).reason == "bad_side"
