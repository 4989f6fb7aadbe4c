"""Running an experiment run: resolve its configuration, plan it, execute it, record the results.

One path for every face: `run train|score|fp` calls it in the foreground, the server calls it in
the background for `POST /experiments/{id}/runs`. Each run's resolved configuration (with the layer
that set each key) and its plan are stored with the run; a DONE train run registers a Model, and
evaluation metrics become Insights.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

from .errors import ConfigError, MLRuntimeError, NotFound
from .listing import Filter, ListQuery
from .schemas import ENGINE, EXPERIMENT, INSIGHT, MLINSTANCE, MODEL, RunStatus
from .service import Caller, Registry
from .tasks import SCORE, TRAIN, run_mode

log = logging.getLogger("runtime.execution")

# Keys of the run itself, not of the engine: taken out of the layers before resolution.
RUN_KEYS = ("modelId",)


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

    def record(self) -> dict[str, Any]:
        record = {"engine": self.engine_ref, "resolved": self.resolved.to_record(),
                  "plan": self.plan.to_record(),
                  "modelId": self.model["id"] if self.model else None}
        if self.spark is not None:
            record["spark"] = self.spark.to_record()
        return record

    def explain(self) -> str:
        lines = [f"{self.mode} run of MLInstance {self.instance['id']} ({self.instance.get('name')}),"
                 f" engine {self.engine_ref}, experiment {self.experiment['id']}",
                 "", self.resolved.explain(), "", self.describe_plan()]
        return "\n".join(lines)

    def describe_plan(self) -> str:
        from .dispatch import describe

        text = describe(self.plan)
        if self.spark is not None:
            text += "\n" + self.spark.describe()
        if self.model:
            text += f"\nmodel    {self.model['id']} (run {self.model.get('experimentRunId')})"
        elif self.mode == SCORE:
            text += "\nmodel    none yet: train this MLInstance first, or give --model ID"
        return text


def engine_reference(engine_doc: dict[str, Any]) -> str:
    """The engine plugin an Engine runs: `artifacts.default.image.location` (a name or a path)."""
    image = ((engine_doc.get("artifacts") or {}).get("default") or {}).get("image") or {}
    location = image.get("location")
    if not location:
        from .engine import installed_engines

        raise ConfigError(
            f"Engine {engine_doc['id']} ({engine_doc.get('name')}) names no engine plugin: set "
            "artifacts.default.image.location to an installed engine or a 'module:Class' path "
            f"(installed: {', '.join(sorted(installed_engines())) or 'none'})")
    return location


def _split_run_keys(tasks: Optional[list[dict[str, Any]]], mode: str,
                    found: dict[str, str]) -> Optional[list[dict[str, Any]]]:
    """The task list without RUN_KEYS for `mode`; their values land in `found` (later wins)."""
    if not tasks:
        return tasks
    from .tasks import canonical_task

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


class RunExecutor:
    """Resolves, dispatches and records runs of one registry."""

    def __init__(self, registry: Registry, *, max_background: int = 2,
                 default_backend: Optional[str] = None,
                 backend_options: Optional[dict[str, dict[str, Any]]] = None) -> None:
        self.registry = registry
        self.default_backend = default_backend   # background (API) runs: e.g. "ray"
        self.backend_options = backend_options or {}   # e.g. {"pyspark": {"master": "spark://..."}}
        self._backends: dict[str, Any] = {}   # one instance per name: warm pools live there
        self._host = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._max_background = max_background
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def backend(self, name: str) -> Any:
        """The backend registered as `name`, configured once and kept for later runs."""
        from .backends import load_backend

        with self._lock:
            if name not in self._backends:
                self._backends[name] = load_backend(name, **self.backend_options.get(name, {}))
            return self._backends[name]

    @property
    def host(self):
        if self._host is None:
            from .dispatch import detect_host

            self._host = detect_host()
        return self._host

    # -- deciding ------------------------------------------------------------------------------

    def prepare(self, caller: Caller, experiment_id: str, mode: str, *,
                run_tasks: Optional[list[dict[str, Any]]] = None,
                overrides: Optional[dict[str, Any]] = None,
                override_secrets: frozenset[str] = frozenset(),
                device: Optional[str] = None, backend: Optional[str] = None,
                require_model: bool = True) -> Prepared:
        """Everything decided before a run. `require_model=False` (for --explain and --dry-run)
        lets a score plan be shown before any Model exists."""
        from .dispatch import plan as make_plan
        from .engine import load_engine
        from .resolver import CLI, ENGINE as ENGINE_LAYER, EXPERIMENT as EXPERIMENT_LAYER
        from .resolver import MLINSTANCE as MLINSTANCE_LAYER, RUN, Layer, resolve

        mode = run_mode(mode)
        reg = self.registry
        experiment = reg.get_unmasked(EXPERIMENT, caller, experiment_id)
        instance = reg.get_unmasked(MLINSTANCE, caller, experiment["mlInstanceId"])
        engine_doc = reg.get_unmasked(ENGINE, caller, instance["engineId"])
        engine_ref = engine_reference(engine_doc)
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
        model = None
        if mode == SCORE:
            try:
                model = self._model_for_scoring(caller, experiment, run_keys.get("modelId"))
            except ConfigError:
                if require_model:
                    raise
        spark = None
        if plan.backend == "pyspark":   # the planned Spark configuration, for --explain and the record
            spark = self.backend("pyspark").spark_config(resolved.resources, plan)
        return Prepared(mode=mode, engine_ref=engine_ref, engine_doc=engine_doc, instance=instance,
                        experiment=experiment, resolved=resolved, plan=plan, model=model,
                        spark=spark)

    def _model_for_scoring(self, caller: Caller, experiment: dict[str, Any],
                           model_id: Optional[str]) -> dict[str, Any]:
        if model_id:
            try:
                return self.registry.get(MODEL, caller, model_id)
            except NotFound:
                raise ConfigError(f"modelId {model_id!r} does not name a Model in this "
                                  "sandbox") from None
        query = ListQuery(filters=(Filter("deleted", "==", False, "bool"),
                                   Filter("experimentId", "==", experiment["id"], "str")),
                          order=(("created", True),), limit=1)
        page = self.registry.list(MODEL, caller, query)
        if not page.children:
            raise ConfigError(
                f"Experiment {experiment['id']} ({experiment.get('name')}) has no trained Model to "
                "score with: run a train run first, or give a modelId parameter")
        return page.children[0]

    # -- executing -----------------------------------------------------------------------------

    def execute(self, caller: Caller, run: dict[str, Any], prepared: Prepared, *,
                echo: Optional[TextIO] = None, backend: Any = None) -> dict[str, Any]:
        """Runs a created (PENDING) run to its end; returns the summary the CLI prints.

        `backend` is an already configured Backend (e.g. a RayBackend with an address); by
        default the plan's backend is loaded by name."""
        from .backends import WorkerSpec

        reg, scope, run_id = self.registry, caller.scope, run["id"]
        run_dir = reg.home.runs / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path = run_dir / "worker.log"
        reg.annotate_run(scope, run_id, {"runtime": prepared.record()})
        model_dir = None
        if prepared.model is not None:
            model_dir = reg.model_artifact_dir(caller, prepared.model["id"])
        spec = WorkerSpec(run_id=run_id, engine=prepared.engine_ref, mode=prepared.mode,
                          values=prepared.resolved.values, device=prepared.plan.device,
                          threads=prepared.plan.threads, run_dir=run_dir, model_dir=model_dir,
                          resources=prepared.resolved.resources,
                          mlinstance_id=prepared.instance["id"],
                          secret_keys=sorted(prepared.resolved.secret_keys))
        tasklogs = [{"name": "worker.log",
                     "url": f"/data/sensei/experiments/{run['experimentId']}/runs/{run_id}/logs/"
                            "worker.log"}]
        if backend is None:
            backend = self.backend(prepared.plan.backend)
        # A queueing backend (ray) reports when the run really starts: until then it stays PENDING.
        queues = getattr(backend, "queues", False)
        if not queues:
            reg.transition_run(scope, run_id, RunStatus.RUNNING,
                               message=prepared.plan.reason, tasklogs=tasklogs)
        try:
            handle = backend.submit(spec=spec, plan=prepared.plan, log_path=log_path, echo=echo)
        except MLRuntimeError as exc:
            reg.transition_run(scope, run_id, RunStatus.FAILED, message=exc.detail)
            raise
        if queues:
            reg.annotate_run(scope, run_id, {"backend": handle.record()})
            handle.on_state = lambda state, message: reg.transition_run(
                scope, run_id, state, message=message, tasklogs=tasklogs)
            handle.on_notice = lambda message: reg.note_run(scope, run_id, message)
        with self._lock:
            self._handles[run_id] = handle
        try:
            outcome = handle.wait()
        except KeyboardInterrupt:
            handle.cancel()
            outcome = handle.wait()
        finally:
            with self._lock:
                self._handles.pop(run_id, None)
        return self._record(caller, run, prepared, outcome, log_path)

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
        try:
            if outcome.state is RunStatus.DONE:
                if prepared.mode == TRAIN and result.get("model_dir"):
                    model = self._register_model(caller, run, prepared, Path(result["model_dir"]))
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
        reg.transition_run(scope, run_id, outcome_state, message=message,
                           logs=outcome.log_tail if outcome_state is not RunStatus.DONE else None)
        reg.annotate_run(scope, run_id, {"result": {k: summary[k] for k in (
            "state", "metrics", "modelId", "output", "durations_s", "spark") if k in summary}})
        return summary

    def _ingest_metrics(self, scope: Any, run_id: str) -> None:
        """The per-step metrics the worker left in the run folder, into the registry. A failure
        here is logged, not raised: the run's own outcome stands."""
        from .run_views import RunViews

        try:
            RunViews(self.registry).ingest(scope, run_id)
        except Exception:
            log.warning("Run %s: its per-step metrics could not be recorded", run_id, exc_info=True)

    def _register_model(self, caller: Caller, run: dict[str, Any], prepared: Prepared,
                        model_dir: Path) -> dict[str, Any]:
        return self.registry.register_model(caller, {
            "name": prepared.instance.get("name"),
            "description": prepared.instance.get("description") or "",
            "experimentId": run["experimentId"], "experimentRunId": run["id"],
            "state": ["trained"]}, model_dir)

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

    def submit_background(self, caller: Caller, run: dict[str, Any]) -> None:
        """Called when the API creates a run: prepare and execute it on a worker thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._max_background, thread_name_prefix="run")
        self._pool.submit(self._background, caller, run)

    def _background(self, caller: Caller, run: dict[str, Any]) -> None:
        try:
            prepared = self.prepare(caller, run["experimentId"], run["mode"],
                                    run_tasks=run.get("tasks"), backend=self.default_backend)
        except MLRuntimeError as exc:
            self.registry.transition_run(caller.scope, run["id"], RunStatus.FAILED,
                                         message=exc.detail)
            return
        except Exception as exc:  # a bug must still end the run, not leave it PENDING
            log.exception("Preparing run %s failed", run["id"])
            self.registry.transition_run(caller.scope, run["id"], RunStatus.FAILED,
                                         message=f"{type(exc).__name__}: {exc}")
            return
        try:
            self.execute(caller, run, prepared)
        except Exception as exc:
            log.exception("Run %s failed", run["id"])
            status = self.registry.store.get_run_status(caller.scope, run["id"])
            state = RunStatus(status["status"]["tasks"][0]["state"]) if status else None
            if state is not None and not state.is_terminal():
                self.registry.transition_run(caller.scope, run["id"], RunStatus.FAILED,
                                             message=f"{type(exc).__name__}: {exc}")

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            handle = self._handles.get(run_id)
        if handle is None:
            return False
        handle.cancel()
        return True

    def shutdown(self) -> None:
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            handle.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
