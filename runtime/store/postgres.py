"""The registry store on PostgreSQL (`postgresql://user@host:port/db`), for a team's servers that
share one registry: psycopg 3 with a connection pool, the SQLite store's tables and behaviour.

Every write transaction takes one advisory lock before its first statement runs
(`pg_advisory_xact_lock`, sent with that statement), so a read-modify-write inside
`transaction()` is as safe as under SQLite's BEGIN IMMEDIATE, from any process on any host; the
statements that matter alone (the ledger's queue place, a lease, a schedule's claim) are also
safe by themselves (a sequence, INSERT ... ON CONFLICT ... WHERE, a conditional UPDATE). Reads
outside a transaction use a pooled connection in autocommit mode for one statement; inside one,
the thread's transaction connection.

Schema: store/postgres_schema.py (its docstring lists how the tables differ from SQLite's). For the
runs view (store/postgres_runs.py): `connection()` gives the connection to use now (the thread's
transaction connection, else a pooled autocommit one) and `transaction()` joins or starts a write.
"""
from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional

from ..errors import BadRequest, StoreError
from ..listing import Filter, ListQuery
from ..schemas import Kind
from . import Scope, Store
from .postgres_json import dumps, has_nul
from .postgres_schedules import PgSchedulesMixin
from .postgres_tables import PgTablesMixin
from .postgres_schema import (COUNT, DOCUMENT_TABLES, REFERENCE_COUNT, SCHEMA_VERSION,
                              WRITE_LOCK, current_version, migrate)

INSTALL = "pip install 'mlinstance-runtime[postgres]'"
POOL_MAX = 16
# A write waits for the write lock as long as SQLite's busy timeout (30 s), then fails clearly; a
# client that stops answering inside a transaction (its host died) loses it after two minutes
# instead of holding every server's writes until TCP notices.
SESSION_OPTIONS = "-c lock_timeout=30s -c idle_in_transaction_session_timeout=120s"
_BASE_COLUMNS = ("id", "created", "updated", "deleted", "name")
_TERMINAL = ("DONE", "FAILED", "ABORTED")
# A write transaction holds the write lock for as few round trips as it can: BEGIN and the lock
# go with its first statement, and its end with the COMMIT, in one string (no parameters: the
# simple query protocol) or one pipeline, so no network wait falls between them. Its end is
# "endWrite" (the kept counts' fold and the version's bump: postgres_schema.py) after a document
# was written, else the bump alone (a fold scans the delta tables, where deletes leave dead rows).
_BEGIN_WRITE = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
_END_WRITE = {True: 'SELECT "endWrite"()',
              False: 'UPDATE "storeVersion" SET n = n + 1 WHERE id = 1'}


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise StoreError(f"A PostgreSQL registry store needs psycopg and psycopg-pool ({exc.name} "
                         f"is not installed): {INSTALL}") from exc
    return psycopg


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"^(\w+://[^:/@]*):[^@]*@", r"\1:***@", url)


