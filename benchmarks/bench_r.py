"""An R recipe's cold cost: from dispatch to the recipe's train being called, beside its fit.

    python benchmarks/bench_r.py                        # 3 cold and 3 warm rounds, the test recipe
    python benchmarks/bench_r.py --recipe DIR --config DIR/retail.config.json --rounds 5

A cold round is a fresh `run train CONFIG --engine DIR --cold` (one CLI process, one worker, one
Rscript: nothing warm but the file cache). A warm round is the same with --warm, once a warm
python parent and a warm R parent (runtime/recipes/r/warm.py) are listening: the worker is forked
by the one, the R child by the other, both with their packages and Python loaded. The recipe's environment and the runtime's R library are built
once before timing. Measured per round, on the run's own clocks:

- dispatch -> train called: from the moment the CLI prints "Run ...: train of ..." (the run is
  planned and handed to its backend) to the driver's timestamp just before the trainer's
  train() is called: the worker's start, Rscript's start, the driver's package loads, the
  recipe's sources, and, for a recipe with an evaluator, its split (R's packages, Python inside R
  through reticulate, the first read through platform_sdk).
- fit: the rest of the train stage (train() itself: the recipe's model fit and its save).

The dispatch -> train called time is split further, from the driver's own marks
(runtime/recipes/r/driver.R): the worker's start (dispatch -> the train stage), Rscript's start
(the stage -> the driver's first line), the driver's set-up, sourcing the recipe's files (which
loads the packages they name at the top, ml.runtime.r and evaluators.r), and then the recipe's
own split (for a recipe with an evaluator: reticulate, Python and pandas inside R, the data read)
apart from the runtime's part, dispatch -> the recipe's first method. cli_start_to_train_s is
what a user waits from typing the command (the CLI's own start and the environment checks).

The default recipe is tests/r_recipes/fixtures/"Retail Two Arg" (an evaluator reading the
retail CSV through platform_sdk, an lm fit). Goal: dispatch -> train called under 3 s here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "r_recipes" / "fixtures" / "Retail Two Arg"
DATA = REPO.parent / "shared" / "data" / "retail" / "retail-training.csv"
GOAL_S = 3.0
WARM_GOAL_S = 1.0


def one_round(home: Path, recipe: Path, config: Path, data: Path, warm: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    env.update(MLRUNTIME_HOME=str(home), PYTHONPATH=str(REPO))
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "train", str(config),
                             "--engine", str(recipe), "--json", "-p", f"trainingDataSetId={data}",
                             "--warm" if warm else "--cold"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    dispatched = None
    last = ""
    for line in proc.stdout:
        if dispatched is None and line.startswith("Run ") and ": train of " in line:
            dispatched = time.time()
        last = line if line.startswith("{") else last
    proc.wait()
    result = json.loads(last)
    if result.get("state") != "DONE" or dispatched is None:
        raise SystemExit(f"the run did not end DONE: {result}")
    run_dir = Path(result["log"]).parent
    r_result = json.loads((run_dir / "r" / "train-result.json").read_text())
    called = r_result["train_called_at"]
    marks = r_result.get("marks") or {}
    log = (run_dir / "worker.log").read_text().splitlines()
    stage = next(x for x in log if "stage train ..." in x)
    stage_start = time.mktime(time.strptime(stage[:19], "%Y-%m-%d %H:%M:%S")) + \
        int(stage[20:23]) / 1000
    first = marks.get("split_called", called)        # the recipe's first method
    if warm and not marks.get("warm"):
        raise SystemExit(f"a --warm round ran cold: see {run_dir / 'worker.log'}")
    return {"cli_start_to_train_s": called - started,
            "dispatch_to_train_s": called - dispatched,
            "dispatch_to_recipe_s": first - dispatched,
            "  worker_start_s": stage_start - dispatched,
            "  rscript_start_s": marks.get("driver_started", first) - stage_start,
            "  driver_ready_s": marks.get("request_read", first) - marks.get("driver_started",
                                                                             first),
            "  sources_s": marks.get("sourced", first) - marks.get("request_read", first),
            "split_s": called - first,
            "fit_s": result["durations_s"]["train"] - (called - stage_start)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=FIXTURE)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold-only", action="store_true", help="no warm rounds")
    args = parser.parse_args()
    if shutil.which("Rscript") is None:
        from runtime.recipes.r.host import APT_COMMAND
        print(f"R is not installed: {APT_COMMAND}")
        return 1
    config = args.config or next(args.recipe.glob("*.config.json"))
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-r-") as tmp:
        home = Path(tmp) / "home"
        print("preparing (the recipe's environment, the R library): not timed ...")
        one_round(home, args.recipe, config, args.data)
        cold = [one_round(home, args.recipe, config, args.data) for _ in range(args.rounds)]
        load.append(os.getloadavg()[0])
        warm = []
        if not args.cold_only:
            print("starting the warm parents (python, R): not timed ...")
            _start_warm(home, args.recipe, config, args.data)
            warm = [one_round(home, args.recipe, config, args.data, warm=True)
                    for _ in range(args.rounds)]
            from runtime.pools import stop_home

            stop_home(home)
        load.append(os.getloadavg()[0])
    for title, rounds in (("cold: one Rscript per run", cold),
                          ("warm: forked by the warm R parent", warm)):
        if not rounds:
            continue
        print(f"--- {title}")
        for key in rounds[0]:
            values = sorted(r[key] for r in rounds)
            print(f"{key:22s} median {statistics.median(values):6.2f} s   "
                  f"min {values[0]:6.2f}   max {values[-1]:6.2f}   ({len(values)} rounds)")
    median = statistics.median(r["dispatch_to_train_s"] for r in cold)
    loads = " -> ".join(f"{x:.1f}" for x in load)
    print(f"goal: dispatch -> train called < {GOAL_S:.0f} s cold: "
          f"{'met' if median < GOAL_S else 'NOT met'} ({median:.2f} s)")
    if warm:
        median = statistics.median(r["dispatch_to_train_s"] for r in warm)
        print(f"      dispatch -> train called < {WARM_GOAL_S:.0f} s warm: "
              f"{'met' if median < WARM_GOAL_S else 'NOT met'} ({median:.2f} s)")
    print(f"load average (1 min) at the start, after the cold rounds, at the end: {loads} "
          f"on {os.cpu_count()} cores")
    return 0


def _start_warm(home: Path, recipe: Path, config: Path, data: Path) -> None:
    """A --warm run starts the warm python parent and, in the background, the R parent; wait
    until the R parent listens (it loads R's packages and Python with pandas first)."""
    from runtime.pools import describe_home

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    env.update(MLRUNTIME_HOME=str(home), PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "runtime.cli.main", "train", str(config), "--engine",
                    str(recipe), "--json", "-p", f"trainingDataSetId={data}", "--warm"],
                   cwd=REPO, env=env, capture_output=True, check=True)
    deadline = time.monotonic() + 180
    while not any(w["kind"] == "r" for w in describe_home(home)):
        if time.monotonic() > deadline:
            raise SystemExit("the warm R parent did not start within 180 s")
        time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
