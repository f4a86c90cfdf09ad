"""The append-only, hash-chained JSONL audit log of every decision (SPEC §6).

One JSON object per line, keys sorted, ending with its own hash::

    {"data":{...},"event":"order.submitted","prev":"<64 hex>","seq":7,"ts_ns":...,"hash":"<64 hex>"}

- ``hash`` = SHA-256 of the line's bytes *without* the ``,"hash":"..."`` suffix;
- ``prev`` = the previous line's ``hash`` (64 zeros on the first line);
- ``seq`` counts lines from 1.

So an edited line no longer matches its own hash; a deleted, inserted or reordered line breaks
the next line's ``prev`` (and ``seq``); a torn (truncated) line has no newline or no valid hash.
``verify(path)`` returns the first broken line. The chain is keyless: it detects accidents and
naive edits, not a forger who rewrites every hash after the edit (anchor the latest hash
elsewhere for that).

Writing: ``record()`` is synchronous and never blocks or drops: records go to an in-memory
queue that one writer task appends to the file from a dedicated thread (no file I/O on the
loop). Producers that can wait call ``await audit.wait_below(n)`` for back-pressure.

A writer that crashes (the disk full, the file gone) must not go unnoticed: losing audit
records is unacceptable in a trading daemon. The writer is a task the log keeps, watched
(``dolphind.stage.start_watched``): the crash is logged with its traceback, counted
(``dolphind_task_crashes_total{task="audit-writer"}``) and makes the log *failed*:
``readiness()`` says so (/readyz fails), ``flush()`` and ``wait_below()`` raise
``AuditFailed`` instead of returning as if the records were written, and ``close()`` raises it
too, with the number of records never written (the process exits non-zero).

fsync policy (``store.audit_fsync``): each batch is written with one ``write`` + ``flush``, so a
``kill -9`` loses nothing the writer has written (the data is in the OS page cache). A power cut
can lose what was not fsynced: ``always`` fsyncs after every batch; ``interval`` (default) at
most every ``audit_fsync_interval_s`` and at close; ``never`` leaves it to the OS.

A torn tail found at open (a power cut mid-write) is moved to ``<path>.torn-<ns>`` and the
chain continues with an ``audit.torn_tail_removed`` line that names the moved bytes' hash.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import orjson
import structlog

from dolphind.stage import start_watched
from dolphind.telemetry.metrics import ExecutionMetrics

log = structlog.get_logger("dolphind.audit")

GENESIS = "0" * 64
_HASH_PREFIX = b',"hash":"'
_SUFFIX_LEN = len(_HASH_PREFIX) + 64 + 2  # ,"hash":"<64 hex>"}
_TAIL_READ = 1 << 16
_LINGER_S = 0.005


class AuditFailed(Exception):
    """The audit log's writer crashed: records are no longer written."""


def _json_default(obj: Any) -> Any:
    return str(obj)


def encode_line(seq: int, ts_ns: int, event: str, data: dict[str, Any],
                prev: str) -> tuple[bytes, str]:
    """(the full line with newline, its hash)."""
    body = orjson.dumps({"seq": seq, "ts_ns": ts_ns, "event": event, "data": data, "prev": prev},
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
                        | orjson.OPT_NON_STR_KEYS, default=_json_default)
    h = hashlib.sha256(body).hexdigest()
    return body[:-1] + _HASH_PREFIX + h.encode() + b'"}\n', h


def split_line(line: bytes) -> tuple[bytes, str] | None:
    """(body without the hash suffix, the stated hash) or None when there is no hash suffix."""
    if len(line) < _SUFFIX_LEN or not line.endswith(b'"}'):
        return None
    suffix = line[-_SUFFIX_LEN:]
    if not suffix.startswith(_HASH_PREFIX):
        return None
    stated = suffix[len(_HASH_PREFIX):-2]
    try:
        return line[:-_SUFFIX_LEN] + b"}", stated.decode("ascii")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    lines: int
    first_bad_line: int | None = None
    reason: str = ""
    last_hash: str = GENESIS
    last_seq: int = 0


