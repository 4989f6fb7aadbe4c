"""Reading a data set: whole (`read_dataset`) or in batches of bounded memory (`scan_dataset`), and
what it holds without reading it (`count_rows`, `dataset_columns`, `parquet_fields`). A run's data
roots are checked, and its timeframe applied, at the moment of reading.

scan_dataset yields a data set in batches, read as read_dataset reads it (same columns, same
pandas types for well-typed data): Parquet through a pyarrow dataset scan (projection and filter
pushed down, so row groups whose statistics rule the filter out are never decoded), CSV through
pyarrow's streaming CSV reader set up to type columns as pd.read_csv does, JSON lines a batch of
lines at a time. A consumer holds one batch, not the data set.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

from .data_roots import guard
from .dataset_catalog import DatasetRef, suffix_format
from .dataset_formats import (csv_header, flat_fields, flatten_structs, parquet_dataset, read_file,
                              scan_csv, scan_jsonl, unreadable)
from .errors import ConfigError
from .timeframe import timeframe_for

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_BATCH_ROWS = 65_536


def _folder_files(path: Path) -> list[tuple[Path, str]]:
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and not p.name.startswith((".", "_")) and suffix_format(p))
    return [(p, suffix_format(p) or "") for p in files]


def _layout(ref: DatasetRef) -> tuple[str, list[tuple[Path, str]]]:
    """How a data set is stored: ("parquet", [(path, "parquet")]) for a Parquet file or a folder
    of Parquet files read as one pyarrow dataset, else ("files", [(file, format), ...]) in name
    order. Checks the run's data roots and that the data is there."""
    guard(ref.id, ref.path)   # a run's data roots, checked again at the moment of reading
    path = ref.path
    if path is None:
        raise ConfigError(f"Data set {ref.id!r} ({ref.uri}) is not a local file")
    if not path.exists():
        raise ConfigError(f"Data set {ref.id!r} not found: {path.absolute()}")
    if path.is_dir():
        if ref.format == "parquet" or (ref.format is None and any(path.glob("*.parquet"))
                                       and not any(path.glob("*.jsonl"))
                                       and not any(path.glob("*.csv"))):
            return "parquet", [(path, "parquet")]   # pyarrow reads a (partitioned) folder itself
        files = [(p, f) for p, f in _folder_files(path) if ref.format in (None, f)]
        if not files:
            raise ConfigError(f"Data set {ref.id!r}: folder {path} holds no "
                              f"{ref.format or 'csv, parquet or jsonl'} files")
        return "files", files
    fmt = ref.format or suffix_format(path)
    if fmt is None:
        raise ConfigError(f"Cannot read {path}: expected a .parquet, .csv or .jsonl file "
                          "(or register it with run datasets add ID PATH --format FORMAT)")
    return ("parquet" if fmt == "parquet" else "files"), [(path, fmt)]


def read_dataset(ref: DatasetRef, *, columns: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """The data set as a pandas DataFrame (XDM objects flattened to dotted columns, see runtime.datasets'
    docstring). A folder is read as the concatenation of its data files, in name order."""
    import pandas as pd

    wanted = list(columns) if columns is not None else None
    _, files = _layout(ref)
    parts = [read_file(p, f) for p, f in files]
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True, sort=False)
    timeframe = timeframe_for(ref)
    if timeframe is not None:   # a scheduled run's trainingTimeframe/scoringTimeframe
        frame = timeframe.apply(ref, frame)
    if wanted is not None:
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise _no_columns(ref, missing, frame.columns)
        frame = frame[wanted]
    return frame


def _no_columns(ref: DatasetRef, missing: Iterable[str], columns: Iterable[Any]) -> ConfigError:
    return ConfigError(f"Data set {ref.id!r} has no column(s) {', '.join(missing)} "
                       f"(columns: {', '.join(map(str, columns))})")


# --- streaming: bounded memory ---------------------------------------------------------------

