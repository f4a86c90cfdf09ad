"""Compile the alpha engine's numba kernels before the daemon reports ready.

numba compiles a kernel on its first call (or loads it from the on-disk cache); without this
the first real entry signal would stall the event loop for the compile. A throwaway engine is
driven over a synthetic market where the signal fires and one asset trends down, so the IRP
scoring and selection kernels run exactly as they will in trading.
"""

from __future__ import annotations

import numpy as np

from dolphind.alpha.engine import AlphaEngine
from dolphind.alpha.params import CHAMPION, StrategyParams
from dolphind.alpha.views import PortfolioView
from dolphind.events import ScanRecord, frozen_array

_NAN4 = (float("nan"),) * 4


def warmup(params: StrategyParams = CHAMPION, bars: int = 160) -> int:
    """Run a throwaway engine; returns how many entry decisions reached IRP (for tests)."""
    engine = AlphaEngine(params)
    symbols = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    rng = np.random.default_rng(7)
    prices = np.array([100.0, 50.0, 10.0])
    portfolio = PortfolioView(capital=10_000.0, equity=10_000.0)
    reached = 0
    for t in range(bars):
        prices = prices * np.array([0.999, 1.0 + rng.normal(0, 1e-3), 1.0 + rng.normal(0, 1e-3)])
        vel_div = -0.04 if t >= params.lookback else 0.0
        scan = ScanRecord(t, 1_700_000_000_000_000_000 + t * 5_000_000_000, 3, symbols,
                          frozen_array(prices.copy()), (1.5,) * 4, (0.0,) * 4, (0.5,) * 4,
                          vel_div, -1.0, 0.5)
        if t == params.lookback + 20:
            # The eligibility walk (an allowlist without the top pick) compiles too.
            engine.set_eligible(frozenset(symbols[1:]))
        decision = engine.on_scan(scan, None, portfolio)
        if decision.outcome not in ("warmup", "cold", "no_signal"):
            reached += 1
    return reached
