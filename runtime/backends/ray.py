"""The ray backend: a run becomes a Ray job, submitted through Ray's Jobs API (JobSubmissionClient).

The job's entrypoint runs the same worker that `run train|score|fp` runs locally; its artifacts
reach the submitting registry either through a shared artifact store or inside the job's log.
`ray` itself is imported only inside functions: `import runtime` never pays for it.
"""
from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, TextIO

from ..errors import ConfigError, ExecutionError, MissingDependency
from ..schemas import RunStatus
from . import RESULT_FILE, SPEC_FILE, Backend, Outcome, RunHandle, WorkerSpec, judge, read_result

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
RETURN_LIMIT_MB = 256.0      # artifacts brought back in the log; larger needs a shared store
PENDING_NOTICE_S = 10.0
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 40
BUNDLE_BEGIN = "@@mlinstance-runtime-artifacts begin"
BUNDLE_END = "@@mlinstance-runtime-artifacts end"
_BUNDLE_LINE_CHARS = 32 * 1024
_STAGE_PREFIX = "mlrt_job_"
_JOB_FILE = "job.json"
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
    """What a job asks of the cluster (None: Ray's default, which is 0 for an entrypoint)."""

    num_cpus: Optional[float] = None
    num_gpus: Optional[float] = None
    memory_mb: Optional[int] = None

    @classmethod
    def from_resources(cls, resources: Optional[ResourceRequest], plan: Plan) -> "JobRequest":
        if resources is None:  # the server's path: only the plan is known
            return cls(num_cpus=plan.threads, num_gpus=len(plan.gpu_indices) or None)
        return cls(num_cpus=resources.cpus, num_gpus=resources.gpus or None,
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

    def runtime_env(self, stage: Path, plan: Plan) -> dict[str, Any]:
        # CUDA_VISIBLE_DEVICES is Ray's to set (entrypoint_num_gpus); the plan's is this host's.
        env_vars = {k: v for k, v in plan.env.items() if k != "CUDA_VISIBLE_DEVICES"}
        env_vars["PYTHONUNBUFFERED"] = "1"
        env: dict[str, Any] = {"py_modules": [str(stage)], "env_vars": env_vars}
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
            env["excludes"] = list(self.excludes)
        requirements = _pip_requirements(self.pip)
        if requirements:
            env["pip"] = requirements
        return env

    def entrypoint(self, stage: Path) -> str:
        """The job's command: it names the uploaded package, never the spec's values."""
        return f"{self.python} -m runtime.backends.ray {stage.name}"

    def submit(self, *, spec: WorkerSpec, plan: Plan, log_path: Path,
               echo: TextIO | None = None) -> RayRunHandle:
        client = _job_client(self.address)
        request = JobRequest.from_resources(self.resources or plan.resources, plan)
        stage = _stage(spec, self.artifacts, self.return_limit_mb)
        submission_id = f"mlrt-{spec.run_id}-{uuid.uuid4().hex[:8]}"
        try:
            runtime_env = self.runtime_env(stage, plan)
            entrypoint = self.entrypoint(stage)
            kwargs: dict[str, Any] = {}
            if request.num_cpus:
                kwargs["entrypoint_num_cpus"] = request.num_cpus
            if request.num_gpus:
                kwargs["entrypoint_num_gpus"] = request.num_gpus
            if request.memory_mb:
                kwargs["entrypoint_memory"] = int(request.memory_mb) << 20
            try:
                client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                  runtime_env=runtime_env,
                                  metadata={"mlinstance_runtime.run_id": spec.run_id,
                                            "mlinstance_runtime.engine": spec.engine,
                                            "mlinstance_runtime.mode": spec.mode},
                                  **kwargs)
            except Exception as exc:
                raise ExecutionError(
                    f"Run {spec.run_id} (engine {spec.engine}): the Ray cluster at "
                    f"{client.get_address()} refused the job: {exc}") from exc
        finally:
            shutil.rmtree(stage.parent, ignore_errors=True)  # uploaded (or refused): not needed
        self.notify(f"Submitted Ray job {submission_id} to {client.get_address()} "
                    f"(asks {request.describe()}; artifacts: {self.artifacts})")
        return RayRunHandle(client, submission_id, spec=spec, request=request,
                            artifacts=self.artifacts, log_path=Path(log_path), echo=echo,
                            notify=self.notify, poll_s=self.poll_s,
                            pending_notice_s=self.pending_notice_s,
                            stop_grace_s=self.stop_grace_s)


