from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pytest

from dolphind.feed.history import HistoryError, classify, iter_bars, load_history

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
MIN = 60_000_000_000
T0 = 1_746_835_200 * 10**9  # 2025-05-10 00:00 UTC: real-looking times (pre-2009 is refused)


def test_classify_freqtrade_names() -> None:
    assert classify(Path("ADA_USDT_USDT-1m-futures.feather")) == ("candles", "ADAUSDT")
    assert classify(Path("ADA_USDT_USDT-8h-funding_rate.feather")) == ("funding", "ADAUSDT")
    assert classify(Path("ADA_USDT_USDT-8h-mark.feather")) == ("skip", "ADAUSDT")
    assert classify(Path("BTC_USDT-5m.feather")) == ("candles", "BTCUSDT")
    assert classify(Path("ETHUSDT.csv")) == ("candles", "ETHUSDT")
    assert classify(Path("BTCUSDT-1m-2024-01.parquet")) == ("candles", "BTCUSDT")


def test_bundled_sample_loads_with_real_values() -> None:
    h = load_history([SAMPLE])
    assert h.symbols == tuple(sorted(h.symbols)) and len(h.symbols) == 12
    assert h.interval_s == 60.0
    assert len(h) == 4320
    assert not np.isnan(h.closes).any()
    # Hand-checked against the raw feather: BTC 1m candle opening 2025-05-10 00:00 UTC.
    raw = feather.read_table(SAMPLE / "BTC_USDT_USDT-1m-futures.feather")
    btc = h.symbols.index("BTCUSDT")
    assert h.ts_ns[0] == raw.column("date")[0].value
    assert h.closes[0, btc] == raw.column("close")[0].as_py()
    assert h.closes[-1, btc] == raw.column("close")[-1].as_py()
    assert set(h.funding) == set(h.symbols)
    assert not any("mark" in n for n in h.notes)  # the sample has no mark files


def _write(path: Path, ts_min: list[int], closes: list[float], **extra: list[object]) -> None:
    table = pa.table({"date": pa.array([T0 + t * MIN for t in ts_min], pa.timestamp("ns", tz="UTC")),
                      "close": pa.array(closes, pa.float64()), **extra})
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        feather.write_feather(table, path)


def test_alignment_gaps_and_late_starters(tmp_path: Path) -> None:
    _write(tmp_path / "AAA_USDT_USDT-1m-futures.feather", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
           [1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    # BBB starts late and has a 4-bar hole (bars 4..7 missing).
    _write(tmp_path / "BBB_USDT_USDT-1m-futures.feather", [2, 3, 8, 9], [20.0, 30, 80, 90])
    h = load_history([tmp_path], max_stale_bars=2)
    a, b = h.closes[:, 0], h.closes[:, 1]
    assert h.symbols == ("AAAUSDT", "BBBUSDT")
    np.testing.assert_array_equal(a, np.arange(1.0, 11.0))
    # Absent before the first candle; carried forward for at most 2 bars; absent after that.
    np.testing.assert_array_equal(b, [np.nan, np.nan, 20, 30, 30, 30, np.nan, np.nan, 80, 90])
    assert any("start at 2 different times" in n for n in h.notes)


def test_duplicates_unsorted_and_bad_rows_are_repaired_and_reported(tmp_path: Path) -> None:
    _write(tmp_path / "CCCUSDT.feather", [3, 1, 2, 2, 4, 5], [3.0, 1.0, 2.0, 2.5, -1.0, np.nan])
    h = load_history([tmp_path])
    np.testing.assert_array_equal(h.closes[:, 0], [1.0, 2.5, 3.0])
    notes = " | ".join(h.notes)
    assert "not in time order" in notes
    assert "1 duplicated timestamps" in notes
    assert "2 rows with a missing or non-positive value dropped" in notes


def test_symbol_column_in_one_csv(tmp_path: Path) -> None:
    _write(tmp_path / "mixed.csv", [0, 0, 1, 1], [1.0, 10.0, 2.0, 20.0],
           symbol=["BTC/USDT:USDT", "ETHUSDT", "BTC/USDT:USDT", "ETHUSDT"])
    h = load_history([tmp_path / "mixed.csv"])
    assert h.symbols == ("BTCUSDT", "ETHUSDT")
    np.testing.assert_array_equal(h.closes, [[1.0, 10.0], [2.0, 20.0]])


def test_unusable_input_gives_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no such file or folder"):
        load_history([tmp_path / "nope"])
    with pytest.raises(HistoryError, match="no data files"):
        load_history([tmp_path])
    (tmp_path / "BTCUSDT.feather").write_bytes(b"not arrow")
    with pytest.raises(HistoryError, match="BTCUSDT.feather: cannot read"):
        load_history([tmp_path])
    (tmp_path / "BTCUSDT.feather").unlink()
    feather.write_feather(pa.table({"close": [1.0, 2.0]}), tmp_path / "ETHUSDT.feather")
    with pytest.raises(HistoryError, match="ETHUSDT.feather: no time column"):
        load_history([tmp_path])
    feather.write_feather(pa.table({"date": [T0, T0 + MIN], "px": [1.0, 2.0]}),
                          tmp_path / "ETHUSDT.feather")
    with pytest.raises(HistoryError, match="no 'close' column"):
        load_history([tmp_path])
    feather.write_feather(pa.table({"date": [T0], "close": [1.0]}), tmp_path / "ETHUSDT.feather")
    with pytest.raises(HistoryError, match="cannot tell the bar interval"):
        load_history([tmp_path])


def test_integer_epochs_in_seconds_or_ms(tmp_path: Path) -> None:
    base_s = 1_700_000_040  # on the minute grid
    feather.write_feather(pa.table({"timestamp": [base_s, base_s + 60], "close": [1.0, 2.0]}),
                          tmp_path / "AAAUSDT.feather")
    feather.write_feather(pa.table({"timestamp": [base_s * 1000, (base_s + 60) * 1000],
                                    "close": [3.0, 4.0]}), tmp_path / "BBBUSDT.feather")
    h = load_history([tmp_path])
    assert h.ts_ns[0] == base_s * 10**9
    np.testing.assert_array_equal(h.closes, [[1.0, 3.0], [2.0, 4.0]])


def test_bars_are_read_only_and_sequenced() -> None:
    h = load_history([SAMPLE])
    bars = list(iter_bars(h, 10, 13, first_seq=5))
    assert [b.seq for b in bars] == [5, 6, 7]
    assert bars[0].symbols is bars[1].symbols
    with pytest.raises(ValueError):
        bars[0].closes[0] = 1.0
