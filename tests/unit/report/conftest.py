"""A small run whose every figure was computed by hand (see test_metrics.py for the sums)."""

from __future__ import annotations

import pytest

from dolphind.report.model import ClosedTrade, EquityPoint

S = 1_000_000_000
H = 3600 * S
DAY0 = 1_746_835_200 * S  # 2025-05-10 00:00:00 UTC
CAPITAL = 1000.0


def trade(tid: str, entry_h: float, hold_s: int, pnl: float, fees: float, reason: str,
          bars: int, side: str = "SHORT") -> ClosedTrade:
    entry = DAY0 + int(entry_h * H)
    return ClosedTrade(tid, "BTCUSDT", side, entry, entry + hold_s * S, 100.0, 99.0, 2.0,
                       200.0, 2.0, fees, pnl, reason, bars)


@pytest.fixture
def hand_trades() -> list[ClosedTrade]:
    # Deliberately not in exit order: every consumer must sort by itself.
    return [
        trade("t3", 25.0, 900, 20.0, 1.0, "tp", 15),
        trade("t1", 1.0, 600, 30.0, 2.0, "tp", 10),
        trade("t4", 27.0, 1200, -15.0, 2.0, "max_hold", 20, side="LONG"),
        trade("t2", 2.0, 300, -10.0, 1.0, "stop", 5),
    ]


@pytest.fixture
def hand_equity() -> list[EquityPoint]:
    # Every 12 h over three UTC days; the day closes are 1020, 990, 1025.
    values = [(1000.0, 0.0), (1020.0, 500.0), (1010.0, 500.0), (990.0, 0.0), (1030.0, 0.0),
              (1025.0, 200.0)]
    return [EquityPoint(DAY0 + k * 12 * H, eq, notional) for k, (eq, notional)
            in enumerate(values)]
