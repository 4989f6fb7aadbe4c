"""Whole tables of the PostgreSQL store, for `run db copy` (runtime/store/copy.py): names, counts,
rows in insertion order, and loading rows, JSONB columns as Python values (as sqlite_tables.py
gives and takes them)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from .postgres_json import dumps

BATCH = 2000


class PgTablesMixin:
    """Mixed into PostgresStore (needs _all, _one, connection, _local, _pool, _jsonb and
    _documents_written)."""

    def table_names(self) -> list[str]:
        """The registry's tables, without the schema's own bookkeeping."""
        return [r[0] for r in self._all(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename "
            "NOT IN ('schema_version', 'storeVersion', 'documentCounts', 'documentCountDeltas', "
            "'referenceCounts', 'referenceCountDeltas') "
            "ORDER BY tablename")]

    def _column_types(self, table: str) -> dict[str, str]:
        return dict(self._all(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,)))

    def table_columns(self, table: str) -> list[str]:
        """The columns copied; `body` (a document's text) goes and comes as its `doc`."""
        return [c for c in self._column_types(table) if c != "body"]

    def table_count(self, table: str) -> int:
        return self._one(f'SELECT count(*) FROM "{table}"')[0]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state of the database (a repeatable-read transaction)."""
        with self._pool.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._local.conn, self._local.depth = conn, 1
            try:
                yield
            finally:
                self._local.conn, self._local.depth = None, 0
                conn.execute("COMMIT")

    def table_rows(self, table: str, columns: list[str]) -> Iterator[tuple]:
        """The rows in insertion order (`seq` where the table has one); a server-side cursor, so a
        large table is not held in memory (call inside snapshot())."""
        types = self._column_types(table)
        order = " ORDER BY seq" if "seq" in types else ""
        # A document's key order is its text's, not its JSONB's.
        cols = ", ".join('"body"' if c == "doc" and "body" in types else f'"{c}"' for c in columns)
        text = [c == "doc" and "body" in types for c in columns]
        with self.connection() as conn:
            with conn.cursor(name=f"dump_{abs(hash(table))}") as cur:
                cur.itersize = BATCH
                cur.execute(f'SELECT {cols} FROM "{table}"{order}')
                for row in cur:
                    yield tuple(json.loads(v) if t else v for v, t in zip(row, text))

    def table_load(self, table: str, columns: list[str], rows: Iterable[tuple]) -> None:
        """Inserts `rows` inside the caller's transaction (a row already there is replaced); a
        copied queue place moves the ledger's sequence past it."""
        types = self._column_types(table)
        body = "body" in types and "doc" in columns
        if body:
            columns = [*columns, "body"]
        jsonb = [types.get(c) == "jsonb" for c in columns]
        keys = [r[0] for r in self._all(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (f'"{table}"',))]
        cols = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("%s" for _ in columns)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in keys)
        conflict = ""
        if keys:
            action = f"UPDATE SET {updates}" if updates else "NOTHING"
            conflict = f" ON CONFLICT ({', '.join(f'{chr(34)}{k}{chr(34)}' for k in keys)}) DO {action}"
        sql = f'INSERT INTO "{table}" ({cols}) VALUES ({marks}){conflict}'
        self._documents_written()
        with self.connection() as conn:
            batch: list[tuple] = []
            doc_at = columns.index("doc") if body else -1
            for row in rows:
                if body:
                    row = (*row, dumps(row[doc_at]))
                batch.append(tuple(self._jsonb(v) if j and v is not None else v
                                   for v, j in zip(row, jsonb)))
                if len(batch) >= BATCH:
                    conn.cursor().executemany(sql, batch)
                    batch = []
            if batch:
                conn.cursor().executemany(sql, batch)
            if table == "runLedger":
                conn.execute("SELECT setval('\"runLedger_seq\"', greatest((SELECT max(seq) FROM "
                             '"runLedger"), 1))')

    def table_clear(self, table: str) -> None:
        self._documents_written()
        with self.connection() as conn:
            conn.execute(f'DELETE FROM "{table}"')
