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
from typing import Any, Optional, TextIO

from ..errors import MLRuntimeError
from ..schemas import RunStatus
from ..registry import Caller, Registry
from .attempt import Attempts
from .background import Admission, Background
from .prepare import Prepared, Preparer, model_choice_text
from .record import Recorder


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
        self.background = Background(supervisor=lambda: self.supervisor, recorder=self.recorder,
                                     execute=self.execute, demand=self._demand)

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
        """Everything decided before a run (runs.prepare.Preparer.prepare)."""
        return self.preparer.prepare(caller, experiment_id, mode, **options)

    def _demand(self, prepared: Prepared) -> Any:
        from ..capacity import demand_for

        return demand_for(prepared.resolved.resources, prepared.plan, self.capacity,
                          prepared.device)

    # -- executing -----------------------------------------------------------------------------

    def execute(self, caller: Caller, run: dict[str, Any], prepared: Prepared, *,
                echo: Optional[TextIO] = None, backend: Any = None,
                interrupt: Any = None) -> dict[str, Any]:
        """Runs a created (PENDING) run to its end; returns the summary the CLI prints.

        `backend` is an already configured Backend (e.g. a RayBackend with an address); by
        default the plan's backend is loaded by name. The run waits in the FIFO queue until the
        host has room for it. `interrupt` (a runtime.supervisor.SignalGuard) turns Ctrl-C and
        SIGTERM into a cancel of this run, however early they arrive. A run that cannot even
        start (its environment or Model is missing) ends FAILED, never stays PENDING."""
        sup = self.supervisor
        control = sup.control(run["id"]) or sup.own(caller.scope, run["id"])
        if interrupt is not None:
            interrupt.bind(control)
        try:
            return self._execute_owned(caller, run, prepared, echo, backend, control)
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
                       echo: Optional[TextIO], backend: Any, control: Any) -> dict[str, Any]:
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
                                    tasklogs, echo)
        return self.recorder.record(caller, run, prepared, outcome, log_path)

    # -- background runs (the server) ----------------------------------------------------------

    def admit(self, caller: Caller, experiment_id: str, body: Any) -> Admission:
        """Before the API (or a schedule) writes a run: prepare it, once. A run this host can
        never start is refused (NeverFits, a 400) instead of queued forever; any other problem
        is the run's: it is created and FAILS with it."""
        import logging

        from ..capacity import NeverFits, check_fits
        from ..schemas import EXPERIMENT_RUN

        try:
            data = self.registry.validated(EXPERIMENT_RUN, body)
            prepared = self.prepare(caller, experiment_id, data["mode"],
                                    run_tasks=data.get("tasks"), backend=self.default_backend)
        except NeverFits:
            raise
        except MLRuntimeError as exc:
            return Admission(error=exc.detail)
        except Exception as exc:  # a bug must still end the run, not leave it PENDING
            logging.getLogger("runtime.runs").exception("Preparing a run of Experiment %s "
                                                        "failed", experiment_id)
            return Admission(error=f"{type(exc).__name__}: {exc}")
        check_fits(self._demand(prepared), self.capacity)
        return Admission(prepared=prepared)

    def start(self, caller: Caller, experiment_id: str, body: Any) -> dict[str, Any]:
        """`POST /experiments/{id}/runs`: admit the run, create it, run it in the background.
        Returns the created run's document."""
        from ..schemas import EXPERIMENT_RUN

        admission = self.admit(caller, experiment_id, body)
        doc = self.registry.create_run(caller, experiment_id, body)
        self.submit_background(caller, self.registry.get_unmasked(EXPERIMENT_RUN, caller,
                                                                  doc["id"]), admission)
        return doc

    def submit_background(self, caller: Caller, run: dict[str, Any],
                          admission: Optional[Admission] = None) -> None:
        """Run a created run in the background; without an `admission`, it is prepared now."""
        if admission is None:
            admission = self.admit(caller, run["experimentId"], {
                "mode": run["mode"], **({"tasks": run["tasks"]} if run.get("tasks") else {})})
        self.background.submit(caller, run, admission)

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
        self.submit_background(caller_of(scope, run), run)

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
