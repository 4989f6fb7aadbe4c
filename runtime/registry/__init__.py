"""The registry: every rule of Engines, MLInstances, Experiments, runs, Models, Insights and
MLServices, shared by the REST API, the CLI and the run path; the only caller of the store.

`Registry` is a facade over one part per idea: who asks (callers.py), secret parameters
(masking.py), the rules of every document (documents.py), Engines (engines.py), the runs' state
machine (runs.py), Models (models.py) and the data set catalog (catalog.py). The faces turn
requests into calls on it and its results (or its `MLRuntimeError`s) into responses.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Optional

from ..data_roots import DataRoots, data_roots_for
from ..home import Home
from ..listing import ListQuery
from ..redaction import Redactor
from ..schemas import ENGINE, Kind, RunStatus, RunStatusDocument
from ..store import Scope, Store, open_store
from ..store.records import RunLedger, Schedules
from ..store.sqlite_runs import RunIndex
from .callers import DEFAULT_ORG, DEFAULT_SANDBOX, Caller, Page
from .catalog import Catalog
from .documents import Documents
from .engines import Engines
from .masking import SECRET_MASK, mask_secrets
from .models import Models, default_metrics
from .runs import Runs

__all__ = ["DEFAULT_ORG", "DEFAULT_SANDBOX", "SECRET_MASK", "Caller", "Page", "Registry",
           "RunIndex", "RunLedger", "Schedules", "Scope", "mask_secrets"]


class Registry:
    """Engines, MLInstances, Experiments, runs, Models, Insights and MLServices of one store."""

    def __init__(self, store: Store, home: Home) -> None:
        self.store = store
        self.home = home
        self._catalog = Catalog(store)
        self._documents = Documents(store, home, self._catalog)
        self._engines = Engines(self._documents)
        self._runs = Runs(self._documents)
        self._models = Models(self._documents)

    @classmethod
    def open(cls, home: Home) -> "Registry":
        registry = cls(open_store(home.store_url), home)
        # Configured roots (MLRUNTIME_DATA_ROOTS) apply to every face; `run serve` may add defaults.
        registry.data_roots = data_roots_for(home.root, shared=False)
        return registry

    def close(self) -> None:
        self.store.close()

    @property
    def data_roots(self) -> Optional[DataRoots]:
        """Where data sets may be (runtime.data_roots); None: anywhere. A server with tokens sets it."""
        return self._catalog.data_roots

    @data_roots.setter
    def data_roots(self, roots: Optional[DataRoots]) -> None:
        self._catalog.data_roots = roots

    @property
    def store_url(self) -> str:
        return self.store.url

    def transaction(self) -> AbstractContextManager[None]:
        """Every write inside (through this registry or its schedules) commits together or not
        at all; nested use joins the outer one."""
        return self.store.transaction()

    @property
    def ledger(self) -> RunLedger:
        """The run ledger (runtime.supervisor): who owns each live run, the queue, the grants."""
        return RunLedger(self.store)

    @property
    def schedules(self) -> Schedules:
        """The scheduler's schedules, MLService states and leases of this registry's store."""
        return Schedules(self.store)

    def runs_index(self) -> RunIndex:
        """The runs view's index (runs table, values, metric series) of this registry's store."""
        return self.store.run_index()

    # -- documents (documents.py) ---------------------------------------------------------------

    def find(self, kind: Kind, scope: Scope, id: str, *,
             deleted: bool = False) -> Optional[dict[str, Any]]:
        return self._documents.find(kind, scope, id, deleted=deleted)

    def live_ids(self, kind: Kind, scope: Scope, field: str, values: list[str]) -> list[str]:
        return self._documents.live_ids(kind, scope, field, values)

    def validated(self, kind: Kind, body: Any) -> dict[str, Any]:
        return self._documents.validate(kind, body)

    def create(self, kind: Kind, caller: Caller, body: Any) -> dict[str, Any]:
        return self._documents.create(kind, caller, body)

    def get(self, kind: Kind, caller: Caller, id: str) -> dict[str, Any]:
        return self._documents.get(kind, caller, id)

    def get_json(self, kind: Kind, caller: Caller, id: str) -> str:
        return self._documents.get_json(kind, caller, id)

    def get_unmasked(self, kind: Kind, caller: Caller, id: str) -> dict[str, Any]:
        return self._documents.get_unmasked(kind, caller, id)

    def list(self, kind: Kind, caller: Caller, query: ListQuery) -> Page:
        return self._documents.list(kind, caller, query)

    def newest(self, kind: Kind, caller: Caller, *equal: tuple[str, Any]) -> Optional[dict[str, Any]]:
        return self._documents.newest(kind, caller, *equal)

    def replace(self, kind: Kind, caller: Caller, id: str, body: Any, *,
                validated: bool = False) -> dict[str, Any]:
        if kind is ENGINE and not validated:   # an Engine's recipe is stored first
            return self._engines.replace_engine(caller, id, body)
        return self._documents.replace(kind, caller, id, body, validated=validated)

    def set_tags(self, kind: Kind, scope: Scope, id: str, tags: dict[str, str]) -> None:
        self._documents.set_tags(kind, scope, id, tags)

    def delete(self, kind: Kind, caller: Caller, id: str) -> int:
        return self._documents.delete(kind, caller, id)

    def delete_where(self, kind: Kind, caller: Caller, field: str, value: Optional[str]) -> int:
        return self._documents.delete_where(kind, caller, field, value)

    # -- Engines (engines.py) ---------------------------------------------------------------------

    def create_engine(self, caller: Caller, body: Any,
                      artifacts: Optional[dict[str, bytes]] = None) -> dict[str, Any]:
        return self._engines.create_engine(caller, body, artifacts)

    def replace_engine(self, caller: Caller, id: str, body: Any,
                       artifacts: Optional[dict[str, bytes]] = None) -> dict[str, Any]:
        return self._engines.replace_engine(caller, id, body, artifacts)

    # -- experiment runs (runs.py) ----------------------------------------------------------------

    def create_run(self, caller: Caller, experiment_id: str, body: Any, *,
                   validated: bool = False) -> dict[str, Any]:
        return self._runs.create_run(caller, experiment_id, body, validated=validated)

    def get_run(self, caller: Caller, experiment_id: str, run_id: str) -> dict[str, Any]:
        return self._runs.get_run(caller, experiment_id, run_id)

    def list_runs(self, caller: Caller, experiment_id: str, query: ListQuery) -> Page:
        return self._runs.list_runs(caller, experiment_id, query)

    def run_status(self, caller: Caller, experiment_id: str, run_id: str) -> dict[str, Any]:
        return self._runs.run_status(caller, experiment_id, run_id)

    def status_document(self, scope: Scope, run_id: str) -> Optional[RunStatusDocument]:
        return self._runs.status_document(scope, run_id)

    def run_state(self, scope: Scope, run_id: str) -> Optional[RunStatus]:
        return self._runs.run_state(scope, run_id)

    def require_status(self, caller: Caller, run_id: str) -> RunStatusDocument:
        return self._runs.require_status(caller, run_id)

    def abort_unowned_run(self, caller: Caller, run_id: str, reason: str) -> dict[str, Any]:
        return self._runs.abort_unowned_run(caller, run_id, reason)

    def annotate_run(self, scope: Scope, run_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self._runs.annotate_run(scope, run_id, fields)

    def run_log(self, caller: Caller, experiment_id: str, run_id: str, name: str) -> Path:
        return self._runs.run_log(caller, experiment_id, run_id, name)

    def run_secrets(self, scope: Scope, run_id: str) -> Redactor:
        return self._runs.run_secrets(scope, run_id)

    def note_run(self, scope: Scope, run_id: str, message: str) -> None:
        self._runs.note_run(scope, run_id, message)

    def transition_run(self, scope: Scope, run_id: str, state: RunStatus, *,
                       message: Optional[str] = None, logs: Optional[str] = None,
                       tasklogs: Optional[list[dict[str, str]]] = None,
                       scrub: bool = True) -> dict[str, Any]:
        return self._runs.transition_run(scope, run_id, state, message=message, logs=logs,
                                         tasklogs=tasklogs, scrub=scrub)

    # -- Models and Insights (models.py) ----------------------------------------------------------

    def create_model(self, caller: Caller, body: Any, artifact: Optional[bytes] = None,
                     artifact_name: str = "artifact") -> dict[str, Any]:
        return self._models.create_model(caller, body, artifact, artifact_name)

    def share_model(self, model_dir: Path) -> Optional[str]:
        return self._models.share_model(model_dir)

    def register_model(self, caller: Caller, body: dict[str, Any], model_dir: Path,
                       digest: Optional[str] = None, shared: Optional[str] = None,
                       ) -> dict[str, Any]:
        return self._models.register_model(caller, body, model_dir, digest, shared)

    def model_artifact_dir(self, caller: Caller, model_id: str) -> Path:
        return self._models.model_artifact_dir(caller, model_id)

    def model_artifact(self, caller: Caller, model_id: str) -> Path:
        return self._models.model_artifact(caller, model_id)

    @staticmethod
    def default_metrics(algorithm: Optional[str]) -> dict[str, Any]:
        return default_metrics(algorithm)

    # -- the data set catalog and the data roots (catalog.py) --------------------------------------

    def add_dataset(self, caller: Caller, dataset_id: str, location: str,
                    file_format: Optional[str] = None, *, replace: bool = False) -> dict[str, Any]:
        return self._catalog.add_dataset(caller, dataset_id, location, file_format,
                                         replace=replace)

    def list_datasets(self, caller: Caller) -> list[dict[str, Any]]:
        return self._catalog.list_datasets(caller)

    def remove_dataset(self, caller: Caller, dataset_id: str) -> None:
        self._catalog.remove_dataset(caller, dataset_id)

    def dataset_catalog(self, scope: Scope) -> dict[str, dict[str, Any]]:
        return self._catalog.dataset_catalog(scope)

    def dataset_lookup(self, caller: Caller) -> Optional[Callable[[str], Optional[str]]]:
        return self._catalog.dataset_lookup(caller)

    def check_run_data_sets(self, caller: Caller, values: dict[str, Any]) -> None:
        self._catalog.check_run_data_sets(caller, values)
