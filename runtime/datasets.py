"""Data sets: the local catalog (id -> location, format) and the one reader/writer every path uses,
imported from here: `dataset_catalog.py` (ids, entries, resolving), `dataset_reader.py` and
`dataset_writer.py` (a data set whole or in batches), `dataset_formats.py` (Parquet, CSV and JSON
lines, and the XDM shape in each). (Modules beside this one, not a `datasets/` package: a Ray job's
working-directory excludes name `datasets`, and they apply to the runtime's code uploaded with it.)

A data set value is a local path, a `file://` URI, or an id registered with `run datasets add`.
The worker, the `platform_sdk` shims of a recipe's environment and the Spark data source all read
and write through here. These modules import no pydantic, torch or FastAPI, and only pandas/pyarrow
API that pandas 1.x has: recipe environments import it too.

XDM shape (the platform's data sets): a column named `_tenant.field` (first segment starting with
`_`) is a field of the tenant's (or a field group's) object. Written as JSON lines it is nested
(`{"_tenant": {"field": ...}}`), written as Parquet it is a struct column `_tenant`; CSV keeps the
dotted names. Read back, `_`-prefixed struct columns (Parquet) and `_`-prefixed objects (JSON lines)
are flattened to dotted columns again, which is what the platform's DatasetReader returned and what
recipes expect (`reader[tenant + ".date"]`, `rename(columns=lambda c: c[c.find(".") + 1:])`).
"""
from __future__ import annotations

from .dataset_catalog import (DATASETS_FILE, ENV_DATASETS_FILE, FORMATS, DatasetEntry, DatasetRef,
                              active_catalog, catalog_from_json, catalog_to_json, check_dataset_id,
                              entry_for, format_name, resolve_dataset, use_catalog, write_catalog_file)
from .dataset_formats import ReadAgain, unreadable
from .dataset_reader import (DEFAULT_BATCH_ROWS, count_rows, dataset_columns, parquet_fields, read_dataset,
                             scan_dataset, stored_formats)
from .dataset_writer import write_dataset, written

__all__ = ["FORMATS", "DATASETS_FILE", "DEFAULT_BATCH_ROWS", "ENV_DATASETS_FILE", "DatasetEntry", "DatasetRef",
           "active_catalog", "catalog_from_json", "catalog_to_json", "check_dataset_id", "count_rows",
           "ReadAgain", "dataset_columns", "entry_for", "format_name", "parquet_fields", "read_dataset",
           "resolve_dataset", "scan_dataset", "stored_formats", "unreadable", "use_catalog",
           "write_catalog_file", "write_dataset", "written"]
