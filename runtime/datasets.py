"""Data sets: the local catalog (id -> location, format) and the one reader/writer every path uses.

A data set value is a local path, a `file://` URI, or an id registered with `run datasets add`.
The worker, the `platform_sdk` shims of a recipe's environment and the Spark data source all read
and write through here. This module imports no pydantic, torch or FastAPI, and only pandas/pyarrow
API that pandas 1.x has: recipe environments import it too.

XDM shape (the platform's data sets): a column named `_tenant.field` (first segment starting with
`_`) is a field of the tenant's (or a field group's) object. Written as JSON lines it is nested
(`{"_tenant": {"field": ...}}`), written as Parquet it is a struct column `_tenant`; CSV keeps the
dotted names. Read back, `_`-prefixed struct columns (Parquet) and `_`-prefixed objects (JSON lines)
are flattened to dotted columns again, which is what the platform's DatasetReader returned and what
recipes expect (`reader[tenant + ".date"]`, `rename(columns=lambda c: c[c.find(".") + 1:])`).
"""
from __future__ import annotations

import json
import os
import re
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional

from .data_roots import guard
from .errors import ConfigError
from .locations import local_path
from .timeframe import timeframe_for

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "ENV_DATASETS_FILE", "DatasetEntry", "DatasetRef", "active_catalog",
           "catalog_from_json", "catalog_to_json", "check_dataset_id", "count_rows", "ReadAgain",
           "dataset_columns", "entry_for", "format_name", "parquet_fields", "read_dataset",
           "resolve_dataset", "scan_dataset", "stored_formats", "use_catalog", "write_catalog_file", "write_dataset",
           "written"]

FORMATS = ("csv", "parquet", "jsonl")
ENV_DATASETS_FILE = "MLRUNTIME_DATASETS_FILE"
DATASETS_FILE = "datasets.json"
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                   ".ndjson": "jsonl", ".json": "jsonl"}
_FORMAT_SUFFIX = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
_FORMAT_ALIASES = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl",
                   "json": "jsonl", "ndjson": "jsonl", "jsonlines": "jsonl"}
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class DatasetEntry:
    """One registered data set: its id, where it lives (a `file://` URI) and its format (None: a
    folder whose files say it)."""

    id: str
    uri: str
    format: Optional[str] = None
    created: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class DatasetRef:
    """A resolved data set: `id` as given (a registered id or the path itself), its URI, the local
    path, and the format (None when the location is a folder whose files decide)."""

    id: str
    uri: str
    path: Optional[Path]
    format: Optional[str]


# --- formats and ids ---------------------------------------------------------------------------

def format_name(value: Optional[str], *, where: str = "format") -> Optional[str]:
    """`json` -> `jsonl`, `pq` -> `parquet`; None stays None; anything else is a ConfigError."""
    if value is None or value == "":
        return None
    name = _FORMAT_ALIASES.get(str(value).strip().lower())
    if name is None:
        raise ConfigError(f"Unknown data set {where} {value!r}: expected one of csv, parquet, "
                          "jsonl (json)")
    return name


def check_dataset_id(value: str) -> str:
    """A catalog id: letters, digits, `_`, `-`, `.`, at most 128 characters, not path-like."""
    if not isinstance(value, str) or not _ID_PATTERN.match(value):
        raise ConfigError(
            f"Invalid data set id {value!r}: use letters, digits, '_', '-' and '.' (at most 128 "
            "characters, starting with a letter or digit)")
    if Path(value).suffix.lower() in _SUFFIX_FORMATS:
        raise ConfigError(f"Invalid data set id {value!r}: it ends like a file name "
                          f"({Path(value).suffix}); ids that look like paths would be read as paths")
    return value


def _suffix_format(path: Path) -> Optional[str]:
    return _SUFFIX_FORMATS.get(path.suffix.lower())


def _looks_like_path(value: str) -> bool:
    return (value.startswith(("/", ".", "~", "file:")) or "/" in value or os.sep in value
            or Path(value).suffix.lower() in _SUFFIX_FORMATS)


