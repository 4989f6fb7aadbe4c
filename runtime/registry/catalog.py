"""The data set catalog of each sandbox (runtime.datasets), and the data roots that every data set
a document or a run names must lie under (runtime.data_roots)."""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..data_roots import DataRoots
from ..errors import Conflict, NotFound
from ..schemas import MLSERVICE, Kind, now_timestamp
from ..store import Scope, Store
from .callers import Caller


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Where data sets may be (runtime.data_roots); None: anywhere. A server with tokens sets it.
        self.data_roots: Optional[DataRoots] = None

    def add_dataset(self, caller: Caller, dataset_id: str, location: str,
                    file_format: Optional[str] = None, *, replace: bool = False) -> dict[str, Any]:
        """Register `location` (a path or file:// URI, made absolute) as `dataset_id` in the
        caller's sandbox. An id already registered is a Conflict unless `replace`; a location
        outside the data roots is refused. The location need not exist yet (an output data set)."""
        from ..datasets import entry_for

        entry = entry_for(dataset_id, location, file_format, created=now_timestamp())
        if self.data_roots is not None:
            self.data_roots.check("location", entry.uri)
        if not self.store.dataset_put(caller.scope, entry.to_dict(), replace=replace):
            raise Conflict(f"Data set {dataset_id!r} is already registered in sandbox "
                           f"{caller.scope.sandbox!r}: remove it first, or use --replace")
        return _dataset_view(entry.to_dict())

    def list_datasets(self, caller: Caller) -> list[dict[str, Any]]:
        return [_dataset_view(doc) for doc in self.store.dataset_list(caller.scope)]

    def remove_dataset(self, caller: Caller, dataset_id: str) -> None:
        """Forget a registered id (the files stay where they are)."""
        if not self.store.dataset_delete(caller.scope, dataset_id):
            known = ", ".join(d["id"] for d in self.store.dataset_list(caller.scope)) or "none"
            raise NotFound(f"Data set {dataset_id!r} is not registered in sandbox "
                           f"{caller.scope.sandbox!r} (registered: {known})")

    def dataset_catalog(self, scope: Scope) -> dict[str, dict[str, Any]]:
        """The sandbox's catalog as the worker receives it (WorkerSpec.datasets): id -> entry."""
        return {doc["id"]: doc for doc in self.store.dataset_list(scope)}

    def dataset_lookup(self, caller: Caller) -> Optional[Callable[[str], Optional[str]]]:
        """The catalog of the caller's sandbox as a look-up for the data roots' check."""
        catalog = self.dataset_catalog(caller.scope)
        return lambda value: (catalog.get(value) or {}).get("uri")

    # -- the data roots ---------------------------------------------------------------------------

    def check_data_sets(self, kind: Kind, caller: Caller, data: dict[str, Any]) -> None:
        """Data sets an MLInstance, an Experiment's template or an MLService names are checked
        against the data roots when they are written (403), not only when a run starts."""
        if self.data_roots is None:
            return
        catalog = self.dataset_lookup(caller)
        if kind is MLSERVICE:
            self.data_roots.check_values(data, catalog=catalog)
        self.data_roots.check_tasks(data.get("tasks"), catalog=catalog)
        self.data_roots.check_tasks((data.get("template") or {}).get("tasks"), catalog=catalog)

    def check_run_data_sets(self, caller: Caller, values: dict[str, Any]) -> None:
        """Before a run starts: every data set of its resolved values inside the data roots."""
        if self.data_roots is not None:
            self.data_roots.check_values(values, catalog=self.dataset_lookup(caller))


def _dataset_view(doc: dict[str, Any]) -> dict[str, Any]:
    from ..locations import local_path

    path = local_path(doc["uri"])
    return {**doc, "path": str(path) if path else None, "exists": bool(path and path.exists())}
