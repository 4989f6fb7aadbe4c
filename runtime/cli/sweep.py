"""`run sweep train TARGET -p KEY=V1,V2 ...` and `run sweep --resume SWEEP_ID`: a family of runs
of one MLInstance in one Experiment (runtime.sweep has the grammar and the runner)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from ..home import resolve_home
from ..registry import Caller, Registry
from ..sweep import (SweepConfig, SweepRunner, load_sweep_file,
                     parse_param, plan_trials, table_text)


def main(args: argparse.Namespace) -> int:
    from ..supervisor import SignalGuard

    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    err = sys.stderr if args.json else sys.stdout

    def out(line: str) -> None:
        print(line, file=err, flush=True)

    interrupt = SignalGuard().__enter__()
    executor = None
    try:
        state = _resume(registry, args) if args.resume else _new(registry, caller, args)
        publish_to = getattr(args, "publish", None)
        if publish_to:   # checked before any trial runs
            if not state.get("metric"):
                raise ConfigError("--publish needs --metric: the best trial is the one published")
            from ..schemas import MLSERVICE

            service = registry.get(MLSERVICE, caller, publish_to)
            if service.get("mlInstanceId") != state["mlInstanceId"]:
                raise ConfigError(f"MLService {publish_to} serves MLInstance "
                                  f"{service.get('mlInstanceId')}, not this sweep's "
                                  f"{state['mlInstanceId']}")
        from ..runs import RunExecutor
        from ..warm import pools_for

        # The trials fork from a warm parent the sweep starts and stops (--cold: none).
        executor = RunExecutor(registry, warm=pools_for(registry.home.root, kind="sweep",
                                                        flag=getattr(args, "warm", None)))
        runner = SweepRunner(registry, caller, state, out=out, device=args.device,
                             backend=args.backend, interrupt=interrupt, executor=executor)
        todo = sum(1 for r in state["rows"] if r["state"] != "DONE")
        out(f"Sweep {state['id']}: {len(state['rows'])} trial(s), {todo} to run, at most "
            f"{state['parallel']} at once, Experiment {state['experimentId']} "
            f"(folder {runner.folder})")
        rows = runner.run()
        out("")
        out(table_text(rows, state["keys"], state.get("metric")))
        best = runner.best()
        if best is not None:
            out(f"best: trial {best['trial']} {state['metric']}={best['metric']:.6g} run "
                f"{best['runId']} model {best.get('modelId') or '-'} (tagged sweepBest)")
        out(f"results: {runner.folder / 'results.csv'}, {runner.folder / 'results.json'}")
        if publish_to and best is not None and best.get("modelId"):
            from ..mlservices import ServiceDesk

            ServiceDesk(registry).publish(
                caller, publish_to, best["modelId"],
                f"best trial of sweep {state['id']} ({state['metric']}={best['metric']:.6g})")
            out(f"published: Model {best['modelId']} to MLService {publish_to}")
        elif publish_to:
            out(f"published: nothing (no trial ended DONE with {state['metric']})")
        if args.json:
            print(json.dumps({"sweepId": state["id"], "experimentId": state["experimentId"],
                              "metric": state.get("metric"), "mode": state.get("order"),
                              "best": best, "rows": rows}))
        if interrupt.reason:
            return 130
        return 0 if runner.finished_ok() else 1
    finally:
        interrupt.__exit__(None, None, None)
        if executor is not None:
            executor.close_warm()
        registry.close()


def _new(registry: Registry, caller: Caller, args: argparse.Namespace) -> dict[str, Any]:
    from ..run_targets import resolve_recipe_target, resolve_target, sweep_experiment

    if args.mode != "train" or not args.target:
        raise ConfigError("Usage: run sweep train TARGET -p KEY=V1,V2 ... (or run sweep --resume "
                          "SWEEP_ID)")
    config = load_sweep_file(args.file) if args.file else SweepConfig()
    swept, fixed = [], []
    for text in args.param or []:
        axis = parse_param(text)
        (swept if axis.is_distribution or len(axis.values) > 1 else fixed).append(
            (axis, text))
    axes = [a for a in config.axes if a.key not in {x.key for x, _ in swept + fixed}]
    axes += [a for a, _ in swept]
    # A one-valued -p that is not swept is a plain override; one the file sweeps replaces it.
    base = {axis.key: axis.values[0] for axis, _ in fixed}
    samples = args.samples if args.samples is not None else config.samples
    seed = args.seed if args.seed is not None else config.seed
    trials = plan_trials(axes, samples=samples, seed=seed)
    metric = args.metric or config.metric
    order = (args.order or config.mode or "min").lower()
    if order not in ("min", "max"):
        raise ConfigError(f"--mode must be min or max, got {order!r}")
    parallel = args.parallel if args.parallel is not None else (config.parallel or 1)
    if parallel < 1:
        raise ConfigError(f"--parallel must be at least 1, got {parallel}")
    environment = {"env_manager": args.env_manager, "extra_pip": list(args.pip or [])}
    if args.engine_path:      # a recipe on disk, as `run train --engine PATH` takes it
        from ..recipes.runs import default_env_manager

        instance = resolve_recipe_target(
            registry, caller, args.target, args.engine_path,
            env_manager=args.env_manager or default_env_manager(),
            extra_pip=environment["extra_pip"], log=None if getattr(args, "quiet", False) else sys.stderr)
    else:
        instance = resolve_target(registry, caller, args.target)
    experiment = sweep_experiment(registry, caller, instance, args.experiment)
    # Every trial is checked before any runs: a bad value fails here, naming its trial.
    from ..runs import RunExecutor, RunRequest

    executor = RunExecutor(registry)
    for index, params in enumerate(trials[:1] + trials[-1:]):
        try:
            executor.preview(caller, RunRequest(
                experiment_id=experiment["id"], mode="train", overrides={**base, **params},
                device=args.device, backend=args.backend,
                env_manager=environment["env_manager"],
                extra_pip=tuple(environment["extra_pip"])), require_model=True)
        except ConfigError as exc:
            raise ConfigError(f"Sweep trial {params}: {exc.detail}") from None
    return SweepRunner.new_state(instance_id=instance["id"], experiment_id=experiment["id"],
                                 mode="train", trials=trials, base=base, metric=metric,
                                 order=order, parallel=parallel, keys=[a.key for a in axes],
                                 target=args.target, stop_early=args.stop_early,
                                 env_manager=environment["env_manager"],
                                 extra_pip=environment["extra_pip"])


def _resume(registry: Registry, args: argparse.Namespace) -> dict[str, Any]:
    if args.target or args.param or args.file or args.samples is not None or args.stop_early:
        raise ConfigError("run sweep --resume SWEEP_ID takes the sweep's own plan: no TARGET, "
                          "-p, --file or --samples")
    state = SweepRunner.load(registry.home.root, args.resume)
    if args.parallel is not None:
        state["parallel"] = args.parallel
    return state
