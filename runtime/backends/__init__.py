"""The backend interface: a backend executes a planned task and hands back a run handle.

Backends are found through the `mlinstance_runtime.backends` entry-point group, built-in ones
included, so this module imports no backend (nor torch, pyspark or ray) itself.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Optional, TextIO

from .. import entry_points
from ..errors import ConfigError
# The worker's files and the verdict live below the backends (runtime.runfiles): the workers use
# them without importing a backend. Backends and their callers find them here too.
from ..runfiles import (RESULT_FILE, SPEC_FILE, Outcome, WorkerSpec, judge, log_tail,  # noqa: F401
                        read_result, stage_run)

if TYPE_CHECKING:
    from ..plans import Plan
    from ..resources import ResourceRequest
    from ..schemas import RunStatus   # annotations only: the worker need not build every schema

__all__ = ["ENTRY_POINT_GROUP", "Backend", "Outcome", "RunHandle", "WorkerSpec", "backend_class",
           "backend_options_from", "cli_option_dests", "engine_kinds", "installed_backends", "judge",
           "load_backend",
           "plans_more", "RESULT_FILE", "SPEC_FILE", "stop_recorded_job", "submit_backend"]

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
    """A backend, and what it declares of itself (class attributes, read without building one):
    the planner, the run path and the CLI read these, and name no backend."""

    name: str = ""

    # A queueing backend (a cluster's job queue) reports itself when a submitted run really
    # starts (RunHandle.on_state); the others' runs run from the moment `submit` returns.
    queues: bool = False
    # The task goes to a cluster that places it: this host's GPUs and cores are neither checked
    # nor held (runtime.dispatch, runtime.capacity).
    on_cluster: ClassVar[bool] = False
    # The Engine kinds (`Engine.kind`) it runs.
    engine_kinds: ClassVar[tuple[str, ...]] = ("python",)
    # Whether it can give a task this host's GPUs (a local backend that cannot refuses a GPU task).
    local_gpus: ClassVar[bool] = True
    # Options it takes from the command line: the argparse `dest` of a flag -> the keyword of
    # its constructor (`--spark-master URL` -> master=URL).
    cli_options: ClassVar[dict[str, str]] = {}
    # The backend `run submit` sends runs to (a cluster's job API).
    submits: ClassVar[bool] = False
    # It takes the executor's warm pools (runtime.warm): its runs fork from a warm parent.
    takes_warm_pools: ClassVar[bool] = False

    @abstractmethod
    def submit(self, *, spec: WorkerSpec, plan: Plan, log_path: Path,
               echo: TextIO | None = None) -> RunHandle:
        """Start `spec` as planned, its output going to `log_path` (and live to `echo` if given).
        It returns once the worker exists: the run is RUNNING from then on."""

    def plan_more(self, resources: ResourceRequest, plan: Plan) -> Optional[Any]:
        """What else this backend plans for a task (e.g. its Spark configuration), shown by
        --explain and kept in the run's record; None when nothing."""
        return None

    @classmethod
    def stop_recorded(cls, job: dict[str, Any]) -> str:
        """Stop the job `RunHandle.record()` described, for a run whose owner is gone (a process
        worker is stopped by its recorded process group instead); says what it did."""
        return "nothing to stop"


def installed_backends() -> dict[str, metadata.EntryPoint]:
    return entry_points.group(ENTRY_POINT_GROUP)


@lru_cache(maxsize=None)
def backend_class(name: str) -> type[Backend]:
    """The class registered as backend `name`, imported (its module only: no torch, pyspark or
    ray), for its declarations; unknown names list the installed ones."""
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
    return cls


def load_backend(name: str, **options: Any) -> Backend:
    """An instance of the backend registered as `name`, built with `options` (e.g. a Spark
    `master`); unknown names list the installed ones."""
    backend = backend_class(name)(**options)
    backend.name = name
    return backend


def plans_more(name: str) -> bool:
    """Whether backend `name` plans more than the dispatcher does (overrides `plan_more`)."""
    return backend_class(name).plan_more is not Backend.plan_more


def cli_option_dests() -> frozenset[str]:
    """The command-line options (argparse dests) that installed backends declare (`cli_options`)."""
    return frozenset(d for name in installed_backends() for d in backend_class(name).cli_options)


def backend_options_from(flags: Any) -> dict[str, dict[str, Any]]:
    """{backend name: {keyword: value}} of the command-line options backends declare
    (`cli_options`) that `flags` sets: an argparse namespace, or a mapping of those options alone
    (a face hands over just them, not the whole command line)."""
    get = flags.get if isinstance(flags, Mapping) else (lambda dest: getattr(flags, dest, None))
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(installed_backends()):
        for dest, keyword in backend_class(name).cli_options.items():
            value = get(dest)
            if value is not None:
                out.setdefault(name, {})[keyword] = value
    return out


@lru_cache(maxsize=1)
def engine_kinds() -> tuple[str, ...]:
    """Every Engine kind an installed backend runs."""
    kinds = (k for name in sorted(installed_backends()) for k in backend_class(name).engine_kinds)
    return tuple(dict.fromkeys(kinds))


def submit_backend() -> str:
    """The backend `run submit` sends runs to: the installed one that declares `submits`."""
    names = [n for n in sorted(installed_backends()) if backend_class(n).submits]
    if not names:
        raise ConfigError("No installed backend takes `run submit`'s runs (one that declares "
                          "`submits`, as the ray backend does)")
    return names[0]


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


