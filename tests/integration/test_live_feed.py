"""The real daemon with feed.kind = "binance", pointed at the fake Binance in another process.

Both run as subprocesses on 127.0.0.1: the fake serves the recorded 2021-07-22 frames on its
routed endpoints; the daemon ingests them, publishes bars (/metrics, /status) and reports
not-ready on /readyz while the venue is down, then recovers by itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import REPO, Daemon, free_port, write_config

pytestmark = pytest.mark.integration


class FakeVenue:
    """``python -m tests.fakes.binance`` as a subprocess, controlled over HTTP."""

    def __init__(self, log_path: Path, speed: float = 8.0,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.binance", "--port", "0", "--speed", str(speed),
             "--rebase", *extra_args],
            stdout=subprocess.PIPE, stderr=self._log, cwd=REPO)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()  # blocks until it is listening
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"fake venue did not start: {line!r} {log_path.read_text()!r}")
        self.url = line.split(" ", 1)[1]
        self.http = self.url.replace("ws://", "http://")

    def fault(self, name: str, **params: object) -> dict[str, object]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        req = urllib.request.Request(f"{self.http}/_fault/{name}?{query}", data=b"",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.http}/_stats", timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def live_feed_config(url: str, stall_timeout_s: float, stream_grace_s: float) -> str:
    """Config lines pointing the daemon's live feed at the fake Binance (symbols of the capture)."""
    return f"""
[feed]
kind = "binance"
bar_seconds = 1

[binance_feed]
ws_base_url = "{url}"
symbols = ["SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"]
stall_timeout_s = {stall_timeout_s}
stream_grace_s = {stream_grace_s}
backoff_initial_s = 0.1
backoff_max_s = 0.5
bar_close_delay_ms = 100
"""


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[FakeVenue]:
    fake = FakeVenue(tmp_path / "fake-binance.log")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def daemon(tmp_path: Path, venue: FakeVenue) -> Iterator[Daemon]:
    port = free_port()
    extra = live_feed_config(venue.url, stall_timeout_s=1.0, stream_grace_s=5.0)
    d = Daemon(write_config(tmp_path / "dolphind.toml", port, extra=extra,
                            data_dir=str(tmp_path / "var")), port).start()
    try:
        d.wait_ready(timeout=30)
        yield d
    finally:
        d.stop()


def test_daemon_ingests_live_frames_and_publishes_bars(daemon: Daemon, venue: FakeVenue) -> None:
    wait_until(lambda: (daemon.metric("dolphind_bars_total") or 0) >= 5, timeout=20,
               what="bars published")
    assert (daemon.metric("dolphind_feed_messages_total", 'kind="aggTrade"') or 0) > 0
    assert (daemon.metric("dolphind_feed_messages_total", 'kind="depth5"') or 0) > 0
    assert daemon.metric("dolphind_feed_connected", 'conn="market-0"') == 1
    assert daemon.metric("dolphind_feed_connected", 'conn="public-0"') == 1
    st = daemon.get_json("/status")
    feed = st["feed"]
    assert feed["kind"] == "binance" and feed["bars_emitted"] >= 5
    assert set(feed["connections"]) == {"public-0", "market-0"}
    assert feed["book"]["symbols_with_book"] == 4
    assert st["market"]["last_bar_seq"] >= 4
    assert st["readiness"]["feed"] == "ok"
    assert venue.stats()["accepted"] == 2
    # The feed's metrics are valid exposition text (promtool is the reference checker).
    if shutil.which("promtool"):
        _, body = daemon.get("/metrics")
        assert b"dolphind_feed_last_message_age_seconds{" in body
        check = subprocess.run(["promtool", "check", "metrics"], input=body,
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("depth", [True, False])
def test_the_live_book_reaches_the_strategy_and_moves_its_posture(
        tmp_path: Path, venue: FakeVenue, depth: bool) -> None:
    """Issue 16: the alpha stage decides with the feed's book (it used to be handed None).

    The recorded market is thin (few trades against the touch quantity): the book-quality
    sensor (survival Cat3, bible §11.2: 0.3 + 0.7 * min(depth quality, fill probability))
    sits at its floor, Rm drops below 0.5 and the posture is HIBERNATE: no entries. The same
    daemon without the depth streams has no book, Cat3 reads 1.0 and the posture does not
    hibernate. The book changes the decision."""
    port = free_port()
    extra = live_feed_config(venue.url, stall_timeout_s=1.0, stream_grace_s=5.0)
    extra += f"depth = {'true' if depth else 'false'}\n"
    d = Daemon(write_config(tmp_path / "dolphind.toml", port, extra=extra,
                            data_dir=str(tmp_path / "var")), port).start()
    try:
        d.wait_ready(timeout=30)
        wait_until(lambda: d.get_json("/status")["alpha"]["decisions"] >= 20, timeout=30,
                   what="twenty decisions")
        alpha = d.get_json("/status")["alpha"]
        hibernating = d.metric("dolphind_signals_total", 'outcome="posture_hibernate"') or 0
        if depth:
            assert alpha["book"]["present"] is True and alpha["book"]["symbols"] == 4
            assert alpha["book"]["symbols_with_book"] == 4 and alpha["book"]["stale"] is False
            assert alpha["posture"] == "HIBERNATE" and alpha["rm"] < 0.5, alpha
            assert hibernating >= 1
        else:
            assert alpha["book"] == {"present": False}
            assert alpha["posture"] != "HIBERNATE" and alpha["rm"] > 0.5, alpha
            assert hibernating == 0
    finally:
        d.stop()


def test_readyz_is_not_ready_while_the_venue_is_down(daemon: Daemon, venue: FakeVenue) -> None:
    wait_until(lambda: (daemon.metric("dolphind_bars_total") or 0) >= 2, timeout=20, what="bars")
    venue.fault("refuse", seconds=2.0)
    venue.fault("close", abort=1)

    def down() -> bool:
        status, body = daemon.get("/readyz")
        return status == 503 and b"disconnected" in body

    wait_until(down, timeout=5, interval=0.02, what="/readyz not ready")
    wait_until(lambda: daemon.get("/readyz")[0] == 200, timeout=15, what="ready again")
    before = daemon.metric("dolphind_bars_total") or 0
    wait_until(lambda: (daemon.metric("dolphind_bars_total") or 0) >= before + 3, timeout=15,
               what="bars after recovery")
    assert (daemon.metric("dolphind_feed_gaps_total", 'reason="closed"') or 0) + \
        (daemon.metric("dolphind_feed_gaps_total", 'reason="error"') or 0) >= 1
    assert (daemon.metric("dolphind_feed_connect_failures_total", 'conn="market-0"') or 0) >= 1

    venue.fault("stall", seconds=1.5)
    wait_until(lambda: (daemon.metric("dolphind_feed_gaps_total", 'reason="stall"') or 0) >= 1,
               timeout=10, what="stall detected")
    wait_until(lambda: daemon.get("/readyz")[0] == 200, timeout=15, what="ready after stall")
    venue.fault("garbage", n=1)
    wait_until(lambda: (daemon.metric("dolphind_feed_bad_frames_total", 'reason="invalid_json"')
                        or 0) >= 2, timeout=10, what="garbage counted")
    assert daemon.proc is not None and daemon.proc.poll() is None
