"""The console heartbeat says whether the strategy can trade, and while warming how long the
first entry is away (issue 18; the line itself is dolphind/logs.py's)."""

from __future__ import annotations

from dolphind import logs


def test_heartbeat_says_can_trade_and_the_wait_while_warming() -> None:
    warming = {"health": {"level": "GREEN"}, "ready": True,
               "strategy": {"can_trade": False, "first_entry_eta_s": 3123.5}}
    f = logs.heartbeat_fields(warming)
    assert f["ready"] is True and f["can_trade"] is False and f["first_entry_eta_s"] == 3123.5
    trading = {"health": {"level": "GREEN"}, "ready": True,
               "strategy": {"can_trade": True, "first_entry_eta_s": 0.0}}
    f = logs.heartbeat_fields(trading)
    assert f["can_trade"] is True and "first_entry_eta_s" not in f
