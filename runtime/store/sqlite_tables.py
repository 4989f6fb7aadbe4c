"""Whole tables of the SQLite store, for `run db copy` (runtime/store/copy.py): names, counts, rows
in insertion order, and loading rows, JSON columns as Python values (as the PostgreSQL store's
postgres_tables.py gives and takes them)."""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

# Text columns that hold JSON documents (schedules keep spec and doc as JSON text in both stores).
_TEXT_JSON_TABLES = ("schedules",)


class SQLiteTablesMixin:
    """Mixed into SQLiteStore (needs _conn, _local, transaction)."""

    def table_names(self) -> list[str]:
        return [r[0] for r in self._conn().execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]

    def table_columns(self, table: str) -> list[str]:
        return [r[1] for r in self._conn().execute(f'PRAGMA table_info("{table}")')]

    def table_count(self, table: str) -> int:
        return self._conn().execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state of the file (a read transaction)."""
        conn = self._conn()
        conn.execute("BEGIN")
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            conn.execute("COMMIT")

    def table_rows(self, table: str, columns: list[str]) -> Iterator[tuple]:
        conn = self._conn()
        order = ""
        try:
            conn.execute(f'SELECT rowid FROM "{table}" LIMIT 0')
            order = " ORDER BY rowid"
        except sqlite3.OperationalError:   # WITHOUT ROWID: its key's order
            pass
        parsed = [c == "doc" and table not in _TEXT_JSON_TABLES for c in columns]
        cols = ", ".join(f'"{c}"' for c in columns)
        for row in conn.execute(f'SELECT {cols} FROM "{table}"{order}'):
            yield tuple(json.loads(v) if p and v is not None else v for v, p in zip(row, parsed))

    def table_load(self, table: str, columns: list[str], rows: Iterable[tuple]) -> None:
        """Inserts `rows` inside the caller's transaction (a row already there is replaced)."""
        cols = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        self._conn().executemany(
            f'INSERT OR REPLACE INTO "{table}" ({cols}) VALUES ({marks})',
            (tuple(json.dumps(v) if isinstance(v, (dict, list)) else v for v in row)
             for row in rows))

    def table_clear(self, table: str) -> None:
        self._conn().execute(f'DELETE FROM "{table}"')
