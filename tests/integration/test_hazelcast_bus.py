"""The Hazelcast state bus against a real member (Java, loopback): writes reach the cluster,
inputs arrive by listener, an outage puts the bus in file-only mode without blocking the
caller, and the restarted member gets every latest value back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import orjson
import pytest
from hazelcast.asyncio import HazelcastClient

from dolphind.config import StateBusConfig, SupervisionConfig
from dolphind.statebus.base import FEATURES, HEARTBEAT, SAFETY
from dolphind.statebus.hazelcast import HazelcastStateBus, client_options
from dolphind.supervisor import supervised
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from tests.conftest import eventually
from tests.hazelcast import Cluster, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("hz"), size=1).start()
    yield c
    c.stop()


def bus_config(cluster: Cluster, **kw: Any) -> StateBusConfig:
    return dataclasses.replace(StateBusConfig(), kind="hazelcast", cluster_name=cluster.name,
                               members=tuple(cluster.addresses), invocation_timeout_s=1.0,
                               breaker_failures=2, reconnect_initial_s=0.1,
                               reconnect_max_s=0.5, **kw)


@pytest.fixture
async def peer(cluster: Cluster) -> AsyncIterator[Any]:
    """Another process's view of the cluster (an external writer / reader)."""
    client = await HazelcastClient.create_and_start(cluster_name=cluster.name,
                                                    cluster_members=cluster.addresses)
    yield client
    await client.shutdown()


@contextlib.asynccontextmanager
async def open_bus(cfg: StateBusConfig, tmp: Path) -> AsyncIterator[HazelcastStateBus]:
    """The bus as the daemon runs it: its loops supervised, closed once they have stopped."""
    bus = HazelcastStateBus(cfg, tmp / "files", client_options(cfg))
    metrics = await asyncio.to_thread(Metrics)  # its collectors read /proc
    try:
        async with supervised(Health(metrics, lambda: 5.0), metrics,
                              SupervisionConfig) as loops:
            loops.start(bus.stages())
            yield bus
    finally:
        await bus.close()


async def test_writes_reach_the_cluster_namespaced_and_inputs_arrive_by_listener(
        cluster: Cluster, peer: Any, tmp_path: Path) -> None:
    async with open_bus(bus_config(cluster, namespace="acct-a"), tmp_path) as bus:
        bus.put(SAFETY, "latest", {"posture": "APEX", "Rm": 1.0})
        bus.put(FEATURES, "latest_eigen_scan", {"scan_number": 7, "vel_div": -0.03})
        safety, features = await peer.get_map(SAFETY), await peer.get_map(FEATURES)
        # This daemon's own key is namespaced; the market-wide scan is not.
        got = await eventually(lambda: safety.get("acct-a:latest"), what="safety on cluster")
        assert orjson.loads(got) == {"posture": "APEX", "Rm": 1.0}
        assert await safety.get("latest") is None
        got = await eventually(lambda: features.get("latest_eigen_scan"), what="scan")
        assert orjson.loads(got)["scan_number"] == 7
        await eventually(bus.healthy, what="breaker closed")

        # An external writer's input reaches the bus by listener (nobody polls the cluster).
        await features.set("exf_latest", '{"funding_btc": -0.0001, "_pushed_at": 1.0}')
        await eventually(lambda: bus.get(FEATURES, "exf_latest") is not None, what="exf")
        assert bus.get(FEATURES, "exf_latest")["funding_btc"] == -0.0001
        # A payload that is not JSON is rejected, shown, and the last good value stays.
        await features.set("exf_latest", "{broken")
        await eventually(lambda: "exf_latest" in bus.input_problems, what="rejection")
        assert "not JSON" in bus.status()["input_problems"]["exf_latest"]
        assert bus.get(FEATURES, "exf_latest")["funding_btc"] == -0.0001
        assert bus.counts["input_rejected"] >= 1
        await features.set("acb_boost", '{"boost": 1.3, "beta": 0.5}')
        await eventually(lambda: bus.get(FEATURES, "acb_boost") == {"boost": 1.3, "beta": 0.5},
                         what="acb_boost")


async def test_start_does_not_wait_for_a_cluster_that_is_not_there(tmp_path: Path) -> None:
    """Nothing listens on the member port: start returns, writes go to files, nothing blocks."""
    cfg = dataclasses.replace(StateBusConfig(), kind="hazelcast", cluster_name="nobody",
                              members=(f"127.0.0.1:{free_port()}",), invocation_timeout_s=0.5)
    t0 = time.monotonic()
    async with open_bus(cfg, tmp_path) as bus:
        bus.put(SAFETY, "latest", {"posture": "TURTLE"})
        assert bus.get(SAFETY, "latest") == {"posture": "TURTLE"}  # reads: the last value
        assert not bus.healthy()
        path = tmp_path / "files" / SAFETY / "latest.json"
        await eventually(path.exists, what="file-only copy")
        assert orjson.loads(path.read_bytes()) == {"posture": "TURTLE"}
        assert bus.status()["mode"] == "file-only"
    # Generous: the point is "not the cluster connect timeout" (the client would wait forever).
    assert time.monotonic() - t0 < 30


async def test_member_killed_mid_run_file_only_then_republished(
        cluster: Cluster, tmp_path: Path) -> None:
    async with open_bus(bus_config(cluster, namespace="acct-b"), tmp_path) as bus:
        bus.put(SAFETY, "latest", {"posture": "APEX", "n": 0})
        await eventually(bus.healthy, what="connected")
        await eventually(lambda: bus.counts["push_ok"] + bus.counts["republished"] >= 1,
                         what="first push")

        cluster.members[0].kill()
        # The writer keeps being fed; put never waits and reads stay the latest value.
        worst = 0.0
        for i in range(1, 40):
            t = time.perf_counter()
            bus.put(HEARTBEAT, "dolphind", {"i": i})
            bus.put(SAFETY, "latest", {"posture": "APEX", "n": i})
            worst = max(worst, time.perf_counter() - t)
            await asyncio.sleep(0.05)
        await eventually(lambda: not bus.healthy(), what="breaker open")
        files = tmp_path / "files"
        # Files are per daemon (its data dir): the bible's bare keys.
        await eventually((files / HEARTBEAT / "dolphind.json").exists, what="heartbeat file")
        await eventually(lambda: orjson.loads((files / SAFETY / "latest.json").read_bytes())
                         == {"posture": "APEX", "n": 39}, what="latest safety in file")
        assert bus.get(SAFETY, "latest") == {"posture": "APEX", "n": 39}
        assert bus.counts["breaker_opened"] == 1
        assert worst < 0.05, f"put took {worst * 1e3:.1f} ms during the outage"

        await asyncio.to_thread(cluster.restart, cluster.members[0])
        await eventually(bus.healthy, timeout=60, what="breaker closed after the restart")
        assert bus.counts["breaker_closed"] >= 2  # the first connection, then the recovery
        client = await HazelcastClient.create_and_start(cluster_name=cluster.name,
                                                        cluster_members=cluster.addresses)
        try:
            safety = await client.get_map(SAFETY)
            # The restarted member lost everything: the bus republished its latest values.
            got = await eventually(lambda: safety.get("acct-b:latest"), what="republished")
            assert orjson.loads(got) == {"posture": "APEX", "n": 39}
            # Inputs written after the restart arrive by the re-registered listener.
            features = await client.get_map(FEATURES)
            await features.set("acb_w750_threshold", '{"threshold": 0.0042}')
            await eventually(lambda: bus.get(FEATURES, "acb_w750_threshold") is not None,
                             timeout=20, what="listener after restart")
        finally:
            await client.shutdown()