def entry_for(dataset_id: str, location: str, file_format: Optional[str] = None, *,
              created: Optional[str] = None) -> DatasetEntry:
    """A catalog entry for registering `location` (a path or file:// URI) as `dataset_id`: the
    location made absolute, the format from `file_format`, else from the file name. A file name
    whose format cannot be told needs `file_format`; a name without a suffix is a folder."""
    check_dataset_id(dataset_id)
    text = str(location)
    path = local_path(text)
    if path is None:
        raise ConfigError(f"Cannot register {text!r}: only local paths and file:// URIs are "
                          "data set locations")
    path = Path(os.path.abspath(path))   # `..` folded, symlinks kept
    fmt = format_name(file_format)
    if fmt is None and not path.is_dir():
        fmt = _suffix_format(path)
        if fmt is None and path.suffix:
            raise ConfigError(f"Cannot tell the format of {path} from its name: give --format "
                              "csv, parquet or jsonl")
    return DatasetEntry(id=dataset_id, uri=path.as_uri(), format=fmt, created=created)


# --- the catalog a process sees ----------------------------------------------------------------

_active: Optional[dict[str, DatasetEntry]] = None
_file_cache: dict[str, tuple[float, dict[str, DatasetEntry]]] = {}
_lock = threading.Lock()
# What this process has written with write_dataset: {"id", "path", "format", "rows"} per write,
# so the code that ran a recipe's saver can say where its output went.
written: list[dict[str, Any]] = []


def catalog_from_json(data: Any) -> dict[str, DatasetEntry]:
    """Entries from `{"datasets": {id: {uri, format}}}` or `{id: {uri, format}}`."""
    if isinstance(data, dict) and isinstance(data.get("datasets"), dict):
        data = data["datasets"]
    if not isinstance(data, dict):
        raise ConfigError("A data set catalog is a JSON object mapping ids to {uri, format}")
    out: dict[str, DatasetEntry] = {}
    for key, value in data.items():
        if isinstance(value, DatasetEntry):
            out[key] = value
        elif isinstance(value, dict) and value.get("uri"):
            out[key] = DatasetEntry(id=key, uri=str(value["uri"]),
                                    format=format_name(value.get("format")),
                                    created=value.get("created"))
        else:
            raise ConfigError(f"Data set catalog entry {key!r} has no uri")
    return out


def catalog_to_json(catalog: Mapping[str, Any]) -> dict[str, Any]:
    return {"datasets": {k: (v.to_dict() if isinstance(v, DatasetEntry) else dict(v))
                         for k, v in catalog.items()}}


