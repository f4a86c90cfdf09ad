"""`dolphind backtest` end to end, as a user runs it: real candles in, report out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dolphind.report.verify import verify_report
from tests.integration.harness import REPO, SAMPLE

pytestmark = pytest.mark.integration
SHARED = REPO.parent / "shared" / "data"
ONE_MINUTE = SHARED / "binance-um-futures-1m-2025-05_typhonun-DcaTpStrategy"
FIVE_MINUTE = SHARED / "binance-um-futures-5m-2023-07_alpergulsen-freqtrade"


def backtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dolphind.cli", "backtest", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("data,span", [
    (ONE_MINUTE, ("--from", "2025-05-10", "--to", "2025-05-14")),
    (FIVE_MINUTE, ("--from", "2023-07-18T11:15", "--to", "2023-08-03T12:30")),
])
def test_backtest_on_real_candles_agrees_with_its_trades(tmp_path: Path, data: Path,
                                                         span: tuple[str, ...]) -> None:
    out = tmp_path / "out"
    res = backtest("--data", str(data), *span, "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("summary.json", "trades.csv", "report.html", "equity.png", "drawdown.png",
                 "vel_div.png", "pnl_by_exit_reason.png"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "scans").glob("*.arrow"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bars"] > 1000
    # The headline numbers agree with an independent recomputation from trades.csv.
    assert verify_report(out) == []
    # The audit chain of the run verifies.
    audit = subprocess.run([sys.executable, "-m", "dolphind.cli", "audit", "verify",
                            str(out / "audit.jsonl")], capture_output=True, text=True, timeout=60)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_two_runs_are_identical(tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        res = backtest("--data", str(SAMPLE), "--out", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        outputs.append(((out / "trades.csv").read_bytes(), (out / "summary.json").read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].count(b"\n") > 1  # some trades happened: the comparison means something


def test_a_previous_run_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert backtest("--data", str(SAMPLE), "--out", str(out), "--to", "2025-05-10T18:00").returncode == 0
    again = backtest("--data", str(SAMPLE), "--out", str(out))
    assert again.returncode == 2 and "holds a previous run" in again.stderr
    forced = backtest("--data", str(SAMPLE), "--out", str(out), "--force", "--to", "2025-05-10T18:00")
    assert forced.returncode == 0, forced.stderr[-2000:]


def test_malformed_inputs_give_clear_messages(tmp_path: Path) -> None:
    res = backtest("--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o1"))
    assert res.returncode == 2 and "no such file or folder" in res.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "BTCUSDT.feather").write_bytes(b"garbage")
    res = backtest("--data", str(bad), "--out", str(tmp_path / "o2"))
    assert res.returncode == 2 and "BTCUSDT.feather: cannot read" in res.stderr
    res = backtest("--data", str(SAMPLE), "--from", "2030-01-01", "--out", str(tmp_path / "o3"))
    assert res.returncode == 2 and "no bars between" in res.stderr
    res = backtest("--data", str(SAMPLE), "--from", "yesterday", "--out", str(tmp_path / "o4"))
    assert res.returncode == 2 and "replay.start: expected an ISO date" in res.stderr
