"""The ray backend: a run becomes a Ray job, submitted through Ray's Jobs API (JobSubmissionClient).

The job's entrypoint (runtime.backends.ray_job) runs the same worker that `run train|score|fp` runs
locally; what travels with it (the runtime's code, the spec, a model, a user's recipe and its
environment's pins) is runtime.backends.ray_package's. Its artifacts reach the submitting registry
either through a shared artifact store or inside the job's log. `ray` itself is imported only
inside functions: `import runtime` never pays for it.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, TextIO

from ..errors import ConfigError, ExecutionError, MissingDependency
from ..schemas import RunStatus
from . import RESULT_FILE, Backend, Outcome, RunHandle, WorkerSpec, judge, read_result
from .ray_job import (BUNDLE_BEGIN, BUNDLE_END, DISTRIBUTION, RETURN_LIMIT_MB,  # noqa: F401
                      make_bundle, restore_bundle, runtime_missing, split_bundle)
from .ray_package import (RecipeJob, check_python, code_excludes, job_code, recipe_job, stage,
                          unstage_dir)

if TYPE_CHECKING:
    from ..plans import Plan
    from ..resources import ResourceRequest

__all__ = ["RayBackend", "RayRunHandle", "RAY_STATES", "WORKING_DIR_EXCLUDES", "working_dir_size",
           "stop_job"]

log = logging.getLogger("runtime.backends.ray")

ENV_ADDRESS = "MLRUNTIME_RAY_ADDRESS"          # else Ray's own RAY_ADDRESS
ENV_ARTIFACTS = "MLRUNTIME_RAY_ARTIFACTS"      # "return" (default) or "shared"
ENV_WORKING_DIR = "MLRUNTIME_RAY_WORKING_DIR"  # a folder to upload with every job
ENV_PIP = "MLRUNTIME_RAY_PIP"                  # comma-separated requirements, or a requirements file
ENV_PYTHON = "MLRUNTIME_RAY_PYTHON"            # the cluster's python (default: python on its PATH)

# Ray job state -> run state.
RAY_STATES: dict[str, RunStatus] = {
    "PENDING": RunStatus.PENDING, "RUNNING": RunStatus.RUNNING, "SUCCEEDED": RunStatus.DONE,
    "FAILED": RunStatus.FAILED, "STOPPED": RunStatus.ABORTED}

# Never uploaded with the working directory: history, environments, data and artifacts.
# (gitignore-style patterns, as Ray's `excludes` reads them.)
WORKING_DIR_EXCLUDES = (".git", ".hg", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache",
                        ".mypy_cache", "node_modules", "data", "datasets", "artifacts", "out",
                        "outputs", "mlruns", ".mlinstance-runtime", "benchmarks/results")
LARGE_UPLOAD_MB = 100.0
PENDING_NOTICE_S = 10.0
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 40
ARTIFACT_MODES = ("return", "shared")


# --- Ray, imported lazily ------------------------------------------------------------------------

def _job_client(address: Optional[str]):
    """A JobSubmissionClient for `address`; Ray's errors become ours."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise MissingDependency("ray", "ray") from exc
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "(no address: set --address or RAY_ADDRESS)"
        raise ExecutionError(f"Cannot reach the Ray cluster's Jobs API at {where}: {exc}") from exc


def stop_job(address: str, submission_id: str) -> bool:
    """Ask the cluster to stop a job; False when it had already ended."""
    client = _job_client(address)
    try:
        return bool(client.stop_job(submission_id))
    except Exception as exc:
        raise ExecutionError(f"Cannot stop Ray job {submission_id} at {address}: {exc}") from exc


# --- the working directory -----------------------------------------------------------------------

def _excluded(rel: Path, patterns: Iterable[str]) -> bool:
    import fnmatch

    text = rel.as_posix()
    for pattern in patterns:
        if "/" in pattern.strip("/"):
            if text == pattern.strip("/") or text.startswith(pattern.strip("/") + "/"):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in rel.parts):
            return True
    return False


def working_dir_size(root: Path, excludes: Iterable[str] = WORKING_DIR_EXCLUDES) -> tuple[int, int]:
    """(files, bytes) that uploading `root` with `excludes` sends, before compression."""
    excludes = tuple(excludes)
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not _excluded(base / d, excludes)]
        for name in filenames:
            if _excluded(base / name, excludes):
                continue
            try:
                size += (Path(dirpath) / name).stat().st_size
                files += 1
            except OSError:
                pass
    return files, size


