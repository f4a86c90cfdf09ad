"""Governor (M25): vetoes before the order, breaches after the fill, and a halt that only an
operator lifts, also across a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dolphind.events import Fill
from dolphind.risk.rails import AccountSnapshot, OrderCheck, RiskRails
from dolphind.config import RiskConfig
from dolphind_governor import GovernorPlugin
from dolphind_governor.policy import Account, check_account, check_order
from dolphind_governor.settings import GovernorSettings, load_settings
from tests.unit.plugins.conftest import Rig, jsonl

LIMITS = {"max_leverage": 3.0, "max_daily_loss_usdt": 500.0, "max_drawdown": 0.10,
          "max_position_notional_usdt": 5000.0, "allowed_symbols": ["BTCUSDT", "ETHUSDT"]}
S = GovernorSettings(**{**LIMITS, "allowed_symbols": ("BTCUSDT", "ETHUSDT")})


def order(symbol: str = "BTCUSDT", side: str = "SELL", notional: float = 1000.0,
          leverage: float = 2.0, reduce_only: bool = False) -> OrderCheck:
    return OrderCheck(symbol, side, notional, leverage, reduce_only, client_id="dd-1")


def fill(symbol: str, side: str, qty: float, price: float, n: int = 1) -> Fill:
    return Fill(f"f{n}", f"dd-{n}", symbol, side, qty, price, 0.0, "TAKER", n)


def test_settings_problems_name_the_key() -> None:
    _, problems = load_settings({"max_drawdown": 1.5, "allowed_symbols": ["btc-usdt"],
                                 "max_leverage": 0})
    assert problems == ["max_leverage: must be > 0", "max_drawdown: must be in (0, 1)",
                        "allowed_symbols[0]: 'btc-usdt' is not a venue symbol like 'BTCUSDT'"]


@pytest.mark.parametrize("o, acct, rule", [
    (order(), Account(), None),
    (order(symbol="DOGEUSDT"), Account(), "allowed_symbols"),
    (order(leverage=3.5), Account(), "max_leverage"),
    (order(notional=4000.0), Account(positions_usdt={"BTCUSDT": -1500.0}), "max_position_notional"),
    # An order that shrinks an oversized position is fine.
    (order(side="BUY", notional=1000.0), Account(positions_usdt={"BTCUSDT": -7000.0}), None),
    (order(notional=2000.0), Account(equity_usdt=1000.0, gross_exposure_usdt=1500.0),
     "max_leverage"),
    # Exits are never refused.
    (order(symbol="DOGEUSDT", leverage=9, notional=1e9, reduce_only=True), Account(), None),
])
def test_pre_trade_policy(o: OrderCheck, acct: Account, rule: str | None) -> None:
    got = check_order(o, acct, S)
    assert (got.rule if got else None) == rule


def test_account_policy() -> None:
    acct = Account(equity_usdt=9000.0, gross_exposure_usdt=30_000.0, drawdown=0.12,
                   positions_usdt={"BTCUSDT": -6000.0, "XRPUSDT": 10.0},
                   day_start_equity_usdt=10_000.0)
    assert [b.rule for b in check_account(acct, S)] == [
        "max_position_notional", "allowed_symbols", "max_leverage", "max_daily_loss",
        "max_drawdown"]
    assert check_account(Account(equity_usdt=10_000.0, gross_exposure_usdt=1000.0,
                                 drawdown=0.0, day_start_equity_usdt=10_000.0), S) == []


async def _governor(rig: Rig) -> GovernorPlugin:
    g = GovernorPlugin()
    assert g.validate(LIMITS) == []
    await g.start(rig.ctx("governor", LIMITS))
    return g


def _folder(rig: Rig) -> Path:
    return rig.tmp / "var" / "plugins" / "governor"


async def test_vetoes_an_order_over_a_limit_through_the_rails(rig: Rig) -> None:
    g = await _governor(rig)
    rails = RiskRails(lambda: RiskConfig(), veto=lambda o: ("governor", r) if (r := g.veto(o))
                      else None)
    acct = AccountSnapshot(equity_usdt=10_000.0, symbol_exposure_usdt={},
                           gross_exposure_usdt=0.0)
    ok = rails.check(order(notional=1000.0), acct, now=0.0)
    assert ok.ok
    refused = rails.check(order(symbol="ETHUSDT", notional=6000.0), acct, now=1.0)
    assert (refused.ok, refused.rule) == (False, "plugin_veto")
    assert "max_position_notional" in refused.detail
    assert rig.sample("dolphind_m25_vetoes_total", {"rule": "max_position_notional"}) == 1
    assert not rig.control.halted  # an order stopped in time is not a breach
    await g.on_tick(rig.clock.tick())  # compliance lines are written off the veto path
    lines = jsonl(_folder(rig) / "compliance.jsonl")
    assert [(x["event"], x["rule"]) for x in lines] == [("veto", "max_position_notional")]


async def test_breach_on_fill_halts_until_an_operator_resumes_across_restarts(rig: Rig) -> None:
    g = await _governor(rig)
    await g.on_fill(fill("BTCUSDT", "SELL", 0.05, 60_000.0))  # 3000 USDT short: fine
    assert not rig.control.halted
    await g.on_fill(fill("BTCUSDT", "SELL", 0.05, 60_000.0, n=2))  # 6000 > 5000
    assert rig.control.halt_holds == {
        "governor": "max_position_notional: BTCUSDT position 6000.00 > 5000 USDT"}
    incident = [a for a in rig.control.recent if a.action == "incident"][-1]
    assert incident.detail["kind"] == "governor_halt"
    assert incident.detail["severity"] == "critical"
    assert rig.sample("dolphind_m25_violations_total", {"rule": "max_position_notional"}) == 1
    assert rig.sample("dolphind_m25_halted") == 1
    # While halted, the governor also refuses every entry itself.
    assert g.veto(order(notional=10.0)).startswith("governor halt in force")
    assert g.veto(order(reduce_only=True)) is None
    await g.stop()
    state = json.loads((_folder(rig) / "governor_state.json").read_text())
    assert state["halted"] is True

    # Restart: nothing is halted until the governor starts and reads its state.
    await rig.restart()
    g = await _governor(rig)
    assert rig.control.halted and "persisted" in rig.control.halt_holds["governor"]
    assert rig.sample("dolphind_m25_halted") == 1

    # A resume that is not the operator's is answered by halting again.
    rig.control.resume("scheduler")
    await g.on_control(rig.control.recent[-1])
    assert rig.control.halted and "only an operator" in rig.control.halt_holds["governor"]

    # The operator (token-protected POST /kill -> cause http:ADDR) lifts it for good.
    rig.control.resume("http:127.0.0.1")
    await g.on_control(rig.control.recent[-1])
    assert not rig.control.halted and not g.halted
    assert rig.sample("dolphind_m25_halted") == 0
    await g.stop()
    await rig.restart()
    g = await _governor(rig)
    assert not rig.control.halted
    events = [x["event"] for x in jsonl(_folder(rig) / "compliance.jsonl")]
    assert events == ["violation", "halt", "halt_restored", "resume_refused", "resumed"]


async def test_daily_loss_and_drawdown_from_the_account_figures(rig: Rig) -> None:
    g = await _governor(rig)
    ex = rig.metrics.execution
    ex.equity.set(10_000.0)
    ex.gross_exposure.set(5000.0)
    await g.on_tick(rig.clock.tick())  # the day's first equity: 10 000
    assert g.day == "2026-01-01" and g.day_start_equity == 10_000.0
    ex.equity.set(9600.0)
    ex.drawdown.set(0.04)
    await g.on_tick(rig.clock.tick())
    assert not rig.control.halted
    ex.equity.set(9500.0)
    ex.drawdown.set(0.05)
    await g.on_tick(rig.clock.tick())
    assert rig.control.halt_holds["governor"].startswith("max_daily_loss: daily loss 500.00")
    # A new UTC day starts from the equity it finds.
    rig.clock.advance(86_400)
    await g.on_tick(rig.clock.tick())
    assert g.day == "2026-01-02" and g.day_start_equity == 9500.0


async def test_an_operator_resume_rearms_from_the_account_at_that_moment(rig: Rig) -> None:
    """Issue #15: no halt/resume fight. The resume acknowledges the breach; drawdown is then
    measured from the resume equity, a position limit re-arms once the position is back
    within it; both halt again on a new breach. Audited (compliance line and incident)."""
    g = await _governor(rig)
    ex = rig.metrics.execution
    ex.equity.set(10_000.0)
    ex.gross_exposure.set(1000.0)
    await g.on_tick(rig.clock.tick())
    ex.equity.set(9900.0)
    ex.drawdown.set(0.12)  # 12% below the all-time peak >= 10% (daily loss only 100)
    await g.on_tick(rig.clock.tick())
    assert rig.control.halt_holds["governor"].startswith("max_drawdown")
    rig.control.resume("http:127.0.0.1")
    await g.on_control(rig.control.recent[-1])
    assert not rig.control.halted
    for _ in range(5):  # the breach the operator looked at persists: no re-halt
        await g.on_tick(rig.clock.tick())
    assert not rig.control.halted and g.drawdown_peak == 9900.0
    ex.equity.set(9600.0)  # 3% below the resume equity: fine
    ex.drawdown.set(0.15)
    await g.on_tick(rig.clock.tick())
    assert not rig.control.halted
    ex.equity.set(8900.0)  # 10.1% below the resume equity: a new breach
    ex.drawdown.set(0.21)
    await g.on_tick(rig.clock.tick())
    assert "max_drawdown: drawdown 10.10%" in rig.control.halt_holds["governor"]
    rearmed = [a for a in rig.control.recent if a.action == "incident"
               and a.detail["kind"] == "governor_rearmed"]
    assert rearmed and rearmed[0].detail["drawdown_from_equity_usdt"] == 9900.0
    resumed = [x for x in jsonl(_folder(rig) / "compliance.jsonl") if x["event"] == "resumed"]
    assert resumed[0]["acknowledged"] == ["max_drawdown"]


async def test_a_position_limit_acknowledged_at_resume_rearms_once_back_within(rig: Rig) -> None:
    g = await _governor(rig)
    await g.on_fill(fill("BTCUSDT", "SELL", 0.1, 60_000.0))  # 6000 > 5000
    assert rig.control.halted
    rig.control.resume("http:127.0.0.1")
    await g.on_control(rig.control.recent[-1])
    await g.on_fill(fill("BTCUSDT", "SELL", 0.001, 60_000.0, n=2))  # still past it
    assert not rig.control.halted and g.acknowledged == {"max_position_notional"}
    await g.on_fill(fill("BTCUSDT", "BUY", 0.05, 60_000.0, n=3))  # back within: re-armed
    assert g.acknowledged == set()
    await g.on_fill(fill("BTCUSDT", "SELL", 0.05, 60_000.0, n=4))  # past it again
    assert rig.control.halt_holds["governor"].startswith("max_position_notional")
    events = [x["event"] for x in jsonl(_folder(rig) / "compliance.jsonl")]
    assert events == ["violation", "halt", "resumed", "rearmed", "violation", "halt"]
