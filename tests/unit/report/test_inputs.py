"""Malformed backtest inputs give clear messages (issue 9): what was dropped or aligned, or a
HistoryError that names the file and the reason; never a crash or a silent wrong answer.

The loader is dolphind/feed/history.py. The second half of this file holds the cases a review
found it missing (gaps, holes, off-grid anchors, coarse symbols, header-only CSVs, missing
epochs, symbols that end early); each now has its fix.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from dolphind.feed.history import History, HistoryError, load_history
from tests.data_paths import SET_1M, SET_5M

S = 1_000_000_000
MIN = 60 * S
T0 = 1_746_835_200 * S  # 2025-05-10 00:00 UTC


def feather_file(path: Path, minutes: Sequence[float], closes: Sequence[float],
                 offset_ns: int = 0) -> Path:
    ts = [T0 + int(m * MIN) + offset_ns for m in minutes]
    feather.write_feather(pa.table({"date": pa.array(ts, pa.timestamp("ns", tz="UTC")),
                                    "close": pa.array(closes, pa.float64())}), path)
    return path


def load(*paths: Path, **kw: int) -> History:
    # Warnings are errors here whatever the pytest config: a numpy cast warning is how a
    # silently wrong timestamp shows up.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_history(list(paths), **kw)


def notes(h: History) -> str:
    return " | ".join(h.notes)


# --- repaired, and said so ----------------------------------------------------------------

def test_duplicated_rows_keep_the_last_and_say_so(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", [0, 1, 1, 2, 2, 2], [1.0, 2.0, 2.5, 3.0, 3.1, 3.2])
    h = load(tmp_path)
    np.testing.assert_array_equal(h.closes[:, 0], [1.0, 2.5, 3.2])
    assert "AAAUSDT.feather: 3 duplicated timestamps; kept the last row of each" in h.notes


def test_duplicated_rows_in_a_multi_symbol_csv_name_the_symbol(tmp_path: Path) -> None:
    (tmp_path / "universe.csv").write_text(
        "date,symbol,close\n"
        "2025-05-10 00:00:00,AAAUSDT,1.0\n2025-05-10 00:00:00,AAAUSDT,1.5\n"
        "2025-05-10 00:01:00,AAAUSDT,2.0\n2025-05-10 00:00:00,BBBUSDT,10\n"
        "2025-05-10 00:01:00,BBBUSDT,20\n")
    h = load(tmp_path)
    np.testing.assert_array_equal(h.closes, [[1.5, 10.0], [2.0, 20.0]])
    assert h.notes == ("universe.csv[AAAUSDT]: 1 duplicated timestamps; kept the last row of each",)


def test_non_monotonic_timestamps_are_sorted_and_said(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", [2, 0, 3, 1], [3.0, 1.0, 4.0, 2.0])
    h = load(tmp_path)
    np.testing.assert_array_equal(h.closes[:, 0], [1.0, 2.0, 3.0, 4.0])
    assert h.ts_ns[0] == T0 and np.all(np.diff(h.ts_ns) == MIN)
    assert h.notes == ("AAAUSDT.feather: rows were not in time order; sorted",)


def test_overlapping_files_of_one_symbol_are_merged_and_said(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT-1m-a.feather", list(range(10)), [1.0] * 10)
    feather_file(tmp_path / "AAAUSDT-1m-b.feather", list(range(5, 15)), [2.0] * 10)
    h = load(tmp_path)
    np.testing.assert_array_equal(h.closes[:, 0], [1.0] * 5 + [2.0] * 10)
    assert "AAAUSDT: 2 files merged" in h.notes
    assert "AAAUSDT: 5 duplicated timestamps; kept the last row of each" in h.notes


def test_unaligned_start_times_are_aligned_and_said(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", list(range(10)), [float(k) + 1 for k in range(10)])
    # BBB starts 2.5 minutes later and sits 30 s off the minute grid.
    feather_file(tmp_path / "BBBUSDT.feather", list(range(2, 10)), [100.0 + k for k in range(8)],
                 offset_ns=30 * S)
    h = load(tmp_path)
    assert np.all((h.ts_ns - T0) % MIN == 0)
    b = h.closes[:, 1]
    assert np.isnan(b[:2]).all() and b[2] == 100.0  # absent until its first candle
    text = notes(h)
    assert "symbols start at 2 different times; each is absent until its first candle" in text
    assert "BBBUSDT: 8 rows not on the 60s grid; aligned to the bar that contains them" in text


def test_different_symbol_sets_in_two_folders(tmp_path: Path) -> None:
    (tmp_path / "may").mkdir()
    (tmp_path / "june").mkdir()
    feather_file(tmp_path / "may" / "AAAUSDT.feather", list(range(10)), [1.0] * 10)
    feather_file(tmp_path / "may" / "BBBUSDT.feather", list(range(10)), [2.0] * 10)
    feather_file(tmp_path / "june" / "BBBUSDT.feather", list(range(10, 20)), [2.5] * 10)
    feather_file(tmp_path / "june" / "CCCUSDT.feather", list(range(10, 20)), [3.0] * 10)
    h = load(tmp_path / "may", tmp_path / "june")
    assert h.symbols == ("AAAUSDT", "BBBUSDT", "CCCUSDT") and len(h) == 20
    a, b, c = h.closes.T
    assert not np.isnan(b).any()
    assert np.isnan(c[:10]).all() and not np.isnan(c[10:]).any()
    assert not np.isnan(a[:10]).any() and np.isnan(a[10:]).all()  # absent after its last
    assert "BBBUSDT: 2 files merged" in h.notes
    assert "symbols start at 2 different times" in notes(h)


def test_symbols_with_different_intervals_use_the_finest(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", list(range(30)), [1.0] * 30)
    feather_file(tmp_path / "BBBUSDT.feather", [0, 5, 10, 15, 20, 25], [2.0] * 6)
    h = load(tmp_path)
    assert h.interval_s == 60.0
    assert not np.isnan(h.closes[:26, 1]).any()  # 5m prices carried over their 5 minutes
    assert "symbols have different intervals" in notes(h)


def _csv_minutes(path: Path, values: list[str]) -> Path:
    path.write_text("date,close\n" + "".join(f"2025-05-10 00:{m:02d}:00,{v}\n"
                                             for m, v in enumerate(values)))
    return path


def test_missing_nan_and_non_positive_closes_are_dropped_and_said(tmp_path: Path) -> None:
    good = [f"{1 + k / 10:.1f}" for k in range(20)]
    bad = good[:]
    bad[3], bad[4], bad[9], bad[15] = "", "NaN", "-1", "0"
    _csv_minutes(tmp_path / "AAAUSDT.csv", bad)
    h = load(tmp_path)
    assert "AAAUSDT.csv: 4 rows with a missing or non-positive value dropped" in h.notes
    assert h.interval_s == 60.0
    # The dropped minutes carry the last good price: nothing is invented.
    want = [float(v) for v in good]
    want[3] = want[4] = want[2]
    want[9], want[15] = want[8], want[14]
    np.testing.assert_array_equal(h.closes[:, 0], want)


def test_a_file_with_no_rows_is_left_out_and_said(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", [], [])
    feather_file(tmp_path / "BBBUSDT.feather", list(range(5)), [1.0] * 5)
    h = load(tmp_path)
    assert h.symbols == ("BBBUSDT",)
    assert "AAAUSDT: no usable rows; left out" in h.notes


# --- refused, with the file and the reason ------------------------------------------------

def _truncated_feather(d: Path) -> Path:
    p = feather_file(d / "AAAUSDT.feather", list(range(100)), [1.0] * 100)
    p.write_bytes(p.read_bytes()[:400])
    return p


def _corrupt_parquet(d: Path) -> Path:
    p = d / "AAAUSDT.parquet"
    pq.write_table(pa.table({"date": pa.array([T0 + k * MIN for k in range(100)],
                                              pa.timestamp("ns")), "close": [1.0] * 100}), p)
    data = bytearray(p.read_bytes())
    data[100:200] = bytes(100)
    p.write_bytes(bytes(data))
    return p


def _binary_csv(d: Path) -> Path:
    p = d / "AAAUSDT.csv"
    p.write_bytes(bytes(range(256)) * 4)
    return p


def _empty_csv(d: Path) -> Path:
    p = d / "AAAUSDT.csv"
    p.write_bytes(b"")
    return p


def _empty_feather(d: Path) -> Path:
    p = d / "AAAUSDT.feather"
    p.write_bytes(b"")
    return p


@pytest.mark.parametrize("make, reason", [
    (_truncated_feather, "Not an Arrow file"),
    (_corrupt_parquet, ""),
    (_binary_csv, "CSV parse error"),
    (_empty_csv, "Empty CSV file"),
    (_empty_feather, "too small"),
], ids=["truncated-feather", "corrupt-parquet", "binary-csv", "empty-csv", "empty-feather"])
def test_corrupt_and_empty_files_are_refused_by_name(tmp_path: Path, make: object,
                                                     reason: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    feather_file(tmp_path / "BBBUSDT.feather", list(range(5)), [1.0] * 5)
    with pytest.raises(HistoryError) as err:
        load(tmp_path)
    assert str(err.value).startswith(f"{path}: cannot read (")
    assert reason in str(err.value)


def test_a_non_numeric_close_is_refused_naming_the_value(tmp_path: Path) -> None:
    (tmp_path / "AAAUSDT.csv").write_text(
        "date,close\n2025-05-10 00:00:00,1.0\n2025-05-10 00:01:00,abc\n2025-05-10 00:02:00,1.2\n")
    with pytest.raises(HistoryError, match=r"AAAUSDT\.csv: column 'close' is not numeric "
                                           r"\(Failed to parse string: 'abc'"):
        load(tmp_path)


def test_an_unparseable_time_is_refused_naming_the_value(tmp_path: Path) -> None:
    (tmp_path / "AAAUSDT.csv").write_text(
        "date,close\n2025-05-10 00:00:00,1.0\nnot-a-date,1.1\n2025-05-10 00:02:00,1.2\n")
    with pytest.raises(HistoryError, match=r"AAAUSDT\.csv: column 'date' is not a time "
                                           r"\(.*'not-a-date'"):
        load(tmp_path)


# --- cases found missing by review and fixed in history.py -----------------------------------

def test_gaps_are_reported(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", list(range(30)), [1.0] * 30)
    kept = [m for m in range(30) if not 10 <= m < 25]  # a 15-bar hole
    feather_file(tmp_path / "BBBUSDT.feather", kept, [2.0] * len(kept))
    h = load(tmp_path, max_stale_bars=12)
    assert np.isnan(h.closes[:, 1]).sum() == 3  # 12 carried, 3 absent: right, but unsaid
    assert any("BBBUSDT" in n and "gap" in n for n in h.notes), h.notes


def test_a_hole_in_all_the_data_is_reported(tmp_path: Path) -> None:
    # One row 30 days after the rest, as a bad clock or a mis-scaled epoch would produce.
    feather_file(tmp_path / "AAAUSDT.feather", [*range(10), 30 * 1440], [1.0] * 11)
    try:
        h = load(tmp_path)
    except HistoryError as exc:  # refusing, with the reason, is a fix too
        assert "AAAUSDT" in str(exc)
        return
    assert len(h) == 30 * 1440 + 1  # 43,201 bars for 11 rows
    assert any("no data" in n or "gap" in n for n in h.notes), h.notes


def test_an_off_grid_symbol_does_not_move_the_grid(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", list(range(10)), [float(k) for k in range(1, 11)])
    feather_file(tmp_path / "BBBUSDT.feather", list(range(10)), [100.0] * 10, offset_ns=-30 * S)
    h = load(tmp_path)
    assert np.all((h.ts_ns - T0) % MIN == 0), (h.ts_ns[:2] - T0) / S


def test_a_coarser_symbol_is_not_silently_absent(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", list(range(180)), [1.0] * 180)
    feather_file(tmp_path / "BBBUSDT.feather", [0, 60, 120], [5.0] * 3)
    h = load(tmp_path)
    absent = int(np.isnan(h.closes[:121, 1]).sum())
    assert absent == 0 or any("absent" in n and "BBBUSDT" in n for n in h.notes), (absent,
                                                                                  h.notes)


def test_a_header_only_csv_is_left_out_like_an_empty_table(tmp_path: Path) -> None:
    (tmp_path / "AAAUSDT.csv").write_text("date,open,high,low,close,volume\n")
    feather_file(tmp_path / "BBBUSDT.feather", list(range(5)), [1.0] * 5)
    h = load(tmp_path)
    assert h.symbols == ("BBBUSDT",) and "AAAUSDT: no usable rows; left out" in h.notes


def test_a_missing_epoch_time_is_dropped_not_cast(tmp_path: Path) -> None:
    (tmp_path / "AAAUSDT.csv").write_text(
        "timestamp,close\n1746835200000,1.0\n,1.1\n1746835320000,1.2\n")
    try:
        h = load(tmp_path)  # warnings are errors here: this stops before the huge allocation
    except HistoryError as exc:  # refusing, naming the file, is a fix too
        assert "AAAUSDT.csv" in str(exc)
        return
    # Two valid rows 2 minutes apart: a 2- or 3-bar axis, never millions of bars.
    assert len(h) <= 3 and any("time" in n for n in h.notes)


def test_dropped_rows_do_not_change_the_bar_interval(tmp_path: Path) -> None:
    _csv_minutes(tmp_path / "AAAUSDT.csv", ["1.0", "", "1.2", "NaN", "-1", "0", "1.6", "1.7"])
    h = load(tmp_path)
    assert h.interval_s == 60.0 and len(h) == 8, (h.interval_s, h.closes[:, 0])


def test_symbols_that_end_early_are_reported(tmp_path: Path) -> None:
    feather_file(tmp_path / "AAAUSDT.feather", list(range(100)), [1.0] * 100)
    feather_file(tmp_path / "BBBUSDT.feather", list(range(50)), [2.0] * 50)
    h = load(tmp_path)
    assert np.isnan(h.closes[63:, 1]).all()
    assert any("end" in n for n in h.notes), h.notes


def test_real_5m_set_reports_its_short_universe_tail() -> None:
    folder = SET_5M
    h = load(folder)
    present = (~np.isnan(h.closes)).sum(axis=1)
    assert present.max() == 40 and present[-1] < 40  # the tail trades a smaller universe
    assert any("end at 2 different times" in n for n in h.notes), h.notes
    # The common span stated in the data's PROVENANCE.md (all 40: 2023-07-18 11:15 -> 08-03 12:25).
    assert "every symbol has a price from 2023-07-18T11:15:00Z to 2023-08-03T12:25:00Z" in notes(h)


def test_real_1m_set_reports_its_short_universe_tail() -> None:
    folder = SET_1M
    h = load(folder)
    present = (~np.isnan(h.closes)).sum(axis=1)
    assert len(h) == 60191 and (present[50564:] == 1).all()
    assert any("end" in n for n in h.notes), h.notes
