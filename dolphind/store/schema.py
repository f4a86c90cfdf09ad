"""The store's schema: versioned migrations, and opening a database file in the mode the store
needs (WAL, no automatic checkpoint, the chosen ``synchronous``).

The schema is versioned in ``schema_version``; ``MIGRATIONS`` are applied in order at open, and
a database written by a newer dolphind is refused.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import structlog

log = structlog.get_logger("dolphind.store")

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


class StoreError(Exception):
    """A store that cannot be opened or used (the message says why)."""


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
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
        migrate(conn, path)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc
    return conn


def close(conn: sqlite3.Connection) -> None:
    try:
        if conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            log.warning("store.close_checkpoint_busy")
    finally:
        conn.close()


def migrate(conn: sqlite3.Connection, path: Path) -> None:
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
