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
  the writer), so no commit pays for a checkpoint's copy and fsync;
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
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import structlog

from dolphind.events import Fill, Order
from dolphind.orders.portfolio import Position
from dolphind.telemetry.metrics import ChannelMetrics, ExecutionMetrics

log = structlog.get_logger("dolphind.store")

T = TypeVar("T")
Op = tuple[str, Sequence[Any]]

SCHEMA_VERSION = 3
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE orders (
            client_id TEXT PRIMARY KEY, intent_id TEXT NOT NULL, symbol TEXT NOT NULL,
            side TEXT NOT NULL, qty REAL NOT NULL, order_type TEXT NOT NULL, price REAL NOT NULL,
            reduce_only INTEGER NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL,
            filled_qty REAL NOT NULL, avg_fill_price REAL NOT NULL, venue_order_id TEXT NOT NULL,
            created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, reject_reason TEXT NOT NULL,
            ref_price REAL NOT NULL)""",
        "CREATE INDEX orders_state ON orders(state)",
        """CREATE TABLE fills (
            fill_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, symbol TEXT NOT NULL,
            side TEXT NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee_usdt REAL NOT NULL,
            liquidity TEXT NOT NULL, ts_ns INTEGER NOT NULL, slippage_bps REAL NOT NULL,
            reduce_only INTEGER NOT NULL, realised_pnl_usdt REAL NOT NULL)""",
        """CREATE TABLE positions (
            symbol TEXT PRIMARY KEY, qty REAL NOT NULL, avg_price REAL NOT NULL,
            realised_pnl_usdt REAL NOT NULL, fees_usdt REAL NOT NULL, opened_ns INTEGER NOT NULL,
            updated_ns INTEGER NOT NULL)""",
        """CREATE TABLE account (
            id INTEGER PRIMARY KEY CHECK (id = 1), initial_capital_usdt REAL NOT NULL,
            cash_usdt REAL NOT NULL, realised_pnl_usdt REAL NOT NULL, fees_usdt REAL NOT NULL,
            peak_equity_usdt REAL NOT NULL, updated_ns INTEGER NOT NULL)""",
        """CREATE TABLE equity_snapshots (
            ts_ns INTEGER NOT NULL, equity_usdt REAL NOT NULL, cash_usdt REAL NOT NULL,
            unrealised_pnl_usdt REAL NOT NULL, peak_equity_usdt REAL NOT NULL,
            drawdown REAL NOT NULL, gross_exposure_usdt REAL NOT NULL)""",
        # Small named values: scan checkpoint, control state.
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_ns INTEGER NOT NULL)",
    )),
    # v2: what a restart needs to rebuild the open trade (execution.ledger). The order row does
    # not carry the intent's leverage, so it is kept beside it; the index serves the per-symbol
    # fill history read at restore.
    (2, (
        """CREATE TABLE order_intents (
            client_id TEXT PRIMARY KEY, leverage REAL NOT NULL)""",
        "CREATE INDEX fills_symbol ON fills(symbol)",
    )),
    # v3: fewer B-tree pages per commit (each dirty page is one WAL frame written and
    # checksummed inside COMMIT, on the intent-to-fill path). Orders live in their primary
    # key's B-tree (WITHOUT ROWID: no second index to update) and carry the intent's leverage
    # (order_intents folded in: the write-ahead is one row); the state index goes (only the
    # restore reads by state, once); positions are keyed by symbol the same way.
    (3, (
        """CREATE TABLE orders_v3 (
            client_id TEXT PRIMARY KEY, intent_id TEXT NOT NULL, symbol TEXT NOT NULL,
            side TEXT NOT NULL, qty REAL NOT NULL, order_type TEXT NOT NULL, price REAL NOT NULL,
            reduce_only INTEGER NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL,
            filled_qty REAL NOT NULL, avg_fill_price REAL NOT NULL, venue_order_id TEXT NOT NULL,
            created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, reject_reason TEXT NOT NULL,
            ref_price REAL NOT NULL, leverage REAL) WITHOUT ROWID""",
        "INSERT INTO orders_v3 SELECT o.*, i.leverage FROM orders AS o "
        "LEFT JOIN order_intents AS i USING (client_id)",
        "DROP TABLE orders",  # and its orders_state index
        "DROP TABLE order_intents",
        "ALTER TABLE orders_v3 RENAME TO orders",
        """CREATE TABLE positions_v3 (
            symbol TEXT PRIMARY KEY, qty REAL NOT NULL, avg_price REAL NOT NULL,
            realised_pnl_usdt REAL NOT NULL, fees_usdt REAL NOT NULL, opened_ns INTEGER NOT NULL,
            updated_ns INTEGER NOT NULL) WITHOUT ROWID""",
        "INSERT INTO positions_v3 SELECT * FROM positions",
        "DROP TABLE positions",
        "ALTER TABLE positions_v3 RENAME TO positions",
    )),
)

_TERMINAL_STATES = ("filled", "cancelled", "rejected", "expired")
_CHECKPOINT_EVERY_S = 1.0
# A write nobody waits for is held this long on the loop for more writes: a waiter that arrives
# meanwhile (the fill behind an order's ack, say) takes it along, so both are committed in ONE
# transaction after ONE wake-up of the store thread (a futex wake is ~10 us of the loop's time
# on this path). A waited write is never held; nothing un-waited was promised durable before
# its commit (see ``pending``).
_LINGER_S = 0.002


class StoreError(Exception):
    """A store that cannot be opened or used (the message says why)."""


class StoreFailed(StoreError):
    """The writer hit an unrecoverable error; nothing more will be committed."""


@dataclass(frozen=True, slots=True)
class Account:
    initial_capital_usdt: float
    cash_usdt: float
    realised_pnl_usdt: float
    fees_usdt: float
    peak_equity_usdt: float


@dataclass(frozen=True, slots=True)
class OpenTrade:
    """The history of one open position since it was last flat: what the trade ledger replays
    on restart to know the trade's entry, size, fees and partial exits as before the stop."""

    position: Position
    fills: tuple[Fill, ...]  # in commit order, the first one opened the position
    orders: tuple[Order, ...]  # the orders of those fills
    leverage: Mapping[str, float]  # client id -> the intent's leverage (orders from v2 on)