class PostgresStore(PgSchedulesMixin, PgTablesMixin, Store):
    def __init__(self, url: str) -> None:
        psycopg = _psycopg()
        from psycopg.types.json import Jsonb
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        self._jsonb = lambda value: Jsonb(value, dumps=dumps)
        self._conninfo = url
        self.url = redacted(url)
        self._local = threading.local()
        self._columns = {t: set(_BASE_COLUMNS) | set(refs) for t, refs in DOCUMENT_TABLES.items()}
        self._migrate()
        self._pool = ConnectionPool(url, min_size=1, max_size=POOL_MAX, open=False, timeout=30.0,
                                    kwargs={"autocommit": True, "options": SESSION_OPTIONS},
                                    name="mlruntime-registry")
        try:
            self._pool.open(wait=True, timeout=30.0)
        except Exception as exc:
            raise StoreError(f"Cannot open a connection pool to {self.url}: {exc}") from exc

    # -- connections and transactions ---------------------------------------------------------

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise StoreError(f"Cannot connect to the registry store {self.url}: {exc}") from exc

    def _migrate(self) -> None:
        with self._connect() as conn:
            try:
                version = current_version(conn.cursor())
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"The registry store {self.url} has schema version {version}, newer than "
                        f"this runtime's {SCHEMA_VERSION}: upgrade mlinstance-runtime to open it")
                if version < SCHEMA_VERSION:
                    migrate(conn)
            except self._psycopg.Error as exc:
                raise StoreError(f"Cannot migrate the registry store {self.url}: {exc}") from exc

    def schema_version(self) -> int:
        with self.connection() as conn:
            return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]

    @contextmanager
    def connection(self, *, begin: bool = True) -> Iterator[Any]:
        """The thread's transaction connection, else a pooled autocommit one for a short use.
        A write transaction starts (BEGIN and the write lock) with its first statement: here, or
        (begin=False) in the same round trip as that statement (`_execute`)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                if begin and not getattr(self._local, "begun", True):
                    conn.execute(_BEGIN_WRITE, prepare=False)
                    self._local.begun = True
                yield conn
            except self._psycopg.Error as exc:
                raise StoreError(f"The registry store {self.url}: {exc}") from exc
            return
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._psycopg.Error as exc:
            raise StoreError(f"The registry store {self.url}: {exc}") from exc
        except self._pool_errors() as exc:
            raise StoreError(f"No connection to the registry store {self.url}: {exc}") from exc

    def _pool_errors(self) -> tuple[type[BaseException], ...]:
        from psycopg_pool import PoolClosed, PoolTimeout

        return (PoolTimeout, PoolClosed)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        local = self._local
        if getattr(local, "conn", None) is not None:
            local.depth += 1
            try:
                yield
            finally:
                local.depth -= 1
            return
        with self.connection() as conn:
            local.conn, local.depth, local.documents, local.begun = conn, 1, False, False
            try:
                try:
                    yield
                except BaseException:
                    self._rollback(conn)
                    raise
                if not local.begun:
                    return   # no statement ran: nothing to commit, as SQLite's empty write
                try:
                    conn.execute(f"{_END_WRITE[local.documents]}; COMMIT", prepare=False)
                except self._psycopg.Error as exc:
                    self._rollback(conn)
                    raise StoreError(f"Cannot commit to {self.url}: {exc}") from exc
                except BaseException:
                    self._rollback(conn)
                    raise
                local.own = getattr(local, "own", 0) + 1
            finally:
                local.conn, local.depth, local.begun = None, 0, True

    def _execute(self, conn: Any, sql: str, args: Any) -> Any:
        """A statement on `conn` (from connection(begin=False)); the first of a write transaction
        goes in one round trip with BEGIN and the write lock (pipeline mode): the lock is then
        not held while this process is scheduled again between the two."""
        local = self._local
        if conn is not getattr(local, "conn", None) or getattr(local, "begun", True):
            return conn.execute(sql, args)
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                cursor = conn.execute(sql, args)
        finally:
            local.begun = True   # even failed: the transaction is open, to be rolled back
        return cursor

    def _rollback(self, conn: Any) -> None:
        try:
            conn.execute("ROLLBACK")
        except self._psycopg.Error:
            pass   # a broken connection: the pool discards it

    def _read(self, sql: str, args: Any, one: bool) -> Any:
        """One statement; outside a transaction, tried again once on a fresh connection when the
        pooled one was broken (the database restarted or failed over since it was opened)."""
        for attempt in (1, 2):
            try:
                with self.connection(begin=False) as conn:
                    cursor = self._execute(conn, sql, args)
                    return cursor.fetchone() if one else cursor.fetchall()
            except StoreError as exc:
                broken = isinstance(exc.__cause__, self._psycopg.OperationalError)
                if attempt == 2 or not broken or getattr(self._local, "conn", None) is not None:
                    raise
                self._pool.check()   # drops the pool's other connections that broke with it

    def _all(self, sql: str, args: Any = ()) -> list[tuple]:
        return self._read(sql, args, one=False)

    def _one(self, sql: str, args: Any = ()) -> Optional[tuple]:
        return self._read(sql, args, one=True)

    def _documents_written(self) -> None:
        """Marks the thread's transaction as one that wrote documents: its COMMIT folds the kept
        counts' deltas (a write that is not marked leaves them pending: counts stay right, as a
        count adds the pending deltas, until the next marked write folds them)."""
        self._local.documents = True

    def _write(self, sql: str, args: Any = (), documents: bool = False) -> int:
        if getattr(self._local, "conn", None) is not None:
            if documents:
                self._documents_written()
            with self.connection(begin=False) as conn:
                return self._execute(conn, sql, args).rowcount
        # A write of one statement: its transaction in one round trip (pipeline mode). The lock,
        # the statement, "endWrite" and the COMMIT reach the server together, so the write lock
        # is held only while the server runs them, never while this process is scheduled again.
        with self.connection() as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                    cursor = conn.execute(sql, args)
                    conn.execute(_END_WRITE[documents])
                    conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        self._local.own = getattr(self._local, "own", 0) + 1
        return cursor.rowcount

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    # -- documents ----------------------------------------------------------------------------

    def _row(self, kind: Kind, scope: Scope, doc: dict[str, Any]) -> dict[str, Any]:
        row = {"id": doc["id"], "org": scope.org, "sandbox": scope.sandbox,
               "deleted": 1 if doc.get("deleted") else 0, "created": doc["created"],
               "updated": doc["updated"], "name": doc.get("name")}
        for col in kind.columns:
            row[col] = doc.get(col)
        row["doc"] = row["body"] = dumps(doc)   # JSONB for queries and triggers, text for reads
        if "\\u0000" in row["body"] and has_nul(doc):
            raise BadRequest("A text value holds a NUL byte (U+0000), which this registry's "
                             "PostgreSQL store cannot keep: remove it and send the request again")
        return row

    def insert(self, kind: Kind, scope: Scope, doc: dict[str, Any]) -> None:
        row = self._row(kind, scope, doc)
        cols = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join("%s" for _ in row)
        self._write(f'INSERT INTO "{kind.collection}" ({cols}) VALUES ({marks})', tuple(row.values()),
                    documents=True)

    def replace(self, kind: Kind, scope: Scope, doc: dict[str, Any]) -> None:
        row = self._row(kind, scope, doc)
        sets = ", ".join(f'"{c}"=%s' for c in row if c not in ("id", "org", "sandbox"))
        values = [v for c, v in row.items() if c not in ("id", "org", "sandbox")]
        self._write(f'UPDATE "{kind.collection}" SET {sets} WHERE id=%s AND org=%s AND sandbox=%s',
                    (*values, doc["id"], scope.org, scope.sandbox), documents=True)

    def get(self, kind: Kind, scope: Scope, id: str) -> Optional[dict[str, Any]]:
        row = self._one(f'SELECT body FROM "{kind.collection}" WHERE id=%s AND org=%s AND sandbox=%s',
                        (id, scope.org, scope.sandbox))
        return json.loads(row[0]) if row else None

    def get_text(self, kind: Kind, scope: Scope, id: str) -> Optional[str]:
        """A live document's stored text (compact JSON, as `get`'s answer re-encoded would be),
        None when missing or deleted: the API can send it unparsed."""
        row = self._one(f'SELECT body FROM "{kind.collection}" WHERE id=%s AND org=%s AND '
                        "sandbox=%s AND deleted=0", (id, scope.org, scope.sandbox))
        return row[0] if row else None

    def _expr(self, kind: Kind, field: str) -> str:
        if field in self._columns[kind.collection]:
            return f'"{field}"'
        path = "'{" + ",".join(part.replace("'", "").replace('"', "").replace(",", "")
                               for part in field.split(".")) + "}'"
        ftype = kind.fields.get(field, "str")
        if ftype == "number":
            return (f"(CASE WHEN jsonb_typeof(doc #> {path}) = 'number' "
                    f"THEN (doc #>> {path})::float8 END)")
        if ftype == "bool":
            return (f"(CASE WHEN jsonb_typeof(doc #> {path}) = 'boolean' "
                    f"THEN (doc #>> {path})::boolean END)")
        return f'((doc #>> {path}) COLLATE "C")'

    def _where(self, kind: Kind, filters: tuple[Filter, ...]) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for f in filters:
            expr = self._expr(kind, f.field)
            value = f.value
            if f.type == "bool" and f.field in self._columns[kind.collection]:
                value = 1 if f.value else 0
            if isinstance(value, str) and "\x00" in value:
                clauses.append(_nul_clause(expr, f.op))   # PostgreSQL text holds no NUL
                params.append(value[:value.index("\x00")])
                continue
            if f.op == "==":
                clauses.append(f"{expr} = %s")
            elif f.op == "!=":
                clauses.append(f"({expr} IS NULL OR {expr} != %s)")
            else:
                clauses.append(f"{expr} {f.op} %s")
            params.append(value)
        return (" AND " + " AND ".join(clauses)) if clauses else "", params

    def list(self, kind: Kind, scope: Scope, query: ListQuery) -> tuple[list[dict[str, Any]], int]:
        where, params = self._where(kind, query.filters)
        # SQLite sorts NULLs first: ASC NULLS FIRST, DESC NULLS LAST (as the indexes are built).
        order = ", ".join(f"{self._expr(kind, f)} {'DESC NULLS LAST' if d else 'ASC NULLS FIRST'}"
                          for f, d in query.order)
        last = "DESC" if query.order and query.order[-1][1] else "ASC"
        base = f'FROM "{kind.collection}" WHERE org=%s AND sandbox=%s{where}'
        args = [scope.org, scope.sandbox, *params]
        kept = self._kept_count(kind, scope, query.filters)
        with self.connection() as conn:
            if kept is not None:   # the plain listing, or one reference's: a kept count
                total = int(conn.execute(*kept).fetchone()[0])
            else:
                total = conn.execute(f"SELECT count(*) {base}", args).fetchone()[0]
            rows = conn.execute(f"SELECT body {base} ORDER BY {order}, seq {last} LIMIT %s OFFSET %s",
                                (*args, query.limit, query.start)).fetchall()
        return [json.loads(r[0]) for r in rows], total

    @staticmethod
    def _kept_count(kind: Kind, scope: Scope, filters: tuple[Filter, ...]) -> Optional[tuple]:
        """The count query and its arguments where the triggers keep the listing's total: a
        filter on `deleted` alone, or with one reference column equal to a text."""
        deleted = [f for f in filters if f.field == "deleted" and f.op == "=="]
        others = [f for f in filters if f not in deleted]
        if len(deleted) != 1 or deleted[0].type != "bool" or len(others) > 1:
            return None
        args = {"t": kind.collection, "o": scope.org, "s": scope.sandbox,
                "d": 1 if deleted[0].value else 0}
        if not others:
            return COUNT, args
        ref = others[0]
        if (ref.op != "==" or ref.field not in DOCUMENT_TABLES[kind.collection]
                or not isinstance(ref.value, str) or "\x00" in ref.value):
            return None
        return REFERENCE_COUNT, {**args, "c": ref.field, "v": ref.value}

    def live_ids(self, kind: Kind, scope: Scope, field: str, values: list[str]) -> list[str]:
        if not values:
            return []
        return [row[0] for row in self._all(
            f'SELECT id FROM "{kind.collection}" WHERE org=%s AND sandbox=%s AND deleted=0 '
            f"AND {self._expr(kind, field)} = ANY(%s)", (scope.org, scope.sandbox, list(values)))]

    def soft_delete(self, kind: Kind, scope: Scope, ids: list[str], updated: str) -> int:
        if not ids:
            return 0
        table = f'"{kind.collection}"'
        with self.transaction(), self.connection() as conn:
            self._documents_written()
            rows = conn.execute(f"SELECT id, body FROM {table} WHERE org=%s AND sandbox=%s AND "
                                "deleted=0 AND id = ANY(%s) FOR UPDATE",
                                (scope.org, scope.sandbox, list(ids))).fetchall()
            changed = []
            for id, body in rows:   # keys stay in their order, as SQLite's json_set keeps them
                doc = json.loads(body)
                doc["deleted"], doc["updated"] = True, updated
                text = dumps(doc)
                changed.append((updated, text, text, id, scope.org, scope.sandbox))
            conn.cursor().executemany(f"UPDATE {table} SET deleted=1, updated=%s, doc=%s, body=%s "
                                      "WHERE id=%s AND org=%s AND sandbox=%s", changed)
        return len(changed)

    # -- run status ---------------------------------------------------------------------------

    def get_run_status(self, scope: Scope, run_id: str) -> Optional[dict[str, Any]]:
        row = self._one('SELECT body FROM "runStatus" WHERE id=%s AND org=%s AND sandbox=%s',
                        (run_id, scope.org, scope.sandbox))
        return json.loads(row[0]) if row else None

    def put_run_status(self, scope: Scope, run_id: str, state: str, status: dict[str, Any]) -> None:
        text = dumps(status)
        self._write('INSERT INTO "runStatus" (id, org, sandbox, state, doc, body) '
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                    "state=excluded.state, doc=excluded.doc, body=excluded.body",
                    (run_id, scope.org, scope.sandbox, state, text, text))

    # -- the run ledger (runtime.supervisor) ------------------------------------------------------

    @staticmethod
    def _ledger_row(row: tuple) -> dict[str, Any]:
        run_id, org, sandbox, seq, phase, doc = row
        return {**doc, "run_id": run_id, "org": org, "sandbox": sandbox, "seq": seq, "phase": phase}

    def ledger_rows(self) -> list[dict[str, Any]]:
        return [self._ledger_row(r) for r in self._all(
            'SELECT run_id, org, sandbox, seq, phase, doc FROM "runLedger" ORDER BY seq')]

    def ledger_get(self, run_id: str) -> Optional[dict[str, Any]]:
        row = self._one('SELECT run_id, org, sandbox, seq, phase, doc FROM "runLedger" '
                        "WHERE run_id=%s", (run_id,))
        return self._ledger_row(row) if row else None

    def ledger_put(self, scope: Scope, run_id: str, phase: str, fields: dict[str, Any]) -> None:
        # The queue place comes from a sequence: two servers queueing at once get two places.
        self._write('INSERT INTO "runLedger" (run_id, org, sandbox, seq, phase, doc) '
                    "VALUES (%s, %s, %s, nextval('\"runLedger_seq\"'), %s, %s) "
                    'ON CONFLICT (run_id) DO UPDATE SET phase=excluded.phase, '
                    'doc="runLedger".doc || excluded.doc',
                    (run_id, scope.org, scope.sandbox, phase, self._jsonb(fields)))

    def ledger_delete(self, run_ids: list[str]) -> int:
        if not run_ids:
            return 0
        return self._write('DELETE FROM "runLedger" WHERE run_id = ANY(%s)', (list(run_ids),))

    def live_run_states(self) -> list[tuple[str, str, str, str]]:
        """(run id, org, sandbox, state) of every run not yet in a terminal state."""
        return [tuple(r) for r in self._all(
            'SELECT id, org, sandbox, state FROM "runStatus" WHERE state <> ALL(%s)',
            (list(_TERMINAL),))]

    def data_version(self) -> int:
        """Changes when another connection (another thread, process or host) commits a write:
        the count of write transactions, less this thread's own, as SQLite's PRAGMA."""
        row = self._one('SELECT n FROM "storeVersion" WHERE id = 1')
        return int(row[0]) - getattr(self._local, "own", 0)

    # -- the runs view (runtime.run_views) -----------------------------------------------------

    def run_index(self) -> Any:
        try:
            from .postgres_runs import PgRunIndex
        except ImportError as exc:
            raise StoreError(f"The runs view is not available on {self.url}: {exc}") from exc
        return PgRunIndex(self)

    # -- the data set catalog (runtime.datasets) ----------------------------------------------

    def dataset_put(self, scope: Scope, entry: dict[str, Any], *, replace: bool = False) -> bool:
        """Store `entry` ({id, uri, format, created}); False when the id exists and not `replace`."""
        conflict = ("DO UPDATE SET uri=excluded.uri, format=excluded.format, "
                    "created=excluded.created, doc=excluded.doc") if replace else "DO NOTHING"
        return self._write(
            "INSERT INTO datasets (org, sandbox, id, uri, format, created, doc) "
            f"VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (org, sandbox, id) {conflict}",
            (scope.org, scope.sandbox, entry["id"], entry["uri"], entry.get("format"),
             entry["created"], self._jsonb(entry))) > 0

    def dataset_list(self, scope: Scope) -> list[dict[str, Any]]:
        return [r[0] for r in self._all(
            "SELECT doc FROM datasets WHERE org=%s AND sandbox=%s ORDER BY id",
            (scope.org, scope.sandbox))]

    def dataset_delete(self, scope: Scope, dataset_id: str) -> bool:
        return self._write("DELETE FROM datasets WHERE org=%s AND sandbox=%s AND id=%s",
                           (scope.org, scope.sandbox, dataset_id)) > 0


def empty_registry(store: PostgresStore) -> None:
    """Deletes every registry table's rows (the schema stays): a clean registry between tests.
    (DELETE, not TRUNCATE: on a few rows it takes milliseconds instead of a third of a second.)"""
    with store.transaction(), store.connection() as conn:
        store._documents_written()
        for table in store.table_names():
            conn.execute(f'DELETE FROM "{table}"')


def _nul_clause(expr: str, op: str) -> str:
    """A filter whose text value holds a NUL byte, which no PostgreSQL text can (listings compare
    text with == and != only): nothing stored equals it, so == keeps no row and != every row, as
    on SQLite. The parameter (the prefix before the NUL) is typed, never compared."""
    return "(%s::text IS NULL AND FALSE)" if op == "==" else "(%s::text IS NULL OR TRUE)"
