"""A recipe's second and later runs: the runtime's overhead over calling the recipe by hand.

    python benchmarks/bench_recipes.py             # 5 rounds each
    python benchmarks/bench_recipes.py --rounds 3

The recipe is tests/recipes/fixtures/retail_functions (function-based, pandas 1.x API) training on
../shared/data/retail/retail-training.csv with its evaluator (split, train, score the validation
rows, five metrics). Its environment is built once before timing (a first run); then rounds
alternate the two sides, so load drifts hit both:

- runtime: what the server does for `POST /experiments/{id}/runs` from a warm process:
  `RunExecutor.prepare` (resolve, plan, the recipe's environment found ready) + `create_run` +
  `execute` (a worker forked from the warm parent of the environment's interpreter, or with
  --cold a fresh worker subprocess; the recipe's entry points, pickling and digesting the model,
  result, Model and Insight in the registry).
- by hand: the same environment's interpreter started as a fresh process running a script that
  imports the same entry points, and calls load, split, train, score and the evaluator's metrics
  with the very config_properties the runtime passed (read from the run's spec.json), then
  pickles the model: what a user would run without the runtime. Like the runtime's worker it
  ends with os._exit (no interpreter teardown, which costs seconds with scikit-learn loaded on a
  busy host), so the comparison is like with like; the same script with the normal teardown is
  reported too.

Target: median(runtime) - median(by hand) <= 0.3 s. Also reported (not judged): the CLI's
`run train CONFIG --engine PATH`, timed from outside (a fresh CLI process per run).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
RECIPE = REPO / "tests" / "recipes" / "fixtures" / "retail_functions"
TRAINING = REPO.parent / "shared" / "data" / "retail" / "retail-training.csv"
TARGET_OVERHEAD_S = 0.3

HAND_SCRIPT = r"""
import importlib, json, pickle, sys
spec = json.load(open(sys.argv[1]))
info = json.load(open(sys.argv[2]))
sys.path.insert(0, sys.argv[3])
config = {k: (v if isinstance(v, (str, bool)) or v is None else str(v))
          for k, v in spec["values"].items()}
