"""The control plane's overrides as risk/overrides.py applies them: to the rails' config and to
new entries (exits are never shrunk)."""

from __future__ import annotations

import pytest

from dolphind.config import RiskConfig
from dolphind.control import Control
from dolphind.events import OrderIntent
from dolphind.risk.overrides import RiskOverrides, overridden, shrunk_entry
from dolphind.telemetry.metrics import Metrics


def _intent(reduce_only: bool) -> OrderIntent:
    return OrderIntent("i1", 1, "BTCUSDT", "SELL", 1000.0, 2.0, reduce_only, "ENTRY", 40_000.0,
                       gates=(("irp", 1.0),))


def test_no_override_leaves_the_config_itself() -> None:
    base = RiskConfig()
    assert overridden(base, 1.0, 1.0) is base


def test_the_multiplier_scales_the_caps_and_the_throttle_the_rate() -> None:
    base = RiskConfig()
    r = overridden(base, 0.5, 0.25)
    assert r.max_orders_per_minute == base.max_orders_per_minute * 0.25
    assert r.max_order_notional_usdt == base.max_order_notional_usdt * 0.5
    assert r.max_symbol_exposure_usdt == base.max_symbol_exposure_usdt * 0.5
    assert r.max_gross_exposure_usdt == base.max_gross_exposure_usdt * 0.5
    # What an override does not name stays as configured.
    assert (r.max_leverage, r.min_order_notional_usdt, r.order_burst) == (
        base.max_leverage, base.min_order_notional_usdt, base.order_burst)


def test_an_entry_is_shrunk_and_says_so_an_exit_never_is() -> None:
    entry = shrunk_entry(_intent(False), 0.5)
    assert entry.notional_usdt == 500.0
    assert entry.gates == (("irp", 1.0), ("risk_multiplier", 0.5))
    exit_ = _intent(True)
    assert shrunk_entry(exit_, 0.5) is exit_
    same = _intent(False)
    assert shrunk_entry(same, 1.0) is same


@pytest.fixture
def control() -> tuple[Control, list[float]]:
    now = [0.0]
    return Control(Metrics(), lambda cause: None, monotonic=lambda: now[0]), now


def test_overrides_follow_the_control_plane_until_they_expire(control) -> None:
    c, now = control
    base = RiskConfig()
    o = RiskOverrides(c, lambda: base)
    assert o.risk_config() is base
    c.set_risk_multiplier("plugin:guardian", 0.5, 60)
    c.throttle("plugin:guardian", 0.25, 120)
    assert o.risk_config().max_gross_exposure_usdt == base.max_gross_exposure_usdt * 0.5
    assert o.risk_config().max_orders_per_minute == base.max_orders_per_minute * 0.25
    assert o.intent(_intent(False)).notional_usdt == 500.0
    assert o.intent(_intent(True)).notional_usdt == 1000.0
    now[0] = 61.0  # the multiplier ran out; the throttle did not
    assert o.risk_config().max_gross_exposure_usdt == base.max_gross_exposure_usdt
    assert o.risk_config().max_orders_per_minute == base.max_orders_per_minute * 0.25
    assert o.intent(_intent(False)).notional_usdt == 1000.0
    now[0] = 121.0
    assert o.risk_config() is base


def test_the_rails_config_scales_rate_and_caps_until_the_overrides_are_cleared() -> None:
    metrics = Metrics()
    c = Control(metrics, lambda cause: None, monotonic=lambda: 0.0)
    base = RiskConfig()
    o = RiskOverrides(c, lambda: base)
    assert o.risk_config() is base
    c.throttle("guardian", 0.25, 30, key="rejections")
    c.set_risk_multiplier("http:127.0.0.1", 0.5, 30)
    r = o.risk_config()
    assert r.max_orders_per_minute == base.max_orders_per_minute * 0.25
    assert r.max_gross_exposure_usdt == base.max_gross_exposure_usdt * 0.5
    assert r.max_symbol_exposure_usdt == base.max_symbol_exposure_usdt * 0.5
    assert r.max_order_notional_usdt == base.max_order_notional_usdt * 0.5
    assert metrics.registry.get_sample_value("dolphind_order_rate_factor", {}) == 0.25
    c.clear_overrides("http:127.0.0.1")
    assert o.risk_config() is base