def _pip_from_env() -> list[str]:
    value = os.environ.get(ENV_PIP, "").strip()
    if not value:
        return []
    if Path(value).is_file():
        return [value]
    return [item.strip() for item in value.split(",") if item.strip()]


def _pip_requirements(pip: Iterable[str]) -> list[str]:
    """Requirement strings; an item naming a requirements file contributes its lines."""
    out: list[str] = []
    for item in pip:
        path = Path(item)
        if path.suffix == ".txt" and path.is_file():
            out += [line.strip() for line in path.read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
        elif path.suffix == ".txt":
            raise ConfigError(f"Requirements file not found: {path}")
        else:
            out.append(item)
    return out


_FINAL = frozenset(state for state in RAY_STATES.values() if state.is_terminal())


# --- the backend ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobRequest:
    """What a job asks of the cluster. A run naming no `cpus` asks for 1 CPU, as locally it takes
    one slot (Ray's own default for an entrypoint is 0: any number of jobs would share a node)."""

    num_cpus: Optional[float] = 1
    num_gpus: Optional[float] = None
    memory_mb: Optional[int] = None

    @classmethod
    def from_resources(cls, resources: Optional[ResourceRequest], plan: Plan) -> "JobRequest":
        if resources is None:  # the server's path: only the plan is known
            return cls(num_cpus=plan.threads or 1, num_gpus=len(plan.gpu_indices) or None)
        return cls(num_cpus=resources.cpus or 1, num_gpus=resources.gpus or None,
                   memory_mb=resources.driver_memory_mb)

    def describe(self) -> str:
        parts = [f"{self.num_cpus:g} CPU" if self.num_cpus else "0 CPU",
                 f"{self.num_gpus:g} GPU" if self.num_gpus else "0 GPU"]
        if self.memory_mb:
            parts.append(f"{self.memory_mb} MB memory")
        return ", ".join(parts)


class RayBackend(Backend):
    """Submits runs as Ray jobs.

    `address` is the cluster's Jobs API (`http://HOST:8265`); `artifacts` is "shared" when the
    cluster sees this runtime home at the same path (the job then writes the run folder in place),
    else "return" (the job sends the run's artifacts back inside its log). Built with no arguments
    (as `load_backend("ray")` does), every option comes from MLRUNTIME_RAY_* variables.
    """

    name = "ray"
    queues = True   # a run waits in PENDING until the cluster starts it (the executor's cue)
    on_cluster = True                          # the cluster places the task, not this host
    engine_kinds = ("python",)
    submits = True                             # `run submit` sends its runs here

    @classmethod
    def stop_recorded(cls, job: dict[str, Any]) -> str:
        """Stop the Ray job of a run whose owner is gone (its artifacts come back only to the
        process that waited on it)."""
        stop_job(job["address"], job["submissionId"])
        return f"Ray job {job['submissionId']} stopped"

    def __init__(self, *, address: Optional[str] = None, artifacts: Optional[str] = None,
                 working_dir: Optional[Path | str] = None,
                 excludes: Iterable[str] = WORKING_DIR_EXCLUDES, pip: Optional[Iterable[str]] = None,
                 resources: Optional[ResourceRequest] = None, python: Optional[str] = None,
                 notify: Optional[Callable[[str], None]] = None, poll_s: float = 0.1,
                 pending_notice_s: float = PENDING_NOTICE_S,
                 large_upload_mb: float = LARGE_UPLOAD_MB,
                 return_limit_mb: float = RETURN_LIMIT_MB,
                 stop_grace_s: float = STOP_GRACE_S) -> None:
        self.address = address or os.environ.get(ENV_ADDRESS) or os.environ.get("RAY_ADDRESS")
        self.artifacts = artifacts or os.environ.get(ENV_ARTIFACTS) or "return"
        if self.artifacts not in ARTIFACT_MODES:
            raise ConfigError(f"Unknown artifacts mode {self.artifacts!r}: expected "
                              f"{' or '.join(ARTIFACT_MODES)}")
        wd = working_dir if working_dir is not None else os.environ.get(ENV_WORKING_DIR)
        self.working_dir = Path(wd).resolve() if wd else None
        self.excludes = tuple(excludes)
        self.pip = list(pip) if pip is not None else _pip_from_env()
        self.resources = resources
        self.python = python or os.environ.get(ENV_PYTHON) or "python"
        self.notify = notify or log.info
        self.poll_s = poll_s
        self.pending_notice_s = pending_notice_s
        self.large_upload_mb = large_upload_mb
        self.return_limit_mb = return_limit_mb
        self.stop_grace_s = stop_grace_s

    def runtime_env(self, stage: Path, plan: Plan, *, code: Iterable[Path] = (),
                    recipe: Optional[RecipeJob] = None) -> dict[str, Any]:
        """The job's runtime_env: its package and the runtime's code (py_modules), the plan's
        variables, the working directory, and a recipe's environment (`uv`, or `pip`) or the
        extra requirements (`pip`) of an engine plugin's job."""
        # CUDA_VISIBLE_DEVICES is Ray's to set (entrypoint_num_gpus); the plan's is this host's.
        env_vars = {k: v for k, v in plan.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        env_vars["PYTHONUNBUFFERED"] = "1"
        env: dict[str, Any] = {"py_modules": [str(stage), *(str(c) for c in code)],
                               "env_vars": env_vars, "excludes": code_excludes()}
        if self.working_dir is not None:
            if not self.working_dir.is_dir():
                raise ConfigError(f"The working directory to upload is not a folder: {self.working_dir}")
            files, size = working_dir_size(self.working_dir, self.excludes)
            mb = size / (1 << 20)
            self.notify(f"Uploading working directory {self.working_dir}: {files} files, "
                        f"{mb:.1f} MiB (excluding {', '.join(self.excludes)})")
            if mb > self.large_upload_mb:
                self.notify(f"warning: the working directory upload is {mb:.0f} MiB, over "
                            f"{self.large_upload_mb:g} MiB: move data out of it, or pass another "
                            "--working-dir")
            env["working_dir"] = str(self.working_dir)
            env["excludes"] = list(dict.fromkeys([*self.excludes, *code_excludes()]))
        if recipe is not None and recipe.pins:
            # --pip went into the recipe's environment: its pins hold it already
            fields = recipe.runtime_env()
            env_vars.update(fields.pop("env_vars", {}))
            env.update(fields)
            return env
        requirements = _pip_requirements(self.pip)
        if requirements:
            env["pip"] = requirements
        return env

    def entrypoint(self, stage: Path) -> str:
        """The job's command: it names the uploaded package, never the spec's values."""
        return f"{self.python} -m runtime.backends.ray_job {stage.name}"

    def submit(self, *, spec: WorkerSpec, plan: Plan, log_path: Path,
               echo: TextIO | None = None) -> RayRunHandle:
        recipe = recipe_job(spec, plan.python)   # a PySpark recipe is refused here
        client = _job_client(self.address)
        if recipe is not None:
            check_python(recipe, client.get_address(), spec.run_id, self.notify)
        request = JobRequest.from_resources(self.resources or plan.resources, plan)
        engine, code = job_code(spec.engine)
        folder = stage(spec.model_copy(update={"engine": engine}), self.artifacts,
                       self.return_limit_mb, recipe)
        submission_id = f"mlrt-{spec.run_id}-{uuid.uuid4().hex[:8]}"
        try:
            runtime_env = self.runtime_env(folder, plan, code=code, recipe=recipe)
            kwargs: dict[str, Any] = {"entrypoint_num_cpus": request.num_cpus}
            if request.num_gpus:
                kwargs["entrypoint_num_gpus"] = request.num_gpus
            if request.memory_mb:
                kwargs["entrypoint_memory"] = int(request.memory_mb) << 20
            try:
                client.submit_job(entrypoint=self.entrypoint(folder), submission_id=submission_id,
                                  runtime_env=runtime_env,
                                  metadata={"mlinstance_runtime.run_id": spec.run_id,
                                            "mlinstance_runtime.engine": engine,
                                            "mlinstance_runtime.mode": spec.mode},
                                  **kwargs)
            except Exception as exc:
                raise ExecutionError(
                    f"Run {spec.run_id} (engine {spec.engine}): the Ray cluster at "
                    f"{client.get_address()} refused the job: {exc}") from exc
        finally:
            unstage_dir(folder)   # uploaded (or refused): not needed
        what = (f"; recipe {recipe.name} with {len(recipe.pins)} pinned requirements"
                if recipe is not None else "")
        self.notify(f"Submitted Ray job {submission_id} to {client.get_address()} "
                    f"(asks {request.describe()}; artifacts: {self.artifacts}{what})")
        return RayRunHandle(client, submission_id, spec=spec, request=request,
                            artifacts=self.artifacts, log_path=Path(log_path), echo=echo,
                            notify=self.notify, poll_s=self.poll_s,
                            pending_notice_s=self.pending_notice_s,
                            stop_grace_s=self.stop_grace_s)


def _stage(spec: WorkerSpec, artifacts: str, return_limit_mb: float) -> Path:
    """The job's package for `spec` (runtime.backends.ray_package.stage), for callers that stage
    a job by hand (tests, benchmarks)."""
    return stage(spec, artifacts, return_limit_mb)


# --- the handle ----------------------------------------------------------------------------------

class RayRunHandle(RunHandle):
    """A submitted Ray job. `on_state(state, message)` (set by the executor) hears each change of
    the run's state as Ray reports it, so the registry's run goes PENDING -> RUNNING in step."""

    def __init__(self, client: Any, submission_id: str, *, spec: WorkerSpec, request: JobRequest,
                 artifacts: str, log_path: Path, echo: TextIO | None,
                 notify: Callable[[str], None], poll_s: float, pending_notice_s: float,
                 stop_grace_s: float) -> None:
        self.run_id = spec.run_id
        self.submission_id = submission_id
        self.address = client.get_address()
        self.on_state: Optional[Callable[[RunStatus, str], None]] = None
        self.on_notice: Optional[Callable[[str], None]] = None
        self._client = client
        self._spec = spec
        self._request = request
        self._artifacts = artifacts
        self._log_path = log_path
        self._echo = echo
        self._notify = notify
        self._poll_s = poll_s
        self._pending_notice_s = pending_notice_s
        self._stop_grace_s = stop_grace_s
        self._submitted = time.monotonic()
        self._lock = threading.RLock()
        self._reported = RunStatus.PENDING
        self._pending_noticed = False
        self._echoed = 0
        self._cancelled = False
        self._outcome: Outcome | None = None
        self._last_info: Any = None

    def record(self) -> dict[str, Any]:
        """What the run document keeps about its job (for `run cancel` and for people)."""
        return {"name": "ray", "address": self.address, "submissionId": self.submission_id,
                "artifacts": self._artifacts, "request": self._request.__dict__}

    # --- the interface -----------------------------------------------------------------------

    def status(self) -> RunStatus:
        if self._outcome is not None:
            return self._outcome.state
        state = self._poll()
        if state.is_terminal():
            return self._finish().state
        return state

    def wait(self, timeout: float | None = None) -> Outcome:
        deadline = None if timeout is None else time.monotonic() + timeout
        next_logs = 0.0
        while self._outcome is None:
            state = self._poll()
            if self._echo is not None and time.monotonic() >= next_logs:
                self._follow()
                next_logs = time.monotonic() + 0.5
            if state.is_terminal():
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} (Ray job {self.submission_id}) still "
                                   f"{state.value} after {timeout} s")
            time.sleep(self._poll_s)
        return self._finish()

    def cancel(self) -> None:
        with self._lock:
            if self._outcome is not None or self._cancelled:
                return
            self._cancelled = True
        try:
            self._client.stop_job(self.submission_id)
        except Exception as exc:
            raise ExecutionError(f"Run {self.run_id}: cannot stop Ray job {self.submission_id}: "
                                 f"{exc}") from exc
        # Ray leaves a job that never started PENDING after stop_job (its supervisor is gone, its
        # status not updated): give it a grace period, then end the run ABORTED all the same.
        deadline = time.monotonic() + self._stop_grace_s
        while time.monotonic() < deadline and not self._poll().is_terminal():
            time.sleep(self._poll_s)
        self._finish()

    # --- polling -------------------------------------------------------------------------------

    def _info(self):
        try:
            self._last_info = self._client.get_job_info(self.submission_id)
            return self._last_info
        except Exception as exc:
            raise ExecutionError(f"Run {self.run_id}: cannot read Ray job {self.submission_id} "
                                 f"at {self.address}: {exc}") from exc

    def _poll(self) -> RunStatus:
        info = self._info()
        state = RAY_STATES[_ray_state(info)]
        if state is RunStatus.RUNNING or (state.is_terminal() and state is not RunStatus.FAILED
                                          and state is not RunStatus.ABORTED):
            self._report(RunStatus.RUNNING, f"Ray job {self.submission_id} running")
        elif (state is RunStatus.PENDING and not self._pending_noticed
              and time.monotonic() - self._submitted >= self._pending_notice_s):
            self._pending_noticed = True
            notice = self.pending_notice(info)
            self._notify(notice)
            if self.on_notice is not None:   # the registry's status message says it too
                self.on_notice(notice)
        return state

    def _report(self, state: RunStatus, message: str) -> None:
        if state is self._reported:
            return
        self._reported = state
        if self.on_state is not None:
            self.on_state(state, message)

    def pending_notice(self, info: Any = None) -> str:
        """Why the job has not started: what it asked for, what the cluster has free."""
        waited = time.monotonic() - self._submitted
        text = (f"Ray job {self.submission_id} is still PENDING after {waited:.0f} s: it asks for "
                f"{self._request.describe()}; the cluster has free: {self.cluster_free()}")
        message = getattr(info, "message", None)
        return f"{text}. Ray says: {message}" if message else text

    def cluster_free(self) -> str:
        try:
            import requests

            resp = requests.get(f"{self.address}/api/cluster_status", timeout=5)
            usage = resp.json()["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
        except Exception as exc:  # a notice, not a failure: say what we could not learn
            return f"unknown ({type(exc).__name__}: {exc})"
        parts = []
        for key, label, scale in (("CPU", "CPU", 1), ("GPU", "GPU", 1),
                                  ("memory", "MB memory", 1 << 20)):
            used, total = usage.get(key, (0.0, 0.0))
            parts.append(f"{(total - used) / scale:g} of {total / scale:g} {label}")
        return ", ".join(parts)

    # --- logs ----------------------------------------------------------------------------------

    def _logs(self) -> str:
        try:
            return self._client.get_job_logs(self.submission_id)
        except Exception as exc:
            raise ExecutionError(f"Run {self.run_id}: cannot read the logs of Ray job "
                                 f"{self.submission_id}: {exc}") from exc

    def _follow(self) -> None:
        text, _ = split_bundle(self._logs())
        if len(text) > self._echoed:
            try:
                self._echo.write(text[self._echoed:])
                self._echo.flush()
            except (OSError, ValueError):
                pass
            self._echoed = len(text)

    # --- the end of a run ----------------------------------------------------------------------

    def _finish(self) -> Outcome:
        with self._lock:
            if self._outcome is not None:
                return self._outcome
            info = self._last_info   # the poll that saw the end: no second request
            if info is None or RAY_STATES[_ray_state(info)] not in _FINAL:
                info = self._info()
            ray_state = _ray_state(info)
            text, bundle = split_bundle(self._logs())
            if self._echo is not None and len(text) > self._echoed:
                self._echo.write(text[self._echoed:])
                self._echo.flush()
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_path.write_text(text)
            run_dir = Path(self._spec.run_dir)
            result, problem = None, None
            try:
                if self._artifacts == "return":
                    if bundle is not None:
                        result = restore_bundle(bundle, run_dir)
                else:
                    result = read_result(run_dir / RESULT_FILE)
                    if result is None and ray_state == "SUCCEEDED":
                        problem = (f"the job succeeded but left no {RESULT_FILE} in {run_dir}: is "
                                   "this runtime home mounted on the cluster at the same path? "
                                   "(else use artifacts 'return')")
            except ExecutionError as exc:
                problem = exc.detail
            self._outcome = self._judge(ray_state, info, result, problem, _tail(text))
            if self._outcome.state is RunStatus.DONE:
                self._report(RunStatus.RUNNING, f"Ray job {self.submission_id} running")
            return self._outcome

    def _judge(self, ray_state: str, info: Any, result: Optional[dict[str, Any]],
               problem: Optional[str], tail: str) -> Outcome:
        cancelled = None
        if ray_state == "STOPPED" or self._cancelled:
            how = "stopped" if ray_state == "STOPPED" else f"asked to stop while {ray_state}"
            cancelled = f"cancelled (Ray job {self.submission_id} {how})"
        if ray_state == "SUCCEEDED":
            gone = f"the Ray job succeeded but the worker left no successful {RESULT_FILE}"
        else:
            last = tail.strip().splitlines()[-1:] or ["(empty log)"]
            gone = (f"Ray job {self.submission_id} {ray_state}: {getattr(info, 'message', '')}"
                    f" (last log line: {last[0]})")
        return judge(self._spec.run_dir, self._log_path, cancelled=cancelled,
                     exited_ok=ray_state == "SUCCEEDED", failure=problem, gone=gone,
                     returncode=getattr(info, "driver_exit_code", None), result=result, tail=tail)


def _ray_state(info: Any) -> str:
    return str(getattr(info.status, "value", info.status))


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(deque(text.splitlines(), maxlen=lines))


if __name__ == "__main__":   # jobs submitted before the entrypoint moved to ray_job
    from .ray_job import job_main

    sys.exit(job_main(sys.argv[1:]))
