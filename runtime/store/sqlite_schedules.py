"""The scheduler's tables in the SQLite store: schedules with their next fire, MLService state, leases.

A fire is claimed by a compare-and-set on `next_fire` inside the transaction that creates its run,
so two processes (or a process and its restarted self) never both fire one time, and a fire whose
run was written is never fired again.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Optional

from . import Scope
from .sqlite_batches import in_batches

# Owners whose documents define schedules; `updated` alone is indexed so that the scheduler's
# "did anything change?" question (max(rowid), max(updated)) is two index look-ups.
_SCHEDULED_TABLES = ("mlServices", "experiments")


def create_schedule_tables(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE schedules (id TEXT PRIMARY KEY, org TEXT NOT NULL, sandbox TEXT NOT NULL,"
        " owner TEXT NOT NULL, owner_id TEXT NOT NULL, task TEXT NOT NULL, spec TEXT NOT NULL,"
        " next_fire TEXT, last_fire TEXT, last_run_id TEXT, doc TEXT NOT NULL DEFAULT '{}')")
    conn.execute("CREATE INDEX schedules_next ON schedules (next_fire)")
    conn.execute("CREATE INDEX schedules_owner ON schedules (org, sandbox, owner_id)")
    conn.execute(
        "CREATE TABLE serviceState (org TEXT NOT NULL, sandbox TEXT NOT NULL, id TEXT NOT NULL,"
        " doc TEXT NOT NULL, PRIMARY KEY (org, sandbox, id))")
    conn.execute(
        "CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_s REAL NOT NULL)")
    for table in _SCHEDULED_TABLES:
        conn.execute(f'CREATE INDEX "{table}_updated_any" ON "{table}" (updated)')


_COLUMNS = ("id", "org", "sandbox", "owner", "owner_id", "task", "spec", "next_fire", "last_fire",
            "last_run_id", "doc")


def _schedule(row: tuple) -> dict[str, Any]:
    out = dict(zip(_COLUMNS, row))
    out["spec"] = json.loads(out["spec"])
    out["doc"] = json.loads(out["doc"] or "{}")
    return out


class SchedulesMixin:
    """Store methods of runtime.scheduler, mixed into SQLiteStore (needs _conn, transaction)."""

    # -- what defines schedules -------------------------------------------------------------

    def schedule_fingerprint(self) -> tuple:
        """Changes whenever an MLService or an Experiment is created, replaced or deleted (the
        count of deleted rows too: a delete in the same millisecond as the last write leaves
        max(updated) as it was)."""
        conn = self._conn()
        return tuple(conn.execute(f'SELECT max(rowid), max(updated), sum(deleted) FROM "{t}"')
                     .fetchone() for t in _SCHEDULED_TABLES)

    def scheduled_documents(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        """(scope, kind name, document) of every live MLService and every live Experiment whose
        template has a schedule, across orgs and sandboxes."""
        conn = self._conn()
        out = [(Scope(org, sandbox), "mlService", json.loads(doc)) for org, sandbox, doc in
               conn.execute('SELECT org, sandbox, doc FROM "mlServices" WHERE deleted=0')]
        out += [(Scope(org, sandbox), "experiment", json.loads(doc)) for org, sandbox, doc in
                conn.execute('SELECT org, sandbox, doc FROM "experiments" WHERE deleted=0 AND '
                             "json_extract(doc, '$.template.schedule') IS NOT NULL")]
        return out

    # -- schedules ----------------------------------------------------------------------------

    def schedule_rows(self, scope: Optional[Scope] = None,
                      owner_id: Optional[str] = None) -> list[dict[str, Any]]:
        sql, args = f"SELECT {', '.join(_COLUMNS)} FROM schedules", []
        if scope is not None:
            sql += " WHERE org=? AND sandbox=?"
            args = [scope.org, scope.sandbox]
            if owner_id is not None:
                sql += " AND owner_id=?"
                args.append(owner_id)
        return [_schedule(r) for r in self._conn().execute(sql + " ORDER BY id", args)]

    def schedule_due(self, now: str, limit: int = 100) -> list[dict[str, Any]]:
        """Schedules whose next fire is at or before `now` (an ISO UTC timestamp), earliest first."""
        return [_schedule(r) for r in self._conn().execute(
            f"SELECT {', '.join(_COLUMNS)} FROM schedules WHERE next_fire IS NOT NULL AND "
            "next_fire <= ? ORDER BY next_fire LIMIT ?", (now, limit))]

    def schedule_next_fire(self) -> Optional[str]:
        row = self._conn().execute("SELECT min(next_fire) FROM schedules").fetchone()
        return row[0] if row else None

    def schedule_put(self, scope: Scope, row: dict[str, Any]) -> None:
        """Insert or replace a schedule row (its definition and next fire)."""
        values = {**row, "org": scope.org, "sandbox": scope.sandbox,
                  "spec": json.dumps(row["spec"], sort_keys=True),
                  "doc": json.dumps(row.get("doc") or {})}
        with self.transaction():
            self._conn().execute(
                f"INSERT OR REPLACE INTO schedules ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                tuple(values.get(c) for c in _COLUMNS))

    def schedule_advance(self, schedule_id: str, expected_next: Optional[str],
                         **fields: Any) -> bool:
        """Set `fields` (next_fire, last_fire, last_run_id, doc) only if the row's next fire is
        still `expected_next`: the claim of one fire. False: another process claimed it."""
        sets, args = [], []
        for name, value in fields.items():
            sets.append(f"{name}=?")
            args.append(json.dumps(value) if name == "doc" else value)
        with self.transaction():
            cursor = self._conn().execute(
                f"UPDATE schedules SET {', '.join(sets)} WHERE id=? AND next_fire IS ?",
                (*args, schedule_id, expected_next))
            return cursor.rowcount == 1

    def schedule_update(self, schedule_id: str, **fields: Any) -> None:
        sets, args = [], []
        for name, value in fields.items():
            sets.append(f"{name}=?")
            args.append(json.dumps(value) if name == "doc" else value)
        with self.transaction():
            self._conn().execute(f"UPDATE schedules SET {', '.join(sets)} WHERE id=?",
                                 (*args, schedule_id))

    def schedule_delete(self, ids: list[str]) -> int:
        with self.transaction():
            return sum(cursor.rowcount for cursor in in_batches(
                self._conn(), "DELETE FROM schedules WHERE id IN", ids))

    # -- per-MLService state ------------------------------------------------------------------

    def service_state(self, scope: Scope, service_id: str) -> dict[str, Any]:
        row = self._conn().execute(
            "SELECT doc FROM serviceState WHERE org=? AND sandbox=? AND id=?",
            (scope.org, scope.sandbox, service_id)).fetchone()
        return json.loads(row[0]) if row else {}

    def service_state_put(self, scope: Scope, service_id: str, doc: dict[str, Any]) -> None:
        with self.transaction():
            self._conn().execute(
                "INSERT INTO serviceState (org, sandbox, id, doc) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(org, sandbox, id) DO UPDATE SET doc=excluded.doc",
                (scope.org, scope.sandbox, service_id, json.dumps(doc)))

    def service_states_waiting(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        """MLServices with scheduled training runs whose outcome is not yet acted on."""
        return [(Scope(org, sandbox), id, json.loads(doc)) for org, sandbox, id, doc in
                self._conn().execute(
                    "SELECT org, sandbox, id, doc FROM serviceState WHERE "
                    "json_array_length(doc, '$.awaitingPublish') > 0")]

    # -- leases -------------------------------------------------------------------------------

    def lease_acquire(self, name: str, holder: str, ttl_s: float, now_s: float) -> bool:
        """Take or renew the lease `name` for `holder` until now_s + ttl_s; False while another
        holder's lease has not expired."""
        with self.transaction():
            conn = self._conn()
            row = conn.execute("SELECT holder, expires_s FROM leases WHERE name=?",
                               (name,)).fetchone()
            if row is not None and row[0] != holder and row[1] > now_s:
                return False
            conn.execute("INSERT INTO leases (name, holder, expires_s) VALUES (?, ?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET holder=excluded.holder, "
                         "expires_s=excluded.expires_s", (name, holder, now_s + ttl_s))
            return True

    def lease_take(self, name: str, old_holder: str, holder: str, ttl_s: float,
                   now_s: float) -> bool:
        """Take the lease from `old_holder` (a process known to be dead) if it still holds it."""
        with self.transaction():
            return self._conn().execute(
                "UPDATE leases SET holder=?, expires_s=? WHERE name=? AND holder=?",
                (holder, now_s + ttl_s, name, old_holder)).rowcount == 1

    def lease_release(self, name: str, holder: str) -> None:
        with self.transaction():
            self._conn().execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))

    def lease_holder(self, name: str) -> Optional[tuple[str, float]]:
        row = self._conn().execute("SELECT holder, expires_s FROM leases WHERE name=?",
                                   (name,)).fetchone()
        return (row[0], row[1]) if row else None
