"""Closed trades in the running daemon carry their own bar-close entry and exit times.

Issue 16 (gap 5): in a running replay daemon, closed trades were once reported by `GET /trades`
and the Command Center with the same entry and exit time, 23:59:00 of a day. On the current
code they are not; this test keeps it so, across a restart (resume from the store) as well:
every trade has entry < exit, both within the replayed data, held = bars held x 60 s (1-minute
candles, bar close times), and the page's snapshot lists the same trades with the same times.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.conftest import wait_until
from tests.integration.harness import Daemon, free_port, write_config

DATA_FIRST = datetime(2025, 5, 10, tzinfo=timezone.utc)
DATA_END = datetime(2025, 5, 13, tzinfo=timezone.utc)  # data/sample: 3 days of 1m candles


def _utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def _check(trades: list[dict[str, Any]], snapshot: dict[str, Any]) -> None:
    assert trades
    for t in trades:
        entry, exit_ = _utc(t["entry_time"]), _utc(t["exit_time"])
        assert DATA_FIRST < entry < exit_ < DATA_END, t
        if not t["trade_id"].startswith("h"):  # rebuilt history keeps no bar counts
            assert t["held_s"] == t["bars_held"] * 60.0, t
    assert len({t["exit_time"] for t in trades}) == len(trades)
    page = {t["trade_id"]: t for t in snapshot["trades"]}
    assert page
    api = {t["trade_id"]: t for t in trades}
    for tid, t in page.items():
        assert t["entry_ts_ns"] < t["exit_ts_ns"], t
        if tid in api:
            assert _utc(api[tid]["exit_time"]).timestamp() == t["exit_ts_ns"] / 1e9


def test_closed_trades_have_their_own_entry_and_exit_times(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "d.toml", port, speed=3000.0)
    d = Daemon(cfg, port).start()
    try:
        d.wait_ready(timeout=120)
        wait_until(lambda: d.get_json("/trades")["total"] >= 3, timeout=120,
                   what="three closed trades")
        first = d.get_json("/trades?limit=10000")["trades"]
        _check(first, d.get_json("/ui/snapshot"))
    finally:
        d.stop()
    # Restarted on the same data dir: the replay resumes from the stored market time; the
    # earlier trades come back from the store, the new ones are stamped as before.
    d = Daemon(cfg, port).start()
    try:
        d.wait_ready(timeout=120)
        wait_until(lambda: d.get_json("/trades")["total"] >= len(first) + 2, timeout=120,
                   what="two trades after the restart")
        after = d.get_json("/trades?limit=10000")["trades"]
        _check(after, d.get_json("/ui/snapshot"))
    finally:
        d.stop()
    assert sum(1 for t in after if t["trade_id"].startswith("h")) >= len(first)
