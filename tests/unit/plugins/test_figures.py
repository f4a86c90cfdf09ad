"""The figures contract is filled from the daemon's telemetry objects, figure by figure."""

from __future__ import annotations

import dataclasses

import pytest

from dolphind.plugins.figures import Figures, figures_from_metrics
from dolphind.risk.rails import RULES
from dolphind.telemetry.metrics import Metrics


@pytest.fixture(scope="module")
def fresh() -> Figures:
    return figures_from_metrics(Metrics(risk_rules=RULES))


def test_a_fresh_daemon_has_no_account_and_no_feed(fresh: Figures) -> None:
    assert fresh.account_known is False and fresh.account_leverage is None
    assert fresh.position_notional_usdt == {}
    # Every rail's counter is exported at 0 from the start (so a window has its baseline).
    assert "max_leverage" in fresh.risk_rejections
    assert set(fresh.risk_rejections.values()) == {0.0}
    assert fresh.feed_message_age_s is None and fresh.feed_gaps_total == 0.0
    assert fresh.feed_heartbeat_ts is None and fresh.feed_age_s(1000.0) is None
    assert fresh.halted is False
    assert fresh.bars_total == 0.0  # the counter's value, not its creation time
    assert fresh.ack_count == 0.0 and fresh.ack_seconds_sum == 0.0


def test_every_figure_comes_from_its_metric() -> None:
    m = Metrics()
    x = m.execution
    x.equity.set(10_500.0)
    x.peak_equity.set(12_000.0)
    x.drawdown.set(0.125)
    x.gross_exposure.set(21_000.0)
    x.position_notional.labels("BTCUSDT").set(-15_000.0)
    x.position_notional.labels("ETHUSDT").set(6_000.0)
    x.risk_rejections.labels("max_leverage").inc(3)
    x.risk_rejections.labels("order_rate").inc()
    x.intent_to_ack.observe(0.2)
    x.intent_to_ack.observe(0.4)
    m.feed_last_message_age.labels("market").set(1.5)
    m.feed_last_message_age.labels("user").set(7.0)
    m.feed_gaps.labels("stall").inc(2)
    m.feed_gaps.labels("disconnect").inc()
    m.stage_heartbeat.labels("scan").set(111.0)
    m.stage_heartbeat.labels("feed").set(100.0)
    m.trading_halted.set(1)
    m.bars.inc(42)

    f = figures_from_metrics(m)

    assert {k: v for k, v in f.risk_rejections.items() if v} == {"max_leverage": 3.0,
                                                                "order_rate": 1.0}
    assert dataclasses.replace(f, risk_rejections={}) == Figures(
        equity_usdt=10_500.0, peak_equity_usdt=12_000.0, drawdown=0.125,
        gross_exposure_usdt=21_000.0,
        position_notional_usdt={"BTCUSDT": -15_000.0, "ETHUSDT": 6_000.0},
        ack_seconds_sum=pytest.approx(0.6), ack_count=2.0,
        feed_message_age_s=7.0,  # the worst connection
        feed_gaps_total=3.0, feed_heartbeat_ts=100.0, halted=True, bars_total=42.0)
    assert f.account_known and f.account_leverage == pytest.approx(2.0)
    assert f.feed_age_s(wall_now=200.0) == 7.0  # the feed's own figure wins over the heartbeat
    assert dataclasses.replace(f, feed_message_age_s=None).feed_age_s(wall_now=130.0) == 30.0


def test_a_snapshot_is_frozen(fresh: Figures) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        fresh.equity_usdt = 1.0  # type: ignore[misc]
