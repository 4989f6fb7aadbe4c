"""Preparing a run: the layers (Engine defaults, MLInstance, Experiment, run, CLI) resolved into a
typed `Prepared`: its configuration with each key's source, its plan, the Model a score run uses,
its limits. Nothing runs here; `--explain` and `--dry-run` print what it decided. What only the
run's start may do (build a recipe's environment, pin the timeframe's data set) is `starting`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from ..errors import ConfigError, MLRuntimeError, NotFound
from ..listing import Filter, ListQuery
from ..schemas import ENGINE, EXPERIMENT, MLINSTANCE, MODEL, RunStatus, engine_image
from ..registry import Caller, Registry
from ..tasks import SCORE, run_mode

# Keys of the run itself, not of the engine: taken out of the layers before resolution.
# `maxRuntime` (seconds) aborts a run that runs longer; `retries` re-runs a FAILED run N times;
# `mlServiceId` names the MLService whose published Model a score run uses; `timeframe` (minutes)
# and `timeframeColumn` limit the input data set to its last minutes (runtime.timeframe).
RUN_KEYS = ("modelId", "maxRuntime", "retries", "mlServiceId", "timeframe", "timeframeColumn")

# The description of the Experiment `run sweep` makes for its trials (runtime.sweep): a plain run
# of the MLInstance never uses that Experiment.
SWEEP_EXPERIMENT_DESCRIPTION = "A parameter sweep started by `run sweep`"


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
    resolved_record: Optional[dict[str, Any]] = None   # resolved.to_record(), made as it resolves

    def record(self) -> dict[str, Any]:
        resolved = (self.resolved_record if self.resolved_record is not None
                    else self.resolved.to_record())
        record = {"engine": self.engine_ref, "resolved": resolved,
                  "plan": self.plan.to_record(),
                  "modelId": self.model["id"] if self.model else None}
        if self.model_choice is not None:
            record["modelChoice"] = self.model_choice
        if self.timeframe is not None:
            record["timeframe"] = self.timeframe
        if self.max_runtime_s is not None or self.retries:
            record["limits"] = {"maxRuntime": self.max_runtime_s, "retries": self.retries}
        if self.recipe is not None:   # which artifact this run ran
            record["artifact"] = {"sha256": self.recipe.sha256, "kind": self.recipe.kind,
                                  "version": engine_image(self.engine_doc).artifactVersion,
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
            from ..recipe_kinds import kind_named

            kind = kind_named(self.recipe.kind)
            where = ("this environment (--env-manager local)" if self.env_manager == "local" else
                     f"this environment (a {kind.title} recipe without requirements)"
                     if kind.runs_here_when_bare and not self.recipe.requirements
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
    location = engine_image(engine_doc).location
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


class Preparer:
    """Prepares runs of one registry. `host()` is the machine the plan is made for; `backend(name)`
    the configured backend (the pyspark one plans the Spark configuration)."""

    def __init__(self, registry: Registry, *, host: Callable[[], Any],
                 backend: Callable[[str], Any], env_manager: Callable[[], Optional[str]]) -> None:
        self.registry = registry
        self._host = host
        self._backend = backend
        self._env_manager = env_manager

    def prepare(self, caller: Caller, experiment_id: str, mode: str, *,
                run_tasks: Optional[list[dict[str, Any]]] = None,
                overrides: Optional[dict[str, Any]] = None,
                override_secrets: frozenset[str] = frozenset(),
                device: Optional[str] = None, backend: Optional[str] = None,
                require_model: bool = True, env_manager: Optional[str] = None,
                extra_pip: Optional[list[str]] = None) -> Prepared:
        """Everything decided before a run. `require_model=False` (for --explain and --dry-run)
        lets a score plan be shown before any Model exists."""
        from ..backends import plans_more
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
                         host=self._host(), device=device, backend=backend)
        model = model_choice = None
        if mode == SCORE:
            try:
                model, model_choice = self.model_for_scoring(
                    caller, experiment, run_keys.get("modelId"), run_keys.get("mlServiceId"))
            except ConfigError:
                if require_model:
                    raise
        spark = None   # what the backend plans beyond the dispatcher (pyspark: Spark settings)
        if plans_more(plan.backend):
            spark = self._backend(plan.backend).plan_more(resolved.resources, plan)
        recipe = getattr(engine_cls, "recipe", None)
        if recipe is not None:
            from ..recipes.runs import default_env_manager, engine_extra_pip

            env_manager = env_manager or self._env_manager() or default_env_manager()
            if model is not None:   # refused before anything starts, not only by the worker
                from ..recipes.runs import check_recipe_model

                check_recipe_model(model)
            extra_pip = (*engine_extra_pip(engine_doc), *(extra_pip or ()))
        return Prepared(mode=mode, engine_ref=engine_ref, engine_doc=engine_doc, instance=instance,
                        experiment=experiment, resolved=resolved, plan=plan, model=model,
                        spark=spark, recipe=recipe, env_manager=env_manager or "uv",
                        extra_pip=tuple(extra_pip or ()), device=device,
                        model_choice=model_choice, resolved_record=resolved.to_record(),
                        **_run_limits(run_keys))

    def model_for_scoring(self, caller: Caller, experiment: dict[str, Any],
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
            state = reg.run_state(scope, model.get("experimentRunId") or "")
            if state in (None, RunStatus.DONE):   # a Model posted for no local run counts
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
        run = self.registry.find(EXPERIMENT_RUN, caller.scope, run_id or "", deleted=True) or {}
        return {"source": source, "modelId": model["id"], "experimentRunId": run_id,
                "created": model.get("created"),
                "metrics": [{"name": m.get("name"), "value": m.get("value")}
                            for m in (run.get("result") or {}).get("metrics") or []], **extra}

    # -- at the run's start --------------------------------------------------------------------

    def starting(self, caller: Caller, run_id: str, prepared: Prepared, log_path: Path,
                 echo: Optional[TextIO]) -> Prepared:
        """`prepared` as the run starts: a recipe's environment built (its interpreter in the
        plan), the timeframe's input data set named for the reader."""
        if prepared.recipe is not None:
            prepared = self._recipe_environment(caller, run_id, prepared, log_path, echo)
        if prepared.timeframe is not None:
            prepared = self._with_timeframe(caller, prepared)
        return prepared

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

    # -- after the fact -------------------------------------------------------------------------

    def from_record(self, caller: Caller, run: dict[str, Any]) -> Prepared:
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
