"""The execution stage trading on the loopback Binance: open_books(venue = "binance") with the
real SQLite store and audit log in tmp_path, real ccxt, the real user stream.

At the end: two real daemons (subprocesses, replay feed, venue = "binance") on one account,
against the loopback Binance served from a thread of this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import orjson
import pytest

from dolphind.channels import Channel, Overflow
from dolphind.config import Config, config_from_dict
from dolphind.events import Order, OrderIntent
from dolphind.orders.portfolio import Position
from dolphind.orders.router import client_order_id
from dolphind.stage import offered_stages
from dolphind.app.books import open_books
from dolphind.app.execution import build_execution
from dolphind.supervisor import supervised
from dolphind.execution.stage import ExecutionStage
from dolphind.execution.state import ExecutionServices
from dolphind.control import Control
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.statebus.memory import MemoryStateBus
from dolphind.store.audit import split_line, verify
from dolphind.store.sqlite import Account, Store, account_op, order_op, position_op
from tests.conftest import eventually, wait_until
from tests.fakes.binance_rest import FakeBinanceRest
from tests.integration.harness import Daemon, free_port
from tests.integration.live_venue import live_venue_toml, venue_env
from tests.integration.test_live_feed import FakeVenue

pytestmark = pytest.mark.integration


@pytest.fixture
def metrics_factory():
    ready = [Metrics() for _ in range(4)]
    return ready.pop


@pytest.fixture
async def fake(monkeypatch, tmp_path) -> AsyncIterator[FakeBinanceRest]:
    async with FakeBinanceRest() as f:
        f.lease_dir = str(tmp_path / "leases")  # shared by the daemons of one test
        monkeypatch.setenv("DOLPHIND_BINANCE_API_KEY", f.api_key)
        monkeypatch.setenv("DOLPHIND_BINANCE_API_SECRET", f.secret)
        yield f


def config(tmp_path, fake: FakeBinanceRest, **binance: Any) -> Config:
    b = dict(network="mainnet", rest_base_url=fake.rest_url, ws_base_url=fake.ws_url,
             symbols=["BTCUSDT", "ETHUSDT"], default_leverage=2, request_timeout_s=0.5,
             poll_interval_s=0.05, order_check_s=0.5, backoff_initial_s=0.05,
             backoff_max_s=0.2, recv_window_ms=1000, unknown_grace_s=0.2, lease_ttl_s=2.0,
             lease_renew_s=0.2, lease_dir=fake.lease_dir)
    b.update(binance)
    return config_from_dict({"mode": "live", "data": {"dir": str(tmp_path)},
                             # mode "live" needs the live feed (issue #15); not started here
                             "feed": {"kind": "binance"},
                             "binance_feed": {"symbols": ["BTCUSDT", "ETHUSDT"]},
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
    health = Health(metrics, lambda: 30.0)
    async with open_books(lambda: cfg, metrics, bus or MemoryStateBus()) as (store, audit,
                                                                              venue), \
            supervised(health, metrics, lambda: cfg.supervision) as background:
        background.start(offered_stages(venue))  # the venue's loops, as the daemon runs them
        control = Control(metrics, lambda cause: None)
        health.register("execution")
        intents: Channel[Any] = Channel("intents", 64, Overflow.BLOCK, metrics.channels)
        stage = build_execution(intents, ExecutionServices(venue, store, audit, control, health,
                                                           metrics, lambda: cfg))
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
    # Adopting is a choice since issue #15 (the default leaves foreign holdings alone).
    base = config(tmp_path, fake)
    cfg = dataclasses.replace(base, execution=dataclasses.replace(base.execution,
                                                                  foreign="adopt"))
    async with rig(tmp_path, fake, m, cfg) as r:
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
            # The stage says so too (/readyz, /status).
            assert second.stage.readiness() == f"venue: {why}"
            lease = second.stage.status()["venue_state"]["lease"]
            assert lease["held"] is False and lease["holder"] == first.venue.lease.owner
            assert first.stage.readiness() == "ok"
            assert first.stage.status()["venue_state"]["lease"]["held"] is True
            await second.intents.put(intent("f1:entry", "SELL", 2000.0))
            await eventually(lambda: any(o.reject_reason.startswith("venue:fenced: ")
                                         for o in second.stage.recent_orders))
            assert fake.count("POST /fapi/v1/order") == 0
            assert second.venue.status()["lease"]["held"] is False
    rejected = [e for e in audit_events(second.audit_path) if e["event"] == "order.rejected"]
    assert rejected and rejected[0]["rule"].startswith("fenced: account binance-usdm:")


async def test_stage_readiness_and_status_carry_the_ban_and_reconciliation(tmp_path, fake,
                                                                          metrics_factory):
    m = metrics_factory()
    async with rig(tmp_path, fake, m, config(tmp_path, fake, default_ban_s=1.0)) as r:
        st = r.stage.status()["venue_state"]
        assert st["reconciled"] is True and st["lease"]["held"] is True
        assert st["budget"]["banned_s"] == 0
        fake.ban(1.5)
        await r.intents.put(intent("b1:entry", "SELL", 2000.0))  # answered 418
        await eventually(lambda: r.stage.readiness().startswith("venue: venue ban (418)"))
        assert r.stage.status()["venue_state"]["budget"]["banned_s"] > 0
        await eventually(lambda: r.stage.readiness() == "ok", timeout=10, what="ban over")
        await fake.drop_streams()
        await eventually(lambda: r.stage.readiness().startswith("venue: not reconciled"))
        assert r.stage.status()["venue_state"]["reconciled"] is False
        await eventually(lambda: r.stage.readiness() == "ok", what="reconnected")


async def test_after_a_reconnect_positions_are_compared_audited_and_gate_entries(
        tmp_path, fake, metrics_factory):
    m = metrics_factory()
    # Under "adopt" (opt-in since issue #15; the default leaves a hand trade alone as foreign).
    base = config(tmp_path, fake)
    cfg = dataclasses.replace(base, execution=dataclasses.replace(base.execution,
                                                                  foreign="adopt"))
    async with rig(tmp_path, fake, m, cfg) as r:
        fake.hold_market = True  # the entry stays working at the venue
        await r.intents.put(intent("p1:entry", "SELL", 2000.0))
        cid = client_order_id("p1:entry")
        await eventually(lambda: cid in r.stage.orders and r.stage.orders[cid].state == "acked")
        # While the stream is down, someone trades the account by hand.
        fake.refuse_streams = True
        await fake.drop_streams()
        await eventually(lambda: not r.venue.status()["user_stream"]["connected"])
        fake.set_position("BTCUSDT", -0.02, 40_000.0)
        fake.place("BTCUSDT", "BUY", 0.01, 30_000.0, "web_manual_2")  # and leaves an order
        fake.refuse_streams = False
        await eventually(lambda: r.venue.status()["user_stream"]["connected"])
        # Orders re-read, but positions differ while an order works: not reconciled.
        await eventually(lambda: any(e["event"] == "execution.positions_mismatch"
                                     for e in audit_events(r.audit_path)), what="mismatch")
        assert not r.venue.reconciled
        assert r.stage.readiness().startswith("venue: not reconciled")
        await r.intents.put(intent("p2:entry", "SELL", 2000.0))
        await eventually(lambda: any(o.client_id == client_order_id("p2:entry")
                                     and "not_reconciled" in o.reject_reason
                                     for o in r.stage.recent_orders))
        assert not fake.orders_with_client_id(client_order_id("p2:entry"))
        # The working order fills; then the hand trade is adopted and audited.
        await fake.fill(cid)
        await eventually(lambda: r.venue.reconciled, what="reconciled after the fill")
        assert r.stage.portfolio.position_qty("BTCUSDT") == pytest.approx(-0.07)
        assert r.stage.readiness() == "ok"
        assert metric(m, "dolphind_reconcile_differences_total", kind="position") >= 1
    events = audit_events(r.audit_path)
    mismatch = [e for e in events if e["event"] == "execution.positions_mismatch"]
    assert mismatch[0]["differences"]["BTCUSDT"] == [0.0, -0.02]
    assert mismatch[0]["cause"].startswith("user_stream:")
    recon = [e for e in events if e["event"] == "execution.positions_reconciled"]
    assert recon and recon[-1]["differences"]["BTCUSDT"] == [-0.05, -0.07]
    found = [e for e in events if e["event"] == "execution.venue_order_found"]
    assert [e["client_id"] for e in found] == ["web_manual_2"]
    assert found[0]["cause"].startswith("user_stream:")
    assert recon[-1]["cause"].startswith("user_stream:")
    assert verify(r.audit_path).ok


# ---- two daemon processes on one account -------------------------------------------------


class ThreadedFake:
    """The loopback Binance on its own event loop in a thread, so that synchronous test code
    can drive daemon subprocesses while it serves them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-binance",
                                       daemon=True)
        self.thread.start()
        self.fake = FakeBinanceRest()
        self.call(self.fake.start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def threaded_fake() -> Iterator[FakeBinanceRest]:
    t = ThreadedFake()
    t.fake.call = t.call  # type: ignore[attr-defined]
    try:
        yield t.fake
    finally:
        t.stop()


def live_daemon(root: Path, name: str, fake: FakeBinanceRest, lease_dir: Path,
                market_url: str) -> Daemon:
    """A mode "live" daemon: the live feed on the loopback market-data fake (``market_url``),
    orders to the loopback REST fake (mode "live" needs a live feed, issue #15)."""
    d = root / name
    d.mkdir()
    port = free_port()
    cfg = d / "dolphind.toml"
    cfg.write_text(live_venue_toml(port, market_url, fake, lease_dir))
    return Daemon(cfg, port, env=venue_env(fake)).start()


def venue_state(d: Daemon) -> dict[str, Any] | None:
    assert d.proc is not None
    if d.proc.poll() is not None:
        raise RuntimeError(f"daemon exited with {d.proc.returncode}:\n{d.logs()}")
    status, body = d.get("/status")
    if status != 200:
        return None
    return (orjson.loads(body).get("execution") or {}).get("venue_state")


@pytest.fixture
def market(tmp_path: Path) -> Iterator[FakeVenue]:
    """The loopback market-data fake (a subprocess) for mode "live" daemons' live feed."""
    fake = FakeVenue(tmp_path / "fake-market.log")
    try:
        yield fake
    finally:
        fake.stop()


def test_two_daemon_processes_on_one_account(tmp_path: Path, threaded_fake: FakeBinanceRest,
                                             market: FakeVenue):
    fake = threaded_fake
    fake.set_position("BTCUSDT", -0.05, 40_000.0)  # an open short for the daemons to close
    # a's orders are refused (margin): the short stays for b to try to close.
    fake.fault("POST /fapi/v1/order", times=1000, status=400, code=-2019,
               msg="Margin is insufficient.")
    leases = tmp_path / "leases"
    a = live_daemon(tmp_path, "a", fake, leases, market.url)
    b: Daemon | None = None
    try:
        held = wait_until(lambda: (s := venue_state(a)) and s["lease"]["held"]
                          and s["reconciled"] and s, timeout=120, what="a holds the account")
        owner_a = held["lease"]["owner"]
        b = live_daemon(tmp_path, "b", fake, leases, market.url)
        fenced = wait_until(lambda: (s := venue_state(b)) and s, timeout=120,
                            what="b's venue status")
        assert fenced["lease"]["held"] is False and fenced["reconciled"] is False
        assert fenced["lease"]["holder"] == owner_a
        assert owner_a in fenced["lease"]["reason"]
        # /readyz says why (once the stage has restored).
        def readyz() -> tuple[int, str]:
            status, body = b.get("/readyz")
            return status, orjson.loads(body)["checks"].get("execution", "")

        status, why = wait_until(lambda: (r := readyz())[1].startswith("venue:") and r,
                                 timeout=30, what="b's readiness")
        assert status == 503 and why.startswith("venue: fenced: account binance-usdm:")
        assert owner_a in why
        # The log says why.
        said = [e for e in b.events() if e.get("event") == "venue.fenced"]
        assert said and owner_a in said[0]["reason"]
        # b adopted the venue's short (a read), but refuses to send the order closing it.
        wait_until(lambda: b.get_json("/positions")["positions"], timeout=30,
                   what="b's position")
        assert b.post("/flatten", {"reason": "test"})[0] == 200
        rejected = wait_until(lambda: [o for o in b.get_json("/orders")["recent"]
                                       if o["reason"] == "FLATTEN"
                                       and o["reject_reason"].startswith("venue:fenced: ")],
                              timeout=30, what="b's flatten refused")
        assert owner_a in rejected[0]["reject_reason"]
        wait_until(lambda: any(e.get("event") == "venue.fenced_order" for e in b.events()))
        sent_ids = {r.params.get("newClientOrderId") for r in fake.requests
                    if (r.method, r.path) == ("POST", "/fapi/v1/order")}
        assert rejected[0]["client_id"] not in sent_ids
        fake.faults.clear()
        n_sent = fake.count("POST /fapi/v1/order")
        # a's user stream fails its handshake for a while (the error names the URL).
        fake.refuse_streams = True
        fake.call(fake.drop_streams())
        wait_until(lambda: "WSServerHandshakeError" in venue_state(a)["last_error"],
                   timeout=30, what="a handshake error on a")
        fake.refuse_streams = False
        # a dies without a word: the kernel drops its lock, b takes the account over.
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait(10)
        wait_until(lambda: (s := venue_state(b)) and s["lease"]["held"] and s["reconciled"],
                   timeout=30, what="b took over")
        assert b.post("/flatten", {"reason": "test"})[0] == 200
        wait_until(lambda: abs(fake.positions["BTCUSDT"][0]) < 1e-12, timeout=30,
                   what="b flattened")
        sent = [r for r in fake.requests
                if (r.method, r.path) == ("POST", "/fapi/v1/order")][n_sent:]
        assert sent and all(r.params["reduceOnly"] == "true" and r.params["side"] == "BUY"
                            for r in sent)
        # Neither the key, the secret nor any listenKey ever reached a log or /status.
        listen_keys = {r.path.rsplit("/", 1)[1] for r in fake.requests
                       if r.path.startswith("/private/ws/")}
        assert listen_keys
        shown = a.logs() + b.logs() + b.get("/status")[1].decode()
        for secret in (fake.api_key, fake.secret, *listen_keys):
            assert secret not in shown, secret
    finally:
        if b is not None:
            b.stop()
        a.stop()


async def test_exits_retry_through_5xx_timeouts_and_a_ban_until_closed(tmp_path, fake,
                                                                         metrics_factory):
    """Issue #15: an exit that a 503, a timeout (both "never arrived" once queried) or a 418
    ban kept from the venue is sent again until the position is closed; entries are not."""
    m = metrics_factory()
    base = config(tmp_path, fake)
    cfg = dataclasses.replace(base, execution=dataclasses.replace(
        base.execution, exit_retry_initial_s=0.05, exit_retry_max_s=0.2))
    async with rig(tmp_path, fake, m, cfg) as r:
        def exit_posts() -> list[Any]:
            return [q for q in fake.requests if (q.method, q.path) == ("POST", "/fapi/v1/order")
                    and q.params.get("reduceOnly") == "true"]

        for n, fault in enumerate(("503", "timeout", "ban")):
            await r.intents.put(intent(f"x{n}:entry", "SELL", 2000.0))
            await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == -0.05
                             and not r.stage.orders)
            before = len(exit_posts())
            if fault == "503":
                fake.fault("POST /fapi/v1/order", status=503, code=-1001, msg="Service down")
            elif fault == "timeout":
                fake.fault("POST /fapi/v1/order", delay_s=1.5)  # not executed, no answer in time
            else:
                fake.ban(1.0)
            await r.intents.put(intent(f"x{n}:exit", "BUY", 2000.0, reduce_only=True))
            await eventually(lambda: abs(r.stage.portfolio.position_qty("BTCUSDT")) < 1e-12
                             and not r.stage.orders and not r.stage.exit_retries, timeout=20,
                             what=f"the exit through the {fault}")
            sent = exit_posts()[before:]
            assert len(sent) == 2, [q.status for q in sent]
            assert sent[-1].params["newClientOrderId"] == client_order_id(f"x{n}:exit:retry1")
            assert abs(fake.positions["BTCUSDT"][0]) < 1e-12
        assert metric(m, "dolphind_exit_retries_total") == 3
        # An entry refused the same way is not sent again.
        entries = fake.count("POST /fapi/v1/order")
        fake.fault("POST /fapi/v1/order", status=429, code=-1003, msg="Too many requests",
                   retry_after=1)
        await r.intents.put(intent("y:entry", "SELL", 2000.0))
        await eventually(lambda: any(o.intent_id == "y:entry" and o.state == "rejected"
                                     for o in r.stage.recent_orders))
        await asyncio.sleep(1.5)
        assert fake.count("POST /fapi/v1/order") == entries + 1
        assert not r.stage.exit_retries and r.stage.portfolio.position_qty("BTCUSDT") == 0
    events = audit_events(r.audit_path)
    retried = [e for e in events if e["event"] == "order.submitted"
               and e["intent_id"].endswith(":retry1")]
    assert len(retried) == 3 and all(e["kind"] == "exit" for e in retried)


