"""Plugin files: append-only JSONL logs and atomically replaced JSON state.

These block (file system): call them through ``asyncio.to_thread`` from a hook.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import orjson


def append_jsonl(path: Path, records: Iterable[Any]) -> int:
    """Append one JSON line per record; returns how many were written."""
    data = b"".join(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in records)
    if not data:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(data)
    return data.count(b"\n")


def write_json_atomic(path: Path, value: Any) -> None:
    """Replace ``path`` with ``value`` so a reader (or a restart after kill -9) sees either the
    old or the new file, never half of one: write a sibling, fsync it, rename over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself must reach the disk too, or a power cut can bring the old file back.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when there is no file. A corrupt file raises ValueError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def read_jsonl(path: Path) -> list[Any]:
    """Every line of a JSONL file (tests and tools); a missing file is empty."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    return [orjson.loads(x) for x in lines if x.strip()]