eps = info["entry_points"]
loader = importlib.import_module(eps["Training"]["training_dataloader"])
pipeline = importlib.import_module(eps["Training"]["training_pipeline"])
module, _, cls = eps["Evaluation"]["evaluator"].partition(":")
evaluator = getattr(importlib.import_module(module), cls)()
data = loader.load(config)
train, validation = evaluator.split(config, data)
model = pipeline.train(config, train)
scored = pipeline.score(config, validation, model)
metrics = evaluator.evaluate(validation, model, config, scored=scored)
open(sys.argv[4], "wb").write(pickle.dumps(model, protocol=4))
print(json.dumps(metrics), flush=True)
if sys.argv[5] == "exit":   # as the runtime's worker does: no interpreter teardown
    import os
    os._exit(0)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-cli", action="store_true", help="skip the reported CLI timing")
    parser.add_argument("--cold", action="store_true",
                        help="runtime side with a cold worker per run (a server forks its runs "
                             "from a warm parent of the recipe's environment, runtime.warm)")
    parser.add_argument("--home", help="runtime home to use (default: a temporary one; its uv "
                                       "cache makes the first build slow)")
    args = parser.parse_args(argv)

    from runtime.artifacts import load_recipe_info, recipes_dir
    from runtime.cli.runs import resolve_recipe_target, resolve_experiment
    from runtime.runs import RunExecutor
    from runtime.home import resolve_home
    from runtime.registry import Caller, Registry
    from runtime.run_targets import recipe_engine

    with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
        home = resolve_home(args.home or Path(tmp) / "home")
        registry = Registry.open(home)
        caller = Caller.local(org="bench", sandbox="bench")
        from runtime.warm import pools_for

        # as `run serve` does: runs forked from a warm parent of the recipe's environment
        executor = RunExecutor(registry, warm=pools_for(home.root, kind="server",
                                                        flag="cold" if args.cold else None))
        executor.env_manager = "uv"
        config = str(RECIPE / "retail.config.json")
        instance = resolve_recipe_target(registry, caller, config, str(RECIPE))
        experiment = resolve_experiment(registry, caller, instance, None)
        engine = recipe_engine(registry, caller, str(RECIPE))
        sha = registry.get_unmasked(__import__("runtime.schemas", fromlist=["ENGINE"]).ENGINE,
                                    caller, engine["id"])["artifacts"]["default"]["image"]["sha256"]
        recipe_dir = recipes_dir(home.root) / sha
        info = load_recipe_info(recipe_dir)
        overrides = {"trainingDataSetId": str(TRAINING)}

        def runtime_run() -> tuple[float, dict]:
            start = time.perf_counter()
            prepared = executor.prepare(caller, experiment["id"], "train", overrides=overrides)
            run = registry.create_run(caller, experiment["id"], {"mode": "train"})
            summary = executor.execute(caller, run, prepared)
            elapsed = time.perf_counter() - start
            if summary["state"] != "DONE":
                raise SystemExit(f"runtime run failed: {summary['reason']}\nlog: {summary['log']}")
            return elapsed, summary

        print("first run (builds the recipe's environment) ...", flush=True)
        first_s, first = runtime_run()
        spec_path = home.runs / first["runId"] / "spec.json"
        python = json.loads((home.runs / first["runId"] / "spec.json").read_text())
        run_doc = registry.get(__import__("runtime.schemas", fromlist=["X"]).EXPERIMENT_RUN,
                               caller, first["runId"])
        env_python = run_doc["runtime"]["plan"].get("python")
        if not env_python:
            raise SystemExit("the runtime ran the recipe without its own environment")
        info_path = recipe_dir / "recipe.json"
        import_root = str(info.import_dir(recipe_dir))
        model_out = Path(tmp) / "hand-model.pkl"

        def by_hand(teardown: str = "exit") -> float:
            start = time.perf_counter()
            subprocess.run([env_python, "-c", HAND_SCRIPT, str(spec_path), str(info_path),
                            import_root, str(model_out), teardown], check=True,
                           capture_output=True, cwd=tmp)
            return time.perf_counter() - start

        def cli_run() -> float:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
            env.update(MLRUNTIME_HOME=str(home.root), MLRUNTIME_ORG="bench",
                       MLRUNTIME_SANDBOX="bench")
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "runtime.cli.main", "train", config, "--engine",
                            str(RECIPE), "-p", f"trainingDataSetId={TRAINING}", "--json"],
                           check=True, capture_output=True, cwd=REPO, env=env)
            return time.perf_counter() - start

        by_hand()   # warm the page cache for the environment's files
        runtime_s, hand_s, plain_s, cli_s = [], [], [], []
        for i in range(args.rounds):
            if i % 2 == 0:
                runtime_s.append(runtime_run()[0])
                hand_s.append(by_hand())
            else:
                hand_s.append(by_hand())
                runtime_s.append(runtime_run()[0])
            plain_s.append(by_hand("teardown"))
            if not args.no_cli:
                cli_s.append(cli_run())
        executor.close_warm()
        registry.close()

    overhead = statistics.median(runtime_s) - statistics.median(hand_s)
    record = {
        "benchmark": "recipes", "when": dt.datetime.now(dt.timezone.utc).isoformat(),
        "worker": "cold" if args.cold else "warm",
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "first_run_s": round(first_s, 3),
        "runtime_s": [round(x, 3) for x in runtime_s], "by_hand_s": [round(x, 3) for x in hand_s],
        "by_hand_with_teardown_s": [round(x, 3) for x in plain_s],
        "cli_s": [round(x, 3) for x in cli_s],
        "median_runtime_s": round(statistics.median(runtime_s), 3),
        "median_by_hand_s": round(statistics.median(hand_s), 3),
        "median_by_hand_with_teardown_s": round(statistics.median(plain_s), 3),
        "median_cli_s": round(statistics.median(cli_s), 3) if cli_s else None,
        "overhead_s": round(overhead, 3), "target_overhead_s": TARGET_OVERHEAD_S,
        "pass": overhead <= TARGET_OVERHEAD_S,
    }
    out = BENCH_DIR / "results" / f"recipes-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"first run (environment built): {first_s:.2f} s")
    print(f"second and later runs, median of {args.rounds}: runtime {record['median_runtime_s']:.3f} s"
          f" vs by hand {record['median_by_hand_s']:.3f} s -> overhead {overhead:.3f} s "
          f"(target <= {TARGET_OVERHEAD_S} s): {'PASS' if record['pass'] else 'FAIL'}")
    print(f"by hand with the interpreter's normal teardown (reported): median "
          f"{record['median_by_hand_with_teardown_s']:.3f} s")
    if cli_s:
        print(f"CLI `run train CONFIG --engine PATH` (fresh process, reported): median "
              f"{record['median_cli_s']:.3f} s")
    print(f"written to {out}")
    return 0 if record["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
