"""Starting a model host: the Model's score run prepared as `run score` would prepare it (its
engine, its environment, its digest), then its worker forked from the warm parent of that
environment with `ModelHost` as its engine (runtime.serving.host), cold when no parent can fork it.
Blocking: the API calls it on a worker thread.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import MLRuntimeError, NotFound
from ..schemas import EXPERIMENT_RUN, MODEL
from .host import HOST_FILE, check_servable

HOST_ENGINE = "runtime.serving.host:ModelHost"
START_TIMEOUT_S = 120.0
# What `run serve` starts for its MLServices' published Models after startup: nothing, the warm
# parents of their environments, or those and the Models loaded in their hosts.
PREWARM = ("off", "parents", "models")


class HostFailed(MLRuntimeError):
    status, title, slug = 500, "Model Host Failed", "model-host-failed"


@dataclass
class ServingOptions:
    """How hosts batch and what a request may carry."""

    max_batch_rows: int = 1024
    batch_wait_ms: float = 0.0
    batching: bool = True
    max_queue: int = 256
    max_rows: int = 100_000
    max_bytes: int = 16 << 20
    timeout_s: float = 30.0       # a request's deadline, from its arrival
    threads: int = 1              # per host: single rows gain nothing from more
    capture: bool = False         # request logs carry the payload
    prewarm: str = "models"       # one of PREWARM (`run serve` only)

    def __post_init__(self) -> None:
        self.prewarm = str(self.prewarm).strip().lower()
        if self.prewarm not in PREWARM:
            from ..errors import ConfigError

            raise ConfigError(f"MLRUNTIME_ONLINE_PREWARM={self.prewarm!r}: expected one of "
                              f"{', '.join(PREWARM)}")

    @classmethod
    def from_env(cls) -> "ServingOptions":
        """`run serve`'s options: MLRUNTIME_ONLINE_<FIELD> (e.g. MLRUNTIME_ONLINE_MAX_QUEUE=64,
        MLRUNTIME_ONLINE_BATCHING=0) over the defaults."""
        from dataclasses import fields

        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"MLRUNTIME_ONLINE_{f.name.upper()}")
            if raw is None or not raw.strip():
                continue
            kind = type(getattr(cls, f.name))
            if kind is bool:
                values[f.name] = raw.strip().lower() not in ("0", "off", "false", "no")
            else:
                try:
                    values[f.name] = kind(float(raw)) if kind is int else kind(raw)
                except ValueError:
                    from ..errors import ConfigError

                    raise ConfigError(f"MLRUNTIME_ONLINE_{f.name.upper()}={raw!r} is not a "
                                      f"{kind.__name__}") from None
        return cls(**values)


@dataclass(eq=False)
class HostProcess:
    model_id: str
    model: dict[str, Any]
    socket: str
    host_dir: Path
    proc: Any                     # a WarmChild or a Popen
    warm: bool
    started_s: float
    engine: str
    inflight: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    client: Any = None            # runtime.serving.client.HostClient, made on the event loop
    seen: float = 0.0             # when its process was last seen alive (time.monotonic)
    header_name: str = ""         # the Model's name as an X-Model-Name header may carry it

    def __post_init__(self) -> None:
        name = self.model.get("name")
        if name:
            self.header_name = "".join(c if 32 <= ord(c) < 127 else "?" for c in str(name))[:200]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the host's process group (a drained host exits on its own)."""
        import signal

        from ..procs import kill_group, wait_group_gone

        if self.alive():
            kill_group(self.proc.pid, signal.SIGTERM)
            if not wait_group_gone(self.proc.pid, 3.0):
                kill_group(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(2.0)
        except Exception:
            pass


def model_experiment(registry: Any, caller: Any, model: dict[str, Any]) -> str:
    if model.get("experimentId"):
        return model["experimentId"]
    run = registry.find(EXPERIMENT_RUN, caller.scope, model.get("experimentRunId") or "",
                        deleted=True)
    if not run:
        raise NotFound(f"Model {model['id']} has no Experiment run this runtime knows: it "
                       "cannot be served")
    return run["experimentId"]


def launch(registry: Any, executor: Any, warm: Any, caller: Any, model_id: str,
           options: ServingOptions) -> HostProcess:
    """A started host for the Model, listening and loaded, or an error saying why not."""
    from ..backends import RESULT_FILE, WorkerSpec, stage_run
    from ..engine import load_engine
    from ..pools import owner_arg
    from ..tasks import SCORE

    started = time.perf_counter()
    model = registry.get(MODEL, caller, model_id)
    prepared = executor.prepare(caller, model_experiment(registry, caller, model), SCORE,
                                overrides={"modelId": model_id})
    engine_cls = load_engine(prepared.engine_ref)
    check_servable(engine_cls)
    plan = prepared.plan
    python = str(getattr(plan, "python", None) or _python())
    token = uuid.uuid4().hex[:8]
    host_dir = registry.home.root / "serving" / f"{model_id}-{token}"
    host_dir.mkdir(parents=True, exist_ok=True)
    model_dir = registry.model_artifact_dir(caller, model_id)
    values = dict(prepared.resolved.values)
    if prepared.recipe is not None:
        python = _recipe_python(registry, prepared, host_dir) or python
        from ..recipes.runs import injected_values

        values = injected_values(values, mode=SCORE, org=caller.scope.org,
                                 sandbox=caller.scope.sandbox, run_dir=host_dir,
                                 model_dir=model_dir)
    name = f"mlruntime-serve-{os.getuid()}-{model_id[:24]}-{token}"
    config = {"engine": prepared.engine_ref, "values": values, "socket": name,
              "model_id": model_id, "model_name": model.get("name") or model_id,
              "model_version": model.get("created") or model_id, "owner": owner_arg(),
              "max_batch_rows": options.max_batch_rows, "batch_wait_ms": options.batch_wait_ms,
              "batching": options.batching, "max_queue": options.max_queue,
              "max_rows": options.max_rows, "max_bytes": options.max_bytes}
    (host_dir / HOST_FILE).write_text(json.dumps(config, default=str))
    os.chmod(host_dir / HOST_FILE, 0o600)   # the values may carry secrets
    spec = WorkerSpec(run_id=f"serve-{model_id}-{token}", engine=HOST_ENGINE, mode=SCORE,
                      device=plan.device, threads=options.threads, run_dir=host_dir,
                      model_dir=model_dir, model_digest=model.get("modelArtifactDigest"),
                      mlinstance_id=prepared.instance["id"],
                      data_roots=[str(r) for r in registry.data_roots.roots]
                      if registry.data_roots else [],
                      datasets=registry.dataset_catalog(caller.scope))
    spec_path, log_path = stage_run(spec, host_dir / "worker.log")
    where = host_environment(prepared, engine_cls, python)
    proc, warm_used = None, False
    if warm is not None:
        proc, _why = warm.spawn(python=python, device_kind=where.device_kind,
                                spec_path=spec_path, log_path=log_path, env=where.env,
                                needs=where.needs, result_path=host_dir / RESULT_FILE)
        warm_used = proc is not None
    if proc is None:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([python, "-m", "runtime.worker", str(spec_path)],
                                    env=where.env,
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    host = HostProcess(model_id, model, name, host_dir, proc, warm_used, 0.0,
                       prepared.engine_ref)
    _wait_listening(host, host_dir / RESULT_FILE, log_path)
    host.started_s = round(time.perf_counter() - started, 4)
    return host


@dataclass
class HostEnvironment:
    """What a Model's host is forked from: the warm parent of this interpreter, device kind and
    environment, which imports `needs` before it forks the host."""

    python: str
    device_kind: str
    env: dict[str, str]
    needs: tuple[str, ...]


def host_environment(prepared: Any, engine_cls: Any, python: str) -> HostEnvironment:
    plan = prepared.plan
    own = () if prepared.engine_ref.startswith("recipe:") else (engine_cls.__module__,)
    online = getattr(engine_cls, "online_preload", None)   # no data sets online: less to import
    preload = getattr(engine_cls, "preload", ()) if online is None else online
    return HostEnvironment(python=python,
                           device_kind="cuda" if plan.device.startswith("cuda") else "cpu",
                           env={**os.environ, **plan.env, "PYTHONUNBUFFERED": "1"},
                           # numpy: what a host casts every request's columns with
                           needs=(*preload, *own, "numpy", "runtime.serving.host"))


def warm_parents(registry: Any, executor: Any, warm: Any,
                 published: list[tuple[Any, str, dict[str, Any]]]
                 ) -> tuple[list[tuple[Any, str, dict[str, Any]]], list[str]]:
    """Start the warm parents of the environments of these published Models ((caller, MLService
    id, Model) each; `warm` None: none), each importing what all of its Models' hosts need, so
    that a first request costs a fork and a load. Built-in engines only: a recipe's own
    environment may first have to be built, which its first request still pays for. Returns the
    published Models of built-in engines that can be served, those with the least to import
    first, and what went wrong, a line each."""
    from ..engine import load_engine
    from ..tasks import SCORE
    from ..warm import pool_key

    environments: dict[str, list[HostEnvironment]] = {}
    servable, lines = [], []
    for caller, service_id, model in published:
        try:
            prepared = executor.prepare(caller, model_experiment(registry, caller, model), SCORE,
                                        overrides={"modelId": model["id"]})
            if prepared.recipe is not None:
                continue
            engine_cls = load_engine(prepared.engine_ref)
            check_servable(engine_cls)
        except MLRuntimeError as exc:
            lines.append(f"MLService {service_id}: its Model {model['id']} cannot be served "
                         f"({exc})")
            continue
        where = host_environment(prepared, engine_cls,
                                 str(getattr(prepared.plan, "python", None) or _python()))
        servable.append((len(where.needs), len(servable), (caller, service_id, model)))
        environments.setdefault(pool_key(where.python, where.device_kind, where.env),
                                []).append(where)
    for hosts in environments.values() if warm is not None else ():
        # The parent imports the lightest host's needs, then the others' one module at a time
        # between runs: a noop Model's host need not wait for the torch a retail-sales one
        # needs (at most for the one import under way).
        hosts.sort(key=lambda where: len(where.needs))
        where = hosts[0]
        later = dict.fromkeys(name for other in hosts[1:] for name in other.needs
                              if name not in where.needs)
        problem = warm.prestart(python=where.python, device_kind=where.device_kind,
                                env=where.env, needs=where.needs, later=list(later))
        if problem:
            lines.append(f"no warm parent of {where.device_kind} {where.python}: {problem}")
    return [found for _, _, found in sorted(servable)], lines


def _python() -> str:
    import sys

    return sys.executable


def _recipe_python(registry: Any, prepared: Any, host_dir: Path) -> Optional[str]:
    from ..artifacts import recipes_dir
    from ..recipes.runs import recipe_python

    with open(host_dir / "environment.log", "a", encoding="utf-8") as log:
        python = recipe_python(prepared.recipe, recipes_dir(registry.home.root) /
                               prepared.recipe.sha256, home=registry.home.root,
                               extra_pip=list(prepared.extra_pip), log=log,
                               env_manager=prepared.env_manager)
    return str(python) if python is not None else None


def _wait_listening(host: HostProcess, result_path: Path, log_path: Path) -> None:
    from ..pools import connect

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = connect(host.socket)
        if conn is not None:
            conn.close()
            return
        if not host.alive():
            detail = "it exited"
            try:
                error = json.loads(result_path.read_text()).get("error") or {}
                detail = error.get("message") or detail
            except (OSError, ValueError):
                tail = log_path.read_text(errors="replace")[-600:] if log_path.exists() else ""
                detail = f"it exited; its log ends: {tail}"
            raise HostFailed(f"The model host for Model {host.model_id} did not start: {detail}")
        time.sleep(0.005)
    host.stop()
    raise HostFailed(f"The model host for Model {host.model_id} did not start within "
                     f"{START_TIMEOUT_S:g} s")
