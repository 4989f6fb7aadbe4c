"""Data roots: the folders a shared server reads and writes data sets in, and nowhere else.

A server with tokens holds several users' requests, all running as one account: every data set a
run names (a path, a `file://` URI, a catalog entry) is resolved — symlinks and `..` included —
and must land inside one of its roots (`--data-root DIR`, repeatable, or MLRUNTIME_DATA_ROOTS,
separated by the OS path separator; default: `data/` in the runtime home). Without tokens and on
the CLI the roots apply only when configured. The rest of the runtime home (the registry, run
folders, model artifacts) is never a data set, even under a root that contains the home.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

from .errors import Forbidden
from .locations import InvalidLocation, local_path

ENV_DATA_ROOTS = "MLRUNTIME_DATA_ROOTS"
# Set by the worker for its own process tree: the roots in force for this run, plus its run folder.
ENV_RUN_DATA_ROOTS = "MLRUNTIME_RUN_DATA_ROOTS"
DEFAULT_ROOT_NAME = "data"   # under the runtime home

# Every parameter that names a data set a run reads or writes (runtime.worker's keys and the
# feature pipeline's). tests/lanes checks that the worker's are all here.
DATA_SET_KEYS = ("trainingDataSetId", "scoringDataSetId", "scoringResultsDataSetId",
                 "featuresDataSetId", "inputDataSetId", "transformedDataSetId")

# A catalog look-up: the local path or URI a catalog id stands for, None when it is no catalog id.
CatalogLookup = Callable[[str], Optional[str]]


_DATA_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")


def names_a_file(value: str) -> bool:
    """Whether a data set value is read as a path (runtime.datasets' rule) rather than as an id."""
    return (value.startswith(("/", ".", "~", "file:")) or "/" in value or os.sep in value
            or "://" in value or Path(value).suffix.lower() in _DATA_SUFFIXES
            or Path(value).exists())


def configured_roots(flags: Sequence[str] = (), env: Optional[str] = None) -> list[str]:
    """The roots named by `--data-root` flags, else by MLRUNTIME_DATA_ROOTS; [] when none."""
    if flags:
        return [f for f in flags if f]
    env = os.environ.get(ENV_DATA_ROOTS, "") if env is None else env
    return [part for part in env.split(os.pathsep) if part.strip()]


@dataclass(frozen=True)
class DataRoots:
    """Resolved root folders, and the runtime home whose own files are never data sets."""

    roots: tuple[Path, ...]
    home: Optional[Path] = None

    @classmethod
    def of(cls, folders: Iterable[str | Path], home: Optional[Path] = None) -> "DataRoots":
        roots = tuple(dict.fromkeys(Path(f).expanduser().resolve() for f in folders))
        if not roots:
            raise ValueError("DataRoots needs at least one folder")
        return cls(roots, Path(home).resolve() if home is not None else None)

    def describe(self) -> str:
        return ", ".join(str(root) for root in self.roots)

    def allows(self, path: Path) -> bool:
        """Whether `path`, fully resolved, lies inside a root and outside the home's own files."""
        real = Path(os.path.realpath(path))
        if self.home is not None and real.is_relative_to(self.home) and \
                not real.is_relative_to(self.home / DEFAULT_ROOT_NAME):
            return False
        return any(real.is_relative_to(root) for root in self.roots)

    def check(self, key: str, value: Any, *, catalog: Optional[CatalogLookup] = None) -> Optional[Path]:
        """The resolved local path of data set `value` (parameter `key`), or Forbidden naming the
        key and the roots. A catalog id is checked through the path or URI it stands for."""
        secret = hasattr(value, "get_secret_value")   # a data set marked secret stays unshown
        text = str(value.get_secret_value() if secret else value).strip()
        target = catalog(text) if catalog is not None else None
        if target is None and not names_a_file(text):
            # An id not (yet) registered: nothing to read or write. The worker refuses it if it is
            # still unknown, and checks where it leads if it is registered by then.
            return None
        shown = (f"{key} (secret)" if secret else f"{key} {text!r}"
                 + (f" (catalog entry for {target!r})" if target else ""))
        try:
            path = local_path(str(target) if target else text)
        except InvalidLocation as exc:
            raise Forbidden(f"{shown} is not a local file ({exc.detail}): this server reads and "
                            f"writes data sets only under its data roots ({self.describe()})") from exc
        if path is None:
            raise Forbidden(f"{shown} is not a local file: this server reads and writes data sets "
                            f"only under its data roots ({self.describe()})")
        if not path.is_absolute():
            path = Path.cwd() / path   # as the worker, started in this process's folder, reads it
        if not self.allows(path):
            raise Forbidden(f"{shown} is outside this server's data roots ({self.describe()}); "
                            "symlinks and '..' are resolved before the check")
        return Path(os.path.realpath(path))

    def check_values(self, values: Mapping[str, Any], *,
                     catalog: Optional[CatalogLookup] = None) -> None:
        """Checks every data-set key set in a flat `key -> value` mapping."""
        for key in DATA_SET_KEYS:
            value = values.get(key)
            if value not in (None, ""):
                self.check(key, value, catalog=catalog)

    def check_tasks(self, tasks: Any, *, catalog: Optional[CatalogLookup] = None) -> None:
        """Checks the data-set parameters of a task list in the API's shape."""
        for key, value in _task_parameters(tasks):
            if key in DATA_SET_KEYS and value not in (None, ""):
                self.check(key, value, catalog=catalog)


def _task_parameters(tasks: Any) -> Iterator[tuple[str, Any]]:
    for task in tasks or ():
        if isinstance(task, dict):
            for param in task.get("parameters") or ():
                if isinstance(param, dict) and isinstance(param.get("key"), str):
                    yield param["key"], param.get("value")


def data_roots_for(home: Path, flags: Sequence[str] = (), *, shared: bool,
                   env: Optional[str] = None) -> Optional[DataRoots]:
    """The roots in force: those configured, else (on a `shared` server, i.e. one with tokens)
    `data/` in the home, created if missing; None when nothing confines data sets."""
    folders = configured_roots(flags, env)
    if not folders:
        if not shared:
            return None
        default = Path(home) / DEFAULT_ROOT_NAME
        default.mkdir(parents=True, exist_ok=True)
        folders = [str(default)]
    return DataRoots.of(folders, home=home)


def guard(ref_id: str, path: Optional[Path]) -> None:
    """In a run's processes (worker, recipe code, the platform_sdk shims): a data set read or
    written through runtime.datasets lies under the run's roots, checked again at the moment of
    I/O — this also covers data sets a recipe names under keys of its own. No-op outside a run
    started with roots."""
    text = os.environ.get(ENV_RUN_DATA_ROOTS)
    if not text:
        return
    roots = DataRoots.of(part for part in text.split(os.pathsep) if part)
    if path is None:
        raise Forbidden(f"Data set {ref_id!r} is not a local file: this run reads and writes data "
                        f"sets only under the data roots ({roots.describe()})")
    if not roots.allows(path if path.is_absolute() else Path.cwd() / path):
        raise Forbidden(f"Data set {ref_id!r} is outside this server's data roots "
                        f"({roots.describe()}); symlinks and '..' are resolved before the check")
