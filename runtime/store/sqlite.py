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
from .sqlite_batches import in_batches
from .sqlite_runs import RunIndex
from .sqlite_schedules import SchedulesMixin
from .sqlite_tables import SQLiteTablesMixin

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


def _v3_run_ledger(conn: sqlite3.Connection) -> None:
    # One row per live run that a process owns (runtime.supervisor): the FIFO order, the phase
    # (preparing, queued, running), the owner and worker identities and the capacity it holds,
    # as JSON. A run's row goes when the run reaches a terminal state.
    conn.execute(
        "CREATE TABLE runLedger (run_id TEXT PRIMARY KEY, org TEXT NOT NULL, sandbox TEXT NOT NULL,"
        " seq INTEGER NOT NULL, phase TEXT NOT NULL, doc TEXT NOT NULL)")
    conn.execute("CREATE INDEX runStatus_state ON runStatus (state)")


def _v4_datasets(conn: sqlite3.Connection) -> None:
    # The data set catalog (runtime.datasets): `run datasets add ID PATH`, one row per id and
    # sandbox, the location as a file:// URI and the format (NULL: a folder whose files say it).
    conn.execute(
        "CREATE TABLE datasets (org TEXT NOT NULL, sandbox TEXT NOT NULL, id TEXT NOT NULL,"
        " uri TEXT NOT NULL, format TEXT, created TEXT NOT NULL, doc TEXT NOT NULL,"
        " PRIMARY KEY (org, sandbox, id))")


def _v_run_views(conn: sqlite3.Connection) -> None:
    # The runs view (runtime.run_views): an index row per run kept by triggers, its sortable
    # parameters and metrics, and per-step metric series. See store/sqlite_runs.py.
    from .sqlite_runs import create_run_views

    create_run_views(conn)


def _v_schedules(conn: sqlite3.Connection) -> None:
    # The scheduler (runtime.scheduler): one row per schedule (an MLService's training or scoring
    # schedule, an Experiment's template.schedule) with its next fire time, so a restart neither
    # loses nor repeats a fire; per-MLService state (paused, published Model, its Experiment);
    # and leases, so that one server of a home fires.
    from .sqlite_schedules import create_schedule_tables

    create_schedule_tables(conn)


def _v_run_search(conn: sqlite3.Connection) -> None:
    # The runs' system metrics summaries and tags beside their parameters and metrics, for the
    # runs table's sort and the search language (store/sqlite_runs.py, runtime/run_search.py).
    from .sqlite_runs import create_run_search

    create_run_search(conn)


MIGRATIONS = (_v1, _v2, _v3_run_ledger, _v4_datasets, _v_run_views, _v_schedules, _v_run_search)
SCHEMA_VERSION = len(MIGRATIONS)