async def test_foreign_holdings_are_left_alone_through_an_hour_of_trading(
        tmp_path, fake, metrics_factory):
    """Issue #15: a position and an order on the account that this daemon did not open are
    reported and never touched (no order, no cancel) through an hour of market time of
    entries, exits and a flatten; the exposure rails count the foreign position."""
    fake.set_position("ETHUSDT", 0.5, 2_780.0)  # 1,390 USDT, opened by hand
    fake.place("ETHUSDT", "SELL", 0.1, 3_000.0, "web_manual_1")
    m = metrics_factory()
    base = config(tmp_path, fake)
    cfg = dataclasses.replace(base, risk=dataclasses.replace(
        base.risk, max_gross_exposure_usdt=3_000.0, max_symbol_exposure_usdt=3_000.0,
        max_orders_per_minute=1000.0, order_burst=100))
    async with rig(tmp_path, fake, m, cfg) as r:
        assert r.stage.portfolio.position_qty("ETHUSDT") == 0.0
        assert r.stage.foreign_positions == {"ETHUSDT": (0.5, 2_780.0)}
        assert set(r.venue.foreign_orders) == {"web_manual_1"}
        assert metric(m, "dolphind_foreign_positions") == 1
        foreign = r.stage.status()["foreign"]
        assert foreign["policy"] == "ignore" and foreign["positions"]["ETHUSDT"]["qty"] == 0.5
        assert [o["client_id"] for o in foreign["orders"]] == ["web_manual_1"]
        assert metric(m, "dolphind_foreign_orders") == 1
        # An hour of market time: a round trip in BTCUSDT every five minutes.
        t0 = 1_700_000_000 * 10**9
        for k in range(12):
            ts = t0 + k * 300 * 10**9
            await r.intents.put(dataclasses.replace(intent(f"h{k}:entry", "SELL", 1000.0),
                                                    ts_ns=ts))
            await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == -0.025
                             and not r.stage.orders)
            await r.intents.put(dataclasses.replace(
                intent(f"h{k}:exit", "BUY", 1000.0, reduce_only=True), ts_ns=ts + 150 * 10**9))
            await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == 0.0
                             and not r.stage.orders)
        # The foreign 1,390 USDT counts: 2,000 more would take gross exposure past 3,000.
        await r.intents.put(intent("big:entry", "SELL", 2000.0))
        await eventually(lambda: any(o.intent_id == "big:entry" for o in r.stage.recent_orders))
        assert metric(m, "dolphind_risk_rejections_total", rule="gross_exposure") == 1
        # A flatten closes only what is ours (nothing is open): the foreign position stays.
        await r.intents.put(intent("last:entry", "SELL", 1000.0))
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == -0.025
                         and not r.stage.orders)
        r.stage._s.control.flatten("test", "end of the hour")
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == 0.0
                         and not r.stage.orders)
        await asyncio.sleep(0.3)
        assert r.stage.portfolio.position_qty("ETHUSDT") == 0.0
        assert set(r.venue.foreign_orders) == {"web_manual_1"}
    assert fake.positions["ETHUSDT"] == (0.5, 2_780.0)
    assert fake.orders_with_client_id("web_manual_1")[0].status == "NEW"
    touched = [q for q in fake.requests if q.path == "/fapi/v1/order"
               and q.method in ("POST", "DELETE") and (q.params.get("symbol") == "ETHUSDT"
                                                       or q.params.get("origClientOrderId")
                                                       == "web_manual_1")]
    assert touched == []
    # ours only: 12 round trips, the last entry and the flatten (big:entry never left)
    assert fake.count("POST /fapi/v1/order") == 2 * 12 + 2
    events = audit_events(r.audit_path)
    found = [e for e in events if e["event"] == "execution.foreign_positions"]
    assert found and found[0]["positions"] == {"ETHUSDT": 0.5}
    assert found[0]["action"] == "left alone"
    assert any(e["event"] == "execution.foreign_order" and e["client_id"] == "web_manual_1"
               for e in events)
    assert verify(r.audit_path).ok


