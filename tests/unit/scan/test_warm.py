"""The scan's windows across a restart (issue 18): checkpoint file, priming, gap handling."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from dolphind.channels import Channel, Overflow
from dolphind.events import WINDOWS, Bar, ScanRecord, frozen_array
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.scan.arrow_sink import ArrowScanSink
from dolphind.scan.stage import ScanStage
from dolphind.statebus.memory import MemoryStateBus
from dolphind.scan.scanner import EigenScanner
from dolphind.scan.warm import (
    CheckpointError,
    RecentBars,
    WarmStart,
    WarmupTracker,
    history_of,
    load_checkpoint,
    save_checkpoint,
)

SEC = 10**9
SYMS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT", "EEEUSDT")
NEED = max(WINDOWS) + 1


def market(T: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = 0.002 * (0.7 * rng.standard_normal((T, 1)) + rng.standard_normal((T, len(SYMS))))
    return 100.0 * np.exp(np.cumsum(r, axis=0))


def recent_of(px: np.ndarray, upto: int) -> RecentBars:
    rb = RecentBars(NEED)
    for t in range(upto):
        rb.append(t * 5 * SEC, SYMS, frozen_array(px[t]), 5.0)
    return rb


def test_checkpoint_round_trip_keeps_the_last_window(tmp_path: Path) -> None:
    px = market(900)
    rb = recent_of(px, 900)
    assert len(rb) == NEED  # the ring keeps exactly what the longest window needs
    path = tmp_path / "scans" / "windows.npz"
    save_checkpoint(path, history_of(rb.take()))
    ck = load_checkpoint(path)
    assert ck is not None and ck.symbols == SYMS and ck.interval_ns == 5 * SEC
    np.testing.assert_array_equal(ck.closes, px[900 - NEED:])
    assert ck.last_ts_ns == 899 * 5 * SEC
    assert not (tmp_path / "scans" / "windows.npz.tmp").exists()


def test_universe_change_is_aligned_on_the_newest_bar() -> None:
    rb = RecentBars(10)
    rb.append(0, ("A", "B"), frozen_array(np.array([1.0, 2.0])), 1.0)
    rb.append(SEC, ("B", "C"), frozen_array(np.array([3.0, 4.0])), 1.0)
    h = history_of(rb.take())
    assert h.symbols == ("B", "C")
    assert h.closes[0].tolist()[0] == 2.0 and math.isnan(h.closes[0, 1])


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04broken"])
def test_a_damaged_checkpoint_is_refused_with_its_name(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "windows.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="windows.npz"):
        load_checkpoint(path)
    assert load_checkpoint(tmp_path / "absent.npz") is None


def test_a_primed_scanner_continues_exactly_as_one_that_never_stopped() -> None:
    """The restart property: the checkpoint's 751 bars are all the scan's state needs."""
    T, stop = 1300, 1000
    px = market(T)
    whole = EigenScanner()
    ref = [whole.update(t * 5 * SEC, SYMS, frozen_array(px[t])) for t in range(T)]
    ck = history_of(recent_of(px, stop).take())
    restarted = EigenScanner(start_scan_number=stop)
    for t in range(len(ck)):
        restarted.prime(int(ck.ts_ns[t]), ck.symbols, frozen_array(ck.closes[t]))
    assert restarted.next_scan_number == stop  # priming uses up no scan number
    for t in range(stop, T):
        got = restarted.update(t * 5 * SEC, SYMS, frozen_array(px[t]))
        want = ref[t]
        assert got.scan_number == want.scan_number
        np.testing.assert_allclose(got.lambda_max, want.lambda_max, rtol=1e-9)
        np.testing.assert_allclose(got.velocity, want.velocity, rtol=1e-6, atol=1e-12)
        assert math.isfinite(got.vel_div)
    # ... and a cold one is not (the test can fail): no vel_div for 750 bars
    cold = EigenScanner()
    assert not math.isfinite(cold.update(0, SYMS, frozen_array(px[stop])).vel_div)


class _Recorder:
    def __init__(self) -> None:
        self.scanner = EigenScanner()
        self.primed: list[int] = []
        self.counts: dict[str, int] = {}

    def prime(self, ts: int, syms: tuple[str, ...], closes: np.ndarray, interval_s: float) -> Any:
        self.primed.append(ts)
        return self.scanner.prime(ts, syms, closes)

    def count(self, source: str, n: int) -> None:
        self.counts[source] = self.counts.get(source, 0) + n


def _first_bar(t: int, px: np.ndarray) -> Bar:
    return Bar(t * 5 * SEC, SYMS, frozen_array(px[t]), 5.0, 0)


async def test_a_short_gap_is_filled_and_counted() -> None:
    px = market(1000)
    ck = history_of(recent_of(px, 800).take())
    rec = _Recorder()
    filled: list[tuple[int, int]] = []

    async def fill(symbols: tuple[str, ...], start_ns: int, n: int, interval_ns: int,
                   prev: np.ndarray) -> tuple[np.ndarray, int, int, list[str]]:
        filled.append((start_ns, n))
        return px[800:800 + n], n * len(symbols) - 3, 3, []

    ws = WarmStart(ck, None, max_gap_s=600, backfill_bars=0, fill=fill, prime=rec.prime,
                   count=rec.count)
    await ws.restore(_first_bar(810, px))  # bars 800..809 are the gap
    assert ws.state == "warm" and ws.reason is None
    assert filled == [(800 * 5 * SEC, 10)]
    assert rec.primed[-1] == 809 * 5 * SEC and len(rec.primed) == NEED + 10
    assert rec.counts == {"checkpoint": NEED, "rest": 10 * len(SYMS) - 3, "carried": 3}
    assert ws.status()["gap_bars"] == 10
    # the windows are warm at once: the next bar has a vel_div
    assert math.isfinite(rec.scanner.update(810 * 5 * SEC, SYMS, frozen_array(px[810])).vel_div)


async def test_without_a_filler_the_gap_is_carried_forward() -> None:
    px = market(900)
    ck = history_of(recent_of(px, 800).take())
    rec = _Recorder()
    ws = WarmStart(ck, None, 600, 0, None, rec.prime, rec.count)
    await ws.restore(_first_bar(805, px))  # bars 800..804 missing
    assert ws.state == "warm"
    assert rec.counts["carried"] == 5 * len(SYMS) and rec.counts["rest"] == 0


@pytest.mark.parametrize("first, reason", [
    (800 + 200, "over warm_start.max_gap_s"),  # 200 bars x 5 s > 600 s
    (700, "market time would run backwards"),
])
async def test_a_gap_too_large_or_backwards_leaves_the_scan_cold(first: int, reason: str) -> None:
    px = market(1100)
    ck = history_of(recent_of(px, 800).take())
    rec = _Recorder()
    ws = WarmStart(ck, None, 600, 0, None, rec.prime, rec.count)
    await ws.restore(_first_bar(first, px))
    assert ws.state == "cold" and reason in (ws.reason or "")
    assert rec.primed == []


async def test_no_checkpoint_is_a_cold_first_start_unless_backfilled() -> None:
    px = market(900)
    rec = _Recorder()
    ws = WarmStart(None, None, 600, 0, None, rec.prime, rec.count)
    await ws.restore(_first_bar(10, px))
    assert ws.state == "cold" and ws.reason == "no checkpoint (first start)"

    async def fill(symbols: tuple[str, ...], start_ns: int, n: int, interval_ns: int,
                   prev: np.ndarray) -> tuple[np.ndarray, int, int, list[str]]:
        assert np.isnan(prev).all()  # nothing known before the backfill
        return px[:n], n * len(symbols), 0, []

    rec = _Recorder()
    ws = WarmStart(None, None, 600, NEED, fill, rec.prime, rec.count)
    await ws.restore(_first_bar(NEED, px))
    assert ws.state == "warm" and ws.detail["source"] == "backfill"
    assert rec.counts["rest"] == NEED * len(SYMS)


def test_tracker_reports_progress_and_an_eta_from_the_pace() -> None:
    now = [0.0]
    tr = WarmupTracker(WINDOWS, monotonic=lambda: now[0])
    assert tr.status()["reason"] == "no bar yet" and tr.bars_to_go() == NEED + 1
    for k in range(10):
        now[0] = 5.0 * k
        tr.observe([(min(k, w), w) for w in WINDOWS], all_warm=False)
    st = tr.status()
    assert not st["can_trade"] and st["windows"][0] == {"window": 50, "returns": 9,
                                                        "needed": 50, "warm": False}
    assert st["bars_to_first_entry"] == 750 - 9 + 1
    assert st["first_entry_eta_s"] == pytest.approx(5.0 * (750 - 9 + 1))
    tr.observe([(w, w) for w in WINDOWS], all_warm=True)
    assert tr.status()["can_trade"] and tr.eta_s() == 0.0


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()  # outside the loop: registering the process collector reads /proc


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[ArrowScanSink]:
    s = ArrowScanSink(tmp_path / "scans")
    yield s
    s.close()


async def test_a_restore_that_breaks_leaves_the_stage_scanning_cold(
        metrics: Metrics, sink: ArrowScanSink) -> None:
    """History must never stop a start: the stage logs it, says why and scans on, cold."""
    px = market(900)
    ck = history_of(recent_of(px, 800).take())

    async def broken(*_: Any) -> Any:
        raise RuntimeError("REST answered nonsense")

    health = Health(metrics, lambda: 5.0)
    health.register("scan")
    bars: Channel[Bar] = Channel("bars", 10, Overflow.BLOCK)
    out: Channel[ScanRecord] = Channel("scans", 10, Overflow.BLOCK)
    stage: ScanStage
    ws = WarmStart(ck, None, 600, 0, broken, lambda *b: stage.prime(*b), lambda s, n: None)
    stage = ScanStage(bars, out, EigenScanner(start_scan_number=7), sink, MemoryStateBus(),
                      health, metrics, lambda *a: None, warm_start=ws)
    await bars.put(_first_bar(810, px))  # a gap: the broken filler is called
    bars.close()
    await stage.run()
    rec = await out.get()
    assert ws.state == "cold" and "REST answered nonsense" in (ws.reason or "")
    assert rec.scan_number == 7 and not math.isfinite(rec.vel_div)  # cold, numbering intact
    assert not stage.strategy_status()["can_trade"]
