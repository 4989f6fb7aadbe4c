"""The run executor: one object a face (the CLI, the API, a sweep, a schedule) holds to run runs of
one registry. It composes the rooms of a run's path and adds nothing of its own:

    prepare    layers -> a typed Prepared (runs.prepare)
    attempt    queue, submit, wait, retry, maxRuntime (runs.attempt)
    record     state, result, Models, Insights, once (runs.record)
    background the server's runs, each on a thread (runs.background)
    reconcile  runs a dead process left behind (runs.reconcile)
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional, TextIO

from ..errors import MLRuntimeError
from ..schemas import RunStatus
from ..registry import Caller, Registry
from .attempt import Attempts
from .background import Admission, Background
from .prepare import Prepared, Preparer, model_choice_text
from .record import Recorder
from .request import Claim, RunRequest


class RunExecutor:
    """Resolves, dispatches and records runs of one registry."""

    def __init__(self, registry: Registry, *, max_background: int = 2,
                 default_backend: Optional[str] = None,
                 backend_options: Optional[dict[str, dict[str, Any]]] = None,
                 kind: str = "cli", max_concurrent_runs: Optional[int] = None,
                 capacity: Any = None, warm: Any = None) -> None:
        self.registry = registry
        self.kind = kind                          # who owns the runs: "server" or "cli"
        self.max_concurrent_runs = max_concurrent_runs
        self._capacity = capacity                 # runtime.capacity.Capacity; default: the host's
        self._supervisor: Any = None
        self.default_backend = default_backend   # background (API) runs: e.g. "ray"
        self.env_manager: Optional[str] = None   # recipes: "uv" or "local" (default: the env var)
        self.backend_options = backend_options or {}   # e.g. {"pyspark": {"master": "spark://..."}}
        self._backends: dict[str, Any] = {}   # one instance per name: warm pools live there
        # runtime.warm.WarmPools for the python backends (None: every python run starts cold)
        self.warm = warm
        self._host = None
        self._lock = threading.Lock()
        self.preparer = Preparer(registry, host=lambda: self.host, backend=self.backend,
                                 env_manager=lambda: self.env_manager)
        self.recorder = Recorder(registry, release=lambda run_id: self.supervisor.release(run_id),
                                 from_record=self.preparer.from_record)
        self.attempts = Attempts(registry, supervisor=lambda: self.supervisor,
                                 capacity=lambda: self.capacity, host=lambda: self.host)
        self.background = Background(
            supervisor=lambda: self.supervisor, recorder=self.recorder,
            execute=lambda caller, run, prepared, demand: self.execute(caller, run, prepared,
                                                                       demand=demand))

    def backend(self, name: str) -> Any:
        """The backend registered as `name`, configured once and kept for later runs."""
        from ..backends import backend_class, load_backend

        with self._lock:
            if name not in self._backends:
                options = dict(self.backend_options.get(name, {}))
                if backend_class(name).takes_warm_pools and self.warm is not None:
                    options.setdefault("warm", self.warm)
                self._backends[name] = load_backend(name, **options)
            return self._backends[name]

    @property
    def capacity(self):
        if self._capacity is None:
            from ..capacity import host_capacity

            self._capacity = host_capacity(
                cpu_count=self.host.cpu_count,
                gpu_indices=[d.index for d in self.host.cuda_devices],
                max_runs=self.max_concurrent_runs)
        return self._capacity

    @property
    def supervisor(self):
        """The run ledger as this process sees it (runtime.supervisor)."""
        with self._lock:
            if self._supervisor is None:
                from ..supervisor import Supervisor

                self._supervisor = Supervisor(self.registry, self.capacity, kind=self.kind)
            return self._supervisor

    @property
    def host(self):
        if self._host is None:
            from ..dispatch import detect_host

            self._host = detect_host()
        return self._host

    def prepare(self, caller: Caller, experiment_id: str, mode: str, **options: Any) -> Prepared:
        """Everything decided before a run (runs.prepare.Preparer.prepare). Faces call `run`,
        `start` or `preview` with a RunRequest instead."""
        return self.preparer.prepare(caller, experiment_id, mode, **options)

    def _demand(self, prepared: Prepared) -> Any:
        from ..capacity import demand_for

        return demand_for(prepared.resolved.resources, prepared.plan, self.capacity,
                          prepared.device)

    # -- executing -----------------------------------------------------------------------------

    def execute(self, caller: Caller, run: dict[str, Any], prepared: Prepared, *,
                echo: Optional[TextIO] = None, backend: Any = None,
                interrupt: Any = None, demand: Any = None) -> dict[str, Any]:
        """Runs a created (PENDING) run to its end; returns the summary the CLI prints.

        `backend` is an already configured Backend (e.g. a RayBackend with an address); by
        default the plan's backend is loaded by name. The run waits in the FIFO queue until the
        host has room for it. `interrupt` (a runtime.supervisor.SignalGuard) turns Ctrl-C and
        SIGTERM into a cancel of this run, however early they arrive. `demand`: its claim on
        the host, checked already when it was admitted (else it is checked here, once). A run
        that cannot even start (its environment or Model is missing) ends FAILED, never stays
        PENDING."""
        sup = self.supervisor
        control = sup.control(run["id"]) or sup.own(caller.scope, run["id"])
        if interrupt is not None:
            interrupt.bind(control)
        try:
            return self._execute_owned(caller, run, prepared, echo, backend, control, demand)
        except BaseException as exc:
            reason = ("interrupted" if isinstance(exc, KeyboardInterrupt) else
                      getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}")
            state = self.recorder.state(caller.scope, run["id"])
            if state is not None and not state.is_terminal():
                from ..errors import Conflict

                try:
                    self.registry.transition_run(
                        caller.scope, run["id"], RunStatus.ABORTED
                        if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED,
                        message=reason)
                except Conflict:
                    pass
            raise
        finally:
            sup.release(run["id"])

    def _execute_owned(self, caller: Caller, run: dict[str, Any], prepared: Prepared,
                       echo: Optional[TextIO], backend: Any, control: Any,
                       demand: Any = None) -> dict[str, Any]:
        from ..backends import WorkerSpec

        reg, scope, run_id = self.registry, caller.scope, run["id"]
        run_dir = reg.home.runs / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path = run_dir / "worker.log"
        # A recipe's own Python (built on first use), the timeframe's data set for the reader
        prepared = self.preparer.starting(caller, run_id, prepared, log_path, echo)
        reg.annotate_run(scope, run_id, {"runtime": prepared.record()})
        if prepared.model_choice is not None:   # which Model scores, said before anything runs
            line = f"Run {run_id}: scoring with Model {model_choice_text(prepared.model_choice)}\n"
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(line)
            if echo is not None:
                echo.write(line)
                echo.flush()
        model_dir = None
        if prepared.model is not None:
            model_dir = reg.model_artifact_dir(caller, prepared.model["id"])
        values = prepared.resolved.values
        if prepared.recipe is not None:   # the platform's injected keys; the recipe's own Python
            from ..recipes.runs import injected_values

            values = injected_values(values, mode=prepared.mode, org=scope.org,
                                     sandbox=scope.sandbox, run_dir=run_dir, model_dir=model_dir)
        spec = WorkerSpec(run_id=run_id, engine=prepared.engine_ref, mode=prepared.mode,
                          values=values, device=prepared.plan.device,
                          model_digest=(prepared.model or {}).get("modelArtifactDigest"),
                          threads=prepared.plan.threads, run_dir=run_dir, model_dir=model_dir,
                          resources=prepared.resolved.resources,
                          mlinstance_id=prepared.instance["id"],
                          secret_keys=sorted(prepared.resolved.secret_keys),
                          data_roots=[str(r) for r in reg.data_roots.roots] if reg.data_roots
                          else [],
                          datasets=reg.dataset_catalog(scope))
        tasklogs = [{"name": "worker.log",
                     "url": f"/data/sensei/experiments/{run['experimentId']}/runs/{run_id}/logs/"
                            "worker.log"}]
        if backend is None:
            backend = self.backend(prepared.plan.backend)
        outcome = self.attempts.run(caller, run, prepared, backend, control, spec, log_path,
                                    tasklogs, echo, demand)
        return self.recorder.record(caller, run, prepared, outcome, log_path)

    # -- the run path: one call per run, from every face ---------------------------------------

    def validated(self, request: RunRequest) -> dict[str, Any]:
        """The run's document, validated: the one validation of a run's body."""
        from ..schemas import EXPERIMENT_RUN

        return self.registry.validated(EXPERIMENT_RUN, request.document())

    def _prepare(self, caller: Caller, request: RunRequest, data: dict[str, Any], *,
                 require_model: bool = True) -> Prepared:
        return self.preparer.prepare(
            caller, request.experiment_id, data["mode"], run_tasks=data.get("tasks"),
            overrides=request.cli_overrides(), override_secrets=request.secret_keys,
            device=request.device, backend=request.backend or self.default_backend,
            require_model=require_model, env_manager=request.env_manager,
            extra_pip=list(request.extra_pip) or None)

    def preview(self, caller: Caller, request: RunRequest, *,
                require_model: bool = False) -> Prepared:
        """What the run would be, nothing created (`--explain`, `--dry-run`, a sweep checking
        its trials). Without `require_model` a score plan shows before any Model exists."""
        return self._prepare(caller, request, self.validated(request),
                             require_model=require_model)

    def run(self, caller: Caller, request: RunRequest, *, echo: Optional[TextIO] = None,
            interrupt: Any = None, guard_signals: bool = False, backend: Any = None,
            on_created: Optional[Callable[[dict[str, Any], Any], None]] = None
            ) -> Optional[dict[str, Any]]:
        """A run in the foreground, to its end: validate once, prepare, create, execute, record.
        Returns the summary the CLI prints, or None when `interrupt` fired before the run was
        created (then nothing is).

        `guard_signals`: from the run's creation on, Ctrl-C and SIGTERM cancel it (the CLI's
        own run); `interrupt`: a SignalGuard the face holds already (a sweep's, for all its
        trials). `echo` gets the run's lines as they come; `on_created(run, plan)` hears of the
        run and its plan (runtime.plans.Plan) as soon as it exists. A preparation that fails raises before anything is
        created; a run that can never start on this host is created and FAILS saying why."""
        data = self.validated(request)
        prepared = self._prepare(caller, request, data)
        guard = None
        if guard_signals:
            from ..supervisor import SignalGuard

            interrupt = guard = SignalGuard().__enter__()
        try:
            if interrupt is not None and getattr(interrupt, "reason", None):
                return None
            run = self._create(caller, request, data)
            if on_created is not None:
                on_created(run, prepared.plan)
            return self.execute(caller, run, prepared, echo=echo, backend=backend,
                                interrupt=interrupt)
        finally:
            if guard is not None:
                guard.__exit__(None, None, None)

    def start(self, caller: Caller, request: RunRequest, *,
              claim: Optional[Claim] = None) -> Optional[dict[str, Any]]:
        """A run in the background (`POST /experiments/{id}/runs`, a schedule's fire): validate
        once, prepare once (a run this host can never start is refused, NeverFits, a 400; any
        other problem is the run's: it is created and FAILS with it), create it (with `claim`
        in the same transaction), then run it on a thread of its own, in posting order.
        Returns the created run's document; None when the claim went to another process."""
        from ..schemas import EXPERIMENT_RUN

        data = self.validated(request)
        admission = self._admit(caller, request, data)
        run = self._create(caller, request, data, claim)
        if run is not None:
            self.background.submit(caller, self.registry.get_unmasked(
                EXPERIMENT_RUN, caller, run["id"]), admission)
        return run

    def _create(self, caller: Caller, request: RunRequest, data: dict[str, Any],
                claim: Optional[Claim] = None) -> Optional[dict[str, Any]]:
        return create_run(self.registry, caller, request, data, claim)

    def _admit(self, caller: Caller, request: RunRequest, data: dict[str, Any]) -> Admission:
        """A background run's preparation and its claim on the host, checked once."""
        import logging

        from ..capacity import NeverFits, check_fits

        try:
            prepared = self._prepare(caller, request, data)
        except NeverFits:   # the planner's own "this host has no such GPU": a 400, nothing written
            raise
        except MLRuntimeError as exc:
            return Admission(error=exc.detail)
        except Exception as exc:  # a bug must still end the run, not leave it PENDING
            logging.getLogger("runtime.runs").exception("Preparing a run of Experiment %s "
                                                        "failed", request.experiment_id)
            return Admission(error=f"{type(exc).__name__}: {exc}")
        demand = self._demand(prepared)
        check_fits(demand, self.capacity)   # the one capacity check of a background run
        return Admission(prepared=prepared, demand=demand)

    def cancel(self, caller: Caller, run_id: str, reason: Optional[str] = None) -> None:
        """Cancel a live run, whoever owns it (a Conflict once it ended)."""
        self.supervisor.request_cancel(caller.scope, run_id,
                                       reason or f"cancelled by {caller.user_id}")

    def wait_ended(self, caller: Caller, run_id: str, timeout_s: float) -> Optional[RunStatus]:
        import time

        deadline = time.monotonic() + timeout_s
        state = self.recorder.state(caller.scope, run_id)
        while state is not None and not state.is_terminal() and time.monotonic() < deadline:
            time.sleep(0.05)
            state = self.recorder.state(caller.scope, run_id)
        return state

    # -- runs nobody watched (reconciliation at start-up) ----------------------------------------

    def reconcile(self) -> Any:
        """Settle the runs a dead server or CLI left behind (runs.reconcile); a server queues
        again those that never got a worker."""
        import logging

        from .reconcile import reconcile

        summary = reconcile(self.recorder, self.supervisor, track=self.background.track,
                            resubmit=self._resubmit if self.kind == "server" else None)
        logging.getLogger("runtime.runs").info("%s", summary.summary())
        return summary

    def _resubmit(self, scope: Any, run_id: str) -> None:
        from ..schemas import EXPERIMENT_RUN
        from .record import caller_of

        run = self.registry.get_unmasked(EXPERIMENT_RUN, Caller(scope, "local"), run_id)
        caller = caller_of(scope, run)   # a stored run: its document was validated when posted
        data = {"mode": run["mode"], **({"tasks": run["tasks"]} if run.get("tasks") else {})}
        request = RunRequest.from_body(run["experimentId"], data)
        self.background.submit(caller, run, self._admit(caller, request, data))

    # -- stopping -------------------------------------------------------------------------------

    def shutdown(self, grace_s: float = 0.0, abort: Optional[threading.Event] = None) -> None:
        """Stop: accept no run; abort queued runs; give running runs `grace_s` seconds to
        finish, then abort them; wait until every run of this process is recorded."""
        self.background.accepting = False
        if self._supervisor is not None:
            self.background.stop(self._supervisor, grace_s, abort)
            self._supervisor.close()
        self.close_warm()

    def close_warm(self) -> None:
        """Stop the warm parents this process started (runtime.warm); runs end cold after."""
        if self.warm is not None:
            self.warm.close()


def create_run(registry: Registry, caller: Caller, request: RunRequest, data: dict[str, Any],
               claim: Optional[Claim] = None) -> Optional[dict[str, Any]]:
    """Write the run (its validated document `data`), its annotations and `claim` in one
    transaction; None, and nothing written, when the claim was taken elsewhere."""
    with registry.transaction():
        if claim is not None and not claim.take():
            return None
        run = registry.create_run(caller, request.experiment_id, data, validated=True)
        if request.annotations:
            registry.annotate_run(caller.scope, run["id"], dict(request.annotations))
        if claim is not None:
            claim.taken(run)
    return run


class RecordOnly:
    """The run path of a server that runs nothing (`run serve --no-execute`, a scheduler
    without an executor): validate once, create; the run stays PENDING."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def start(self, caller: Caller, request: RunRequest, *,
              claim: Optional[Claim] = None) -> Optional[dict[str, Any]]:
        from ..schemas import EXPERIMENT_RUN

        data = self.registry.validated(EXPERIMENT_RUN, request.document())
        return create_run(self.registry, caller, request, data, claim)