async def test_a_position_closed_by_hand_while_down_shrinks_ours_not_foreign(
        tmp_path, fake, metrics_factory):
    """Ours is never more than the venue holds: half of our short closed by hand while the
    daemon was down leaves us the other half (our entry price), and nothing foreign."""
    store = await Store.open(tmp_path / "dolphind.sqlite", None, None)
    async with store:
        await store.write(account_op(Account(10_000.0, 10_000.0, 0.0, 0.0, 10_000.0), 1),
                          position_op(Position("BTCUSDT", -0.05, 40_000.0)), wait=True)
    fake.set_position("BTCUSDT", -0.025, 41_000.0)
    async with rig(tmp_path, fake, metrics_factory()) as r:
        assert r.stage.portfolio.position_qty("BTCUSDT") == -0.025
        assert r.stage.portfolio.positions["BTCUSDT"].avg_price == 40_000.0
        assert r.stage.foreign_positions == {}


async def test_a_stuck_exit_raises_an_incident_shows_on_status_and_keeps_trying(
        tmp_path, fake, metrics_factory):
    """Issue #15: an exit refused for longer than exit_stuck_after_s is an incident (critical,
    audited, dolphind_exits_stuck, /status), and it is still retried: once the venue takes
    orders again the position is closed and the exit is no longer stuck."""
    m = metrics_factory()
    base = config(tmp_path, fake, default_retry_after_s=0.1)
    cfg = dataclasses.replace(base, execution=dataclasses.replace(
        base.execution, exit_retry_initial_s=0.05, exit_retry_max_s=0.1,
        exit_stuck_after_s=0.5), risk=dataclasses.replace(base.risk, breaker_min_requests=1000))
    async with rig(tmp_path, fake, m, cfg) as r:
        await r.intents.put(intent("s:entry", "SELL", 2000.0))
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == -0.05
                         and not r.stage.orders)
        fault = fake.fault("POST /fapi/v1/order", times=10_000, status=429, code=-1003,
                           msg="Too many requests")
        await r.intents.put(intent("s:exit", "BUY", 2000.0, reduce_only=True))
        await eventually(lambda: r.stage.status()["exits_retrying"].get("BTCUSDT", {})
                         .get("stuck"), timeout=10, what="the exit reported stuck")
        view = r.stage.status()["exits_retrying"]["BTCUSDT"]
        assert view["attempts"] >= 1 and view["last_error"] == "venue:rate_limited"
        assert metric(m, "dolphind_exits_stuck") == 1
        incident = [a for a in r.stage._s.control.recent if a.action == "incident"]
        assert incident and incident[0].detail["kind"] == "exit_stuck"
        assert incident[0].detail["severity"] == "critical"
        tries = fake.count("POST /fapi/v1/order")
        await eventually(lambda: fake.count("POST /fapi/v1/order") > tries + 1,
                         what="still retrying after the incident")
        fault.times = 0  # the venue takes orders again
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == 0.0
                         and not r.stage.exit_retries, timeout=10)
        assert metric(m, "dolphind_exits_stuck") == 0
    kinds = [e["event"] for e in audit_events(r.audit_path)]
    assert "execution.exit_stuck" in kinds and "execution.exit_unstuck" in kinds