@dataclass(frozen=True, slots=True)
class RestoredState:
    """What a restart needs: money, positions, working orders, ids already used, scan number."""

    account: Account | None
    positions: tuple[Position, ...]
    open_orders: tuple[Order, ...]
    recent_orders: tuple[Order, ...]
    client_ids: frozenset[str]
    fill_ids: frozenset[str]
    scan_number: int | None
    halted: bool
    halt_reason: str
    schema_version: int
    open_trades: tuple[OpenTrade, ...] = ()


@dataclass(slots=True)
class _Write:
    ops: tuple[Op, ...]
    done: asyncio.Future[None] | None = None
    queued_at: float = field(default_factory=time.perf_counter)


# ---- row <-> object ------------------------------------------------------------------------


_ORDER_COLUMNS = ("client_id", "intent_id", "symbol", "side", "qty", "order_type", "price",
                  "reduce_only", "reason", "state", "filled_qty", "avg_fill_price",
                  "venue_order_id", "created_ns", "updated_ns", "reject_reason", "ref_price")
# An update of an order keeps the leverage its write-ahead recorded (the Order has none).
_ORDER_UPSERT = (
    f"INSERT INTO orders VALUES ({','.join('?' * (len(_ORDER_COLUMNS) + 1))}) "
    "ON CONFLICT (client_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _ORDER_COLUMNS[1:])
    + ", leverage = coalesce(excluded.leverage, orders.leverage)")
_LEVERAGE = len(_ORDER_COLUMNS)  # its column in ``SELECT * FROM orders``


def order_op(o: Order, leverage: float | None = None) -> Op:
    """Insert or update ``o``; ``leverage`` is the intent's (given with the write-ahead)."""
    return (_ORDER_UPSERT,
            (o.client_id, o.intent_id, o.symbol, o.side, o.qty, o.order_type, o.price,
             int(o.reduce_only), o.reason, o.state, o.filled_qty, o.avg_fill_price,
             o.venue_order_id, o.created_ns, o.updated_ns, o.reject_reason, o.ref_price,
             leverage))


def _order_row(r: Sequence[Any]) -> Order:
    return Order(client_id=r[0], intent_id=r[1], symbol=r[2], side=r[3], qty=r[4],
                 order_type=r[5], price=r[6], reduce_only=bool(r[7]), reason=r[8], state=r[9],
                 filled_qty=r[10], avg_fill_price=r[11], venue_order_id=r[12],
                 created_ns=r[13], updated_ns=r[14], reject_reason=r[15], ref_price=r[16])


def fill_op(f: Fill, realised_pnl_usdt: float) -> Op:
    return ("INSERT OR IGNORE INTO fills VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (f.fill_id, f.client_id, f.symbol, f.side, f.qty, f.price, f.fee_usdt, f.liquidity,
             f.ts_ns, f.slippage_bps, int(f.reduce_only), realised_pnl_usdt))


def _fill_row(r: Sequence[Any]) -> Fill:
    return Fill(fill_id=r[0], client_id=r[1], symbol=r[2], side=r[3], qty=r[4], price=r[5],
                fee_usdt=r[6], liquidity=r[7], ts_ns=r[8], slippage_bps=r[9],
                reduce_only=bool(r[10]))


