"""The SQLite store: orders, fills, positions, the account, equity snapshots, scan checkpoint
and control state (SPEC §6).

Shape:
- one connection, opened and used only on one dedicated thread (``dolphind-store``), so no
  sqlite call ever runs on the event loop;
- writes and reads are jobs on one FIFO queue the store thread takes directly; it commits
  everything queued (up to ``max_batch`` writes) as ONE transaction, then resolves the callers
  that asked to wait through one ``call_soon_threadsafe``. Group commit keeps the queue short
  under load; ``capacity`` unconfirmed writes make writers wait (back-pressure, no loss). A
  write nobody waits for is held on the loop for up to ``linger_s`` and handed over with the
  next write that is waited for (or alone when the linger ends), so it costs no thread wake-up
  and joins that write's commit;
- WAL mode. With ``synchronous = NORMAL`` a committed transaction is in the WAL file when
  COMMIT returns, so it survives ``kill -9`` (not necessarily a power cut: use FULL for that).
  Checkpoints run every second from a second thread and connection (PASSIVE: they never block
  the writer), so no commit pays for a checkpoint's copy and fsync. The checkpointer is a task
  the store keeps (``dolphind.stage.start_watched``): should it crash, the crash is logged,
  counted (``dolphind_task_crashes_total{task="store-checkpointer"}``) and shown in
  ``status()``; the store goes on (the WAL grows until the close checkpoints it);
- each write is wrapped in a SAVEPOINT, so one bad write fails alone (its caller gets the
  error) and the rest of the batch commits. A failed COMMIT (disk full, I/O error) fails the
  store: every later write raises ``StoreFailed`` and the process must restart (crash-only);
- schema versioned in ``schema_version``; ``MIGRATIONS`` are applied in order at open, and a
  database written by a newer dolphind is refused.

Crash safety contract, used by the execution stage: an order is written (and the commit awaited)
before it is sent; a fill is committed before anything decided from it can be committed (one
FIFO writer), so the store never holds an effect without its cause.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import structlog

from dolphind.events import Order
from dolphind.stage import start_watched
from dolphind.store import transactions
from dolphind.store.rows import (  # noqa: F401 - the store's write and read vocabulary, re-exported
    AUDIT_ANCHOR_KEY,
    ORDER_COLUMNS,
    Account,
    OpenTrade,
    RestoredState,
    account_op,
    equity_op,
    fill_op,
    kv_op,
    load_state,
    order_op,
    order_row,
    position_op,
    read_audit_anchor,
    since_flat,
)
from dolphind.store.schema import (  # noqa: F401 - re-exported
    MIGRATIONS,
    SCHEMA_VERSION,
    StoreError,
    close,
    connect,
)
from dolphind.store.transactions import Op
from dolphind.telemetry.metrics import ChannelMetrics, ExecutionMetrics

log = structlog.get_logger("dolphind.store")

T = TypeVar("T")

_CHECKPOINT_EVERY_S = 1.0
# A write nobody waits for is held this long on the loop for more writes: a waiter that arrives
# meanwhile (the fill behind an order's ack, say) takes it along, so both are committed in ONE
# transaction after ONE wake-up of the store thread (a futex wake is ~10 us of the loop's time
# on this path). A waited write is never held; nothing un-waited was promised durable before
# its commit (see ``pending``).
_LINGER_S = 0.002


class StoreFailed(StoreError):
    """The writer hit an unrecoverable error; nothing more will be committed."""


@dataclass(slots=True)
class _Write:
    ops: tuple[Op, ...]
    done: asyncio.Future[None] | None = None
    queued_at: float = field(default_factory=time.perf_counter)


async def orders_missing_from(store: "Store", known: set[str]) -> list[Order]:
    """Orders in the store whose client id is not in ``known`` (e.g. the audit log's)."""
    def read(conn: sqlite3.Connection) -> list[Order]:
        found = conn.execute(f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders "
                             "ORDER BY created_ns")
        return [o for o in map(order_row, found) if o.client_id not in known]
    return await store.read(read)


# ---- the store -----------------------------------------------------------------------------


class Store:
    """Open with ``await Store.open(...)``, then use as an async context manager; leaving
    commits what is queued, stops the store thread and closes the file.

    Writes and reads are jobs on one FIFO queue that the store thread takes directly (a
    ``SimpleQueue``: a put wakes the thread at once, with no event-loop iteration in between),
    and the thread reports each commit back with one ``call_soon_threadsafe``. That is the
    shortest round trip a waiting writer can have without running SQLite on the loop; it is on
    the intent-to-fill path twice (the order before it is sent, the fill before it is shown).
    """

    def __init__(self, path: Path, synchronous: str, metrics: ExecutionMetrics | None,
                 channel_metrics: ChannelMetrics | None, capacity: int,
                 max_batch: Callable[[], int], linger_s: float) -> None:
        self.path = path
        self._loop = asyncio.get_running_loop()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=_store_thread, args=(self, synchronous),
                                        name="dolphind-store", daemon=True)
        self._metrics = metrics
        self._max_batch = max_batch
        self._capacity = capacity
        self._linger_s = linger_s
        # Un-waited writes held on the loop (see _LINGER_S) and the timer that hands them over.
        self._held: list[_Write] = []
        self._hand_over: asyncio.TimerHandle | None = None
        self._closed = False
        self._stopped: asyncio.Future[None] = self._loop.create_future()
        # Writes put and not yet reported committed (or failed). Only the loop touches it.
        self._unconfirmed = 0
        self._room = asyncio.Event()
        self._room.set()
        self.failed: BaseException | None = None
        # The audit log's written tip, (seq, hash), read by the store thread after its commits
        # and committed as kv "audit_anchor" when it is idle: the store anchors the audit
        # chain, so a truncated audit tail is detected (`dolphind audit verify --store`).
        self.audit_tip: Callable[[], tuple[int, str]] | None = None
        self.commits = 0
        self.writes = 0
        self.checkpoints = 0
        self._wait = channel_metrics.labels("store").wait if channel_metrics else None
        if channel_metrics:
            channel_metrics.capacity.labels("store").set(capacity)
            channel_metrics.depth.labels("store").set_function(lambda: self.backlog)
        # Checkpoints (WAL -> database file) run on their own thread and connection: a PASSIVE
        # checkpoint never blocks the writer, and its fsync stays off the commit path.
        self._ckpt_executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="dolphind-store-ckpt")
        self._ckpt_conn: sqlite3.Connection | None = None
        self._ckpt_task: asyncio.Task[None] | None = None
        self.checkpointer_crash: str | None = None  # why the checkpointer ended, if it did

    @classmethod
    async def open(cls, path: str | Path, metrics: ExecutionMetrics | None = None,
                   channel_metrics: ChannelMetrics | None = None, synchronous: str = "NORMAL",
                   capacity: int = 1024, max_batch: Callable[[], int] = lambda: 256,
                   linger_s: float = _LINGER_S) -> "Store":
        store = cls(Path(path), synchronous, metrics, channel_metrics, capacity, max_batch,
                    linger_s)
        store._thread.start()
        await store._opened  # raises StoreError when the file cannot be opened
        return store

    async def __aenter__(self) -> "Store":
        self._ckpt_task = start_watched(
            self._checkpointer(), "store-checkpointer",
            crashes=self._metrics.task_crashes if self._metrics is not None else None,
            on_crash=self._checkpointer_crashed)
        return self

    def _checkpointer_crashed(self, exc: BaseException) -> None:
        # Not fatal: commits stay durable in the WAL; only its size grows until the close.
        self.checkpointer_crash = f"{type(exc).__name__}: {exc}"

    async def _checkpointer(self) -> None:
        loop = asyncio.get_running_loop()
        self._ckpt_conn = await loop.run_in_executor(
            self._ckpt_executor, lambda: sqlite3.connect(self.path, isolation_level=None))
        last = self.commits
        while True:
            await asyncio.sleep(_CHECKPOINT_EVERY_S)
            if self.commits != last:
                last = self.commits
                try:
                    await loop.run_in_executor(self._ckpt_executor, self._ckpt_conn.execute,
                                               "PRAGMA wal_checkpoint(PASSIVE)")
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # a missed checkpoint only lets the WAL grow
                    log.warning("store.checkpoint_failed", error=repr(exc))

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit what is queued, stop the store thread, close the connections."""
        loop = asyncio.get_running_loop()
        if not self._closed:
            self._closed = True
            self._room.set()  # writers waiting for room see the store closed
            self._put_held()
            self._jobs.put(_STOP)
        try:
            await asyncio.shield(self._stopped)
        finally:
            if self._ckpt_task is not None:
                self._ckpt_task.cancel()
                # It ends by the cancel; a crash was seen when it came (start_watched).
                await asyncio.wait([self._ckpt_task])
                self._ckpt_task = None
            if self._ckpt_conn is not None:
                await loop.run_in_executor(self._ckpt_executor, self._ckpt_conn.close)
                self._ckpt_conn = None
            self._ckpt_executor.shutdown(wait=False)

    # ---- writing -----------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Jobs waiting for the store thread (not counting the batch it is committing); writes
        handed over together (or held together on the loop) are one job."""
        return self._jobs.qsize() + (1 if self._held else 0)

    @property
    def pending(self) -> int:
        """Writes not yet committed (queued or in the batch being committed): 0 means
        everything written so far is on disk."""
        return self._unconfirmed

    async def write(self, *ops: Op, wait: bool = False) -> None:
        """Queue ``ops`` as one unit (all or nothing). ``wait=True`` returns only once they
        are committed; errors of that unit are raised here. With ``capacity`` writes
        unconfirmed, a writer waits for room (back-pressure, nothing is dropped)."""
        while True:
            if self.failed is not None:
                raise StoreFailed(f"store {self.path} failed: {self.failed}") from self.failed
            if self._closed:
                raise StoreError(f"store {self.path} is closed")
            if self._unconfirmed < self._capacity:
                break
            self._room.clear()
            await self._room.wait()
        self._unconfirmed += 1
        if not wait:
            self._held.append(_Write(ops))
            if self._hand_over is None:
                self._hand_over = self._loop.call_later(self._linger_s, self._put_held)
            return
        done = self._loop.create_future()
        self._held.append(_Write(ops, done))
        self._put_held()
        await done

    def _put_held(self) -> None:
        """Hand the held writes to the store thread as one job (FIFO order kept)."""
        if self._hand_over is not None:
            self._hand_over.cancel()
            self._hand_over = None
        if self._held:
            self._jobs.put(self._held)
            self._held = []

    async def save_scan_checkpoint(self, scan_number: int) -> None:
        await self.write(kv_op("scan_number", str(int(scan_number))))

    async def save_control(self, halted: bool, reason: str) -> None:
        await self.write(kv_op("halted", "1" if halted else "0"), kv_op("halt_reason", reason))

    # ---- called on the loop by the store thread ---------------------------------------

    def _committed(self, batch: list[_Write], errors: list[Exception | None], started: float,
                   seconds: float) -> None:
        self.commits += 1
        self.writes += len(batch)
        self._unconfirmed -= len(batch)
        self._room.set()
        if self._metrics is not None:
            self._metrics.store_commits.inc()
            self._metrics.store_writes.inc(len(batch))
            self._metrics.store_commit_seconds.observe(seconds)
        wait = self._wait
        for w, err in zip(batch, errors):
            if wait is not None:
                wait.observe(started - w.queued_at)
            if err is not None:
                log.error("store.write_failed", error=repr(err), sql=w.ops[0][0][:60])
            if w.done is not None and not w.done.done():
                if err is None:
                    w.done.set_result(None)
                else:
                    w.done.set_exception(err)

    def _failed(self, exc: BaseException, writes: list[_Write]) -> None:
        """A COMMIT failed (disk full, I/O error): the store can no longer be trusted. Called
        for the failed batch and again for every write that reaches the thread after it."""
        if self.failed is None:
            self.failed = exc
            if self._metrics is not None:
                self._metrics.store_failures.inc()
            log.error("store.failed", error=repr(exc), path=str(self.path))
        self._unconfirmed -= len(writes)
        self._room.set()
        for w in writes:
            if w.done is not None and not w.done.done():
                w.done.set_exception(StoreFailed(f"store {self.path} failed: {exc!r}"))

    # ---- reading (on the store thread, serialised with the writes) ---------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._put_held()  # a read sees every write made before it
        self._jobs.put(_Read(fn, fut))
        return await fut

    async def load_state(self) -> RestoredState:
        return await self.read(load_state)

    async def integrity_check(self) -> str:
        return await self.read(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])

    def readiness(self) -> str:
        """"ok", or why the store cannot take writes (for /readyz)."""
        if self.failed is not None:
            return f"store failed: {self.failed!r}"
        if self._closed:
            return "store closed"
        return "ok"

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "backlog": self.backlog, "pending": self.pending,
                "commits": self.commits, "writes": self.writes, "checkpoints": self.checkpoints,
                "failed": repr(self.failed) if self.failed else None,
                "checkpointer_crash": self.checkpointer_crash}


