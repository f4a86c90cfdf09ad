"""SQLite time of the two commits on the intent-to-fill path, schema v3 against schema v2.

The execution stage commits twice per intent: the order before it is sent (the write-ahead)
and, after the paper fill, the order's ack together with the fill's unit (fill, position,
account, order, equity snapshot). This times those two transactions, statement for statement
as the store runs them, on a database of each schema version, in the same process and
alternating, so both see the same machine:

- v2 (baseline): orders is a rowid table with a primary-key index and a state index, the
  intent's leverage is a second row in ``order_intents``, positions is a rowid table;
- v3 (shipped): orders and positions are WITHOUT ROWID (one B-tree each), leverage is a column.

Every dirty B-tree page is a WAL frame written and checksummed inside COMMIT, so fewer pages
per row is shorter commits. Single thread, no event loop: this is the SQLite part only
(bench/execution.py measures the whole path).

    .venv/bin/python bench/store.py [--n 5000]

Last line: ``RESULT write_ahead_us=... fill_us=... v2_write_ahead_us=... v2_fill_us=...``
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from dolphind.events import Fill, Order
from dolphind.orders.portfolio import Position
from dolphind.orders.router import transition
from dolphind.logs import configure
from dolphind.store.schema import connect as _connect
from dolphind.store.transactions import execute as _execute
from dolphind.store.sqlite import (
    MIGRATIONS,
    Account,
    account_op,
    equity_op,
    fill_op,
    order_op,
    position_op,
)

# The v2 statements for what v3 writes differently (the rest is the same SQL in both).
_V2_ORDER = "INSERT OR REPLACE INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_V2_INTENT = "INSERT OR REPLACE INTO order_intents VALUES (?,?)"


def _v2_database(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA synchronous = NORMAL")
    for _, statements in MIGRATIONS[:2]:
        for sql in statements:
            conn.execute(sql)
    return conn


def _units(i: int, v2: bool) -> tuple[list, list]:
    """(the write-ahead unit, the ack and fill units) of intent ``i``."""
    cid = f"dd-{i:032d}"
    new = Order(cid, f"bench:{i}", "BTCUSDT", "SELL", 0.025, "MARKET", 0.0, False, "ENTRY",
                "new", created_ns=i, updated_ns=i, ref_price=40_000.0)
    acked = transition(new, "acked", i, venue_order_id=f"paper-{i}")
    filled = transition(acked, "filled", i, filled_qty=0.025, avg_fill_price=40_000.0)

    def order(o: Order, leverage: float | None = None) -> list:
        if not v2:
            return [order_op(o, leverage)]
        row = order_op(o)[1][:-1]
        return [(_V2_ORDER, row)] + ([(_V2_INTENT, (cid, leverage))] if leverage else [])

    fill = Fill(f"{cid}-1", cid, "BTCUSDT", "SELL", 0.025, 40_000.0, 0.4, "TAKER", i)
    pos = Position("BTCUSDT", -0.025 * (i % 2), 40_000.0, 0.0, 0.4, i, i)
    fill_unit = ([fill_op(fill, 0.0), position_op(pos),
                  account_op(Account(10_000.0, 9_999.6, 0.0, 0.4, 10_000.0), i)]
                 + order(filled) + [equity_op(i, 9_999.6, 9_999.6, 0.0, 10_000.0, 0.0, 0.0)])
    return order(new, 1.0), [order(acked), fill_unit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="intents per schema (after a warm-up)")
    args = ap.parse_args()
    configure("warning", "console")
    with tempfile.TemporaryDirectory(prefix="dolphind-bench-") as tmp:
        curs = {"v3": _connect(Path(tmp) / "v3.sqlite", "NORMAL").cursor(),
                "v2": _v2_database(Path(tmp) / "v2.sqlite").cursor()}
        times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in curs}
        for i in range(args.n + 1000):  # the first 1000: tables grow past a few pages
            for name, cur in curs.items():
                ahead, fill = _units(i, name == "v2")
                t0 = time.perf_counter()
                _execute(cur, [tuple(ahead)])
                t1 = time.perf_counter()
                _execute(cur, [tuple(u) for u in fill])
                t2 = time.perf_counter()
                if i >= 1000:
                    times[name][0].append(t1 - t0)
                    times[name][1].append(t2 - t1)
    med = {k: (statistics.median(a) * 1e6, statistics.median(f) * 1e6)
           for k, (a, f) in times.items()}
    for name, (a, f) in med.items():
        print(f"{name}: write-ahead commit p50 {a:6.1f} us   ack+fill commit p50 {f:6.1f} us")
    (a3, f3), (a2, f2) = med["v3"], med["v2"]
    print(f"v3 vs v2: write-ahead {a2 / a3:.2f}x faster, ack+fill {f2 / f3:.2f}x faster")
    print(f"RESULT write_ahead_us={a3:.1f} fill_us={f3:.1f} v2_write_ahead_us={a2:.1f} "
          f"v2_fill_us={f2:.1f}")


if __name__ == "__main__":
    main()
