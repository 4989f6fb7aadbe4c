"""What the supervisor and the scheduler keep in a store beside the documents: the run ledger,
schedules, MLService states and the scheduler's lease, each a small class over the `Store`
interface (the SQLite statements are in sqlite.py and sqlite_schedules.py)."""
from __future__ import annotations

from typing import Any, Optional

from . import Scope, Store


class RunLedger:
    """One row per live run: its owner process, its place in the FIFO queue (phase queued or
    running), what it was granted and its worker. A store that keeps none cannot supervise runs."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def rows(self) -> list[dict[str, Any]]:
        """Every row, in queue order."""
        return self._store.ledger_rows()

    def get(self, run_id: str) -> Optional[dict[str, Any]]:
        return self._store.ledger_get(run_id)

    def put(self, scope: Scope, run_id: str, phase: str, fields: dict[str, Any]) -> None:
        """Sets the run's phase and merges `fields` into its row (created when missing)."""
        self._store.ledger_put(scope, run_id, phase, fields)

    def delete(self, run_ids: list[str]) -> int:
        return self._store.ledger_delete(run_ids)

    def live_run_states(self) -> list[tuple[str, str, str, str]]:
        """(run id, org, sandbox, state) of every run not yet ended, across sandboxes."""
        return self._store.live_run_states()

    def data_version(self) -> int:
        """Changes when another connection commits (a cheap "anything new?" for pollers)."""
        return self._store.data_version()


class Schedules:
    """Schedule rows (one per timed task of an MLService or an Experiment template), MLService
    states and the scheduler's lease."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- schedule rows --------------------------------------------------------------------------

    def fingerprint(self) -> tuple:
        """Changes whenever an MLService or an Experiment is created, replaced or deleted."""
        return self._store.schedule_fingerprint()

    def scheduled_documents(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        """(scope, kind name, document) of every live document that defines schedules."""
        return self._store.scheduled_documents()

    def rows(self, scope: Optional[Scope] = None,
             owner_id: Optional[str] = None) -> list[dict[str, Any]]:
        return self._store.schedule_rows(scope, owner_id)

    def rows_by_task(self, scope: Scope, owner_id: str) -> dict[str, dict[str, Any]]:
        """The schedule rows of one owner, by task (train, score)."""
        return {row["task"]: row for row in self._store.schedule_rows(scope, owner_id)}

    def due(self, now: str, limit: int) -> list[dict[str, Any]]:
        return self._store.schedule_due(now, limit)

    def next_fire(self) -> Optional[str]:
        return self._store.schedule_next_fire()

    def put(self, scope: Scope, row: dict[str, Any]) -> None:
        self._store.schedule_put(scope, row)

    def advance(self, schedule_id: str, expected_next: Optional[str], **fields: Any) -> bool:
        """Moves a row's next fire on, only if it still is `expected_next` (the claim of a fire)."""
        return self._store.schedule_advance(schedule_id, expected_next, **fields)

    def update(self, schedule_id: str, **fields: Any) -> None:
        self._store.schedule_update(schedule_id, **fields)

    def delete(self, ids: list[str]) -> int:
        return self._store.schedule_delete(ids)

    # -- MLService states -------------------------------------------------------------------------

    def service_state(self, scope: Scope, service_id: str) -> dict[str, Any]:
        return self._store.service_state(scope, service_id)

    def put_service_state(self, scope: Scope, service_id: str, state: dict[str, Any]) -> None:
        self._store.service_state_put(scope, service_id, state)

    def update_service_state(self, scope: Scope, service_id: str, **fields: Any) -> dict[str, Any]:
        """The service's state with `fields` set, read and written in one transaction."""
        with self._store.transaction():
            state = {**self._store.service_state(scope, service_id), **fields}
            self._store.service_state_put(scope, service_id, state)
        return state

    def services_awaiting(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        """(scope, service id, state) of the services with training runs awaiting publication."""
        return self._store.service_states_waiting()

    # -- the scheduler's lease ----------------------------------------------------------------------

    def lease_acquire(self, name: str, holder: str, ttl_s: float, now_s: float) -> bool:
        return self._store.lease_acquire(name, holder, ttl_s, now_s)

    def lease_take(self, name: str, old_holder: str, holder: str, ttl_s: float,
                   now_s: float) -> bool:
        return self._store.lease_take(name, old_holder, holder, ttl_s, now_s)

    def lease_release(self, name: str, holder: str) -> None:
        self._store.lease_release(name, holder)

    def lease_holder(self, name: str) -> Optional[tuple[str, float]]:
        return self._store.lease_holder(name)
