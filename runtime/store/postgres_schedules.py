"""The scheduler's tables in the PostgreSQL store: schedules with their next fire, MLService state,
leases (the statements of store/sqlite_schedules.py in PostgreSQL's words).

A fire is claimed by a conditional UPDATE on `next_fire` and a lease by one INSERT ... ON CONFLICT
... WHERE, each atomic by itself, so servers on several hosts never both fire one time or both
hold the scheduler's lease.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from . import Scope
from .postgres_schema import SCHEDULED_TABLES

_COLUMNS = ("id", "org", "sandbox", "owner", "owner_id", "task", "spec", "next_fire", "last_fire",
            "last_run_id", "doc")
_SETTABLE = frozenset(_COLUMNS) - {"id"}


def _schedule(row: tuple) -> dict[str, Any]:
    out = dict(zip(_COLUMNS, row))
    out["spec"] = json.loads(out["spec"])
    out["doc"] = json.loads(out["doc"] or "{}")
    return out


def _sets(fields: dict[str, Any]) -> tuple[list[str], list[Any]]:
    sets, args = [], []
    for name, value in fields.items():
        if name not in _SETTABLE:
            raise ValueError(f"schedules has no column {name!r}")
        sets.append(f"{name}=%s")
        args.append(json.dumps(value) if name == "doc" else value)
    return sets, args


class PgSchedulesMixin:
    """Store methods of runtime.scheduler, mixed into PostgresStore (needs _all, _one, _write,
    transaction)."""

    # -- what defines schedules -------------------------------------------------------------

    def schedule_fingerprint(self) -> tuple:
        """Changes whenever an MLService or an Experiment is created, replaced or deleted."""
        return tuple(self._one(f'SELECT max(seq), max(updated), sum(deleted) FROM "{t}"')
                     for t in SCHEDULED_TABLES)

    def scheduled_documents(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        out = [(Scope(org, sandbox), "mlService", doc) for org, sandbox, doc in
               self._all('SELECT org, sandbox, doc FROM "mlServices" WHERE deleted=0 ORDER BY seq')]
        out += [(Scope(org, sandbox), "experiment", doc) for org, sandbox, doc in self._all(
            'SELECT org, sandbox, doc FROM "experiments" WHERE deleted=0 AND '
            "coalesce(doc #> '{template,schedule}', 'null'::jsonb) <> 'null'::jsonb ORDER BY seq")]
        return out

    # -- schedules ----------------------------------------------------------------------------

    def schedule_rows(self, scope: Optional[Scope] = None,
                      owner_id: Optional[str] = None) -> list[dict[str, Any]]:
        sql, args = f"SELECT {', '.join(_COLUMNS)} FROM schedules", []
        if scope is not None:
            sql += " WHERE org=%s AND sandbox=%s"
            args = [scope.org, scope.sandbox]
            if owner_id is not None:
                sql += " AND owner_id=%s"
                args.append(owner_id)
        return [_schedule(r) for r in self._all(sql + " ORDER BY id", args)]

    def schedule_due(self, now: str, limit: int = 100) -> list[dict[str, Any]]:
        """Schedules whose next fire is at or before `now` (an ISO UTC timestamp), earliest first."""
        return [_schedule(r) for r in self._all(
            f"SELECT {', '.join(_COLUMNS)} FROM schedules WHERE next_fire IS NOT NULL AND "
            "next_fire <= %s ORDER BY next_fire LIMIT %s", (now, limit))]

    def schedule_next_fire(self) -> Optional[str]:
        row = self._one("SELECT min(next_fire) FROM schedules")
        return row[0] if row else None

    def schedule_put(self, scope: Scope, row: dict[str, Any]) -> None:
        """Insert or replace a schedule row (its definition and next fire)."""
        values = {**row, "org": scope.org, "sandbox": scope.sandbox,
                  "spec": json.dumps(row["spec"], sort_keys=True),
                  "doc": json.dumps(row.get("doc") or {})}
        updates = ", ".join(f"{c}=excluded.{c}" for c in _COLUMNS if c != "id")
        self._write(f"INSERT INTO schedules ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('%s' for _ in _COLUMNS)}) "
                    f"ON CONFLICT (id) DO UPDATE SET {updates}",
                    tuple(values.get(c) for c in _COLUMNS))

    def schedule_advance(self, schedule_id: str, expected_next: Optional[str],
                         **fields: Any) -> bool:
        """Set `fields` only if the row's next fire is still `expected_next`: the claim of one
        fire. False: another process claimed it."""
        sets, args = _sets(fields)
        return self._write(f"UPDATE schedules SET {', '.join(sets)} WHERE id=%s AND "
                           "next_fire IS NOT DISTINCT FROM %s::text",
                           (*args, schedule_id, expected_next)) == 1

    def schedule_update(self, schedule_id: str, **fields: Any) -> None:
        sets, args = _sets(fields)
        self._write(f"UPDATE schedules SET {', '.join(sets)} WHERE id=%s", (*args, schedule_id))

    def schedule_delete(self, ids: list[str]) -> int:
        if not ids:
            return 0
        return self._write("DELETE FROM schedules WHERE id = ANY(%s)", (list(ids),))

    # -- per-MLService state ------------------------------------------------------------------

    def service_state(self, scope: Scope, service_id: str) -> dict[str, Any]:
        row = self._one('SELECT doc FROM "serviceState" WHERE org=%s AND sandbox=%s AND id=%s',
                        (scope.org, scope.sandbox, service_id))
        return row[0] if row else {}

    def service_state_put(self, scope: Scope, service_id: str, doc: dict[str, Any]) -> None:
        self._write('INSERT INTO "serviceState" (org, sandbox, id, doc) VALUES (%s, %s, %s, %s) '
                    "ON CONFLICT (org, sandbox, id) DO UPDATE SET doc=excluded.doc",
                    (scope.org, scope.sandbox, service_id, self._jsonb(doc)))

    def service_states_waiting(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        """MLServices with scheduled training runs whose outcome is not yet acted on."""
        return [(Scope(org, sandbox), id, doc) for org, sandbox, id, doc in self._all(
            'SELECT org, sandbox, id, doc FROM "serviceState" WHERE '
            "CASE WHEN jsonb_typeof(doc -> 'awaitingPublish') = 'array' "
            "THEN jsonb_array_length(doc -> 'awaitingPublish') ELSE 0 END > 0")]

    # -- leases -------------------------------------------------------------------------------

    def lease_acquire(self, name: str, holder: str, ttl_s: float, now_s: float) -> bool:
        """Take or renew the lease `name` for `holder` until now_s + ttl_s; False while another
        holder's lease has not expired."""
        return self._write(
            "INSERT INTO leases (name, holder, expires_s) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET holder=excluded.holder, expires_s=excluded.expires_s "
            "WHERE leases.holder = excluded.holder OR leases.expires_s <= %s",
            (name, holder, now_s + ttl_s, now_s)) == 1

    def lease_take(self, name: str, old_holder: str, holder: str, ttl_s: float,
                   now_s: float) -> bool:
        """Take the lease from `old_holder` (a process known to be dead) if it still holds it."""
        return self._write("UPDATE leases SET holder=%s, expires_s=%s WHERE name=%s AND holder=%s",
                           (holder, now_s + ttl_s, name, old_holder)) == 1

    def lease_release(self, name: str, holder: str) -> None:
        self._write("DELETE FROM leases WHERE name=%s AND holder=%s", (name, holder))

    def lease_holder(self, name: str) -> Optional[tuple[str, float]]:
        row = self._one("SELECT holder, expires_s FROM leases WHERE name=%s", (name,))
        return (row[0], row[1]) if row else None
