"""Running an experiment run: resolve its configuration, plan it, execute it, record the results.

One path for every face: `run train|score|fp` calls it in the foreground, the server calls it in
the background for `POST /experiments/{id}/runs`. Each run's resolved configuration (with the layer
that set each key) and its plan are stored with the run; a DONE train run registers a Model, and
evaluation metrics become Insights.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

from ..errors import ConfigError, MLRuntimeError, NotFound
from ..listing import Filter, ListQuery
from ..schemas import ENGINE, EXPERIMENT, INSIGHT, MLINSTANCE, MODEL, RunStatus
from ..service import Caller, Registry
from ..tasks import SCORE, TRAIN, run_mode

log = logging.getLogger("runtime.runs")

# Keys of the run itself, not of the engine: taken out of the layers before resolution.
# `maxRuntime` (seconds) aborts a run that runs longer; `retries` re-runs a FAILED run N times;
# `mlServiceId` names the MLService whose published Model a score run uses; `timeframe` (minutes)
# and `timeframeColumn` limit the input data set to its last minutes (runtime.timeframe).
RUN_KEYS = ("modelId", "maxRuntime", "retries", "mlServiceId", "timeframe", "timeframeColumn")
RETRY_DELAY_S = 1.0   # between a FAILED attempt and the next one


@dataclass
class Prepared:
    """Everything decided before a run starts: what `--explain` and `--dry-run` print."""

    mode: str
    engine_ref: str
    engine_doc: dict[str, Any]
    instance: dict[str, Any]
    experiment: dict[str, Any]
    resolved: Any                     # runtime.resolver.ResolvedConfig
    plan: Any                         # runtime.dispatch.Plan
    model: Optional[dict[str, Any]] = None
    spark: Any = None                 # runtime.spark.config.SparkConfig, for pyspark plans
    device: Optional[str] = None      # the device asked for (--device), for GPU leases
    max_runtime_s: Optional[float] = None
    retries: int = 0
    recipe: Any = None                # runtime.artifacts.RecipeInfo when the Engine is a recipe
    env_manager: str = "uv"           # recipes: "uv" (their own environment) or "local"
    extra_pip: tuple[str, ...] = ()   # recipes: requirements added with --pip
    model_choice: Optional[dict[str, Any]] = None   # why this Model scores (model_choice_text)
    timeframe: Optional[dict[str, Any]] = None      # {minutes, column}: the input's last minutes

    def record(self) -> dict[str, Any]:
        record = {"engine": self.engine_ref, "resolved": self.resolved.to_record(),
                  "plan": self.plan.to_record(),
                  "modelId": self.model["id"] if self.model else None}
        if self.model_choice is not None:
            record["modelChoice"] = self.model_choice
        if self.timeframe is not None:
            record["timeframe"] = self.timeframe
        if self.max_runtime_s is not None or self.retries:
            record["limits"] = {"maxRuntime": self.max_runtime_s, "retries": self.retries}
        if self.recipe is not None:   # which artifact this run ran
            image = ((self.engine_doc.get("artifacts") or {}).get("default") or {}).get("image") or {}
            record["artifact"] = {"sha256": self.recipe.sha256, "kind": self.recipe.kind,
                                  "version": image.get("artifactVersion"),
                                  "envManager": self.env_manager}
        if self.spark is not None:
            record["spark"] = self.spark.to_record()
        return record

    def explain(self, width: Optional[int] = None) -> str:
        """The parameters with their sources, the plan and what the engine says of the data; with
        `width`, every line fits it (long values wrap)."""
        from ..textfit import fit_text

        def fit(text: str) -> str:
            return text if width is None else fit_text(text, width)

        lines = [fit(f"{self.mode} run of MLInstance {self.instance['id']} "
                     f"({self.instance.get('name')}), engine {self.engine_ref}, experiment "
                     f"{self.experiment['id']}"),
                 "", self.resolved.explain(width), "", fit(self.describe_plan())]
        data = self.describe_data()
        if data:
            lines += ["", fit(data)]
        return "\n".join(lines)

    def describe_data(self) -> str:
        """What the engine says about this run's input data (`Engine.explain`: e.g. the train /
        validation split and the rows on each side), or why the data cannot be read. Empty for
        an engine that says nothing."""
        from ..engine import Engine, TaskContext, load_engine, parse_params
        from ..worker import _engine_values

        engine_cls = load_engine(self.engine_ref)
        if getattr(engine_cls, "explain", Engine.explain) is Engine.explain:
            return ""
        key = "scoringDataSetId" if self.mode == SCORE else "trainingDataSetId"
        values = self.resolved.values
        uri = values.get(key)
        if not uri:
            return f"data     {key} is not set"
        engine = engine_cls()
        ctx = TaskContext(task=self.mode, params=parse_params(
            engine_cls, self.mode, _engine_values(engine_cls, self.mode, values)))
        try:
            data = engine.load_data(ctx, str(uri))
        except Exception as exc:   # --explain runs nothing: say what the run would hit
            return f"data     {key} {uri}: cannot be read ({exc})"
        lines = engine.explain(ctx, data)
        return "\n".join([f"data     {key} {uri}: {len(data)} rows",
                          *(f"         {line}" for line in lines)])

    def describe_plan(self) -> str:
        from ..dispatch import describe

        text = describe(self.plan)
        if self.recipe is not None:
            where = ("this environment (--env-manager local)" if self.env_manager == "local" else
                     "this environment (a PySpark recipe without requirements)"
                     if self.recipe.kind == "pyspark" and not self.recipe.requirements
                     and not self.extra_pip else
                     "its own environment (uv), built on first use")
            text += (f"\nrecipe   {self.recipe.kind} {self.recipe.name} "
                     f"sha256:{self.recipe.sha256[:12]}, runs in {where}")
        if self.spark is not None:
            text += "\n" + self.spark.describe()
        if self.model:
            text += "\nmodel    " + (model_choice_text(self.model_choice) if self.model_choice
                                     else f"{self.model['id']} (run "
                                          f"{self.model.get('experimentRunId')})")
        elif self.mode == SCORE:
            text += "\nmodel    none yet: train this MLInstance first, or give --model ID"
        return text


def engine_reference(engine_doc: dict[str, Any]) -> str:
    """The engine plugin an Engine runs: `artifacts.default.image.location` (a name or a path)."""
    image = ((engine_doc.get("artifacts") or {}).get("default") or {}).get("image") or {}
    location = image.get("location")
    if not location:
        from ..engine import installed_engines

        raise ConfigError(
            f"Engine {engine_doc['id']} ({engine_doc.get('name')}) names no engine plugin: set "
            "artifacts.default.image.location to an installed engine or a 'module:Class' path "
            f"(installed: {', '.join(sorted(installed_engines())) or 'none'})")
    return location


def model_choice_text(choice: dict[str, Any]) -> str:
    """`Model M (run R, created C; MAPE 0.05): the published Model of MLService S`."""
    from ..numbers import readable

    metrics = ", ".join(f"{m.get('name')} {readable(m.get('value'))}"
                        for m in choice.get("metrics") or [])
    why = {"modelId": "given with --model / modelId",
           "mlService": f"the published Model of MLService {choice.get('mlServiceId')}",
           "experiment": f"the latest DONE train run of Experiment {choice.get('experimentId')}"
           }.get(choice.get("source"), choice.get("source"))
    return (f"{choice.get('modelId')} (run {choice.get('experimentRunId')}, created "
            f"{choice.get('created')}{'; ' + metrics if metrics else ''}): {why}")


def default_experiment(registry: Registry, caller: Caller,
                       instance: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The Experiment a plain run of an MLInstance uses: its newest one that no sweep and no
    MLService made (theirs hold trials and scheduled runs, never the default Model)."""
    from ..schemas import EXPERIMENT as EXPERIMENT_KIND

    start = 0
    while True:
        query = ListQuery(filters=(Filter("deleted", "==", False, "bool"),
                                   Filter("mlInstanceId", "==", instance["id"], "str")),
                          order=(("created", True),), limit=100, start=start)
        page = registry.list(EXPERIMENT_KIND, caller, query)
        for doc in page.children:
            if not _made_by_sweep_or_service(doc):
                return doc
        if len(page.children) < 100:
            return None
        start += 100


