"""`dolphind top` (Textual), driven headless by Textual's pilot against the real daemon on
replay: it connects, follows the bars, shows a live entry, shows a halt (and by whom) within a
tick, and says so when the daemon goes away."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from dolphind.tui.app import TopApp
from tests.integration.harness import Daemon
from tests.integration.test_command_center import trading_daemon

pytestmark = pytest.mark.integration


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    yield from trading_daemon(tmp_path)


async def _until(pilot, check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_top_follows_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    app = TopApp(daemon.url)
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(pilot, lambda: app.snapshot is not None, "the first snapshot")
        strip = str(app.query_one("#strip").render())
        assert "paper (replay)" in strip and "READY" in strip and "ACTIVE" in strip, strip
        first = app.snapshot["scan"]["scan_number"]
        await _until(pilot, lambda: app.snapshot["scan"]["scan_number"] >= first + 5,
                     "the view to follow bars")
        seen = len(app.feed_lines)
        await _until(pilot, lambda: any(" ENTRY " in line for line in app.feed_lines[seen:]),
                     "a live entry in the feed", timeout=60)
        await _until(pilot, lambda: len(app.points) >= 5, "vel_div points")
        assert app.query_one("#stages").row_count == 5  # feed, market, scan, alpha, execution

        status, _ = daemon.post("/kill", {"action": "halt", "reason": "tea"})
        assert status == 200
        await _until(pilot, lambda: app.snapshot["halted"], "the halt to show", timeout=10)
        strip = str(app.query_one("#strip").render())
        assert "HALTED by http:127.0.0.1" in strip, strip
        await _until(pilot, lambda: any("halt by http:127.0.0.1: tea" in line
                                        for line in app.feed_lines), "the halt in the feed")
        svg = tmp_path / "dolphind-top.svg"
        app.save_screenshot(str(svg))
        if os.environ.get("DOLPHIND_SCREENSHOTS"):
            out = Path(os.environ["DOLPHIND_SCREENSHOTS"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(svg, out / svg.name)

        # An open /ui/events stream does not hold the daemon's shutdown up.
        assert daemon.stop() == 0, daemon.logs()[-2000:]
        await _until(pilot, lambda: not app.connected, "the lost connection to show")
        assert "not connected to" in str(app.query_one("#strip").render())
