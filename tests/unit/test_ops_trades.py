"""GET /trades, /profit, /daily documents (dolphind/ops/trades.py), checked by hand."""

from __future__ import annotations

import sqlite3

from dolphind.ops.history import load_history
from dolphind.ops.trades import daily_document, profit_document, trades_document
from dolphind.opsview import daily_text, profit_text, status_text, trades_text
from dolphind.report.model import ClosedTrade

DAY = 86_400 * 10**9
T0 = 1_746_835_200_000_000_000  # 2025-05-10 00:00 UTC


def t(i: int, symbol: str, pnl: float, exit_ns: int, fees: float = 1.0) -> ClosedTrade:
    return ClosedTrade(f"{i:06d}-{symbol}", symbol, "SHORT", exit_ns - 600 * 10**9, exit_ns,
                       10.0, 9.0, 10.0, 100.0, 1.0, fees, pnl,
                       "TP" if pnl > 0 else "MAX_HOLD", 10)


TRADES = [t(1, "BTCUSDT", 5.0, T0 + 3600 * 10**9), t(2, "ETHUSDT", -2.0, T0 + 7200 * 10**9),
          t(3, "BTCUSDT", 0.0, T0 + DAY + 60 * 10**9),
          t(4, "ETHUSDT", -8.0, T0 + DAY + 120 * 10**9)]


def test_profit_by_hand() -> None:
    p = profit_document(TRADES, {"equity_usdt": 995.0, "venue": "paper"})
    assert (p["trades"], p["wins"], p["draws"], p["losses"]) == (4, 1, 1, 2)
    assert p["net_pnl_usdt"] == -5.0 and p["fees_usdt"] == 4.0
    assert p["profit_factor"] == 0.5  # 5 / (2 + 8)
    assert p["expectancy_usdt"] == -1.25
    assert p["avg_pnl_pct"] == -1.25  # (5 - 2 + 0 - 8) % of a 100 notional, / 4
    assert p["best_pair"] == {"symbol": "BTCUSDT", "pnl_usdt": 5.0}
    assert p["worst_pair"] == {"symbol": "ETHUSDT", "pnl_usdt": -10.0}
    assert p["best_trade"]["trade_id"] == "000001-BTCUSDT"
    assert p["worst_trade"]["trade_id"] == "000004-ETHUSDT"
    assert p["account"] == {"equity_usdt": 995.0}  # only the money figures
    text = profit_text(p)
    assert "W/D/L 1/1/2" in text and "-5.00 USDT" in text and "0.50" in text


def test_profit_with_no_trades_is_all_n_a() -> None:
    p = profit_document([], None)
    assert p["trades"] == 0 and p["win_rate"] is None and p["profit_factor"] is None
    assert "n/a" in profit_text(p)


def test_daily_groups_by_utc_exit_day_newest_first() -> None:
    d = daily_document(TRADES, 7)["days"]
    assert [x["day"] for x in d] == ["2025-05-11", "2025-05-10"]
    assert d[0] == {"day": "2025-05-11", "pnl_usdt": -8.0, "trades": 2, "wins": 0, "losses": 1,
                    "fees_usdt": 2.0}
    assert d[1]["pnl_usdt"] == 3.0 and d[1]["wins"] == 1
    assert [x["day"] for x in daily_document(TRADES, 1)["days"]] == ["2025-05-11"]
    assert "2025-05-11" in daily_text(daily_document(TRADES, 7))


def test_trades_newest_first_with_limit() -> None:
    doc = trades_document(list(reversed(TRADES)), 2)
    assert doc["total"] == 4
    assert [x["trade_id"] for x in doc["trades"]] == ["000004-ETHUSDT", "000003-BTCUSDT"]
    assert doc["trades"][0]["exit_time"] == "2025-05-11T00:02:00Z"
    assert "2025-05-11 00:02:00" in trades_text(doc)


def test_status_text_of_a_starting_daemon_has_no_pipeline_parts() -> None:
    text = status_text({"version": "0.1.0", "pid": 7, "mode": "paper", "uptime_s": 3.2,
                        "ready": False, "readiness": {"scan": "shortest window still cold",
                                                      "feed": "ok"},
                        "health": {"level": "DEAD", "score": 0.0}, "control": {}})
    assert "ready      no (scan: shortest window still cold)" in text
    assert "account" not in text


async def test_a_history_that_cannot_be_rebuilt_costs_only_the_history() -> None:
    class BrokenStore:
        async def read(self, fn: object) -> object:
            raise sqlite3.DatabaseError("file is not a database")

    assert await load_history(BrokenStore()) == []
