"""Scan records to Arrow IPC files, one file per UTC day (schema: docs/scan-schema.md).

Format choice: the **IPC stream** format, not the IPC file format. The file format keeps its
index in a footer written only by ``close()``; a crash before that leaves a file pyarrow refuses
to open. A stream is a sequence of self-delimiting messages: every record batch that was fully
written before a crash can be read back (``read_scans`` stops at a torn tail), so the loss on a
crash is bounded by what was still buffered in memory.

Batching trade-off: records are buffered and written as one record batch every
``flush_every`` records (and on ``flush()``/``close()``/day change). ``flush_every=1`` (the
live default) makes every scan durable as soon as it is produced, at the cost of one small
batch (schema-sized overhead, a few hundred bytes) per scan; offline runs use thousands, which
gives compact files and fast reads, and lose at most ``flush_every - 1`` scans on a crash (which
a re-run regenerates).

Re-opening a day that already has a file (a restart on the same UTC day, or a looping replay
coming back to a day) appends to it: the file is cut after its last complete message (dropping
the end-of-stream marker and any torn tail) and new batches follow, so there is still exactly
one valid stream per day and nothing already written is read back or rewritten (a looping
replay used to rewrite the whole day file at every day change: RSS and time grew with it).
The sink writes the IPC messages itself (``Schema.serialize``, ``RecordBatch.serialize``) for
that reason: pyarrow's stream writer always starts a new stream with a schema message.
Only a file whose schema is not this version's is rewritten (its batches cast) once.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from dolphind.events import WINDOWS, ScanRecord

SCHEMA_VERSION = "1"
SCHEMA_VERSION_KEY = "dolphind.scan_schema_version"
FILE_PREFIX = "scans-"
FILE_SUFFIX = ".arrow"
# The IPC end-of-stream marker: a continuation token and a zero message length.
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def _fields() -> list[pa.Field]:
    out = [
        pa.field("scan_number", pa.int64(), nullable=False),
        pa.field("timestamp_ns", pa.int64(), nullable=False),
        pa.field("n_symbols", pa.int64(), nullable=False),
    ]
    for kind in ("lambda_max", "velocity", "instability"):
        out += [pa.field(f"w{w}_{kind}", pa.float64(), nullable=False) for w in WINDOWS]
    out += [
        pa.field("vel_div", pa.float64(), nullable=False),
        pa.field("regime_signal", pa.float64(), nullable=False),
        pa.field("instability_composite", pa.float64(), nullable=False),
        pa.field("symbols", pa.list_(pa.string()), nullable=False),
        pa.field("prices", pa.list_(pa.float64()), nullable=False),
    ]
    return out


SCAN_SCHEMA = pa.schema(_fields(), metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION})


def day_of(ts_ns: int) -> str:
    """UTC date (YYYY-MM-DD) of a nanosecond timestamp."""
    return dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.UTC).strftime("%Y-%m-%d")


def path_for_day(out_dir: Path, day: str) -> Path:
    return out_dir / f"{FILE_PREFIX}{day}{FILE_SUFFIX}"


def _records_to_batch(recs: list[ScanRecord]) -> pa.RecordBatch:
    cols: dict[str, object] = {
        "scan_number": pa.array([r.scan_number for r in recs], pa.int64()),
        "timestamp_ns": pa.array([r.ts_ns for r in recs], pa.int64()),
        "n_symbols": pa.array([r.n_symbols for r in recs], pa.int64()),
    }
    for kind, attr in (("lambda_max", "lambda_max"), ("velocity", "velocity"),
                       ("instability", "instability")):
        mat = np.array([getattr(r, attr) for r in recs], dtype=np.float64).reshape(len(recs), 4)
        for j, w in enumerate(WINDOWS):
            cols[f"w{w}_{kind}"] = pa.array(mat[:, j], pa.float64())
    for name in ("vel_div", "regime_signal", "instability_composite"):
        cols[name] = pa.array(np.array([getattr(r, name) for r in recs], np.float64))
    cols["symbols"] = pa.array([list(r.symbols) for r in recs], pa.list_(pa.string()))
    cols["prices"] = pa.array([np.asarray(r.prices, np.float64) for r in recs],
                              pa.list_(pa.float64()))
    return pa.RecordBatch.from_arrays([cols[f.name] for f in SCAN_SCHEMA], schema=SCAN_SCHEMA)


def _read_complete_batches(path: Path) -> list[pa.RecordBatch]:
    """Every complete record batch of a (possibly torn) IPC stream file."""
    out: list[pa.RecordBatch] = []
    try:
        with pa.OSFile(str(path), "rb") as f:
            reader = pa.ipc.open_stream(f)
            while True:
                try:
                    out.append(reader.read_next_batch())
                except StopIteration:
                    break
    except (pa.ArrowInvalid, OSError, EOFError):
        pass  # torn tail (crash mid-write) or empty file: keep what was complete
    return out


def read_scans(paths: Iterable[str | os.PathLike[str]]) -> pa.Table:
    """Read scan files (or directories of them) into one table, in path order.

    Tolerates a torn tail left by a crash: every complete batch is returned.
    """
    files: list[Path] = []
    for p in paths:
        pp = Path(p)
        if pp.is_dir():
            files += sorted(pp.glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"))
        else:
            files.append(pp)
    batches: list[pa.RecordBatch] = []
    for f in files:
        batches += _read_complete_batches(f)
    return pa.Table.from_batches(batches, schema=SCAN_SCHEMA)


def last_scan_number(out_dir: str | os.PathLike[str]) -> int | None:
    """Highest persisted scan_number under ``out_dir`` (None if nothing is persisted).

    The maximum over every file: files are per day of *market* time, and a looping (or
    restarted, rewound) replay writes its later scans into earlier days' files, so the newest
    file need not hold the highest number (taking it reused numbers: issue #15).
    """
    best: int | None = None
    for f in sorted(Path(out_dir).glob(f"{FILE_PREFIX}*{FILE_SUFFIX}")):
        for b in _read_complete_batches(f):
            if b.num_rows:
                m = int(np.max(b.column("scan_number").to_numpy()))
                best = m if best is None else max(best, m)
    return best


def _stream_end(path: Path) -> tuple[int, pa.Schema | None]:
    """Byte offset just past the last complete message of the IPC stream in ``path`` (0 when
    it has no schema message) and the stream's schema; reads message by message."""
    end, schema = 0, None
    try:
        with pa.OSFile(str(path), "rb") as f:
            reader = pa.ipc.MessageReader.open_stream(f)
            while True:
                try:
                    msg = reader.read_next_message()
                except StopIteration:
                    break  # end-of-stream marker, or the file's end
                if schema is None:
                    if msg.type != "schema":
                        break
                    schema = pa.ipc.read_schema(msg)
                end = f.tell()
    except (pa.ArrowInvalid, OSError, EOFError):
        pass  # a torn tail (crash mid-write) or an empty file: keep what was complete
    return (end, schema) if schema is not None else (0, None)


class ArrowScanSink:
    """Append ScanRecords to ``out_dir/scans-YYYY-MM-DD.arrow`` (IPC stream, one file per UTC day)."""

    def __init__(self, out_dir: str | os.PathLike[str], flush_every: int = 1) -> None:
        if flush_every < 1:
            raise ValueError("flush_every must be >= 1")
        self._dir = Path(out_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._flush_every = flush_every
        self._buf: list[ScanRecord] = []
        self._day: str | None = None
        self._file: BinaryIO | None = None
        self._offset = 0  # end of the last complete message written to the open file
        self._ends: dict[str, int] = {}  # day -> that offset, for days closed by this sink
        self.records_written = 0

    def __enter__(self) -> ArrowScanSink:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def append(self, rec: ScanRecord) -> None:
        """Buffer one record; writes a batch every ``flush_every`` records or at a day change."""
        day = day_of(rec.ts_ns)
        if day != self._day:
            self.flush()
            self._open(day)
        self._buf.append(rec)
        if len(self._buf) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        """Write buffered records as one batch and push it to the OS."""
        if not self._buf:
            return
        assert self._file is not None
        message = _records_to_batch(self._buf).serialize()
        self._file.write(memoryview(message))
        self._file.flush()
        self._offset += message.size
        self.records_written += len(self._buf)
        self._buf.clear()

    def close(self) -> None:
        """Flush and finish the current file (writes the end-of-stream marker)."""
        self.flush()
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.write(_EOS)  # readers stop here; the next open cuts it off again
            self._file.close()
            self._file = None
            assert self._day is not None
            self._ends[self._day] = self._offset

    def _open(self, day: str) -> None:
        self._close_file()
        path = path_for_day(self._dir, day)
        end = self._ends.get(day)
        if end is None or not path.exists() or path.stat().st_size < end:
            end, schema = _stream_end(path) if path.exists() else (0, None)
            if schema is not None and not schema.equals(SCAN_SCHEMA, check_metadata=True):
                end = self._rewrite(path)
        f = open(path, "r+b" if end else "wb")  # noqa: SIM115 - closed in _close_file
        f.seek(end)
        f.truncate()
        if not end:
            f.write(memoryview(SCAN_SCHEMA.serialize()))
            end = f.tell()
        f.flush()
        self._file, self._offset, self._day = f, end, day

    @staticmethod
    def _rewrite(path: Path) -> int:
        """A file of another schema version: its complete batches cast to this one, once."""
        previous = _read_complete_batches(path)
        tmp = path.with_suffix(".arrow.tmp")
        with pa.OSFile(str(tmp), "wb") as f:
            writer = pa.ipc.new_stream(f, SCAN_SCHEMA)
            for b in previous:
                writer.write_batch(b.cast(SCAN_SCHEMA))
            writer.close()
        os.replace(tmp, path)
        return _stream_end(path)[0]
