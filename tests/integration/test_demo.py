"""The README's first command on a fresh clone (issue 18): the default dolphind.toml, run as is
(only the port and the data dir moved into the test's folder).

The demo pre-rolls the replay at full speed until every scan window is warm, then plays at
its pace (1-minute candles at 12x: one bar per 5 s): the first entry must come within 5
minutes of play, i.e. within 60 bars of the warm bar; a paper fill follows. A restart then
continues where the replay stopped, warm at once: the first new bar can already trade.

Wall-clock limits here are the test's patience, not assertions on speed: how long each step
takes on a quiet machine is in bench/kernel_compile.py and README "What to expect".
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration.harness import REPO, Daemon, free_port, write_config

pytestmark = pytest.mark.integration

PACED_BARS_IN_5_MIN = 5 * 60 // 5  # 12x of 1-minute candles: a bar every 5 s


def demo_config(tmp_path: Path, port: int) -> Path:
    text = (REPO / "dolphind.toml").read_text()
    text, n1 = re.subn(r'(?m)^listen = "127\.0\.0\.1:9108"$', f'listen = "127.0.0.1:{port}"',
                       text)
    text, n2 = re.subn(r'(?m)^paths = \["data/sample"\]$',
                       f'paths = ["{REPO / "data" / "sample"}"]', text)
    assert n1 == n2 == 1, "dolphind.toml changed shape: update this test"
    path = tmp_path / "dolphind.toml"
    path.write_text(text)  # data.dir = "var" resolves next to this copy
    return path


def first(events: list[dict], name: str) -> dict:
    return next(e for e in events if e.get("event") == name)


def test_fresh_clone_demo_trades_within_minutes_and_restarts_warm(tmp_path: Path) -> None:
    port = free_port()
    cfg = demo_config(tmp_path, port)
    d = Daemon(cfg, port).start()
    try:
        d.wait_ready(timeout=240)  # a cold numba cache compiles first (bench: kernel_compile)
        status = d.get_json("/status")
        assert status["strategy"]["warm_start"]["reason"] == "no checkpoint (first start)"
        wait_until(lambda: d.metric("dolphind_strategy_can_trade") == 1.0, timeout=60,
                   what="the pre-roll warms every window")
        feed = d.get_json("/status")["feed"]
        # exactly the 751 bars the 750 window needs: the first (due at once anyway) + 750
        assert feed["prerolled_bars"] == 750
        assert d.metric("dolphind_scan_window_fill_ratio", 'window="750"') == 1.0
        fills = wait_until(lambda: d.metric("dolphind_fills_total",
                                            'liquidity="MAKER",side="SELL"')
                           or d.metric("dolphind_fills_total", 'liquidity="TAKER",side="SELL"')
                           or d.metric("dolphind_fills_total", 'liquidity="MAKER",side="BUY"')
                           or d.metric("dolphind_fills_total", 'liquidity="TAKER",side="BUY"'),
                           timeout=PACED_BARS_IN_5_MIN * 5 + 60, what="a paper fill")
        assert fills >= 1
        events = d.events()
        warm_scan = first(events, "strategy.can_trade")["scan_number"]
        entry = first(events, "alpha.intent")
        entry_scan = int(entry["intent_id"].split("-", 1)[0])
        assert 0 < entry_scan - warm_scan <= PACED_BARS_IN_5_MIN, (warm_scan, entry_scan)
        last_before = d.get_json("/status")["market"]["last_bar_ts_ns"]
    finally:
        assert d.stop() == 0
    ck = tmp_path / "var" / "scans" / "windows.npz"
    assert ck.exists()

    d2 = Daemon(cfg, port).start()
    try:
        d2.wait_ready(timeout=120)
        wait_until(lambda: d2.get_json("/status")["market"].get("last_bar_ts_ns"), timeout=30,
                   what="a bar after the restart")
        status = d2.get_json("/status")
        ws = status["strategy"]["warm_start"]
        assert ws["state"] == "warm" and ws["source"] == "checkpoint", ws
        # The replay goes on after the stored market time: the newest of the checkpoint, the
        # last scan record and the open trade's fills (a paper fill can be a bar newer than
        # the checkpoint); the bars in between come from the replay's data, counted.
        after = status["feed"]["resumed"]["after_ts_ns"]
        assert after >= ws["checkpoint_last_ts_ns"] and after >= last_before - 60 * 10**9
        assert ws["gap_bars"] == (after - ws["checkpoint_last_ts_ns"]) // (60 * 10**9)
        assert (d2.metric("dolphind_warm_start_bars_total", 'source="replay"') or 0) == \
            12 * ws["gap_bars"]
        # market time went on forward: no bar of the new run is older than the old run's last
        assert status["market"]["last_bar_ts_ns"] > ws["checkpoint_last_ts_ns"]
        # tradable from the first new bar on: the one after the last checkpointed bar
        can_trade = first(d2.events(), "strategy.can_trade")
        assert can_trade["market_ts_ns"] == after + 60 * 10**9
        assert d2.metric("dolphind_strategy_can_trade") == 1.0
        assert d2.metric("dolphind_warm_start_bars_total", 'source="checkpoint"') == 751
        assert status["feed"]["prerolled_bars"] == 0  # nothing to pre-roll: warm at once
    finally:
        assert d2.stop() == 0


def test_replay_killed_under_an_open_position_goes_on_forward(tmp_path: Path) -> None:
    """Issue 15's case: a replay killed (-9) with a position open used to start over from
    its first bar on restart, under the restored position (a short closed 13 h before its
    own entry). Now it goes on after the stored market time, warm."""
    port = free_port()
    cfg = write_config(tmp_path / "dolphind.toml", port, speed=600.0,
                       extra="[warm_start]\ncheckpoint_every_s = 1.0\n"
                             ).read_text().replace("loop = true\n", "loop = true\npreroll = true\n")
    path = tmp_path / "dolphind.toml"
    path.write_text(cfg)
    d = Daemon(path, port).start()
    try:
        d.wait_ready(timeout=240)
        pos = wait_until(lambda: d.get_json("/positions")["positions"], timeout=180,
                         interval=0.05, what="an open position")
        opened = max(p["opened_ns"] for p in pos)
        seen = d.get_json("/status")["market"]["last_bar_ts_ns"]
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        d._log.close()
    finally:
        d.stop()
    d2 = Daemon(path, port).start()
    try:
        d2.wait_ready(timeout=120)
        status = d2.get_json("/status")
        resumed = status["feed"]["resumed"]
        assert resumed is not None and resumed["after_ts_ns"] >= max(opened, seen), resumed
        first_bar = next(e for e in d2.events() if e.get("event") == "strategy.can_trade")
        assert first_bar["market_ts_ns"] > max(opened, seen)
        assert status["strategy"]["warm_start"]["state"] == "warm"
        wait_until(lambda: d2.get_json("/status")["market"]["last_bar_ts_ns"] > first_bar[
            "market_ts_ns"], timeout=30, what="bars after the restart")
    finally:
        assert d2.stop() == 0