def _made_by_sweep_or_service(experiment: dict[str, Any]) -> bool:
    from ..sweep import SWEEP_EXPERIMENT_DESCRIPTION

    return bool(experiment.get("createdByService")) or \
        experiment.get("description") == SWEEP_EXPERIMENT_DESCRIPTION or \
        "sweepId" in (experiment.get("tags") or {})


def _run_limits(run_keys: dict[str, str]) -> dict[str, Any]:
    """`maxRuntime`, `retries` and the timeframe of a run, checked: a bad value names the key."""
    limits: dict[str, Any] = {}
    if run_keys.get("timeframe") not in (None, "", "0"):
        from ..timeframe import parse_minutes

        limits["timeframe"] = {"minutes": parse_minutes(run_keys["timeframe"]),
                               "column": run_keys.get("timeframeColumn") or None}
    if run_keys.get("maxRuntime") not in (None, ""):
        try:
            value = float(run_keys["maxRuntime"])
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError(f"maxRuntime {run_keys['maxRuntime']!r} is not a positive number of "
                              "seconds")
        limits["max_runtime_s"] = value
    if run_keys.get("retries") not in (None, ""):
        text = run_keys["retries"]
        if not text.strip().isdigit():
            raise ConfigError(f"retries {text!r} is not a whole number of retries (0 or more)")
        limits["retries"] = int(text)
    return limits


def _split_run_keys(tasks: Optional[list[dict[str, Any]]], mode: str,
                    found: dict[str, str]) -> Optional[list[dict[str, Any]]]:
    """The task list without RUN_KEYS for `mode`; their values land in `found` (later wins)."""
    if not tasks:
        return tasks
    from ..tasks import canonical_task

    out = []
    for task in tasks:
        if canonical_task(task.get("name", "")) == mode and task.get("parameters"):
            kept = []
            for param in task["parameters"]:
                if param.get("key") in RUN_KEYS:
                    found[param["key"]] = str(param.get("value"))
                else:
                    kept.append(param)
            task = {**task, "parameters": kept}
        out.append(task)
    return out


