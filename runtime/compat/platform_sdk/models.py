"""`platform_sdk.models.Dataset`: a data set looked up by id in the run's catalog."""
from __future__ import annotations

from typing import Any, Optional

from runtime.datasets import DatasetRef, resolve_dataset


class Dataset:
    """`Dataset(client_context).get_by_id(id)` -> a Dataset whose `id`, `name`, `uri`, `path` and
    `format` describe where the data lives. An unknown id is an error naming it."""

    def __init__(self, client_context: Any = None, id: Optional[str] = None, **attributes: Any) -> None:
        self.client_context = client_context
        self.id = id
        self.ref: Optional[DatasetRef] = None
        self.attributes = attributes
        if id is not None:
            self.ref = resolve_dataset(id)

    def get_by_id(self, dataset_id: str) -> "Dataset":
        return Dataset(self.client_context, id=str(dataset_id))

    @property
    def name(self) -> Optional[str]:
        return self.id

    @property
    def uri(self) -> Optional[str]:
        return self.ref.uri if self.ref else None

    @property
    def path(self) -> Any:
        return self.ref.path if self.ref else None

    @property
    def format(self) -> Optional[str]:
        return self.ref.format if self.ref else None

    def __repr__(self) -> str:
        return f"Dataset(id={self.id!r}, uri={self.uri!r}, format={self.format!r})"
