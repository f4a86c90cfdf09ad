"""One transaction for a batch of writes, each write all or nothing (the store thread's only
way to write)."""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

Op = tuple[str, Sequence[Any]]

BAD_WRITE = (sqlite3.Error, ValueError, TypeError, OverflowError)


def execute(cur: sqlite3.Cursor, units: list[tuple[Op, ...]]) -> list[Exception | None]:
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
        except BAD_WRITE as exc:
            if conn.in_transaction:  # some errors (disk full, say) have rolled it back already
                cur.execute("ROLLBACK")
            if len(units) == 1:
                return [exc]
            cur.execute("BEGIN IMMEDIATE")
            errors = each_alone(cur, units)
        else:
            errors = [None] * len(units)
        cur.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            cur.execute("ROLLBACK")
        raise
    return errors


def each_alone(cur: sqlite3.Cursor, units: list[tuple[Op, ...]]) -> list[Exception | None]:
    errors: list[Exception | None] = []
    for ops in units:
        cur.execute("SAVEPOINT w")
        try:
            for sql, params in ops:
                cur.execute(sql, params)
        except BAD_WRITE as exc:
            cur.execute("ROLLBACK TO w")
            errors.append(exc)
        else:
            errors.append(None)
        cur.execute("RELEASE w")
    return errors