def verify(path: str | Path, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Check the whole chain; the result names the first broken line (1-based).

    ``anchor``: (seq, hash) of a line the store saw written (its ``audit_anchor``). The log
    must reach that line, with that hash: a log that ends before it lost its tail (truncated
    after the store committed), one whose line differs was rewritten."""
    res = _verify_chain(path, anchor[0] if anchor else 0)
    if not res[0].ok or anchor is None or not anchor[0]:
        return res[0]
    result, anchored_hash = res
    seq, digest = anchor
    if result.last_seq < seq:
        return VerifyResult(False, result.lines, result.lines + 1,
                            f"truncated tail: the store saw line {seq} written, the log ends at "
                            f"line {result.last_seq} ({seq - result.last_seq} lines missing)",
                            result.last_hash, result.last_seq)
    if anchored_hash != digest:
        return VerifyResult(False, result.lines, seq,
                            f"line {seq} is not the line the store saw written (hash differs)",
                            result.last_hash, result.last_seq)
    return result


def _verify_chain(path: str | Path, want_seq: int) -> tuple[VerifyResult, str | None]:
    prev, seq, n = GENESIS, 0, 0
    seen: str | None = None
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        return VerifyResult(False, 0, 1, f"cannot read: {exc.strerror or exc}"), None
    with f:
        for n, raw in enumerate(f, 1):
            bad = _check_line(raw, prev, seq + 1, n)
            if bad is not None:
                return VerifyResult(False, n - 1, n, bad, prev, seq), seen
            parts = split_line(raw[:-1])
            assert parts is not None
            prev, seq = parts[1], seq + 1
            if seq == want_seq:
                seen = prev
    return VerifyResult(True, n, None, "", prev, seq), seen


# The audit events that first record an order the store holds (its client id in ``data``).
ORDER_RECORD_EVENTS = frozenset({"order.submitted", "order.recovered", "risk.rejected",
                                 "router.rejected", "execution.venue_order_adopted"})


def audited_client_ids(path: str | Path) -> set[str]:
    """Client ids of the orders the log records (blocking: call off the loop). Lines that do
    not parse are skipped (``verify`` is the judge of the chain)."""
    out: set[str] = set()
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return out
    with f:
        for raw in f:
            if b'"client_id"' not in raw:
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if rec.get("event") in ORDER_RECORD_EVENTS:
                cid = (rec.get("data") or {}).get("client_id")
                if cid:
                    out.add(cid)
    return out


def _check_line(raw: bytes, prev: str, want_seq: int, n: int) -> str | None:
    if not raw.endswith(b"\n"):
        return "truncated line (no end of line)"
    parts = split_line(raw[:-1])
    if parts is None:
        return "no hash at the end of the line (truncated or edited)"
    body, stated = parts
    if hashlib.sha256(body).hexdigest() != stated:
        return "line content does not match its hash (edited)"
    try:
        rec = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return f"not JSON ({exc})"
    if not isinstance(rec, dict):
        return "not a JSON object"
    if rec.get("prev") != prev:
        return (f"prev hash does not match line {n - 1} (a line before this one was deleted, "
                "inserted or reordered)" if n > 1 else "first line does not start the chain")
    if rec.get("seq") != want_seq:
        return f"sequence number {rec.get('seq')!r}, expected {want_seq} (lines missing)"
    return None


class AuditLog:
    """Open with ``await AuditLog.open(...)``; use as an async context manager to run the
    writer task (entering starts it, leaving writes everything queued, fsyncs and closes)."""

    def __init__(self, path: Path, fh: BinaryIO, last_seq: int, last_hash: str,
                 executor: concurrent.futures.ThreadPoolExecutor,
                 fsync: Callable[[], str], fsync_interval_s: Callable[[], float],
                 metrics: ExecutionMetrics | None, clock_ns: Callable[[], int]) -> None:
        self.path = path
        self._fh = fh
        self.seq = last_seq
        self.last_hash = last_hash
        self._executor = executor
        self._fsync = fsync
        self._fsync_interval_s = fsync_interval_s
        self._metrics = metrics
        self._clock_ns = clock_ns
        self._pending: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._written = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None  # the writer's crash (see the module)
        self._failure_listeners: list[Callable[[BaseException], object]] = []
        self._last_fsync = time.monotonic()
        self.lines_written = 0
        # (seq, hash) of the last line written to the file, as one value: the store thread
        # reads it at every commit (the audit anchor) and must never see half an update.
        self.tip: tuple[int, str] = (last_seq, last_hash)
        if metrics is not None:
            # Read at scrape time: a gauge set per record would cost every decision a lock.
            metrics.audit_backlog.set_function(lambda: self.backlog)

    @classmethod
    async def open(cls, path: str | Path, metrics: ExecutionMetrics | None = None,
                   fsync: Callable[[], str] = lambda: "interval",
                   fsync_interval_s: Callable[[], float] = lambda: 1.0,
                   clock_ns: Callable[[], int] = time.time_ns) -> "AuditLog":
        p = Path(path)
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dolphind-audit")
        loop = asyncio.get_running_loop()
        try:
            fh, seq, last, torn = await loop.run_in_executor(executor, _open_tail, p)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        audit = cls(p, fh, seq, last, executor, fsync, fsync_interval_s, metrics, clock_ns)
        if torn is not None:
            log.warning("audit.torn_tail_removed", path=str(p), **torn)
            audit.record("audit.torn_tail_removed", **torn)
        return audit

    async def __aenter__(self) -> "AuditLog":
        self._task = start_watched(
            self._writer(), "audit-writer",
            crashes=self._metrics.task_crashes if self._metrics is not None else None,
            on_crash=self._writer_crashed)
        return self

    def on_failure(self, listener: Callable[[BaseException], object]) -> None:
        """Call ``listener`` (on the loop) when the log fails: the wiring halts entries then,
        since a decision whose record cannot be written must not be made."""
        self._failure_listeners.append(listener)

    def _writer_crashed(self, exc: BaseException) -> None:
        if self.failed is not None:
            return  # seen already (wait_below may see the crash before the done callback)
        self.failed = exc
        log.error("audit.failed", path=str(self.path), error=f"{type(exc).__name__}: {exc}",
                  unwritten=len(self._pending))
        self._written.set()  # a producer waiting for room hears it now (wait_below raises)
        for listener in self._failure_listeners:
            listener(exc)

    def _failure(self) -> AuditFailed:
        exc = self.failed
        return AuditFailed(f"audit log {self.path}: the writer crashed ({type(exc).__name__}: "
                           f"{exc}); {len(self._pending)} records not written")

    def readiness(self) -> str:
        """"ok", or why the audit log no longer writes (for /readyz)."""
        return "ok" if self.failed is None else str(self._failure())

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def use_clock(self, clock_ns: Callable[[], int]) -> None:
        """Stamp later records with ``clock_ns`` (a backtest's market time, issue 16)."""
        self._clock_ns = clock_ns

    def record(self, event: str, **data: Any) -> None:
        """Queue one decision for the log. Never blocks, never drops."""
        if self._closed:
            log.error("audit.record_after_close", audit_event=event)
            return
        self._pending.append((self._clock_ns(), event, data))
        self._wakeup.set()

    async def wait_below(self, n: int) -> None:
        """Back-pressure: wait until fewer than ``n`` records are queued."""
        while len(self._pending) >= n and self._task is not None and not self._task.done():
            self._written.clear()
            await self._written.wait()
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            crash = task.exception()  # its done callback may not have run yet
            if crash is not None:
                self._writer_crashed(crash)
        if self.failed is not None:
            raise self._failure() from self.failed

    async def flush(self) -> None:
        """Wait until everything recorded so far is written to the file (``AuditFailed``
        when it never will be)."""
        await self.wait_below(1)

    async def close(self) -> None:
        """Write what is queued, fsync and close; ``AuditFailed`` if the writer crashed."""
        self._closed = True
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait([task])  # a crash was seen when it came (_writer_crashed)
            except asyncio.CancelledError:
                task.cancel()
                raise
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, _close, self._fh,
                                       self._fsync() != "never")
        finally:
            self._executor.shutdown(wait=False)
        if self.failed is not None:
            raise self._failure() from self.failed

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                if not self._closed:
                    # Linger a moment so a burst of decisions becomes one write: fewer thread
                    # hops competing with the store's commit path. Not a durability risk: the
                    # store, not the audit log, is what a restart trusts.
                    await asyncio.sleep(_LINGER_S)
                continue
            batch = list(self._pending)
            mode = self._fsync()
            now = time.monotonic()
            do_fsync = mode == "always" or (
                mode == "interval" and now - self._last_fsync >= self._fsync_interval_s())
            # Serialise and hash here, on the loop (a few µs a line): a CPU-bound writer thread
            # would hold the GIL and delay the store thread's wake-ups by the switch interval.
            seq, last = self.seq, self.last_hash
            chunks = []
            for ts_ns, event, data in batch:
                seq += 1
                line, last = encode_line(seq, ts_ns, event, data, last)
                chunks.append(line)
            await loop.run_in_executor(self._executor, _append, self._fh, b"".join(chunks),
                                       do_fsync)
            if do_fsync:
                self._last_fsync = now
            for _ in batch:
                self._pending.popleft()
            self.seq, self.last_hash = seq, last
            self.tip = (seq, last)
            self.lines_written += len(batch)
            if self._metrics is not None:
                self._metrics.audit_lines.inc(len(batch))
            self._written.set()


# ---- control actions -----------------------------------------------------------------------


def control_record(action: Any) -> tuple[str, dict[str, Any]]:
    """(event, data) of a control-plane action's audit line: ``control.<action>`` with the
    action, its cause, its parameters and the wall time it was taken."""
    return f"control.{action.action}", {"action": action.action, "cause": action.cause,
                                        "params": dict(action.detail), "ts": action.ts}


def subscribe_audit(control: Any, audit: AuditLog,
                    market_ts_s: Callable[[], float] | None = None) -> Callable[[Any], None]:
    """Subscribe ``audit`` to every action of ``control`` (ops.control.Control); returns the
    listener so the caller can unsubscribe it before the log closes.

    The one place control actions reach the audit chain: whoever acts (HTTP, a plugin, a
    signal, an expiry) goes through the control plane, and the plane hands every action here.
    ``record`` only queues, so the control plane stays free of I/O."""
    def listener(action: Any) -> None:
        event, data = control_record(action)
        if market_ts_s is not None and "ts" in data:
            data["ts"] = market_ts_s()  # a backtest's records carry market time (issue 16)
        audit.record(event, **data)

    control.subscribe(listener)
    return listener


# ---- on the audit thread -------------------------------------------------------------------


def _append(fh: BinaryIO, data: bytes, do_fsync: bool) -> None:
    fh.write(data)
    fh.flush()
    if do_fsync:
        os.fsync(fh.fileno())


def _close(fh: BinaryIO, do_fsync: bool) -> None:
    try:
        fh.flush()
        if do_fsync:
            os.fsync(fh.fileno())
    finally:
        fh.close()


def _open_tail(path: Path) -> tuple[BinaryIO, int, str, dict[str, Any] | None]:
    """Open for appending; return the chain's tip. A torn last line is moved aside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+b")  # noqa: SIM115 - owned by the AuditLog
    try:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return fh, 0, GENESIS, None
        start = max(0, size - _TAIL_READ)
        fh.seek(start)
        tail = fh.read()
        torn: dict[str, Any] | None = None
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            keep = start + cut + 1 if cut >= 0 else start
            if cut < 0 and start > 0:
                raise OSError(f"{path}: last line longer than {_TAIL_READ} bytes and torn")
            torn_bytes = tail[cut + 1:] if cut >= 0 else tail
            aside = path.with_name(f"{path.name}.torn-{time.time_ns()}")
            aside.write_bytes(torn_bytes)
            fh.truncate(keep)
            torn = {"bytes": len(torn_bytes), "sha256": hashlib.sha256(torn_bytes).hexdigest(),
                    "moved_to": aside.name}
            tail = tail[:cut + 1] if cut >= 0 else b""
        lines = tail.splitlines()
        if not lines:
            return fh, 0, GENESIS, torn
        parts = split_line(lines[-1])
        if parts is None:
            raise OSError(f"{path}: last line has no hash; run `dolphind audit verify {path}`")
        rec = orjson.loads(parts[0])
        fh.seek(0, os.SEEK_END)
        return fh, int(rec["seq"]), parts[1], torn
    except BaseException:
        fh.close()
        raise
