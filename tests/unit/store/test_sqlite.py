"""The SQLite store: restart survival, integrity, migrations, one writer, failures."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from dolphind.events import Fill, Order
from dolphind.orders.portfolio import Position
from dolphind.telemetry.metrics import Metrics
from dolphind.store.sqlite import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Account,
    Store,
    StoreError,
    StoreFailed,
    account_op,
    fill_op,
    order_op,
    position_op,
    since_flat,
)


def _order(cid: str, state: str = "new") -> Order:
    return Order(cid, f"intent-{cid}", "BTCUSDT", "SELL", 0.05, "MARKET", 0.0, False, "ENTRY",
                 state, created_ns=1, updated_ns=1, ref_price=40_000.0)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()  # built outside the loop: its process collector reads /proc


async def test_store_survives_a_restart(tmp_path, metrics):
    path = tmp_path / "d.sqlite"
    m = metrics
    async with await Store.open(path, m.execution, m.channels) as store:
        await store.write(account_op(Account(10_000.0, 9_999.372, 0.0, 0.628, 10_000.0), 5),
                          wait=True)
        await store.write(order_op(_order("a", "filled")), order_op(_order("b", "acked")),
                          position_op(Position("BTCUSDT", -0.05, 40_000.0, 0.0, 0.628, 1, 2)),
                          fill_op(Fill("a-1", "a", "BTCUSDT", "SELL", 0.05, 40_000.0, 0.628,
                                       "BLENDED", 2), 0.0))
        for n in range(1, 101):
            await store.save_scan_checkpoint(n)
        await store.save_control(True, "operator")
    # Closed: everything queued was committed. Reopen as a restart would.
    async with await Store.open(path) as store:
        state = await store.load_state()
        assert await store.integrity_check() == "ok"
        mode = await store.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"
    assert state.account == Account(10_000.0, 9_999.372, 0.0, 0.628, 10_000.0)
    assert state.positions == (Position("BTCUSDT", -0.05, 40_000.0, 0.0, 0.628, 1, 2),)
    assert [o.client_id for o in state.open_orders] == ["b"]
    assert state.client_ids == {"a", "b"} and state.fill_ids == {"a-1"}
    assert state.scan_number == 100
    assert (state.halted, state.halt_reason) == (True, "operator")
    assert state.schema_version == SCHEMA_VERSION
    assert m.registry.get_sample_value("dolphind_store_commits_total") >= 1


async def test_writes_are_batched_and_waiters_see_their_commit(tmp_path):
    async with await Store.open(tmp_path / "d.sqlite") as store:
        await asyncio.gather(*(store.write(order_op(_order(f"o{i}")), wait=True)
                               for i in range(500)))
        n = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
        assert n == 500
        assert store.commits < 500  # group commit: many writes per transaction


async def test_a_bad_write_fails_alone(tmp_path):
    async with await Store.open(tmp_path / "d.sqlite") as store:
        good = store.write(order_op(_order("ok")), wait=True)
        bad = store.write(("INSERT INTO nope VALUES (?)", (1,)), wait=True)
        results = await asyncio.gather(good, bad, return_exceptions=True)
        assert results[0] is None and isinstance(results[1], sqlite3.OperationalError)
        assert store.readiness() == "ok"
        await store.write(order_op(_order("after")), wait=True)
        state = await store.load_state()
    assert state.client_ids == {"ok", "after"}


async def test_a_failing_unit_is_left_out_whole_from_a_shared_commit(tmp_path):
    """Three units in one transaction (two held writes taken along by a waited one); the
    middle one fails on its second statement: its first is rolled back with it, the others
    commit."""
    async with await Store.open(tmp_path / "d.sqlite", linger_s=10.0) as store:
        await store.write(order_op(_order("a")))
        await store.write(order_op(_order("half")), ("INSERT INTO nope VALUES (?)", (1,)))
        await store.write(order_op(_order("c")), wait=True)
        commits = store.commits
        state = await store.load_state()
    assert commits == 1 and state.client_ids == {"a", "c"}


async def test_a_database_from_a_newer_dolphind_is_refused(tmp_path):
    path = tmp_path / "d.sqlite"
    async with await Store.open(path):
        pass
    con = sqlite3.connect(path)
    con.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer dolphind"):
        await Store.open(path)


async def test_migrations_apply_once(tmp_path):
    path = tmp_path / "d.sqlite"
    for _ in range(2):
        async with await Store.open(path) as store:
            versions = await store.read(
                lambda c: c.execute("SELECT version FROM schema_version").fetchall())
    assert versions == [(v,) for v, _ in MIGRATIONS] == [(1,), (2,), (3,)]


def _old_store(path, version: int) -> None:
    """A database as dolphind ``version`` (1 or 2) left it: an order (with its leverage from
    v2 on), its fill and the open position, written with that version's own SQL."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                "applied_ns INTEGER NOT NULL)")
    for v, statements in MIGRATIONS[:version]:
        for sql in statements:
            con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?, 0)", (v,))
    o = _order("a", "filled")
    con.execute("INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                order_op(o)[1][:-1])
    if version >= 2:
        con.execute("INSERT INTO order_intents VALUES (?, ?)", ("a", 2.5))
    con.execute(*fill_op(Fill("a-1", "a", "BTCUSDT", "SELL", 0.05, 40_000.0, 0.628,
                              "BLENDED", 2), 0.0))
    con.execute("INSERT INTO positions VALUES (?,?,?,?,?,?,?)",
                ("BTCUSDT", -0.05, 40_000.0, 0.0, 0.628, 2, 2))
    con.close()


@pytest.mark.parametrize("version,leverage", [(1, {}), (2, {"a": 2.5})])
async def test_an_older_database_is_migrated_and_keeps_its_data(tmp_path, version, leverage):
    """v1 had no leverage, v2 kept it in order_intents; v3 keeps it on the order row. The rows
    stay, the open trade is rebuilt from its fills, and an update of an order keeps the
    leverage its write-ahead recorded."""
    path = tmp_path / "d.sqlite"
    _old_store(path, version)
    async with await Store.open(path) as store:
        state = await store.load_state()
        await store.write(order_op(_order("b"), 3.0), wait=True)
        await store.write(order_op(_order("b", "acked")), wait=True)  # no leverage given
        lev = await store.read(lambda c: c.execute(
            "SELECT client_id, leverage FROM orders ORDER BY client_id").fetchall())
        tables = await store.read(lambda c: c.execute(
            "SELECT name, sql FROM sqlite_master").fetchall())
        assert await store.integrity_check() == "ok"
    assert state.schema_version == 3 and state.client_ids == {"a"}
    assert state.positions == (Position("BTCUSDT", -0.05, 40_000.0, 0.0, 0.628, 2, 2),)
    [trade] = state.open_trades
    assert [f.fill_id for f in trade.fills] == ["a-1"] and trade.leverage == leverage
    assert [o for o in trade.orders] == [_order("a", "filled")]
    assert lev == [("a", leverage.get("a")), ("b", 3.0)]
    names = {n for n, _ in tables}
    assert "order_intents" not in names and "orders_state" not in names
    assert all("WITHOUT ROWID" in sql for n, sql in tables if n in ("orders", "positions"))


def _fill(fid: str, side: str, qty: float) -> Fill:
    return Fill(fid, fid, "BTCUSDT", side, qty, 40_000.0, 0.1, "TAKER", 1)


@pytest.mark.parametrize("sides,expected", [
    ([], []),
    ([("a", "BUY", 0.1)], ["a"]),
    # closed, then reopened: only the reopened trade's fills
    ([("a", "BUY", 0.1), ("b", "SELL", 0.1), ("c", "SELL", 0.3), ("d", "SELL", 0.1)],
     ["c", "d"]),
    # float drift (0.1 + 0.2 - 0.3) still reads flat
    ([("a", "BUY", 0.1), ("b", "BUY", 0.2), ("c", "SELL", 0.3), ("d", "BUY", 0.1)], ["d"]),
    # flat at the end: nothing open
    ([("a", "BUY", 0.1), ("b", "SELL", 0.1)], []),
])
def test_since_flat_keeps_the_open_trades_fills(sides, expected):
    assert [f.fill_id for f in since_flat([_fill(*x) for x in sides])] == expected


async def test_open_trades_are_restored_per_open_position(tmp_path):
    path = tmp_path / "d.sqlite"
    async with await Store.open(path) as store:
        await store.write(order_op(_order("a", "filled"), 2.5),
                          order_op(_order("z", "filled")),
                          fill_op(Fill("z-1", "z", "ETHUSDT", "BUY", 1.0, 2500.0, 0.1,
                                       "TAKER", 1), 0.0),
                          fill_op(Fill("z-2", "z", "ETHUSDT", "SELL", 1.0, 2500.0, 0.1,
                                       "TAKER", 2), 0.0),
                          fill_op(Fill("a-1", "a", "BTCUSDT", "SELL", 0.05, 40_000.0, 0.628,
                                       "BLENDED", 3), 0.0),
                          position_op(Position("BTCUSDT", -0.05, 40_000.0, 0.0, 0.628, 3, 3)),
                          wait=True)
        state = await store.load_state()
    [trade] = state.open_trades  # ETHUSDT is flat: no open trade
    assert trade.position.symbol == "BTCUSDT"
    assert [f.fill_id for f in trade.fills] == ["a-1"]
    assert trade.leverage == {"a": 2.5}


async def test_writes_after_close_are_refused(tmp_path):
    store = await Store.open(tmp_path / "d.sqlite")
    async with store:
        pass
    with pytest.raises(StoreError, match="closed"):
        await store.write(order_op(_order("late")))


async def test_pending_counts_writes_until_they_are_committed(tmp_path):
    store = await Store.open(tmp_path / "d.sqlite")
    await store.write(order_op(_order("a")))  # queued: the writer is not running yet
    assert store.pending == 1 and store.status()["pending"] == 1
    async with store:
        await store.write(order_op(_order("b")), wait=True)  # FIFO: "a" is committed too
        assert store.pending == 0
        state = await store.load_state()
    assert state.client_ids == {"a", "b"}


async def test_a_failed_commit_fails_the_store_and_every_write_after_it(tmp_path, metrics,
                                                                       monkeypatch):
    """A COMMIT that fails (disk full, I/O error) means the store can no longer be trusted: the
    writers of that batch and every later writer get StoreFailed, /readyz says why, the
    failure is counted, and closing still ends (nothing hangs on a dead store)."""
    from dolphind.store import transactions as store_module

    real = store_module.execute
    broken = {"on": False}

    def execute(conn, units):
        if broken["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real(conn, units)

    monkeypatch.setattr(store_module, "execute", execute)
    async with await Store.open(tmp_path / "d.sqlite", metrics.execution) as store:
        await store.write(order_op(_order("before")), wait=True)
        broken["on"] = True
        with pytest.raises(StoreFailed, match="disk is full"):
            await store.write(order_op(_order("lost")), wait=True)
        assert "store failed" in store.readiness()
        with pytest.raises(StoreFailed):
            await store.write(order_op(_order("later")))
        assert store.pending == 0
        broken["on"] = False
        state = await store.load_state()  # reads still work: what was committed is there
    assert state.client_ids == {"before"}
    assert metrics.registry.get_sample_value("dolphind_store_failures_total") == 1


async def test_a_read_sees_every_write_queued_before_it(tmp_path):
    async with await Store.open(tmp_path / "d.sqlite") as store:
        for i in range(20):
            await store.write(order_op(_order(f"o{i}")))  # not waited for
        n = await store.read(lambda c: c.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
    assert n == 20


async def test_a_write_nobody_waits_for_joins_the_next_waiters_commit(tmp_path):
    """An order's ack (nobody waits) and its fill (waited for) arrive microseconds apart: one
    commit, not a commit the fill must queue behind. Not waited for, it is still committed
    within the linger time. (A long linger here, so a loaded machine cannot split a pair.)"""
    async with await Store.open(tmp_path / "d.sqlite", linger_s=0.05) as store:
        for i in range(20):
            await store.write(order_op(_order(f"ack{i}")))
            await asyncio.sleep(0.005)  # well inside the linger
            await store.write(order_op(_order(f"fill{i}")), wait=True)
        assert store.commits == 20, store.commits  # 40 if every ack were committed alone
        await store.write(order_op(_order("alone")))
        for _ in range(200):
            if store.pending == 0:
                break
            await asyncio.sleep(0.005)
        assert store.pending == 0


async def test_a_crashed_checkpointer_is_logged_counted_and_shown(tmp_path, metrics, monkeypatch):
    """The checkpointer cannot open its connection: the crash is seen (log, counter,
    status), and the store goes on committing (the WAL holds the commits)."""
    from structlog.testing import capture_logs

    from dolphind.store import sqlite as store_module

    path = tmp_path / "d.sqlite"
    store = await Store.open(path, metrics.execution, metrics.channels)

    def refused(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    with capture_logs() as logs:
        monkeypatch.setattr(store_module.sqlite3, "connect", refused)
        async with store:
            for _ in range(100):
                if store.checkpointer_crash is not None:
                    break
                await asyncio.sleep(0.01)
            monkeypatch.undo()
            assert store.status()["checkpointer_crash"] == \
                "OperationalError: unable to open database file"
            await store.save_control(True, "operator")  # the store itself goes on
            await store.write(order_op(_order("a")), wait=True)
    get = metrics.registry.get_sample_value
    assert get("dolphind_task_crashes_total", {"task": "store-checkpointer"}) == 1
    crashed = [e for e in logs if e["event"] == "task.crashed"]
    assert crashed and crashed[0]["task"] == "store-checkpointer" and crashed[0]["exc_info"]