def write_catalog_file(catalog: Mapping[str, Any], path: Path) -> Path:
    """The catalog as the JSON file named by MLRUNTIME_DATASETS_FILE (written whole, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(catalog_to_json(catalog), indent=2))
    os.replace(tmp, path)
    return path


def use_catalog(catalog: Optional[Mapping[str, Any]]) -> None:
    """Make `catalog` the one `resolve_dataset` uses when given none (None: back to the file named
    by MLRUNTIME_DATASETS_FILE, if any)."""
    global _active
    with _lock:
        _active = None if catalog is None else catalog_from_json(dict(catalog))


def active_catalog() -> dict[str, DatasetEntry]:
    """The catalog set by `use_catalog`, else the file named by MLRUNTIME_DATASETS_FILE, else none."""
    if _active is not None:
        return _active
    name = os.environ.get(ENV_DATASETS_FILE)
    if not name:
        return {}
    try:
        mtime = os.stat(name).st_mtime
    except OSError as exc:
        raise ConfigError(f"{ENV_DATASETS_FILE} names {name}, which cannot be read: {exc}") from exc
    cached = _file_cache.get(name)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        catalog = catalog_from_json(json.loads(Path(name).read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the data set catalog {name}: {exc}") from exc
    _file_cache[name] = (mtime, catalog)
    return catalog


# --- resolving -----------------------------------------------------------------------------------

def resolve_dataset(value: str, catalog: Optional[Mapping[str, DatasetEntry]] = None) -> DatasetRef:
    """A registered id, a path or a `file://` URI as a DatasetRef. A registered id wins over a
    same-named relative path; a path that a catalog entry points at takes that entry's format.
    Anything else is a ConfigError naming the value and the registered ids."""
    if value is None or str(value).strip() == "":
        raise ConfigError("No data set given: expected a registered data set id, a path or a "
                          "file:// URI")
    text = str(value).strip()
    entries = active_catalog() if catalog is None else catalog_from_json(dict(catalog))
    entry = entries.get(text)
    if entry is not None:
        path = local_path(entry.uri)
        return DatasetRef(id=text, uri=entry.uri, path=path,
                          format=entry.format or (_suffix_format(path) if path else None))
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(f"Unsupported data set URI {text!r}: only registered ids, local paths "
                          "and file:// URIs are read and written here")
    path = local_path(text)
    if text.startswith("file://") or _looks_like_path(text) or (path is not None and path.exists()):
        assert path is not None
        fmt = _suffix_format(path)
        absolute = Path(os.path.abspath(path))
        for other in entries.values():   # a path registered with an explicit format keeps it
            if other.format and local_path(other.uri) == absolute:
                fmt = other.format
                break
        uri = text if text.startswith("file://") else absolute.as_uri()
        return DatasetRef(id=text, uri=uri, path=path, format=fmt)
    known = ", ".join(sorted(entries)) or "none"
    raise ConfigError(
        f"Unknown data set {text!r}: it is not a data set id registered in this sandbox "
        f"(registered: {known}) nor a path; register it with: run datasets add {text} PATH")


# --- reading -------------------------------------------------------------------------------------

def _folder_files(path: Path) -> list[tuple[Path, str]]:
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and not p.name.startswith((".", "_")) and _suffix_format(p))
    return [(p, _suffix_format(p) or "") for p in files]


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
    fmt = ref.format or _suffix_format(path)
    if fmt is None:
        raise ConfigError(f"Cannot read {path}: expected a .parquet, .csv or .jsonl file "
                          "(or register it with run datasets add ID PATH --format FORMAT)")
    return ("parquet" if fmt == "parquet" else "files"), [(path, fmt)]


def read_dataset(ref: DatasetRef, *, columns: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """The data set as a pandas DataFrame (XDM objects flattened to dotted columns, see the module
    docstring). A folder is read as the concatenation of its data files, in name order."""
    import pandas as pd

    wanted = list(columns) if columns is not None else None
    _, files = _layout(ref)
    parts = [_read_file(p, f) for p, f in files]
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


def _read_file(path: Path, fmt: str) -> pd.DataFrame:
    import pandas as pd

    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "csv":
        try:
            return pd.read_csv(path)
        except Exception as exc:
            raise unreadable(path, "CSV", exc) from None
    if fmt == "jsonl":
        return _read_jsonl(path)
    raise ConfigError(f"Cannot read {path}: unknown format {fmt!r}")


def unreadable(path: Path, what: str, exc: BaseException) -> ConfigError:
    """A data file the parser refused, named with the parser's error class and (when it says one)
    the line, never the parser's message: that may quote the file's content, which a shared server
    must not hand to a user who named a file they may not read."""
    line = re.search(r"\bline (\d+)", str(exc))
    return ConfigError(f"Cannot read {what} data set {path}: {type(exc).__name__}"
                       + (f" at line {line.group(1)}" if line else ""))


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(str(path))
    except Exception as exc:  # pyarrow's own errors: say which file
        raise unreadable(path, "Parquet", exc) from None
    if any(_is_struct(field.type) and field.name.startswith("_") for field in table.schema):
        table = _flatten_structs(table)
    return table.to_pandas()


def _is_struct(arrow_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(arrow_type)


def _flatten_structs(table: Any) -> Any:
    """`_`-prefixed struct columns replaced by their fields, named `parent.child`, recursively."""
    import pyarrow as pa

    names, arrays = [], []

    def add(name: str, column: Any) -> None:
        if _is_struct(column.type) and name.split(".", 1)[0].startswith("_"):
            children = column.flatten()
            for i, child in enumerate(children):
                add(f"{name}.{column.type[i].name}", child)
        else:
            names.append(name)
            arrays.append(column)

    for i, name in enumerate(table.column_names):
        add(name, table.column(i))
    return pa.Table.from_arrays(arrays, names=names)


def _read_jsonl(path: Path) -> pd.DataFrame:
    """JSON lines (or one JSON array of records) with JSON's own types: strings stay strings
    (dates included: recipes parse them themselves, as on the platform), `_`-prefixed objects
    become dotted columns in the order their fields appear."""
    return next(_scan_jsonl(path, 2**62))     # one batch: the whole file


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    """The flat records of a JSON lines file (or of one JSON array of records)."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(1)
        while head and head.isspace():
            head = fh.read(1)
        fh.seek(0)
        items = json.load(fh) if head == "[" else (json.loads(line) for line in fh if line.strip())
        for number, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise ValueError(f"line {number} is a {type(item).__name__}, not an object")
            yield _flat_record(item)


