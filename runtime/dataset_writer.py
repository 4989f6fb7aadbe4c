"""Writing a data set: a file replaced whole in its own format, or a new batch file in a folder;
every write of this process is remembered in `written`."""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .data_roots import guard
from .dataset_catalog import FORMAT_SUFFIX, DatasetRef, format_name, suffix_format
from .dataset_formats import write_jsonl, write_parquet
from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

# What this process has written with write_dataset: {"id", "path", "format", "rows"} per write,
# so the code that ran a recipe's saver can say where its output went.
written: list[dict[str, Any]] = []


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
    if not as_folder and suffix_format(path) is None and ref.format is None:
        raise ConfigError(f"Cannot write {path}: expected a .parquet, .jsonl or .csv file name, or "
                          "a folder")
    if as_folder:
        fmt = requested or ref.format or "parquet"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        target = path / f"part-{stamp}-{uuid.uuid4().hex[:8]}{FORMAT_SUFFIX[fmt]}"
    else:
        fmt = ref.format or suffix_format(path) or requested or "parquet"
        if requested and requested != fmt and log is not None:
            log.warning("data set %s is %s (%s); writing %s, not the %s asked for", ref.id, fmt,
                        path, fmt, requested)
        target = path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if fmt == "parquet":
            write_parquet(frame, tmp)
        elif fmt == "jsonl":
            write_jsonl(frame, tmp)
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
