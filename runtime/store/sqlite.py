"""The embedded registry store: one SQLite file in WAL mode, a schema version, migrations.

Each collection is a table of JSON documents plus the columns that listings filter and sort on,
so a filtered, ordered page of 25 out of 100k objects is an index walk. Every write runs in a
`BEGIN IMMEDIATE` transaction, so the server and a CLI can write the same file at once.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import StoreError
from ..listing import Filter, ListQuery
from ..schemas import Kind
from . import Scope, Store

_BASE_COLUMNS = ("id", "created", "updated", "deleted", "name")

# Ties in the sort order fall back to rowid (insertion order), which every index already ends with.
# Tables and their reference columns as of schema version 1. Frozen: a later change is a new
# migration, never an edit here.
_V1_TABLES: dict[str, tuple[str, ...]] = {
    "engines": (),
    "mlInstances": ("engineId",),
    "experiments": ("mlInstanceId",),
    "experimentRuns": ("experimentId", "mode"),
    "models": ("experimentRunId", "experimentId"),
    "insights": (),
    "mlServices": ("mlInstanceId",),
}


def _v1(conn: sqlite3.Connection) -> None:
    for table, refs in _V1_TABLES.items():
        ref_columns = "".join(f', "{c}" TEXT' for c in refs)
        conn.execute(
            f'CREATE TABLE "{table}" (id TEXT PRIMARY KEY, org TEXT NOT NULL, sandbox TEXT NOT NULL,'
            f' deleted INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, updated TEXT NOT NULL,'
            f' name TEXT{ref_columns}, doc TEXT NOT NULL)')
        for col in ("created", "updated", "name"):
            conn.execute(f'CREATE INDEX "{table}_{col}" ON "{table}" (org, sandbox, deleted, "{col}")')
        for ref in refs:
            conn.execute(
                f'CREATE INDEX "{table}_{ref}" ON "{table}" (org, sandbox, "{ref}", deleted, created)')
    conn.execute(
        "CREATE TABLE runStatus (id TEXT PRIMARY KEY, org TEXT NOT NULL, sandbox TEXT NOT NULL,"
        " state TEXT NOT NULL, doc TEXT NOT NULL)")


# Planner statistics for the shape of a large registry, independent of the data: names and
# timestamps nearly unique, about 1,000 rows per reference id, org/sandbox/deleted unselective.
# Without sqlite_stat1, SQLite prefers walking the ORDER BY index over every live row to using an
# equality on `name` (43 ms instead of 0.03 ms for name==X at 100k). A later ANALYZE replaces them.
_STAT_ROWS = 1_000_000
_STAT_PER_VALUE = {"created": 2, "updated": 2, "name": 2, "id": 1}


def _v2(conn: sqlite3.Connection) -> None:
    conn.execute("ANALYZE")   # creates sqlite_stat1; instant on the tables of a new store
    conn.execute("DELETE FROM sqlite_stat1")
    for table, refs in _V1_TABLES.items():
        for col in ("created", "updated", "name"):
            stat = f"{_STAT_ROWS} {_STAT_ROWS} {_STAT_ROWS} {_STAT_ROWS} {_STAT_PER_VALUE[col]}"
            conn.execute("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", (table, f"{table}_{col}", stat))
        for ref in refs:
            stat = f"{_STAT_ROWS} {_STAT_ROWS} {_STAT_ROWS} 1000 1000 2"
            conn.execute("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", (table, f"{table}_{ref}", stat))
        conn.execute("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)",
                     (table, f"sqlite_autoindex_{table}_1", f"{_STAT_ROWS} 1"))
    conn.execute("ANALYZE sqlite_schema")   # this connection loads the statistics now


MIGRATIONS = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)


class SQLiteStore(Store):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"Cannot create the store folder {self.path.parent}: {exc}") from exc
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._columns = {table: set(_BASE_COLUMNS) | set(refs) for table, refs in _V1_TABLES.items()}
        self._migrate()

    # -- connections and transactions ---------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=30.0)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error as exc:
                raise StoreError(f"Cannot open the registry store {self.path}: {exc}") from exc
            self._local.conn = conn
            self._local.depth = 0
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot start a write on {self.path}: {exc}") from exc
        self._local.depth = 1
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(f"Cannot commit to {self.path}: {exc}") from exc
        finally:
            self._local.depth = 0

    def _migrate(self) -> None:
        conn = self._conn()
        with self.transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"The registry store {self.path} has schema version {version}, newer than this "
                    f"runtime's {SCHEMA_VERSION}: upgrade mlinstance-runtime to open it")
            for step in MIGRATIONS[version:]:
                step(conn)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    # -- documents ----------------------------------------------------------------------------

    def _row(self, kind: Kind, scope: Scope, doc: dict[str, Any]) -> dict[str, Any]:
        row = {"id": doc["id"], "org": scope.org, "sandbox": scope.sandbox,
               "deleted": 1 if doc.get("deleted") else 0, "created": doc["created"],
               "updated": doc["updated"], "name": doc.get("name"),
               "doc": json.dumps(doc, separators=(",", ":"))}
        for col in kind.columns:
            row[col] = doc.get(col)
        return row

    def insert(self, kind: Kind, scope: Scope, doc: dict[str, Any]) -> None:
        row = self._row(kind, scope, doc)
        cols = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join("?" for _ in row)
        with self.transaction():
            self._conn().execute(f'INSERT INTO "{kind.collection}" ({cols}) VALUES ({marks})',
                                 tuple(row.values()))

    def replace(self, kind: Kind, scope: Scope, doc: dict[str, Any]) -> None:
        row = self._row(kind, scope, doc)
        sets = ", ".join(f'"{c}"=?' for c in row if c not in ("id", "org", "sandbox"))
        values = [v for c, v in row.items() if c not in ("id", "org", "sandbox")]
        with self.transaction():
            self._conn().execute(
                f'UPDATE "{kind.collection}" SET {sets} WHERE id=? AND org=? AND sandbox=?',
                (*values, doc["id"], scope.org, scope.sandbox))

    def get(self, kind: Kind, scope: Scope, id: str) -> Optional[dict[str, Any]]:
        row = self._conn().execute(
            f'SELECT doc FROM "{kind.collection}" WHERE id=? AND org=? AND sandbox=?',
            (id, scope.org, scope.sandbox)).fetchone()
        return json.loads(row[0]) if row else None

    def _expr(self, kind: Kind, field: str) -> str:
        if field in self._columns[kind.collection]:
            return f'"{field}"'
        return "json_extract(doc, '$." + field.replace("'", "") + "')"

    def _where(self, kind: Kind, filters: tuple[Filter, ...]) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for f in filters:
            expr = self._expr(kind, f.field)
            value = (1 if f.value else 0) if f.type == "bool" else f.value
            if f.op == "==":
                clauses.append(f"{expr} = ?")
            elif f.op == "!=":
                clauses.append(f"({expr} IS NULL OR {expr} != ?)")
            else:
                clauses.append(f"{expr} {f.op} ?")
            params.append(value)
        return (" AND " + " AND ".join(clauses)) if clauses else "", params

    def list(self, kind: Kind, scope: Scope, query: ListQuery) -> tuple[list[dict[str, Any]], int]:
        where, params = self._where(kind, query.filters)
        order = ", ".join(f"{self._expr(kind, f)} {'DESC' if d else 'ASC'}" for f, d in query.order)
        last = "DESC" if query.order and query.order[-1][1] else "ASC"
        base = f'FROM "{kind.collection}" WHERE org=? AND sandbox=?{where}'
        args = [scope.org, scope.sandbox, *params]
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) {base}", args).fetchone()[0]
        rows = conn.execute(f"SELECT doc {base} ORDER BY {order}, rowid {last} LIMIT ? OFFSET ?",
                            (*args, query.limit, query.start)).fetchall()
        return [json.loads(r[0]) for r in rows], total

    def live_ids(self, kind: Kind, scope: Scope, field: str, values: list[str]) -> list[str]:
        if not values:
            return []
        expr = self._expr(kind, field)
        ids: list[str] = []
        conn = self._conn()
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            marks = ", ".join("?" for _ in chunk)
            ids += [r[0] for r in conn.execute(
                f'SELECT id FROM "{kind.collection}" WHERE org=? AND sandbox=? AND deleted=0 '
                f"AND {expr} IN ({marks})", (scope.org, scope.sandbox, *chunk))]
        return ids

    def soft_delete(self, kind: Kind, scope: Scope, ids: list[str], updated: str) -> int:
        count = 0
        with self.transaction():
            conn = self._conn()
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ", ".join("?" for _ in chunk)
                count += conn.execute(
                    f'UPDATE "{kind.collection}" SET deleted=1, updated=?, '
                    "doc=json_set(doc, '$.deleted', json('true'), '$.updated', ?) "
                    f"WHERE org=? AND sandbox=? AND deleted=0 AND id IN ({marks})",
                    (updated, updated, scope.org, scope.sandbox, *chunk)).rowcount
        return count

    # -- run status ---------------------------------------------------------------------------

    def get_run_status(self, scope: Scope, run_id: str) -> Optional[dict[str, Any]]:
        row = self._conn().execute(
            "SELECT doc FROM runStatus WHERE id=? AND org=? AND sandbox=?",
            (run_id, scope.org, scope.sandbox)).fetchone()
        return json.loads(row[0]) if row else None

    def put_run_status(self, scope: Scope, run_id: str, state: str, status: dict[str, Any]) -> None:
        with self.transaction():
            self._conn().execute(
                "INSERT INTO runStatus (id, org, sandbox, state, doc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state=excluded.state, doc=excluded.doc",
                (run_id, scope.org, scope.sandbox, state, json.dumps(status)))
