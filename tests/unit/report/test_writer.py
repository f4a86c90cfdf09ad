"""The report files: byte-identical summary.json and trades.csv, valid PNGs with real content,
and a report.html that shows them by relative path."""

from __future__ import annotations

import csv
import json
import math
import random
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from dolphind.report import jsonfmt
from dolphind.report.model import ClosedTrade, EquityPoint, SignalSeries
from dolphind.report.writer import (
    TRADE_COLUMNS, ReportFiles, format_float, iso_utc, trades_csv_text, write_report)

from .conftest import CAPITAL, DAY0, trade

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _signal(n: int = 3 * 24 * 60) -> SignalSeries:
    rng = np.random.default_rng(7)
    ts = DAY0 + np.arange(n, dtype=np.int64) * 60 * 10**9
    vd = rng.normal(0.0, 0.02, n)
    vd[:100] = np.nan  # the cold scan at the start
    return SignalSeries(ts, vd, thresholds=(-0.02,))


def _write(out: Path, trades: list[ClosedTrade], equity: list[EquityPoint]) -> ReportFiles:
    return write_report(out, trades, equity, initial_capital_usdt=CAPITAL, signal=_signal(),
                        run={"config_sha": "abc123", "seed": 42, "data": ["BTCUSDT.feather"]})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    """One full report over three days of minute equity (drawn once for the module)."""
    rng = np.random.default_rng(3)
    n = 3 * 24 * 60
    eq = CAPITAL + np.cumsum(rng.normal(0.0, 0.5, n))
    equity = [EquityPoint(DAY0 + k * 60 * 10**9, float(eq[k]), 100.0 if k % 7 < 3 else 0.0)
              for k in range(n)]
    trades = [trade(f"t{k}", 2 + 1.5 * k, 1800, float(rng.normal(0.5, 3.0)), 0.08,
                    ("tp", "max_hold", "stop")[k % 3], 30, "SHORT" if k % 4 else "LONG")
              for k in range(40)]
    return _write(tmp_path_factory.mktemp("report"), trades, equity)


def test_two_runs_write_identical_summary_and_trades(tmp_path: Path,
                                                     hand_trades: list[ClosedTrade],
                                                     hand_equity: list[EquityPoint]) -> None:
    a = _write(tmp_path / "a", hand_trades, hand_equity)
    shuffled = hand_trades[:]
    random.Random(1).shuffle(shuffled)  # the order trades arrive in must not matter
    b = _write(tmp_path / "b", shuffled, hand_equity[::-1])
    for name in ("summary.json", "trades.csv", "report.html"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name


def test_summary_json_is_strict_sorted_and_rounded(tmp_path: Path,
                                                   hand_trades: list[ClosedTrade],
                                                   hand_equity: list[EquityPoint]) -> None:
    files = _write(tmp_path, hand_trades, hand_equity)
    text = files.summary_json.read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert list(doc) == sorted(doc)
    assert text == json.dumps(doc, sort_keys=True, indent=2) + "\n"
    assert doc["schema"] == "dolphind-backtest-summary/1"
    assert doc["run"] == {"config_sha": "abc123", "data": ["BTCUSDT.feather"], "seed": 42}
    assert doc["conventions"]["periods_per_year"] == 365
    assert doc["realised_max_drawdown"] == round(15 / 1040, 10)
    assert doc["max_drawdown"] == round(30 / 1020, 10)
    assert doc["per_day"]["2025-05-11"] == {"end_equity_usdt": 990.0,
                                            "equity_change_usdt": -30.0,
                                            "realised_pnl_usdt": 5.0, "trades": 2}
    for key in ("roi", "net_pnl_usdt", "profit_factor", "win_rate", "sharpe", "sortino",
                "max_drawdown", "trades", "avg_hold_s", "fees_paid_usdt", "exposure_time",
                "per_day", "pnl_by_exit_reason"):
        assert key in doc


def test_json_rounding_rules() -> None:
    assert jsonfmt.to_jsonable(
        {"b": -0.0, "a": 0.1 + 0.2, "n": math.nan, "i": -math.inf, "k": np.int64(3),
         "f": np.float32(0.5), "t": (1, 2.0)}) == \
        {"b": 0.0, "a": 0.3, "n": None, "i": "-inf", "k": 3, "f": 0.5, "t": [1, 2.0]}
    assert jsonfmt.dumps({"z": 1, "a": -1e-12}) == '{\n  "a": 0.0,\n  "z": 1\n}\n'
    with pytest.raises(TypeError, match="cannot write set"):
        jsonfmt.to_jsonable({1, 2})


def test_trades_csv_columns_order_and_exact_floats(hand_trades: list[ClosedTrade]) -> None:
    text = trades_csv_text(hand_trades)
    assert "\r" not in text
    rows = list(csv.reader(text.splitlines()))
    assert tuple(rows[0]) == TRADE_COLUMNS
    assert [r[0] for r in rows[1:]] == ["t1", "t2", "t3", "t4"]  # exit order
    t1 = dict(zip(TRADE_COLUMNS, rows[1]))
    assert t1["entry_time_utc"] == "2025-05-10T01:00:00Z"
    assert t1["exit_time_utc"] == "2025-05-10T01:10:00Z"
    assert (t1["pnl_usdt"], t1["fees_usdt"], t1["bars_held"]) == ("30.0", "2.0", "10")
    odd = trade("x", 0, 1, 0.1 + 0.2, -0.0, "tp", 0)
    row = dict(zip(TRADE_COLUMNS, list(csv.reader(trades_csv_text([odd]).splitlines()))[1]))
    assert float(row["pnl_usdt"]) == 0.1 + 0.2  # exact round trip
    assert row["fees_usdt"] == "0.0"  # never "-0.0"
    assert trades_csv_text([]) == ",".join(TRADE_COLUMNS) + "\n"


def test_float_and_time_formats() -> None:
    assert [format_float(x) for x in (1.0, -0.0, 1e-7, 123456789.125, math.inf)] == \
        ["1.0", "0.0", "1e-07", "123456789.125", "inf"]
    assert iso_utc(DAY0) == "2025-05-10T00:00:00Z"
    assert iso_utc(DAY0 + 1) == "2025-05-10T00:00:00.000000001Z"


def _png_chunks(data: bytes) -> list[bytes]:
    chunks, pos = [], len(PNG_MAGIC)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos + 4:pos + 8] + data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return chunks


