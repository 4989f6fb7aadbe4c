"""The files of a run's worker, and how a run ended: the spec it is started with (WorkerSpec,
spec.json), the result it leaves (result.json), its log's tail, and the one verdict (`judge`) that
turns those, its exit and a cancel into the run's outcome. Shared by the backends that start
workers, the workers themselves (runtime.worker, runtime.spark.worker) and the run recorder; it
imports none of them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretBytes, SecretStr, field_serializer

from .errors import ConfigError
from .resources import ResourceRequest
from .tasks import TASK_NAMES, canonical_task

if TYPE_CHECKING:
    from .schemas import RunStatus   # annotations only: the worker need not build every schema

__all__ = ["Outcome", "RESULT_FILE", "SPEC_FILE", "WorkerSpec", "judge", "log_tail", "read_result",
           "stage_run"]

SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"


class WorkerSpec(BaseModel):
    """Everything the worker process needs, written as JSON into the run folder.

    `values` holds resolved parameter values in clear (secrets included: the engine needs them),
    so the file is written readable by its owner only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    engine: str                     # entry-point name or `module:Class`
    mode: str                       # canonical task name
    values: dict[str, Any] = {}
    device: str = "cpu"
    threads: int = 1
    run_dir: Path
    model_dir: Path | None = None   # score: the trained model's folder
    model_digest: str | None = None   # score, recipes: the model's digest recorded at training
    seed: int | None = None
    resources: ResourceRequest = Field(default_factory=ResourceRequest)   # what the task asked for
    mlinstance_id: str | None = None   # for error messages that name the MLInstance
    secret_keys: list[str] = []     # keys of `values` the worker masks in its log and result
    data_roots: list[str] = []      # the server's data roots (runtime.data_roots); [] = anywhere
    # The sandbox's data set catalog (runtime.datasets), id -> {uri, format}: the worker resolves
    # ids with it and hands it to recipe code as the file named by MLRUNTIME_DATASETS_FILE.
    datasets: dict[str, dict[str, Any]] = {}

    def model_post_init(self, __context: Any) -> None:
        if canonical_task(self.mode) != self.mode or self.mode not in TASK_NAMES:
            raise ConfigError(f"WorkerSpec mode {self.mode!r} is not a canonical task name "
                              f"({', '.join(TASK_NAMES)})")

    @field_serializer("values")
    def _reveal_secrets(self, values: dict[str, Any]) -> dict[str, Any]:
        def reveal(value: Any) -> Any:
            if isinstance(value, (SecretStr, SecretBytes)):
                secret = value.get_secret_value()
                return secret.decode() if isinstance(secret, bytes) else secret
            if isinstance(value, dict):
                return {k: reveal(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [reveal(v) for v in value]
            return value
        return reveal(values)

    def write(self, path: Path) -> Path:
        """Write the spec to `path` with 0600 permissions (it may carry secrets)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump_json(indent=2).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
            os.write(fd, data)
        finally:
            os.close(fd)
        return path

    @classmethod
    def read(cls, path: Path) -> WorkerSpec:
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"Cannot read worker spec {path}: {exc}") from exc


@dataclass(frozen=True)
class Outcome:
    """How a run ended. `reason` says why it did not end DONE; `log_tail` is the log's last lines."""

    state: RunStatus
    result: dict[str, Any] | None
    reason: str | None
    log_tail: str
    returncode: int | None

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["state"] = self.state.value
        return json.loads(json.dumps(record, default=str))


_READ = object()


def judge(run_dir: Path, log_path: Path, *, cancelled: str | None = None,
          exited_ok: bool = True, failure: str | None = None, gone: str,
          returncode: int | None = None, result: Any = _READ, tail: str | None = None,
          tail_lines: int = 40) -> Outcome:
    """How a run ended, by one rule for every backend and for runs nobody watched: the run's
    result file, how its worker exited and whether it was cancelled.

    - cancelled (the reason): ABORTED, whatever the worker left;
    - the worker exited cleanly (`exited_ok`: exit code 0, a Ray job SUCCEEDED, a Spark run its
      worker answered) and its result file says DONE: DONE;
    - `failure`, what the backend saw go wrong (a signal, a dead Spark worker, a job that could
      not return its files): FAILED with it;
    - the worker's own error in its result file (a SystemExit is how it exits, not why): FAILED
      with its type and message;
    - else FAILED with `gone`: why nothing successful was left (the exit code, the server gone).

    `result` and `tail` default to the run folder's result file and the log's last lines."""
    from .schemas import RunStatus

    if result is _READ:
        result = read_result(Path(run_dir) / RESULT_FILE)
    if tail is None:
        tail = log_tail(Path(log_path), tail_lines)
    if cancelled is not None:
        return Outcome(RunStatus.ABORTED, result, cancelled, tail, returncode)
    if exited_ok and result is not None and result.get("state") == RunStatus.DONE.value:
        return Outcome(RunStatus.DONE, result, None, tail, returncode)
    error = (result or {}).get("error") or {}
    if failure is not None:
        reason = failure
    elif error and error.get("type") != "SystemExit":
        reason = f"{error.get('type')}: {error.get('message')}"
    else:
        reason = gone
    return Outcome(RunStatus.FAILED, result, reason, tail, returncode)


def read_result(path: Path) -> dict[str, Any] | None:
    """A worker's result.json, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log (read from its last 256 KiB)."""
    from collections import deque

    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            kept = deque(fh.read().decode(errors="replace").splitlines(), maxlen=lines)
    except OSError:
        return ""
    return "\n".join(kept)


def stage_run(spec: WorkerSpec, log_path: Path) -> tuple[Path, Path]:
    """The run folder with the worker's spec written into it (and no stale result.json), and a
    log path whose folder exists."""
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT_FILE).unlink(missing_ok=True)  # a stale result must not pass for this run's
    spec_path = spec.write(run_dir / SPEC_FILE)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return spec_path, log_path
