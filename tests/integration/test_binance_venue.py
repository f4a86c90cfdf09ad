"""The execution stage trading on the loopback Binance: open_books(venue = "binance") with the
real SQLite store and audit log in tmp_path, real ccxt, the real user stream.

What is not here: the daemon as a subprocess with venue = "binance" (app.py must first pass the
state bus to open_books and pick the live feed; see the issue note).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any, AsyncIterator

import orjson
import pytest

from dolphind.channels import Channel, Overflow
from dolphind.config import Config, config_from_dict
from dolphind.events import Order, OrderIntent
from dolphind.execution.portfolio import Position
from dolphind.execution.router import client_order_id
from dolphind.execution.stage import ExecutionStage, open_books
from dolphind.ops.control import Control
from dolphind.ops.health import Health
from dolphind.ops.metrics import Metrics
from dolphind.statebus.memory import MemoryStateBus
from dolphind.store.audit import split_line, verify
from dolphind.store.sqlite import Account, Store, account_op, order_op, position_op
from tests.conftest import eventually
from tests.fakes.binance_rest import FakeBinanceRest

pytestmark = pytest.mark.integration


@pytest.fixture
def metrics_factory():
    ready = [Metrics() for _ in range(4)]
    return ready.pop


@pytest.fixture
async def fake(monkeypatch) -> AsyncIterator[FakeBinanceRest]:
    async with FakeBinanceRest() as f:
        monkeypatch.setenv("DOLPHIND_BINANCE_API_KEY", f.api_key)
        monkeypatch.setenv("DOLPHIND_BINANCE_API_SECRET", f.secret)
        yield f


def config(tmp_path, fake: FakeBinanceRest, **binance: Any) -> Config:
    b = dict(network="mainnet", rest_base_url=fake.rest_url, ws_base_url=fake.ws_url,
             symbols=["BTCUSDT", "ETHUSDT"], default_leverage=2, request_timeout_s=0.5,
             poll_interval_s=0.05, order_check_s=0.5, backoff_initial_s=0.05,
             backoff_max_s=0.2, recv_window_ms=1000, unknown_grace_s=0.2, lease_ttl_s=2.0,
             lease_renew_s=0.2)
    b.update(binance)
    return config_from_dict({"mode": "live", "data": {"dir": str(tmp_path)},
                             "execution": {"venue": "binance", "binance": b,
                                           "drain_timeout_s": 2.0}})


@dataclasses.dataclass
class Rig:
    stage: ExecutionStage
    intents: Channel[Any]
    venue: Any
    store: Store
    metrics: Metrics
    audit_path: Any


@contextlib.asynccontextmanager
async def rig(tmp_path, fake, metrics: Metrics, cfg: Config | None = None,
              bus: MemoryStateBus | None = None, wait_ready: bool = True) -> AsyncIterator[Rig]:
    cfg = cfg or config(tmp_path, fake)
    async with open_books(lambda: cfg, metrics, bus or MemoryStateBus()) as (store, audit,
                                                                              venue):
        control = Control(metrics, lambda cause: None)
        health = Health(metrics, lambda: 30.0)
        health.register("execution")
        intents: Channel[Any] = Channel("intents", 64, Overflow.BLOCK, metrics.channels)
        stage = ExecutionStage(intents, venue, store, audit, control, health, metrics,
                               lambda: cfg)
        task = asyncio.create_task(stage.run())
        await eventually(lambda: stage.ready, what="stage restored")
        if wait_ready:
            await eventually(lambda: venue.readiness() == "ok", what="venue reconciled")
        try:
            yield Rig(stage, intents, venue, store, metrics, audit.path)
        finally:
            intents.close()
            await asyncio.wait_for(task, 15)


def intent(iid: str, side: str, notional: float, reduce_only: bool = False,
           ref: float = 40_000.0) -> OrderIntent:
    return OrderIntent(iid, 0, "BTCUSDT", side, notional, 2.0, reduce_only,
                       "EXIT" if reduce_only else "ENTRY", ref, gates=())


def audit_events(path) -> list[dict[str, Any]]:
    """Each record's data with its event name."""
    out = []
    for line in path.read_bytes().splitlines():
        rec = orjson.loads(split_line(line)[0])
        out.append({**rec["data"], "event": rec["event"]})
    return out


