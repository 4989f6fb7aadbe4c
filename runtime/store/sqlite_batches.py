"""A statement over a list of ids, run in batches: SQLite binds at most 999 variables in one
statement on older builds, so an `IN (...)` list goes 500 ids at a time."""
from __future__ import annotations

import sqlite3
from typing import Any, Iterator, Sequence

BATCH = 500


def in_batches(conn: sqlite3.Connection, statement: str, values: Sequence[Any],
               leading: tuple[Any, ...] = ()) -> Iterator[sqlite3.Cursor]:
    """Runs `statement`, which ends in `IN`, once per batch of `values` (`leading` bound before
    each batch) and yields each cursor: its rows or its rowcount are the caller's."""
    for start in range(0, len(values), BATCH):
        batch = values[start:start + BATCH]
        yield conn.execute(f"{statement} ({', '.join('?' for _ in batch)})", (*leading, *batch))
