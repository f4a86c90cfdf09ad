"""Arrow day files are appended to, never rewritten (issue 17: a looping replay rewrote the whole
day file at every day change; RSS went 272 -> 661 MB and throughput fell 77% in 11 minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dolphind.events import ScanRecord
from dolphind.scan import arrow_sink
from dolphind.scan.arrow_sink import ArrowScanSink, last_scan_number, path_for_day, read_scans

DAY_NS = 86_400 * 10**9
T0 = 1_746_835_200 * 10**9  # 2025-05-10 00:00 UTC


def rec(n: int, ts_ns: int) -> ScanRecord:
    nan4 = (float("nan"),) * 4
    return ScanRecord(scan_number=n, ts_ns=ts_ns, symbols=("A", "B"), prices=(1.0, 2.0),
                      n_symbols=2, lambda_max=nan4, velocity=nan4, instability=nan4,
                      vel_div=float("nan"), regime_signal=float("nan"),
                      instability_composite=float("nan"))


def test_a_looping_replay_appends_and_never_reads_back(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real_end, real_batches = arrow_sink._stream_end, arrow_sink._read_complete_batches
    monkeypatch.setattr(arrow_sink, "_stream_end", lambda p: reads.append("end") or real_end(p))
    monkeypatch.setattr(arrow_sink, "_read_complete_batches",
                        lambda p: reads.append("batches") or real_batches(p))
    n = 0
    with ArrowScanSink(tmp_path, flush_every=3) as sink:
        for _loop in range(6):  # the same three days, again and again
            for day in range(3):
                before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in tmp_path.iterdir()}
                for k in range(5):
                    sink.append(rec(n, T0 + day * DAY_NS + k * 60 * 10**9))
                    n += 1
                for name, (inode, data) in before.items():  # what was written stays put
                    p = tmp_path / name
                    assert p.stat().st_ino == inode
                    assert p.read_bytes()[:len(data) - 8] == data[:len(data) - 8]  # minus EOS
    assert reads == []  # each day's end is remembered: no file is read back at a day change
    table = read_scans([path_for_day(tmp_path, "2025-05-10")])
    assert table.num_rows == 30 and table.schema == arrow_sink.SCAN_SCHEMA
    assert sorted(read_scans([tmp_path]).column("scan_number").to_pylist()) == list(range(n))
    assert last_scan_number(tmp_path) == n - 1


def test_a_restart_appends_after_the_last_complete_batch(tmp_path: Path) -> None:
    with ArrowScanSink(tmp_path) as sink:
        for k in range(4):
            sink.append(rec(k, T0 + k))
    path = path_for_day(tmp_path, "2025-05-10")
    data = path.read_bytes()
    path.write_bytes(data[:-8] + b"\xff\xff\xff\xff\x40\x00\x00\x00garbage")  # a torn message
    inode = path.stat().st_ino
    with ArrowScanSink(tmp_path) as sink:  # a new process: finds the end by reading messages
        sink.append(rec(4, T0 + 4))
    assert path.stat().st_ino == inode  # appended in place, not a new file
    assert path.read_bytes()[:len(data) - 8] == data[:-8]
    with pa.OSFile(str(path)) as f:
        got = pa.ipc.open_stream(f).read_all().column("scan_number").to_pylist()
    assert got == [0, 1, 2, 3, 4]


def test_a_file_of_another_schema_version_is_rewritten_once(tmp_path: Path) -> None:
    path = path_for_day(tmp_path, "2025-05-10")
    with ArrowScanSink(tmp_path) as sink:
        sink.append(rec(0, T0))
    old = read_scans([path]).replace_schema_metadata({arrow_sink.SCHEMA_VERSION_KEY: "0"})
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, old.schema) as w:
        w.write_table(old)
    with ArrowScanSink(tmp_path) as sink:
        sink.append(rec(1, T0 + 1))
    table = read_scans([path])
    assert table.column("scan_number").to_pylist() == [0, 1]
    assert table.schema.metadata[arrow_sink.SCHEMA_VERSION_KEY.encode()] == b"1"
    assert np.isnan(table.column("vel_div").to_numpy()).all()