class _Tee:
    """A text stream writing to two (a run's log file and the console)."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


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
        self._threads: dict[str, threading.Thread] = {}
        self._accepting = True
        self._preparer: Optional[threading.Thread] = None
        self._to_prepare: Any = None
        self.default_backend = default_backend   # background (API) runs: e.g. "ray"
        self.env_manager: Optional[str] = None   # recipes: "uv" or "local" (default: the env var)
        self.backend_options = backend_options or {}   # e.g. {"pyspark": {"master": "spark://..."}}
        self._backends: dict[str, Any] = {}   # one instance per name: warm pools live there
        # runtime.warm.WarmPools for the python backends (None: every python run starts cold)
        self.warm = warm
        self._host = None
        self._max_background = max_background   # unused: the capacity queue decides
        self._lock = threading.Lock()

    def backend(self, name: str) -> Any:
        """The backend registered as `name`, configured once and kept for later runs."""
        from ..backends import load_backend
        from ..dispatch import PYTHON_CPU, PYTHON_CUDA

        with self._lock:
            if name not in self._backends:
                options = dict(self.backend_options.get(name, {}))
                if name in (PYTHON_CPU, PYTHON_CUDA) and self.warm is not None:
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

    # -- deciding ------------------------------------------------------------------------------

    def prepare(self, caller: Caller, experiment_id: str, mode: str, *,
                run_tasks: Optional[list[dict[str, Any]]] = None,
                overrides: Optional[dict[str, Any]] = None,
                override_secrets: frozenset[str] = frozenset(),
                device: Optional[str] = None, backend: Optional[str] = None,
                require_model: bool = True, env_manager: Optional[str] = None,
                extra_pip: Optional[list[str]] = None) -> Prepared:
        """Everything decided before a run. `require_model=False` (for --explain and --dry-run)
        lets a score plan be shown before any Model exists."""
        from ..dispatch import plan as make_plan
        from ..engine import load_engine
        from ..resolver import CLI, ENGINE as ENGINE_LAYER, EXPERIMENT as EXPERIMENT_LAYER
        from ..resolver import MLINSTANCE as MLINSTANCE_LAYER, RUN, Layer, resolve

        mode = run_mode(mode)
        reg = self.registry
        experiment = reg.get_unmasked(EXPERIMENT, caller, experiment_id)
        instance = reg.get_unmasked(MLINSTANCE, caller, experiment["mlInstanceId"])
        engine_doc = reg.get_unmasked(ENGINE, caller, instance["engineId"])
        from ..recipes.registration import recipe_reference_for

        engine_ref = recipe_reference_for(engine_doc, reg.home) or engine_reference(engine_doc)
        engine_cls = load_engine(engine_ref)

        run_keys: dict[str, str] = {}
        defaults = ((engine_doc.get("artifacts") or {}).get("default") or {}).get(
            "defaultMLInstanceConfigs")
        layers = [
            Layer(ENGINE_LAYER, tasks=_split_run_keys(defaults, mode, run_keys)),
            Layer(MLINSTANCE_LAYER, tasks=_split_run_keys(instance.get("tasks"), mode, run_keys)),
            Layer(EXPERIMENT_LAYER, tasks=_split_run_keys(
                (experiment.get("template") or {}).get("tasks"), mode, run_keys)),
            Layer(RUN, tasks=_split_run_keys(run_tasks, mode, run_keys)),
        ]
        cli = dict(overrides or {})
        for key in RUN_KEYS:
            if key in cli:
                run_keys[key] = str(cli.pop(key))
        layers.append(Layer(CLI, overrides=cli, secret_keys=override_secrets))
        resolved = resolve(mode, engine_cls.params.get(mode), layers,
                           accepts_extra_keys=engine_cls.accepts_extra_keys)
        # Data sets from every layer, inside the data roots before anything is read or written.
        reg.check_run_data_sets(caller, resolved.values)
        plan = make_plan(engine_kind=engine_cls.kind, resources=resolved.resources,
                         host=self.host, device=device, backend=backend)
        model = model_choice = None
        if mode == SCORE:
            try:
                model, model_choice = self._model_for_scoring(
                    caller, experiment, run_keys.get("modelId"), run_keys.get("mlServiceId"))
            except ConfigError:
                if require_model:
                    raise
        spark = None
        if plan.backend == "pyspark":   # the planned Spark configuration, for --explain and the record
            spark = self.backend("pyspark").spark_config(resolved.resources, plan)
        recipe = getattr(engine_cls, "recipe", None)
        if recipe is not None:
            from ..recipes.runs import default_env_manager, engine_extra_pip

            env_manager = env_manager or self.env_manager or default_env_manager()
            if model is not None:   # refused before anything starts, not only by the worker
                from ..recipes.runs import check_recipe_model

                check_recipe_model(model)
            extra_pip = (*engine_extra_pip(engine_doc), *(extra_pip or ()))
        return Prepared(mode=mode, engine_ref=engine_ref, engine_doc=engine_doc, instance=instance,
                        experiment=experiment, resolved=resolved, plan=plan, model=model,
                        spark=spark, recipe=recipe, env_manager=env_manager or "uv",
                        extra_pip=tuple(extra_pip or ()), device=device,
                        model_choice=model_choice, **_run_limits(run_keys))

    def _model_for_scoring(self, caller: Caller, experiment: dict[str, Any],
                           model_id: Optional[str], service_id: Optional[str] = None
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Model a score run uses and why: `modelId` if given; else the published Model of
        its MLService (`mlServiceId`, or the latest published among the MLInstance's services);
        else the Experiment's latest DONE train run's Model."""
        from ..mlservices import ServiceDesk
        from ..schemas import MLSERVICE

        reg, scope = self.registry, caller.scope
        if model_id:
            try:
                model = reg.get(MODEL, caller, model_id)
            except NotFound:
                raise ConfigError(f"modelId {model_id!r} does not name a Model in this "
                                  "sandbox") from None
            return model, self._choice(caller, "modelId", model)
        desk = ServiceDesk(reg)
        if service_id:
            reg.get(MLSERVICE, caller, service_id)   # NotFound names it
            model = desk.published_model(scope, service_id)
            if model is not None:
                return model, self._choice(caller, "mlService", model, mlServiceId=service_id)
        else:
            found = desk.instance_published_model(scope, experiment["mlInstanceId"])
            if found is not None:
                service, model = found
                return model, self._choice(caller, "mlService", model, mlServiceId=service["id"])
        query = ListQuery(filters=(Filter("deleted", "==", False, "bool"),
                                   Filter("experimentId", "==", experiment["id"], "str")),
                          order=(("created", True),), limit=25)
        for model in reg.list(MODEL, caller, query).children:
            status = reg.store.get_run_status(scope, model.get("experimentRunId") or "")
            state = ((status or {}).get("status", {}).get("tasks") or [{}])[0].get("state")
            if state in (None, RunStatus.DONE.value):   # a Model posted for no local run counts
                return model, self._choice(caller, "experiment", model,
                                           experimentId=experiment["id"])
        raise ConfigError(
            f"Experiment {experiment['id']} ({experiment.get('name')}) has no trained Model to "
            "score with: run a train run first, publish one to an MLService, or give a modelId "
            "parameter")

    def _choice(self, caller: Caller, source: str, model: dict[str, Any],
                **extra: Any) -> dict[str, Any]:
        """What `run score` prints and the run records of the Model it uses."""
        from ..schemas import EXPERIMENT_RUN

        run_id = model.get("experimentRunId")
        run = self.registry.store.get(EXPERIMENT_RUN, caller.scope, run_id or "") or {}
        return {"source": source, "modelId": model["id"], "experimentRunId": run_id,
                "created": model.get("created"),
                "metrics": [{"name": m.get("name"), "value": m.get("value")}
                            for m in (run.get("result") or {}).get("metrics") or []], **extra}

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
            state = self._state(caller.scope, run["id"])
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
        if prepared.recipe is not None:   # the recipe's own Python, recorded with the rest
            prepared = self._recipe_environment(caller, run_id, prepared, log_path, echo)
        if prepared.timeframe is not None:   # the data set reader filters the input (worker env)
            prepared = self._with_timeframe(caller, prepared)
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
        outcome = self._attempts(caller, run, prepared, backend, control, spec, log_path,
                                 tasklogs, echo)
        return self._record(caller, run, prepared, outcome, log_path)

    def _attempts(self, caller: Caller, run: dict[str, Any], prepared: Prepared, backend: Any,
                  control: Any, spec: Any, log_path: Path, tasklogs: list[dict[str, str]],
                  echo: Optional[TextIO]) -> Any:
        """Queue the run for capacity, then run it (again, while it FAILS and retries are left)."""
        from ..backends import Outcome
        from ..capacity import check_fits, demand_for

        reg, scope, run_id = self.registry, caller.scope, run["id"]
        demand = demand_for(prepared.resolved.resources, prepared.plan, self.capacity,
                            prepared.device)
        try:
            check_fits(demand, self.capacity)
        except MLRuntimeError as exc:
            reg.transition_run(scope, run_id, RunStatus.FAILED, message=exc.detail)
            raise

        def note(message: str) -> None:   # the queue position, in the status and on the console
            reg.note_run(scope, run_id, message)
            if echo is not None:
                echo.write(f"Run {run_id}: {message}\n")
                echo.flush()

        grant = self.supervisor.acquire(control, demand, note)
        if grant is None:
            return Outcome(RunStatus.ABORTED, None, control.reason or "cancelled while queued",
                           "", None)
        plan = self._plan_for_grant(prepared.plan, grant)
        if plan.gpu_indices:   # the leased devices, by physical index and name, on the run
            reg.annotate_run(scope, run_id, {"devices": self._leased_devices(plan, grant)})
        # A queueing backend (ray) reports when the run really starts: until then it stays PENDING.
        queues = getattr(backend, "queues", False)
        attempts = 1 + prepared.retries
        for attempt in range(1, attempts + 1):
            if not queues:
                message = plan.reason if attempt == 1 else (
                    f"attempt {attempt} of {attempts}: {plan.reason}")
                reg.transition_run(scope, run_id, RunStatus.RUNNING, message=message,
                                   tasklogs=tasklogs)
            if control.stopping():
                return Outcome(RunStatus.ABORTED, None, control.reason, "", None)
            try:
                handle = backend.submit(spec=spec, plan=plan, log_path=log_path, echo=echo)
            except MLRuntimeError as exc:
                reg.transition_run(scope, run_id, RunStatus.FAILED, message=exc.detail)
                raise
            if queues:
                reg.annotate_run(scope, run_id, {"backend": handle.record()})
                handle.on_state = lambda state, message: reg.transition_run(
                    scope, run_id, state, message=message, tasklogs=tasklogs)
                handle.on_notice = lambda message: reg.note_run(scope, run_id, message)
            self.supervisor.attach_worker(control, handle)
            outcome = self._wait(handle, control, prepared.max_runtime_s)
            if (outcome.state is RunStatus.FAILED and attempt < attempts
                    and not control.stopping()):
                retry = (f"attempt {attempt} of {attempts} failed: {outcome.reason}; "
                         f"retrying in {RETRY_DELAY_S:g} s ({attempts - attempt} left)")
                reg.transition_run(scope, run_id, RunStatus.RETRY, message=retry)
                with open(log_path, "a") as fh:
                    fh.write(f"\n=== {retry} ===\n")
                if control.stop.wait(RETRY_DELAY_S) or control.stopping():
                    return dataclasses.replace(outcome, state=RunStatus.ABORTED,
                                               reason=control.reason)
                continue
            return outcome
        raise AssertionError("unreachable")

    @staticmethod
    def _wait(handle: Any, control: Any, max_runtime_s: Optional[float],
              elapsed_s: float = 0.0) -> Any:
        """The handle's outcome; a stop request (cancel, Ctrl-C, maxRuntime) cancels it first.
        `elapsed_s`: how long the run already ran (an adopted run)."""
        import time

        deadline = (None if not max_runtime_s
                    else time.monotonic() + max(0.0, max_runtime_s - elapsed_s))
        while not control.stopping():
            if deadline is not None and time.monotonic() >= deadline:
                control.request_stop(f"exceeded its maxRuntime of {max_runtime_s:g} s")
                break
            try:
                return handle.wait(timeout=0.1)
            except TimeoutError:
                continue
            except KeyboardInterrupt:   # a caller without a SignalGuard
                control.request_stop("interrupted (SIGINT)")
        handle.cancel()
        outcome = handle.wait()
        if outcome.state is RunStatus.ABORTED and control.reason:
            detail = f" ({outcome.reason})" if outcome.reason else ""
            outcome = dataclasses.replace(outcome, reason=control.reason + detail)
        return outcome

    def _leased_devices(self, plan: Any, grant: Any) -> list[dict[str, Any]]:
        """What the run holds, as `run gpus` and the run's document show it: the host's index
        (nvidia-smi's, PCI bus order), the name, the share and the worker's own cuda:N."""
        by_index = {d.index: d for d in self.host.cuda_devices}
        out = []
        for position, index in enumerate(plan.gpu_indices):
            device = by_index.get(index)
            out.append({"index": index, "name": device.name if device else None,
                        "memoryMB": device.memory_mb if device else None,
                        "share": float((grant.gpus or {}).get(index, 1.0)),
                        "workerDevice": f"cuda:{position}"})
        return out

    def _plan_for_grant(self, plan: Any, grant: Any) -> Any:
        """The plan with the GPUs the queue leased (by index) instead of the first ones."""
        if not plan.gpu_indices or tuple(plan.gpu_indices) == grant.gpu_indices:
            return plan
        devices = [d for d in self.host.cuda_devices if d.index in grant.gpus]
        if len(devices) != len(plan.gpu_indices):   # a fake capacity in tests: keep the plan
            return plan
        env = {**plan.env, "CUDA_VISIBLE_DEVICES": ",".join(d.cuda_visible_id for d in devices)}
        given = ", ".join(f"GPU {d.index}" for d in devices)
        return plan.model_copy(update={"gpu_indices": tuple(d.index for d in devices), "env": env,
                                       "reason": f"{plan.reason}; leased {given}"})

    def _record(self, caller: Caller, run: dict[str, Any], prepared: Prepared, outcome: Any,
                log_path: Path) -> dict[str, Any]:
        reg, scope, run_id = self.registry, caller.scope, run["id"]
        result = outcome.result or {}
        self._ingest_metrics(scope, run_id)
        summary: dict[str, Any] = {
            "runId": run_id, "experimentId": run["experimentId"], "mode": prepared.mode,
            "state": outcome.state.value, "metrics": result.get("metrics") or [],
            "modelId": None, "output": result.get("output"), "reason": outcome.reason,
            "durations_s": result.get("durations_s") or {}, "log": str(log_path)}
        if result.get("spark"):   # the effective Spark configuration the worker read back
            summary["spark"] = result["spark"]
        with reg.store.transaction():   # the Model and DONE together, or neither
            current = self._state(scope, run_id)
            if current is not None and current.is_terminal():
                # Another process recorded it (a cancel of an unwatched run): that record stands.
                summary.update(state=current.value,
                               reason=summary["reason"] or "recorded elsewhere")
                return summary
            return self._record_locked(caller, run, prepared, outcome, summary, current)

    def _state(self, scope: Any, run_id: str) -> Optional[RunStatus]:
        status = self.registry.store.get_run_status(scope, run_id)
        return RunStatus(status["status"]["tasks"][0]["state"]) if status else None

    def _record_locked(self, caller: Caller, run: dict[str, Any], prepared: Prepared,
                       outcome: Any, summary: dict[str, Any],
                       current: Optional[RunStatus]) -> dict[str, Any]:
        reg, scope, run_id = self.registry, caller.scope, run["id"]
        result = outcome.result or {}
        try:
            if outcome.state is RunStatus.DONE:
                if current is RunStatus.PENDING:   # a queueing backend's job seen only at its end
                    reg.transition_run(scope, run_id, RunStatus.RUNNING)
                if prepared.mode == TRAIN and result.get("model_dir"):
                    model = self._register_model(caller, run, prepared, Path(result["model_dir"]),
                                                 digest=result.get("model_digest"))
                    summary["modelId"] = model["id"]
                elif prepared.model is not None:
                    summary["modelId"] = prepared.model["id"]
                if summary["metrics"]:
                    self._record_insight(caller, run, prepared, summary)
        except MLRuntimeError as exc:
            summary.update(state=RunStatus.FAILED.value, reason=exc.detail)
            outcome_state = RunStatus.FAILED
        else:
            outcome_state = outcome.state
        message = {RunStatus.DONE: "Run completed"}.get(outcome_state, summary["reason"] or "")
        if result.get("warnings"):   # e.g. no validation metrics, and why
            summary["warnings"] = list(result["warnings"])
            if outcome_state is RunStatus.DONE:
                message = "Run completed with warnings: " + "; ".join(summary["warnings"])
        reg.transition_run(scope, run_id, outcome_state, message=message,
                           logs=outcome.log_tail if outcome_state is not RunStatus.DONE else None)
        reg.annotate_run(scope, run_id, {"result": {k: summary[k] for k in (
            "state", "metrics", "modelId", "output", "durations_s", "spark", "warnings")
            if k in summary}})
        if outcome_state is RunStatus.ABORTED:
            from ..supervisor import remove_partial_artifacts

            remove_partial_artifacts(reg.home.runs / run_id)
        return summary

    def _ingest_metrics(self, scope: Any, run_id: str) -> None:
        """The per-step metrics the worker left in the run folder, into the registry. A failure
        here is logged, not raised: the run's own outcome stands."""
        from ..run_views import RunViews

        try:
            RunViews(self.registry).ingest(scope, run_id)
        except Exception:
            log.warning("Run %s: its per-step metrics could not be recorded", run_id, exc_info=True)

    def _recipe_environment(self, caller: Caller, run_id: str, prepared: Prepared,
                            log_path: Path, echo: Optional[TextIO]) -> Prepared:
        """`prepared` with the recipe's environment's interpreter in its plan (built on first
        use; its build log goes to the run's log). A failed build fails the run before it starts."""
        import dataclasses

        from ..artifacts import recipes_dir
        from ..recipes.runs import environment_known, recipe_python

        scope = caller.scope
        recipe_dir = recipes_dir(self.registry.home.root) / prepared.recipe.sha256
        if prepared.env_manager != "local" and not environment_known(
                prepared.recipe, recipe_dir, list(prepared.extra_pip), self.registry.home.root):
            self.registry.note_run(scope, run_id, "Preparing the recipe's environment")
        try:
            # The build's lines go to the run's log and, as they come, to the console of a CLI run
            with open(log_path, "a", encoding="utf-8") as log:
                python = recipe_python(prepared.recipe, recipe_dir, home=self.registry.home.root,
                                       extra_pip=list(prepared.extra_pip),
                                       log=log if echo is None else _Tee(log, echo),
                                       env_manager=prepared.env_manager)
        except MLRuntimeError as exc:
            build_log = getattr(exc, "build_log", "")
            if build_log:
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(build_log if build_log.endswith("\n") else build_log + "\n")
            self.registry.transition_run(scope, run_id, RunStatus.FAILED, message=exc.detail,
                                         logs=build_log[-8000:] or None)
            raise
        if python is None:
            return prepared
        return dataclasses.replace(prepared,
                                   plan=prepared.plan.model_copy(update={"python": str(python)}))

    def _with_timeframe(self, caller: Caller, prepared: Prepared) -> Prepared:
        """The plan with MLRUNTIME_TIMEFRAME naming the run's input data set (as given and as
        its file URI) for runtime.datasets to filter."""
        from ..datasets import resolve_dataset
        from ..timeframe import Timeframe

        key = "scoringDataSetId" if prepared.mode == SCORE else "trainingDataSetId"
        value = prepared.resolved.values.get(key)
        names: list[str] = []
        if value:
            names.append(str(value).strip())
            try:
                ref = resolve_dataset(str(value), self.registry.dataset_catalog(caller.scope))
                names += [ref.uri, ref.id]
            except MLRuntimeError:
                pass   # the worker says why it cannot be read
        timeframe = Timeframe(prepared.timeframe["minutes"], prepared.timeframe["column"],
                              tuple(dict.fromkeys(names)))
        plan = prepared.plan.model_copy(update={"env": {**prepared.plan.env,
                                                         **timeframe.to_env()}})
        return dataclasses.replace(prepared, plan=plan)

    def _register_model(self, caller: Caller, run: dict[str, Any], prepared: Prepared,
                        model_dir: Path, digest: Optional[str] = None) -> dict[str, Any]:
        return self.registry.register_model(caller, {
            "name": prepared.instance.get("name"),
            "description": prepared.instance.get("description") or "",
            "experimentId": run["experimentId"], "experimentRunId": run["id"],
            "state": ["trained"]}, model_dir, digest=digest)

    def _record_insight(self, caller: Caller, run: dict[str, Any], prepared: Prepared,
                        summary: dict[str, Any]) -> None:
        self.registry.create(INSIGHT, caller, {
            "context": {"experimentId": run["experimentId"], "experimentRunId": run["id"],
                        "mlInstanceId": prepared.instance["id"],
                        "engineId": prepared.engine_doc["id"],
                        **({"modelId": summary["modelId"]} if summary["modelId"] else {})},
            "metrics": [{"name": m["name"], "value": m["value"],
                         "valueType": m.get("valueType", "double")} for m in summary["metrics"]]})

    # -- background runs (the server) ----------------------------------------------------------

    def admit(self, caller: Caller, experiment_id: str, body: Any) -> None:
        """Before the API writes a run: refuse one this host can never start (NeverFits, a 400)
        instead of queueing it forever. Other problems are left to the run, which FAILS with
        them as before."""
        from ..capacity import NeverFits, check_fits, demand_for
        from ..schemas import EXPERIMENT_RUN

        try:
            data = self.registry.validated(EXPERIMENT_RUN, body)
            prepared = self.prepare(caller, experiment_id, data["mode"],
                                    run_tasks=data.get("tasks"), backend=self.default_backend,
                                    require_model=False)
        except NeverFits:
            raise
        except Exception:  # the run records it
            return
        check_fits(demand_for(prepared.resolved.resources, prepared.plan, self.capacity,
                              prepared.device), self.capacity)

    def submit_background(self, caller: Caller, run: dict[str, Any]) -> None:
        """Called when the API creates a run: own it now (its place in the FIFO queue); one
        preparer thread then prepares runs in the order they came and queues each for capacity,
        so runs posted together start in the order they were posted. Each runs on its own
        thread once the queue lets it."""
        import queue

        if not self._accepting:
            self.registry.transition_run(caller.scope, run["id"], RunStatus.ABORTED,
                                         message="the server is stopping and accepts no runs")
            return
        self.supervisor.own(caller.scope, run["id"])
        with self._lock:
            if self._preparer is None or not self._preparer.is_alive():
                self._to_prepare = queue.Queue()
                self._preparer = threading.Thread(target=self._prepare_loop, name="run-preparer",
                                                  daemon=True)
                self._preparer.start()
            self._to_prepare.put((caller, run))
            self._threads = {k: t for k, t in self._threads.items() if t.is_alive()}

    def _prepare_loop(self) -> None:
        while True:
            item = self._to_prepare.get()
            if item is None:   # shutdown
                return
            caller, run = item
            try:
                self._prepare_one(caller, run)
            except Exception as exc:  # a bug must still end the run, not leave it PENDING
                log.exception("Preparing run %s failed", run["id"])
                self._fail_unless_ended(caller, run["id"], f"{type(exc).__name__}: {exc}")

    def _prepare_one(self, caller: Caller, run: dict[str, Any]) -> None:
        from ..capacity import check_fits, demand_for

        control = self.supervisor.control(run["id"])
        if control is None or control.stopping():   # cancelled before it was prepared
            self._fail_unless_ended(caller, run["id"], control.reason if control else "cancelled",
                                    RunStatus.ABORTED)
            return
        try:
            prepared = self.prepare(caller, run["experimentId"], run["mode"],
                                    run_tasks=run.get("tasks"), backend=self.default_backend)
        except MLRuntimeError as exc:
            self._fail_unless_ended(caller, run["id"], exc.detail)
            return
        demand = demand_for(prepared.resolved.resources, prepared.plan, self.capacity,
                            prepared.device)
        try:
            check_fits(demand, self.capacity)
            self.supervisor.enqueue(control, demand)   # its place in the queue, in posting order
        except MLRuntimeError:
            pass   # execute records why it can never start
        thread = threading.Thread(target=self._background, args=(caller, run, prepared),
                                  name=f"run-{run['id'][:8]}", daemon=True)
        with self._lock:
            self._threads[run["id"]] = thread
        thread.start()

    def _background(self, caller: Caller, run: dict[str, Any], prepared: Prepared) -> None:
        try:
            self.execute(caller, run, prepared)
        except Exception as exc:
            if not isinstance(exc, MLRuntimeError):
                log.exception("Run %s failed", run["id"])
            self._fail_unless_ended(caller, run["id"], getattr(exc, "detail", None)
                                    or f"{type(exc).__name__}: {exc}")
        finally:
            self.supervisor.release(run["id"])

    def _fail_unless_ended(self, caller: Caller, run_id: str, reason: str,
                           state_to: RunStatus = RunStatus.FAILED) -> None:
        from ..errors import Conflict

        state = self._state(caller.scope, run_id)
        if state is not None and not state.is_terminal():
            try:
                self.registry.transition_run(caller.scope, run_id, state_to, message=reason)
            except Conflict:
                pass
        self.supervisor.release(run_id)

    def cancel(self, caller: Caller, run_id: str, reason: Optional[str] = None) -> None:
        """Cancel a live run, whoever owns it (a Conflict once it ended)."""
        self.supervisor.request_cancel(caller.scope, run_id,
                                       reason or f"cancelled by {caller.user_id}")

    def wait_ended(self, caller: Caller, run_id: str, timeout_s: float) -> Optional[RunStatus]:
        import time

        deadline = time.monotonic() + timeout_s
        state = self._state(caller.scope, run_id)
        while state is not None and not state.is_terminal() and time.monotonic() < deadline:
            time.sleep(0.05)
            state = self._state(caller.scope, run_id)
        return state

    # -- runs nobody watched (reconciliation at start-up) ----------------------------------------

    def _caller_of(self, scope: Any, run: dict[str, Any]) -> Caller:
        return Caller(scope, (run.get("createdBy") or {}).get("userId") or "local")

    def _prepared_from_record(self, caller: Caller, run: dict[str, Any]) -> Prepared:
        """What recording a run needs, rebuilt from the registry (the process that prepared it
        is gone)."""
        reg = self.registry
        experiment = reg.get_unmasked(EXPERIMENT, caller, run["experimentId"])
        instance = reg.get_unmasked(MLINSTANCE, caller, experiment["mlInstanceId"])
        engine_doc = reg.get_unmasked(ENGINE, caller, instance["engineId"])
        runtime = run.get("runtime") or {}
        model = None
        if runtime.get("modelId"):
            try:
                model = reg.get(MODEL, caller, runtime["modelId"])
            except NotFound:
                model = None
        return Prepared(mode=run["mode"], engine_ref=runtime.get("engine") or "",
                        engine_doc=engine_doc, instance=instance, experiment=experiment,
                        resolved=None, plan=None, model=model)

    def record_unwatched(self, scope: Any, run_id: str, worker: Any = None,
                         outcome: Any = None) -> Optional[dict[str, Any]]:
        """Record a run whose worker ended while no process watched it, from its result file."""
        from ..backends import RESULT_FILE, Outcome, log_tail, read_result
        from ..schemas import EXPERIMENT_RUN
        from ..supervisor import SERVER_GONE

        reg = self.registry
        run = reg.store.get(EXPERIMENT_RUN, scope, run_id)
        if run is None:
            return None
        caller = self._caller_of(scope, run)
        run_dir = reg.home.runs / run_id
        log_path = run_dir / "worker.log"
        if outcome is None:
            result = read_result(run_dir / RESULT_FILE)
            tail = log_tail(log_path, 40)
            if result is not None and result.get("state") == RunStatus.DONE.value:
                outcome = Outcome(RunStatus.DONE, result, None, tail, None)
            elif result is not None and result.get("error"):
                error = result["error"]
                outcome = Outcome(RunStatus.FAILED, result,
                                  f"{error.get('type')}: {error.get('message')}", tail, None)
            else:
                outcome = Outcome(RunStatus.FAILED, result, SERVER_GONE, tail, None)
        try:
            prepared = self._prepared_from_record(caller, run)
        except MLRuntimeError as exc:   # its Experiment or MLInstance was deleted meanwhile
            self._fail_unless_ended(caller, run_id, f"{outcome.reason or 'ended'}; cannot record "
                                                    f"its result: {exc.detail}")
            return None
        try:
            return self._record(caller, run, prepared, outcome, log_path)
        finally:
            self.supervisor.release(run_id)

    def adopt(self, scope: Any, run_id: str, worker: dict[str, Any]) -> None:
        """Follow a live worker that a dead owner started; record its result when it ends."""
        from ..schemas import EXPERIMENT_RUN
        from ..supervisor import AdoptedWorker

        run = self.registry.store.get(EXPERIMENT_RUN, scope, run_id)
        if run is None:
            return
        control = self.supervisor.own(scope, run_id, phase="running")
        handle = AdoptedWorker(run_id, worker, self.registry.home.runs / run_id)
        control.handle = handle
        max_runtime_s = ((run.get("runtime") or {}).get("limits") or {}).get("maxRuntime")
        elapsed_s = _elapsed_s(self.registry.store.get_run_status(scope, run_id))

        def follow() -> None:
            try:
                outcome = self._wait(handle, control, max_runtime_s, elapsed_s)
                self.record_unwatched(scope, run_id, outcome=outcome)
            except Exception as exc:
                log.exception("Adopted run %s could not be recorded", run_id)
                self._fail_unless_ended(self._caller_of(scope, run), run_id,
                                        f"{type(exc).__name__}: {exc}")
            finally:
                self.supervisor.release(run_id)

        thread = threading.Thread(target=follow, name=f"adopted-{run_id[:8]}", daemon=True)
        with self._lock:
            self._threads[run_id] = thread
        thread.start()

    def resubmit(self, scope: Any, run_id: str) -> None:
        """Queue again a run that a dead server had accepted but not started."""
        from ..schemas import EXPERIMENT_RUN

        run = self.registry.get_unmasked(EXPERIMENT_RUN, Caller(scope, "local"), run_id)
        self.submit_background(self._caller_of(scope, run), run)

    def reconcile(self) -> Any:
        from ..supervisor import reconcile

        summary = reconcile(self, resubmit=self.kind == "server")
        log.info("%s", summary.summary())
        return summary

    # -- stopping -------------------------------------------------------------------------------

    def shutdown(self, grace_s: float = 0.0, abort: Optional[threading.Event] = None) -> None:
        """Stop: accept no run; abort queued runs; give running runs `grace_s` seconds to
        finish, then abort them; wait until every run of this process is recorded."""
        import time

        self._accepting = False
        if self._supervisor is None:
            self.close_warm()
            return
        sup = self._supervisor
        for control in sup.controls():
            if not control.granted.is_set():
                control.request_stop("the server stopped before the run started")
        with self._lock:
            preparer = self._preparer
        if preparer is not None:   # what it has yet to prepare ends ABORTED there
            self._to_prepare.put(None)
            preparer.join(30)
        deadline = time.monotonic() + grace_s
        while (time.monotonic() < deadline and self._live_threads()
               and not (abort is not None and abort.is_set())):
            time.sleep(0.05)
        for control in sup.controls():
            control.request_stop(
                f"the server stopped; the run did not finish within the {grace_s:g} s grace "
                "period")
        end = time.monotonic() + 30.0
        for thread in self._live_threads():
            thread.join(max(0.1, end - time.monotonic()))
        sup.close()
        self.close_warm()

    def close_warm(self) -> None:
        """Stop the warm parents this process started (runtime.warm); runs end cold after."""
        if self.warm is not None:
            self.warm.close()

    def _live_threads(self) -> list[threading.Thread]:
        with self._lock:
            return [t for t in self._threads.values() if t.is_alive()]


def _elapsed_s(status: Optional[dict[str, Any]]) -> float:
    """Seconds since a run's status says it started (0 when it does not say)."""
    from datetime import datetime, timezone

    started = ((status or {}).get("status", {}).get("tasks") or [{}])[0].get("started")
    if not started:
        return 0.0
    then = datetime.strptime(started, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - then).total_seconds())
