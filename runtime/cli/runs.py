"""`run train|score|fp TARGET`: one run in the foreground, on the same path the server uses."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..documents import load_document
from ..errors import ConfigError, NotFound
from ..home import resolve_home
from ..numbers import readable
from ..textfit import fit_text
from ..schemas import ENGINE, EXPERIMENT, MLINSTANCE, MODEL
from ..service import Caller, Registry
from .progress import RunConsole

_MODES = {"train": "train", "score": "score", "fp": "featurePipeline"}


def ensure_engine(registry: Registry, caller: Caller, ref: str) -> dict[str, Any]:
    """The Engine that runs the installed plugin `ref` (registered on first use)."""
    from ..engine import load_engine

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


def report_width() -> int:
    """The terminal's width (or $COLUMNS); 100 when the output is not a terminal."""
    import shutil

    return max(40, shutil.get_terminal_size((100, 24)).columns)


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
    engine = registry.store.get(ENGINE, caller.scope, engine_ref)
    if engine is None or engine.get("deleted"):
        engine = ensure_engine(registry, caller, engine_ref)
    return _upsert_instance(registry, caller, {**doc, "engineId": engine["id"]})


def resolve_recipe_target(registry: Registry, caller: Caller, target: str, engine_path: str,
                          **environment: Any) -> dict[str, Any]:
    """The MLInstance for `--engine PATH`: TARGET is the recipe's tasks-array config file, an
    MLInstance file (its engineId is ignored), or an MLInstance id of that Engine. `environment`
    (env_manager, extra_pip, log) builds the recipe's environment before anything is registered."""
    engine = registry.recipe_engine(caller, engine_path, **environment)
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
    return _upsert_instance(registry, caller, doc)


def _upsert_instance(registry: Registry, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
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
                       experiment_id: str | None) -> dict[str, Any]:
    if experiment_id:
        experiment = registry.get(EXPERIMENT, caller, experiment_id)
        if experiment.get("mlInstanceId") != instance["id"]:
            raise ConfigError(f"Experiment {experiment_id} belongs to MLInstance "
                              f"{experiment.get('mlInstanceId')}, not {instance['id']}")
        return experiment
    from ..runs import default_experiment

    # Not a sweep's Experiment nor an MLService's: their Models are trials and scheduled runs.
    found = default_experiment(registry, caller, instance)
    return found or registry.create(EXPERIMENT, caller, {
        "name": f"{instance.get('name')}", "mlInstanceId": instance["id"],
        "description": "Created by the run command"})


def _overrides(args: argparse.Namespace, mode: str) -> tuple[dict[str, Any], frozenset[str]]:
    from ..params_file import parse_overrides, read_params_file

    values: dict[str, Any] = {}
    secrets: frozenset[str] = frozenset()
    if args.params:
        loaded = read_params_file(args.params, task=mode)
        values.update(loaded.values)
        secrets = loaded.secret_keys
    values.update(parse_overrides(args.param or []))
    if args.model:
        values["modelId"] = args.model
    return values, secrets


def _summary_text(summary: dict[str, Any], seconds: float, registry: Registry,
                  caller: Caller) -> str:
    lines = [f"Run {summary['runId']} {summary['state']} in {seconds:.1f} s "
             f"({summary['mode']}, experiment {summary['experimentId']})"]
    if summary.get("reason") and summary["state"] != "DONE":
        lines.append(f"  reason:  {summary['reason']}")
    for stage, secs in (summary.get("durations_s") or {}).items():
        lines.append(f"  {stage + ':':18s}{secs:.2f} s")
    if summary["metrics"]:
        shown = ", ".join(f"{m['name']} {readable(m['value'])}" for m in summary["metrics"])
        lines.append(f"  metrics: {shown}")
    for warning in summary.get("warnings") or ():
        lines.append(f"  warning: {warning}")
    if summary.get("modelId"):
        where = registry.get(MODEL, caller, summary["modelId"]).get("modelArtifactUri", "")
        lines.append(f"  model:   {summary['modelId']} ({where})")
    if summary.get("output"):
        lines.append(f"  output:  {summary['output']}")
    lines.append(f"  log:     {summary['log']}")
    return "\n".join(lines)