def since_flat(fills: Sequence[Fill]) -> tuple[Fill, ...]:
    """The fills after the last moment the running position was zero (the open trade's).

    Rounded like the portfolio rounds positions, so a position closed by fills reads exactly
    zero here too."""
    start, qty = 0, 0.0
    for i, f in enumerate(fills):
        qty = round(qty + (f.qty if f.side == "BUY" else -f.qty), 12)
        if qty == 0.0:
            start = i + 1
    return tuple(fills[start:])


def position_op(p: Position) -> Op:
    if p.flat:
        return ("DELETE FROM positions WHERE symbol = ?", (p.symbol,))
    return ("INSERT OR REPLACE INTO positions VALUES (?,?,?,?,?,?,?)",
            (p.symbol, p.qty, p.avg_price, p.realised_pnl_usdt, p.fees_usdt, p.opened_ns,
             p.updated_ns))


def account_op(a: Account, ts_ns: int) -> Op:
    return ("INSERT OR REPLACE INTO account VALUES (1,?,?,?,?,?,?)",
            (a.initial_capital_usdt, a.cash_usdt, a.realised_pnl_usdt, a.fees_usdt,
             a.peak_equity_usdt, ts_ns))


def equity_op(ts_ns: int, equity: float, cash: float, unrealised: float, peak: float,
              drawdown: float, gross: float) -> Op:
    return ("INSERT INTO equity_snapshots VALUES (?,?,?,?,?,?,?)",
            (ts_ns, equity, cash, unrealised, peak, drawdown, gross))


AUDIT_ANCHOR_KEY = "audit_anchor"


def read_audit_anchor(path: str | Path) -> tuple[int, str] | None:
    """(seq, hash) of the audit line the store last saw written, from the file at ``path``
    (read-only; blocking). None when the store has no anchor."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (AUDIT_ANCHOR_KEY,)).fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    seq, _, digest = str(row[0]).partition(":")
    return int(seq), digest


async def orders_missing_from(store: "Store", known: set[str]) -> list[Order]:
    """Orders in the store whose client id is not in ``known`` (e.g. the audit log's)."""
    def read(conn: sqlite3.Connection) -> list[Order]:
        rows = conn.execute(f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders "
                            "ORDER BY created_ns")
        return [o for o in map(_order_row, rows) if o.client_id not in known]
    return await store.read(read)


def kv_op(key: str, value: str, ts_ns: int = 0) -> Op:
    return ("INSERT OR REPLACE INTO kv VALUES (?,?,?)", (key, value, ts_ns or time.time_ns()))


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
        self._ckpt_task = self._loop.create_task(self._checkpointer(), name="store-checkpointer")
        return self

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
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ckpt_task
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
        return await self.read(_load_state)

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
                "failed": repr(self.failed) if self.failed else None}


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
        conn = _connect(s.path, synchronous)
    except BaseException as exc:  # noqa: BLE001 - the opener raises it
        _post(loop, _settle, s._opened, exc)
        return
    _post(loop, _settle, s._opened, None)
    jobs = s._jobs
    cur = conn.cursor()  # one for every write (see _execute)
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
                errors = _execute(cur, [w.ops for w in batch])
            except Exception as exc:  # COMMIT failed: nothing more will be committed
                failed = exc
                _post(loop, s._failed, exc, batch)
                continue
            _post(loop, s._committed, batch, errors, started, time.perf_counter() - started)
            anchored = _anchor_when_idle(s, cur, anchored)
    finally:
        try:
            # Fold the WAL back into the database file on a clean close.
            _close(conn)
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
        _execute(cur, [(kv_op(AUDIT_ANCHOR_KEY, f"{now[0]}:{now[1]}"),)])
    except Exception as exc:  # noqa: BLE001 - the anchor is a check, never worth the store
        log.warning("store.anchor_failed", error=repr(exc))
        return anchored
    return now


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL mode (got {mode})")
        # No checkpoint inside a commit (with its fsync, it would stall the commit path by
        # milliseconds); the Store's checkpointer does it from its own thread and connection.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc
    return conn


def _close(conn: sqlite3.Connection) -> None:
    try:
        if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            log.warning("store.close_checkpoint_busy")
    finally:
        conn.close()


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                 "version INTEGER PRIMARY KEY, applied_ns INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = row[0] or 0
    if current > SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {current} was written by a newer dolphind "
                         f"(this one knows up to {SCHEMA_VERSION}); refusing to touch it")
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, time.time_ns()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("store.migrated", path=str(path), version=version)


_BAD_WRITE = (sqlite3.Error, ValueError, TypeError, OverflowError)


