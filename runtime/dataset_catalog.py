"""The data set catalog: ids and their entries (location, format), the catalog a process sees
(set in-process or named by MLRUNTIME_DATASETS_FILE), and resolving an id, a path or a `file://` URI
to the DatasetRef that the reader and the writer take.
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from .errors import ConfigError
from .locations import local_path, names_a_path

FORMATS = ("csv", "parquet", "jsonl")
ENV_DATASETS_FILE = "MLRUNTIME_DATASETS_FILE"
DATASETS_FILE = "datasets.json"
SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
                  ".ndjson": "jsonl", ".json": "jsonl"}
FORMAT_SUFFIX = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
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
    if Path(value).suffix.lower() in SUFFIX_FORMATS:
        raise ConfigError(f"Invalid data set id {value!r}: it ends like a file name "
                          f"({Path(value).suffix}); ids that look like paths would be read as paths")
    return value


def suffix_format(path: Path) -> Optional[str]:
    return SUFFIX_FORMATS.get(path.suffix.lower())


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
        fmt = suffix_format(path)
        if fmt is None and path.suffix:
            raise ConfigError(f"Cannot tell the format of {path} from its name: give --format "
                              "csv, parquet or jsonl")
    return DatasetEntry(id=dataset_id, uri=path.as_uri(), format=fmt, created=created)


# --- the catalog a process sees ----------------------------------------------------------------

_active: Optional[dict[str, DatasetEntry]] = None
_file_cache: dict[str, tuple[float, dict[str, DatasetEntry]]] = {}
_lock = threading.Lock()


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
                          format=entry.format or (suffix_format(path) if path else None))
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(f"Unsupported data set URI {text!r}: only registered ids, local paths "
                          "and file:// URIs are read and written here")
    path = local_path(text)
    if names_a_path(text, SUFFIX_FORMATS):
        assert path is not None
        fmt = suffix_format(path)
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