# ---- on the store thread -------------------------------------------------------------------


@dataclass(slots=True)
class _Read:
    fn: Callable[[sqlite3.Connection], Any]
    done: asyncio.Future[Any]


_STOP = object()


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` on the loop; a loop already closed has nobody left to tell."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _settle(fut: asyncio.Future[Any], exc: BaseException | None, result: Any = None) -> None:
    if fut.done():
        return  # the awaiting side was cancelled
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


def _store_thread(s: Store, synchronous: str) -> None:
    """The store thread: open the connection (it is made, used and closed here only), then
    take jobs in FIFO order. A job is a read, ``_STOP``, or a list of writes; consecutive write
    jobs (up to ``max_batch`` writes) are committed as ONE transaction (group commit keeps the
    queue short under load); a read runs after every write queued before it. Ends at ``_STOP``
    with a final checkpoint."""
    loop = s._loop
    try:
        conn = connect(s.path, synchronous)
    except BaseException as exc:  # noqa: BLE001 - the opener raises it
        _post(loop, _settle, s._opened, exc)
        return
    _post(loop, _settle, s._opened, None)
    jobs = s._jobs
    cur = conn.cursor()  # one for every write (see transactions.execute)
    failed: BaseException | None = None
    after: Any = None  # a job taken while filling a batch that must run after it
    anchored: tuple[int, str] | None = None  # the audit tip last committed as the anchor
    try:
        while True:
            job = after if after is not None else jobs.get()
            after = None
            if job is _STOP:
                return
            if isinstance(job, _Read):
                try:
                    result = job.fn(conn)
                except Exception as exc:  # noqa: BLE001 - the reader gets it
                    _post(loop, _settle, job.done, exc)
                else:
                    _post(loop, _settle, job.done, None, result)
                continue
            batch: list[_Write] = list(job)  # writes handed over together: one job
            limit = max(1, s._max_batch())
            while len(batch) < limit:
                try:
                    nxt = jobs.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, list):
                    after = nxt
                    break
                batch.extend(nxt)
            if failed is not None:
                _post(loop, s._failed, failed, batch)
                continue
            started = time.perf_counter()
            try:
                errors = transactions.execute(cur, [w.ops for w in batch])
            except Exception as exc:  # COMMIT failed: nothing more will be committed
                failed = exc
                _post(loop, s._failed, exc, batch)
                continue
            _post(loop, s._committed, batch, errors, started, time.perf_counter() - started)
            anchored = _anchor_when_idle(s, cur, anchored)
    finally:
        try:
            # Fold the WAL back into the database file on a clean close.
            close(conn)
        except Exception as exc:  # noqa: BLE001 - logged; the data is committed already
            log.warning("store.close_failed", error=repr(exc))
        _post(loop, _settle, s._stopped, None)


def _anchor_when_idle(s: Store, cur: sqlite3.Cursor,
                      anchored: tuple[int, str] | None) -> tuple[int, str] | None:
    """After a commit, with no job waiting: commit the audit log's written tip as the anchor
    (kv ``audit_anchor``), if it moved. Its own small transaction, after the writers were told
    theirs is committed, so the order path never waits for it (bench/audit_anchor.py); under
    load it waits for the next idle moment, so the anchor trails the log by at most a burst."""
    tip = s.audit_tip
    if tip is None or not s._jobs.empty():
        return anchored
    now = tip()
    if not now[0] or now == anchored:
        return anchored
    try:
        transactions.execute(cur, [(kv_op(AUDIT_ANCHOR_KEY, f"{now[0]}:{now[1]}"),)])
    except Exception as exc:  # noqa: BLE001 - the anchor is a check, never worth the store
        log.warning("store.anchor_failed", error=repr(exc))
        return anchored
    return now
