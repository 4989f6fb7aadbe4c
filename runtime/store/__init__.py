"""The registry store: one interface, an embedded SQLite file by default.

`open_store(url)` picks the implementation from the URL's scheme, so a team can later point the
server at a shared database without the service layer noticing.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple, Optional

from ..errors import StoreError
from ..listing import ListQuery
from ..schemas import Kind


class Scope(NamedTuple):
    """Every object lives in one IMS org and one sandbox, and is invisible from the others."""

    org: str
    sandbox: str


class Store(ABC):
    """What the service layer needs from a registry store. Documents are plain JSON objects."""

    url: str

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """All writes inside commit together or not at all; nested use joins the outer one."""

    @abstractmethod
    def insert(self, kind: Kind, scope: Scope, doc: dict[str, Any]) -> None: ...

    @abstractmethod
    def get(self, kind: Kind, scope: Scope, id: str) -> Optional[dict[str, Any]]:
        """The document, deleted or not, or None when it is not in this scope."""

    @abstractmethod
    def replace(self, kind: Kind, scope: Scope, doc: dict[str, Any]) -> None: ...

    @abstractmethod
    def list(self, kind: Kind, scope: Scope, query: ListQuery) -> tuple[list[dict[str, Any]], int]:
        """One page of documents and the total count of matches."""

    @abstractmethod
    def live_ids(self, kind: Kind, scope: Scope, field: str, values: list[str]) -> list[str]:
        """Ids of the objects not yet deleted whose `field` is one of `values`."""

    @abstractmethod
    def soft_delete(self, kind: Kind, scope: Scope, ids: list[str], updated: str) -> int: ...

    @abstractmethod
    def get_run_status(self, scope: Scope, run_id: str) -> Optional[dict[str, Any]]: ...

    @abstractmethod
    def put_run_status(self, scope: Scope, run_id: str, state: str,
                       status: dict[str, Any]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # The run ledger of runtime.supervisor (owners, FIFO queue, capacity held). A store that does
    # not keep one cannot supervise runs.

    def ledger_rows(self) -> list[dict[str, Any]]:
        raise StoreError(f"The store {self.url} keeps no run ledger")

    def ledger_get(self, run_id: str) -> Optional[dict[str, Any]]:
        raise StoreError(f"The store {self.url} keeps no run ledger")

    def ledger_put(self, scope: Scope, run_id: str, phase: str, fields: dict[str, Any]) -> None:
        raise StoreError(f"The store {self.url} keeps no run ledger")

    def ledger_delete(self, run_ids: list[str]) -> int:
        raise StoreError(f"The store {self.url} keeps no run ledger")

    def live_run_states(self) -> list[tuple[str, str, str, str]]:
        raise StoreError(f"The store {self.url} keeps no run ledger")

    def data_version(self) -> int:
        return 0

    # The data set catalog of runtime.datasets, one per org and sandbox.

    def dataset_put(self, scope: Scope, entry: dict[str, Any], *, replace: bool = False) -> bool:
        raise StoreError(f"The store {self.url} keeps no data set catalog")

    def dataset_list(self, scope: Scope) -> list[dict[str, Any]]:
        raise StoreError(f"The store {self.url} keeps no data set catalog")

    def dataset_delete(self, scope: Scope, dataset_id: str) -> bool:
        raise StoreError(f"The store {self.url} keeps no data set catalog")

    # The runs view's tables (runtime.run_views; store/sqlite_runs.py). Another store has none.

    def run_index(self) -> Any:
        """The runs view's index (store.sqlite_runs.RunIndex, store.postgres_runs.PgRunIndex)."""
        raise StoreError(f"The store {self.url} keeps no runs view")

    # The scheduler's schedules, MLService state and leases (runtime.scheduler; the SQLite
    # implementation is store/sqlite_schedules.py). A store without them cannot schedule runs.

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("schedule", "service_state", "lease_")):
            raise StoreError(f"The store {self.url} keeps no schedules ({name})")
        raise AttributeError(name)


def open_store(url: str | Path) -> Store:
    """A store for `sqlite:///path/registry.db` (or a bare path), or for
    `postgresql://user@host:port/db` (store/postgres.py, psycopg imported only then). Other
    schemes fail clearly."""
    text = str(url)
    if text.startswith("sqlite:///"):
        path = Path(text[len("sqlite:///"):])
    elif "://" not in text:
        path = Path(text)
    elif text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(text)
    else:
        scheme = text.split("://", 1)[0]
        raise StoreError(
            f"Unsupported store URL scheme {scheme!r} in {text!r}: the stores are the embedded "
            "SQLite file (sqlite:///PATH) and PostgreSQL (postgresql://USER@HOST:PORT/DB)")
    from .sqlite import SQLiteStore

    return SQLiteStore(path)