def _stage(spec: WorkerSpec, artifacts: str, return_limit_mb: float) -> Path:
    """A package folder uploaded with the job (runtime_env py_modules): the spec, the job's
    settings and, for a score run whose artifacts travel, the model to score with."""
    module = _STAGE_PREFIX + hashlib.sha1(f"{spec.run_id}-{uuid.uuid4()}".encode()).hexdigest()[:16]
    stage = Path(tempfile.mkdtemp(prefix="mlrt-stage-")) / module
    stage.mkdir()
    (stage / "__init__.py").write_text('"""Inputs of one MLInstance Runtime job."""\n')
    model_dir = spec.model_dir
    if artifacts == "return" and spec.model_dir is not None:
        source = Path(spec.model_dir)
        if source.is_dir():
            shutil.copytree(source, stage / "model")
        elif source.is_file():
            (stage / "model").mkdir()
            shutil.copy2(source, stage / "model" / source.name)
        model_dir = None
    spec.model_copy(update={"model_dir": model_dir}).write(stage / SPEC_FILE)
    (stage / _JOB_FILE).write_text(json.dumps({"artifacts": artifacts,
                                               "run_dir": str(Path(spec.run_dir).resolve()),
                                               "return_limit_mb": return_limit_mb}))
    return stage


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



# --- artifacts that travel in the log ------------------------------------------------------------

def split_bundle(text: str) -> tuple[str, Optional[bytes]]:
    """The log without the artifacts bundle, and the bundle's bytes (None when there is none, or
    when it is still being written)."""
    start = text.find(BUNDLE_BEGIN)
    if start < 0:
        return text, None
    end = text.find(BUNDLE_END, start)
    if end < 0:
        return text[:start], None
    header, _, body = text[start:end].partition("\n")
    rest = text[end + len(BUNDLE_END):].lstrip("\n")
    _, _, digest = header.rpartition(" ")
    data = base64.b64decode("".join(body.split()))
    if hashlib.sha256(data).hexdigest() != digest:
        raise ExecutionError("The artifacts in the Ray job's log are damaged (checksum mismatch)")
    return text[:start] + rest, data