def metric(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


async def test_entry_and_exit_fill_through_the_user_stream(tmp_path, fake, metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, fake, m) as r:
        assert fake.leverage == {"BTCUSDT": 2, "ETHUSDT": 2}
        await r.intents.put(intent("s1:entry", "SELL", 2000.0))
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == -0.05)
        await r.intents.put(intent("s1:exit", "BUY", 2000.0, reduce_only=True))
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == 0.0
                         and not r.stage.orders)
        exit_id = client_order_id("s1:exit")
        (sent,) = fake.orders_with_client_id(exit_id)
        assert sent.reduce_only and sent.side == "BUY" and sent.qty == 0.05
        assert fake.positions["BTCUSDT"][0] == 0.0
        state = await r.store.load_state()
        assert len(state.fill_ids) == 2 and all(f.startswith("BTCUSDT:") for f in state.fill_ids)
        assert r.stage.portfolio.fees_usdt == pytest.approx(2 * 2000 * 0.0004)
    assert verify(r.audit_path).ok
    assert not fake.unexpected


async def test_timeout_after_submit_is_resolved_by_query_never_resent(tmp_path, fake,
                                                                       metrics_factory):
    m = metrics_factory()
    fake.fill_mode = "rest"  # the user stream shows nothing: only a query can tell
    async with rig(tmp_path, fake, m) as r:
        fake.fault("POST /fapi/v1/order", process=True, delay_s=1.5)  # answer never in time
        await r.intents.put(intent("t1:entry", "BUY", 2000.0))
        cid = client_order_id("t1:entry")
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == 0.05
                         and not r.stage.orders, timeout=10)
        assert fake.count("POST /fapi/v1/order") == 1
        assert len(fake.orders_with_client_id(cid)) == 1
        assert metric(m, "dolphind_execution_intents_total", outcome="unknown") == 1
        await r.intents.put(intent("t1:entry", "BUY", 2000.0))  # the same intent again
        await asyncio.sleep(0.3)
        assert fake.count("POST /fapi/v1/order") == 1
    kinds = [e["event"] for e in audit_events(r.audit_path)]
    assert "order.unknown" in kinds and "intent.duplicate" in kinds and kinds.count("fill") == 1


async def test_restart_adopts_what_the_venue_has_and_the_store_does_not(tmp_path, fake,
                                                                        metrics_factory):
    # The account holds a short and a resting order that this (empty) store knows nothing of.
    fake.set_position("BTCUSDT", -0.05, 40_100.0)
    fake.place("BTCUSDT", "BUY", 0.05, 39_000.0, "web_manual_1", reduce_only=True)
    m = metrics_factory()
    async with rig(tmp_path, fake, m) as r:
        assert r.stage.portfolio.position_qty("BTCUSDT") == -0.05
        assert r.stage.portfolio.positions["BTCUSDT"].avg_price == 40_100.0
        assert fake.orders_with_client_id("web_manual_1")[0].status == "CANCELED"
        state = await r.store.load_state()
        assert "web_manual_1" in state.client_ids
        assert [o.state for o in state.recent_orders if o.client_id == "web_manual_1"][-1] \
            == "cancelled"
        assert metric(m, "dolphind_reconcile_differences_total", kind="venue_order_adopted") == 1
        assert metric(m, "dolphind_reconcile_differences_total", kind="position") == 1
    events = audit_events(r.audit_path)
    adopted = [e for e in events if e["event"] == "execution.venue_order_adopted"]
    assert adopted and adopted[0]["client_id"] == "web_manual_1"
    assert adopted[0]["final_state"] == "cancelled"
    recon = [e for e in events if e["event"] == "execution.positions_reconciled"]
    assert recon and recon[0]["differences"]["BTCUSDT"] == [0.0, -0.05]
    assert verify(r.audit_path).ok


