"""AlphaEngine on synthetic scan sequences (bible §13.2, §13.3)."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import pytest

from dolphind.alpha.acb import ExternalFactors
from dolphind.alpha.engine import AlphaEngine, Decision
from dolphind.alpha.mc_gate import McGateResult
from dolphind.alpha.params import CHAMPION
from dolphind.alpha.views import BookView, ClosedTrade, PortfolioView, PositionView, SymbolBook
from dolphind.events import ScanRecord

BAR_NS = 5_000_000_000
SYMS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "BTCUSDT")
FLAT = PortfolioView(capital=10_000.0, equity=10_000.0)


def _prices(bar: int) -> np.ndarray:
    """AAA falls steadily (the SHORT candidate), BBB rises, CCC chops, BTC drifts."""
    return np.array([
        1.0 - 0.0005 * bar,
        2.0 + 0.001 * bar,
        3.0 + 0.01 * (-1) ** bar,
        50_000.0 + bar,
    ])


def _scan(bar: int, vel_div: float, prices: np.ndarray | None = None) -> ScanRecord:
    return ScanRecord(
        scan_number=bar, ts_ns=1_700_000_000_000_000_000 + bar * BAR_NS, n_symbols=len(SYMS),
        symbols=SYMS, prices=_prices(bar) if prices is None else prices,
        lambda_max=(1.0, 1.0, 1.0, 1.0), velocity=(0.0, 0.0, 0.0, 0.001 * (bar % 7)),
        instability=(0.0, 0.0, 0.0, 0.0), vel_div=vel_div, regime_signal=0.0,
        instability_composite=0.0,
    )


def _run_flat(engine: AlphaEngine, bars: int, vd: float = 0.0) -> list[Decision]:
    return [engine.on_scan(_scan(i, vd), None, FLAT) for i in range(bars)]


def test_warmup_then_entry_on_signal() -> None:
    e = AlphaEngine()
    outs = [d.outcome for d in _run_flat(e, 99, vd=-0.03)]
    assert set(outs) == {"warmup"}
    d = e.on_scan(_scan(99, -0.03), None, FLAT)
    assert d.outcome == "entered" and len(d.intents) == 1
    it = d.intents[0]
    assert it.symbol == "AAAUSDT" and it.side == "SELL" and not it.reduce_only
    assert it.intent_id == "99-AAAUSDT-entry"
    assert it.ref_price == _prices(99)[0]
    gates = dict(it.gates)
    assert gates["vel_div"] == -0.03 and gates["dc"] == "CONFIRM"
    assert gates["mc_status"] == "ORANGE" and gates["acb_boost"] == 1.0
    # notional = capital * fraction * leverage (no friction added)
    assert it.notional_usdt == pytest.approx(10_000.0 * gates["fraction"] * it.leverage)


def test_no_signal_and_cold() -> None:
    e = AlphaEngine()
    _run_flat(e, 100)
    assert e.on_scan(_scan(100, -0.019), None, FLAT).outcome == "no_signal"
    assert e.on_scan(_scan(101, float("nan")), None, FLAT).outcome == "cold"


def test_irp_no_match_means_no_trade() -> None:
    e = AlphaEngine()
    rising = lambda b: np.array([1.0 + 0.001 * b, 2.0 + 0.001 * b, 3.0 + 0.001 * b, 5e4 + b])  # noqa: E731
    for i in range(110):
        d = e.on_scan(_scan(i, -0.03, rising(i)), None, FLAT)
    assert d.outcome == "irp_no_match" and d.intents == ()


def test_dc_contradiction_skips() -> None:
    e = AlphaEngine()
    for i in range(100):
        e.on_scan(_scan(i, 0.0), None, FLAT)
    p = _prices(100)
    p[0] = _prices(92)[0] * 1.001  # AAA bounced +10 bp over the DC window
    d = e.on_scan(_scan(100, -0.03, p), None, FLAT)
    assert d.outcome in ("dc_contradict", "irp_no_match")
    assert d.intents == ()


def test_one_entry_when_flat_and_pending_until_acknowledged() -> None:
    e = AlphaEngine()
    _run_flat(e, 100, vd=0.0)
    outs = [e.on_scan(_scan(100 + i, -0.03), None, FLAT).outcome for i in range(4)]
    # the portfolio never shows the fill: no repeat for INTENT_ACK_BARS, then retry
    assert outs == ["entered", "entry_pending", "entered", "entry_pending"]


def _position(entry_scan: int, entry_price: float, bars_held: int) -> PortfolioView:
    pos = PositionView("AAAUSDT", "SHORT", entry_price, 1000.0, bars_held, entry_scan, 1.5)
    return PortfolioView(capital=10_000.0, equity=10_000.0, position=pos)


def test_exit_before_entry_and_no_entry_while_in_position() -> None:
    e = AlphaEngine()
    _run_flat(e, 100)
    e.on_scan(_scan(100, -0.03), None, FLAT)
    entry = _prices(100)[0]
    d = e.on_scan(_scan(101, -0.03), None, _position(100, entry, 1))
    assert d.outcome == "in_position" and d.intents == ()
    # a price 1% below entry: TP; the signal still fires but no entry on an exit bar
    p = _prices(102)
    p[0] = entry * 0.99
    d = e.on_scan(_scan(102, -0.04, p), None, _position(100, entry, 2))
    assert d.outcome == "exit" and len(d.intents) == 1
    x = d.intents[0]
    assert x.reduce_only and x.side == "BUY" and x.reason == "FIXED_TP"
    assert x.intent_id == "102-AAAUSDT-exit" and x.ref_price == p[0]
    assert x.notional_usdt == 1000.0 and x.leverage == 1.5
    # still open next bar (fill pending): no duplicate exit
    d = e.on_scan(_scan(103, -0.04, p), None, _position(100, entry, 3))
    assert d.outcome == "exit_pending" and d.intents == ()
    # flat again: a new entry is possible
    d = e.on_scan(_scan(104, -0.04), None, FLAT)
    assert d.outcome == "entered"


def test_max_hold_exit() -> None:
    e = AlphaEngine()
    _run_flat(e, 100)
    entry = _prices(100)[0] * 0.99  # price drifts to a small loss, no TP
    d = e.on_scan(_scan(100, 0.0), None, _position(0, entry, 119))
    assert d.outcome == "in_position"
    d = e.on_scan(_scan(101, 0.0), None, _position(0, entry, 120))
    assert d.intents[0].reason == "MAX_HOLD"


def _book(cascade: int = 0, regime: int = 0, **kw: float) -> BookView:
    books = {s: SymbolBook(depth_quality=1.0, fill_probability=1.0, imbalance_ma5=0.0,
                           imbalance_persistence=0.5, withdrawal_velocity=0.0) for s in SYMS}
    books["AAAUSDT"] = dataclasses.replace(books["AAAUSDT"], **kw)
    return BookView.from_symbols(books, cascade_count=cascade, regime_signal=regime)


def test_cascade_halves_max_hold_in_engine() -> None:
    e = AlphaEngine()
    _run_flat(e, 100)
    entry = _prices(100)[0] * 0.995
    d = e.on_scan(_scan(100, 0.0), _book(cascade=2), _position(0, entry, 60))
    assert d.intents and d.intents[0].reason == "MAX_HOLD"
    assert dict(d.intents[0].gates)["max_hold_bars"] == 60


def test_withdrawal_tp_in_engine() -> None:
    e = AlphaEngine()
    _run_flat(e, 100)
    price = _prices(100)[0]
    entry = price / (1 - 0.006)  # +60 bps: below 95, above 57
    assert e.on_scan(_scan(100, 0.0), None, _position(0, entry, 5)).outcome == "in_position"
    d = e.on_scan(_scan(100, 0.0), _book(regime=1), _position(0, entry, 5))
    assert d.intents and d.intents[0].reason == "FIXED_TP"


def test_book_hard_skip_and_depth_gate() -> None:
    e = AlphaEngine()
    for i in range(100):
        e.on_scan(_scan(i, 0.0), _book(), FLAT)
    d = e.on_scan(_scan(100, -0.03), _book(imbalance_ma5=0.3, imbalance_persistence=0.9), FLAT)
    assert d.outcome == "ob_contradict"
    d = e.on_scan(_scan(101, -0.03), _book(depth_quality=0.1), FLAT)
    # AAA's thin book fails the depth gate: the walk moves on to the choppy CCC (SHORT
    # alignment 0.49 >= 0.45); there is never a fallback to an asset that failed a gate
    assert d.outcome == "entered" and d.intents[0].symbol == "CCCUSDT"
    assert e.on_scan(_scan(102, -0.03), _book(), FLAT).outcome == "entry_pending"
    d = e.on_scan(_scan(103, -0.03), _book(), FLAT)
    assert d.outcome == "entered" and d.intents[0].symbol == "AAAUSDT"


def test_subday_acb_normalisation_exit() -> None:
    e = AlphaEngine()
    e.set_external_factors(ExternalFactors(dvol_btc=90.0, taker=0.7))  # boost 1.549
    _run_flat(e, 100)
    assert e.status().acb_boost == pytest.approx(1.549, abs=5e-4)
    entry = _prices(100)[0]
    assert e.on_scan(_scan(100, 0.0), None, _position(99, entry, 1)).outcome == "in_position"
    e.apply_acb_update(1.05, None)
    d = e.on_scan(_scan(101, 0.0), None, _position(99, entry, 2))
    assert d.intents and d.intents[0].reason == "SUBDAY_ACB_NORMALIZATION"


def test_drawdown_hibernates_exits_and_blocks_entries() -> None:
    e = AlphaEngine()
    _run_flat(e, 100)
    entry = _prices(100)[0]
    deep = dataclasses.replace(_position(99, entry, 1), drawdown=0.25)
    outs = [e.on_scan(_scan(100 + i, -0.03), None, deep) for i in range(2)]
    assert outs[0].posture == "APEX" and outs[1].posture == "HIBERNATE"  # 2 bars down
    assert outs[1].intents[0].reason == "HIBERNATE_HALT"
    flat_deep = dataclasses.replace(FLAT, drawdown=0.25)
    assert e.on_scan(_scan(102, -0.03), None, flat_deep).outcome == "posture_hibernate"


def test_mc_red_halts_entries() -> None:
    e = AlphaEngine()
    e.set_mc_result(McGateResult("RED", 1.0, "REAL_MODEL", 0.3, 0.0))
    outs = {d.outcome for d in _run_flat(e, 110, vd=-0.03)}
    assert "entered" not in outs


def test_closed_trades_feed_streak() -> None:
    e = AlphaEngine()
    _run_flat(e, 100)
    d = e.on_scan(_scan(100, -0.03), None, FLAT)
    frac_first = dict(d.intents[0].gates)["streak_mult"]
    assert frac_first == 1.1
    for k in range(4):  # four losing trades reported by the portfolio
        pv = dataclasses.replace(FLAT, last_closed=ClosedTrade(k, "AAAUSDT", 100, -5.0))
        e.on_scan(_scan(101 + k, 0.0), None, pv)
    pv = dataclasses.replace(FLAT, last_closed=ClosedTrade(3, "AAAUSDT", 100, -5.0))
    d = e.on_scan(_scan(110, -0.03), None, pv)
    assert dict(d.intents[0].gates)["streak_mult"] == 0.5


def _sequence(seed: int, bars: int) -> Iterator[ScanRecord]:
    rng = np.random.default_rng(seed)
    n = 30
    syms = tuple(f"S{i}USDT" for i in range(n))
    prices = rng.uniform(0.1, 100.0, n)
    for b in range(bars):
        prices = prices * np.exp(rng.normal(-0.0002, 0.002, n))
        vd = float(rng.normal(-0.015, 0.01))
        yield ScanRecord(b, b * BAR_NS, n, syms, prices.copy(), (1.0,) * 4,
                         (0.0, 0.0, 0.0, float(rng.normal())), (0.0,) * 4, vd, 0.0, 0.0)


def _simulate(seed: int, bars: int) -> list[Decision]:
    """A tiny fill model: entries fill at ref price next bar, exits close next bar."""
    e = AlphaEngine()
    out: list[Decision] = []
    pos: PositionView | None = None
    seq = -1
    closed: ClosedTrade | None = None
    for scan in _sequence(seed, bars):
        if pos is not None:
            pos = dataclasses.replace(pos, bars_held=scan.scan_number - pos.entry_scan)
        pv = PortfolioView(10_000.0, 10_000.0, 0.0, pos, closed)
        d = e.on_scan(scan, None, pv)
        out.append(d)
        for it in d.intents:
            if it.reduce_only and pos is not None:
                seq += 1
                pnl = (pos.entry_price - it.ref_price) / pos.entry_price * pos.notional
                closed = ClosedTrade(seq, pos.symbol, pos.entry_scan, pnl)
                pos = None
            elif not it.reduce_only:
                pos = PositionView(it.symbol, "SHORT", it.ref_price, it.notional_usdt, 0,
                                   scan.scan_number, it.leverage)
    return out


def test_deterministic_and_exits_precede_entries() -> None:
    a = _simulate(11, 700)
    b = _simulate(11, 700)
    assert a == b
    entries = sum(1 for d in a for it in d.intents if not it.reduce_only)
    exits = sum(1 for d in a for it in d.intents if it.reduce_only)
    assert entries >= 3 and exits >= 2
    for d in a:
        assert len(d.intents) <= 1  # one exit or one entry per bar, never both
    # never two entries without an exit between them
    open_ = False
    for d in a:
        for it in d.intents:
            assert it.reduce_only == open_
            open_ = not it.reduce_only


def test_status_reports_acb_reason_and_hash() -> None:
    e = AlphaEngine()
    st = e.status()
    assert st.acb_boost == 1.0 and "no external factors" in st.acb_reason
    assert len(st.params_hash) == 16
    assert st.mc_status == "ORANGE" and st.mc_source == "FALLBACK_NO_MODEL"


def test_long_path_when_enabled() -> None:
    e = AlphaEngine(dataclasses.replace(CHAMPION, long_enabled=True))
    _run_flat(e, 100)
    d = e.on_scan(_scan(100, 0.03), None, FLAT)
    # BTC and BBB both rise every bar; in price-difference units BTC's mfe (and so its
    # efficiency) is far larger and its noise is 0: IRP as written prefers it
    assert d.outcome == "entered" and d.intents[0].symbol == "BTCUSDT"
    assert d.intents[0].side == "BUY"
