"""A running daemon whose audit log fails stops new entries: no decision without its record.

The whole daemon in the test's loop (paper venue, replay at full speed); the disk "fills up"
under the audit writer mid-run. The crash must reach the control plane through the wiring
(``AuditLog.on_failure`` -> ``Control.halt``), show on /readyz, and end the run non-zero.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from dolphind.app import build_daemon
from dolphind.config import load_config
from dolphind.daemon import Daemon
from dolphind.store import audit as audit_module
from tests.conftest import eventually
from tests.integration.harness import write_config


@pytest.fixture
def daemon(tmp_path: Path) -> Daemon:
    cfg = load_config(write_config(tmp_path / "d.toml", 0, speed=0.0))
    return build_daemon(cfg)  # built outside the loop, as dolphind.daemon.run does


async def test_an_audit_failure_halts_entries_and_is_not_a_clean_exit(
        daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    task = asyncio.create_task(daemon.serve())
    # A cold numba cache (fresh machine) compiles the kernels first: allow for it.
    await eventually(lambda: daemon.readiness()[0], timeout=180, what="ready")
    assert not daemon.control.halted

    def disk_full(fh: Any, data: bytes, do_fsync: bool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit_module, "_append", disk_full)
    daemon.control.set_risk_multiplier("test", 1.0, 60.0)  # one more record to write
    await eventually(lambda: daemon.control.halted, what="entries halted by the audit failure")
    assert "audit" in daemon.control.halt_holds
    assert "audit log failed (OSError)" in daemon.control.halt_holds["audit"]
    ready, checks = daemon.readiness()
    assert not ready and "writer crashed" in checks["audit"]
    get = daemon.metrics.registry.get_sample_value
    assert get("dolphind_task_crashes_total", {"task": "audit-writer"}) == 1
    assert get("dolphind_trading_halted") == 1
    daemon._request_stop("test")
    # The stop writes out what it can and raises: the process exits non-zero (not EXIT_OK).
    with pytest.raises(audit_module.AuditFailed, match="records not written"):
        await asyncio.wait_for(task, 30)
