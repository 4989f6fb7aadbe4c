"""What a run command names, registered on the fly: the service layer's rules for `run train|score|
fp|submit|sweep TARGET [--engine PATH] [--experiment ID]` (the CLI only passes its arguments).

TARGET is an MLInstance id or a JSON/YAML file in the API's shape, whose `engineId` may name an
installed engine plugin; with `--engine PATH` it is the recipe's config (a tasks array), an
MLInstance file or an MLInstance id of that recipe's Engine. A file run again reuses its
MLInstance, updated when the file changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from .documents import load_document
from .errors import ConfigError, NotFound
from .schemas import ENGINE, EXPERIMENT, MLINSTANCE
from .registry import Caller, Registry


@dataclass(frozen=True)
class RunTarget:
    """The MLInstance and the Experiment a run command's arguments name."""

    instance: dict[str, Any]
    experiment: dict[str, Any]


def ensure_engine(registry: Registry, caller: Caller, ref: str) -> dict[str, Any]:
    """The Engine that runs the installed plugin `ref` (registered on first use)."""
    from .engine import load_engine

    engine_cls = load_engine(ref)
    found = registry.newest(ENGINE, caller, ("artifacts.default.image.location", ref))
    if found:
        return found
    return registry.create_engine(caller, {
        "name": ref, "type": "PySpark" if engine_cls.kind == "pyspark" else "Python",
        "description": engine_cls.description or f"Engine plugin {ref}",
        "artifacts": {"default": {"image": {"location": ref, "name": ref,
                                            "executionType": engine_cls.kind,
                                            "packagingType": "egg"}}}})


def resolve_target(registry: Registry, caller: Caller, target: str) -> dict[str, Any]:
    """An MLInstance from its id, or from a JSON/YAML file in the API's shape (registered on the
    fly: an `engineId` may name an installed engine plugin; a file run again reuses its
    MLInstance, updated when the file changed)."""
    path = Path(target)
    if not (path.suffix.lower() in (".json", ".yaml", ".yml") or path.exists()):
        try:
            return registry.get(MLINSTANCE, caller, target)
        except NotFound:
            raise NotFound(f"{target!r} is neither an MLInstance id in sandbox "
                           f"{caller.scope.sandbox!r} nor a JSON/YAML file") from None
    doc = load_document(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected an MLInstance object (name, engineId, tasks)")
    engine_ref = doc.get("engineId")
    if not engine_ref:
        raise ConfigError(f"{path}: engineId is required (an Engine id or an installed engine "
                          "plugin such as retail-sales)")
    engine = registry.find(ENGINE, caller.scope, engine_ref)
    if engine is None:
        engine = ensure_engine(registry, caller, engine_ref)
    return upsert_instance(registry, caller, {**doc, "engineId": engine["id"]})


def recipe_engine(registry: Registry, caller: Caller, path: str | Path, *,
                  env_manager: Optional[str] = None, extra_pip: Iterable[str] = (),
                  log: Any = None) -> dict[str, Any]:
    """The Engine of a recipe on disk (`run ... --engine PATH`): the one already holding this
    content; else, for an edited recipe, the next `artifactVersion` of the recipe Engine of
    the same name in this sandbox; else a new Engine. With `env_manager`, the recipe's
    environment is built first (its lines to `log`): a recipe whose build fails registers
    nothing."""
    from .artifacts import store_artifact

    location = str(Path(path).expanduser().resolve())
    info = store_artifact(location, None, registry.home)
    if env_manager:
        from .recipes.runs import recipe_python

        recipe_python(info.recipe, info.dir, home=registry.home.root, extra_pip=list(extra_pip),
                      log=log, env_manager=env_manager)

    same = registry.newest(ENGINE, caller, ("artifacts.default.image.sha256", info.sha256))
    if same:
        from .artifact_store import location_for

        # Registered again: also where every server reads recipes, if it was not yet (an Engine
        # written before MLRUNTIME_ARTIFACTS named a bucket).
        location_for(registry.home).put_recipe(info.sha256, info.dir, info.archive)
        return same
    body = {"name": info.recipe.name, "description": f"Recipe {info.recipe.name} from {location}",
            "artifacts": {"default": {"image": {"location": location}}}}
    earlier = registry.newest(ENGINE, caller, ("name", info.recipe.name),
                              ("artifacts.default.image.recipeKind", info.recipe.kind))
    if earlier is None:
        return registry.create_engine(caller, body)
    kept = {k: earlier[k] for k in ("description", "type", "mlLibrary", "tags")
            if earlier.get(k) is not None}
    return registry.replace_engine(caller, earlier["id"], {**kept, **body})


def resolve_recipe_target(registry: Registry, caller: Caller, target: str, engine_path: str,
                          **environment: Any) -> dict[str, Any]:
    """The MLInstance for `--engine PATH`: TARGET is the recipe's tasks-array config file, an
    MLInstance file (its engineId is ignored), or an MLInstance id of that Engine. `environment`
    (env_manager, extra_pip, log) builds the recipe's environment before anything is registered."""
    engine = recipe_engine(registry, caller, engine_path, **environment)
    path = Path(target)
    if not path.exists():
        instance = registry.get(MLINSTANCE, caller, target)
        if instance.get("engineId") != engine["id"]:
            raise ConfigError(f"MLInstance {target} runs Engine {instance.get('engineId')}, not "
                              f"the recipe at {engine_path} (Engine {engine['id']})")
        return instance
    doc = load_document(path)
    if isinstance(doc, list):
        doc = {"name": f"{engine['name']} ({path.name})", "tasks": doc}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected the recipe's config (a JSON array of tasks) or an "
                          "MLInstance object")
    doc = {**doc, "engineId": engine["id"]}
    doc.setdefault("name", f"{engine['name']} ({path.name})")
    return upsert_instance(registry, caller, doc)


