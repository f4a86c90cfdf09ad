"""Each rail accepts and rejects at its edges; reduce-only exits pass exposure and rate."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dolphind.config import RiskConfig
from dolphind.risk.rails import (
    RULES,
    AccountSnapshot,
    BreakerState,
    OrderCheck,
    RiskRails,
)
from tests.conftest import FakePerf

CFG = RiskConfig(min_order_notional_usdt=10.0, max_order_notional_usdt=1000.0,
                 max_symbol_exposure_usdt=1500.0, max_gross_exposure_usdt=2500.0,
                 max_leverage=3.0, max_orders_per_minute=60.0, order_burst=2,
                 breaker_window_s=60.0, breaker_min_requests=4, breaker_error_rate=0.5,
                 breaker_open_s=30.0, breaker_probes=1)
FLAT = AccountSnapshot(equity_usdt=1000.0, symbol_exposure_usdt={}, gross_exposure_usdt=0.0)


def order(notional=100.0, symbol="BTCUSDT", leverage=1.0, reduce_only=False):
    return OrderCheck(symbol, "SELL", notional, leverage, reduce_only)


def rails(cfg=CFG, veto=None):
    return RiskRails(lambda: cfg, veto=veto, monotonic=lambda: 0.0)


def rule_of(r, o, a=FLAT, now=0.0):
    d = r.check(o, a, now=now)
    return None if d.ok else d.rule


def test_rule_names_are_in_spec_order():
    assert RULES == ("kill_switch", "symbol_allowlist", "min_notional", "max_notional",
                     "symbol_exposure", "gross_exposure", "max_leverage", "order_rate",
                     "venue_breaker", "plugin_veto")


def test_kill_switch():
    assert rule_of(rails(), order()) is None
    assert rule_of(rails(dataclasses.replace(CFG, trading_enabled=False)), order()) \
        == "kill_switch"
    halted = dataclasses.replace(FLAT, halted=True)
    assert rule_of(rails(), order(), halted) == "kill_switch"
    assert rule_of(rails(), order(reduce_only=True), halted) is None  # exits still run


def test_symbol_allowlist():
    cfg = dataclasses.replace(CFG, allowed_symbols=("BTCUSDT",))
    assert rule_of(rails(cfg), order(symbol="BTCUSDT")) is None
    assert rule_of(rails(cfg), order(symbol="ETHUSDT")) == "symbol_allowlist"
    assert rule_of(rails(cfg), order(symbol="ETHUSDT", reduce_only=True)) is None


@pytest.mark.parametrize("notional,rule", [(9.99, "min_notional"), (10.0, None),
                                           (1000.0, None), (1000.01, "max_notional")])
def test_notional_edges(notional, rule):
    big = AccountSnapshot(1e6, {}, 0.0)
    assert rule_of(rails(), order(notional), big) == rule


@pytest.mark.parametrize("existing,notional,rule", [(500.0, 1000.0, None),
                                                    (500.01, 1000.0, "symbol_exposure")])
def test_symbol_exposure_edges(existing, notional, rule):
    a = AccountSnapshot(1e6, {"BTCUSDT": existing}, existing)
    assert rule_of(rails(), order(notional), a) == rule
    assert rule_of(rails(), order(notional, reduce_only=True), a) is None


@pytest.mark.parametrize("gross,rule", [(1500.0, None), (1500.01, "gross_exposure")])
def test_gross_exposure_edges(gross, rule):
    a = AccountSnapshot(1e6, {"ETHUSDT": gross}, gross)
    assert rule_of(rails(), order(1000.0), a) == rule
    assert rule_of(rails(), order(1000.0, reduce_only=True), a) is None


@pytest.mark.parametrize("gross,leverage,rule", [
    (2000.0, 1.0, None),              # (2000 + 1000) / 1000 = 3.0: at the limit
    (2000.01, 1.0, "max_leverage"),   # just above
    (0.0, 3.0, None), (0.0, 3.01, "max_leverage"),  # the intent's own leverage
])
def test_max_leverage_edges(gross, leverage, rule):
    cfg = dataclasses.replace(CFG, max_gross_exposure_usdt=1e9, max_symbol_exposure_usdt=1e9)
    a = AccountSnapshot(1000.0, {"ETHUSDT": gross}, gross)
    assert rule_of(rails(cfg), order(1000.0, leverage=leverage), a) == rule


def test_order_rate_token_bucket_edges():
    r = rails()  # 60/min = 1 token per second, burst 2
    assert rule_of(r, order(), now=0.0) is None
    assert rule_of(r, order(), now=0.0) is None
    assert rule_of(r, order(), now=0.0) == "order_rate"     # burst spent
    assert rule_of(r, order(), now=0.999) == "order_rate"   # not quite one token yet
    assert rule_of(r, order(reduce_only=True), now=0.999) is None  # exits pass
    assert rule_of(r, order(), now=1.0) is None             # one token refilled
    assert rule_of(r, order(), now=1.0) == "order_rate"
    assert rule_of(r, order(), now=100.0) is None           # capped at the burst
    assert rule_of(r, order(), now=100.0) is None
    assert rule_of(r, order(), now=100.0) == "order_rate"


def test_a_rejected_order_does_not_spend_a_token():
    r = rails()
    for _ in range(5):
        assert rule_of(r, order(5.0), now=0.0) == "min_notional"
    assert rule_of(r, order(), now=0.0) is None
    assert rule_of(r, order(), now=0.0) is None


def test_venue_breaker_opens_half_opens_and_closes():
    r = rails()
    for ok in (True, False, True):
        r.record_venue(ok, now=1.0)
    assert rule_of(r, order(reduce_only=True), now=1.0) is None  # 1/3 errors, 3 < 4 requests
    r.record_venue(False, now=2.0)  # 2/4 = 0.5 >= 0.5 -> open
    assert r.breaker.state is BreakerState.OPEN
    assert rule_of(r, order(), now=2.0) == "venue_breaker"
    assert rule_of(r, order(reduce_only=True), now=31.99) == "venue_breaker"  # exits too
    # After 30 s: half-open, exactly one probe goes through.
    assert rule_of(r, order(reduce_only=True), now=32.0) is None
    assert r.breaker_gauge(now=32.0) == BreakerState.HALF_OPEN
    assert rule_of(r, order(reduce_only=True), now=32.5) == "venue_breaker"
    r.record_venue(False, now=33.0)  # the probe failed: open again
    assert rule_of(r, order(reduce_only=True), now=33.0) == "venue_breaker"
    assert rule_of(r, order(reduce_only=True), now=63.0) is None  # next probe
    r.record_venue(True, now=63.5)   # it succeeded: closed, window forgotten
    assert r.breaker.state is BreakerState.CLOSED
    assert rule_of(r, order(reduce_only=True), now=64.0) is None


def test_errors_outside_the_window_are_forgotten():
    r = rails()
    for t in (0.0, 1.0, 2.0):
        r.record_venue(False, now=t)
    r.record_venue(True, now=70.0)  # the three errors are older than 60 s
    assert r.breaker.state is BreakerState.CLOSED


def test_plugin_veto_and_its_failures():
    seen = []

    def veto(o):
        seen.append(o)
        return ("governor", "symbol frozen") if o.symbol == "ETHUSDT" else None

    r = rails(veto=veto)
    assert rule_of(r, order(symbol="BTCUSDT")) is None
    d = r.check(order(symbol="ETHUSDT"), FLAT, now=0.0)
    assert (d.ok, d.rule, d.detail) == (False, "plugin_veto", "governor: symbol frozen")
    assert rule_of(r, order(symbol="ETHUSDT", reduce_only=True)) is None  # exits not vetoed

    def broken(o):
        raise RuntimeError("plugin bug")

    # Fail closed for entries: a hook that cannot answer refuses the entry ...
    d = rails(veto=broken).check(order(), FLAT, now=0.0)
    assert (d.ok, d.rule) == (False, "plugin_veto") and "RuntimeError: plugin bug" in d.detail
    # ... and is never asked about an exit, so a broken plugin cannot trap a position.
    assert rule_of(rails(veto=broken), order(reduce_only=True)) is None


@pytest.mark.parametrize("verdict", [None, ("governor", "frozen")])
def test_a_veto_over_budget_refuses_the_entry_and_is_counted(verdict):
    overruns = []
    r = RiskRails(lambda: CFG, veto=lambda o: verdict, veto_budget_ms=lambda: 5.0,
                  on_veto_overrun=lambda: overruns.append(1), perf_counter=FakePerf(0.006))
    d = r.check(order(), FLAT, now=0.0)
    assert (d.ok, d.rule) == (False, "plugin_veto")
    assert d.detail == ("governor: frozen" if verdict else "veto hook took 6.000 ms > budget 5 ms")
    assert r.veto_overruns == len(overruns) == 1
    assert r.bucket.tokens is None  # a refused order takes no rate token
    # An exit is not asked at all: no overrun, no refusal.
    assert r.check(order(reduce_only=True), FLAT, now=0.0).ok and r.veto_overruns == 1


def test_a_veto_within_budget_passes():
    overruns = []
    r = RiskRails(lambda: CFG, veto=lambda o: None, veto_budget_ms=lambda: 5.0,
                  on_veto_overrun=lambda: overruns.append(1), perf_counter=FakePerf(0.004))
    assert r.check(order(), FLAT, now=0.0).ok
    assert r.veto_overruns == 0 and not overruns


# ---- properties ----------------------------------------------------------------------------

money = st.floats(min_value=0.0, max_value=5000.0, allow_nan=False)


@settings(max_examples=500, deadline=None)
@given(notional=money, existing=money, other=money, equity=st.floats(1.0, 5000.0),
       leverage=st.floats(0.0, 6.0), reduce_only=st.booleans(), halted=st.booleans())
def test_property_rails_match_a_reference_model(notional, existing, other, equity, leverage,
                                                reduce_only, halted):
    a = AccountSnapshot(equity, {"BTCUSDT": existing, "ETHUSDT": other}, existing + other,
                        halted)
    d = rails().check(order(notional, leverage=leverage, reduce_only=reduce_only), a, now=0.0)
    if reduce_only:
        assert d.ok  # exits pass every rule but the (closed) breaker
        return
    expected = (
        "kill_switch" if halted else
        "min_notional" if notional < 10.0 else
        "max_notional" if notional > 1000.0 else
        "symbol_exposure" if existing + notional > 1500.0 else
        "gross_exposure" if existing + other + notional > 2500.0 else
        "max_leverage" if leverage > 3.0 or (existing + other + notional) / equity > 3.0 else
        None)
    assert (None if d.ok else d.rule) == expected


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.floats(0.0, 600.0), min_size=1, max_size=60))
def test_property_token_bucket_never_exceeds_its_rate(times):
    r = rails()
    accepted = [t for t in sorted(times) if rule_of(r, order(), now=t) is None]
    # In any span of s seconds at most burst + s * rate orders pass.
    for i, t0 in enumerate(accepted):
        for j in range(i, len(accepted)):
            span = accepted[j] - t0
            assert j - i + 1 <= CFG.order_burst + span * CFG.max_orders_per_minute / 60 + 1e-9


def test_the_leverage_rail_is_the_leverage_modules_arithmetic() -> None:
    from dolphind.risk.leverage import account_leverage, leverage_refusal, symbol_leverage

    assert account_leverage(3_000.0, 1_000.0) == 3.0
    assert leverage_refusal(7.0, 0.0, 1_000.0, 6.0) == "intent leverage 7 > 6"
    assert leverage_refusal(2.0, 1.0, 0.0, 6.0) == "equity is not positive"
    assert leverage_refusal(2.0, 6_500.0, 1_000.0, 6.0) == "account leverage would be 6.500 > 6"
    assert leverage_refusal(2.0, 6_000.0, 1_000.0, 6.0) is None  # at the cap is allowed
    assert symbol_leverage({"BTCUSDT": 3}, 0, "BTCUSDT") == 3
    assert symbol_leverage({"BTCUSDT": 3}, 5, "ETHUSDT") == 5
