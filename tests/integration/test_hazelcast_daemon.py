"""The real daemon on a real Hazelcast member: its §15 keys on the cluster, inputs from the
cluster changing what it decides with, a bad payload shown, and the member killed mid-run
(trading goes on in file-only mode; the restarted member gets every latest value back)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import hazelcast
import orjson
import pytest

from tests.conftest import wait_until
from tests.hazelcast import Cluster
from tests.integration.harness import Daemon, free_port, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("hz"), size=1).start()
    yield c
    c.stop()


def peer(cluster: Cluster) -> Any:
    """A blocking client in the test process (another program on the cluster)."""
    return hazelcast.HazelcastClient(cluster_name=cluster.name,
                                     cluster_members=cluster.addresses,
                                     cluster_connect_timeout=30)


def remote(client: Any, map_name: str, key: str) -> Any:
    raw = client.get_map(map_name).blocking().get(key)
    return None if raw is None else orjson.loads(raw)


def start_daemon(tmp: Path, cluster: Cluster, namespace: str) -> Daemon:
    port = free_port()
    extra = cluster.toml(f"""namespace = "{namespace}"
publish_interval_s = 0.2
invocation_timeout_s = 1.0
breaker_failures = 2
reconnect_initial_s = 0.2
reconnect_max_s = 1.0
""")
    cfg = write_config(tmp / "dolphind.toml", port, extra)
    return Daemon(cfg, port).start()


def test_daemon_keys_inputs_and_a_member_killed_mid_run(cluster: Cluster,
                                                        tmp_path: Path) -> None:
    d = start_daemon(tmp_path, cluster, "acct-1")
    client = peer(cluster)
    try:
        d.wait_ready(timeout=120)
        # Every key dolphind owns, on the cluster; its own ones under its namespace.
        scan = wait_until(lambda: remote(client, "DOLPHIN_FEATURES", "latest_eigen_scan"),
                          timeout=60, what="latest scan on the cluster")
        assert isinstance(scan["scan_number"], int)
        safety = wait_until(lambda: remote(client, "DOLPHIN_SAFETY", "acct-1:latest"),
                            timeout=30, what="safety")
        assert safety["posture"] in {"APEX", "STALKER", "TURTLE", "HIBERNATE"}
        assert isinstance(safety["Rm"], float)
        assert remote(client, "DOLPHIN_SAFETY", "latest") is None  # not the bare key
        health = wait_until(lambda: remote(client, "DOLPHIN_META_HEALTH", "acct-1:latest"),
                            what="meta health")
        assert health["status"] in {"GREEN", "DEGRADED", "CRITICAL", "DEAD"}
        assert health["hz_key_status"]["mode"] == "cluster"
        assert wait_until(lambda: remote(client, "DOLPHIN_HEARTBEAT", "acct-1:dolphind"))
        state = wait_until(lambda: remote(client, "DOLPHIN_STATE_BLUE", "acct-1:latest"))
        assert state["capital"] > 0 and state["strategy"] == "champion"
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        pnl = wait_until(lambda: remote(client, "DOLPHIN_PNL_BLUE", f"acct-1:{day}")
                         or remote(client, "DOLPHIN_PNL_BLUE", f"acct-1:{_yesterday()}"))
        assert {"pnl", "capital", "trades", "posture", "stale_state"} <= set(pnl)

        # An input from the cluster reaches the engine (listener -> alpha): the boost moves.
        features = client.get_map("DOLPHIN_FEATURES").blocking()
        features.set("exf_latest", orjson.dumps(
            {"funding_btc": -0.001, "dvol_btc": 95.0, "fng": 8.0, "taker": 0.6,
             "_pushed_at": time.time()}).decode())
        alpha = wait_until(lambda: (a := d.get_json("/status")["alpha"])
                           ["external_factors"]["source"] == "bus" and a, timeout=30,
                           what="exf from the bus in force")
        assert alpha["external_factors"]["payload"]["fng"] == 8.0
        wait_until(lambda: d.get_json("/status")["alpha"]["acb_boost"] > 1.0, timeout=30,
                   what="the boost raised by the cluster's factors")
        # An external ACB processor's {boost, beta} (bible §15.1) reaches the engine too.
        features.set("acb_boost", '{"boost": 1.45, "beta": 0.3}')
        wait_until(lambda: (a := d.get_json("/status")["alpha"])["acb_boost"] == 1.45
                   and a["acb_beta"] == 0.3, timeout=30, what="the processor's boost in force")
        # A recalibrated w750 threshold (the calibration input) reaches the engine as well (it
        # takes effect at the next bar with a warm w750 velocity).
        features.set("acb_w750_threshold", '{"threshold": 0.0042, "n": 500}')
        wait_until(lambda: (a := d.get_json("/status")["alpha"])["acb_w750_source"]
                   == "recalibrated" and a["w750_calibration"]["source"] == "bus"
                   and a["w750_calibration"]["payload"]["threshold"] == 0.0042, timeout=30,
                   what="the calibration handed to the engine")
        # Not JSON: rejected at the bus and shown; a bad shape: rejected by the engine's input.
        features.set("exf_latest", "{not json")
        wait_until(lambda: "exf_latest" in d.get_json("/status")["statebus"]["input_problems"],
                   what="the bad payload shown")
        assert d.get_json("/status")["alpha"]["external_factors"]["payload"]["fng"] == 8.0
        features.set("exf_latest", '{"fng": 500}')
        wait_until(lambda: "rejected" in (d.get_json("/status")["alpha"]["external_factors"]
                                          ["problem"] or ""), what="out-of-range rejected")

        # Kill the member mid-run: bars and scans go on; the bus goes file-only.
        before = d.get_json("/status")["scan"]
        cluster.members[0].kill()
        wait_until(lambda: d.get_json("/status")["statebus"]["mode"] == "file-only",
                   timeout=30, what="file-only mode")
        latest = tmp_path / "var" / "statebus" / "DOLPHIN_SAFETY" / "latest.json"
        wait_until(latest.exists, what="the file-only copy")
        assert orjson.loads(latest.read_bytes())["posture"] in {"APEX", "STALKER", "TURTLE",
                                                                "HIBERNATE"}
        wait_until(lambda: _scans(d) > _scans_of(before) + 3, timeout=60,
                   what="scans going on during the outage")
        assert d.get("/readyz")[0] == 200  # an outage does not take readiness away
        assert (d.metric("dolphind_statebus_file_only") or 0) == 1.0
        assert (d.metric("dolphind_statebus_events_total", 'event="breaker_opened"')
                or 0) >= 1

        cluster.restart(cluster.members[0])
        wait_until(lambda: d.get_json("/status")["statebus"]["mode"] == "cluster",
                   timeout=90, what="back on the cluster")
        client.shutdown()
        client = peer(cluster)
        # The new member knew nothing: the daemon republished its latest values.
        got = wait_until(lambda: remote(client, "DOLPHIN_SAFETY", "acct-1:latest"),
                         timeout=30, what="republished safety")
        assert got["posture"] in {"APEX", "STALKER", "TURTLE", "HIBERNATE"}
        assert (d.metric("dolphind_statebus_events_total", 'event="republished"') or 0) > 0
        assert d.stop() == 0
    finally:
        client.shutdown()
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def _yesterday() -> str:
    return datetime.fromtimestamp(time.time() - 86_400, timezone.utc).strftime("%Y-%m-%d")


def _scans_of(scan_status: dict[str, Any]) -> int:
    return int(scan_status.get("scans") or scan_status.get("last_scan_number") or 0)


def _scans(d: Daemon) -> int:
    return _scans_of(d.get_json("/status")["scan"])
