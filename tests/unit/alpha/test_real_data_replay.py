"""The real candle sets in tests/data through the eigenscan and the alpha engine.

A minimal book-keeper stands in for execution (every intent fills at its reference price, the
position is visible from the next bar on), so the engine's decisions depend only on the data.
Two runs must produce identical intents; the counts by outcome must be plausible. The test
prints what it sees (``-s``): how often vel_div crosses the champion's -0.02, the entries and
the gates that reject most, for the issue's closing note.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from dolphind.alpha.engine import AlphaEngine, Decision
from dolphind.alpha.params import CHAMPION
from dolphind.alpha.views import ClosedTrade, PortfolioView, PositionView
from dolphind.events import OrderIntent
from dolphind.scan.scanner import EigenScanner
from tests.unit.scan.conftest import SET_1M, SET_5M, load_closes

# Every label engine.py documents; a decision outside this set is a bug.
OUTCOMES = {"exit", "exit_pending", "in_position", "entry_pending", "posture_hibernate",
            "posture_turtle", "mc_red", "warmup", "cold", "no_signal", "vol_regime",
            "no_capital", "irp_no_match", "dc_contradict", "ob_contradict", "entered"}
# Outcomes that are a gate saying no to an entry signal (not "no signal" or bookkeeping).
REJECTIONS = {"posture_hibernate", "posture_turtle", "mc_red", "vol_regime", "no_capital",
              "irp_no_match", "dc_contradict", "ob_contradict"}


@dataclass
class Book:
    """Fills every intent at its reference price; capital moves with the closed PnL."""

    capital: float = 10_000.0
    peak: float = 10_000.0
    position: PositionView | None = None
    last_closed: ClosedTrade | None = None
    closed: int = 0
    exits: collections.Counter[str] = field(default_factory=collections.Counter)

    def view(self) -> PortfolioView:
        if self.position is not None:  # one more bar held since the last decision
            p = self.position
            self.position = PositionView(p.symbol, p.side, p.entry_price, p.notional,
                                         p.bars_held + 1, p.entry_scan, p.leverage)
        return PortfolioView(self.capital, self.capital, max(0.0, 1.0 - self.capital / self.peak),
                             self.position, self.last_closed)

    def fill(self, it: OrderIntent, scan_number: int) -> None:
        if not it.reduce_only:
            self.position = PositionView(it.symbol, "SHORT" if it.side == "SELL" else "LONG",
                                         it.ref_price, it.notional_usdt, 0, scan_number,
                                         it.leverage)
            return
        p = self.position
        assert p is not None and p.symbol == it.symbol
        pnl = p.direction * (it.ref_price - p.entry_price) / p.entry_price * p.notional
        self.capital += pnl
        self.peak = max(self.peak, self.capital)
        self.closed += 1
        self.last_closed = ClosedTrade(self.closed, p.symbol, p.entry_scan, pnl)
        self.exits[it.reason] += 1
        self.position = None


@dataclass(frozen=True)
class Replay:
    intents: tuple[str, ...]  # repr of each intent (NaN-safe equality across runs)
    outcomes: dict[str, int]
    vel_div: np.ndarray
    entries: int
    exits: dict[str, int]
    bars: int


def replay(folder: Path, tf: str) -> Replay:
    ts, syms, px = load_closes(folder, tf)
    scanner, engine, book = EigenScanner(), AlphaEngine(CHAMPION), Book()
    outcomes: collections.Counter[str] = collections.Counter()
    intents: list[str] = []
    vd = np.empty(ts.shape[0])
    for t in range(ts.shape[0]):
        rec = scanner.update(int(ts[t]), syms, px[t])
        vd[t] = rec.vel_div
        d: Decision = engine.on_scan(rec, None, book.view())
        outcomes[d.outcome] += 1
        for it in d.intents:
            intents.append(repr(it))
            book.fill(it, rec.scan_number)
    return Replay(tuple(intents), dict(outcomes), vd, outcomes["entered"], dict(book.exits),
                  ts.shape[0])


def summary(tf: str, r: Replay) -> str:
    warm = np.isfinite(r.vel_div)
    below = int((r.vel_div[warm] < CHAMPION.vel_div_threshold).sum())
    extreme = int((r.vel_div[warm] <= CHAMPION.vel_div_extreme).sum())
    rejects = sorted(((n, k) for k, n in r.outcomes.items() if k in REJECTIONS), reverse=True)
    return (f"{tf}: {r.bars} bars, {int(warm.sum())} warm; vel_div < -0.02 on {below} "
            f"({below / warm.sum():.2%}), <= -0.05 on {extreme} ({extreme / warm.sum():.2%}); "
            f"entries {r.entries}; exits {r.exits}; rejections "
            + ", ".join(f"{k}={n}" for n, k in rejects) + f"; all outcomes {r.outcomes}")


CASES = [pytest.param(SET_1M, "1m", id="1m-14sym"), pytest.param(SET_5M, "5m", id="5m-40sym")]


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[Replay, Replay]]:
    return {tf: (replay(folder, tf), replay(folder, tf)) for folder, tf in
            ((SET_1M, "1m"), (SET_5M, "5m"))}


@pytest.mark.parametrize(("folder", "tf"), CASES)
def test_replay_is_deterministic_and_counts_are_plausible(
        runs: dict[str, tuple[Replay, Replay]], folder: Path, tf: str) -> None:
    a, b = runs[tf]
    print("\n" + summary(tf, a))
    # Deterministic: two runs, the same intents in the same order, the same counts.
    assert a.intents == b.intents and a.outcomes == b.outcomes
    # Every bar got exactly one outcome, and only documented ones.
    assert sum(a.outcomes.values()) == a.bars
    assert set(a.outcomes) <= OUTCOMES
    # The bookkeeping outcomes are exact: 99 bars of warm-up, then NaN vel_div until the
    # 750-bar window is warm (the scan's first warm vel_div is at bar 751).
    warm = np.isfinite(a.vel_div)
    first_warm = int(np.argmax(warm))
    assert a.outcomes["warmup"] == CHAMPION.lookback - 1
    assert a.outcomes["cold"] == first_warm - (CHAMPION.lookback - 1)
    # The signal fires, but rarely: not a threshold that trades every bar, nor never.
    frac = float((a.vel_div[warm] < CHAMPION.vel_div_threshold).mean())
    assert 0.001 < frac < 0.10, frac
    # Entries happen, never more than the bars that signalled, and each is closed (or open
    # at the end); a flat-bar signal is either entered or rejected by a named gate.
    assert 0 < a.entries <= int((a.vel_div[warm] < CHAMPION.vel_div_threshold).sum())
    assert sum(a.exits.values()) in (a.entries, a.entries - 1)
    assert set(a.exits) <= {"FIXED_TP", "MAX_HOLD", "STOP_LOSS"}
    assert a.outcomes.get("no_signal", 0) > a.entries
    assert sum(n for k, n in a.outcomes.items() if k in REJECTIONS) > 0
