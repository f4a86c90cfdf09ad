"""Fencing across hosts: two real daemons with their own data dirs AND their own host lock
dirs (as on two machines: the flock fences nothing between them) trade one account through
the loopback Binance, sharing a 3-member Hazelcast cluster with the CP subsystem (Raft).

The first holds the account as a CP FencedLock; the second is fenced (says by whom, refuses
to send). The holder is killed with SIGKILL: the cluster frees the lock when its CP session
runs out, the second takes over with a higher fence, reconciles, and then sends, each order
stamped with its fence."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Iterator

import hazelcast
import orjson
import pytest

from tests.conftest import wait_until
from tests.fakes.binance_rest import FakeBinanceRest
from tests.hazelcast import Cluster
from tests.integration.harness import Daemon, free_port
from tests.integration.test_binance_venue import ThreadedFake, market, venue_state  # noqa: F401
from tests.integration.live_venue import live_venue_toml, venue_env
from tests.integration.test_live_feed import FakeVenue

pytestmark = pytest.mark.integration

SESSION_TTL_S = 6  # the members' CP session TTL: a dead holder's lock is freed after this
LEASE_TTL_S = 3.0  # < session TTL - heartbeat: a cut-off holder stops before it is freed


@pytest.fixture(scope="module")
def cp_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("hzcp"), size=3, cp=True,
                session_ttl_s=SESSION_TTL_S).start()
    yield c
    c.stop()


@pytest.fixture
def fake() -> Iterator[FakeBinanceRest]:
    t = ThreadedFake()
    t.fake.call = t.call  # type: ignore[attr-defined]
    try:
        yield t.fake
    finally:
        t.stop()


def daemon(root: Path, name: str, fake: FakeBinanceRest, cluster: Cluster,
           market_url: str) -> Daemon:
    """A mode "live" daemon (live feed on the loopback market fake, orders to the loopback
    REST fake) whose state bus is the cluster."""
    d = root / name
    d.mkdir()
    port = free_port()
    cfg = d / "dolphind.toml"
    cfg.write_text(live_venue_toml(port, market_url, fake, d / "host-locks",
                                   lease_ttl_s=LEASE_TTL_S, lease_renew_s=0.3,
                                   tail=cluster.toml(f'''namespace = "{name}"
cp_subsystem = true
invocation_timeout_s = 2.0
publish_interval_s = 0.5
''')))
    return Daemon(cfg, port, env=venue_env(fake)).start()


def fences(d: Daemon) -> list[dict[str, Any]]:
    return [e for e in d.events() if e.get("event") == "lease.order_fence"]


# Three JVMs and two daemons on a shared 2-core machine: the default 120 s is too tight for the
# cluster's start plus the session TTL wait (a time budget, not an assertion).
@pytest.mark.timeout(300)
def test_second_daemon_fenced_then_takes_over_after_kill_9(
        tmp_path: Path, fake: FakeBinanceRest, cp_cluster: Cluster, market: FakeVenue) -> None:
    fake.set_position("BTCUSDT", -0.05, 40_000.0)  # an open short for the daemons to close
    # a's orders are refused by the venue (margin): the short stays for b to close.
    fake.fault("POST /fapi/v1/order", times=1000, status=400, code=-2019,
               msg="Margin is insufficient.")
    a = daemon(tmp_path, "a", fake, cp_cluster, market.url)
    b: Daemon | None = None
    try:
        held = wait_until(lambda: (s := venue_state(a)) and s["lease"]["held"]
                          and s["reconciled"] and s, timeout=120, what="a holds the account")
        assert held["lease"]["kind"] == "host_lock+cp_fenced_lock"
        fence_a = held["lease"]["fence"]
        assert isinstance(fence_a, int) and fence_a > 0
        owner_a = held["lease"]["owner"]

        b = daemon(tmp_path, "b", fake, cp_cluster, market.url)
        fenced = wait_until(lambda: (s := venue_state(b)) and s["lease"]["reason"] and s,
                            timeout=120, what="b fenced")
        assert fenced["lease"]["held"] is False and fenced["reconciled"] is False
        assert owner_a in fenced["lease"]["reason"] and "CP lock" in fenced["lease"]["reason"]
        # Separate host-lock dirs: only the cluster fences b.
        assert Path(fenced["lease"]["lock_file"]).parent != Path(held["lease"]["lock_file"]).parent

        # a sends (refused by the venue, but sent): stamped with its fence.
        assert a.post("/flatten", {"reason": "test"})[0] == 200
        stamped = wait_until(lambda: fences(a), timeout=30, what="a's order stamped")
        assert stamped[0]["fence"] == fence_a
        # b refuses to send: nothing of b's reaches the venue.
        wait_until(lambda: b.get_json("/positions")["positions"], timeout=30,
                   what="b's position (read)")
        assert b.post("/flatten", {"reason": "test"})[0] == 200
        rejected = wait_until(lambda: [o for o in b.get_json("/orders")["recent"]
                                       if o["reason"] == "FLATTEN"
                                       and o["reject_reason"].startswith("venue:fenced: ")],
                              timeout=30, what="b's flatten refused")
        sent_ids = {r.params.get("newClientOrderId") for r in fake.requests
                    if (r.method, r.path) == ("POST", "/fapi/v1/order")}
        assert rejected[0]["client_id"] not in sent_ids
        assert not fences(b)

        # cp_subsystem = true: posture and Rm also in the CP AtomicReference (bible §14.6).
        client = hazelcast.HazelcastClient(cluster_name=cp_cluster.name,
                                           cluster_members=cp_cluster.addresses,
                                           cluster_connect_timeout=30)
        try:
            ref = client.cp_subsystem.get_atomic_reference("a:DOLPHIN_SAFETY").blocking()
            safety = orjson.loads(wait_until(ref.get, timeout=30, what="CP AtomicReference"))
            assert safety["posture"] in {"APEX", "STALKER", "TURTLE", "HIBERNATE"}
        finally:
            client.shutdown()

        fake.faults.clear()
        n_sent = fake.count("POST /fapi/v1/order")
        # a dies without a word (no unlock): b waits for the CP session to run out.
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait(10)
        took = wait_until(lambda: (s := venue_state(b)) and s["lease"]["held"]
                          and s["reconciled"] and s, timeout=60, what="b took over")
        assert took["lease"]["fence"] > fence_a  # the fence only grows across holders
        took_over = [e for e in b.events() if e.get("event") == "lease.fenced_lock_acquired"]
        fenced_at = [e for e in b.events() if e.get("event") == "venue.fenced"]
        assert took_over and fenced_at
        assert b.post("/flatten", {"reason": "test"})[0] == 200
        wait_until(lambda: abs(fake.positions["BTCUSDT"][0]) < 1e-12, timeout=30,
                   what="b flattened")
        sent = [r for r in fake.requests
                if (r.method, r.path) == ("POST", "/fapi/v1/order")][n_sent:]
        assert sent and all(r.params["reduceOnly"] == "true" for r in sent)
        stamped_b = fences(b)
        assert {e["client_id"] for e in stamped_b} >= {r.params["newClientOrderId"]
                                                      for r in sent}
        assert all(e["fence"] == took["lease"]["fence"] for e in stamped_b)
    finally:
        if b is not None:
            b.stop()
        a.stop()  # (killed already: closes its log)


@pytest.mark.timeout(300)
def test_a_paused_holder_comes_back_stale_and_cannot_send(
        tmp_path: Path, fake: FakeBinanceRest, cp_cluster: Cluster, market: FakeVenue) -> None:
    """The holder is frozen (SIGSTOP: a GC pause, a hung VM) past the CP session TTL; the other
    daemon takes over. When the old holder runs again it must not send: its lease lapsed
    (lease_ttl_s after its last confirmation) and the cluster says the lock is another's. (Its
    strategy keeps trying to exit the short it adopted: the attempts are the evidence.)"""
    fake.set_position("BTCUSDT", -0.05, 40_000.0)
    fake.fault("POST /fapi/v1/order", times=1000, status=400, code=-2019,
               msg="Margin is insufficient.")
    a = daemon(tmp_path, "a", fake, cp_cluster, market.url)
    b: Daemon | None = None
    try:
        held = wait_until(lambda: (s := venue_state(a)) and s["lease"]["held"]
                          and s["reconciled"] and s, timeout=120, what="a holds the account")
        b = daemon(tmp_path, "b", fake, cp_cluster, market.url)
        wait_until(lambda: (s := venue_state(b)) and s["lease"]["reason"], timeout=120,
                   what="b fenced")
        # Both daemons publish on the one cluster without colliding: namespaced keys.
        client = hazelcast.HazelcastClient(cluster_name=cp_cluster.name,
                                           cluster_members=cp_cluster.addresses,
                                           cluster_connect_timeout=30)
        try:
            beats = client.get_map("DOLPHIN_HEARTBEAT").blocking()
            wait_until(lambda: beats.get("a:dolphind") and beats.get("b:dolphind"),
                       timeout=30, what="both heartbeats")
            assert orjson.loads(beats.get("a:dolphind"))["pid"] != \
                orjson.loads(beats.get("b:dolphind"))["pid"]
        finally:
            client.shutdown()

        stamped_before = len(fences(a))
        a.signal(signal.SIGSTOP)
        try:
            took = wait_until(lambda: (s := venue_state(b)) and s["lease"]["held"]
                              and s["reconciled"] and s, timeout=60, what="b took over")
        finally:
            a.signal(signal.SIGCONT)
        assert took["lease"]["fence"] > held["lease"]["fence"]
        owner_b = took["lease"]["owner"]
        # Losing the lease also drops reconciliation (a later takeover must reconcile first).
        wait_until(lambda: (s := venue_state(a)) and not s["lease"]["held"]
                   and owner_b in s["lease"]["reason"] and s["reconciled"] is False,
                   timeout=30, what="a sees it is stale, names the new holder, unreconciled")
        # a's strategy keeps trying to exit the adopted short: every attempt that reaches the
        # venue is refused there (no fence), and none of them reaches Binance.
        refused = wait_until(lambda: [e for e in a.events()
                                      if e.get("event") == "venue.fenced_order"
                                      and owner_b in e.get("reason", "")],
                             timeout=60, what="a's order refused for want of the lease")
        sent_ids = {r.params.get("newClientOrderId") for r in fake.requests
                    if (r.method, r.path) == ("POST", "/fapi/v1/order")}
        assert not {e["client_id"] for e in refused} & sent_ids
        assert len(fences(a)) == stamped_before  # nothing stamped (so nothing sent) since
        assert all(e["fence"] == held["lease"]["fence"] for e in fences(a))
    finally:
        if b is not None:
            b.stop()
        a.stop()