def make_bundle(run_dir: Path, result: dict[str, Any]) -> bytes:
    """A tar.gz of the run folder (less the spec, which may hold secrets) and of an output written
    outside it, with a manifest saying where each came from."""
    buffer = io.BytesIO()
    output = result.get("output")
    manifest = {"run_dir": str(run_dir), "output": output, "output_member": None}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(run_dir.rglob("*")):
            rel = path.relative_to(run_dir)
            if rel.as_posix() == SPEC_FILE or not path.is_file():
                continue
            tar.add(path, arcname=f"run/{rel.as_posix()}", recursive=False)
        if output and Path(output).exists() and not _inside(Path(output), run_dir):
            manifest["output_member"] = f"output/{Path(output).name}"
            tar.add(output, arcname=manifest["output_member"])
        data = json.dumps(manifest).encode()
        member = tarfile.TarInfo("manifest.json")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def restore_bundle(data: bytes, run_dir: Path) -> Optional[dict[str, Any]]:
    """Unpack a bundle into the local run folder; the result's paths are rewritten to local ones
    (an output written outside the job's run folder lands at the same path here)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        for member in tar.getmembers():
            if member.name.startswith("run/") and member.isfile():
                tar.extract(member, run_dir.parent / "_ray_incoming", filter="data")
        incoming = run_dir.parent / "_ray_incoming" / "run"
        if incoming.is_dir():
            for item in incoming.iterdir():
                target = run_dir / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
        shutil.rmtree(run_dir.parent / "_ray_incoming", ignore_errors=True)
        remote_dir = manifest["run_dir"]
        result = read_result(run_dir / RESULT_FILE)
        if result is None:
            return None

        def local(path: Optional[str]) -> Optional[str]:
            if path and (path == remote_dir or path.startswith(remote_dir.rstrip("/") + "/")):
                return str(run_dir / Path(path).relative_to(remote_dir))
            return path

        result["model_dir"] = local(result.get("model_dir"))
        result["output"] = local(result.get("output"))
        if manifest.get("output_member"):
            target = Path(manifest["output"])   # a relative path: from this working directory
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(manifest["output_member"]) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            result["output"] = str(target.resolve())
        (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str))
        return result


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


# --- the job itself (on the cluster) -------------------------------------------------------------

DISTRIBUTION = "mlinstance-runtime"


def runtime_missing(engine: str) -> Optional[str]:
    """Why this Python cannot run `engine`, when the cause is that it lacks the runtime's
    distribution (the working_dir upload brings the source, not the installed package whose entry
    points name the engines); None when it has it, or the engine is an import path."""
    from importlib import metadata

    if ":" in engine:   # `module:Class` or `recipe:<kind>:<dir>`: no entry point needed
        return None
    try:
        metadata.distribution(DISTRIBUTION)
        return None
    except metadata.PackageNotFoundError:
        pass
    return (f"the job's Python on the Ray cluster ({sys.executable}) has no {DISTRIBUTION} "
            f"installed, so it knows no engine plugin (engine {engine!r} is an entry point of that "
            "package; the uploaded working_dir brings the source, not the installed package). "
            f"Install it in the cluster's Python (pip install '{DISTRIBUTION}[ray]', or a wheel "
            "of this checkout: pip wheel --no-deps . -w dist), let Ray install it for the job "
            "(run submit --pip REQ with a requirement or wheel the cluster can reach; "
            "MLRUNTIME_RAY_PIP for the server), or run the cluster from the project's Docker "
            "image (docker/Dockerfile.cpu or docker/Dockerfile.cuda, which install it)")


def job_main(argv: list[str]) -> int:
    """`python -m runtime.backends.ray STAGE_MODULE`: the Ray job's entrypoint.

    Runs the worker on the uploaded spec, exactly as a local run does, then (artifacts "return")
    prints the run's artifacts as one base64 block at the end of the log.
    """
    if len(argv) != 1:
        print("usage: python -m runtime.backends.ray STAGE_MODULE", file=sys.stderr)
        return 2
    stage = Path(importlib.import_module(argv[0]).__file__).parent
    job = json.loads((stage / _JOB_FILE).read_text())
    spec = WorkerSpec.read(stage / SPEC_FILE)
    if job["artifacts"] == "shared":
        run_dir = Path(job["run_dir"])
        model_dir = spec.model_dir
    else:
        run_dir = Path(tempfile.mkdtemp(prefix="mlrt-run-"))
        model_dir = stage / "model" if (stage / "model").exists() else None
    spec = spec.model_copy(update={"run_dir": run_dir, "model_dir": model_dir})
    spec_path = spec.write(run_dir / SPEC_FILE)

    from .. import worker

    missing = runtime_missing(spec.engine)
    if missing is not None:   # not "installed engines: none": say which Python lacks what
        print(f"error: {missing}", flush=True)
        worker._write_result(run_dir, {
            "state": "FAILED", "run_id": spec.run_id, "engine": spec.engine, "mode": spec.mode,
            "metrics": [], "model_dir": None, "output": None, "rows": None, "durations_s": {},
            "error": {"type": "RuntimeNotInstalled", "message": missing, "traceback": ""}})
        code = 1
    else:
        code = worker.main([str(spec_path)])
    if job["artifacts"] == "return":
        result = read_result(run_dir / RESULT_FILE)
        if result is not None:
            data = make_bundle(run_dir, result)
            limit_mb = float(job.get("return_limit_mb") or RETURN_LIMIT_MB)
            if len(data) > limit_mb * (1 << 20):
                print(f"error: the run's artifacts are {len(data) / (1 << 20):.0f} MiB compressed, "
                      f"over the {limit_mb:g} MiB that travel back in the job's log: use a "
                      "shared artifact store (artifacts 'shared')", flush=True)
                shutil.rmtree(run_dir, ignore_errors=True)
                return 1
            sys.stdout.flush()
            text = base64.b64encode(data).decode()
            lines = [text[i:i + _BUNDLE_LINE_CHARS] for i in range(0, len(text), _BUNDLE_LINE_CHARS)]
            sys.stdout.write(f"{BUNDLE_BEGIN} {len(data)} {hashlib.sha256(data).hexdigest()}\n"
                             + "\n".join(lines) + f"\n{BUNDLE_END}\n")
            sys.stdout.flush()
        shutil.rmtree(run_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