class SQLiteStore(SchedulesMixin, SQLiteTablesMixin, Store):
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

    def get_text(self, kind: Kind, scope: Scope, id: str) -> Optional[str]:
        """A live document's stored text, None when missing or deleted: what `json.dumps(doc,
        separators=(",", ":"))` wrote (_row; only a soft delete edits it in SQL), which is the
        compact JSON of `get`'s answer byte for byte, so the API can send it unparsed."""
        row = self._conn().execute(
            f'SELECT doc FROM "{kind.collection}" WHERE id=? AND org=? AND sandbox=? AND deleted=0',
            (id, scope.org, scope.sandbox)).fetchone()
        return row[0] if row else None

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
        statement = (f'SELECT id FROM "{kind.collection}" WHERE org=? AND sandbox=? AND deleted=0 '
                     f"AND {self._expr(kind, field)} IN")
        return [row[0] for cursor in in_batches(self._conn(), statement, values,
                                                (scope.org, scope.sandbox)) for row in cursor]

    def soft_delete(self, kind: Kind, scope: Scope, ids: list[str], updated: str) -> int:
        statement = (f'UPDATE "{kind.collection}" SET deleted=1, updated=?, '
                     "doc=json_set(doc, '$.deleted', json('true'), '$.updated', ?) "
                     "WHERE org=? AND sandbox=? AND deleted=0 AND id IN")
        with self.transaction():
            return sum(cursor.rowcount for cursor in in_batches(
                self._conn(), statement, ids, (updated, updated, scope.org, scope.sandbox)))

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

    # -- the run ledger (runtime.supervisor) ------------------------------------------------------

    def ledger_rows(self) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT run_id, org, sandbox, seq, phase, doc FROM runLedger ORDER BY seq").fetchall()
        return [{**json.loads(doc), "run_id": run_id, "org": org, "sandbox": sandbox, "seq": seq,
                 "phase": phase} for run_id, org, sandbox, seq, phase, doc in rows]

    def ledger_get(self, run_id: str) -> Optional[dict[str, Any]]:
        row = self._conn().execute(
            "SELECT run_id, org, sandbox, seq, phase, doc FROM runLedger WHERE run_id=?",
            (run_id,)).fetchone()
        if row is None:
            return None
        return {**json.loads(row[5]), "run_id": row[0], "org": row[1], "sandbox": row[2],
                "seq": row[3], "phase": row[4]}

    def ledger_put(self, scope: Scope, run_id: str, phase: str, fields: dict[str, Any]) -> None:
        with self.transaction():
            conn = self._conn()
            row = conn.execute("SELECT doc FROM runLedger WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM runLedger").fetchone()[0]
                conn.execute("INSERT INTO runLedger (run_id, org, sandbox, seq, phase, doc) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (run_id, scope.org, scope.sandbox, seq, phase, json.dumps(fields)))
            else:
                doc = {**json.loads(row[0]), **fields}
                conn.execute("UPDATE runLedger SET phase=?, doc=? WHERE run_id=?",
                             (phase, json.dumps(doc), run_id))

    def ledger_delete(self, run_ids: list[str]) -> int:
        with self.transaction():
            return sum(cursor.rowcount for cursor in in_batches(
                self._conn(), "DELETE FROM runLedger WHERE run_id IN", run_ids))

    def live_run_states(self) -> list[tuple[str, str, str, str]]:
        """(run id, org, sandbox, state) of every run not yet in a terminal state."""
        return [tuple(r) for r in self._conn().execute(
            "SELECT id, org, sandbox, state FROM runStatus "
            "WHERE state NOT IN ('DONE', 'FAILED', 'ABORTED')")]

    def data_version(self) -> int:
        """Changes when another connection commits: a cheap way to notice other processes."""
        return self._conn().execute("PRAGMA data_version").fetchone()[0]

    # -- the runs view (runtime.run_views) -----------------------------------------------------

    def run_index(self) -> RunIndex:
        return RunIndex(self._conn, self.transaction)

    # -- the data set catalog (runtime.datasets) ----------------------------------------------

    def dataset_put(self, scope: Scope, entry: dict[str, Any], *, replace: bool = False) -> bool:
        """Store `entry` ({id, uri, format, created}); False when the id exists and not `replace`."""
        with self.transaction():
            conn = self._conn()
            exists = conn.execute("SELECT 1 FROM datasets WHERE org=? AND sandbox=? AND id=?",
                                  (scope.org, scope.sandbox, entry["id"])).fetchone()
            if exists and not replace:
                return False
            conn.execute(
                "INSERT INTO datasets (org, sandbox, id, uri, format, created, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(org, sandbox, id) DO UPDATE SET "
                "uri=excluded.uri, format=excluded.format, created=excluded.created, doc=excluded.doc",
                (scope.org, scope.sandbox, entry["id"], entry["uri"], entry.get("format"),
                 entry["created"], json.dumps(entry)))
        return True

    def dataset_list(self, scope: Scope) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._conn().execute(
            "SELECT doc FROM datasets WHERE org=? AND sandbox=? ORDER BY id",
            (scope.org, scope.sandbox))]

    def dataset_delete(self, scope: Scope, dataset_id: str) -> bool:
        with self.transaction():
            return self._conn().execute(
                "DELETE FROM datasets WHERE org=? AND sandbox=? AND id=?",
                (scope.org, scope.sandbox, dataset_id)).rowcount > 0