async def test_a_foreign_position_opened_while_running_is_reported_between_reconnects(
        tmp_path, fake, metrics_factory):
    """With no order working, positions are compared every positions_check_s: a hand trade
    made while the daemon runs shows up as foreign (and in the exposure rails) without
    waiting for a reconnect; a hand close of part of ours shrinks ours."""
    m = metrics_factory()
    async with rig(tmp_path, fake, m, config(tmp_path, fake, positions_check_s=0.2)) as r:
        connects = r.venue.connects
        await r.intents.put(intent("o:entry", "SELL", 2000.0))
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == -0.05
                         and not r.stage.orders)
        fake.set_position("ETHUSDT", 0.3, 2_780.0)
        await eventually(lambda: r.stage.foreign_positions == {"ETHUSDT": (0.3, 2_780.0)},
                         what="the hand trade seen as foreign")
        assert metric(m, "dolphind_foreign_positions") == 1
        assert r.stage.equity.account_snapshot().symbol_exposure_usdt["ETHUSDT"] \
            == pytest.approx(0.3 * 2_780.0)
        fake.set_position("BTCUSDT", -0.02, 40_000.0)  # part of ours closed by hand
        await eventually(lambda: r.stage.portfolio.position_qty("BTCUSDT") == -0.02)
        assert r.venue.connects == connects  # no reconnect needed
    events = audit_events(r.audit_path)
    assert any(e["event"] == "execution.foreign_positions" and e["cause"] == "periodic"
               and e["positions"] == {"ETHUSDT": 0.3} for e in events)