def upsert_instance(registry: Registry, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    """The MLInstance of this name and Engine, created or updated to `body`'s tasks."""
    existing = registry.newest(MLINSTANCE, caller, ("name", body.get("name")),
                               ("engineId", body["engineId"]))
    if existing is None:
        return registry.create(MLINSTANCE, caller, body)
    current = registry.get_unmasked(MLINSTANCE, caller, existing["id"])
    if current.get("tasks") != registry.validated(MLINSTANCE, body).get("tasks"):
        return registry.replace(MLINSTANCE, caller, existing["id"], body)
    return current


def resolve_experiment(registry: Registry, caller: Caller, instance: dict[str, Any],
                       experiment_id: Optional[str]) -> dict[str, Any]:
    """The Experiment given (it must be of this MLInstance), else the MLInstance's default one
    (created on first use)."""
    if experiment_id:
        experiment = registry.get(EXPERIMENT, caller, experiment_id)
        if experiment.get("mlInstanceId") != instance["id"]:
            raise ConfigError(f"Experiment {experiment_id} belongs to MLInstance "
                              f"{experiment.get('mlInstanceId')}, not {instance['id']}")
        return experiment
    from .runs import default_experiment

    # Not a sweep's Experiment nor an MLService's: their Models are trials and scheduled runs.
    found = default_experiment(registry, caller, instance)
    return found or registry.create(EXPERIMENT, caller, {
        "name": f"{instance.get('name')}", "mlInstanceId": instance["id"],
        "description": "Created by the run command"})


def sweep_experiment(registry: Registry, caller: Caller, instance: dict[str, Any],
                     experiment_id: Optional[str]) -> dict[str, Any]:
    """The Experiment a sweep's trials go to: the one given, else a new one of its own (never
    the MLInstance's default: trials are not the default Model)."""
    if experiment_id:
        return resolve_experiment(registry, caller, instance, experiment_id)
    from .sweep import SWEEP_EXPERIMENT_DESCRIPTION

    return registry.create(EXPERIMENT, caller, {
        "name": f"sweep of {instance.get('name')}", "mlInstanceId": instance["id"],
        "description": SWEEP_EXPERIMENT_DESCRIPTION})


def resolve_run_target(registry: Registry, caller: Caller, target: str, *,
                       engine_path: Optional[str] = None, experiment_id: Optional[str] = None,
                       **environment: Any) -> RunTarget:
    """The MLInstance and Experiment of a run command (`environment`: see resolve_recipe_target,
    for `engine_path` only)."""
    if engine_path:
        instance = resolve_recipe_target(registry, caller, target, engine_path, **environment)
    else:
        instance = resolve_target(registry, caller, target)
    return RunTarget(instance, resolve_experiment(registry, caller, instance, experiment_id))


def ray_backend_options(home_root: Path, *, address: Optional[str], working_dir: Optional[str],
                        upload_working_dir: bool = True, shared_artifacts: bool = False,
                        pip: Optional[list[str]] = None, notify: Any = None) -> dict[str, Any]:
    """The options of the `ray` backend for `run submit` (RunExecutor's backend_options["ray"]):
    the cluster's Jobs API (`address` or $RAY_ADDRESS), the working folder uploaded with the job
    (never this runtime's home inside it), and how the run's artifacts come back."""
    import os

    from .backends.ray import WORKING_DIR_EXCLUDES

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("No Ray cluster given: pass --address http://HOST:8265 or set RAY_ADDRESS")
    folder = Path(working_dir or Path.cwd()).resolve() if upload_working_dir else None
    excludes = list(WORKING_DIR_EXCLUDES)
    if folder is not None and home_root.is_relative_to(folder):
        excludes.append(home_root.relative_to(folder).as_posix())   # never the home
    return {"address": address, "artifacts": "shared" if shared_artifacts else "return",
            "working_dir": folder, "excludes": excludes, "pip": list(pip or []), "notify": notify}