def prepare_run(registry: Registry, caller: Caller, args: argparse.Namespace, mode: str,
                executor: Any, **prepare: Any) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The MLInstance, the Experiment and the prepared run that a run command's arguments name
    (`run train|score|fp` and `run submit` share it)."""
    engine_path = getattr(args, "engine_path", None)
    if engine_path:
        environment: dict[str, Any] = {}
        if not (getattr(args, "explain", False) or getattr(args, "dry_run", False)):
            from ..recipes.runs import default_env_manager

            environment = {"env_manager": getattr(args, "env_manager", None) or default_env_manager(),
                           "extra_pip": getattr(args, "pip", None) or (),
                           "log": None if getattr(args, "quiet", False) else sys.stderr}
        instance = resolve_recipe_target(registry, caller, args.target, engine_path, **environment)
    else:
        instance = resolve_target(registry, caller, args.target)
    for key in ("env_manager", "pip"):
        if getattr(args, key, None):
            prepare.setdefault("extra_pip" if key == "pip" else key, getattr(args, key))
    experiment = resolve_experiment(registry, caller, instance, args.experiment)
    overrides, secrets = _overrides(args, mode)
    prepared = executor.prepare(caller, experiment["id"], mode, overrides=overrides,
                                override_secrets=secrets, device=args.device, **prepare)
    return instance, experiment, prepared


def report(args: argparse.Namespace, summary: dict[str, Any], seconds: float,
           registry: Registry, caller: Caller, *extra_lines: str) -> int:
    """Prints a finished run (one JSON line with --json) and returns the exit code."""
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join([_summary_text(summary, seconds, registry, caller), *extra_lines]))
    return 0 if summary["state"] == "DONE" else 1


def main(args: argparse.Namespace) -> int:
    from ..runs import RunExecutor

    mode = _MODES[args.command]
    from ..supervisor import SignalGuard

    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    interrupt = None
    try:
        from ..warm import pools_for

        executor = RunExecutor(registry, backend_options=(
            {"pyspark": {"master": args.spark_master}} if args.spark_master else None),
            warm=pools_for(registry.home.root, kind="cli", flag=getattr(args, "warm", None)))
        instance, experiment, prepared = prepare_run(
            registry, caller, args, mode, executor, backend=args.backend,
            require_model=not (args.explain or args.dry_run))
        if args.explain or args.dry_run:
            width = report_width()
            text = (prepared.explain(width) if args.explain
                    else fit_text(prepared.describe_plan(), width))
            if args.json:
                print(json.dumps({"mode": mode, "mlInstanceId": instance["id"],
                                  "experimentId": experiment["id"], **prepared.record()}))
            else:
                print(text)
            return 0
        started = time.perf_counter()
        # From here on, Ctrl-C or SIGTERM cancels the run, however early it arrives.
        interrupt = SignalGuard().__enter__()
        run = registry.create_run(caller, experiment["id"], {"mode": mode})
        quiet = getattr(args, "quiet", False)
        if not quiet:
            print(f"Run {run['id']}: {mode} of MLInstance {instance['id']} "
                  f"({prepared.plan.reason})", file=sys.stderr, flush=True)
        # A live progress line on a terminal, the log's lines otherwise, nothing with --quiet.
        console = RunConsole(sys.stderr, quiet=quiet)
        console.follow(registry.home.runs / run["id"])
        try:
            summary = executor.execute(caller, run, prepared, echo=console,
                                       interrupt=interrupt)
        finally:
            console.close()
        return report(args, summary, time.perf_counter() - started, registry, caller)
    finally:
        if interrupt is not None:
            interrupt.__exit__(None, None, None)
        registry.close()


def data_main(args: argparse.Namespace) -> int:
    from engines.retail_sales import write_retail_dataset

    paths = write_retail_dataset(Path(args.out), seed=args.seed, stores=args.stores,
                                 weeks=args.weeks)
    if args.json:
        print(json.dumps({k: str(v) for k, v in paths.items()}))
    else:
        for name, path in paths.items():
            print(f"{name:18s}{path}")
    return 0