async def test_with_our_order_working_a_difference_waits_before_it_is_called_foreign(
        tmp_path, fake, metrics_factory):
    """Under "ignore": while one of our orders works, its fills may still be on their way, so
    a difference is a mismatch (not reconciled, no entries), not yet foreign; once the order is
    done, what remains beyond ours is foreign and left alone."""
    m = metrics_factory()
    async with rig(tmp_path, fake, m, config(tmp_path, fake, positions_check_s=0.0)) as r:
        fake.hold_market = True
        await r.intents.put(intent("w:entry", "SELL", 2000.0))
        cid = client_order_id("w:entry")
        await eventually(lambda: cid in r.stage.orders and r.stage.orders[cid].state == "acked")
        fake.refuse_streams = True
        await fake.drop_streams()
        await eventually(lambda: not r.venue.status()["user_stream"]["connected"])
        fake.set_position("BTCUSDT", -0.02, 40_000.0)  # a hand trade while the stream is down
        fake.refuse_streams = False
        await eventually(lambda: any(e["event"] == "execution.positions_mismatch"
                                     for e in audit_events(r.audit_path)), what="mismatch")
        assert not r.venue.reconciled and r.stage.foreign_positions == {}
        await fake.fill(cid)
        await eventually(lambda: r.venue.reconciled, what="reconciled after the fill")
        assert r.stage.portfolio.position_qty("BTCUSDT") == pytest.approx(-0.05)
        (q, px), = r.stage.foreign_positions.values()
        assert list(r.stage.foreign_positions) == ["BTCUSDT"]
        assert q == pytest.approx(-0.02) and px == pytest.approx(40_000.0)