async def test_restart_corrects_what_the_store_has_and_the_venue_does_not(tmp_path, fake,
                                                                          metrics_factory):
    # The store remembers a working order and a position; the venue has neither (closed by
    # hand while the daemon was down, the order expired).
    store = await Store.open(tmp_path / "dolphind.sqlite", None, None)
    async with store:
        ghost = Order("dd-ghost", "old:intent", "BTCUSDT", "BUY", 0.05, "MARKET", 0.0, True,
                      "EXIT", "acked", venue_order_id="1", created_ns=1, updated_ns=1)
        await store.write(account_op(Account(10_000.0, 10_000.0, 0.0, 0.0, 10_000.0), 1),
                          order_op(ghost), position_op(Position("BTCUSDT", -0.05, 40_000.0)),
                          wait=True)
    m = metrics_factory()
    async with rig(tmp_path, fake, m) as r:
        assert r.stage.portfolio.position_qty("BTCUSDT") == 0.0
        assert not r.stage.orders
        assert metric(m, "dolphind_reconcile_differences_total", kind="order_never_sent") == 1
    events = audit_events(r.audit_path)
    assert any(e["event"] == "order.expired" and e["client_id"] == "dd-ghost" for e in events)
    recon = [e for e in events if e["event"] == "execution.positions_reconciled"]
    assert recon and recon[0]["differences"]["BTCUSDT"] == [-0.05, 0.0]


async def test_fills_during_a_stream_outage_reach_the_store_once(tmp_path, fake,
                                                                 metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, fake, m, config(tmp_path, fake, backoff_initial_s=0.5,
                                             backoff_max_s=0.5)) as r:
        fake.market_trades = 3  # each market order fills in three trades
        fake.refuse_streams = True
        await fake.drop_streams()
        await eventually(lambda: not r.venue.status()["user_stream"]["connected"])
        # No new entry while the venue is unreconciled (exits would go).
        await r.intents.put(intent("o1:entry", "SELL", 2000.0))
        await eventually(lambda: any("not_reconciled" in o.reject_reason
                                     for o in r.stage.recent_orders))
        fake.refuse_streams = False
        await eventually(lambda: r.venue.readiness() == "ok", what="stream back")
        await r.intents.put(intent("o2:entry", "SELL", 2000.0))
        await eventually(lambda: abs(r.stage.portfolio.position_qty("BTCUSDT") + 0.05) < 1e-9
                         and not r.stage.orders)
        fake.refuse_streams = True
        await fake.expire_listen_key()
        await eventually(lambda: not r.venue.status()["user_stream"]["connected"])
        # An exit goes while unreconciled; its three fills are found by REST polling.
        await r.intents.put(intent("o2:exit", "BUY", 2000.0, reduce_only=True))
        await eventually(lambda: abs(r.stage.portfolio.position_qty("BTCUSDT")) < 1e-9
                         and not r.stage.orders, timeout=10)
        assert metric(m, "dolphind_venue_fills_recovered_total") >= 3
        assert metric(m, "dolphind_venue_rest_polling") == 1
        fake.refuse_streams = False
        await eventually(lambda: r.venue.readiness() == "ok")
        state = await r.store.load_state()
        trades = [t["id"] for o in fake.orders.values() for t in o.trades]
        assert sorted(state.fill_ids) == sorted(f"BTCUSDT:{t}" for t in trades)
        assert len(trades) == 6
        assert abs(fake.positions["BTCUSDT"][0]) < 1e-9
    rejected = [e for e in audit_events(r.audit_path) if e["event"] == "order.rejected"]
    assert rejected and "not_reconciled" in rejected[0]["rule"]


async def test_a_second_daemon_on_the_same_account_is_fenced(tmp_path, fake, metrics_factory):
    bus = MemoryStateBus()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    m1, m2 = metrics_factory(), metrics_factory()
    async with rig(tmp_path / "a", fake, m1, config(tmp_path / "a", fake), bus) as first:
        async with rig(tmp_path / "b", fake, m2, config(tmp_path / "b", fake), bus,
                       wait_ready=False) as second:
            why = second.venue.readiness()
            assert why.startswith("fenced: ") and first.venue.lease.owner in why
            await second.intents.put(intent("f1:entry", "SELL", 2000.0))
            await eventually(lambda: any(o.reject_reason.startswith("venue:fenced: ")
                                         for o in second.stage.recent_orders))
            assert fake.count("POST /fapi/v1/order") == 0
            assert second.venue.status()["lease"]["held"] is False
    rejected = [e for e in audit_events(second.audit_path) if e["event"] == "order.rejected"]
    assert rejected and rejected[0]["rule"].startswith("fenced: account binance-usdm:")