def _execute(cur: sqlite3.Cursor, units: list[tuple[Op, ...]]) -> list[Exception | None]:
    """Run every unit in one transaction, each all or nothing, and return each unit's error
    (None: committed). A failed COMMIT raises.

    The units first run back to back, with no savepoints: a unit that fails is a bug's symptom,
    not traffic, and two statements more per unit are two more GIL hand-offs with the loop on
    the latency path. Only when one fails is the transaction rolled back and run again with a
    savepoint per unit, so that the failing unit alone is left out.

    Everything goes through the store thread's one cursor: ``Connection.execute`` makes a
    cursor (and the connection a weak reference to it) per statement, garbage that brings the
    next pause of the cyclic collector closer (a pause stalls the loop as well)."""
    conn = cur.connection
    cur.execute("BEGIN IMMEDIATE")
    try:
        try:
            for ops in units:
                for sql, params in ops:
                    cur.execute(sql, params)
        except _BAD_WRITE as exc:
            if conn.in_transaction:  # some errors (disk full, say) have rolled it back already
                cur.execute("ROLLBACK")
            if len(units) == 1:
                return [exc]
            cur.execute("BEGIN IMMEDIATE")
            errors = _each_alone(cur, units)
        else:
            errors = [None] * len(units)
        cur.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            cur.execute("ROLLBACK")
        raise
    return errors


def _each_alone(cur: sqlite3.Cursor, units: list[tuple[Op, ...]]) -> list[Exception | None]:
    errors: list[Exception | None] = []
    for ops in units:
        cur.execute("SAVEPOINT w")
        try:
            for sql, params in ops:
                cur.execute(sql, params)
        except _BAD_WRITE as exc:
            cur.execute("ROLLBACK TO w")
            errors.append(exc)
        else:
            errors.append(None)
        cur.execute("RELEASE w")
    return errors


def _load_state(conn: sqlite3.Connection) -> RestoredState:
    acc = conn.execute("SELECT initial_capital_usdt, cash_usdt, realised_pnl_usdt, fees_usdt, "
                       "peak_equity_usdt FROM account WHERE id = 1").fetchone()
    positions = tuple(Position(*r) for r in conn.execute(
        "SELECT symbol, qty, avg_price, realised_pnl_usdt, fees_usdt, opened_ns, updated_ns "
        "FROM positions ORDER BY symbol"))
    marks = ",".join("?" * len(_TERMINAL_STATES))
    open_orders = tuple(_order_row(r) for r in conn.execute(
        f"SELECT * FROM orders WHERE state NOT IN ({marks}) ORDER BY created_ns",
        _TERMINAL_STATES))
    recent = tuple(reversed([_order_row(r) for r in conn.execute(
        "SELECT * FROM orders ORDER BY updated_ns DESC, created_ns DESC, client_id DESC "
        "LIMIT 50")]))
    client_ids = frozenset(r[0] for r in conn.execute("SELECT client_id FROM orders"))
    fill_ids = frozenset(r[0] for r in conn.execute("SELECT fill_id FROM fills"))
    kv = dict(conn.execute("SELECT key, value FROM kv").fetchall())
    version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    open_trades = tuple(_open_trade(conn, p) for p in positions if not p.flat)
    return RestoredState(
        account=Account(*acc) if acc else None, positions=positions, open_orders=open_orders,
        recent_orders=recent, client_ids=client_ids, fill_ids=fill_ids,
        scan_number=int(kv["scan_number"]) if "scan_number" in kv else None,
        halted=kv.get("halted") == "1", halt_reason=kv.get("halt_reason", ""),
        schema_version=int(version or 0), open_trades=open_trades)


def _open_trade(conn: sqlite3.Connection, pos: Position) -> OpenTrade:
    fills = since_flat([_fill_row(r) for r in conn.execute(
        "SELECT fill_id, client_id, symbol, side, qty, price, fee_usdt, liquidity, ts_ns, "
        "slippage_bps, reduce_only FROM fills WHERE symbol = ? ORDER BY rowid", (pos.symbol,))])
    ids = sorted({f.client_id for f in fills})
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT * FROM orders WHERE client_id IN ({marks})", ids).fetchall()
    leverage = {r[0]: r[_LEVERAGE] for r in rows if r[_LEVERAGE] is not None}
    return OpenTrade(pos, fills, tuple(_order_row(r) for r in rows), leverage)


def load_state_sync(path: str | Path) -> RestoredState:
    """Open, read and close (tests and tools; blocking)."""
    conn = _connect(Path(path), "NORMAL")
    try:
        return _load_state(conn)
    finally:
        conn.close()


def rows(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    return conn.execute(sql, tuple(params)).fetchall()
