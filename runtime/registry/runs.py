"""The runs' state machine: an ExperimentRun and its status document are written together, and
every change of state goes through `transition_run`, which refuses what RUN_TRANSITIONS forbids
and scrubs secret values from what it writes."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Optional

from ..errors import Conflict, NotFound, ValidationFailed
from ..listing import ListQuery
from ..redaction import Redactor
from ..schemas import (ENGINE, EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, RUN_TRANSITIONS, RunStatus,
                       RunStatusDocument, now_timestamp)
from ..store import Scope
from ..tasks import run_mode
from .callers import Caller, Page
from .documents import Documents, later
from .masking import mask_secrets, secret_values


def _first_task(status: dict[str, Any]) -> dict[str, Any]:
    """The first task of a stored status document, checked against its schema, as the dict
    that is changed in place (the stored JSON keeps its keys and their order)."""
    RunStatusDocument.model_validate(status)
    return status["status"]["tasks"][0]


class Runs:
    def __init__(self, documents: Documents) -> None:
        self.documents = documents
        self.store = documents.store
        self.home = documents.home

    def _run_in(self, caller: Caller, experiment_id: str, run_id: str) -> dict[str, Any]:
        self.documents.live(EXPERIMENT, caller.scope, experiment_id)
        run = self.documents.live(EXPERIMENT_RUN, caller.scope, run_id)
        if run.get("experimentId") != experiment_id:
            raise NotFound(f"Experiment run {run_id!r} not found in experiment {experiment_id!r}")
        return run

    def create_run(self, caller: Caller, experiment_id: str, body: Any, *,
                   validated: bool = False) -> dict[str, Any]:
        """`validated`: `body` is `validate(EXPERIMENT_RUN, ...)`'s output already (the run path
        validates a run's body once, before preparing it)."""
        if isinstance(body, dict) and body.get("experimentId") not in (None, experiment_id):
            raise ValidationFailed(
                f"experimentId {body['experimentId']!r} in the body differs from the path's "
                f"{experiment_id!r}")
        data = dict(body) if validated else self.documents.validate(EXPERIMENT_RUN, body)
        data["mode"] = run_mode(data["mode"])
        data["experimentId"] = experiment_id
        with self.store.transaction():
            run = self.documents.insert(EXPERIMENT_RUN, caller, data)
            self._write_status(caller.scope, run["id"], {
                "id": run["id"], "experimentRunId": run["id"], "name": run["mode"],
                "deleted": False,
                "status": {"tasks": [{"id": str(uuid.uuid4()), "name": run["mode"],
                                      "state": RunStatus.PENDING.value, "tasklogs": [],
                                      "message": "Waiting for a worker"}]},
            })
        return run

    def get_run(self, caller: Caller, experiment_id: str, run_id: str) -> dict[str, Any]:
        return mask_secrets(self._run_in(caller, experiment_id, run_id))

    def list_runs(self, caller: Caller, experiment_id: str, query: ListQuery) -> Page:
        self.documents.live(EXPERIMENT, caller.scope, experiment_id)
        return self.documents.list_where(EXPERIMENT_RUN, caller, query, "experimentId",
                                         experiment_id)

    def run_status(self, caller: Caller, experiment_id: str, run_id: str) -> dict[str, Any]:
        self._run_in(caller, experiment_id, run_id)
        status = self.store.get_run_status(caller.scope, run_id)
        if status is None:
            raise NotFound(f"Experiment run {run_id!r} has no status")
        return status

    def status_document(self, scope: Scope, run_id: str) -> Optional[RunStatusDocument]:
        """A run's status document, typed (None when the run has none in this scope)."""
        status = self.store.get_run_status(scope, run_id)
        return None if status is None else RunStatusDocument.model_validate(status)

    def run_state(self, scope: Scope, run_id: str) -> Optional[RunStatus]:
        """A run's state (None when the run has no status in this scope)."""
        status = self.status_document(scope, run_id)
        return None if status is None else status.state

    def require_status(self, caller: Caller, run_id: str) -> RunStatusDocument:
        """A run's status document in the caller's sandbox, or NotFound."""
        status = self.status_document(caller.scope, run_id)
        if status is None:
            raise NotFound(f"Experiment run {run_id!r} has no status")
        return status

    def abort_unowned_run(self, caller: Caller, run_id: str, reason: str) -> dict[str, Any]:
        """ABORTED for a live run no process owns (nothing to stop); a Conflict once it ended."""
        state = self.run_state(caller.scope, run_id)
        if state is None or state.is_terminal():
            raise Conflict(f"Experiment run {run_id} already ended "
                           f"{state.value if state else ''}; there is nothing to cancel")
        return self.transition_run(caller.scope, run_id, RunStatus.ABORTED, message=reason)

    def _write_status(self, scope: Scope, run_id: str, status: dict[str, Any]) -> None:
        state = RunStatusDocument.model_validate(status).state
        self.store.put_run_status(scope, run_id, state.value, status)

    def annotate_run(self, scope: Scope, run_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Adds server-owned fields (the resolved configuration, the result) to a run."""
        with self.store.transaction():
            run = self.documents.live(EXPERIMENT_RUN, scope, run_id)
            run.update(fields)
            run["updated"] = later(run.get("updated"))
            self.store.replace(EXPERIMENT_RUN, scope, run)
        return run

    def run_log(self, caller: Caller, experiment_id: str, run_id: str, name: str) -> Path:
        """A log file of a run, as named in its status document's tasklogs."""
        self._run_in(caller, experiment_id, run_id)
        status = self.status_document(caller.scope, run_id)
        listed = status.log_names if status is not None else set()
        run_dir = self.home.runs / run_id
        path = run_dir / Path(name).name
        if name in listed and name == path.name and not path.exists() and not path.is_symlink():
            # A run that ended on another host: its log from the shared artifact location.
            from ..artifact_store import location_for

            elsewhere = location_for(self.home).run_log(run_id, name)
            if elsewhere is not None:
                run_dir, path = elsewhere.parent, elsewhere
        # The run's own log only: listed, a plain file (no link out of the folder) in its folder.
        if (name not in listed or name != path.name or not path.suffix == ".log"
                or path.is_symlink() or not path.is_file() or path.stat().st_nlink != 1
                or path.resolve().parent != run_dir.resolve()):
            raise NotFound(f"Experiment run {run_id!r} has no log {name!r}")
        return path

    def run_secrets(self, scope: Scope, run_id: str) -> Redactor:
        """Masks the secret parameter values of a run, its Experiment, MLInstance and Engine."""
        run = self.store.get(EXPERIMENT_RUN, scope, run_id)
        experiment = run and self.store.get(EXPERIMENT, scope, run.get("experimentId") or "")
        instance = experiment and self.store.get(MLINSTANCE, scope,
                                                 experiment.get("mlInstanceId") or "")
        engine = instance and self.store.get(ENGINE, scope, instance.get("engineId") or "")
        return Redactor(secret_values((run, experiment, instance, engine)))

    def note_run(self, scope: Scope, run_id: str, message: str) -> None:
        """A new status message for a run that stays in its state (e.g. still queued)."""
        with self.store.transaction():
            status = self.store.get_run_status(scope, run_id)
            if status is None:
                raise NotFound(f"Experiment run {run_id!r} not found")
            task = _first_task(status)
            if not RunStatus(task["state"]).is_terminal():
                task["message"] = message
                self._write_status(scope, run_id, status)

    def transition_run(self, scope: Scope, run_id: str, state: RunStatus, *,
                       message: Optional[str] = None, logs: Optional[str] = None,
                       tasklogs: Optional[list[dict[str, str]]] = None,
                       scrub: bool = True) -> dict[str, Any]:
        """The one place a run changes state; refuses a transition the state machine forbids.
        `scrub=False` is for a message the runtime wrote itself, quoting no value (reconciling a
        thousand stale runs at start-up need not read four documents per run to scrub it)."""
        with self.store.transaction():
            status = self.store.get_run_status(scope, run_id)
            if status is None:
                raise NotFound(f"Experiment run {run_id!r} not found")
            task = _first_task(status)
            current = RunStatus(task["state"])
            if state not in RUN_TRANSITIONS[current]:
                raise Conflict(f"Experiment run {run_id} cannot go from {current.value} to "
                               f"{state.value}")
            now = now_timestamp()
            task["state"] = state.value
            if state is RunStatus.RUNNING and "started" not in task:
                task["started"] = now
            if state.is_terminal():
                task["ended"] = now
            if scrub and (message is not None or logs is not None):   # may quote a secret value
                redactor = self.run_secrets(scope, run_id)
                message = None if message is None else redactor.text(message)
                logs = None if logs is None else redactor.text(logs)
            if message is not None:
                task["message"] = message
            if tasklogs is not None:
                task["tasklogs"] = tasklogs
            if logs is not None:
                task["logs"] = logs
            self._write_status(scope, run_id, status)
            if state.is_terminal():   # an ended run holds no place in the queue, no capacity
                self.store.ledger_delete([run_id])
        return status
