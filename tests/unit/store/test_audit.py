"""The hash-chained audit log: it verifies, and detects an edit, a deletion, a truncation."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from dolphind.cli import main
from dolphind.store.audit import GENESIS, AuditLog, split_line, verify


async def _write(path, n, **kw):
    async with await AuditLog.open(path, **kw) as audit:
        for i in range(n):
            audit.record("risk.rejected", rule="max_leverage", i=i, detail="x" * (i % 7))
    return path


def _lines(path):
    return path.read_bytes().splitlines(keepends=True)


async def test_chain_verifies_and_links(tmp_path):
    path = await _write(tmp_path / "audit.jsonl", 20)
    res = verify(path)
    assert (res.ok, res.lines, res.last_seq) == (True, 20, 20)
    first = orjson.loads(split_line(_lines(path)[0][:-1])[0])
    assert first["prev"] == GENESIS and first["seq"] == 1 and first["event"] == "risk.rejected"


async def test_chain_continues_across_a_restart(tmp_path):
    path = await _write(tmp_path / "audit.jsonl", 5)
    await _write(path, 5)
    res = verify(path)
    assert (res.ok, res.lines) == (True, 10)


async def test_detects_an_edited_line(tmp_path):
    path = await _write(tmp_path / "audit.jsonl", 10)
    lines = _lines(path)
    lines[4] = lines[4].replace(b'"max_leverage"', b'"min_notional"')
    path.write_bytes(b"".join(lines))
    res = verify(path)
    assert (res.ok, res.first_bad_line) == (False, 5)
    assert "edited" in res.reason


async def test_detects_an_edited_last_line(tmp_path):
    path = await _write(tmp_path / "audit.jsonl", 3)
    lines = _lines(path)
    lines[-1] = lines[-1].replace(b'"i":2', b'"i":9')
    path.write_bytes(b"".join(lines))
    assert verify(path).first_bad_line == 3


async def test_detects_a_deleted_line(tmp_path):
    path = await _write(tmp_path / "audit.jsonl", 10)
    lines = _lines(path)
    del lines[6]
    path.write_bytes(b"".join(lines))
    res = verify(path)
    assert (res.ok, res.first_bad_line, res.lines) == (False, 7, 6)
    assert "deleted" in res.reason


async def test_detects_a_truncated_line(tmp_path):
    path = await _write(tmp_path / "audit.jsonl", 10)
    data = path.read_bytes()
    path.write_bytes(data[:-30])  # the last line loses its end
    res = verify(path)
    assert (res.ok, res.first_bad_line) == (False, 10)
    assert "truncated" in res.reason
    # A line cut in the middle of the file (newline kept) is caught too.
    lines = _lines(path)
    lines[2] = lines[2][:40] + b"\n"
    path.write_bytes(b"".join(lines))
    assert verify(path).first_bad_line == 3


async def test_torn_tail_is_moved_aside_and_recorded(tmp_path):
    path = await _write(tmp_path / "audit.jsonl", 4)
    with open(path, "ab") as f:
        f.write(b'{"data":{"half')  # a power cut mid-line
    assert not verify(path).ok
    await _write(path, 1)
    res = verify(path)
    assert (res.ok, res.lines) == (True, 6)
    recovered = orjson.loads(split_line(_lines(path)[4][:-1])[0])
    assert recovered["event"] == "audit.torn_tail_removed"
    assert recovered["data"]["bytes"] == 14
    assert (tmp_path / recovered["data"]["moved_to"]).read_bytes() == b'{"data":{"half'


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
async def test_fsync_modes_write_everything(tmp_path, mode):
    path = await _write(tmp_path / "a.jsonl", 50, fsync=lambda: mode)
    assert verify(path).lines == 50


async def test_record_never_blocks_and_flush_waits(tmp_path):
    from dolphind.telemetry.metrics import Metrics

    metrics = await asyncio.to_thread(Metrics)
    backlog = lambda: metrics.registry.get_sample_value("dolphind_audit_backlog")  # noqa: E731
    async with await AuditLog.open(tmp_path / "a.jsonl", metrics.execution) as audit:
        for i in range(5000):
            audit.record("fill", i=i)
        assert backlog() == 5000  # nothing written yet: record() did not yield
        await audit.flush()
        assert audit.backlog == 0 and audit.seq == 5000 and backlog() == 0
    assert verify(tmp_path / "a.jsonl").ok


async def test_cli_audit_verify(tmp_path, capsys):
    path = await _write(tmp_path / "audit.jsonl", 3)
    assert await asyncio.to_thread(main, ["audit", "verify", str(path)]) == 0
    assert "ok, 3 lines" in capsys.readouterr().out
    lines = _lines(path)
    del lines[1]
    path.write_bytes(b"".join(lines))
    assert await asyncio.to_thread(main, ["audit", "verify", str(path)]) == 1
    assert "broken at line 2" in capsys.readouterr().err


def test_cli_audit_verify_as_a_process(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"not a chain\n")
    proc = subprocess.run([sys.executable, "-m", "dolphind.cli", "audit", "verify", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "broken at line 1" in proc.stderr


async def test_every_control_action_is_audited_with_its_cause_and_parameters(tmp_path):
    """One subscriber (subscribe_audit) puts every control-plane action in the chain: halt,
    risk multiplier, throttle, their expiry, reconnect, incident, flatten, reload, resume."""
    from dolphind.control import Control
    from dolphind.telemetry.metrics import Metrics
    from dolphind.store.audit import subscribe_audit

    metrics = await asyncio.to_thread(Metrics)
    clock = [1000.0]
    control = Control(metrics, lambda cause: None, monotonic=lambda: clock[0])
    path = tmp_path / "audit.jsonl"
    async with await AuditLog.open(path) as audit:
        audit.record("order.submitted", client_id="dd-1")  # the chain's other writers
        listener = subscribe_audit(control, audit)
        control.halt("http:127.0.0.1", "operator check")
        control.set_risk_multiplier("guardian", 0.5, 60.0, reason="drawdown 3%", key="drawdown")
        control.throttle("guardian", 0.25, 30.0, reason="rejection spike")
        control.reconnect_feed("guardian", "feed silent 12 s")
        control.raise_incident("guardian", "exchange_lag", "feed silent", severity="critical")
        control.flatten("http:127.0.0.1", "end of day")
        control.reload("signal:SIGHUP")
        control.reloaded("signal:SIGHUP", ok=True, config_hash="abc", applied=["risk"])
        clock[0] += 60.0
        control.expire()  # the multiplier and the throttle ran out
        control.resume("http:127.0.0.1")
        control.unsubscribe(listener)
        control.halt("after", "not audited once unsubscribed")
    res = verify(path)
    assert res.ok, res.reason
    recs = [orjson.loads(split_line(x[:-1])[0]) for x in _lines(path)]
    got = [(r["event"], r["data"]["cause"]) for r in recs[1:]]
    assert got == [
        ("control.halt", "http:127.0.0.1"),
        ("control.risk_multiplier", "guardian"),
        ("control.throttle", "guardian"),
        ("control.reconnect_feed", "guardian"),
        ("control.incident", "guardian"),
        ("control.flatten", "http:127.0.0.1"),
        ("control.reload_requested", "signal:SIGHUP"),
        ("control.reload", "signal:SIGHUP"),
        ("control.risk_multiplier_expired", "guardian"),
        ("control.throttle_expired", "guardian"),
        ("control.resume", "http:127.0.0.1"),
    ]
    by_event = {r["event"]: r["data"] for r in recs[1:]}
    assert by_event["control.halt"]["params"] == {"reason": "operator check"}
    rm = by_event["control.risk_multiplier"]
    assert rm["action"] == "risk_multiplier"
    assert rm["params"] == {"factor": 0.5, "duration_s": 60.0, "reason": "drawdown 3%",
                            "key": "drawdown", "effective": 0.5}
    assert by_event["control.throttle"]["params"]["factor"] == 0.25
    assert by_event["control.incident"]["params"]["severity"] == "critical"
    assert by_event["control.reload"]["params"] == {"ok": True, "config_hash": "abc",
                                                    "applied": ["risk"]}
    assert by_event["control.resume"]["params"] == {"lifted": ["http:127.0.0.1"]}
    assert all(isinstance(r["data"]["ts"], float) for r in recs[1:])


async def test_the_store_anchors_the_chain_and_verify_store_finds_a_truncated_tail(tmp_path):
    """Issue #15: every store commit records the audit log's written tip; a log cut short
    after the store committed (a lost tail) no longer passes `audit verify --store`."""
    import subprocess
    import sys

    from dolphind.store.audit import AuditLog, verify
    from dolphind.store.sqlite import Store, kv_op, read_audit_anchor

    db, path = tmp_path / "dolphind.sqlite", tmp_path / "audit.jsonl"
    store = await Store.open(db, None, None)
    async with store:
        audit = await AuditLog.open(path)
        async with audit:
            store.audit_tip = lambda: audit.tip
            for k in range(20):
                audit.record("order.submitted", client_id=f"dd-{k}")
                await audit.flush()
                await store.write(kv_op("scan_number", str(k)), wait=True)
    anchor = await asyncio.to_thread(read_audit_anchor, db)
    assert anchor is not None and anchor[0] == 20
    assert verify(path, anchor).ok
    ok = subprocess.run([sys.executable, "-m", "dolphind.cli", "audit", "verify", str(path),
                         "--store", str(db)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "anchored by the store at line 20" in ok.stdout
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:17]))  # the last three lines lost
    assert verify(path).ok  # the chain alone cannot tell
    bad = verify(path, anchor)
    assert not bad.ok and "truncated tail" in bad.reason and "3 lines missing" in bad.reason
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "audit", "verify", str(path),
                          "--store", str(db)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "truncated tail" in res.stderr


async def test_a_crashed_writer_fails_the_log_loudly_never_silently(tmp_path, monkeypatch):
    """The disk fills up under the writer: the crash is logged and counted, /readyz says so,
    flush and back-pressure raise instead of returning as if written, close raises."""
    import errno

    from structlog.testing import capture_logs

    from dolphind.store import audit as audit_module
    from dolphind.store.audit import AuditFailed
    from dolphind.telemetry.metrics import Metrics

    metrics = await asyncio.to_thread(Metrics)
    path = tmp_path / "audit.jsonl"
    audit = await AuditLog.open(path, metrics.execution)

    def disk_full(fh, data, do_fsync):
        raise OSError(errno.ENOSPC, "No space left on device")

    # Leaving closes the log: the stop says it too (the exit is non-zero).
    with capture_logs() as logs, pytest.raises(AuditFailed, match="1 records not written"):
        async with audit:
            audit.record("order.submitted", client_id="dd-1")
            await audit.flush()
            assert audit.readiness() == "ok"
            monkeypatch.setattr(audit_module, "_append", disk_full)
            audit.record("order.submitted", client_id="dd-2")
            with pytest.raises(AuditFailed, match="No space left on device"):
                await audit.flush()
            assert "1 records not written" in audit.readiness()
            with pytest.raises(AuditFailed):
                await audit.wait_below(10)  # a producer waiting for room is not fooled
    get = metrics.registry.get_sample_value
    assert get("dolphind_task_crashes_total", {"task": "audit-writer"}) == 1
    crashed = [e for e in logs if e["event"] == "task.crashed"]
    assert crashed and crashed[0]["task"] == "audit-writer" and crashed[0]["exc_info"]
    assert any(e["event"] == "audit.failed" for e in logs)
    assert verify(path).lines == 1  # what was written before the crash stays a valid chain