@pytest.mark.parametrize("name", ["equity_png", "drawdown_png", "vel_div_png",
                                  "exit_reasons_png"])
def test_pngs_are_valid_pictures_with_content(report: ReportFiles, name: str) -> None:
    path: Path = getattr(report, name)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    chunks = _png_chunks(data)
    assert chunks[0][:4] == b"IHDR" and chunks[-1][:4] == b"IEND"
    # Nothing that changes from run to run or version to version: no time, no Software.
    kinds = {c[:4] for c in chunks}
    assert b"tIME" not in kinds
    assert not any(c[:4] in (b"tEXt", b"iTXt", b"zTXt") and b"Software" in c for c in chunks)
    pixels = imread(path)
    assert pixels.shape[:2] == (400, 1000)
    assert float(pixels[..., :3].std()) > 0.05  # a picture, not a blank canvas
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20


def test_pngs_repeat_exactly_on_this_machine(tmp_path: Path, hand_trades: list[ClosedTrade],
                                            hand_equity: list[EquityPoint]) -> None:
    # Not promised across matplotlib/FreeType versions, but with no time or version chunks
    # the same drawing must give the same bytes here.
    a = _write(tmp_path / "a", hand_trades, hand_equity)
    b = _write(tmp_path / "b", hand_trades, hand_equity)
    assert a.equity_png.read_bytes() == b.equity_png.read_bytes()
    assert a.vel_div_png.read_bytes() == b.vel_div_png.read_bytes()


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        self.cells.append(data)


def test_report_html_shows_the_pngs_and_the_summary(report: ReportFiles) -> None:
    page = _Collect()
    page.feed(report.report_html.read_text(encoding="utf-8"))
    assert page.images == ["equity.png", "drawdown.png", "vel_div.png",
                           "pnl_by_exit_reason.png"]
    for src in page.images:
        assert not Path(src).is_absolute() and (report.out_dir / src).is_file()
    text = " ".join(page.cells)
    doc = json.loads(report.summary_json.read_text())
    assert f"{100 * doc['roi']:.2f} %" in text
    assert f"{doc['trades']}" in text and "Profit factor" in text and "Sharpe" in text
    assert "2025-05-11" in text  # the per-day table
    assert "max_hold" in text  # the exit-reason table
    assert "config_sha" in text and "abc123" in text


def test_empty_run_still_writes_every_file(tmp_path: Path) -> None:
    files = write_report(tmp_path / "out", [], [], initial_capital_usdt=CAPITAL)
    for p in (files.summary_json, files.trades_csv, files.equity_png, files.drawdown_png,
              files.vel_div_png, files.exit_reasons_png, files.report_html):
        assert p.is_file() and p.stat().st_size > 0
    assert imread(files.vel_div_png).shape[:2] == (400, 1000)
    assert "n/a" in files.report_html.read_text()
    assert not list(tmp_path.glob("out/*.tmp"))


def test_a_single_equity_point_and_entries_outside_the_signal(tmp_path: Path) -> None:
    early = trade("e", -5, 60, 1.0, 0.0, "tp", 1)  # before the first scan: no marker, no error
    files = write_report(tmp_path, [early], [EquityPoint(DAY0, CAPITAL, 0.0)],
                         initial_capital_usdt=CAPITAL, signal=_signal(50))
    assert imread(files.equity_png).std() > 0.05
    assert files.summary.bars == 1 and files.summary.sharpe is None
