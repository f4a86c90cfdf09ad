"""[risk], [execution], [store]: defaults, and limits that contradict each other are refused."""

from __future__ import annotations

import pytest

from dolphind.config import ConfigError, config_from_dict, plan_reload


def test_defaults_follow_the_spec():
    cfg = config_from_dict({})
    x = cfg.execution
    assert (x.maker_fee_bps, x.taker_fee_bps) == (2.0, 5.0)
    assert (x.maker_fill_rate_entry, x.maker_fill_rate_exit) == (0.62, 0.50)
    assert (x.tp_slippage_bps, x.sl_slippage_bps, x.other_slippage_bps) == (2.0, 5.0, 2.0)
    assert cfg.store.synchronous == "NORMAL" and cfg.risk.trading_enabled


@pytest.mark.parametrize("raw,needle", [
    ({"risk": {"min_order_notional_usdt": 100.0, "max_order_notional_usdt": 50.0}},
     "min_order_notional_usdt must be <="),
    ({"risk": {"max_symbol_exposure_usdt": 10.0, "max_gross_exposure_usdt": 5.0}},
     "max_symbol_exposure_usdt must be <="),
    ({"risk": {"breaker_error_rate": 0.0}}, "risk.breaker_error_rate"),
    ({"risk": {"max_leverage": -1.0}}, "risk.max_leverage: must be > 0"),
    ({"execution": {"maker_fill_rate_entry": 1.2}}, "execution.maker_fill_rate_entry"),
    ({"execution": {"taker_fee_bps": -1.0}}, "execution.taker_fee_bps"),
    ({"execution": {"capital_usdt": 0.0}}, "execution.capital_usdt"),
    ({"execution": {"client_id_prefix": "toolong"}}, "execution.client_id_prefix"),
    ({"execution": {"fee_model": "random"}}, "execution.fee_model"),
    ({"store": {"synchronous": "OFF"}}, "store.synchronous"),
    ({"risk": {"max_leverag": 3.0}}, "risk.max_leverag: unknown key"),
])
def test_bad_values_are_named(raw, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert any(needle in p for p in err.value.problems), err.value.problems


def test_fees_reload_but_capital_and_store_need_a_restart():
    old = config_from_dict({})
    new = config_from_dict({"execution": {"taker_fee_bps": 4.0, "capital_usdt": 5000.0},
                            "store": {"path": "other.sqlite"},
                            "risk": {"max_leverage": 3.0}})
    plan = plan_reload(old, new)
    assert set(plan.applied) == {"execution.taker_fee_bps", "risk.max_leverage"}
    assert set(plan.needs_restart) == {"execution.capital_usdt", "store.path"}
