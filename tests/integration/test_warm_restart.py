"""A restart costs seconds, not an hour (issue 18): the live daemon against the loopback fake
Binance (WebSocket market data + REST aggTrades of the same timeline, one subprocess).

1-second bars and the fake at 25x make the 750 window warm in about half a minute. Then the
daemon is stopped (SIGTERM, and separately kill -9) and started again after a short gap: the
windows come back from the checkpoint, the gap's bars are fetched from REST aggTrades and
counted, and the strategy can trade from the first new bar: the alpha engine has its history
back too (its bar count, price windows; never "warmup" after the restart).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import Daemon, free_port, write_config
from tests.integration.test_live_feed import FakeVenue

pytestmark = pytest.mark.integration

SPEED = 25.0
BAR_NS = 10**9


class FakeMarket(FakeVenue):
    """The market-data fake that also serves REST aggTrades history (``--rest-history``)."""

    def __init__(self, log_path: Path) -> None:
        super().__init__(log_path, speed=SPEED, extra_args=("--rest-history",))

    def history_stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.http}/_history_stats", timeout=5) as resp:
            return json.loads(resp.read())


@pytest.fixture
def market(tmp_path: Path) -> Iterator[FakeMarket]:
    fake = FakeMarket(tmp_path / "fake-market.log")
    try:
        yield fake
    finally:
        fake.stop()


def live_config(tmp_path: Path, port: int, market: FakeMarket) -> Path:
    extra = f"""
[feed]
kind = "binance"
bar_seconds = 1
max_stale_bars = 120

[binance_feed]
ws_base_url = "{market.url}"
symbols = ["SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"]
stall_timeout_s = 3.0
stream_grace_s = 5.0
backoff_initial_s = 0.1
backoff_max_s = 0.5
bar_close_delay_ms = 100

[warm_start]
checkpoint_every_s = 1.0
max_gap_s = 600.0
rest_base_url = "{market.http}"
"""
    return write_config(tmp_path / "dolphind.toml", port, extra=extra,
                        data_dir=str(tmp_path / "var"))


def signals(d: Daemon, outcome: str) -> float:
    return d.metric("dolphind_signals_total", f'outcome="{outcome}"') or 0.0


def run_until_warm(d: Daemon) -> None:
    d.wait_ready(timeout=240)  # a cold numba cache compiles first
    wait_until(lambda: d.metric("dolphind_strategy_can_trade") == 1.0, timeout=120,
               interval=0.2, what="the 750 window warm")


def restart_and_check(d: Daemon, market: FakeMarket, gap_s: float) -> dict:
    time.sleep(gap_s)  # the market goes on without the daemon
    before = market.history_stats()["requests"]
    t0 = time.monotonic()
    d.start()
    wait_until(lambda: d.metric("dolphind_strategy_can_trade") == 1.0, timeout=60,
               interval=0.1, what="can trade after the restart")
    took = time.monotonic() - t0
    status = d.get_json("/status")
    ws = status["strategy"]["warm_start"]
    print(f"restart: can trade {took:.1f} s after the start; warm start {ws}")
    assert ws["state"] == "warm" and ws["source"] == "checkpoint", ws
    # The gap: bars the market made while the daemon was away, fetched from REST, counted.
    assert ws["gap_bars"] >= gap_s * SPEED * 0.5, ws
    assert ws["gap_symbol_bars_fetched"] > 0 and ws["gap_symbol_bars_carried"] >= 0
    assert ws["gap_symbol_bars_fetched"] + ws["gap_symbol_bars_carried"] == 4 * ws["gap_bars"]
    assert (d.metric("dolphind_warm_start_bars_total", 'source="rest"') or 0) == \
        ws["gap_symbol_bars_fetched"]
    assert d.metric("dolphind_warm_start_bars_total", 'source="checkpoint"') == 751
    assert market.history_stats()["requests"] > before
    assert (d.metric("dolphind_history_rest_weight_total") or 0) == \
        20 * (market.history_stats()["requests"] - before)
    # Tradable from the first new bar on (the bar after the restored and filled ones).
    events = d.events()
    can = next(e for e in events if e.get("event") == "strategy.can_trade")
    first_new = ws["checkpoint_last_ts_ns"] + (ws["gap_bars"] + 1) * BAR_NS
    assert can["market_ts_ns"] == first_new
    # ... and the alpha engine decides from the first new bar on: never "warmup" again.
    wait_until(lambda: (d.metric("dolphind_scans_total") or 0) >= 20, timeout=30,
               what="bars after the restart")
    scanned = d.metric("dolphind_scans_total") or 0
    alpha = d.get_json("/status")["alpha"]
    # its history came back with the windows (a cold engine would have only `scanned` bars)
    assert alpha["engine_bars"] >= 751 + ws["gap_bars"] + scanned - 5, (alpha, scanned)
    assert signals(d, "warmup") == 0
    return ws


def test_sigterm_restart_is_warm_with_the_gap_filled(tmp_path: Path,
                                                     market: FakeMarket) -> None:
    port = free_port()
    d = Daemon(live_config(tmp_path, port, market), port).start()
    try:
        run_until_warm(d)
        assert d.stop() == 0
        assert (tmp_path / "var" / "scans" / "windows.npz").exists()
        restart_and_check(d, market, gap_s=2.0)
    finally:
        d.stop()


def test_kill_9_restart_is_warm_with_the_gap_filled(tmp_path: Path,
                                                    market: FakeMarket) -> None:
    port = free_port()
    d = Daemon(live_config(tmp_path, port, market), port).start()
    try:
        run_until_warm(d)
        time.sleep(2.5)  # past a checkpoint (every second): a crash loses at most that
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        assert d.proc.wait(10) == -signal.SIGKILL
        d._log.close()
        restart_and_check(d, market, gap_s=2.0)
    finally:
        d.stop()


def test_cold_start_backfills_the_windows_from_rest(tmp_path: Path,
                                                    market: FakeMarket) -> None:
    """No checkpoint, warm_start.backfill on: the 751 bars come from REST aggTrades first."""
    time.sleep(800 / SPEED)  # let the market make more history than the 750 window needs
    port = free_port()
    cfg = live_config(tmp_path, port, market)
    cfg.write_text(cfg.read_text().replace("[warm_start]\n", "[warm_start]\nbackfill = true\n"))
    d = Daemon(cfg, port).start()
    try:
        d.wait_ready(timeout=240)
        wait_until(lambda: d.metric("dolphind_strategy_can_trade") == 1.0, timeout=60,
                   interval=0.1, what="can trade after the backfill")
        ws = d.get_json("/status")["strategy"]["warm_start"]
        assert ws["state"] == "warm" and ws["source"] == "backfill", ws
        assert ws["backfill_bars"] == 751
        assert ws["backfill_symbol_bars_fetched"] == 4 * 751, ws
        assert ws["progress"]["state"] == "done" and ws["progress"]["fraction"] == 1.0
        assert market.history_stats()["requests"] >= 4
        assert (d.metric("dolphind_history_rest_weight_total") or 0) == \
            20 * market.history_stats()["requests"]
        wait_until(lambda: (d.metric("dolphind_scans_total") or 0) >= 20, timeout=30,
                   what="bars after the backfill")
        assert signals(d, "warmup") == 0  # the alpha's lookback came with the backfill
        assert d.get_json("/status")["alpha"]["engine_bars"] >= 751
    finally:
        d.stop()
