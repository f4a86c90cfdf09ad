"""The console's trading lines, heartbeat and secret redaction (dolphind/logs.py), and the
trade.fill / trade.closed lines built from the ledger's events (dolphind/tradelog.py)."""

from __future__ import annotations

import subprocess
import sys

import orjson
import structlog

from dolphind import logs
from dolphind.events import Fill, Order, PositionUpdate
from dolphind.report.model import ClosedTrade
from dolphind.tradelog import TradeLog

T0 = 1_746_835_200_000_000_000  # 2025-05-10 00:00:00 UTC


def _trade(pnl: float = 12.5, fees: float = 0.5) -> ClosedTrade:
    return ClosedTrade("000001-BTCUSDT", "BTCUSDT", "SHORT", T0, T0 + 3_725 * 10**9, 100.0, 95.0,
                       2.5, 250.0, 2.0, fees, pnl, "TP", 62)


def test_human_time_is_utc_without_nanoseconds() -> None:
    assert logs.human_time(T0 + 59 * 10**9 + 123) == "2025-05-10 00:00:59"


def test_closed_fields_say_symbol_side_prices_pnl_reason_and_time_held() -> None:
    f = logs.closed_fields(_trade())
    assert f["symbol"] == "BTCUSDT" and f["side"] == "SHORT" and f["reason"] == "TP"
    assert f["entry"] == 100.0 and f["exit"] == 95.0
    assert f["pnl_usdt"] == 12.5 and f["gross_usdt"] == 13.0
    assert f["pnl_pct"] == 5.0  # 12.5 / 250 notional
    assert f["held"] == "01:02:05" and f["bars"] == 62


def test_heartbeat_fields_from_a_status_document() -> None:
    status = {"health": {"level": "GREEN"}, "ready": True,
              "execution": {"equity_usdt": 10_012.346, "drawdown": 0.0123,
                            "realised_pnl_usdt": 10.0, "unrealised_pnl_usdt": 2.345,
                            "positions": {"ETHUSDT": -1.5, "BTCUSDT": 0.0}},
              "alpha": {"posture": "APEX"}, "control": {"halted": True},
              "scan": {"warm": False, "scans": 12}}
    f = logs.heartbeat_fields(status)
    assert f == {"health": "GREEN", "ready": True, "equity_usdt": 10012.35,
                 "drawdown_pct": 1.23, "realised_usdt": 10.0, "fees_usdt": None,
                 "unrealised_usdt": 2.35,
                 "open_positions": 1, "positions": "ETHUSDT:-1.5", "posture": "APEX",
                 "halted": True, "warm": False, "scans": 12}
    # A daemon still starting has no pipeline: the line still comes, with what is known.
    assert logs.heartbeat_fields({"health": {"level": "DEAD"}})["halted"] is False


def test_secret_keys_are_redacted_but_counts_are_not() -> None:
    ev = logs.redact_secrets(None, "info", {"event": "x", "api_key": "AKIA123",
                                            "webhook_url": "https://hooks/abc", "tokens": 3,
                                            "symbol": "BTCUSDT"})
    assert ev == {"event": "x", "api_key": "***", "webhook_url": "***", "tokens": 3,
                  "symbol": "BTCUSDT"}


_SCRIPT = """
import sys, structlog
from dolphind import logs
logs.configure("info", sys.argv[1])
structlog.get_logger("t").info("trade.closed", symbol="BTCUSDT", pnl_usdt=-3.5,
                               secret="hunter2")
"""


def _run(fmt: str) -> str:
    return subprocess.run([sys.executable, "-c", _SCRIPT, fmt], capture_output=True, text=True,
                          timeout=60, check=True).stdout


def test_console_line_has_a_human_time_and_no_colours_off_a_terminal() -> None:
    out = _run("console")
    assert "trade.closed" in out and "symbol=BTCUSDT" in out and "pnl_usdt=-3.5" in out
    assert "\x1b[" not in out  # a pipe gets no escape codes
    # "2026-12-07 03:20:29 [info     ] trade.closed ..."
    stamp = out.split(" [", 1)[0]
    assert len(stamp) == 19 and stamp[10] == " " and "T" not in stamp
    assert "hunter2" not in out


def test_json_line_keeps_iso_times_and_redacts() -> None:
    line = orjson.loads(_run("json"))
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]
    assert line["secret"] == "***"


def test_tradelog_writes_fill_and_closed_lines_and_emits_on_trade() -> None:
    closed: list[ClosedTrade] = []
    emitted: list[tuple[str, object]] = []
    tl = TradeLog(closed, lambda trade: emitted.append(("on_trade", trade)))
    order = Order("c1", "1-BTCUSDT-exit", "BTCUSDT", "BUY", 2.5, "MARKET", 0.0, True,
                  "MAX_HOLD", "acked")
    with structlog.testing.capture_logs() as cap:
        tl.on_order(order)
        tl.on_fill(Fill("f1", "c1", "BTCUSDT", "BUY", 2.5, 95.0, 0.1, "TAKER",
                        T0, reduce_only=True))
        closed.append(_trade())  # what the ledger does on the flat position update
        tl.on_position(PositionUpdate("BTCUSDT", 0.0, 0.0, 12.5, T0))
        tl.on_position(PositionUpdate("BTCUSDT", 0.0, 0.0, 12.5, T0))  # no repeat
    fills = [c for c in cap if c["event"] == "trade.fill"]
    assert len(fills) == 1 and fills[0]["reason"] == "MAX_HOLD" and fills[0]["price"] == 95.0
    assert fills[0]["side"] == "BUY" and fills[0]["at"] == "2025-05-10 00:00:00"
    closes = [c for c in cap if c["event"] == "trade.closed"]
    assert len(closes) == 1 and closes[0]["pnl_usdt"] == 12.5 and closes[0]["reason"] == "TP"
    assert emitted == [("on_trade", closed[0])]


def test_heartbeat_interval_has_a_range() -> None:
    import pytest

    from dolphind.config import ConfigError, config_from_dict

    assert config_from_dict({"logging": {"heartbeat_s": 0}}).logging.heartbeat_s == 0
    for bad in (-1, 86_401):
        with pytest.raises(ConfigError, match="logging.heartbeat_s"):
            config_from_dict({"logging": {"heartbeat_s": bad}})


def test_console_shows_epoch_nanoseconds_as_utc_times() -> None:
    ev = logs.humanize_epoch_ns(None, "info", {"event": "replay.loaded",
                                               "start_ns": 1_746_835_200_000_000_000,
                                               "bars_ns": 5, "flag_ns": True})
    assert ev == {"event": "replay.loaded", "start": "2025-05-10 00:00:00", "bars_ns": 5,
                  "flag_ns": True}


def test_pnl_is_green_or_red_on_a_terminal_and_fees_stay_plain() -> None:
    ev = logs.colour_pnl(None, "info", {"pnl_usdt": 10.03, "pnl_pct": -1.5, "fees_usdt": 0.8,
                                        "unrealised_usdt": 0.0})
    assert ev["pnl_usdt"] == "\x1b[32m+10.03\x1b[0m" and ev["pnl_pct"] == "\x1b[31m-1.5\x1b[0m"
    assert ev["fees_usdt"] == 0.8 and ev["unrealised_usdt"] == 0.0
