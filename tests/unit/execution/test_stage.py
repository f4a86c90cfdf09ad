"""The execution stage in-process: real Channel, real paper venue, real SQLite in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any, AsyncIterator

import orjson
import pytest

from dolphind.app.books import open_books
from dolphind.app.execution import build_execution
from dolphind.channels import Channel, Overflow
from dolphind.config import Config, config_from_dict
from dolphind.events import Bar, Order, OrderIntent, frozen_array
from dolphind.execution.ledger import Ledger
from dolphind.venues.paper import PaperVenue
from dolphind.orders.router import client_order_id
from dolphind.execution.stage import ExecutionStage
from dolphind.execution.state import ExecutionServices
from dolphind.ports import NoExecutionEvents
from dolphind.control import Control
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.risk.rails import RULES
from dolphind.store.audit import AuditLog, split_line, verify
from dolphind.store.sqlite import Store, order_op
from tests.conftest import FakePerf, eventually

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def bar(seq: int, btc: float, eth: float = 2500.0) -> Bar:
    return Bar(ts_ns=seq * 5_000_000_000, symbols=SYMBOLS, closes=frozen_array([btc, eth]),
               interval_s=5.0, seq=seq)


def intent(iid: str, side: str, notional: float, reduce_only: bool = False,
           reason: str = "ENTRY", symbol: str = "BTCUSDT", ts: int = 0, ref: float = 0.0,
           leverage: float = 2.0) -> OrderIntent:
    return OrderIntent(iid, ts, symbol, side, notional, leverage, reduce_only, reason, ref,
                       gates=(("vel_div", -0.031),))


def config(**sections: Any) -> Config:
    base: dict[str, Any] = {"execution": {"fee_model": "blended"}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return config_from_dict(base)


@dataclasses.dataclass
class Rig:
    stage: ExecutionStage
    intents: Channel[Any]
    store: Store
    audit: AuditLog
    venue: PaperVenue
    control: Control
    metrics: Metrics
    task: asyncio.Task[None]

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def feed(self, *items: Any) -> None:
        for item in items:
            await self.intents.put(item)

    async def settle(self) -> None:
        """Wait until the stage has taken everything and no order is working."""
        await eventually(lambda: len(self.intents) == 0 and not self.stage.orders
                         and self.stage._book.lock.locked() is False, what="stage idle")
        await asyncio.sleep(0.01)


@pytest.fixture
def metrics_factory():
    # Built here, outside the event loop: Metrics' process collector reads /proc.
    ready = [Metrics() for _ in range(3)]
    return ready.pop


@contextlib.asynccontextmanager
async def rig(tmp_path, info, metrics: Metrics, cfg: Config,
              control: Control | None = None, events: Any = None,
              veto: Any = None) -> AsyncIterator[Rig]:
    store = await Store.open(tmp_path / "dolphind.sqlite", metrics.execution, metrics.channels)
    audit = await AuditLog.open(tmp_path / "audit.jsonl", metrics.execution)
    venue = PaperVenue(info, lambda: cfg.execution, fallback=True)
    control = control or Control(metrics, lambda cause: None)
    health = Health(metrics, lambda: 30.0)
    health.register("execution")
    intents: Channel[Any] = Channel("intents", 64, Overflow.BLOCK, metrics.channels)
    async with store, audit:
        services = ExecutionServices(venue, store, audit, control, health, metrics, lambda: cfg,
                                     events or NoExecutionEvents(),
                                     backtest=cfg.mode == "backtest")
        stage = build_execution(intents, services, veto=veto)
        task = asyncio.create_task(stage.run())
        r = Rig(stage, intents, store, audit, venue, control, metrics, task)
        await eventually(lambda: stage.ready, what="stage ready")
        try:
            yield r
        finally:
            intents.close()
            await asyncio.wait_for(task, 10)


def audit_events(path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_bytes().splitlines():
        out.append(orjson.loads(split_line(line)[0]))
    return out


async def test_intents_become_fills_positions_and_equity(tmp_path, info_2021, metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, info_2021, m, config()) as r:
        await r.feed(bar(1, 40_000.0),
                     intent("s1:BTCUSDT:entry", "SELL", 2000.0, ts=bar(1, 0).ts_ns))
        await r.settle()
        pos = r.stage.portfolio.positions["BTCUSDT"]
        assert (pos.qty, pos.avg_price) == (-0.05, 40_000.0)
        assert r.stage.portfolio.cash_usdt == pytest.approx(9_999.372, abs=1e-9)
        await r.feed(bar(2, 39_600.0))
        await r.settle()
        assert r.stage.capital_view().unrealised_pnl_usdt == pytest.approx(20.0, abs=1e-9)
        assert r.metric("dolphind_equity_usdt") == pytest.approx(10_019.372, abs=1e-9)
        await r.feed(intent("s2:BTCUSDT:exit", "BUY", 1980.0, True, "FIXED_TP",
                            ts=bar(2, 0).ts_ns))
        await r.settle()
        view = r.stage.capital_view()
        assert not view.positions
        assert view.cash_usdt == pytest.approx(10_018.2828614, abs=1e-9)
        assert view.realised_pnl_usdt == pytest.approx(19.604, abs=1e-9)
        assert view.peak_equity_usdt == pytest.approx(10_019.372, abs=1e-9)
        assert view.drawdown == pytest.approx(1 - 10_018.2828614 / 10_019.372, abs=1e-12)
        assert r.metric("dolphind_fills_total", side="SELL", liquidity="BLENDED") == 1
        assert r.metric("dolphind_fills_total", side="BUY", liquidity="BLENDED") == 1
        assert r.metric("dolphind_orders_total", state="filled") == 2
        assert r.metric("dolphind_fees_usdt_total") == pytest.approx(0.628 + 0.6931386)
        assert r.metric("dolphind_intent_to_fill_seconds_count") == 2
        assert r.metric("dolphind_intent_to_ack_seconds_count") == 2
        orders = r.stage.orders_view()["recent"]
        assert [o["state"] for o in orders][:2] == ["filled", "filled"]
        assert r.stage.status()["last_intents"][-1]["outcome"] == "submitted"
    # After the stage and store closed: the books on disk agree.
    async with await Store.open(tmp_path / "dolphind.sqlite") as store:
        state = await store.load_state()
        fills = await store.read(lambda c: c.execute(
            "SELECT side, qty, price, realised_pnl_usdt FROM fills ORDER BY ts_ns").fetchall())
        snaps = await store.read(lambda c: c.execute(
            "SELECT COUNT(*) FROM equity_snapshots").fetchone()[0])
        assert await store.integrity_check() == "ok"
    assert state.account.cash_usdt == pytest.approx(10_018.2828614, abs=1e-9)
    assert fills[1][0] == "BUY" and fills[1][3] == pytest.approx(19.604, abs=1e-9)
    assert snaps >= 2
    assert verify(tmp_path / "audit.jsonl").ok
    events = [e["event"] for e in audit_events(tmp_path / "audit.jsonl")]
    assert events.count("order.submitted") == 2 and events.count("fill") == 2


async def test_the_same_intent_twice_makes_one_order(tmp_path, info_2021, metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, info_2021, m, config()) as r:
        same = intent("s7:BTCUSDT:entry", "SELL", 1000.0, ts=1)
        await r.feed(bar(1, 40_000.0), same, same)
        await r.settle()
        assert r.metric("dolphind_execution_intents_total", outcome="duplicate") == 1
        assert r.metric("dolphind_execution_intents_total", outcome="submitted") == 1
        assert r.stage.portfolio.positions["BTCUSDT"].qty == -0.025
    # And again after a restart: the id is in the store, no second order.
    m2 = metrics_factory()
    async with rig(tmp_path, info_2021, m2, config()) as r:
        await r.feed(bar(2, 40_000.0), same)
        await r.settle()
        assert r.metric("dolphind_execution_intents_total", outcome="duplicate") == 1
        assert r.stage.portfolio.positions["BTCUSDT"].qty == -0.025
        n = await r.store.read(lambda c: c.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
        assert n == 1


async def test_restart_restores_capital_positions_and_scan(tmp_path, info_2021, metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, info_2021, m, config()) as r:
        await r.feed(bar(1, 40_000.0), intent("a", "SELL", 2000.0, ts=1),
                     intent("b", "BUY", 1000.0, symbol="ETHUSDT", ts=1))
        await r.settle()
        await r.store.save_scan_checkpoint(4242)
        await r.feed(bar(2, 39_000.0, 2600.0))
        await r.settle()
        before = r.stage.capital_view()
    m2 = metrics_factory()
    # A different starting capital in the config must not win over the store.
    async with rig(tmp_path, info_2021, m2, config(execution={"capital_usdt": 1.0})) as r:
        after = r.stage.capital_view()
        assert r.stage.restored.scan_number == 4242
        assert after.cash_usdt == before.cash_usdt
        assert after.peak_equity_usdt == before.peak_equity_usdt
        assert {p.symbol: (p.qty, p.avg_price) for p in after.positions} == {
            "BTCUSDT": (-0.05, 40_000.0), "ETHUSDT": (0.4, 2500.0)}
        # The paper venue was rebuilt from the store: an exit closes the restored position.
        await r.feed(bar(3, 39_000.0, 2600.0),
                     intent("c", "BUY", 1.0, True, "MAX_HOLD", ts=3))
        await r.settle()
        assert "BTCUSDT" not in r.stage.portfolio.positions
        assert r.metric("dolphind_reconcile_differences_total", kind="position") == 0
    assert verify(tmp_path / "audit.jsonl").ok


async def test_an_order_recorded_but_never_sent_expires_on_restart(tmp_path, info_2021,
                                                                   metrics_factory):
    # Simulate kill -9 between "order committed as NEW" and "venue submit".
    cid = client_order_id("lost")
    async with await Store.open(tmp_path / "dolphind.sqlite") as store:
        await store.write(order_op(Order(cid, "lost", "BTCUSDT", "SELL", 0.05, "MARKET", 0.0,
                                         False, "ENTRY", "new", created_ns=1, updated_ns=1)),
                          wait=True)
    async with rig(tmp_path, info_2021, metrics_factory(), config()) as r:
        assert not r.stage.orders
        assert r.stage.recent_orders[-1].state == "expired"
        await r.feed(bar(1, 40_000.0), intent("lost", "SELL", 2000.0, ts=1))
        await r.settle()
        assert r.metric("dolphind_execution_intents_total", outcome="duplicate") == 1
        assert not r.stage.portfolio.positions  # never sent twice


def _venue_fails_once(r: Rig) -> None:
    """The venue refuses the next order (an error the breaker counts), then works again."""
    from dolphind.venues.venue import VenueRejected

    submit = r.venue.submit

    async def failing(order: Order) -> Order:
        r.venue.submit = submit  # type: ignore[method-assign]
        raise VenueRejected("-1001 internal error")

    r.venue.submit = failing  # type: ignore[method-assign]


def _slow_veto(r: Rig) -> None:
    r.stage.rails._perf = FakePerf(0.006)  # every veto call 'takes' 6 ms > the 5 ms budget


def _broken_veto(order: Any) -> None:
    raise RuntimeError("plugin bug")


@dataclasses.dataclass(frozen=True)
class RuleCase:
    rule: str
    risk: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Intents before the refused one ("x"), e.g. to use up the rate or trip the breaker.
    before: tuple[OrderIntent, ...] = ()
    the_intent: OrderIntent = intent("x", "SELL", 500.0, ts=1)
    veto: Any = None
    setup: Any = None
    detail: str = ""


RULE_CASES = [
    RuleCase("kill_switch", {"trading_enabled": False}),
    RuleCase("symbol_allowlist", {"allowed_symbols": ["ETHUSDT"]}),
    # 50 USDT -> 0.001 BTC (the step) = 40 USDT < 100
    RuleCase("min_notional", {"min_order_notional_usdt": 100.0},
             the_intent=intent("x", "SELL", 50.0, ts=1)),
    RuleCase("max_notional", {"max_order_notional_usdt": 1000.0},
             the_intent=intent("x", "SELL", 1500.0, ts=1)),
    RuleCase("symbol_exposure", {"max_symbol_exposure_usdt": 1000.0},
             the_intent=intent("x", "SELL", 1500.0, ts=1)),
    RuleCase("gross_exposure", {"max_gross_exposure_usdt": 1500.0,
                                "max_symbol_exposure_usdt": 1500.0},
             before=(intent("e", "BUY", 1000.0, symbol="ETHUSDT", ts=1),),
             the_intent=intent("x", "SELL", 600.0, ts=1)),
    RuleCase("max_leverage", {"max_leverage": 1.5},
             the_intent=intent("x", "SELL", 500.0, ts=1, leverage=2.0)),
    RuleCase("order_rate", {"max_orders_per_minute": 1.0, "order_burst": 1},
             before=(intent("e", "BUY", 500.0, symbol="ETHUSDT", ts=1),)),
    RuleCase("venue_breaker", {"breaker_min_requests": 1, "breaker_error_rate": 0.5,
                               "breaker_open_s": 3600.0},
             before=(intent("e", "BUY", 500.0, symbol="ETHUSDT", ts=1),),
             setup=_venue_fails_once),
    RuleCase("plugin_veto", veto=lambda o: ("governor", "symbol frozen"),
             detail="governor: symbol frozen"),
    RuleCase("plugin_veto", veto=_broken_veto,
             detail="veto hook failed: RuntimeError: plugin bug"),
    RuleCase("plugin_veto", veto=lambda o: None, setup=_slow_veto,
             detail="veto hook took 6.000 ms > budget 5 ms"),
]


@pytest.mark.parametrize("case", RULE_CASES,
                         ids=[f"{c.rule}-{i}" for i, c in enumerate(RULE_CASES)])
async def test_rejections_are_named_in_metrics_audit_and_store(
        tmp_path, info_2021, metrics_factory, case):
    m = metrics_factory()
    async with rig(tmp_path, info_2021, m, config(risk=case.risk), veto=case.veto) as r:
        if case.setup is not None:
            case.setup(r)
        await r.feed(bar(1, 40_000.0), *case.before, case.the_intent)
        await r.settle()
        assert r.metric("dolphind_risk_rejections_total", rule=case.rule) == 1
        assert sum(r.metric("dolphind_risk_rejections_total", rule=other)
                   for other in RULES) == 1  # nothing else was refused
        assert "BTCUSDT" not in r.stage.portfolio.positions
        assert r.stage.status()["last_intents"][-1]["outcome"] == f"risk_rejected:{case.rule}"
        assert r.metric("dolphind_risk_veto_overruns_total") == (case.setup is _slow_veto)
        await r.audit.flush()
        rejected = [e["data"] for e in audit_events(tmp_path / "audit.jsonl")
                    if e["event"] == "risk.rejected"]
        assert [(e["rule"], e["intent_id"]) for e in rejected] == [(case.rule, "x")]
        if case.detail:
            assert rejected[0]["detail"] == case.detail
        await eventually(lambda: r.store.backlog == 0, what="store drained")
        row = await r.store.read(lambda c: c.execute(
            "SELECT state, reject_reason FROM orders WHERE intent_id = 'x'").fetchall())
        assert row == [("rejected", f"risk:{case.rule}")]
        fills = await r.store.read(lambda c: c.execute(
            "SELECT COUNT(*) FROM fills WHERE symbol = 'BTCUSDT'").fetchone()[0])
        assert fills == 0


def test_every_rule_is_shown_through_the_stage():
    assert {c.rule for c in RULE_CASES} == set(RULES)


async def test_router_rejection_is_named(tmp_path, info_2021, metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, info_2021, m, config()) as r:
        await r.feed(bar(1, 40_000.0), intent("x", "BUY", 1.0, True, "FIXED_TP", ts=1))
        await r.settle()
        assert r.metric("dolphind_router_rejections_total", reason="nothing_to_reduce") == 1


async def test_halt_stops_entries_not_exits_and_flatten_closes(tmp_path, info_2021,
                                                               metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, info_2021, m, config()) as r:
        await r.feed(bar(1, 40_000.0, 2500.0), intent("e1", "SELL", 2000.0, ts=1),
                     intent("e2", "BUY", 1000.0, symbol="ETHUSDT", ts=1))
        await r.settle()
        r.control.halt("test", "operator")
        await r.feed(intent("e3", "SELL", 500.0, symbol="ETHUSDT", ts=2))
        await r.settle()
        assert r.metric("dolphind_risk_rejections_total", rule="kill_switch") == 1
        r.control.flatten("test")
        await eventually(lambda: not r.stage.portfolio.positions, what="flat")
        await r.settle()
        assert r.metric("dolphind_orders_total", state="filled") == 4
        # The operator's halt is persisted (a restart keeps trading halted) ...
        await eventually(lambda: r.store.read(lambda c: c.execute(
            "SELECT value FROM kv WHERE key = 'halted'").fetchone() == ("1",)),
            what="halt persisted")
    control = Control(metrics_factory(), lambda cause: None)
    async with rig(tmp_path, info_2021, metrics_factory(), config(), control) as r:
        assert control.halted and control.halt_reason == "operator"


async def test_store_keeps_up_with_a_burst(tmp_path, info_2021, metrics_factory):
    m = metrics_factory()
    cfg = config(risk={"max_orders_per_minute": 1e9, "order_burst": 10**6,
                       "max_gross_exposure_usdt": 1e9, "max_symbol_exposure_usdt": 1e9,
                       "max_leverage": 125.0})  # the range's top (issue 17)
    async with rig(tmp_path, info_2021, m, cfg) as r:
        await r.feed(bar(1, 40_000.0))
        for i in range(300):
            side = "SELL" if i % 2 == 0 else "BUY"
            await r.feed(intent(f"burst-{i}", side, 100.0, reduce_only=(i % 2 == 1),
                                reason="FIXED_TP" if i % 2 else "ENTRY", ts=1))
        await r.settle()
        assert r.metric("dolphind_orders_total", state="filled") == 300
        assert r.store.backlog == 0
        assert not r.stage.portfolio.positions


async def test_open_books_from_config(tmp_path, metrics_factory):
    from .conftest import CRYPTOFEED_INFO

    cfg = config(data={"dir": str(tmp_path)},
                 execution={"exchange_info": str(CRYPTOFEED_INFO)})
    async with open_books(lambda: cfg, metrics_factory()) as (store, audit, venue):
        assert venue.filters_for("BTCUSDT").min_notional == 5
        assert store.path == tmp_path / "dolphind.sqlite"
        audit.record("test.opened")
    assert verify(tmp_path / "audit.jsonl").lines == 1


async def test_a_risk_multiplier_shrinks_entries_but_not_exits(tmp_path, info_2021,
                                                               metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, info_2021, m, config()) as r:
        r.control.set_risk_multiplier("plugin:guardian", 0.5, duration_s=600, reason="drawdown")
        await r.feed(bar(1, 40_000.0),
                     intent("m1:BTCUSDT:entry", "SELL", 2000.0, ts=bar(1, 0).ts_ns))
        await r.settle()
        # Half of 2000 USDT at 40000: 0.025 BTC instead of 0.05.
        assert r.stage.portfolio.positions["BTCUSDT"].qty == pytest.approx(-0.025)
        await r.feed(intent("m2:BTCUSDT:exit", "BUY", 1000.0, True, "FIXED_TP",
                            ts=bar(1, 0).ts_ns))
        await r.settle()
        assert not r.stage.capital_view().positions  # the exit closed all of it


async def test_an_open_trade_survives_a_restart(tmp_path, info_2021, metrics_factory):
    """A closed trade, then an entry on scan 7 added to on scan 8, restart, closed on scan 10:
    the open trade comes back as it was (entry, size, fees, hold) and closes as ONE trade with
    its whole PnL, not as a new trade whose PnL is only the closing fee."""
    holder: dict[str, Any] = {}

    def books() -> Ledger:
        return Ledger(lambda: holder["stage"].capital_view())

    ledger = books()
    async with rig(tmp_path, info_2021, metrics_factory(), config(), events=ledger) as r:
        holder["stage"] = r.stage
        await r.feed(bar(1, 40_000.0), intent("3-BTCUSDT-entry", "BUY", 1000.0, ts=1),
                     intent("4-BTCUSDT-exit", "SELL", 1000.0, True, "FIXED_TP", ts=1))
        await r.settle()
        cash_before = r.stage.capital_view().cash_usdt
        fees_before = r.stage.capital_view().fees_usdt
        ledger.note_intent("7-BTCUSDT-entry", 2.0)
        await r.feed(bar(2, 40_000.0), intent("7-BTCUSDT-entry", "SELL", 2000.0,
                                              ts=bar(2, 0).ts_ns, leverage=2.0))
        await r.settle()
        ledger.on_bar(bar(3, 0).ts_ns)  # scan 8
        ledger.note_intent("8-BTCUSDT-entry", 2.0)
        await r.feed(bar(3, 39_800.0), intent("8-BTCUSDT-entry", "SELL", 2000.0,
                                              ts=bar(3, 0).ts_ns, leverage=2.0))
        await r.settle()
        ledger.on_bar(bar(4, 0).ts_ns)  # scan 9
        before = ledger.portfolio_view().position
        assert (before.bars_held, before.entry_scan, before.leverage) == (2, 7, 2.0)
        assert r.stage.portfolio.positions["BTCUSDT"].qty == pytest.approx(-0.1)
    async with await Store.open(tmp_path / "dolphind.sqlite") as store:
        state = await store.load_state()
    ledger = books()
    ledger.restore(state.open_trades, next_scan=10)
    async with rig(tmp_path, info_2021, metrics_factory(), config(), events=ledger) as r:
        holder["stage"] = r.stage
        # The alpha engine's view right after the restart: the same trade, not a new one.
        assert ledger.portfolio_view().position == before
        ledger.on_bar(bar(5, 0).ts_ns)  # scan 10
        assert ledger.portfolio_view().position.bars_held == 3
        await r.feed(bar(5, 39_600.0), intent("10-BTCUSDT-exit", "BUY", 1.0, True,
                                              "MAX_HOLD", ts=bar(5, 0).ts_ns))
        await r.settle()
        view = r.stage.capital_view()
    assert not view.positions
    [trade] = ledger.closed
    assert (trade.side, trade.qty, trade.entry_price, trade.entry_ts_ns, trade.bars_held,
            trade.leverage, trade.exit_reason) == (
        "SHORT", pytest.approx(0.1), pytest.approx(39_900.0), bar(2, 0).ts_ns, 3, 2.0,
        "MAX_HOLD")
    # The trade's PnL is all the money the account made since the first trade closed, its
    # fees all the fees paid since then (three fills, two runs).
    assert trade.pnl_usdt == pytest.approx(view.cash_usdt - cash_before, abs=1e-9)
    assert trade.fees_usdt == pytest.approx(view.fees_usdt - fees_before, abs=1e-12)
    assert trade.pnl_usdt > 0  # short into a falling price
    last = ledger.portfolio_view().last_closed
    assert (last.entry_scan, last.pnl_usdt) == (7, trade.pnl_usdt)


async def test_a_new_peak_from_the_marks_is_committed_before_the_next_snapshot(
        tmp_path, info_2021, metrics_factory):
    # Snapshots an hour apart: only the new-peak write can put the peak in the store.
    cfg = config(execution={"equity_snapshot_interval_s": 3600.0})
    async with rig(tmp_path, info_2021, metrics_factory(), cfg) as r:
        await r.feed(bar(1, 40_000.0), intent("p1", "SELL", 2000.0, ts=bar(1, 0).ts_ns))
        await r.settle()
        await r.feed(bar(2, 39_000.0))  # short 0.05 BTC: +50 USDT, a new peak
        await r.settle()
        shown = r.stage.capital_view().peak_equity_usdt
        assert shown == pytest.approx(10_000.0 - 0.628 + 50.0, abs=1e-9)
        await eventually(lambda: r.store.pending == 0, what="store drained")
        state = await r.store.load_state()
        assert state.account.peak_equity_usdt == shown
        await r.feed(bar(3, 39_500.0))  # lower: nothing new to commit
        await r.settle()
        assert r.stage.capital_view().peak_equity_usdt == shown
    async with rig(tmp_path, info_2021, metrics_factory(), cfg) as r:
        assert r.stage.capital_view().peak_equity_usdt == shown


def test_slippage_is_counted_by_direction_and_a_better_fill_does_not_crash() -> None:
    from dolphind.execution.bookkeeping import record_slippage
    from dolphind.telemetry.metrics import Metrics

    metrics = Metrics()
    record_slippage(metrics.execution, 10_000.0, 5.0)    # 5 bps worse than the reference
    record_slippage(metrics.execution, 20_000.0, -1.5)   # a live fill 1.5 bps better
    get = metrics.registry.get_sample_value
    assert get("dolphind_slippage_usdt_total", {"direction": "paid"}) == 5.0
    assert get("dolphind_slippage_usdt_total", {"direction": "gained"}) == 3.0


async def test_the_breaker_counts_venue_failures_not_local_refusals(tmp_path, info_2021,
                                                                    metrics_factory):
    """Issue #15: orders refused here (not reconciled, fenced, the request budget) are not
    venue errors; ten of them leave the breaker closed, two real venue errors open it."""
    from dolphind.venues.venue import VenueRejected

    risk = {"breaker_min_requests": 2, "breaker_error_rate": 0.5, "breaker_open_s": 3600.0,
            "max_orders_per_minute": 10_000.0, "order_burst": 1000}
    async with rig(tmp_path, info_2021, metrics_factory(), config(risk=risk)) as r:
        local = [True]

        async def refusing(order: Order) -> Order:
            raise VenueRejected("not_reconciled: only reduce-only orders", local=local[0])

        r.venue.submit = refusing  # type: ignore[method-assign]
        await r.feed(bar(1, 40_000.0),
                     *(intent(f"l{k}", "SELL", 500.0, ts=1) for k in range(10)))
        await r.settle()
        assert r.stage.rails.breaker_gauge() == 0
        local[0] = False
        await r.feed(intent("v1", "SELL", 500.0, ts=1), intent("v2", "SELL", 500.0, ts=1))
        await r.settle()
        assert r.stage.rails.breaker_gauge() == 2  # open


async def test_orders_the_store_has_and_the_audit_log_lost_are_recovered_at_restart(
        tmp_path, info_2021, metrics_factory):
    """Issue #15: kill -9 after the order's commit and before its audit line was written:
    the restart writes it from the store as order.recovered (once: a second restart finds it)."""
    async with rig(tmp_path, info_2021, metrics_factory(), config()) as r:
        await r.feed(bar(1, 40_000.0), intent("kept", "SELL", 2000.0, ts=1))
        await r.settle()
    cid = client_order_id("lost")
    async with await Store.open(tmp_path / "dolphind.sqlite") as store:
        await store.write(order_op(Order(cid, "lost", "BTCUSDT", "BUY", 0.05, "MARKET", 0.0,
                                         True, "EXIT", "filled", filled_qty=0.05,
                                         avg_fill_price=40_100.0, created_ns=2, updated_ns=2)),
                          wait=True)
    m = metrics_factory()
    async with rig(tmp_path, info_2021, m, config()) as r:
        assert r.metric("dolphind_audit_recovered_total") == 1
    async with rig(tmp_path, info_2021, metrics_factory(), config()) as r:
        assert r.metric("dolphind_audit_recovered_total") == 0
    events = audit_events(tmp_path / "audit.jsonl")
    recovered = [e for e in events if e["event"] == "order.recovered"]
    assert [e["data"]["client_id"] for e in recovered] == [cid]
    assert recovered[0]["data"]["state"] == "filled" and recovered[0]["data"]["source"] == "store"
    assert recovered[0]["data"]["filled_qty"] == 0.05
    assert verify(tmp_path / "audit.jsonl").ok


async def test_a_liquidation_is_booked_with_the_bar_that_triggers_it(tmp_path, info_2021,
                                                                      metrics_factory):
    """Issue 16: when the paper venue's margin balance falls to the maintenance margin, the
    stage closes the position with a LIQUIDATION order while it handles that bar, so anything
    deciding after the bar sees it closed (a backtest repeats exactly)."""
    m = metrics_factory()
    cfg = config(risk={"max_order_notional_usdt": 100_000.0, "max_leverage": 6.0,
                       "max_symbol_exposure_usdt": 100_000.0,
                       "max_gross_exposure_usdt": 100_000.0})
    ledger = Ledger(lambda: None)  # type: ignore[arg-type,return-value]
    async with rig(tmp_path, info_2021, m, cfg, events=ledger) as r:
        await r.feed(bar(1, 40_000.0), intent("big", "SELL", 40_000.0, ts=bar(1, 0).ts_ns,
                                              leverage=4.0))
        await r.settle()
        assert r.stage.portfolio.positions["BTCUSDT"].qty == -1.0
        await r.feed(bar(2, 49_000.0))  # margin balance ~990 > maintenance 196: kept
        await r.settle()
        assert "BTCUSDT" in r.stage.portfolio.positions and not r.venue.liquidations
        await r.feed(bar(3, 49_900.0))  # ~90 left <= maintenance 199.6: liquidated
        await eventually(lambda: r.stage.processed >= 4, what="bar 3 handled")
        # Handled means the LIQUIDATION order exists: a decision waits for it to be booked.
        assert r.stage.orders or "BTCUSDT" not in r.stage.portfolio.positions
        await r.settle()
        assert "BTCUSDT" not in r.stage.portfolio.positions
        assert [(ts, syms) for ts, syms, _, _ in r.venue.liquidations] == [
            (bar(3, 0).ts_ns, ("BTCUSDT",))]
        (trade,) = ledger.closed
        assert trade.exit_reason == "LIQUIDATION"
        assert r.metric("dolphind_orders_total", state="filled") == 2
    submitted = [e for e in audit_events(tmp_path / "audit.jsonl")
                 if e["event"] == "order.submitted"]
    assert [e["data"]["reason"] for e in submitted] == ["ENTRY", "LIQUIDATION"]
