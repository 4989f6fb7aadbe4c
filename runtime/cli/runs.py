"""`run train|score|fp TARGET`: one run in the foreground, on the same path the server uses."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..home import resolve_home
from ..numbers import readable
from ..textfit import fit_text
from ..run_targets import resolve_run_target
# Re-exported for callers that still import them from here (tests/supervision, tests/web,
# benchmarks): the rules live in the service layer, runtime.run_targets.
from ..run_targets import (ensure_engine, resolve_experiment,  # noqa: F401
                           resolve_recipe_target, resolve_target)
from ..schemas import MODEL
from ..registry import Caller, Registry
from .progress import RunConsole

_MODES = {"train": "train", "score": "score", "fp": "featurePipeline"}


def report_width() -> int:
    """The terminal's width (or $COLUMNS); 100 when the output is not a terminal."""
    import shutil

    return max(40, shutil.get_terminal_size((100, 24)).columns)


def _overrides(args: argparse.Namespace, mode: str) -> tuple[dict[str, Any], frozenset[str]]:
    from ..params_file import parse_overrides, read_params_file

    values: dict[str, Any] = {}
    secrets: frozenset[str] = frozenset()
    if args.params:
        loaded = read_params_file(args.params, task=mode)
        values.update(loaded.values)
        secrets = loaded.secret_keys
    values.update(parse_overrides(args.param or []))
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


def run_request(registry: Registry, caller: Caller, args: argparse.Namespace, mode: str,
                **options: Any) -> tuple[Any, Any]:
    """The MLInstance and Experiment a run command's arguments name (runtime.run_targets) and
    the RunRequest they word (`run train|score|fp` and `run submit` share it)."""
    from ..runs import RunRequest

    engine_path = getattr(args, "engine_path", None)
    environment: dict[str, Any] = {}
    if engine_path and not (getattr(args, "explain", False) or getattr(args, "dry_run", False)):
        from ..recipes.runs import default_env_manager

        environment = {"env_manager": getattr(args, "env_manager", None) or default_env_manager(),
                       "extra_pip": getattr(args, "pip", None) or (),
                       "log": None if getattr(args, "quiet", False) else sys.stderr}
    target = resolve_run_target(registry, caller, args.target, engine_path=engine_path,
                                experiment_id=args.experiment, **environment)
    overrides, secrets = _overrides(args, mode)
    request = RunRequest(experiment_id=target.experiment["id"], mode=mode, overrides=overrides,
                         secret_keys=secrets, model_id=args.model or None, device=args.device,
                         env_manager=getattr(args, "env_manager", None) or None,
                         extra_pip=tuple(getattr(args, "pip", None) or ()), **options)
    return target, request


def report(args: argparse.Namespace, summary: dict[str, Any], seconds: float,
           registry: Registry, caller: Caller, *extra_lines: str) -> int:
    """Prints a finished run (one JSON line with --json) and returns the exit code."""
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join([_summary_text(summary, seconds, registry, caller), *extra_lines]))
    return 0 if summary["state"] == "DONE" else 1


def main(args: argparse.Namespace) -> int:
    from ..backends import backend_options_from, cli_option_dests
    from ..runs import RunExecutor
    from ..warm import pools_for

    mode = _MODES[args.command]
    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    try:
        executor = RunExecutor(registry, backend_options=backend_options_from(
                {d: getattr(args, d, None) for d in cli_option_dests()}),
            warm=pools_for(registry.home.root, kind="cli", flag=getattr(args, "warm", None)))
        target, request = run_request(registry, caller, args, mode, backend=args.backend)
        if args.explain or args.dry_run:
            prepared = executor.preview(caller, request)
            width = report_width()
            text = (prepared.explain(width) if args.explain
                    else fit_text(prepared.describe_plan(), width))
            if args.json:
                print(json.dumps({"mode": mode, "mlInstanceId": target.instance["id"],
                                  "experimentId": target.experiment["id"], **prepared.record()}))
            else:
                print(text)
            return 0
        quiet = getattr(args, "quiet", False)
        # A live progress line on a terminal, the log's lines otherwise, nothing with --quiet.
        console = RunConsole(sys.stderr, quiet=quiet)
        started: list[float] = []

        def created(run: dict[str, Any], plan: Any) -> None:
            started.append(time.perf_counter())
            if not quiet:
                print(f"Run {run['id']}: {mode} of MLInstance {target.instance['id']} "
                      f"({plan.reason})", file=sys.stderr, flush=True)
            console.follow(registry.home.runs / run["id"])

        try:   # from the run's creation on, Ctrl-C or SIGTERM cancels it
            summary = executor.run(caller, request, echo=console, guard_signals=True,
                                   on_created=created)
        finally:
            console.close()
        return report(args, summary, time.perf_counter() - started[0], registry, caller)
    finally:
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
