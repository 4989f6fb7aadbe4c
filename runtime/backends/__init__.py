"""The backend interface: a backend executes a planned task and hands back a run handle.

Backends are found through the `mlinstance_runtime.backends` entry-point group, built-in ones
included, so this module imports no backend (nor torch, pyspark or ray) itself.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ConfigError
# The worker's files and the verdict live below the backends (runtime.runfiles): the workers use
# them without importing a backend. Backends and their callers find them here too.
from ..runfiles import (RESULT_FILE, SPEC_FILE, Outcome, WorkerSpec, judge, log_tail,  # noqa: F401
                        read_result, stage_run)

if TYPE_CHECKING:
    from ..dispatch import Plan
    from ..schemas import RunStatus   # annotations only: the worker need not build every schema

__all__ = ["ENTRY_POINT_GROUP", "Backend", "Outcome", "RunHandle", "WorkerSpec", "installed_backends",
           "judge", "load_backend", "RESULT_FILE", "SPEC_FILE", "stop_recorded_job"]

ENTRY_POINT_GROUP = "mlinstance_runtime.backends"


class RunHandle(ABC):
    """A submitted run. `wait` raises TimeoutError when `timeout` seconds pass first."""

    run_id: str

    @abstractmethod
    def wait(self, timeout: float | None = None) -> Outcome: ...

    @abstractmethod
    def status(self) -> RunStatus: ...

    @abstractmethod
    def cancel(self) -> None:
        """Stop the run and everything it started; its outcome becomes ABORTED. No-op once ended."""


class Backend(ABC):
    name: str = ""

    # A queueing backend (a cluster's job queue) reports itself when a submitted run really
    # starts (RunHandle.on_state); the others' runs run from the moment `submit` returns.
    queues: bool = False

    @abstractmethod
    def submit(self, *, spec: WorkerSpec, plan: Plan, log_path: Path,
               echo: TextIO | None = None) -> RunHandle:
        """Start `spec` as planned, its output going to `log_path` (and live to `echo` if given).
        It returns once the worker exists: the run is RUNNING from then on."""

    @classmethod
    def stop_recorded(cls, job: dict[str, Any]) -> str:
        """Stop the job `RunHandle.record()` described, for a run whose owner is gone (a process
        worker is stopped by its recorded process group instead); says what it did."""
        return "nothing to stop"


def installed_backends() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_backend(name: str, **options: Any) -> Backend:
    """An instance of the backend registered as `name`, built with `options` (e.g. a Spark
    `master`); unknown names list the installed ones."""
    backends = installed_backends()
    if name not in backends:
        listed = ", ".join(sorted(backends)) or "none"
        raise ConfigError(f"Unknown backend {name!r}; installed backends: {listed}")
    try:
        cls = backends[name].load()
    except ImportError as exc:
        raise ConfigError(f"Backend {name!r} is installed but cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"Backend {name!r} ({backends[name].value}) is not a Backend class")
    backend = cls(**options)
    backend.name = name
    return backend


def stop_recorded_job(job: dict[str, Any]) -> str:
    """Stop a job a backend recorded (`RunHandle.record()`: {"name": BACKEND, ...}) for a run
    whose owner is gone; says what it did. Each backend knows its own jobs
    (`Backend.stop_recorded`); none is named here."""
    name = job.get("name")
    entry = installed_backends().get(name or "")
    if entry is None:
        return f"its {name or 'unnamed'} job could not be stopped: no such backend is installed"
    try:
        return entry.load().stop_recorded(job)
    except Exception as exc:   # the cluster may be gone: the run still ends
        return f"its {name} job could not be stopped: {exc}"


