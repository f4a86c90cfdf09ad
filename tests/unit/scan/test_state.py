"""Rolling state: no drift over many bars; restart continuity and crash safety of the Arrow files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dolphind.events import WINDOWS
from dolphind.scan import kernels as K
from dolphind.scan.arrow_sink import (
    SCHEMA_VERSION, SCHEMA_VERSION_KEY, ArrowScanSink, last_scan_number, path_for_day, read_scans,
)
from dolphind.scan.offline import scan_history
from dolphind.scan.scanner import DEFAULT_ETA, EigenScanner

DAY_NS = 86_400 * 10**9


def regime_prices(rng: np.random.Generator, T: int, n: int) -> np.ndarray:
    """One-factor returns whose loading and volatility switch regime, with rare large jumps."""
    load = np.where(np.arange(T)[:, None] < T // 2, 0.3, 1.2)
    vol = np.where((np.arange(T) // 1500) % 2 == 0, 1.0, 20.0)[:, None]
    r = 0.001 * vol * (load * rng.standard_normal((T, 1)) + rng.standard_normal((T, n)))
    jumps = rng.random((T, n)) < 2e-4
    r[jumps] += 0.2 * rng.standard_normal(jumps.sum())  # spikes that later leave the window
    return 100.0 * np.exp(np.cumsum(r, axis=0))


@pytest.mark.parametrize("eta", [math.inf, DEFAULT_ETA])
def test_rolling_state_does_not_drift(eta: float) -> None:
    """20,000 bars of sliding updates (eta=inf: never re-anchored) stay at rounding level."""
    rng = np.random.default_rng(99)
    T, n = 20_000, 8
    px = regime_prices(rng, T, n)
    r = np.log(px[1:] / px[:-1])
    sc = EigenScanner(modes=(K.MODE_COV,) * 4, eta=eta)
    syms = tuple(f"S{i}" for i in range(n))
    worst = np.zeros(4)
    for t in range(T):
        rec = sc.update(t, syms, px[t])
        if t % 997 == 0 and t > WINDOWS[3]:
            for j, w in enumerate(WINDOWS):
                _, c = sc.correlation_matrix(j)
                ref = np.corrcoef(r[t - w : t].T)
                worst[j] = max(worst[j], np.max(np.abs(c - ref)))
                lam = np.linalg.eigvalsh(ref)[-1]
                assert abs(rec.lambda_max[j] - lam) <= 1e-9 * lam
    assert np.all(worst < 1e-11), worst
    joins = 4 * n  # every symbol's row is built from the raw window once, when it joins
    if math.isinf(eta):
        assert sc.counters.rows_anchored_total == joins
    else:
        assert sc.counters.rows_anchored_total > joins


def test_reanchor_restores_exactness_after_cancellation() -> None:
    """A huge return leaving the window makes S_ii collapse; the error bound forces a re-anchor."""
    rng = np.random.default_rng(4)
    T, n = 400, 5
    r = 1e-4 * rng.standard_normal((T, n))
    r[100, 0] = 0.5  # 5000 sigma spike in symbol 0
    px = 100.0 * np.exp(np.cumsum(r, axis=0))
    rr = np.log(px[1:] / px[:-1])
    sc = EigenScanner(windows=(50, 60, 70, 80), modes=(K.MODE_COV,) * 4)
    syms = tuple("ABCDE")
    for t in range(T):
        sc.update(t, syms, px[t])
        if t > 200:
            _, c = sc.correlation_matrix(0)
            assert np.max(np.abs(c - np.corrcoef(rr[t - 50 : t].T))) < 1e-12
    assert sc.counters.rows_anchored_total > 4 * n


def nan_equal(a: object, b: object) -> bool:
    return bool(np.array_equal(np.asarray(a, float), np.asarray(b, float), equal_nan=True))


def test_restart_continuity_and_readback(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    T, n = 900, 6
    px = regime_prices(rng, T, n)
    px[300:310, 2] = np.nan
    ts = 1_700_000_000 * 10**9 + np.arange(T, dtype=np.int64) * 300 * 10**9  # 5m bars, spans days
    syms = tuple(f"S{i}" for i in range(n))
    straight = EigenScanner(start_scan_number=100)
    expected = [straight.update(int(ts[t]), syms, px[t]) for t in range(T)]
    cut = 600
    sc = EigenScanner(start_scan_number=100)
    with ArrowScanSink(tmp_path, flush_every=7) as sink:
        for t in range(cut):
            sink.append(sc.update(int(ts[t]), syms, px[t]))
    assert last_scan_number(tmp_path) == 100 + cut - 1
    # restart: a fresh scanner resumes the numbering; its windows warm up again from the feed
    resumed = EigenScanner(start_scan_number=last_scan_number(tmp_path) + 1)  # type: ignore[operator]
    with ArrowScanSink(tmp_path, flush_every=7) as sink:
        for t in range(cut, T):
            sink.append(resumed.update(int(ts[t]), syms, px[t]))
    table = read_scans([tmp_path])
    assert table.schema.metadata[SCHEMA_VERSION_KEY.encode()] == SCHEMA_VERSION.encode()
    nums = table.column("scan_number").to_numpy()
    assert np.array_equal(nums, np.arange(100, 100 + T))
    files = sorted(tmp_path.glob("scans-*.arrow"))
    assert len(files) == len({f.name for f in files}) >= 4  # one per UTC day
    for k, rec in enumerate(expected[:cut]):  # before the restart: identical to the straight run
        row = {c: table.column(c)[k].as_py() for c in table.column_names}
        assert row["timestamp_ns"] == rec.ts_ns and row["n_symbols"] == rec.n_symbols
        for j, w in enumerate(WINDOWS):
            assert nan_equal(row[f"w{w}_lambda_max"], rec.lambda_max[j])
            assert nan_equal(row[f"w{w}_velocity"], rec.velocity[j])
            assert nan_equal(row[f"w{w}_instability"], rec.instability[j])
        for c in ("vel_div", "regime_signal", "instability_composite"):
            assert nan_equal(row[c], getattr(rec, c))
        assert row["symbols"] == list(rec.symbols) and nan_equal(row["prices"], rec.prices)


def test_torn_file_keeps_complete_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    px = regime_prices(rng, 40, 3)
    sc = EigenScanner(windows=(3, 4, 5, 6))
    sink = ArrowScanSink(tmp_path, flush_every=1)
    for t in range(40):
        sink.append(sc.update(t, ("A", "B", "C"), px[t]))
    sink.flush()  # simulate a crash: no close(), no end-of-stream marker
    path = path_for_day(tmp_path, "1970-01-01")
    data = path.read_bytes()
    path.write_bytes(data[:-37])  # torn last batch
    table = read_scans([path])
    assert table.num_rows == 39
    assert last_scan_number(tmp_path) == 38
    # reopening the same day repairs the file and appends after the intact rows
    sc2 = EigenScanner(start_scan_number=39, windows=(3, 4, 5, 6))
    with ArrowScanSink(tmp_path) as sink2:
        sink2.append(sc2.update(40, ("A", "B", "C"), px[-1]))
    with pa.OSFile(str(path)) as f:
        assert pa.ipc.open_stream(f).read_all().column("scan_number").to_pylist() == list(range(40))
    sink._close_file()


def test_scan_history_writes_and_resumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    T, n = 800, 4
    px = regime_prices(rng, T, n)
    ts = np.arange(T, dtype=np.int64) * 60 * 10**9 + 3 * DAY_NS
    syms = ("A", "B", "C", "D")
    assert scan_history(ts, syms, px, tmp_path) == T
    assert scan_history(ts + DAY_NS, syms, px, tmp_path) == T
    table = read_scans([tmp_path])
    assert np.array_equal(table.column("scan_number").to_numpy(), np.arange(2 * T))
    vd = table.column("vel_div").to_numpy()
    assert np.isfinite(vd[751:T]).all() and np.isnan(vd[:751]).all()


def test_last_scan_number_is_the_maximum_over_every_day_file(tmp_path: Path) -> None:
    """A looping replay goes back in market time: later (higher) scan numbers land in an
    earlier day's file. The next start must continue after the highest, not the newest file's."""
    rng = np.random.default_rng(3)
    px = regime_prices(rng, 20, 3)
    day = 86_400 * 10**9
    sc = EigenScanner(windows=(3, 4, 5, 6))
    with ArrowScanSink(tmp_path) as sink:
        for t in range(10):  # pass 1: day 0 then day 1 (scans 0-9)
            sink.append(sc.update(t * day // 5, ("A", "B", "C"), px[t]))
        for t in range(10):  # pass 2 (the loop): day 0 again, scans 10-13 only
            if t < 4:
                sink.append(sc.update(t * 1000 + 1, ("A", "B", "C"), px[t]))
    files = sorted(tmp_path.glob("scans-*.arrow"))
    assert len(files) == 2
    newest = read_scans([files[-1]]).column("scan_number").to_numpy()
    assert newest.max() < 13  # the newest day's file does not hold the highest number
    assert last_scan_number(tmp_path) == 13
