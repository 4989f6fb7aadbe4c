"""`DatasetWriter(client_context, dataset).write(frame, file_format='json'|'parquet')`.

Writes where the data set points (a registered id or a path): a file is replaced whole in its own
format, a folder receives a new batch file in `file_format` (see runtime.datasets.write_dataset).
XDM columns (`_tenant.field`) are nested as the platform stores them.
"""
from __future__ import annotations

import logging
from typing import Any

from runtime.datasets import resolve_dataset, write_dataset

log = logging.getLogger("platform_sdk.dataset_writer")


class DatasetWriter:
    def __init__(self, client_context: Any, dataset: Any) -> None:
        self.client_context = client_context
        ref = getattr(dataset, "ref", None)
        if ref is None:   # a Dataset without a ref, or a plain id
            ref = resolve_dataset(str(getattr(dataset, "id", None) or dataset))
        self.dataset = dataset
        self.ref = ref

    def write(self, dataframe: Any, file_format: str = "json", **options: Any) -> str:
        """Write `dataframe`; returns the path of the file written."""
        if not hasattr(dataframe, "columns"):
            raise TypeError(f"DatasetWriter.write needs a pandas DataFrame, got "
                            f"{type(dataframe).__name__}")
        return str(write_dataset(dataframe, self.ref, file_format, log=log))