def scan_dataset(ref: DatasetRef, columns: Optional[Iterable[str]] = None, *,
                 arrow_filter: Any = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                 csv_types: Optional[dict[str, Any]] = None,
                 exact_types: bool = False, timeframe: bool = True) -> Iterator[pd.DataFrame]:
    """The data set as pandas DataFrames of at most about `batch_rows` rows each, in
    read_dataset's row order; concatenated they equal read_dataset(ref, columns=columns).

    `columns` projects (dotted XDM names included); `arrow_filter`, a pyarrow expression over
    `parquet_fields`' paths, is pushed down to a Parquet scan and only narrows what is read: the
    caller applies its exact condition to each batch (other formats ignore it). At least one
    frame is yielded, empty when no row is left, with the columns and types of the data.
    JSON lines carry no types: a batch's columns are typed from its own rows (a text column
    whose batch holds only nulls is not text), so only their values are read_dataset's.

    CSV columns are typed from the first block, as pyarrow does, and widened when a later block
    needs it (integers to floats to text), the later batches then carrying the wider type. With
    `exact_types`, a column that turns out to be text after batches were handed out raises
    ReadAgain instead; scanning again with its `column_types` as `csv_types` gives every batch
    pd.read_csv's types. A run's timeframe (runtime.timeframe) narrows the rows unless
    `timeframe=False`."""
    import pandas as pd

    window = timeframe_for(ref) if timeframe else None
    if window is not None:
        yield from window.scan(ref, None if columns is None else list(columns),
                               lambda cols: scan_dataset(
                                   ref, cols, arrow_filter=arrow_filter, batch_rows=batch_rows,
                                   csv_types=csv_types, exact_types=exact_types, timeframe=False),
                               dataset_columns(ref))
        return
    kind, files = _layout(ref)
    wanted = list(columns) if columns is not None else None
    batch_rows = max(1, int(batch_rows))
    if kind == "parquet":
        yield from _scan_parquet(ref, files[0][0], wanted, arrow_filter, batch_rows)
        return
    seen: set[str] = set()
    empty: Optional[pd.DataFrame] = None
    yielded = False
    for path, fmt in files:
        if fmt == "parquet":
            parts: Iterator[pd.DataFrame] = _scan_parquet(ref, path, None, None, batch_rows)
        elif fmt == "csv":
            header = csv_header(path) if wanted is not None else []
            if len(files) == 1 and wanted is not None:   # the header says it all, at once
                missing = [c for c in wanted if c not in header]
                if missing:
                    raise _no_columns(ref, missing, header)
            parts = scan_csv(path, batch_rows,
                              None if wanted is None else [c for c in wanted if c in header],
                              csv_types, exact_types)
        else:
            parts = scan_jsonl(path, batch_rows)
        for frame in parts:
            seen.update(map(str, frame.columns))
            if wanted is not None:
                frame = frame.reindex(columns=wanted) if any(
                    c not in frame.columns for c in wanted) else frame[wanted]
            if len(frame) or (empty is None and not yielded):
                if not len(frame):
                    empty = frame
                    continue
                yielded = True
                yield frame
    if wanted is not None:
        missing = [c for c in wanted if c not in seen]
        if missing:
            raise _no_columns(ref, missing, sorted(seen))
    if not yielded:
        yield empty if empty is not None else pd.DataFrame(columns=wanted or [])


def _scan_parquet(ref: DatasetRef, path: Path, wanted: Optional[list[str]], arrow_filter: Any,
                  batch_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.dataset as ds

    dataset = parquet_dataset(path)
    fields = flat_fields(dataset.schema)
    projection: Any = None
    nested = any(len(p) > 1 for p, _ in fields.values())
    if wanted is not None:
        missing = [c for c in wanted if c not in fields]
        if missing:
            raise _no_columns(ref, missing, fields)
        projection = {name: ds.field(*fields[name][0]) for name in wanted}
        nested = False
    reader = None
    try:
        yielded = False
        # pyarrow reads 16 batches and 4 files ahead by default: with row groups of a million
        # rows that alone is GBs. Scans here are sequential, so a little read-ahead suffices.
        reader = ds.Scanner.from_dataset(dataset, columns=projection, filter=arrow_filter,
                                         batch_size=batch_rows, batch_readahead=2,
                                         fragment_readahead=1).to_reader()
        for batch in reader:
            if not batch.num_rows and yielded:
                continue
            table = pa.Table.from_batches([batch])
            yielded = True
            yield (flatten_structs(table) if nested else table).to_pandas()
        if not yielded:
            table = dataset.head(0, columns=projection)
            yield (flatten_structs(table) if nested else table).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(path, "Parquet", exc) from None
    finally:
        if reader is not None:   # its read-ahead stopped now (see scan_csv), not at teardown
            reader.close()


def stored_formats(ref: DatasetRef) -> set[str]:
    """The formats of the files the data set is read from (`parquet`, `csv`, `jsonl`)."""
    return {fmt for _, fmt in _layout(ref)[1]}


def count_rows(ref: DatasetRef) -> int:
    """The data set's rows: Parquet from its metadata; CSV and JSON lines by counting lines
    (a CSV value with a line break inside quotes counts twice)."""
    kind, files = _layout(ref)
    if kind == "parquet":
        return int(parquet_dataset(files[0][0]).count_rows())
    total = 0
    for path, fmt in files:
        if fmt == "parquet":
            total += int(parquet_dataset(path).count_rows())
            continue
        lines = 0
        last = b"\n"
        with open(path, "rb") as fh:
            while block := fh.read(1 << 24):
                lines += block.count(b"\n")
                last = block[-1:]
        lines += last != b"\n"   # a last line without its newline
        total += max(0, lines - 1) if fmt == "csv" else lines
    return total


def dataset_columns(ref: DatasetRef) -> list[str]:
    """The data set's column names as read_dataset gives them (Parquet: from the schema; CSV:
    the header; JSON lines: every key met, read through)."""
    kind, files = _layout(ref)
    if kind == "parquet":
        return list(flat_fields(parquet_dataset(files[0][0]).schema))
    names: list[str] = []
    for path, fmt in files:
        if fmt == "csv":
            found = csv_header(path)
        elif fmt == "parquet":
            found = list(flat_fields(parquet_dataset(path).schema))
        else:
            found = [str(c) for frame in scan_jsonl(path, DEFAULT_BATCH_ROWS) for c in frame.columns]
        names.extend(n for n in found if n not in names)
    return names


def parquet_fields(ref: DatasetRef) -> Optional[dict[str, tuple[tuple[str, ...], Any]]]:
    """For a Parquet data set: each (flattened) column's field path and pyarrow type, to build an
    `arrow_filter` with `pyarrow.dataset.field(*path)`; None for other formats."""
    kind, files = _layout(ref)
    if kind != "parquet":
        return None
    return flat_fields(parquet_dataset(files[0][0]).schema)