def _flat_record(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    if not prefix and not any(isinstance(v, dict) and k.startswith("_") for k, v in record.items()):
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and (prefix or key.startswith("_")):
            out.update(_flat_record(value, name + "."))
        else:
            out[name] = value
    return out


# --- streaming: bounded memory ---------------------------------------------------------------
# scan_dataset yields a data set in batches, read as read_dataset reads it (same columns, same
# pandas types for well-typed data): Parquet through a pyarrow dataset scan (projection and
# filter pushed down, so row groups whose statistics rule the filter out are never decoded),
# CSV through pyarrow's streaming CSV reader set up to type columns as pd.read_csv does, JSON
# lines a batch of lines at a time. A consumer holds one batch, not the data set.

DEFAULT_BATCH_ROWS = 65_536
# pd.read_csv's default missing-value strings, so that pyarrow reads as pandas does.
_CSV_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
              "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
# A CSV column whose later rows do not fit the type inferred from the first block is read again
# with the next wider type (pd.read_csv, which sees the whole file, would have chosen it).
_CSV_WIDER = {"null": "int64", "int64": "double", "bool": "string", "double": "string"}
_CSV_CONVERSION = re.compile(r"CSV column #(\d+): CSV conversion error to (\w+)")


class ReadAgain(Exception):
    """A CSV column turned out to be text after batches typed otherwise were handed out (see
    scan_dataset's `exact_types`): scan again with `column_types`."""

    def __init__(self, column_types: dict[str, Any]) -> None:
        super().__init__("a CSV column is text after all: read again with its type known")
        self.column_types = column_types


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
            header = _csv_header(path) if wanted is not None else []
            if len(files) == 1 and wanted is not None:   # the header says it all, at once
                missing = [c for c in wanted if c not in header]
                if missing:
                    raise _no_columns(ref, missing, header)
            parts = _scan_csv(path, batch_rows,
                              None if wanted is None else [c for c in wanted if c in header],
                              csv_types, exact_types)
        else:
            parts = _scan_jsonl(path, batch_rows)
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


def stored_formats(ref: DatasetRef) -> set[str]:
    """The formats of the files the data set is read from (`parquet`, `csv`, `jsonl`)."""
    return {fmt for _, fmt in _layout(ref)[1]}


def count_rows(ref: DatasetRef) -> int:
    """The data set's rows: Parquet from its metadata; CSV and JSON lines by counting lines
    (a CSV value with a line break inside quotes counts twice)."""
    kind, files = _layout(ref)
    if kind == "parquet":
        return int(_parquet_dataset(files[0][0]).count_rows())
    total = 0
    for path, fmt in files:
        if fmt == "parquet":
            total += int(_parquet_dataset(path).count_rows())
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
        return list(_flat_fields(_parquet_dataset(files[0][0]).schema))
    names: list[str] = []
    for path, fmt in files:
        if fmt == "csv":
            found = _csv_header(path)
        elif fmt == "parquet":
            found = list(_flat_fields(_parquet_dataset(path).schema))
        else:
            found = [str(c) for frame in _scan_jsonl(path, DEFAULT_BATCH_ROWS) for c in frame.columns]
        names.extend(n for n in found if n not in names)
    return names


def parquet_fields(ref: DatasetRef) -> Optional[dict[str, tuple[tuple[str, ...], Any]]]:
    """For a Parquet data set: each (flattened) column's field path and pyarrow type, to build an
    `arrow_filter` with `pyarrow.dataset.field(*path)`; None for other formats."""
    kind, files = _layout(ref)
    if kind != "parquet":
        return None
    return _flat_fields(_parquet_dataset(files[0][0]).schema)


def _parquet_dataset(path: Path) -> Any:
    import pyarrow.dataset as ds

    try:
        if path.is_dir():   # as pq.read_table reads a folder: hive partitions, as dictionaries
            return ds.dataset(str(path), format="parquet",
                              partitioning=ds.HivePartitioning.discover(infer_dictionary=True))
        return ds.dataset(str(path), format="parquet")
    except Exception as exc:
        raise unreadable(path, "Parquet", exc) from None


def _flat_fields(schema: Any) -> dict[str, tuple[tuple[str, ...], Any]]:
    """Flattened column name -> (field path, type), flattening `_`-prefixed structs as
    _flatten_structs does."""
    out: dict[str, tuple[tuple[str, ...], Any]] = {}

    def add(name: str, path: tuple[str, ...], arrow_type: Any) -> None:
        if _is_struct(arrow_type) and name.split(".", 1)[0].startswith("_"):
            for i in range(arrow_type.num_fields):
                child = arrow_type.field(i)
                add(f"{name}.{child.name}", path + (child.name,), child.type)
        else:
            out[name] = (path, arrow_type)

    for field in schema:
        add(field.name, (field.name,), field.type)
    return out


def _scan_parquet(ref: DatasetRef, path: Path, wanted: Optional[list[str]], arrow_filter: Any,
                  batch_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.dataset as ds

    dataset = _parquet_dataset(path)
    fields = _flat_fields(dataset.schema)
    projection: Any = None
    nested = any(len(p) > 1 for p, _ in fields.values())
    if wanted is not None:
        missing = [c for c in wanted if c not in fields]
        if missing:
            raise _no_columns(ref, missing, fields)
        projection = {name: ds.field(*fields[name][0]) for name in wanted}
        nested = False
    try:
        yielded = False
        # pyarrow reads 16 batches and 4 files ahead by default: with row groups of a million
        # rows that alone is GBs. Scans here are sequential, so a little read-ahead suffices.
        for batch in dataset.to_batches(columns=projection, filter=arrow_filter,
                                        batch_size=batch_rows, batch_readahead=2,
                                        fragment_readahead=1):
            if not batch.num_rows and yielded:
                continue
            table = pa.Table.from_batches([batch])
            yielded = True
            yield (_flatten_structs(table) if nested else table).to_pandas()
        if not yielded:
            table = dataset.head(0, columns=projection)
            yield (_flatten_structs(table) if nested else table).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(path, "Parquet", exc) from None


def _open_csv(path: Path, types: dict[str, Any], block_bytes: int,
              include: Optional[list[str]] = None) -> Any:
    """pyarrow's streaming CSV reader, typing as pd.read_csv does: its missing-value strings, its
    true/false spellings, and dates left as text (pyarrow would infer date and timestamp types)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    def reader(column_types: dict[str, Any]) -> Any:
        return pcsv.open_csv(
            str(path), read_options=pcsv.ReadOptions(block_size=block_bytes),
            convert_options=pcsv.ConvertOptions(
                column_types=column_types, include_columns=include or [],
                null_values=_CSV_NULLS, strings_can_be_null=True,
                true_values=["True", "TRUE", "true"], false_values=["False", "FALSE", "false"]))

    opened = reader(types)
    temporal = {f.name: pa.string() for f in opened.schema if f.name not in types and (
        pa.types.is_temporal(f.type))}
    if temporal:
        opened.close()
        types.update(temporal)
        opened = reader(types)
    return opened


def _csv_block_bytes(path: Path, batch_rows: int) -> int:
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    row_bytes = max(16, len(head) // max(1, head.count(b"\n")))
    return int(min(256 << 20, max(64 << 10, row_bytes * batch_rows)))


def _csv_header(path: Path) -> list[str]:
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return next(csv.reader(fh), [])
    except (OSError, ValueError, csv.Error) as exc:
        raise unreadable(path, "CSV", exc) from None


def _scan_csv(path: Path, batch_rows: int, include: Optional[list[str]] = None,
              known_types: Optional[dict[str, Any]] = None,
              exact_types: bool = False) -> Iterator[pd.DataFrame]:
    """`include`: the columns to convert (all when None); each must be in the header."""
    import pyarrow as pa

    block = _csv_block_bytes(path, batch_rows)
    names = _csv_header(path)   # conversion errors name a column by its place in the file
    types: dict[str, Any] = {k: pa.type_for_alias(v) if isinstance(v, str) else v
                             for k, v in (known_types or {}).items() if k in names}
    done = 0   # rows already yielded: a re-read with wider types goes on after them
    while True:
        kinds: dict[str, str] = {}
        try:
            reader = _open_csv(path, types, block, include)
            kinds = {f.name: str(f.type) for f in reader.schema}
            at = 0
            yielded = done > 0
            for batch in reader:
                start = at
                at += batch.num_rows
                if at <= done and batch.num_rows:
                    continue
                if start < done:
                    batch = batch.slice(done - start)
                done = at
                if batch.num_rows or not yielded:
                    yielded = True
                    yield _csv_frame(batch)
            if not yielded:   # a header and no rows
                yield _csv_frame(pa.RecordBatch.from_pylist([], schema=reader.schema))
            return
        except pa.ArrowInvalid as exc:
            match = _CSV_CONVERSION.search(str(exc))
            column = names[int(match.group(1))] if match and int(match.group(1)) < len(names) \
                else None
            wider = _CSV_WIDER.get(kinds.get(column, "")) if column else None
            if column is None or wider is None:
                raise unreadable(path, "CSV", exc) from None
            types[column] = pa.type_for_alias(wider)
            if exact_types and done and wider == "string":
                raise ReadAgain({**(known_types or {}), **types}) from None
        except (pa.ArrowException, OSError) as exc:
            raise unreadable(path, "CSV", exc) from None


def _csv_frame(batch: Any) -> pd.DataFrame:
    """A CSV batch as pd.read_csv would have typed it: an empty column is float NaN, a missing
    value in a text or flag column is NaN, not None."""
    import numpy as np
    import pyarrow as pa

    frame = pa.Table.from_batches([batch]).to_pandas()
    for field in batch.schema:
        if pa.types.is_null(field.type):
            frame[field.name] = np.full(len(frame), np.nan)
        elif frame[field.name].dtype == object and batch.column(field.name).null_count:
            frame[field.name] = frame[field.name].where(frame[field.name].notna(), np.nan)
    return frame


def _scan_jsonl(path: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    """JSON lines `batch_rows` records at a time (one JSON array is read whole, then sliced)."""
    import pandas as pd

    records: list[dict[str, Any]] = []
    yielded = False
    try:
        for record in _jsonl_records(path):
            records.append(record)
            if len(records) >= batch_rows:
                frame, records = pd.DataFrame(records), []
                yielded = True
                yield frame
    except (OSError, ValueError) as exc:
        raise unreadable(path, "JSON lines", exc) from None   # its message may quote the file
    if records or not yielded:
        yield pd.DataFrame(records)


# --- writing -------------------------------------------------------------------------------------

def _xdm_groups(columns: Iterable[Any]) -> bool:
    return any(isinstance(c, str) and c.startswith("_") and "." in c.strip(".") for c in columns)


def write_dataset(frame: pd.DataFrame, ref: DatasetRef, file_format: Optional[str] = None, *,
                  log: Any = None) -> Path:
    """Write `frame` where `ref` points and return the file written.

    A file path (or a registered id pointing at a file) is replaced whole, in its own format: when
    `file_format` asks for another one, the data set's format wins and `log` (a logger) says so. A
    folder, or a path without a suffix, receives a new batch file `part-<time>-<id>.<ext>` in
    `file_format` (else the registered format, else Parquet), as a platform data set receives a
    batch; reading the folder reads every batch."""
    requested = format_name(file_format, where="file_format")
    guard(ref.id, ref.path)   # a run's data roots, checked again at the moment of writing
    path = ref.path
    if path is None:
        raise ConfigError(f"Cannot write data set {ref.id!r} ({ref.uri}): only local paths and "
                          "file:// URIs are written")
    as_folder = path.is_dir() or (not path.exists() and not path.suffix)
    if not as_folder and _suffix_format(path) is None and ref.format is None:
        raise ConfigError(f"Cannot write {path}: expected a .parquet, .jsonl or .csv file name, or "
                          "a folder")
    if as_folder:
        fmt = requested or ref.format or "parquet"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = path / f"part-{stamp}-{uuid.uuid4().hex[:8]}{_FORMAT_SUFFIX[fmt]}"
    else:
        fmt = ref.format or _suffix_format(path) or requested or "parquet"
        if requested and requested != fmt and log is not None:
            log.warning("data set %s is %s (%s); writing %s, not the %s asked for", ref.id, fmt,
                        path, fmt, requested)
        target = path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if fmt == "parquet":
            _write_parquet(frame, tmp)
        elif fmt == "jsonl":
            _write_jsonl(frame, tmp)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    written.append({"id": ref.id, "path": str(target), "format": fmt, "rows": len(frame)})
    if log is not None:
        log.info("wrote %d rows to %s (%s)", len(frame), target, fmt)
    return target


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if _xdm_groups(frame.columns):
        table = _nested_table(frame)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, str(path), compression="snappy")


def _group_tree(columns: Iterable[Any]) -> dict[str, Any]:
    """{'_t': {'a': 'col _t.a', 'b': {...}}, 'x': 'x'} from dotted column names (XDM only)."""
    tree: dict[str, Any] = {}
    for column in columns:
        parts = column.split(".") if isinstance(column, str) and column.startswith("_") else [column]
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"Column {column!r} nests under {part!r}, which is also a "
                                  "column of its own: XDM columns cannot be both")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"Column {column!r} is also the parent of other columns")
        node[parts[-1]] = column
    return tree


def _nested_table(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    flat = pa.Table.from_pandas(frame, preserve_index=False)
    index = {name: i for i, name in enumerate(flat.column_names)}

    def build(node: Any) -> Any:
        if not isinstance(node, dict):
            return flat.column(index[str(node)]).combine_chunks()
        names = list(node)
        children = [build(node[n]) for n in names]
        return pa.StructArray.from_arrays(children, names=[str(n) for n in names])

    tree = _group_tree(frame.columns)
    return pa.Table.from_arrays([build(v) if isinstance(v, dict) else flat.column(index[str(v)])
                                 for v in tree.values()], names=[str(k) for k in tree])


def _write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    if _xdm_groups(frame.columns):
        tree = _group_tree(frame.columns)

        def build(node: Any) -> Any:   # an object column of dicts for each group
            if not isinstance(node, dict):
                return frame[node]
            import pandas as pd
            parts = {name: build(child) for name, child in node.items()}
            return pd.DataFrame(parts, index=frame.index).to_dict("records")

        import pandas as pd
        out = pd.DataFrame({name: build(node) for name, node in tree.items()}, index=frame.index)
    else:
        out = frame
    out.to_json(path, orient="records", lines=True, date_format="iso", date_unit="ms")
