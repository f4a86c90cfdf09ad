"""The Hazelcast bus's pure parts: breaker, key naming, file-only files, client options,
config validation, and the §15 payloads the daemon publishes."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from dolphind.config import ConfigError, StateBusConfig, config_from_dict
from dolphind.statebus.base import FEATURES, HEARTBEAT, PNL, SAFETY
from dolphind.statebus.breaker import Breaker
from dolphind.statebus.hazelcast import (HazelcastStateBus, client_options, file_name,
                                         remote_key, write_latest)
from dolphind.statebus.publish import (book_payloads, meta_health_payload, pnl_payload,
                                       safety_payload, shard_map, state_payload)


def test_breaker_opens_after_n_failures_and_closes_on_success() -> None:
    b = Breaker(threshold=3, initial_s=0.5, max_s=4.0)
    assert b.open  # nothing reached the cluster yet
    assert b.success() is True and not b.open
    assert not b.failure() and not b.failure()
    assert b.failure() is True and b.open and b.opened == 1
    assert not b.failure()  # already open: not opened again
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.success() is True and b.failures == 0
    assert b.next_delay() == 0.5  # back-off starts over after a recovery
    assert b.trip() is True and b.opened == 2 and not b.trip()


def test_own_keys_are_namespaced_shared_keys_are_not() -> None:
    assert remote_key("acct-a", SAFETY, "latest") == "acct-a:latest"
    assert remote_key("acct-a", HEARTBEAT, "dolphind") == "acct-a:dolphind"
    assert remote_key("acct-a", PNL, "2026-01-02") == "acct-a:2026-01-02"
    assert remote_key("acct-a", FEATURES, "latest_eigen_scan") == "latest_eigen_scan"
    assert remote_key("", SAFETY, "latest") == "latest"


def test_file_only_mode_writes_latest_values_atomically(tmp_path: Path) -> None:
    n = write_latest(tmp_path, {(SAFETY, "latest"): b'{"posture":"APEX"}',
                                (FEATURES, "a/b"): b"1"})
    assert n == 2
    assert orjson.loads((tmp_path / SAFETY / "latest.json").read_bytes()) == {"posture": "APEX"}
    assert (tmp_path / FEATURES / file_name("a/b")).read_bytes() == b"1"
    assert "/" not in file_name("a/b")
    write_latest(tmp_path, {(SAFETY, "latest"): b'{"posture":"TURTLE"}'})
    assert orjson.loads((tmp_path / SAFETY / "latest.json").read_bytes())["posture"] == "TURTLE"
    assert not list(tmp_path.rglob("*.tmp"))


def test_client_options_from_config_and_env() -> None:
    cfg = dataclasses.replace(StateBusConfig(), kind="hazelcast", cluster_name="c1",
                              members=("10.0.0.1:5701", "10.0.0.2:5701"), tls=True,
                              ca_file="ca.pem", cert_file="c.pem", key_file="k.pem")
    opts = client_options(cfg, {"DOLPHIND_HAZELCAST_USERNAME": "u",
                                "DOLPHIND_HAZELCAST_PASSWORD": "p"},
                          resolve=lambda p: Path("/etc/dolphind") / p)
    assert opts["cluster_name"] == "c1"
    assert opts["cluster_members"] == ["10.0.0.1:5701", "10.0.0.2:5701"]
    assert opts["creds_username"] == "u" and opts["creds_password"] == "p"
    assert opts["ssl_enabled"] and opts["ssl_cafile"] == "/etc/dolphind/ca.pem"
    assert opts["ssl_certfile"] == "/etc/dolphind/c.pem"
    assert opts["invocation_timeout"] == cfg.invocation_timeout_s
    plain = client_options(StateBusConfig(), {})
    assert "creds_username" not in plain and "ssl_enabled" not in plain


def test_put_never_raises_and_reads_the_last_value(tmp_path: Path) -> None:
    """Without start() (no loop, no cluster) the bus is still a correct local store."""
    seen: list[str] = []
    bus = HazelcastStateBus(StateBusConfig(), tmp_path, {}, on_write=seen.append)
    bus.put(SAFETY, "latest", {"posture": "APEX", "x": np.float64(1.5)})
    bus.put(SAFETY, "bad", {"not json": object()})
    assert bus.get(SAFETY, "latest") == {"posture": "APEX", "x": 1.5}
    assert bus.get(SAFETY, "bad") is None and seen == ["ok", "rejected"]
    assert not bus.healthy() and bus.status()["mode"] == "file-only"


@pytest.mark.parametrize("section, problem", [
    ({"members": ["nohost"]}, "statebus.members: expected host:port"),
    ({"members": []}, "statebus.members: at least one member"),
    ({"breaker_failures": 0}, "statebus.breaker_failures"),
    ({"invocation_timeout_s": 0}, "statebus.invocation_timeout_s"),
    ({"reconnect_initial_s": 5, "reconnect_max_s": 1}, "reconnect_initial_s"),
    ({"namespace": "a b"}, "statebus.namespace"),
    ({"ca_file": "/nonexistent/ca.pem", "tls": True}, "statebus.ca_file"),
    ({"cert_file": "/dev/null"}, "cert_file and key_file go together"),
])
def test_statebus_config_is_validated(section: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"replay": {"paths": ["x"]},
                          "statebus": {"kind": "hazelcast", **section}})
    assert problem in str(exc.value)


def test_shard_routing_is_sum_of_ord() -> None:
    assert shard_map("BTCUSDT") == f"DOLPHIN_FEATURES_SHARD_{sum(map(ord, 'BTCUSDT')) % 10:02d}"
    assert {shard_map(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT")} \
        <= {f"DOLPHIN_FEATURES_SHARD_{i:02d}" for i in range(10)}


def test_payloads_follow_the_bible_schema() -> None:
    alpha = {"posture": "STALKER", "rm": 0.7, "acb_boost": 1.2, "acb_beta": 0.5,
             "mc_status": "GREEN", "system_alive": True, "regime_size_mult": float("nan"),
             "params_hash": "abc"}
    execution = {"equity_usdt": 10_250.0, "peak_equity_usdt": 10_300.0, "drawdown": 0.005,
                 "positions": {"BTCUSDT": -0.01}, "working_orders": 1}
    s = safety_payload(alpha, {"halted": False}, "GREEN", 1.0)
    assert s["posture"] == "STALKER" and s["Rm"] == 0.7
    assert s["sensors"]["regime_size_mult"] is None  # NaN is not JSON
    orjson.dumps(s)
    p = pnl_payload(alpha, execution, 10_000.0, 3)
    assert p == {"pnl": 250.0, "capital": 10_250.0, "trades": 3, "boost": 1.2, "beta": 0.5,
                 "mc_status": "GREEN", "posture": "STALKER", "stale_state": False}
    st = state_payload("champion", alpha, execution, 10_000.0, 3, 86_400.0)
    assert st["date"] == "1970-01-02" and st["pnl"] == 250.0 and st["peak_capital"] == 10_300.0
    assert st["engine_state"]["positions"] == {"BTCUSDT": -0.01}
    m = meta_health_payload(0.9, "GREEN", {"feed": 1.0},
                            {"scan": {"running": True}, "feed": {"running": False,
                                                                  "finished": True}},
                            {"kind": "hazelcast"}, 5.0)
    assert m["status"] == "GREEN" and m["service_status"] == {"scan": "running",
                                                               "feed": "finished"}


def test_book_payloads_universe_and_shards() -> None:
    feats = {k: np.array([1.0, np.nan]) for k in
             ("best_bid", "best_ask", "imbalance", "imbalance_ma5", "imbalance_persistence",
              "spread_bps", "depth_1pct_usd", "depth_quality", "fill_probability",
              "withdrawal_velocity")}
    snap = SimpleNamespace(ts_ns=2_000_000_000, symbols=("BTCUSDT", "ETHUSDT"), features=feats,
                           macro=SimpleNamespace(regime_signal=-1))
    universe, per_symbol = book_payloads(snap)
    assert universe["_n_assets"] == 1 and set(universe["assets"]) == {"BTCUSDT"}
    assert universe["_snapshot_utc"] == 2.0
    shard, payload = per_symbol["BTCUSDT"]
    assert shard == shard_map("BTCUSDT") and payload["regime_signal"] == -1
    assert payload["imbalance"] == 1.0 and "ETHUSDT" not in per_symbol


def test_acb_update_input_from_the_bus_is_validated_and_applied_once() -> None:
    from dolphind.alpha.inputs import ExternalInputs, parse_acb_update
    from dolphind.statebus.memory import MemoryStateBus

    assert parse_acb_update({"boost": 1.3, "beta": 0.5}) == (1.3, 0.5)
    assert parse_acb_update({"boost": 1.1}) == (1.1, None)
    for bad in ({"boost": 0}, {"boost": "1.2"}, {"boost": 1.2, "beta": 2}, [1.2], {"beta": 0.5}):
        with pytest.raises(ValueError):
            parse_acb_update(bad)
    bus = MemoryStateBus()
    inputs = ExternalInputs(bus)
    assert inputs.poll_acb() is None
    bus.put(FEATURES, "acb_boost", {"boost": 1.4, "beta": 0.3})
    assert inputs.poll_acb() == (1.4, 0.3)
    assert inputs.poll_acb() is None  # applied once, not every bar
    bus.put(FEATURES, "acb_boost", {"boost": 99})
    assert inputs.poll_acb() is None
    st = inputs.status()["acb_update"]
    assert "rejected" in st["problem"] and st["payload"] == {"boost": 1.4, "beta": 0.3}


def test_publisher_never_raises_and_reads_the_live_feeds_book_property() -> None:
    from dolphind.statebus.memory import MemoryStateBus
    from dolphind.statebus.publish import Publisher

    feats = {k: np.array([1.0]) for k in
             ("best_bid", "best_ask", "imbalance", "imbalance_ma5", "imbalance_persistence",
              "spread_bps", "depth_1pct_usd", "depth_quality", "fill_probability",
              "withdrawal_velocity")}
    snap = SimpleNamespace(ts_ns=1, symbols=("BTCUSDT",), features=feats,
                           macro=SimpleNamespace(regime_signal=0))
    level = SimpleNamespace(value="GREEN")
    daemon = SimpleNamespace(
        pipeline=SimpleNamespace(status_parts={}, ledger=None,
                                 feed=SimpleNamespace(book_view=SimpleNamespace(
                                     snapshot=lambda: snap))),
        health=SimpleNamespace(score=lambda: (1.0, level), sensors={}, snapshot=lambda: {}),
        control=SimpleNamespace(status=lambda: {"halted": False}),
        config=SimpleNamespace(strategy=SimpleNamespace(profile="champion")))
    bus = MemoryStateBus()
    pub = Publisher(bus, lambda: 1.0, wall=lambda: 0.0)
    assert pub.tick(0.0, daemon)
    assert bus.get(FEATURES, "obf_universe_latest")["_n_assets"] == 1
    assert bus.get(shard_map("BTCUSDT"), "BTCUSDT")["imbalance"] == 1.0
    assert not pub.tick(0.5, daemon)  # not yet: the interval
    daemon.health = None  # a bug in what it reads: logged and counted, never raised
    assert not pub.tick(1.0, daemon) and pub.failures == 1


async def test_the_venue_lease_is_the_cp_fenced_lock_on_the_hazelcast_bus(tmp_path: Path) -> None:
    """Without a connected cluster the fenced lock cannot be confirmed: fenced, and why."""
    from dolphind.venues.binance.lease import FencedLease, Lease, account_id

    bus = HazelcastStateBus(StateBusConfig(), tmp_path, {})
    lease = Lease(account_id("binance-usdm", "KEY"), tmp_path / "locks", bus, lambda: 5.0)
    assert isinstance(lease.bus, FencedLease) and lease.kind == "host_lock+cp_fenced_lock"
    assert not await lease.acquire()
    assert lease.host.held and "state bus is not connected" in lease.reason
    assert lease.fence is None and lease.fence_for("dd-1") is None  # nothing may be sent
    await lease.release()
    assert not lease.host.held


async def test_a_crash_of_the_fenced_lock_owner_task_is_seen_and_fences(tmp_path: Path) -> None:
    """The task that owns the CP lock crashes (something its handler does not catch): the
    crash is handed on (the venue counts it), the lease is not held from then on, and every
    later renewal raises (the renewal loop's supervisor then ends the process)."""
    from structlog.testing import capture_logs

    from dolphind.venues.binance.lease import Lease, LeaseLockCrashed, account_id

    class Escaped(BaseException):
        pass

    class BrokenCP:
        async def get_lock(self, name: str) -> Any:
            raise Escaped("the lock proxy broke")

    bus = HazelcastStateBus(StateBusConfig(), tmp_path, {})
    bus.client = SimpleNamespace(cp_subsystem=BrokenCP())
    crashes: list[BaseException] = []
    changes: list[bool] = []
    lease = Lease(account_id("binance-usdm", "KEY"), tmp_path / "locks", bus, lambda: 5.0,
                  on_crash=crashes.append, on_change=changes.append)
    with capture_logs() as logs:
        with pytest.raises(LeaseLockCrashed, match="owner task crashed"):
            await lease.acquire()
    assert [type(e) for e in crashes] == [Escaped]
    assert any(e["event"] == "task.crashed" and e["exc_info"] for e in logs)
    assert not lease.held and "owner task crashed" in lease.reason
    assert lease.fence_for("dd-1") is None  # nothing may be sent
    with pytest.raises(LeaseLockCrashed):  # the lock is lost to this process for good
        await lease.acquire()
    await lease.release()  # a clean stop still lets the host lock go
    assert not lease.host.held


async def test_a_crashed_bus_writer_is_counted_restarted_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bus's loops run as supervised stages: a writer that crashes (file-only mode, a
    write error the writer does not expect) is counted and restarted, and the batch it held
    is written by the next run."""
    from dolphind.config import SupervisionConfig
    from dolphind.statebus import hazelcast as hz
    from dolphind.supervisor import supervised
    from dolphind.telemetry.health import Health
    from dolphind.telemetry.metrics import Metrics
    from tests.conftest import eventually
    from tests.hazelcast import free_port

    cfg = dataclasses.replace(StateBusConfig(), kind="hazelcast", cluster_name="nobody",
                              members=(f"127.0.0.1:{free_port()}",), invocation_timeout_s=0.5)
    bus = HazelcastStateBus(cfg, tmp_path / "files", client_options(cfg))
    real, calls = hz.write_latest, []

    def flaky(directory: Path, items: dict[tuple[str, str], bytes]) -> int:
        calls.append(len(items))
        if len(calls) == 1:
            raise ValueError("a bug in the file writer")
        return real(directory, items)

    monkeypatch.setattr(hz, "write_latest", flaky)
    metrics = await asyncio.to_thread(Metrics)
    health = Health(metrics, lambda: 5.0)
    fast = SupervisionConfig(backoff_initial_s=0.01, backoff_max_s=0.02)
    try:
        async with supervised(health, metrics, lambda: fast) as loops:
            loops.start(bus.stages())
            bus.put(SAFETY, "latest", {"posture": "TURTLE"})  # file-only: no cluster
            path = tmp_path / "files" / SAFETY / "latest.json"
            await eventually(path.exists, what="the batch written by the restarted writer")
            get = metrics.registry.get_sample_value
            assert get("dolphind_stage_errors_total", {"stage": "statebus:writer"}) == 1
            assert health.stages["statebus:writer"].restarts == 1
            assert "a bug in the file writer" in (health.stages["statebus:writer"].last_error
                                                  or "")
    finally:
        await bus.close()
    assert orjson.loads(path.read_bytes()) == {"posture": "TURTLE"}
