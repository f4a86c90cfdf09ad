"""kill -9 at random moments during a fast replay, many times: nothing acknowledged is lost and
no order is submitted twice (SPEC §6). The real daemon, the real SQLite store and audit log."""

from __future__ import annotations

import collections
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration.harness import Daemon, free_port, write_config

pytestmark = pytest.mark.integration
KILLS = 6


def _store_state(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        account = con.execute("SELECT cash_usdt, realised_pnl_usdt, fees_usdt FROM account").fetchone()
        positions = dict(con.execute("SELECT symbol, qty FROM positions WHERE qty != 0").fetchall())
        orders = con.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        fills = con.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
        kv = dict(con.execute("SELECT key, value FROM kv").fetchall())
    finally:
        con.close()
    return {"cash": account[0] if account else None, "positions": positions, "orders": orders,
            "fills": fills, "scan_number": int(kv["scan_number"]) if "scan_number" in kv else None}


def _restored(audit: Path, count: int) -> dict:
    """The data of the ``count``-th `execution.restored` audit record (one per start)."""
    def found() -> dict | None:
        recs = [json.loads(x) for x in audit.read_text().splitlines()]
        restored = [r["data"] for r in recs if r["event"] == "execution.restored"]
        return restored[count - 1] if len(restored) >= count else None
    return wait_until(found, timeout=60, what="execution.restored in the audit log")


def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    port = free_port()
    # Full speed, looping: the pipeline trades all the time, so kills land mid-order too.
    cfg = write_config(tmp_path / "d.toml", port, speed=0.0,
                       extra="[risk]\nmax_orders_per_minute = 100000.0\norder_burst = 1000\n")
    db = tmp_path / "var" / "dolphind.sqlite"
    audit = tmp_path / "var" / "audit.jsonl"
    before: dict | None = None
    for cycle in range(KILLS + 1):
        d = Daemon(cfg, port)
        d.log_path = tmp_path / f"run{cycle}.log"
        d.start()
        d.log_path = d.config.with_suffix(".log")
        d.wait_ready(timeout=120)
        if before is not None:
            # Capital and positions come back exactly as the store held them at the kill.
            restored = _restored(audit, cycle + 1)
            assert restored["cash_usdt"] == pytest.approx(before["cash"], abs=1e-9)
            assert {k: v for k, v in restored["positions"].items() if v} == pytest.approx(
                before["positions"])
            # Scan numbers continue after the last one the store had acted on.
            first = d.get_json("/status")["scan"]["last"]["scan_number"]
            if before["scan_number"] is not None:
                assert first > before["scan_number"]
        if cycle == KILLS:
            assert d.stop() == 0
            break
        # Let it trade for a while, then pull the plug at a random moment.
        wait_until(lambda: (d.metric("dolphind_scans_total") or 0) > 200, timeout=60,
                   what="scans flowing")
        time.sleep(rng.uniform(0.0, 2.0))
        d.signal(signal.SIGKILL)
        assert d.proc is not None and d.proc.wait(30) == -signal.SIGKILL
        d._log.close()
        before = _store_state(db)
    final = _store_state(db)
    assert final["orders"] > 0 and final["fills"] > 0, "the run never traded: the test is moot"
    # The audit chain verifies across every kill and restart.
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "audit", "verify", str(audit)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    # No order was submitted twice: one `order.submitted` per client id over the whole history.
    submitted = collections.Counter()
    for line in audit.read_text().splitlines():
        rec = json.loads(line)
        if rec["event"] == "order.submitted":
            submitted[rec["data"]["client_id"]] += 1
    assert submitted and max(submitted.values()) == 1, submitted.most_common(3)
