"""`dolphind scan` as a user runs it: the bundled real candles in, daily Arrow files out."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from dolphind.scan.arrow_sink import read_scans

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "data" / "sample"


def test_scan_cli_writes_readable_daily_arrow_files(tmp_path: Path) -> None:
    out = tmp_path / "scans"
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "scan", "--data", str(SAMPLE),
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    n_scans = int(res.stdout.split()[0])
    files = sorted(out.glob("*.arrow"))
    assert len(files) == 3  # the sample spans three UTC days: one file per day
    table = read_scans(files)
    assert table.num_rows == n_scans == 4320  # one scan per 1-minute bar
    numbers = table.column("scan_number").to_pylist()
    assert numbers == list(range(numbers[0], numbers[0] + n_scans))
    vel_div = table.column("vel_div").to_pylist()
    warm = [v for v in vel_div if v is not None and not math.isnan(v)]
    assert len(warm) > 4320 - 760  # cold only until the 750-bar window fills
    assert set(table.column("n_symbols").to_pylist()[800:]) == {12}


def test_scan_cli_names_a_missing_path(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "dolphind.cli", "scan", "--data",
                          str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "nope: no such file or folder" in res.stderr
