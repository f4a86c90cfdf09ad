"""The live feed refuses time that goes backwards (issue 15, the live side; issue 17's engineer).

The live daemon against the loopback fake Binance replaying the 2021 capture at 25x; stopped,
and started again against a fresh fake whose timeline begins at the capture's start again, i.e.
minutes of market time *before* the bars the first run already scanned. No bar of the second run
may start at or before the last bar of the first: the scan records, in scan-number order, have
strictly increasing times across the restart.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dolphind.scan.arrow_sink import read_scans
from tests.conftest import wait_until
from tests.integration.harness import REPO, Daemon, free_port, write_config

pytestmark = pytest.mark.integration


class Fake:
    """``python -m tests.fakes.binance`` (recorded 2021 times, not rebased) as a subprocess."""

    def __init__(self, log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.binance", "--port", "0", "--speed", "25",
             "--rest-history"], stdout=subprocess.PIPE, stderr=self._log, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        assert line.startswith("LISTENING "), line
        self.url = line.split(" ", 1)[1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _config(tmp_path: Path, port: int, url: str) -> Path:
    return write_config(tmp_path / "dolphind.toml", port, data_dir=str(tmp_path / "var"),
                        extra=f"""
[feed]
kind = "binance"
bar_seconds = 1
max_stale_bars = 120

[binance_feed]
ws_base_url = "{url}"
symbols = ["SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"]
stall_timeout_s = 3.0
stream_grace_s = 5.0
backoff_initial_s = 0.1
backoff_max_s = 0.5
bar_close_delay_ms = 100

[warm_start]
checkpoint_every_s = 1.0
rest_base_url = "{url.replace("ws://", "http://")}"
""")


def _scans(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = read_scans([tmp_path / "var" / "scans"])
    nums = table.column("scan_number").to_numpy()
    order = np.argsort(nums, kind="stable")
    return nums[order], table.column("timestamp_ns").to_numpy()[order]


@pytest.mark.timeout(600)
def test_a_restart_against_an_earlier_timeline_never_moves_market_time_back(
        tmp_path: Path) -> None:
    port = free_port()
    fake = Fake(tmp_path / "fake.log")
    d = Daemon(_config(tmp_path, port, fake.url), port).start()
    try:
        wait_until(lambda: (d.metric("dolphind_bars_total") or 0) >= 150, timeout=240,
                   interval=0.5, what="bars of the first run")
    finally:
        d.stop()
        fake.stop()
    first_nums, first_ts = _scans(tmp_path)
    assert len(first_ts) >= 100 and np.all(np.diff(first_ts) > 0)
    fake = Fake(tmp_path / "fake.log")  # the capture's timeline from its start again
    d = Daemon(_config(tmp_path, port, fake.url), port).start()
    try:
        def scanned_again() -> bool:
            nums, _ = _scans(tmp_path)
            return len(nums) >= len(first_nums) + 20
        wait_until(scanned_again, timeout=300, interval=1.0, what="bars after the restart")
        late = d.metric("dolphind_feed_late_frames_total")
    finally:
        d.stop()
        fake.stop()
    nums, ts = _scans(tmp_path)
    after = ts[nums > first_nums.max()]
    assert after.min() > first_ts.max(), (after.min(), first_ts.max())
    assert np.all(np.diff(ts) > 0), "market time ran backwards across the restart"
    assert late is not None and late > 0  # the earlier frames were refused as late
