"""Funding prints of a replay, looked up by market time (issue 16).

Two consumers, both keyed by the *bar's* time so a backtest is the same on every run (the
replay feed runs ahead of the strategy by up to a channel's worth of bars):

- the ACB funding factor (bible §10.2): ``funding_btc`` is BTCUSDT's latest funding rate
  printed at or before the bar. The bible's factor is a daily median upstream; a replay has
  the 8-hourly prints only, so the latest print stands in for it (stated in the reason);
- funding payments (Binance USDT-M: at each funding time a position pays
  ``position notional x rate``; longs pay a positive rate, shorts receive it).

A replay without funding files has no funding: the factor is absent (never invented) and no
payment is booked.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dolphind.alpha.acb import ExternalFactors
from dolphind.feed.history import FundingSeries

FUNDING_SYMBOL = "BTCUSDT"  # bible §10.2 "funding_btc"


def latest_print(series: FundingSeries, ts_ns: int) -> tuple[int, float] | None:
    """(time, rate) of the last print at or before ``ts_ns``; None before the first."""
    k = int(np.searchsorted(series.ts_ns, ts_ns, side="right"))
    if k == 0:
        return None
    return int(series.ts_ns[k - 1]), float(series.rate[k - 1])


def prints_between(series: FundingSeries, after_ns: int, upto_ns: int) -> list[tuple[int, float]]:
    """Prints with ``after_ns < t <= upto_ns`` in time order (the funding times a bar crossed)."""
    lo = int(np.searchsorted(series.ts_ns, after_ns, side="right"))
    hi = int(np.searchsorted(series.ts_ns, upto_ns, side="right"))
    return [(int(series.ts_ns[i]), float(series.rate[i])) for i in range(lo, hi)]


def funding_payment(qty: float, mark: float, rate: float) -> float:
    """Cash to the account at a funding time: ``-qty * mark * rate`` (qty signed, + = long)."""
    return -qty * mark * rate


class ReplayFunding:
    """A replay's funding prints by symbol, read at market time."""

    def __init__(self, funding: Mapping[str, FundingSeries]) -> None:
        self._funding = {s: f for s, f in funding.items() if len(f.ts_ns)}

    def __bool__(self) -> bool:
        return bool(self._funding)

    def series(self, symbol: str) -> FundingSeries | None:
        return self._funding.get(symbol)

    def factors_at(self, ts_ns: int) -> ExternalFactors | None:
        """The ACB factors this data can give at ``ts_ns`` (funding only; None: nothing)."""
        series = self._funding.get(FUNDING_SYMBOL)
        if series is None:
            return None
        found = latest_print(series, ts_ns)
        if found is None:
            return None
        return ExternalFactors(funding_btc=found[1])
